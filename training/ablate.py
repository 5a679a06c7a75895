"""`python -m training ablate`: "what does a structure change do?", measured.

Every variant of a grid trains with the same data, split, seed and budget (the base configuration), then is
evaluated on the held-out tiles through the engine, with and without multi-scale inference. The table holds road
IoU, F1, relaxed F1 (rho = 3 px), APLS, parameters, GFLOPs and inference megapixels/s, and with reference
centrelines (`line_pairs`, `--lines`) the length completeness and correctness of each variant's lines. A variant's
results are kept in its run folder: finished variants are reused, an interrupted one resumes from its last
checkpoint, and a finished one scored with other vectorizer settings than the engine's now, or without the
reference lines asked for now, is scored again from its checkpoint without training again (APLS is computed on the
vectorizer's lines, so one table must not mix two vectorizers).
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.atomic import atomic_output
from core.errors import InputError
from core.metrics import LINE_METRIC_VERSION
from core.model import ModelConfig, build_model
from core.roads.vectorize import VectorizeParams

from .config import MODEL_FIELDS, TrainConfig
from .evaluate import Inference, evaluate_line_references, evaluate_tiles, with_and_without_multiscale
from .fit import fit, road_model, training_seconds

COLUMNS = ("variant", "inference", "road_iou", "f1", "relaxed_f1", "apls", "miou", "miou_all_background",
           "lines_completeness", "lines_correctness", "parameters_m", "gflops_512", "mp_per_s", "train_minutes")
TRAINED = ("parameters_m", "gflops_512", "mp_per_s", "train_minutes")  # what scoring again keeps


def _value(name: str, text: str):
    """A grid value typed like the option it sets."""
    kinds = {f.name: f.type for f in fields(TrainConfig)} | {f.name: f.type for f in fields(ModelConfig)}
    kind = str(kinds[name])
    if kind == "bool":
        return text.lower() in ("1", "true", "yes")
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return text


def parse_grid(specs: list[str]) -> dict[str, list]:
    """["attention=seed,psa,none", "layer4=plain,multigrid"] -> {"attention": [...], "layer4": [...]}."""
    known = set(MODEL_FIELDS) | {f.name for f in fields(TrainConfig)} - {"model", "data", "out"}
    grid: dict[str, list] = {}
    for spec in specs:
        name, _, values = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not values or name not in known:
            raise InputError(f"grid axis {spec!r} is not OPTION=VALUE,VALUE with a training or model option "
                             f"(e.g. attention=seed,psa,none or output_stride=16,8)")
        grid[name] = [_value(name, v.strip()) for v in values.split(",")]
    if not grid:
        raise InputError("give at least one grid axis, e.g. --grid attention=seed,psa,none")
    return grid


def base_value(base: TrainConfig, name: str):
    return base.to_dict()["model"][name] if name in MODEL_FIELDS else base.to_dict()[name]


def designs(base: TrainConfig, grid: dict[str, list], one_at_a_time: bool = False) -> list[tuple[str, dict]]:
    """(name, settings) of each variant. A product crosses every axis; one at a time trains the base
    configuration once ("base") and then changes one axis per variant, named by that change alone, so axes added
    later reuse every finished variant (4 runs instead of 6 for layer4 x attention; a seed axis then measures the
    noise of the base variant alone)."""
    if not one_at_a_time:
        return [(",".join(f"{k}={v}" for k, v in zip(grid, values, strict=True)), dict(zip(grid, values, strict=True)))
                for values in itertools.product(*grid.values())]
    start = {name: base_value(base, name) for name in grid}
    result = [("base", start)]
    for name, values in grid.items():
        result += [(f"{name}={value}", start | {name: value}) for value in values if value != start[name]]
    return result


def variants(base: TrainConfig, grid: dict[str, list], out: Path,
             one_at_a_time: bool = False) -> list[tuple[str, TrainConfig]]:
    result = []
    for name, changes in designs(base, grid, one_at_a_time):
        data = base.to_dict()
        model = dict(data["model"])
        for key, value in changes.items():
            if key in MODEL_FIELDS:
                model[key] = value
            else:
                data[key] = value
        data["model"] = model
        data["out"] = str(out / name.replace("=", "-").replace(",", "_"))
        result.append((name, TrainConfig.from_dict(data)))
    return result


def cost(config: ModelConfig, size: int = 512, repeats: int = 2) -> dict:
    """Parameters, GFLOPs of one forward pass at size x size, and single-scale inference megapixels/s here."""
    network = build_model(config).eval().to(memory_format=torch.channels_last)
    image = torch.randn(1, config.in_channels, size, size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            network(image)
        started = time.perf_counter()
        for _ in range(repeats):
            network(image)
        seconds = (time.perf_counter() - started) / repeats
    return {"parameters_m": sum(p.numel() for p in network.parameters()) / 1e6,
            "gflops_512": counter.get_total_flops() / 1e9 * (512 / size) ** 2,
            "mp_per_s": size * size / 1e6 / seconds}


def scoring(line_pairs=(), buffer_m: float = 5.0, line_shifts: int = 1) -> dict:
    """What a variant's figures depend on besides its weights: the engine's brightness matching and the vectorizer's
    settings (APLS and the lines), and the reference lines they were scored against, from how many origins."""
    return {"vectorize": VectorizeParams().to_dict(), "brightness": Inference().brightness,
            "lines": sorted(str(p.image) + (f" in {p.area}" if p.area else "") for p in line_pairs),
            "buffer_m": buffer_m if line_pairs else None,
            "line_shifts": line_shifts if line_pairs else None,
            "line_metric_version": LINE_METRIC_VERSION if line_pairs else None}


def _line_scoring(scored: dict) -> tuple:
    # Rows written before --line-shifts existed were scored from one origin, and before the version was recorded by
    # line metric version 1.
    lines = scored.get("lines")
    shifts = scored.get("line_shifts", 1 if lines else None)
    return lines, scored.get("buffer_m"), shifts, scored.get("line_metric_version", 1 if lines else None)


def ablate(base: TrainConfig, grid: dict[str, list], out: Path, log: Callable[[str], None] = print,
           one_at_a_time: bool = False, line_pairs=(), buffer_m: float = 5.0, line_shifts: int = 1) -> list[dict]:
    """`line_pairs` (rasters with reference centrelines, e.g. the SpaceNet tile) add each variant's length
    completeness and correctness within `buffer_m` of them: what a variant does on imagery unlike its training
    (the mean over `line_shifts` origins of each raster: `evaluate_line_references`)."""
    out.mkdir(parents=True, exist_ok=True)
    base.save(out / "base_config.yaml")
    tiles = base.split().read_val()
    inferences = with_and_without_multiscale(base.val_tile, base.val_overlap)
    rows: list[dict] = []
    current = scoring(line_pairs, buffer_m, line_shifts)

    def up_to_date(old: list[dict]) -> tuple[bool, bool]:
        """Whether a variant's stored tile figures, and its line figures, were scored as they would be now."""
        tiles_now = bool(old) and all(
            all(r.get("scoring", {}).get(key) == current[key] for key in ("vectorize", "brightness")) for r in old)
        lines_now = not line_pairs or tiles_now and all(_line_scoring(r["scoring"]) == _line_scoring(current)
                                                        for r in old)
        return tiles_now, lines_now

    def score(name: str, best: Path, old: list[dict]) -> list[dict]:
        """Rows for a trained variant: the figures of `old` rows that are still current, the rest measured."""
        model = road_model(best)
        tiles_now, lines_now = up_to_date(old)
        if tiles_now:
            by_label = {r["inference"]: dict(r) for r in old}
        else:
            by_label = {label: {"variant": name, "inference": label, **{k: f[k] for k in COLUMNS if k in f}}
                        for label, f in evaluate_tiles(model, tiles, base.gsd_m, inferences, log=log).items()}
        if not lines_now:
            for label, f in evaluate_line_references(model, line_pairs, inferences, buffer_m, line_shifts,
                                                     log=log).items():
                by_label[label].update(lines_completeness=f["completeness"], lines_correctness=f["correctness"])
        trained = {k: old[0][k] for k in TRAINED if old and k in old[0]}
        return [{**row, **trained, "scoring": current} for row in by_label.values()]

    for name, config in variants(base, grid, out, one_at_a_time):
        run = Path(config.out)
        finished = run / "ablation_rows.json"
        best = run / "checkpoints" / "best.ckpt"
        if finished.exists():
            old = json.loads(finished.read_text())
            current_figures = all(up_to_date(old))
            if current_figures or not best.exists():
                rows.extend(old)
                log(f"variant {name}: reused the finished results in {run}" + ("" if current_figures else
                    f" (scored with other settings; {best} is gone, so they cannot be scored again)"))
                continue
            log(f"variant {name}: scored again from {best} (its figures came from other vectorizer, brightness or "
                f"line settings)")
            new = score(name, best, old)
        else:
            log(f"variant {name}: training in {run}")
            started = time.perf_counter()
            best = fit(config)
            # The whole training time, across interruptions, where the run's checkpoints record it.
            seconds = training_seconds(run / "checkpoints" / "last.ckpt") or time.perf_counter() - started
            trained = {**cost(config.model_config()), "train_minutes": seconds / 60}
            new = [{**row, **trained} for row in score(name, best, [])]
        _write_atomic(finished, json.dumps(new, indent=2))
        rows.extend(new)
        write_table(rows, out)
        log(f"variant {name}: done")
    return rows


def _write_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as temporary:
        temporary.write_text(text)


def write_table(rows: list[dict], out: Path) -> None:
    """results.csv and results.md, each written to a temporary file and renamed."""
    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    with atomic_output(out / "results.csv") as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(k, "")) for k in COLUMNS) + " |" for row in rows]
    _write_atomic(out / "results.md", "\n".join(lines) + "\n")
