"""A STAC item with the Machine Learning Model extension (MLM) for a model file or an ONNX export: what a catalogue
needs to find the model (task, classes, bands, GSD, training data, its figures) and to run it (input shape and
value scaling, output, the artifact and its checksum). Everything in it comes from the model file's own
description (`ModelInfo`) and from the artifact's bytes, so the item is made again, never edited by hand.

The vendored schemas it is checked against, and why each, are in resources/schemas/stac-mlm/README.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from core.atomic import atomic_output
from core.model.checkpoint import RoadModel

STAC_VERSION = "1.1.0"  # 1.1: bands in the item's own properties, which MLM accepts as the description of its input
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.3.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
SUFFIX = ".stac.json"
TASK = "semantic-segmentation"

# Public sources of the data folders training records (`provenance["data"]`), for the item's derived_from links.
KNOWN_DATA = {
    "massroads": ("Massachusetts Roads (V. Mnih, 2013)", "https://www.cs.toronto.edu/~vmnih/data/"),
    "massroads_crops": ("Massachusetts Roads (V. Mnih, 2013)", "https://www.cs.toronto.edu/~vmnih/data/"),
}

# How each artifact kind is described: framework, MLM artifact type, media type.
ARTIFACTS = {
    "road-extractor model": ("PyTorch", "torch.save", "application/octet-stream; framework=pytorch"),
    "onnx": ("ONNX", "onnx", "application/octet-stream; framework=onnx"),
}


def item_path(artifact: str | Path) -> Path:
    """MODEL.pt -> MODEL.stac.json beside it."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.stem + SUFFIX)


def _checksum(path: Path) -> str:
    """The file extension's multihash: 0x12 (sha2-256), 0x20 (32 bytes), then the digest."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return "1220" + digest.hexdigest()


def mlm_name(stem: str) -> str:
    """The file's stem as MLM allows a name (a letter first, a letter or digit last, at least 3 characters; other
    characters become '-'): names like 'm' or '2024_roads' get a 'road-model-' prefix."""
    name = re.sub(r"[^A-Za-z0-9]+$", "", re.sub(r"[^A-Za-z0-9_.\- ]", "-", stem))
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.\- ]+[A-Za-z0-9]", name):
        name = re.sub(r"[^A-Za-z0-9]+$", "", f"road-model-{name}")
    return name


def _architecture(model: RoadModel) -> str:
    config = model.info.config
    attention = "" if config.attention == "none" else f", {config.attention} channel/spatial attention"
    return f"DeepLabv3+ ({config.backbone} backbone, output stride {config.output_stride}{attention})"


def _input(model: RoadModel, io: str, tile: int | None) -> dict[str, Any]:
    info = model.info
    norm = info.normalization
    side = tile or -1
    if io == "deepness":
        # The graph holds the normalisation; it takes the bands divided by 255, as Deepness gives them.
        scaling = [{"type": "scale", "value": 255.0}]
        described = "bands divided by 255 (what Deepness feeds); the model's normalisation is inside the graph"
    else:
        # (v / scale - mean) / std per band, written as one z-score on the raw values.
        scaling = [{"type": "z-score", "mean": round(m * norm.scale, 6), "stddev": round(s * norm.scale, 6)}
                   for m, s in zip(norm.mean, norm.std, strict=True)]
        described = f"raw band values (0-{norm.scale:g}) standardised per band"
    return {
        "name": "image",
        "bands": list(info.bands),
        "input": {"shape": [-1, info.config.in_channels, side, side], "dim_order": ["batch", "channel", "height",
                                                                                      "width"],
                  "data_type": "float32"},
        "description": (f"{', '.join(info.bands)} at {info.gsd_m:g} m per pixel; {described}. "
                        + ("Square tiles of exactly this size." if tile else
                           "Any height and width of at least 32 px.")),
        "value_scaling": scaling,
        "resize_type": None,
        "pre_processing_function": None,
    }


def _output(model: RoadModel, io: str, tile: int | None) -> dict[str, Any]:
    info = model.info
    side = tile or -1
    probabilities = io == "deepness"
    return {
        "name": "probabilities" if probabilities else "logits",
        "tasks": [TASK],
        "result": {"shape": [-1, len(info.class_names), side, side],
                   "dim_order": ["batch", "class", "height", "width"], "data_type": "float32"},
        "description": ("class probabilities (softmax over classes)" if probabilities else
                        "class logits; softmax over classes gives probabilities")
        + "; a pixel is road where the road probability reaches the threshold in mlm:hyperparameters",
        "classification:classes": [{"value": i, "name": name} for i, name in enumerate(info.class_names)],
        "post_processing_function": None,
    }


def stac_item(model: RoadModel, artifact: str | Path, kind: str, *, io: str = "road-extractor",
              tile: int | None = None) -> dict[str, Any]:
    """The MLM item describing `artifact` (a file already written), of `kind` "road-extractor model" or "onnx";
    `io` and `tile` say which graph an ONNX artifact holds (`core.options.ONNX_TARGETS`)."""
    from core.options import InferenceOptions

    artifact = Path(artifact)
    framework, artifact_type, media_type = ARTIFACTS[kind]
    info = model.info
    name = mlm_name(artifact.stem)
    defaults = InferenceOptions()
    parameters = sum(p.numel() for p in model.network.parameters())
    data = [str(d) for d in info.provenance.get("data", [])]
    links = []
    for title, href in dict.fromkeys(KNOWN_DATA[Path(d).name] for d in data if Path(d).name in KNOWN_DATA):
        links.append({"rel": "derived_from", "href": href, "type": "text/html", "title": f"training data: {title}"})
    properties: dict[str, Any] = {
        "title": name,
        "description": (f"Road segmentation of {', '.join(info.bands)} imagery at {info.gsd_m:g} m per pixel "
                        f"({' / '.join(info.class_names)}), made with road-extractor. Valid for imagery of any date "
                        f"(the start and end below say so; the model records no acquisition dates)."),
        "datetime": None,
        "start_datetime": "1900-01-01T00:00:00Z",
        "end_datetime": "9999-12-31T23:59:59Z",
        "license": "other",
        "gsd": info.gsd_m,
        "bands": [{"name": band} for band in info.bands],
        "mlm:name": name,
        "mlm:architecture": _architecture(model),
        "mlm:tasks": [TASK],
        "mlm:framework": framework,
        "mlm:total_parameters": parameters,
        "mlm:accelerator": "amd64",
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": "runs on x86-64 CPUs; CUDA GPUs where present, not required",
        "mlm:batch_size_suggestion": defaults.batch_size,
        "mlm:input": [_input(model, io, tile)],
        "mlm:output": [_output(model, io, tile)],
        "mlm:hyperparameters": {"road_probability_threshold": defaults.threshold},
        # The model file's own figures and provenance, under the project's prefix (MLM has no field for them).
        "road_extractor:metrics": dict(info.metrics),
        "road_extractor:training_data": data,
        "road_extractor:validation_tiles": list(info.provenance.get("validation_tiles", [])),
        "road_extractor:normalization": info.normalization.to_dict(),
    }
    if kind == "onnx":
        properties["road_extractor:io"] = io  # whom the graph is for: `core.options.ONNX_TARGETS`
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [MLM_SCHEMA, CLASSIFICATION_SCHEMA, FILE_SCHEMA],
        "id": name,
        "geometry": None,  # the model file records no footprint of its training data
        "properties": properties,
        "links": links,
        "assets": {
            "model": {
                "href": f"./{artifact.name}",
                "type": media_type,
                "title": f"{name} ({framework})",
                "roles": ["mlm:model", "mlm:weights", "data"],
                "mlm:artifact_type": artifact_type,
                "file:size": artifact.stat().st_size,
                "file:checksum": _checksum(artifact),
            },
        },
    }


def write_stac_item(model: RoadModel, artifact: str | Path, kind: str, *, io: str = "road-extractor",
                    tile: int | None = None, path: str | Path | None = None) -> Path:
    """Writes `stac_item` as MODEL.stac.json beside the artifact (or at `path`), atomically."""
    target = Path(path) if path else item_path(artifact)
    text = json.dumps(stac_item(model, artifact, kind, io=io, tile=tile), indent=2, allow_nan=False) + "\n"
    with atomic_output(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
