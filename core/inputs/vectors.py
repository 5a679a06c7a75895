"""Vector files the engine reads (areas of interest, reference road lines, training labels): any OGR format, any
CRS, reprojected on reading."""

from __future__ import annotations

import warnings
from pathlib import Path

import shapely


def _pyogrio():
    """pyogrio, imported without its noise: it imports pyproj where one is installed, and Debian's (beside QGIS)
    then finds rasterio's PROJ data instead of its own and warns. Nothing here uses pyproj. Every use of pyogrio
    goes through here, so whichever comes first imports it quietly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Valid PROJ data directory not found")
        import pyogrio
        from pyogrio import raw
    # GDAL's GeoPackage driver, opening a file with dataset metadata (the project's own outputs), writes a
    # FILE.gpkg.aux.xml copy of it beside the file on close: reading must leave the user's folders as they were.
    pyogrio.set_gdal_config_options({"GDAL_PAM_ENABLED": "NO"})
    return pyogrio, raw


def pyogrio_raw():
    """pyogrio's array-level API."""
    return _pyogrio()[1]


def layer_names(path) -> list[str]:
    """The layers of a vector file; [] for a GeoPackage that holds none (OGR refuses to open one as vector data,
    saying "not recognized as being in a supported file format", although it is a valid GeoPackage)."""
    try:
        return [name for name, _ in _pyogrio()[0].list_layers(path)]
    except Exception:
        if _is_geopackage(path):
            return []
        raise


def _is_geopackage(path) -> bool:
    """An SQLite file with GeoPackage's tables (its header and gpkg_contents)."""
    import sqlite3

    try:
        with open(path, "rb") as fh:
            if not fh.read(16).startswith(b"SQLite format 3"):
                return False
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return bool(db.execute("SELECT 1 FROM sqlite_master WHERE name = 'gpkg_contents'").fetchone())
    except (OSError, sqlite3.Error):
        return False


def _read_raw(path, layer: str | None = None):
    """(OGR's metadata, WKB geometries) of a vector file; ValueError with OGR's reason for one it cannot read."""
    raw = pyogrio_raw()
    try:
        meta, _, geometries, _ = raw.read(path, layer=layer, read_geometry=True, columns=[])
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ... for foreign files
        reason = str(exc).splitlines()[0].split("; It might help")[0].rstrip(". ")  # OGR's driver-prefix advice
        raise ValueError(f"not a vector file OGR can read ({reason}); give a GeoPackage, shapefile or GeoJSON") \
            from None
    return meta, geometries


def _reprojected(shapes: list, source, target) -> list:
    """Geometries from the rasterio CRS `source` to `target`; ValueError where PROJ cannot convert them."""
    from rasterio.warp import transform_geom

    try:
        return [shapely.geometry.shape(transform_geom(source, target, shapely.geometry.mapping(g))) for g in shapes]
    except Exception as exc:  # noqa: BLE001 - PROJ's errors ("utm: Invalid latitude") come as several types
        raise ValueError(f"its geometries cannot be converted from its CRS ({source.to_string()}) to the "
                         f"raster's ({exc}); the file's CRS is probably wrong - check it in QGIS") from None


def read_geometries(path, target_crs_wkt: str | None = None, layer: str | None = None,
                    notes: list[str] | None = None) -> tuple[list, str | None]:
    """Non-empty geometries of a vector file (any OGR format) and its CRS as WKT, reprojected to `target_crs_wkt`
    when that differs. Raises ValueError with OGR's reason for a file it cannot read. Features whose geometry
    cannot be used (none, a line of one vertex, a ring that does not close) are skipped, one among many must not
    sink a run; `notes` hears how many."""
    from rasterio.crs import CRS

    meta, geometries = _read_raw(path, layer)
    decoded = shapely.from_wkb(geometries, on_invalid="ignore") if geometries is not None else []
    shapes = [g for g in decoded if g is not None and not g.is_empty]
    broken = sum(1 for g in decoded if g is None)
    if broken and notes is not None:
        notes.append(f"{Path(path).name}: {broken} feature(s) without a usable geometry (none, a line of one "
                     f"vertex, an unclosed ring) skipped")
    crs = meta.get("crs")
    if target_crs_wkt and crs:
        source, target = CRS.from_user_input(crs), CRS.from_wkt(target_crs_wkt)
        if source != target:
            shapes = _reprojected(shapes, source, target)
        return shapes, target_crs_wkt if source != target else source.to_wkt()
    return shapes, CRS.from_user_input(crs).to_wkt() if crs else None


def read_polygons(path, target_crs_wkt: str | None = None) -> list:
    """The polygons of a vector file (an area of interest, an area where labels are complete), reprojected to
    `target_crs_wkt`. Raises ValueError naming the problem for a missing or unreadable file, polygons whose place is
    unknown (no CRS, where the target has one), or a file with lines or points only."""
    from pathlib import Path

    if not Path(path).exists():
        raise ValueError("no such file; check the path")
    shapes, crs = read_geometries(path, target_crs_wkt)
    if crs is None and target_crs_wkt:
        raise ValueError("it has no CRS, so where its polygons lie is unknown; assign the one they were drawn in "
                         "(QGIS: Layer > Set CRS of Layer, then save; or ogr2ogr -a_srs)")
    # A geometry collection (GeoJSON allows them) counts by its polygons; its lines and points mark no area.
    parts = [part for g in shapes for part in (shapely.get_parts(g) if g.geom_type == "GeometryCollection" else [g])]
    polygons = [g for g in parts if g.geom_type in ("Polygon", "MultiPolygon")]
    if not polygons:
        kinds = sorted({g.geom_type for g in shapes}) or ["no geometries"]
        raise ValueError(f"it has no polygons ({', '.join(kinds)}); draw the area as polygons")
    for number, polygon in enumerate(polygons, 1):
        # Refused, not repaired: a bow-tie made valid is two triangles, which is rarely the area that was meant.
        if shapely.make_valid(polygon).area == 0:
            raise ValueError(f"polygon {number} has no area (its corners lie on one line or point); redraw it")
        if not polygon.is_valid:
            reason = shapely.is_valid_reason(polygon)
            raise ValueError(f"polygon {number} is not a valid polygon ({reason}); fix it (QGIS: Processing > Fix "
                             f"geometries) or redraw it")
    return polygons


def read_road_layer(path, info) -> tuple[list, list[int], list[str]]:
    """An existing road layer (any OGR format and CRS, lines or multilines) on the raster described by `info`
    (`core.inputs.raster.RasterInfo`): (its lines in the raster's CRS, a multiline's parts apart; the index of the
    feature each line comes from; notes on what was skipped). Refused with one line
    (ValueError) where no line can be used: a missing or foreign file, no CRS where the raster has one, points or
    polygons only, nothing left after broken pieces, or lines that all lie beyond the raster."""
    from pathlib import Path

    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS

    if not Path(path).exists():
        raise ValueError(f"--roads {path}: no such file; give the road layer to compare (GeoPackage, shapefile, "
                         f"GeoJSON)")
    try:
        meta, geometries = _read_raw(path)
    except ValueError as exc:
        raise ValueError(f"--roads {path}: {exc}") from None
    shapes = shapely.from_wkb(geometries, on_invalid="ignore") if geometries is not None else []
    notes: list[str] = []
    lines, features, broken, kinds = [], [], 0, set()
    for index, geometry in enumerate(shapes):
        if geometry is None or geometry.is_empty:
            broken += 1
            continue
        kinds.add(geometry.geom_type)
        for part in shapely.get_parts(geometry):
            if part.geom_type != "LineString":
                continue
            coords = shapely.get_coordinates(part)
            if not np.isfinite(coords).all() or part.length == 0:
                broken += 1
                continue
            lines.append(part)
            features.append(index)
    if not lines:
        found = ", ".join(sorted(kinds)) or "no geometries"
        raise ValueError(f"--roads {path}: it holds no usable road lines ({found}"
                         f"{f'; {broken} broken' if broken else ''}); give a layer of lines or multilines")
    if broken:
        notes.append(f"{broken} broken or empty feature(s) of {path} skipped (no geometry, non-finite coordinates "
                     f"or zero length)")
    others = sorted(kinds - {"LineString", "MultiLineString"})
    if others:
        notes.append(f"{path}: features of kind {', '.join(others)} skipped (only lines are compared)")
    crs = meta.get("crs")
    if info.crs_wkt and not crs:
        raise ValueError(f"--roads {path}: it has no CRS, so where its roads lie on the imagery is unknown; assign "
                         f"the one they were drawn in (QGIS: Layer > Set CRS of Layer, then save; or ogr2ogr -a_srs)")
    if info.crs_wkt and crs:
        source, target = CRS.from_user_input(crs), CRS.from_wkt(info.crs_wkt)
        if source != target:
            try:
                lines = _reprojected(lines, source, target)
            except ValueError as exc:
                raise ValueError(f"--roads {path}: {exc}") from None
    if info.transform is not None:
        to_map = Affine.from_gdal(*info.transform)
        corners = np.array([to_map * (x, y) for x in (0, info.width) for y in (0, info.height)])
        extent = shapely.box(*corners.min(axis=0), *corners.max(axis=0))
        if not any(line.intersects(extent) for line in lines):
            bounds = shapely.total_bounds(lines)
            raise ValueError(f"--roads {path}: none of its {len(lines)} lines lies on the imagery (the lines span "
                             f"{_extent_text(bounds)}, the imagery {_extent_text(extent.bounds)} in its CRS); give "
                             f"the layer of this place, or check its CRS")
    return lines, features, notes


def _extent_text(bounds) -> str:
    return "{:.6g}, {:.6g} - {:.6g}, {:.6g}".format(*bounds)
