"""The typed architecture description saved with every model file.

Everything that changes the network's parameters or its numerics lives here, so that a model file is enough to
rebuild the exact network it was trained as.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from core.errors import InputError, unknown_fields

Backbone = Literal["resnet18", "resnet34", "resnet50", "resnet101"]
Layer4 = Literal["plain", "multigrid"]
AttentionKind = Literal["seed", "psa", "none"]

BACKBONES: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    # name: (block type, blocks per stage) as in torchvision and the seed's codebase
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}
OUTPUT_STRIDES = (8, 16)
LAYER4_KINDS = ("plain", "multigrid")
ATTENTION_KINDS = ("seed", "psa", "none")


class ConfigError(InputError):
    """A model configuration that cannot be built; the message names the field and the allowed values."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the attention-DeepLabv3+.

    Defaults are the seed's: ResNet-50, output stride 16, a `plain` layer4 (every block at the same dilation),
    the seed's attention module on both the ASPP output (`attention2`) and the low-level features (`attention`).
    """

    backbone: Backbone = "resnet50"
    output_stride: int = 16
    layer4: Layer4 = "plain"
    attention: AttentionKind = "seed"
    attention_on_aspp: bool = True
    attention_on_low_level: bool = True
    # x + gamma * attention(x), gamma starting at 0: the seed's module has no identity path
    # (docs/training/seed-questions.md).
    attention_residual: bool = False
    num_classes: int = 2
    in_channels: int = 3

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ConfigError(f"backbone {self.backbone!r} is not supported; use one of {', '.join(BACKBONES)}")
        if self.output_stride not in OUTPUT_STRIDES:
            raise ConfigError(f"output_stride {self.output_stride!r} is not supported; use 16 or 8")
        if self.layer4 not in LAYER4_KINDS:
            raise ConfigError(f"layer4 {self.layer4!r} is not supported; use 'plain' or 'multigrid'")
        if self.attention not in ATTENTION_KINDS:
            raise ConfigError(f"attention {self.attention!r} is not supported; use 'seed', 'psa' or 'none'")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, not {self.num_classes}")
        if self.in_channels < 1:
            raise ConfigError(f"in_channels must be at least 1, not {self.in_channels}")

    @property
    def block(self) -> str:
        return BACKBONES[self.backbone][0]

    @property
    def stage_blocks(self) -> tuple[int, int, int, int]:
        return BACKBONES[self.backbone][1]

    @property
    def high_level_channels(self) -> int:
        return 2048 if self.block == "bottleneck" else 512

    @property
    def low_level_channels(self) -> int:
        return 256 if self.block == "bottleneck" else 64

    @property
    def aspp_rates(self) -> tuple[int, int, int, int]:
        return (1, 6, 12, 18) if self.output_stride == 16 else (1, 12, 24, 36)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ConfigError(
                f"unknown model configuration field(s) {', '.join(unknown)}; "
                f"the file was written by a newer version of road-extractor - upgrade it"
            )
        return cls(**data)

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})
