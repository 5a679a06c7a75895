"""What the user chooses, as one dataclass the dialog fills in and QgsSettings keeps between sessions."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from qgis.core import QgsApplication, QgsSettings

from .engine_options import choices, default, names

PREFIX = "road_extractor/"
AREAS = ("layer", "canvas", "selection", "rectangle")
AUGMENTS = choices("inference", "augment")
PRECISIONS = choices("inference", "precision")  # auto: bf16 where the GPU or CPU has native bf16 arithmetic
BRIGHTNESS = choices("inference", "brightness")  # auto: a raster far darker or brighter than the model's imagery


@dataclass
class ExtractSettings:
    """The engine's options (defaults from `engine_options`, i.e. from `core.options`) and the plugin's own."""

    model: str = ""  # empty: the shipped model
    area: str = "layer"  # one of AREAS
    scales: str = default("inference", "scales")
    augment: str = default("inference", "augment")
    device: str = default("inference", "device")
    precision: str = default("inference", "precision")
    runtime: str = default("inference", "runtime")  # auto: OpenVINO on CPUs where it was measured faster
    brightness: str = default("inference", "brightness")
    threshold: float = default("inference", "threshold")
    tile: int = default("inference", "tile")
    overlap: int = default("inference", "overlap")
    high: float = default("vectorize", "high")
    low: float = default("vectorize", "low")
    spur_m: float = default("vectorize", "spur_m")
    min_length_m: float = default("vectorize", "min_length_m")
    bridge_m: float = default("vectorize", "bridge_m")
    simplify_m: float = default("vectorize", "simplify_m")
    close_gaps_m: float = default("vectorize", "close_gaps_m")
    fill_holes_m2: float = default("vectorize", "fill_holes_m2")
    output: str = ""  # road GeoPackage; empty: a temporary file
    overwrite: bool = True
    engine_python: str = ""  # empty: found automatically

    def scale_list(self) -> list[float]:
        try:
            values = [float(v) for v in self.scales.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ValueError(f"scales {self.scales!r} are not numbers; write them like 0.75, 1.0, 1.25") from None
        if not values or any(v <= 0 for v in values):
            raise ValueError(f"scales {self.scales!r} must be positive numbers, e.g. 0.75, 1.0, 1.25")
        return values

    def inference_options(self) -> dict:
        """The network's options as the engine's jobs take them (scales as numbers)."""
        return {"tile": self.tile, "overlap": self.overlap, "scales": self.scale_list(), "augment": self.augment,
                "device": self.device, "precision": self.precision, "runtime": self.runtime,
                "brightness": self.brightness,
                "threshold": self.threshold}

    def vectorize_options(self) -> dict:
        return {name: getattr(self, name) for name in names("vectorize")}

    @classmethod
    def load(cls, settings: QgsSettings | None = None) -> ExtractSettings:
        settings = settings or QgsSettings()
        defaults = cls()
        values = {}
        for f in fields(cls):
            default = getattr(defaults, f.name)
            stored = settings.value(PREFIX + f.name, default)
            try:
                if isinstance(default, bool):
                    values[f.name] = stored if isinstance(stored, bool) else str(stored).lower() == "true"
                else:
                    values[f.name] = type(default)(stored)
            except (TypeError, ValueError):
                values[f.name] = default  # a value from an older release that no longer parses
        return cls(**values)

    def save(self, settings: QgsSettings | None = None) -> None:
        settings = settings or QgsSettings()
        for name, value in asdict(self).items():
            settings.setValue(PREFIX + name, value)


MADE_MODELS_KEY = PREFIX + "made_models"
MADE_MODELS_KEPT = 50  # the newest are listed; older entries are forgotten (their files are left alone)


def models_folder() -> Path:
    """Where fine-tuned models go unless the user names a file: a folder of the QGIS profile, which survives the
    session (Processing's temporary outputs are deleted when QGIS quits)."""
    return Path(QgsApplication.qgisSettingsDirPath()) / "road_extractor" / "models"


def default_model_path(raster: str) -> Path:
    """A new file in `models_folder()` named after the first raster and the time (never an existing one)."""
    folder = models_folder()
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(raster).stem or 'roads'}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, number = folder / f"{stem}.pt", 1
    while path.exists():
        number += 1
        path = folder / f"{stem}-{number}.pt"
    return path


@dataclass(frozen=True)
class MadeModel:
    """A model this profile's fine-tuning made: where, from which parent, when, and its check-area figures."""

    path: str
    parent: str
    made: str  # local time, YYYY-MM-DD HH:MM
    before: dict
    after: dict

    @property
    def exists(self) -> bool:
        return Path(self.path).is_file()

    def describe(self) -> str:
        name = Path(self.path).name
        figure = "relaxed_f1" if "relaxed_f1" in self.after else "road_iou"
        label = "relaxed F1" if figure == "relaxed_f1" else "road IoU"
        scores = ""
        if isinstance(self.before.get(figure), (int, float)) and isinstance(self.after.get(figure), (int, float)):
            scores = f", check area {label} {self.before[figure]:.2f} -> {self.after[figure]:.2f}"
        gone = "" if self.exists else " (file gone)"
        return f"{name}{gone}: from {self.parent}, {self.made}{scores}"


def made_models(settings: QgsSettings | None = None) -> list[MadeModel]:
    """The models made in this profile, newest first; entries that do not parse are dropped."""
    settings = settings or QgsSettings()
    try:
        stored = json.loads(str(settings.value(MADE_MODELS_KEY, "[]")))
        return [MadeModel(**entry) for entry in stored]
    except (TypeError, ValueError):
        return []


def remember_model(model: MadeModel, settings: QgsSettings | None = None) -> None:
    settings = settings or QgsSettings()
    kept = [m for m in made_models(settings) if m.path != model.path]
    entries = [asdict(m) for m in [model, *kept][:MADE_MODELS_KEPT]]
    settings.setValue(MADE_MODELS_KEY, json.dumps(entries))
