"""Road probability (or mask) -> a topological road network: centrelines between junctions, in the raster's CRS.

Per window: hysteresis threshold, fill small holes, close small gaps, skeletonize (scikit-image), trace the
skeleton into a graph (scipy), then clean the graph in metres: merge junction clusters, prune short spurs, drop
short isolated pieces, bridge gaps between facing end points, collapse small loops, merge chains. Windows overlap
by a margin wider than any of those operations reach; each window keeps only the lines inside its core, and the
pieces are joined across window borders with `shapely.line_merge`, so a road crossing a border is one feature.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import networkx as nx
import numpy as np
import shapely
from scipy.spatial import cKDTree
from skimage.morphology import skeletonize

from core.atomic import check_output_file
from core.errors import OutputError
from core.inputs.raster import metres_per_degree
from core.inputs.road_raster import RoadValues, road_values
from core.options import VectorizeOptions
from core.roads.geopackage import write_road_network
from core.roads.network import RoadNetwork

BORDER_PAD = 5


@dataclass
class VectorizeParams(VectorizeOptions):
    """The user's options (`core.options.VectorizeOptions`: defaults and checks live there) and the engine's own."""

    bridge_angle_deg: float = 30.0
    # Median probability along a gap join: a gap the network saw, however faintly (a join across nothing at all is
    # a guess). Shipped model, 6 validation tiles (benchmarks/vectorize_quality.py): APLS 0.390 and correctness
    # 0.741 at 0.05, against 0.384 and 0.713 with no check, and 0.378 and 0.745 at 0.10.
    bridge_evidence: float = 0.05
    loop_m: float = 15.0
    window: int = 2048
    margin: int = 128  # least pixels of context around each window; widened to what the clean-up reaches (reach_px)

    def reach_px(self, metre_px: float) -> int:
        """How far the graph clean-up looks, in pixels: a window needs that much context beyond its core to draw the
        network one window would. A gap join reaches `bridge_m`, and the piece it reaches must show enough of its
        length there not to be dropped as an isolated speck first (78 m: 520 px on a 0.15 m orthophoto)."""
        reach_m = self.bridge_m + max(self.min_length_m, self.spur_m, self.loop_m)
        return max(self.margin, math.ceil(reach_m / metre_px) + 2 * BORDER_PAD)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PixelGrid:
    """How pixels map to the map: GDAL geotransform, the pixel size in metres, whether the CRS is geographic."""

    transform: tuple[float, float, float, float, float, float]
    gsd_m: tuple[float, float]
    geographic: bool = False

    def to_map(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel centres: (col + 0.5, row + 0.5) through the geotransform."""
        x0, dx, rx, y0, ry, dy = self.transform
        c, r = cols + 0.5, rows + 0.5
        return x0 + c * dx + r * rx, y0 + c * ry + r * dy

    @property
    def metre_px(self) -> float:
        return (self.gsd_m[0] + self.gsd_m[1]) / 2


# ------------------------------------------------------------------------------------------ raster -> graph


def _components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components (OpenCV: several times faster than scipy.ndimage.label): count, labels, areas."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return count, labels, stats[:, cv2.CC_STAT_AREA]


def road_mask(probability: np.ndarray, params: VectorizeParams, metre_px: float) -> np.ndarray:
    """`probability` in 0..1 (a binary mask works too: 0/1). Hysteresis, small holes filled, small gaps closed."""
    low = probability >= params.low
    high = probability >= params.high
    if np.array_equal(low, high):
        mask = high  # a binary input: hysteresis changes nothing
    else:
        count, labels, _ = _components(low)
        seeded = np.zeros(count, bool)
        seeded[np.unique(labels[high])] = True
        seeded[0] = False
        mask = seeded[labels]
    holes = int(params.fill_holes_m2 / metre_px**2)
    if holes > 0:
        _, labels, areas = _components(~mask)
        small = areas <= holes
        small[0] = False  # label 0: the road pixels themselves
        # Background touching the window's edge is not a hole: it may be open ground beyond the edge. (A real
        # hole that touches the edge lies in the margin, which the window's core does not keep.)
        small[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = False
        mask = mask | small[labels]
    radius = int(round(params.close_gaps_m / metre_px / 2))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    return mask


_EIGHT = np.ones((3, 3), bool)


def skeleton_graph(skeleton: np.ndarray) -> nx.MultiGraph:
    """Nodes: end points and junctions, with 'rc' = (row, col). Edges: 'pts' = [n, 2] pixel path between them.

    Vectorised with scipy instead of skan: skan's numba functions compile for about 5 s in every new process
    (measured here), longer than vectorizing a 10,000 x 10,000 mask should take. Skeleton pixels with other than
    two neighbours are node pixels; touching node pixels form one node (the pixel clusters a skeleton leaves at a
    junction). The remaining pixels form chains, each a path between two nodes; a depth-first traversal from one
    end of every chain (scipy.sparse.csgraph) puts each chain's pixels in order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import depth_first_order

    graph = nx.MultiGraph()
    skeleton = skeleton.astype(bool)
    neighbours = cv2.filter2D(skeleton.astype(np.uint8), -1, _EIGHT.astype(np.uint8),
                              borderType=cv2.BORDER_CONSTANT).astype(np.int16) - 1
    node_pixels = skeleton & (neighbours != 2) & (neighbours > 0)
    chain_pixels = skeleton & (neighbours == 2)
    node_count, node_labels, areas = _components(node_pixels)
    node_count -= 1  # label 0 is the background
    if node_count:
        node_rows, node_cols = np.nonzero(node_pixels)
        label_of = node_labels[node_rows, node_cols]
        centre_rows = np.bincount(label_of, weights=node_rows, minlength=node_count + 1) / np.maximum(areas, 1)
        centre_cols = np.bincount(label_of, weights=node_cols, minlength=node_count + 1) / np.maximum(areas, 1)
        for label in range(1, node_count + 1):
            graph.add_node(label, rc=np.array([centre_rows[label], centre_cols[label]]))
    rows, cols = np.nonzero(chain_pixels)
    if len(rows) == 0:
        return graph
    height, width = skeleton.shape
    index = np.full(skeleton.shape, -1, np.int64)
    index[rows, cols] = np.arange(len(rows))
    # Chain-to-chain adjacency and, for each chain pixel, the node it touches (if any).
    sources, targets = [], []
    touching = np.zeros(len(rows), np.int64)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == 0 and dc == 0:
                continue
            r, c = rows + dr, cols + dc
            inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
            r, c, me = r[inside], c[inside], np.nonzero(inside)[0]
            other = index[r, c]
            chained = other >= 0
            sources.append(me[chained])
            targets.append(other[chained])
            label = node_labels[r, c]
            touching[me[label > 0]] = label[label > 0]
    sources, targets = np.concatenate(sources), np.concatenate(targets)
    chain_degree = np.bincount(sources, minlength=len(rows))
    # A virtual root (index n) linked to one end of every chain: one traversal orders all chains.
    root = len(rows)
    _, chain_labels, _ = _components(chain_pixels)
    component = chain_labels[rows, cols]
    ends = np.nonzero(chain_degree <= 1)[0]
    first_end = {}
    for pixel in ends:
        first_end.setdefault(component[pixel], pixel)
    starts = list(first_end.values())
    # Rings without any node: start anywhere on them.
    ringed = set(np.unique(component)) - set(first_end)
    for ring in ringed:
        starts.append(int(np.nonzero(component == ring)[0][0]))
    adjacency = coo_matrix((np.ones(len(sources) + len(starts)), (np.concatenate([sources, np.full(len(starts), root)]),
                                                                   np.concatenate([targets, starts]))),
                           shape=(root + 1, root + 1)).tocsr()
    order, _ = depth_first_order(adjacency, root, directed=True, return_predecessors=True)
    order = order[1:]  # drop the root
    boundaries = np.nonzero(np.isin(order, starts))[0]
    for begin, stop in zip(boundaries, list(boundaries[1:]) + [len(order)], strict=True):
        path = order[begin:stop]
        points = np.column_stack([rows[path], cols[path]]).astype(float)
        a, b = int(touching[path[0]]), int(touching[path[-1]])
        if component[path[0]] in ringed:
            a = b = -int(component[path[0]])  # a ring: one node of its own, a self-loop
            graph.add_node(a, rc=points[0])
            points = np.vstack([points, points[:1]])
        if a == 0 or b == 0:  # a chain end touching no node: only where the skeleton is cut by the window edge
            continue
        graph.add_edge(a, b, pts=np.vstack([graph.nodes[a]["rc"], points, graph.nodes[b]["rc"]]))
    return graph


def _length_px(points: np.ndarray) -> float:
    return float(np.hypot(*np.diff(points, axis=0).T).sum()) if len(points) > 1 else 0.0


def _oriented(graph: nx.MultiGraph, u, v, key) -> np.ndarray:
    """The edge's points from u to v."""
    points = graph.edges[u, v, key]["pts"]
    start = graph.nodes[u]["rc"]
    if np.hypot(*(points[0] - start)) <= np.hypot(*(points[-1] - start)):
        return points
    return points[::-1]


def merge_close_junctions(graph: nx.MultiGraph, distance_px: float) -> None:
    """Junction pixels a skeleton leaves side by side become one node at their centroid."""
    junctions = [n for n in graph if graph.degree(n) >= 3]
    if len(junctions) < 2:
        return
    tree = cKDTree([graph.nodes[n]["rc"] for n in junctions])
    clusters = nx.Graph()
    clusters.add_nodes_from(range(len(junctions)))
    clusters.add_edges_from(tree.query_pairs(distance_px))
    for component in nx.connected_components(clusters):
        if len(component) < 2:
            continue
        members = [junctions[i] for i in component]
        keep = members[0]
        centre = np.mean([graph.nodes[m]["rc"] for m in members], axis=0)
        for other in members[1:]:
            for _, neighbour, key in list(graph.edges(other, keys=True)):
                points = _oriented(graph, other, neighbour, key)
                graph.remove_edge(other, neighbour, key)
                if neighbour in members:
                    continue  # the short link inside the cluster disappears
                graph.add_edge(keep, neighbour, pts=np.vstack([centre, points]))
            graph.remove_node(other)
        graph.nodes[keep]["rc"] = centre
        for _, neighbour, key in list(graph.edges(keep, keys=True)):
            if neighbour in members[1:]:
                continue
            points = _oriented(graph, keep, neighbour, key)
            graph.edges[keep, neighbour, key]["pts"] = np.vstack([centre, points[1:]]) if neighbour != keep else points


def prune_spurs(graph: nx.MultiGraph, spur_px: float) -> None:
    """Short dead ends hanging off a junction (skeleton whiskers), removed until none is left."""
    changed = True
    while changed:
        changed = False
        for node in [n for n in graph if graph.degree(n) == 1]:
            if node not in graph or graph.degree(node) != 1:
                continue
            _, other, key, data = next(iter(graph.edges(node, keys=True, data=True)))
            if graph.degree(other) >= 3 and _length_px(data["pts"]) < spur_px:
                graph.remove_edge(node, other, key)
                graph.remove_node(node)
                changed = True


def component_lengths(graph: nx.MultiGraph) -> list[tuple[set, float]]:
    """Each connected piece of the network with its length in pixels."""
    return [(component, sum(_length_px(d["pts"]) for _, _, d in graph.subgraph(component).edges(data=True)))
            for component in nx.connected_components(graph)]


def remove_small_components(graph: nx.MultiGraph, min_px: float) -> None:
    for component, length in component_lengths(graph):
        if length < min_px:
            graph.remove_nodes_from(component)


def collapse_small_loops(graph: nx.MultiGraph, loop_px: float) -> None:
    """Self-loops and pairs of parallel edges shorter than `loop_px` (skeleton bubbles at junctions)."""
    for u, v, key, data in list(graph.edges(keys=True, data=True)):
        if u == v and _length_px(data["pts"]) < loop_px:
            graph.remove_edge(u, v, key)
    for u, v in {(u, v) for u, v, _ in graph.edges(keys=True) if u != v}:
        if not graph.has_edge(u, v) or graph.number_of_edges(u, v) < 2:
            continue
        edges = sorted(graph[u][v].items(), key=lambda item: _length_px(item[1]["pts"]))
        if _length_px(edges[0][1]["pts"]) + _length_px(edges[1][1]["pts"]) < loop_px:
            for key, _ in edges[1:]:
                graph.remove_edge(u, v, key)


def _sample(raster: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Values of `raster` along the straight line from pixel (row, col) `a` to `b`, one sample per pixel."""
    line = a + np.linspace(0.0, 1.0, max(2, int(np.hypot(*(b - a))) + 1))[:, None] * (b - a)
    rows = np.clip(np.round(line[:, 0]).astype(int), 0, raster.shape[0] - 1)
    cols = np.clip(np.round(line[:, 1]).astype(int), 0, raster.shape[1] - 1)
    return raster[rows, cols]


def bridge_gaps(graph: nx.MultiGraph, gap_px: float, max_angle_deg: float, evidence: np.ndarray | None = None,
                min_evidence: float = 0.0, speck_px: float = 0.0) -> None:
    """Joins each dead end to the nearest road ahead of it: within `gap_px` and `max_angle_deg` of the direction
    the end points. The road met may be an end or a junction, or any point along a road, which then becomes a
    junction: a side street's line often stops a few metres short of the street it meets, beside no node of it
    (with joins to ends and junctions only, 41 of the validation tiles' 96 junctions were found; now 49:
    benchmarks/vectorize_quality.py). A join is not made where it would only short-cut a path the network already
    has nearby (a whisker beside its own junction), nor where the median probability along it (`evidence`, in the
    graph's pixel frame) is below `min_evidence`, nor from a piece shorter than `speck_px` into a road."""
    ends = [n for n in graph if graph.degree(n) == 1]
    if not ends:
        return
    edges = list(graph.edges(keys=True))
    edge_of = {}
    for i, (u, v, key) in enumerate(edges):
        edge_of[u, v, key] = edge_of[v, u, key] = i
        graph.edges[u, v, key]["length"] = _length_px(graph.edges[u, v, key]["pts"])
    # Each edge's pixel path from its first node to its last, with the distance along it.
    ordered = [(u, v) if u == v or np.hypot(*(graph.edges[u, v, k]["pts"][0] - graph.nodes[u]["rc"]))
               <= np.hypot(*(graph.edges[u, v, k]["pts"][0] - graph.nodes[v]["rc"])) else (v, u)
               for u, v, k in edges]
    paths = [graph.edges[e]["pts"] for e in edges]
    along = [np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(p, axis=0).T))]) for p in paths]
    owner = np.repeat(np.arange(len(edges)), [len(p) for p in paths])
    position = np.concatenate([np.arange(len(p)) for p in paths])
    tree = cKDTree(np.vstack(paths))
    at_node = np.concatenate([np.minimum(a, a[-1] - a) <= 2 for a in along])
    piece_length = {node: length for component, length in component_lengths(graph) for node in component}
    cos_limit = math.cos(math.radians(max_angle_deg))
    splits: dict[int, list[tuple[int, object]]] = {}  # edge -> [(index along its path, the end joining there)]
    joined: set[frozenset] = set()
    for end in ends:
        _, other, key = next(iter(graph.edges(end, keys=True)))
        tail = _oriented(graph, end, other, key)[:10]
        direction = tail[0] - tail[-1]
        if np.hypot(*direction) == 0:
            continue
        direction /= np.hypot(*direction)
        start = graph.nodes[end]["rc"]
        nearby = np.array([i for i in tree.query_ball_point(start, gap_px) if owner[i] != edge_of[end, other, key]],
                          int)
        if not len(nearby):
            continue
        offsets = tree.data[nearby] - start
        distances = np.hypot(offsets[:, 0], offsets[:, 1])
        ahead = (distances > 0) & (offsets @ direction >= cos_limit * distances)
        if piece_length[end] < speck_px:
            ahead &= at_node[nearby]  # a speck joins ends and junctions only: into a road it would stay a whisker
        if not ahead.any():
            continue
        best = nearby[np.argmin(np.where(ahead, distances, np.inf))]
        distance = float(np.hypot(*(tree.data[best] - start)))
        edge, at = int(owner[best]), int(position[best])
        first, last = ordered[edge]
        from_first, to_last = along[edge][at], along[edge][-1] - along[edge][at]
        reach = nx.single_source_dijkstra_path_length(graph, end, cutoff=4 * distance + 4,
                                                      weight=lambda a, b, d: min(e["length"] for e in d.values()))
        if min(reach.get(first, math.inf) + from_first, reach.get(last, math.inf) + to_last) <= 4 * distance + 4:
            continue
        if evidence is not None and np.median(_sample(evidence, start, tree.data[best])) < min_evidence:
            continue
        node = first if from_first <= 2 else last if to_last <= 2 else None  # within 2 px of a node: onto it
        if node is None:
            splits.setdefault(edge, []).append((at, end))
        elif node != end and frozenset((end, node)) not in joined:
            joined.add(frozenset((end, node)))
            graph.add_edge(end, node, pts=np.vstack([start, graph.nodes[node]["rc"]]), length=distance)
    new_node = max((n for n in graph if isinstance(n, int | np.integer)), default=0) + 1
    for edge, joins in splits.items():
        graph.remove_edge(*edges[edge])
        (previous, last), path, begin = ordered[edge], paths[edge], 0
        for at, end in sorted(joins, key=lambda join: join[0]):
            if at > begin:  # a new junction on the road, unless two ends meet it at the same pixel
                graph.add_node(new_node, rc=path[at].copy())
                graph.add_edge(previous, new_node, pts=path[begin:at + 1])
                previous, begin, new_node = new_node, at, new_node + 1
            graph.add_edge(end, previous, pts=np.vstack([graph.nodes[end]["rc"], graph.nodes[previous]["rc"]]))
        graph.add_edge(previous, last, pts=path[begin:])


def merge_chains(graph: nx.MultiGraph) -> None:
    """Nodes of degree 2 are not junctions: their two edges become one."""
    for node in [n for n in graph if graph.degree(n) == 2]:
        edges = list(graph.edges(node, keys=True))
        if len(edges) != 2 or any(u == v for u, v, _ in edges):
            continue
        (_, a, ka), (_, b, kb) = edges
        first = _oriented(graph, a, node, ka)
        second = _oriented(graph, node, b, kb)
        graph.remove_node(node)
        graph.add_edge(a, b, pts=np.vstack([first, second[1:]]))


def clean_graph(graph: nx.MultiGraph, params: VectorizeParams, metre_px: float,
                evidence: np.ndarray | None = None) -> nx.MultiGraph:
    """`evidence`: the road probability in the graph's pixel frame, which gap joins must follow; None for a binary
    mask, which has none to give."""
    merge_close_junctions(graph, 2.5)
    collapse_small_loops(graph, params.loop_m / metre_px)
    prune_spurs(graph, params.spur_m / metre_px)
    # Specks go before joins (joined into a road, one would stay as a false side street), and the pieces short of
    # min_length_m may join ends and junctions only; what is still short after the joins goes. Dropping every piece
    # under min_length_m first lost the only correct line the shipped model draws on the SpaceNet Vegas tile;
    # joining pieces of any length into roads cost 0.03 correctness on the validation tiles.
    remove_small_components(graph, params.min_length_m / 2 / metre_px)
    bridge_gaps(graph, params.bridge_m / metre_px, params.bridge_angle_deg, evidence, params.bridge_evidence,
                params.min_length_m / metre_px)
    remove_small_components(graph, params.min_length_m / metre_px)
    merge_chains(graph)
    return graph


# ------------------------------------------------------------------------------------------ windows & lines


@dataclass(frozen=True)
class VectorWindow:
    """Read rows/cols [y0, y1) x [x0, x1) (core plus margin), keep lines inside the core."""

    x0: int
    y0: int
    x1: int
    y1: int
    core: tuple[int, int, int, int]  # cx0, cy0, cx1, cy1


def vector_windows(width: int, height: int, window: int, margin: int) -> Iterator[VectorWindow]:
    for cy in range(0, height, window):
        for cx in range(0, width, window):
            core = (cx, cy, min(cx + window, width), min(cy + window, height))
            yield VectorWindow(max(0, cx - margin), max(0, cy - margin), min(width, core[2] + margin),
                               min(height, core[3] + margin), core)


def window_lines(probability: np.ndarray, window: VectorWindow, params: VectorizeParams,
                 metre_px: float) -> list[tuple[shapely.LineString, float, float]]:
    """Line pieces in full-raster pixel coordinates (x = col + 0.5, y = row + 0.5), clipped to the window's core,
    each with its mean probability and its median half-width in pixels (distance transform of the road mask)."""
    mask = road_mask(probability, params, metre_px)
    # Replicate the border before skeletonizing, so roads run straight out of the raster instead of curling into
    # spurs at its edge; inside the raster the padding falls in the margin, which the core clip drops anyway.
    skeleton = skeletonize(np.pad(mask, BORDER_PAD, mode="edge"))
    binary = not np.any((probability > 0) & (probability < 1))
    evidence = None if binary else np.pad(probability, BORDER_PAD, mode="edge")
    graph = clean_graph(skeleton_graph(skeleton), params, metre_px, evidence)
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    height, width = mask.shape
    cx0, cy0, cx1, cy1 = window.core
    pieces = []
    for _, _, data in graph.edges(data=True):
        points = data["pts"] - BORDER_PAD
        if len(points) < 2:
            continue
        line = shapely.LineString(np.column_stack([points[:, 1] + window.x0 + 0.5, points[:, 0] + window.y0 + 0.5]))
        clipped = shapely.clip_by_rect(line, cx0, cy0, cx1, cy1)
        for piece in getattr(clipped, "geoms", [clipped]):
            if piece.is_empty or piece.length == 0:
                continue
            dense = np.asarray(piece.segmentize(1.0).coords)
            rows = np.clip(np.floor(dense[:, 1]).astype(int) - window.y0, 0, height - 1)
            cols = np.clip(np.floor(dense[:, 0]).astype(int) - window.x0, 0, width - 1)
            pieces.append((piece, float(probability[rows, cols].mean()), float(np.median(distance[rows, cols]))))
    return pieces


def assemble(pieces: list[tuple[shapely.LineString, float, float]], grid: PixelGrid,
             simplify_px: float) -> RoadNetwork:
    """Joins pieces across window borders into roads between junctions and attributes roads and junctions.
    Whole-array shapely calls throughout: a 10,000 x 10,000 raster has thousands of roads."""
    if not pieces:
        return RoadNetwork()
    lines = np.array([p for p, _, _ in pieces], dtype=object)
    merged = shapely.line_merge(shapely.multilinestrings(lines))
    roads = np.array([g for g in shapely.get_parts(merged) if g.length > 0], dtype=object)
    # Each piece belongs to the road that covers it: its attributes, weighted by length, are the road's.
    middles = shapely.line_interpolate_point(lines, 0.5, normalized=True)
    piece_index, road_index = shapely.STRtree(roads).query(middles, predicate="dwithin", distance=1e-6)
    weights = shapely.length(lines)[piece_index]
    total = np.bincount(road_index, weights=weights, minlength=len(roads))
    probability = np.bincount(road_index, weights=weights * np.array([p[1] for p in pieces])[piece_index],
                              minlength=len(roads)) / np.maximum(total, 1e-9)
    half_width = np.bincount(road_index, weights=weights * np.array([p[2] for p in pieces])[piece_index],
                             minlength=len(roads)) / np.maximum(total, 1e-9)
    starts = shapely.get_coordinates(shapely.get_point(roads, 0))
    ends = shapely.get_coordinates(shapely.get_point(roads, -1))
    keys = np.round(np.vstack([starts, ends]), 6)
    unique, inverse, degree = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    network = RoadNetwork()
    xs, ys = grid.to_map(unique[:, 1] - 0.5, unique[:, 0] - 0.5)
    network.junctions = list(shapely.points(xs, ys))
    network.junction_attributes = [{"id": i + 1, "degree": int(d)} for i, d in enumerate(degree)]
    simple = shapely.simplify(roads, simplify_px, preserve_topology=False) if simplify_px > 0 else roads
    # Pixel coordinates (x = col + 0.5, y = row + 0.5) to map coordinates, all roads in one call.
    on_map = shapely.transform(simple, lambda xy: np.column_stack(grid.to_map(xy[:, 1] - 0.5, xy[:, 0] - 0.5)))
    network.roads = list(on_map)
    lengths = road_lengths_m(on_map, grid)
    for i in range(len(roads)):
        network.road_attributes.append({
            "id": i + 1,
            "length_m": float(lengths[i]),
            "mean_probability": round(float(probability[i]), 4),
            # The distance transform at the centreline counts from pixel centres: a road 2d - 1 pixels wide.
            "width_m": round(max(2 * float(half_width[i]) - 1, 1) * grid.metre_px, 2),
            "start_junction": int(inverse[i]) + 1,
            "end_junction": int(inverse[len(roads) + i]) + 1,
        })
    return network


def road_lengths_m(lines: np.ndarray, grid: PixelGrid) -> np.ndarray:
    if not grid.geographic:
        _, dx, _, _, ry, _ = grid.transform
        return shapely.length(lines) * (grid.gsd_m[0] / math.hypot(dx, ry))
    return np.array([line_length_m(line, grid) for line in lines])


def line_length_m(line: shapely.LineString, grid: PixelGrid) -> float:
    coords = np.asarray(line.coords)
    if not grid.geographic:
        x0, dx, rx, y0, ry, dy = grid.transform
        return float(np.hypot(*np.diff(coords, axis=0).T).sum()) * (grid.gsd_m[0] / math.hypot(dx, ry))
    # Degrees: each segment measured on the WGS84 ellipsoid at its mid-latitude (exact to ~1e-6 for short ones).
    lon, lat = coords[:, 0], coords[:, 1]
    mid = (lat[1:] + lat[:-1]) / 2
    scale = np.array([metres_per_degree(v) for v in mid])
    return float(np.hypot(np.diff(lon) * scale[:, 0], np.diff(lat) * scale[:, 1]).sum())


def _die_with_parent() -> None:
    """In each worker process: ask Linux to kill it when the process that started it dies, however it dies (kill -9
    included); without this, workers of a killed run kept running and held memory."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import multiprocessing

        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        parent = multiprocessing.parent_process()
        if parent is not None and os.getppid() != parent.pid:  # the parent died before the line above ran
            os._exit(1)


def _window_pieces(task) -> list:
    read, window, params, metre_px, threads = task
    if threads:
        cv2.setNumThreads(threads)  # one thread per worker process: the workers already use every core
    return window_lines(read(window.x0, window.y0, window.x1, window.y1), window, params, metre_px)


def vectorize_windows(read, width: int, height: int, grid: PixelGrid, params: VectorizeParams | None = None,
                      cancel=None, workers: int = 1) -> RoadNetwork:
    """`read(x0, y0, x1, y1)` returns road probability (0..1) for that window; each worker holds one window.

    With `workers` > 1, windows run in worker processes (`read` must then be picklable, e.g. `RasterWindows`):
    skeletonizing is single-threaded, so this is how vectorizing uses every core.
    """
    params = params or VectorizeParams()
    windows = list(vector_windows(width, height, params.window, params.reach_px(grid.metre_px)))
    parallel = workers > 1 and len(windows) > 1
    tasks = ((read, window, params, grid.metre_px, 1 if parallel else 0) for window in windows)
    pieces = []

    def check() -> None:
        if cancel is not None and cancel.cancelled:
            from core.progress import Cancelled

            raise Cancelled("cancelled")

    if parallel:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: the caller may hold torch's and GDAL's threads, which a forked child would inherit
        # in whatever state they were.
        with ProcessPoolExecutor(min(workers, len(windows)), mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            for result in pool.map(_window_pieces, tasks):
                check()
                pieces += result
    else:
        for task in tasks:
            check()
            pieces += _window_pieces(task)
    return assemble(pieces, grid, params.simplify_m / grid.metre_px)


class RasterWindows:
    """Windows of road probability from a mask or probability GeoTIFF; picklable, so workers open it themselves."""

    def __init__(self, path, values: RoadValues) -> None:
        self.path, self.values = str(path), values
        self._dataset = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "values": self.values, "_dataset": None}

    def __call__(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        import rasterio
        from rasterio.windows import Window

        if self._dataset is None:
            self._dataset = rasterio.open(self.path)
        window = Window(x0, y0, x1 - x0, y1 - y0)
        values = self._dataset.read(1, window=window)
        valid = self._dataset.read_masks(1, window=window) > 0
        if self.values.binary:
            return ((values == 1) & valid).astype(np.float32)
        probability = values.astype(np.float32) / np.float32(self.values.scale)
        return np.where(valid & np.isfinite(probability), probability, np.float32(0)).astype(np.float32)

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
            self._dataset = None


def vectorize_array(probability: np.ndarray, grid: PixelGrid, params: VectorizeParams | None = None
                    ) -> RoadNetwork:
    """An in-memory probability raster (0..1), window by window exactly as the streaming path does."""
    height, width = probability.shape
    return vectorize_windows(lambda x0, y0, x1, y1: probability[y0:y1, x0:x1], width, height, grid, params)


def vectorize_file(path, out_gpkg, params: VectorizeParams | None = None, *, overwrite: bool = False,
                   metadata: dict | None = None, cancel=None, workers: int = 0,
                   gsd_m: float | None = None, log=None) -> RoadNetwork:
    """A road mask (1 road, 0 background, 255 no data) or probability GeoTIFF (0..255) -> a road GeoPackage.

    A raster without georeferencing needs `gsd_m`; its lines are then in pixel coordinates (x right, y down).
    `log` hears which of the two the raster was read as (`core.inputs.road_raster.road_values`)."""
    import rasterio

    from core.inputs.raster import RasterError, RasterioSource

    params = params or VectorizeParams()
    workers = workers or int(os.environ.get("ROAD_EXTRACTOR_WORKERS", 0)) or min(os.cpu_count() or 1, 8)
    out_gpkg = Path(out_gpkg)
    check_output_file(out_gpkg, overwrite, "--overwrite; Overwrite in QGIS")
    if out_gpkg.suffix.lower() != ".gpkg":
        raise OutputError(f"the road output {out_gpkg} must end in .gpkg (a GeoPackage)")
    with RasterioSource(path, bands=(1, 1, 1), value_scale="none", gsd_m=gsd_m) as source:  # checks, measures GSD
        info = source.info
    if info.gsd_m is None:
        raise RasterError(f"{path} has no georeferencing, so lengths in metres are unknown; give --gsd "
                          f"METRES_PER_PIXEL (coordinates are then pixels)")
    with rasterio.open(path) as ds:
        values = road_values(ds, path)
        if log:
            log(f"read {Path(path).name} as {values.read_as}")
            if values.note:
                log(values.note)
        width, height = ds.width, ds.height
        # A raster written by `extract` says which model and parameters made it: the GeoPackage keeps that.
        provenance = {key.lower(): value for key, value in ds.tags().items() if key.startswith("ROAD_EXTRACTOR_")}
    reader = RasterWindows(path, values)
    grid = PixelGrid(info.transform or (0.0, 1.0, 0.0, 0.0, 0.0, 1.0), info.gsd_m, info.is_geographic)
    try:
        network = vectorize_windows(reader, width, height, grid, params, cancel, workers)
    finally:
        reader.close()
    write_road_network(out_gpkg, network, info.crs_wkt, {"road_extractor_vectorize": params.to_dict(),
                                                         "source": str(path), **provenance, **(metadata or {})})
    return network
