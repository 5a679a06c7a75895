"""Menu, toolbar, dialog and Processing provider. The work belongs to the engine, in its own process."""

from __future__ import annotations

import html

from qgis.core import Qgis, QgsApplication, QgsMessageLog

from .engine import EngineMissing, find_engine_python
from .engine_options import in_dialog_words
from .layers import RESOURCES, add_results, run_title
from .runner import UserError, describe_map_update, describe_result, profile_dir, shutdown_engine
from .tasks import LOG_TAG, ExtractRoadsTask

MENU = "&Road extractor"
ICON = RESOURCES / "icon.svg"


class RoadExtractorPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list = []
        self.toolbar = None
        self.provider = None
        self.dialog = None
        self.tasks: list[ExtractRoadsTask] = []
        self._said = None  # the message bar item of the latest run: a run replaces it, never piles up under it

    def initProcessing(self) -> None:  # noqa: N802 - QGIS plugin interface (also called by qgis_process)
        from .processing_provider import RoadExtractorProvider

        if self.provider is None:
            self.provider = RoadExtractorProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS plugin interface
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        self.toolbar = self.iface.addToolBar(LOG_TAG)
        self.toolbar.setObjectName("RoadExtractorToolbar")
        action = QAction(QIcon(str(ICON)), "Extract roads…", self.iface.mainWindow())
        action.setObjectName("road_extractor_extract_roads")
        action.setToolTip("Extract road centrelines from a raster layer")
        action.triggered.connect(self.show_dialog)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.toolbar.addAction(action)
        self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        for task in self.tasks:
            try:
                task.cancel()
            except RuntimeError:  # QGIS already deleted the finished task's C++ object
                pass
        self.tasks.clear()
        if self.dialog is not None:
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        shutdown_engine()

    # ------------------------------------------------------------------------------------------------ runs

    def show_dialog(self) -> None:
        from .dialog import ExtractRoadsDialog

        if self.dialog is None:
            self.dialog = ExtractRoadsDialog(self.iface, on_setup=self.setup_engine)
            self.dialog.accepted.connect(lambda: self.start_run(self.dialog))
        self.dialog.show()
        self.dialog.raise_()

    def start_run(self, dialog) -> ExtractRoadsTask | None:
        """Plans the run from the dialog's choices (main thread) and hands it to a QgsTask."""
        try:
            find_engine_python(dialog.current_settings().engine_python or None, profile_dir())
        except EngineMissing as exc:
            if dialog.planned is not None:  # checked, but it cannot run: its temporary folder goes
                dialog.take_plan().discard()
            self.offer_engine_setup(exc)
            return None
        try:
            run = dialog.take_plan()
        except (UserError, EngineMissing, ValueError) as exc:
            self.report_error(str(exc))
            return None
        raster = run.raster
        dialog.update_estimate()  # the workload as it is now (the engine may have started since)
        task = ExtractRoadsTask(run, lambda result, error: self.run_finished(task, result, error))
        task.workload = dialog.workload
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        doing = f"finding roads missing from '{run.compare_name}' in" if run.operation == "update_map" \
            else "extracting roads from"
        self.say(Qgis.Info, f"{doing} '{raster.name}' (see the task manager)")
        return task

    def say(self, level, text: str, details: str = "") -> None:
        """The run's one message in the bar, replacing the previous run's; long text and the rest of the
        warnings behind a 'Details' button (the bar shows two lines)."""
        from qgis.PyQt.QtWidgets import QMessageBox, QPushButton

        bar = self.iface.messageBar()
        if self._said is not None:
            try:
                bar.popWidget(self._said)
            except RuntimeError:  # closed by the user, or by QGIS after its time
                pass
        item = bar.createMessage(LOG_TAG, text)
        if details:
            button = QPushButton("Details…", item)
            button.clicked.connect(lambda: QMessageBox.information(self.iface.mainWindow(), LOG_TAG, details))
            item.layout().addWidget(button)
        self._said = item
        bar.pushWidget(item, level, 0 if level in (Qgis.Warning, Qgis.Critical) else 10)

    def run_finished(self, task: ExtractRoadsTask, result: dict | None, error: str | None) -> None:
        if task in self.tasks:
            self.tasks.remove(task)
        if result is None:
            task.run_plan.discard()  # the written inputs with it
            if error == "cancelled":
                self.say(Qgis.Info, f"{'comparison' if task.run_plan.operation == 'update_map' else 'road extraction'} "
                                    f"cancelled; nothing was written")
            else:
                self.report_error(error or "the run failed")
            return
        task.run_plan.remove_written_inputs()
        layers_panel = self.iface.layerTreeView() if hasattr(self.iface, "layerTreeView") else None
        plan = task.run_plan
        title = run_title(plan.raster.name, plan.settings.model, operation=plan.operation)
        add_results(result, title, canvas=self.iface.mapCanvas(), view=layers_panel, operation=plan.operation)
        if task.workload is not None:
            task.workload.learn(task.wall_seconds, task.engine_start_seconds,  # this machine's figures
                                result.get("prepare_seconds"))
            if self.dialog is not None:  # the next estimate uses them at once, not after a field changes
                self.dialog.update_estimate()
        if plan.operation == "update_map":
            line = describe_map_update(result, plan.compare_name)
            warnings = [note for note in result.get("notes", []) if note.startswith("warning")]
            QgsMessageLog.logMessage(f"{line} -> {result['out']}", LOG_TAG, Qgis.Info)
        else:
            line, warnings = describe_result(result, plan.settings)
            QgsMessageLog.logMessage(f"{line} -> {result['roads']}", LOG_TAG, Qgis.Info)
        for warning in warnings:
            QgsMessageLog.logMessage(warning, LOG_TAG, Qgis.Warning)
        warnings = [in_dialog_words(w) for w in warnings]
        if not warnings:
            self.say(Qgis.Success, line)
        else:  # one message: the first warning (a run without roads: why) and the summary; all of it in Details
            first = warnings[0] if not result.get("road_count", 1) else f"{line}; {warnings[0]}"
            self.say(Qgis.Warning, first + (f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""),
                     "\n\n".join([line, *warnings]))

    def offer_engine_setup(self, problem: Exception) -> None:
        """The engine's environment is missing: say so, show the commands, offer to set it up."""
        from qgis.PyQt.QtWidgets import QPushButton

        from .setup_engine import commands_text

        # The log panel renders HTML: escaped, `numpy<2 rasterio affine<3 shapely>=2` stays a command one can copy.
        QgsMessageLog.logMessage(html.escape(f"{problem}\nTo create it from a terminal:\n"
                                             f"{commands_text(profile_dir())}"), LOG_TAG, Qgis.Warning)
        bar = self.iface.messageBar()
        widget = bar.createMessage(LOG_TAG, "The road extraction engine needs its own Python environment "
                                   "(PyTorch and friends, about 1.2 GB for the CPU build).")
        button = QPushButton("Set up engine…", widget)
        widget.layout().addWidget(button)

        def start() -> None:
            bar.popWidget(widget)
            self.setup_engine()

        button.clicked.connect(start)
        bar.pushWidget(widget, Qgis.Warning)

    def setup_engine(self, parent=None, torch_build: str | None = None):
        """Asks which PyTorch build (CPU-only unless an NVIDIA driver is found) unless told, shows the commands,
        runs them as a cancellable task. Returns the task, or None when the user closed the dialog."""
        from .setup_engine import EngineSetupDialog, EngineSetupTask

        if torch_build is None:
            choice = EngineSetupDialog(profile_dir(), parent or self.iface.mainWindow())
            if not choice.exec_():
                return None
            torch_build = choice.torch_build()
        task = EngineSetupTask(profile_dir(), torch_build)
        bar = self.iface.messageBar()

        def completed() -> None:
            self._forget(task)
            shutdown_engine()  # a worker started with another Python must not be reused
            bar.pushSuccess(LOG_TAG, "engine environment ready")

        def terminated() -> None:
            self._forget(task)
            if task.error and task.error.startswith("cancelled"):
                bar.pushInfo(LOG_TAG, "engine set-up cancelled; the partly created environment was removed")
            else:
                self.report_error(task.error or "engine set-up failed")

        task.taskCompleted.connect(completed)
        task.taskTerminated.connect(terminated)
        self.tasks.append(task)
        QgsApplication.taskManager().addTask(task)
        bar.pushInfo(LOG_TAG, "setting up the engine (see the task manager; the log panel shows pip's output)")
        return task

    def _forget(self, task) -> None:
        if task in self.tasks:
            self.tasks.remove(task)

    def report_error(self, message: str) -> None:
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Critical)
        first = in_dialog_words(message.splitlines()[0])
        self.say(Qgis.Critical, first, message if len(first) > 150 or "\n" in message else "")
