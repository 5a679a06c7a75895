"""QGIS plugin entry point. Never imports torch: the engine runs in its own process."""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import RoadExtractorPlugin

    return RoadExtractorPlugin(iface)
