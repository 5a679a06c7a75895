"""Crop augmentations, each drawn from a crop's own random generator so every crop is reproducible.

Two recipes:
- `mild`: the first shipped model's: scale 0.75-1.25, flips and 90-degree rotations, +-10% brightness/contrast.
- `sensors`: imitations of the imagery users bring that Massachusetts 2000s aerial photography is not: coarser
  sensors resampled to the model's GSD (resolution 1-2 m/px, then back), other white balances, hues, saturations,
  greyscale, gamma and contrast, blur and over-sharpening, haze, sensor noise, JPEG artefacts, and arid and snowy
  palettes. Geometry follows the labels; colour never touches them.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

RECIPES = ("mild", "sensors")

# RGB <-> YIQ: hue is a rotation of (I, Q) and saturation their length, so one 3x3 matrix does white balance,
# hue and saturation together.
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_FROM_YIQ = np.linalg.inv(_TO_YIQ).astype(np.float32)


@dataclass
class Augment:
    crop: int = 512
    recipe: str = "mild"  # one of RECIPES
    scale_jitter: tuple[float, float] = (0.75, 1.25)  # geometric zoom: roads are only a few pixels wide
    colour_jitter: float = 0.1  # brightness/contrast, multiplicative (both recipes)
    flips: bool = True  # flips and 90-degree rotations: aerial images have no "up"
    min_valid: float = 0.5  # a crop must hold at least this share of pixels with data
    road_share: float = 0.5  # this share of crops is drawn until it holds road pixels
    # This share of crops has its brightness inverted, colours kept (both recipes): roads darker than the ground
    # around them, as new asphalt in a desert city, where Massachusetts' roads are lighter than the woods around.
    invert_brightness: float = 0.0

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"augmentation recipe {self.recipe!r} is not known; use one of {', '.join(RECIPES)}")
        if not 0 <= self.invert_brightness <= 1:
            raise ValueError(f"--invert-brightness {self.invert_brightness!r}: give a share between 0 and 1")


def colour_matrix(rng: np.random.Generator) -> np.ndarray:
    """White balance, hue rotation and saturation (greyscale sometimes) as one 3x3 matrix on RGB in 0..1."""
    angle = rng.uniform(-0.35, 0.35)  # radians of hue, about +-20 degrees
    saturation = 0.0 if rng.random() < 0.08 else rng.uniform(0.55, 1.4)
    cos, sin = math.cos(angle) * saturation, math.sin(angle) * saturation
    chroma = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], np.float32)
    balance = np.diag(np.clip(rng.normal(1.0, 0.07, 3), 0.8, 1.2)).astype(np.float32)
    return balance @ _FROM_YIQ @ chroma @ _TO_YIQ


def invert_brightness(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] with its luma inverted (Y -> 1 - Y in YIQ) and its chroma kept: light becomes dark."""
    yiq = (np.asarray(image, np.float32) / 255) @ _TO_YIQ.T
    yiq[..., 0] = 1 - yiq[..., 0]
    return (np.clip(yiq @ _FROM_YIQ.T, 0, 1) * 255 + 0.5).astype(np.uint8)


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """Low-frequency noise in 0..1 (patches of snow, haze thickness)."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), np.float32) / 255


def imitate_sensor(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [H, W, 3] as another sensor, season or resolution might have seen it."""
    height, width = image.shape[:2]
    picture = Image.fromarray(np.ascontiguousarray(image))
    if rng.random() < 0.4:  # a 1.2-2 m/px sensor resampled to the model's 1 m/px
        factor = rng.uniform(1.2, 2.0)
        small = (max(8, round(width / factor)), max(8, round(height / factor)))
        picture = picture.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    sharpness = rng.random()
    if sharpness < 0.2:
        picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.3)))
    elif sharpness < 0.35:
        picture = picture.filter(ImageFilter.UnsharpMask(radius=rng.uniform(1, 2.5), percent=int(rng.uniform(50, 150)),
                                                         threshold=2))
    x = np.asarray(picture, np.float32) / 255
    x = x @ colour_matrix(rng).T
    palette = rng.random()
    if palette < 0.1:  # arid: vegetation and lawns become sand and scrub
        grey = x.mean(axis=2, keepdims=True)
        x = (0.35 * x + 0.65 * grey) * np.array([1.18, 1.02, 0.78], np.float32) + 0.08
    elif palette < 0.17:  # snowy: bright, low-contrast patches over the ground
        snow = _smooth_field(rng, max(height, width))[:height, :width, None] * rng.uniform(0.4, 0.85)
        x = x + (np.array([0.93, 0.95, 1.0], np.float32) - x) * snow
    x = np.clip(x, 0, 1) ** rng.uniform(0.7, 1.45)  # gamma
    mean = x.mean()
    x = (x - mean) * rng.uniform(0.7, 1.3) + mean + rng.uniform(-0.08, 0.08)  # contrast, brightness
    if rng.random() < 0.2:  # haze: a veil of scattered light, thicker in places
        veil = rng.uniform(0.1, 0.45) * (0.5 + 0.5 * _smooth_field(rng, max(height, width))[:height, :width, None])
        x = x * (1 - veil) + veil * rng.uniform(0.7, 0.95)
    if rng.random() < 0.3:  # sensor noise
        x = x + rng.normal(0, rng.uniform(0.005, 0.03), x.shape).astype(np.float32)
    out = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    if rng.random() < 0.3:  # JPEG artefacts of web and archive imagery
        buffer = io.BytesIO()
        Image.fromarray(out).save(buffer, format="JPEG", quality=int(rng.uniform(30, 85)))
        out = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return out
