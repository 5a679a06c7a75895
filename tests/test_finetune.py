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
                 str(report), "--mix", "all", "--batchnorm", "trained", *TINY])
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


def test_without_a_check_area_blocks_with_roads_are_held_out_and_a_distant_band_scores_generality(
        suburb, random_model_file, tmp_path, capsys):
    from training.finetune import CHECK_SHARE, FinetuneSpec, parent_model, prepare

    folder, raster, roads = suburb
    lines = []
    spec = FinetuneSpec(rasters=[str(raster)], roads=str(roads), out="", crop=64, road_width_m=7)
    scenes, gsd = prepare(spec, 1.0, lines.append)
    (scene,) = scenes
    road = scene.roads
    # The check blocks hold labelled road (a quarter of the area could hold none), about CHECK_SHARE of it.
    assert (scene.check & road).sum() >= 0.5 * CHECK_SHARE * (road & (scene.train | scene.check)).sum()
    # Elsewhere: the far band, kept apart from what trains by half a crop; nothing is both trained and scored.
    assert scene.elsewhere is not None and (scene.elsewhere & road).any()
    assert not (scene.train & (scene.check | scene.elsewhere)).any() and not (scene.check & scene.elsewhere).any()
    first = np.flatnonzero(scene.elsewhere.any(axis=1))[0]
    assert not scene.train[first - 16:first].any()  # a quarter of the 64 px crop
    assert any("block(s) of 16 px" in line for line in lines) and any("elsewhere" in line for line in lines)

    code = main(["finetune", "--raster", str(raster), "--roads", str(roads), "--init", str(random_model_file),
                 "--out", str(tmp_path / "m.pt"), "--json", str(tmp_path / "r.json"), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    for when in ("areas_before", "areas_after"):
        assert set(result[when]) == {"check", "elsewhere"}  # a random parent names no training data
        assert all(0 <= f["relaxed_f1"] <= 1 for f in result[when].values())
    assert "forgetting  not measured" in err
    # --mix auto: the random parent learns nothing in seconds; whatever share is kept is the one that scored best.
    kept = load_model(tmp_path / "m.pt")
    assert kept.info.provenance["mix_share"] == result["mix_share"]
    if result["mix_share"] == 0:
        assert "holds the parent's weights unchanged" in err
        parent, _ = parent_model(str(random_model_file))
        for (_, a), (_, b) in zip(sorted(parent.network.state_dict().items()),
                                  sorted(kept.network.state_dict().items()), strict=True):
            assert torch.allclose(a.float(), b.float(), atol=2e-3)


def test_three_rasters_hold_one_out_whole(suburb, tmp_path):
    import shutil

    from training.finetune import FinetuneSpec, prepare

    folder, raster, roads = suburb
    copies = [shutil.copy(raster, tmp_path / f"part{i}.tif") for i in range(3)]
    lines = []
    scenes, _ = prepare(FinetuneSpec(rasters=[str(c) for c in copies], roads=str(roads), out="", crop=64,
                                      road_width_m=7), 1.0,
                        lines.append)
    whole = [s for s in scenes if s.elsewhere is not None]
    assert len(whole) == 1 and not whole[0].train.any() and whole[0].elsewhere.any()
    assert any("held out whole" in line for line in lines)
    assert sum(int(s.check.any()) for s in scenes) == 2  # the check blocks are spread over the other two


def test_labels_that_leave_nothing_to_check_are_refused(suburb, random_model_file, tmp_path, capsys):
    folder, raster, roads = suburb
    one = tmp_path / "one.geojson"
    one.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": [{"type": "Feature", "properties": {}, "geometry": {
            "type": "LineString", "coordinates": _one_short_line(raster)}}]}))
    _refused(capsys, ["finetune", "--raster", str(raster), "--roads", str(one), "--init", str(random_model_file),
                      "--out", str(tmp_path / "never.pt"), *TINY], "less than two blocks of a quarter of a training")
    assert not (tmp_path / "never.pt").exists()


def _one_short_line(raster: Path) -> list:
    import rasterio

    with rasterio.open(raster) as ds:
        left, top = ds.bounds.left, ds.bounds.top
    return [[left + 4, top - 8], [left + 6, top - 8]]  # its 7 m buffer lies inside one 16 px block


def test_frozen_batchnorm_keeps_the_parents_statistics_and_distillation_and_replay_run(
        suburb, random_model_file, tmp_path, capsys):
    """Mechanics of the forgetting guards with a parent whose model file names its training data: the data is a
    folder of image/mask pairs written here, so the parent's validation tiles are scored before and after and a
    share of each batch is replayed from its other tiles."""
    from PIL import Image

    from core.model.checkpoint import save_model

    folder, raster, roads = suburb
    data = tmp_path / "parent-data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        mask = np.zeros((96, 96), np.uint8)
        mask[40 + i:47 + i] = 255
        Image.fromarray((rng.random((96, 96, 3)) * 200).astype(np.uint8)).save(data / "images" / f"t{i}.png")
        Image.fromarray(mask).save(data / "masks" / f"t{i}.png")
    parent = load_model(random_model_file)
    parent.info.provenance = {"data": [str(data)], "validation_tiles": ["t0"]}
    parent_file = save_model(tmp_path / "parent.pt", parent.network, parent.info)
    out = tmp_path / "kept.pt"
    code = main(["finetune", "--raster", str(raster), "--roads", str(roads), "--init", str(parent_file), "--out",
                 str(out), "--json", str(tmp_path / "r.json"), "--mix", "all", "--batchnorm", "frozen",
                 "--distill", "1", "--replay", "0.5", *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["areas_after"]) == {"check", "elsewhere", "parent_tiles"}
    assert "1 of each batch replayed" in err and "(parent's tiles)" in err
    tuned = load_model(out)
    assert "parent_tiles_after_road_iou" in tuned.info.metrics
    before, after = parent.network.state_dict(), tuned.network.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.allclose(before[k].float(), after[k].float(), atol=1e-2) for k in stats)
    # Trained all the same (a few steps at the warm-up's learning rate: small moves, so any change counts).
    assert any(not torch.equal(before[k].half(), after[k].half()) for k in before
               if k.endswith("weight") and before[k].is_floating_point()), err
    # The default mix is held to the parent's validation tile t0 (with one validation tile, it reports too).
    again = main(["finetune", "--raster", str(raster), "--roads", str(roads), "--init", str(parent_file), "--out",
                  str(tmp_path / "mixed.pt"), *TINY])
    mixed = capsys.readouterr().err
    assert again == 0, mixed
    assert "road IoU on 1 of the parent's validation tiles (not in its report) by share" in mixed, mixed
    # Chosen on the check area and the imagery held out elsewhere together (the check blocks lie among what trains).
    assert "relaxed F1 by share of the fine-tuned weights, check area / elsewhere:" in mixed, mixed


def test_the_mix_kept_is_the_best_on_the_check_area_that_keeps_the_parents_tiles():
    from training.finetune import chosen_share, refined_shares

    rows = [(0.0, 0.50, 0.600), (0.25, 0.60, 0.590), (0.5, 0.70, 0.560), (0.75, 0.75, 0.450), (1.0, 0.80, 0.400)]
    assert chosen_share(rows) == (0.25, pytest.approx(0.57))  # 0.5 and above lose more than 0.03
    assert chosen_share([(s, f, None) for s, f, _ in rows]) == (1.0, None)  # the parent's tiles not on disk
    assert chosen_share([(0.0, 0.5, 0.6), (0.5, 0.5, 0.6), (1.0, 0.4, 0.6)])[0] == 0.0  # a tie: nearer the parent
    # Between grid shares: from the largest share kept towards the first better one that loses too much.
    assert refined_shares(rows) == (0.25, 0.5)
    assert refined_shares([(s, f, None) for s, f, _ in rows]) is None  # nothing to hold to: the grid's best stands
    assert refined_shares([(0.0, 0.5, 0.6), (0.5, 0.7, 0.6), (1.0, 0.6, 0.5)]) is None  # the best is kept already


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
    with rasterio.open(small, "w", driver="GTiff", width=12, height=12, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=from_origin(330000, 4690000, 0.5, 0.5)) as ds:
        ds.write(np.zeros((3, 12, 12), np.uint8))
    _refused(capsys, ["finetune", "--raster", str(small), "--roads", str(roads), "--init", str(random_model_file),
                      "--out", str(out), *TINY], "smaller than a quarter of one 64 px training crop")
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


def test_incomplete_labels_teach_background_only_near_drawn_roads_where_the_parent_sees_none(
        suburb, constant_model, tmp_path, capsys):
    """An existing map lacking roads (update-map's case): half the suburb's lines given; far from them, and where
    the parent sees road, nothing is taught as background."""
    import rasterio
    import shapely
    from scipy.ndimage import distance_transform_edt

    from core.metrics import read_lines
    from training.finetune import FinetuneError, FinetuneSpec, _trust_background_near_roads, parent_model, prepare

    folder, raster, roads = suburb
    lines, crs = read_lines(roads)
    half = tmp_path / "half.geojson"
    half.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {
        "name": "EPSG:32619"}}, "features": [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(
            line)} for line in lines[::2]]}))
    with rasterio.open(raster) as ds:
        assert ds.crs.to_epsg() == 32619
    blind, sure = constant_model(-4.0), constant_model(4.0)

    def labels_with(parent: Path):
        spec = FinetuneSpec(rasters=[str(raster)], roads=str(half), out="", crop=64, road_width_m=7,
                            labels="incomplete", init=str(parent))
        scenes, gsd = prepare(spec, 1.0, lambda m: None)
        before = [s.train.copy() for s in scenes]
        logged = []
        _trust_background_near_roads(parent_model(spec.init)[0], scenes, gsd, spec, logged.append)
        return scenes, before, gsd, logged

    scenes, before, gsd, logged = labels_with(blind)  # p = 0.0003 everywhere: background near roads only
    for scene, was in zip(scenes, before, strict=True):
        assert (scene.train <= was).all() and (scene.train | ~was | ~scene.roads).all()  # roads all stay
        distance = distance_transform_edt(~scene.roads) * gsd
        assert not (scene.train & (distance > 40)).any() and (was & (distance > 40)).any()
        assert (scene.train & ~scene.roads & (distance <= 40)).any()
    assert "labels      incomplete" in logged[0]
    with pytest.raises(FinetuneError, match="no background to teach"):  # p = 0.9997: no background anywhere
        labels_with(sure)
    code = main(["finetune", "--raster", str(raster), "--roads", str(half), "--init", str(blind),
                 "--out", str(tmp_path / "m.pt"), "--labels", "incomplete", *TINY])
    err = capsys.readouterr().err
    assert code == 0 and "labels      incomplete" in err, err
