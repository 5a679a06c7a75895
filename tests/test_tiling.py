"""The tile plan: the fewest tiles of at most --tile pixels, one size, evenly spread, overlapping enough to blend."""

import math

import pytest

from core.inputs.tiling import MIN_TILE, SIZE_STEP, TileGrid


@pytest.mark.parametrize("length", [32, 100, 511, 512, 513, 1000, 1500, 1501, 4097, 6000])
@pytest.mark.parametrize("tile, overlap", [(512, 64), (768, 64), (1024, 128), (256, 32)])
def test_fitted_tiles_cover_the_area_with_the_overlap_blending_needs(length, tile, overlap):
    grid = TileGrid(7, 3, 7 + length, 3 + length, tile, overlap)
    rows = grid.rows()
    xs = [t.x for t in rows[0]]
    size = rows[0][0].width
    assert {t.width for row in rows for t in row} == {size} and size <= max(tile, MIN_TILE)
    assert xs[0] == 7 and xs[-1] + size == 7 + length  # every pixel covered, no tile outside the area
    assert all(b - a <= size - overlap for a, b in zip(xs, xs[1:], strict=False))  # neighbours share >= overlap
    fewest = 1 if length <= tile else math.ceil((length - overlap) / (tile - overlap))
    assert len(xs) == fewest
    if len(xs) > 1:
        assert size % SIZE_STEP == 0
        assert max(b - a for a, b in zip(xs, xs[1:], strict=False)) - min(
            b - a for a, b in zip(xs, xs[1:], strict=False)) <= 1  # evenly spread


def test_a_1500_px_tile_takes_9_tiles_of_544_px_at_tile_768_where_a_fixed_stride_takes_16_of_512():
    fitted = TileGrid(0, 0, 1500, 1500, 768, 64)
    assert len(fitted) == 9 and fitted.rows()[0][0].width == 544
    fixed_per_axis = len(range(0, 1500 - 512, 512 - 64)) + 1  # a stride of 448, the last tile moved back inside
    assert fixed_per_axis ** 2 == 16


def test_a_part_of_a_plan_is_its_whole_tiles_and_the_area_they_cover():
    plan = TileGrid(0, 0, 1500, 1000, 512, 64)
    part = plan.part(0, 1, 2, 3)
    rows = plan.rows()
    assert part.rows() == [row[1:3] for row in rows[:2]] and len(part) == 4 and part.overlap == 64
    assert (part.x0, part.y0) == (rows[0][1].x, 0)
    assert (part.x1, part.y1) == (rows[0][2].x + rows[0][2].width, rows[1][0].y + rows[1][0].height)
    with pytest.raises(ValueError, match="not in the plan"):
        plan.part(0, 0, 1, 9)
