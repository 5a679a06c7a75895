"""How long a run will take: megapixel-passes at the model's resolution x seconds per megapixel-pass, a figure
each finished run measures on this machine (kept in QGIS's settings per device kind), plus the engine's start
when it is not running yet."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import QgsSettings

# Before a first run has measured this machine: the shipped ResNet-18 on a 2-core CPU (2.5-4.5 s per megapixel-pass
# measured with benchmarks/plugin_estimate.py, vectorizing a dense suburb included) and on a mid-range GPU.
DEFAULT_SECONDS_PER_MP = {"cpu": 3.0, "cuda": 0.02}
# Seconds every run costs beside the network: starting the engine (torch, the model: measured 3-6 s on 2 CPU
# cores) unless it is already running, and reading, writing and vectorizing (about 1-2 s for a small raster).
ENGINE_START_S, RUN_OVERHEAD_S = 5.0, 2.0
AUGMENT_PASSES = {"none": 1, "flip": 2, "d4": 8}
SETTINGS_KEY = "road_extractor/measured_seconds_per_mp_pass/"


def pass_cost(scales: list[float], augment: str) -> float:
    """Network work in passes at scale 1: a pass at scale s costs s^2 (0.75/1/1.25 cost 3.125, not 3)."""
    return sum(s * s for s in scales) * AUGMENT_PASSES[augment]


def measured(name: str, default: float, settings: QgsSettings | None = None) -> float:
    """A figure an earlier run measured on this machine, else `default`."""
    stored = (settings or QgsSettings()).value(SETTINGS_KEY + name, None)
    try:
        return float(stored) if stored is not None else default
    except (TypeError, ValueError):
        return default


def seconds_per_mp(device: str, settings: QgsSettings | None = None) -> float:
    return measured(f"{device}/seconds_per_mp_pass", DEFAULT_SECONDS_PER_MP[device], settings)


def overhead_s(device: str, settings: QgsSettings | None = None) -> float:
    return measured(f"{device}/overhead_s", RUN_OVERHEAD_S, settings)


def engine_start_s(settings: QgsSettings | None = None) -> float:
    return measured("engine_start_s", ENGINE_START_S, settings)


@dataclass(frozen=True)
class Workload:
    megapixels: float  # at the model's resolution
    passes: float  # pass_cost
    device: str  # "cpu" or "cuda"
    cold: bool  # the engine process is not running yet

    def seconds(self, settings: QgsSettings | None = None) -> float:
        return (self.megapixels * self.passes * seconds_per_mp(self.device, settings)
                + overhead_s(self.device, settings) + (engine_start_s(settings) if self.cold else 0.0))

    def learn(self, wall_seconds: float, start_seconds: float | None, settings: QgsSettings | None = None) -> None:
        """Keeps this machine's figures from a finished run: the engine's start (measured apart when this run
        started it), then the rest split into a fixed part (reading, writing, vectorizing: at most the default,
        at most half) and seconds per megapixel-pass, so that this run estimated again gives its own duration."""
        settings = settings or QgsSettings()
        rest = wall_seconds
        if self.cold and start_seconds is not None:
            settings.setValue(SETTINGS_KEY + "engine_start_s", start_seconds)
            rest -= start_seconds
        work = self.megapixels * self.passes
        if work <= 0.05 or rest <= 0:  # a tiny run measures overhead, not the network
            return
        fixed = min(RUN_OVERHEAD_S, rest / 2)
        settings.setValue(SETTINGS_KEY + f"{self.device}/overhead_s", fixed)
        settings.setValue(SETTINGS_KEY + f"{self.device}/seconds_per_mp_pass", (rest - fixed) / work)
