"""Region-scale extraction on Dask distributed: many rasters or one huge mosaic, cut into blocks that workers run
in parallel, assembled into one probability/mask mosaic and one road GeoPackage; resumable after a crash.

- Inputs (files, folders, VRTs) become one GDAL VRT mosaic; they must share a CRS.
- One tile plan is made for the whole mosaic's processing grid: the fitted plan a one-process run of the mosaic
  uses. Blocks are groups of whole tiles of it; each block runs `extract_roads` on the plan's tiles that reach
  its core (its own tiles and the neighbours overlapping them), so every core pixel is blended from the tiles,
  weights and order of the one-process run and the assembled results equal that run's.
- Each finished block's pieces are written to a temporary folder and renamed into place; a manifest records
  finished blocks. Dask retries a block whose worker died on another worker; a re-run of the same command skips
  what the manifest lists, so a crash or Ctrl-C loses only the blocks in flight.
- Pieces are assembled into VRTs (and optionally COGs); the road network is vectorized from the probability VRT
  with the same window-joining code as a single run, so roads crossing block borders are joined exactly.
- One model per worker process, loaded on first use; with several GPUs, worker N uses GPU N modulo their number.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from core.atomic import atomic_output
from core.errors import InputError
from core.frontends.jobs import InferenceJob
from core.inputs.tiling import TileGrid, TilePart

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img")
MANIFEST = "manifest.json"


@dataclass(kw_only=True)
class RegionJob(InferenceJob):
    inputs: list[str]
    out_dir: str
    block: int = 4096  # about this many pixels at the model's resolution per block side, in whole tiles
    cog: bool = False

    def fingerprint(self, blocks: list[Block] | None = None) -> str:
        """What makes two runs the same job: everything that changes a block's pixels, and the blocks themselves
        (their cores and tiles), so pieces cut by another plan are never reused."""
        keys = ("model", "block", "tile", "overlap", "scales", "augment", "brightness", "threshold", "bands",
                "precision")
        plan = [[b.id, list(b.core), [b.tiles.row0, b.tiles.col0, b.tiles.row1, b.tiles.col1],
                 [b.tiles.plan.x1, b.tiles.plan.y1]] for b in blocks or []]
        text = json.dumps({k: getattr(self, k) for k in keys} | {"inputs": [str(p) for p in self.inputs],
                                                                 "plan": plan})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Block:
    row: int
    col: int
    core: tuple[int, int, int, int]  # the input pixels x0, y0, x1, y1 the block's pieces hold
    tiles: TilePart  # the tiles of the mosaic's plan it computes: every one that reaches the core

    @property
    def id(self) -> str:
        return f"r{self.row:04d}_c{self.col:04d}"


@dataclass
class RegionResult:
    probability: Path
    mask: Path
    blocks: int
    blocks_run: int
    seconds: float
    megapixels: float
    roads: Path | None = None
    network: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------- planning


def expand_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputError(f"{path} holds no rasters ({', '.join(RASTER_SUFFIXES)}); give raster files or a "
                                 f"folder of them")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder; check the path")
    return files


def build_mosaic(files: list[Path], out: Path) -> Path:
    """One raster for all inputs: the file itself, or a VRT mosaic (GDAL's BuildVRT) of inputs sharing a CRS."""
    if len(files) == 1:
        return files[0]
    import rasterio
    from osgeo import gdal

    crs, bands = {}, {}
    from core.inputs.raster import check_complete

    for path in files:
        with rasterio.open(path) as ds:
            check_complete(ds, path)  # one damaged file among many: refused now, named, not hours into the run
            crs.setdefault(ds.crs.to_string() if ds.crs else "none", path.name)
            bands.setdefault((ds.count, ds.dtypes[0]), path.name)
    if len(crs) > 1:
        raise InputError(f"the inputs are in different CRSs ({', '.join(f'{c} ({n})' for c, n in crs.items())}); "
                         f"reproject them to one (gdalwarp) or run them separately")
    if len(bands) > 1:
        # GDAL's BuildVRT skips rasters whose bands differ from the first's with a warning only: their area would
        # be missing from the results.
        kinds = ", ".join(f"{n} has {c} {t} band{'s' if c > 1 else ''}" for (c, t), n in bands.items())
        raise InputError(f"the inputs differ in their bands ({kinds}); a mosaic needs the same bands in every raster: "
                         f"run them separately, or make copies alike (gdal_translate -b 1 -b 1 -b 1 for a grey one)")
    gdal.UseExceptions()
    with atomic_output(out) as temporary:
        # The finest input's pixel size (GDAL's default, the average, would blur a 0.3 m orthophoto mosaicked
        # with 1 m ones before the model ever reads it).
        gdal.BuildVRT(str(temporary), [str(p) for p in files],
                      options=gdal.BuildVRTOptions(resolution="highest")).FlushCache()
    return out


def plan_blocks(width_px: int, height_px: int, scale: tuple[float, float], block: int, tile: int, overlap: int,
                input_size: tuple[int, int] | None = None) -> list[Block]:
    """Blocks over a processing grid of width_px x height_px (scale = processing pixels per input pixel; the input
    is `input_size` pixels, by default the grid's size over the scale).

    The tile plan is the one a one-process run of the whole grid uses (`TileGrid` fitted to it). Per axis, its
    tiles are grouped into ceil(length / block) runs of consecutive tiles (at most one group per tile), spread
    evenly. A block's core starts where its first tile starts (in input pixels; off the model's resolution a few
    pixels before) and ends where the next block's starts. The block computes every plan tile that reaches into
    its core (and, off the model's resolution, into the few pixels around it that resampling to the input's grid
    reads): at the model's resolution, its own tiles and the last tile of the block before it, which overlaps
    them. Every core pixel is then blended from the same tiles, with the same weights in the same order, as in
    the one-process run."""
    plan = TileGrid(0, 0, width_px, height_px, tile, overlap)
    rows = plan.rows()
    if input_size is None:
        input_size = (math.ceil(width_px / scale[0] - 1e-6), math.ceil(height_px / scale[1] - 1e-6))

    def groups(origins: list[int], size: int, length: int, s: float, input_length: int
               ) -> list[tuple[int, int, int, int]]:
        """(core start, core end) in input pixels and (first, stop) tile indices, per group along one axis."""
        count = len(origins)
        n = min(count, max(1, math.ceil(length / block)))
        cuts = [round(i * count / n) for i in range(n + 1)]
        # Bilinear resampling to the input's grid reads a pixel or two (more when it shrinks) around the core:
        # off the model's resolution a core ends that far before the next block's first tile starts.
        margin = 0 if s == 1.0 else math.ceil(max(1.0, s)) + 1
        edges = [0]
        for c in cuts[1:-1]:
            edge = math.floor((origins[c] - margin) / s)
            if edges[-1] < edge < input_length:  # far off the model's resolution two edges can meet: no empty core
                edges.append(edge)
        edges.append(input_length)
        out = []
        for a, b in zip(edges, edges[1:], strict=False):
            low, high = math.floor(a * s) - margin, math.ceil(b * s) + margin
            reaching = [i for i, o in enumerate(origins) if o < high and o + size > low]
            out.append((a, b, reaching[0], reaching[-1] + 1))
        return out

    along_x = groups([t.x for t in rows[0]], rows[0][0].width, width_px, scale[0], input_size[0])
    along_y = groups([r[0].y for r in rows], rows[0][0].height, height_px, scale[1], input_size[1])
    return [Block(row, col, (x0, y0, x1, y1), plan.part(r0, c0, r1, c1))
            for row, (y0, y1, r0, r1) in enumerate(along_y) for col, (x0, x1, c0, c1) in enumerate(along_x)]


# --------------------------------------------------------------------------------------------- on a worker

_MODELS: dict[tuple[str, str], Any] = {}


def _worker_device(requested: str) -> str:
    """`auto` on a machine with several GPUs: worker N takes GPU N modulo their number."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.device_count() > 1:
        try:
            from distributed import get_worker

            name = str(get_worker().name)
            index = int(name) if name.isdigit() else hash(name)
            return f"cuda:{index % torch.cuda.device_count()}"
        except (ImportError, ValueError):
            pass
    return requested


def _model(path: str | None):
    key = (str(path), str(os.getpid()))
    if key not in _MODELS:
        from core.model.catalog import open_model

        _MODELS[key] = open_model(path)
    return _MODELS[key]


def run_block(block: Block, mosaic: str, job: dict[str, Any], pieces: str, gamma: float = 1.0) -> dict[str, Any]:
    """Runs one block and moves its pieces into `pieces/<block id>/` in one rename. Safe to run twice (a retried
    block whose first run finished): the second run's pieces are dropped. `gamma`: the brightness curve measured
    once on the whole mosaic (a block measuring it would read the whole mosaic again)."""
    from core.extraction.extract import extract_roads
    from core.inputs.area import Area
    from core.inputs.raster import RasterioSource

    final = Path(pieces) / block.id
    if final.exists():
        return _piece_record(block, final, 0.0)
    started = time.perf_counter()
    options = RegionJob(**job)
    options.device = _worker_device(options.device)
    # The block computes its part of the whole mosaic's tile plan; it may lie in a gap of the mosaic.
    params = options.extract_params(overwrite=True, refuse_empty=False, gamma=gamma)
    scratch = Path(pieces) / f".{block.id}.{uuid.uuid4().hex[:8]}"
    try:
        with RasterioSource(mosaic, bands=job.get("bands")) as source:
            extract_roads(source, _model(job.get("model")), scratch, params,
                          Area(*block.core, tiles=block.tiles))
        try:
            os.replace(scratch, final)
        except OSError:  # another run of this block got there first
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return _piece_record(block, final, time.perf_counter() - started)


def _piece_record(block: Block, folder: Path, seconds: float) -> dict[str, Any]:
    probability = next(folder.glob("*_road_probability.tif"))
    mask = next(folder.glob("*_road_mask.tif"))
    x0, y0, x1, y1 = block.core
    return {"id": block.id, "probability": str(probability), "mask": str(mask), "seconds": seconds,
            "megapixels": (x1 - x0) * (y1 - y0) / 1e6}


# --------------------------------------------------------------------------------------------- the client


class Manifest:
    """Finished blocks of one job, saved atomically after each."""

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path, self.fingerprint = path, fingerprint
        self.blocks: dict[str, dict[str, Any]] = {}
        if path.exists():
            data = json.loads(path.read_text())
            if data.get("fingerprint") != fingerprint:
                raise InputError(f"{path.parent} holds the results of a different job (other inputs, model, "
                                 f"settings or blocks, or made by an older version); choose another output folder "
                                 f"or delete it")
            self.blocks = {k: v for k, v in data.get("blocks", {}).items()
                           if Path(v["probability"]).exists() and Path(v["mask"]).exists()}

    def add(self, record: dict[str, Any]) -> None:
        self.blocks[record["id"]] = record
        with atomic_output(self.path) as temporary:
            temporary.write_text(json.dumps({"fingerprint": self.fingerprint, "blocks": self.blocks}, indent=1))


@dataclass(frozen=True)
class RegionProgress:
    blocks_done: int
    blocks_total: int
    megapixels_per_s: float
    eta_s: float | None


def _client(workers: int, scheduler: str | None):
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler), None
    # One thread per worker: torch already uses every core a worker process has; processes isolate crashes.
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env={"OMP_NUM_THREADS": str(threads), "ROAD_EXTRACTOR_WORKERS": "1"})
    return Client(cluster), cluster


def run_region(job: RegionJob, *, workers: int = 1, scheduler: str | None = None, client=None,
               progress: Callable[[RegionProgress], None] | None = None,
               log: Callable[[str], None] = lambda message: None) -> RegionResult:
    from core.extraction.brightness import match_brightness
    from core.extraction.extract import processing_grid
    from core.inputs.raster import RasterioSource
    from core.model.catalog import choice_note, imagery_gsd, open_model, resolve_model

    out = Path(job.out_dir)
    files = expand_inputs(job.inputs)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        mosaic = build_mosaic(files, out / "mosaic.vrt")
        with RasterioSource(mosaic, bands=job.bands) as source:
            # One model for the whole mosaic, picked by its resolution where a models folder is given (the shipped
            # one by default), and refused if bad before any worker starts; the workers get the file itself.
            gsd = imagery_gsd(source.info.gsd_m)
            model_path = resolve_model(job.model, gsd)
            model_info = open_model(model_path).info
            if (picked := choice_note(job.model, gsd)) is not None:
                log(picked)
            job = replace(job, model=str(model_path))
            grid = processing_grid(source.info, model_info.gsd_m, [])
            try:
                blocks = plan_blocks(grid.width, grid.height, (grid.scale_x, grid.scale_y), job.block, job.tile,
                                     job.overlap, (source.info.width, source.info.height))
            except ValueError as exc:
                raise InputError(f"{mosaic}: {exc}") from None
            gamma = 1.0
            if job.brightness == "auto":
                match = match_brightness(source, model_info.normalization.brightness)
                gamma = match.gamma
                log(match.note())
    except BaseException:
        if created:  # refused inputs leave no output folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    manifest = Manifest(out / MANIFEST, job.fingerprint(blocks))
    todo = [b for b in blocks if b.id not in manifest.blocks]
    log(f"{len(blocks)} blocks of about {job.block} px (whole tiles of the mosaic's plan) over "
        f"{grid.width}x{grid.height} px at the model's resolution; {len(blocks) - len(todo)} already done")
    pieces = out / "pieces"
    pieces.mkdir(exist_ok=True)
    started = time.perf_counter()
    own = None
    if todo:
        if client is None:
            client, own = _client(workers, scheduler)
            log(f"Dask dashboard: {client.dashboard_link}")
        try:
            _run_blocks(client, todo, str(mosaic), asdict(job), str(pieces), manifest, len(blocks), started,
                        progress, gamma)
        finally:
            if own is not None:
                client.close()
                own.close()
    for stale in pieces.glob(".r*"):  # scratch of a worker killed mid-block (its block ran again elsewhere)
        shutil.rmtree(stale, ignore_errors=True)
    probability, mask = _assemble(out, [manifest.blocks[b.id] for b in blocks], job.cog)
    megapixels = sum(r["megapixels"] for r in manifest.blocks.values())
    result = RegionResult(probability, mask, len(blocks), len(todo), time.perf_counter() - started, megapixels)
    if job.vectorize:
        from core.frontends.jobs import vectorize_params
        from core.roads.vectorize import vectorize_file

        result.roads = out / f"{Path(files[0]).stem if len(files) == 1 else 'mosaic'}_roads.gpkg"
        network = vectorize_file(probability, result.roads, vectorize_params(job.vectorize_options),
                                 overwrite=True)
        result.network = network.summary(result.roads)
    return result


def _run_blocks(client, todo: list[Block], mosaic: str, job: dict, pieces: str, manifest: Manifest, total: int,
                started: float, progress, gamma: float) -> None:
    """Submits the blocks (Dask retries one whose worker died, on another worker) and records each as it ends."""
    from distributed import as_completed

    futures = [client.submit(run_block, block, mosaic, job, pieces, gamma, retries=3, pure=False) for block in todo]
    finished = 0
    try:
        for future in as_completed(futures):
            record = future.result()
            manifest.add(record)
            finished += 1
            if progress is not None:
                elapsed = time.perf_counter() - started
                megapixels = sum(manifest.blocks[b.id]["megapixels"] for b in todo if b.id in manifest.blocks)
                left = len(todo) - finished
                progress(RegionProgress(len(manifest.blocks), total, megapixels / elapsed if elapsed else 0.0,
                                        left * elapsed / finished))
    except BaseException:
        client.cancel(futures)
        raise


def _assemble(out: Path, records: list[dict[str, Any]], cog: bool) -> tuple[Path, Path]:
    """VRTs over the pieces (paths relative to the VRT, so the folder can move), optionally COGs."""
    from osgeo import gdal

    gdal.UseExceptions()
    outputs = []
    for kind in ("probability", "mask"):
        vrt = out / f"road_{kind}.vrt"
        with atomic_output(vrt) as temporary:
            dataset = gdal.BuildVRT(str(temporary), [r[kind] for r in records])
            dataset.FlushCache()
            dataset = None  # closes the file before the rename
        if cog:
            target = out / f"road_{kind}.tif"
            with atomic_output(target) as temporary:
                gdal.Translate(str(temporary), str(vrt), format="COG",
                               creationOptions=["COMPRESS=DEFLATE", "BIGTIFF=IF_SAFER"])
            outputs.append(target)
        else:
            outputs.append(vrt)
    return outputs[0], outputs[1]
