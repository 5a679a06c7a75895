"""The main job on the built-in sample runs end to end and writes its files."""

import numpy as np
import pytest
import rasterio
from PIL import Image

from core.frontends.demo import run_demo
from core.inputs.sample import make_scene


def test_sample_scene_is_repeatable_and_has_roads():
    a, b = make_scene(128, seed=3), make_scene(128, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.roads, b.roads)
    assert 0.02 < a.roads.mean() < 0.3


def test_demo_runs_the_shipped_model_and_writes_every_output(tmp_path, capsys):
    figures = run_demo(tmp_path, size=256)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"sample.tif", "sample_roads.gpkg", "sample_road_probability.tif", "sample_road_mask.tif",
            "sample_roads_extracted.gpkg", "preview.png"} <= names
    assert not [n for n in names if ".part" in n or n.startswith(".")]
    preview = np.asarray(Image.open(tmp_path / "preview.png"))
    assert preview.shape == (256, 256, 3)
    assert np.count_nonzero(np.all(preview == (230, 40, 40), axis=-1)) > 100  # roads drawn in red
    with rasterio.open(tmp_path / "sample_road_probability.tif") as ds:
        assert ds.crs.to_epsg() == 32619 and ds.width == 256
    # The shipped ONNX export computes what torch computes (fp32 arithmetic on the same fp16-stored weights).
    assert figures["onnx_max_probability_diff"] < 2 / 255  # below the probability raster's two steps
    # A trained model finds the suburb's streets. Random weights (two seeds, measured): road IoU 0.03 and 0.08,
    # APLS 0.00, mIoU below predicting background everywhere.
    assert figures["road_iou"] > 0.15 and figures["apls"] > 0.05
    assert figures["miou"] > figures["miou_all_background"]
    out = capsys.readouterr().out
    assert "held-out tiles of massroads: road IoU" in out and "APLS" in out


def test_demo_without_a_model_names_the_fix_and_writes_nothing(tmp_path):
    from core.model.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="missing.pt: no such file; check the path"):
        run_demo(tmp_path / "out", model=tmp_path / "missing.pt")
    assert not (tmp_path / "out").exists()


def test_the_suburb_sample_is_repeatable_and_its_roads_match_their_centrelines():
    import shapely

    from core.inputs.sample import make_suburb

    a, b = make_suburb(256, seed=5), make_suburb(256, seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.roads, b.roads)
    assert 0.02 < a.roads.mean() < 0.15  # a suburb: a few per cent of the pixels are road
    inside = []
    for line in a.centrelines:
        for x, y in shapely.LineString(line).segmentize(2).coords:
            if 0 <= x < 256 and 0 <= y < 256:
                inside.append(a.roads[int(y), int(x)])
    assert np.mean(inside) > 0.99  # the centrelines run inside the road mask
    road_grey = a.image[a.roads].mean(axis=0)
    assert np.ptp(road_grey) < 12 and 90 < road_grey.mean() < 140  # grey asphalt, as in the Massachusetts tiles
