"""Loading any file a user brings: reports per module, strict inference loading, and one-line errors."""

import json
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from core.errors import OutputError
from core.frontends.cli import main
from core.model import ModelConfig, build_model
from core.model.checkpoint import (
    FORMAT,
    CheckpointError,
    ModelInfo,
    load_into,
    load_model,
    read_weights,
    save_model,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_state():
    torch.manual_seed(3)
    return build_model(ModelConfig(backbone="resnet18")).state_dict()


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def test_own_format_round_trip_keeps_description_and_weights(tmp_path):
    config = ModelConfig(backbone="resnet18", output_stride=8, layer4="multigrid", attention="psa",
                         attention_residual=True, num_classes=3)
    network = build_model(config)
    info = ModelInfo(config=config, class_names=("background", "road", "track"), gsd_m=0.5,
                     metrics={"road_iou": 0.61}, provenance={"data": "test"})
    path = save_model(tmp_path / "m.pt", network, info)
    loaded = load_model(path)
    assert loaded.info.config == config and loaded.info.gsd_m == 0.5
    assert loaded.info.class_names == ("background", "road", "track")
    assert loaded.info.metrics == {"road_iou": 0.61}
    assert set(loaded.architecture.sources.values()) == {"file config"}
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.network.state_dict()[key], value), key
    # A seed-style reader still finds the weights where it looks for them.
    assert "state_dict" in torch.load(path, weights_only=True)


def test_half_precision_file_is_half_the_size_and_loads_as_float32(tmp_path):
    network = build_model(ModelConfig(backbone="resnet18"))
    full = save_model(tmp_path / "full.pt", network, ModelInfo(config=network.config))
    half = save_model(tmp_path / "half.pt", network, ModelInfo(config=network.config), half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded = load_model(half)
    weight = loaded.network.backbone.conv1.weight
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, network.backbone.conv1.weight, atol=1e-3, rtol=1e-3)


def test_bare_state_dict_and_wrapper_prefixes(tmp_path, small_state):
    for prefix in ("", "module.", "model.", "module.module."):
        path = _save(tmp_path / "s.pth", {f"{prefix}{k}": v for k, v in small_state.items()})
        model = load_model(path)
        assert model.report.stripped_prefix == prefix
        assert model.report.complete and not model.report.unexpected


def test_mismatched_classes_are_reported_and_refused(tmp_path):
    three = build_model(ModelConfig(backbone="resnet18", num_classes=3)).state_dict()
    path = _save(tmp_path / "c3.pth", {"state_dict": three})
    # Architecture inference reads 3 classes from the weights, so the file itself loads...
    assert load_model(path).info.config.num_classes == 3
    # ...but into a 2-class network it is one mismatched layer, reported by name and shape, skipped on load.
    target = build_model(ModelConfig(backbone="resnet18"))
    before = target.decoder.last_conv[8].weight.clone()
    report = load_into(target, read_weights(path))
    assert {m.key for m in report.mismatched} == {"decoder.last_conv.8.weight", "decoder.last_conv.8.bias"}
    assert report.mismatched[0].file_shape[0] == 3 and report.mismatched[0].model_shape[0] == 2
    assert report.untrained_modules == ["decoder"]
    assert torch.equal(target.decoder.last_conv[8].weight, before)
    assert report.per_module()["decoder"]["mismatched"] == 2


def test_partial_file_is_refused_naming_the_modules(tmp_path, small_state):
    partial = {k: v for k, v in small_state.items() if not k.startswith("aspp.")}
    # 36 aspp tensors, 6 of them BatchNorm step counters that do not change an eval-mode network
    path = _save(tmp_path / "partial.pth", {"state_dict": partial})
    with pytest.raises(CheckpointError, match=r"would leave aspp untrained \(30 missing"):
        load_model(path)
    report = load_into(build_model(ModelConfig(backbone="resnet18")), read_weights(path))
    assert report.per_module()["aspp"] == {"matched": 0, "missing": 30, "unexpected": 0, "mismatched": 0}
    assert report.per_module()["backbone"]["missing"] == 0


def test_attention_is_read_from_the_weights(tmp_path):
    for config in (ModelConfig(backbone="resnet18", attention="none"),
                   ModelConfig(backbone="resnet18", attention="psa", attention_on_aspp=False),
                   ModelConfig(backbone="resnet18", attention="seed", attention_residual=True)):
        path = _save(tmp_path / "a.pth", {"state_dict": build_model(config).state_dict()})
        assert load_model(path).info.config == config


def test_flags_set_what_weights_cannot_show(tmp_path, small_state):
    path = _save(tmp_path / "s.pth", {"state_dict": small_state})
    model = load_model(path, output_stride=8, layer4="multigrid")
    assert model.info.config.output_stride == 8 and model.info.config.layer4 == "multigrid"
    assert model.architecture.sources["output_stride"] == "flag"
    assert [b.conv2.dilation[0] for b in model.network.backbone.layer4] == [4, 8]


def test_imagenet_resnet_fills_the_backbone_only(tmp_path):
    """torchvision's file layout: ResNet keys at the top level plus the ImageNet classifier fc.*"""
    backbone = build_model(ModelConfig(backbone="resnet50")).backbone.state_dict()
    imagenet = {**backbone, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    path = _save(tmp_path / "resnet50-0676ba61.pth", imagenet)
    weights = read_weights(path)
    assert weights.kind == "ImageNet ResNet" and weights.backbone_only
    assert weights.ignored == ["fc.bias", "fc.weight"]
    target = build_model(ModelConfig(backbone="resnet50"))
    report = load_into(target, weights)
    assert report.per_module()["backbone"] == {"matched": 318, "missing": 0, "unexpected": 0, "mismatched": 0}
    assert report.untrained_modules == ["aspp", "attention2", "attention", "decoder"]
    assert torch.equal(target.backbone.conv1.weight, backbone["conv1.weight"])
    with pytest.raises(CheckpointError, match="backbone only.*initialise training"):
        load_model(path)
    # The wrong depth is named, not silently half-loaded.
    report18 = load_into(build_model(ModelConfig(backbone="resnet18")), weights)
    assert report18.per_module()["backbone"]["mismatched"] > 0


class _RunsCode:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"this is a text file\n", "not a PyTorch model file"),
        (bytes(range(256)) * 8, "not a PyTorch model file"),
    ],
)
def test_non_checkpoints_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        read_weights(path)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint(tmp_path, small_state):
    path = _save(tmp_path / "full.pth", {"state_dict": small_state})
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_weights(cut)


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "code-ran"
    payload = _RunsCode()
    payload.marker = str(marker)
    for name, writer in (("torch.pth", lambda p: torch.save({"state_dict": payload}, p)),
                         ("plain.pkl", lambda p: p.write_bytes(pickle.dumps({"state_dict": payload}, protocol=2)))):
        path = tmp_path / name
        writer(path)
        with pytest.raises(CheckpointError, match="would run code when loaded.*refused") as info:
            read_weights(path)
        assert "\n" not in str(info.value)
        assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"epoch": 3, "best_pred": 0.5}, "without model weights"),
        ([1, 2, 3], "holds list"),
        ({"format": FORMAT, "format_version": 99, "info": {}, "state_dict": {}}, "format version 99.*upgrade"),
        ({"format": FORMAT, "format_version": 1, "info": {"config": {}}, "state_dict": {}}, "damaged description"),
        ({"state_dict": {"encoder.weight": torch.zeros(2)}}, "no ResNet backbone"),
    ],
)
def test_wrong_contents_are_named(tmp_path, obj, message):
    path = _save(tmp_path / "x.pth", obj)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_missing_path_folder_and_onnx(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        read_weights(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_weights(tmp_path)
    onnx_like = tmp_path / "m.onnx"
    onnx_like.write_bytes(b"\x08\x08\x12\x07pytorch")
    with pytest.raises(CheckpointError, match="ONNX"):
        read_weights(onnx_like)


def test_description_must_be_plain_data(tmp_path):
    network = build_model(ModelConfig(backbone="resnet18"))
    with pytest.raises(CheckpointError, match="cannot be stored as plain data"):
        save_model(tmp_path / "m.pt", network, ModelInfo(config=network.config, provenance={"bad": object()}))
    assert not list(tmp_path.iterdir())


def test_failed_save_leaves_the_previous_file_and_no_debris(tmp_path, monkeypatch):
    network = build_model(ModelConfig(backbone="resnet18"))
    target = tmp_path / "m.pt"
    target.write_bytes(b"previous model")

    def disk_full(obj, path):
        Path(path).write_bytes(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OutputError, match=r"could not write .*m\.pt: the disk holding .* is full"):
        save_model(target, network, ModelInfo(config=network.config))
    assert target.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


# ------------------------------------------------------------------------------------------------ the CLI


def test_inspect_json_reports_architecture_sources_and_modules(tmp_path, small_state, capsys):
    path = _save(tmp_path / "seed.pth", {"state_dict": {f"module.{k}": v for k, v in small_state.items()},
                                         "epoch": 5, "best_pred": 0.6})
    assert main(["inspect", str(path), "--json"]) == 0
    details = json.loads(capsys.readouterr().out)
    assert details["kind"] == "seed checkpoint"
    assert details["architecture"]["backbone"] == {"value": "resnet18", "source": "weights"}
    assert details["architecture"]["layer4"]["source"] == "default (weights cannot show it)"
    assert details["report"]["per_module"]["attention2"]["matched"] == 5
    assert details["report"]["stripped_prefix"] == "module."
    assert details["verdict"].startswith("ready for inference")


def test_inspect_text_for_a_partial_file(tmp_path, small_state, capsys):
    partial = {k: v for k, v in small_state.items() if not k.startswith("decoder.")}
    path = _save(tmp_path / "p.pth", {"state_dict": partial})
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "refused for inference: decoder would be left untrained" in out
    assert "missing from the file (17):" in out


def test_cli_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "core", "inspect", str(bad)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip() == f"road-extractor: error: {bad} is empty (0 bytes); the download or copy did " \
                                    f"not finish - copy it again"
    assert "Traceback" not in result.stderr


def test_export_converts_a_seed_checkpoint_to_the_project_format(tmp_path, small_state, capsys):
    seed = _save(tmp_path / "seed.pth", {"state_dict": small_state, "epoch": 9, "best_pred": 0.7})
    out = tmp_path / "model.pt"
    assert main(["export", str(seed), "--model-file", str(out), "--gsd", "1.0", "--half"]) == 0
    loaded = load_model(out)
    assert loaded.info.gsd_m == 1.0
    assert loaded.info.provenance["source"] == "seed checkpoint"
    assert loaded.info.provenance["epoch"] == 9
    assert main(["export", str(seed)]) == 2
    assert "nothing to export" in capsys.readouterr().err


def test_zip_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "archive.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="truncated or corrupt|not a PyTorch model file"):
        read_weights(path)
