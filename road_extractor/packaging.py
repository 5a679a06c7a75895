"""`python -m road_extractor.packaging --out dist/road_extractor.zip`: a zip for QGIS's "Install from ZIP".

Layout inside the zip (one top-level folder, as QGIS requires):

    road_extractor/              the plugin's modules, metadata.txt, resources/ (icon, QML styles)
    road_extractor/engine/core/  the engine's source, run by the worker process (PYTHONPATH=engine)
    road_extractor/engine/resources/models/   the shipped models, their catalog, cards and STAC items
    road_extractor/help/         the documentation site (mkdocs), opened by the dialog's Help offline

The engine's dependencies (torch, rasterio, ...) are not in the zip: the plugin creates an environment for them
on first use, or uses one the user points it to.
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from road_extractor.help import HELP_FOLDER

REPO = Path(__file__).resolve().parent.parent
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def _files(folder: Path, suffixes: tuple[str, ...] | None = None):
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not SKIP_PARTS & set(path.parts) and (suffixes is None or path.suffix in suffixes):
            yield path


def version() -> str:
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt")
    return metadata["general"]["version"]


def _build_site(folder: Path) -> None:
    """`mkdocs build --strict` of docs/ into `folder` (mkdocs comes with the dev and docs extras)."""
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(folder)],
                           cwd=REPO, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["mkdocs failed"])[-1]
        raise SystemExit(f"the documentation site did not build ({last}); install the docs extra "
                         f"(pip install -e '.[docs]') and check `make docs`")


def build_zip(out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.part")
    root = "road_extractor"
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in _files(REPO / "road_extractor", (".py",)):
            archive.write(path, f"{root}/{path.relative_to(REPO / 'road_extractor')}")
        # The option table made now from the engine's source that goes into the same zip, so the two always agree.
        # (Made by the engine's own module in a child process: the plugin's code never imports the engine.)
        table = subprocess.run([sys.executable, "-m", "core.options"], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout
        archive.writestr(f"{root}/engine_options.json", table)
        archive.write(REPO / "metadata.txt", f"{root}/metadata.txt")
        archive.write(REPO / "resources" / "icon.svg", f"{root}/resources/icon.svg")
        for path in _files(REPO / "resources" / "styles", (".qml",)):
            archive.write(path, f"{root}/resources/styles/{path.name}")
        for package in ("core", "training"):  # training: fine-tuning runs in the engine too
            for path in _files(REPO / package, (".py",)):
                archive.write(path, f"{root}/engine/{package}/{path.relative_to(REPO / package)}")
        # The engine runs the torch model file; its ONNX twin (for onnxruntime and other tools) would double the zip.
        for path in _files(REPO / "resources" / "models", (".pt", ".md", ".json")):  # .json: catalog, STAC
            archive.write(path, f"{root}/engine/resources/models/{path.name}")
        for name in ("README.md", "LICENSE"):
            if (REPO / name).exists():
                archive.write(REPO / name, f"{root}/{name}")
        with tempfile.TemporaryDirectory() as site:  # the documentation site, for the dialog's Help offline
            _build_site(Path(site))
            for path in sorted(Path(site).rglob("*")):
                if path.is_file():
                    archive.write(path, f"{root}/{HELP_FOLDER}/{path.relative_to(site)}")
    temporary.replace(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m road_extractor.packaging",
                                     description="Build the plugin zip for QGIS's 'Install from ZIP'.")
    parser.add_argument("--out", default=f"dist/road_extractor-{version()}.zip")
    args = parser.parse_args(argv)
    path = build_zip(args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
