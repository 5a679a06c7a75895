"""Screenshots of the plugin in the real QGIS application, in a real X window (Xvfb), with clicks only:

    bash docs/qgis_window_shots.sh ../shared/data/spacenet/vegas_img0.tif

QGIS runs this file at start-up (`qgis --code`): it loads the raster, loads the plugin from this checkout, opens
"Extract roads" at its default size (the shipped model's description appears by itself), saves the dialog as the
X server shows it, presses Run, waits for the run, and saves the whole QGIS window with the results, the layers
panel and the message bar (qgis-window-vegas.jpg). Then a second run, and a third that is cancelled after two
seconds: the window with two runs told apart in the layers panel and the cancel's message
(qgis-window-runs.jpg). The engine is the checkout's `.venv`, found as a user's would be.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(os.environ["SHOT_REPO"])  # `qgis --code` runs the file's text: no __file__
sys.path.insert(0, str(REPO))

from qgis.core import QgsApplication, QgsProject  # noqa: E402
from qgis.PyQt.QtCore import QTimer  # noqa: E402
from qgis.PyQt.QtWidgets import QDialogButtonBox  # noqa: E402
from qgis.utils import iface  # noqa: E402

RASTER = Path(os.environ["SHOT_RASTER"])
OUT = Path(os.environ.get("SHOT_OUT", REPO / "docs"))
state: dict = {"started": time.monotonic()}


def grab(widget, path: Path) -> None:
    """The pixels the X server shows for the widget's window (not a render of the widget into an image)."""
    screen = QgsApplication.primaryScreen()
    top_left = widget.mapToGlobal(widget.rect().topLeft())
    screen.grabWindow(0, top_left.x(), top_left.y(), widget.width(), widget.height()).save(str(path))
    print(f"wrote {path}", flush=True)


def give_up(reason: str) -> None:
    print(f"screenshots failed: {reason}", file=sys.stderr, flush=True)
    QgsApplication.exit(1)


def start() -> None:
    window = iface.mainWindow()
    window.setGeometry(0, 0, 1600, 1000)
    iface.addRasterLayer(str(RASTER), RASTER.stem)
    import road_extractor

    state["plugin"] = plugin = road_extractor.classFactory(iface)
    plugin.initGui()
    plugin.show_dialog()
    plugin.dialog.move(1000, 60)
    QTimer.singleShot(500, wait_for_model)


def wait_for_model() -> None:
    dialog = state["plugin"].dialog
    if "trained at" not in dialog.model_label.text():
        if time.monotonic() - state["started"] > 180:
            return give_up(f"the model description did not appear: {dialog.model_label.text()}")
        return QTimer.singleShot(500, wait_for_model)
    dialog.resize(*dialog.default_size())
    QTimer.singleShot(800, shoot_dialog)


def shoot_dialog() -> None:
    dialog = state["plugin"].dialog
    grab(dialog, OUT / "dialog.png")
    dialog.buttons.button(QDialogButtonBox.Ok).click()  # Run
    state["run_started"] = time.monotonic()
    QTimer.singleShot(1000, wait_for_run)


def wait_for_run() -> None:
    group = QgsProject.instance().layerTreeRoot().findGroup(f"Roads - {RASTER.stem}")
    if group is None or state["plugin"].tasks:
        if time.monotonic() - state["run_started"] > 600:
            return give_up("the run did not finish within 10 minutes")
        return QTimer.singleShot(500, wait_for_run)
    print(f"run finished in {time.monotonic() - state['run_started']:.0f} s", flush=True)
    QTimer.singleShot(4000, shoot_window)  # the canvas renders the new layers


def shoot_window() -> None:
    group = QgsProject.instance().layerTreeRoot().findGroup(f"Roads - {RASTER.stem}")
    view = iface.layerTreeView()
    if not view.isExpanded(view.node2index(group)):
        return give_up("the layers panel shows the results' group collapsed")
    grab(iface.mainWindow(), OUT / "qgis-window-vegas.jpg")
    second_run()


def run_again() -> None:
    plugin = state["plugin"]
    plugin.show_dialog()
    plugin.dialog.buttons.button(QDialogButtonBox.Ok).click()
    state["run_started"] = time.monotonic()


def second_run() -> None:
    run_again()
    QTimer.singleShot(1000, wait_for_second)


def wait_for_second() -> None:
    if state["plugin"].tasks:
        if time.monotonic() - state["run_started"] > 600:
            return give_up("the second run did not finish within 10 minutes")
        return QTimer.singleShot(500, wait_for_second)
    groups = [g.name() for g in QgsProject.instance().layerTreeRoot().findGroups() if g.name().startswith("Roads - ")]
    if len(groups) != 2 or len(set(groups)) != 2:
        return give_up(f"two runs should be two groups told apart: {groups}")
    run_again()
    QTimer.singleShot(2000, cancel_third)


def cancel_third() -> None:
    for task in list(state["plugin"].tasks):
        task.cancel()
    state["cancelled"] = time.monotonic()
    QTimer.singleShot(1000, wait_for_cancel)


def wait_for_cancel() -> None:
    if state["plugin"].tasks:
        if time.monotonic() - state["cancelled"] > 30:
            return give_up("the cancelled run did not stop within 30 s")
        return QTimer.singleShot(500, wait_for_cancel)
    from qgis.gui import QgsMessageBarItem

    said = [w.text() for w in iface.messageBar().findChildren(QgsMessageBarItem) if w.isVisible()]
    print(f"message bar: {[(i.title(), i.text()) for i in iface.messageBar().items()]}", flush=True)
    if not any("cancelled" in text for text in said):
        return give_up(f"the message bar does not say the run was cancelled: {said}")
    QTimer.singleShot(1500, shoot_runs)


def shoot_runs() -> None:
    grab(iface.mainWindow(), OUT / "qgis-window-runs.jpg")
    state["plugin"].unload()
    QgsApplication.exit(0)


QTimer.singleShot(3000, start)
