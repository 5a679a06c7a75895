"""Results into the project (main thread only): a group with the probability raster on a colour ramp and the
roads and junctions styled with the QML files from resources/."""

from __future__ import annotations

from pathlib import Path

from qgis.core import (
    QgsColorRampLegendNodeSettings,
    QgsColorRampShader,
    QgsCoordinateTransform,
    QgsLayerTreeGroup,
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
OUTPUT_PROPERTY = "road_extractor/output"  # set on every layer a run adds, so it is not offered as imagery


def probability_renderer(layer: QgsRasterLayer) -> None:
    """Transparent below 0.3, then yellow to red: the roads stand out over the imagery."""
    ramp = QgsColorRampShader(0, 255, None, QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList([
        QgsColorRampShader.ColorRampItem(0, QColor(255, 255, 0, 0), "0"),
        QgsColorRampShader.ColorRampItem(76, QColor(255, 255, 0, 0), "0.3"),
        QgsColorRampShader.ColorRampItem(128, QColor(255, 200, 0, 200), "0.5"),
        QgsColorRampShader.ColorRampItem(255, QColor(220, 0, 0, 255), "1.0"),
    ])
    # The layers panel draws the ramp from its minimum to its maximum value (0-255 as stored); label it as the
    # probability it is.
    legend = QgsColorRampLegendNodeSettings()
    legend.setMinimumLabel("0")
    legend.setMaximumLabel("1")
    legend.setSuffix(" road probability")
    ramp.setLegendSettings(legend)
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    layer.setRenderer(QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader))


def mask_renderer(layer: QgsRasterLayer) -> None:
    """Road pixels (1) in translucent red, background (0) transparent: the imagery shows through."""
    from qgis.core import QgsPalettedRasterRenderer

    classes = [QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "background"),
               QgsPalettedRasterRenderer.Class(1, QColor(230, 30, 30, 170), "road")]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))


RASTER_STYLES = {"probability": probability_renderer, "mask": mask_renderer}


ROAD_LAYERS = ("roads", "junctions")
MAP_UPDATE_LAYERS = ("missing", "unconfirmed", "matched")  # `update-map`'s GeoPackage


def road_layers(roads_gpkg: str | Path, title: str = "", names: tuple[str, ...] = ROAD_LAYERS) -> list[QgsVectorLayer]:
    """The GeoPackage's layers `names`, each styled with resources/styles/NAME.qml."""
    layers = []
    for name in names:
        layer = QgsVectorLayer(f"{roads_gpkg}|layername={name}", f"{name} - {title}" if title else name, "ogr")
        if layer.isValid():
            style = STYLES / f"{name}.qml"
            if style.exists():
                layer.loadNamedStyle(str(style))
            layers.append(layer)
    return layers


GROUP_PREFIX = {"extract": "Roads", "update_map": "Map update"}  # a run's group: "Roads - vegas"


def run_title(name: str, model: str = "", project: QgsProject | None = None, now=None, operation: str = "extract"
              ) -> str:
    """What a run's group and layers are called: the input's name, and for a later run of the same input its
    number, model and time, so that three runs are three names ("vegas", "vegas (run 2, shipped model, 14:05)")."""
    import datetime

    root = (project or QgsProject.instance()).layerTreeRoot()
    prefix = GROUP_PREFIX[operation]
    earlier = [g for g in root.findGroups(True) if g.name() == f"{prefix} - {name}" or
               g.name().startswith(f"{prefix} - {name} (run ")]
    if not earlier:
        return name
    when = (now or datetime.datetime.now()).strftime("%H:%M")
    return f"{name} (run {len(earlier) + 1}, {Path(model).stem if model else 'shipped model'}, {when})"


def add_results(result: dict, title: str, project: QgsProject | None = None, canvas=None, view=None,
                operation: str = "extract") -> list:
    """Adds the run's layers in a new group at the top of the layer tree, opened in the layers panel (`view`),
    and zooms the canvas to them: an extraction's roads, junctions and probability, or a comparison's missing,
    unconfirmed and matched roads."""
    project = project or QgsProject.instance()
    group = QgsLayerTreeGroup(f"{GROUP_PREFIX[operation]} - {title}")
    group.setExpanded(True)
    if operation == "update_map":
        layers = road_layers(result["out"], title, MAP_UPDATE_LAYERS)
    else:
        layers = road_layers(result["roads"], title) if result.get("roads") else []
        probability = QgsRasterLayer(result["probability"], f"road probability - {title}")
        if probability.isValid():
            probability_renderer(probability)
            layers.append(probability)
    added = []
    for layer in layers:  # each named after its input, so two runs' layers can be told apart
        layer.setCustomProperty(OUTPUT_PROPERTY, True)
        project.addMapLayer(layer, False)
        group.addLayer(layer)
        added.append(layer)
    project.layerTreeRoot().insertChildNode(0, group)
    if view is not None:  # the node says expanded, but QGIS 3.22's panel shows a group added this way collapsed
        view.setExpanded(view.node2index(group), True)
    if canvas is not None and added:
        extent = added[-1].extent()
        target = canvas.mapSettings().destinationCrs()
        if added[-1].crs() != target:
            extent = QgsCoordinateTransform(added[-1].crs(), target, project).transformBoundingBox(extent)
        canvas.setExtent(extent)
        canvas.refresh()
    return added
