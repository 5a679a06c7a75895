"""Georeferenced extraction: raster windows -> model -> blended probabilities -> probability and mask GeoTIFFs.

The raster is processed in rows of overlapping tiles on a grid at the model's ground sample distance. Each row's
predictions are blended into a band of rows; the rows that no later tile can touch are written out and dropped,
so memory holds one band of rows, whatever the raster's size. The outputs are then resampled to the input's grid
(or kept at the model's), masked where the input has no data, and written as Cloud Optimized GeoTIFFs through
temporary files that are renamed only when everything succeeded.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from core import __version__
from core.atomic import check_output_file, folder_lock, remove_if_empty, remove_stale_scratch, storage_refused
from core.errors import InputError, OutputError
from core.extraction.brightness import apply_gamma, match_brightness
from core.extraction.devices import DeviceError, resolve_device, resolve_precision
from core.extraction.inference import normalize, predict_probabilities
from core.extraction.runtimes import Runtime, open_runtime
from core.inputs.area import Area
from core.inputs.raster import RasterError, RasterInfo, Window, WindowSource
from core.inputs.tiling import Tile, TileGrid, TilePart, blend_weights
from core.model.checkpoint import RoadModel
from core.options import InferenceOptions
from core.progress import Cancelled, CancelToken, Progress

GSD_WARN_FACTOR = 4.0
GDAL_CACHE_MB = 256
OUTPUT_BLOCK = 512
SCRATCH_PREFIX = ".road-extractor-"  # + the run's process id: a later run removes those of runs that died


@dataclass(kw_only=True)
class ExtractParams(InferenceOptions):
    """The options of `core.options.InferenceOptions` (defaults and checks live there) and whether to replace
    existing outputs. (The tile plan is always fitted to the area; a region block gets its part of the plan of the
    whole mosaic through `Area.tiles`.)"""

    overwrite: bool = False
    refuse_empty: bool = True  # an area without one valid pixel is refused; a region's empty block is not
    gamma: float | None = None  # the brightness curve: None measures it here (`brightness`); region runs give the
    # one measured on the whole mosaic. The outputs' metadata records the one applied.


@dataclass
class ExtractResult:
    probability: Path
    mask: Path
    tiles: int
    seconds: float
    input_megapixels: float
    road_fraction: float
    notes: list[str]
    network_seconds: float = 0.0  # of `seconds`, the time the network itself ran: the rest is the engine's


# ---------------------------------------------------------------------------------------------- the engine


def output_paths(source_path: str, out_dir: Path) -> tuple[Path, Path]:
    stem = Path(source_path).stem if source_path != "<array>" else "array"
    return out_dir / f"{stem}_road_probability.tif", out_dir / f"{stem}_road_mask.tif"


class _Predictor:
    """Batches of tiles -> road probabilities, halving the batch on CUDA out-of-memory."""

    def __init__(self, model: RoadModel, params: ExtractParams, log: Callable[[str], None]) -> None:
        self.device = resolve_device(params.device)
        self.precision = resolve_precision(params.precision, self.device)
        self.runtime = open_runtime(params.runtime, model, self.device, self.precision, params.precision, log)
        self.torch = self.runtime.name == "torch"
        self.autocast = self.precision.autocast if self.torch else None  # other runtimes choose their own
        self.network = self.runtime.network.to(self.device).eval()
        if self.device.type == "cpu" and self.torch:
            # channels_last is the faster CPU layout; `restore` puts the caller's network back as it was.
            self.network = self.network.to(memory_format=torch.channels_last)
        self.normalization = model.info.normalization
        self.params = params
        self.batch_size = max(1, params.batch_size)
        self.log = log
        self.seconds = 0.0

    def restore(self) -> None:
        if self.torch:
            self.network.to(memory_format=torch.contiguous_format)

    def __call__(self, images: np.ndarray, after_pass: Callable[[int, int], None] | None = None) -> np.ndarray:
        out = []
        start = 0
        while start < len(images):
            chunk = images[start:start + self.batch_size]
            try:
                out.append(self._run(chunk, after_pass))
                start += len(chunk)
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise DeviceError("the GPU ran out of memory with one tile per batch; use a smaller tile size "
                                      "(--tile) or the CPU (--device cpu)") from None
                self.batch_size //= 2
                torch.cuda.empty_cache()
                self.log(f"CUDA out of memory: batch size halved to {self.batch_size}, continuing")
        return np.concatenate(out)

    def _run(self, images: np.ndarray, after_pass) -> np.ndarray:
        started = time.perf_counter()
        try:
            return self._forward(images, after_pass)
        finally:
            self.seconds += time.perf_counter() - started

    def _forward(self, images: np.ndarray, after_pass) -> np.ndarray:
        x = torch.from_numpy(images).to(self.device)
        x = normalize(x, self.normalization)
        if self.device.type == "cpu" and self.torch:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.autocast is not None:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    probabilities = predict_probabilities(self.network, x, self.params.scales, self.params.augment,
                                                          after_pass)
            else:
                probabilities = predict_probabilities(self.network, x, self.params.scales, self.params.augment,
                                                      after_pass)
        return probabilities[:, 1].float().cpu().numpy()


@dataclass
class _Grid:
    """The processing grid: the input's pixel grid scaled so that a pixel is the model's GSD on the ground."""

    scale_x: float  # processing pixels per input pixel
    scale_y: float
    width: int
    height: int

    def to_input(self, x: float, y: float, w: float, h: float) -> Window:
        return Window(x / self.scale_x, y / self.scale_y, w / self.scale_x, h / self.scale_y)


def processing_grid(info: RasterInfo, model_gsd: float | None, notes: list[str]) -> _Grid:
    if info.gsd_m is None:
        raise RasterError(f"{info.path} has no georeferencing, so its ground sample distance is unknown; give "
                          f"--gsd METRES_PER_PIXEL (1.0 for the Massachusetts Roads tiles)")
    if model_gsd is None:
        notes.append("warning: the model file does not say its training GSD: processing at the input's own "
                     "resolution (record it with road-extractor export MODEL --model-file OUT --gsd M)")
        return _Grid(1.0, 1.0, info.width, info.height)
    sx, sy = info.gsd_m[0] / model_gsd, info.gsd_m[1] / model_gsd
    ratio = max(sx, sy, 1 / sx, 1 / sy)
    if ratio > GSD_WARN_FACTOR:
        notes.append(f"warning: the input is {info.gsd_m[0]:.3g} m/px and the model was trained at {model_gsd:g} "
                     f"m/px ({ratio:.1f}x apart): expect poorer roads; a model trained nearer this resolution "
                     f"will do better")
    if abs(sx - 1) < 1e-3 and abs(sy - 1) < 1e-3:
        return _Grid(1.0, 1.0, info.width, info.height)
    return _Grid(sx, sy, max(1, round(info.width * sx)), max(1, round(info.height * sy)))


def _computed_window(area: Area, grid: _Grid, params: ExtractParams) -> tuple[int, int, int, int]:
    """The processing-grid window to run the network on: the area, plus `overlap` pixels of context around it,
    grown to at least one tile where the raster allows, so that a small area still gets a full tile of context."""

    def span(low: float, high: float, scale: float, size: int) -> tuple[int, int]:
        start = max(0, math.floor(low * scale) - params.overlap)
        stop = min(size, math.ceil(high * scale) + params.overlap)
        missing = min(params.tile, size) - (stop - start)
        if missing > 0:
            start = max(0, start - missing // 2)
            stop = min(size, start + min(params.tile, size))
            start = stop - min(params.tile, size, stop)
        return start, stop

    x0, x1 = span(area.x0, area.x1, grid.scale_x, grid.width)
    y0, y1 = span(area.y0, area.y1, grid.scale_y, grid.height)
    return x0, y0, x1, y1


def _tile_touches(tile: Tile, grid: _Grid, info: RasterInfo, polygons: Sequence) -> bool:
    if not polygons:
        return True
    from shapely.geometry import box

    window = grid.to_input(tile.x, tile.y, tile.width, tile.height)
    x0, dx, _, y0, _, dy = info.transform or (0, 1, 0, 0, 0, 1)
    xa, xb = x0 + window.x * dx, x0 + (window.x + window.width) * dx
    ya, yb = y0 + window.y * dy, y0 + (window.y + window.height) * dy
    footprint = box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
    return any(footprint.intersects(p) for p in polygons)


def extract_roads(source: WindowSource, model: RoadModel, out_dir: str | Path, params: ExtractParams | None = None,
                  area: Area | None = None, progress: Callable[[Progress], None] | None = None,
                  cancel: CancelToken | None = None, log: Callable[[str], None] = lambda message: None,
                  also: Callable[[Path, Path], list[tuple[Path, Path]]] | None = None) -> ExtractResult:
    """Runs the model over `area` of `source` and writes `<name>_road_probability.tif` and `<name>_road_mask.tif`
    in `out_dir`. Raises RasterError on bad input before any work, Cancelled when `cancel` is set; in both
    cases no output file is left behind.

    `also(probability, scratch)`: more outputs made from the finished probability raster before anything is
    published (the road GeoPackage); it returns (made, target) pairs. The outputs replace earlier ones only once
    every one of them is complete, so a run that fails at any stage leaves the previous results as they were."""
    params = params or ExtractParams()
    info = source.info
    out_dir = Path(out_dir)
    probability_path, mask_path = output_paths(info.path, out_dir)
    created = _check_outputs(out_dir, (probability_path, mask_path), params.overwrite)
    try:
        with folder_lock(out_dir, lambda pid: OutputError(
                f"another run (process {pid}) is writing into {out_dir}; wait for it to finish or choose another "
                f"output folder")):
            # Checked again under the lock: a run that held it a moment ago may just have written them.
            _check_outputs(out_dir, (probability_path, mask_path), params.overwrite)
            return _extract(source, model, out_dir, params, area, progress, cancel, log,
                            (probability_path, mask_path), also)
    except BaseException:
        if created:
            remove_if_empty(out_dir)  # a failed or cancelled run leaves nothing, not even the folder it made
        raise


def _extract(source: WindowSource, model: RoadModel, out_dir: Path, params: ExtractParams, area: Area | None,
             progress, cancel: CancelToken | None, log: Callable[[str], None], paths: tuple[Path, Path],
             also=None) -> ExtractResult:
    info = source.info
    probability_path, mask_path = paths
    if len(info.bands) != model.info.config.in_channels:
        raise RasterError(f"{info.path}: {len(info.bands)} band(s) chosen ({', '.join(map(str, info.bands))}) but "
                          f"the model takes {model.info.config.in_channels} ({', '.join(model.info.bands)}); give "
                          f"that many with --bands")
    notes = list(info.notes)
    grid = processing_grid(info, model.info.gsd_m, notes)
    area = area or Area(0, 0, info.width, info.height)
    try:
        tiling = area.tiles if area.tiles is not None else TileGrid(*_computed_window(area, grid, params),
                                                                    params.tile, params.overlap)
    except ValueError as exc:
        raise RasterError(f"{info.path}: {exc}") from None
    predictor = _Predictor(model, params, log)
    notes.append(f"runtime: {predictor.runtime.why}")
    notes.append(f"precision: {predictor.runtime.precision_why}")
    if params.gamma is None:
        gamma = 1.0
        if params.brightness == "auto":
            match = match_brightness(source, model.info.normalization.brightness)
            gamma = match.gamma
            notes.append(match.note())
        params = replace(params, gamma=gamma)  # the outputs' metadata records the curve applied
    elif params.gamma != 1.0:
        notes.append(f"brightness: gamma {params.gamma:.2f}, measured on the whole mosaic")
    for note in notes:
        log(note)

    started = time.perf_counter()
    remove_stale_scratch(out_dir, SCRATCH_PREFIX)
    # GDAL's block cache defaults to 5% of RAM and fills up while the outputs are written; a fixed cap keeps peak
    # memory independent of the machine and of the raster's size.
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=out_dir) as scratch, \
            warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        # Rasters in pixel space (no georeferencing) are legitimate here; rasterio warns about each one it writes.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        scratch_path = Path(scratch)
        processing_file = scratch_path / "processing.tif"
        try:
            try:
                _infer_to_file(source, grid, tiling, area.polygons, predictor, processing_file, params, progress,
                               cancel, started)
            finally:
                predictor.restore()
            if progress:
                progress(Progress(1.0, len(tiling), len(tiling), 0.0, None, stage="writing"))
            road_fraction = _write_outputs(source, grid, processing_file, (tiling.x0, tiling.y0), area, model,
                                           params, predictor.runtime, scratch_path,
                                           (probability_path, mask_path), cancel, also)
        except (InputError, Cancelled):
            raise
        except Exception as exc:
            refused = storage_refused(exc, out_dir, [scratch_path])
            if refused:
                raise OutputError(f"could not write the outputs in {out_dir}: {refused}") from exc
            raise
    seconds = time.perf_counter() - started
    megapixels = (area.x1 - area.x0) * (area.y1 - area.y0) / 1e6
    return ExtractResult(probability_path, mask_path, len(tiling), seconds, megapixels, road_fraction, notes,
                         predictor.seconds)


def _check_outputs(out_dir: Path, paths: Sequence[Path], overwrite: bool) -> bool:
    """Refuses outputs that cannot or may not be written; returns whether the output folder was made here."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"the output folder {out_dir} is a file; choose a folder for the outputs")
    existed = out_dir.exists()
    for path in paths:
        check_output_file(path, overwrite, "--overwrite; Overwrite in QGIS")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output folder {out_dir} ({exc.strerror}); choose a folder you can "
                          f"write to") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"the output folder {out_dir} is not writable; choose a folder you can write to")
    return not existed


def _infer_to_file(source: WindowSource, grid: _Grid, tiling: TileGrid | TilePart, polygons, predictor: _Predictor,
                   path: Path, params: ExtractParams, progress, cancel: CancelToken | None, started: float) -> None:
    """Streams blended probabilities (band 1, 0..255) and validity (band 2) over the processing grid to `path`;
    each tile's values go through the brightness curve (`params.gamma`) first."""
    from rasterio.windows import Window as RioWindow

    rows = tiling.rows()
    total = sum(len(r) for r in rows)
    width = tiling.x1 - tiling.x0
    band_height = rows[0][0].height  # a tile row spans these rows; everything above it is already written
    weighted = np.zeros((band_height, width), np.float32)
    weights = np.zeros((band_height, width), np.float32)
    seen = np.zeros((band_height, width), bool)
    band_top = tiling.y0  # processing row held at index 0 of the band
    done = 0
    any_valid = False

    def report(tiles_done: float) -> None:
        if progress:
            elapsed = time.perf_counter() - started
            fraction = tiles_done / total
            input_pixels = fraction * (tiling.x1 - tiling.x0) * (tiling.y1 - tiling.y0) / (grid.scale_x * grid.scale_y)
            progress(Progress(fraction, int(tiles_done), total, input_pixels / 1e6 / max(elapsed, 1e-9),
                              elapsed * (1 - fraction) / fraction if fraction > 0 else None))

    def after_pass(passes_done: int, passes_total: int) -> None:
        """Within a batch: a cancel acts after the current pass, and a one-tile raster shows progress too."""
        if passes_done < passes_total:
            report(done + len(live) * passes_done / passes_total)
        if cancel is not None and cancel.cancelled:
            raise Cancelled("cancelled")

    profile = dict(driver="GTiff", width=width, height=tiling.y1 - tiling.y0, count=2, dtype="uint8", tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", BIGTIFF="IF_SAFER")
    with rasterio.open(path, "w", **profile) as out:
        for index, row in enumerate(rows):
            todo = [t for t in row if _tile_touches(t, grid, source.info, polygons)]
            done += len(row) - len(todo)  # tiles outside the polygons count as done
            for start in range(0, len(todo), predictor.batch_size):
                if cancel is not None and cancel.cancelled:
                    raise Cancelled("cancelled")
                batch = todo[start:start + predictor.batch_size]
                reads = [source.read(grid.to_input(t.x, t.y, t.width, t.height), (t.height, t.width)) for t in batch]
                # Tiles without one valid pixel (NoData, alpha 0) add nothing to the blend: the network skips them.
                live = [(tile, valid, apply_gamma(values, params.gamma)) for tile, (values, valid)
                        in zip(batch, reads, strict=True) if valid.any()]
                probabilities = predictor(np.stack([values for _, _, values in live]), after_pass) if live else []
                any_valid = any_valid or bool(live)
                for (tile, valid, _), probability in zip(live, probabilities, strict=True):
                    w = blend_weights(tile.height, tile.width, tiling.overlap) * valid
                    ys = slice(tile.y - band_top, tile.y - band_top + tile.height)
                    xs = slice(tile.x - tiling.x0, tile.x - tiling.x0 + tile.width)
                    weighted[ys, xs] += probability * w
                    weights[ys, xs] += w
                    seen[ys, xs] |= valid
                done += len(batch)
                report(done)
            # Rows above the next tile row are final: no later tile reaches them.
            final_bottom = rows[index + 1][0].y if index + 1 < len(rows) else tiling.y1
            count = final_bottom - band_top
            if count <= 0:
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                blended = np.where(weights[:count] > 0, weighted[:count] / weights[:count], 0.0)
            block = np.stack([np.round(blended * 255).astype(np.uint8), seen[:count].astype(np.uint8) * 255])
            out.write(block, window=RioWindow(0, band_top - tiling.y0, width, count))
            for buffer in (weighted, weights, seen):
                buffer[:-count] = buffer[count:].copy()
                buffer[-count:] = 0
            band_top = final_bottom
    if not any_valid and params.refuse_empty:
        raise RasterError(f"{source.info.path}: no valid pixel in the area to extract - every pixel is NoData, "
                          f"masked or transparent; check the raster's NoData value and alpha band (gdalinfo), or "
                          f"choose an area with imagery")


def _write_outputs(source: WindowSource, grid: _Grid, processing_file: Path, processing_origin: tuple[int, int],
                   area: Area, model: RoadModel, params: ExtractParams, runtime: Runtime, scratch: Path,
                   targets: tuple[Path, Path], cancel, also=None) -> float:
    """Resamples the processing-grid result to the output grid block by block, masks NoData and the area, and
    writes both outputs as Cloud Optimized GeoTIFFs, renamed into place only at the end."""
    from rasterio.enums import Resampling
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import Affine
    from rasterio.windows import Window as RioWindow

    info = source.info
    at_input = params.output_resolution == "input" or (grid.scale_x == 1.0 and grid.scale_y == 1.0)
    sx, sy = (1.0, 1.0) if at_input else (grid.scale_x, grid.scale_y)
    # The output covers the area; its pixels are input pixels (at_input) or processing pixels.
    ox0, oy0 = math.floor(area.x0 * sx), math.floor(area.y0 * sy)
    ox1 = min(math.ceil(area.x1 * sx), info.width if at_input else grid.width)
    oy1 = min(math.ceil(area.y1 * sy), info.height if at_input else grid.height)
    width, height = ox1 - ox0, oy1 - oy0
    base = Affine.from_gdal(*info.transform) if info.transform else Affine.identity()
    transform = base * Affine.scale(1 / sx, 1 / sy) * Affine.translation(ox0, oy0)
    crs = info.crs_wkt
    processing_x0, processing_y0 = processing_origin
    tags = {
        "ROAD_EXTRACTOR_VERSION": __version__,
        "ROAD_EXTRACTOR_MODEL": json.dumps({"file": Path(model.report.source).name, **model.info.to_dict()}),
        "ROAD_EXTRACTOR_PARAMS": json.dumps({**asdict(params), "precision_used": runtime.precision,
                                             "runtime_used": runtime.name, "runtime_why": runtime.why,
                                             "input": info.path, "input_gsd_m": info.gsd_m,
                                             "processing_scale": [grid.scale_x, grid.scale_y]}),
    }
    common = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=crs, transform=transform,
                  tiled=True, blockxsize=OUTPUT_BLOCK, blockysize=OUTPUT_BLOCK, compress="deflate", BIGTIFF="IF_SAFER")
    drafts = scratch / "probability.tif", scratch / "mask.tif"
    road_pixels = valid_pixels = 0
    threshold = round(params.threshold * 255)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
            rasterio.open(processing_file) as processed, \
            rasterio.open(drafts[0], "w", **common) as probability_out, \
            rasterio.open(drafts[1], "w", nodata=255, **common) as mask_out:
        for row in range(0, height, OUTPUT_BLOCK):
            if cancel is not None and cancel.cancelled:
                raise Cancelled("cancelled")
            rows = min(OUTPUT_BLOCK, height - row)
            # This block's rows in processing-grid pixels, relative to the processing file's origin.
            fy = (oy0 + row) * grid.scale_y / sy - processing_y0
            fx = ox0 * grid.scale_x / sx - processing_x0
            read_window = RioWindow(fx, fy, width * grid.scale_x / sx, rows * grid.scale_y / sy)
            probability = processed.read(1, window=read_window, out_shape=(rows, width), boundless=False,
                                         resampling=Resampling.bilinear)
            computed = processed.read(2, window=read_window, out_shape=(rows, width),
                                      resampling=Resampling.nearest) > 0
            if at_input:  # the input's own mask at its own resolution: exact edges
                valid = source.read_valid(Window(ox0, oy0 + row, width, rows), (rows, width)) & computed
            else:
                valid = computed
            if area.polygons:
                valid &= _polygon_mask(area.polygons, transform * Affine.translation(0, row), (rows, width))
            probability = np.where(valid, probability, 0).astype(np.uint8)
            mask = np.where(valid, (probability >= threshold).astype(np.uint8), 255).astype(np.uint8)
            window = RioWindow(0, row, width, rows)
            probability_out.write(probability, 1, window=window)
            probability_out.write_mask(valid.astype(np.uint8) * 255, window=window)
            mask_out.write(mask, 1, window=window)
            road_pixels += int((mask == 1).sum())
            valid_pixels += int(valid.sum())
        for draft in (probability_out, mask_out):
            draft.update_tags(**tags)
        probability_out.update_tags(1, ROLE="road probability x 255")
        mask_out.update_tags(1, ROLE="1 road, 0 background, 255 no data", THRESHOLD=str(params.threshold))
    finals = []
    for draft, target in zip(drafts, targets, strict=True):
        final = scratch / f"final_{target.name}"
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            rio_copy(draft, final, driver="COG", compress="DEFLATE", blocksize=OUTPUT_BLOCK,
                     overview_resampling="nearest" if draft is drafts[1] else "average")
        finals.append((final, target))
    if also is not None:
        finals += also(finals[0][0], scratch)
    for final, target in finals:  # each a rename on one file system: whole files, old or new
        os.replace(final, target)
    return road_pixels / valid_pixels if valid_pixels else 0.0


def _polygon_mask(polygons, transform, shape: tuple[int, int]) -> np.ndarray:
    from rasterio.features import geometry_mask

    return geometry_mask(polygons, out_shape=shape, transform=transform, invert=True)
