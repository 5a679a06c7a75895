"""Hostile inputs and faults, third round (issue 34): each of these once destroyed results, answered wrongly with
exit status 0 or ended in a traceback. Real files and real processes, made in the test."""

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.transform import from_origin

REPO = Path(__file__).resolve().parents[1]


def _cli(*args, limit_bytes: int | None = None, module: str = "core"):
    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as in a shell

    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=REPO, preexec_fn=limited if limit_bytes else None)


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def suburb(tmp_path_factory):
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb

    folder = tmp_path_factory.mktemp("suburb")
    raster, roads = write_sample(make_suburb(384), folder)
    return raster, roads


def test_a_failing_overwrite_keeps_the_previous_results(suburb, random_model_file, tmp_path):
    raster, _ = suburb
    out = tmp_path / "out"
    first = _cli("extract", raster, "--model", random_model_file, "--out", out, "--tta-scales", "1")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) == 3  # probability, mask, roads
    # A file size limit (`ulimit -f`) that the GeoTIFFs fit under and the GeoPackage does not, so the run fails at
    # its last stage, after the rasters are made (the case, where they were already replaced).
    largest_tif = max(len(b) for n, b in before.items() if n.endswith(".tif"))
    gpkg = len(before["sample_roads.gpkg"])
    assert largest_tif * 1.5 < gpkg, (largest_tif, gpkg)
    limit = (largest_tif + gpkg) // 2
    again = _cli("extract", raster, "--model", random_model_file, "--out", out, "--tta-scales", "1",
                 "--threshold", "0.3", "--overwrite", limit_bytes=limit)
    assert again.returncode == 2, again.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before  # every old output as it was, and nothing else left beside them


@pytest.mark.parametrize("transform, words", [
    (Affine.translation(330000, 4690000) * Affine.rotation(30) * Affine.scale(1, -1), "rotated 30.0 degrees"),
    (Affine.translation(330000, 4690000) * Affine.rotation(90) * Affine.scale(1, -1), "rotated 90.0 degrees"),
    (Affine(1, 0.2, 330000, 0, -1, 4690000), "skewed"),
], ids=["rotated-30", "rotated-90", "skewed"])
def test_grids_that_are_not_north_up_are_refused_with_the_command_that_fixes_them(random_model_file, tmp_path,
                                                                                 transform, words):
    path = tmp_path / "turned.tif"
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=transform) as ds:
        ds.write(np.full((3, 96, 96), 120, np.uint8))
    line = _one_line(_cli("extract", path, "--model", random_model_file, "--out", tmp_path / "out"))
    assert words in line and "gdalwarp" in line and "turned_north_up.tif" in line
    assert not (tmp_path / "out").exists()


def _lines_file(path: Path, good: list, crs: str = "EPSG:32619") -> Path:
    features = [{"type": "Feature", "properties": {}, "geometry": g} for g in good]
    features += [{"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": [[0, 0]]}},
                 {"type": "Feature", "properties": {}, "geometry": None}]
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                                "features": features}))
    return path


def test_one_bad_geometry_among_good_ones_is_skipped_with_a_count(suburb, tmp_path):
    from core.inputs.vectors import read_polygons
    from core.metrics import read_lines
    from training.finetune import FinetuneSpec, prepare

    raster, roads = suburb
    lines, _ = read_lines(roads)
    good = [json.loads(json.dumps(line.__geo_interface__)) for line in lines]
    broken = _lines_file(tmp_path / "broken.geojson", good)
    notes = []
    kept, _ = read_lines(broken, notes=notes)
    assert len(kept) == len(lines) and "2 feature(s) without a usable geometry" in notes[0]
    # evaluate, with the broken file as prediction and as reference
    for pair in ((broken, roads), (roads, broken)):
        result = _cli("evaluate", *pair)
        assert result.returncode == 0, result.stderr
        assert "skipped" in result.stdout and "completeness" in result.stdout
    # finetune --roads: the pieces skipped, named in the log
    logged = []
    prepare(FinetuneSpec(rasters=[str(raster)], roads=str(broken), out="", crop=64, road_width_m=7), 1.0,
            logged.append)
    assert any("without a usable geometry" in line for line in logged)
    # an --aoi of a polygon and a line of one vertex: the polygon is the area
    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
    square = {"type": "Polygon", "coordinates": [[[left, bottom], [right, bottom], [right, top], [left, top],
                                                  [left, bottom]]]}
    assert len(read_polygons(_lines_file(tmp_path / "aoi.geojson", [square]))) == 1
    # nothing usable left: refused as before, in one line
    only_broken = _lines_file(tmp_path / "nothing.geojson", [])
    assert "no lines" in _one_line(_cli("finetune", "--raster", raster, "--roads", only_broken, "--out",
                                        tmp_path / "m.pt", "--minutes", "0.05", module="training"))


def test_a_model_with_negative_batchnorm_variance_is_refused(tmp_path):
    from core.model import ModelConfig, build_model
    from core.model.checkpoint import CheckpointError, ModelInfo, load_model, save_model

    network = build_model(ModelConfig(backbone="resnet18"))
    name = next(k for k in network.state_dict() if k.endswith("running_var"))
    with torch.no_grad():
        network.state_dict()[name].fill_(-5.0)
    path = save_model(tmp_path / "edited.pt", network, ModelInfo(gsd_m=1.0))
    with pytest.raises(CheckpointError, match="negative BatchNorm variances"):
        load_model(path)
    inspect = _cli("inspect", path)
    assert "verdict     refused:" in inspect.stdout and "negative" in inspect.stdout
    assert "negative BatchNorm" in _one_line(_cli("extract", path, "--model", path, "--out", tmp_path / "o"))


def test_a_plain_0_1_mask_is_read_as_a_mask(tmp_path):
    mask = np.zeros((200, 200), np.uint8)
    mask[97:104, 10:190] = 1
    mask[10:190, 97:104] = 1
    path = tmp_path / "plain_mask.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 1, 1)) as ds:  # no NoData, no tag of ours
        ds.write(mask, 1)
    result = _cli("vectorize", path, "--out", tmp_path / "roads.gpkg")
    assert result.returncode == 0, result.stderr
    assert "as a road mask (its values are 0 and 1" in result.stderr
    assert "4 roads" in result.stdout or "roads" in result.stdout and " 0 roads" not in result.stdout


def test_a_probability_raster_is_still_read_as_probabilities(tmp_path):
    from core.inputs.road_raster import road_values

    values = np.zeros((64, 64), np.uint8)
    values[30:34] = 200
    path = tmp_path / "probability.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 1, 1)) as ds:
        ds.write(values, 1)
    with rasterio.open(path) as ds:
        read = road_values(ds, path)
    assert not read.binary and "up to 200" in read.read_as


_CROSS = np.zeros((96, 96), bool)
_CROSS[40:48, :] = _CROSS[:, 40:48] = True


_CONVENTIONS = [
    ("float-probability", np.where(_CROSS, 0.9, 0.1), "float32", None, "roads"),
    ("float-mask", _CROSS * 1.0, "float64", None, "roads"),
    ("int16-mask", _CROSS * 1, "int16", None, "roads"),
    ("uint16-0-255", _CROSS * 255, "uint16", None, "roads"),
    ("uint16-probability", np.where(_CROSS, 60000, 3000), "uint16", None, "gdal_translate -ot Byte -scale 0 60000"),
    ("float-out-of-range", np.where(_CROSS, 9.0, -1.0), "float32", None, "neither a 0/1 mask nor probabilities"),
    ("percent", np.where(_CROSS, 90, 10), "uint8", None, "if it holds percentages"),
    ("nodata-0", _CROSS * 255, "uint8", 0, "roads"),
]


@pytest.mark.parametrize("name, stored, dtype, nodata, outcome", _CONVENTIONS, ids=[c[0] for c in _CONVENTIONS])
def test_road_rasters_in_every_value_convention_read_alike_in_vectorize_and_evaluate(tmp_path, name, stored, dtype,
                                                                                   nodata, outcome):
    """A road raster of another tool is read the same way by `vectorize` and `evaluate`: as a mask or a
    probability, told by its type and values, or refused with the conversion (0.1 float probabilities were all
    road to `evaluate`, 16-bit probabilities all road, float and 16-bit masks refused by `vectorize`)."""
    path = tmp_path / f"{name}.tif"
    grid = {"crs": "EPSG:32619", "transform": from_origin(330000, 4690000, 1, 1), "width": 96, "height": 96}
    with rasterio.open(path, "w", driver="GTiff", count=1, dtype=dtype, nodata=nodata, **grid) as ds:
        ds.write(stored.astype(dtype), 1)
    truth = tmp_path / "truth.tif"
    with rasterio.open(truth, "w", driver="GTiff", count=1, dtype="uint8", **grid) as ds:
        ds.write(_CROSS.astype(np.uint8) * 255, 1)
    traced = _cli("vectorize", path, "--out", tmp_path / "roads.gpkg")
    scored = _cli("evaluate", path, truth, "--json", tmp_path / "scores.json")
    if outcome == "roads":
        assert traced.returncode == 0 and "4 roads" in traced.stdout, traced.stdout + traced.stderr
        if nodata == 0:  # every background pixel would be left out of the score: refused there
            assert "NoData 0, which is also its background" in _one_line(scored)
        else:
            assert scored.returncode == 0, scored.stderr
            assert json.loads((tmp_path / "scores.json").read_text())["road_iou"] == 1.0
    elif outcome.startswith("if it holds"):
        assert traced.returncode == 0 and outcome in traced.stderr
        assert scored.returncode == 0 and outcome in scored.stdout
    else:
        assert outcome in _one_line(traced) and outcome in _one_line(scored)
        assert not (tmp_path / "roads.gpkg").exists() and not (tmp_path / "scores.json").exists()


def test_evaluate_refuses_rotated_grids_rather_than_scoring_at_their_x_term(tmp_path):
    """Two masks on one rotated grid were scored with gsd_m 0.866 (the x term of a 30-degree rotation of 1 m
    pixels) and the relaxed tolerance drawn at that scale."""
    turned = Affine.translation(330000, 4690000) * Affine.rotation(30) * Affine.scale(1, -1)
    paths = []
    for name in ("predicted", "reference"):
        paths.append(tmp_path / f"{name}.tif")
        with rasterio.open(paths[-1], "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                           crs="EPSG:32619", transform=turned) as ds:
            ds.write(np.pad(np.ones((64, 8), np.uint8), ((0, 0), (28, 28)))[:, :64], 1)
    assert "rotated 30.0 degrees" in _one_line(_cli("evaluate", *paths))


def test_a_kill_9_during_a_finetune_leaves_no_scratch_for_good(suburb, random_model_file, tmp_path):
    import tempfile

    from core.extraction.extract import SCRATCH_PREFIX
    from training.evaluate import Inference, predict_tile

    raster, roads = suburb
    shared = Path(tempfile.gettempdir()) / "road-extractor-scoring"
    process = subprocess.Popen([sys.executable, "-m", "training", "finetune", "--raster", str(raster), "--roads",
                                str(roads), "--init", str(random_model_file), "--out", str(tmp_path / "k.pt"),
                                "--minutes", "5", "--crop", "64", "--batch-size", "2"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mine = f"{SCRATCH_PREFIX}{process.pid}-"
    deadline = time.monotonic() + 300
    while not any(p.name.startswith(mine) for p in shared.glob(f"{SCRATCH_PREFIX}*")):
        assert process.poll() is None and time.monotonic() < deadline, "the fine-tune never scored"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert any(p.name.startswith(mine) for p in shared.iterdir())  # a killed process cleans nothing itself
    predict_tile(load_random(random_model_file), np.zeros((64, 64, 3), np.uint8), np.ones((64, 64), bool), 1.0,
                 Inference(scales=(1.0,)))  # the next scoring anywhere removes it
    assert not any(p.name.startswith(mine) for p in shared.iterdir())


def load_random(path):
    from core.model.checkpoint import load_model

    return load_model(path)


def test_a_geopackage_without_a_layer_is_named_as_such(tmp_path):
    from osgeo import ogr

    empty = str(tmp_path / "empty.gpkg")
    ogr.GetDriverByName("GPKG").CreateDataSource(empty).FlushCache()
    assert "GeoPackage without any layer" in _one_line(_cli("evaluate", empty, empty))


def test_evaluate_json_of_empty_predictions_is_valid_json(suburb, tmp_path):
    raster, roads = suburb
    nothing = tmp_path / "nothing.geojson"
    nothing.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": []}))
    report = tmp_path / "report.json"
    result = _cli("evaluate", nothing, roads, "--json", report)
    assert result.returncode == 0, result.stderr
    text = report.read_text()
    assert "NaN" not in text
    json.loads(text)  # strict JSON


def test_a_raster_placed_by_control_points_only_gets_the_gdalwarp_command(random_model_file, tmp_path):
    from rasterio.control import GroundControlPoint
    from rasterio.crs import CRS

    path = tmp_path / "gcps.tif"
    gcps = [GroundControlPoint(0, 0, 330000, 4690000), GroundControlPoint(0, 96, 330000, 4689904),
            GroundControlPoint(96, 0, 330096, 4690000)]
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8", gcps=gcps,
                       crs=CRS.from_epsg(32619)) as ds:
        ds.write(np.full((3, 96, 96), 100, np.uint8))
    line = _one_line(_cli("extract", path, "--model", random_model_file, "--out", tmp_path / "out"))
    assert "3 ground control points" in line and "gdalwarp" in line and "gcps_warped.tif" in line


def test_a_raster_of_one_value_is_refused(random_model_file, tmp_path):
    path = tmp_path / "zeros.tif"
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint16", crs="EPSG:32619",
                       transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(np.zeros((3, 96, 96), np.uint16))
    assert "holds one value (0)" in _one_line(_cli("extract", path, "--model", random_model_file, "--out",
                                                   tmp_path / "out"))


def _geotiff(path: Path, data: np.ndarray, **extra) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32619", transform=from_origin(330000, 4690000, 1, 1),
                       **extra) as ds:
        ds.write(data)
    return path


def test_a_palette_raster_is_refused_with_the_command_that_expands_it(random_model_file, tmp_path):
    path = _geotiff(tmp_path / "palette.tif", np.random.default_rng(0).integers(0, 4, (1, 96, 96), np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (200, 30, 30, 255), 2: (30, 200, 30, 255), 3: (30, 30, 200, 255)})
    for bands in ((), ("--bands", "1,1,1")):  # following the old advice fed indices as grey
        line = _one_line(_cli("extract", path, "--model", random_model_file, "--out", tmp_path / "out", *bands))
        assert "palette" in line and "gdal_translate -expand rgb" in line and "palette_rgb.tif" in line


def test_a_one_bit_raster_is_stretched_not_read_as_black(tmp_path):
    from core.inputs.raster import RasterioSource, Window

    pattern = (np.indices((96, 96)).sum(axis=0) % 2).astype(np.uint8)[None]
    path = _geotiff(tmp_path / "bits.tif", pattern, nbits=1)
    source = RasterioSource(path, bands="1,1,1")
    values, valid = source.read(Window(0, 0, 96, 96), (96, 96))
    assert valid.all() and values.min() == 0 and values.max() == 255
    assert any("1-bit" in note for note in source.info.notes)


def test_a_vrt_whose_source_is_gone_names_the_file(random_model_file, tmp_path):
    source = _geotiff(tmp_path / "part.tif", np.full((3, 96, 96), 120, np.uint8))
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(source)], check=True)
    source.unlink()
    line = _one_line(_cli("extract", vrt, "--model", random_model_file, "--out", tmp_path / "out"))
    assert str(source) in line and "does not exist" in line


def test_the_readme_png_example_prints_no_library_warnings(random_model_file, tmp_path):
    from PIL import Image

    png = tmp_path / "tile.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96, 3), np.uint8)).save(png)
    result = _cli("extract", png, "--model", random_model_file, "--out", tmp_path / "out", "--gsd", "1",
                  "--tta-scales", "1")
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "no georeferencing" in result.stderr


@pytest.mark.parametrize("ring, words", [
    ([[0, 0], [40, 40], [40, 0], [0, 40], [0, 0]], "not a valid polygon (Self-intersection"),
    ([[0, 0], [20, 20], [40, 40], [0, 0]], "has no area"),
], ids=["bow-tie", "zero-area"])
def test_an_aoi_polygon_that_is_not_an_area_is_refused(random_model_file, tmp_path, ring, words):
    raster = _geotiff(tmp_path / "image.tif", np.full((3, 96, 96), 120, np.uint8))
    coordinates = [[[330010 + x, 4689990 - y] for x, y in ring]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": [{"type": "Feature", "properties": {}, "geometry": {
            "type": "Polygon", "coordinates": coordinates}}]}))
    line = _one_line(_cli("extract", raster, "--model", random_model_file, "--out", tmp_path / "out", "--aoi", aoi))
    assert words in line and "polygon 1" in line


def test_an_unknown_bbox_crs_is_one_line_without_gdal_noise(random_model_file, tmp_path):
    raster = _geotiff(tmp_path / "image.tif", np.full((3, 96, 96), 120, np.uint8))
    line = _one_line(_cli("extract", raster, "--model", random_model_file, "--out", tmp_path / "out", "--bbox",
                          "330000,4689950,330050,4690000", "--bbox-crs", "EPSG:999999"))
    assert "EPSG:999999" in line and line.startswith("road-extractor: error:")


def test_evaluating_two_geopackages_leaves_nothing_beside_them(suburb, random_model_file, tmp_path):
    raster, _ = suburb
    out = tmp_path / "out"
    assert _cli("extract", raster, "--model", random_model_file, "--out", out, "--tta-scales", "1").returncode == 0
    (found,) = out.glob("*.gpkg")
    other = tmp_path / "other.gpkg"
    other.write_bytes(found.read_bytes())
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert _cli("evaluate", found, other).returncode == 0
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_mosaic_of_rasters_with_other_bands_is_refused_and_mixed_resolutions_keep_the_finest(tmp_path):
    from core.errors import InputError
    from core.frontends.region import build_mosaic

    rgb = _geotiff(tmp_path / "rgb.tif", np.full((3, 64, 64), 100, np.uint8))
    grey = tmp_path / "grey.tif"
    with rasterio.open(grey, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330064, 4690000, 1, 1)) as ds:
        ds.write(np.full((1, 64, 64), 100, np.uint8))
    with pytest.raises(InputError, match="differ in their bands .*grey.tif has 1 uint8 band"):
        build_mosaic([rgb, grey], tmp_path / "mosaic.vrt")  # GDAL skipped grey.tif: its area was missing
    fine = tmp_path / "fine.tif"
    with rasterio.open(fine, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330064, 4690000, 0.5, 0.5)) as ds:
        ds.write(np.full((3, 128, 128), 100, np.uint8))
    with rasterio.open(build_mosaic([rgb, fine], tmp_path / "mixed.vrt")) as ds:
        assert ds.res == (0.5, 0.5) and ds.width == 256  # not the average, 0.75 m


def test_one_raster_given_twice_to_finetune_is_refused(suburb, tmp_path):
    raster, roads = suburb
    twice = Path(raster).parent / ".." / Path(raster).parent.name / Path(raster).name
    line = _one_line(_cli("finetune", "--raster", raster, "--raster", twice, "--roads", roads, "--out",
                          tmp_path / "m.pt", "--minutes", "0.05", module="training"))
    assert "is given twice" in line and not (tmp_path / "m.pt").exists()


def test_a_local_engineering_crs_asks_for_the_pixel_size(random_model_file, tmp_path):
    from rasterio.crs import CRS

    path = tmp_path / "local.tif"
    with rasterio.open(path, "w", driver="GTiff", width=96, height=96, count=3, dtype="uint8",
                       crs=CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1]]'),
                       transform=from_origin(0, 96, 1, 1)) as ds:
        ds.write(np.full((3, 96, 96), 120, np.uint8))
    line = _one_line(_cli("extract", path, "--model", random_model_file, "--out", tmp_path / "out"))
    assert "local (engineering) CRS" in line and "--gsd" in line  # was "Linear units factor is not defined"
    ran = _cli("extract", path, "--model", random_model_file, "--out", tmp_path / "out", "--gsd", "1",
               "--tta-scales", "1")
    assert ran.returncode == 0, ran.stderr


def test_finetune_never_overwrites_its_own_parent(suburb, random_model_file, tmp_path):
    raster, roads = suburb
    parent = tmp_path / "parent.pt"
    parent.write_bytes(Path(random_model_file).read_bytes())
    line = _one_line(_cli("finetune", "--raster", raster, "--roads", roads, "--init", parent, "--out", parent,
                          "--overwrite", "--minutes", "0.05", module="training"))
    assert "is the parent model itself" in line
    assert parent.read_bytes() == Path(random_model_file).read_bytes()


def test_update_map_never_writes_over_the_road_layer_it_compares(suburb, random_model_file, tmp_path):
    raster, roads = suburb
    layer = tmp_path / "layer.gpkg"
    layer.write_bytes(Path(roads).read_bytes())
    line = _one_line(_cli("update-map", raster, "--roads", layer, "--out", layer, "--overwrite", "--model",
                          random_model_file))
    assert "is the road layer being compared" in line and layer.read_bytes() == Path(roads).read_bytes()


def test_a_raster_given_as_road_lines_gets_one_plain_line(suburb, tmp_path):
    raster, _ = suburb
    line = _one_line(_cli("finetune", "--raster", raster, "--roads", raster, "--out", tmp_path / "m.pt",
                          "--minutes", "0.05", module="training"))
    assert "not a vector file OGR can read" in line and "It might help" not in line
    assert line.count("give a GeoPackage") == 1


def test_an_aoi_in_a_geometry_collection_counts_by_its_polygons(random_model_file, tmp_path):
    raster = _geotiff(tmp_path / "image.tif", np.full((3, 96, 96), 120, np.uint8))
    square = [[[330010, 4689990], [330050, 4689990], [330050, 4689950], [330010, 4689950], [330010, 4689990]]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": [{"type": "Feature", "properties": {}, "geometry": {
            "type": "GeometryCollection", "geometries": [{"type": "Polygon", "coordinates": square}, {
                "type": "LineString", "coordinates": [[330000, 4689900], [330090, 4689900]]}]}}]}))
    done = _cli("extract", raster, "--model", random_model_file, "--out", tmp_path / "out", "--aoi", aoi,
                "--tta-scales", "1", "--no-vectorize")
    assert done.returncode == 0, done.stderr  # it was refused: "no polygons (GeometryCollection)"
    import rasterio

    with rasterio.open(tmp_path / "out" / "image_road_mask.tif") as ds:
        assert abs(ds.width - 40) <= 1 and abs(ds.height - 40) <= 1  # the square's window, not the line's


def test_a_check_area_over_all_the_labels_is_named_as_the_reason(suburb, tmp_path):
    import rasterio

    raster, roads = suburb
    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
    everything = tmp_path / "check.geojson"
    everything.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": [{"type": "Feature", "properties": {}, "geometry": {
            "type": "Polygon", "coordinates": [[[left, bottom], [right, bottom], [right, top], [left, top],
                                                [left, bottom]]]}}]}))
    line = _one_line(_cli("finetune", "--raster", raster, "--roads", roads, "--check-area", everything, "--out",
                          tmp_path / "m.pt", "--minutes", "0.05", module="training"))
    # It blamed NoData: "the imagery has no valid pixels ... where the labels are trusted".
    assert "covers all of the labelled area" in line and not (tmp_path / "m.pt").exists()


def _features(path: Path, geometries: list) -> Path:
    features = [{"type": "Feature", "properties": {}, "geometry": g} for g in geometries]
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name",
                                                                      "properties": {"name": "EPSG:32619"}},
                                "features": features}))
    return path


def test_road_lines_of_every_geometry_kind_in_every_line_input(suburb, random_model_file, tmp_path):
    """Points or polygons given as road lines were dropped without a word: `evaluate` scored the prediction against
    nothing (completeness 0, exit 0). Now a file without lines is refused in one line by every command that reads
    road lines; lines inside a GeometryCollection are read; a few points among lines are skipped with a count."""
    from core.metrics import read_lines

    raster, roads = suburb
    lines, _ = read_lines(roads)
    as_json = [json.loads(json.dumps(line.__geo_interface__)) for line in lines]
    points = _features(tmp_path / "points.geojson", [{"type": "Point", "coordinates": g["coordinates"][0]}
                                                     for g in as_json])
    surfaces = _features(tmp_path / "surfaces.geojson", [json.loads(json.dumps(line.buffer(3).__geo_interface__))
                                                         for line in lines])
    for wrong, kind in ((points, "Points"), (surfaces, "Polygons")):
        for result in (_cli("evaluate", roads, wrong), _cli("evaluate", wrong, roads),
                       _cli("finetune", "--raster", raster, "--roads", wrong, "--out", tmp_path / "m.pt",
                            "--minutes", "0.05", module="training")):
            assert f"holds {len(lines)} {kind} and no lines" in _one_line(result)
        assert "no usable road lines" in _one_line(_cli("update-map", raster, "--roads", wrong, "--model",
                                                        random_model_file, "--out", tmp_path / "u.gpkg"))
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "u.gpkg").exists()
    collection = _features(tmp_path / "collection.geojson", [{"type": "GeometryCollection", "geometries": as_json}])
    mixed = _features(tmp_path / "mixed.geojson", as_json + [{"type": "Point", "coordinates": [330010, 4689990]}])
    notes: list[str] = []
    assert len(read_lines(collection)[0]) == len(lines)
    assert len(read_lines(mixed, notes=notes)[0]) == len(lines) and "1 Point skipped (not lines)" in notes[0]
    scored = _cli("evaluate", collection, mixed)
    assert scored.returncode == 0 and "1 Point skipped" in scored.stdout, scored.stderr


def test_a_folder_where_an_output_file_goes_is_refused_before_any_work(suburb, random_model_file, tmp_path):
    """A folder left where an output file goes (a `roads.gpkg` folder, an earlier run's `--json` path made a
    folder): `vectorize --overwrite` traced the whole raster, then ended in `IsADirectoryError` with exit 1."""
    raster, roads = suburb
    mask = tmp_path / "mask.tif"
    with rasterio.open(mask, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(np.pad(np.ones((64, 8), np.uint8), ((0, 0), (28, 28))), 1)
    folder = tmp_path / "roads.gpkg"
    (folder / "kept").mkdir(parents=True)
    out = tmp_path / "out"
    (out / "sample_road_probability.tif").mkdir(parents=True)
    (tmp_path / "model.pt").mkdir()
    for result in (_cli("vectorize", mask, "--out", folder, "--overwrite"),
                   _cli("evaluate", roads, roads, "--json", folder, "--overwrite"),
                   _cli("update-map", raster, "--roads", roads, "--model", random_model_file, "--out", folder,
                        "--overwrite"),
                   _cli("finetune", "--raster", raster, "--roads", roads, "--out", tmp_path / "model.pt",
                        "--minutes", "0.05", module="training"),
                   _cli("extract", raster, "--model", random_model_file, "--out", out, "--overwrite")):
        assert "is a folder; give a file name for the output" in _one_line(result)
    assert (folder / "kept").is_dir() and sorted(p.name for p in out.iterdir()) == ["sample_road_probability.tif"]


def test_a_raster_cut_short_is_named_before_any_work_alone_or_among_a_region_runs_inputs(random_model_file,
                                                                                          tmp_path):
    # A copy cut short (a download or transfer stopped): GDAL opens it, and the first read of its missing end failed
    # with "Read failed. See previous exception", naming no file; in a region run, hours in.
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        with rasterio.open(tiles / f"t{i}.tif", "w", driver="GTiff", width=200, height=200, count=3, dtype="uint8",
                           crs="EPSG:26986", transform=from_origin(200000 + 200 * i, 900000, 1, 1)) as ds:
            ds.write(rng.integers(0, 255, (3, 200, 200), dtype=np.uint8))
    whole = (tiles / "t1.tif").read_bytes()
    (tiles / "t1.tif").write_bytes(whole[:len(whole) // 3])
    for inputs, extra in (([tiles / "t1.tif"], []), ([tiles], ["--workers", "2"])):
        out = tmp_path / f"out{len(extra)}"
        line = _one_line(_cli("extract", *inputs, "--out", out, "--model", random_model_file, "--tta-scales", "1",
                              *extra))
        assert "t1.tif cannot be read at its end" in line and "copy or download it again" in line, line
        assert not out.exists()


def _stop_when(process, ready, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None and time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)


def test_sigterm_during_a_finetune_training_leaves_no_model_and_says_so(suburb, random_model_file, tmp_path):
    # SIGTERM in the middle of fine-tuning (after its "before" scoring): the process died of the signal with no
    # word said; now it stops as Ctrl-C does, in one line, with exit 143, and writes no model.
    raster, roads = suburb
    log = tmp_path / "log"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "training", "finetune", "--raster", str(raster), "--roads",
                                    str(roads), "--init", str(random_model_file), "--out", str(tmp_path / "k.pt"),
                                    "--minutes", "5", "--crop", "64", "--batch-size", "2"], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=handle)
        _stop_when(process, lambda: "before (parent" in log.read_text() or "before (elsewhere" in log.read_text(),
                   "the fine-tune's first scoring")
        process.wait(timeout=120)
    assert process.returncode == 143, log.read_text()
    assert log.read_text().strip().splitlines()[-1] == "python -m training finetune: terminated; no output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_sigterm_during_fit_says_how_to_resume_and_the_run_folder_resumes(road_tiles, tmp_path):
    # Lightning's graceful shutdown ended in sys.exit(1) with its own lines only; a job scheduler's SIGTERM now
    # gets exit 143 and the line that says the run resumes, and running the command again does.
    out = tmp_path / "run"
    command = [sys.executable, "-m", "training", "fit", "--data", str(road_tiles), "--val-tiles", "1", "--out",
               str(out), "--stage1-epochs", "0", "--stage2-epochs", "1", "--crops-per-epoch", "4000", "--crop", "64",
               "--batch-size", "2", "--checkpoint-every-n-steps", "2", "--val-tile", "160", "--val-overlap", "0"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _stop_when(process, lambda: (out / "checkpoints" / "last-step.ckpt").exists(), "a mid-epoch checkpoint")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert f"python -m training fit: terminated; run the same command again to resume from {out}'s last " \
           f"checkpoint" in stderr
    again = subprocess.run([*command[:command.index("--crops-per-epoch") + 1], "8",
                            *command[command.index("--crops-per-epoch") + 2:]], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert "resume      from" in again.stderr, again.stderr
