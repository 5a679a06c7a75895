"""End-to-end extraction throughput and peak memory, against the model's own throughput and a naive loop.

    python benchmarks/extract_throughput.py --massroads ../shared/data/massroads/images/10078735_15.png
    python benchmarks/extract_throughput.py --big-size 20000          # the 20,000 x 20,000 GeoTIFF case

Each extraction runs as its own `road-extractor extract` process, so its peak RSS is its own (os.wait4). The
model's throughput is measured in-process on the same tile size and scales; "engine efficiency" is the model
throughput achieved end to end, counting the pixels the network actually computed (overlaps included), process
start-up and model loading included; "network busy" is the engine's own count of the time inside the network. The naive
reference is what the seed does: its per-image forward, three scales, one tile at a time, no batching, no
blending (tiles cut edge to edge).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from core.extraction.inference import normalize, predict_logits
from core.inputs.sample import make_scene
from core.inputs.tiling import TileGrid
from core.model import ModelConfig, build_model
from core.model.checkpoint import ModelInfo, save_model


def run_extract(raster: Path, model: Path, out: Path, scales: str, tile: int, overlap: int,
                extra: list[str]) -> tuple[float, float, float]:
    command = [sys.executable, "-m", "core", "extract", str(raster), "--model", str(model), "--out", str(out),
               "--tta-scales", scales, "--tile", str(tile), "--overlap", str(overlap), "--overwrite", "--quiet",
               "--no-vectorize",  # vectorizing has its own benchmark
               *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"extract failed on {raster}")
    share = re.search(r"the network ran .* \((\d+)%\)", output)
    return seconds, usage.ru_maxrss / 1024**2, float(share.group(1)) / 100 if share else float("nan")


def model_megapixels_per_s(network, raster: Path, tile: int, scales: tuple[float, ...], repeats: int = 3) -> float:
    """On a real tile of the input: activations of real imagery cost a little more than those of noise."""
    with rasterio.open(raster) as ds:
        pixels = ds.read((1, 2, 3), window=rasterio.windows.Window(0, 0, tile, tile), boundless=True)
    x = normalize(torch.from_numpy(pixels)[None], ModelInfo().normalization)
    x = x.contiguous(memory_format=torch.channels_last)
    network = network.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        predict_logits(network, x, scales)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            predict_logits(network, x, scales)
            times.append(time.perf_counter() - start)
    return tile * tile / 1e6 / min(times)


def naive_seconds(network, image: np.ndarray, tile: int, scales: tuple[float, ...]) -> float:
    """The seed's way: cut edge to edge, pad the last tiles, run each tile alone, keep the argmax."""
    height, width = image.shape[:2]
    start = time.perf_counter()
    with torch.inference_mode():
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                crop = np.zeros((tile, tile, 3), np.uint8)
                part = image[y:y + tile, x:x + tile]
                crop[:part.shape[0], :part.shape[1]] = part
                inputs = normalize(torch.from_numpy(crop).permute(2, 0, 1)[None], ModelInfo().normalization)
                predict_logits(network, inputs, scales).argmax(1)
    return time.perf_counter() - start


def make_big_raster(path: Path, size: int) -> None:
    """A tiled, compressed GeoTIFF at 1 m/px built from synthetic 1024 px scenes, written block by block."""
    block = 1024
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8", tiled=True,
                       blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32619", BIGTIFF="YES",
                       transform=from_origin(300000, 4700000, 1.0, 1.0), photometric="RGB") as out:
        scenes = [make_scene(block, seed=s).image.transpose(2, 0, 1) for s in range(4)]
        for i, y in enumerate(range(0, size, block)):
            for j, x in enumerate(range(0, size, block)):
                h, w = min(block, size - y), min(block, size - x)
                out.write(scenes[(i + j) % 4][:, :h, :w], window=rasterio.windows.Window(x, y, w, h))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--massroads", type=Path, help="a 1500x1500 Massachusetts Roads PNG (1 m/px)")
    parser.add_argument("--big-size", type=int, default=20000, help="side of the generated GeoTIFF (0: skip)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--big-scales", default="1", help="scales for the big raster (default single-scale)")
    parser.add_argument("--work", type=Path, help="folder for the generated raster and outputs (default: temp)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="extract-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = ModelConfig(backbone=args.backbone)
    network = build_model(config).eval()
    model_file = save_model(work / "model.pt", network, ModelInfo(config=config, gsd_m=1.0))
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}; model {config.backbone} OS{config.output_stride} "
          f"(random weights: speed only), tile {args.tile}, overlap {args.overlap}")
    header = (f"{'input':<22}{'scales':>7}{'MP':>8}{'tiles':>7}{'seconds':>9}{'MP/s':>8}{'model MP/s':>11}"
              f"{'efficiency':>11}{'network busy':>13}{'peak RSS GiB':>13}")
    print(header)
    print("-" * len(header))

    cases = []
    if args.massroads:
        cases += [(args.massroads, "1", ["--gsd", "1"]), (args.massroads, "0.75,1,1.25", ["--gsd", "1"])]
    if args.big_size:
        big = work / f"generated_{args.big_size}.tif"
        if not big.exists():
            started = time.perf_counter()
            make_big_raster(big, args.big_size)
            print(f"(generated {big.name}: {big.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s)")
        cases.append((big, args.big_scales, []))
    model_speed: dict[str, float] = {}
    for raster, scales, extra in cases:
        scale_values = tuple(float(s) for s in scales.split(","))
        if scales not in model_speed:
            model_speed[scales] = model_megapixels_per_s(network, raster, args.tile, scale_values)
        with rasterio.open(raster) as ds:
            width, height = ds.width, ds.height
        tiles = len(TileGrid(0, 0, width, height, args.tile, args.overlap))
        seconds, rss, busy = run_extract(raster, model_file, work / "out", scales, args.tile, args.overlap, extra)
        computed = tiles * args.tile * args.tile / 1e6
        megapixels = width * height / 1e6
        efficiency = computed / seconds / model_speed[scales]
        print(f"{raster.name[:21]:<22}{len(scale_values):>7}{megapixels:>8.1f}{tiles:>7}{seconds:>9.1f}"
              f"{megapixels / seconds:>8.3f}{model_speed[scales]:>11.3f}{efficiency:>11.0%}{busy:>13.0%}{rss:>13.2f}",
              flush=True)

    if args.massroads:
        image = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(args.massroads).convert("RGB"))
        for scales in ((1.0,), (0.75, 1.0, 1.25)):
            naive = naive_seconds(network, image, args.tile, scales)
            print(f"naive reference (seed's loop, {len(scales)} scale{'s' if len(scales) > 1 else ''}, no blending): "
                  f"{naive:.1f} s, {image.shape[0] * image.shape[1] / 1e6 / naive:.3f} MP/s")


if __name__ == "__main__":
    main()
