"""Vectorization throughput (megapixels/s) and peak memory, on a generated road mask and the real SpaceNet tile.

    python benchmarks/vectorize_throughput.py --spacenet ../shared/data/spacenet/vegas_img0.tif
    python benchmarks/vectorize_throughput.py --size 10240 --workers 1 2

Each run is its own `road-extractor vectorize` process (start-up included), so peak RSS is its own (os.wait4).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.transform import from_origin


def make_mask(path: Path, size: int, seed: int = 0) -> None:
    """A road mask at 1 m/px: a jittered street grid every ~150 m plus curved roads, 7 px wide."""
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for offset in range(0, size, 150):
        jitter = rng.integers(-20, 20)
        if rng.random() < 0.85:
            draw.line([(0, offset + jitter), (size, offset - jitter)], fill=1, width=7)
        if rng.random() < 0.85:
            draw.line([(offset + jitter, 0), (offset - jitter, size)], fill=1, width=7)
    for _ in range(size // 200):
        t = np.linspace(0, 1, 50)
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(300, 1500)
        xs = x0 + np.cos(angle) * length * t + 40 * np.sin(6 * t)
        ys = y0 + np.sin(angle) * length * t + 40 * np.cos(5 * t)
        draw.line(list(zip(xs, ys, strict=True)), fill=1, width=7, joint="curve")
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32619", transform=from_origin(300000, 4700000, 1.0, 1.0), tiled=True,
                       compress="deflate") as out:
        out.write(np.asarray(canvas), 1)
        out.update_tags(1, ROLE="1 road, 0 background, 255 no data")


def run(raster: Path, out: Path, workers: int) -> tuple[float, float, str]:
    command = [sys.executable, "-c", "import sys; from core.frontends.cli import main; sys.exit(main(sys.argv[1:]))",
               "vectorize", str(raster), "--out", str(out), "--overwrite"]
    env = {**os.environ, "ROAD_EXTRACTOR_WORKERS": str(workers)}
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vectorize failed on {raster}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2, output.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10240)
    parser.add_argument("--spacenet", type=Path, help="vegas_img0.tif: its road lines are rasterised as the mask")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vectorize-bench-"))
    cases = []
    generated = work / f"mask_{args.size}.tif"
    started = time.perf_counter()
    make_mask(generated, args.size)
    print(f"(generated {generated.name} in {time.perf_counter() - started:.1f} s)")
    cases.append(generated)
    if args.spacenet:
        import shapely
        from rasterio.features import rasterize

        from core.inputs.vectors import pyogrio_raw

        geometries = shapely.from_wkb(pyogrio_raw().read(args.spacenet.with_name("vegas_img0_roads.geojson"),
                                                         columns=[])[2])
        with rasterio.open(args.spacenet) as ds:
            profile, shape, transform = ds.profile, (ds.height, ds.width), ds.transform
        mask = rasterize([g.buffer(3.5 / 89900) for g in geometries], out_shape=shape, transform=transform)
        spacenet_mask = work / "vegas_img0_mask.tif"
        profile.update(count=1, nodata=255, dtype="uint8", photometric="MINISBLACK")
        with rasterio.open(spacenet_mask, "w", **{k: v for k, v in profile.items() if k != "alpha"}) as out:
            out.write(mask.astype(np.uint8), 1)
            out.update_tags(1, ROLE="1 road, 0 background, 255 no data")
        cases.append(spacenet_mask)
    print(f"{os.cpu_count()} CPUs")
    header = f"{'mask':<24}{'MP':>8}{'workers':>9}{'seconds':>9}{'MP/s':>8}{'peak RSS GiB':>14}  result"
    print(header)
    print("-" * len(header))
    for raster in cases:
        with rasterio.open(raster) as ds:
            megapixels = ds.width * ds.height / 1e6
        for workers in args.workers:
            seconds, rss, output = run(raster, work / "roads.gpkg", workers)
            print(f"{raster.name:<24}{megapixels:>8.1f}{workers:>9}{seconds:>9.1f}{megapixels / seconds:>8.2f}"
                  f"{rss:>14.2f}  {output.split(': ', 1)[-1]}", flush=True)


if __name__ == "__main__":
    main()
