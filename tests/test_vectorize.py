"""Mask -> road network: geometry at pixel centres, graph clean-up in metres, windows joined, GeoPackage output."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image, ImageDraw
from rasterio.features import rasterize
from rasterio.transform import from_origin

from core.errors import OutputError
from core.inputs.vectors import pyogrio_raw
from core.roads.vectorize import PixelGrid, VectorizeParams, line_length_m, vectorize_array, vectorize_file

REPO = Path(__file__).resolve().parents[1]
UTM = from_origin(500000.0, 4100000.0, 0.5, 0.5)  # 0.5 m pixels
GRID = PixelGrid(UTM.to_gdal(), (0.5, 0.5))


def _draw(size, lines, width_px=7, value=1.0):
    canvas = Image.new("F", size, 0.0)
    draw = ImageDraw.Draw(canvas)
    for points in lines:
        draw.line(points, fill=value, width=width_px)
    return np.asarray(canvas, dtype=np.float32)


def test_straight_road_lands_on_pixel_centres():
    probability = np.zeros((120, 300), np.float32)
    probability[50:57, :] = 1.0  # 7 px wide: the centre is row 53
    network = vectorize_array(probability, GRID)
    assert len(network.roads) == 1
    coords = np.asarray(network.roads[0].coords)
    expected_y = 4100000.0 - (53 + 0.5) * 0.5
    assert np.abs(coords[:, 1] - expected_y).max() < 0.1 * 0.5  # within a tenth of a pixel
    # Replicated borders: the road runs to the raster's edges instead of stopping short in a curl.
    assert coords[:, 0].min() < 500000 + 1.0 and coords[:, 0].max() > 500000 + 149.0 - 1.0
    attributes = network.road_attributes[0]
    assert attributes["length_m"] == pytest.approx(149.5, abs=1.0)
    assert attributes["width_m"] == pytest.approx(3.5, abs=0.5)
    assert attributes["mean_probability"] == 1.0
    assert [a["degree"] for a in network.junction_attributes] == [1, 1]


def test_crossroads_are_one_junction_of_degree_four():
    probability = _draw((400, 400), [[(0, 200), (399, 200)], [(200, 0), (200, 399)]])
    network = vectorize_array(probability, GRID)
    degrees = sorted(a["degree"] for a in network.junction_attributes)
    assert degrees == [1, 1, 1, 1, 4]
    assert len(network.roads) == 4
    centre = next(p for p, a in zip(network.junctions, network.junction_attributes, strict=True) if a["degree"] == 4)
    assert centre.distance(shapely.Point(500000 + 200.5 * 0.5, 4100000 - 200.5 * 0.5)) < 1.0


def test_short_spur_is_pruned_and_long_branch_kept():
    roads = [[(0, 100), (399, 100)], [(200, 100), (200, 116)], [(300, 100), (300, 250)]]  # 8 m stub, 75 m branch
    network = vectorize_array(_draw((400, 300), roads), GRID)
    degrees = sorted(a["degree"] for a in network.junction_attributes)
    assert degrees == [1, 1, 1, 3]
    assert network.total_length_m == pytest.approx(199.5 + 75, rel=0.03)


def test_hysteresis_keeps_faint_road_attached_to_a_clear_one():
    clear = _draw((400, 300), [[(0, 100), (250, 100)]], value=0.9)
    faint = _draw((400, 300), [[(250, 100), (399, 100)], [(0, 220), (399, 220)]], value=0.35)
    network = vectorize_array(np.maximum(clear, faint), GRID)
    assert len(network.roads) == 1  # the attached faint piece joins the clear road; the lone faint road is gone
    assert network.total_length_m == pytest.approx(199.5, rel=0.02)


def _junction_at(network, col, row):
    """The degree of the extracted junction nearest pixel (col, row) of GRID, and its distance in metres."""
    target = shapely.Point(500000 + (col + 0.5) * 0.5, 4100000 - (row + 0.5) * 0.5)
    distance, degree = min((p.distance(target), a["degree"])
                           for p, a in zip(network.junctions, network.junction_attributes, strict=True))
    return degree, distance


def test_gap_bridging_joins_an_end_to_the_road_ahead_only():
    # A road broken by a 10 m gap: one road again. A side street stopping 15 m short of it, pointing at it, as the
    # model leaves streets where they meet: joined at a new junction. A road ending 50 m beside another: not joined.
    roads = [[(0, 100), (180, 100)], [(200, 100), (399, 100)], [(300, 130), (300, 299)], [(0, 200), (150, 200)]]
    network = vectorize_array(_draw((400, 300), roads), GRID, VectorizeParams(close_gaps_m=0))
    degree, distance = _junction_at(network, 300, 100)
    assert degree == 3 and distance < 2.0
    assert sorted(a["degree"] for a in network.junction_attributes) == [1, 1, 1, 1, 1, 3]
    assert network.total_length_m == pytest.approx(199.5 + 99.5 + 75, rel=0.02)


def test_gap_joins_follow_the_probability():
    # The same side street 15 m short of the road: joined where the gap holds a faint probability (0.2, below the
    # mask's hysteresis), not where the network saw nothing there.
    roads = _draw((400, 300), [[(0, 100), (399, 100)], [(200, 130), (200, 299)]], value=0.9)
    for gap_value, joined in ((0.2, True), (0.0, False)):
        probability = np.maximum(roads, _draw((400, 300), [[(200, 100), (200, 130)]], value=gap_value))
        network = vectorize_array(probability, GRID, VectorizeParams(close_gaps_m=0))
        degree, distance = _junction_at(network, 200, 100)
        assert (degree == 3 and distance < 2.0) == joined, gap_value


def test_isolated_short_piece_is_dropped():
    network = vectorize_array(_draw((400, 300), [[(0, 100), (399, 100)], [(100, 200), (140, 200)]]), GRID)
    assert len(network.roads) == 1  # the 20 m piece is under min_length_m (30 m)


def test_geodesic_length_in_degrees():
    grid = PixelGrid((-115.0, 1e-5, 0.0, 36.0, 0.0, -1e-5), (0.9, 1.1), geographic=True)
    line = shapely.LineString([(-115.0, 36.0), (-115.0, 36.01)])  # 0.01 degree of latitude
    assert line_length_m(line, grid) == pytest.approx(1109.4, abs=1.0)


def test_many_windows_give_the_network_of_one(shared_data):
    """The real SpaceNet centrelines rasterised 7 m wide, vectorized in 400 px windows and in one."""
    with rasterio.open(shared_data / "spacenet/vegas_img0.tif") as ds:
        transform, shape = ds.transform, (ds.height, ds.width)
    geometries = shapely.from_wkb(pyogrio_raw().read(shared_data / "spacenet/vegas_img0_roads.geojson",
                                                     columns=[])[2])
    mask = rasterize([g.buffer(3.5 / 89900) for g in geometries], out_shape=shape, transform=transform)
    grid = PixelGrid(transform.to_gdal(), (0.2427, 0.2996), geographic=True)
    whole = vectorize_array(mask.astype(np.float32), grid, VectorizeParams(window=2048))
    pieces = vectorize_array(mask.astype(np.float32), grid, VectorizeParams(window=400))
    junctions = [sum(a["degree"] >= 3 for a in n.junction_attributes) for n in (whole, pieces)]
    assert junctions[0] == junctions[1] > 20
    assert pieces.total_length_m == pytest.approx(whole.total_length_m, rel=0.01)
    truth = sum(line_length_m(g, grid) for g in geometries)
    assert whole.total_length_m == pytest.approx(truth, rel=0.08)  # skeletons stop short at dead ends


def test_windows_see_as_far_as_the_clean_up_at_a_fine_resolution():
    # At 0.25 m a 45 m gap join spans 180 px, more than the 128 px least margin: a window must read past it, or the
    # window whose core holds one end does not see the other and the join is drawn only in part.
    fine = PixelGrid(from_origin(500000.0, 4100000.0, 0.25, 0.25).to_gdal(), (0.25, 0.25))
    mask = _draw((1600, 400), [[(0, 200), (760, 200)], [(940, 200), (1599, 200)]])
    whole = vectorize_array(mask, fine, VectorizeParams(window=4096, close_gaps_m=0))
    windows = vectorize_array(mask, fine, VectorizeParams(window=800, close_gaps_m=0))
    assert len(whole.roads) == len(windows.roads) == 1
    assert windows.total_length_m == pytest.approx(whole.total_length_m, abs=0.5)


def _probability_tif(path: Path, probability: np.ndarray, transform=UTM, crs="EPSG:32611") -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=probability.shape[1], height=probability.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform) as ds:
        ds.write((probability * 255).round().astype(np.uint8), 1)
    return path


def test_geopackage_layers_fields_crs_and_metadata(tmp_path):
    raster = _probability_tif(tmp_path / "p.tif", _draw((400, 400), [[(0, 200), (399, 200)], [(200, 0),
                                                                                               (200, 399)]]))
    out = tmp_path / "roads.gpkg"
    vectorize_file(raster, out, metadata={"road_extractor_model": "test.pt"})
    raw = pyogrio_raw()
    from pyogrio import list_layers, read_info

    assert [list(layer) for layer in list_layers(out)] == [["roads", "LineString"], ["junctions", "Point"]]
    info = read_info(out, layer="roads")
    assert list(info["fields"]) == ["id", "length_m", "mean_probability", "width_m", "start_junction", "end_junction"]
    assert info["crs"] == "EPSG:32611" and info["features"] == 4
    assert "road_extractor_vectorize" in info["dataset_metadata"]
    assert info["dataset_metadata"]["road_extractor_model"] == "test.pt"
    _, _, _, fields = raw.read(out, layer="junctions")
    assert sorted(fields[1]) == [1, 1, 1, 1, 4]
    with pytest.raises(OutputError, match="already exists; allow overwriting"):
        vectorize_file(raster, out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_vectorize_cli_and_bad_inputs(tmp_path, shared_data):
    raster = _probability_tif(tmp_path / "p.tif", _draw((300, 300), [[(0, 150), (299, 150)]]))
    result = subprocess.run([sys.executable, "-m", "core", "vectorize", raster, "--out", tmp_path / "r.gpkg"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "1 roads, 0.15 km, 0 junctions" in result.stdout
    for bad, message in ((shared_data / "spacenet/vegas_img0.tif", "has 4 bands; give a road mask"),
                         (shared_data / "massroads/masks/10078735_15.png", "no georeferencing, so lengths")):
        result = subprocess.run([sys.executable, "-m", "core", "vectorize", bad, "--out", tmp_path / "x.gpkg"],
                                capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 2 and message in result.stderr, result.stderr
    result = subprocess.run([sys.executable, "-m", "core", "vectorize", raster, "--out", tmp_path / "x.shp"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 2 and "must end in .gpkg" in result.stderr


def test_worker_processes_give_the_same_network(tmp_path):
    rng = np.random.default_rng(4)
    roads = [[tuple(rng.uniform(0, 600, 2)), tuple(rng.uniform(0, 600, 2))] for _ in range(12)]
    raster = _probability_tif(tmp_path / "p.tif", _draw((600, 600), roads))
    params = VectorizeParams(window=200, margin=64)
    one = vectorize_file(raster, tmp_path / "one.gpkg", params, workers=1)
    two = vectorize_file(raster, tmp_path / "two.gpkg", params, workers=2)
    assert [len(one.roads), one.total_length_m] == [len(two.roads), two.total_length_m]
    assert sorted(a["degree"] for a in one.junction_attributes) == sorted(a["degree"] for a in two.junction_attributes)
