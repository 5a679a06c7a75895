"""QGIS quit and started again (issue 31): a model fine-tuned through Processing, with its default output, is
still there in the next QGIS process, selected for the dialog and listed with its figures. Two real QGIS processes
(headless) share one fresh profile; nothing of the first survives but what it wrote to disk."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

START = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(1, "/usr/share/qgis/python/plugins")
    from qgis.core import QgsApplication
    from qgis.PyQt.QtCore import QCoreApplication
    QCoreApplication.setOrganizationName("QGIS")  # as the qgis application names itself: QGIS/QGIS3.ini
    QCoreApplication.setApplicationName("QGIS3")
    app = QgsApplication([], False, sys.argv[2])  # the profiles folder, as `qgis --profiles-path`
    app.initQgis()
    from processing.core.Processing import Processing
    Processing.initialize()
    import road_extractor
    plugin = road_extractor.classFactory(None)
    plugin.initProcessing()
""")

FIRST = START + textwrap.dedent("""
    import processing
    from core.frontends.demo import write_sample
    from core.inputs.sample import make_suburb
    from pathlib import Path
    raster, roads = write_sample(make_suburb(256), Path(sys.argv[3]))
    result = processing.run("road_extractor:finetune_road_model", {
        "RASTERS": [str(raster)], "ROADS": str(roads), "MINUTES": 0.05, "MODEL": sys.argv[4]})
    print(json.dumps({"model": result["MODEL_FILE"]}))
    from road_extractor.runner import shutdown_engine
    shutdown_engine()
    app.exitQgis()
""")

SECOND = START + textwrap.dedent("""
    from road_extractor.settings import ExtractSettings, made_models
    from pathlib import Path
    settings = ExtractSettings.load()
    made = made_models()
    print(json.dumps({"model": settings.model, "exists": Path(settings.model).is_file(),
                      "made": [m.path for m in made], "described": made[0].describe() if made else ""}))
    app.exitQgis()
""")


def _qgis_process(code: str, profiles: Path, *args: str) -> dict:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run([sys.executable, "-c", code, str(REPO), str(profiles), *args], capture_output=True,
                          text=True, env=env, timeout=600, cwd=profiles)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_fine_tuned_model_is_there_and_selected_after_qgis_quits_and_starts_again(random_model_file, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    first = _qgis_process(FIRST, profiles, str(tmp_path), str(random_model_file))
    made = Path(first["model"])
    assert made.is_file() and profiles in made.parents  # in this fresh profile, not in a temporary folder
    again = _qgis_process(SECOND, profiles)
    assert again["model"] == str(made) and again["exists"]
    assert again["made"][0] == str(made)
    assert "check area relaxed F1" in again["described"] and "gone" not in again["described"]
