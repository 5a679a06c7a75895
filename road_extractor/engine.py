"""The plugin's side of the engine worker protocol (see `core/frontends/worker.py`). No torch here, and no Qt
either, so the dialog, the QgsTask and the Processing algorithms share it and it can be tested on its own.

The engine runs as `PYTHON -m training.worker` (the engine's worker, `core.frontends.worker`, with fine-tuning)
where PYTHON is an environment with the engine's dependencies: the one set in the plugin's settings, else the
plugin-managed virtual environment, else the Python of a development checkout's `.venv`. Where none works,
`EngineMissing` says so with the command that creates one.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engine_options import PROTOCOL

PLUGIN_DIR = Path(__file__).resolve().parent
WORKER_MODULE = "training.worker"  # the engine's worker with fine-tuning (the engine itself never imports training)
WORKER_FILE = Path(*WORKER_MODULE.split(".")).with_suffix(".py")
# Where the engine's source lives: beside the plugin in a checkout, inside it in an installed plugin zip.
ENGINE_SOURCE_CANDIDATES = (PLUGIN_DIR / "engine", PLUGIN_DIR.parent)
# onnx, onnxscript, onnxruntime (about 40 MB together): the runtime `auto` takes on CPUs without native bf16,
# 1.35x torch fp32 there (docs/performance.md, "Runtimes"); without them the engine runs torch.
ENGINE_REQUIREMENTS = ("torch", "numpy<2", "rasterio", "affine<3", "shapely>=2", "pyogrio", "networkx", "scipy",
                       "scikit-image", "opencv-python-headless", "tqdm", "pyyaml", "onnx", "onnxscript",
                       "onnxruntime")


class EngineError(Exception):
    """The engine refused or failed a request; `kind` is "input", "cancelled", "internal" or "process"."""

    def __init__(self, message: str, kind: str = "internal", details: str = "") -> None:
        super().__init__(message)
        self.kind, self.details = kind, details


class EngineMissing(EngineError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "missing")


def engine_source() -> Path:
    for candidate in ENGINE_SOURCE_CANDIDATES:
        if (candidate / WORKER_FILE).exists():
            return candidate
    raise EngineMissing(f"the engine's source (core/ and training/) is not in {PLUGIN_DIR}; reinstall the plugin")


def managed_environment(profile_dir: str | Path) -> Path:
    """The plugin-managed virtual environment, inside the QGIS profile."""
    return Path(profile_dir) / "road_extractor" / "engine-venv"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# PyPI's torch for Linux carries CUDA and its libraries (6.0 GB installed, measured); PyTorch's own index has the
# CPU-only build (torch 754 MB + the other requirements 420 MB: about 1.2 GB, measured). Elsewhere PyPI's torch is
# the CPU build (Windows) or the CPU + Apple GPU build (macOS) already.
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_BUILDS = {"cpu": "CPU only (about 1.2 GB)", "cuda": "NVIDIA GPU, CUDA (about 6 GB)"}


def torch_builds(platform: str = sys.platform) -> list[str]:
    """The PyTorch builds set-up can install here: a CUDA one only where PyPI's default is one (Linux)."""
    return ["cpu", "cuda"] if platform.startswith("linux") else ["cpu"]


def has_nvidia_driver() -> bool:
    """Whether an NVIDIA driver is installed: the CUDA build is worth its 6 GB only then."""
    return Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi") is not None


def default_torch_build() -> str:
    return "cuda" if "cuda" in torch_builds() and has_nvidia_driver() else "cpu"


def install_commands(profile_dir: str | Path, base_python: str = "python3", torch_build: str = "cpu",
                     platform: str = sys.platform) -> list[list[str]]:
    """What creates the managed environment: shown to the user, and exactly what the plugin runs when asked to."""
    venv = managed_environment(profile_dir)
    python = str(_venv_python(venv))
    commands = [[base_python, "-m", "venv", str(venv)]]
    if torch_build == "cpu" and platform.startswith("linux"):
        commands.append([python, "-m", "pip", "install", "torch", "--index-url", CPU_TORCH_INDEX])
    # torch is listed again: already satisfied after the line above, PyPI's build where that line is not run.
    commands.append([python, "-m", "pip", "install", *ENGINE_REQUIREMENTS])
    return commands


def candidate_pythons(configured: str | None, profile_dir: str | Path | None, checkout: bool = True) -> list[Path]:
    found = []
    if configured:
        found.append(Path(configured))
    if profile_dir:
        found.append(_venv_python(managed_environment(profile_dir)))
    if os.environ.get("ROAD_EXTRACTOR_PYTHON"):
        found.append(Path(os.environ["ROAD_EXTRACTOR_PYTHON"]))
    if checkout:
        found.append(_venv_python(PLUGIN_DIR.parent / ".venv"))  # a development checkout
    return found


def find_engine_python(configured: str | None = None, profile_dir: str | Path | None = None,
                       checkout: bool = True) -> Path:
    """The first candidate Python that exists; `EngineMissing` (with the command that fixes it) otherwise."""
    if configured and not Path(configured).exists():
        raise EngineMissing(f"the engine Python set in the plugin's settings, {configured}, does not exist; correct "
                            f"it or clear it to use the managed environment")
    for python in candidate_pythons(configured, profile_dir, checkout):
        if python.exists():
            return python
    commands = "\n".join(" ".join(c) for c in install_commands(profile_dir or "~/.road_extractor"))
    raise EngineMissing("no Python environment with the road extraction engine was found; create one with "
                        "'Set up engine…' in the Extract roads dialog, choose an existing one in its Engine field, "
                        "or run:\n" + commands)


class EngineClient:
    """One worker process; `request` runs an operation and streams its progress. Thread-safe for one caller."""

    def __init__(self, python: str | Path, source: str | Path | None = None, start_timeout_s: float = 120) -> None:
        self.python, self.source = Path(python), Path(source) if source else engine_source()
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self.hello: dict[str, Any] = {}
        self.start_seconds: float | None = None  # how long the last start took, to its hello (torch imported)

    # -------------------------------------------------------------------------------------------- process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> dict[str, Any]:
        if self.running:
            return self.hello
        if not self.python.exists():
            raise EngineMissing(f"the engine's Python {self.python} does not exist; set it in the plugin's "
                                f"settings or create the managed environment")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(self.source),
                                                                           os.environ.get("PYTHONPATH")]))}
        env.pop("PYTHONHOME", None)  # QGIS's own Python home must not leak into another interpreter
        env.setdefault("PYTHONUNBUFFERED", "1")
        flags = subprocess.CREATE_NO_WINDOW if os.name == "nt" else 0
        started = time.monotonic()
        self._process = subprocess.Popen([str(self.python), "-m", WORKER_MODULE], cwd=str(self.source),
                                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True, encoding="utf-8", bufsize=1, creationflags=flags)
        threading.Thread(target=self._read, args=(self._process,), daemon=True).start()
        hello = self._next(self.start_timeout_s)
        if hello is None or hello.get("type") != "hello":
            raise EngineError(f"the engine did not start with {self.python}: {self._stderr_tail()}", "process")
        if hello.get("protocol") != PROTOCOL:
            self.close()
            raise EngineError(f"the engine speaks protocol {hello.get('protocol')} and this plugin {PROTOCOL}; "
                              f"update the plugin and the engine to the same release", "process")
        self.hello = hello
        self.start_seconds = time.monotonic() - started
        return hello

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                self._lines.put(json.loads(line))
            except json.JSONDecodeError:
                continue
        self._lines.put(None)  # end of stream: the process has gone

    def _next(self, timeout: float, on_tick: Callable[[], None] | None = None):
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._lines.get(timeout=0.1)
            except queue.Empty:
                if on_tick is not None:
                    on_tick()
                if time.monotonic() > deadline:
                    raise EngineError(f"the engine did not answer within {timeout:.0f} s", "process") from None

    def _stderr_tail(self, lines: int = 8) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().strip().splitlines()
        return "\n".join(text[-lines:]) if text else "(no output)"

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.stdin.write(json.dumps({"type": "shutdown"}) + "\n")
                process.stdin.flush()
                process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()

    def __enter__(self) -> EngineClient:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- requests

    def request(self, op: str, args: dict[str, Any] | None = None, *,
                on_progress: Callable[[float, str], None] | None = None,
                on_log: Callable[[str], None] | None = None,
                is_cancelled: Callable[[], bool] | None = None, timeout_s: float = 7 * 24 * 3600) -> dict:
        """Runs `op` and returns its result; raises EngineError with the engine's one-sentence message."""
        self.start()
        request_id = str(next(self._ids))
        self._send({"type": "request", "id": request_id, "op": op, "args": args or {}})
        cancel_sent = False

        def check_cancel() -> None:
            nonlocal cancel_sent
            if is_cancelled is not None and not cancel_sent and is_cancelled():
                self._send({"type": "cancel", "id": request_id})
                cancel_sent = True

        while True:
            message = self._next(timeout_s, check_cancel)
            if message is None:
                code = self._process.wait() if self._process else None
                self._process = None
                raise EngineError(f"the engine process stopped (exit code {code}) during '{op}': "
                                  f"{self._stderr_tail()}", "process")
            if message.get("id") != request_id:
                continue
            kind = message.get("type")
            if kind == "progress" and on_progress is not None:
                on_progress(float(message.get("fraction", 0)), message.get("message", ""))
            elif kind == "log" and on_log is not None:
                on_log(message.get("message", ""))
            elif kind == "result":
                return message.get("result", {})
            elif kind == "error":
                raise EngineError(message.get("message", "failed"), message.get("kind", "internal"),
                                  message.get("traceback", ""))
            check_cancel()

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except (OSError, AttributeError) as exc:
            raise EngineError(f"the engine process is not running ({exc}): {self._stderr_tail()}", "process") \
                from None

