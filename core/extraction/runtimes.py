"""What runs the network: torch, onnxruntime or OpenVINO (`--runtime`, `core.options.RUNTIMES`).

`auto` is decided from the device, the CPU's flags and what is installed, never by a timing, so a machine makes
the same choice on every run:
- a GPU: torch (its autocast precisions; OpenVINO's CPU plugin has no place there);
- a CPU without native bf16 arithmetic (no amx_bf16 / avx512_bf16 flag), where the run is fp32: onnxruntime where
  it and the ONNX exporter are installed, else OpenVINO. On a 2-core AMD EPYC (AVX2), pairs of whole runs of the
  shipped model (farm-bench, CPU seconds): OpenVINO 1.27x torch fp32, onnxruntime 6% faster than OpenVINO, both
  at a mask road IoU of 1.0000 against torch (docs/performance.md, "Runtimes");
- a CPU with AVX-512 BF16 but no AMX: OpenVINO where it and the exporter are installed, computing in bf16 (its
  own choice there). On a 2-core AMD EPYC with AVX-512 BF16 (benchmarks/runtimes.py, the shipped model, 1500 px):
  the network 0.84 s against torch's bf16 autocast 1.12 s and fp32 2.31 s, mask road IoU 0.9987 against torch fp32,
  the validation tiles' road IoU 0.4999 / APLS 0.4779 against 0.4998 / 0.4773; whole processes on 6000 px 20.7 s
  against 24.1 s (its compilation costs about 0.5 s a process, so a 1500 px run alone is 0.4 s slower; the
  plugin's engine process compiles once). Else torch's bf16 autocast;
- a CPU with AMX: torch's bf16 autocast (4x fp32 there, issue 13); OpenVINO would pick bf16 too, but no AMX
  machine has measured it against torch here, so auto does not choose it (`--runtime openvino` does);
- an ONNX model: onnxruntime (torch cannot run an ONNX graph), OpenVINO where onnxruntime is missing.
A runtime that is missing or fails to load falls back to torch (or, for an ONNX model, onnxruntime) with one note.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec

import torch
from torch import nn

from core.extraction.devices import Precision, native_cpu_bf16
from core.model.checkpoint import RoadModel
from core.options import RUNTIMES

# Set to 0, auto never chooses a runtime that runs an ONNX export (onnxruntime, OpenVINO) for a torch model. The
# test suite sets it (tests/conftest.py, inherited by the engine workers it starts), so that tests of everything
# else run torch's numbers whatever is installed; the runtimes' own tests clear it.
AUTO_EXPORTED_ENV = "ROAD_EXTRACTOR_AUTO_EXPORTED"


@dataclass(frozen=True)
class Runtime:
    """The network a run calls, what runs it, and the sentences the log and the outputs' metadata carry."""

    name: str  # torch, onnxruntime or openvino
    network: nn.Module
    why: str  # "openvino 2026.4.1 (auto: ...)"
    precision: str  # what it computes in: fp32, bf16, fp16
    precision_why: str


def is_onnx_model(model: RoadModel) -> bool:
    """Whether the model came from an ONNX file (its network is onnxruntime's or OpenVINO's, not torch's)."""
    return next(model.network.parameters(), None) is None


def installed(runtime: str) -> bool:
    if runtime == "openvino":
        from core.model.openvino_model import openvino_version

        return openvino_version() is not None
    if runtime == "onnxruntime":
        return find_spec("onnxruntime") is not None
    return True


def auto_runtime(model: RoadModel, device: torch.device, precision: Precision) -> tuple[str, str]:
    """The runtime `auto` picks and why (the words after "auto: ")."""
    onnx = is_onnx_model(model)
    if device.type != "cpu":
        return ("onnxruntime", "an ONNX model") if onnx else ("torch", f"a {device.type.upper()} device")
    flag = native_cpu_bf16()
    exporter = onnx or (find_spec("onnx") is not None and find_spec("onnxscript") is not None)
    allowed = onnx or os.environ.get(AUTO_EXPORTED_ENV, "1") != "0"
    if precision.autocast is not None:
        if onnx:
            return "onnxruntime", "an ONNX model"
        if flag == "avx512_bf16" and allowed and exporter and installed("openvino"):
            return "openvino", "bf16 on this CPU's avx512_bf16 (no AMX), openvino installed"
        return "torch", f"bf16 autocast on this CPU's {flag}"
    on_cpu = "fp32" + ("" if flag else " on a CPU without native bf16")
    for name in ("onnxruntime", "openvino"):  # the faster first, as measured (the module's docstring)
        if allowed and exporter and installed(name):
            return name, ("an ONNX model" if onnx else f"{on_cpu}, {name} installed")
    missing = "neither onnxruntime nor OpenVINO installed" if exporter else "no ONNX exporter (the onnx extra)"
    return "torch", f"fp32, {missing}"


def open_runtime(requested: str, model: RoadModel, device: torch.device, precision: Precision, asked_precision: str,
                 log: Callable[[str], None] = lambda message: None) -> Runtime:
    """The runtime `requested` (auto, torch, onnxruntime, openvino) ready to run `model` on `device`; one that
    cannot run here falls back, and the returned `why` says so in one line."""
    if requested not in RUNTIMES:
        from core.extraction.devices import DeviceError

        raise DeviceError(f"runtime {requested!r} is not known; use {', '.join(RUNTIMES)}")
    onnx = is_onnx_model(model)
    if requested == "auto":
        name, reason = auto_runtime(model, device, precision)
        reason = f"auto: {reason}"
    else:
        name, reason = requested, "asked for"
    fallback = "onnxruntime" if onnx else "torch"
    if name == "torch" and onnx:
        name, reason = "onnxruntime", "torch cannot run an ONNX graph"
    if name == "openvino" and device.type != "cpu":
        return _fallback(model, precision, f"OpenVINO runs on the CPU here, not on {device}", fallback)
    if name != "torch" and not installed(name):
        install = {"openvino": "openvino", "onnxruntime": "onnx"}[name]
        return _fallback(model, precision, f"{name} is not installed: pip install 'road-extractor[{install}]'",
                         fallback)
    try:
        if name == "openvino":
            return _openvino(model, precision, asked_precision, reason, log)
        if name == "onnxruntime" and not onnx:
            return _onnxruntime(model, precision, reason, log)
    except Exception as exc:  # a failed export or compile: the run goes on in torch
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return _fallback(model, precision, f"{name} failed to load the model ({text})", fallback)
    if name == "onnxruntime":
        return Runtime(name, model.network, f"onnxruntime ({reason})", "fp32", "fp32 (onnxruntime)")
    return Runtime("torch", model.network, f"torch {torch.__version__.split('+')[0]} ({reason})", precision.name,
                   precision.why)


def _fallback(model: RoadModel, precision: Precision, problem: str, fallback: str) -> Runtime:
    if fallback == "onnxruntime":
        return Runtime("onnxruntime", model.network, f"onnxruntime ({problem}; running onnxruntime instead)", "fp32",
                       "fp32 (onnxruntime)")
    return Runtime("torch", model.network, f"torch ({problem}; running torch instead)", precision.name, precision.why)


def _onnx_path(model: RoadModel, log) -> str:
    if is_onnx_model(model):
        return model.report.source
    from core.model.onnx_cache import cached_onnx

    return str(cached_onnx(model, log=log))


def _openvino(model: RoadModel, precision: Precision, asked_precision: str, reason: str, log) -> Runtime:
    from core.model.openvino_model import compiled_network, openvino_version

    # auto leaves the choice to OpenVINO (bf16 where the CPU has AMX); a precision asked for is passed on.
    hint = None if asked_precision == "auto" else precision.name
    network = compiled_network(_onnx_path(model, log), hint, torch.get_num_threads())
    chose = "OpenVINO's choice on this CPU" if hint is None else "asked for"
    return Runtime("openvino", network, f"openvino {openvino_version()} ({reason})", network.precision,
                   f"{network.precision} (OpenVINO; {chose})")


def _onnxruntime(model: RoadModel, precision: Precision, reason: str, log) -> Runtime:
    from core.model.onnx_model import OnnxNetwork

    network = OnnxNetwork(_onnx_path(model, log))
    return Runtime("onnxruntime", network, f"onnxruntime ({reason})", "fp32", "fp32 (onnxruntime)")
