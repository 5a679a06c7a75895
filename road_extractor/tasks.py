"""The "Extract roads" run as a QgsTask: progress and cancel in QGIS's task manager, the interface stays responsive,
and everything that touches layers or widgets happens in `finished`, on the main thread."""

from __future__ import annotations

import time
from collections.abc import Callable

from qgis.core import Qgis, QgsMessageLog, QgsTask

from .engine import EngineError
from .runner import ExtractionRun, engine_start_seconds, execute

LOG_TAG = "Road extractor"


class ExtractRoadsTask(QgsTask):
    def __init__(self, run: ExtractionRun, on_done: Callable[[dict | None, str | None], None]) -> None:
        super().__init__(f"Extract roads from {run.raster.name}", QgsTask.CanCancel)
        self.run_plan, self.on_done = run, on_done
        self.result: dict | None = None
        self.error: str | None = None
        self.details = ""
        self.message = ""
        self.wall_seconds = 0.0  # from the start of the work to the result, engine start included
        self.workload = None  # the dialog's estimate.Workload for this run, if it came from the dialog
        self.engine_start_seconds: float | None = None

    def run(self) -> bool:  # background thread: no layers, no widgets
        def progress(fraction: float, message: str) -> None:
            self.message = message
            self.setProgress(100 * fraction)

        started = time.monotonic()
        try:
            self.result = execute(self.run_plan, progress, self.isCanceled,
                                  on_log=lambda m: QgsMessageLog.logMessage(m, LOG_TAG, Qgis.Info))
            self.wall_seconds = time.monotonic() - started
            self.engine_start_seconds = engine_start_seconds()
            return True
        except EngineError as exc:
            self.error = "cancelled" if exc.kind == "cancelled" else str(exc)
            self.details = exc.details
        except Exception as exc:  # shown to the user; the task must never take QGIS down
            self.error = f"{type(exc).__name__}: {exc}"
        return False

    def finished(self, ok: bool) -> None:  # main thread
        if not ok and self.error is None:
            self.error = "cancelled"
        if self.details:
            QgsMessageLog.logMessage(self.details, LOG_TAG, Qgis.Critical)
        self.on_done(self.result if ok else None, self.error)
