"""How close the "Extract roads" dialog's estimate comes to the real time of a run after the plugin has measured
one, three and ten runs on this machine, in headless QGIS with the plugin (the engine process does the work).

    QT_QPA_PLATFORM=offscreen python benchmarks/plugin_estimate.py [--runs 13] [RASTER ...]

QGIS starts with an empty settings folder (nothing measured yet: the first estimate is the defaults of
`road_extractor/estimate.py`), then runs a fixed sequence that varies the raster (suburbs of 1, 2.25 and 4 MP at
1 m made here, and the SpaceNet Las Vegas tile from ../shared/data when present), the scales (one or three) and
whether the engine is already running. Each run's estimate is the dialog's, made just before Run from what the
runs before it measured; the real time is Run to results loaded. Prints one row per run, then real / estimate
over the runs that followed 0, 1-2, 3-9 and 10 or more measured runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), "/usr/share/qgis/python/plugins"]
SCALE_CHOICES = ("1.0", "0.75, 1.0, 1.25")


def suburb(path: Path, size: int) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    from core.inputs.sample import make_suburb

    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(make_suburb(size, seed=3).image.transpose(2, 0, 1))
    return path


def sequence(rasters: list[Path], runs: int) -> list[tuple[Path, str, bool]]:
    """(raster, scales, cold) for each run: every raster with every scale choice, the engine stopped before every
    third run, in an order that never repeats the previous run's workload."""
    plan = []
    for k in range(runs):
        raster = rasters[k % len(rasters)]
        scales = SCALE_CHOICES[(k // len(rasters)) % len(SCALE_CHOICES)]
        plan.append((raster, scales, k % 3 == 0))
    return plan


def summary(rows: list[tuple[int, float]]) -> list[str]:
    """real / estimate (min - max, median) over the runs that followed a given number of measured runs."""
    from statistics import median

    lines = []
    for label, low, high in (("no run measured (the defaults)", 0, 0), ("after 1-2 runs", 1, 2),
                             ("after 3-9 runs", 3, 9), ("after 10 or more runs", 10, 10**9)):
        ratios = [r for measured, r in rows if low <= measured <= high]
        if ratios:
            lines.append(f"{label}: real / estimate {min(ratios):.2f}-{max(ratios):.2f}, median "
                         f"{median(ratios):.2f} ({len(ratios)} run(s))")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rasters", nargs="*")
    parser.add_argument("--runs", type=int, default=13)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="plugin-estimate-"))
    # An empty settings folder: QgsSettings (QSettings) reads $XDG_CONFIG_HOME, so nothing an earlier run of this
    # machine measured leaks in, and nothing of this benchmark's stays in the user's own settings.
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    rasters = [Path(r) for r in args.rasters]
    if not rasters:
        vegas = REPO.parent / "shared" / "data" / "spacenet" / "vegas_img0.tif"
        rasters = [suburb(folder / f"suburb_{size}.tif", size) for size in (1024, 1536, 2048)]
        rasters += [vegas] if vegas.exists() else []

    from pytest_qgis.qgis_interface import QgisInterface  # a working QgisInterface for a headless QGIS
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsTask
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import QCoreApplication
    from qgis.PyQt.QtWidgets import QMainWindow

    app = QgsApplication([], True)
    app.initQgis()
    window = QMainWindow()
    canvas = QgsMapCanvas(window)
    iface = QgisInterface(canvas, QgsMessageBar(window), window)
    import road_extractor
    from road_extractor.runner import shutdown_engine

    plugin = road_extractor.classFactory(iface)
    plugin.initGui()
    layers = {}
    for raster in rasters:
        layers[raster] = QgsRasterLayer(str(raster), raster.stem)
        QgsProject.instance().addMapLayer(layers[raster])
    print("| run | runs measured before | raster | scales | engine | estimate | real (Run to results) "
          "| real / estimate |")
    print("|---:|---:|---|---|---|---:|---:|---:|")
    rows = []
    for k, (raster, scales, cold) in enumerate(sequence(rasters, args.runs)):
        if cold:
            shutdown_engine()
        plugin.show_dialog()
        dialog = plugin.dialog
        dialog.layer.setLayer(layers[raster])
        dialog.model_info = {"gsd_m": 1.0}  # the shipped model's, without starting the engine to ask
        dialog.scales.setText(scales)
        dialog.output.setFilePath(str(folder / f"run{k:02d}-{raster.stem}.gpkg"))
        dialog.update_estimate()
        estimate = dialog.workload.seconds()  # the figure behind the dialog's rounded "about N s / min"
        started = time.perf_counter()
        task = plugin.start_run(dialog)
        if task is None:
            print(f"run {k}: the plugin refused to start it", file=sys.stderr)
            return 1
        while task.status() not in (QgsTask.Complete, QgsTask.Terminated):
            QCoreApplication.processEvents()
            time.sleep(0.02)
        for _ in range(20):  # run_finished (results loaded, the run learnt from) comes through the event loop
            QCoreApplication.processEvents()
        real = time.perf_counter() - started
        if task.error:
            print(f"{raster.name}: the run failed: {task.error}", file=sys.stderr)
            return 1
        rows.append((k, real / estimate))
        print(f"| {k + 1} | {k} | {raster.name} | {scales} | {'cold' if cold else 'warm'} | {estimate:.1f} s | "
              f"{real:.1f} s | {real / estimate:.2f} |", flush=True)
    print()
    for line in summary(rows):
        print(line)
    shutdown_engine()
    plugin.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
