"""The area to extract: a bounding box in any CRS, or polygons from a vector file, as a window of the raster."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.inputs.raster import RasterError, RasterInfo

if TYPE_CHECKING:
    from core.inputs.tiling import TilePart


@dataclass
class Area:
    """What to compute, in input pixels: a window and, optionally, polygons (in the raster's CRS) to clip to."""

    x0: float
    y0: float
    x1: float
    y1: float
    polygons: list = field(default_factory=list)  # shapely geometries in the raster's CRS
    # The tiles to run the network on, when the caller chooses them (else the plan fitted to the area): a region
    # block's part of the plan of the whole mosaic, so blocks compute exactly the tiles of one run.
    tiles: TilePart | None = None


def _to_window(info: RasterInfo, bounds: Sequence[float], what: str) -> Area:
    from rasterio.transform import Affine

    inverse = ~Affine.from_gdal(*info.transform)
    xmin, ymin, xmax, ymax = bounds
    corners = [inverse * (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]
    cols, rows = [c for c, _ in corners], [r for _, r in corners]
    x0, x1 = max(0.0, min(cols)), min(float(info.width), max(cols))
    y0, y1 = max(0.0, min(rows)), min(float(info.height), max(rows))
    if x1 <= x0 or y1 <= y0:
        raster = [Affine.from_gdal(*info.transform) * c for c in ((0, 0), (info.width, info.height))]
        raise RasterError(f"the {what} ({', '.join(f'{v:.6g}' for v in bounds)}) does not overlap the raster "
                          f"({raster[0][0]:.6g}, {raster[1][1]:.6g}, {raster[1][0]:.6g}, {raster[0][1]:.6g} in its "
                          f"CRS); check the coordinates and their CRS")
    return Area(math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1))


def area_from_bbox(info: RasterInfo, bbox: Sequence[float], bbox_crs: str | None = None) -> Area:
    """`bbox` = (xmin, ymin, xmax, ymax) in `bbox_crs` (any CRS rasterio understands; default: the raster's)."""
    if len(bbox) != 4 or not all(math.isfinite(v) for v in bbox) or bbox[0] >= bbox[2] or bbox[1] >= bbox[3]:
        raise RasterError(f"the bounding box needs four finite numbers xmin,ymin,xmax,ymax with xmin < xmax and "
                          f"ymin < ymax, not {','.join(str(v) for v in bbox)}")
    if info.transform is None:
        if bbox_crs:
            raise RasterError("--bbox-crs needs a georeferenced raster; this one has none (give --bbox in pixels)")
        x0, y0, x1, y1 = bbox
        return _to_window_pixels(info, (x0, y0, x1, y1))
    if bbox_crs:
        from rasterio.crs import CRS
        from rasterio.errors import CRSError
        from rasterio.warp import transform_bounds

        try:
            source_crs = CRS.from_user_input(bbox_crs)
        except CRSError:
            raise RasterError(f"the bounding box CRS {bbox_crs!r} is not a CRS; give e.g. EPSG:4326") from None
        _check_degrees(bbox, source_crs)
        try:
            bbox = transform_bounds(source_crs, CRS.from_wkt(info.crs_wkt), *bbox, densify_pts=21)
        except Exception as exc:  # noqa: BLE001 - PROJ's errors come as several types; each means the same here
            raise RasterError(f"the bounding box ({', '.join(f'{v:g}' for v in bbox)}) cannot be converted from "
                              f"{bbox_crs} to the raster's CRS ({exc}); check the coordinates and their CRS") from None
        if not all(math.isfinite(v) for v in bbox):
            raise RasterError(f"the bounding box lies outside where {bbox_crs} can be converted to the raster's CRS; "
                              f"check the coordinates and their CRS")
    else:
        from rasterio.crs import CRS

        _check_degrees(bbox, CRS.from_wkt(info.crs_wkt))
    return _to_window(info, bbox, "bounding box")


def _check_degrees(bbox: Sequence[float], crs) -> None:
    """Coordinates given in degrees must be degrees: UTM metres typed with EPSG:4326 are refused, not clipped."""
    if crs is not None and crs.is_geographic:
        xmin, ymin, xmax, ymax = bbox
        if not (-180 <= xmin and xmax <= 360 and -90 <= ymin and ymax <= 90):
            raise RasterError(f"the bounding box ({', '.join(f'{v:g}' for v in bbox)}) is in degrees "
                              f"({crs.to_string()}), but longitudes must lie within -180..360 and latitudes "
                              f"within -90..90; give the CRS the numbers are in (e.g. --bbox-crs EPSG:32611)")


def _to_window_pixels(info: RasterInfo, bbox: Sequence[float]) -> Area:
    x0, y0 = max(0, math.floor(bbox[0])), max(0, math.floor(bbox[1]))
    x1, y1 = min(info.width, math.ceil(bbox[2])), min(info.height, math.ceil(bbox[3]))
    if x1 <= x0 or y1 <= y0:
        raise RasterError(f"the bounding box {list(bbox)} (pixels) does not overlap the {info.width}x{info.height} "
                          f"raster")
    return Area(x0, y0, x1, y1)


def area_from_vector(info: RasterInfo, path: str | Path) -> Area:
    """Polygons of a vector file (any OGR format), reprojected to the raster's CRS; lines and points are refused."""
    import shapely

    from core.inputs.vectors import read_polygons

    path = Path(path)
    if info.transform is None:
        raise RasterError("--aoi needs a georeferenced raster; this one has none (use --bbox in pixels)")
    try:
        polygons = read_polygons(path, info.crs_wkt)
    except ValueError as exc:
        raise RasterError(f"--aoi {path}: {exc}") from None
    union = shapely.union_all(polygons)
    area = _to_window(info, union.bounds, f"area of interest in {path.name}")
    area.polygons = polygons
    return area
