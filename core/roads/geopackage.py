"""The road network as a GeoPackage: layers `roads` (LineString) and `junctions` (Point), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import shapely

from core.atomic import atomic_output
from core.errors import OutputError
from core.inputs.vectors import pyogrio_raw
from core.roads.network import RoadNetwork

ROAD_FIELDS = ("id", "length_m", "mean_probability", "width_m", "start_junction", "end_junction")
JUNCTION_FIELDS = ("id", "degree")


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
        _check_whole(tmp, {"roads": len(network.roads), "junctions": len(network.junctions)})
    return path


def _check_whole(path: Path, counts: dict[str, int]) -> None:
    """GDAL finishes a GeoPackage without the spatial index of a layer when the disk fills (or a file size limit
    is reached) at the wrong moment, and says nothing: count each layer's features and index entries."""
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for layer, expected in counts.items():
            features = connection.execute(f'SELECT count(*) FROM "{layer}"').fetchone()[0]
            indexed = connection.execute(f'SELECT count(*) FROM "rtree_{layer}_geom"').fetchone()[0] \
                if expected else 0
            if (features, indexed) != (expected, expected):
                raise OutputError(f"the GeoPackage was written incomplete: layer {layer} holds {features} of "
                                  f"{expected} features and {indexed} spatial index entries")
    except sqlite3.Error as exc:
        raise OutputError(f"the GeoPackage was written incomplete: {exc}") from None
    finally:
        connection.close()
