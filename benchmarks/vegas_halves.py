"""The SpaceNet Las Vegas tile cut into two reference sets: the west half chooses, the east half tests.

    python benchmarks/vegas_halves.py --out vegas-halves [--column 650]
    python -m training evaluate MODEL --skip-tiles --precision fp32 --line-shifts 8 \
        --lines vegas-halves/west --lines vegas-halves/east

Writes `OUT/west/` and `OUT/east/`, each with links to the tile and its centrelines and a `vegas_img0_area.geojson`:
the tile's pixel columns left of `--column` (west) or from it on (east), in the tile's CRS. `evaluate --lines`
then scores each half on one extraction of the whole tile (the model sees the whole tile; only the reference lines
and the extracted lines inside the half count). The model card's "Choosing on half a foreign tile" cut at column 650
of 1300 (0.3 m pixels); this script is how that cut is made again.

Needs ../shared/data/spacenet (research data, not part of the project).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VEGAS = REPO.parent / "shared" / "data" / "spacenet"
NAME = "vegas_img0"


def half_polygon(transform, height: int, first_column: int, end_column: int) -> dict:
    """The GeoJSON polygon of the pixel columns [first_column, end_column) over the raster's full height."""
    corners = [(first_column, 0), (end_column, 0), (end_column, height), (first_column, height), (first_column, 0)]
    ring = [list(transform * corner) for corner in corners]
    return {"type": "Polygon", "coordinates": [ring]}


def refuse(message: str) -> int:
    print(f"vegas_halves: {message}", file=sys.stderr)
    return 2


def main() -> int:
    from core.atomic import atomic_output

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--column", type=int, default=650, help="first pixel column of the east half (default 650)")
    parser.add_argument("--spacenet", type=Path, default=VEGAS, help="folder with vegas_img0.tif and its roads")
    args = parser.parse_args()
    raster, roads = args.spacenet / f"{NAME}.tif", args.spacenet / f"{NAME}_roads.geojson"
    if not raster.exists() or not roads.exists():
        return refuse(f"{raster} or {roads} is missing: give --spacenet FOLDER with the SpaceNet Las Vegas tile")
    with rasterio.open(raster) as ds:
        width, height, transform, crs = ds.width, ds.height, ds.transform, ds.crs
    if not 0 < args.column < width:
        return refuse(f"--column {args.column}: give a column inside the tile's 1..{width - 1}")
    for half, (first, end) in {"west": (0, args.column), "east": (args.column, width)}.items():
        folder = args.out / half
        folder.mkdir(parents=True, exist_ok=True)
        for source in (raster, roads):
            link = folder / source.name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(source.resolve())
        area = {"type": "FeatureCollection",
                "crs": {"type": "name", "properties": {"name": crs.to_string()}},
                "features": [{"type": "Feature", "properties": {"half": half, "columns": [first, end]},
                              "geometry": half_polygon(transform, height, first, end)}]}
        with atomic_output(folder / f"{NAME}_area.geojson") as temporary:  # never a half-written area
            temporary.write_text(json.dumps(area))
        print(f"{folder}: columns {first}-{end - 1} of {width}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
