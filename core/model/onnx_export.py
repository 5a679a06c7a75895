"""ONNX export of a loaded model, its description embedded, so that it runs without torch (onnxruntime, Deepness)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import torch

from core.atomic import atomic_output
from core.model.checkpoint import RoadModel

MIN_OPSET = 17
# The smallest side the network accepts: at output stride 16 a 32-pixel side leaves 2x2 features for the ASPP.
MIN_SIDE = 32


def export_onnx(model: RoadModel, path: str | Path, *, opset: int = 18, sample_size: int = 256,
                half: bool = False) -> Path:
    """Writes the single-scale network (batch, height and width dynamic) with the model's description in the
    file's metadata (`road_extractor` holds the whole description as JSON; class_names, gsd_m and
    normalization are also separate keys for tools that read flat metadata). `half` stores the weights as fp16
    and still computes in fp32 (see `_store_weights_as_fp16`)."""
    try:
        import onnx
    except ImportError:
        raise RuntimeError("ONNX export needs the onnx extra: pip install 'road-extractor[onnx]'") from None
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    network = model.network.eval().cpu()
    config = model.info.config
    sample = torch.zeros(1, config.in_channels, sample_size, sample_size)
    batch, height, width = (torch.export.Dim("batch", min=1), torch.export.Dim("height", min=MIN_SIDE),
                            torch.export.Dim("width", min=MIN_SIDE))
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    # The exporter narrates its passes and the torchvision operators it skips; none of it concerns this model.
    try:
        exporter_log.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(network, (sample,), input_names=["image"], output_names=["logits"],
                                        dynamic_shapes=({0: batch, 2: height, 3: width},), opset_version=opset,
                                        dynamo=True, verbose=False)
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    if half:
        _store_weights_as_fp16(proto.graph)
    info = model.info.to_dict()
    metadata = {
        "road_extractor": json.dumps(info),
        "class_names": json.dumps(info["class_names"]),
        "gsd_m": json.dumps(info["gsd_m"]),
        "normalization": json.dumps(info["normalization"]),
        "bands": json.dumps(info["bands"]),
        "model_type": "Segmentor",
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
