"""The "Extract roads" dialog's estimate against the real time of the same run, in headless QGIS with the plugin
(the engine process does the work): a cold run (the engine not started) and a warm one, per raster and scales.

    QT_QPA_PLATFORM=offscreen python benchmarks/plugin_estimate.py [RASTER ...]

Default rasters: the built-in suburb sample (made by `make demo`, 1 m) and the SpaceNet Las Vegas tile (0.3 m)
from ../shared/data when present, and a 2048 px suburb at 1 m made here. Prints one row per run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), "/usr/share/qgis/python/plugins"]


def suburb(path: Path, size: int) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    from core.inputs.sample import make_suburb

    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs="EPSG:32619", transform=from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(make_suburb(size, seed=3).image.transpose(2, 0, 1))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rasters", nargs="*")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="plugin-estimate-"))
    rasters = [Path(r) for r in args.rasters]
    if not rasters:
        vegas = REPO.parent / "shared" / "data" / "spacenet" / "vegas_img0.tif"
        rasters = [suburb(folder / "suburb_1024.tif", 1024), suburb(folder / "suburb_2048.tif", 2048)]
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
    print("| raster | scales | engine | estimate | real (Run to results) | real / estimate |")
    print("|---|---|---|---:|---:|---:|")
    for raster in rasters:
        layer = QgsRasterLayer(str(raster), raster.stem)
        QgsProject.instance().addMapLayer(layer)
        for scales in ("1.0", "0.75, 1.0, 1.25"):
            for engine in ("cold", "warm"):
                if engine == "cold":
                    shutdown_engine()
                plugin.show_dialog()
                dialog = plugin.dialog
                dialog.layer.setLayer(layer)
                dialog.model_info = {"gsd_m": 1.0}  # the shipped model's, without starting the engine to ask
                dialog.scales.setText(scales)
                dialog.output.setFilePath(str(folder / f"{raster.stem}-{len(scales)}-{engine}.gpkg"))
                dialog.update_estimate()
                estimate_text = dialog.estimate.text()
                estimate = float(estimate_text.split("about ")[1].split()[0]) * (
                    60 if " min" in estimate_text else 1)
                started = time.perf_counter()
                task = plugin.start_run(dialog)
                while task.status() not in (QgsTask.Complete, QgsTask.Terminated):
                    QCoreApplication.processEvents()
                    time.sleep(0.02)
                for _ in range(20):
                    QCoreApplication.processEvents()
                real = time.perf_counter() - started
                if task.error:
                    print(f"{raster.name}: the run failed: {task.error}", file=sys.stderr)
                    return 1
                print(f"| {raster.name} | {scales} | {engine} | {estimate:.0f} s | {real:.1f} s | "
                      f"{real / estimate:.2f} |", flush=True)
    plugin.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
