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


def test_road_styles_load_on_a_real_road_geopackage(qgis_app, tmp_path):
    """The QML files in resources/ style the layers `road-extractor vectorize` writes, in real QGIS."""
    import numpy as np
    import rasterio
    from qgis.core import QgsVectorLayer
    from rasterio.transform import from_origin

    from core.vectorize import vectorize_file

    probability = np.zeros((200, 200), np.uint8)
    probability[97:104, :] = 255
    probability[:, 97:104] = 255
    raster = tmp_path / "p.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 4000000, 1, 1)) as ds:
        ds.write(probability, 1)
    vectorize_file(raster, tmp_path / "roads.gpkg", workers=1)
    expected = {"roads": ("singleSymbol", 4), "junctions": ("RuleRenderer", 5)}
    for layer_name, (renderer, count) in expected.items():
        layer = QgsVectorLayer(f"{tmp_path / 'roads.gpkg'}|layername={layer_name}", layer_name, "ogr")
        assert layer.isValid() and layer.featureCount() == count
        message, ok = layer.loadNamedStyle(str(REPO / "resources" / "styles" / f"{layer_name}.qml"))
        assert ok, message
        assert layer.renderer().type() == renderer
    assert layer.renderer().rootRule().children()[0].filterExpression() == '"degree" >= 3'
