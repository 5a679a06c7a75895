"""The main job on the built-in sample runs end to end and writes its files."""

import numpy as np
from PIL import Image

from core.demo import run_demo
from core.sample import make_scene


def test_sample_scene_is_repeatable_and_has_roads():
    a, b = make_scene(128, seed=3), make_scene(128, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.roads, b.roads)
    assert 0.02 < a.roads.mean() < 0.3


def test_demo_writes_every_output(tmp_path, capsys):
    results = run_demo(tmp_path, size=96)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"sample.png", "sample_roads.png", "seed_checkpoint.pth", "demo_model.pt", "road_probability.png",
            "demo_model.onnx"} <= names
    assert not [n for n in names if n.endswith(".part")]
    probability = np.asarray(Image.open(tmp_path / "road_probability.png"))
    assert probability.shape == (96, 96)
    assert results["onnx_max_abs_diff"] < 1e-3
    out = capsys.readouterr().out
    assert "prefix 'module.' removed" in out and "weights are random" in out
