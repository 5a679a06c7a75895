"""YAML files people write by hand (run configurations, data descriptions), read with one-line refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: Path, what: str, fix: str, error: type[Exception]) -> Any:
    """The file's content (None when empty); `error` naming `what` and `fix` where it cannot be read or parsed."""
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise error(f"cannot read {what} ({exc.strerror}); {fix}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise error(f"{what} is not valid YAML{at}; {fix}") from None
