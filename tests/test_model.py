"""The network: every variant builds and runs, with the seed codebase's names and dilations."""

import pytest
import torch
from torch import nn

from core.model import AttentionDeepLab, ConfigError, ModelConfig, TwoBranchAttention, build_model


def _dilations(stage: nn.Sequential) -> list[int]:
    return [block.conv2.dilation[0] for block in stage]


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101"])
@pytest.mark.parametrize("attention", ["seed", "psa", "none"])
def test_every_backbone_and_attention_gives_logits_at_input_size(backbone, attention):
    model = build_model(ModelConfig(backbone=backbone, attention=attention, num_classes=3)).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 72, 56))
    assert out.shape == (2, 3, 72, 56)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("layer4", ["plain", "multigrid"])
@pytest.mark.parametrize("size", [(64, 64), (67, 45), (33, 97)])
def test_output_strides_layer4_and_odd_sizes(output_stride, layer4, size):
    model = build_model(ModelConfig(backbone="resnet18", output_stride=output_stride, layer4=layer4)).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 2, *size)


@pytest.mark.parametrize(
    ("output_stride", "layer4", "expected"),
    [(16, "plain", [2, 2, 2]), (16, "multigrid", [2, 4, 8]), (8, "plain", [4, 4, 4]), (8, "multigrid", [4, 8, 16])],
)
def test_layer4_dilations_plain_is_the_seeds_multigrid_is_the_original(output_stride, layer4, expected):
    model = build_model(ModelConfig(backbone="resnet50", output_stride=output_stride, layer4=layer4))
    assert _dilations(model.backbone.layer4) == expected
    # Stride 2 stages: layer2 always, layer3 only at output stride 16.
    assert model.backbone.layer3[0].conv2.stride[0] == (2 if output_stride == 16 else 1)
    assert model.backbone.layer4[0].conv2.stride[0] == 1


def test_resnet18_multigrid_uses_one_rate_per_block():
    model = build_model(ModelConfig(backbone="resnet18", layer4="multigrid"))
    assert _dilations(model.backbone.layer4) == [2, 4]


@pytest.mark.parametrize(("output_stride", "rates"), [(16, [1, 6, 12, 18]), (8, [1, 12, 24, 36])])
def test_aspp_rates(output_stride, rates):
    model = build_model(ModelConfig(backbone="resnet18", output_stride=output_stride))
    branches = [model.aspp.aspp1, model.aspp.aspp2, model.aspp.aspp3, model.aspp.aspp4]
    assert [b.atrous_conv.dilation[0] for b in branches] == rates


def test_parameter_names_are_the_seed_codebases():
    model = build_model(ModelConfig(backbone="resnet50"))
    keys = set(model.state_dict())
    for key in [
        "backbone.conv1.weight", "backbone.bn1.running_var", "backbone.layer1.0.conv3.weight",
        "backbone.layer1.0.downsample.0.weight", "backbone.layer1.0.downsample.1.weight",
        "backbone.layer4.2.bn3.bias", "aspp.aspp1.atrous_conv.weight", "aspp.aspp4.bn.running_mean",
        "aspp.global_avg_pool.1.weight", "aspp.global_avg_pool.2.weight", "aspp.conv1.weight", "aspp.bn1.bias",
        "decoder.conv1.weight", "decoder.bn1.weight", "decoder.last_conv.0.weight", "decoder.last_conv.1.weight",
        "decoder.last_conv.4.weight", "decoder.last_conv.5.running_var", "decoder.last_conv.8.weight",
        "decoder.last_conv.8.bias",
    ]:
        assert key in keys, key
    for site in ("attention", "attention2"):
        names = {k.split(".", 1)[1] for k in keys if k.split(".", 1)[0] == site}
        assert names == {"conv_q_right.weight", "conv_v_right.weight", "conv_up.weight", "conv_q_left.weight",
                         "conv_v_left.weight"}
    # torchvision's ResNet-50 has 320 state-dict entries; ours lacks only its classifier (fc.weight, fc.bias).
    assert len([k for k in keys if k.startswith("backbone.")]) == 318
    resnet18 = build_model(ModelConfig(backbone="resnet18"))
    assert len([k for k in resnet18.state_dict() if k.startswith("backbone.")]) == 120  # torchvision: 122


def test_attention_placement_and_none_have_no_parameters():
    model = build_model(ModelConfig(backbone="resnet18", attention_on_low_level=False))
    assert isinstance(model.attention, nn.Identity)
    assert isinstance(model.attention2, TwoBranchAttention)
    plain = build_model(ModelConfig(backbone="resnet18", attention="none"))
    assert not [k for k in plain.state_dict() if k.startswith("attention")]


def test_psa_adds_layernorm_and_residual_adds_gamma():
    model = build_model(ModelConfig(backbone="resnet18", attention="psa", attention_residual=True))
    keys = set(model.state_dict())
    assert {"attention.ln.weight", "attention2.ln.bias", "attention.gamma", "attention2.gamma"} <= keys


def test_seed_spatial_gate_is_stuck_near_half_and_psa_is_not():
    """The seed's softmax over H*W before the sigmoid flattens the spatial gate; the paper's order does not."""
    torch.manual_seed(0)
    x = torch.randn(2, 64, 32, 32) * 3
    seed, psa = TwoBranchAttention(64, "seed"), TwoBranchAttention(64, "psa")
    psa.load_state_dict(seed.state_dict(), strict=False)  # same convolutions, only the ordering differs
    seed_gate, psa_gate = seed.spatial_gate(x), psa.spatial_gate(x)
    assert seed_gate.min() >= 0.5 and seed_gate.max() < 0.55  # softmax weights ~ 1/1024, sigmoid(~0) = 0.5
    assert psa_gate.std() > 10 * seed_gate.std()
    # And the seed's gate moves with the image size alone: a bigger image pushes it even closer to 0.5.
    bigger = seed.spatial_gate(torch.nn.functional.interpolate(x, scale_factor=2))
    assert (bigger - 0.5).abs().mean() < (seed_gate - 0.5).abs().mean()


def test_residual_attention_starts_as_identity():
    block = TwoBranchAttention(32, "psa", residual=True)
    x = torch.randn(1, 32, 8, 8)
    assert torch.equal(block(x), x)


def test_bad_config_names_field_and_choices():
    with pytest.raises(ConfigError, match="output_stride 32 .*16 or 8"):
        ModelConfig(output_stride=32)
    with pytest.raises(ConfigError, match="backbone 'resnet152'.*resnet18"):
        ModelConfig(backbone="resnet152")
    with pytest.raises(ConfigError, match="unknown model configuration field"):
        ModelConfig.from_dict({"backbone": "resnet18", "depth": 5})


def test_injectable_norm_layer():
    model = AttentionDeepLab(ModelConfig(backbone="resnet18"), norm_layer=lambda c: nn.GroupNorm(8, c))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_head_parameters_exclude_the_backbone():
    model = build_model(ModelConfig(backbone="resnet18"))
    head = {id(p) for p in model.head_parameters()}
    assert head and not head & {id(p) for p in model.backbone.parameters()}
    assert len(head) + len(list(model.backbone.parameters())) == len(list(model.parameters()))
