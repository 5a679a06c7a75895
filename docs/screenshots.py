"""Screenshots for the README, taken headless in real QGIS (QT_QPA_PLATFORM=offscreen):

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots.py ../shared/data/spacenet/vegas_img0.tif \
        --result result-vegas.png
    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots.py demo-output/sample.tif --scales "0.75, 1.0, 1.25" \
        --result result-sample.png --no-dialog

write docs/dialog.png (the "Extract roads" dialog on that raster) and docs/RESULT (the raster with the extracted
probability, roads and junctions, as the plugin adds them), using the shipped model unless --model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.append("/usr/share/qgis/python/plugins")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("raster")
    parser.add_argument("--model", default="")
    parser.add_argument("--scales", default="1.0")
    parser.add_argument("--out", default=str(REPO / "docs"))
    parser.add_argument("--result", default="result.png", help="file name of the result picture in --out")
    parser.add_argument("--no-dialog", action="store_true", help="keep the existing dialog.png")
    args = parser.parse_args()

    from pytest_qgis.qgis_interface import QgisInterface  # a working QgisInterface for a headless QGIS
    from qgis.core import QgsApplication, QgsMapRendererParallelJob, QgsMapSettings, QgsProject, QgsRasterLayer, QgsTask
    from qgis.gui import QgsMapCanvas, QgsMessageBar
    from qgis.PyQt.QtCore import QCoreApplication, QSize
    from qgis.PyQt.QtWidgets import QMainWindow

    app = QgsApplication([], True)
    app.initQgis()
    window = QMainWindow()
    canvas = QgsMapCanvas(window)
    window.setCentralWidget(canvas)
    canvas.resize(900, 900)
    iface = QgisInterface(canvas, QgsMessageBar(window), window)

    import road_extractor

    plugin = road_extractor.classFactory(iface)
    plugin.initGui()
    layer = QgsRasterLayer(args.raster, Path(args.raster).stem)
    QgsProject.instance().addMapLayer(layer)
    canvas.setLayers([layer])
    canvas.setExtent(layer.extent())
    plugin.show_dialog()
    dialog = plugin.dialog
    dialog.layer.setLayer(layer)
    dialog.model.setFilePath(args.model)
    dialog.scales.setText(args.scales)
    dialog.output.setFilePath(str(Path(tempfile.mkdtemp()) / f"{layer.name()}_roads.gpkg"))
    dialog.check_model()
    deadline = time.monotonic() + 120
    while not dialog.model_info and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.05)
    dialog.adjustSize()
    out = Path(args.out)
    if not args.no_dialog:
        dialog.grab().save(str(out / "dialog.png"))
    task = plugin.start_run(dialog)
    while task.status() not in (QgsTask.Complete, QgsTask.Terminated):
        QCoreApplication.processEvents()
        time.sleep(0.05)
    for _ in range(50):
        QCoreApplication.processEvents()
    if task.error:
        print(f"run failed: {task.error}", file=sys.stderr)
        return 1
    group = QgsProject.instance().layerTreeRoot().findGroup(f"Roads - {layer.name()}")
    settings = QgsMapSettings()
    settings.setLayers([node.layer() for node in group.findLayers()] + [layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(900, 900))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(out / args.result))
    print(f"wrote {out / args.result}: {task.result['road_count']} roads, "
          f"{task.result['length_km']:.2f} km")
    plugin.unload()
    return 0


if __name__ == "__main__":
    sys.exit(main())
