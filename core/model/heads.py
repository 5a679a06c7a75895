"""ASPP and the DeepLabv3+ decoder, with the parameter names of pytorch-deeplab-xception (the seed's codebase)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .resnet import NormLayer

ASPP_CHANNELS = 256
LOW_LEVEL_PROJECTION = 48


class _ASPPBranch(nn.Module):
    def __init__(self, inplanes: int, planes: int, kernel_size: int, dilation: int, norm_layer: NormLayer) -> None:
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation
        self.atrous_conv = nn.Conv2d(inplanes, planes, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn = norm_layer(planes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    def __init__(self, inplanes: int, rates: Sequence[int], norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.aspp1 = _ASPPBranch(inplanes, ASPP_CHANNELS, 1, rates[0], norm_layer)
        self.aspp2 = _ASPPBranch(inplanes, ASPP_CHANNELS, 3, rates[1], norm_layer)
        self.aspp3 = _ASPPBranch(inplanes, ASPP_CHANNELS, 3, rates[2], norm_layer)
        self.aspp4 = _ASPPBranch(inplanes, ASPP_CHANNELS, 3, rates[3], norm_layer)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(inplanes, ASPP_CHANNELS, 1, bias=False),
            norm_layer(ASPP_CHANNELS),
            nn.ReLU(),
        )
        self.conv1 = nn.Conv2d(5 * ASPP_CHANNELS, ASPP_CHANNELS, 1, bias=False)
        self.bn1 = norm_layer(ASPP_CHANNELS)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.global_avg_pool(x)
        pooled = F.interpolate(pooled, size=x.shape[2:], mode="bilinear", align_corners=True)
        x = torch.cat((self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled), dim=1)
        return self.dropout(self.relu(self.bn1(self.conv1(x))))


class Decoder(nn.Module):
    def __init__(self, low_level_channels: int, num_classes: int, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(low_level_channels, LOW_LEVEL_PROJECTION, 1, bias=False)
        self.bn1 = norm_layer(LOW_LEVEL_PROJECTION)
        self.relu = nn.ReLU()
        self.last_conv = nn.Sequential(
            nn.Conv2d(ASPP_CHANNELS + LOW_LEVEL_PROJECTION, 256, 3, padding=1, bias=False),
            norm_layer(256),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Conv2d(256, 256, 3, padding=1, bias=False),
            norm_layer(256),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, x: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.relu(self.bn1(self.conv1(low_level)))
        x = F.interpolate(x, size=low_level.shape[2:], mode="bilinear", align_corners=True)
        return self.last_conv(torch.cat((x, low_level), dim=1))
