"""The "Extract roads" dialog. It only fills in `ExtractSettings` and an area; the run itself is a QgsTask."""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMapLayerProxyModel, QgsProject, QgsRectangle, QgsTask
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget, QgsMapLayerComboBox, QgsMapToolExtent
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .estimate import AUGMENT_PASSES, Workload, pass_cost
from .layers import OUTPUT_PROPERTY
from .runner import (
    AreaRequest,
    ExtractionRun,
    UserError,
    area_outside,
    describe_layer,
    engine_request,
    engine_running,
    metres_per_unit,
    plan_run,
    remove_written,
    road_layer_file,
    selection_area,
    transform_extent,
)
from .settings import AREAS, AUGMENTS, BRIGHTNESS, PRECISIONS, ExtractSettings, made_models

AREA_LABELS = {"layer": "Layer extent", "canvas": "Map canvas extent", "selection": "Selected features of",
               "rectangle": "Drawn rectangle"}
AUGMENT_LABELS = {"none": "none", "flip": "mirror (2x time)", "d4": "all 8 flips and rotations (8x time)"}


class ExtractRoadsDialog(QDialog):
    def __init__(self, iface, parent=None, on_setup=None) -> None:
        super().__init__(parent or iface.mainWindow())
        self.iface = iface
        self.on_setup = on_setup  # the plugin's engine set-up (a dialog, then a task it keeps track of)
        self.setWindowTitle("Extract roads")
        self.setObjectName("RoadExtractorDialog")
        self.settings = ExtractSettings.load()
        self.drawn_rectangle: QgsRectangle | None = None
        self.model_info: dict = {}
        self.model_error: str | None = None  # the engine refused the chosen model file: Run is blocked
        self.workload: Workload | None = None  # what the estimate was made of; a finished run learns from it
        self.planned: ExtractionRun | None = None  # the run Run checked, handed to the plugin on closing
        self._build()
        self._load(self.settings)
        self.resize(*self.default_size())
        self.check_model()  # the shipped model's description too, from the first opening

    # ------------------------------------------------------------------------------------------------ layout

    DEFAULT_SIZE = (600, 720)

    def default_size(self) -> tuple[int, int]:
        """Wide enough that the rows read in one line, no taller than the screen leaves (1366x768: 768 less the
        title bar and a task bar); the fields scroll beyond that."""
        screen = self.screen() if hasattr(self, "screen") and self.screen() else None
        height = self.DEFAULT_SIZE[1]
        if screen is not None:
            height = min(height, screen.availableGeometry().height() - 60)
        return self.DEFAULT_SIZE[0], height

    def _build(self) -> None:
        # The fields scroll; the problem line and the buttons stay in view. At the default size (or a 1366x768
        # screen) every widget keeps its natural height: a scroll bar appears instead of squashed rows.
        outer = QVBoxLayout(self)
        scroll = QScrollArea()
        scroll.setObjectName("RoadExtractorFields")
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # long text wraps instead
        fields = QWidget()
        scroll.setWidget(fields)
        outer.addWidget(scroll, 1)
        layout = QVBoxLayout(fields)
        layout.setContentsMargins(0, 0, 0, 0)
        form = QFormLayout()
        self.layer = QgsMapLayerComboBox()
        self.layer.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.hide_outputs()
        QgsProject.instance().layersAdded.connect(self.hide_outputs)
        form.addRow("Imagery", self.layer)

        area_row = QHBoxLayout()
        self.area = QComboBox()
        for key in AREAS:
            self.area.addItem(AREA_LABELS[key], key)
        self.area_layer = QgsMapLayerComboBox()
        self.area_layer.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.draw = QPushButton("Draw…")
        area_row.addWidget(self.area)
        area_row.addWidget(self.area_layer, 1)
        area_row.addWidget(self.draw)
        form.addRow("Area", area_row)

        # A second mode of the same run: with a road layer chosen, Run finds the roads it lacks (update-map).
        self.compare = QgsMapLayerComboBox()
        self.compare.setObjectName("RoadExtractorCompare")
        self.compare.setFilters(QgsMapLayerProxyModel.LineLayer)
        self.compare.setAllowEmptyLayer(True)
        self.compare.setLayer(None)
        self.compare.setToolTip("An existing road layer (an OpenStreetMap export, a municipal layer): Run then "
                                "finds the roads of the imagery it lacks (missing), its roads the imagery does not "
                                "show (unconfirmed) and how far the rest is off (matched), to review and edit. "
                                "Empty: extract roads")
        self.compare_label = QLabel("")
        self.compare_label.setWordWrap(True)
        form.addRow("Compare with", self.compare)
        form.addRow("", self.compare_label)

        self.model = QgsFileWidget()
        self.model.setFilter("Model files (*.pt *.pth *.onnx)")
        self.model.lineEdit().setPlaceholderText("the shipped model")
        self.model_label = QLabel("")
        self.model_label.setWordWrap(True)
        self.finetune = QPushButton("Fine-tune…")
        self.finetune.setToolTip("Teach the model your imagery from road lines you have (Processing: Fine-tune road "
                                 "model); the new model is chosen here when it is done")
        model_row = QHBoxLayout()
        model_row.addWidget(self.model, 1)
        model_row.addWidget(self.finetune)
        form.addRow("Model", model_row)
        form.addRow("", self.model_label)
        self.made = QComboBox()
        self.made.setToolTip("Models fine-tuned in this QGIS profile, newest first: file, parent, when, and the check "
                             "area's figure before and after")
        form.addRow("Models made", self.made)
        layout.addLayout(form)

        inference = QgsCollapsibleGroupBox("Inference")
        inference_form = QFormLayout(inference)
        self.scales = QLineEdit()
        self.augment = QComboBox()
        for key in AUGMENTS:  # the engine's codes (d4) stay inside; the analyst reads what each one does
            self.augment.addItem(AUGMENT_LABELS.get(key, key), key)
        self.engine = QgsFileWidget()
        self.engine.lineEdit().setPlaceholderText("found automatically (the environment 'Set up engine…' makes)")
        self.engine.setToolTip("The Python of an environment with the engine's requirements (PyTorch, rasterio, "
                               "...), e.g. a conda or venv python you already have")
        self.setup = QPushButton("Set up engine…")
        self.setup.setToolTip("Create the engine's environment: CPU-only PyTorch (about 1.2 GB) or CUDA (about 6 GB)")
        engine_row = QHBoxLayout()
        engine_row.addWidget(self.engine, 1)
        engine_row.addWidget(self.setup)
        self.device = QComboBox()
        self.device.setEditable(True)
        self.device.addItems(["auto", "cpu", "cuda:0"])
        self.test_device = QPushButton("Test")
        device_row = QHBoxLayout()
        device_row.addWidget(self.device, 1)
        device_row.addWidget(self.test_device)
        self.device_label = QLabel("")
        self.device_label.setWordWrap(True)  # a long engine message wraps instead of widening the dialog
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip("auto: bf16 where the GPU or CPU computes it natively (CPUs with AMX or AVX-512 "
                                  "BF16: 2-4x faster), else fp32")
        self.brightness = QComboBox()
        self.brightness.addItems(BRIGHTNESS)
        self.brightness.setToolTip("auto: imagery much darker or brighter than the model's training imagery is "
                                   "brought to its brightness by one curve (the log says when); none: as it is")
        self.threshold = self._spin(0.05, 0.95, 0.05)
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        inference_form.addRow("Engine", engine_row)
        inference_form.addRow("Scales", self.scales)
        inference_form.addRow("Flips / rotations", self.augment)
        inference_form.addRow("Device", device_row)
        inference_form.addRow("", self.device_label)
        inference_form.addRow("Precision", self.precision)
        inference_form.addRow("Brightness", self.brightness)
        inference_form.addRow("Mask threshold", self.threshold)
        inference_form.addRow("Estimate", self.estimate)
        layout.addWidget(inference)

        vectors = QgsCollapsibleGroupBox("Road lines (lengths in metres)")
        vector_form = QFormLayout(vectors)
        self.spur = self._spin(0, 200, 1)
        self.min_length = self._spin(0, 1000, 5)
        self.bridge = self._spin(0, 200, 1)
        self.simplify = self._spin(0, 20, 0.5)
        vector_form.addRow("Prune dead ends shorter than", self.spur)
        vector_form.addRow("Drop pieces shorter than", self.min_length)
        vector_form.addRow("Join road ends to roads within", self.bridge)
        vector_form.addRow("Simplify within", self.simplify)
        layout.addWidget(vectors)

        output_form = QFormLayout()
        self.output = QgsFileWidget()
        self.output.setStorageMode(QgsFileWidget.SaveFile)
        self.output.setFilter("GeoPackage (*.gpkg)")
        self.output.lineEdit().setPlaceholderText("a temporary file")
        self.overwrite = QCheckBox("Overwrite")
        output_row = QHBoxLayout()
        output_row.addWidget(self.output, 1)
        output_row.addWidget(self.overwrite)
        holder = QWidget()
        holder.setLayout(output_row)
        self.output_label = QLabel("Roads GeoPackage")
        output_form.addRow(self.output_label, holder)
        layout.addLayout(output_form)

        # What stops Run, beside the buttons: the dialog stays open with the choices as they were.
        self.problem = QLabel("")
        self.problem.setWordWrap(True)
        self.problem.setTextFormat(Qt.PlainText)
        self.problem.setObjectName("RoadExtractorProblem")
        self.problem.setStyleSheet("color: #b00")
        self.problem.setVisible(False)
        layout.addStretch(1)
        for combo in fields.findChildren(QComboBox):  # a long layer or model name must not widen the dialog
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        outer.addWidget(self.problem)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Close | QDialogButtonBox.Help)
        self.buttons.button(QDialogButtonBox.Ok).setText("Run")
        outer.addWidget(self.buttons)
        self.buttons.rejected.connect(self.reject)
        self.buttons.accepted.connect(self.accept)
        self.buttons.helpRequested.connect(self.open_help)

        self.area.currentIndexChanged.connect(self._area_changed)
        self.compare.layerChanged.connect(lambda *_: self._compare_changed())
        self._compare_changed()
        self.draw.clicked.connect(self._draw_rectangle)
        self.test_device.clicked.connect(self.check_device)
        self.setup.clicked.connect(self.set_up_engine)
        self.engine.fileChanged.connect(lambda _: self.check_model())
        self.finetune.clicked.connect(self.open_finetune)
        self.model.fileChanged.connect(lambda _: self.check_model())
        self.made.activated.connect(self._choose_made_model)
        for signal in (self.layer.layerChanged, self.area.currentIndexChanged, self.scales.textChanged,
                       self.augment.currentIndexChanged, self.device.currentTextChanged):
            signal.connect(lambda *_: self.update_estimate())

    def refresh_made_models(self) -> None:
        """The models this profile made, the selected model's entry current; a file that is gone says so."""
        made = made_models()
        self.made.clear()
        self.made.addItem("choose one to use it…" if made else "none yet: Fine-tune… makes one", "")
        for model in made:
            self.made.addItem(model.describe(), model.path)
            if not model.exists:
                self.made.setItemData(self.made.count() - 1, "the file is gone (moved or deleted)", Qt.ToolTipRole)
        current = self.made.findData(self.model.filePath().strip())
        self.made.setCurrentIndex(max(0, current))
        self.made.setEnabled(bool(made))

    def _choose_made_model(self, index: int) -> None:
        path = self.made.itemData(index)
        if not path:
            return
        if not Path(path).is_file():
            self.model_label.setText(f"<span style='color:#b00'>{html.escape(Path(path).name)} is gone (moved or "
                                     f"deleted); choose another model</span>")
            return
        self.model.setFilePath(path)

    @staticmethod
    def _spin(low: float, high: float, step: float) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setSingleStep(step)
        spin.setDecimals(2)
        return spin

    def _load(self, s: ExtractSettings) -> None:
        self.area.setCurrentIndex(max(0, AREAS.index(s.area) if s.area in AREAS else 0))
        self.model.setFilePath(s.model)
        self.refresh_made_models()
        self.engine.setFilePath(s.engine_python)
        self.scales.setText(s.scales)
        self.augment.setCurrentIndex(max(0, self.augment.findData(s.augment)))
        self.device.setCurrentText(s.device)
        self.precision.setCurrentText(s.precision if s.precision in PRECISIONS else "auto")
        self.brightness.setCurrentText(s.brightness if s.brightness in BRIGHTNESS else "auto")
        self.threshold.setValue(s.threshold)
        self.spur.setValue(s.spur_m)
        self.min_length.setValue(s.min_length_m)
        self.bridge.setValue(s.bridge_m)
        self.simplify.setValue(s.simplify_m)
        self.output.setFilePath(s.output)
        self.overwrite.setChecked(s.overwrite)
        self._area_changed()
        self.update_estimate()

    def current_settings(self) -> ExtractSettings:
        """A new settings object from the widgets (signals fire while `_load` fills them: never write back)."""
        s = replace(self.settings)
        s.area = self.area.currentData()
        s.model = self.model.filePath().strip()
        s.engine_python = self.engine.filePath().strip()
        s.scales = self.scales.text()
        s.augment = self.augment.currentData()
        s.device = self.device.currentText().strip() or "auto"
        s.precision = self.precision.currentText()
        s.brightness = self.brightness.currentText()
        s.threshold = self.threshold.value()
        s.spur_m, s.min_length_m = self.spur.value(), self.min_length.value()
        s.bridge_m, s.simplify_m = self.bridge.value(), self.simplify.value()
        s.output = self.output.filePath().strip()
        s.overwrite = self.overwrite.isChecked()
        return s

    # ------------------------------------------------------------------------------------------------ area

    def _area_changed(self) -> None:
        kind = self.area.currentData()
        self.area_layer.setVisible(kind == "selection")
        self.draw.setVisible(kind == "rectangle")

    DRAW_HINT = "Drag a rectangle on the map over the imagery to extract roads in; Esc cancels"

    def _draw_rectangle(self) -> None:
        canvas = self.iface.mapCanvas()
        self._previous_tool = canvas.mapTool()
        self._tool = RectangleTool(canvas, self._rectangle_drawn, self._drawing_ended)
        canvas.setMapTool(self._tool)
        # The dialog hides while drawing: the map says what to do.
        self._hint = self.iface.messageBar().createMessage("Road extractor", self.DRAW_HINT)
        self.iface.messageBar().pushWidget(self._hint, Qgis.Info)
        self.hide()

    def _rectangle_drawn(self, extent: QgsRectangle) -> None:
        self.drawn_rectangle = QgsRectangle(extent)
        self._drawing_ended()
        self.update_estimate()

    def _drawing_ended(self) -> None:
        """After a rectangle or Esc: the map tool as it was, the hint gone, the dialog back."""
        canvas = self.iface.mapCanvas()
        canvas.setMapTool(self._previous_tool) if self._previous_tool else canvas.unsetMapTool(self._tool)
        try:
            self.iface.messageBar().popWidget(self._hint)
        except RuntimeError:  # the user closed the hint already
            pass
        self.show()

    def area_request(self) -> AreaRequest:
        kind = self.area.currentData()
        canvas_crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        if kind == "canvas":
            return AreaRequest("canvas", QgsRectangle(self.iface.mapCanvas().extent()), canvas_crs)
        if kind == "rectangle":
            if self.drawn_rectangle is None or self.drawn_rectangle.isEmpty():
                raise UserError("no rectangle has been drawn; press 'Draw…' and drag a rectangle on the map")
            return AreaRequest("rectangle", QgsRectangle(self.drawn_rectangle), canvas_crs)
        if kind == "selection":
            return selection_area(self.area_layer.currentLayer())
        return AreaRequest("layer")

    # ---------------------------------------------------------------------------------------- engine checks

    def _in_background(self, description: str, work, done) -> None:
        """Engine calls start a process and load torch (seconds): never on the main thread."""
        def function(task):
            return work()

        def finished(exception, result=None):
            done(exception, result)

        task = QgsTask.fromFunction(description, function, on_finished=finished)
        self._checks = getattr(self, "_checks", []) + [task]
        QgsApplication.taskManager().addTask(task)

    def hide_outputs(self, *_) -> None:
        """The road probability and mask layers of earlier runs are not imagery: they are not offered."""
        outputs = [layer for layer in QgsProject.instance().mapLayers().values()
                   if layer.customProperty(OUTPUT_PROPERTY, False)]
        self.layer.setExceptedLayerList(outputs)

    def check_model(self) -> None:
        path = self.model.filePath().strip() or None
        # In a background task, the dialog usable meanwhile; the first start loads PyTorch (seconds).
        self.model_label.setText("reading the model…" if engine_running() else
                                 "starting the engine (the first time takes a few seconds), then reading the model…")
        settings = self.current_settings()

        def done(exception, result):
            if exception is not None:
                self.model_info = {}
                # Only the engine's verdict on the file blocks Run; a missing engine is offered set-up on Run.
                self.model_error = str(exception) if getattr(exception, "kind", "") == "input" else None
                first, *rest = str(exception).splitlines() or [""]
                self.model_label.setText(f"<span style='color:#b00'>{html.escape(first)}</span>")
                self.model_label.setToolTip(str(exception) if rest else "")
            else:
                self.model_error = None
                self.model_label.setToolTip("")
                self.model_info = result
                self.model_label.setText(f"{result['architecture']['backbone']}, trained at {result['gsd_m']} m/px, "
                                         f"classes {', '.join(result['classes'])}"
                                         + describe_metrics(result.get("metrics", {}),
                                                            result.get("provenance", {}))
                                         + "".join(f"; for {entry['serves']}: {entry['file']}"
                                                   for entry in result.get("catalog", [])[1:]))
            self.update_estimate()

        self._in_background("Road extractor: read model",
                            lambda: engine_request(settings, "describe_model", {"path": path}), done)

    def open_help(self) -> None:
        """The plugin's page of the documentation, from the files shipped with it (no internet needed)."""
        from qgis.PyQt.QtCore import QUrl
        from qgis.PyQt.QtGui import QDesktopServices

        from .help import help_page

        page = help_page()
        if page is None:
            self.show_problem("the documentation is not in this installation; see the project's docs/ folder")
            return
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(page)))

    FINETUNE_ALGORITHM = "road_extractor:finetune_road_model"

    def open_finetune(self) -> None:
        """Processing's dialog for the fine-tuning algorithm (a cancellable task with progress); the model it
        writes becomes this dialog's model."""
        import processing

        settings = self.current_settings()
        settings.save()
        parameters = {"MODEL": settings.model} if settings.model else {}
        layer = self.layer.currentLayer()
        if layer is not None:
            parameters["RASTERS"] = [layer.id()]
        processing.execAlgorithmDialog(self.FINETUNE_ALGORITHM, parameters)
        trained = ExtractSettings.load().model
        self.refresh_made_models()
        if trained and trained != settings.model:
            self.model.setFilePath(trained)
            self.made.setCurrentIndex(max(0, self.made.findData(trained)))

    def check_device(self) -> None:
        settings = self.current_settings()
        self.device_label.setText("starting the engine…")

        def done(exception, result):
            if exception is not None:
                self.device_label.setText(f"<span style='color:#b00'>{html.escape(str(exception))}</span>")
            else:
                self.device_label.setText(f"uses {result['uses_label']}, {result['precision_why']} "
                                          f"(torch {result['torch']})")

        self._in_background("Road extractor: test device",
                            lambda: engine_request(settings, "devices", {"device": settings.device,
                                                                          "precision": settings.precision}), done)

    def update_estimate(self) -> None:
        """Megapixels at the model's resolution x inference passes x seconds per megapixel-pass."""
        layer = self.layer.currentLayer()
        if layer is None:
            self.estimate.setText("")
            return
        try:
            settings = self.current_settings()
            scales = settings.scale_list()
            passes = len(scales) * AUGMENT_PASSES[settings.augment]
            area = self.area_request() if self.area.currentData() in ("canvas", "rectangle") else None
            outside = area_outside(describe_layer(layer), area) if area is not None else None
        except (UserError, ValueError, KeyError) as exc:
            self.estimate.setText(html.escape(str(exc), quote=False))
            return
        if outside:
            self.estimate.setText(f"<span style='color:#b00'>{html.escape(outside, quote=False)}</span>")
            return
        extent, crs = (area.extent, area.crs) if area and area.extent else (layer.extent(), layer.crs())
        if crs != layer.crs():
            extent = transform_extent(extent, crs, layer.crs()).intersect(layer.extent())
        gsd = float(self.model_info.get("gsd_m") or 1.0)
        unit = metres_per_unit(layer.crs(), extent)
        megapixels = extent.width() * unit / gsd * extent.height() * unit / gsd / 1e6
        device = "cuda" if settings.device.startswith("cuda") else "cpu"
        self.workload = Workload(megapixels, pass_cost(scales, settings.augment), device, not engine_running())
        seconds = self.workload.seconds()
        shown = f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s"
        self.estimate.setText(f"{megapixels:.2g} MP at {gsd:g} m/px x {passes} pass(es): {shown} "
                              f"on {'a GPU' if device == 'cuda' else 'the CPU'}")

    def set_up_engine(self) -> None:
        task = self.on_setup(self) if self.on_setup is not None else None
        if task is not None:
            self.model_label.setText("setting up the engine (see the task manager)…")
            task.taskCompleted.connect(self.check_model)

    def plan(self) -> ExtractionRun:
        """The run the widgets describe, checked as far as QGIS can before the engine (layer, area, output
        folder, scales); UserError with the problem and its fix otherwise."""
        settings = self.current_settings()
        if self.model_error:
            raise UserError(f"the model cannot be used: {self.model_error.splitlines()[0]}; choose another model "
                            f"file or clear the field for the shipped model")
        raster, area = describe_layer(self.layer.currentLayer()), self.area_request()
        compare = self.compare.currentLayer()
        compare_file = None
        try:
            if compare:
                compare_file = road_layer_file(compare)
            return plan_run(raster, area, settings, self.model_info.get("gsd_m"), compare_roads=compare_file,
                            compare_name=compare.name() if compare else "")
        except BaseException:  # a refused plan leaves none of the files it wrote for the engine
            remove_written(area.polygons_file, compare_file)
            raise

    def _compare_changed(self) -> None:
        """What Run will do, said under the field; the output's label follows."""
        layer = self.compare.currentLayer()
        self.compare_label.setText(
            f"Run finds the roads missing from '{layer.name()}' and its roads the imagery does not show: a "
            f"GeoPackage of missing, unconfirmed and matched roads, each with a review field (new / accepted / "
            f"rejected)" if layer else "empty: Run extracts roads; choose a line layer to find what it lacks")
        self.output_label.setText("Map update GeoPackage" if layer else "Roads GeoPackage")

    def show_problem(self, message: str) -> None:
        self.problem.setText(message)
        self.problem.setVisible(bool(message))

    def accept(self) -> None:
        """Checks the run; a problem is shown beside the buttons and the dialog stays open, nothing remembered.
        Otherwise the settings are saved and the plugin starts the run (`RoadExtractorPlugin.start_run`)."""
        try:
            self.planned = self.plan()
        except (UserError, ValueError) as exc:
            self.planned = None
            self.show_problem(str(exc))
            return
        self.show_problem("")
        self.settings = self.planned.settings
        self.settings.save()
        super().accept()

    def take_plan(self) -> ExtractionRun:
        """The run Run checked (once), or one planned now."""
        planned, self.planned = self.planned, None
        return planned or self.plan()



class RectangleTool(QgsMapToolExtent):
    """QGIS's extent tool, which also ends on Esc (it would otherwise stay the map tool with the dialog hidden)."""

    def __init__(self, canvas, drawn, ended) -> None:
        super().__init__(canvas)
        self.extentChanged.connect(drawn)
        self._ended = ended

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.key() == Qt.Key_Escape:
            self.clearRubberBand()
            self._ended()
            return
        super().keyPressEvent(event)


FINETUNE_AREAS = (("check", "check area"), ("elsewhere", "imagery held out"), ("parent_tiles", "the parent's tiles"))


def describe_metrics(metrics: dict, provenance: dict | None = None) -> str:
    """The model file's figures in one short line: a fine-tuned model's before -> after on its check area (and
    elsewhere, and the parent's tiles, where measured), a trained model's held-out figures (the shipped model's),
    else the first few numbers it has."""
    provenance = provenance or {}
    if any(key.startswith("check_after_") for key in metrics):
        parts = []
        for area, words in FINETUNE_AREAS:
            for key, label in (("relaxed_f1", "relaxed F1"), ("road_iou", "road IoU")):
                before, after = metrics.get(f"{area}_before_{key}"), metrics.get(f"{area}_after_{key}")
                if isinstance(before, float) and isinstance(after, float):
                    parts.append(f"{words}: {label} {before:.3f} before, {after:.3f} after")
                    break
        parent = provenance.get("parent")
        mix = provenance.get("mix_share")
        kept = ("; the parent's weights kept (nothing learnt scored better)" if mix == 0
                else f"; {mix:g} of the fine-tuned weights kept" if isinstance(mix, (int, float)) and mix < 1 else "")
        return (f"; fine-tuned{f' from {parent}' if parent else ''}: " + "; ".join(parts) + kept) if parts else ""
    if isinstance(metrics.get("heldout_road_iou"), float):
        text = f"; held-out road IoU {metrics['heldout_road_iou']:.3f}"
        if isinstance(metrics.get("heldout_multiscale_road_iou"), float):
            text += f" ({metrics['heldout_multiscale_road_iou']:.3f} at 0.75/1/1.25)"
        named = (("F1", "heldout_f1"), ("APLS", "heldout_apls"))
        return text + "".join(f", {label} {metrics[key]:.3f}" for label, key in named
                              if isinstance(metrics.get(key), float))
    numbers = [f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float)][:4]
    return f"; validation: {', '.join(numbers)}" if numbers else ""
