"""The engine as a worker process: `python -m core.frontends.worker`, spoken to over a small, versioned protocol.

The QGIS plugin never imports torch. It starts this process (in whatever Python environment has the engine's
dependencies) and exchanges JSON objects, one per line: requests on stdin, events on stdout. A CUDA error, an
out-of-memory kill or a crash ends this process, never QGIS.

Protocol version 1:

    worker -> client   {"type": "hello", "protocol": 1, "engine_version": "...", "python": "...", "torch": "..."}
    client -> worker   {"type": "request", "id": "7", "op": OP, "args": {...}}
    client -> worker   {"type": "cancel", "id": "7"}        stops request 7 between tiles; nothing is left written
    client -> worker   {"type": "shutdown"}
    worker -> client   {"type": "progress", "id": "7", "fraction": 0.4, "stage": "inference", "message": "..."}
    worker -> client   {"type": "log", "id": "7", "message": "..."}
    worker -> client   {"type": "result", "id": "7", "result": {...}}
    worker -> client   {"type": "error", "id": "7", "kind": "input" | "cancelled" | "internal", "message": "..."}

OP is one of `ping`, `options` (every option's default, range and wording: `core.options`), `devices`,
`describe_model`, `extract`, `update_map`, `vectorize`, `evaluate`, and those a worker above the engine adds
(`python -m training.worker`, the one the plugin starts, adds `finetune`). One request runs at a time;
stdin is read while it runs, so a cancel arrives at once. Nothing but protocol lines goes to stdout: anything a
library prints goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import __version__
from core.errors import InputError
from core.options import PROTOCOL, option_table


class _Channel:
    """Protocol lines to the real stdout, whatever the rest of the process does with sys.stdout."""

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
        os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints (C libraries too) go to stderr
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, default=str)
        with self._lock:
            self._out.write(line + "\n")
            self._out.flush()


def describe_model(path: str | None, gsd_m: float | None = None) -> dict[str, Any]:
    """What a model file says about itself and whether it is usable, without running it. A models folder (the
    shipped one when `path` is empty): the model it holds for imagery of `gsd_m` (its first where None), and
    `catalog`, what each of its models serves."""
    from core.model.catalog import SHIPPED_MODELS, open_model, read_catalog, resolve_model

    resolved = resolve_model(path, gsd_m)
    model = open_model(resolved)
    info = model.info
    folder = SHIPPED_MODELS if not path else Path(path) if Path(path).is_dir() else None
    catalog = read_catalog(folder) if folder is not None else []
    return {"path": str(resolved), "gsd_m": info.gsd_m, "classes": list(info.class_names),
            "bands": list(info.bands), "architecture": info.config.to_dict(), "metrics": info.metrics,
            "provenance": info.provenance, "file_kind": model.report.file_kind,
            "size_mb": os.path.getsize(resolved) / 1e6,
            "catalog": [{"file": e.path.name, "serves": e.band_words(), "covers": e.covers} for e in catalog]
            if len(catalog) > 1 else []}


def devices(requested: str = "auto", precision: str = "auto") -> dict[str, Any]:
    """The devices torch sees, and what `requested` and `precision` really resolve to (checked by running)."""
    import torch

    from core.extraction.devices import resolve_device, resolve_precision

    found = [{"name": "cpu", "label": f"CPU ({os.cpu_count()} cores)"}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            found.append({"name": f"cuda:{index}",
                          "label": f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"})
    device = resolve_device(requested)
    chosen = resolve_precision(precision, device)
    check = (torch.ones(64, 64, device=device) @ torch.ones(64, 64, device=device)).sum().item()
    used = next((d for d in found if d["name"] == str(device) or (device.type == "cuda" and d["name"] ==
                                                                 f"cuda:{device.index or 0}")), found[0])
    return {"devices": found, "requested": requested, "uses": used["name"], "uses_label": used["label"],
            "check": check == 64 * 64 * 64, "torch": torch.__version__, "cuda": torch.version.cuda,
            "precision": chosen.name, "precision_why": chosen.why}


# An operation beyond the engine's own: (args, emit, cancel) -> result. The engine never imports what lives
# above it (the training package); a worker there passes its operations to `serve`.
Operation = Callable[[dict[str, Any], Callable[[dict[str, Any]], None], Any], dict[str, Any]]


def _run(op: str, args: dict[str, Any], emit, cancel, operations: dict[str, Operation]) -> dict[str, Any]:
    from core.frontends.jobs import EvaluateJob, ExtractJob, VectorizeJob, run_evaluate, run_extract, run_vectorize

    if op == "ping":
        return {"pong": True}
    if op == "options":
        return option_table()
    if op == "devices":
        return devices(args.get("device", "auto"), args.get("precision", "auto"))
    if op == "describe_model":
        return describe_model(args.get("path"), args.get("gsd_m"))
    def progress(p) -> None:
        eta = f", about {p.eta_s:.0f} s left" if p.eta_s else ""
        emit({"type": "progress", "fraction": p.fraction, "stage": p.stage,
              "message": f"{p.stage}: {p.tiles_done}/{p.tiles_total} tiles, {p.megapixels_per_s:.2f} MP/s{eta}"})

    def log(message: str) -> None:
        emit({"type": "log", "message": message})

    if op == "extract":
        return run_extract(ExtractJob.from_dict(args), progress=progress, cancel=cancel, log=log)
    if op == "update_map":
        from core.frontends.cli import format_map_update
        from core.frontends.jobs import UpdateMapJob, run_update_map

        result = run_update_map(UpdateMapJob.from_dict(args), progress=progress, cancel=cancel, log=log)
        return {**result, "text": format_map_update(result)}
    if op == "vectorize":
        return run_vectorize(VectorizeJob.from_dict(args), cancel=cancel)
    if op == "evaluate":
        return run_evaluate(EvaluateJob.from_dict(args))
    if op in operations:  # registered by a worker above the engine (training.worker: finetune)
        return operations[op](args, emit, cancel)
    known = ["ping", "options", "devices", "describe_model", "extract", "update_map", "vectorize", "evaluate",
             *operations]
    raise InputError(f"unknown operation {op!r}; this engine (protocol {PROTOCOL}) knows {', '.join(known)}")


def serve(stdin=None, operations: dict[str, Operation] | None = None) -> int:
    stdin = stdin or sys.stdin
    operations = operations or {}
    channel = _Channel()
    from core.progress import Cancelled, CancelToken

    channel.send({"type": "hello", "protocol": PROTOCOL, "engine_version": __version__,
                  "python": sys.version.split()[0], "executable": sys.executable,
                  "torch": _torch_version()})
    running: dict[str, tuple[threading.Thread, CancelToken]] = {}

    def work(request_id: str, op: str, args: dict[str, Any], cancel: CancelToken) -> None:
        def emit(message: dict[str, Any]) -> None:
            channel.send({**message, "id": request_id})

        try:
            final = {"type": "result", "result": _run(op, args, emit, cancel, operations)}
        except Cancelled:
            final = {"type": "error", "kind": "cancelled", "message": "cancelled; nothing was written"}
        except (InputError, FileNotFoundError) as exc:
            final = {"type": "error", "kind": "input", "message": str(exc)}
        except Exception as exc:  # reported to the client, which shows it; the worker stays up
            final = {"type": "error", "kind": "internal", "message": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        running.pop(request_id, None)  # before answering: the client may send its next request at once
        emit(final)

    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            channel.send({"type": "error", "id": None, "kind": "input", "message": f"not JSON: {line[:80]}"})
            continue
        kind = message.get("type")
        if kind == "shutdown":
            break
        if kind == "cancel":
            entry = running.get(str(message.get("id")))
            if entry:
                entry[1].cancel()
            continue
        if kind != "request":
            channel.send({"type": "error", "id": message.get("id"), "kind": "input",
                          "message": f"unknown message type {kind!r}"})
            continue
        request_id = str(message.get("id"))
        if running:
            channel.send({"type": "error", "id": request_id, "kind": "input",
                          "message": "the engine is busy with another request; wait for it or cancel it"})
            continue
        cancel = CancelToken()
        thread = threading.Thread(target=work, args=(request_id, message.get("op"), message.get("args") or {},
                                                     cancel), daemon=True)
        running[request_id] = (thread, cancel)
        thread.start()
    for thread, cancel in list(running.values()):  # stdin closed or shutdown: stop cleanly
        cancel.cancel()
        thread.join()
    return 0


def _torch_version() -> str | None:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return None


if __name__ == "__main__":
    sys.exit(serve())
