"""How long a run will take: megapixel-passes at the model's resolution x seconds per megapixel-pass, a figure
each finished run measures on this machine (kept in QGIS's settings per device kind), plus the engine's start
when it is not running yet."""

from __future__ import annotations

import json
from dataclasses import dataclass

from qgis.core import QgsSettings

# Before a first run has measured this machine: the shipped ResNet-18 on a 2-core CPU (2.5-4.5 s per megapixel-pass
# measured with benchmarks/plugin_estimate.py, vectorizing a dense suburb included) and on a mid-range GPU.
DEFAULT_SECONDS_PER_MP = {"cpu": 3.0, "cuda": 0.02}
# Seconds every run costs beside the network: starting the engine (Python and torch: measured 3-6 s on 2 CPU
# cores) unless it is already running, and reading, writing and vectorizing (about 1-2 s for a small raster).
ENGINE_START_S, RUN_OVERHEAD_S = 5.0, 2.0
# What the engine does before the first tile (the engine reports it as prepare_seconds): loading the model and its
# runtime, which a fresh engine process does in full (the first run on a machine also exports the model to ONNX)
# and a running one mostly has in memory. Learnt apart from the cost per megapixel, once per kind: a first run's
# preparation counted as tile work made the next run's estimate 4.5x too long (benchmarks/plugin_estimate.py).
PREPARE_S = {"cold": 2.0, "warm": 0.5}
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


def _engine_kind(cold: bool) -> str:
    return "cold" if cold else "warm"


def prepare_s(cold: bool, settings: QgsSettings | None = None) -> float:
    return measured(f"prepare_s/{_engine_kind(cold)}", PREPARE_S[_engine_kind(cold)], settings)


@dataclass(frozen=True)
class Workload:
    megapixels: float  # at the model's resolution
    passes: float  # pass_cost
    device: str  # "cpu" or "cuda"
    cold: bool  # the engine process is not running yet

    def seconds(self, settings: QgsSettings | None = None) -> float:
        return (self.megapixels * self.passes * seconds_per_mp(self.device, settings)
                + overhead_s(self.device, settings) + prepare_s(self.cold, settings)
                + (engine_start_s(settings) if self.cold else 0.0))

    def learn(self, wall_seconds: float, start_seconds: float | None, prepare_seconds: float | None = None,
              settings: QgsSettings | None = None) -> None:
        """Keeps this machine's figures from a finished run: the engine's start (measured apart when this run
        started it) and its preparation before the first tile (as the engine measured it, kept per cold / warm
        engine), then the rest of the run's time against its megapixel-passes beside the last RUNS_KEPT runs',
        from which the fixed cost and the seconds per megapixel-pass are fitted (`fit_costs`)."""
        settings = settings or QgsSettings()
        rest = wall_seconds
        if self.cold and start_seconds is not None:
            settings.setValue(SETTINGS_KEY + "engine_start_s", start_seconds)
            rest -= start_seconds
        if prepare_seconds is not None and 0 <= prepare_seconds <= rest:
            settings.setValue(SETTINGS_KEY + f"prepare_s/{_engine_kind(self.cold)}", prepare_seconds)
            rest -= prepare_seconds
        if rest <= 0:
            return
        key = SETTINGS_KEY + f"{self.device}/runs"
        try:
            runs = [tuple(map(float, r)) for r in json.loads(settings.value(key, "[]") or "[]")]
        except (TypeError, ValueError):
            runs = []
        runs = (runs + [(self.megapixels * self.passes, rest)])[-RUNS_KEPT:]
        settings.setValue(key, json.dumps(runs))
        fixed, per_mp = fit_costs(runs)
        settings.setValue(SETTINGS_KEY + f"{self.device}/overhead_s", fixed)
        if per_mp is not None:
            settings.setValue(SETTINGS_KEY + f"{self.device}/seconds_per_mp_pass", per_mp)


RUNS_KEPT = 20  # the newest runs the costs are fitted to: a machine's speed changes with drivers and load


def fit_costs(runs: list[tuple[float, float]]) -> tuple[float, float | None]:
    """(fixed seconds, seconds per megapixel-pass) from (megapixel-passes, seconds) of finished runs, robustly:
    the slope is the median of the slopes between runs of clearly different sizes (Theil-Sen), the fixed part
    the median of what each run leaves after it. One run (or runs of one size) cannot tell the two apart: then
    the fixed part is at most the default and at most half, as a first estimate. A tiny first run (0.02 MP)
    therefore no longer sets the per-megapixel cost alone: None keeps the figure there was."""
    from statistics import median

    slopes = [(t2 - t1) / (w2 - w1) for i, (w1, t1) in enumerate(runs) for w2, t2 in runs[i + 1:]
              if abs(w2 - w1) > 0.25 * max(w1, w2, 0.2)]
    slopes = [v for v in slopes if v > 0]
    if slopes:
        per_mp = median(slopes)
        fixed = max(0.0, median(t - per_mp * w for w, t in runs))
        return fixed, per_mp
    work, rest = runs[-1]
    fixed = min(RUN_OVERHEAD_S, rest / 2)
    return fixed, (rest - fixed) / work if work > 0.05 else None
