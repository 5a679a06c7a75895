"""The model card's learning curve: what more training steps buy, at home and abroad.

    .venv/bin/python docs/learning_curve.py \
        --run "version 2's run=/work/runs/massroads-r18-v2@1400" \
        --run "inverted brightness=/work/runs/massroads-r18-inv@2900" ... \
        --point "version 2=/work/runs/merged/shipped.json@2900" ... \
        --out docs/learning-curve.png

`--run LABEL=RUN_FOLDER@STEP`: a training run whose first step is the STEPth since training began from scratch (its
`--init` chain: version 1 took 1400 steps, version 2 is step 2900); its validation road IoU per epoch comes from
`RUN/logs/metrics.csv`. With `--lines FOLDER` (repeatable, as `training evaluate --lines`), every epoch snapshot the
run kept (`RUN/checkpoints/epoch-NN.ckpt`, `fit --epoch-snapshots 1`) is scored on those references too, in fp32 at
one scale from `--line-shifts` origins, as `evaluate` scores them; the figures are kept in `RUN/line-scores/` and
reused while the line metric, the origins and the folders are the same. `--point LABEL=EVAL.json@STEP`: one model's
`training evaluate --json` figures (held-out road IoU where present; Vegas completeness and correctness within 5 m,
one scale, the mean and spread over the origins it was scored from). Steps are batches of 8 crops of 256 px.
Writes the figure and prints its tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
HOME_TARGET, VEGAS_TARGET = 0.50, 0.30  # issue 13's targets: held-out road IoU, Vegas completeness


@dataclass
class Curve:
    label: str
    epochs: list[int]
    steps: list[int]
    road_iou: list[float]
    # {reference set: [(step, completeness, completeness_sd, correctness)]} of the run's epoch snapshots
    lines: dict[str, list[tuple[int, float, float, float]]] = field(default_factory=dict)


@dataclass
class Point:
    label: str
    step: int
    road_iou: float | None
    completeness: float
    completeness_sd: float
    correctness: float


def _labelled(text: str) -> tuple[str, Path, int]:
    label, _, rest = text.partition("=")
    path, _, step = rest.rpartition("@")
    if not label or not path or not step.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: give LABEL=PATH@STEP")
    return label, Path(path), int(step)


def read_curve(label: str, run: Path, start: int) -> Curve:
    """Validation road IoU after each epoch of a run, at the step count since training began from scratch."""
    by_epoch: dict[int, tuple[int, float]] = {}
    with open(run / "logs" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/road_iou"):
                # The step logged with validation is the epoch's last; a resumed epoch logs again: keep the latest.
                by_epoch[int(row["epoch"])] = (start + int(row["step"]) + 1, float(row["val/road_iou"]))
    epochs = sorted(by_epoch)
    return Curve(label, epochs, [by_epoch[e][0] for e in epochs], [by_epoch[e][1] for e in epochs])


def score_snapshots(curve: Curve, run: Path, folders: list[str], shifts: int) -> None:
    """Each epoch snapshot of `run` on the reference lines in `folders` (cached in RUN/line-scores/), at the step
    its epoch's validation was logged at."""
    from core.metrics import LINE_METRIC_VERSION
    from training.evaluate import Inference, evaluate_line_references, line_references
    from training.fit import road_model

    pairs = line_references(folders)
    inference = Inference(scales=(1.0,), tile=512, overlap=64, precision="fp32")
    cache = run / "line-scores"
    cache.mkdir(exist_ok=True)
    step_of = dict(zip(curve.epochs, curve.steps, strict=True))
    key = {"metric_version": LINE_METRIC_VERSION, "shifts": shifts, "lines": [str(Path(f).resolve()) for f in folders]}
    for snapshot in sorted((run / "checkpoints").glob("epoch-*.ckpt")):
        scored = cache / f"{snapshot.stem}.json"
        figures = json.loads(scored.read_text()) if scored.exists() else {}
        if figures.get("key") != key:
            rows = evaluate_line_references(road_model(snapshot), pairs, [inference], 5.0, shifts=shifts)[
                inference.label]["rasters"]
            figures = {"key": key, "rows": rows}
            scored.write_text(json.dumps(figures))
        by_set: dict[str, list[dict]] = {}
        for row in figures["rows"]:  # one row per reference set and origin
            by_set.setdefault(row["raster"], []).append(row)
        step = step_of[int(snapshot.stem.split("-")[1])]
        for name, rows in by_set.items():
            completeness = [r["completeness"] for r in rows]
            curve.lines.setdefault(name, []).append(
                (step, float(np.mean(completeness)), float(np.std(completeness, ddof=1)) if len(rows) > 1 else 0.0,
                 float(np.mean([r["correctness"] for r in rows]))))
        print(f"{curve.label:<34} {snapshot.stem}  " + "  ".join(
            f"{name}: {v[-1][1]:.3f} / {v[-1][3]:.3f}" for name, v in curve.lines.items()), flush=True)


def read_point(label: str, evaluation: Path, step: int) -> Point:
    figures = json.loads(evaluation.read_text())
    lines = figures["lines"]["scales 1.0"]
    if lines.get("metric_version", 1) < 2:
        raise SystemExit(f"{evaluation}: Vegas figures of the old line metric; score it again (model card)")
    home = figures.get("scales 1.0", {}).get("road_iou")
    return Point(label, step, home, lines["completeness"], lines.get("completeness_sd", 0.0), lines["correctness"])


def plot(curves: list[Curve], points: list[Point], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (home, vegas) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True, height_ratios=(3, 2))
    for curve in curves:
        drawn = home.plot(curve.steps, curve.road_iou, marker=".", linewidth=1, label=curve.label)[0]
        if curve.lines:  # the first reference set: the whole raster
            steps, completeness, _, _ = zip(*next(iter(curve.lines.values())), strict=True)
            vegas.plot(steps, completeness, linewidth=1, alpha=0.6, color=drawn.get_color())
    for point in points:
        if point.road_iou is not None:
            home.scatter([point.step], [point.road_iou], marker="*", s=90, color="black", zorder=3)
            home.annotate(point.label, (point.step, point.road_iou), textcoords="offset points", xytext=(4, -10),
                          fontsize=7)
        vegas.errorbar([point.step], [point.completeness], yerr=[point.completeness_sd], fmt="o", capsize=3,
                       color="black")
        vegas.annotate(point.label, (point.step, point.completeness), textcoords="offset points", xytext=(5, 3),
                       fontsize=7)
    home.axhline(HOME_TARGET, color="grey", linestyle="--", linewidth=1)
    home.text(0.01, HOME_TARGET + 0.004, "target 0.50", fontsize=8, color="grey", transform=home.get_yaxis_transform())
    home.set_ylabel("held-out road IoU (6 tiles, one scale)")
    home.legend(fontsize=7, loc="lower right")
    home.grid(alpha=0.3)
    vegas.axhline(VEGAS_TARGET, color="grey", linestyle="--", linewidth=1)
    vegas.text(0.01, VEGAS_TARGET - 0.025, "target 0.30 (at correctness 0.50)", fontsize=8, color="grey",
               transform=vegas.get_yaxis_transform())
    vegas.set_ylim(0, 0.35)
    vegas.set_ylabel("Vegas completeness (5 m, one scale)\nmean over origins (+- sd)")
    vegas.set_xlabel("training steps since scratch (8 crops of 256 px each)")
    vegas.grid(alpha=0.3)
    fig.suptitle("Massachusetts training: what more steps buy at home and in Las Vegas", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=_labelled, action="append", default=[], metavar="LABEL=RUN@STEP")
    parser.add_argument("--point", type=_labelled, action="append", default=[], metavar="LABEL=EVAL.json@STEP")
    parser.add_argument("--lines", action="append", default=[], metavar="FOLDER",
                        help="also score every epoch snapshot of each run on these reference lines")
    parser.add_argument("--line-shifts", type=int, default=8, metavar="N")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "learning-curve.png")
    args = parser.parse_args()
    curves = [read_curve(*run) for run in args.run]
    if args.lines:
        for curve, (_, folder, _) in zip(curves, args.run, strict=True):
            score_snapshots(curve, folder, args.lines, args.line_shifts)
    points = [read_point(*point) for point in args.point]
    for curve in curves:
        best = max(range(len(curve.road_iou)), key=curve.road_iou.__getitem__)
        print(f"{curve.label:<34} steps {curve.steps[0]}-{curve.steps[-1]}  road IoU {curve.road_iou[0]:.3f} -> "
              f"{curve.road_iou[-1]:.3f} (best {curve.road_iou[best]:.3f} at step {curve.steps[best]})")
    print("| model | step | held-out road IoU | Vegas completeness | Vegas correctness |\n|---|---:|---:|---:|---:|")
    for p in sorted(points, key=lambda p: p.step):
        home = f"{p.road_iou:.3f}" if p.road_iou is not None else "-"
        print(f"| {p.label} | {p.step} | {home} | {p.completeness:.3f} +- {p.completeness_sd:.3f} | "
              f"{p.correctness:.3f} |")
    plot(curves, points, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
