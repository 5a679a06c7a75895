"""Road metrics: pixels (IoU, F1, the mIoU trap), relaxed pixels (Mnih 2013), and graphs (APLS, completeness,
correctness, quality).

Everything a paper or a user's spreadsheet compares is here with its definition written down, so a figure in
this project can be checked by hand.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import shapely
import shapely.ops
from scipy import ndimage

from core.options import EvaluateOptions

# ------------------------------------------------------------------------------------------------- pixels


def pixel_metrics(predicted: np.ndarray, reference: np.ndarray, ignore: np.ndarray | None = None) -> dict:
    """Road IoU, precision, recall, F1 and two-class mIoU of boolean road masks, with pixels in `ignore` left out.

    `miou_all_background` is what predicting background everywhere scores on the same reference: on
    Massachusetts Roads about 0.46-0.49, which is why a two-class mIoU of 0.72 means a road IoU near 0.47.
    """
    keep = np.ones(reference.shape, bool) if ignore is None else ~ignore
    p, r = predicted[keep].astype(bool), reference[keep].astype(bool)
    tp = int(np.count_nonzero(p & r))
    fp = int(np.count_nonzero(p & ~r))
    fn = int(np.count_nonzero(~p & r))
    return pixel_metrics_from_counts(tp, fp, fn, int(p.size - tp - fp - fn))


def pixel_metrics_from_counts(tp: int, fp: int, fn: int, tn: int) -> dict:
    """`pixel_metrics` of a confusion matrix, so tiles can be pooled."""

    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    total = tp + fp + fn + tn
    road_iou = ratio(tp, tp + fp + fn)
    background_iou = ratio(tn, tn + fp + fn)
    return {
        "road_iou": road_iou,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "background_iou": background_iou,
        "miou": (road_iou + background_iou) / 2,
        "miou_all_background": ratio(tn + fp, total) / 2,
        "pixels": total,
        "road_fraction": ratio(tp + fn, total),
    }


def relaxed_counts(predicted: np.ndarray, reference: np.ndarray, rho: float = 3.0,
                   ignore: np.ndarray | None = None) -> np.ndarray:
    """[predicted road pixels near a reference road, predicted road pixels, reference road pixels near a predicted
    road, reference road pixels]: the counts relaxed precision and recall are made of, so tiles can be pooled."""
    keep = np.ones(reference.shape, bool) if ignore is None else ~ignore
    predicted, reference = predicted.astype(bool), reference.astype(bool)
    near_reference = ndimage.distance_transform_edt(~reference) <= rho
    near_predicted = ndimage.distance_transform_edt(~predicted) <= rho
    p, r = predicted & keep, reference & keep
    return np.array([np.count_nonzero(p & near_reference), np.count_nonzero(p),
                     np.count_nonzero(r & near_predicted), np.count_nonzero(r)], np.int64)


def relaxed_from_counts(counts: np.ndarray, rho: float = 3.0) -> dict:
    matched_p, predicted, matched_r, reference = (int(v) for v in counts)
    precision = matched_p / predicted if predicted else float("nan")
    recall = matched_r / reference if reference else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"relaxed_precision": precision, "relaxed_recall": recall, "relaxed_f1": f1, "rho_px": rho}


def relaxed_metrics(predicted: np.ndarray, reference: np.ndarray, rho: float = 3.0,
                    ignore: np.ndarray | None = None) -> dict:
    """Relaxed precision and recall (Mnih 2013): a predicted road pixel is correct if a reference road pixel lies
    within `rho` pixels of it, and a reference pixel is found if a predicted one lies within `rho` of it."""
    return relaxed_from_counts(relaxed_counts(predicted, reference, rho, ignore), rho)


# ------------------------------------------------------------------------------------------------- graphs


@dataclass(frozen=True)
class AplsParams:
    """The SpaceNet defaults: control nodes every 50 m, snapping within 4 m, routes shorter than 10 m ignored."""

    control_spacing_m: float = 50.0
    snap_m: float = 4.0
    min_path_m: float = 10.0


def _key(point) -> tuple[float, float]:
    return (round(point[0], 6), round(point[1], 6))


def road_graph(lines: list[shapely.LineString], control_spacing_m: float) -> nx.Graph:
    """Nodes at line ends and every `control_spacing_m` along each line; edges carry length and geometry.
    Coordinates must be metres (a projected CRS)."""
    graph = nx.Graph()
    for line in lines:
        if line.length == 0:
            continue
        stations = list(np.arange(0.0, line.length, control_spacing_m)) + [line.length]
        if len(stations) > 2 and stations[-1] - stations[-2] < 1e-6:
            stations.pop(-2)
        points = [line.interpolate(d) for d in stations]
        for (a, b), (da, db) in zip(zip(points[:-1], points[1:], strict=True),
                                    zip(stations[:-1], stations[1:], strict=True), strict=True):
            piece = shapely.ops.substring(line, da, db)
            ka, kb = _key(a.coords[0]), _key(b.coords[0])
            if ka == kb:
                continue
            for key in (ka, kb):
                graph.add_node(key, point=shapely.Point(key))
            if not graph.has_edge(ka, kb) or graph.edges[ka, kb]["length"] > piece.length:
                graph.add_edge(ka, kb, length=piece.length, geometry=piece)
    return graph


def _insert_point(graph: nx.Graph, point: shapely.Point, snap_m: float):
    """The node of `graph` at the projection of `point` onto its nearest edge (added if needed), or None when no
    edge is within `snap_m`. A linear scan: graphs of a tile have hundreds of edges."""
    best, best_distance = None, snap_m
    for u, v, data in graph.edges(data=True):
        distance = data["geometry"].distance(point)
        if distance <= best_distance:
            best, best_distance = (u, v), distance
    return None if best is None else _split(graph, *best, point)


def _split(graph: nx.Graph, u, v, point: shapely.Point):
    geometry = graph.edges[u, v]["geometry"]
    along = geometry.project(point)
    start, end = geometry.coords[0], geometry.coords[-1]
    if along < 1e-6:
        return _key(start) if _key(start) in graph else u
    if geometry.length - along < 1e-6:
        return _key(end) if _key(end) in graph else v
    on_line = geometry.interpolate(along)
    key = _key(on_line.coords[0])
    if key in graph:
        return key
    first, second = shapely.ops.substring(geometry, 0, along), shapely.ops.substring(geometry, along, geometry.length)
    a, b = (_key(start), _key(end))
    graph.remove_edge(u, v)
    graph.add_node(key, point=on_line)
    graph.add_edge(a if a in graph else u, key, length=first.length, geometry=first)
    graph.add_edge(key, b if b in graph else v, length=second.length, geometry=second)
    return key


def apls_one_way(reference: nx.Graph, proposal: nx.Graph, params: AplsParams = AplsParams()) -> float:
    """1 - mean over routes of min(1, |L_ref - L_prop| / L_ref), routes between the reference's nodes that
    are at least `min_path_m` long; a route whose end does not snap onto the proposal, or has no path there,
    counts 1."""
    proposal = proposal.copy()
    mapped = {node: _insert_point(proposal, data["point"], params.snap_m) for node, data in reference.nodes(data=True)}
    terms = []
    for source, lengths in nx.all_pairs_dijkstra_path_length(reference, weight="length"):
        target_source = mapped[source]
        proposal_lengths = (nx.single_source_dijkstra_path_length(proposal, target_source, weight="length")
                            if target_source is not None else {})
        for target, length in lengths.items():
            if target == source or length < params.min_path_m:
                continue
            target_mapped = mapped[target]
            if target_mapped is None or target_mapped not in proposal_lengths:
                terms.append(1.0)
                continue
            terms.append(min(1.0, abs(length - proposal_lengths[target_mapped]) / length))
    return 1.0 - float(np.mean(terms)) if terms else float("nan")


def apls(reference_lines: list[shapely.LineString], proposal_lines: list[shapely.LineString],
         params: AplsParams = AplsParams()) -> dict:
    """Symmetric APLS: the harmonic mean of reference->proposal and proposal->reference, as SpaceNet scores it."""
    reference = road_graph(reference_lines, params.control_spacing_m)
    proposal = road_graph(proposal_lines, params.control_spacing_m)
    if proposal.number_of_edges() == 0 or reference.number_of_edges() == 0:
        return {"apls": 0.0, "apls_gt_to_prop": 0.0, "apls_prop_to_gt": 0.0}
    forward = apls_one_way(reference, proposal, params)
    backward = apls_one_way(proposal, reference, params)
    both = 2 * forward * backward / (forward + backward) if forward + backward > 0 else 0.0
    return {"apls": both, "apls_gt_to_prop": forward, "apls_prop_to_gt": backward,
            "apls_control_spacing_m": params.control_spacing_m, "apls_snap_m": params.snap_m}


def length_metrics(reference_lines: list[shapely.LineString], proposal_lines: list[shapely.LineString],
                   buffer_m: float = 3.0) -> dict:
    """Completeness, correctness and quality (Wiedemann 1998) by length within `buffer_m` of the other network."""
    reference = shapely.union_all(reference_lines) if reference_lines else shapely.GeometryCollection()
    proposal = shapely.union_all(proposal_lines) if proposal_lines else shapely.GeometryCollection()
    ref_length, prop_length = reference.length, proposal.length
    matched_ref = reference.intersection(proposal.buffer(buffer_m)).length if prop_length else 0.0
    matched_prop = proposal.intersection(reference.buffer(buffer_m)).length if ref_length else 0.0
    completeness = matched_ref / ref_length if ref_length else float("nan")
    correctness = matched_prop / prop_length if prop_length else float("nan")
    denominator = prop_length + (ref_length - matched_ref)
    return {"completeness": completeness, "correctness": correctness,
            "quality": matched_prop / denominator if denominator else float("nan"),
            "reference_km": ref_length / 1000, "proposal_km": prop_length / 1000, "buffer_m": buffer_m}


def pooled_length_metrics(rows: list[dict]) -> dict:
    """`length_metrics` of several rasters pooled by length (as one network would be scored), not averaged."""
    reference_km = sum(r["reference_km"] for r in rows)
    proposal_km = sum(r["proposal_km"] for r in rows)
    matched_reference = sum(r["completeness"] * r["reference_km"] for r in rows if r["reference_km"])
    matched_proposal = sum(r["correctness"] * r["proposal_km"] for r in rows if r["proposal_km"])
    denominator = proposal_km + reference_km - matched_reference
    return {"completeness": matched_reference / reference_km if reference_km else float("nan"),
            "correctness": matched_proposal / proposal_km if proposal_km else float("nan"),
            "quality": matched_proposal / denominator if denominator else float("nan"),
            "reference_km": reference_km, "proposal_km": proposal_km}


# Which way lines are measured, recorded beside every reference-line figure so that figures measured apart are not
# compared. 1: lines in degrees scaled to metres each set in its own frame (up to tens of metres of false offset
# between a proposal and its reference; wrong for geographic CRSs); 2: one frame for both (`to_local_metres`).
LINE_METRIC_VERSION = 2


def equirectangular_frame(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin, metres per degree along x and y) of the frame centred on the mean of [N, 2] longitude/latitude
    coordinates: (xy - origin) * scale is metres."""
    from core.inputs.raster import metres_per_degree

    origin = coords.mean(axis=0)
    return origin, np.array(metres_per_degree(float(origin[1])))


def to_local_metres(*line_sets: list[shapely.LineString]) -> tuple[list[shapely.LineString], ...]:
    """Degrees -> metres in one equirectangular frame for all the sets, centred on their common mean (exact for a
    tile). Why one centred frame: scaling raw longitudes amplifies any difference of scale, and two sets each scaled
    at its own mean latitude lay 26 m apart east-west at Las Vegas for every 0.0002 degrees (22 m) between those
    means, enough to miss every match within a 5 m buffer."""
    coords = [c for lines in line_sets for line in lines for c in line.coords]
    if not coords:
        return line_sets
    origin, scale = equirectangular_frame(np.asarray(coords, dtype=float)[:, :2])
    return tuple([shapely.transform(line, lambda xy: (xy - origin) * scale) for line in lines] for lines in line_sets)


def format_table(results: dict) -> str:
    width = max(len(k) for k in results)
    rows = []
    for key, value in results.items():
        shown = f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else str(value)
        rows.append(f"{key:<{width}}  {shown}")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------- from files

VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml"}


def read_lines(path, target_crs_wkt: str | None = None, layer: str | None = None,
               notes: list[str] | None = None) -> tuple[list, str | None]:
    """Line geometries of a vector file (multi-lines split), reprojected to `target_crs_wkt` when given; a
    GeoPackage's `roads` layer where it has one. Features without a usable geometry are skipped (`notes` hears
    how many)."""
    from core.inputs.raster import RasterError
    from core.inputs.vectors import layer_names, read_geometries

    if layer is None and str(path).lower().endswith(".gpkg"):
        names = layer_names(path)
        if not names:
            raise RasterError(f"{path} is a GeoPackage without any layer; give the GeoPackage that holds the road "
                              f"lines")
        layer = "roads" if "roads" in names else names[0]
    try:
        shapes, crs = read_geometries(path, target_crs_wkt, layer, notes)
    except ValueError as exc:
        raise RasterError(f"{path}: {exc}") from None
    lines, others = [], Counter()
    for part in shapely.get_parts(shapely.get_parts(shapely.get_parts(list(shapes)))):  # collections of multi-parts
        if part.geom_type == "LineString":
            lines.append(part)
        elif not part.is_empty:
            others[part.geom_type] += 1
    if others:
        kinds = ", ".join(f"{count} {kind}{'s' if count > 1 else ''}" for kind, count in others.most_common())
        if not lines:  # a file of points or polygons read as no road at all would score 0 with exit 0
            raise RasterError(f"{path} holds {kinds} and no lines; give road centrelines (LineStrings); road "
                              f"surfaces drawn as polygons can be burnt into a mask raster (gdal_rasterize) and given "
                              f"as one")
        if notes is not None:
            notes.append(f"{Path(path).name}: {kinds} skipped (not lines)")
    return lines, crs


def _area_polygons(path, crs_wkt: str | None) -> list:
    from core.inputs.raster import RasterError
    from core.inputs.vectors import read_polygons

    try:
        return read_polygons(path, crs_wkt)
    except ValueError as exc:
        raise RasterError(f"--area {path}: {exc}") from None


def reference_in_area(truth: list[shapely.LineString], crs: str | None, area, reference, lines_file):
    """(the reference lines inside the polygons of the vector file `area`, those polygons in `crs`): refused with
    one line where the lines have no CRS (where the area lies on them is unknown) or the area holds none of them."""
    from core.inputs.raster import RasterError

    if crs is None:
        raise RasterError(f"--area needs lines with a CRS; {lines_file} has none, so where the area lies on them is "
                          f"unknown")
    inside = shapely.union_all(_area_polygons(area, crs))
    clipped = lines_inside(truth, inside)
    if truth and not clipped:
        raise RasterError(f"--area {area}: none of the reference lines lies inside it; draw it where "
                          f"{Path(reference).name} has roads")
    return clipped, inside


def check_reference_area(reference, area) -> None:
    """Refuses, before any extraction, an `area` that `evaluate_files` would refuse for this reference."""
    truth, crs = read_lines(reference)
    reference_in_area(truth, crs, area, reference, reference)


def lines_inside(lines: list[shapely.LineString], area) -> list[shapely.LineString]:
    """The parts of `lines` inside the polygons `area` (lines that cross its edge are cut there)."""
    inside = []
    for line in lines:
        part = line.intersection(area)
        # A cut line is a LineString, a MultiLineString, or a collection with points where it touches the edge.
        inside += [g for g in shapely.get_parts(shapely.get_parts(part)) if g.geom_type == "LineString" and g.length]
    return inside


def _same_grid(predicted, crs, transform, reference, ref_crs, ref_transform) -> None:
    """Two rasters of one size can still lie apart (another CRS, 100 km away, 2 m instead of 1 m pixels): refuse
    them, or the IoU compares unrelated pixels. Rasters without georeferencing are compared as pixel arrays."""
    from core.inputs.raster import RasterError

    if (crs is None) != (ref_crs is None):
        missing = predicted if crs is None else reference
        raise RasterError(f"{missing} has no georeferencing and the other raster has; give both on the same grid")
    if crs is None:
        return
    if crs != ref_crs:
        raise RasterError(f"{reference} is in {ref_crs.to_string() or 'another CRS'} and {predicted} in "
                          f"{crs.to_string() or 'another CRS'}; warp the reference onto the prediction's grid "
                          f"(gdalwarp -t_srs ... -te ... -tr ...)")
    pixel = max(abs(transform.a), abs(transform.e))
    if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=pixel / 100)
               for a, b in zip(transform[:6], ref_transform[:6], strict=True)):
        raise RasterError(f"{reference} and {predicted} are the same size but not on the same pixels (origin "
                          f"{ref_transform.c:g},{ref_transform.f:g} at {abs(ref_transform.a):g} vs {transform.c:g},"
                          f"{transform.f:g} at {abs(transform.a):g}); warp the reference onto the prediction's grid")


def _road_raster(ds, path):
    """How a prediction or reference raster reads as roads (`core.inputs.road_raster`), refusing the one
    convention that would score without a word of warning on the wrong pixels: NoData 0, which hides every pixel
    without a road, so road IoU and precision are measured on the roads alone."""
    from core.inputs.raster import RasterError
    from core.inputs.road_raster import background_is_nodata, road_values

    values = road_values(ds, path)
    if background_is_nodata(ds):
        raise RasterError(f"{path} has NoData 0, which is also its background value: every pixel without a road "
                          f"would be left out of the score; clear it with: gdal_edit.py -unsetnodata {path}")
    return values


def evaluate_files(predicted, reference, options: EvaluateOptions | None = None, *, ignore=None, area=None) -> dict:
    """Vectors are compared as graphs (APLS, completeness/correctness/quality); rasters as pixels (IoU, F1,
    relaxed precision/recall). A raster prediction against reference lines rasterises the lines `road_width_m`
    wide on the prediction's grid; two rasters must lie on the same grid (size, CRS, pixels).

    `area`: polygons (a vector file) where the reference is complete; both sides are scored inside them only.
    Without it a reference that covers part of the imagery counts every road found elsewhere as wrong."""
    from pathlib import Path

    import rasterio
    from rasterio.crs import CRS

    from core.inputs.raster import RasterError

    options = options or EvaluateOptions()
    rho, buffer_m, road_width_m = options.rho, options.buffer_m, options.road_width_m
    apls_params = AplsParams(options.control_spacing_m, options.snap_m)

    predicted, reference = Path(predicted), Path(reference)
    for path in (predicted, reference):
        if not path.exists():
            raise RasterError(f"{path}: no such file; check the path")
    vector_pred = predicted.suffix.lower() in VECTOR_SUFFIXES
    vector_ref = reference.suffix.lower() in VECTOR_SUFFIXES
    if vector_pred and not vector_ref:
        raise RasterError("a vector prediction needs a vector reference (road centrelines); give lines, or "
                          "evaluate the probability or mask raster against the reference raster")
    if vector_pred:
        notes: list[str] = []
        proposal, crs = read_lines(predicted, notes=notes)
        truth, _ = read_lines(reference, crs, notes=notes)
        if area is not None:
            truth, inside = reference_in_area(truth, crs, area, reference, predicted)
            proposal = lines_inside(proposal, inside)
        geographic = bool(crs) and CRS.from_wkt(crs).is_geographic
        if geographic:
            proposal, truth = to_local_metres(proposal, truth)
        return {"kind": "graph", **apls(truth, proposal, apls_params), **length_metrics(truth, proposal, buffer_m),
                **({"skipped": "; ".join(notes)} if notes else {})}
    with rasterio.open(predicted) as ds:
        prediction = _road_raster(ds, predicted)
        values = ds.read(1)
        valid = ds.read_masks(1) > 0
        predicted_roads = prediction.roads(values) & valid
        shape, transform, crs = values.shape, ds.transform, ds.crs
        gsd = abs(transform.a)
    if vector_ref:
        from rasterio.features import rasterize

        lines, _ = read_lines(reference, crs.to_wkt() if crs else None)
        width = road_width_m / 2
        if crs is not None and crs.is_geographic:  # projected units are taken as metres
            from core.inputs.raster import metres_per_degree

            width /= metres_per_degree(transform.f)[1]
        truth = rasterize([g.buffer(width) for g in lines], out_shape=shape, transform=transform).astype(bool) \
            if lines else np.zeros(shape, bool)
        reference_valid = np.ones(shape, bool)
    else:
        with rasterio.open(reference) as ds:
            if (ds.height, ds.width) != shape:
                raise RasterError(f"{reference} is {ds.width}x{ds.height} pixels and {predicted} "
                                  f"{shape[1]}x{shape[0]}; give rasters on the same grid")
            labels = _road_raster(ds, reference)
            _same_grid(predicted, crs, transform, reference, ds.crs, ds.transform)
            ref_values = ds.read(1)
            reference_valid = ds.read_masks(1) > 0
            truth = labels.roads(ref_values) & reference_valid
    ignored = ~(valid & reference_valid)
    if area is not None:
        from rasterio.features import rasterize

        if crs is None:
            raise RasterError(f"--area needs a georeferenced prediction; {predicted} has no CRS, so where the area "
                              f"lies on it is unknown")
        polygons = _area_polygons(area, crs.to_wkt())
        ignored |= ~rasterize(polygons, out_shape=shape, transform=transform).astype(bool)
    if ignore is not None:
        with rasterio.open(ignore) as ds:
            if (ds.height, ds.width) != shape:
                raise RasterError(f"the ignore raster {ignore} is {ds.width}x{ds.height} pixels and {predicted} "
                                  f"{shape[1]}x{shape[0]}; give it on the prediction's grid")
            if ds.crs is not None and crs is not None:
                _same_grid(predicted, crs, transform, ignore, ds.crs, ds.transform)
            ignored |= ds.read(1) > 0
    results = {"kind": "pixels", **pixel_metrics(predicted_roads, truth, ignored),
               **relaxed_metrics(predicted_roads, truth, rho, ignored)}
    results["gsd_m"] = gsd if crs is not None and not crs.is_geographic else None
    if prediction.note or not vector_ref and labels.note:
        results["note"] = "; ".join(n for n in (prediction.note, None if vector_ref else labels.note) if n)
    return results
