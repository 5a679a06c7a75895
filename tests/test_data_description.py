"""Training data that says what it is: dataset.yaml (GSD, label kind, no-data rule, held-out images), masks
resampled to the model's GSD with their roads' widths kept, surfaces as centreline buffers, the per-place table
and its shipping rule."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import (
    IGNORE,
    DataError,
    RoadCrops,
    TrainingTiles,
    inspect_labels,
    read_pair,
    resample_to_gsd,
    split_dataset,
    surface_to_centreline,
)
from training.description import DescriptionError, resolve_data
from training.promotion import places_verdict

ROOT = Path(__file__).resolve().parents[1]


def _folder(root: Path, names: list[str], size: int = 200, road: slice = slice(90, 110)) -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        image = np.full((size, size, 3), 120, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[:, road] = 255
        image[:, road] = 60
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def _crop_width(road: np.ndarray) -> float:
    """Width in pixels of a straight road that crops may have rotated: the narrower of its row and column spans."""
    return min(road[road.any(axis=1)].sum(axis=1).mean(), road[:, road.any(axis=0)].sum(axis=0).mean())


def _width_m(target: np.ndarray, gsd_m: float) -> float:
    """Mean width of a vertical road in metres: road pixels per row."""
    return float((target == 1).sum(axis=1).mean() * gsd_m)


@pytest.mark.parametrize("width_m, image_gsd, model_gsd", [(4.6, 0.381, 1.0), (7.0, 0.2, 1.0), (12.0, 2.0, 1.0),
                                                          (4.6, 0.381, 0.5), (3.0, 0.3, 1.0)])
def test_a_roads_width_survives_resampling_to_the_models_gsd(width_m, image_gsd, model_gsd):
    size = 800
    target = np.zeros((size, size), np.uint8)
    # A road at an offset that does not fall on the new grid's pixel edges.
    left = 137.3
    cols = np.arange(size)
    target[:, (cols + 0.5 >= left) & (cols + 0.5 < left + width_m / image_gsd)] = 1
    before = _width_m(target, image_gsd)
    image = np.zeros((size, size, 3), np.uint8)
    _, resampled = resample_to_gsd(image, target, image_gsd, model_gsd)
    assert resampled.shape[0] == round(size * image_gsd / model_gsd)
    # Within one pixel of the new grid (a 0.5 threshold of area shares rounds the edges).
    assert abs(_width_m(resampled, model_gsd) - before) <= model_gsd + 1e-6, (before, _width_m(resampled, model_gsd))


def test_no_data_survives_resampling_and_where_half_a_pixel_has_none_it_is_ignored():
    target = np.zeros((100, 100), np.uint8)
    target[:, :50] = IGNORE
    target[:, 70:75] = 1
    _, out = resample_to_gsd(np.zeros((100, 100, 3), np.uint8), target, 0.5, 1.0)
    assert (out[:, :25] == IGNORE).all() and (out[:, 26:] != IGNORE).all()
    assert (out == 1).sum(axis=1).mean() == pytest.approx(2.5, abs=1)


def test_surfaces_become_centreline_buffers_and_the_rest_of_the_surface_is_ignored():
    target = np.zeros((120, 120), np.uint8)
    target[:, 40:70] = 1  # a 30 px wide surface
    target[:5] = IGNORE
    out = surface_to_centreline(target, width_px=7)
    rows = out[20:100]
    assert 6 <= (rows == 1).sum(axis=1).mean() <= 9  # the centre band, 7 px
    assert ((rows == 1) | (rows == IGNORE)).sum(axis=1).mean() == 30  # the rest of the surface: neither class
    assert (out[:5] == IGNORE).all() and (out[5:, :30] == 0).all()


def test_a_description_gives_gsd_label_no_data_and_holds_out_its_validation_images(tmp_path):
    data = _folder(tmp_path / "pairs", ["a_1", "a_2", "b_1", "c_1"], size=100, road=slice(40, 60))
    # Black no-data in one corner of one image.
    image = np.asarray(Image.open(data / "images" / "a_1.png")).copy()
    image[:20, :20] = 0
    Image.fromarray(image).save(data / "images" / "a_1.png")
    description = tmp_path / "described.yaml"
    description.write_text("place: Somewhere\npath: pairs\ngsd_m: 0.5\nlabel: surface\nnodata: black\n"
                           "validation: [b_]\n")
    assert resolve_data(description).gsd_m == 0.5
    split = split_dataset([str(_folder(tmp_path / "home", ["h1", "h2", "h3"])), f"{description}:2"], 1)
    assert [p.name for p, _ in split.places["Somewhere"]] == ["b_1"]
    assert sorted(p.name for p in split.sources[1].pairs) == ["a_1", "a_2", "c_1"]
    assert split.sources[1].weight == 2 and len(split.val) == 1 and "home" in split.places
    pair = next(p for p in split.sources[1].pairs if p.name == "a_1")
    image, target = read_pair(pair, split.sources[1].labels)
    assert image.shape == (50, 50, 3)  # 100 px at 0.5 m read at the run's 1 m
    assert (target[:10, :10] == IGNORE).all() and (target[15:, :] != IGNORE).all()
    assert _width_m(target, 1.0) == pytest.approx(10, abs=1)


def test_the_runs_gsd_and_road_width_reach_image_and_mask_folders(tmp_path):
    """--gsd-m and --road-width-m are the run's, for mask folders as for georeferenced rasters: a folder described
    at 1 m read for a 0.5 m model doubles in size with its roads as wide in metres (mask pairs once kept 1 m and
    7 m whatever the run asked: a '0.5 m' model trained on 1 m pixels, and evaluated on them as if 0.5 m)."""
    data = _folder(tmp_path / "metre", ["m1", "m2", "m3"], size=100, road=slice(40, 50))
    (data / "dataset.yaml").write_text("gsd_m: 1.0\nlabel: surface\nnodata: none\n")
    split = split_dataset([str(data)], 1, gsd_m=0.5, road_width_m=4.0, label_target="centreline")
    assert {(p.gsd_m, p.road_width_m) for p in split.train + split.val} == {(0.5, 4.0)}
    image, target = read_pair(split.train[0], split.labels)
    assert image.shape == (200, 200, 3)
    # The 10 m surface becomes a 4 m centre band (8 px at 0.5 m), the rest of the surface ignored.
    assert _width_m(target, 0.5) == pytest.approx(4.0, abs=0.5)
    assert ((target == 1) | (target == IGNORE)).sum(axis=1).mean() * 0.5 == pytest.approx(10, abs=1)


def test_a_folder_may_carry_its_own_description_and_a_gsd_range_rescales_crops_within_it(tmp_path):
    data = _folder(tmp_path / "own", [f"t{i}" for i in range(4)], size=120, road=slice(50, 60))
    (data / "dataset.yaml").write_text("gsd_m: [1.0, 4.0]\nlabel: centreline\nnodata: none\n")
    description = resolve_data(data)
    assert description.gsd_m == pytest.approx(2.0) and description.gsd_spread == pytest.approx(2.0)
    split = split_dataset([str(data)], 1)
    assert split.sources[0].gsd_spread == pytest.approx(2.0)
    # Read at 2 m: 120 px -> 240 px at 1 m.
    image, _ = read_pair(split.train[0], split.labels)
    assert image.shape[:2] == (240, 240)
    tiles = TrainingTiles(split.train, split.labels, gsd_spread=2.0)
    from training.augment import Augment

    crops = RoadCrops([tiles], augment=Augment(crop=64), crops_per_epoch=40, seed=1)
    widths = []
    for index in range(40):
        _, target = crops[index]
        road = target.numpy() == 1
        if road.sum() > 200:
            widths.append(_crop_width(road))
    # A 10 px road at 2 m is 20 px at 1 m; crops drawn between 1 and 4 m show it 10 to 40 px wide (and the
    # recipe's own 0.75-1.25 zoom on top).
    assert min(widths) < 16 and max(widths) > 26, widths


def test_small_tiles_are_padded_with_ignore_never_stretched(tmp_path):
    data = _folder(tmp_path / "small", ["s1", "s2"], size=60, road=slice(20, 30))
    (data / "dataset.yaml").write_text("gsd_m: 1.0\nnodata: none\n")
    split = split_dataset([str(data)], 1)
    from training.augment import Augment

    crops = RoadCrops(split.sources, augment=Augment(crop=128), crops_per_epoch=10, seed=0)
    for index in range(10):
        _, target = crops[index]
        target = target.numpy()
        valid = target != IGNORE
        assert valid.sum() <= 60 * 60 * (1 / 0.75) ** 2 + 1  # never more than the tile, zoomed by the recipe
        assert _crop_width(target == 1) <= 10 / 0.75 + 1


@pytest.mark.parametrize("text, named", [
    ("gsd_m: fast\n", "gsd_m"), ("gsd_m: [1, 2, 3]\n", "gsd_m"), ("label: roads\n", "label"),
    ("nodata: grey\n", "nodata"), ("validation: b_1\n", "validation"), ("resolution: 1\n", "resolution"),
    ("gsd_m: [1\n", "not valid YAML"), ("- 1\n- 2\n", "not a mapping"), ("path: nowhere\n", "not a folder"),
    ("validation: [zz_]\n", "no image's name starts with"),
])
def test_a_description_that_does_not_parse_is_refused_naming_the_file_and_field(tmp_path, text, named):
    data = _folder(tmp_path / "d", ["a_1", "a_2"], size=40, road=slice(10, 20))
    (data / "dataset.yaml").write_text(text)
    with pytest.raises((DataError, DescriptionError)) as error:
        split_dataset([str(data)], 1)
    assert "dataset.yaml" in str(error.value) and named in str(error.value)


def test_the_repositorys_descriptions_read_every_place(shared_data):
    split = split_dataset([str(ROOT / "datasets" / name) for name in (
        "massachusetts.yaml", "world/spacenet3_vegas.yaml", "world/spacenet3_shanghai.yaml", "world/gsi_japan.yaml",
        "world/dubai.yaml", "world/ottawa.yaml")], 6)
    assert list(split.places) == ["Massachusetts", "Las Vegas", "Shanghai", "Japan", "Dubai", "Ottawa"]
    assert [p.name for p in split.val] == ["17428735_15", "18178705_15", "22229080_15", "25229185_15", "25379290_15",
                                           "25828765_15"]  # the model card's six tiles, as before
    trained = {p.name for p in split.train}
    for place, held in split.places.items():
        assert held and not trained & {p.name for p, _ in held}, place
    # Shanghai's black wedges are no data; Japan's 572 px at 0.2 m are 114 px at 1 m.
    shanghai = next(s for s in split.sources if s.name == "spacenet3_shanghai.yaml")
    wedged = [read_pair(p, shanghai.labels)[1] for p in shanghai.pairs[:12]]
    assert any((t == IGNORE).mean() > 0.05 for t in wedged)
    japan = next(s for s in split.sources if s.name == "gsi_japan.yaml")
    assert read_pair(japan.pairs[0], japan.labels)[0].shape == (114, 114, 3)
    assert inspect_labels(japan.pairs).road_values == (255,)


def _table(f1s: dict, iou: float) -> dict:
    return {"places": {place: {"relaxed_f1": f1, "road_iou": iou if i == 0 else 0.3, "tile_names": [place]}
                       for i, (place, f1) in enumerate(f1s.items())}, "places_arithmetic": "fp32"}


def test_the_per_place_rule_wants_the_mean_up_no_place_down_and_home_kept():
    old = _table({"Massachusetts": 0.70, "Vegas": 0.30, "Japan": 0.50}, 0.50)
    ok, reasons = places_verdict(_table({"Massachusetts": 0.70, "Vegas": 0.45, "Japan": 0.49}, 0.495), old)
    assert ok, reasons
    ok, reasons = places_verdict(_table({"Massachusetts": 0.70, "Vegas": 0.45, "Japan": 0.47}, 0.50), old)
    assert not ok and any(r.startswith("FAIL  Japan") for r in reasons)
    ok, reasons = places_verdict(_table({"Massachusetts": 0.70, "Vegas": 0.45, "Japan": 0.50}, 0.485), old)
    assert not ok and any(r.startswith("FAIL  Massachusetts road IoU") for r in reasons)
    ok, reasons = places_verdict(_table({"Massachusetts": 0.71, "Vegas": 0.35, "Japan": 0.51}, 0.50), old)
    assert not ok and any(r.startswith("FAIL  mean relaxed F1") for r in reasons)
    with pytest.raises(Exception, match="places"):
        places_verdict(_table({"Massachusetts": 0.7, "Vegas": 0.5}, 0.5), old)
    # The same images read at another GSD are other references: refused, not compared.
    halved = _table({"Massachusetts": 0.70, "Vegas": 0.45, "Japan": 0.49}, 0.495)
    for row in halved["places"].values():
        row["table_gsd_m"] = 0.5
    with pytest.raises(Exception, match="read at 0.5 m per pixel"):
        places_verdict(halved, old)


def test_evaluate_places_prints_a_row_per_place_and_promote_reads_it(road_tiles, random_model_file, tmp_path):
    home = road_tiles
    other = _folder(tmp_path / "other", ["o_1", "o_2", "o_3"], size=160, road=slice(60, 76))
    (other / "dataset.yaml").write_text("place: Elsewhere\ngsd_m: 0.5\nlabel: surface\nnodata: none\n"
                                        "validation: [o_3]\n")
    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "training", "evaluate", str(random_model_file), "--data", str(home),
                          "--data", str(other), "--val-tiles", "1", "--places", "--json", str(out), "--precision",
                          "fp32", "--val-tile", "128", "--val-overlap", "16"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "| Elsewhere | 1 |" in run.stdout and "mean over 2 places" in run.stdout
    evaluation = json.loads(out.read_text())
    assert list(evaluation["places"]) == [home.name, "Elsewhere"]
    assert evaluation["places"]["Elsewhere"]["rho_m"] == 3.0 and evaluation["places"]["Elsewhere"]["rho_px"] == 3.0
    promote = subprocess.run([sys.executable, "-m", "training", "promote", str(out), "--shipped",
                              str(random_model_file), "--shipped-evaluation", str(out)],
                             capture_output=True, text=True, cwd=ROOT)
    # The same table on both sides: the mean does not rise by 0.03, so the verdict is to keep.
    assert promote.returncode == 1 and "FAIL  mean relaxed F1" in promote.stdout, promote.stdout + promote.stderr


def test_evaluate_places_of_a_models_folder_scores_each_place_by_the_engines_pick(road_tiles, random_model_file,
                                                                                   tmp_path):
    import shutil

    other = _folder(tmp_path / "other", ["o_1", "o_2", "o_3"], size=160, road=slice(60, 76))
    (other / "dataset.yaml").write_text("place: Elsewhere\ngsd_m: 0.5\nlabel: surface\nnodata: none\n"
                                        "validation: [o_3]\n")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("home.pt", "world.pt"):
        shutil.copy(random_model_file, models / name)
    (models / "catalog.json").write_text(json.dumps({"models": [{"file": "home.pt", "gsd_m": [0.85, 1.15]},
                                                                {"file": "world.pt"}]}))
    out = tmp_path / "eval.json"
    run = subprocess.run([sys.executable, "-m", "training", "evaluate", str(models), "--data", str(road_tiles),
                          "--data", str(other), "--val-tiles", "1", "--places", "--json", str(out), "--precision",
                          "fp32", "--val-tile", "128", "--val-overlap", "16"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    places = json.loads(out.read_text())["places"]
    assert [places[p]["model"] for p in places] == ["home.pt", "world.pt"]  # 1 m and 0.5 m imagery
    assert "| model |" in run.stdout and "world.pt |" in run.stdout
