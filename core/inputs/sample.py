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


def _canopy(rng: np.random.Generator, size: int, density: float, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crowns of trees: many small overlapping discs with a shadow each, the texture of a forest at 1 m/px."""
    colour = np.zeros((size, size, 3), np.float32)
    cover = np.zeros((size, size), np.float32)
    count = int(density * size * size / 12)
    ys, xs = rng.uniform(0, size, count), rng.uniform(0, size, count)
    radii = rng.uniform(1.5, 4.0, count)
    tones = palette[rng.integers(len(palette), size=count)] * rng.uniform(0.75, 1.15, (count, 1))
    yy, xx = np.mgrid[0:9, 0:9] - 4
    for y, x, r, tone in zip(ys, xs, radii, tones, strict=True):
        disc = (yy ** 2 + xx ** 2) <= r * r
        shade = 1.0 - 0.35 * ((yy + xx) > 0)  # the sun from the north-west: the south-east half is darker
        y0, x0 = int(y) - 4, int(x) - 4
        ys0, xs0 = max(0, y0), max(0, x0)
        ys1, xs1 = min(size, y0 + 9), min(size, x0 + 9)
        if ys1 <= ys0 or xs1 <= xs0:
            continue
        d = disc[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0]
        s = shade[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0]
        colour[ys0:ys1, xs0:xs1][d] = (tone[None, :] * s[d][:, None])
        cover[ys0:ys1, xs0:xs1][d] = 1.0
    return colour, cover


def make_suburb(size: int = 512, seed: int = 11, road_width_px: int = 5, mask_width_px: int = 7) -> SampleScene:
    """A wooded suburb at 1 m/px, drawn after the Massachusetts Roads imagery: forest canopy, lawns, asphalt
    streets about 5 m wide with houses and driveways along them, trees hanging over the road edges. The road mask
    is drawn 7 px wide, as that dataset's masks are."""
    rng = np.random.default_rng(seed)
    openness = _smooth_noise(rng, size, 5)
    lawn = np.stack([95 + 40 * openness, 110 + 35 * openness, 60 + 20 * openness], axis=-1)
    lawn += (_smooth_noise(rng, size, 48)[..., None] - 0.5) * 25
    forest_palette = np.array([[52, 68, 38], [74, 78, 46], [96, 84, 62], [60, 58, 40], [38, 52, 32]], np.float32)
    trees, cover = _canopy(rng, size, 1.0, forest_palette)
    forest = openness < 0.55
    ground = np.where((forest & (cover > 0))[..., None], trees, lawn)

    canvas = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mask = Image.new("L", (size, size), 0)
    mask_draw = ImageDraw.Draw(mask)
    roads: list[list[tuple[float, float]]] = []
    for i in range(2):  # through-roads, gently curving
        t = np.linspace(0, 1, 50)
        offset = size * (0.3 + 0.4 * i) + 20 * rng.standard_normal()
        wave = 30 * np.sin(2 * np.pi * (t * rng.uniform(0.4, 0.9) + rng.random()))
        along = t * (size + 60) - 30
        points = list(zip(along, offset + wave, strict=True)) if i == 0 else list(zip(offset + wave, along,
                                                                                       strict=True))
        roads.append([(float(x), float(y)) for x, y in points])
    for _ in range(4):  # side streets and cul-de-sacs branching off them
        base = roads[int(rng.integers(2))]
        x0, y0 = base[int(rng.integers(8, 42))]
        angle = rng.uniform(0, 2 * np.pi)
        length = rng.uniform(0.2, 0.35) * size
        bend = rng.uniform(-0.6, 0.6)
        t = np.linspace(0, 1, 12)
        xs = x0 + length * t * np.cos(angle + bend * t)
        ys = y0 + length * t * np.sin(angle + bend * t)
        roads.append([(float(x), float(y)) for x, y in zip(xs, ys, strict=True)])
    houses = []
    for points in roads:  # houses set back from the road, each with a driveway
        for k in range(2, len(points) - 1, 3):
            if rng.random() < 0.45:
                continue
            (xa, ya), (xb, yb) = points[k - 1], points[k]
            dx, dy = xb - xa, yb - ya
            norm = max(np.hypot(dx, dy), 1e-6)
            nx, ny = -dy / norm, dx / norm
            side = 1 if rng.random() < 0.5 else -1
            setback = rng.uniform(14, 24)
            hx, hy = xb + side * nx * setback, yb + side * ny * setback
            houses.append((xb, yb, hx, hy, rng.uniform(7, 12), rng.uniform(9, 14)))
    for _, _, hx, hy, _, _ in houses:  # cleared lawn around each house
        draw.ellipse([hx - 16, hy - 16, hx + 16, hy + 16], fill=tuple(int(v) for v in rng.uniform([100, 115, 60],
                                                                                                  [130, 140, 80])))
    for xb, yb, hx, hy, _, _ in houses:
        draw.line([(xb, yb), (hx, hy)], fill=(150, 148, 140), width=3)
    for points in roads:
        draw.line(points, fill=(150, 150, 145), width=road_width_px + 2, joint="curve")  # curbs and shoulders
        draw.line(points, fill=(108, 109, 112), width=road_width_px, joint="curve")
        mask_draw.line(points, fill=255, width=mask_width_px, joint="curve")
    for _, _, hx, hy, w, h in houses:
        shade = rng.uniform(110, 220)
        roof = (int(shade), int(shade * 0.95), int(shade * 0.9))
        draw.rectangle([hx - w / 2 + 2, hy - h / 2 + 2, hx + w / 2 + 2, hy + h / 2 + 2], fill=(45, 50, 35))
        draw.rectangle([hx - w / 2, hy - h / 2, hx + w / 2, hy + h / 2], fill=roof)
    image = np.asarray(canvas, dtype=np.float32)
    street_trees, street_cover = _canopy(rng, size, 0.08, forest_palette)  # crowns over the road edges
    image = np.where((street_cover > 0)[..., None], street_trees, image)
    image = np.asarray(Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.5)),
                       np.float32) + rng.normal(0, 3, (size, size, 3))
    return SampleScene(np.clip(image, 0, 255).astype(np.uint8), np.asarray(mask) > 127, gsd_m=1.0,
                       centrelines=roads)
