"""The seed's attention-DeepLabv3+: ResNet -> ASPP -> attention2, layer1 -> attention, decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import TwoBranchAttention
from .config import ModelConfig
from .heads import ASPP, ASPP_CHANNELS, Decoder
from .resnet import NormLayer, ResNet

# The modules a state dict is summarised by, in the order data flows through them.
MODULES = ("backbone", "aspp", "attention2", "attention", "decoder")


class AttentionDeepLab(nn.Module):
    """`forward` is the seed's `single_forward`: one pass at the input's size, logits upsampled to it.

    Multi-scale and flip test-time inference is `core.extraction.inference.predict_logits`, not a mode of this
    module, so training, export and inference all run the same graph.
    """

    def __init__(self, config: ModelConfig | None = None, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.backbone = ResNet(config.block, config.stage_blocks, config.output_stride, config.layer4,
                               config.in_channels, norm_layer)
        self.aspp = ASPP(config.high_level_channels, config.aspp_rates, norm_layer)
        self.attention2 = self._attention(ASPP_CHANNELS, config.attention_on_aspp)
        self.attention = self._attention(config.low_level_channels, config.attention_on_low_level)
        self.decoder = Decoder(config.low_level_channels, config.num_classes, norm_layer)
        self._init_head_weights()

    def _attention(self, channels: int, enabled: bool) -> nn.Module:
        if self.config.attention == "none" or not enabled:
            return nn.Identity()
        return TwoBranchAttention(channels, self.config.attention, self.config.attention_residual)

    def _init_head_weights(self) -> None:
        for name in ("aspp", "decoder"):
            for m in getattr(self, name).modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x, low_level = self.backbone(image)
        x = self.attention2(self.aspp(x))
        x = self.decoder(x, self.attention(low_level))
        # align_corners=False: the seed's single_forward (its codebase used True here).
        return F.interpolate(x, size=image.shape[2:], mode="bilinear", align_corners=False)

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the backbone: the 10x learning-rate group of the seed's codebase."""
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]


def build_model(config: ModelConfig | None = None, norm_layer: NormLayer = nn.BatchNorm2d) -> AttentionDeepLab:
    return AttentionDeepLab(config, norm_layer)
