"""Hostile inputs, each once wrong with exit status 0: the tool must refuse them with one line or handle them
right, never answer wrongly. Small real files made in the test."""

import subprocess
import sys

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from core.extraction.extract import ExtractParams, extract_roads
from core.inputs.raster import RasterioSource
from core.model.catalog import default_model
from core.model.checkpoint import load_model
from training.config import TrainConfig


@pytest.fixture(scope="module")
def suburb_float(tmp_path_factory):
    """The built-in suburb as a float32 GeoTIFF (0..255 values) and the shipped model's road fraction on it."""
    from core.inputs.sample import make_suburb

    folder = tmp_path_factory.mktemp("float")
    image = make_suburb(512).image.transpose(2, 0, 1).astype(np.float32)
    path = folder / "clean.tif"
    profile = dict(driver="GTiff", width=512, height=512, count=3, dtype="float32", crs="EPSG:32619",
                   transform=from_origin(330000, 4690000, 1, 1))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(image)
    model = load_model(default_model())
    with RasterioSource(path, value_scale="none") as source:
        clean = extract_roads(source, model, folder / "clean", ExtractParams(scales=(1.0,))).road_fraction
    return folder, image, profile, model, clean


@pytest.mark.parametrize("nodata", [None, float("nan")], ids=["nan-pixel", "nodata-nan"])
def test_one_nan_pixel_does_not_blank_its_tile(suburb_float, nodata):
    folder, image, profile, model, clean = suburb_float
    assert clean > 0.005, "the shipped model should find the sample's streets"
    broken = image.copy()
    broken[:, 200, 300] = np.nan
    path = folder / f"nan-{nodata}.tif"
    with rasterio.open(path, "w", **{**profile, "nodata": nodata}) as ds:
        ds.write(broken)
    with RasterioSource(path, value_scale="none") as source:
        result = extract_roads(source, model, folder / f"out-{nodata}", ExtractParams(scales=(1.0,)))
    assert abs(result.road_fraction - clean) < 0.01, (result.road_fraction, clean)
    with rasterio.open(result.mask) as ds:
        assert ds.read_masks(1)[200, 300] == 0  # the NaN pixel itself is no data in the outputs


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "core", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def utm_mask(tmp_path_factory):
    """A one-band road mask in UTM (1 road, 0 background), 1 m pixels, as extract writes them."""
    folder = tmp_path_factory.mktemp("mask")
    mask = np.zeros((200, 200), np.uint8)
    mask[90:110, :] = 1
    profile = dict(driver="GTiff", width=200, height=200, count=1, dtype="uint8", crs="EPSG:32619", nodata=255,
                   transform=from_origin(330000, 4690000, 1, 1))
    path = folder / "prediction.tif"
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(mask, 1)
    return folder, mask, profile, path


@pytest.mark.parametrize("change, message", [
    ({"crs": "EPSG:32618"}, "warp the reference"),  # another CRS
    ({"transform": from_origin(430000, 4690000, 1, 1)}, "not on the same pixels"),  # 100 km away
    ({"transform": from_origin(330000, 4690000, 2, 2)}, "not on the same pixels"),  # 2 m pixels
])
def test_raster_evaluate_refuses_a_reference_on_another_grid(utm_mask, change, message):
    from core.inputs.raster import RasterError
    from core.metrics import evaluate_files

    folder, mask, profile, prediction = utm_mask
    reference = folder / f"reference-{len(list(folder.iterdir()))}.tif"
    with rasterio.open(reference, "w", **{**profile, **change}) as ds:
        ds.write(mask, 1)
    with pytest.raises(RasterError, match=message):
        evaluate_files(prediction, reference)
    same = folder / "same.tif"
    with rasterio.open(same, "w", **profile) as ds:
        ds.write(mask, 1)
    assert evaluate_files(prediction, same)["road_iou"] == 1.0


def test_raster_evaluate_refuses_imagery_as_the_prediction(utm_mask):
    from core.inputs.raster import RasterError
    from core.metrics import evaluate_files

    folder, mask, profile, prediction = utm_mask
    rgb = folder / "rgb.tif"
    with rasterio.open(rgb, "w", **{**profile, "count": 3}) as ds:
        ds.write(np.stack([mask] * 3))
    with pytest.raises(RasterError, match="has 3 bands"):
        evaluate_files(rgb, prediction)


@pytest.mark.parametrize("bbox, crs, message", [
    ("-71.1,91,-71.0,92", "EPSG:4326", "latitudes"),  # latitude 91
    ("330000,4689800,330200,4690000", "EPSG:4326", "in degrees"),  # UTM numbers given as degrees
    ("nan,4689800,330200,4690000", None, "finite numbers"),
])
def test_impossible_bounding_boxes_are_refused(utm_mask, tmp_path, bbox, crs, message):
    from core.inputs.area import area_from_bbox
    from core.inputs.raster import RasterError

    _, _, _, path = utm_mask
    with RasterioSource(path, bands=(1, 1, 1)) as source, pytest.raises(RasterError, match=message):
        area_from_bbox(source.info, [float(v) for v in bbox.split(",")], crs)


def test_the_readmes_bbox_example_parses_and_negative_numbers_reach_the_check(tmp_path):
    """`--bbox -115.17,...` (a value starting with '-') once failed in argparse: now it reaches the engine."""
    result = _cli("extract", tmp_path / "missing.tif", "--out", tmp_path / "out", "--bbox", "-115.17,36.237,-115.16,"
                  "36.24", "--bbox-crs", "EPSG:4326")
    assert result.returncode == 2 and "missing.tif: no such file" in result.stderr, result.stderr


@pytest.mark.parametrize("flags, message", [
    (["--high", "0.3", "--low", "0.5"], "low (0.5) is above high"),
    (["--spur-m", "-5"], "spur_m is -5; it must be at least 0"),
    (["--simplify-m", "nan"], "simplify_m is nan; give a finite number"),
    (["--threshold", "1.5"], "threshold is 1.5; it must be at most 0.99"),
    (["--tta-scales", "0,1"], "scales is 0; it must be at least 0.1"),
])
def test_vectorize_and_inference_options_out_of_range_are_refused_before_any_work(utm_mask, tmp_path, flags,
                                                                                  message):
    _, _, _, path = utm_mask
    command = ["extract", path, "--out", tmp_path / "out"] if "--threshold" in flags or "--tta-scales" in flags \
        else ["vectorize", path, "--out", tmp_path / "roads.gpkg"]
    result = _cli(*command, *flags)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "roads.gpkg").exists()


def test_a_failed_extract_removes_the_output_folder_it_made_but_not_the_users(suburb_float, tmp_path):
    folder, _, _, model, _ = suburb_float

    def fail(progress):
        raise RuntimeError("a failure half way")

    for out, made_here in ((tmp_path / "new" / "out", True), (tmp_path, False)):
        with RasterioSource(folder / "clean.tif", value_scale="none") as source, pytest.raises(RuntimeError):
            extract_roads(source, model, out, ExtractParams(scales=(1.0,), tile=256, overlap=32), progress=fail)
        assert out.exists() is not made_here and not list(tmp_path.glob("**/*.tif"))


def test_an_area_of_interest_without_a_crs_or_with_a_wrong_one_is_refused(utm_mask, tmp_path):
    import shapely

    from core.inputs.area import area_from_vector
    from core.inputs.raster import RasterError
    from core.inputs.vectors import pyogrio_raw

    _, _, _, path = utm_mask
    polygon = np.array([shapely.to_wkb(shapely.box(330050, 4689850, 330150, 4689950))], dtype=object)
    shapefile, geojson = tmp_path / "aoi.shp", tmp_path / "aoi.geojson"  # no .prj; GeoJSON means WGS84
    for file, driver in ((shapefile, "ESRI Shapefile"), (geojson, "GeoJSON")):
        pyogrio_raw().write(file, polygon, [], [], driver=driver, geometry_type="Polygon", crs=None)
    with RasterioSource(path, bands=(1, 1, 1)) as source:
        with pytest.raises(RasterError, match="has no CRS"):
            area_from_vector(source.info, shapefile)
        with pytest.raises(RasterError, match="CRS is probably wrong"):  # UTM metres read as degrees
            area_from_vector(source.info, geojson)


def test_an_ignore_raster_on_another_grid_is_refused(utm_mask):
    from core.inputs.raster import RasterError
    from core.metrics import evaluate_files

    folder, mask, profile, prediction = utm_mask
    small = folder / "ignore-small.tif"
    with rasterio.open(small, "w", **{**profile, "width": 100, "height": 100}) as ds:
        ds.write(mask[:100, :100], 1)
    with pytest.raises(RasterError, match="give it on the prediction's grid"):
        evaluate_files(prediction, prediction, ignore=small)


def test_a_raster_without_one_valid_pixel_is_refused_not_answered_with_no_roads(tmp_path):
    path = tmp_path / "all_nodata.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330000, 4690000, 1, 1), nodata=0) as ds:
        ds.write(np.zeros((3, 300, 300), np.uint8))
    result = _cli("extract", path, "--out", tmp_path / "out", "--tta-scales", "1")
    assert result.returncode == 2 and "no valid pixel in the area" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_evaluating_road_lines_prints_no_library_noise(tmp_path):
    """Where Debian's pyproj is installed beside QGIS (it is on the CI machines), importing pyogrio the plain way
    prints "Valid PROJ data directory not found" on every `evaluate` of road lines."""
    import shapely

    from core.inputs.vectors import pyogrio_raw

    lines = np.array([shapely.to_wkb(shapely.LineString([(330000 + i * 40, 4690000), (330000 + i * 40, 4689000)]))
                      for i in range(5)], dtype=object)
    path = tmp_path / "roads.gpkg"
    pyogrio_raw().write(path, lines, [], [], driver="GPKG", layer="roads", geometry_type="LineString",
                        crs="EPSG:32619")
    result = subprocess.run([sys.executable, "-m", "core", "evaluate", path, path], capture_output=True, text=True)
    assert result.returncode == 0 and "completeness" in result.stdout, result.stderr
    assert result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize("case", ["malformed YAML", "YAML list", "--crop 0", "--lr-stage2 nan", "no epochs",
                                  "--out is a file", "truncated checkpoint", "export into /proc",
                                  "ablate --lines without line pairs"])
def test_training_refuses_what_it_cannot_use_with_one_line(road_tiles, tmp_path, capsys, case):
    from training.__main__ import main

    config, afile, checkpoint = tmp_path / "run.yaml", tmp_path / "afile", tmp_path / "cut.ckpt"
    config.write_text({"malformed YAML": "crop: [256\nbatch_size: 8\n", "YAML list": "- crop\n"}.get(case, ""))
    afile.write_text("not a folder")
    # The start of a real checkpoint: a zip archive whose directory at the end never got written.
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:500])
    fit = ["fit", "--data", str(road_tiles), "--val-tiles", "1", "--out", str(tmp_path / "run")]
    argv = {"malformed YAML": [*fit, "--config", str(config)], "YAML list": [*fit, "--config", str(config)],
            "--crop 0": [*fit, "--crop", "0"], "--lr-stage2 nan": [*fit, "--lr-stage2", "nan"],
            "no epochs": [*fit, "--stage1-epochs", "0", "--stage2-epochs", "0"],
            "--out is a file": [*fit[:-1], str(afile)],
            "truncated checkpoint": ["export", str(checkpoint), "--out", str(tmp_path / "m.pt")],
            "export into /proc": ["export", str(checkpoint), "--out", "/proc/m.pt"],
            "ablate --lines without line pairs": ["ablate", *fit[1:], "--grid", "seed=0,1", "--lines", str(road_tiles)]
            }[case]
    if case == "export into /proc":  # a whole checkpoint, so only the output can be what is refused
        from training.fit import fit as train

        argv[1] = str(train(TrainConfig.from_dict({
            "data": [str(road_tiles)], "val_tiles": 1, "crop": 64, "batch_size": 2, "crops_per_epoch": 2,
            "stage1_epochs": 0, "stage2_epochs": 1, "val_tile": 160, "val_overlap": 0, "precision": "fp32",
            "out": str(tmp_path / "tiny")})))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = {"malformed YAML": "not valid YAML at line 2", "YAML list": "not a mapping of options",
                "--crop 0": "--crop 0: give a whole number of at least 32", "--lr-stage2 nan": "a positive number",
                "no epochs": "at least one epoch", "--out is a file": "is a file; give a folder",
                "truncated checkpoint": "not a readable training checkpoint",
                "export into /proc": "cannot write /proc/m.pt",
                "ablate --lines without line pairs": f"--lines {road_tiles}: no NAME.tif + NAME_roads"}[case]
    assert expected in err[-1], err  # main() returned 2: no exception got past it
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.pt").exists()
