"""What the user chooses, as one dataclass the dialog fills in and QgsSettings keeps between sessions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from qgis.core import QgsSettings

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
                "device": self.device, "precision": self.precision, "brightness": self.brightness,
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
