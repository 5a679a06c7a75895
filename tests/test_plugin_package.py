"""The plugin zip: built by one command, installed into a fresh QGIS profile folder, loaded by qgis_process, and its
algorithm run from the command line against the engine."""

import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from road_extractor.packaging import build_zip

REPO = Path(__file__).resolve().parents[1]
QGIS_PROCESS = shutil.which("qgis_process.bin") or "/usr/bin/qgis_process.bin"


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory) -> Path:
    return build_zip(tmp_path_factory.mktemp("dist") / "road_extractor.zip")


def test_zip_has_the_plugin_its_metadata_styles_and_the_engine(plugin_zip):
    names = set(zipfile.ZipFile(plugin_zip).namelist())
    for expected in ("road_extractor/__init__.py", "road_extractor/metadata.txt", "road_extractor/resources/icon.svg",
                     "road_extractor/resources/styles/roads.qml", "road_extractor/engine/core/frontends/worker.py",
                     "road_extractor/processing_provider.py"):
        assert expected in names, expected
    assert "road_extractor/engine/resources/models/roads-resnet18-massachusetts.pt" in names  # the default model
    assert "road_extractor/engine/resources/models/README.md" in names  # and its card
    assert "road_extractor/engine/resources/models/catalog.json" in names  # which model serves which resolution
    assert "road_extractor/engine/resources/models/roads-resnet18-massachusetts.stac.json" in names
    # The documentation site, for the dialog's Help offline; its plugin page links the model card.
    page = zipfile.ZipFile(plugin_zip).read("road_extractor/help/user/qgis-plugin/index.html").decode()
    assert "Extract roads" in page
    assert "road_extractor/help/search/search_index.json" in names
    assert not any(n.endswith(".onnx") for n in names)  # the engine runs the .pt; the ONNX twin stays out
    assert all(n.startswith("road_extractor/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    metadata = configparser.ConfigParser()
    metadata.read_string(zipfile.ZipFile(plugin_zip).read("road_extractor/metadata.txt").decode())
    assert f"road_extractor/{metadata['general']['icon']}" in names


@pytest.mark.skipif(not Path(QGIS_PROCESS).exists(), reason="qgis_process is not installed (apt install qgis)")
def test_installed_zip_loads_in_a_fresh_profile_and_runs_from_qgis_process(plugin_zip, tmp_path):
    profile = tmp_path / "qgis-config" / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    zipfile.ZipFile(plugin_zip).extractall(plugins)  # what "Install from ZIP" does
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text("[PythonPlugins]\nroad_extractor=true\n")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "QGIS_CUSTOM_CONFIG_PATH": str(tmp_path / "qgis-config"),
           "ROAD_EXTRACTOR_PYTHON": sys.executable, "PYTHONPATH": ""}
    listed = subprocess.run([QGIS_PROCESS, "plugins"], env=env, capture_output=True, text=True, timeout=300)
    assert "* road_extractor" in listed.stdout, listed.stdout + listed.stderr
    mask = np.zeros((200, 200), np.uint8)
    mask[97:104, :] = 1
    with rasterio.open(tmp_path / "mask.tif", "w", driver="GTiff", width=200, height=200, count=1, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 1, 1), nodata=255) as ds:
        ds.write(mask, 1)
    out = tmp_path / "roads.gpkg"
    ran = subprocess.run([QGIS_PROCESS, "run", "road_extractor:vectorize_road_mask", "--",
                          f"INPUT={tmp_path / 'mask.tif'}", f"OUTPUT_ROADS={out}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert out.exists() and "ROAD_COUNT:\t1" in ran.stdout

    # Extract roads with no model given: the engine finds the shipped model inside the installed plugin.
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb

    sample, _ = write_sample(make_suburb(256), tmp_path)
    extracted = tmp_path / "extracted.gpkg"
    ran = subprocess.run([QGIS_PROCESS, "run", "road_extractor:extract_roads", "--", f"INPUT={sample}",
                          "SCALES=1.0", f"OUTPUT_ROADS={extracted}"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    counts = [line.split("\t")[1] for line in ran.stdout.splitlines() if line.startswith("ROAD_COUNT:")]
    assert extracted.exists() and counts and float(counts[0]) > 0, ran.stdout[-2000:]
