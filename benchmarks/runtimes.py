"""The runtimes side by side on one Massachusetts tile, one scale, the shipped model, in one process:

    python benchmarks/runtimes.py                     # torch fp32, onnxruntime, OpenVINO fp32 (+ int8 with nncf)
    python benchmarks/runtimes.py --compile           # also torch.compile (inductor, CPU)
    python benchmarks/runtimes.py --runtimes torch torch:auto openvino:auto   # NAME[:PRECISION], fp32 by default

Each runtime runs the engine (`extract_roads`, --no-vectorize's path) on the same 1500 px tile at 1 m: its
preparation (export, compile, quantization) timed apart, then `--runs` runs, the fastest kept. Columns: the
network's seconds and the whole run's (the network's share of it), the network's sustained GFLOP/s (FLOPs counted
by torch.utils.flop_counter) and its fraction of the fp32 matrix-multiply peak measured at the start
(core.extraction.devices.matmul_peak_flops), the network's speed against torch fp32's, and the road IoU of the
mask against torch fp32's (the gate of issue 35: >= 0.98).

OpenVINO int8 (with --int8, where nncf is installed): post-training quantization of the OpenVINO graph
(nncf.quantize, default preset) calibrated on crops of other Massachusetts tiles than the one measured.
Whole-process ratios for docs/performance.md are measured apart (`road-extractor extract --runtime ...` timed as
processes); this script's in-process figures say where the time goes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from core.extraction.devices import matmul_peak_flops, native_cpu_bf16
from core.extraction.extract import ExtractParams, extract_roads
from core.extraction.inference import normalize, predict_logits
from core.inputs.raster import ArraySource
from core.inputs.tiling import TileGrid
from core.model.catalog import default_model
from core.model.checkpoint import Architecture, LoadReport, RoadModel, load_model

MASSROADS = Path("../shared/data/massroads/images")
CALIBRATION = ("10978945_15.png", "15628870_15.png", "16228945_15.png", "17428735_15.png")


def read_tile(path: Path, size: int = 1500) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))[:size, :size]


def network_flops(model: RoadModel, width: int, height: int, scales: tuple[float, ...]) -> int:
    """FLOPs of the engine's network over its default tile plan of a width x height raster."""
    from core.model import build_model
    from core.options import InferenceOptions

    options = InferenceOptions()
    with torch.device("meta"):
        network = build_model(model.info.config).eval()
    total = 0
    for row in TileGrid(0, 0, width, height, options.tile, options.overlap).rows():
        for tile in row:
            counter = FlopCounterMode(display=False)
            with counter, torch.inference_mode():
                predict_logits(network, torch.zeros(1, 3, tile.height, tile.width, device="meta"), scales)
            total += counter.get_total_flops()
    return total


def int8_model(model: RoadModel, onnx_path: Path, folder: Path, tiles: Path) -> RoadModel:
    """The OpenVINO graph quantized to int8 by nncf, calibrated on 512 px crops of other tiles."""
    import nncf
    import openvino as ov

    from core.model.openvino_model import OpenVinoNetwork

    crops = []
    for name in CALIBRATION:
        image = read_tile(tiles / name)
        for y, x in ((0, 0), (512, 512), (988, 0), (0, 988)):
            crop = torch.from_numpy(image[y:y + 512, x:x + 512].transpose(2, 0, 1).copy())[None]
            crops.append(normalize(crop, model.info.normalization).numpy())
    graph = ov.Core().read_model(str(onnx_path))
    quantized = nncf.quantize(graph, nncf.Dataset(crops), subset_size=len(crops))
    path = folder / "int8.xml"
    ov.save_model(quantized, str(path))
    return RoadModel(OpenVinoNetwork(path), model.info, LoadReport(str(path), "OpenVINO int8"),
                     Architecture(model.info.config, {}))


def precision_used(result) -> str:
    """What the network computed in, as the run recorded it in its mask's metadata."""
    import json

    with rasterio.open(result.mask) as ds:
        return json.loads(ds.tags().get("ROAD_EXTRACTOR_PARAMS", "{}")).get("precision_used", "?")


def mask_of(result) -> np.ndarray:
    with rasterio.open(result.mask) as ds:
        return ds.read(1) == 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile", type=Path, default=MASSROADS / "17278960_15.png")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime", "openvino"],
                        help="NAME[:PRECISION] each (fp32 by default; auto: bf16 autocast for torch where the CPU "
                             "has it, OpenVINO's own choice); the first is the reference the masks are gated on")
    parser.add_argument("--int8", action="store_true", help="also OpenVINO int8 (nncf post-training quantization)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (inductor)")
    args = parser.parse_args()
    torch.manual_seed(0)
    image = read_tile(args.tile)
    source = ArraySource(image, gsd_m=1.0)
    model = load_model(default_model())
    peak = matmul_peak_flops("cpu", torch.float32)
    bf16 = native_cpu_bf16()
    peak_bf16 = matmul_peak_flops("cpu", torch.bfloat16) if bf16 else None
    flops = network_flops(model, image.shape[1], image.shape[0], (1.0,))
    print(f"{args.tile.name}, {image.shape[1]}x{image.shape[0]} px, one scale, {flops / 1e9:.0f} GFLOP; "
          f"{torch.get_num_threads()} threads; fp32 matrix-multiply peak {peak / 1e9:.1f} GFLOP/s"
          + (f", bf16 {peak_bf16 / 1e9:.1f} GFLOP/s ({bf16})" if peak_bf16 else "") + " (this run)")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        variants: list[tuple[str, RoadModel, str, str]] = []
        for spec in args.runtimes:
            name, _, precision = spec.partition(":")
            variants.append((spec, model, name, precision or "fp32"))
        if args.compile:
            variants.append(("torch.compile", model, "torch", "fp32"))
        if args.int8:
            variants.append(("openvino int8", model, "openvino", "fp32"))
        reference = None
        for label, road_model, runtime, precision in variants:
            started = time.perf_counter()
            if label == "openvino int8":
                from core.model.onnx_cache import cached_onnx

                road_model = int8_model(model, cached_onnx(model), folder, args.tile.parent)
            elif label == "torch.compile":
                compiled = torch.compile(model.network, dynamic=False)
                road_model = RoadModel(compiled, model.info, model.report, model.architecture)
            params = ExtractParams(scales=(1.0,), precision=precision, runtime=runtime, overwrite=True)
            first = extract_roads(source, road_model, folder / "out", params)  # export / compile / warm-up
            prepare = time.perf_counter() - started
            best = min((extract_roads(source, road_model, folder / "out", params) for _ in range(args.runs)),
                       key=lambda r: r.network_seconds)
            mask = mask_of(best)
            if reference is None:
                reference = (mask, best.network_seconds)
            iou = (mask & reference[0]).sum() / max((mask | reference[0]).sum(), 1)
            used = next((n.removeprefix("runtime: ") for n in first.notes if n.startswith("runtime: ")), runtime)
            computed = precision_used(best)
            rows.append((label, prepare, best, iou, reference[1] / best.network_seconds, used, computed))
            print(f"  {label}: done ({used})", flush=True)
    first = variants[0][0]
    print("| runtime | computes in | first run (s, with export/compile) | network s | whole s | network's share | "
          f"GFLOP/s | of its precision's peak | network speed vs {first} | road IoU vs {first} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, prepare, best, iou, speed, _, computed in rows:
        sustained = flops / best.network_seconds
        own_peak = peak_bf16 if computed == "bf16" and peak_bf16 else peak
        print(f"| {label} | {computed} | {prepare:.1f} | {best.network_seconds:.2f} | {best.seconds:.2f} | "
              f"{best.network_seconds / best.seconds:.0%} | {sustained / 1e9:.1f} | {sustained / own_peak:.0%} | "
              f"{speed:.2f}x | {iou:.4f} |")


if __name__ == "__main__":
    main()
