"""The Processing provider "Road extractor": Extract roads, Vectorize road mask, Evaluate roads. They run in the
toolbox, in batch mode, in the Graphical Modeler and from `qgis_process`, through the same engine as the dialog."""

from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingOutputVectorLayer,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
    QgsProcessingProvider,
    QgsProcessingUtils,
    QgsRasterLayer,
)
from qgis.PyQt.QtGui import QIcon

from .engine import EngineError
from .engine_options import default, names, spec
from .layers import MAP_UPDATE_LAYERS, OUTPUT_PROPERTY, RASTER_STYLES, RESOURCES, ROAD_LAYERS, road_layers
from .runner import AreaRequest, UserError, describe_layer, engine_request, execute, plan_run
from .settings import ExtractSettings, MadeModel, default_model_path, remember_model

# The engine's options each algorithm offers; label, default, range, choices and whether it is advanced come from
# the engine's option table (core/options.py), and each parameter is named after its option (spur_m -> SPUR_M).
INFERENCE_OPTIONS = ("scales", "augment", "device", "precision", "runtime", "brightness", "threshold", "tile",
                     "overlap")
EVALUATE_OPTIONS = ("rho", "buffer_m", "road_width_m", "control_spacing_m", "snap_m")
FINETUNE_OPTIONS = ("road_width_m", "minutes", "margin_m", "labels", "distill", "replay", "batchnorm", "mix")


def option_parameter(group: str, name: str):
    """The Processing parameter for one engine option."""
    entry = spec(group, name)
    key, label = name.upper(), entry["label"]
    if entry["choices"]:
        parameter = QgsProcessingParameterEnum(key, label, list(entry["choices"]),
                                               defaultValue=entry["choices"].index(entry["default"]))
    elif entry["type"] in ("int", "float"):
        bounds = {k: entry[v] for k, v in (("minValue", "minimum"), ("maxValue", "maximum")) if entry[v] is not None}
        kind = QgsProcessingParameterNumber.Integer if entry["type"] == "int" else QgsProcessingParameterNumber.Double
        parameter = QgsProcessingParameterNumber(key, label, kind, entry["default"], **bounds)
    else:
        parameter = QgsProcessingParameterString(key, label, default(group, name))
    if entry["advanced"]:
        parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    return parameter


def option_value(algorithm: QgsProcessingAlgorithm, parameters, context, group: str, name: str):
    """What the user gave for one engine option, as the engine expects it."""
    entry, key = spec(group, name), name.upper()
    if entry["choices"]:
        return entry["choices"][algorithm.parameterAsEnum(parameters, key, context)]
    if entry["type"] == "int":
        return algorithm.parameterAsInt(parameters, key, context)
    if entry["type"] == "float":
        return algorithm.parameterAsDouble(parameters, key, context)
    return algorithm.parameterAsString(parameters, key, context) or default(group, name)


def _file_of(layer) -> str:
    """The file behind a layer (`path|layername=...` -> path)."""
    source = layer.source().split("|")[0]
    if not Path(source).exists():
        raise QgsProcessingException(f"'{layer.name()}' is not a file on disk; save it as a GeoTIFF or GeoPackage "
                                     f"first")
    return source


class _EngineAlgorithm(QgsProcessingAlgorithm):
    def _vector_path(self, parameters, name, context, feedback) -> str:
        if self.parameterAsVectorLayer(parameters, name, context) is None:
            return ""
        # A file-backed layer is passed as it is; a memory or web layer is written to a GeoPackage first.
        return self.parameterAsCompatibleSourceLayerPath(parameters, name, context, ["gpkg", "shp", "geojson"],
                                                         "gpkg", feedback).split("|")[0]

    def group(self) -> str:
        return ""

    def groupId(self) -> str:  # noqa: N802 - Processing API
        return ""

    def icon(self) -> QIcon:
        return QIcon(str(RESOURCES / "icon.svg"))

    def createInstance(self):  # noqa: N802 - Processing API
        return type(self)()

    def _add_options(self, group: str, names_: tuple[str, ...]) -> None:
        for name in names_:
            self.addParameter(option_parameter(group, name))

    def _options(self, parameters, context, group: str, names_: tuple[str, ...]) -> dict:
        return {name: option_value(self, parameters, context, group, name) for name in names_}

    def _add_road_outputs(self) -> None:
        # A temporary file unless named, as the rasters: a batch row left empty runs (QGIS 3.22's batch dialog
        # skipped a row whose required output was empty, with a five-second note, and ran the others).
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT_ROADS", "Roads and junctions",
                                                                "GeoPackage (*.gpkg)", QgsProcessing.TEMPORARY_OUTPUT,
                                                                optional=True, createByDefault=True))
        self.addOutput(QgsProcessingOutputVectorLayer("ROADS", "Road centrelines"))
        self.addOutput(QgsProcessingOutputVectorLayer("JUNCTIONS", "Junctions"))
        self.addOutput(QgsProcessingOutputNumber("ROAD_COUNT", "Number of roads"))
        self.addOutput(QgsProcessingOutputNumber("LENGTH_KM", "Total road length (km)"))

    def _roads_file(self, parameters, context) -> str:
        """The roads GeoPackage chosen, else a temporary one (an empty batch cell gives "")."""
        roads = self.parameterAsFileOutput(parameters, "OUTPUT_ROADS", context)
        return roads or QgsProcessingUtils.generateTempFilename("roads.gpkg")

    @staticmethod
    def _road_outputs(roads: str, result: dict) -> dict:
        return {"OUTPUT_ROADS": roads, "ROADS": f"{roads}|layername=roads",
                "JUNCTIONS": f"{roads}|layername=junctions", "ROAD_COUNT": result["road_count"],
                "LENGTH_KM": result["length_km"]}

    @staticmethod
    def _load_road_layers(roads: str, title: str, context, layers: tuple[str, ...] = ROAD_LAYERS) -> None:
        """The styled roads and junctions (or another GeoPackage's `layers`) join the project when the algorithm
        finishes, as the dialog's runs do (a GeoPackage file output alone is not loaded by Processing)."""
        for layer in road_layers(roads, title, layers):
            layer.setCustomProperty(OUTPUT_PROPERTY, True)
            context.temporaryLayerStore().addMapLayer(layer)
            context.addLayerToLoadOnCompletion(layer.id(), QgsProcessingContext.LayerDetails(
                layer.name(), context.project(), layer.name()))

    def _vectorize_options(self, parameters, context) -> dict:
        return self._options(parameters, context, "vectorize", names("vectorize"))

    def _request(self, op: str, args: dict, feedback) -> dict:
        try:
            return engine_request(ExtractSettings.load(), op, args,
                                  on_progress=lambda f, m: feedback.setProgress(100 * f),
                                  on_log=feedback.pushInfo, is_cancelled=feedback.isCanceled)
        except EngineError as exc:
            raise QgsProcessingException(str(exc)) from None


class RasterStyle(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded probability or mask raster like the dialog's (`layers.RASTER_STYLES`) and marks it as an
    output, so it is not offered as imagery."""

    _alive: dict = {}  # Processing holds only a C++ pointer: the Python objects must outlive the algorithm

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    @classmethod
    def made(cls, kind: str) -> RasterStyle:
        return cls._alive.setdefault(kind, cls(kind))

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - Processing API
        if isinstance(layer, QgsRasterLayer):
            RASTER_STYLES[self.kind](layer)
            layer.setCustomProperty(OUTPUT_PROPERTY, True)
            layer.triggerRepaint()


class ExtractRoadsAlgorithm(_EngineAlgorithm):
    def name(self) -> str:
        return "extract_roads"

    def displayName(self) -> str:  # noqa: N802 - Processing API
        return "Extract roads"

    def shortHelpString(self) -> str:  # noqa: N802 - Processing API
        return ("Runs the road model over a raster layer (a file, or any layer QGIS draws, read at the model's "
                "resolution) and writes a road probability raster, a road mask, and road centrelines with "
                "junctions in a GeoPackage. Leave the model empty for the shipped model. Multi-scale inference "
                "(0.75, 1, 1.25) is slower and usually finds more roads.")

    def initAlgorithm(self, config=None):  # noqa: N802 - Processing API
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Imagery"))
        self.addParameter(QgsProcessingParameterExtent("EXTENT", "Only within this extent", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer("AOI", "Only within these polygons", optional=True))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model file (empty: the shipped model)",
                                                     optional=True, fileFilter="Model files (*.pt *.pth *.onnx)"))
        self._add_options("inference", INFERENCE_OPTIONS)
        self._add_options("vectorize", names("vectorize"))
        # Temporary files unless set, and optional: qgis_process 3.22 refuses to run while a mandatory destination
        # is not named, even one with a default.
        for name, label in (("OUTPUT_PROBABILITY", "Road probability"), ("OUTPUT_MASK", "Road mask")):
            self.addParameter(QgsProcessingParameterRasterDestination(name, label, QgsProcessing.TEMPORARY_OUTPUT,
                                                                      optional=True, createByDefault=True))
        self._add_road_outputs()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - Processing API
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        settings = ExtractSettings.load()
        settings.model = self.parameterAsFile(parameters, "MODEL", context) or ""
        chosen = {**self._options(parameters, context, "inference", INFERENCE_OPTIONS),
                  **self._vectorize_options(parameters, context)}
        for key, value in chosen.items():
            setattr(settings, key, value)
        roads = self._roads_file(parameters, context)
        settings.output, settings.overwrite = roads, True
        try:
            raster = describe_layer(layer)
            area = AreaRequest("layer")
            aoi = self.parameterAsVectorLayer(parameters, "AOI", context)
            if aoi is not None:
                path = self.parameterAsCompatibleSourceLayerPath(parameters, "AOI", context, ["gpkg", "shp"], "gpkg",
                                                                 feedback)
                area = AreaRequest("selection", aoi.extent(), aoi.crs(), path)
            elif parameters.get("EXTENT"):
                extent = self.parameterAsExtent(parameters, "EXTENT", context)
                area = AreaRequest("canvas", extent, self.parameterAsExtentCrs(parameters, "EXTENT", context))
            gsd = None
            if raster.needs_export:  # a web or XYZ layer is read through QGIS at the model's own resolution
                gsd = self._request("describe_model", {"path": settings.model or None}, feedback).get("gsd_m")
            run = plan_run(raster, area, settings, gsd)
            run.out_dir = Path(tempfile.mkdtemp(prefix="extract_", dir=QgsProcessingUtils.tempFolder()))
            result = execute(run, lambda f, m: feedback.setProgress(100 * f), feedback.isCanceled,
                             on_log=feedback.pushInfo, feedback=feedback)
        except (UserError, EngineError) as exc:
            raise QgsProcessingException(str(exc)) from None
        outputs = self._road_outputs(roads, result)
        self._load_road_layers(roads, layer.name(), context)
        for key, kind in (("OUTPUT_PROBABILITY", "probability"), ("OUTPUT_MASK", "mask")):
            destination = self.parameterAsOutputLayer(parameters, key, context)
            if destination:  # empty where the user chose to skip this output
                shutil.move(result[kind], destination)
                outputs[key] = destination
                if context.willLoadLayerOnCompletion(destination):  # styled as the dialog's runs are
                    details = context.layerToLoadOnCompletionDetails(destination)
                    details.name = f"road {kind} - {layer.name()}"
                    details.setPostProcessor(RasterStyle.made(kind))
        feedback.pushInfo(f"{result['road_count']} roads, {result['length_km']:.2f} km, "
                          f"{result['junction_count']} junctions in {result['seconds']:.0f} s")
        return outputs


class VectorizeRoadMaskAlgorithm(_EngineAlgorithm):
    def name(self) -> str:
        return "vectorize_road_mask"

    def displayName(self) -> str:  # noqa: N802 - Processing API
        return "Vectorize road mask"

    def shortHelpString(self) -> str:  # noqa: N802 - Processing API
        return ("Turns a road mask (1 road, 0 background) or a road probability raster (0-255) into road "
                "centrelines and junctions: skeleton, graph, clean-up in metres, simplified lines.")

    def initAlgorithm(self, config=None):  # noqa: N802 - Processing API
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Road mask or probability raster"))
        self._add_options("vectorize", names("vectorize"))
        self._add_road_outputs()

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - Processing API
        raster = _file_of(self.parameterAsRasterLayer(parameters, "INPUT", context))
        roads = self._roads_file(parameters, context)
        result = self._request("vectorize", {"raster": raster, "out": roads, "overwrite": True,
                                             "vectorize_options": self._vectorize_options(parameters, context)},
                               feedback)
        return self._road_outputs(roads, result)


class EvaluateRoadsAlgorithm(_EngineAlgorithm):
    def name(self) -> str:
        return "evaluate_roads"

    def displayName(self) -> str:  # noqa: N802 - Processing API
        return "Evaluate roads"

    def shortHelpString(self) -> str:  # noqa: N802 - Processing API
        return ("Compares predicted roads with reference roads. Rasters (mask or probability) against a reference "
                "mask or lines: road IoU, F1, relaxed precision/recall (Mnih 2013) and the mIoU of predicting "
                "background everywhere. Lines against lines: APLS, completeness, correctness and quality.")

    def initAlgorithm(self, config=None):  # noqa: N802 - Processing API
        self.addParameter(QgsProcessingParameterMapLayer("PREDICTION", "Predicted roads (raster or lines)"))
        self.addParameter(QgsProcessingParameterMapLayer("REFERENCE", "Reference roads (mask raster or lines)"))
        self.addParameter(QgsProcessingParameterVectorLayer("AREA", "Area where the reference is complete (scored "
                                                            "inside only)", [QgsProcessing.TypeVectorPolygon],
                                                            optional=True))
        self._add_options("evaluate", EVALUATE_OPTIONS)
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT_TABLE", "Metrics table", "CSV (*.csv)"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - Processing API
        prediction = _file_of(self.parameterAsLayer(parameters, "PREDICTION", context))
        reference = _file_of(self.parameterAsLayer(parameters, "REFERENCE", context))
        metrics = self._request("evaluate", {"prediction": prediction, "reference": reference,
                                             "area": self._vector_path(parameters, "AREA", context, feedback) or None,
                                             **self._options(parameters, context, "evaluate", EVALUATE_OPTIONS)},
                                feedback)
        table = self.parameterAsFileOutput(parameters, "OUTPUT_TABLE", context)
        temporary = Path(table).with_name(f".{Path(table).name}.part")
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["metric", "value"])
            writer.writerows(metrics.items())
        temporary.replace(table)
        for key, value in metrics.items():
            feedback.pushInfo(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
        return {"OUTPUT_TABLE": table, **{k.upper(): v for k, v in metrics.items() if isinstance(v, (int, float))}}


class FinetuneRoadModelAlgorithm(_EngineAlgorithm):
    """`python -m training finetune` from the toolbox: runs in the engine process as Processing's cancellable task."""

    def name(self) -> str:
        return "finetune_road_model"

    def displayName(self) -> str:  # noqa: N802 - Processing API
        return "Fine-tune road model"

    def shortHelpString(self) -> str:  # noqa: N802 - Processing API
        return ("Teaches a road model your imagery from road lines you already have (OpenStreetMap through "
                "QuickOSM, a national road layer, or a few streets you digitise). Starts from the shipped model (or "
                "the one given), draws the lines at the road width, learns only inside the train area (default: "
                "around the lines), stops after the given minutes, and scores the parent and the new model on the "
                "check area (default: blocks with labelled roads, never trained on), on imagery held out at a "
                "distance, and on the parent's own validation tiles where they are on this machine: road IoU, "
                "relaxed F1, completeness and correctness within 5 m, APLS. Of the parent and fine-tuned weights, "
                "the mix that scores best on the check area is kept (the parent itself when nothing learnt helps). "
                "The new model is written to the profile's road_extractor/models folder unless you name a file, "
                "and becomes the Extract roads dialog's model. Layers in any CRS are reprojected.")

    def initAlgorithm(self, config=None):  # noqa: N802 - Processing API
        self.addParameter(QgsProcessingParameterMultipleLayers("RASTERS", "Imagery", QgsProcessing.TypeRaster))
        self.addParameter(QgsProcessingParameterVectorLayer("ROADS", "Road lines",
                                                            [QgsProcessing.TypeVectorLine]))
        self.addParameter(QgsProcessingParameterVectorLayer("TRAIN_AREA", "Train area (labels complete inside)",
                                                            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer("CHECK_AREA", "Check area (scored, never trained on)",
                                                            [QgsProcessing.TypeVectorPolygon], optional=True))
        self._add_options("finetune", FINETUNE_OPTIONS)
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model to start from (empty: the shipped model)",
                                                     optional=True, fileFilter="Model files (*.pt *.pth)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT_MODEL", "New model (empty: a named file in the profile's road_extractor/models folder)",
            "Model files (*.pt)", optional=True, createByDefault=False))
        self.addOutput(QgsProcessingOutputFile("MODEL_FILE", "Model file"))
        for key, label in (("BEFORE_COMPLETENESS", "Completeness before"), ("AFTER_COMPLETENESS", "Completeness after"),
                           ("BEFORE_CORRECTNESS", "Correctness before"), ("AFTER_CORRECTNESS", "Correctness after"),
                           ("BEFORE_ROAD_IOU", "Road IoU before"), ("AFTER_ROAD_IOU", "Road IoU after")):
            self.addOutput(QgsProcessingOutputNumber(key, label))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - Processing API
        rasters = [_file_of(layer) for layer in self.parameterAsLayerList(parameters, "RASTERS", context)]
        out = self.parameterAsFileOutput(parameters, "OUTPUT_MODEL", context)
        temporary = Path(QgsProcessingUtils.tempFolder())
        if not out or temporary in Path(out).resolve().parents:
            # A model is kept: Processing's temporary files are deleted when QGIS quits, and the dialog would then
            # point at a file that is gone.
            out = str(default_model_path(rasters[0] if rasters else ""))
        if not out.lower().endswith(".pt"):
            out += ".pt"
        spec = {"rasters": rasters, "roads": self._vector_path(parameters, "ROADS", context, feedback),
                "train_area": self._vector_path(parameters, "TRAIN_AREA", context, feedback),
                "check_area": self._vector_path(parameters, "CHECK_AREA", context, feedback),
                **self._options(parameters, context, "finetune", FINETUNE_OPTIONS),
                "init": self.parameterAsFile(parameters, "MODEL", context) or "", "out": out, "overwrite": True}
        settings = ExtractSettings.load()
        spec.update(device=settings.device, precision=settings.precision)
        result = self._request("finetune", spec, feedback)
        settings.model = result["model"]  # the dialog opens with the new model
        settings.save()
        parent = spec["init"] or "the shipped model"
        remember_model(MadeModel(result["model"], Path(parent).name, time.strftime("%Y-%m-%d %H:%M"),
                                 result["before"], result["after"]))
        outputs = {"MODEL_FILE": result["model"]}
        for when in ("before", "after"):
            for key in ("completeness", "correctness", "road_iou"):
                value = result[when].get(key)
                if value is not None:
                    outputs[f"{when.upper()}_{key.upper()}"] = value
        return outputs


class FindMissingRoadsAlgorithm(_EngineAlgorithm):
    """`road-extractor update-map` in the toolbox: the imagery's roads against an existing road layer."""

    def name(self) -> str:
        return "find_missing_roads"

    def displayName(self) -> str:  # noqa: N802 - Processing API
        return "Find roads missing from a layer"

    def shortHelpString(self) -> str:  # noqa: N802 - Processing API
        return ("Extracts the roads of a raster layer and compares them with an existing road layer (an "
                "OpenStreetMap export, a municipal layer; any CRS, lines or multilines). Writes a GeoPackage with "
                "three layers: missing (roads in the imagery the layer lacks, ranked for review), unconfirmed "
                "(roads of the layer the imagery does not show, inside its valid area) and matched (roads found "
                "on both, with the layer's offset in metres). Mark missing and unconfirmed pieces accepted or "
                "rejected in their review field with the ordinary editing tools.")

    def initAlgorithm(self, config=None):  # noqa: N802 - Processing API
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Imagery"))
        self.addParameter(QgsProcessingParameterVectorLayer("ROADS", "Existing road layer",
                                                            [QgsProcessing.TypeVectorLine]))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model file (empty: the shipped model)",
                                                     optional=True, fileFilter="Model files (*.pt *.pth *.onnx)"))
        self._add_options("compare", names("compare"))
        self._add_options("inference", INFERENCE_OPTIONS)
        self.addParameter(QgsProcessingParameterNumber(
            "TEACH_MINUTES", "Teach the model from the layer first (minutes of fine-tuning; 0: no)",
            QgsProcessingParameterNumber.Double, 0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterFileDestination("OUTPUT", "Map update (GeoPackage)",
                                                                "GeoPackage (*.gpkg)"))
        for name, label in (("MISSING", "Missing roads"), ("UNCONFIRMED", "Unconfirmed roads"),
                            ("MATCHED", "Matched roads")):
            self.addOutput(QgsProcessingOutputVectorLayer(name, label))
        for name, label in (("MISSING_KM", "Missing (km)"), ("UNCONFIRMED_KM", "Unconfirmed (km)"),
                            ("MATCHED_KM", "Matched (km)"), ("OFFSET_MEAN_M", "Mean offset of matched roads (m)")):
            self.addOutput(QgsProcessingOutputNumber(name, label))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - Processing API
        layer = self.parameterAsRasterLayer(parameters, "INPUT", context)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        settings = ExtractSettings.load()  # the dialog's vectorizer settings; inference from the parameters
        for key, value in self._options(parameters, context, "inference", INFERENCE_OPTIONS).items():
            setattr(settings, key, value)
        try:
            job = {"input": _file_of(layer), "roads": self._vector_path(parameters, "ROADS", context, feedback),
                   "out": out, "overwrite": True, "model": self.parameterAsFile(parameters, "MODEL", context) or None,
                   "compare_options": self._options(parameters, context, "compare", names("compare")),
                   **settings.inference_options(), "vectorize_options": settings.vectorize_options()}
        except ValueError as exc:
            raise QgsProcessingException(str(exc)) from None
        minutes = self.parameterAsDouble(parameters, "TEACH_MINUTES", context)
        if minutes > 0:  # the layer as labels that lack roads (`--labels incomplete`), then the comparison
            feedback.pushInfo(f"teaching the model from the layer for {minutes:g} min first")
            taught = self._request("finetune", {
                "rasters": [job["input"]], "roads": job["roads"], "labels": "incomplete", "minutes": minutes,
                "init": job["model"] or "", "out": QgsProcessingUtils.generateTempFilename("taught.pt"),
                "overwrite": True, "device": settings.device, "precision": settings.precision}, feedback)
            job["model"] = taught["model"]
        result = self._request("update_map", job, feedback)
        feedback.pushInfo(result["text"])
        self._load_road_layers(out, layer.name(), context, MAP_UPDATE_LAYERS)
        return {"OUTPUT": out, "MISSING": f"{out}|layername=missing", "UNCONFIRMED": f"{out}|layername=unconfirmed",
                "MATCHED": f"{out}|layername=matched", "MISSING_KM": result["missing_km"],
                "UNCONFIRMED_KM": result["unconfirmed_km"], "MATCHED_KM": result["matched_km"],
                "OFFSET_MEAN_M": result["offset_mean_m"]}


class TeachFromReviewAlgorithm(_EngineAlgorithm):
    """`python -m training review` in the toolbox: the next round of the update-map review loop."""

    def name(self) -> str:
        return "teach_from_review"

    def displayName(self) -> str:  # noqa: N802 - Processing API
        return "Teach from my review"

    def shortHelpString(self) -> str:  # noqa: N802 - Processing API
        return ("The next round after \"Find roads missing from a layer\": mark pieces of its missing and "
                "unconfirmed layers accepted (a road) or rejected (no road) in their review field, save the edits, "
                "then run this. It fine-tunes the model that made the GeoPackage on the layer's roads and the "
                "accepted pieces as road, the rejected ones as background (elsewhere background only near drawn "
                "roads, where the model sees none), and compares the imagery again against the layer as reviewed. "
                "Writes NAME-roundN.gpkg (the comparison), NAME-roundN.pt (its model) and NAME-roundN-roads.gpkg "
                "(your layer brought up to date) beside the reviewed GeoPackage.")

    def initAlgorithm(self, config=None):  # noqa: N802 - Processing API
        self.addParameter(QgsProcessingParameterFile("REVIEW", "Reviewed map update (GeoPackage)",
                                                     fileFilter="GeoPackage (*.gpkg)"))
        self.addParameter(QgsProcessingParameterNumber("MINUTES", "Minutes of fine-tuning",
                                                       QgsProcessingParameterNumber.Double,
                                                       default("finetune", "minutes"), minValue=0.01))
        self.addParameter(QgsProcessingParameterFile("MODEL", "Model to teach (empty: the one that made the review)",
                                                     optional=True, fileFilter="Model files (*.pt *.pth)"))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Next round (empty: NAME-roundN.gpkg beside the review)", "GeoPackage (*.gpkg)",
            optional=True, createByDefault=False))
        for name, label in (("MISSING", "Missing roads"), ("UNCONFIRMED", "Unconfirmed roads"),
                            ("MATCHED", "Matched roads")):
            self.addOutput(QgsProcessingOutputVectorLayer(name, label))
        self.addOutput(QgsProcessingOutputFile("MODEL_FILE", "Model file"))
        self.addOutput(QgsProcessingOutputVectorLayer("ROADS_REVIEWED", "The layer as reviewed"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - Processing API
        review = self.parameterAsFile(parameters, "REVIEW", context)
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        if out and Path(QgsProcessingUtils.tempFolder()) in Path(out).resolve().parents:
            out = ""  # a round is kept beside its review, not in files QGIS deletes on quit
        settings = ExtractSettings.load()
        result = self._request("review", {
            "review": review, "minutes": self.parameterAsDouble(parameters, "MINUTES", context), "out": out,
            "init": self.parameterAsFile(parameters, "MODEL", context) or "",
            "overwrite": True, "inference": {"device": settings.device, "precision": settings.precision}}, feedback)
        feedback.pushInfo(result["text"])
        round_file = result["out"]
        self._load_road_layers(round_file, Path(round_file).stem, context, MAP_UPDATE_LAYERS)
        return {"MISSING": f"{round_file}|layername=missing", "UNCONFIRMED": f"{round_file}|layername=unconfirmed",
                "MATCHED": f"{round_file}|layername=matched", "MODEL_FILE": result["model"],
                "ROADS_REVIEWED": result["roads_layer"]}


class RoadExtractorProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "road_extractor"

    def name(self) -> str:
        return "Road extractor"

    def icon(self) -> QIcon:
        return QIcon(str(RESOURCES / "icon.svg"))

    def loadAlgorithms(self) -> None:  # noqa: N802 - Processing API
        for algorithm in (ExtractRoadsAlgorithm(), VectorizeRoadMaskAlgorithm(), EvaluateRoadsAlgorithm(),
                          FinetuneRoadModelAlgorithm(), FindMissingRoadsAlgorithm(), TeachFromReviewAlgorithm()):
            self.addAlgorithm(algorithm)

