"""Running a road model's ONNX graph through OpenVINO on the CPU, behind the interface of a torch module (as
`core.model.onnx_model` does with onnxruntime), so tiling, blending, multi-scale and flip inference apply unchanged.

OpenVINO reads the project's ONNX export (`road-extractor export --onnx`; a .pt model is exported on demand and
cached, `core.model.onnx_cache`). The graph is compiled once with its height and width dynamic: tiles come in a few
sizes (the fitted tile, the scales' resized ones), and the CPU plugin keeps the kernels of each shape it has run.
Its inference precision is OpenVINO's own choice unless one is asked for: bf16 where the CPU has AMX, fp32 on a CPU
without native bf16 arithmetic (as here: an AMD EPYC with AVX2)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.model.onnx_export import IO_KEY

# The engine's precision names -> OpenVINO's INFERENCE_PRECISION_HINT, and back.
HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
PRECISION_OF_HINT = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None where it is not installed (or does not import)."""
    try:
        import openvino
    except Exception:  # an incomplete install raises more than ImportError
        return None
    return openvino.__version__.split("-")[0]


class OpenVinoNetwork(nn.Module):
    """`forward(images)` -> logits, computed by OpenVINO's CPU plugin; `precision` is what it computes in (fp32,
    bf16), read back from the compiled model rather than assumed."""

    def __init__(self, path: Path, precision: str | None = None, threads: int | None = None) -> None:
        super().__init__()
        import openvino as ov

        core = ov.Core()
        graph = core.read_model(str(path))
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}  # one tile at a time, every core on it
        if precision is not None:
            config["INFERENCE_PRECISION_HINT"] = HINTS[precision]
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(graph, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # an openvino.Type: f32, bf16
        self.precision = PRECISION_OF_HINT.get(hint, hint)
        self.metadata = _metadata(graph)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        logits = self.request.infer({0: array})[self.output]
        # The request reuses its output buffer on the next call: the logits are copied out of it.
        return torch.from_numpy(np.array(logits, copy=True)).to(images.device)


def _metadata(graph) -> dict[str, str]:
    """The ONNX file's metadata_props, which OpenVINO keeps under rt_info['framework']."""
    found = {}
    for key in ("road_extractor", IO_KEY):
        if graph.has_rt_info(["framework", key]):
            found[key] = graph.get_rt_info(["framework", key]).astype(str)
    return found


@lru_cache(maxsize=4)
def compiled_network(path: str, precision: str | None, threads: int | None) -> OpenVinoNetwork:
    """One compiled network per file, precision and thread count in a process: a region run's blocks and the
    worker's repeated jobs compile it once (a compile takes about a second)."""
    return OpenVinoNetwork(Path(path), precision, threads)
