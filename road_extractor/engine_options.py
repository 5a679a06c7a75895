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


def in_dialog_words(text: str) -> str:
    """An engine message for the dialog: a command-line flag becomes the field's name ("--brightness none" ->
    "Brightness: none") and a command to type ("(record it with road-extractor export ...)") is left out."""
    import re

    labels = {entry["flag"]: entry["label"].split(" (")[0] for group, table in TABLE.items() if group != "protocol"
              for entry in table.values() if entry.get("flag")}
    text = re.sub(r" ?\([^()]*road-extractor [^()]*\)", "", text)

    def field(match: re.Match) -> str:
        label = labels.get(match.group(1))
        if label is None:
            return match.group(0)
        return f"'{label}' set to {match.group(2).strip()}" if match.group(2) else f"'{label}'"

    return re.sub(r"(--[a-z][a-z0-9-]*)( [a-z0-9.]+)?", field, text)
