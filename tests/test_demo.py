"""The main job on the built-in sample runs end to end and writes its files."""

import numpy as np
import rasterio
from PIL import Image

from core.demo import run_demo
from core.sample import make_scene


def test_sample_scene_is_repeatable_and_has_roads():
    a, b = make_scene(128, seed=3), make_scene(128, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.roads, b.roads)
    assert 0.02 < a.roads.mean() < 0.3


def test_demo_writes_every_output(tmp_path, capsys):
    results = run_demo(tmp_path, size=160)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"sample.tif", "sample_roads.gpkg", "seed_checkpoint.pth", "demo_model.pt", "demo_model.onnx",
            "sample_road_probability.tif", "sample_road_mask.tif", "sample_roads_extracted.gpkg",
            "preview.png"} <= names
    assert not [n for n in names if ".part" in n or n.startswith(".")]
    assert np.asarray(Image.open(tmp_path / "preview.png")).shape == (160, 160, 3)
    with rasterio.open(tmp_path / "sample_road_probability.tif") as ds:
        assert ds.crs.to_epsg() == 32619 and ds.width == 160
    assert results["onnx_max_abs_diff"] < 1e-3
    assert 0 <= results["road_iou"] <= 1
    out = capsys.readouterr().out
    assert "prefix 'module.' removed" in out and "weights are random" in out and "APLS" in out
