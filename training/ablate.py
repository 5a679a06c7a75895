"""`python -m training ablate`: "what does a structure change do?", measured.

Every variant of a grid trains with the same data, split, seed and budget (the base configuration), then is
evaluated on the held-out tiles through the engine, with and without multi-scale inference. The table holds road
IoU, F1, relaxed F1 (rho = 3 px), APLS, parameters, GFLOPs and inference megapixels/s. A variant's results are
kept in its run folder: finished variants are reused, an interrupted one resumes from its last checkpoint, and a
finished one scored with other vectorizer settings than the engine's now is scored again from its checkpoint (APLS
is computed on the vectorizer's lines, so a table must not mix two vectorizers), without training again.
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
from core.model import ModelConfig, build_model
from core.roads.vectorize import VectorizeParams

from .config import MODEL_FIELDS, TrainConfig
from .evaluate import evaluate_tiles, with_and_without_multiscale
from .fit import fit, road_model, training_seconds

COLUMNS = ("variant", "inference", "road_iou", "f1", "relaxed_f1", "apls", "miou", "miou_all_background",
           "parameters_m", "gflops_512", "mp_per_s", "train_minutes")


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


def scoring() -> dict:
    """What a variant's figures depend on besides its weights: the vectorizer's settings (APLS)."""
    return {"vectorize": VectorizeParams().to_dict()}


def ablate(base: TrainConfig, grid: dict[str, list], out: Path, log: Callable[[str], None] = print,
           one_at_a_time: bool = False) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    base.save(out / "base_config.yaml")
    tiles = base.split().read_val()
    inferences = with_and_without_multiscale(base.val_tile, base.val_overlap)
    rows: list[dict] = []
    current = scoring()

    def score(name: str, best: Path, trained: dict) -> list[dict]:
        results = evaluate_tiles(road_model(best), tiles, base.gsd_m, inferences, log=log)
        return [{"variant": name, "inference": label, **{k: summary[k] for k in COLUMNS if k in summary},
                 **trained, "scoring": current} for label, summary in results.items()]

    for name, config in variants(base, grid, out, one_at_a_time):
        run = Path(config.out)
        finished = run / "ablation_rows.json"
        best = run / "checkpoints" / "best.ckpt"
        if finished.exists():
            old = json.loads(finished.read_text())
            same = all(row.get("scoring") == current for row in old)
            if same or not best.exists():
                rows.extend(old)
                log(f"variant {name}: reused the finished results in {run}" + ("" if same else
                    f" (scored with other vectorizer settings; {best} is gone, so they cannot be scored again)"))
                continue
            log(f"variant {name}: scored again from {best} (its figures came from other vectorizer settings)")
            new = score(name, best, {k: old[0][k] for k in ("parameters_m", "gflops_512", "mp_per_s", "train_minutes")
                                     if k in old[0]})
        else:
            log(f"variant {name}: training in {run}")
            started = time.perf_counter()
            best = fit(config)
            # The whole training time, across interruptions, where the run's checkpoints record it.
            seconds = training_seconds(run / "checkpoints" / "last.ckpt") or time.perf_counter() - started
            new = score(name, best, {**cost(config.model_config()), "train_minutes": seconds / 60})
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
