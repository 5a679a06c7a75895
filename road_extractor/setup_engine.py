"""Creating the engine's environment from inside QGIS: a virtual environment in the QGIS profile with the engine's
dependencies installed by pip, as a cancellable QgsTask. The dialog before it names the PyTorch build and its size
and shows the commands, as plain text one can copy: exactly those the task runs."""

from __future__ import annotations

import html
import shutil
import subprocess
import sys

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout

from .engine import (
    TORCH_BUILDS,
    default_torch_build,
    has_nvidia_driver,
    install_commands,
    managed_environment,
    torch_builds,
)
from .tasks import LOG_TAG


def base_python() -> str:
    """A Python that can create a virtual environment: QGIS's own interpreter where it is a real Python (Linux,
    macOS), else `python3` on the PATH (Windows' QGIS ships python.exe beside qgis-bin.exe)."""
    if sys.executable and "python" in sys.executable.lower():
        return sys.executable
    return shutil.which("python3") or shutil.which("python") or "python3"


def commands_text(profile_dir: str, torch_build: str = "cpu") -> str:
    return "\n".join(" ".join(command) for command in install_commands(profile_dir, base_python(), torch_build))


class EngineSetupDialog(QDialog):
    """Which PyTorch build, what it costs on disk, and the commands that will run."""

    def __init__(self, profile_dir: str, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up the road extraction engine")
        self.profile_dir = profile_dir
        layout = QVBoxLayout(self)
        intro = QLabel(f"The engine runs in its own Python environment with PyTorch, created in "
                       f"{managed_environment(profile_dir)}. It needs internet access once. An NVIDIA driver was "
                       f"{'found' if has_nvidia_driver() else 'not found'} on this machine.")
        intro.setWordWrap(True)
        layout.addWidget(intro)
        self.build = QComboBox()
        for key in torch_builds():
            self.build.addItem(TORCH_BUILDS[key], key)
        self.build.setCurrentIndex(self.build.findData(default_torch_build()))
        layout.addWidget(self.build)
        layout.addWidget(QLabel("Commands (the same can be run in a terminal):"))
        self.commands = QPlainTextEdit()
        self.commands.setReadOnly(True)
        self.commands.setLineWrapMode(QPlainTextEdit.NoWrap)
        layout.addWidget(self.commands)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.button(QDialogButtonBox.Ok).setText("Set up")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.build.currentIndexChanged.connect(self._show_commands)
        self._show_commands()
        self.resize(760, 300)

    def _show_commands(self) -> None:
        self.commands.setPlainText(commands_text(self.profile_dir, self.torch_build()))

    def torch_build(self) -> str:
        return self.build.currentData()


class EngineSetupTask(QgsTask):
    def __init__(self, profile_dir: str, torch_build: str = "cpu") -> None:
        super().__init__("Road extractor: set up the engine environment", QgsTask.CanCancel)
        self.profile_dir = profile_dir
        self.commands = install_commands(profile_dir, base_python(), torch_build)
        self.error: str | None = None

    def run(self) -> bool:
        for step, command in enumerate(self.commands):
            QgsMessageLog.logMessage(html.escape(" ".join(command)), LOG_TAG, Qgis.Info)
            with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
                for line in process.stdout:
                    QgsMessageLog.logMessage(html.escape(line.rstrip()), LOG_TAG, Qgis.Info)
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
                              f"choose its Python in the dialog's Engine field")
                return False
            self.setProgress(100 * (step + 1) / len(self.commands))
        return True
