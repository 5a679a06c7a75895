"""Test-time augmentation: definitions, invariances and input checks."""

import pytest
import torch

from core.extraction.inference import normalize, predict_logits, predict_probabilities
from core.model import ModelConfig, build_model
from core.model.checkpoint import Normalization


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(1)
    return build_model(ModelConfig(backbone="resnet18")).eval()


def test_flip_is_the_mean_of_the_image_and_its_mirror(network):
    x = torch.randn(1, 3, 64, 48)
    with torch.inference_mode():
        expected = (network(x) + torch.flip(network(torch.flip(x, dims=(3,))), dims=(3,))) / 2
        torch.testing.assert_close(predict_logits(network, x, (1.0,), "flip"), expected)


def test_d4_result_turns_with_the_image(network):
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        straight = predict_logits(network, x, (1.0,), "d4")
        turned = predict_logits(network, torch.rot90(x, 1, dims=(2, 3)), (1.0,), "d4")
        plain = predict_logits(network, torch.rot90(x, 1, dims=(2, 3)), (1.0,), "none")
    torch.testing.assert_close(turned, torch.rot90(straight, 1, dims=(2, 3)), atol=1e-4, rtol=1e-4)
    assert (plain - torch.rot90(straight, 1, dims=(2, 3))).abs().max() > 1e-3


@pytest.mark.parametrize("size", [(37, 101), (64, 64), (95, 33)])
def test_any_size_multiscale_and_d4(network, size):
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        probabilities = predict_probabilities(network, x, (0.75, 1.0, 1.25), "d4")
    assert probabilities.shape == (1, 2, *size)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(1, *size))


def test_probabilities_average_scales_and_keep_the_argmax(network):
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        summed = predict_logits(network, x)
        probabilities = predict_probabilities(network, x)
    torch.testing.assert_close(probabilities, torch.softmax(summed / 3, dim=1))
    assert torch.equal(probabilities.argmax(1), summed.argmax(1))


def test_bad_tta_arguments_are_named(network):
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="at least one scale"):
        predict_logits(network, x, ())
    with pytest.raises(ValueError, match="positive"):
        predict_logits(network, x, (0.0, 1.0))
    with pytest.raises(ValueError, match="augment must be one of none, flip, d4"):
        predict_logits(network, x, (1.0,), "rotate")


def test_normalize_uses_the_models_statistics():
    image = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = normalize(image, Normalization(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0)))
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 0.5]
