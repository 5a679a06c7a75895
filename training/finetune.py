"""`python -m training finetune`: a road model taught the user's imagery from road lines they already have.

raster(s) + road lines (or masks) -> labels at a GSD, trusted only inside the train area -> a parent model trained
for a time budget -> the parent and the new model scored on a check area the training never saw -> a
self-describing model file that names its parent, its data and its area.

The loop is a plain PyTorch loop, not Lightning: it must stop on a wall-clock budget, report progress every step
to QGIS's task, and be cancelled between steps; runs of minutes need no checkpoints.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.atomic import check_output_file
from core.errors import InputError, OutputError
from core.extraction.brightness import image_brightness, widened
from core.extraction.devices import resolve_device, resolve_precision
from core.extraction.inference import normalize
from core.model.catalog import choice_note
from core.model.checkpoint import ModelInfo, RoadModel, nonfinite_tensors, save_model
from core.options import (
    FORGET_TOLERANCE,
    INCOMPLETE_BAND_M,
    INCOMPLETE_PROBABILITY,
    ROAD_WIDTH_M,
    FinetuneOptions,
)

from .augment import Augment
from .data import IGNORE, RoadCrops, map_to_pixels
from .losses import road_loss


class FinetuneError(InputError):
    """Input that cannot be fine-tuned on as given; the message names the problem and the fix."""


@dataclass(kw_only=True)
class FinetuneSpec(FinetuneOptions):
    """Everything a fine-tuning run needs (the user's choices, defined in `core.options.FinetuneOptions`, and the
    data and optimiser); the command line, Processing and the plugin fill one in."""

    rasters: list[str]
    out: str
    roads: str = ""  # road centrelines (any OGR format, any CRS)
    masks: list[str] = field(default_factory=list)  # or road masks on the rasters' grids (0/1 or 0/255)
    # Lines known not to be road (a review's rejected suggestions): background within a road width of them,
    # whatever --labels says of the rest.
    not_roads: str = ""
    train_area: str = ""  # polygons: labels are trusted inside (default: around the lines' extent)
    check_area: str = ""  # polygons scored before and after (default: blocks with labelled roads held out)
    bands: str = ""  # the rasters' bands read as red, green, blue ("1,1,1": a grey band); default as extract's
    init: str = ""  # the parent model (default: the shipped model)
    gsd_m: float = 0.0  # 0: the imagery's own, but no finer than half the parent's GSD and no coarser than it
    crop: int = 256
    batch_size: int = 8
    lr: float = 5e-4
    loss: str = "ce_dice_cldice"  # on Vegas: completeness 0.860 / correctness 0.854 against 0.841 / 0.802 (ce_dice)
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False


@dataclass
class Scene:
    """One raster at the training GSD with its labels and where they may be used."""

    name: str
    image: np.ndarray  # uint8 [H, W, 3]
    valid: np.ndarray  # bool [H, W]
    roads: np.ndarray  # bool [H, W]
    train: np.ndarray  # bool [H, W]: labels trusted for training
    check: np.ndarray  # bool [H, W]: held out for scoring, near what is taught
    check_shape: object  # shapely geometry of the check area in pixel coordinates (None: no check here)
    lines: list  # reference centrelines in pixel coordinates (x right, y down)
    # Held out to measure generality: a whole raster when several are given, else a distant band of the one.
    elsewhere: np.ndarray | None = None
    elsewhere_shape: object = None
    known_background: np.ndarray | None = None  # bool [H, W]: around --not-roads lines (always taught)


@dataclass(frozen=True)
class FinetuneProgress:
    step: int
    elapsed_s: float
    budget_s: float
    loss: float
    check_road_iou: float | None  # the latest score of the check area, when one was measured


# --------------------------------------------------------------------------------------------------- inputs


def parent_model(path: str, imagery_gsd_m: float | None = None) -> tuple[RoadModel, Path]:
    """The model fine-tuned: `path`, or from a models folder (the shipped one when empty) the one the engine runs
    on imagery of `imagery_gsd_m`."""
    from core.model.catalog import resolve_model

    resolved = resolve_model(path or None, imagery_gsd_m)
    if resolved.suffix.lower() == ".onnx":
        raise FinetuneError(f"{resolved.name} is an ONNX export, which cannot be trained; give the .pt model file it "
                            f"was exported from (or leave --init empty for the shipped model)")
    if not resolved.exists():
        raise FinetuneError(f"--init {resolved}: no such file; check the path")
    from core.model.checkpoint import load_model

    model = load_model(resolved)
    if not hasattr(model.network, "head_parameters"):
        raise FinetuneError(f"{resolved.name} is not a road-extractor network and has no training support; give a "
                            f"model file written by road-extractor or python -m training")
    return model, resolved


def _line_band(path: str, flag: str, info, pixel_xy, frame, shape: tuple[int, int], radius_px: float) -> np.ndarray:
    """The pixels within `radius_px` of the lines of `path` (any CRS), on one raster's training grid."""
    import shapely
    from rasterio.features import rasterize

    from core.inputs.raster import RasterError
    from core.metrics import read_lines

    try:
        lines, _ = read_lines(path, info.crs_wkt, notes=[])
    except (ValueError, RasterError) as exc:
        raise FinetuneError(f"{flag} {exc}") from None
    pixel_lines = [g for g in (shapely.transform(line, pixel_xy).intersection(frame) for line in lines)
                   if not g.is_empty]
    if not pixel_lines:
        return np.zeros(shape, bool)
    return rasterize([g.buffer(radius_px) for g in pixel_lines], out_shape=shape, fill=0, default_value=1,
                     dtype="uint8").astype(bool)


def _first_raster_gsd(spec: FinetuneSpec) -> float | None:
    """The first raster's pixel size (what picks the parent from a models folder); None where it cannot be read
    (prepare() then says why, in its own words)."""
    from core.inputs.raster import RasterioSource
    from core.model.catalog import imagery_gsd

    try:
        with RasterioSource(spec.rasters[0], bands=spec.bands or None) as source:
            return imagery_gsd(source.info.gsd_m)
    except (InputError, IndexError, OSError):
        return None


def training_gsd(spec: FinetuneSpec, raster_gsds: list[float], parent_gsd: float) -> float:
    if spec.gsd_m:
        if not (math.isfinite(spec.gsd_m) and spec.gsd_m > 0):
            raise FinetuneError(f"--gsd-m {spec.gsd_m} must be a positive number of metres per pixel")
        return spec.gsd_m
    # The imagery's own detail where it is finer than the parent's, but not below half the parent's GSD: finer
    # grids cost the square in time per area and take the parent's filters far from the scale they learnt.
    return min(parent_gsd, max(min(raster_gsds), parent_gsd / 2))


def _polygons(path: str, crs_wkt: str, what: str) -> list:
    from core.inputs.vectors import read_polygons

    try:
        return read_polygons(path, crs_wkt)
    except ValueError as exc:
        raise FinetuneError(f"{what} {path}: {exc}") from None


def prepare(spec: FinetuneSpec, parent_gsd: float, log: Callable[[str], None] = print) -> tuple[list[Scene], float]:
    """The rasters at the training GSD with their labels, train and check areas; FinetuneError for input that
    cannot be used, before anything is written."""
    import shapely
    from rasterio.features import rasterize

    from core.inputs.raster import RasterError, RasterioSource, Window
    from core.metrics import read_lines

    if not spec.rasters:
        raise FinetuneError("no raster given; name the imagery with --raster")
    if bool(spec.roads) == bool(spec.masks):
        raise FinetuneError("give road lines (--roads) or road masks (--masks), one of the two")
    for what, path in ([("--roads", spec.roads)] * bool(spec.roads) + [("--masks", m) for m in spec.masks]
                       + [("--not-roads", spec.not_roads)] * bool(spec.not_roads)):
        if not Path(path).exists():
            raise FinetuneError(f"{what} {path}: no such file; check the path")
    seen: dict[Path, str] = {}
    for path in spec.rasters:  # one file twice: a check block of one copy would be trained on in the other
        key = Path(path).resolve()
        if key in seen:
            raise FinetuneError(f"--raster {path} is given twice ({seen[key]}); give each raster once")
        seen[key] = path
    if spec.masks and len(spec.masks) != len(spec.rasters):
        raise FinetuneError(f"{len(spec.masks)} mask(s) for {len(spec.rasters)} raster(s); give one mask per raster")
    if not (math.isfinite(spec.minutes) and spec.minutes > 0):
        raise FinetuneError(f"--minutes {spec.minutes} must be a positive number")
    infos = []
    for path in spec.rasters:
        try:
            with RasterioSource(path, bands=spec.bands or None) as source:
                infos.append(source.info)
        except RasterError as exc:
            raise FinetuneError(str(exc)) from None
        if infos[-1].gsd_m is None or infos[-1].transform is None:
            raise FinetuneError(f"{path} has no georeferencing, so road lines cannot be placed on it; give a "
                                f"georeferenced raster (GeoTIFF with a CRS)")
    gsd = training_gsd(spec, [min(i.gsd_m) for i in infos], parent_gsd)
    width_m = spec.road_width_m
    radius_px = width_m / 2 / gsd
    scenes, lines_seen = [], 0
    for index, (path, info) in enumerate(zip(spec.rasters, infos, strict=True)):
        height = max(1, round(info.height * info.gsd_m[1] / gsd))
        width = max(1, round(info.width * info.gsd_m[0] / gsd))
        # Smaller rasters than a crop are padded with ignore by the crops (a 572 px aerial photo at 0.2 m is 229 px
        # at 0.5 m); below a quarter of one, a crop would be mostly padding.
        if min(height, width) < spec.crop // 4:
            raise FinetuneError(f"{Path(path).name} is {width}x{height} px at {gsd:g} m/px, smaller than a quarter "
                                f"of one {spec.crop} px training crop; give a larger raster (at least "
                                f"{spec.crop * gsd / 4:g} m across) or a smaller --crop")
        with RasterioSource(path, bands=spec.bands or None) as source:
            values, valid = source.read(Window(0, 0, info.width, info.height), (height, width))
        image = np.ascontiguousarray(np.clip(values[:3], 0, 255).round().astype(np.uint8).transpose(1, 2, 0))
        pixel_xy = map_to_pixels(info, width, height)
        frame = shapely.box(0, 0, width, height)
        if spec.roads:
            try:
                skipped: list[str] = []
                lines, _ = read_lines(spec.roads, info.crs_wkt, notes=skipped)
            except (ValueError, RasterError) as exc:  # the reason names the file and the formats
                raise FinetuneError(f"--roads {exc}") from None
            if not lines:
                raise FinetuneError(f"--roads {spec.roads} holds no lines{' that can be used' if skipped else ''}; "
                                    f"give the road centrelines of the area")
            for note in skipped if index == 0 else ():
                log(f"roads       {note}")
            pixel_lines = [shapely.transform(line, pixel_xy) for line in lines]
            pixel_lines = [g for g in (line.intersection(frame) for line in pixel_lines) if not g.is_empty]
            lines_seen += len(pixel_lines)
            roads = rasterize([g.buffer(radius_px) for g in pixel_lines], out_shape=(height, width), fill=0,
                              default_value=1, dtype="uint8").astype(bool) if pixel_lines \
                else np.zeros((height, width), bool)
        else:
            roads, pixel_lines = _read_mask(spec.masks[index], info, (height, width)), []
        if spec.train_area:
            shapes = [shapely.transform(p, pixel_xy) for p in _polygons(spec.train_area, info.crs_wkt, "--train-area")]
            train = rasterize(shapes, out_shape=(height, width), fill=0, default_value=1, dtype="uint8").astype(bool)
        elif spec.roads:
            train = np.zeros((height, width), bool)
            if pixel_lines:  # unlabelled roads beyond the lines' extent must not be taught as background
                margin = spec.margin_m / gsd
                x0, y0, x1, y1 = shapely.union_all(pixel_lines).bounds
                train[max(0, int(y0 - margin)):int(math.ceil(y1 + margin)),
                      max(0, int(x0 - margin)):int(math.ceil(x1 + margin))] = True
        else:
            train = np.ones((height, width), bool)
        check, check_shape = np.zeros((height, width), bool), None
        if spec.check_area:
            shapes = [shapely.transform(p, pixel_xy) for p in _polygons(spec.check_area, info.crs_wkt, "--check-area")]
            check_shape = shapely.union_all(shapes).intersection(frame)
            if not check_shape.is_empty:
                check = rasterize(shapes, out_shape=(height, width), fill=0, default_value=1, dtype="uint8") \
                    .astype(bool)
            else:
                check_shape = None
        known_background = None
        if spec.not_roads:
            known_background = _line_band(spec.not_roads, "--not-roads", info, pixel_xy, frame, (height, width),
                                          2 * radius_px)
            roads &= ~known_background  # what the user rejected is not taught as road, even under a drawn line
            train |= known_background
        train &= valid & ~check
        scenes.append(Scene(Path(path).stem, image, valid, roads, train, check & valid, check_shape, pixel_lines,
                            known_background=None if known_background is None else known_background & valid))
    if spec.roads and not lines_seen:
        raise FinetuneError(f"the road lines in {spec.roads} miss every raster; check that they cover the imagery "
                            f"(and that the file's CRS is right)")
    if not any(s.train.any() for s in scenes):
        if spec.check_area and any((s.check & s.valid).any() for s in scenes):
            raise FinetuneError(f"--check-area {spec.check_area} covers all of the labelled area, so nothing is left "
                                f"to train on; draw it over a part (a fifth or so) of the labelled roads")
        raise FinetuneError("the imagery has no valid pixels (NoData, transparent) where the labels are trusted; "
                            "give imagery that has data under the road lines and the train area")
    if not any((s.train & s.roads).any() for s in scenes):
        if not any((s.roads & s.valid).any() for s in scenes):
            raise FinetuneError("the imagery has no data (NoData, transparent) under any labelled road; give "
                                "imagery that covers the roads")
        if spec.train_area:
            raise FinetuneError("no road pixel lies in the train area; draw the train area over labelled roads")
        raise FinetuneError("no labelled road is left to train on outside the check area; give more labelled roads "
                            "or a smaller --check-area")
    if spec.check_area and not any(s.check.any() for s in scenes):
        raise FinetuneError(f"--check-area {spec.check_area} does not overlap the imagery; draw it over the rasters")
    elsewhere = _hold_out_elsewhere(scenes, spec.crop)
    if not spec.check_area:
        _hold_out_check_blocks(scenes, spec.crop // 4, spec.seed, log)
    elif not any((s.check & s.roads).any() for s in scenes):
        raise FinetuneError(f"--check-area {spec.check_area} holds no labelled road, so before and after would say "
                            f"nothing; draw it over labelled roads")
    if not any((s.train & s.roads).any() for s in scenes):
        raise FinetuneError("no labelled road is left to train on once the check areas are held out; give more "
                            "labelled roads (or a smaller --check-area)")
    log(elsewhere)
    return scenes, gsd


def _read_mask(path: str, info, shape: tuple[int, int]) -> np.ndarray:
    import rasterio
    from rasterio.enums import Resampling

    try:
        with rasterio.open(path) as ds:
            if (ds.width, ds.height) != (info.width, info.height):
                raise FinetuneError(f"mask {Path(path).name} is {ds.width}x{ds.height} px but its raster is "
                                    f"{info.width}x{info.height}; masks must be on the raster's grid")
            values = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
    except rasterio.errors.RasterioIOError as exc:
        raise FinetuneError(f"mask {path} cannot be read ({exc})") from None
    found = set(np.unique(values).tolist())
    if not found <= {0, 1} and not found <= {0, 255}:
        raise FinetuneError(f"mask {Path(path).name} holds values {sorted(found)[:8]}; give 0/1 or 0/255 road masks")
    return values > 0


# Shares of the labelled road held out when the user names no check area: enough road to score (a quarter of the
# area, as the first versions held out, could hold none), little enough to leave most of it to learn from.
CHECK_SHARE = 0.2
ELSEWHERE_SHARE = 0.2


def _bounding_box(mask: np.ndarray):
    """The pixel rectangle (shapely box, x right, y down) around a mask's True pixels."""
    import shapely

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return shapely.box(cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)


def _road_px(scene: Scene, where: np.ndarray) -> int:
    return int((scene.roads & where).sum())


def _hold_out_elsewhere(scenes: list[Scene], block: int) -> str:
    """Imagery the run never learns from, to tell a model that learnt the user's imagery from one that learnt the
    patch it was shown: with three rasters or more, the one whose labelled road is the median, whole; else the far
    end of the largest raster's labelled area along its long axis, holding ELSEWHERE_SHARE of its road, with a
    quarter of a crop between it and what trains (none when that would leave less than 60% of the road to train
    on). Returns the line that says what was held out."""

    labelled = [s for s in scenes if _road_px(s, s.train)]
    if len(labelled) >= 3:
        scene = sorted(labelled, key=lambda s: _road_px(s, s.train))[len(labelled) // 2]
        scene.elsewhere, scene.train = scene.train.copy(), np.zeros_like(scene.train)
        scene.elsewhere_shape = _bounding_box(scene.elsewhere)
        return (f"elsewhere   {scene.name} is held out whole: the parent and the new model are scored on it to "
                f"show what the run learnt about imagery it never saw")
    scene = max(scenes, key=lambda s: int(s.train.sum()))
    axis = 0 if scene.train.shape[0] >= scene.train.shape[1] else 1  # 0: rows, the far band is the southern one
    per_line = (scene.roads & scene.train).sum(axis=1 - axis)[::-1].cumsum()
    if per_line[-1] == 0:
        return "elsewhere   not measured: no labelled road"
    depth = int(np.searchsorted(per_line, ELSEWHERE_SHARE * per_line[-1])) + 1
    size = scene.train.shape[axis]
    start = size - depth
    band = np.zeros_like(scene.train)
    gap = np.zeros_like(scene.train)
    if axis == 0:
        band[start:], gap[max(0, start - block // 4):start] = True, True
    else:
        band[:, start:], gap[:, max(0, start - block // 4):start] = True, True
    rest = scene.train & ~band & ~gap
    if not _road_px(scene, band & scene.train) or _road_px(scene, rest) < 0.6 * per_line[-1]:
        return "elsewhere   not measured: the labelled roads are too few to hold any out at a distance"
    scene.elsewhere = scene.train & band
    scene.train = rest
    scene.elsewhere_shape = _bounding_box(scene.elsewhere)
    side = "southern" if axis == 0 else "eastern"
    return (f"elsewhere   the {side} {depth} px of {scene.name} ({ELSEWHERE_SHARE:.0%} of its labelled road) are "
            f"held out, a quarter of a crop away from what trains, to score imagery the run never saw")


def _hold_out_check_blocks(scenes: list[Scene], block: int, seed: int, log: Callable[[str], None]) -> None:
    """Without a check area: crop-sized blocks with labelled road, spread over the rasters (taken in turn from
    each, in a seeded order), until they hold CHECK_SHARE of the road left to train on; FinetuneError when the
    labels leave nothing to check."""
    import shapely

    rng = np.random.default_rng(seed)
    candidates = []
    for index, scene in enumerate(scenes):
        height, width = scene.train.shape
        found = []
        labelled = scene.roads & scene.train
        for y in range(0, height, block):
            for x in range(0, width, block):  # a slice per block: a whole-raster mask each was quadratic
                if labelled[y:y + block, x:x + block].any():
                    found.append((index, y, x))
        rng.shuffle(found)
        candidates.append(found)
    total = sum(_road_px(s, s.train) for s in scenes)
    if sum(len(c) for c in candidates) < 2:
        raise FinetuneError("the labelled roads fill less than two blocks of a quarter of a training crop, so none "
                            "can be held out to check the result; label more roads (or give a --check-area over "
                            "labelled roads)")
    taken, held, boxes = 0, [], {}
    while taken < CHECK_SHARE * total:
        for found in candidates:
            # The last block with road always trains.
            if found and taken < CHECK_SHARE * total and sum(len(c) for c in candidates) > 1:
                index, y, x = found.pop()
                scene = scenes[index]
                where = np.zeros_like(scene.train)
                where[y:y + block, x:x + block] = True
                taken += _road_px(scene, where & scene.train)
                scene.check |= where & scene.train
                boxes.setdefault(index, []).append(shapely.box(x, y, x + block, y + block))
                held.append(index)
        if sum(len(c) for c in candidates) <= 1:
            break
    for index, shapes in boxes.items():
        scene = scenes[index]
        scene.train &= ~scene.check
        scene.check_shape = shapely.union_all(shapes)
    named = ", ".join(f"{held.count(i)} in {scenes[i].name}" for i in sorted(set(held)))
    log(f"check area  none given: {len(held)} block(s) of {block} px with labelled roads ({named}; {taken / total:.0%} "
        f"of the labelled road) are held out and scored before and after")


# ------------------------------------------------------------------------------------------------ scoring


AREAS = {"check": "check area", "elsewhere": "elsewhere"}


def _trust_background_near_roads(parent: RoadModel, scenes: list[Scene], gsd: float, spec: FinetuneSpec,
                                  log: Callable[[str], None]) -> None:
    """Labels from a map that lacks roads: a pixel off its roads is background only within INCOMPLETE_BAND_M of
    one of them and where the parent's road probability is below INCOMPLETE_PROBABILITY; elsewhere it is not
    taught, nor scored (the check and elsewhere areas too: a road the map lacks is not a false positive)."""
    from scipy.ndimage import distance_transform_edt

    from .evaluate import Inference, predict_tile

    inference = Inference(scales=(1.0,), device=spec.device, precision=spec.precision)
    dropped = total = 0
    for scene in scenes:
        near = distance_transform_edt(~scene.roads) * gsd <= INCOMPLETE_BAND_M
        probability, _ = predict_tile(parent, scene.image, scene.valid, gsd, inference)
        trusted = scene.roads | (near & (probability < INCOMPLETE_PROBABILITY))
        if scene.known_background is not None:
            trusted |= scene.known_background
        total += int(scene.train.sum())
        dropped += int((scene.train & ~trusted).sum())
        scene.train &= trusted
        scene.check &= trusted
        if scene.elsewhere is not None:
            scene.elsewhere &= trusted
    if not any((s.train & ~s.roads).any() for s in scenes):
        raise FinetuneError("the road lines leave no background to teach near them; give lines with imagery "
                            "around them, or --labels complete")
    log(f"labels      incomplete: background taught only within {INCOMPLETE_BAND_M:g} m of a drawn road where the "
        f"parent sees no road (p < {INCOMPLETE_PROBABILITY:g}); {dropped / max(total, 1):.0%} of the labelled area "
        f"is left out")


def score(model: RoadModel, scenes: list[Scene], gsd: float, buffer_m: float = 5.0, lines: bool = True,
          device: str = "auto", precision: str = "auto", area: str = "check") -> dict[str, float]:
    """The model on every scene's `area` (check: held out near what is taught; elsewhere: imagery never taught),
    through the engine a user runs: road IoU and relaxed F1 within 3 m of the mask, and the extracted centrelines
    against the reference lines (completeness and correctness within `buffer_m`, APLS). {} when no scene has it."""
    import shapely

    from core.metrics import apls, length_metrics, lines_inside, relaxed_counts, relaxed_from_counts
    from core.roads.vectorize import PixelGrid, VectorizeParams, vectorize_array

    from .evaluate import PLACE_RHO_M, Inference, predict_tile

    tp = fp = fn = 0
    relaxed = np.zeros(4, np.int64)
    reference, proposal, seen = [], [], False
    for scene in scenes:
        where = getattr(scene, area)
        if where is None or not where.any():
            continue
        seen = True
        rows, cols = np.flatnonzero(where.any(axis=1)), np.flatnonzero(where.any(axis=0))
        context = 64  # pixels of imagery around the area, as a user's extraction would have
        y0, x0 = max(0, rows[0] - context), max(0, cols[0] - context)
        y1, x1 = min(scene.image.shape[0], rows[-1] + 1 + context), min(scene.image.shape[1], cols[-1] + 1 + context)
        inference = Inference(scales=(1.0,), device=device, precision=precision)
        probability, mask = predict_tile(model, scene.image[y0:y1, x0:x1], scene.valid[y0:y1, x0:x1], gsd, inference)
        inside = where[y0:y1, x0:x1]
        truth = scene.roads[y0:y1, x0:x1]
        tp += int((mask & truth & inside).sum())
        fp += int((mask & ~truth & inside).sum())
        fn += int((~mask & truth & inside).sum())
        relaxed += relaxed_counts(mask, truth, PLACE_RHO_M / gsd, ~inside)
        if not lines:
            continue
        probability[~inside] = 0
        grid = PixelGrid((x0 * gsd, gsd, 0.0, -y0 * gsd, 0.0, -gsd), (gsd, gsd))
        found = vectorize_array(probability, grid, VectorizeParams()).roads

        def metres(geometry):
            return shapely.transform(geometry, lambda xy: xy * np.array([gsd, -gsd]))

        shape = metres(getattr(scene, f"{area}_shape"))
        proposal += lines_inside(found, shape)
        reference += lines_inside([metres(line) for line in scene.lines], shape)
    if not seen:
        return {}
    figures = {"road_iou": tp / (tp + fp + fn) if tp + fp + fn else float("nan"),
               "relaxed_f1": relaxed_from_counts(relaxed)["relaxed_f1"]}
    if lines and reference:
        length = length_metrics(reference, proposal, buffer_m)
        figures.update({"completeness": length["completeness"], "correctness": length["correctness"],
                        "apls": apls(reference, proposal)["apls"] if proposal else 0.0,
                        "reference_km": length["reference_km"], "proposal_km": length["proposal_km"]})
    return figures


def format_scores(name: str, figures: dict[str, float]) -> str:
    parts = [f"road IoU {figures['road_iou']:.3f}"]
    if "relaxed_f1" in figures:
        parts.append(f"relaxed F1 {figures['relaxed_f1']:.3f}")
    if "completeness" in figures:
        correctness = figures["correctness"]
        parts += [f"completeness {figures['completeness']:.3f}",
                  f"correctness {correctness:.3f}" if not math.isnan(correctness) else "correctness - (no lines)",
                  f"APLS {figures['apls']:.3f}", f"{figures['proposal_km']:.2f} of {figures['reference_km']:.2f} km"]
    return f"{name:<11} " + ", ".join(parts)


# ---------------------------------------------------------------------------------------- the parent's data

REPOSITORY = Path(__file__).resolve().parents[1]
REPLAY_TILES = 12  # of the parent's training tiles, read once: enough variety for a replayed share of minutes
# The mix of weights must keep what the parent knew: scored on the whole of KEEP_TILES of the parent's validation
# tiles (their no-data ignored), a mix may lose at most FORGET_TOLERANCE road IoU there; the other validation tiles
# report forgetting. (Its training tiles were a poor proxy: on Shanghai a mix lost 0.027 there and 0.081 on the
# validation tiles. One 768 m window of them was too: on Japan the mix kept lost 0.027 in the window and 0.105 on
# the reported tiles; two of the three keep tiles had no window clear of no-data, so one window held the mix.)
KEEP_TILES = 3


@dataclass
class ParentData:
    """The parent's own data where it is on this machine (its model file names it): of its validation tiles, the
    first KEEP_TILES hold the mix of weights to the parent's knowledge and the others score what the fine-tune
    forgot (never chosen on); its training tiles can be replayed. A user's installation has none: all empty."""

    validation: list[tuple[str, np.ndarray, np.ndarray]]  # scored before and after: the forgetting report
    keep: list[tuple[str, np.ndarray, np.ndarray]]  # what the mix is chosen against, whole tiles
    training: list  # training.data.Pair
    labels: object  # training.data.LabelMap
    where: str


def parent_data(parent: RoadModel, log: Callable[[str], None]) -> ParentData:
    from .data import DataError, DataSource, described_pairs, inspect_labels, read_pair
    from .description import DescriptionError, resolve_data

    provenance = parent.info.provenance or {}
    entries, names = provenance.get("data") or [], set(provenance.get("validation_tiles") or [])
    if isinstance(entries, str):
        entries = [entries]
    for entry in entries[:1]:  # the first source: its tiles are the ones the parent was validated on
        path = Path(DataSource.parse(str(entry)).path)
        found = next((c for c in (path, REPOSITORY / path) if c.exists()), None)
        if found is None:
            break
        try:
            pairs = described_pairs(resolve_data(found), parent.info.gsd_m or 1.0)
            labels = inspect_labels(pairs)
            validation = sorted((p.name, *read_pair(p, labels)) for p in pairs if p.name in names)
        except (DataError, DescriptionError, OSError) as exc:
            log(f"forgetting  not measured: the parent's data {found} cannot be read ({exc})")
            break
        # With few validation tiles, all of them report (and the mix is held to the first ones all the same).
        keep, report = validation[:KEEP_TILES], validation[KEEP_TILES:] or validation
        return ParentData(report, keep, [p for p in pairs if p.name not in names], labels, str(found))
    log("forgetting  not measured: the parent's training data is not on this machine (its validation tiles score "
        "what a fine-tune forgets)")
    return ParentData([], [], [], None, "")


def as_the_parent_reads(model: RoadModel, parent: RoadModel) -> RoadModel:
    """`model`'s weights reading imagery as `parent` does (its GSD and brightness range): what the weights still
    know of the parent's imagery. A model fine-tuned at 0.5 m would otherwise read the parent's 1 m tiles upsampled
    twofold and lose there whatever its weights (a 1/32 share of fine-tuned weights lost 0.04-0.22 road IoU, a
    step, not a slope)."""
    if model is parent:
        return parent
    info = replace(model.info, gsd_m=parent.info.gsd_m, normalization=parent.info.normalization)
    return RoadModel(model.network, info, model.report, model.architecture)


def score_parent_tiles(model: RoadModel, tiles: list, gsd: float, device: str, precision: str) -> dict:
    """Road IoU and relaxed F1 on some of the parent's own tiles (at the parent's GSD, through the engine)."""
    from .evaluate import PLACE_RHO_M, Inference, evaluate_tiles

    if not tiles:
        return {}
    inference = Inference(scales=(1.0,), device=device, precision=precision)
    summary = evaluate_tiles(model, tiles, gsd, [inference], rho=PLACE_RHO_M / gsd,
                             graphs=False)[inference.label]
    return {"road_iou": summary["road_iou"], "relaxed_f1": summary["relaxed_f1"]}


def replay_tiles(data: ParentData, gsd: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """REPLAY_TILES of the parent's training tiles at the fine-tuning GSD."""
    from dataclasses import replace as with_fields

    from .data import read_pair

    rng = np.random.default_rng(seed)
    chosen = rng.permutation(len(data.training))[:REPLAY_TILES]
    return [read_pair(with_fields(pair, image_gsd_m=pair.image_gsd_m or pair.gsd_m, gsd_m=gsd), data.labels)
            for pair in (data.training[i] for i in chosen)]


def mixed_weights(parent: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                  share: float) -> dict[str, torch.Tensor]:
    """parent + share * (tuned - parent) for every floating tensor (weights and BatchNorm statistics alike);
    counters are the tuned model's. Share 0 is the parent, 1 the fine-tuned model (weight-space interpolation:
    Wortsman et al., WiSE-FT, 2022)."""
    return {k: (parent[k].float() + share * (v.float() - parent[k].float())).to(v.dtype)
            if v.is_floating_point() else v for k, v in tuned.items()}


def freeze_batchnorm(network: torch.nn.Module) -> None:
    """BatchNorm layers in eval mode: the parent's statistics are used and kept (a batch of 8 crops of one place
    would otherwise re-estimate them for that place)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


# ----------------------------------------------------------------------------------------------- training


WARMUP_SHARE = 0.05  # of the budget, the learning rate rising from 0: Adam's first steps on new data are the wildest
MIX_SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)  # of the fine-tuned weights, tried on the check area under --mix auto


def finetune(spec: FinetuneSpec, log: Callable[[str], None] = print,
             progress: Callable[[FinetuneProgress], None] | None = None,
             cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Runs the whole fine-tuning; returns {"model": path, "before": figures, "after": figures, ...}."""
    import torch.nn.functional as F

    out = Path(spec.out)
    try:
        check_output_file(out, spec.overwrite)
    except OutputError as exc:
        raise FinetuneError(f"--out {exc}") from None
    if out.suffix.lower() != ".pt":
        raise FinetuneError(f"--out {out} must be a .pt model file")
    if not out.parent.exists():
        raise FinetuneError(f"the folder {out.parent} does not exist; create it or choose another --out")
    imagery = _first_raster_gsd(spec)
    parent, parent_path = parent_model(spec.init, imagery)
    if out.resolve() == parent_path.resolve():
        raise FinetuneError(f"--out {out} is the parent model itself; choose another file (the parent would be "
                            f"replaced, and with it what the new model is compared with)")
    parent_gsd = parent.info.gsd_m or 1.0
    spec.road_width_m = spec.road_width_m or float(parent.info.provenance.get("road_width_m", ROAD_WIDTH_M))
    started = time.perf_counter()
    scenes, gsd = prepare(spec, parent_gsd, log)
    device = resolve_device(spec.device)
    precision = resolve_precision(spec.precision, device)
    labelled = sum(int(s.train.sum()) for s in scenes) * gsd * gsd / 1e6
    log(f"data        {len(scenes)} raster(s) at {gsd:g} m/px, roads {spec.road_width_m:g} m wide; "
        f"{labelled:.3f} km^2 of trusted labels, {sum(int(s.check.sum()) for s in scenes) * gsd * gsd / 1e6:.3f} "
        f"km^2 to check ({time.perf_counter() - started:.1f} s)")
    # Said once the inputs are known to be usable: a refusal stays one line.
    if (picked := choice_note(spec.init, imagery)) is not None:
        log(picked.replace("model: ", "parent: ", 1))
    log(f"parent      {parent_path.name} ({parent_gsd:g} m/px); {device}, {precision.why}")
    data = parent_data(parent, log)

    def scores(model: RoadModel) -> dict[str, dict]:
        figures = {"check": score(model, scenes, gsd, device=spec.device, precision=spec.precision),
                   "elsewhere": score(model, scenes, gsd, device=spec.device, precision=spec.precision,
                                      area="elsewhere"),
                   "parent_tiles": score_parent_tiles(as_the_parent_reads(model, parent), data.validation,
                                                      parent_gsd, spec.device, spec.precision)}
        return {k: v for k, v in figures.items() if v}

    if spec.labels == "incomplete":
        _trust_background_near_roads(parent, scenes, gsd, spec, log)
    before = scores(parent)
    for area, figures in before.items():
        log(format_scores(f"before {AREA_NAMES[area]}", figures))

    network = copy.deepcopy(parent.network).float().to(device).train()
    network.to(memory_format=torch.channels_last)
    teacher = copy.deepcopy(network).eval() if spec.distill > 0 else None
    for parameter in teacher.parameters() if teacher else ():
        parameter.requires_grad_(False)

    def train_mode() -> None:
        network.train().to(memory_format=torch.channels_last)
        if spec.batchnorm == "frozen":
            freeze_batchnorm(network)

    train_mode()
    optimizer = torch.optim.AdamW(network.parameters(), lr=spec.lr, weight_decay=1e-4)
    augment = Augment(crop=spec.crop, recipe="mild")
    tiles = [(s.image, np.where(s.train, s.roads.astype(np.uint8), IGNORE).astype(np.uint8)) for s in scenes]
    crops = RoadCrops.from_arrays(tiles, augment, crops_per_epoch=1 << 30, seed=spec.seed)
    replayed = min(spec.batch_size - 1, round(spec.replay * spec.batch_size)) if data.training else 0
    if spec.replay and not data.training:
        log("replay      none: the parent's training data is not on this machine")
    replay = RoadCrops.from_arrays(replay_tiles(data, gsd, spec.seed), augment, crops_per_epoch=1 << 30,
                                   seed=spec.seed + 1) if replayed else None
    weights = torch.ones(2, device=device)
    budget = spec.minutes * 60
    torch.manual_seed(spec.seed)
    # The rasters are learnt as they are, so the new model must read them as they are: its brightness range takes
    # them in (a dark raster would otherwise be brightened at inference, unlike anything it was fine-tuned on).
    normalization = replace(parent.info.normalization, brightness=widened(
        parent.info.normalization.brightness, [image_brightness(s.image, s.valid) for s in scenes]))
    info = ModelInfo(config=parent.info.config, gsd_m=gsd, normalization=normalization)
    step, loss_value, check_iou, next_check = 0, float("nan"), None, budget / 4
    # The budget is training time: the progress display's scoring is not counted (the option says "data
    # preparation and scoring come on top"); on a slow CPU it would otherwise eat a large share of the minutes.
    training_started, scoring_s = time.perf_counter(), 0.0
    while (elapsed := time.perf_counter() - training_started - scoring_s) < budget:
        if cancelled():
            raise KeyboardInterrupt("fine-tuning cancelled; nothing was written")
        for group in optimizer.param_groups:
            warmup = min(1.0, max(0.1, elapsed / (WARMUP_SHARE * budget)))
            group["lr"] = spec.lr * warmup * max(0.0, 1 - elapsed / budget) ** 0.9
        own = spec.batch_size - replayed
        batch = [crops[(0, step * own + i)] for i in range(own)]
        batch += [replay[(0, step * replayed + i)] for i in range(replayed)] if replay else []
        images = torch.stack([b[0] for b in batch]).to(device)
        target = torch.stack([b[1] for b in batch]).to(device)
        x = normalize(images, parent.info.normalization).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=precision.autocast or torch.float32,
                            enabled=precision.autocast is not None):
            logits = network(x)
            if teacher is not None:
                with torch.no_grad():
                    taught = teacher(x).float().softmax(dim=1)
        loss = road_loss(logits, target, spec.loss, weights)
        if teacher is not None:  # learning without forgetting (Li & Hoiem, 2017): the parent's view, every pixel
            loss = loss + spec.distill * F.cross_entropy(logits.float(), taught)
        optimizer.zero_grad(set_to_none=True)
        if torch.isfinite(loss):
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            loss_value = float(loss.detach())
        step += 1
        elapsed = time.perf_counter() - training_started - scoring_s
        if elapsed >= next_check and elapsed < budget:  # a cheap pixel score, for the progress display
            scoring_started = time.perf_counter()
            check_iou = score(RoadModel(network.eval(), info, parent.report, parent.architecture), scenes, gsd,
                              lines=False, device=spec.device, precision=spec.precision)["road_iou"]
            train_mode()
            scoring_s += time.perf_counter() - scoring_started
            next_check += budget / 4
            log(f"step {step:>5}  {elapsed / 60:5.1f} of {spec.minutes:g} min  {step / elapsed:.2f} steps/s  "
                f"loss {loss_value:.3f}  check road IoU {check_iou:.3f}")
        if progress:
            progress(FinetuneProgress(step, elapsed, budget, loss_value, check_iou))
    network.eval().to(memory_format=torch.contiguous_format)
    if nonfinite_tensors(network.state_dict()):
        raise FinetuneError("fine-tuning diverged (the weights hold NaN); lower --lr and run again")
    # Copies: the mixes are loaded into this same network, which would overwrite tensors that share its storage.
    trained = {k: v.detach().clone().cpu() for k, v in network.state_dict().items()}
    network = network.cpu()
    share, keep = 1.0, []
    if spec.mix == "auto":
        keep = data.keep
        share = _best_mix(network, parent, trained, info, scenes, gsd, spec, keep, log)
    if share == 0:  # the parent as it was: its weights, and its GSD and brightness range
        info = ModelInfo(config=parent.info.config, gsd_m=parent.info.gsd_m,
                         normalization=parent.info.normalization)
    tuned = RoadModel(network, info, parent.report, parent.architecture)
    after = scores(tuned)
    for area, figures in after.items():
        log(format_scores(f"after {AREA_NAMES[area]}", figures))
    log(f"trained     {step} steps of {spec.batch_size} crops in {spec.minutes:g} min ({step / budget:.2f} steps/s)"
        + (f", {replayed} of each batch replayed from {data.where}" if replayed else ""))
    improved = after["check"]["relaxed_f1"] > before["check"]["relaxed_f1"]
    if share == 0:
        kept = (f" without losing more than {FORGET_TOLERANCE:g} road IoU on the parent's own tiles (the 'mix' "
                f"lines above)" if keep else "")
        log(f"result      no mix of the fine-tuned weights scored above the parent on the check area{kept}; "
            f"{out.name} holds the parent's weights unchanged: give more labelled roads or time, or --mix all to "
            f"keep the fine-tuned weights as they are")
    elif not improved:
        log(f"result      the new model scores below its parent on the check area; keep using the parent "
            f"({parent_path.name}) or run again with more labelled roads")
    info.provenance = {
        "trained_with": "python -m training finetune", "parent": parent_path.name,
        "parent_provenance": parent.info.provenance, "rasters": [Path(r).name for r in spec.rasters],
        "roads": Path(spec.roads).name if spec.roads else None, "masks": [Path(m).name for m in spec.masks],
        "not_roads": Path(spec.not_roads).name if spec.not_roads else None,
        "train_area": Path(spec.train_area).name if spec.train_area else "lines' extent + margin",
        "check_area": Path(spec.check_area).name if spec.check_area else "held-out blocks with labelled roads",
        "elsewhere": next((s.name for s in scenes if s.elsewhere is not None), None),
        "road_width_m": spec.road_width_m, "steps": step, "batch_size": spec.batch_size, "minutes": spec.minutes,
        "steps_per_s": step / budget, "mix_share": share, "improved": bool(improved and share > 0),
        "precision": precision.name, "settings": {k: v for k, v in asdict(spec).items()
                                                  if k not in ("rasters", "masks", "out", "overwrite")}}
    info.metrics = {f"{area}_{when}_{k}": v for when, figures in (("before", before), ("after", after))
                    for area, values in figures.items() for k, v in values.items() if math.isfinite(v)}
    save_model(out, network, info, half=True)
    log(f"model       {out} ({out.stat().st_size / 1e6:.1f} MB); extract with: road-extractor extract IMAGE.tif "
        f"--model {out} --out results/")
    return {"model": str(out), "parent": str(parent_path), "before": before["check"], "after": after["check"],
            "areas_before": before,
            "areas_after": after, "mix_share": share, "steps": step, "gsd_m": gsd,
            "seconds": time.perf_counter() - started}


AREA_NAMES = {"check": "(check area)", "elsewhere": "(elsewhere)", "parent_tiles": "(parent's tiles)"}


def chosen_share(results: list[tuple[float, float, float | None]]) -> tuple[float, float | None]:
    """(the share kept, the floor on the parent's tiles) from (share, check relaxed F1, road IoU on the parent's
    tiles or None) rows, share 0 first: the best check F1 among the shares that lose at most FORGET_TOLERANCE on
    the parent's tiles (every share, where they were not scored); ties go to the share nearer the parent."""
    floor = results[0][2] - FORGET_TOLERANCE if results[0][2] is not None else None
    allowed = [r for r in results if floor is None or r[0] == 0 or r[2] >= floor]
    return max(allowed, key=lambda r: (r[1], -r[0]))[0], floor


def refined_shares(results: list[tuple[float, float, float | None]]) -> tuple[float, float] | None:
    """Where to look between grid shares: when a share that scores better on the check area than every share kept
    loses too much on the parent's tiles, the interval between the largest share that keeps them and the next
    share, which loses too much (what the parent's tiles keep falls about steadily with the share: measured on
    Dubai, Shanghai and Japan); None when the grid's choice stands."""
    best, floor = chosen_share(results)
    if floor is None:
        return None
    best_f1 = next(f for share, f, _ in results if share == best)
    # Better on the check area than the share kept: necessarily a share that loses too much.
    if not any(share > best and f > best_f1 for share, f, _ in results):
        return None
    kept = max(share for share, _, iou in results if share == 0 or iou >= floor)
    lost = min(share for share, _, iou in results if share > kept and iou < floor)
    return kept, lost


REFINE_STEPS = 3  # halvings of the interval: shares to 1/32 of the grid apart, three more scorings


def _best_mix(network: torch.nn.Module, parent: RoadModel, trained: dict, info: ModelInfo, scenes: list[Scene],
              gsd: float, spec: FinetuneSpec, keep: list, log: Callable[[str], None]) -> float:
    """Loads into `network` the mix of parent and fine-tuned weights that scores best on the user's held-out
    imagery among the mixes that keep the parent's knowledge (`keep`: some of its validation tiles, where on this
    machine; at most FORGET_TOLERANCE road IoU lost there) and returns its share of the fine-tuned weights; ties go
    to the share nearer the parent. The held-out score is the mean relaxed F1 of the check area and, where one is
    held out, the imagery elsewhere: the check blocks lie among what trains, and on Dubai and Shanghai the mix
    chosen on them alone rose there by 0.21-0.42 while it fell elsewhere by 0.05-0.09 and on other source images of
    the same place (Dubai 0.49 -> 0.26). The grid MIX_SHARES first, then halvings towards the largest share that
    keeps the parent's tiles. Share 0 is the parent exactly as it was (its own GSD and brightness range)."""
    original = {k: v.detach().float().cpu() for k, v in parent.network.state_dict().items()}
    parent_gsd = parent.info.gsd_m or 1.0
    elsewhere = any(s.elsewhere is not None and s.elsewhere.any() for s in scenes)
    results = []  # (share, held-out relaxed F1, road IoU on the parent's tiles or None)
    parts = {}  # share -> (check relaxed F1, elsewhere relaxed F1 or None), for the log

    def tried(share: float) -> tuple[float, float, float | None]:
        network.load_state_dict(mixed_weights(original, trained, share))
        candidate = parent if share == 0 else RoadModel(network, info, parent.report, parent.architecture)
        check = score(candidate, scenes, gsd, lines=False, device=spec.device, precision=spec.precision)
        away = score(candidate, scenes, gsd, lines=False, device=spec.device, precision=spec.precision,
                     area="elsewhere")["relaxed_f1"] if elsewhere else None
        kept = score_parent_tiles(as_the_parent_reads(candidate, parent), keep, parent_gsd, spec.device,
                                  spec.precision).get("road_iou")
        parts[share] = (check["relaxed_f1"], away)
        held_out = check["relaxed_f1"] if away is None else (check["relaxed_f1"] + away) / 2
        results.append((share, held_out, kept))
        return results[-1]

    for share in MIX_SHARES:
        tried(share)
    interval, floor = refined_shares(results), chosen_share(results)[1]
    for _ in range(REFINE_STEPS if interval else 0):
        low, high = interval
        middle, _, kept = tried((low + high) / 2)
        interval = (middle, high) if kept >= floor else (low, middle)
    best, floor = chosen_share(results)
    results.sort()
    network.load_state_dict(mixed_weights(original, trained, best))
    by_share = (", ".join(f"{s:g}: {parts[s][0]:.3f} / {parts[s][1]:.3f}" for s, _, _ in results) if elsewhere
                else ", ".join(f"{s:g}: {f:.3f}" for s, f, _ in results))
    areas = "check area / elsewhere" if elsewhere else "check area"
    log(f"mix         relaxed F1 by share of the fine-tuned weights, {areas}: {by_share}; kept {best:g}"
        + (" (the best mean of the two)" if elsewhere else ""))
    if floor is not None:
        log(f"mix         road IoU on {len(keep)} of the parent's validation tiles (not in its report) by share: "
            + ", ".join(f"{s:g}: {k:.3f}" for s, _, k in results)
            + f"; shares below {floor:.3f} (the parent's less {FORGET_TOLERANCE:g}) are not kept")
    return best
