"""The road network as a GeoPackage: layers `roads` (LineString) and `junctions` (Point), written atomically."""

from __future__ import annotations

import json
import warnings
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
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # Without a CRS (a PNG read with --gsd) pyogrio warns with its source lines; the run's own note says the
        # lines are in metres from the image's top-left corner.
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
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


REVIEW_STATES = ("new", "accepted", "rejected")  # the `review` field of `missing` and `unconfirmed`


def write_map_update(path: str | Path, comparison, crs_wkt: str | None, metadata: dict) -> Path:
    """`update-map`'s GeoPackage: layers `missing`, `unconfirmed` and `matched` (LineString) with their fields and
    the comparison's summary in the metadata, written to a temporary file and renamed over `path` when whole."""
    from core.roads.compare import rank

    write = pyogrio_raw().write
    path = Path(path)

    def nanfloat(values) -> np.ndarray:
        return np.array([float(v) for v in values], np.float64)

    missing, unconfirmed, matched = comparison.missing, comparison.unconfirmed, comparison.matched
    layers = [
        ("missing", missing, "extracted roads the layer lacks: review them (new / accepted / rejected)", {
            "id": np.arange(1, len(missing) + 1, dtype=np.int64),
            "length_m": nanfloat(p.length_m for p in missing),
            "mean_probability": nanfloat(p.mean_probability for p in missing),
            "rank": np.array(rank(missing), np.int64),
            "review": np.array(["new"] * len(missing), dtype=object)}),
        ("unconfirmed", unconfirmed, "roads of the layer the imagery does not support (inside its valid area)", {
            "id": np.arange(1, len(unconfirmed) + 1, dtype=np.int64),
            "length_m": nanfloat(p.length_m for p in unconfirmed),
            "max_probability_near": nanfloat(p.mean_probability for p in unconfirmed),
            "layer_feature": np.array([p.source for p in unconfirmed], np.int64),
            "review": np.array(["new"] * len(unconfirmed), dtype=object)}),
        ("matched", matched, "roads found on both, with the layer's offset from the extracted line", {
            "id": np.arange(1, len(matched) + 1, dtype=np.int64),
            "length_m": nanfloat(p.length_m for p in matched),
            "offset_mean_m": nanfloat(p.offsets_m.mean() if p.offsets_m.size else np.nan for p in matched),
            "offset_p90_m": nanfloat(np.percentile(p.offsets_m, 90) if p.offsets_m.size else np.nan
                                     for p in matched),
            "layer_feature": np.array([p.source for p in matched], np.int64)}),
    ]
    described = {key: json.dumps(value) if not isinstance(value, str) else value for key, value in metadata.items()}
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # Without a CRS (a PNG read with --gsd) pyogrio warns with its source lines; the run's own note says the
        # lines are in metres from the image's top-left corner.
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        tmp.unlink()  # GDAL creates the GeoPackage itself
        for index, (name, pieces, description, columns) in enumerate(layers):
            geometry = shapely.to_wkb(np.array([p.line for p in pieces], dtype=object)) if pieces else \
                np.array([], dtype=object)
            write(tmp, geometry=geometry, field_data=list(columns.values()), fields=list(columns), crs=crs_wkt,
                  geometry_type="LineString", driver="GPKG", layer=name, layer_metadata={"DESCRIPTION": description},
                  **({"dataset_metadata": described, "dataset_options": {"VERSION": "1.3"}} if index == 0 else
                     {"append": False}))
        _check_whole(tmp, {name: len(pieces) for name, pieces, _, _ in layers})
    return path
