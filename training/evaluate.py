"""`python -m training evaluate`: a model on whole tiles, through the engine a user runs, with and without
multi-scale inference: road IoU, F1, relaxed F1 (Mnih's rho = 3 px), APLS, and the all-background mIoU beside the
mIoU so the two-class figure cannot flatter.

Pixel figures pool every pixel of every tile (one confusion matrix); relaxed counts pool the same way; APLS is the
mean over tiles, as SpaceNet scores it. Reference graphs come from vectorizing the reference masks with the same
parameters as the predictions, so both sides go through one skeletonization.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from core.errors import InputError
from core.extraction.extract import ExtractParams, extract_roads
from core.inputs.raster import ArraySource
from core.metrics import (
    AplsParams,
    apls,
    check_reference_area,
    pixel_metrics,
    pixel_metrics_from_counts,
    pooled_length_metrics,
    relaxed_counts,
    relaxed_from_counts,
)
from core.model.checkpoint import RoadModel
from core.options import DEFAULT_SCALES, EvaluateOptions, InferenceOptions
from core.roads.vectorize import PixelGrid, VectorizeParams, vectorize_array

from .data import IGNORE, DataError, find_pairs

MULTI_SCALE = DEFAULT_SCALES
TABLE_COLUMNS = ("road_iou", "f1", "precision", "recall", "relaxed_f1", "apls", "miou", "miou_all_background")


@dataclass(kw_only=True)
class Inference(InferenceOptions):
    """How the engine runs on each tile: the options a user gives `road-extractor extract`, but one scale by
    default (as the model card measures)."""

    scales: tuple[float, ...] = (1.0,)
    # Training scores the torch network it holds in memory (fine-tuning's mixes differ from any file); the other
    # runtimes are gated against torch on their own (tests/test_runtimes.py), and an export per mix would cost
    # seconds each.
    runtime: str = "torch"

    def extract_params(self) -> ExtractParams:
        return ExtractParams(**self.inference_options(), overwrite=True)

    @property
    def arithmetic(self) -> str:
        """The precision this inference runs at on this machine (fp32, bf16, fp16): recorded with its figures, as
        line figures on one raster move with bf16 rounding alone (README, "Candidates and the rule")."""
        from core.extraction.devices import resolve_device, resolve_precision

        return resolve_precision(self.precision, resolve_device(self.device)).name

    @property
    def label(self) -> str:
        scales = "1.0" if self.scales == (1.0,) else "/".join(f"{s:g}" for s in self.scales)
        return (f"scales {scales}" + ("" if self.augment == "none" else f" + {self.augment}")
                + ("" if self.brightness == "auto" else f", brightness {self.brightness}"))


def with_and_without_multiscale(tile: int, overlap: int, brightness: str = "auto",
                                precision: str = "auto") -> list[Inference]:
    return [Inference(scales=scales, tile=tile, overlap=overlap, brightness=brightness, precision=precision)
            for scales in ((1.0,), MULTI_SCALE)]


@dataclass
class Scores:
    confusion: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))  # tp, fp, fn, tn
    relaxed: np.ndarray = field(default_factory=lambda: np.zeros(4, np.int64))
    apls: list[float] = field(default_factory=list)
    tiles: list[dict] = field(default_factory=list)

    def summary(self, rho: float) -> dict:
        pixels = pixel_metrics_from_counts(*(int(v) for v in self.confusion))
        apls_mean = float(np.mean(self.apls)) if self.apls else float("nan")
        return {**pixels, **relaxed_from_counts(self.relaxed, rho), "apls": apls_mean, "tiles": len(self.tiles),
                "tile_names": [row["tile"] for row in self.tiles]}


def confusion(predicted: np.ndarray, target: np.ndarray) -> np.ndarray:
    """tp, fp, fn, tn of a boolean road prediction against a target with IGNORE pixels left out."""
    keep = target != IGNORE
    p, t = predicted[keep].astype(bool), target[keep] == 1
    return np.array([np.count_nonzero(p & t), np.count_nonzero(p & ~t), np.count_nonzero(~p & t),
                     np.count_nonzero(~p & ~t)], np.int64)


def predict_tile(model: RoadModel, image: np.ndarray, valid: np.ndarray, gsd_m: float,
                 inference: Inference) -> tuple[np.ndarray, np.ndarray]:
    """Probability (0..1) and road mask of one in-memory tile, through `extract_roads` exactly as a user runs it.

    The outputs go to a scratch folder named after this process in one shared folder, where each call first removes
    the folders of processes that are gone: a scoring run killed with -9 (a fine-tune's) leaves nothing for good."""
    from core.atomic import remove_stale_scratch
    from core.extraction.extract import SCRATCH_PREFIX

    shared = Path(tempfile.gettempdir()) / "road-extractor-scoring"
    shared.mkdir(exist_ok=True)
    remove_stale_scratch(shared, SCRATCH_PREFIX)
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=shared) as folder:
        result = extract_roads(ArraySource(image, gsd_m=gsd_m, valid=valid), model, folder,
                               inference.extract_params())
        with rasterio.open(result.probability) as ds:
            probability = ds.read(1).astype(np.float32) / 255
        with rasterio.open(result.mask) as ds:
            mask = ds.read(1) == 1
    return probability, mask


def evaluate_tiles(model: RoadModel, tiles: Iterable[tuple[str, np.ndarray, np.ndarray]], gsd_m: float,
                   inferences: Iterable[Inference], rho: float = 3.0, graphs: bool = True,
                   vectorize: VectorizeParams | None = None, log=lambda message: None) -> dict[str, dict]:
    """{inference label: summary} for (name, uint8 image [H, W, 3], target [H, W] with 0/1/IGNORE) tiles."""
    inferences = list(inferences)
    scores = {inference.label: Scores() for inference in inferences}
    vectorize = vectorize or VectorizeParams()
    for name, image, target in tiles:
        valid = target != IGNORE
        grid = PixelGrid((0.0, gsd_m, 0.0, 0.0, 0.0, -gsd_m), (gsd_m, gsd_m))
        reference_lines = vectorize_array((target == 1).astype(np.float32), grid, vectorize).roads if graphs \
            else None
        for inference in inferences:
            probability, mask = predict_tile(model, image, valid, gsd_m, inference)
            s = scores[inference.label]
            counts = confusion(mask, target)
            s.confusion += counts
            s.relaxed += relaxed_counts(mask, target == 1, rho, ~valid)
            row = {"tile": name, **pixel_metrics(mask, target == 1, ~valid)}
            if graphs:
                probability[~valid] = 0
                proposal = vectorize_array(probability, grid, vectorize).roads
                row["apls"] = apls(reference_lines, proposal, AplsParams())["apls"] if reference_lines \
                    else float("nan")
                if not math.isnan(row["apls"]):
                    s.apls.append(row["apls"])
            s.tiles.append(row)
            log(f"{name:<24} {inference.label:<22} road IoU {row['road_iou']:.4f}"
                + (f"  APLS {row['apls']:.4f}" if graphs else ""))
    return {i.label: {**scores[i.label].summary(rho), "arithmetic": i.arithmetic} for i in inferences}


PLACE_COLUMNS = ("tiles", "road_iou", "relaxed_precision", "relaxed_recall", "relaxed_f1", "apls")
# Relaxed precision and recall of the per-place table count a pixel within this many metres (3 px at 1 m, Mnih's).
PLACE_RHO_M = 3.0
# Surface labels are scored as their centreline buffers with the rest of the surface ignored, so a model that paints
# whole road surfaces and one that paints centre bands are scored on the same pixels.
PLACE_TARGET = "centreline"


def evaluate_places(model: RoadModel | Callable[[float], tuple[RoadModel, str]], split, gsd_m: float,
                    inference: Inference, log=lambda message: None) -> dict[str, dict]:
    """{place: summary} over the held-out images of each place (`Split.places`): pixels pooled within a place;
    APLS for the first place only (Massachusetts' tiles, whose figure the model file has always recorded).
    `model` may be a choice instead (the imagery's stored GSD -> model and its name, as the engine picks from a
    models folder): each place is then scored by the model the engine would run on its imagery."""
    from dataclasses import replace

    from .data import read_pair

    places = {}
    for index, (place, held) in enumerate(split.places.items()):
        first = held[0][0]
        place_model, name = model(first.image_gsd_m or first.gsd_m) if callable(model) else (model, None)
        tiles = ((pair.name, *read_pair(replace(pair, target=PLACE_TARGET), labels)) for pair, labels in held)
        summary = evaluate_tiles(place_model, tiles, gsd_m, [inference], rho=PLACE_RHO_M / gsd_m,
                                 graphs=index == 0, log=log)[inference.label]
        places[place] = {**summary, "rho_m": PLACE_RHO_M, "table_gsd_m": gsd_m, **({"model": name} if name else {})}
    return places


def mean_relaxed_f1(places: dict[str, dict]) -> float:
    """The per-place table's headline: the mean over places of each place's pooled relaxed F1 (places weigh alike,
    whatever their pixel counts)."""
    return float(np.mean([summary["relaxed_f1"] for summary in places.values()]))


def format_places(places: dict[str, dict]) -> str:
    by_model = any("model" in summary for summary in places.values())  # a models folder: who scored each place
    columns = PLACE_COLUMNS + (("model",) if by_model else ())
    lines = ["| place | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for place, summary in places.items():
        cells = [str(summary.get(c, "")) if c in ("tiles", "model") else f"{summary[c]:.4f}"
                 if math.isfinite(summary[c]) else "" for c in columns]
        lines.append(f"| {place} | " + " | ".join(cells) + " |")
    lines.append(f"| mean over {len(places)} places | | | | | {mean_relaxed_f1(places):.4f} | |"
                 + (" |" if by_model else ""))
    return "\n".join(lines)


def format_results(results: dict[str, dict], columns: tuple[str, ...] = TABLE_COLUMNS) -> str:
    """A Markdown table, one row per inference setting."""
    lines = ["| inference | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, summary in results.items():
        cells = [f"{summary[c]:.4f}" if isinstance(summary.get(c), float) else str(summary.get(c, "")) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MAX_LINE_SHIFTS = 64
LINE_COLUMNS = ("completeness", "correctness", "quality", "apls", "reference_km", "proposal_km")


def line_references(folders: Iterable[str]) -> list:
    """The rasters with reference road centrelines (`Pair`s) in `--lines` folders; none given, none returned."""
    pairs = []
    for folder in folders:
        try:
            found = [p for p in find_pairs(folder) if p.has_vector_roads]
        except DataError:  # not a folder, or a folder of no pairs of any kind: the same answer for --lines
            found = []
        if not found:
            raise InputError(f"--lines {folder}: no NAME.tif + NAME_roads.geojson|gpkg pairs there; give a folder of "
                             f"georeferenced rasters beside their road centrelines (e.g. ../shared/data/spacenet)")
        for pair in found:  # a bad NAME_area file is refused now, not after its raster's first extraction
            if pair.area is not None:
                try:
                    check_reference_area(pair.mask, pair.area)
                except InputError as exc:
                    raise InputError(f"--lines {folder}: {str(exc).removeprefix('--area ')}") from None
        pairs += found
    return pairs


def checked_line_shifts(shifts) -> int:
    """`--line-shifts`: how many origins each reference raster is scored from (1: the raster as it is)."""
    if not isinstance(shifts, int) or not 1 <= shifts <= MAX_LINE_SHIFTS:
        raise InputError(f"--line-shifts {shifts!r}: give a whole number from 1 (the raster as it is) to "
                         f"{MAX_LINE_SHIFTS}")
    return shifts


def shifted_copy(image: Path, shift: int, folder: Path) -> Path:
    """A GeoTIFF of `image` without its first `shift` rows and columns, georeferencing kept: the same ground on a
    processing grid whose origin lies `shift` input pixels further in (copied block by block)."""
    from rasterio.windows import Window as RioWindow

    out = folder / f"{image.stem}_shift{shift}.tif"
    with rasterio.open(image) as ds:
        if shift >= min(ds.width, ds.height) // 2:
            raise InputError(f"{image}: {ds.width}x{ds.height} px is too small to move its origin {shift} px in; "
                             f"give fewer --line-shifts")
        dataset_mask = any(flag.name == "per_dataset" for flag in ds.mask_flag_enums[0])
        window = RioWindow(shift, shift, ds.width - shift, ds.height - shift)
        profile = {**ds.profile, "driver": "GTiff", "width": window.width, "height": window.height,
                   "transform": ds.window_transform(window), "tiled": True, "blockxsize": 256, "blockysize": 256}
        with rasterio.open(out, "w", **profile) as copy:
            copy.colorinterp = ds.colorinterp
            for row in range(0, int(window.height), 1024):
                rows = min(1024, int(window.height) - row)
                block = RioWindow(0, row, window.width, rows)
                copy.write(ds.read(window=RioWindow(shift, shift + row, window.width, rows)), window=block)
                if dataset_mask:  # alpha bands and NoData values travel with the bands and the profile
                    copy.write_mask(ds.dataset_mask(window=RioWindow(shift, shift + row, window.width, rows)),
                                    window=block)
    return out


def evaluate_line_references(model: RoadModel, pairs, inferences: Iterable[Inference], buffer_m: float = 5.0,
                             shifts: int = 1, log=lambda message: None) -> dict[str, dict]:
    """{inference label: pooled figures} for georeferenced rasters with reference road centrelines (`Pair`s with
    vector labels, e.g. SpaceNet's tile and its roads): each raster goes through `extract_roads` and
    `vectorize_file` as a user runs them, and the extracted lines are scored against the reference lines by
    length within `buffer_m` (completeness, correctness, quality; Wiedemann 1998) and by APLS. Completeness and
    correctness are pooled by length over the rasters, APLS averaged. A pair with an `area` (where its reference is
    complete) is scored inside it only; pairs that share a raster share its extraction.

    `shifts` > 1 scores each raster again with its first 1, 2, ... shifts-1 rows and columns cut off, and gives the
    mean over the shifts (`*_sd`: their spread). Why: on the Vegas tile the shipped model's completeness moves
    between 0.05 and 0.16 with the raster's origin alone (resampling 0.3 m to 1 m puts each pixel of the model's
    grid elsewhere on the ground), so one origin's figure cannot tell two models apart (the model card's "How
    noisy is the Vegas tile?")."""
    from core.inputs.raster import RasterioSource
    from core.metrics import LINE_METRIC_VERSION, evaluate_files
    from core.roads.vectorize import vectorize_file

    checked_line_shifts(shifts)
    inferences = list(inferences)
    rows: dict[str, list[dict]] = {inference.label: [] for inference in inferences}
    # Pairs that share a raster (its halves' references and areas, say) are scored on one extraction of it.
    by_image: dict[Path, list] = {}
    for pair in pairs:
        by_image.setdefault(Path(pair.image).resolve(), []).append(pair)
    with tempfile.TemporaryDirectory() as copies:
        for image_path, sharing in by_image.items():
            for shift in range(shifts):
                image = image_path if shift == 0 else shifted_copy(image_path, shift, Path(copies))
                for inference in inferences:
                    with tempfile.TemporaryDirectory() as folder, RasterioSource(image) as source:
                        result = extract_roads(source, model, folder, inference.extract_params())
                        roads = Path(folder) / "roads.gpkg"
                        vectorize_file(result.probability, roads, overwrite=True, workers=1)
                        for pair in sharing:
                            figures = evaluate_files(roads, pair.mask, EvaluateOptions(buffer_m=buffer_m),
                                                     area=pair.area)
                            # Two areas of one raster are told apart by their folders (west/, east/).
                            name = pair.image.name + (f" in {pair.area.parent.name}/{pair.area.name}" if pair.area
                                                      else "")
                            rows[inference.label].append({"raster": name, "shift": shift,
                                                          **{k: figures[k] for k in LINE_COLUMNS}})
                            log(f"{name:<24} {inference.label:<22} "
                                + (f"shift {shift} px  " if shifts > 1 else "")
                                + f"completeness {figures['completeness']:.3f}  correctness "
                                  f"{figures['correctness']:.3f}  APLS {figures['apls']:.3f}")
    references = list(dict.fromkeys(row["raster"] for row in next(iter(rows.values()), [])))
    overlapping = any(_areas_overlap(sharing) for sharing in by_image.values())
    results = {}
    for inference in inferences:
        figures = _mean_over_shifts(rows[inference.label], shifts)
        if len(references) > 1:
            figures["by_reference"] = {
                name: _mean_over_shifts([r for r in rows[inference.label] if r["raster"] == name], shifts)
                for name in references}
        results[inference.label] = {**figures, "shifts": shifts, "buffer_m": buffer_m,
                                    "metric_version": LINE_METRIC_VERSION, "arithmetic": inference.arithmetic,
                                    "references": references, "overlapping_references": overlapping,
                                    "rasters": rows[inference.label]}
    return results


def _areas_overlap(pairs) -> bool:
    """Whether reference sets of one raster cover shared ground (a whole raster beside an area of it, or two areas
    that intersect): their pooled figure would count that ground more than once. Two halves do not overlap."""
    import shapely

    from core.inputs.vectors import read_polygons

    if len(pairs) < 2:
        return False
    if any(pair.area is None for pair in pairs):
        return True
    with rasterio.open(pairs[0].image) as ds:
        crs = ds.crs.to_wkt() if ds.crs else None
    areas = [shapely.union_all(read_polygons(pair.area, crs)) for pair in pairs]
    return any(a.intersection(b).area > 1e-6 * min(a.area, b.area)
               for i, a in enumerate(areas) for b in areas[i + 1:])


def _mean_over_shifts(rows: list[dict], shifts: int) -> dict:
    """Figures pooled over the reference sets of each origin shift, then the mean (and spread) over the shifts."""
    by_shift = []
    for shift in range(shifts):
        of_shift = [r for r in rows if r["shift"] == shift]
        by_shift.append({**pooled_length_metrics(of_shift), "apls": float(np.mean([r["apls"] for r in of_shift]))})
    figures = {name: float(np.mean([f[name] for f in by_shift])) for name in by_shift[0]}
    if shifts > 1:
        figures.update({f"{name}_sd": float(np.std([f[name] for f in by_shift], ddof=1))
                        for name in ("completeness", "correctness", "quality", "apls")})
        figures["by_shift"] = by_shift
    return figures


def format_line_results(results: dict[str, dict]) -> str:
    """The pooled table and, where several reference sets were scored, one table row per set and inference."""
    text = format_results(results, LINE_COLUMNS)
    sets = [(f"{label}, {name}", figures) for label, summary in results.items()
            for name, figures in summary.get("by_reference", {}).items()]
    if sets:
        text += "\n\nby reference set:\n" + format_results(dict(sets), LINE_COLUMNS)
    if any(summary.get("overlapping_references") for summary in results.values()):
        text += ("\n\nsome reference sets cover one raster (areas of it): the pooled row counts their shared ground "
                 "more than once; read the rows by reference set")
    return text
