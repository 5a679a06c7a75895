"""From QGIS layers to an engine job and back: what the dialog's task and the Processing algorithms share.

Layers are read on the main thread into plain descriptions (`RasterInput`, `AreaRequest`); the slow part
(exporting a web layer's pixels, running the engine) works on those in a background thread. A file raster GDAL
reads goes to the engine by path; any other layer (XYZ, WMS, a virtual raster provider) is read through QGIS's
raster provider at the model's resolution into a temporary GeoTIFF first.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qgis.core import (
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsDataProvider,
    QgsDistanceArea,
    QgsPointXY,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from .engine import EngineClient, EngineError, find_engine_python
from .settings import ExtractSettings

MODEL_GSD_FALLBACK_M = 1.0


class UserError(ValueError):
    """A choice that cannot run, in one sentence with the fix."""


@dataclass
class RasterInput:
    name: str
    path: str | None  # a file GDAL reads, sent by path
    crs: QgsCoordinateReferenceSystem
    extent: QgsRectangle
    provider_key: str = "gdal"  # for layers that are not files: a provider is made from these in the thread
    uri: str = ""

    @property
    def needs_export(self) -> bool:
        return self.path is None


@dataclass
class AreaRequest:
    kind: str  # layer, canvas, selection, rectangle
    extent: QgsRectangle | None = None  # in `crs`; None for the whole layer
    crs: QgsCoordinateReferenceSystem | None = None
    polygons_file: str | None = None  # selected polygons written to a file, for "selection"


@dataclass
class ExtractionRun:
    """Everything a background thread needs: plain values, no layers."""

    raster: RasterInput
    area: AreaRequest
    settings: ExtractSettings
    out_dir: Path
    roads: Path
    model_gsd_m: float = MODEL_GSD_FALLBACK_M
    notes: list[str] = field(default_factory=list)
    temporary: bool = False  # out_dir was made for this run (no output file chosen): removed if the run fails
    # "Compare with a road layer": the layer written out for the engine, and its name. The run is then
    # `update-map`: `roads` is the GeoPackage of missing, unconfirmed and matched roads.
    compare_roads: str | None = None
    compare_name: str = ""

    @property
    def operation(self) -> str:
        return "update_map" if self.compare_roads else "extract"

    def remove_written_inputs(self) -> None:
        """After the run, whatever its end: the selected polygons and the road layer written out for the engine
        go."""
        remove_written(self.area.polygons_file, self.compare_roads)

    def discard(self) -> None:
        """After a failed or cancelled run: its temporary folder goes, so nothing piles up in the temp folder."""
        self.remove_written_inputs()
        if self.temporary:
            shutil.rmtree(self.out_dir, ignore_errors=True)


def describe_layer(layer) -> RasterInput:
    if not isinstance(layer, QgsRasterLayer) or not layer.isValid():
        kind = "a vector layer" if isinstance(layer, QgsVectorLayer) else "not a usable raster layer"
        name = layer.name() if layer is not None else "nothing"
        raise UserError(f"'{name}' is {kind}; choose a raster layer with imagery (a GeoTIFF, an orthophoto, an "
                        f"XYZ or WMS layer)")
    if not layer.crs().isValid():
        raise UserError(f"'{layer.name()}' has no coordinate reference system; set one in its properties "
                        f"(Layer Properties > Source) first")
    path = None
    if layer.providerType() == "gdal":
        candidate = layer.source().split("|")[0]
        if Path(candidate).exists():
            path = candidate
    return RasterInput(layer.name(), path, layer.crs(), layer.extent(), layer.providerType(), layer.source())


def remove_written(*paths: str | None) -> None:
    """Files `write_for_engine` wrote, each in a temporary folder of its own: the folders go."""
    for written in paths:
        if written:
            shutil.rmtree(Path(written).parent, ignore_errors=True)


def write_for_engine(layer, name: str, what: str, only_selected: bool = False) -> Path:
    """A vector layer (any provider) written to a GeoPackage `name` the engine reads, with its CRS, in a temporary
    folder of its own that `remove_written` takes away; made only once the layer is known to be usable, and gone
    again if the write fails, so a refused run leaves no empty folder in the temp folder."""
    folder = Path(tempfile.mkdtemp(prefix="road_extractor_input_"))
    path = folder / name
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.onlySelectedFeatures = only_selected
    result = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(path), QgsProject.instance().transformContext(),
                                                       options)
    if result[0] != QgsVectorFileWriter.NoError:
        shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"could not write {what} to {path} for the engine: {result[1]}")
    return path


def selection_area(layer) -> AreaRequest:
    """The selected polygons of `layer`, written to a GeoPackage the engine reads (with their CRS)."""
    if not isinstance(layer, QgsVectorLayer) or layer.geometryType() != QgsWkbTypes.PolygonGeometry:
        raise UserError("the area 'selected features' needs a polygon layer; choose one in the dialog")
    if layer.selectedFeatureCount() == 0:
        raise UserError(f"no features are selected in '{layer.name()}'; select the polygons to extract roads in")
    path = write_for_engine(layer, "area.gpkg", "the selected polygons", only_selected=True)
    extent = layer.boundingBoxOfSelected()
    return AreaRequest("selection", extent, layer.crs(), str(path))


def road_layer_file(layer) -> str:
    """The line layer to compare with, written whole to a GeoPackage the engine reads (any provider: a file, a
    memory layer of lines just drawn, a web layer), with its CRS; the engine reprojects it."""
    if not isinstance(layer, QgsVectorLayer) or layer.geometryType() != QgsWkbTypes.LineGeometry:
        name = layer.name() if layer is not None else "nothing"
        raise UserError(f"'{name}' is not a line layer; choose the road lines to compare with (an OpenStreetMap "
                        f"export, a municipal road layer)")
    if layer.featureCount() == 0:
        raise UserError(f"the road layer '{layer.name()}' has no features; choose a layer with road lines")
    return str(write_for_engine(layer, "existing_roads.gpkg", f"the road layer '{layer.name()}'"))


def metres_per_unit(crs: QgsCoordinateReferenceSystem, extent: QgsRectangle) -> float:
    """Ground metres per map unit of `crs` at the middle of `extent` (degrees, Web Mercator and feet alike)."""
    distance = QgsDistanceArea()
    distance.setSourceCrs(crs, QgsProject.instance().transformContext())
    distance.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
    centre = extent.center()
    step = max(extent.width(), 1e-9) / 100
    metres = distance.measureLine(QgsPointXY(centre.x() - step / 2, centre.y()),
                                  QgsPointXY(centre.x() + step / 2, centre.y()))
    return metres / step if metres > 0 else 1.0


def transform_extent(extent: QgsRectangle, source: QgsCoordinateReferenceSystem,
               target: QgsCoordinateReferenceSystem) -> QgsRectangle:
    if source == target:
        return QgsRectangle(extent)
    transform = QgsCoordinateTransform(source, target, QgsProject.instance())
    return transform.transformBoundingBox(extent)


def export_window(raster: RasterInput, area: AreaRequest, gsd_m: float, path: Path, feedback=None) -> Path:
    """Reads the area of a non-file layer through QGIS's provider at `gsd_m` into a GeoTIFF. The provider is made
    here, in the calling thread, and dropped before returning: a provider outliving its thread (or QGIS's exit)
    crashes QGIS."""
    extent = raster.extent if area.extent is None else transform_extent(area.extent, area.crs, raster.crs)
    extent = extent.intersect(raster.extent) if not raster.extent.isEmpty() else extent
    if extent.isEmpty():
        raise UserError("the chosen area does not overlap the raster layer; pan to the imagery or choose another "
                        "area")
    unit = metres_per_unit(raster.crs, extent)
    columns = max(1, round(extent.width() * unit / gsd_m))
    rows = max(1, round(extent.height() * unit / gsd_m))
    if columns * rows > 40000 * 40000:
        raise UserError(f"the area is {columns}x{rows} pixels at {gsd_m} m/px; choose a smaller area (a canvas "
                        f"extent or a drawn rectangle) for a web layer")
    provider = QgsProviderRegistry.instance().createProvider(raster.provider_key, raster.uri,
                                                             QgsDataProvider.ProviderOptions())
    pipe = QgsRasterPipe()
    if provider is None or not provider.isValid() or not pipe.set(provider):  # the pipe owns the provider now
        raise UserError(f"QGIS cannot read the pixels of '{raster.name}'; check that the layer draws")
    writer = QgsRasterFileWriter(str(path))
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    error = writer.writeRaster(pipe, columns, rows, extent, raster.crs, QgsProject.instance().transformContext(),
                               feedback)
    del pipe
    if error != QgsRasterFileWriter.NoError:
        raise UserError(f"reading '{raster.name}' through QGIS failed (error {error}); check the layer draws "
                        f"in QGIS (network, credentials) and try again")
    return path


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "raster"


AREA_WORDS = {"canvas": "the map canvas's extent", "rectangle": "the drawn rectangle",
              "selection": "the selected features"}


def area_outside(raster: RasterInput, area: AreaRequest) -> str | None:
    """Why `area` gives nothing to extract from `raster` (it lies outside the imagery), or None. Said before a
    run, in words: the engine's refusal printed both boxes, which at three decimals of a degree looked alike."""
    if area.extent is None or raster.extent.isEmpty():
        return None
    try:
        extent = transform_extent(area.extent, area.crs, raster.crs)
    except Exception:  # noqa: BLE001 - QgsCsException: no transform between them here; the engine decides
        return None
    if extent.intersects(raster.extent) and not extent.intersect(raster.extent).isEmpty():
        return None
    fix = "draw it over the imagery" if area.kind == "rectangle" else "pan to the imagery or choose Layer extent"
    return f"{AREA_WORDS.get(area.kind, 'the area')} lies outside the imagery of '{raster.name}'; {fix}"


def plan_run(raster: RasterInput, area: AreaRequest, settings: ExtractSettings, model_gsd_m: float | None = None,
             compare_roads: str | None = None, compare_name: str = "") -> ExtractionRun:
    settings.scale_list()  # refuses bad scales before anything starts
    outside = area_outside(raster, area)
    if outside:
        raise UserError(outside)
    if settings.output:
        roads = Path(settings.output)
        if roads.suffix.lower() != ".gpkg":
            raise UserError(f"the output {roads} must be a GeoPackage (.gpkg)")
        if roads.exists() and not settings.overwrite:
            raise UserError(f"{roads} already exists; tick 'Overwrite' or choose another output file")
        if not roads.parent.is_dir():
            raise UserError(f"the folder {roads.parent} does not exist; choose an output file in an existing folder")
        if not os.access(roads.parent, os.W_OK | os.X_OK):
            raise UserError(f"the folder {roads.parent} cannot be written to (read-only); choose an output file "
                            f"in another folder")
        out_dir = roads.parent
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="road_extractor_"))
        roads = out_dir / f"{safe_name(raster.name)}_{'map_update' if compare_roads else 'roads'}.gpkg"
    return ExtractionRun(raster, area, settings, out_dir, roads, model_gsd_m or MODEL_GSD_FALLBACK_M,
                         temporary=not settings.output, compare_roads=compare_roads, compare_name=compare_name)


def job_for(run: ExtractionRun, input_path: str, exported: bool) -> dict:
    s = run.settings
    job = {"input": input_path, "model": s.model or None, **s.inference_options(), "overwrite": s.overwrite,
           "vectorize_options": s.vectorize_options()}
    if run.operation == "update_map":  # the extraction's rasters stay in its scratch folder, one GeoPackage out
        job.update(roads=run.compare_roads, out=str(run.roads))
    else:
        job.update(out_dir=str(run.out_dir), roads=str(run.roads))
    if run.area.polygons_file:
        job["aoi"] = run.area.polygons_file
    elif run.area.extent is not None and not exported:
        e, crs = run.area.extent, run.area.crs
        job["bbox"] = [e.xMinimum(), e.yMinimum(), e.xMaximum(), e.yMaximum()]
        job["bbox_crs"] = crs.authid() or crs.toWkt()
    return job


# ------------------------------------------------------------------------------------------------- the engine

_engine: EngineClient | None = None
_engine_lock = threading.Lock()  # one request at a time: the worker runs one job, the dialog and Processing share it


def profile_dir() -> str:
    return QgsApplication.qgisSettingsDirPath()


def engine_client(settings: ExtractSettings) -> EngineClient:
    global _engine
    python = find_engine_python(settings.engine_python or None, profile_dir())
    if _engine is None or _engine.python != python:
        if _engine is not None:
            _engine.close()
        _engine = EngineClient(python)
    return _engine


def engine_running() -> bool:
    """Whether the engine process is up with its libraries imported (its next run skips 3-6 s of start-up)."""
    return _engine is not None and _engine.running


def engine_start_seconds() -> float | None:
    """How long the running engine took to start (None when none runs)."""
    return _engine.start_seconds if _engine is not None else None


def shutdown_engine() -> None:
    global _engine
    with _engine_lock:
        if _engine is not None:
            _engine.close()
            _engine = None


def engine_request(settings: ExtractSettings, op: str, args: dict | None = None, **callbacks) -> dict:
    with _engine_lock:
        return engine_client(settings).request(op, args, **callbacks)


def describe_map_update(result: dict, layer_name: str) -> str:
    """A comparison's one line for the message bar (the command line prints the same on four)."""
    offset = result.get("offset_mean_m")
    measured = isinstance(offset, (int, float)) and math.isfinite(offset)
    offset_text = f", {offset:.1f} m apart on average" if measured else ""
    return (f"compared with '{layer_name}': {result['missing_km']:.2f} km of roads missing from it "
            f"({result['missing_pieces']} pieces to review), {result['unconfirmed_km']:.2f} km of it the imagery "
            f"does not show, {result['matched_km']:.2f} km on both{offset_text}, in {result['seconds']:.0f} s")


def describe_result(result: dict, settings: ExtractSettings) -> tuple[str, list[str]]:
    """One line about a finished run, and the warnings an analyst should see beside it (not only in the log): why
    a run found no roads, with the setting that would change that (first), and the engine's notes on resolution
    and brightness."""
    junctions = result["junction_count"]
    line = (f"{result['road_count']} roads, {result['length_km']:.2f} km, {junctions} junction"
            f"{'' if junctions == 1 else 's'} where 3 or more roads meet, in {result['seconds']:.0f} s")
    # Shown too: imagery brought to the model's brightness (a gamma applied) explains what the analyst sees.
    warnings = [note for note in result.get("notes", []) if note.startswith("warning")
                or (note.startswith("brightness") and "gamma" in note)]
    if result["road_count"] == 0:
        if result.get("road_fraction", 0) > 0:
            warnings.insert(0, f"no roads: the mask has road pixels ({result['road_fraction']:.2%} of the area) but no "
                            f"piece is longer than {settings.min_length_m:g} m; lower 'Drop pieces shorter than' or "
                            f"look at the road probability layer")
        else:
            warnings.insert(0, f"no roads: no pixel reached the threshold ({settings.threshold:g}); the model may not "
                            f"know this imagery - look at the road probability layer, lower the threshold, or "
                            f"fine-tune the model on a few roads you draw (Fine-tune…)")
    return line, warnings


def execute(run: ExtractionRun, on_progress: Callable[[float, str], None], is_cancelled: Callable[[], bool],
            on_log: Callable[[str], None] = lambda message: None, feedback=None) -> dict:
    """The slow part, safe in a background thread: export if needed, then the engine's extract job. A failed or
    cancelled run removes what it exported; the engine itself leaves nothing half-written."""
    exported = run.raster.needs_export
    exported_path = run.out_dir / f"{safe_name(run.raster.name)}.tif"
    try:
        if exported:
            on_progress(0.0, f"reading '{run.raster.name}' through QGIS at {run.model_gsd_m:g} m/px")
            export_window(run.raster, run.area, run.model_gsd_m, exported_path, feedback)
        if is_cancelled():
            raise EngineError("cancelled; nothing was written", "cancelled")
        job = job_for(run, str(exported_path) if exported else run.raster.path, exported)
        result = engine_request(run.settings, run.operation, job, on_progress=on_progress, on_log=on_log,
                                is_cancelled=is_cancelled)
    except BaseException:
        if exported:
            exported_path.unlink(missing_ok=True)
        raise
    result["exported_input"] = str(exported_path) if exported else None
    return result
