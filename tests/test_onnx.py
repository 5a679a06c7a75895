"""ONNX export: runs in onnxruntime (CPU) with torch's numbers and carries the model's description."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from core.frontends.cli import main
from core.model import ModelConfig, build_model
from core.model.checkpoint import ModelInfo, load_model, save_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(2)
    config = ModelConfig(backbone="resnet18", attention="psa")
    model_file = save_model(folder / "m.pt", build_model(config),
                            ModelInfo(config=config, gsd_m=1.0, metrics={"road_iou": 0.5}))
    out = folder / "m.onnx"
    assert main(["export", str(model_file), "--onnx", str(out), "--opset", "18"]) == 0
    return load_model(model_file), out


@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (2, 3, 67, 45)])
def test_onnxruntime_matches_torch(exported, shape):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(*shape)
    with torch.inference_mode():
        expected = model.network(x).numpy()
    actual = session.run(None, {"image": x.numpy()})[0]
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-4)


def test_metadata_is_embedded(exported):
    model, path = exported
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    metadata = {p.key: p.value for p in proto.metadata_props}
    description = json.loads(metadata["road_extractor"])
    assert description["config"] == model.info.config.to_dict()
    assert description["metrics"] == {"road_iou": 0.5}
    assert json.loads(metadata["class_names"]) == ["background", "road"]
    assert json.loads(metadata["gsd_m"]) == 1.0
    # This graph takes normalised input and gives logits, which Deepness would threshold as probabilities: it
    # says whom it is for, and carries no Deepness keys (`--for deepness` makes the file Deepness reads).
    assert metadata["road_extractor_io"] == "road-extractor"
    assert "model_type" not in metadata and "seg_thresh" not in metadata


def test_old_opset_is_refused(exported, tmp_path, capsys):
    model, _ = exported
    assert main(["export", model.report.source, "--onnx", str(tmp_path / "x.onnx"), "--opset", "13"]) == 2
    assert "opset 13 is too old" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_half_storage_halves_the_file_and_computes_in_fp32(exported, tmp_path):
    model, full = exported
    half = tmp_path / "half.onnx"
    assert main(["export", model.report.source, "--onnx", str(half), "--half"]) == 0
    assert half.stat().st_size < 0.55 * full.stat().st_size
    graph = onnx.load(str(half)).graph
    assert {i.data_type for i in graph.initializer if len(i.dims) == 4} == {onnx.TensorProto.FLOAT16}
    session = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == session.get_outputs()[0].type == "tensor(float)"
    rounded = build_model(model.info.config)
    rounded.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                             for k, v in model.network.state_dict().items()})
    x = torch.randn(1, 3, 96, 96)
    with torch.inference_mode():
        expected = rounded.eval()(x).numpy()
    np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], expected, atol=1e-3, rtol=1e-3)
