"""The "Extract roads" run as a QgsTask: progress and cancel in QGIS's task manager, the interface stays responsive,
and everything that touches layers or widgets happens in `finished`, on the main thread."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from qgis.core import Qgis, QgsMessageLog, QgsTask

from .engine import EngineError
from .runner import ExtractionRun, engine_start_seconds, execute

LOG_TAG = "Road extractor"


def task_name(run: ExtractionRun) -> str:
    if run.operation == "update_map":
        return f"Find roads missing from {run.compare_name} in {run.raster.name}"
    return f"Extract roads from {run.raster.name}"


class ExtractRoadsTask(QgsTask):
    def __init__(self, run: ExtractionRun, on_done: Callable[[dict | None, str | None], None]) -> None:
        super().__init__(task_name(run), QgsTask.CanCancel)
        self.run_plan, self.on_done = run, on_done
        self.result: dict | None = None
        self.error: str | None = None
        self.details = ""
        self.message = ""
        self.wall_seconds = 0.0  # from the start of the work to the result, engine start included
        self.workload = None  # the dialog's estimate.Workload for this run, if it came from the dialog
        self.engine_start_seconds: float | None = None

    def run(self) -> bool:  # background thread: no layers, no widgets
        started = time.monotonic()

        def progress(fraction: float, message: str) -> None:
            self.message = message
            self.setProgress(100 * fraction)
            self.setDescription(self.describe(fraction, message, time.monotonic() - started))

        try:
            self.result = execute(self.run_plan, progress, self.isCanceled,
                                  on_log=lambda m: QgsMessageLog.logMessage(m, LOG_TAG, Qgis.Info))
            self.wall_seconds = time.monotonic() - started
            self.engine_start_seconds = engine_start_seconds()
            # QGIS notifies "Task complete" with this text when its window is not the active one: say the result.
            if self.run_plan.operation == "update_map":
                found = (f"{self.result['missing_km']:.1f} km missing, {self.result['unconfirmed_km']:.1f} km "
                         f"unconfirmed")
            elif "road_count" in self.result:
                found = f"{self.result['road_count']} roads, {self.result.get('length_km', 0.0):.1f} km"
            else:
                found = "done"
            self.setDescription(f"{task_name(self.run_plan)}: {found} in {_duration(self.wall_seconds)}")
            return True
        except EngineError as exc:
            self.error = "cancelled" if exc.kind == "cancelled" else str(exc)
            self.details = exc.details
        except Exception as exc:  # shown to the user; the task must never take QGIS down
            self.error = f"{type(exc).__name__}: {exc}"
        return False

    def describe(self, fraction: float, message: str, elapsed_s: float) -> str:
        """What the task manager shows: the stage and its counts as the engine says them (reading, tile k of n,
        vectorizing, writing), the time spent and, once a tenth is done, the time left at the pace so far."""
        text = task_name(self.run_plan)
        message = re.sub(r", about [^,]* left$", "", message)  # the engine's stage ETA: the whole run's follows
        if message:
            text += f": {message}"
        text += f" - {_duration(elapsed_s)} so far"
        if 0.1 <= fraction < 1:
            text += f", about {_duration(elapsed_s * (1 - fraction) / fraction)} left"
        return text

    def finished(self, ok: bool) -> None:  # main thread
        if not ok and self.error is None:
            self.error = "cancelled"
        if self.details:
            QgsMessageLog.logMessage(self.details, LOG_TAG, Qgis.Critical)
        self.on_done(self.result if ok else None, self.error)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
