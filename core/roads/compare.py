"""An existing road layer against the roads the imagery shows (`road-extractor update-map`): which extracted roads
the layer lacks (`missing`), which of its roads the imagery does not support (`unconfirmed`), and how far the
roads found on both lie apart (`matched`, the layer's positional accuracy against the imagery).

Both networks are cut into steps of `step_m` along their lines and each step is classed by its distance to the
other network (an STRtree nearest query in metres), and, for the layer's steps, by the road probability within
the tolerance (a layer road under a faint road the vectorizer dropped is still supported). Runs of one class along
a line are joined into pieces; stretches shorter than `min_piece_m` count as their neighbours, so a piece is not
cut where a line wavers around the tolerance for a step or two. Only the imagery's valid area is judged: a layer
road beyond the raster or over its no-data is neither confirmed nor unconfirmed, and is counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import shapely

from core.options import CompareOptions

MISSING, MATCHED, UNCONFIRMED, OUTSIDE = 0, 1, 2, 3


@dataclass
class Piece:
    line: shapely.LineString  # in the raster's CRS
    length_m: float
    mean_probability: float
    source: int  # the index of the line it was cut from (the layer's feature, or the extracted road)
    offsets_m: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class Comparison:
    missing: list[Piece]
    unconfirmed: list[Piece]
    matched: list[Piece]
    outside_km: float  # length of the layer beyond the imagery's valid area (not judged)
    options: CompareOptions

    def summary(self) -> dict:
        """The figures the command line prints, the GeoPackage's metadata holds and QGIS's message bar shows."""
        offsets = np.concatenate([p.offsets_m for p in self.matched]) if self.matched else np.zeros(0)
        km = {name: sum(p.length_m for p in pieces) / 1000
              for name, pieces in (("missing", self.missing), ("unconfirmed", self.unconfirmed),
                                   ("matched", self.matched))}
        return {"missing_km": km["missing"], "missing_pieces": len(self.missing),
                "unconfirmed_km": km["unconfirmed"], "unconfirmed_pieces": len(self.unconfirmed),
                "matched_km": km["matched"], "outside_km": self.outside_km,
                "offset_mean_m": float(offsets.mean()) if offsets.size else float("nan"),
                "offset_p90_m": float(np.percentile(offsets, 90)) if offsets.size else float("nan"),
                "tolerance_m": self.options.tolerance_m}


@dataclass
class ProbabilityGrid:
    """The road probability (0..1) and the valid area on the raster's grid, looked up at map coordinates;
    `support` is the highest probability within the tolerance of each pixel."""

    probability: np.ndarray
    support: np.ndarray
    valid: np.ndarray
    to_pixel: object  # affine: map -> (col, row)

    def at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probability, support, valid) at [N, 2] map coordinates; outside the raster: 0, 0, False."""
        cols, rows = self.to_pixel * (points[:, 0], points[:, 1])
        cols, rows = np.floor(cols).astype(np.int64), np.floor(rows).astype(np.int64)
        height, width = self.valid.shape
        inside = (cols >= 0) & (rows >= 0) & (cols < width) & (rows < height)
        c, r = np.where(inside, cols, 0), np.where(inside, rows, 0)
        return (np.where(inside, self.probability[r, c], 0.0), np.where(inside, self.support[r, c], 0.0),
                inside & self.valid[r, c])


def read_probability(path, tolerance_m: float) -> ProbabilityGrid:
    """The probability raster `extract` wrote (uint8 probability x 255; its mask of valid pixels) as a grid."""
    import cv2
    import rasterio

    from core.inputs.raster import RasterioSource

    with RasterioSource(path, bands=(1, 1, 1), value_scale="none") as source:
        gsd = source.info.gsd_m
    with rasterio.open(path) as ds:
        values = ds.read(1)
        valid = ds.read_masks(1) > 0
        to_pixel = ~ds.transform
    probability = values.astype(np.float32) / 255
    radius = max(1, int(round(tolerance_m / min(gsd)))) if gsd else 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    support = cv2.dilate(np.where(valid, probability, 0).astype(np.float32), kernel)
    return ProbabilityGrid(probability, support, valid, to_pixel)


class MetricFrame:
    """Map coordinates <-> metres: the identity for a projected CRS in metres (its unit factor otherwise), an
    equirectangular frame centred on the data for a geographic one (exact to centimetres over a city)."""

    def __init__(self, crs_wkt: str | None, lines: list[shapely.LineString]) -> None:
        from rasterio.crs import CRS

        from core.metrics import equirectangular_frame

        self.origin, self.scale = np.zeros(2), np.ones(2)
        crs = CRS.from_wkt(crs_wkt) if crs_wkt else None
        coords = np.concatenate([shapely.get_coordinates(line) for line in lines]) if lines else np.zeros((0, 2))
        if crs is not None and crs.is_geographic and len(coords):
            self.origin, self.scale = equirectangular_frame(coords)
        elif crs is not None and crs.is_projected:
            self.scale = np.full(2, float(crs.linear_units_factor[1]))

    def to_metres(self, xy: np.ndarray) -> np.ndarray:
        return (xy - self.origin) * self.scale

    def to_map(self, xy: np.ndarray) -> np.ndarray:
        return xy / self.scale + self.origin


def _steps(lines_m: list[shapely.LineString], step_m: float):
    """Every line cut into steps of at most `step_m`: per step its line's index, start and end point (metres)."""
    owners, starts, ends = [], [], []
    for index, line in enumerate(lines_m):
        coords = shapely.get_coordinates(shapely.segmentize(line, step_m))
        if len(coords) < 2:
            continue
        owners.append(np.full(len(coords) - 1, index))
        starts.append(coords[:-1])
        ends.append(coords[1:])
    if not owners:
        return np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros((0, 2))
    return np.concatenate(owners), np.concatenate(starts), np.concatenate(ends)


def _distances(points: np.ndarray, others: list[shapely.LineString]) -> np.ndarray:
    """Distance in metres from each point to the nearest of `others` (infinity where there are none)."""
    if not len(others) or not len(points):
        return np.full(len(points), np.inf)
    tree = shapely.STRtree(others)
    (index, _), distance = tree.query_nearest(shapely.points(points), return_distance=True, all_matches=False)
    out = np.full(len(points), np.inf)
    out[index] = distance
    return out


def _smooth(classes: np.ndarray, lengths: np.ndarray, min_piece_m: float, keep: int = OUTSIDE) -> np.ndarray:
    """Runs of one class shorter than `min_piece_m` take the class of their longer neighbour, shortest run first;
    the `keep` class (beyond the valid area) is never changed and never spreads."""
    classes = classes.copy()
    while True:
        edges = np.flatnonzero(np.diff(classes)) + 1
        bounds = np.concatenate([[0], edges, [len(classes)]]).astype(int)
        runs = list(zip(bounds[:-1], bounds[1:], strict=True))
        run_lengths = [float(lengths[a:b].sum()) for a, b in runs]
        choices = []
        for i, (a, b) in enumerate(runs):
            if classes[a] == keep or run_lengths[i] >= min_piece_m:
                continue
            neighbours = [(run_lengths[j], int(classes[runs[j][0]])) for j in (i - 1, i + 1)
                          if 0 <= j < len(runs) and classes[runs[j][0]] != keep]
            if neighbours:
                choices.append((run_lengths[i], a, b, max(neighbours)[1]))
        if not choices:
            return classes
        _, a, b, new = min(choices)
        classes[a:b] = new


def _pieces(owners, starts, ends, classes, wanted: int, frame: MetricFrame, probability: np.ndarray,
            distance: np.ndarray) -> list[Piece]:
    """Consecutive steps of one line and class `wanted` as pieces, back in map coordinates."""
    pieces = []
    lengths = np.linalg.norm(ends - starts, axis=1)
    select = classes == wanted
    boundaries = np.flatnonzero(np.diff(np.concatenate([[0], select.astype(np.int8), [0]])) != 0)
    for a, b in zip(boundaries[::2], boundaries[1::2], strict=True):
        # A run may span two lines: cut it where its owner changes.
        cuts = np.concatenate([[a], a + np.flatnonzero(np.diff(owners[a:b])) + 1, [b]])
        for s, e in zip(cuts[:-1], cuts[1:], strict=True):
            coords = np.concatenate([starts[s:e], ends[e - 1:e]])
            length = float(lengths[s:e].sum())
            if length <= 0:
                continue
            weights = lengths[s:e]
            pieces.append(Piece(line=shapely.LineString(frame.to_map(coords)), length_m=length,
                                mean_probability=float(np.average(probability[s:e], weights=weights)),
                                source=int(owners[s]), offsets_m=distance[s:e].copy()))
    return pieces


def compare_networks(existing: list[shapely.LineString], extracted: list[shapely.LineString], crs_wkt: str | None,
                     grid: ProbabilityGrid, options: CompareOptions | None = None) -> Comparison:
    """The existing layer's lines and the extracted roads (both in the raster's CRS) compared step by step."""
    options = options or CompareOptions()
    frame = MetricFrame(crs_wkt, existing + extracted)

    def in_metres(lines):
        return [shapely.transform(line, frame.to_metres) for line in lines]

    existing_m, extracted_m = in_metres(existing), in_metres(extracted)
    tolerance = options.tolerance_m

    # The layer: matched where an extracted road is near; else supported by the probability near it; else
    # unconfirmed, but only inside the imagery's valid area.
    owners, starts, ends = _steps(existing_m, options.step_m)
    middles = (starts + ends) / 2
    distance = _distances(middles, extracted_m)
    probability, support, valid = grid.at(frame.to_map(middles)) if len(middles) else (np.zeros(0),) * 3
    classes = np.where(~valid, OUTSIDE, np.where((distance <= tolerance) | (support >= options.support_probability),
                                                 MATCHED, UNCONFIRMED))
    lengths = np.linalg.norm(ends - starts, axis=1)
    classes = _by_line(classes, lengths, owners, options.min_piece_m)
    matched = _pieces(owners, starts, ends, classes, MATCHED, frame, probability, distance)
    # Offsets are measured where an extracted line was found (a step supported by probability alone has none).
    for piece in matched:
        piece.offsets_m = piece.offsets_m[np.isfinite(piece.offsets_m) & (piece.offsets_m <= tolerance)]
    unconfirmed = _pieces(owners, starts, ends, classes, UNCONFIRMED, frame, support, distance)
    outside_km = float(lengths[classes == OUTSIDE].sum()) / 1000

    # The extracted roads: missing where no road of the layer is near.
    owners, starts, ends = _steps(extracted_m, options.step_m)
    middles = (starts + ends) / 2
    distance = _distances(middles, existing_m)
    probability = grid.at(frame.to_map(middles))[0] if len(middles) else np.zeros(0)
    classes = np.where(distance <= tolerance, MATCHED, MISSING)
    classes = _by_line(classes, np.linalg.norm(ends - starts, axis=1), owners, options.min_piece_m)
    missing = [p for p in _pieces(owners, starts, ends, classes, MISSING, frame, probability, distance)
               if p.length_m >= options.min_piece_m]
    return Comparison(missing, unconfirmed, matched, outside_km, options)


def _by_line(classes: np.ndarray, lengths: np.ndarray, owners: np.ndarray, min_piece_m: float) -> np.ndarray:
    """`_smooth` along each line on its own (`_steps` keeps each line's steps together, in order)."""
    out = classes.copy()
    if not len(owners):
        return out
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(owners)) + 1, [len(owners)]]).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        out[a:b] = _smooth(classes[a:b], lengths[a:b], min_piece_m)
    return out


def rank(pieces: list[Piece]) -> list[int]:
    """1 for the piece to review first: the most confident and longest (mean probability x length in metres)."""
    order = sorted(range(len(pieces)), key=lambda i: -pieces[i].mean_probability * pieces[i].length_m)
    ranks = [0] * len(pieces)
    for position, index in enumerate(order, start=1):
        ranks[index] = position
    return ranks
