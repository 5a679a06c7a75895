"""What the user chooses, as one dataclass the dialog fills in and QgsSettings keeps between sessions."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from qgis.core import QgsSettings

PREFIX = "road_extractor/"
AREAS = ("layer", "canvas", "selection", "rectangle")
AUGMENTS = ("none", "flip", "d4")
# core.devices.PRECISIONS: auto = bf16 where the GPU or CPU has native bf16 arithmetic, else fp32 (fp16 on old GPUs)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ExtractSettings:
    model: str = ""  # empty: the shipped model
    area: str = "layer"  # one of AREAS
    scales: str = "0.75, 1.0, 1.25"
    augment: str = "none"
    device: str = "auto"
    precision: str = "auto"  # one of PRECISIONS
    threshold: float = 0.5
    tile: int = 512
    # The engine's defaults (core.jobs.VectorizeOptions); repeated because the plugin cannot import the engine,
    # which may live in another environment. tests/test_plugin.py checks the two agree.
    overlap: int = 64
    high: float = 0.5
    low: float = 0.3
    spur_m: float = 12.0
    min_length_m: float = 30.0
    bridge_m: float = 24.0
    simplify_m: float = 1.0
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

    def vectorize_options(self) -> dict:
        return {"high": self.high, "low": self.low, "spur_m": self.spur_m, "min_length_m": self.min_length_m,
                "bridge_m": self.bridge_m, "simplify_m": self.simplify_m}

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
