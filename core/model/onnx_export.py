"""ONNX export of a loaded model, its description embedded, so that it runs without torch (onnxruntime, Deepness)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import warnings
from pathlib import Path

import torch
from torch import nn

from core.atomic import atomic_output
from core.model.checkpoint import CheckpointError, Normalization, RoadModel
from core.options import DEEPNESS_TILE, DEFAULT_OPSET, MIN_OPSET, ONNX_TARGETS, InferenceOptions

# The smallest side the network accepts: at output stride 16 a 32-pixel side leaves 2x2 features for the ASPP.
MIN_SIDE = 32

# What the graph takes and gives (`ONNX_TARGETS`). "road-extractor": the network's own input (normalised as the
# model file says) and logits, any size: what this engine runs, summing logits over scales. "deepness": what the
# Deepness QGIS plugin feeds a segmentation model (RGB divided by 255, in fixed square tiles) and what it reads
# back (class probabilities, [N, C, H, W]); the model's normalisation and a softmax are inside the graph.
IO_KEY = "road_extractor_io"  # metadata key naming the target, so no reader mistakes one graph for the other


def deepness_overlap_percent(tile: int) -> int:
    """Deepness keeps the middle of each tile and drops half the overlap at each edge; an overlap of twice the
    engine's least overlap (`InferenceOptions.overlap`) keeps as much context at every tile edge as the engine's
    blending does. Deepness takes the overlap as a whole percentage of the tile."""
    return math.ceil(100 * 2 * InferenceOptions().overlap / tile)


class DeepnessGraph(nn.Module):
    """RGB in 0..1 -> class probabilities: the model's normalisation (pixel / scale, then per-band mean and std)
    folded into one multiply-add per band, the network, and a softmax over classes."""

    def __init__(self, network: nn.Module, normalization: Normalization) -> None:
        super().__init__()
        self.network = network
        # Deepness divides by 255; the model divides by normalization.scale: x01 * 255 / scale is what it expects.
        gain = torch.tensor([255.0 / normalization.scale / s for s in normalization.std]).view(1, -1, 1, 1)
        bias = torch.tensor([m / s for m, s in zip(normalization.mean, normalization.std, strict=True)])
        bias = bias.view(1, -1, 1, 1)
        self.register_buffer("gain", gain)
        self.register_buffer("bias", bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.network(image * self.gain - self.bias), dim=1)


def deepness_metadata(model: RoadModel, tile: int) -> dict[str, str]:
    """The keys Deepness reads from an ONNX file, each JSON-encoded as Deepness parses it (json.loads)."""
    info = model.info
    if info.gsd_m is None:
        raise CheckpointError("the model records no ground sample distance, which Deepness needs (its "
                              "'resolution'); give the one it was trained at with --gsd")
    bands = info.config.in_channels
    return {
        "model_type": json.dumps("Segmentor"),
        # Deepness wants {index: name}; it sorts by int(key) and refuses gaps.
        "class_names": json.dumps({str(i): name for i, name in enumerate(info.class_names)}),
        "resolution": json.dumps(round(info.gsd_m * 100, 6)),  # centimetres per pixel
        # Deepness's code reads "tile_size"; its documentation lists "tiles_size": both, so every version finds it.
        "tile_size": json.dumps(tile),
        "tiles_size": json.dumps(tile),
        "tiles_overlap": json.dumps(deepness_overlap_percent(tile)),
        # The normalisation is inside the graph, so Deepness must not standardise again: identity, written out
        # rather than left to Deepness's default.
        "standardization_mean": json.dumps([0.0] * bands),
        "standardization_std": json.dumps([1.0] * bands),
        "seg_thresh": json.dumps(InferenceOptions().threshold),
        # 0 turns Deepness's median filter off: a filter k px wide erases lines thinner than about k/2 px, and roads
        # at the model's GSD are 3-10 px wide; the engine's mask has no such filter either.
        "seg_small_segment": json.dumps(0),
    }


def export_onnx(model: RoadModel, path: str | Path, *, opset: int = DEFAULT_OPSET, sample_size: int = 256,
                half: bool = False, target: str = "road-extractor", tile: int = DEEPNESS_TILE) -> Path:
    """Writes the single-scale network with the model's description in the file's metadata (`road_extractor`
    holds the whole description as JSON; class_names, gsd_m and normalization are also separate keys for tools
    that read flat metadata). `target` picks the graph's input and output (see ONNX_TARGETS): "road-extractor" has
    batch, height and width dynamic; "deepness" has batch dynamic and square tiles of `tile` px, and carries
    Deepness's own metadata keys. `half` stores the weights as fp16 and still computes in fp32
    (see `_store_weights_as_fp16`)."""
    try:
        import onnx
    except ImportError:
        raise RuntimeError("ONNX export needs the onnx extra: pip install 'road-extractor[onnx]'") from None
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    if target not in ONNX_TARGETS:
        raise ValueError(f"ONNX target {target!r} is not known; use one of {', '.join(ONNX_TARGETS)}")
    if target == "deepness" and (tile < MIN_SIDE or tile % 16):
        raise ValueError(f"Deepness tile {tile} px cannot be used; give a multiple of 16 of at least {MIN_SIDE}")
    network = model.network.eval().cpu()
    config = model.info.config
    batch = torch.export.Dim("batch", min=1)
    if target == "deepness":
        extra = deepness_metadata(model, tile)  # refuses a model without GSD before the export's work
        graph: nn.Module = DeepnessGraph(network, model.info.normalization).eval()
        sample = torch.zeros(2, config.in_channels, tile, tile)
        dynamic = ({0: batch},)
        output_name = "probabilities"
    else:
        extra = {}
        graph = network
        sample = torch.zeros(1, config.in_channels, sample_size, sample_size)
        dynamic = ({0: batch, 2: torch.export.Dim("height", min=MIN_SIDE), 3: torch.export.Dim("width", min=MIN_SIDE)},)
        output_name = "logits"
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    # The exporter narrates its passes and the torchvision operators it skips; none of it concerns this model.
    try:
        exporter_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (sample,), input_names=["image"], output_names=[output_name],
                                        dynamic_shapes=dynamic, opset_version=opset, dynamo=True, verbose=False)
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    if half:
        _store_weights_as_fp16(proto.graph)
    info = model.info.to_dict()
    metadata = {
        "road_extractor": json.dumps(info),
        IO_KEY: target,
        "class_names": json.dumps(info["class_names"]),
        "gsd_m": json.dumps(info["gsd_m"]),
        "normalization": json.dumps(info["normalization"]),
        "bands": json.dumps(info["bands"]),
        **extra,  # Deepness's class_names ({index: name}) replaces the list where Deepness reads the file
    }
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    with atomic_output(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return Path(path)


def _store_weights_as_fp16(graph, min_elements: int = 64) -> None:
    """fp16 storage, fp32 arithmetic: each large float weight is stored as fp16 and cast back to fp32 by a Cast
    node, which onnxruntime folds away when it loads the model. The file halves; what runs is the fp32 network
    with fp16-rounded weights, on every execution provider (an fp16 graph would need fp16 kernels, which CPUs
    mostly lack). Small tensors (scalars, shapes) stay fp32: rounding an epsilon or a scale buys nothing."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        if values.size < min_elements or not np.all(np.abs(values) < np.finfo(np.float16).max):
            continue
        name = tensor.name
        tensor.CopyFrom(numpy_helper.from_array(values.astype(np.float16), f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT, name=f"{name}.to_fp32"))
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
