"""Brightness matching: a raster far darker or brighter than the imagery a model was trained on is brought into
that imagery's range by one gamma curve, chosen once per raster (or mosaic) from its median brightness.

Why: a road model learns what roads look like at the brightness it was trained on. The SpaceNet Las Vegas tile is
8-bit imagery with a median brightness of 25 (of 255); the Massachusetts Roads images the shipped model learnt
from have medians of 53 to 101 (10th to 90th percentile). Its new black asphalt is darker than anything the model
saw, and the model drew its line along the kerb instead of the road. Brought to a median of 53 by one gamma curve
(dark values lifted most, white kept white), the same model finds several times more of the tile's road length
(README, "Extraction": Brightness). A raster whose median is inside the range is left exactly as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.inputs.raster import WindowSource

# The 10th and 90th percentiles of the per-image median brightness of Massachusetts Roads' 45 training tiles and
# 369 crops (`training.data.RoadCrops.brightness_range`, what `fit` records): for model files that record none.
MASSACHUSETTS_BRIGHTNESS = (53.0, 101.0)
SATURATED = 250.0  # pixels this bright in every band are left out: the white no-data of many products, glare
GAMMA_LIMITS = (1 / 3, 3.0)  # beyond these a raster is not imagery the model can be made to read


def model_range(recorded: tuple[float, float] | None) -> tuple[float, float]:
    """The range a model file records (`Normalization.brightness`), or Massachusetts Roads' where it records none."""
    return recorded or MASSACHUSETTS_BRIGHTNESS


@dataclass(frozen=True)
class BrightnessMatch:
    median: float | None  # the raster's median brightness, 0..255 (None: no valid pixel)
    target: tuple[float, float]
    gamma: float  # 1.0: left as it is

    def note(self) -> str:
        low, high = self.target
        if self.median is None:
            return "brightness: no valid pixel to measure; values left as they are"
        if self.gamma == 1.0:
            return (f"brightness: median {self.median:.0f} of 255, inside the model's {low:.0f}-{high:.0f}; "
                    f"values left as they are")
        return (f"brightness: median {self.median:.0f} of 255, outside the model's {low:.0f}-{high:.0f}; gamma "
                f"{self.gamma:.2f} applied (--brightness none leaves values as they are)")


def median_brightness(values: np.ndarray, valid: np.ndarray) -> float | None:
    """Median over valid, unsaturated pixels of the band mean of `values` [C, H, W] in 0..255."""
    usable = valid & ~(values >= SATURATED).all(axis=0)
    if not usable.any():
        return None
    return float(np.median(values.mean(axis=0)[usable]))


def gamma_for(median: float | None, target: tuple[float, float]) -> float:
    """The gamma that brings `median` to the nearer end of `target`; 1.0 inside it. v' = 255 (v / 255) ** gamma."""
    low, high = target
    if median is None or low <= median <= high:
        return 1.0
    goal = low if median < low else high
    median = min(max(median, 0.5), 254.5)  # a median of 0 or 255 has no finite gamma: the limits take over
    gamma = math.log(goal / 255.0) / math.log(median / 255.0)
    return float(min(max(gamma, GAMMA_LIMITS[0]), GAMMA_LIMITS[1]))


def match_brightness(source: WindowSource, recorded: tuple[float, float] | None) -> BrightnessMatch:
    """Measures the whole raster once, from its decimated read (`overview`), against the model's range
    (`model_range`)."""
    target = model_range(recorded)
    values, valid = source.overview()
    median = median_brightness(values, valid)
    return BrightnessMatch(median, target, gamma_for(median, target))


def image_brightness(image: np.ndarray, valid: np.ndarray, step: int = 4) -> float | None:
    """`median_brightness` of a uint8 image [H, W, C] (every `step`-th pixel: a median needs no more)."""
    return median_brightness(np.moveaxis(image[::step, ::step], -1, 0).astype(np.float32), valid[::step, ::step])


def training_range(medians: Sequence[float | None]) -> tuple[float, float]:
    """What a model file records of its training imagery: the 10th-90th percentile of the images' medians."""
    known = [m for m in medians if m is not None]
    if not known:
        return MASSACHUSETTS_BRIGHTNESS
    low, high = np.percentile(known, (10, 90))
    return float(max(low, 1.0)), float(min(max(high, low), 254.0))


def widened(recorded: tuple[float, float] | None, medians: Sequence[float | None]) -> tuple[float, float]:
    """A fine-tuned model's range: its parent's, stretched to every image it was fine-tuned on (those are read
    as they are in training, so they must be read as they are at inference too)."""
    low, high = model_range(recorded)
    known = [m for m in medians if m is not None]
    return float(max(min([low, *known]), 1.0)), float(min(max([high, *known]), 254.0))


def apply_gamma(values: np.ndarray, gamma: float) -> np.ndarray:
    """`values` (0..255) through the gamma curve; the same array when gamma is 1."""
    if gamma == 1.0:
        return values
    return (255.0 * np.power(np.clip(values, 0.0, 255.0) / 255.0, gamma)).astype(values.dtype, copy=False)
