"""The engine against the seed's own tile loop, as whole processes (imports and model loading included).

    python benchmarks/extract_vs_seed_loop.py --tile-png ../shared/data/massroads/images/10078735_15.png

The seed's way: the image cut into 500 px pieces edge to edge, each scale resized from the piece, logits summed,
argmax, nothing written (`seed_loop` below, run as its own process). The engine: `road-extractor extract
--no-vectorize` (and once with vectorizing), fp32, and bf16 where the CPU computes it natively, in each runtime
asked for (--runtimes: torch, and openvino where it is installed). Inputs: a 1500 px Massachusetts tile written as
a GeoTIFF (1 m), and a 6000 px raster made of 16 such tiles (or of generated suburbs where the data is absent).
Two runs each; the table shows both. The shipped model throughout.

"of peak": the network's sustained FLOP/s in the faster run (FLOPs counted by torch.utils.flop_counter over the
run's tiles and scales, divided by the seconds the engine reports its network ran) against the matrix-multiply
peak of that precision measured at the start of this run (core.extraction.devices.matmul_peak_flops).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin
from torch.utils.flop_counter import FlopCounterMode

from core.extraction.devices import matmul_peak_flops, native_cpu_bf16
from core.extraction.inference import predict_logits
from core.inputs.tiling import TileGrid
from core.model import build_model
from core.model.catalog import default_model
from core.model.checkpoint import load_model
from core.model.openvino_model import openvino_version
from core.options import InferenceOptions

SEED_LOOP = r'''
import sys, numpy as np, torch, rasterio
from torch.nn import functional as F
from core.model.checkpoint import load_model
from core.extraction.inference import normalize
path, scales = sys.argv[1], [float(s) for s in sys.argv[2].split(",")]
model = load_model(sys.argv[3])
torch.set_grad_enabled(False)
with rasterio.open(path) as ds:
    image = ds.read((1, 2, 3))
piece = 500
height, width = image.shape[1:]
roads = 0
for y in range(0, height, piece):
    for x in range(0, width, piece):
        tile = torch.from_numpy(image[:, y:y + piece, x:x + piece].copy())[None]
        x0 = normalize(tile, model.info.normalization)
        h, w = x0.shape[2:]
        logits = 0
        for scale in scales:
            scaled = F.interpolate(x0, size=(int(h * scale), int(w * scale)), mode="bilinear", align_corners=True)
            out = model.network(scaled)
            logits = logits + F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        roads += int(logits.argmax(1).sum())
print(roads)
'''


def write_inputs(folder: Path, tile_png: Path | None) -> dict[str, Path]:
    if tile_png and tile_png.exists():
        tile = np.asarray(Image.open(tile_png).convert("RGB"))[:1500, :1500]
    else:
        from core.inputs.sample import make_suburb

        tile = make_suburb(1500, seed=3).image
    inputs = {}
    for name, image in (("1500 px", tile), ("6000 px", np.tile(tile, (4, 4, 1)))):
        path = folder / f"{name.split()[0]}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=image.shape[1], height=image.shape[0], count=3,
                           dtype="uint8", crs="EPSG:26986", transform=from_origin(200000, 900000, 1, 1),
                           tiled=True, compress="deflate") as ds:
            ds.write(image.transpose(2, 0, 1))
        inputs[name] = path
    return inputs


def timed(command: list[str]) -> float:
    return timed_with_network(command)[0]


def timed_with_network(command: list[str]) -> tuple[float, float | None]:
    """The whole process's seconds, and the seconds the engine says its network ran (None if it does not say)."""
    started = time.perf_counter()
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    seconds = time.perf_counter() - started
    found = re.search(r"the network ran ([0-9.]+) s", done.stdout)
    return seconds, float(found.group(1)) if found else None


def run_flops(model_path: str, raster: Path, scales: tuple[float, ...]) -> int:
    """The FLOPs the engine's network computes on `raster`: its default tile plan, each tile at every scale,
    counted on the meta device (shapes only, no arithmetic)."""
    with rasterio.open(raster) as ds:
        width, height = ds.width, ds.height
    options = InferenceOptions()
    config = load_model(model_path).info.config
    with torch.device("meta"):
        network = build_model(config).eval()
    counts: dict[tuple[int, int], int] = {}
    total = 0
    for row in TileGrid(0, 0, width, height, options.tile, options.overlap).rows():
        for tile in row:
            shape = (tile.height, tile.width)
            if shape not in counts:
                counter = FlopCounterMode(display=False)
                with counter, torch.inference_mode():
                    predict_logits(network, torch.zeros(1, config.in_channels, *shape, device="meta"), scales)
                counts[shape] = counter.get_total_flops()
            total += counts[shape]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-png", type=Path, default=Path("../shared/data/massroads/images/10078735_15.png"))
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["1500 px", "6000 px"])
    parser.add_argument("--scales", nargs="+", default=["1", "0.75,1,1.25"])
    parser.add_argument("--runtimes", nargs="+", choices=["torch", "onnxruntime", "openvino"],
                        default=["torch"] + (["openvino"] if openvino_version() else []))
    args = parser.parse_args()
    # (runtime, precision): torch in fp32 and, where the CPU computes it natively, bf16; the others in fp32.
    variants = [(runtime, precision) for runtime in args.runtimes
                for precision in (["fp32"] + (["bf16"] if native_cpu_bf16() and runtime == "torch" else []))]
    peaks = {"fp32": matmul_peak_flops("cpu", torch.float32)}
    if native_cpu_bf16():
        peaks["bf16"] = matmul_peak_flops("cpu", torch.bfloat16)
    print("matrix-multiply peak (2048x2048, this run): " + ", ".join(f"{p} {f / 1e9:.1f} GFLOP/s"
                                                                    for p, f in peaks.items()))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        inputs = write_inputs(folder, args.tile_png)
        seed_script = folder / "seed_loop.py"
        seed_script.write_text(SEED_LOOP)
        print(f"model {args.model}; {len(variants)} engine variant(s); {args.runs} runs each, seconds per whole "
              f"process; ratio: the engine's time over the seed loop's; of peak: see the module's docstring")
        print("| input | scales | the seed's loop | " + " | ".join(
            f"extract --no-vectorize {r} {p} | ratio | of peak" for r, p in variants)
            + " | extract with vectorizing fp32 |")
        print("|---|---|---:|" + "---:|---:|---:|" * len(variants) + "---:|")
        for name in args.sizes:
            raster = inputs[name]
            for scales in args.scales:
                seed = [timed([sys.executable, str(seed_script), str(raster), scales, args.model])
                        for _ in range(args.runs)]
                cells = [f"{name}", "one" if scales == "1" else "three", "-".join(f"{s:.1f}" for s in seed)]
                extract = [sys.executable, "-m", "core", "extract", str(raster), "--model", args.model, "--out",
                           str(folder / "out"), "--tta-scales", scales, "--overwrite", "--quiet"]
                flops = run_flops(args.model, raster, tuple(float(s) for s in scales.split(",")))
                for runtime, precision in variants:
                    runs = [timed_with_network([*extract, "--no-vectorize", "--precision", precision, "--runtime",
                                                runtime]) for _ in range(args.runs)]
                    whole = [seconds for seconds, _ in runs]
                    network = min((n for _, n in runs if n), default=None)
                    share = f"{flops / network / peaks[precision]:.0%}" if network else "-"
                    cells += ["-".join(f"{s:.1f}" for s in whole), f"{min(whole) / min(seed):.2f}x", share]
                vectorized = [timed([*extract, "--precision", "fp32"]) for _ in range(args.runs)]
                cells.append("-".join(f"{s:.1f}" for s in vectorized))
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
