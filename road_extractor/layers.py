"""Results into the project (main thread only): a group with the probability raster on a colour ramp and the
roads and junctions styled with the QML files from resources/."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsColorRampShader,
    QgsCoordinateTransform,
    QgsProject,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

RESOURCES = Path(__file__).resolve().parent / "resources"
if not RESOURCES.exists():  # a checkout: resources/ sits beside the plugin
    RESOURCES = Path(__file__).resolve().parent.parent / "resources"
STYLES = RESOURCES / "styles"


def probability_renderer(layer: QgsRasterLayer) -> None:
    """Transparent below 0.3, then yellow to red: the roads stand out over the imagery."""
    ramp = QgsColorRampShader(0, 255, None, QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(0, QColor(255, 255, 0, 0), "0"),
        QgsColorRampShader.ColorRampItem(76, QColor(255, 255, 0, 0), "0.3"),
        QgsColorRampShader.ColorRampItem(128, QColor(255, 200, 0, 200), "0.5"),
        QgsColorRampShader.ColorRampItem(255, QColor(220, 0, 0, 255), "1.0"),
    ])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    layer.setRenderer(QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader))


def road_layers(roads_gpkg: str | Path) -> list[QgsVectorLayer]:
    layers = []
    for name in ("roads", "junctions"):
        layer = QgsVectorLayer(f"{roads_gpkg}|layername={name}", name, "ogr")
        if layer.isValid():
            style = STYLES / f"{name}.qml"
            if style.exists():
                layer.loadNamedStyle(str(style))
            layers.append(layer)
    return layers


def add_results(result: dict, title: str, project: QgsProject | None = None, canvas=None) -> list:
    """Adds the run's layers in a new group at the top of the layer tree and zooms the canvas to them."""
    project = project or QgsProject.instance()
    group = project.layerTreeRoot().insertGroup(0, f"Roads - {title}")
    added = []
    for layer in road_layers(result["roads"]) if result.get("roads") else []:
        project.addMapLayer(layer, False)
        group.addLayer(layer)
        added.append(layer)
    probability = QgsRasterLayer(result["probability"], "road probability")
    if probability.isValid():
        probability_renderer(probability)
        project.addMapLayer(probability, False)
        group.addLayer(probability)
        added.append(probability)
    if canvas is not None and added:
        extent = added[-1].extent()
        target = canvas.mapSettings().destinationCrs()
        if added[-1].crs() != target:
            extent = QgsCoordinateTransform(added[-1].crs(), target, project).transformBoundingBox(extent)
        canvas.setExtent(extent)
        canvas.refresh()
    return added
