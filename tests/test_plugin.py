"""The plugin in real QGIS (headless): it loads and unloads, its dialog, a run as a QgsTask on a real GeoTIFF, an
area limited to selected polygons, cancel, the Processing algorithms, and the messages of bad choices."""

import configparser
import re
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsSettings,
    QgsTask,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QCoreApplication
from qgis.PyQt.QtWidgets import QToolBar

import road_extractor
from core.options import EvaluateOptions, FinetuneOptions, InferenceOptions, VectorizeOptions
from road_extractor.runner import UserError, describe_layer, describe_result, shutdown_engine
from road_extractor.settings import PREFIX, ExtractSettings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def plugin(qgis_iface, qgis_new_project):
    settings = QgsSettings()
    settings.remove(PREFIX.rstrip("/"))
    plugin = road_extractor.classFactory(qgis_iface)
    plugin.initGui()
    yield plugin
    plugin.unload()
    settings.remove(PREFIX.rstrip("/"))


@pytest.fixture
def vegas(shared_data, qgis_new_project) -> QgsRasterLayer:
    layer = QgsRasterLayer(str(shared_data / "spacenet" / "vegas_img0.tif"), "vegas")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def _wait(task, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while task.status() not in (QgsTask.Complete, QgsTask.Terminated):
        QCoreApplication.processEvents()
        time.sleep(0.02)
        assert time.monotonic() < deadline, "the task did not finish"
    for _ in range(20):  # finished() runs on the main thread through the event loop
        QCoreApplication.processEvents()


def _dialog(plugin, layer, model, out: Path, **changes):
    plugin.show_dialog()
    dialog = plugin.dialog
    dialog.layer.setLayer(layer)
    dialog.model.setFilePath(str(model))
    dialog.scales.setText(changes.pop("scales", "1.0"))
    dialog.output.setFilePath(str(out))
    for key, value in changes.items():
        setattr(dialog.settings, key, value)
    return dialog


def test_plugin_loads_registers_processing_and_unloads(qgis_iface):
    plugin = road_extractor.classFactory(qgis_iface)
    plugin.initGui()
    toolbars = [t for t in qgis_iface.mainWindow().findChildren(QToolBar) if t.objectName() == "RoadExtractorToolbar"]
    assert len(toolbars) == 1
    actions = [a for a in toolbars[0].actions() if a.objectName() == "road_extractor_extract_roads"]
    assert len(actions) == 1 and not actions[0].icon().isNull()
    provider = QgsApplication.processingRegistry().providerById("road_extractor")
    assert sorted(a.name() for a in provider.algorithms()) == ["evaluate_roads", "extract_roads",
                                                               "find_missing_roads", "finetune_road_model",
                                                               "teach_from_review", "vectorize_road_mask"]
    actions[0].trigger()
    assert plugin.dialog is not None and plugin.dialog.isVisible()
    plugin.dialog.close()
    plugin.unload()
    assert plugin.actions == [] and plugin.toolbar is None
    assert QgsApplication.processingRegistry().providerById("road_extractor") is None


def test_processing_parameters_carry_the_engines_defaults_and_ranges(plugin):
    registry = QgsApplication.processingRegistry()
    extract = registry.algorithmById("road_extractor:extract_roads")
    inference, vectorize = InferenceOptions(), VectorizeOptions()
    assert extract.parameterDefinition("TILE").defaultValue() == inference.tile
    brightness = extract.parameterDefinition("BRIGHTNESS")
    assert brightness.options()[brightness.defaultValue()] == inference.brightness
    assert extract.parameterDefinition("THRESHOLD").maximum() == 0.99
    assert extract.parameterDefinition("SCALES").defaultValue() == ", ".join(map(str, inference.scales))
    for name, value in vectorize.user_options().items():
        assert extract.parameterDefinition(name.upper()).defaultValue() == value, name
    evaluate = registry.algorithmById("road_extractor:evaluate_roads")
    assert evaluate.parameterDefinition("SNAP_M").defaultValue() == EvaluateOptions().snap_m
    finetune = registry.algorithmById("road_extractor:finetune_road_model")
    assert finetune.parameterDefinition("MINUTES").defaultValue() == FinetuneOptions().minutes


def test_dialog_starts_with_sensible_defaults_and_remembers_choices(plugin, random_model_file, tmp_path):
    plugin.show_dialog()
    dialog = plugin.dialog
    # The engine's own defaults (core.options), not numbers written here: the plugin reads them from its option file.
    inference, vectorize = InferenceOptions(), VectorizeOptions()
    assert dialog.area.currentData() == "layer"
    assert [float(v) for v in dialog.scales.text().split(",")] == list(inference.scales)
    assert dialog.device.currentText() == inference.device and dialog.augment.currentData() == inference.augment
    assert dialog.precision.currentText() == inference.precision
    assert dialog.brightness.currentText() == inference.brightness
    assert dialog.model.filePath() == "" and dialog.output.filePath() == ""  # the shipped model, a temporary file
    assert (dialog.threshold.value(), dialog.spur.value(), dialog.min_length.value(), dialog.bridge.value(),
            dialog.simplify.value()) == (inference.threshold, vectorize.spur_m, vectorize.min_length_m,
                                         vectorize.bridge_m, vectorize.simplify_m)
    assert ExtractSettings().vectorize_options() == vectorize.user_options()
    dialog.scales.setText("1.0")
    dialog.device.setCurrentText("cpu")
    dialog.accept()  # no imagery: refused beside the buttons, and nothing remembered
    assert dialog.isVisible() and "choose a raster layer" in dialog.problem.text()
    assert ExtractSettings.load().scales != "1.0"
    image = tmp_path / "small.tif"
    with rasterio.open(image, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32619",
                       transform=rasterio.transform.from_origin(330000, 4690000, 1, 1)) as ds:
        ds.write(np.full((3, 64, 64), 90, np.uint8))
    layer = QgsRasterLayer(str(image), "small")
    QgsProject.instance().addMapLayer(layer)
    dialog.layer.setLayer(layer)
    dialog.model.setFilePath(str(random_model_file))
    dialog.accept()
    again = ExtractSettings.load()
    assert again.scales == "1.0" and again.device == "cpu"
    for task in plugin.tasks:
        task.cancel()
        _wait(task)


def test_a_run_with_the_shipped_model_adds_styled_layers_with_roads(plugin, vegas, tmp_path):
    dialog = _dialog(plugin, vegas, "", tmp_path / "vegas_roads.gpkg")  # no model chosen: the shipped one
    task = plugin.start_run(dialog)
    _wait(task)
    assert task.error is None, task.error
    group = QgsProject.instance().layerTreeRoot().findGroup("Roads - vegas")
    layers = {node.layer().name().split(" - ")[0]: node.layer() for node in group.findLayers()}
    assert {node.layer().name() for node in group.findLayers()} == {"roads - vegas", "junctions - vegas",
                                                                     "road probability - vegas"}
    assert group.isExpanded()
    probability = layers["road probability"]
    dialog.layer.setLayer(None)
    offered = {dialog.layer.layer(i).name() for i in range(dialog.layer.count()) if dialog.layer.layer(i)}
    assert "road probability - vegas" not in offered and "vegas" in offered  # outputs are not imagery
    assert probability.crs().authid() == "EPSG:4326" == layers["roads"].crs().authid()
    assert probability.extent().toString(6) == vegas.extent().toString(6)  # written on the input's grid
    assert layers["roads"].renderer().type() == "singleSymbol"  # the QML style
    assert layers["roads"].featureCount() == task.result["road_count"] > 0
    # The dark Vegas tile is brought to the model's brightness, and the analyst is told so beside the summary.
    _, shown = describe_result(task.result, dialog.current_settings())
    assert any(note.startswith("brightness") and "gamma" in note for note in shown), task.result["notes"]
    # The layers panel labels the ramp as a probability, 0 to 1, not the stored 0-255.
    ramp = probability.renderer().shader().rasterShaderFunction().legendSettings()
    assert (ramp.minimumLabel(), ramp.maximumLabel(), ramp.suffix()) == ("0", "1", " road probability")
    assert (tmp_path / "vegas_roads.gpkg").exists()


def test_a_run_limited_to_a_selected_polygon_covers_only_it(plugin, vegas, random_model_file, tmp_path):
    extent = vegas.extent()
    part = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.center().x(), extent.center().y())
    polygons = QgsVectorLayer("Polygon?crs=EPSG:4326", "area", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(part))
    polygons.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(polygons)
    polygons.selectAll()
    dialog = _dialog(plugin, vegas, random_model_file, tmp_path / "part_roads.gpkg")
    dialog.area.setCurrentIndex(dialog.area.findData("selection"))
    dialog.area_layer.setLayer(polygons)
    task = plugin.start_run(dialog)
    _wait(task)
    assert task.error is None, task.error
    with rasterio.open(task.result["probability"]) as ds:
        valid = ds.read_masks(1) > 0
        bounds = ds.bounds
    # Inside the south-west quarter only: the rest is NoData (or not written at all).
    assert bounds.right <= extent.center().x() + 1e-4 and bounds.top <= extent.center().y() + 1e-4
    assert 0.8 < valid.mean() <= 1.0


def test_a_refused_selection_or_compare_layer_leaves_no_folder_in_the_temp_folder(plugin, vegas, random_model_file,
                                                                                   tmp_path):
    """The dialog made a temporary folder for the selected polygons (and the compare layer) before checking that
    there was anything to write: each refused Run left an empty `road_area_*` folder behind."""
    import tempfile

    def folders() -> set:
        return {p for p in Path(tempfile.gettempdir()).glob("road_*") if p.is_dir()}

    before = folders()
    polygons = QgsVectorLayer("Polygon?crs=EPSG:4326", "nothing selected", "memory")
    QgsProject.instance().addMapLayer(polygons)
    dialog = _dialog(plugin, vegas, random_model_file, tmp_path / "roads.gpkg")
    dialog.area.setCurrentIndex(dialog.area.findData("selection"))
    dialog.area_layer.setLayer(polygons)
    with pytest.raises(UserError, match="no features are selected in 'nothing selected'"):
        dialog.plan()
    dialog.area.setCurrentIndex(dialog.area.findData("layer"))
    empty_lines = QgsVectorLayer("LineString?crs=EPSG:4326", "no roads", "memory")
    QgsProject.instance().addMapLayer(empty_lines)
    dialog.compare.setLayer(empty_lines)
    with pytest.raises(UserError, match="the road layer 'no roads' has no features"):
        dialog.plan()
    assert folders() == before
    QgsProject.instance().removeMapLayers([polygons.id(), empty_lines.id()])


def test_cancel_stops_the_task_and_leaves_nothing(plugin, vegas, random_model_file, tmp_path):
    out = tmp_path / "cancelled"
    out.mkdir()
    dialog = _dialog(plugin, vegas, random_model_file, out / "roads.gpkg", scales="0.75, 1.0, 1.25")
    dialog.settings.tile = 128
    task = plugin.start_run(dialog)
    deadline = time.monotonic() + 120
    while task.progress() <= 0 and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.02)
    # The task manager shows the stage and its counts and the time so far, not a bare percentage.
    assert re.search(r"Extract roads from vegas: \w+: \d+/\d+ tiles.* so far", task.description()), task.description()
    task.cancel()
    _wait(task)
    assert task.result is None and task.error == "cancelled"
    assert sorted(p.name for p in out.iterdir()) == []
    assert QgsProject.instance().layerTreeRoot().findGroup("Roads - vegas") is None
    dialog.output.setFilePath("")  # no output chosen: a temporary folder, which a cancelled run removes
    task = plugin.start_run(dialog)
    assert task.run_plan.temporary and task.run_plan.out_dir.is_dir()
    task.cancel()
    _wait(task)
    assert task.error == "cancelled" and not task.run_plan.out_dir.exists()


def test_bad_choices_get_one_sentence_with_the_fix(plugin, random_model_file, tmp_path, qgis_iface):
    vector = QgsVectorLayer("Point?crs=EPSG:4326", "points", "memory")
    with pytest.raises(UserError, match="'points' is a vector layer; choose a raster layer"):
        describe_layer(vector)
    settings = ExtractSettings(engine_python=str(tmp_path / "no-python"))
    from road_extractor.engine import EngineMissing
    from road_extractor.runner import engine_request

    shutdown_engine()
    with pytest.raises(EngineMissing, match="set in the plugin's settings, .* does not exist; correct it"):
        engine_request(settings, "ping")
    shutdown_engine()
    bad = tmp_path / "notes.pt"
    bad.write_text("hello")
    from road_extractor.engine import EngineError

    with pytest.raises(EngineError, match="notes.pt"):
        engine_request(ExtractSettings(), "describe_model", {"path": str(bad)})


def test_processing_algorithms_run_in_batch_and_evaluate(plugin, qgis_processing, shared_data, random_model_file,
                                                         tmp_path):
    import processing

    vegas = shared_data / "spacenet" / "vegas_img0.tif"
    half = tmp_path / "vegas_half.tif"
    with rasterio.open(vegas) as src:
        profile = src.profile
        profile.update(width=src.width // 2, height=src.height // 2,
                       transform=src.window_transform(((0, src.height // 2), (0, src.width // 2))))
        with rasterio.open(half, "w", **profile) as dst:
            dst.write(src.read(window=((0, src.height // 2), (0, src.width // 2))))
    results = []
    for raster in (vegas, half):  # a batch: the same algorithm over two rasters
        results.append(processing.run("road_extractor:extract_roads", {
            "INPUT": str(raster), "MODEL": str(random_model_file), "SCALES": "1.0",
            "OUTPUT_PROBABILITY": str(tmp_path / f"{raster.stem}_p.tif"),
            "OUTPUT_MASK": str(tmp_path / f"{raster.stem}_m.tif"),
            "OUTPUT_ROADS": str(tmp_path / f"{raster.stem}.gpkg")}))
    for raster, result in zip((vegas, half), results, strict=True):
        with rasterio.open(result["OUTPUT_PROBABILITY"]) as ds, rasterio.open(raster) as src:
            assert ds.crs == src.crs and ds.shape == src.shape
        assert Path(result["OUTPUT_ROADS"]).exists() and result["ROAD_COUNT"] >= 0
    vectorized = processing.run("road_extractor:vectorize_road_mask", {
        "INPUT": results[0]["OUTPUT_MASK"], "OUTPUT_ROADS": str(tmp_path / "from_mask.gpkg")})
    assert QgsVectorLayer(vectorized["ROADS"], "roads", "ogr").isValid()
    table = tmp_path / "metrics.csv"
    evaluated = processing.run("road_extractor:evaluate_roads", {
        "PREDICTION": results[0]["OUTPUT_MASK"], "REFERENCE": str(shared_data / "spacenet" /
                                                                  "vegas_img0_roads.geojson"),
        "OUTPUT_TABLE": str(table)})
    assert 0 <= evaluated["ROAD_IOU"] <= 1 and 0 < evaluated["MIOU_ALL_BACKGROUND"] < 0.5
    assert "road_iou" in table.read_text()
    # The quarter's lines against the whole tile's reference, with and without the area the quarter covers (a
    # polygon drawn in QGIS, a memory layer): inside it only the reference there is counted.
    with rasterio.open(half) as ds:
        bounds = ds.bounds
    area = QgsVectorLayer("Polygon?crs=EPSG:4326", "labelled", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(bounds.left, bounds.bottom, bounds.right, bounds.top)))
    area.dataProvider().addFeatures([feature])
    reference = str(shared_data / "spacenet" / "vegas_img0_roads.geojson")
    scored = {name: processing.run("road_extractor:evaluate_roads", {
        "PREDICTION": results[1]["OUTPUT_ROADS"], "REFERENCE": reference,
        "OUTPUT_TABLE": str(tmp_path / f"lines_{name}.csv"), **extra})
        for name, extra in (("all", {}), ("area", {"AREA": area}))}
    assert 0 < scored["area"]["REFERENCE_KM"] < 0.5 * scored["all"]["REFERENCE_KM"]


def test_metadata_declares_the_supported_qgis_versions():
    metadata = configparser.ConfigParser()
    metadata.read(REPO / "metadata.txt")
    general = metadata["general"]
    assert general["qgisMinimumVersion"] == "3.22" and general["qgisMaximumVersion"] == "3.99"
    for key in ("name", "description", "about", "version", "author", "email", "tracker", "repository", "icon",
                "homepage", "tags"):
        assert general.get(key), key
    assert general["hasProcessingProvider"] == "yes"
    assert (REPO / general["icon"]).exists()


def test_road_styles_load_on_a_real_road_geopackage(qgis_app, tmp_path):
    """The QML files in resources/ style the layers `road-extractor vectorize` writes, in real QGIS."""
    import rasterio
    from qgis.core import QgsVectorLayer
    from rasterio.transform import from_origin

    from core.roads.vectorize import vectorize_file

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


def test_a_missing_engine_offers_to_set_it_up_with_the_commands_shown(plugin, qgis_iface):
    from qgis.PyQt.QtWidgets import QPushButton

    from road_extractor.engine import EngineMissing

    logged = []
    QgsApplication.messageLog().messageReceived.connect(lambda message, tag, level: logged.append(message))
    plugin.offer_engine_setup(EngineMissing("no Python environment with the road extraction engine was found"))
    widget = qgis_iface.messageBar().currentItem()
    assert "needs its own Python environment" in widget.text()
    assert [b.text() for b in widget.findChildren(QPushButton)] == ["Set up engine…"]
    text = "\n".join(logged)
    assert "-m venv" in text and "pip install torch" in text and "engine-venv" in text
    assert "numpy&lt;2" in text and "shapely&gt;=2" in text  # escaped: the log panel shows them, not HTML tags


def test_engine_set_up_shows_exactly_the_commands_it_runs_and_defaults_to_the_cpu_build(plugin):
    from road_extractor.engine import CPU_TORCH_INDEX, has_nvidia_driver
    from road_extractor.runner import profile_dir
    from road_extractor.setup_engine import EngineSetupDialog, EngineSetupTask

    dialog = EngineSetupDialog(profile_dir())
    expected = "cuda" if has_nvidia_driver() else "cpu"
    assert dialog.torch_build() == expected
    for build in ("cpu", "cuda"):
        dialog.build.setCurrentIndex(dialog.build.findData(build))
        shown = dialog.commands.toPlainText()
        runs = "\n".join(" ".join(c) for c in EngineSetupTask(profile_dir(), build).commands)
        assert shown == runs
        # CPU: torch from PyTorch's CPU index (about 1.2 GB in all) instead of PyPI's CUDA build (6 GB).
        assert (f"pip install torch --index-url {CPU_TORCH_INDEX}" in shown) == (build == "cpu")
        assert "numpy<2 rasterio affine<3 shapely>=2" in shown  # plain text: nothing swallowed as HTML
    assert "about 1.2 GB" in dialog.build.itemText(dialog.build.findData("cpu"))


def test_a_cancelled_engine_set_up_is_a_plain_note_and_unloading_afterwards_raises_nothing(plugin, qgis_iface):
    """The set-up task (real commands: a venv, then pip) cancelled while it runs: the partly made environment is
    removed, the message is information, not an error, and unloading the plugin afterwards does not touch the
    finished task (it used to raise 'wrapped C/C++ object of type EngineSetupTask has been deleted')."""
    from qgis.core import Qgis

    from road_extractor.engine import managed_environment
    from road_extractor.runner import profile_dir

    qgis_iface.messageBar().clear_messages()
    task = plugin.setup_engine(torch_build="cpu")
    deadline = time.monotonic() + 60
    while not managed_environment(profile_dir()).exists():  # the venv is being created: cancel in the middle
        QCoreApplication.processEvents()
        time.sleep(0.05)
        assert time.monotonic() < deadline, "the set-up task did not start"
    task.cancel()
    _wait(task, 120)
    assert plugin.tasks == [] and not managed_environment(profile_dir()).exists()
    bar = qgis_iface.messageBar()
    assert any("set-up cancelled" in m for m in bar.get_messages(Qgis.Info))
    assert not any("set-up" in m for m in bar.get_messages(Qgis.Critical))
    plugin.unload()
    plugin.initGui()  # for the fixture's own unload


def test_a_web_tile_layer_is_read_through_qgis_at_the_models_resolution(plugin, shared_data, random_model_file,
                                                                         tmp_path, qgis_new_project):
    """An XYZ layer (tiles made from the SpaceNet scene, served from file:// as a tile server would) has no file
    GDAL can open: the plugin reads the chosen area through QGIS's provider at 1 m/px and sends that."""
    import shutil
    import subprocess

    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    gdal2tiles = shutil.which("gdal2tiles.py")
    if gdal2tiles is None:
        pytest.skip("gdal2tiles.py (GDAL's tools) is not installed")
    tiles = tmp_path / "tiles"
    subprocess.run(["/usr/bin/python3", gdal2tiles, "--xyz", "-z", "17", "-q",
                    str(shared_data / "spacenet" / "vegas_img0.tif"), str(tiles)], check=True, timeout=300)
    layer = QgsRasterLayer(f"type=xyz&url=file://{tiles}/{{z}}/{{x}}/{{y}}.png&zmin=17&zmax=17", "tiles", "wms")
    assert layer.isValid() and layer.providerType() == "wms"
    QgsProject.instance().addMapLayer(layer)
    vegas = QgsRasterLayer(str(shared_data / "spacenet" / "vegas_img0.tif"), "vegas")
    mercator = QgsCoordinateReferenceSystem("EPSG:3857")
    area = QgsCoordinateTransform(vegas.crs(), mercator, QgsProject.instance()).transformBoundingBox(vegas.extent())
    dialog = _dialog(plugin, layer, random_model_file, tmp_path / "tiles_roads.gpkg")
    dialog.area.setCurrentIndex(dialog.area.findData("rectangle"))
    dialog.drawn_rectangle = area
    plugin.iface.mapCanvas().setDestinationCrs(mercator)
    task = plugin.start_run(dialog)
    _wait(task)
    assert task.error is None, task.error
    assert Path(task.result["exported_input"]).exists()
    with rasterio.open(task.result["exported_input"]) as exported:
        assert exported.crs.to_epsg() == 3857
        ground = exported.res[0] * np.cos(np.radians(36.24))  # Web Mercator metres -> ground metres here
        assert abs(ground - 1.0) < 0.05
        assert abs(exported.bounds.left - area.xMinimum()) < 5 and abs(exported.bounds.top - area.yMaximum()) < 5
    with rasterio.open(task.result["probability"]) as ds:
        assert ds.crs.to_epsg() == 3857 and ds.read_masks(1).mean() > 200


def test_the_dialog_states_a_models_held_out_figures_in_one_line():
    from road_extractor.dialog import describe_metrics

    shipped = {"val_road_iou": 0.37, "heldout_road_iou": 0.371, "heldout_multiscale_road_iou": 0.382,
               "heldout_f1": 0.541, "heldout_apls": 0.228, "heldout_precision": 0.5}
    assert describe_metrics(shipped) == "; held-out road IoU 0.371 (0.382 at 0.75/1/1.25), F1 0.541, APLS 0.228"
    assert describe_metrics({"road_iou": 0.5, "epoch": 3}) == "; validation: road_iou 0.500"
    assert describe_metrics({}) == ""


def test_finetune_runs_from_processing_with_lines_drawn_in_another_crs(plugin, qgis_processing, random_model_file,
                                                                        tmp_path):
    """The generated suburb with its centrelines copied into a memory layer in WGS84 (the raster is UTM 19N): the
    algorithm writes the layer out, the engine reprojects it, trains for seconds and scores before and after; the
    new model becomes the Extract roads dialog's model."""
    import processing
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform

    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb

    raster, roads = write_sample(make_suburb(256), tmp_path)
    source = QgsVectorLayer(f"{roads}|layername=roads", "roads", "ogr")
    assert source.isValid() and source.featureCount() > 0
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    drawn = QgsVectorLayer("LineString?crs=EPSG:4326", "my roads", "memory")
    to_wgs84 = QgsCoordinateTransform(source.crs(), wgs84, QgsProject.instance())
    features = []
    for feature in source.getFeatures():
        geometry = QgsGeometry(feature.geometry())
        geometry.transform(to_wgs84)
        copy = QgsFeature()
        copy.setGeometry(geometry)
        features.append(copy)
    drawn.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(drawn)
    out = tmp_path / "mine.pt"
    result = processing.run("road_extractor:finetune_road_model", {
        "RASTERS": [str(raster)], "ROADS": drawn, "MINUTES": 0.05, "MODEL": str(random_model_file),
        "OUTPUT_MODEL": str(out)})
    assert Path(result["MODEL_FILE"]) == out and out.exists()
    assert 0 <= result["AFTER_ROAD_IOU"] <= 1 and 0 <= result["BEFORE_COMPLETENESS"] <= 1
    assert ExtractSettings.load().model == str(out)


def test_a_finetune_without_an_output_file_keeps_a_named_model_that_the_dialog_lists_next_time(
        plugin, qgis_iface, qgis_processing, random_model_file, tmp_path):
    """Processing's default output would be a temporary file that QGIS deletes when it quits; the model goes to the
    profile's models folder instead, is remembered with its parent and check-area figures, and a dialog opened
    afresh (the plugin unloaded and loaded again, settings read back from the profile) has it selected, listed
    and described in words."""
    import processing
    from qgis.core import QgsProcessingUtils

    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb
    from road_extractor.settings import made_models, models_folder

    raster, roads = write_sample(make_suburb(256), tmp_path)
    result = processing.run("road_extractor:finetune_road_model", {
        "RASTERS": [str(raster)], "ROADS": str(roads), "MINUTES": 0.05, "MODEL": str(random_model_file)})
    made = Path(result["MODEL_FILE"])
    try:
        assert made.exists() and made.parent == models_folder() and made.name.startswith("sample-")
        assert Path(QgsProcessingUtils.tempFolder()) not in made.parents
        (entry, *_) = made_models()
        assert entry.path == str(made) and entry.parent == random_model_file.name
        assert "check area relaxed F1" in entry.describe() and "gone" not in entry.describe()

        plugin.unload()  # the next session: a new plugin, settings read back from the profile
        QgsSettings().sync()
        again = road_extractor.classFactory(qgis_iface)
        again.initGui()
        again.show_dialog()
        dialog = again.dialog
        assert dialog.model.filePath() == str(made)
        assert dialog.made.currentData() == str(made) and made.name in dialog.made.currentText()
        _until(lambda: "fine-tuned from" in dialog.model_label.text())
        assert "check area: relaxed F1" in dialog.model_label.text() and "before" in dialog.model_label.text()
        # A file that vanished is told apart, and choosing it says so instead of pointing the field at nothing.
        made.unlink()
        dialog.refresh_made_models()
        index = dialog.made.findData(str(made))
        assert "(file gone)" in dialog.made.itemText(index)
        dialog._choose_made_model(index)
        assert "is gone" in dialog.model_label.text()
        dialog.close()
        again.unload()
        plugin.initGui()  # what the fixture unloads
    finally:
        made.unlink(missing_ok=True)


def test_a_run_without_roads_says_why_and_which_setting_changes_it(plugin):
    settings = ExtractSettings()
    base = {"road_count": 0, "length_km": 0.0, "junction_count": 0, "seconds": 7.2,
            "notes": ["warning: the input is 0.15 m/px and the model was trained at 1 m/px (6.7x apart): expect poorer "
                      "roads; a model trained nearer this resolution will do better", "precision: fp32"]}
    line, warnings = describe_result({**base, "road_fraction": 0.004}, settings)
    assert line.startswith("0 roads, 0.00 km, 0 junctions where 3 or more roads meet")
    assert any("trained at 1 m/px" in w for w in warnings)  # the resolution note reaches the message bar
    assert any(f"no piece is longer than {settings.min_length_m:g} m" in w for w in warnings)
    _, warnings = describe_result({**base, "road_fraction": 0.0, "notes": []}, settings)
    assert warnings == [w for w in warnings if "no pixel reached the threshold" in w] and warnings
    line, warnings = describe_result({**base, "road_count": 3, "length_km": 1.2, "junction_count": 1,
                                      "road_fraction": 0.02, "notes": []}, settings)
    assert "1 junction where" in line and warnings == []


def test_a_toolbox_run_of_extract_roads_loads_the_styled_roads_and_junctions(plugin, qgis_processing, vegas,
                                                                            random_model_file, tmp_path):
    import processing

    processing.runAndLoadResults("road_extractor:extract_roads", {
        "INPUT": vegas, "MODEL": str(random_model_file), "SCALES": "1.0", "OUTPUT_ROADS": str(tmp_path / "r.gpkg"),
        # as the toolbox's dialog passes them, "open output file after running" ticked
        "OUTPUT_PROBABILITY": "TEMPORARY_OUTPUT", "OUTPUT_MASK": "TEMPORARY_OUTPUT"})
    loaded = {layer.name(): layer for layer in QgsProject.instance().mapLayers().values()}
    for name in ("roads - vegas", "junctions - vegas"):
        assert name in loaded and loaded[name].isValid(), sorted(loaded)
        assert loaded[name].customProperty("road_extractor/output", False)
    assert loaded["roads - vegas"].renderer().type() == "singleSymbol"  # the QML style
    # The rasters as the dialog styles them: not an opaque grey 0-249 layer over the imagery.
    for name, renderer in (("road probability - vegas", "singlebandpseudocolor"), ("road mask - vegas", "paletted")):
        assert name in loaded, sorted(loaded)
        assert loaded[name].renderer().type() == renderer
        assert loaded[name].customProperty("road_extractor/output", False)  # not offered as imagery


def test_a_batch_row_without_a_roads_file_runs_into_a_temporary_one(plugin, qgis_processing, vegas,
                                                                   random_model_file):
    import processing

    algorithm = QgsApplication.processingRegistry().createAlgorithmById("road_extractor:extract_roads")
    roads = algorithm.parameterDefinition("OUTPUT_ROADS")
    assert roads.checkValueIsAcceptable("")  # QGIS's batch dialog skipped such a row, running the others
    result = processing.run("road_extractor:extract_roads", {"INPUT": vegas, "MODEL": str(random_model_file),
                                                             "SCALES": "1.0", "OUTPUT_ROADS": ""})
    assert Path(result["OUTPUT_ROADS"]).is_file() and result["ROAD_COUNT"] >= 0


def test_a_problem_keeps_the_dialog_open_beside_the_field_and_is_not_remembered(plugin, vegas, random_model_file,
                                                                                tmp_path):
    dialog = _dialog(plugin, vegas, random_model_file, tmp_path / "no-such-folder" / "roads.gpkg")
    dialog.accept()
    assert dialog.isVisible() and "does not exist" in dialog.problem.text() and dialog.problem.isVisible()
    assert ExtractSettings.load().output != str(tmp_path / "no-such-folder" / "roads.gpkg")
    # A rectangle drawn off the imagery: said in the estimate and beside Run, in words, before any run.
    dialog.output.setFilePath(str(tmp_path / "roads.gpkg"))
    dialog.area.setCurrentIndex(dialog.area.findData("rectangle"))
    extent = vegas.extent()
    far = QgsRectangle(extent.xMaximum() + 1, extent.yMaximum() + 1, extent.xMaximum() + 2, extent.yMaximum() + 2)
    crs = plugin.iface.mapCanvas().mapSettings().destinationCrs()
    if crs != vegas.crs():
        from road_extractor.runner import transform_extent

        far = transform_extent(far, vegas.crs(), crs)
    dialog.drawn_rectangle = far
    dialog.update_estimate()
    assert "the drawn rectangle lies outside the imagery of 'vegas'" in dialog.estimate.text()
    dialog.accept()
    assert dialog.isVisible() and "lies outside the imagery" in dialog.problem.text()
    # Selected features without a polygon layer
    dialog.area.setCurrentIndex(dialog.area.findData("selection"))
    dialog.area_layer.setLayer(None)
    dialog.accept()
    assert dialog.isVisible() and "needs a polygon layer" in dialog.problem.text()
    # Fixed: it runs, the problem line goes, and what worked is remembered.
    dialog.area.setCurrentIndex(dialog.area.findData("layer"))
    dialog.accept()
    assert not dialog.isVisible() and not dialog.problem.isVisible()
    assert ExtractSettings.load().output == str(tmp_path / "roads.gpkg")
    (task,) = plugin.tasks
    task.cancel()
    _wait(task)


def test_later_runs_of_one_input_are_told_apart_by_number_model_and_time(qgis_new_project):
    import datetime

    from qgis.core import QgsLayerTreeGroup

    from road_extractor.layers import run_title

    assert run_title("vegas") == "vegas"
    QgsProject.instance().layerTreeRoot().addChildNode(QgsLayerTreeGroup("Roads - vegas"))
    at = datetime.datetime(2026, 12, 2, 14, 5)
    assert run_title("vegas", now=at) == "vegas (run 2, shipped model, 14:05)"
    QgsProject.instance().layerTreeRoot().addChildNode(QgsLayerTreeGroup("Roads - vegas (run 2, shipped model, 14:05)"))
    assert run_title("vegas", "/models/vegas-tuned.pt", now=at) == "vegas (run 3, vegas-tuned, 14:05)"
    assert run_title("vegas_b") == "vegas_b"  # another input's name that merely starts alike


def test_the_estimate_counts_engine_start_up_and_the_flip_choices_say_what_they_cost(plugin, vegas):
    from road_extractor.estimate import ENGINE_START_S, RUN_OVERHEAD_S
    from road_extractor.runner import engine_running, shutdown_engine

    dialog = _dialog(plugin, vegas, "", Path("unused.gpkg"), scales="1.0")
    _until(lambda: "trained at" in dialog.model_label.text())  # the dialog's model check starts the engine
    shutdown_engine()
    dialog.update_estimate()
    seconds = int(dialog.estimate.text().split("about ")[1].split()[0])
    assert not engine_running() and seconds >= ENGINE_START_S + RUN_OVERHEAD_S  # a 1.7 MP raster: not "under 1 s"
    labels = {dialog.augment.itemData(i): dialog.augment.itemText(i) for i in range(dialog.augment.count())}
    assert labels["d4"] == "all 8 flips and rotations (8x time)" and labels["flip"] == "mirror (2x time)"


def _until(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        QCoreApplication.processEvents()
        time.sleep(0.05)
        assert time.monotonic() < deadline, "the dialog's background check did not finish"


def test_the_model_field_describes_the_shipped_model_at_once_and_a_refused_file_blocks_run(plugin, qgis_iface,
                                                                                           tmp_path):

    plugin.show_dialog()
    dialog = plugin.dialog
    _until(lambda: "trained at" in dialog.model_label.text())  # no edit of the field needed
    assert "held-out road IoU" in dialog.model_label.text()
    not_a_model = tmp_path / "README.md"
    not_a_model.write_text("# not a model\n" * 200)
    dialog.model.setFilePath(str(not_a_model))
    _until(lambda: dialog.model_error is not None)
    assert dialog.model_label.text().count("<span") == 1 and "\n" not in dialog.model_label.text()
    dialog.accept()
    assert dialog.result() != dialog.Accepted and dialog.isVisible()
    assert "the model cannot be used" in dialog.problem.text()  # beside Run, the dialog open
    assert ExtractSettings.load().model != str(not_a_model)  # a refused file is not remembered
    dialog.model.setFilePath("")
    _until(lambda: dialog.model_error is None and "trained at" in dialog.model_label.text())


def test_a_finished_run_teaches_the_estimate_this_machines_speed(plugin, vegas, random_model_file, tmp_path):
    """The estimate of a run, made again after it with the speed it measured, is the run's real duration (the
    speed is this machine's, so no figure here is a threshold on it)."""
    from road_extractor.estimate import (
        DEFAULT_SECONDS_PER_MP,
        ENGINE_START_S,
        PREPARE_S,
        SETTINGS_KEY,
        engine_start_s,
        prepare_s,
        seconds_per_mp,
    )

    QgsSettings().remove(SETTINGS_KEY.rstrip("/"))
    dialog = _dialog(plugin, vegas, random_model_file, tmp_path / "roads.gpkg")
    _until(lambda: "trained at" in dialog.model_label.text())
    shutdown_engine()
    task = plugin.start_run(dialog)
    assert task.workload.cold and task.workload.seconds() > 0
    _wait(task)
    assert task.error is None, task.error
    assert seconds_per_mp("cpu") != DEFAULT_SECONDS_PER_MP["cpu"]
    assert task.workload.seconds() == pytest.approx(task.wall_seconds, rel=1e-6)
    dialog.update_estimate()  # the same raster and choices, now with the engine running: no start-up in it
    assert not dialog.workload.cold
    # The engine's preparation before the first tile (the model, its runtime) is learnt apart, per fresh / running
    # engine: the warm estimate has the running engine's (the default until a warm run measures it), not the
    # fresh one's.
    prepared = task.result["prepare_seconds"]
    assert prepare_s(cold=True) == prepared > 0 and prepare_s(cold=False) == PREPARE_S["warm"]
    assert dialog.workload.seconds() == pytest.approx(task.wall_seconds - engine_start_s() - prepared
                                                      + PREPARE_S["warm"], rel=1e-6)
    assert engine_start_s() == task.engine_start_seconds != ENGINE_START_S  # measured, not the default
    QgsSettings().remove(SETTINGS_KEY.rstrip("/"))


def test_find_missing_roads_runs_from_the_toolbox_and_loads_three_styled_layers(plugin, qgis_processing, vegas,
                                                                                shared_data, random_model_file,
                                                                                tmp_path):
    import processing

    from core.metrics import read_lines

    lines, crs = read_lines(shared_data / "spacenet" / "vegas_img0_roads.geojson")
    layer = QgsVectorLayer("LineString?crs=EPSG:4326", "existing roads", "memory")
    features = []
    for line in lines[::2]:  # half of the roads: the other half should come back as missing
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(line.wkt))
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    out = tmp_path / "update.gpkg"
    result = processing.runAndLoadResults("road_extractor:find_missing_roads", {
        "INPUT": vegas, "ROADS": layer, "SCALES": "1.0", "OUTPUT": str(out)})
    assert result["MISSING_KM"] >= 0 and result["MATCHED_KM"] > 0 and out.exists()
    loaded = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    for name in ("missing - vegas", "unconfirmed - vegas", "matched - vegas"):
        assert name in loaded and loaded[name].isValid(), sorted(loaded)
    missing = loaded["missing - vegas"]
    assert missing.renderer().type() == "categorizedSymbol"  # the QML style, by review state
    review = missing.fields().indexOf("review")
    assert missing.editorWidgetSetup(review).type() == "ValueMap"  # new / accepted / rejected to choose from
    # Teaching from the layer first: a fine-tune on it as labels that lack roads, then the comparison.
    from qgis.core import QgsProcessingFeedback

    class Heard(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, info):  # noqa: N802 - Processing API
            self.lines.append(info)

    heard = Heard()
    taught = processing.run("road_extractor:find_missing_roads", {
        "INPUT": vegas, "ROADS": layer, "SCALES": "1.0", "TEACH_MINUTES": 0.05, "OUTPUT": str(tmp_path / "t.gpkg"),
        "MODEL": str(random_model_file)},  # a parent without training data on disk: nothing of its own to score
        feedback=heard)
    said = "\n".join(heard.lines)
    assert "labels      incomplete" in said and "teaching the model from the layer" in said, said
    assert taught["MATCHED_KM"] > 0
    # The review loop: one piece marked, as the attribute form writes it (OGR), then the next round.
    from osgeo import ogr

    dataset = ogr.Open(str(out), 1)
    for name, mark in (("unconfirmed", "rejected"), ("missing", "accepted")):
        table = dataset.GetLayerByName(name)
        feature = table.GetNextFeature()
        if feature is not None:
            feature.SetField("review", mark)
            table.SetFeature(feature)
    dataset = None
    heard = Heard()
    round2 = processing.runAndLoadResults("road_extractor:teach_from_review", {
        "REVIEW": str(out), "MINUTES": 0.05, "MODEL": str(random_model_file)}, feedback=heard)
    assert Path(round2["MODEL_FILE"]) == tmp_path / "update-round2.pt" and Path(round2["MODEL_FILE"]).exists()
    assert (tmp_path / "update-round2.gpkg").exists() and (tmp_path / "update-round2-roads.gpkg").exists()
    loaded = {lyr.name() for lyr in QgsProject.instance().mapLayers().values()}
    assert {"missing - update-round2", "unconfirmed - update-round2"} <= loaded, sorted(loaded)
    assert any("review      update.gpkg" in line for line in heard.lines), heard.lines


def test_drawing_the_area_says_what_to_do_on_the_map_and_esc_gives_the_dialog_back(plugin, vegas, qgis_iface):
    from qgis.PyQt.QtCore import QEvent, Qt
    from qgis.PyQt.QtGui import QKeyEvent

    plugin.show_dialog()
    dialog = plugin.dialog
    dialog.area.setCurrentIndex(dialog.area.findData("rectangle"))
    canvas = qgis_iface.mapCanvas()
    before = canvas.mapTool()
    dialog._draw_rectangle()
    assert not dialog.isVisible() and canvas.mapTool() is dialog._tool
    bar = qgis_iface.messageBar()
    shown = [w.text() for w in bar.findChildren(type(dialog._hint))]
    assert any("Drag a rectangle on the map" in text and "Esc cancels" in text for text in shown), shown
    dialog._tool.keyPressEvent(QKeyEvent(QEvent.KeyPress, Qt.Key_Escape, Qt.NoModifier))
    assert dialog.isVisible() and canvas.mapTool() is before and dialog.drawn_rectangle is None


def test_a_run_says_one_thing_in_the_dialogs_words_and_replaces_the_previous_runs_message(plugin, qgis_iface):
    from types import SimpleNamespace

    from qgis.gui import QgsMessageBarItem
    from qgis.PyQt.QtWidgets import QPushButton

    from road_extractor.runner import AreaRequest, ExtractionRun

    class Finished:  # what run_finished reads of a finished task
        workload = None
        run_plan = ExtractionRun(raster=SimpleNamespace(name="dark"), area=AreaRequest("layer"),
                                 settings=ExtractSettings(),
                                 out_dir=Path("."), roads=Path("r.gpkg"))

    bar = qgis_iface.messageBar()
    bar.clearWidgets()
    dark = {"road_count": 0, "length_km": 0.0, "junction_count": 0, "seconds": 3, "road_fraction": 0.0,
            "roads": "", "probability": "", "notes": [
                "brightness: median 30 of 255, below the model's 53-101: gamma 0.55 applied (--brightness none "
                "leaves values as they are)"]}
    def shown():  # popped items linger as children until Qt deletes them later: count what the bar shows
        return [i for i in bar.findChildren(QgsMessageBarItem) if i.isVisible() or i is bar.currentItem()]

    plugin.run_finished(Finished(), dark, None)
    (item,) = shown()
    assert item.text().startswith("no roads: no pixel reached the threshold") and "(and 1 more)" in item.text()
    assert [b.text() for b in item.findChildren(QPushButton)] == ["Details…"]
    plugin.say(Qgis.Info, "road extraction cancelled; nothing was written")  # the next run: one message only
    assert [i.text() for i in shown()] == ["road extraction cancelled; nothing was written"]


def test_engine_messages_reach_the_dialog_in_its_own_words():
    from road_extractor.engine_options import in_dialog_words

    said = in_dialog_words("brightness: gamma 0.62 applied (--brightness none leaves values as they are)")
    assert "--" not in said and "'Brightness' set to none" in said
    said = in_dialog_words("warning: the model file does not say its training GSD: processing at the input's own "
                           "resolution (record it with road-extractor export MODEL --model-file OUT --gsd M)")
    assert "road-extractor" not in said and said.endswith("own resolution")


@pytest.mark.parametrize("size", [None, (492, 685), (1366 - 100, 768 - 100)], ids=["default", "old-default", "laptop"])
def test_the_dialog_fits_its_window_nothing_squashed_or_clipped(plugin, size):
    from qgis.PyQt.QtWidgets import QAbstractButton, QComboBox, QLabel, QLineEdit, QScrollArea

    plugin.show_dialog()
    dialog = plugin.dialog
    dialog.resize(*(size or dialog.default_size()))
    for _ in range(5):
        QCoreApplication.processEvents()
    width, height = dialog.width(), dialog.height()
    assert height <= 720
    scroll = dialog.findChild(QScrollArea, "RoadExtractorFields")
    fields = scroll.widget()
    assert fields.width() <= scroll.viewport().width()  # no sideways scrolling: long text wraps
    for widget in fields.findChildren((QLabel, QLineEdit, QComboBox, QAbstractButton)):
        inner = isinstance(widget.parent(), (QComboBox, QLineEdit))  # an editable combo's own line edit
        if widget.isVisibleTo(dialog) and widget.minimumSizeHint().isValid() and not inner:
            assert widget.height() >= widget.minimumSizeHint().height(), (
                type(widget.parent()).__name__, widget.objectName(), widget.text() if hasattr(widget, "text") else "")
            assert widget.width() >= min(widget.minimumSizeHint().width(), fields.width()), widget
    run = dialog.buttons.button(dialog.buttons.Ok)
    corner = run.mapTo(dialog, run.rect().bottomRight())
    assert run.isVisibleTo(dialog) and corner.y() <= height and corner.x() <= width  # Run in view, not clipped


def test_the_estimate_fits_fixed_and_per_megapixel_costs_robustly_from_several_runs():
    from road_extractor.estimate import fit_costs

    # A tiny first run alone says nothing about the network's speed (it inflated a whole-tile estimate 7x).
    assert fit_costs([(0.017, 2.4)])[1] is None
    runs = [(0.017, 2.05), (1.0, 5.0), (4.0, 14.0), (2.0, 8.1)]  # 2 s fixed + 3 s per megapixel-pass
    fixed, per_mp = fit_costs(runs)
    assert per_mp == pytest.approx(3.0, rel=0.05) and fixed == pytest.approx(2.0, abs=0.2)
    fixed, per_mp = fit_costs(runs + [(1.0, 40.0)])  # one run beside a heavy job does not move it far
    assert per_mp == pytest.approx(3.0, rel=0.15) and fixed == pytest.approx(2.0, abs=0.6)


def test_help_opens_the_plugins_page_of_the_documentation_from_local_files(plugin):
    from qgis.PyQt.QtWidgets import QDialogButtonBox

    from road_extractor.help import help_page

    plugin.show_dialog()
    button = plugin.dialog.buttons.button(QDialogButtonBox.Help)
    assert button is not None and button.isVisible()
    page = help_page()
    # In a checkout: the site `make docs` built or the page's Markdown; in the zip: the shipped site
    # (tests/test_plugin_package.py checks that it is there).
    assert page is not None and page.exists() and "qgis-plugin" in str(page)
    assert "Extract roads" in page.read_text()
    plugin.dialog.close()


def test_the_dialog_compares_with_a_road_layer_in_the_chosen_area_and_loads_the_map_update(plugin, vegas, qgis_iface,
                                                                                          shared_data, tmp_path):
    """The dialog's second mode (issue 32): with a line layer in 'Compare with', Run is update-map on the chosen
    area (here the southern half, a selected polygon), its three layers styled in their own group, and one line
    in the message bar."""
    from core.metrics import read_lines
    from road_extractor.layers import MAP_UPDATE_LAYERS

    lines, _ = read_lines(shared_data / "spacenet" / "vegas_img0_roads.geojson")
    existing = QgsVectorLayer("LineString?crs=EPSG:4326", "existing roads", "memory")  # lines drawn, not a file
    features = []
    for line in lines[::2]:
        feature = QgsFeature()
        feature.setGeometry(QgsGeometry.fromWkt(line.wkt))
        features.append(feature)
    existing.dataProvider().addFeatures(features)
    extent = vegas.extent()
    south = QgsRectangle(extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.center().y())
    polygons = QgsVectorLayer("Polygon?crs=EPSG:4326", "area", "memory")
    feature = QgsFeature()
    feature.setGeometry(QgsGeometry.fromRect(south))
    polygons.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayers([existing, polygons])
    polygons.selectAll()
    dialog = _dialog(plugin, vegas, "", tmp_path / "update.gpkg")  # the shipped models
    assert "extracts roads" in dialog.compare_label.text() and dialog.output_label.text() == "Roads GeoPackage"
    dialog.compare.setLayer(existing)
    assert "missing from 'existing roads'" in dialog.compare_label.text()
    assert dialog.output_label.text() == "Map update GeoPackage"
    dialog.area.setCurrentIndex(dialog.area.findData("selection"))
    dialog.area_layer.setLayer(polygons)
    task = plugin.start_run(dialog)
    assert task.description().startswith("Find roads missing from existing roads in vegas")
    _wait(task)
    assert task.error is None, task.error
    assert task.result["matched_km"] > 0 and task.result["unconfirmed_km"] >= 0
    written = [Path(task.run_plan.compare_roads), Path(task.run_plan.area.polygons_file)]
    assert not any(path.parent.exists() for path in written), "the layers written out for the engine must go"
    groups = [g.name() for g in QgsProject.instance().layerTreeRoot().findGroups()]
    assert "Map update - vegas" in groups, groups
    loaded = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    for name in MAP_UPDATE_LAYERS:
        assert f"{name} - vegas" in loaded and loaded[f"{name} - vegas"].isValid(), sorted(loaded)
    assert loaded["missing - vegas"].renderer().type() == "categorizedSymbol"  # styled by review state
    # Only the chosen area was compared: the layer's roads north of it are neither matched nor unconfirmed.
    margin = 0.1 * south.height()
    for name in ("matched", "unconfirmed", "missing"):
        layer = loaded[f"{name} - vegas"]
        for piece in layer.getFeatures():
            assert piece.geometry().boundingBox().yMaximum() <= south.yMaximum() + margin, name
    said = [w for w in qgis_iface.messageBar().findChildren(type(qgis_iface.messageBar().createMessage("", "")))
            if w.isVisible()]
    texts = " ".join(w.text() for w in said)
    assert "compared with 'existing roads'" in texts and "km of roads missing from it" in texts, texts
