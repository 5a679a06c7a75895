"""Cancelling a run and reporting its progress: the small vocabulary every stage, job and front end shares."""

from __future__ import annotations

import threading
from dataclasses import dataclass


class Cancelled(Exception):
    """The run was cancelled; nothing was written."""


class CancelToken:
    """Set from any thread (a GUI's cancel button, a signal handler); the engine checks it between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class Progress:
    fraction: float
    tiles_done: int
    tiles_total: int
    megapixels_per_s: float
    eta_s: float | None
    stage: str = "inference"
