"""The engine worker process and the plugin's client, for real: a separate Python process, the JSON-lines protocol,
progress, cancellation, errors, a killed engine and a protocol mismatch."""

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from core.frontends.demo import write_sample
from core.inputs.sample import make_scene
from core.options import VectorizeOptions, option_table
from road_extractor.engine import EngineClient, EngineError, EngineMissing, find_engine_python, install_commands

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_file(random_model_file) -> Path:
    return random_model_file


@pytest.fixture(scope="module")
def scene_tif(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    image, _ = write_sample(make_scene(384, seed=3), folder)
    return image


@pytest.fixture
def engine():
    client = EngineClient(sys.executable, REPO)
    yield client
    client.close()


def test_handshake_devices_and_model_description(engine, model_file):
    hello = engine.start()
    assert hello["protocol"] == 1 and hello["torch"]
    devices = engine.request("devices", {"device": "auto"})
    assert devices["uses"] == "cpu" and devices["check"] is True  # this machine has no GPU
    described = engine.request("describe_model", {"path": str(model_file)})
    assert described["gsd_m"] == 1.0 and described["classes"] == ["background", "road"]
    assert described["metrics"]["val_road_iou"] == 0.5 and described["architecture"]["backbone"] == "resnet18"


def test_the_plugins_option_file_is_what_the_running_engine_reports(engine):
    """The plugin builds its dialog fields and Processing parameters from road_extractor/engine_options.json; it must
    equal the table core.options makes and a running engine reports (after changing an option, regenerate it:
    python -m core.options --write road_extractor/engine_options.json)."""
    engine.start()
    reported = engine.request("options")
    shipped = json.loads((REPO / "road_extractor" / "engine_options.json").read_text(encoding="utf-8"))
    assert reported == shipped == json.loads(json.dumps(option_table()))
    assert shipped["protocol"] == engine.hello["protocol"]
    assert shipped["vectorize"]["spur_m"]["default"] == VectorizeOptions().spur_m


def test_bad_model_file_and_unknown_fields_get_the_engines_message(engine, tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a model")
    with pytest.raises(EngineError) as caught:
        engine.request("describe_model", {"path": str(bad)})
    assert caught.value.kind == "input" and "notes.pt" in str(caught.value)
    with pytest.raises(EngineError, match="unknown ExtractJob field"):
        engine.request("extract", {"input": "x.tif", "out_dir": str(tmp_path), "colour": "red"})
    assert engine.request("ping")["pong"]  # the worker is still up after errors


def test_extract_streams_progress_and_writes_everything(engine, model_file, scene_tif, tmp_path):
    seen = []
    result = engine.request("extract", {"input": str(scene_tif), "out_dir": str(tmp_path), "model": str(model_file),
                                        "tile": 128, "overlap": 16, "scales": [1.0]},
                            on_progress=lambda fraction, message: seen.append((fraction, message)))
    assert Path(result["probability"]).exists() and Path(result["mask"]).exists() and Path(result["roads"]).exists()
    assert result["tiles"] == 16 and "road_count" in result
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and "tiles" in seen[0][1]


def test_cancel_stops_the_run_and_leaves_nothing(engine, model_file, scene_tif, tmp_path):
    out = tmp_path / "out"
    cancel = threading.Event()
    with pytest.raises(EngineError) as caught:
        engine.request("extract", {"input": str(scene_tif), "out_dir": str(out), "model": str(model_file),
                                   "tile": 64, "overlap": 8, "scales": [1.0]},
                       on_progress=lambda fraction, message: cancel.set(), is_cancelled=cancel.is_set)
    assert caught.value.kind == "cancelled"
    assert not out.exists() or not any(out.iterdir())
    assert engine.request("ping")["pong"]


def test_a_killed_engine_is_an_error_not_a_hang(engine, model_file, scene_tif, tmp_path):
    engine.start()
    timer = threading.Timer(1.0, lambda: engine._process.kill())
    timer.start()
    started = time.monotonic()
    with pytest.raises(EngineError) as caught:
        engine.request("extract", {"input": str(scene_tif), "out_dir": str(tmp_path), "model": str(model_file),
                                   "tile": 64, "overlap": 8, "scales": [0.75, 1.0, 1.25]})
    assert caught.value.kind == "process" and "exit code -9" in str(caught.value)
    assert time.monotonic() - started < 60
    assert engine.request("ping")["pong"]  # the next request starts a fresh engine


def test_protocol_mismatch_and_missing_engine_are_named(tmp_path):
    fake = tmp_path / "core" / "frontends"
    fake.mkdir(parents=True)
    for package in (fake.parent, fake):
        (package / "__init__.py").write_text("")
    (fake / "worker.py").write_text('print(\'{"type": "hello", "protocol": 99}\', flush=True)\n')
    with pytest.raises(EngineError, match="protocol 99 and this plugin 1"):
        EngineClient(sys.executable, tmp_path).start()
    with pytest.raises(EngineMissing, match="does not exist"):
        EngineClient(tmp_path / "no-python", REPO).start()
    with pytest.raises(EngineMissing, match="-m venv"):
        find_engine_python(None, tmp_path / "profile", checkout=False)
    assert install_commands(tmp_path / "profile")[0][1:3] == ["-m", "venv"]


def test_an_onnx_export_runs_through_the_same_engine(engine, model_file, scene_tif, tmp_path):
    import rasterio

    from core.model.checkpoint import load_model
    from core.model.onnx_export import export_onnx

    onnx_file = export_onnx(load_model(model_file), tmp_path / "model.onnx")
    described = engine.request("describe_model", {"path": str(onnx_file)})
    assert described["file_kind"] == "ONNX model (onnxruntime)" and described["gsd_m"] == 1.0
    job = {"input": str(scene_tif), "tile": 128, "overlap": 16, "scales": [0.75, 1.0], "vectorize": False}
    from_torch = engine.request("extract", {**job, "out_dir": str(tmp_path / "torch"), "model": str(model_file)})
    from_onnx = engine.request("extract", {**job, "out_dir": str(tmp_path / "onnx"), "model": str(onnx_file)})
    with rasterio.open(from_torch["probability"]) as a, rasterio.open(from_onnx["probability"]) as b:
        difference = abs(a.read(1).astype(int) - b.read(1).astype(int))
    assert difference.max() <= 2  # 1/255 steps: float rounding between two runtimes
