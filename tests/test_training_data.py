"""Training data: pairs found, labels unambiguous, white no-data ignored, crops reproducible."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import InputError
from training.augment import Augment
from training.data import IGNORE, DataError, RoadCrops, find_pairs, inspect_labels, read_pair, split_by_tile


def _write_pair(folder, name, image, mask, layout=("images", "masks")):
    for sub in layout:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / layout[0] / f"{name}.png")
    Image.fromarray(mask).save(folder / layout[1] / f"{name}.png")


def test_massachusetts_masks_are_0_255_and_become_road_class_one(shared_data):
    pairs = find_pairs(shared_data / "massroads")
    assert len(pairs) == 51
    labels = inspect_labels(pairs)
    assert labels.seen_values == (0, 255) and labels.road_values == (255,)
    # The seed's trap, measured: with ignore_index=255 on these masks every road pixel would be ignored.
    raw = np.asarray(Image.open(pairs[0].mask))
    raw = raw[..., 0] if raw.ndim == 3 else raw
    image, target = read_pair(pairs[0], labels)
    assert set(np.unique(target)) <= {0, 1, IGNORE}
    assert (target == 1).sum() == ((raw == 255) & ~(image == 255).all(axis=2)).sum() > 0


def test_white_no_data_is_ignored_even_where_the_mask_draws_roads(shared_data):
    pairs = find_pairs(shared_data / "massroads")
    labels = inspect_labels(pairs)
    found = False
    for pair in pairs:
        image, target = read_pair(pair, labels)
        white = (image == 255).all(axis=2)
        if white.sum() > 10000:
            raw = np.asarray(Image.open(pair.mask))
            raw = raw[..., 0] if raw.ndim == 3 else raw
            assert (target[white] == IGNORE).all()
            found = found or bool((raw[white] == 255).any())  # roads drawn over nothing
    assert found, "expected at least one tile whose mask draws roads over white no-data"


def test_layouts_and_label_values(tmp_path):
    image = np.full((40, 40, 3), 90, np.uint8)
    mask01 = np.zeros((40, 40), np.uint8)
    mask01[10:14] = 1
    _write_pair(tmp_path / "a", "t1", image, mask01, ("sat", "map"))
    pairs = find_pairs(tmp_path / "a")
    assert inspect_labels(pairs).road_values == (1,)
    deepglobe = tmp_path / "dg"
    deepglobe.mkdir()
    Image.fromarray(image).save(deepglobe / "104_sat.jpg")
    Image.fromarray(mask01 * 255).save(deepglobe / "104_mask.png")
    assert [p.name for p in find_pairs(deepglobe)] == ["104"]
    many = mask01.copy()
    many[20:22] = 7
    _write_pair(tmp_path / "b", "t1", image, many)
    with pytest.raises(DataError, match=r"values \[0, 1, 7\].*binary road mask"):
        inspect_labels(find_pairs(tmp_path / "b"))
    _write_pair(tmp_path / "c", "t1", image, np.zeros((30, 40), np.uint8))
    with pytest.raises(DataError, match="masks must match their images"):
        read_pair(find_pairs(tmp_path / "c")[0], inspect_labels(find_pairs(tmp_path / "c")))
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "masks").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "d" / "images" / "lonely.png")
    with pytest.raises(DataError, match="have no mask of the same name"):
        find_pairs(tmp_path / "d")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image/mask pairs"):
        find_pairs(tmp_path / "empty")


def test_split_is_by_whole_tile_and_repeatable(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    for i in range(10):
        _write_pair(tmp_path, f"tile{i}", image, np.zeros((8, 8), np.uint8))
    pairs = find_pairs(tmp_path)
    train, val = split_by_tile(pairs, 3, seed=1)
    assert len(val) == 3 and not {p.name for p in train} & {p.name for p in val}
    assert split_by_tile(pairs, 3, seed=1) == (train, val)
    assert split_by_tile(pairs, 0.2, seed=1)[1] != [] and len(split_by_tile(pairs, 0.2)[1]) == 2
    with pytest.raises(DataError, match="cannot hold out 10 of 10"):
        split_by_tile(pairs, 10)


def test_crops_are_reproducible_and_keep_ignore(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (300, 300, 3), dtype=np.uint8)
    image[:100, :100] = 255  # no-data corner
    mask = np.zeros((300, 300), np.uint8)
    mask[140:147, :] = 255
    _write_pair(tmp_path, "t", image, mask)
    pairs = find_pairs(tmp_path)
    crops = RoadCrops(pairs, inspect_labels(pairs), Augment(crop=128), crops_per_epoch=20, seed=3)
    x, y = crops[5]
    assert x.shape == (3, 128, 128) and x.dtype == torch.float32 and y.shape == (128, 128)
    assert set(torch.unique(y).tolist()) <= {0, 1, IGNORE}
    again_x, again_y = crops[5]
    assert torch.equal(x, again_x) and torch.equal(y, again_y)
    crops.set_epoch(1)
    assert not torch.equal(crops[5][0], x)
    assert any((crops[i][1] == IGNORE).any() for i in range(20))
    assert any((crops[i][1] == 1).any() for i in range(20))


def test_georeferenced_rasters_with_road_lines_are_resampled_and_rasterised_in_metres(tmp_path):
    """A 0.5 m UTM raster with one east-west road given in WGS84: at 1 m the road is 7 px wide on the right row,
    and the raster's NoData border becomes ignore."""
    import json

    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform

    data = np.full((3, 400, 400), 120, np.uint8)
    data[:, :, :40] = 0  # NoData strip on the west
    x0, y0 = 500000.0, 4650000.0
    with rasterio.open(tmp_path / "scene.tif", "w", driver="GTiff", width=400, height=400, count=3, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(x0, y0, 0.5, 0.5), nodata=0) as ds:
        ds.write(data)
    road_y = y0 - 100.5  # 100.5 m south of the top edge: the centre of 1 m row 100
    lons, lats = transform("EPSG:32619", "EPSG:4326", [x0 - 10, x0 + 210], [road_y, road_y])
    line = list(zip(lons, lats, strict=True))
    (tmp_path / "scene_roads.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": line}}]}))
    pairs = find_pairs(tmp_path, gsd_m=1.0, road_width_m=7.0)
    assert [p.name for p in pairs] == ["scene"] and pairs[0].has_vector_roads
    image, target = read_pair(pairs[0], inspect_labels(pairs))
    assert image.shape == (200, 200, 3) and target.shape == (200, 200)
    assert (target[:, :20] == IGNORE).all() and (target[:, 21:] != IGNORE).all()
    road_rows = np.flatnonzero(target[:, 100] == 1)
    assert road_rows.tolist() == list(range(97, 104))  # 7 px centred on row 100
    # With the area where the lines are complete beside them (the west half), nothing east of it is learnt from.
    ring = [[x0, y0 - 200], [x0 + 100, y0 - 200], [x0 + 100, y0], [x0, y0], [x0, y0 - 200]]
    (tmp_path / "scene_area.geojson").write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name",
        "properties": {"name": "urn:ogc:def:crs:EPSG::32619"}}, "features": [{"type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    pairs = find_pairs(tmp_path, gsd_m=1.0, road_width_m=7.0)
    assert pairs[0].area == tmp_path / "scene_area.geojson"
    _, target = read_pair(pairs[0], inspect_labels(pairs))
    assert (target[:, 100:] == IGNORE).all() and (target[:, 21:100] != IGNORE).all()
    assert (target[97:104, 21:100] == 1).all()


def test_images_roads_and_areas_folders_pair_by_name(tmp_path):
    """`images/` + `roads/` (+ `areas/`): files pair by stem, whatever the case of their suffix."""
    import rasterio
    from rasterio.transform import from_origin

    for folder in ("images", "roads", "areas"):
        (tmp_path / folder).mkdir()
    for name in ("a", "b"):
        with rasterio.open(tmp_path / "images" / f"{name}.tif", "w", driver="GTiff", width=8, height=8, count=3,
                           dtype="uint8", crs="EPSG:32619", transform=from_origin(0, 8, 1, 1)) as ds:
            ds.write(np.zeros((3, 8, 8), np.uint8))
    empty = '{"type": "FeatureCollection", "features": []}'
    (tmp_path / "roads" / "a.geojson").write_text(empty)
    (tmp_path / "roads" / "b.GeoJSON").write_text(empty)
    (tmp_path / "areas" / "b.gpkg").write_text("")
    pairs = find_pairs(tmp_path)
    assert [(p.name, p.mask.name, p.area.name if p.area else None) for p in pairs] == [
        ("a", "a.geojson", None), ("b", "b.GeoJSON", "b.gpkg")]


def test_a_raster_without_its_road_file_is_named(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    for name in ("a", "b"):
        with rasterio.open(tmp_path / f"{name}.tif", "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8",
                           crs="EPSG:32619", transform=from_origin(0, 8, 1, 1)) as ds:
            ds.write(np.zeros((3, 8, 8), np.uint8))
    (tmp_path / "a_roads.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(DataError, match="b.tif"):
        find_pairs(tmp_path)


def test_spacenet_tile_with_its_centrelines_trains_at_one_metre(shared_data):
    pairs = find_pairs(shared_data / "spacenet", gsd_m=1.0, road_width_m=7.0)
    assert [p.name for p in pairs] == ["vegas_img0"]
    image, target = read_pair(pairs[0], inspect_labels(pairs))
    assert image.dtype == np.uint8 and image.shape[2] == 3
    assert 350 < image.shape[0] < 450  # 1300 px at 0.3 m -> about 390 px at 1 m
    road = np.mean(target[target != IGNORE] == 1)
    assert 0.03 < road < 0.4


def _tiles(folder, count, value, size=64, white_rows=0, road_row=None):
    image = np.full((size, size, 3), value, np.uint8)
    image[:white_rows] = 255
    mask = np.zeros((size, size), np.uint8)
    road_row = size // 2 if road_row is None else road_row
    mask[road_row:road_row + 4] = 255
    for i in range(count):
        _write_pair(folder, f"{folder.name}{i}", image, mask)


def test_several_sources_keep_the_first_ones_validation_tiles_and_draw_by_weight(tmp_path):
    from training.data import DataSource, split_dataset

    _tiles(tmp_path / "a", 6, 40)
    _tiles(tmp_path / "b", 3, 200)
    alone = split_dataset(str(tmp_path / "a"), 2, seed=0)
    both = split_dataset([str(tmp_path / "a"), f"{tmp_path / 'b'}:3"], 2, seed=0)
    assert both.val == alone.val and all(p.image.parent.parent.name == "a" for p in both.val)
    assert [(s.name, len(s.pairs), s.weight) for s in both.sources] == [("a", 4, 1.0), ("b", 3, 3.0)]
    crops = RoadCrops(both.sources, augment=Augment(crop=32, colour_jitter=0, scale_jitter=(1, 1)),
                      crops_per_epoch=400, seed=0)
    from_b = np.mean([crops[i][0].mean().item() > 120 for i in range(400)])
    assert 0.68 < from_b < 0.82  # weight 3 against 1: three quarters
    assert DataSource.parse("C:\\data") == DataSource("C:\\data") and DataSource.parse("x:0.5").weight == 0.5
    with pytest.raises(DataError, match="positive number"):
        DataSource.parse("x:-1")


def test_crops_hold_data_and_often_roads_even_on_mostly_empty_tiles(tmp_path):
    """A tile 80% white no-data: crops are redrawn until most of each holds data (all-no-data crops made the loss
    NaN), and road_share of them until they hold road."""
    _tiles(tmp_path / "w", 1, 90, size=200, white_rows=150, road_row=180)
    pairs = find_pairs(tmp_path / "w")
    crops = RoadCrops(pairs, inspect_labels(pairs), Augment(crop=32, scale_jitter=(1, 1)), crops_per_epoch=50)
    targets = [crops[i][1] for i in range(50)]
    assert min((t != IGNORE).float().mean().item() for t in targets) >= 0.5
    assert np.mean([(t == 1).any().item() for t in targets]) >= 0.5


def test_one_unreadable_file_among_many_is_skipped_and_named(tmp_path, capsys):
    from training.data import split_dataset

    _tiles(tmp_path / "d", 5, 80)
    broken = tmp_path / "d" / "images" / "d3.png"
    broken.write_bytes(broken.read_bytes()[:60])  # truncated
    split = split_dataset(str(tmp_path / "d"), 1, seed=0)
    messages = []
    crops = RoadCrops(split.sources, augment=Augment(crop=32), crops_per_epoch=4, log=messages.append)
    if any(p.name == "d3" for p in split.train):
        assert len(crops.tiles) == len(split.train) - 1
        assert len(messages) == 1 and "d3.png" in messages[0] and messages[0].startswith("warning: skipped")
    for name in ("d0", "d1", "d2"):
        path = tmp_path / "d" / "masks" / f"{name}.png"
        path.write_bytes(b"")
    with pytest.raises(DataError, match="4 of 5 image/mask pairs .* cannot be read"):
        RoadCrops(find_pairs(tmp_path / "d"), split.labels, Augment(crop=32), crops_per_epoch=4)


def test_the_sensors_recipe_changes_colours_reproducibly_and_never_the_labels(road_tiles):
    pairs = find_pairs(road_tiles)
    labels = inspect_labels(pairs)
    mild = RoadCrops(pairs, labels, Augment(crop=96, recipe="mild"), crops_per_epoch=30, seed=1)
    sensors = RoadCrops(pairs, labels, Augment(crop=96, recipe="sensors"), crops_per_epoch=30, seed=1)
    changed = 0
    for i in range(30):
        (x0, y0), (x1, y1) = mild[i], sensors[i]
        assert torch.equal(y0, y1)  # same window, same geometry: labels untouched
        assert torch.equal(x1, sensors[i][0])  # reproducible
        changed += (x0 - x1).abs().mean().item() > 3
    assert changed >= 20
    with pytest.raises(ValueError, match="recipe 'vivid' is not known"):
        Augment(recipe="vivid")


def test_inverted_brightness_turns_light_roads_dark_keeps_colours_and_labels(road_tiles):
    from training.augment import _TO_YIQ, invert_brightness
    from training.config import TrainConfig

    pixels = np.array([[[200, 200, 200], [20, 90, 30]]], np.uint8)  # a light grey road, dark green woods
    inverted = invert_brightness(pixels)
    assert inverted[0, 0].max() < 60 and inverted[0, 1].mean() > 150  # light <-> dark
    chroma = lambda image: (image.astype(np.float32) / 255 @ _TO_YIQ.T)[..., 1:]  # noqa: E731
    assert np.abs(chroma(inverted) - chroma(pixels)).max() < 0.01  # green stays green
    pairs = find_pairs(road_tiles)
    labels = inspect_labels(pairs)
    plain = RoadCrops(pairs, labels, Augment(crop=64, recipe="mild", colour_jitter=0), crops_per_epoch=12, seed=2)
    always = RoadCrops(pairs, labels, Augment(crop=64, recipe="mild", colour_jitter=0, invert_brightness=1.0),
                       crops_per_epoch=12, seed=2)
    for i in range(12):
        (x0, y0), (x1, y1) = plain[i], always[i]
        assert torch.equal(y0, y1)  # the same window: only the colours differ
        expected = invert_brightness(x0.permute(1, 2, 0).numpy().astype(np.uint8))
        assert torch.equal(x1, torch.from_numpy(expected).permute(2, 0, 1).float())
    with pytest.raises(InputError, match="--invert-brightness 1.5: give a share between 0 and 1"):
        TrainConfig.from_dict({"invert_brightness": 1.5})


def test_a_batch_of_only_no_data_gives_a_zero_loss_not_nan():
    from training.losses import road_loss

    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    for kind in ("ce", "ce_dice", "ce_dice_cldice"):
        loss = road_loss(logits, torch.full((2, 8, 8), IGNORE), kind, torch.ones(2))
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_pack_copies_training_images_only_within_its_size_and_fit_reads_the_copy(shared_data, tmp_path):
    import yaml

    from training.__main__ import main
    from training.data import split_dataset
    from training.description import resolve_data

    repo = Path(__file__).resolve().parents[1]
    japan, vegas = repo / "datasets/world/gsi_japan.yaml", repo / "datasets/world/spacenet3_vegas.yaml"
    out = tmp_path / "packed"
    assert main(["pack", "--data", f"{vegas}:2", "--data", f"{japan}:1.5", "--out", str(out), "--max-mb", "2.5",
                 "--keep-validation", "1", "--whole", "gsi_japan"]) == 0
    source_vegas, source_japan = resolve_data(vegas), resolve_data(japan)
    packed_vegas = sorted(p.stem for p in (out / "spacenet3_vegas/images").iterdir())
    packed_japan = sorted(p.stem for p in (out / "gsi_japan/images").iterdir())
    # The first source keeps one validation image (fit validates on it) and is trimmed to fit; the second, kept
    # whole, has every training image and none of the per-place table's held-out ones.
    assert [n for n in packed_vegas if source_vegas.held_out(n)] == [source_vegas.validation[0]]
    assert len(packed_japan) == 24 and not any(source_japan.held_out(n) for n in packed_japan)
    assert len(packed_vegas) - 1 < 24
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix != ".yaml")
    assert size <= 2.5 * 2**20
    description = yaml.safe_load((out / "gsi_japan/dataset.yaml").read_text())
    assert description["gsd_m"] == 0.5 and description["label"] == "surface" and "validation" not in description
    # Japan's 0.2 m images were averaged down to 0.5 m: 2.5 times smaller on each side, a road's width kept.
    original = Image.open(next((source_japan.folder / "images").glob("*")))
    packed = Image.open(next((out / "gsi_japan/images").glob("*")))
    assert abs(packed.width - original.width / 2.5) <= 1
    split = split_dataset([f"{out / 'spacenet3_vegas'}:2", str(out / "gsi_japan")], val_tiles=1)
    assert [p.name for p in split.val] == [source_vegas.validation[0]] and split.sources[0].weight == 2
    assert main(["pack", "--data", str(vegas), "--out", str(out)]) == 2  # not empty: refused, nothing changed
    assert main(["pack", "--data", str(vegas), "--out", str(tmp_path / "tiny"), "--max-mb", "0.01"]) == 2
    assert not (tmp_path / "tiny").exists()
    # A write that fails half way (here a file size limit) leaves no half pack behind, and says why in one line.
    import resource
    import signal
    import subprocess
    import sys

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60 * 1024, 60 * 1024))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    stopped = subprocess.run([sys.executable, "-m", "training", "pack", "--data", str(vegas), "--out",
                              str(tmp_path / "cut")], cwd=repo, capture_output=True, text=True, timeout=300,
                             preexec_fn=limited)
    assert stopped.returncode == 2 and "file size limit" in stopped.stderr, stopped.stderr
    assert len(stopped.stderr.strip().splitlines()) == 1, stopped.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed"]
