"""A small synthetic aerial scene with known roads, made on the fly so the project needs no data download.

It is a stand-in for imagery (fields, trees, roofs, asphalt roads about 7 m wide at 1 m/px), good enough to
exercise every stage end to end and to score against its known road mask; it is not a benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@dataclass
class SampleScene:
    image: np.ndarray  # uint8 [H, W, 3]
    roads: np.ndarray  # bool [H, W]
    gsd_m: float
    centrelines: list[list[tuple[float, float]]]  # road centrelines in pixel coordinates (x right, y down)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def make_scene(size: int = 512, seed: int = 7, road_width_px: int = 7) -> SampleScene:
    rng = np.random.default_rng(seed)
    vegetation = _smooth_noise(rng, size, 8)
    texture = _smooth_noise(rng, size, 64)
    ground = np.stack([70 + 60 * vegetation, 95 + 50 * vegetation, 55 + 30 * vegetation], axis=-1)
    ground += (texture[..., None] - 0.5) * 30
    canvas = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)

    roads: list[list[tuple[float, float]]] = []
    for i in range(3):  # gently curving through-roads, two roughly horizontal, one vertical
        t = np.linspace(0, 1, 40)
        offset = size * (0.2 + 0.3 * i + 0.05 * rng.standard_normal())
        wave = 25 * np.sin(2 * np.pi * (t * rng.uniform(0.5, 1.2) + rng.random()))
        along = t * (size + 40) - 20
        points = list(zip(along, offset + wave, strict=True)) if i < 2 else list(zip(offset + wave, along, strict=True))
        roads.append(points)
    for _ in range(4):  # short straight side streets
        x0, y0 = rng.uniform(0.1, 0.9, 2) * size
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.15, 0.3) * size
        roads.append([(x0, y0), (x0 + length * np.cos(angle), y0 + length * np.sin(angle))])

    for _ in range(40):  # roofs
        x, y = rng.uniform(0, size, 2)
        w, h = rng.uniform(8, 20, 2)
        shade = int(rng.uniform(90, 200))
        draw.rectangle([x, y, x + w, y + h], fill=(shade, shade - 20, shade - 30))
    for points in roads:
        draw.line(points, fill=(128, 126, 120), width=road_width_px, joint="curve")
        mask_draw.line(points, fill=255, width=road_width_px, joint="curve")
    for _ in range(60):  # tree crowns over the edges of roads and roofs
        x, y = rng.uniform(0, size, 2)
        r = rng.uniform(2, 6)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(40, 70 + int(rng.uniform(0, 30)), 35))

    image = canvas.filter(ImageFilter.GaussianBlur(0.6))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 4, (size, size, 3))
    return SampleScene(np.clip(pixels, 0, 255).astype(np.uint8), np.asarray(mask) > 127, gsd_m=1.0,
                       centrelines=[[(float(x), float(y)) for x, y in points] for points in roads])
