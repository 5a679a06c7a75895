"""Where the network runs and in which precision: one decision for extraction, training and benchmarks.

`auto` precision is bf16 autocast wherever the hardware has native bf16 arithmetic: CUDA GPUs that support it,
and CPUs whose flags show AMX-BF16 or AVX-512 BF16 (on 2-core CPUs: an Intel Xeon with AMX
trains 3.1x and infers 4x faster under bf16 + channels_last, as reported in issue 13; an AMD EPYC with AVX-512
BF16 trained 2.1x and inferred 1.9x faster, measured here). A CPU without those flags emulates bf16 and runs it
many times slower than fp32, so `auto` keeps fp32 there. The decision reads the CPU's flags, never a timing, so
it is the same on every run of a machine.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from core.errors import InputError
from core.options import PRECISIONS

NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


class DeviceError(InputError):
    """A device or precision the machine cannot give; the message names the problem and the fix."""


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux, or a sandbox)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_cpu_bf16() -> str | None:
    """The flag that shows native bf16 arithmetic on this CPU (amx_bf16 or avx512_bf16), or None."""
    flags = cpu_flags()
    return next((flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags), None)


def resolve_device(spec: str) -> torch.device:
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec}: torch sees no CUDA GPU (this torch {torch.__version__} "
                              f"{'has no CUDA support' if torch.version.cuda is None else 'finds no driver or GPU'});"
                              f" use device cpu or auto")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec}: there are {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
        return torch.device("cuda", index)
    raise DeviceError(f"device {spec!r} is not known; use auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class Precision:
    """What a run computes in: `autocast` is the dtype for torch.autocast, None for plain fp32; `why` is the
    sentence the log and the output's metadata carry."""

    name: str  # fp32, bf16 or fp16
    autocast: torch.dtype | None
    why: str

    @property
    def lightning(self) -> str:
        """Lightning's name for it (Trainer(precision=...))."""
        return {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}[self.name]


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """auto | fp32 | bf16 | fp16 on `device` -> the Precision to run with, or DeviceError naming the fix."""
    if precision not in PRECISIONS:
        raise DeviceError(f"precision {precision!r} is not known; use {', '.join(PRECISIONS)}")
    fp32 = Precision("fp32", None, "fp32")
    if device.type == "cuda":
        if precision == "fp32":
            return fp32
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
            return Precision(precision, _DTYPES[precision], f"{precision} autocast (auto: this GPU's fastest)")
        return Precision(precision, _DTYPES[precision], f"{precision} autocast (asked for)")
    flag = native_cpu_bf16()
    if precision == "fp16":
        raise DeviceError("precision fp16 runs on a GPU only; on the CPU use bf16, fp32 or auto")
    if precision == "bf16":
        if flag is None:
            raise DeviceError("precision bf16: this CPU has no native bf16 arithmetic (no amx_bf16 or avx512_bf16 "
                              "flag), where it runs many times slower than fp32; use fp32 or auto")
        return Precision("bf16", torch.bfloat16, f"bf16 autocast (asked for; the CPU has {flag})")
    if precision == "auto" and flag is not None:
        return Precision("bf16", torch.bfloat16, f"bf16 autocast (auto: the CPU has {flag})")
    if precision == "auto":
        return Precision("fp32", None, "fp32 (auto: the CPU has no native bf16 arithmetic)")
    return fp32


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_peak_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *, size: int = 2048,
                      seconds: float = 1.0) -> float:
    """The machine's practical peak for `dtype` on `device`, in FLOP/s: the fastest of repeated square matrix
    multiplies (size x size, 2 FLOPs per multiply-add) over about `seconds`, with torch's threads as they are.

    A network's sustained FLOP/s divided by this is the fraction of the peak it reaches, a figure that means the
    same on any CPU or GPU (the benchmarks print it). Measured, not computed from a datasheet: what the BLAS
    (oneDNN, MKL, cuBLAS) reaches with this many threads, in the same run as the network, so a busy machine lowers
    both alike. On a CPU without native bf16 the bf16 peak is the emulated one (many times below fp32)."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        torch.mm(a, b)  # warm-up: the BLAS's first call allocates and picks its kernels
        sync()
        best = math.inf
        deadline = time.perf_counter() + seconds
        runs = 0
        while runs < 3 or time.perf_counter() < deadline:
            started = time.perf_counter()
            torch.mm(a, b)
            sync()
            best = min(best, time.perf_counter() - started)
            runs += 1
    return 2 * size**3 / best
