"""The engine never loads Qt, QGIS or the training package; the plugin never loads torch."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _imported_roots(package: str) -> set[str]:
    roots = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_qt_or_qgis():
    assert not _imported_roots("core") & {"qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "processing"}
    code = ("import sys, core.frontends.cli, core.frontends.demo, core.model.onnx_export, core.extraction.inference; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_plugin_imports_no_torch():
    assert not _imported_roots("road_extractor") & {"torch", "core", "onnxruntime", "numpy"}


def test_the_engine_imports_nothing_from_the_training_package_above_it():
    assert "training" not in _imported_roots("core")  # fine-tuning reaches the worker from training.worker
    code = ("import sys, core.frontends.worker, core.frontends.cli, core.frontends.jobs; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'training']; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
