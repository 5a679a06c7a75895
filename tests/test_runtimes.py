"""What runs the network (--runtime): auto's choice from the device, the CPU's flags and what is installed; the
fallback to torch; the cached ONNX export; and the gate: OpenVINO's road mask agrees with torch fp32's (road IoU
>= 0.98) on real Massachusetts tiles with the shipped model."""

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from core.errors import InputError
from core.extraction import devices, runtimes
from core.extraction.devices import resolve_precision
from core.extraction.extract import ExtractParams, extract_roads
from core.extraction.runtimes import AUTO_EXPORTED_ENV, auto_runtime, open_runtime
from core.inputs.raster import ArraySource
from core.model.catalog import default_model
from core.model.checkpoint import load_model
from core.options import RUNTIMES, InferenceOptions

CPU = torch.device("cpu")
GATE_IOU = 0.98  # issue 35: a faster runtime must agree with torch fp32 this well
GATE_TILES = ("17278960_15.png", "18028870_15.png")  # the densest roads of the centre crops


@pytest.fixture
def shipped():
    return load_model(default_model())


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROAD_EXTRACTOR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(AUTO_EXPORTED_ENV, raising=False)
    return tmp_path / "cache"


def test_runtime_is_one_option_with_its_choices():
    assert InferenceOptions().runtime == "auto"
    assert RUNTIMES == ("auto", "torch", "onnxruntime", "openvino")
    with pytest.raises(InputError, match="runtime 'tensorrt' is not known"):
        InferenceOptions(runtime="tensorrt")


@pytest.mark.parametrize("flags, present, expected", [
    ({"avx2"}, {"onnxruntime", "openvino"}, "onnxruntime"),  # no native bf16: measured fastest of the three
    ({"avx2"}, {"openvino"}, "openvino"),
    ({"avx2"}, set(), "torch"),
    ({"avx2", "amx_bf16"}, {"onnxruntime", "openvino"}, "torch"),  # torch's bf16 autocast: unmeasured against it
    ({"avx2", "avx512_bf16", "amx_bf16"}, {"onnxruntime", "openvino"}, "torch"),  # AMX decides
    ({"avx2", "avx512_bf16"}, {"onnxruntime", "openvino"}, "openvino"),  # measured 1.33x torch bf16's network
    ({"avx2", "avx512_bf16"}, {"onnxruntime"}, "torch"),  # onnxruntime computes fp32 only
])
def test_auto_follows_the_cpu_flags_and_what_is_installed(monkeypatch, shipped, flags, present, expected):
    monkeypatch.delenv(AUTO_EXPORTED_ENV, raising=False)
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(runtimes, "installed", lambda name: name == "torch" or name in present)
    name, why = auto_runtime(shipped, CPU, resolve_precision("auto", CPU))
    assert name == expected, why
    # An fp32 run asked for on a bf16 CPU runs as on a CPU without it.
    if flags & {"amx_bf16", "avx512_bf16"}:
        assert auto_runtime(shipped, CPU, resolve_precision("fp32", CPU))[0] == "onnxruntime"
    # A GPU runs torch whatever is installed.
    assert auto_runtime(shipped, torch.device("cuda"), resolve_precision("fp32", CPU))[0] == "torch"
    monkeypatch.setenv(AUTO_EXPORTED_ENV, "0")  # the test suite's setting: torch for a torch model
    assert auto_runtime(shipped, CPU, resolve_precision("fp32", CPU))[0] == "torch"


def test_a_missing_runtime_falls_back_to_torch_in_one_note(monkeypatch, shipped):
    monkeypatch.setattr(runtimes, "installed", lambda name: name == "torch")
    chosen = open_runtime("openvino", shipped, CPU, resolve_precision("auto", CPU), "auto")
    assert chosen.name == "torch" and chosen.network is shipped.network
    assert "openvino is not installed: pip install 'road-extractor[openvino]'; running torch instead" in chosen.why
    assert "\n" not in chosen.why


def test_a_runtime_that_fails_to_load_falls_back_to_torch(monkeypatch, shipped, cache):
    pytest.importorskip("openvino")

    def broken(model, **kwargs):
        raise RuntimeError("the exporter met an operator it does not know\nmore lines")

    monkeypatch.setattr("core.model.onnx_cache.cached_onnx", broken)
    chosen = open_runtime("openvino", shipped, CPU, resolve_precision("auto", CPU), "auto")
    assert chosen.name == "torch"
    assert chosen.why.endswith("(openvino failed to load the model (the exporter met an operator it does not know); "
                               "running torch instead)")


def _crop(shared_data, name: str, size: int = 768) -> np.ndarray:
    image = np.asarray(Image.open(shared_data / "massroads" / "images" / name).convert("RGB"))
    top = (image.shape[0] - size) // 2
    return image[top:top + size, top:top + size]


def _mask(path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as ds:
        return ds.read(1) == 1, json.loads(ds.tags()["ROAD_EXTRACTOR_PARAMS"])


@pytest.mark.parametrize("other", ["onnxruntime", "openvino"])
def test_exported_runtimes_agree_with_torch_fp32_on_massachusetts_tiles(shared_data, shipped, cache, tmp_path, other):
    """The gate of issue 35: the shipped model's road mask through onnxruntime or OpenVINO (its ONNX export, made
    on demand into the cache) against torch fp32's, one scale, the centre 768 px of two Massachusetts tiles."""
    pytest.importorskip(other, reason=f"{other} is not installed (pip install 'road-extractor[{other}]')")
    if not (shared_data / "massroads" / "images" / GATE_TILES[0]).exists():
        pytest.skip("the Massachusetts tiles are not in the shared data")
    logged: list[str] = []
    for name in GATE_TILES:
        source = ArraySource(_crop(shared_data, name), gsd_m=1.0)
        masks = {}
        for runtime in ("torch", other):
            params = ExtractParams(scales=(1.0,), precision="fp32", runtime=runtime, overwrite=True)
            result = extract_roads(source, shipped, tmp_path / runtime, params, log=logged.append)
            masks[runtime], recorded = _mask(result.mask)
            assert recorded["runtime_used"] == runtime and recorded["precision_used"] == "fp32"
            assert any(note.startswith(f"runtime: {runtime} ") for note in result.notes)
        both, either = (masks["torch"] & masks[other]).sum(), (masks["torch"] | masks[other]).sum()
        print(f"{name}: {masks['torch'].sum()} road pixels, road IoU {both / either:.4f}")
        assert masks["torch"].sum() > 1000  # the crop has roads to agree on
        assert both / either >= GATE_IOU, f"{name}: road IoU {both / either:.4f} against torch fp32"
    # Exported once, into the cache named by ROAD_EXTRACTOR_CACHE, and found there the second time.
    exports = list((cache / "onnx").glob("roads-resnet18-massachusetts-*.onnx"))
    assert len(exports) == 1
    assert sum("exporting the model to ONNX once" in note for note in logged) == 1
    # The cache's key follows the weights: another model gets another file.
    from core.model.onnx_cache import export_key

    # The key follows the weights in memory, not the file they came from: fine-tuning scores mixes of a parent
    # loaded from its file, and each must run its own weights (a stale export made every mix the parent).
    other = load_model(default_model())
    with torch.no_grad():
        next(other.network.parameters()).add_(1.0)
    assert other.report.source == shipped.report.source and export_key(other) != export_key(shipped)


def test_auto_runs_openvino_where_it_chose_it(monkeypatch, shipped, cache):
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'road-extractor[openvino]')")
    monkeypatch.setattr(devices, "cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(runtimes, "installed", lambda name: name != "onnxruntime")
    monkeypatch.setattr("core.model.onnx_cache.cached_onnx", lambda model, **kwargs: _tiny_onnx(cache))
    chosen = open_runtime("auto", shipped, CPU, resolve_precision("auto", CPU), "auto")
    # Our flags are the AVX2-only machine's; OpenVINO reads the real CPU, and its own choice is what runs: fp32 on
    # an AVX2 machine, bf16 on one with AVX-512 BF16 or AMX (the precision is OpenVINO's, as the log says).
    assert chosen.name == "openvino" and chosen.precision in ("fp32", "bf16")
    assert chosen.precision_why == f"{chosen.precision} (OpenVINO; OpenVINO's choice on this CPU)"
    assert "auto: fp32 on a CPU without native bf16, openvino installed" in chosen.why
    logits = chosen.network(torch.zeros(1, 3, 64, 48))
    assert logits.shape == (1, 2, 64, 48)


def _tiny_onnx(folder):
    """A small export (ResNet-18, random weights) standing in for the shipped model's, which takes 12 s."""
    from core.model import ModelConfig, build_model
    from core.model.checkpoint import Architecture, LoadReport, ModelInfo, RoadModel
    from core.model.onnx_export import export_onnx

    path = folder / "tiny.onnx"
    if not path.exists():
        config = ModelConfig(backbone="resnet18")
        model = RoadModel(build_model(config).eval(), ModelInfo(config=config, gsd_m=1.0), LoadReport("x", "x"),
                          Architecture(config, {}))
        export_onnx(model, path, sample_size=64)
    return path


def test_training_scores_the_torch_network_it_holds():
    """Fine-tuning's mixes and training's figures are of the torch weights in memory, whatever `auto` would pick."""
    from training.evaluate import Inference

    assert Inference().extract_params().runtime == "torch"
