"""A checkpoint the seed's author trained loads unchanged and computes the same logits; the TTA is the fixed one."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.extraction.inference import predict_logits, scaled_size
from core.model import ModelConfig
from core.model.checkpoint import load_model, read_weights
from tests.reference.seed_deeplab import SeedDeepLab


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Trained BatchNorm layers have non-trivial statistics; fresh ones would hide a mismatched buffer."""
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=generator) * 0.1)


@pytest.fixture(scope="module")
def seed_model():
    torch.manual_seed(0)
    model = SeedDeepLab(num_classes=2)
    _randomise_batchnorm(model)
    return model.eval()


@pytest.fixture(scope="module")
def seed_checkpoint(seed_model, tmp_path_factory):
    """Saved as the seed's training script saves it, from a DataParallel-wrapped model."""
    path = tmp_path_factory.mktemp("seed") / "miou_71.85.pth"
    wrapped = nn.DataParallel(seed_model)
    torch.save({"state_dict": wrapped.state_dict(), "epoch": 49, "best_pred": 0.7185,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.007, "momentum": 0.9}]}}, path)
    return path


def test_seed_checkpoint_loads_with_nothing_missing_or_unexpected(seed_checkpoint):
    weights = read_weights(seed_checkpoint)
    assert weights.kind == "seed checkpoint"
    assert weights.stripped_prefix == "module."
    assert weights.extras == {"epoch": 49, "best_pred": 0.7185}
    model = load_model(seed_checkpoint)
    assert model.report.missing == [] and model.report.unexpected == [] and model.report.mismatched == []
    assert model.architecture.config == ModelConfig()  # resnet50, OS16, plain layer4, seed attention on both
    assert set(model.architecture.unseen) == {"output_stride", "layer4"}


def test_seed_checkpoint_gives_identical_eval_logits(seed_model, seed_checkpoint):
    model = load_model(seed_checkpoint)
    x = torch.randn(2, 3, 96, 80)
    with torch.inference_mode():
        expected = seed_model.single_forward(x)
        actual = model.network(x)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)


def test_multiscale_is_each_scale_from_the_original_and_differs_from_the_seed_loop(seed_model, seed_checkpoint):
    model = load_model(seed_checkpoint)
    x = torch.randn(1, 3, 90, 70)
    scales = (0.75, 1.0, 1.25)
    with torch.inference_mode():
        ours = predict_logits(model.network, x, scales)
        definition = sum(
            F.interpolate(seed_model.single_forward(F.interpolate(x, scaled_size(90, 70, s), mode="bilinear")),
                          (90, 70), mode="bilinear")
            for s in scales
        )
        seed_loop = seed_model(x)
        single = predict_logits(model.network, x, (1.0,))
    torch.testing.assert_close(ours, definition, rtol=0, atol=1e-4)
    assert (ours - seed_loop).abs().max() > 1e-2, "the seed's loop resizes an already-resized image"
    torch.testing.assert_close(single, seed_model.single_forward(x), rtol=0, atol=1e-5)
