"""Whole jobs, described by plain data: what the command line, the engine worker process and (through it) the QGIS
plugin ask the engine to do. A job is a dataclass of JSON-able fields, so the plugin can fill one in without
importing anything heavy, send it over the worker protocol, and get a JSON-able result back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import InputError, unknown_fields


def _from_dict(cls, data: dict[str, Any]):
    unknown = unknown_fields(cls, data)
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(f.name for f in fields(cls))}")
    return cls(**data)


@dataclass
class VectorizeOptions:
    """`core.vectorize.VectorizeParams` as the user sees it: thresholds and lengths in metres."""

    high: float = 0.5
    low: float = 0.3
    spur_m: float = 12.0
    min_length_m: float = 30.0
    bridge_m: float = 24.0
    simplify_m: float = 1.0
    close_gaps_m: float = 2.0
    fill_holes_m2: float = 100.0

    def params(self):
        from .vectorize import VectorizeParams

        return VectorizeParams(**asdict(self))


@dataclass(kw_only=True)
class InferenceOptions:
    """How the network runs, shared by one-raster and region jobs (`core.extract.ExtractParams` as plain data)."""

    model: str | None = None  # None: the shipped model
    bands: str | None = None
    tile: int = 512
    overlap: int = 64
    scales: list[float] = field(default_factory=lambda: [0.75, 1.0, 1.25])
    augment: str = "none"
    device: str = "auto"
    precision: str = "auto"
    threshold: float = 0.5
    vectorize: bool = True
    vectorize_options: dict = field(default_factory=dict)

    def extract_params(self, **changes):
        from .extract import ExtractParams

        return ExtractParams(tile=self.tile, overlap=self.overlap, scales=tuple(self.scales), augment=self.augment,
                             device=self.device, precision=self.precision, threshold=self.threshold, **changes)


@dataclass(kw_only=True)
class ExtractJob(InferenceOptions):
    input: str
    out_dir: str
    gsd_m: float | None = None  # only for rasters without georeferencing
    value_scale: str = "auto"
    bbox: list[float] | None = None
    bbox_crs: str | None = None
    aoi: str | None = None  # a polygon vector file
    batch_size: int = 1
    output_resolution: str = "input"
    overwrite: bool = False
    roads: str | None = None  # road GeoPackage; default OUT_DIR/<input stem>_roads.gpkg

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractJob:
        return _from_dict(cls, data)

    def roads_path(self) -> Path:
        return Path(self.roads) if self.roads else Path(self.out_dir) / f"{Path(self.input).stem}_roads.gpkg"


@dataclass
class VectorizeJob:
    raster: str
    out: str
    gsd_m: float | None = None
    overwrite: bool = False
    vectorize_options: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VectorizeJob:
        return _from_dict(cls, data)


@dataclass
class EvaluateJob:
    prediction: str
    reference: str
    rho: float = 3.0
    buffer_m: float = 3.0
    road_width_m: float = 7.0
    ignore: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluateJob:
        return _from_dict(cls, data)


def run_extract(job: ExtractJob, progress: Callable | None = None, cancel=None,
                log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Probability and mask rasters, then (unless `vectorize` is off) the road GeoPackage. Nothing is left behind
    by a failed or cancelled run: each output is written to a temporary file and renamed."""
    from .area import area_from_bbox, area_from_vector
    from .extract import extract_roads
    from .models import open_model, resolve_model
    from .raster import RasterioSource

    if job.bbox and job.aoi:
        raise InputError("give a bounding box or an area-of-interest file, not both")
    options = _from_dict(VectorizeOptions, job.vectorize_options)
    roads = job.roads_path()
    if job.vectorize and roads.exists() and not job.overwrite:
        raise InputError(f"{roads} already exists; allow overwriting (--overwrite) or choose another output")
    params = job.extract_params(batch_size=job.batch_size, output_resolution=job.output_resolution,
                                overwrite=job.overwrite)
    model_path = resolve_model(job.model)
    model = open_model(model_path)
    with RasterioSource(job.input, bands=job.bands, gsd_m=job.gsd_m, value_scale=job.value_scale) as source:
        area = None
        if job.bbox:
            area = area_from_bbox(source.info, job.bbox, job.bbox_crs)
        elif job.aoi:
            area = area_from_vector(source.info, job.aoi)
        result = extract_roads(source, model, job.out_dir, params, area, progress=progress, cancel=cancel, log=log)
    summary: dict[str, Any] = {
        "probability": str(result.probability), "mask": str(result.mask), "tiles": result.tiles,
        "seconds": result.seconds, "network_seconds": result.network_seconds,
        "input_megapixels": result.input_megapixels, "road_fraction": result.road_fraction, "notes": result.notes,
        "model": str(model_path)}
    if job.vectorize:
        from .vectorize import vectorize_file

        if progress is not None:
            from .extract import Progress

            progress(Progress(1.0, result.tiles, result.tiles, 0.0, None, stage="vectorizing"))
        try:
            network = vectorize_file(result.probability, roads, options.params(), overwrite=True, gsd_m=job.gsd_m,
                                     cancel=cancel)
        except BaseException:
            # A job cancelled or failed while vectorizing leaves none of its outputs, like one stopped earlier.
            for path in (result.probability, result.mask):
                Path(path).unlink(missing_ok=True)
            raise
        summary.update(network.summary(roads))
    return summary


def run_vectorize(job: VectorizeJob, cancel=None) -> dict[str, Any]:
    from .vectorize import vectorize_file

    options = _from_dict(VectorizeOptions, job.vectorize_options)
    network = vectorize_file(job.raster, job.out, options.params(), overwrite=job.overwrite, gsd_m=job.gsd_m,
                             cancel=cancel)
    return network.summary(job.out)


def run_evaluate(job: EvaluateJob) -> dict[str, Any]:
    from .metrics import evaluate_files

    return evaluate_files(job.prediction, job.reference, rho=job.rho, buffer_m=job.buffer_m,
                          road_width_m=job.road_width_m, ignore=job.ignore)
