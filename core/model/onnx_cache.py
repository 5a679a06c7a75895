"""The ONNX export of a torch model, made once on demand for the runtimes that read ONNX (OpenVINO, onnxruntime),
and kept in the user's cache folder, never beside the model or in the repository.

An export takes about 12 s for the shipped model; a cached one is found by a key of the model file's sha256 (the
weights' when the model has no file), its description (the architecture, which a flag like --output-stride can
change), the opset and the versions of torch, onnx and the project that wrote it. A changed model or an upgrade
makes a new file; the export is written to a temporary file and renamed, so two runs exporting at once each leave a
whole file, and a killed run leaves none.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from core import __version__
from core.model.checkpoint import RoadModel
from core.options import DEFAULT_OPSET

CACHE_ENV = "ROAD_EXTRACTOR_CACHE"


def cache_dir() -> Path:
    """$ROAD_EXTRACTOR_CACHE, else $XDG_CACHE_HOME/road-extractor, else ~/.cache/road-extractor."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "road-extractor"


def _weights_digest(model: RoadModel) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_key(model: RoadModel, opset: int = DEFAULT_OPSET) -> str:
    """What the cached export depends on, hashed to 16 hex digits."""
    import onnx
    import torch

    # The weights as they are in memory, never the file's digest: a network loaded from a file may have been
    # changed since (fine-tuning scores mixes of its parent's weights), and a stale export would be a silent wrong
    # answer.
    weights = _weights_digest(model)
    parts = {"weights": weights, "info": model.info.to_dict(), "opset": opset, "torch": torch.__version__,
             "onnx": onnx.__version__, "road_extractor": __version__}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_onnx(model: RoadModel, opset: int = DEFAULT_OPSET, log=lambda message: None) -> Path:
    """The path of `model`'s ONNX export (the engine's graph: normalised input, logits, any size), exporting it
    first when the cache has none. Raises what the export raises (RuntimeError without the onnx extra)."""
    from core.model.onnx_export import export_onnx

    try:
        key = export_key(model, opset)
    except ImportError:
        raise RuntimeError("ONNX export needs the onnx extra: pip install 'road-extractor[onnx]'") from None
    stem = Path(model.report.source).stem or "model"
    path = cache_dir() / "onnx" / f"{stem}-{key}.onnx"
    if not path.is_file():
        log(f"exporting the model to ONNX once, for the runtime ({path})")
        export_onnx(model, path, opset=opset)
    return path
