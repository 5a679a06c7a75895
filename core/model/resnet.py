"""Dilated ResNet backbone with torchvision's parameter names.

torchvision itself is not a dependency (its wheels do not match every torch build): the blocks are written here
with the same module names (`conv1`, `bn1`, `layer1.0.conv2`, `layer1.0.downsample.0`, ...) so that torchvision's
ImageNet weight files and the seed's checkpoints load by key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

NormLayer = Callable[[int], nn.Module]

MULTIGRID_RATES = (1, 2, 4)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        # Stride on the 3x3 conv (ResNet v1.5), as torchvision and the seed's codebase do.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm_layer(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm_layer(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm_layer(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """Returns (high-level features, low-level features from layer1).

    `layer4="plain"` is the seed's layer4: every block at the stage dilation. `layer4="multigrid"` is the
    original DeepLabv3 multi-grid unit of pytorch-deeplab-xception: block i at dilation * (1, 2, 4)[i]; a
    ResNet-18 layer4 has two blocks and uses (1, 2). Both have identical parameters, so a checkpoint cannot tell
    them apart: the choice is recorded in the model file's config.
    """

    def __init__(self, block: str, stage_blocks: Sequence[int], output_stride: int = 16, layer4: str = "plain",
                 in_channels: int = 3, norm_layer: NormLayer = nn.BatchNorm2d) -> None:
        super().__init__()
        if output_stride == 16:
            strides, dilations = (1, 2, 2, 1), (1, 1, 1, 2)
        elif output_stride == 8:
            strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        else:
            raise ValueError(f"output stride must be 16 or 8, not {output_stride}")
        self._block = BasicBlock if block == "basic" else Bottleneck
        self._norm_layer = norm_layer
        self.inplanes = 64

        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(64, [dilations[0]] * stage_blocks[0], strides[0])
        self.layer2 = self._make_stage(128, [dilations[1]] * stage_blocks[1], strides[1])
        self.layer3 = self._make_stage(256, [dilations[2]] * stage_blocks[2], strides[2])
        if layer4 == "multigrid":
            rates = [dilations[3] * MULTIGRID_RATES[i % len(MULTIGRID_RATES)] for i in range(stage_blocks[3])]
        else:
            rates = [dilations[3]] * stage_blocks[3]
        self.layer4 = self._make_stage(512, rates, strides[3])
        self.out_channels = 512 * self._block.expansion
        self.low_level_channels = 64 * self._block.expansion
        self._init_weights()

    def _make_stage(self, planes: int, block_dilations: Sequence[int], stride: int) -> nn.Sequential:
        block, norm = self._block, self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                norm(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, block_dilations[0], downsample, norm)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, d, None, norm) for d in block_dilations[1:]]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        x = self.layer4(self.layer3(self.layer2(low_level)))
        return x, low_level
