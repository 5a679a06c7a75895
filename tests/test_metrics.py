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
