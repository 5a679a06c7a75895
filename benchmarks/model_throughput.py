"""Model throughput on this machine's CPU (or a GPU with --device): megapixels/s and achieved GFLOP/s.

    python benchmarks/model_throughput.py                      # ResNet-50 OS16, 512x512, the full matrix
    python benchmarks/model_throughput.py --backbone resnet18 --repeats 1

FLOPs are counted with torch.utils.flop_counter (2 FLOPs per multiply-add) on the exact passes that are timed, so
GFLOP/s is what the arithmetic really achieved; "of peak" divides it by the matrix-multiply peak of the same
precision measured at the start of the run (core.extraction.devices.matmul_peak_flops), a fraction that means the
same on every CPU. Figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from core.extraction.devices import matmul_peak_flops, native_cpu_bf16
from core.extraction.inference import DEFAULT_SCALES, predict_logits
from core.model import ModelConfig, build_model

VARIANTS = {
    "fp32": (torch.contiguous_format, None),
    "fp32 channels_last": (torch.channels_last, None),
    "bf16 autocast": (torch.contiguous_format, torch.bfloat16),
    "bf16 autocast channels_last": (torch.channels_last, torch.bfloat16),
}


def count_flops(network: torch.nn.Module, images: torch.Tensor, scales: tuple[float, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        predict_logits(network, images, scales)
    return counter.get_total_flops()


def time_passes(network, images, scales, dtype, device: str, repeats: int) -> float:
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        predict_logits(network, images, scales)  # warm-up: allocator, oneDNN primitive cache
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict_logits(network, images, scales)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case; the fastest is reported")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even on a CPU without bf16 arithmetic")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ModelConfig(backbone=args.backbone, output_stride=args.output_stride)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"model: {config.backbone} OS{config.output_stride}, attention {config.attention}, tile "
          f"{args.size}x{args.size}")
    peaks = {torch.float32: matmul_peak_flops(args.device, torch.float32)}
    if native_cpu_bf16() or args.device != "cpu" or args.force_bf16:
        peaks[torch.bfloat16] = matmul_peak_flops(args.device, torch.bfloat16)
    print("matrix-multiply peak (2048x2048, this run): " + ", ".join(
        f"{str(dtype).removeprefix('torch.')} {flops / 1e9:.1f} GFLOP/s" for dtype, flops in peaks.items()))
    header = (f"{'variant':<30}{'batch':>6}{'scales':>8}{'GFLOP/tile':>12}{'s/batch':>10}{'MP/s':>8}{'GFLOP/s':>10}"
              f"{'of peak':>9}")
    print(header)
    print("-" * len(header))
    flops_per_tile: dict[tuple[float, ...], int] = {}
    for variant in args.variants:
        memory_format, dtype = VARIANTS[variant]
        if dtype is torch.bfloat16 and args.device == "cpu" and native_cpu_bf16() is None and not args.force_bf16:
            print(f"{variant:<30}skipped: no amx_bf16 or avx512_bf16 flag (--force-bf16 runs it)")
            continue
        network = build_model(config).eval().to(args.device).to(memory_format=memory_format)
        for batch in args.batches:
            images = torch.randn(batch, 3, args.size, args.size, device=args.device)
            images = images.contiguous(memory_format=memory_format)
            for scales in ((1.0,), DEFAULT_SCALES):
                if scales not in flops_per_tile:
                    flops_per_tile[scales] = count_flops(network, images[:1], scales)
                flops = flops_per_tile[scales] * batch
                seconds = time_passes(network, images, scales, dtype, args.device, args.repeats)
                megapixels = batch * args.size * args.size / 1e6
                peak = peaks[dtype or torch.float32]
                print(f"{variant:<30}{batch:>6}{len(scales):>8}{flops / batch / 1e9:>12.1f}{seconds:>10.2f}"
                      f"{megapixels / seconds:>8.3f}{flops / seconds / 1e9:>10.1f}{flops / seconds / peak:>9.0%}",
                      flush=True)


if __name__ == "__main__":
    main()
