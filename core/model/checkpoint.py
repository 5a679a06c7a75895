"""Reading, checking, loading and writing model files.

One reader for every file a user may bring: the project's own model file, a checkpoint in the seed's format
(`{'state_dict': ..., 'epoch': ..., 'best_pred': ...}`, possibly with DataParallel's `module.` prefix), a bare
state dict, and torchvision's ImageNet ResNet weights (which fill the backbone only). Files are data, not code:
they are read with `torch.load(weights_only=True)` and a file that asks to run code is refused.

Every load returns a `LoadReport` (matched, missing, unexpected and shape-mismatched keys per module), which is
the answer to "can I load my pretrained weights directly?": the seed's `load_state_dict(..., strict=False)`
silently skips whatever does not match, this report names it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import __version__
from core.atomic import atomic_output
from core.errors import InputError
from core.inputs.raster import checked_gsd
from core.model import MODULES, AttentionDeepLab, ModelConfig, build_model
from core.model.config import BACKBONES, ConfigError

FORMAT = "road-extractor-model"
FORMAT_VERSION = 1

# Names a state dict's first key component can have; anything else in front of them is a wrapper's prefix
# (DataParallel's `module.`, Lightning's `model.`, torch.compile's `_orig_mod.`).
_MODEL_ROOTS = set(MODULES)
_RESNET_ROOTS = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
# Buffers that do not change what an eval-mode network computes; old checkpoints (PyTorch < 0.4.1) lack them.
_OPTIONAL_SUFFIXES = ("num_batches_tracked",)


class CheckpointError(InputError):
    """A model file that cannot be used; the message is one sentence naming the problem and the fix."""


@dataclass(frozen=True)
class Normalization:
    """Pixel values are divided by `scale`, then standardised per band with `mean` and `std`. `brightness` is the
    range (10th-90th percentile) of the per-image median brightness (0..255) of the imagery the model was trained
    on, where the file records it: the engine brings rasters outside it into it (`core.extraction.brightness`)."""

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    scale: float = 255.0
    brightness: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"mean": list(self.mean), "std": list(self.std), "scale": self.scale}
        if self.brightness is not None:
            data["brightness"] = list(self.brightness)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalization:
        brightness = data.get("brightness")
        if brightness is not None:
            low, high = (float(v) for v in brightness)
            if not 0 < low <= high < 255:
                raise CheckpointError(f"the model file's brightness range {low:g}-{high:g} is not inside 0..255")
            brightness = (low, high)
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]), float(data["scale"]),
                   brightness)


@dataclass
class ModelInfo:
    """What a model file says about itself, beside its weights."""

    config: ModelConfig = field(default_factory=ModelConfig)
    class_names: tuple[str, ...] = ("background", "road")
    bands: tuple[str, ...] = ("red", "green", "blue")
    gsd_m: float | None = None
    normalization: Normalization = field(default_factory=Normalization)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # The version of this project that wrote the file (`save_model` sets it); None in files written before model
    # files recorded it, which load as before.
    project_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "config": self.config.to_dict(),
            "class_names": list(self.class_names),
            "bands": list(self.bands),
            "gsd_m": self.gsd_m,
            "normalization": self.normalization.to_dict(),
            "provenance": dict(self.provenance),
            "metrics": dict(self.metrics),
        }
        if self.project_version is not None:
            data["project_version"] = self.project_version
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            config=ModelConfig.from_dict(data["config"]),
            class_names=tuple(data["class_names"]),
            bands=tuple(data["bands"]),
            gsd_m=None if data.get("gsd_m") is None else checked_gsd(data["gsd_m"], "the model file's GSD",
                                                                            CheckpointError),
            normalization=Normalization.from_dict(data["normalization"]),
            provenance=dict(data.get("provenance", {})),
            metrics=dict(data.get("metrics", {})),
            project_version=None if data.get("project_version") is None else str(data["project_version"]),
        )

    def place_lines(self) -> list[str]:
        """The per-place table the file records (`training evaluate --places`), a line per place, for `inspect`
        and the demo; none where it was not scored place by place."""
        places = self.metrics.get("places")
        if not isinstance(places, dict) or not places:
            return []
        rho = self.metrics.get("places_rho_m", 3.0)
        lines = [f"{place:<14} road IoU {row['road_iou']:.3f}, relaxed F1 {row['relaxed_f1']:.3f} (precision "
                 f"{row['relaxed_precision']:.3f}, recall {row['relaxed_recall']:.3f}) on {row['tiles']} held-out "
                 f"image(s)" for place, row in places.items()]
        mean = sum(row["relaxed_f1"] for row in places.values()) / len(places)
        return lines + [f"{'mean':<14} relaxed F1 {mean:.3f} over {len(places)} places (within {rho:g} m, "
                        f"{self.metrics.get('places_arithmetic') or 'arithmetic not recorded'})"]


@dataclass(frozen=True)
class ShapeMismatch:
    key: str
    file_shape: tuple[int, ...]
    model_shape: tuple[int, ...]


def _module_of(key: str) -> str:
    root = key.split(".", 1)[0]
    return root if root in _MODEL_ROOTS else "other"


@dataclass
class LoadReport:
    """How a file's tensors map onto a network's parameters and buffers."""

    source: str
    file_kind: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[ShapeMismatch] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    stripped_prefix: str = ""

    @property
    def untrained_modules(self) -> list[str]:
        """Modules left (partly) at their random initialisation by this file."""
        bad = {_module_of(k) for k in self.missing} | {_module_of(m.key) for m in self.mismatched}
        return [m for m in (*MODULES, "other") if m in bad]

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def per_module(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = {}
        groups = (("matched", self.matched), ("missing", self.missing), ("unexpected", self.unexpected),
                  ("mismatched", [m.key for m in self.mismatched]))
        for column, keys in groups:
            for key in keys:
                row = table.setdefault(_module_of(key), {"matched": 0, "missing": 0, "unexpected": 0,
                                                         "mismatched": 0})
                row[column] += 1
        return {m: table[m] for m in (*MODULES, "other") if m in table}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "file_kind": self.file_kind,
            "stripped_prefix": self.stripped_prefix,
            "complete": self.complete,
            "untrained_modules": self.untrained_modules,
            "per_module": self.per_module(),
            "matched": len(self.matched),
            "missing": self.missing,
            "unexpected": self.unexpected,
            "mismatched": [{"key": m.key, "file": list(m.file_shape), "model": list(m.model_shape)}
                           for m in self.mismatched],
            "ignored": self.ignored,
        }

    def format(self, max_keys: int = 8) -> str:
        lines = [f"{'module':<12}{'matched':>9}{'missing':>9}{'unexpected':>12}{'mismatched':>12}"]
        for module, row in self.per_module().items():
            lines.append(f"{module:<12}{row['matched']:>9}{row['missing']:>9}{row['unexpected']:>12}"
                         f"{row['mismatched']:>12}")

        def listing(title: str, items: list[str]) -> None:
            if items:
                lines.append(f"{title} ({len(items)}):")
                lines.extend(f"  {item}" for item in items[:max_keys])
                if len(items) > max_keys:
                    lines.append(f"  ... and {len(items) - max_keys} more")

        listing("missing from the file", self.missing)
        listing("in the file but not in the model", self.unexpected)
        listing("shape differs (file vs model)",
                [f"{m.key}: {list(m.file_shape)} vs {list(m.model_shape)}" for m in self.mismatched])
        listing("ignored", self.ignored)
        if self.stripped_prefix:
            lines.append(f"prefix {self.stripped_prefix!r} removed from every key")
        return "\n".join(lines)


@dataclass
class WeightsFile:
    """The tensors of a file, with wrapper prefixes removed and backbone-only files placed under `backbone.`."""

    path: Path
    kind: str  # "road-extractor model", "seed checkpoint", "state dict", "ImageNet ResNet"
    state_dict: dict[str, torch.Tensor]
    info: ModelInfo | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    stripped_prefix: str = ""
    ignored: list[str] = field(default_factory=list)

    @property
    def backbone_only(self) -> bool:
        return all(k.startswith("backbone.") for k in self.state_dict)


@dataclass
class Architecture:
    """A config and, per field, where its value came from."""

    config: ModelConfig
    sources: dict[str, str]

    @property
    def unseen(self) -> list[str]:
        return [name for name, source in self.sources.items() if source.startswith("default")]


@dataclass
class RoadModel:
    """A network ready for inference, what its file says about it, and how it was loaded."""

    network: AttentionDeepLab
    info: ModelInfo
    report: LoadReport
    architecture: Architecture


# --------------------------------------------------------------------------------------------- reading files


def _torch_load(path: Path) -> Any:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a model file; give the path of a .pt/.pth file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes); the download or copy did not finish - copy it again")
    with open(path, "rb") as fh:
        head = fh.read(4)
    # An ONNX file is a protobuf whose first field is the IR version (tag 0x08, then a small varint).
    if path.suffix.lower() == ".onnx" or (len(head) > 1 and head[0] == 0x08 and 3 <= head[1] <= 15):
        raise CheckpointError(f"{path} looks like an ONNX model; road-extractor reads PyTorch model files (.pt/.pth) "
                              f"- run ONNX files with onnxruntime")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for foreign bytes; each becomes one sentence
        text = str(exc)
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text) or re.search(r"GLOBAL ([\w.]+)", text)
        if refused:
            raise CheckpointError(
                f"{path} holds Python objects ({refused.group(1)}) that would run code when loaded, so it was "
                f"refused; re-save only its weights in a trusted environment: "
                f"torch.save({{'state_dict': model.state_dict()}}, path)"
            ) from None
        first = (text.splitlines() or [type(exc).__name__])[0]
        if head[:2] == b"PK" or isinstance(exc, EOFError) or "central directory" in text or "zip archive" in text:
            raise CheckpointError(f"{path} is truncated or corrupt ({size} bytes; {first}); copy or download it "
                                  f"again") from None
        raise CheckpointError(f"{path} is not a PyTorch model file (neither a zip checkpoint nor a weights pickle); "
                              f"give a .pt/.pth checkpoint") from None


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    stripped = ""
    while state and not any(k.split(".", 1)[0] in _MODEL_ROOTS | _RESNET_ROOTS for k in state):
        firsts = {k.split(".", 1)[0] for k in state}
        if len(firsts) != 1 or not all("." in k for k in state):
            break
        prefix = firsts.pop() + "."
        state = {k[len(prefix):]: v for k, v in state.items()}
        stripped += prefix
    return state, stripped


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path} holds {type(obj).__name__}, not model weights; give a checkpoint that holds "
                              f"a state dict")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        shown = ", ".join(repr(k) for k in list(obj)[:6])
        raise CheckpointError(f"{path} is a dictionary ({shown}{', ...' if len(obj) > 6 else ''}) without model "
                              f"weights in a 'state_dict' entry; give the checkpoint file written by training")
    return obj


def _training_run(obj: dict) -> dict | None:
    """The run configuration a checkpoint of `python -m training fit` carries (Lightning's `hyper_parameters`)."""
    hyper = obj.get("hyper_parameters")
    config = hyper.get("config") if isinstance(hyper, dict) else None
    return config if isinstance(config, dict) and isinstance(config.get("model"), dict) else None


def _training_info(run: dict, obj: dict, path: Path) -> ModelInfo:
    """What a training checkpoint says of its model: the same description `training export` writes, so a run's
    checkpoint reads imagery at its training GSD and brightness, as its exported file would."""
    hyper = obj["hyper_parameters"]
    try:
        normalization = Normalization.from_dict({**Normalization().to_dict(), "brightness": hyper.get("brightness")})
        return ModelInfo(config=ModelConfig.from_dict(run["model"]),
                         gsd_m=checked_gsd(run.get("gsd_m", 1.0), "the training checkpoint's GSD", CheckpointError),
                         normalization=normalization,
                         provenance={"source": "training checkpoint", "file": path.name, "epoch": obj.get("epoch"),
                                     "precision": hyper.get("precision_used")})
    except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
        raise CheckpointError(f"{path} has a damaged run configuration ({exc}); use another checkpoint of the run "
                              f"or export it again") from None


def read_weights(path: str | Path) -> WeightsFile:
    """Reads any supported file and tells what kind it is; raises CheckpointError with a one-line reason."""
    path = Path(path)
    obj = _torch_load(path)
    info: ModelInfo | None = None
    extras: dict[str, Any] = {}
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{path} is a road-extractor model file of format version {version}, newer than "
                                  f"this road-extractor reads ({FORMAT_VERSION}); upgrade road-extractor")
        try:
            info = ModelInfo.from_dict(obj["info"])
        except (KeyError, TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise CheckpointError(f"{path} has a damaged description ({exc}); export the model again") from None
        kind, raw = "road-extractor model", obj.get("state_dict")
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and (run := _training_run(obj)):
        kind, raw = "training checkpoint", obj["state_dict"]
        info = _training_info(run, obj, path)
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        kind, raw = "seed checkpoint", obj["state_dict"]
        extras = {k: v for k, v in obj.items() if k in ("epoch", "best_pred", "global_step") and
                  isinstance(v, (int, float, str))}
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        kind, raw = "state dict", obj["model"]
    else:
        kind, raw = "state dict", obj
    state, prefix = _strip_wrapper_prefix(dict(_as_state_dict(raw, path)))
    ignored: list[str] = []
    roots = {k.split(".", 1)[0] for k in state}
    if roots <= _RESNET_ROOTS and "conv1" in roots:
        # torchvision's ResNet layout: the backbone alone; its ImageNet classifier has no place in a segmenter.
        ignored = sorted(k for k in state if k.startswith("fc."))
        state = {f"backbone.{k}": v for k, v in state.items() if not k.startswith("fc.")}
        kind = "ImageNet ResNet" if ignored else "ResNet backbone"
    return WeightsFile(path, kind, state, info, extras, prefix, ignored)


# ------------------------------------------------------------------------------------ architecture inference


def _count_blocks(state: dict[str, torch.Tensor], stage: str) -> int:
    pattern = re.compile(rf"^backbone\.{stage}\.(\d+)\.")
    indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def infer_architecture(weights: WeightsFile, output_stride: int | None = None,
                       layer4: str | None = None) -> Architecture:
    """The architecture the file's tensors show, completed by the file's config, flags, or the seed's defaults.

    Weights show the depth, block type, input bands, classes and which attention modules exist. They cannot
    show the output stride or the layer4 dilations (plain vs multi-grid): those layers have the same tensors
    either way. Those come from the file's own config, a flag, or the seed's choice (16, plain), in that order.
    """
    state = weights.state_dict
    if weights.info is not None:
        config, origin = weights.info.config, "file config"
        sources = {name: origin for name in config.to_dict()}
    else:
        if "backbone.conv1.weight" not in state:
            raise CheckpointError(f"{weights.path} has no ResNet backbone (no 'backbone.conv1.weight'); it is not "
                                  f"a DeepLab road model")
        block = "bottleneck" if "backbone.layer1.0.conv3.weight" in state else "basic"
        stages = tuple(_count_blocks(state, f"layer{i}") for i in range(1, 5))
        names = [n for n, spec in BACKBONES.items() if spec == (block, stages)]
        if not names:
            raise CheckpointError(f"{weights.path}: a {block}-block ResNet with {list(stages)} blocks per stage is "
                                  f"not a supported backbone ({', '.join(BACKBONES)})")
        values: dict[str, Any] = {"backbone": names[0], "in_channels": int(state["backbone.conv1.weight"].shape[1])}
        if "decoder.last_conv.8.weight" in state:
            values["num_classes"] = int(state["decoder.last_conv.8.weight"].shape[0])
        on_aspp = "attention2.conv_up.weight" in state
        on_low = "attention.conv_up.weight" in state
        if on_aspp or on_low:
            values["attention"] = "psa" if any(k.endswith(".ln.weight") and k.startswith("attention")
                                               for k in state) else "seed"
            values["attention_on_aspp"], values["attention_on_low_level"] = on_aspp, on_low
            values["attention_residual"] = any(k.startswith("attention") and k.endswith(".gamma") for k in state)
        elif any(k.startswith(("aspp.", "decoder.")) for k in state):
            values["attention"] = "none"
        config = ModelConfig(**values)
        sources = {name: ("weights" if name in values else "default (not in the file)")
                   for name in config.to_dict()}
        for name in ("output_stride", "layer4"):
            sources[name] = "default (weights cannot show it)"
    overrides = {"output_stride": output_stride, "layer4": layer4}
    for name, value in overrides.items():
        if value is not None:
            try:
                config = config.replace(**{name: value})
            except ConfigError as exc:
                raise CheckpointError(str(exc)) from None
            sources[name] = "flag"
    return Architecture(config, sources)


# ---------------------------------------------------------------------------------------------------- loading


def compare(model: nn.Module, weights: WeightsFile) -> LoadReport:
    """Matches the file's tensors to the model's by name and shape, without changing the model."""
    report = LoadReport(str(weights.path), weights.kind, stripped_prefix=weights.stripped_prefix,
                        ignored=list(weights.ignored))
    own = model.state_dict()
    for key, tensor in own.items():
        if key in weights.state_dict:
            theirs = weights.state_dict[key]
            if tuple(theirs.shape) == tuple(tensor.shape):
                report.matched.append(key)
            else:
                report.mismatched.append(ShapeMismatch(key, tuple(theirs.shape), tuple(tensor.shape)))
        elif not key.endswith(_OPTIONAL_SUFFIXES):
            report.missing.append(key)
    report.unexpected = [k for k in weights.state_dict if k not in own]
    return report


def load_into(model: nn.Module, weights: WeightsFile) -> LoadReport:
    """Copies every tensor whose name and shape match (for initialising training); reports the rest.

    Unlike `load_state_dict(strict=False)`, a tensor whose shape differs is skipped and named instead of
    raising, and nothing that was skipped goes unreported.
    """
    report = compare(model, weights)
    model.load_state_dict({k: weights.state_dict[k] for k in report.matched}, strict=False)
    return report


def _materialize_optional(network: nn.Module) -> None:
    """Tensors a file may leave out (BatchNorm's `num_batches_tracked`) get real, zeroed storage."""
    for module in network.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.is_meta:
                setattr(module, name, torch.zeros(buffer.shape, dtype=buffer.dtype))
        if any(p.is_meta for p in module.parameters(recurse=False)):
            raise CheckpointError("internal: a parameter was left without weights")


def load_model(path: str | Path, *, output_stride: int | None = None, layer4: str | None = None,
               gsd_m: float | None = None, device: str | torch.device = "cpu") -> RoadModel:
    """Loads a file for inference: every layer must come from the file, or it is refused naming the modules."""
    weights = read_weights(path)
    if weights.backbone_only:
        raise CheckpointError(f"{weights.path} holds {weights.kind} weights for the backbone only; aspp, attention "
                              f"and decoder would be untrained - use it to initialise training "
                              f"(python -m training fit --init {weights.path}), not for inference")
    architecture = infer_architecture(weights, output_stride, layer4)
    # Built without memory or random initialisation (every tensor comes from the file): half a second less per start.
    with torch.device("meta"):
        network = build_model(architecture.config)
    report = compare(network, weights)
    if report.complete:
        own = network.state_dict()
        network.load_state_dict({k: weights.state_dict[k].to(own[k].dtype) for k in report.matched}, strict=False,
                                assign=True)
        _materialize_optional(network)
    if not report.complete:
        modules = ", ".join(report.untrained_modules)
        raise CheckpointError(f"{weights.path} would leave {modules} untrained ({len(report.missing)} missing, "
                              f"{len(report.mismatched)} mismatched tensors); run `road-extractor inspect "
                              f"{weights.path}` to see which")
    info = weights.info or ModelInfo(config=architecture.config,
                                     provenance={"source": weights.kind, "file": weights.path.name,
                                                 **{k: v for k, v in weights.extras.items()},
                                                 "assumed": "ImageNet normalisation, RGB band order"})
    info.config = architecture.config
    if gsd_m is not None:
        info.gsd_m = checked_gsd(gsd_m, "--gsd", CheckpointError)
    broken = nonfinite_tensors(network.state_dict())
    if broken:
        raise CheckpointError(f"{weights.path} holds NaN or infinite values in {len(broken)} tensors ({broken[0]}, "
                              f"...): the training that made it diverged; use an earlier checkpoint or retrain "
                              f"with a lower learning rate")
    negative = impossible_statistics(network.state_dict())
    if negative:
        raise CheckpointError(f"{weights.path} holds negative BatchNorm variances in {len(negative)} layers "
                              f"({negative[0]}, ...), which no training writes: the file is damaged or was edited; "
                              f"use another copy of the model")
    network.eval().to(device)
    return RoadModel(network, info, report, architecture)


def nonfinite_tensors(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors (weights and BatchNorm statistics: a network's `state_dict()` or a file's)
    that hold NaN or infinity."""
    floats = {name: t.detach() for name, t in state_dict.items() if t.is_floating_point()}
    # One fused norm per tensor (what clip_grad_norm_ uses) is NaN or inf exactly when a value is, or when huge
    # values overflow it; a hundred times faster than isfinite tensor by tensor, which then names the culprits.
    if not floats or torch.isfinite(torch.stack(torch._foreach_norm(list(floats.values())))).all():
        return []
    return [name for name, tensor in floats.items() if not torch.isfinite(tensor).all()]


def impossible_statistics(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of BatchNorm variances below zero: no data has a negative variance, and the normalisation's square
    root of one is NaN, so such a model predicts nothing anywhere (a file edited or corrupted, not trained)."""
    return [name for name, tensor in state_dict.items()
            if name.endswith("running_var") and tensor.is_floating_point() and bool((tensor < 0).any())]


def save_model(path: str | Path, network: AttentionDeepLab, info: ModelInfo, *, half: bool = False) -> Path:
    """Writes the project's model file atomically. `half=True` stores floating tensors as fp16 (half the size;
    they are cast back to the network's dtype on loading). The description records the project version that wrote
    the file (`info.project_version`)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in network.state_dict().items()}
    info.config = network.config
    info.project_version = __version__  # the version that wrote this file, whatever made the description
    try:  # the description must stay plain data, or the weights-only reader would refuse the file
        json.dumps(info.to_dict(), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"the model description cannot be stored as plain data ({exc}); keep provenance and "
                              f"metrics to numbers, strings, lists and dicts") from None
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "info": info.to_dict(), "state_dict": state}
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)
