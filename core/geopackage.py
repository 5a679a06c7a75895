"""The road network as a GeoPackage: layers `roads` (LineString) and `junctions` (Point), written atomically."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import shapely

from .atomic import atomic_output
from .network import RoadNetwork

ROAD_FIELDS = ("id", "length_m", "mean_probability", "width_m", "start_junction", "end_junction")
JUNCTION_FIELDS = ("id", "degree")


def pyogrio_raw():
    """pyogrio's array-level API. pyogrio imports pyproj where one is installed; Debian's (beside QGIS) then finds
    rasterio's PROJ data instead of its own and warns. Nothing here uses pyproj, so that warning is noise."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Valid PROJ data directory not found")
        from pyogrio import raw
    return raw


def read_geometries(path, target_crs_wkt: str | None = None, layer: str | None = None) -> tuple[list, str | None]:
    """Non-empty geometries of a vector file (any OGR format) and its CRS as WKT, reprojected to `target_crs_wkt`
    when that differs. Raises ValueError with OGR's reason for a file it cannot read."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    raw = pyogrio_raw()
    try:
        meta, _, geometries, _ = raw.read(path, layer=layer, read_geometry=True, columns=[])
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ... for foreign files
        raise ValueError(str(exc).splitlines()[0]) from None
    shapes = [g for g in shapely.from_wkb(geometries) if g is not None and not g.is_empty] \
        if geometries is not None else []
    crs = meta.get("crs")
    if target_crs_wkt and crs:
        source, target = CRS.from_user_input(crs), CRS.from_wkt(target_crs_wkt)
        if source != target:
            shapes = [shapely.geometry.shape(transform_geom(source, target, shapely.geometry.mapping(g)))
                      for g in shapes]
        return shapes, target_crs_wkt if source != target else source.to_wkt()
    return shapes, CRS.from_user_input(crs).to_wkt() if crs else None


def _columns(rows: list[dict], names: tuple[str, ...]) -> list[np.ndarray]:
    columns = []
    for name in names:
        values = [row[name] for row in rows]
        integer = name == "id" or name.endswith("_junction") or name == "degree"
        columns.append(np.array(values, dtype=np.int64 if integer else np.float64))
    return columns


def write_road_network(path: str | Path, network: RoadNetwork, crs_wkt: str | None, metadata: dict) -> Path:
    """Both layers go into a temporary GeoPackage beside `path`, renamed over it when complete."""
    write = pyogrio_raw().write

    path = Path(path)
    described = {key: json.dumps(value) if not isinstance(value, str) else value for key, value in metadata.items()}
    with atomic_output(path) as tmp:
        tmp.unlink()  # GDAL creates the GeoPackage itself
        write(tmp, geometry=shapely.to_wkb(np.array(network.roads, dtype=object)) if network.roads else
              np.array([], dtype=object), field_data=_columns(network.road_attributes, ROAD_FIELDS),
              fields=list(ROAD_FIELDS), crs=crs_wkt, geometry_type="LineString", driver="GPKG", layer="roads",
              dataset_metadata=described, layer_metadata={"DESCRIPTION": "road centrelines between junctions"},
              # GeoPackage 1.3: what QGIS 3.22 (GDAL 3.6) reads without a warning; GDAL 3.10 would write 1.4.
              dataset_options={"VERSION": "1.3"})
        write(tmp, geometry=shapely.to_wkb(np.array(network.junctions, dtype=object)) if network.junctions else
              np.array([], dtype=object), field_data=_columns(network.junction_attributes, JUNCTION_FIELDS),
              fields=list(JUNCTION_FIELDS), crs=crs_wkt, geometry_type="Point", driver="GPKG", layer="junctions",
              layer_metadata={"DESCRIPTION": "road end points (degree 1) and junctions (degree 3 or more)"},
              append=False)
    return path
