"""`road-extractor update-map`: roads missing from a layer, roads of the layer the imagery does not show, and the
layer's offset, from real extraction on the demo's sample and from networks with known answers."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from core.inputs.vectors import pyogrio_raw
from core.metrics import read_lines
from core.options import CompareOptions
from core.roads.compare import ProbabilityGrid, compare_networks

ROOT = Path(__file__).resolve().parents[1]
LINE = shapely.LineString
UTM = "EPSG:32611"


def _grid(size=400, valid_cols=None, probability=0.0) -> ProbabilityGrid:
    """A 1 m grid over (0..size, 0..size) in map units; valid where `valid_cols` says (all by default)."""
    valid = np.ones((size, size), bool)
    if valid_cols is not None:
        valid[:, valid_cols] = False
    values = np.full((size, size), probability, np.float32)
    return ProbabilityGrid(values, values, valid, ~Affine(1, 0, 0, 0, -1, size))


def _crs_wkt(code=UTM) -> str:
    from rasterio.crs import CRS

    return CRS.from_user_input(code).to_wkt()


def test_each_road_is_classed_by_what_the_other_network_and_the_imagery_say():
    existing = [LINE([(100, 20), (100, 380)]),  # found, 2 m off
                LINE([(200, 20), (200, 380)]),  # not in the imagery
                LINE([(380, 20), (380, 380)])]  # over no-data
    extracted = [LINE([(102, 20), (102, 380)]), LINE([(300, 20), (300, 200)])]  # the second: new
    comparison = compare_networks(existing, extracted, _crs_wkt(), _grid(valid_cols=slice(350, 400)))
    summary = comparison.summary()
    assert summary["matched_km"] == pytest.approx(0.36, abs=0.005)
    assert summary["unconfirmed_km"] == pytest.approx(0.36, abs=0.005)
    assert summary["missing_km"] == pytest.approx(0.18, abs=0.005)
    assert summary["outside_km"] == pytest.approx(0.36, abs=0.005)
    assert summary["offset_mean_m"] == pytest.approx(2.0, abs=0.01)
    assert [p.source for p in comparison.unconfirmed] == [1] and [p.source for p in comparison.matched] == [0]


def test_pieces_are_parts_of_lines_and_short_wavers_are_not_cut():
    # One layer road, found along its first and last 150 m, absent for 100 m between; the extracted line also
    # strays just beyond the tolerance for 6 m, which must not cut the matched piece.
    existing = [LINE([(50, 0), (50, 400)])]
    extracted = [LINE([(52, 0), (52, 100), (59, 100), (59, 106), (52, 106), (52, 150)]), LINE([(52, 250), (52, 400)])]
    comparison = compare_networks(existing, extracted, _crs_wkt(), _grid(), CompareOptions(tolerance_m=6))
    assert len(comparison.unconfirmed) == 1
    # The gap less the tolerance at each end (the extracted lines' ends are within 6 m of it there).
    assert comparison.unconfirmed[0].length_m == pytest.approx(100 - 2 * 6, abs=3)
    assert sorted(round(p.length_m) for p in comparison.matched) == pytest.approx([156, 156], abs=3)
    # The strays of the extracted line (7 m off) are shorter than min_piece_m: not reported as missing.
    assert comparison.missing == []


def test_a_faint_road_the_vectorizer_dropped_still_supports_the_layer():
    existing = [LINE([(100, 20), (100, 380)])]
    faint = compare_networks(existing, [], _crs_wkt(), _grid(probability=0.35))
    absent = compare_networks(existing, [], _crs_wkt(), _grid(probability=0.1))
    assert faint.summary()["unconfirmed_km"] == 0 and faint.summary()["matched_km"] > 0.35
    assert absent.summary()["unconfirmed_km"] == pytest.approx(0.36, abs=0.005)


def test_lengths_and_offsets_are_metres_in_a_geographic_crs():
    from core.inputs.raster import metres_per_degree

    mx, my = metres_per_degree(36.24)
    x0, y0 = -115.17, 36.24
    existing = [LINE([(x0, y0), (x0, y0 + 300 / my)])]
    extracted = [LINE([(x0 + 3 / mx, y0), (x0 + 3 / mx, y0 + 300 / my)]), LINE([(x0 + 50 / mx, y0),
                                                                            (x0 + 50 / mx, y0 + 100 / my)])]
    size = 1000
    grid = ProbabilityGrid(np.zeros((size, size), np.float32), np.zeros((size, size), np.float32),
                           np.ones((size, size), bool),
                           ~Affine(1 / mx, 0, x0 - 100 / mx, 0, -1 / my, y0 + 500 / my))
    summary = compare_networks(existing, extracted, _crs_wkt("EPSG:4326"), grid).summary()
    assert summary["matched_km"] == pytest.approx(0.3, abs=0.003)
    assert summary["offset_mean_m"] == pytest.approx(3.0, abs=0.05)
    assert summary["missing_km"] == pytest.approx(0.1, abs=0.003)


def _write(path: Path, geometries, crs=UTM, geometry_type="LineString") -> Path:
    pyogrio_raw().write(path, geometry=shapely.to_wkb(np.array(geometries, dtype=object)), field_data=[],
                        fields=[], crs=crs, geometry_type=geometry_type, driver="GPKG", layer="roads")
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The demo's suburb (a georeferenced GeoTIFF in UTM 19N) and its known centrelines."""
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb

    folder = tmp_path_factory.mktemp("suburb")
    tif, roads = write_sample(make_suburb(384), folder)
    return tif, roads


def _update_map(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "core", "update-map", *map(str, args), "--quiet", "--tta-scales",
                           "1"], capture_output=True, text=True, cwd=cwd)


def test_update_map_finds_a_removed_road_and_flags_an_invented_one(sample, tmp_path):
    tif, roads = sample
    lines, crs = read_lines(roads)
    by_length = sorted(lines, key=lambda g: -g.length)
    removed, kept = by_length[0], by_length[1:]
    with rasterio.open(tif) as ds:
        left, bottom, right, top = ds.bounds
    # An invented road along the sample's edge band, 40 m from its every street.
    streets = shapely.union_all(lines)
    invented = None
    for offset in range(10, 300, 5):
        candidate = LINE([(left + offset, bottom + 20), (left + offset, bottom + 120)])
        if candidate.distance(streets) > 40:
            invented = candidate
            break
    assert invented is not None
    layer = _write(tmp_path / "layer.gpkg", kept + [invented], crs)
    out = tmp_path / "update.gpkg"
    run = _update_map(tif, "--roads", layer, "--out", out)
    assert run.returncode == 0, run.stderr
    assert "missing" in run.stdout and "tolerance   8 m" in run.stdout
    missing = read_lines(out, layer="missing")[0]
    unconfirmed = read_lines(out, layer="unconfirmed")[0]
    matched = read_lines(out, layer="matched")[0]
    # The shipped model finds the sample's streets (the demo: road IoU 0.85): the removed street comes back as
    # missing, the invented one is unconfirmed, most of the rest is matched.
    assert shapely.union_all(missing).buffer(5).intersection(removed).length > 0.6 * removed.length
    assert shapely.union_all(unconfirmed).buffer(1).intersection(invented).length > 0.8 * invented.length
    kept_length = sum(g.length for g in kept)
    assert shapely.union_all(matched).length > 0.6 * kept_length
    connection = sqlite3.connect(out)
    try:
        reviews = {r[0] for r in connection.execute("SELECT review FROM missing UNION SELECT review FROM unconfirmed")}
        ranks = sorted(r[0] for r in connection.execute("SELECT rank FROM missing"))
        metadata = connection.execute("SELECT metadata FROM gpkg_metadata").fetchall()
    finally:
        connection.close()
    assert reviews == {"new"} and ranks == list(range(1, len(missing) + 1))
    assert any("ROAD_EXTRACTOR_UPDATE_MAP" in m and "tolerance_m" in m for (m,) in metadata), metadata
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".update-map-")]  # scratch removed


@pytest.mark.parametrize("case, expected", [
    ("points", "no usable road lines (Point)"),
    ("polygons", "no usable road lines (Polygon)"),
    ("empty", "no usable road lines (no geometries)"),
    ("elsewhere", "none of its 1 lines lies on the imagery"),
    ("no crs", "it has no CRS"),
    ("missing", "no such file"),
])
def test_a_layer_that_cannot_be_compared_is_refused_with_one_line_and_nothing_written(sample, tmp_path, case,
                                                                                      expected):
    tif, roads = sample
    lines, crs = read_lines(roads)
    layer = tmp_path / "layer.gpkg"
    if case == "points":
        _write(layer, [shapely.Point(lines[0].coords[0])], crs, "Point")
    elif case == "polygons":
        _write(layer, [lines[0].buffer(3)], crs, "Polygon")
    elif case == "empty":
        _write(layer, [], crs)
    elif case == "elsewhere":
        _write(layer, [shapely.affinity.translate(lines[0], 100_000, 0)], crs)
    elif case == "no crs":
        _write(layer, lines[:2], None)
    out = tmp_path / "update.gpkg"
    run = _update_map(tif, "--roads", layer, "--out", out)
    assert run.returncode == 2, run.stdout + run.stderr
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and expected in errors[0], run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == (["layer.gpkg"] if case != "missing" else [])


def test_broken_pieces_are_reported_and_skipped_and_an_existing_output_is_kept(sample, tmp_path):
    tif, roads = sample
    lines, crs = read_lines(roads)
    layer = tmp_path / "layer.gpkg"
    zero = LINE([lines[0].coords[0], lines[0].coords[0]])
    _write(layer, lines + [zero], crs)
    out = tmp_path / "update.gpkg"
    run = _update_map(tif, "--roads", layer, "--out", out)
    assert run.returncode == 0, run.stderr
    assert "1 broken or empty feature(s)" in run.stderr
    before = out.read_bytes()
    again = _update_map(tif, "--roads", layer, "--out", out)
    assert again.returncode == 2 and "already exists" in again.stderr and out.read_bytes() == before
