"""The engine's worker with fine-tuning: `python -m training.worker`, the process the QGIS plugin starts.

The engine (`core`) never imports the training package; this worker lives above both and adds the `finetune`
operation to the engine's own (`core.frontends.worker`, whose docstring has the protocol).
"""

from __future__ import annotations

import sys
from typing import Any

from core.errors import InputError
from core.frontends.worker import serve
from core.progress import Cancelled


def finetune_operation(args: dict[str, Any], emit, cancel) -> dict[str, Any]:
    """`python -m training finetune` inside the engine: progress as steps, the latest check figure and time left."""
    from dataclasses import fields

    from core.errors import unknown_fields

    from .finetune import FinetuneSpec, finetune

    unknown = unknown_fields(FinetuneSpec, args)
    if unknown:
        raise InputError(f"unknown fine-tuning option(s) {', '.join(unknown)}")
    spec = FinetuneSpec(**{f.name: args[f.name] for f in fields(FinetuneSpec) if f.name in args})

    def progress(p) -> None:
        check = f", check road IoU {p.check_road_iou:.3f}" if p.check_road_iou is not None else ""
        emit({"type": "progress", "fraction": min(1.0, p.elapsed_s / p.budget_s), "stage": "fine-tuning",
              "message": f"step {p.step}, loss {p.loss:.3f}{check}, about {max(0, p.budget_s - p.elapsed_s):.0f} s "
                         f"left"})

    try:
        return finetune(spec, log=lambda message: emit({"type": "log", "message": message}), progress=progress,
                        cancelled=lambda: cancel.cancelled)
    except KeyboardInterrupt:
        raise Cancelled() from None


def review_operation(args: dict[str, Any], emit, cancel) -> dict[str, Any]:
    """`python -m training review` inside the engine: one round of the update-map review loop."""
    from core.frontends.cli import format_map_update

    from .review import teach_from_review

    known = {"review", "minutes", "imagery", "layer", "init", "out", "overwrite", "inference"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise InputError(f"unknown review option(s) {', '.join(unknown)}")

    def progress(p) -> None:
        emit({"type": "progress", "fraction": min(1.0, p.elapsed_s / p.budget_s), "stage": "teaching from the review",
              "message": f"step {p.step}, loss {p.loss:.3f}, about {max(0, p.budget_s - p.elapsed_s):.0f} s left"})

    try:
        result = teach_from_review(args["review"], float(args.get("minutes", 5.0)), imagery=args.get("imagery", ""),
                                   layer=args.get("layer", ""), init=args.get("init", ""), out=args.get("out", ""),
                                   overwrite=bool(args.get("overwrite")), inference=args.get("inference"),
                                   log=lambda message: emit({"type": "log", "message": message}), progress=progress,
                                   cancelled=lambda: cancel.cancelled)
    except KeyboardInterrupt:
        raise Cancelled() from None
    return {**{k: v for k, v in result.items() if k != "taught"}, "text": format_map_update(result),
            "before": result["taught"]["before"], "after": result["taught"]["after"]}


OPERATIONS = {"finetune": finetune_operation, "review": review_operation}

if __name__ == "__main__":
    sys.exit(serve(operations=OPERATIONS))
