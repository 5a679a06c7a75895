"""The model that ships with the project, found without the user naming it."""

from __future__ import annotations

from pathlib import Path

from core.errors import InputError

SHIPPED_MODELS = Path(__file__).resolve().parents[2] / "resources" / "models"
DEFAULT_MODEL = SHIPPED_MODELS / "roads-resnet18-massachusetts.pt"


def default_model() -> Path:
    """The shipped model file; a clear error where a checkout or package lacks it."""
    if not DEFAULT_MODEL.exists():
        raise InputError(f"the shipped road model {DEFAULT_MODEL} is missing from this installation; give a model "
                         f"file with --model (python -m training export makes one from a training run)")
    return DEFAULT_MODEL


def resolve_model(path: str | Path | None) -> Path:
    return Path(path) if path else default_model()


def open_model(path: str | Path | None):
    """A model for inference from any file the engine runs: the project's model file, a seed checkpoint, a state
    dict (through `core.model.checkpoint`), or an ONNX export (through onnxruntime); None means the shipped model."""
    resolved = resolve_model(path)
    if resolved.suffix.lower() == ".onnx":
        from core.model.onnx_model import load_onnx_model

        return load_onnx_model(resolved)
    from core.model.checkpoint import load_model

    return load_model(resolved)
