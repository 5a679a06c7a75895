import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# `--runtime auto` runs torch in the tests (and the engine workers they start) whether or not OpenVINO is
# installed: every test but the runtimes' own compares torch's numbers (tests/test_runtimes.py clears it).
os.environ["ROAD_EXTRACTOR_AUTO_EXPORTED"] = "0"
# QGIS's own plugins (Processing) live outside site-packages on Debian.
for plugins in ("/usr/share/qgis/python/plugins",):
    if Path(plugins).is_dir() and plugins not in sys.path:
        sys.path.append(plugins)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip where a user's checkout has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (only present on the project's machines)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def road_tiles(tmp_path_factory) -> Path:
    """Four generated 160x160 tiles with 0/255 road masks in the Massachusetts layout (images/ + masks/)."""
    import numpy as np
    from PIL import Image

    from core.inputs.sample import make_scene

    root = tmp_path_factory.mktemp("road_tiles")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i in range(4):
        scene = make_scene(160, seed=i)
        Image.fromarray(scene.image).save(root / "images" / f"t{i}.png")
        Image.fromarray(scene.roads.astype(np.uint8) * 255).save(root / "masks" / f"t{i}.png")
    return root


@pytest.fixture(scope="session")
def random_model_file(tmp_path_factory) -> Path:
    """A ResNet-18 model file with random weights at 1 m/px: exercises every stage, predicts nothing in particular."""
    from core.model import ModelConfig, build_model
    from core.model.checkpoint import ModelInfo, save_model

    config = ModelConfig(backbone="resnet18")
    path = tmp_path_factory.mktemp("model") / "random.pt"
    return save_model(path, build_model(config).eval(), ModelInfo(config=config, gsd_m=1.0,
                                                                  metrics={"val_road_iou": 0.5}))


@pytest.fixture(scope="session")
def constant_model(tmp_path_factory):
    """model file(road_logit): a model whose road probability is the same everywhere (its last layer's weights
    zeroed, its bias set): softmax(-logit, +logit), i.e. sigmoid(2 * logit) for every pixel (-4: 0.0003, 4: 0.9997).
    A random model's is anywhere near 0.5, so a test of what depends on the parent's probability cannot use it."""
    import torch

    from core.model import ModelConfig, build_model
    from core.model.checkpoint import ModelInfo, save_model

    folder = tmp_path_factory.mktemp("constant")

    def make(road_logit: float) -> Path:
        path = folder / f"road-logit-{road_logit:g}.pt"
        if not path.exists():
            config = ModelConfig(backbone="resnet18")
            network = build_model(config).eval()
            last = network.decoder.last_conv[-1]
            with torch.no_grad():
                last.weight.zero_()
                last.bias.copy_(torch.tensor([-road_logit, road_logit]))
            save_model(path, network, ModelInfo(config=config, gsd_m=1.0, metrics={"val_road_iou": 0.5}))
        return path

    return make
