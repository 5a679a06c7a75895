"""The plugin in real QGIS (headless): loads, wires its action, unloads cleanly."""

import configparser
from pathlib import Path

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QToolBar

import road_extractor

REPO = Path(__file__).resolve().parents[1]


def test_plugin_loads_runs_its_action_and_unloads(qgis_iface):
    plugin = road_extractor.classFactory(qgis_iface)
    plugin.initGui()
    toolbars = [t for t in qgis_iface.mainWindow().findChildren(QToolBar) if t.objectName() == "RoadExtractorToolbar"]
    assert len(toolbars) == 1
    actions = [a for a in toolbars[0].actions() if a.objectName() == "road_extractor_extract_roads"]
    assert len(actions) == 1 and not actions[0].icon().isNull()
    qgis_iface.messageBar().clear_messages()
    actions[0].trigger()
    assert any("road-extractor --help" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))
    plugin.unload()
    assert plugin.actions == [] and plugin.toolbar is None


def test_metadata_declares_the_supported_qgis_versions():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt")
    general = metadata["general"]
    assert general["qgisMinimumVersion"] == "3.22" and general["qgisMaximumVersion"] == "3.99"
    for key in ("name", "description", "about", "version", "author", "email", "tracker", "repository", "icon"):
        assert general.get(key), key
    assert (REPO / "resources" / general["icon"]).exists()
