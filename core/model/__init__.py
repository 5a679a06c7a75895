"""The attention-DeepLabv3+ network of the seed, configurable and with the seed's parameter names."""

from .attention import TwoBranchAttention
from .config import ConfigError, ModelConfig
from .deeplab import MODULES, AttentionDeepLab, build_model

__all__ = ["MODULES", "AttentionDeepLab", "ConfigError", "ModelConfig", "TwoBranchAttention", "build_model"]
