"""Running an ONNX export of a road model (written by `road-extractor export --onnx`, or by Deepness-style tools
with the same metadata) through the same engine: onnxruntime behind the interface of a torch module, so tiling,
blending, multi-scale and flip inference all apply unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.model.checkpoint import Architecture, CheckpointError, LoadReport, ModelInfo, RoadModel
from core.model.onnx_export import IO_KEY


class OnnxNetwork(nn.Module):
    """`forward(images)` -> logits, computed by onnxruntime on the CPU (or CUDA where its provider is present)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime

        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().float().cpu().contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.ascontiguousarray(logits)).to(images.device)


def load_onnx_model(path: str | Path) -> RoadModel:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the path")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise CheckpointError("ONNX models need onnxruntime: pip install 'road-extractor[onnx]'") from None
    try:
        network = OnnxNetwork(path)
    except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
        reason = str(exc).splitlines()[0][:200]
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can run ({reason})") from None
    metadata = network.session.get_modelmeta().custom_metadata_map
    if "road_extractor" not in metadata:
        raise CheckpointError(f"{path} has no road_extractor description in its metadata (model classes, GSD, "
                              f"normalisation); export it with road-extractor export --onnx")
    if metadata.get(IO_KEY, "road-extractor") != "road-extractor":
        # Its graph takes 0..1 tiles of one fixed size and gives probabilities: the engine's tiling, scales and
        # logit sums would feed it the wrong values and sizes.
        raise CheckpointError(f"{path} is an export for {metadata[IO_KEY]} (fixed tiles, probabilities out); run the "
                              f"engine on the model file, or on an export made without --for")
    info = ModelInfo.from_dict(json.loads(metadata["road_extractor"]))
    report = LoadReport(str(path), "ONNX model (onnxruntime)")
    return RoadModel(network, info, report, Architecture(info.config, {}))
