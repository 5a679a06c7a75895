"""Creating the engine's environment from inside QGIS: a virtual environment in the QGIS profile with the engine's
dependencies installed by pip, as a cancellable QgsTask. The same commands are shown for users who prefer a
terminal."""

from __future__ import annotations

import html
import shutil
import subprocess
import sys

from qgis.core import Qgis, QgsMessageLog, QgsTask

from .engine import install_commands, managed_environment
from .tasks import LOG_TAG


def base_python() -> str:
    """A Python that can create a virtual environment: QGIS's own interpreter where it is a real Python (Linux,
    macOS), else `python3` on the PATH (Windows' QGIS ships python.exe beside qgis-bin.exe)."""
    if sys.executable and "python" in sys.executable.lower():
        return sys.executable
    return shutil.which("python3") or shutil.which("python") or "python3"


def commands_text(profile_dir: str) -> str:
    return "\n".join(" ".join(command) for command in install_commands(profile_dir, base_python()))


class EngineSetupTask(QgsTask):
    def __init__(self, profile_dir: str) -> None:
        super().__init__("Road extractor: set up the engine environment", QgsTask.CanCancel)
        self.profile_dir = profile_dir
        self.error: str | None = None

    def run(self) -> bool:
        commands = install_commands(self.profile_dir, base_python())
        for step, command in enumerate(commands):
            QgsMessageLog.logMessage(html.escape(" ".join(command)), LOG_TAG, Qgis.Info)
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in process.stdout:
                QgsMessageLog.logMessage(line.rstrip(), LOG_TAG, Qgis.Info)
                if self.isCanceled():
                    process.kill()
                    break
            process.wait()
            if self.isCanceled():
                shutil.rmtree(managed_environment(self.profile_dir), ignore_errors=True)
                self.error = "cancelled; the partly created environment was removed"
                return False
            if process.returncode != 0:
                self.error = (f"'{' '.join(command[:4])} ...' failed (exit code {process.returncode}); the log panel "
                              f"shows pip's output. Without internet access, create the environment elsewhere and "
                              f"set its Python in the plugin's settings")
                return False
            self.setProgress(100 * (step + 1) / len(commands))
        return True
