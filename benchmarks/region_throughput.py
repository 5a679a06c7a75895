"""Region-scale extraction throughput with 1 and 2 local Dask workers on the same generated mosaic, and the ratio.

    python benchmarks/region_throughput.py                       # 2x2 scenes of 768 px, ResNet-18, one scale
    python benchmarks/region_throughput.py --scenes 4 --size 1024 --workers 1 2 4

Each worker is one process with cores / workers torch threads, so the comparison is "the same cores, split
differently" on one machine; on a cluster each worker brings its own cores (or GPU) and the blocks scale out.
The network has random weights: throughput does not depend on what it predicts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def make_mosaic(folder: Path, scenes: int, size: int) -> None:
    from core.inputs.sample import make_scene

    for i in range(scenes):
        for j in range(scenes):
            image = make_scene(size, seed=100 + i * scenes + j).image
            with rasterio.open(folder / f"t{i}_{j}.tif", "w", driver="GTiff", width=size, height=size, count=3,
                               dtype="uint8", crs="EPSG:32619",
                               transform=from_origin(300000 + j * size, 4700000 - i * size, 1, 1)) as ds:
                ds.write(image.transpose(2, 0, 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", type=int, default=2, help="scenes per side of the mosaic")
    parser.add_argument("--size", type=int, default=768)
    parser.add_argument("--block", type=int, default=768)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    import torch

    from core.frontends.region import RegionJob, run_region
    from core.model import ModelConfig, build_model
    from core.model.checkpoint import ModelInfo, save_model

    root = Path(tempfile.mkdtemp(prefix="region-bench-"))
    try:
        (root / "mosaic").mkdir()
        make_mosaic(root / "mosaic", args.scenes, args.size)
        torch.manual_seed(0)
        config = ModelConfig(backbone="resnet18")
        model = save_model(root / "model.pt", build_model(config).eval(), ModelInfo(config=config, gsd_m=1.0))
        megapixels = (args.scenes * args.size) ** 2 / 1e6
        print(f"mosaic {args.scenes * args.size}^2 px ({megapixels:.1f} MP), blocks of {args.block} px, "
              f"{os.cpu_count()} cores")
        rates = {}
        for workers in args.workers:
            job = RegionJob(inputs=[str(root / "mosaic")], out_dir=str(root / f"out{workers}"), model=str(model),
                            block=args.block, tile=256, overlap=32, scales=[1.0], vectorize=False)
            started = time.perf_counter()
            result = run_region(job, workers=workers)
            seconds = time.perf_counter() - started
            rates[workers] = megapixels / seconds
            print(f"{workers} worker(s): {result.blocks} blocks in {seconds:.1f} s = {rates[workers]:.3f} MP/s "
                  f"(cluster start-up included)")
        base = rates[args.workers[0]]
        for workers, rate in rates.items():
            print(f"scaling {workers} vs {args.workers[0]}: {rate / base:.2f}x")
        probabilities = []
        for workers in args.workers:
            with rasterio.open(root / f"out{workers}" / "road_probability.vrt") as ds:
                probabilities.append(ds.read(1).astype(int))
        print(f"max difference between runs: {max(np.abs(p - probabilities[0]).max() for p in probabilities)}/255")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
