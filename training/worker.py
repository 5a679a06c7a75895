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


OPERATIONS = {"finetune": finetune_operation}

if __name__ == "__main__":
    sys.exit(serve(operations=OPERATIONS))
