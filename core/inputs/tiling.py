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


def _starts(start: int, stop: int, tile: int, stride: int) -> list[int]:
    """Tile origins covering [start, stop): a regular stride, the last tile shifted back to end at `stop`, so that
    every tile lies inside the area and sees real pixels up to its edges."""
    length = stop - start
    if length <= tile:
        return [start]
    origins = list(range(start, stop - tile, stride))
    origins.append(stop - tile)
    return origins


@dataclass(frozen=True)
class TileGrid:
    """Tiles of at most `tile` pixels overlapping by at least `overlap` over the area [x0, x1) x [y0, y1) of a
    processing grid.

    `fit` (the default): per axis, the fewest tiles that cover the area, of one size, evenly spread, so no pixel
    is computed more often than blending needs. Without it, tiles of exactly `tile` pixels at a fixed stride from
    (x0, y0), the last one moved back inside: region runs need that grid, which does not depend on where a block
    ends.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    tile: int
    overlap: int
    fit: bool = True

    def __post_init__(self) -> None:
        if self.tile < MIN_TILE:
            raise ValueError(f"tile size {self.tile} is too small; use at least {MIN_TILE} pixels")
        if not 0 <= self.overlap < self.tile // 2 + 1:
            raise ValueError(f"overlap {self.overlap} must be between 0 and half the tile size ({self.tile // 2})")
        if self.x1 - self.x0 < MIN_TILE or self.y1 - self.y0 < MIN_TILE:
            raise ValueError(f"the area is {self.x1 - self.x0}x{self.y1 - self.y0} pixels at the model's resolution; "
                             f"the model needs at least {MIN_TILE}x{MIN_TILE}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def rows(self) -> list[list[Tile]]:
        """Tiles row by row: each row spans the same rows of the grid, which is what lets the engine stream."""
        if self.fit:
            th, ys = _fitted(self.y0, self.y1, self.tile, self.overlap)
            tw, xs = _fitted(self.x0, self.x1, self.tile, self.overlap)
        else:
            ys = _starts(self.y0, self.y1, self.tile, self.stride)
            xs = _starts(self.x0, self.x1, self.tile, self.stride)
            th, tw = min(self.tile, self.y1 - self.y0), min(self.tile, self.x1 - self.x0)
        return [[Tile(r, c, x, y, tw, th) for c, x in enumerate(xs)] for r, y in enumerate(ys)]

    def __len__(self) -> int:
        return sum(len(row) for row in self.rows())


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
