"""Menu and toolbar wiring. The work itself belongs to the engine (`core`), reached through its command line."""

from __future__ import annotations

from pathlib import Path

from qgis.core import Qgis, QgsMessageLog
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

MENU = "&Road extractor"
LOG_TAG = "Road extractor"
ICON = Path(__file__).resolve().parent.parent / "resources" / "icon.svg"


class RoadExtractorPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.actions: list[QAction] = []
        self.toolbar = None

    def initGui(self) -> None:  # noqa: N802 - QGIS plugin interface
        self.toolbar = self.iface.addToolBar(LOG_TAG)
        self.toolbar.setObjectName("RoadExtractorToolbar")
        icon = QIcon(str(ICON)) if ICON.exists() else QIcon()
        action = QAction(icon, "Extract roads…", self.iface.mainWindow())
        action.setObjectName("road_extractor_extract_roads")
        action.setToolTip("Extract road centrelines from a raster layer")
        action.triggered.connect(self.extract_roads)
        self.iface.addPluginToRasterMenu(MENU, action)
        self.toolbar.addAction(action)
        self.actions.append(action)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        if self.toolbar is not None:
            self.iface.mainWindow().removeToolBar(self.toolbar)
            self.toolbar.deleteLater()
            self.toolbar = None

    def extract_roads(self) -> None:
        message = ("The extraction dialog is not in this release yet; run the engine from a terminal: "
                   "road-extractor --help")
        QgsMessageLog.logMessage(message, LOG_TAG, Qgis.Info)
        self.iface.messageBar().pushMessage(LOG_TAG, message, level=Qgis.Info, duration=8)
