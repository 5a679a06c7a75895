"""Whole jobs, described by plain data: what the command line, the engine worker process and (through it) the QGIS
plugin ask the engine to do. A job is a dataclass of JSON-able fields, so the plugin can fill one in without
importing anything heavy, send it over the worker protocol, and get a JSON-able result back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from core.atomic import check_output_file
from core.errors import InputError, unknown_fields
from core.options import EvaluateOptions, InferenceOptions, VectorizeOptions


def _from_dict(cls, data: dict[str, Any]):
    unknown = unknown_fields(cls, data)
    if unknown:
        raise InputError(f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: "
                         f"{', '.join(f.name for f in fields(cls))}")
    return cls(**data)


def vectorize_params(options: dict[str, Any]):
    """A job's `vectorize_options` (the user's options by name, see `core.options.VectorizeOptions`) checked and
    turned into the vectorizer's parameters."""
    from core.roads.vectorize import VectorizeParams

    _from_dict(VectorizeOptions, options)  # refuses unknown names and values out of range
    return VectorizeParams(**options)


@dataclass(kw_only=True)
class InferenceJob(InferenceOptions):
    """What one-raster and region jobs share: the model, the bands, the network's options and vectorizing."""

    model: str | None = None  # None: the shipped model
    bands: str | None = None
    vectorize: bool = True
    vectorize_options: dict = field(default_factory=dict)

    def extract_params(self, **changes):
        from core.extraction.extract import ExtractParams

        return ExtractParams(**self.inference_options(), **changes)


@dataclass(kw_only=True)
class ExtractJob(InferenceJob):
    input: str
    out_dir: str
    gsd_m: float | None = None  # only for rasters without georeferencing
    value_scale: str = "auto"
    bbox: list[float] | None = None
    bbox_crs: str | None = None
    aoi: str | None = None  # a polygon vector file
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


@dataclass(kw_only=True)
class EvaluateJob(EvaluateOptions):
    prediction: str
    reference: str
    ignore: str | None = None
    area: str | None = None  # polygons where the reference is complete (scored inside only)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluateJob:
        return _from_dict(cls, data)


def run_extract(job: ExtractJob, progress: Callable | None = None, cancel=None,
                log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """Probability and mask rasters, then (unless `vectorize` is off) the road GeoPackage. Nothing is left behind
    by a failed or cancelled run: each output is written to a temporary file and renamed."""
    from core.extraction.extract import extract_roads
    from core.inputs.area import area_from_bbox, area_from_vector
    from core.inputs.raster import RasterioSource
    from core.model.catalog import choice_note, imagery_gsd, open_model, resolve_model

    job_started = time.perf_counter()
    if job.bbox and job.aoi:
        raise InputError("give a bounding box or an area-of-interest file, not both")
    vectorize = vectorize_params(job.vectorize_options)
    roads = job.roads_path()
    if job.vectorize:
        check_output_file(roads, job.overwrite)
    params = job.extract_params(overwrite=job.overwrite)
    # A model file named is checked before the raster is read; a models folder (the shipped one too) serves by the
    # raster's resolution, so its pick waits for the raster.
    named = bool(job.model) and not Path(job.model).is_dir()
    model_path = resolve_model(job.model) if named else None
    model = open_model(model_path) if named else None
    with RasterioSource(job.input, bands=job.bands, gsd_m=job.gsd_m, value_scale=job.value_scale) as source:
        gsd = imagery_gsd(source.info.gsd_m)
        if model is None:
            model_path = resolve_model(job.model, gsd)
            model = open_model(model_path)
        picked = choice_note(job.model, gsd)
        area = None
        if job.bbox:
            area = area_from_bbox(source.info, job.bbox, job.bbox_crs)
        elif job.aoi:
            area = area_from_vector(source.info, job.aoi)
        if picked is not None:  # said once the area is known to be usable: a refusal stays one line
            log(picked)
        networks = []

        def vectorized(probability: Path, scratch: Path) -> list[tuple[Path, Path]]:
            """The road GeoPackage from the finished probability, written in the run's scratch folder: published
            with the GeoTIFFs, so a failure here replaces none of an earlier run's outputs."""
            from core.roads.vectorize import vectorize_file

            if progress is not None:
                from core.progress import Progress

                progress(Progress(1.0, 1, 1, 0.0, None, stage="vectorizing"))
            roads.parent.mkdir(parents=True, exist_ok=True)
            # Published by a rename, so staged on the target's file system (a --roads file may be elsewhere).
            staged = scratch / roads.name if os.stat(roads.parent).st_dev == os.stat(scratch).st_dev \
                else roads.parent / f".{roads.name}.{os.getpid()}.part.gpkg"
            networks.append(vectorize_file(probability, staged, vectorize, overwrite=True, gsd_m=job.gsd_m,
                                           cancel=cancel, metadata={"source": str(roads.parent / probability.name
                                                                                 .removeprefix("final_"))}))
            return [(staged, roads)]

        result = extract_roads(source, model, job.out_dir, params, area, progress=progress, cancel=cancel, log=log,
                               also=vectorized if job.vectorize else None)
    summary: dict[str, Any] = {
        "probability": str(result.probability), "mask": str(result.mask), "tiles": result.tiles,
        "seconds": result.seconds, "network_seconds": result.network_seconds,
        # What came before the tiles (the model, its runtime: an ONNX export the first time, the raster's brightness):
        # the plugin's estimate learns it apart from the cost per megapixel.
        "prepare_seconds": max(0.0, time.perf_counter() - job_started - result.seconds),
        "input_megapixels": result.input_megapixels, "road_fraction": result.road_fraction,
        "notes": [picked, *result.notes] if picked else result.notes,
        "model": str(model_path)}
    if networks:
        summary.update(networks[0].summary(roads))
    return summary


def run_vectorize(job: VectorizeJob, cancel=None, log=None) -> dict[str, Any]:
    from core.roads.vectorize import vectorize_file

    network = vectorize_file(job.raster, job.out, vectorize_params(job.vectorize_options), overwrite=job.overwrite,
                             gsd_m=job.gsd_m, cancel=cancel, log=log)
    return network.summary(job.out)


def run_evaluate(job: EvaluateJob) -> dict[str, Any]:
    from core.metrics import evaluate_files

    return evaluate_files(job.prediction, job.reference, job, ignore=job.ignore, area=job.area)


@dataclass(kw_only=True)
class UpdateMapJob(InferenceJob):
    """`road-extractor update-map`: extract roads from `input`, compare them with the road layer `roads`, write
    `missing`, `unconfirmed` and `matched` to the GeoPackage `out`."""

    input: str
    roads: str
    out: str
    gsd_m: float | None = None
    value_scale: str = "auto"
    bbox: list[float] | None = None  # as ExtractJob's: the part of the imagery compared
    bbox_crs: str | None = None
    aoi: str | None = None
    compare_options: dict = field(default_factory=dict)
    overwrite: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpdateMapJob:
        return _from_dict(cls, data)


def run_update_map(job: UpdateMapJob, progress: Callable | None = None, cancel=None,
                   log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """The whole comparison; the existing layer is checked before any extraction, the extraction's rasters live in
    a scratch folder beside `out` that goes with the run, and `out` is written whole or not at all."""
    import tempfile

    from core.errors import OutputError
    from core.inputs.raster import RasterioSource
    from core.inputs.vectors import read_road_layer
    from core.metrics import read_lines
    from core.options import CompareOptions
    from core.roads.compare import compare_networks, read_probability
    from core.roads.geopackage import write_map_update

    out = Path(job.out)
    if out.suffix.lower() != ".gpkg":
        raise OutputError(f"the output {out} must end in .gpkg (a GeoPackage with layers missing, unconfirmed and "
                          f"matched)")
    if out.exists() and Path(job.roads).exists() and out.resolve() == Path(job.roads).resolve():
        raise OutputError(f"the output {out} is the road layer being compared; choose another file (the layer "
                          f"would be replaced)")
    check_output_file(out, job.overwrite)
    if not out.parent.is_dir():
        raise OutputError(f"the folder {out.parent} does not exist; create it or give another path")
    compare = _from_dict(CompareOptions, dict(job.compare_options))
    with RasterioSource(job.input, bands=job.bands, gsd_m=job.gsd_m, value_scale=job.value_scale) as source:
        info = source.info
    if info.transform is None or info.gsd_m is None:
        raise InputError(f"{job.input} has no georeferencing, so where the layer's roads lie on it is unknown; give "
                         f"a georeferenced raster (GeoTIFF with a CRS)")
    existing, features, notes = read_road_layer(job.roads, info)
    for note in notes:
        log(note)
    with tempfile.TemporaryDirectory(prefix=".update-map-", dir=out.parent) as work:
        extract = ExtractJob(input=job.input, out_dir=work, model=job.model, bands=job.bands, gsd_m=job.gsd_m,
                             value_scale=job.value_scale, bbox=job.bbox, bbox_crs=job.bbox_crs, aoi=job.aoi,
                             overwrite=True, vectorize=True,
                             vectorize_options=job.vectorize_options, roads=str(Path(work) / "extracted.gpkg"),
                             **job.inference_options())
        extracted_summary = run_extract(extract, progress=progress, cancel=cancel, log=log)
        extracted, _ = read_lines(extracted_summary["roads"], info.crs_wkt)
        grid = read_probability(extracted_summary["probability"], compare.tolerance_m)
        comparison = compare_networks(existing, extracted, info.crs_wkt, grid, compare)
        for piece in comparison.unconfirmed + comparison.matched:
            piece.source = features[piece.source]  # the layer's own feature index, to find it in QGIS
        summary = comparison.summary()
        if cancel is not None and cancel.cancelled:
            from core.progress import Cancelled

            raise Cancelled()
        write_map_update(out, comparison, info.crs_wkt, {
            "ROAD_EXTRACTOR_UPDATE_MAP": summary, "ROAD_EXTRACTOR_MODEL": extracted_summary["model"],
            "ROAD_EXTRACTOR_ROADS_LAYER": str(job.roads), "ROAD_EXTRACTOR_IMAGERY": str(job.input)})
    return {"out": str(out), **summary, "notes": notes + list(extracted_summary["notes"]),
            "extracted_km": extracted_summary["length_km"], "seconds": extracted_summary["seconds"],
            "model": extracted_summary["model"]}
