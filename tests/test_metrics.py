"""Metrics against answers worked out by hand."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

from core.metrics import apls, length_metrics, pixel_metrics, relaxed_metrics

REPO = Path(__file__).resolve().parents[1]
LINE = shapely.LineString


def test_pixel_metrics_and_the_all_background_baseline():
    reference = np.zeros((10, 10), bool)
    reference[:, 4:6] = True  # 20 road pixels of 100
    predicted = np.zeros((10, 10), bool)
    predicted[:, 5:7] = True  # 10 right, 10 wrong
    m = pixel_metrics(predicted, reference)
    assert m["road_iou"] == pytest.approx(10 / 30)
    assert m["precision"] == m["recall"] == m["f1"] == pytest.approx(0.5)
    assert m["background_iou"] == pytest.approx(70 / 90)
    assert m["miou"] == pytest.approx((10 / 30 + 70 / 90) / 2)
    # Predicting background everywhere: background IoU 80/100, road IoU 0 -> mIoU 0.4.
    assert m["miou_all_background"] == pytest.approx(0.4)
    assert pixel_metrics(np.zeros_like(reference), reference)["miou"] == pytest.approx(0.4)
    ignore = np.zeros((10, 10), bool)
    ignore[:, 6] = True  # the 10 wrong pixels are no-data: only right ones remain
    assert pixel_metrics(predicted, reference, ignore)["precision"] == 1.0


def test_relaxed_precision_and_recall():
    reference = np.zeros((21, 21), bool)
    reference[:, 10] = True
    shifted = np.zeros((21, 21), bool)
    shifted[:, 12] = True  # 2 px off: correct within rho = 3, wrong within rho = 1
    assert relaxed_metrics(shifted, reference, rho=3)["relaxed_precision"] == 1.0
    assert relaxed_metrics(shifted, reference, rho=3)["relaxed_recall"] == 1.0
    assert relaxed_metrics(shifted, reference, rho=1)["relaxed_precision"] == 0.0
    shifted[:, 18] = True  # a false road 8 px away: half the predicted pixels are wrong
    relaxed = relaxed_metrics(shifted, reference, rho=3)
    assert relaxed["relaxed_precision"] == 0.5 and relaxed["relaxed_recall"] == 1.0
    assert relaxed["relaxed_f1"] == pytest.approx(2 / 3)


def test_apls_identical_graphs_score_one():
    roads = [LINE([(0, 0), (100, 0)]), LINE([(100, 0), (200, 0)]), LINE([(100, 0), (100, 130)])]
    assert apls(roads, roads)["apls"] == 1.0
    assert apls(roads, [])["apls"] == 0.0


def test_apls_cut_road_by_hand():
    """A 200 m road cut between 90 m and 110 m.

    Reference -> proposal: control nodes at 0, 50, 100, 150, 200 m; the one at 100 m is 10 m from the proposal
    (beyond the 4 m snap). Of the 20 ordered routes, only 0<->50 and 150<->200 (4) survive: 1 - 16/20 = 0.2.
    Proposal -> reference: its nodes 0, 50, 90 and 110, 160, 200 m all snap and all of its routes exist in the
    reference with the same length: 1.0. Symmetric APLS = 2 * 0.2 * 1 / 1.2 = 1/3.
    """
    result = apls([LINE([(0, 0), (200, 0)])], [LINE([(0, 0), (90, 0)]), LINE([(110, 0), (200, 0)])])
    assert result["apls_gt_to_prop"] == pytest.approx(0.2)
    assert result["apls_prop_to_gt"] == pytest.approx(1.0)
    assert result["apls"] == pytest.approx(1 / 3)


def test_apls_removed_edge_by_hand():
    """A T: a 200 m road with a 100 m branch at its middle; the proposal lacks the branch.

    Reference nodes: 0, 50, 100, 150, 200 m on the road and 50, 100 m up the branch: 7 nodes, 42 ordered routes.
    The 2 branch nodes do not snap: the 22 routes touching them count 1, the other 20 are exact. 1 - 22/42 =
    20/42. The proposal's routes all exist unchanged in the reference: 1.0. APLS = 2 * (20/42) / (1 + 20/42)
    = 40/62.
    """
    road = [LINE([(0, 0), (100, 0)]), LINE([(100, 0), (200, 0)])]
    result = apls(road + [LINE([(100, 0), (100, 100)])], road)
    assert result["apls_gt_to_prop"] == pytest.approx(20 / 42)
    assert result["apls_prop_to_gt"] == pytest.approx(1.0)
    assert result["apls"] == pytest.approx(40 / 62)


def test_apls_longer_detour_is_penalised_by_its_excess():
    """The proposal replaces a straight 100 m road by a 120 m dog-leg through (50, 33.17).

    Reference nodes 0, 50, 100 m: 6 ordered routes. The 50 m node is 27.6 m from the dog-leg, so the 4 routes
    touching it count 1; the 2 routes between the ends are 120 m instead of 100 m, 0.2 each:
    1 - (4 + 2 * 0.2) / 6 = 0.2667.
    """
    straight = [LINE([(0, 0), (100, 0)])]
    detour = [LINE([(0, 0), (50, 33.166), (100, 0)])]
    result = apls(straight, detour)
    assert result["apls_gt_to_prop"] == pytest.approx(1 - (4 + 2 * 0.2) / 6, abs=1e-3)


def test_length_metrics_by_hand():
    reference = [LINE([(0, 0), (200, 0)])]
    proposal = [LINE([(0, 1), (90, 1)]), LINE([(110, 0), (200, 0)]), LINE([(0, 50), (20, 50)])]
    m = length_metrics(reference, proposal, buffer_m=3)
    # Within 3 m of the proposal: 0 to 90 + sqrt(3^2 - 1^2) m (the round end of the line 1 m off) and 107-200 m.
    matched = 90 + np.sqrt(8) + 93
    assert m["completeness"] == pytest.approx(matched / 200, abs=1e-4)  # buffers approximate circles by polygons
    assert m["correctness"] == pytest.approx(180 / 200)  # the 20 m piece far away is wrong
    assert m["quality"] == pytest.approx(180 / (200 + 200 - matched), abs=1e-4)


def test_evaluate_command_on_vectors(tmp_path):
    from core.inputs.vectors import pyogrio_raw

    def write(path, lines):
        pyogrio_raw().write(path, geometry=shapely.to_wkb(np.array(lines, dtype=object)), field_data=[], fields=[],
                            crs="EPSG:32611", geometry_type="LineString", driver="GPKG", layer="roads")
        return path

    reference = write(tmp_path / "ref.gpkg", [LINE([(0, 0), (200, 0)])])
    proposal = write(tmp_path / "prop.gpkg", [LINE([(0, 0), (90, 0)]), LINE([(110, 0), (200, 0)])])
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", proposal, reference, "--json",
                             tmp_path / "m.json"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "apls " in result.stdout
    assert json.loads((tmp_path / "m.json").read_text())["apls"] == pytest.approx(1 / 3)
    bad = subprocess.run([sys.executable, "-m", "core", "evaluate", proposal, tmp_path / "none.tif"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "no such file" in bad.stderr


def _write_lines(path, lines, crs):
    from core.inputs.vectors import pyogrio_raw

    pyogrio_raw().write(path, geometry=shapely.to_wkb(np.array(lines, dtype=object)), field_data=[], fields=[],
                        crs=crs, geometry_type="LineString", driver="GPKG", layer="roads")
    return path


def test_lines_in_degrees_are_compared_in_one_frame(tmp_path):
    """Two sets of lines in EPSG:4326 whose mean latitudes differ by 0.002 degrees (220 m): each scaled at its own
    mean latitude, the proposal lay 260 m west of the reference at Las Vegas and matched nothing."""
    from core.metrics import evaluate_files

    south = LINE([(-115.170, 36.236), (-115.170, 36.238)])
    north = LINE([(-115.168, 36.240), (-115.168, 36.242)])
    reference = _write_lines(tmp_path / "ref.gpkg", [south, north], "EPSG:4326")
    proposal = _write_lines(tmp_path / "prop.gpkg", [north], "EPSG:4326")
    m = evaluate_files(proposal, reference)
    assert m["correctness"] == pytest.approx(1.0)
    assert m["completeness"] == pytest.approx(0.5, abs=0.01)  # the two lines are 222 m long each
    assert m["reference_km"] == pytest.approx(0.444, abs=0.002)


def test_an_area_limits_scoring_to_where_the_reference_is_complete(tmp_path):
    """The reference covers the west half; the proposal finds that road and one in the unlabelled east half. Without
    the area the east road counts as wrong; with it, both sides are scored in the west only. Lines crossing the
    area's edge are cut there; an area without reference lines is refused."""
    from core.inputs.raster import RasterError
    from core.metrics import evaluate_files

    reference = _write_lines(tmp_path / "ref.gpkg", [LINE([(100, 0), (100, 400)])], "EPSG:32611")
    proposal = _write_lines(tmp_path / "prop.gpkg", [LINE([(100, 0), (100, 400)]), LINE([(300, 0), (300, 400)]),
                                                     LINE([(150, 200), (250, 200)])], "EPSG:32611")
    west = _write_polygons(tmp_path / "west.gpkg", [shapely.box(0, 0, 200, 400)], "EPSG:32611")
    everywhere = evaluate_files(proposal, reference)
    assert everywhere["correctness"] == pytest.approx(400 / 900)
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", proposal, reference, "--area", west, "--json",
                             tmp_path / "m.json"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    inside = json.loads((tmp_path / "m.json").read_text())
    assert inside["completeness"] == pytest.approx(1.0)
    assert inside["proposal_km"] == pytest.approx(0.45)  # 400 m + the 50 m of the crossing line west of x = 200
    assert inside["correctness"] == pytest.approx(400 / 450, abs=0.01)  # the cut piece's 3 m by the road match
    east = _write_polygons(tmp_path / "east.gpkg", [shapely.box(200, 0, 400, 400)], "EPSG:32611")
    with pytest.raises(RasterError, match="none of the reference lines lies inside it"):
        evaluate_files(proposal, reference, area=east)
    with pytest.raises(RasterError, match="no polygons"):
        evaluate_files(proposal, reference, area=reference)


def test_an_area_limits_pixel_metrics(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    from core.metrics import evaluate_files

    profile = {"driver": "GTiff", "width": 40, "height": 40, "count": 1, "dtype": "uint8", "crs": "EPSG:32611",
               "transform": from_origin(0, 40, 1, 1)}
    truth, predicted = np.zeros((40, 40), np.uint8), np.zeros((40, 40), np.uint8)
    truth[:, 10] = 255
    predicted[:, 10] = predicted[:, 30] = 255  # right in the west, a road nobody labelled in the east
    for name, values in (("truth.tif", truth), ("predicted.tif", predicted)):
        with rasterio.open(tmp_path / name, "w", **profile) as ds:
            ds.write(values, 1)
    west = _write_polygons(tmp_path / "west.gpkg", [shapely.box(0, 0, 20, 40)], "EPSG:32611")
    assert evaluate_files(tmp_path / "predicted.tif", tmp_path / "truth.tif")["precision"] == pytest.approx(0.5)
    assert evaluate_files(tmp_path / "predicted.tif", tmp_path / "truth.tif", area=west)["precision"] == 1.0


def _write_polygons(path: Path, polygons, crs: str) -> Path:
    from core.inputs.vectors import pyogrio_raw

    pyogrio_raw().write(path, geometry=shapely.to_wkb(np.array(polygons, dtype=object)), field_data=[], fields=[],
                        crs=crs, geometry_type="Polygon", driver="GPKG")
    return path
