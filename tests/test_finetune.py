"""`python -m training finetune` mechanics on a generated georeferenced suburb with its centrelines: a model file
that describes its parent, data and areas, before/after figures on a check area never trained on, and one line
naming the fix for each input it cannot use (nothing written). The figures on real data are a benchmark
(benchmarks/finetune_vegas.py), not a test."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.extraction.brightness import image_brightness
from core.model.checkpoint import load_model
from training.__main__ import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--minutes", "0.05", "--crop", "64", "--batch-size", "2"]


@pytest.fixture(scope="module")
def suburb(tmp_path_factory):
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb

    folder = tmp_path_factory.mktemp("suburb")
    raster, roads = write_sample(make_suburb(256), folder)
    return folder, raster, roads


def _polygon(path: Path, raster: Path, rows: tuple[float, float], crs="EPSG:32619") -> Path:
    import rasterio
    from rasterio.warp import transform_geom

    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
    y0, y1 = top - rows[1] * (top - bottom), top - rows[0] * (top - bottom)
    ring = {"type": "Polygon", "coordinates": [[[left, y0], [right, y0], [right, y1], [left, y1], [left, y0]]]}
    if crs != "EPSG:32619":
        ring = transform_geom("EPSG:32619", crs, ring)
    path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                                "features": [{"type": "Feature", "properties": {}, "geometry": ring}]}))
    return path


def _image_and_valid(raster: Path):
    import rasterio

    with rasterio.open(raster) as ds:
        image = ds.read([1, 2, 3]).transpose(1, 2, 0)
    return image, np.ones(image.shape[:2], bool)


def test_finetune_writes_a_self_describing_model_and_scores_before_and_after(suburb, random_model_file, tmp_path,
                                                                             capsys):
    folder, raster, roads = suburb
    # The check area given in another CRS (WGS84) than the raster's (UTM): reprojected.
    north = _polygon(tmp_path / "north.geojson", raster, (0, 0.5))
    south = _polygon(tmp_path / "south.geojson", raster, (0.5, 1), crs="EPSG:4326")
    out = tmp_path / "mine.pt"
    report = tmp_path / "report.json"
    code = main(["finetune", "--raster", str(raster), "--roads", str(roads), "--train-area", str(north),
                 "--check-area", str(south), "--init", str(random_model_file), "--out", str(out), "--json",
                 str(report), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "before" in err and "after" in err and "completeness" in err
    result = json.loads(report.read_text())
    assert result["steps"] >= 1 and result["gsd_m"] == 1.0  # the sample's and the parent's
    for figures in (result["before"], result["after"]):
        assert 0 <= figures["road_iou"] <= 1 and 0 <= figures["completeness"] <= 1
        assert figures["reference_km"] > 0.05  # the southern half's streets
    model = load_model(out)
    provenance = model.info.provenance
    assert model.info.gsd_m == 1.0
    low, high = model.info.normalization.brightness  # takes in the raster it learnt from, read as it is
    assert low <= image_brightness(*_image_and_valid(raster)) <= high
    assert provenance["parent"] == random_model_file.name and provenance["rasters"] == ["sample.tif"]
    assert provenance["roads"] == roads.name and provenance["check_area"] == "south.geojson"
    assert provenance["steps"] == result["steps"] and provenance["road_width_m"] == 7.0
    assert model.info.metrics["check_after_road_iou"] == pytest.approx(result["after"]["road_iou"])
    # Trained: the weights moved from the parent's.
    parent = load_model(random_model_file)
    moved = [not torch.allclose(a.float(), b.float(), atol=1e-3) for (_, a), (_, b) in
             zip(sorted(parent.network.state_dict().items()), sorted(model.network.state_dict().items()), strict=True)
             if a.is_floating_point()]
    assert any(moved)


def test_without_a_check_area_a_strip_is_held_out(suburb, random_model_file, tmp_path, capsys):
    folder, raster, roads = suburb
    code = main(["finetune", "--raster", str(raster), "--roads", str(roads), "--init", str(random_model_file),
                 "--out", str(tmp_path / "m.pt"), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "none given" in err and "southern quarter" in err


def test_the_default_gsd_is_the_imagerys_within_half_to_once_the_parents():
    from training.finetune import FinetuneError, FinetuneSpec, training_gsd

    spec = FinetuneSpec(rasters=[], out="")
    assert [training_gsd(spec, [g], 1.0) for g in (0.15, 0.3, 0.7, 1.0, 2.0)] == [0.5, 0.5, 0.7, 1.0, 1.0]
    assert training_gsd(FinetuneSpec(rasters=[], out="", gsd_m=0.3), [0.3], 1.0) == 0.3
    with pytest.raises(FinetuneError, match="positive number"):
        training_gsd(FinetuneSpec(rasters=[], out="", gsd_m=float("nan")), [0.3], 1.0)


def _refused(capsys, argv, match):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and match in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


def test_inputs_it_cannot_use_are_refused_with_the_fix_and_nothing_is_written(suburb, random_model_file, tmp_path,
                                                                             capsys):
    import rasterio
    from rasterio.transform import from_origin

    folder, raster, roads = suburb
    out = tmp_path / "never.pt"
    base = ["finetune", "--raster", str(raster), "--init", str(random_model_file), "--out", str(out), *TINY]
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    _refused(capsys, [*base, "--roads", str(empty)], "holds no lines")
    _refused(capsys, [*base, "--roads", str(tmp_path / "missing.gpkg")], "missing.gpkg: no such file")
    far = tmp_path / "far.geojson"
    far.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                               "geometry": {"type": "LineString", "coordinates": [[10, 50], [10.01, 50.01]]}}]}))
    _refused(capsys, [*base, "--roads", str(far)], "miss every raster")
    small = tmp_path / "small.tif"
    with rasterio.open(small, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330000, 4690000, 0.5, 0.5)) as ds:
        ds.write(np.zeros((3, 40, 40), np.uint8))
    _refused(capsys, ["finetune", "--raster", str(small), "--roads", str(roads), "--init", str(random_model_file),
                      "--out", str(out), *TINY], "smaller than one 64 px training crop")
    blank = tmp_path / "blank.tif"
    with rasterio.open(blank, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330000, 4690000, 1, 1), nodata=0) as ds:
        ds.write(np.zeros((3, 300, 300), np.uint8))  # all NoData
    _refused(capsys, ["finetune", "--raster", str(blank), "--roads", str(roads), "--init", str(random_model_file),
                      "--out", str(out), *TINY], "no valid pixels")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not really")
    _refused(capsys, [*base, "--roads", str(roads), "--init", str(onnx)], "ONNX export, which cannot be trained")
    taken = tmp_path / "taken.pt"
    taken.write_bytes(b"mine")
    _refused(capsys, ["finetune", "--raster", str(raster), "--roads", str(roads), "--out", str(taken), *TINY],
             "already exists")
    assert taken.read_bytes() == b"mine" and not out.exists()


def test_the_command_line_runs_as_a_process(suburb, random_model_file, tmp_path):
    folder, raster, roads = suburb
    done = subprocess.run([sys.executable, "-m", "training", "finetune", "--raster", str(raster), "--roads",
                           str(roads), "--init", str(random_model_file), "--out", str(tmp_path / "p.pt"), *TINY],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("p.pt")
