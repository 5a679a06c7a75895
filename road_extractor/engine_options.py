"""The engine's options (defaults, ranges, choices, labels) as the plugin sees them, from `engine_options.json`.

The plugin cannot import the engine (it may run in another Python), so `core/options.py` writes its table into
that file (`python -m core.options --write road_extractor/engine_options.json`; the plugin zip is built with a fresh
one). tests/test_engine_worker.py checks that the file equals the table a running engine reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TABLE: dict[str, Any] = json.loads((Path(__file__).with_name("engine_options.json")).read_text(encoding="utf-8"))
PROTOCOL: int = TABLE["protocol"]


def spec(group: str, name: str) -> dict[str, Any]:
    return TABLE[group][name]


def default(group: str, name: str) -> Any:
    value = TABLE[group][name]["default"]
    return ", ".join(f"{v}" for v in value) if isinstance(value, list) else value


def choices(group: str, name: str) -> tuple[str, ...]:
    return tuple(TABLE[group][name]["choices"])


def names(group: str) -> tuple[str, ...]:
    return tuple(TABLE[group])
