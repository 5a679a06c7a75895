"""The grid of overlapping tiles the network sees, and the weights that blend them without seams."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

MIN_TILE = 32  # the network's smallest input side (2x2 features at output stride 16)
SIZE_STEP = 16  # fitted tile sides are multiples of the output stride, so no feature map is padded


@dataclass(frozen=True)
class Tile:
    row: int
    col: int
    x: int
    y: int
    width: int
    height: int


def _fitted(start: int, stop: int, tile: int, overlap: int) -> tuple[int, list[int]]:
    """The fewest tiles of at most `tile` pixels that cover [start, stop) with at least `overlap` pixels shared by
    neighbours, all of one size and evenly spread: (size, origins). 1500 px at tile 512 / overlap 64 gives 4 tiles
    of 432 px (a fixed stride would run 4 of 512 px, the last one mostly over the third)."""
    length = stop - start
    if length <= tile:
        return length, [start]
    count = math.ceil((length - overlap) / (tile - overlap))
    size = min(tile, -(-(math.ceil((length - overlap) / count) + overlap) // SIZE_STEP) * SIZE_STEP)
    return size, [start + round(i * (length - size) / (count - 1)) for i in range(count)]


@dataclass(frozen=True)
class TileGrid:
    """The tile plan over the area [x0, x1) x [y0, y1) of a processing grid: per axis, the fewest tiles of at most
    `tile` pixels that cover the area with at least `overlap` pixels shared by neighbours, of one size, evenly
    spread, so no pixel is computed more often than blending needs. A region run makes one plan for its whole
    mosaic and gives each block a `part` of it, so blocks compute the tiles of the one-process run."""

    x0: int
    y0: int
    x1: int
    y1: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        if self.tile < MIN_TILE:
            raise ValueError(f"tile size {self.tile} is too small; use at least {MIN_TILE} pixels")
        if not 0 <= self.overlap < self.tile // 2 + 1:
            raise ValueError(f"overlap {self.overlap} must be between 0 and half the tile size ({self.tile // 2})")
        if self.x1 - self.x0 < MIN_TILE or self.y1 - self.y0 < MIN_TILE:
            raise ValueError(f"the area is {self.x1 - self.x0}x{self.y1 - self.y0} pixels at the model's resolution; "
                             f"the model needs at least {MIN_TILE}x{MIN_TILE}")

    def rows(self) -> list[list[Tile]]:
        """Tiles row by row: each row spans the same rows of the grid, which is what lets the engine stream."""
        th, ys = _fitted(self.y0, self.y1, self.tile, self.overlap)
        tw, xs = _fitted(self.x0, self.x1, self.tile, self.overlap)
        return [[Tile(r, c, x, y, tw, th) for c, x in enumerate(xs)] for r, y in enumerate(ys)]

    def __len__(self) -> int:
        return sum(len(row) for row in self.rows())

    def part(self, row0: int, col0: int, row1: int, col1: int) -> TilePart:
        return TilePart(self, row0, col0, row1, col1)


@dataclass(frozen=True)
class TilePart:
    """Whole tiles of a plan, rows [row0, row1) x columns [col0, col1), over the area they cover: what a region
    block computes, with the sizes, places and blending weights the plan gives them."""

    plan: TileGrid
    row0: int
    col0: int
    row1: int
    col1: int

    def __post_init__(self) -> None:
        rows = self.plan.rows()
        if not (0 <= self.row0 < self.row1 <= len(rows) and 0 <= self.col0 < self.col1 <= len(rows[0])):
            raise ValueError(f"tiles rows {self.row0}-{self.row1}, columns {self.col0}-{self.col1} are not in the "
                             f"plan's {len(rows)}x{len(rows[0])}")

    def rows(self) -> list[list[Tile]]:
        return [row[self.col0:self.col1] for row in self.plan.rows()[self.row0:self.row1]]

    def __len__(self) -> int:
        return (self.row1 - self.row0) * (self.col1 - self.col0)

    @property
    def overlap(self) -> int:
        return self.plan.overlap

    @property
    def x0(self) -> int:
        return self.rows()[0][0].x

    @property
    def y0(self) -> int:
        return self.rows()[0][0].y

    @property
    def x1(self) -> int:
        last = self.rows()[-1][-1]
        return last.x + last.width

    @property
    def y1(self) -> int:
        last = self.rows()[-1][-1]
        return last.y + last.height


@lru_cache(maxsize=8)
def blend_weights(height: int, width: int, overlap: int) -> np.ndarray:
    """Weights that rise smoothly (a raised cosine) from near 0 at a tile's edge to 1 over `overlap` pixels.

    Where tiles overlap, each pixel's prediction is the weighted mean of the tiles that saw it, so the tile with
    more context around the pixel counts more and no edge shows. Never exactly 0, so that pixels only one tile
    sees (at the raster's edges) keep that tile's value.
    """

    def ramp(n: int) -> np.ndarray:
        weights = np.ones(n, np.float32)
        if overlap > 0:
            k = min(overlap, n // 2)
            edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(k, dtype=np.float32) + 0.5) / k)
            weights[:k] = edge
            weights[n - k:] = edge[::-1]
        return np.maximum(weights, 1e-3)

    return np.outer(ramp(height), ramp(width))
