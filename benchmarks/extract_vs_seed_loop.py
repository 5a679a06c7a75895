"""The engine against the seed's own tile loop, as whole processes (imports and model loading included).

    python benchmarks/extract_vs_seed_loop.py --tile-png ../shared/data/massroads/images/10078735_15.png

The seed's way: the image cut into 500 px pieces edge to edge, each scale resized from the piece, logits summed,
argmax, nothing written (`seed_loop` below, run as its own process). The engine: `road-extractor extract
--no-vectorize` (and once with vectorizing), fp32, and bf16 where the CPU computes it natively. Inputs: a 1500 px
Massachusetts tile written as a GeoTIFF (1 m), and a 6000 px raster made of 16 such tiles (or of generated
suburbs where the data is absent). Two runs each; the table shows both. The shipped model throughout.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from core.extraction.devices import native_cpu_bf16
from core.model.catalog import default_model

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
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tile-png", type=Path, default=Path("../shared/data/massroads/images/10078735_15.png"))
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", default=["1500 px", "6000 px"])
    parser.add_argument("--scales", nargs="+", default=["1", "0.75,1,1.25"])
    args = parser.parse_args()
    precisions = ["fp32"] + (["bf16"] if native_cpu_bf16() else [])
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        inputs = write_inputs(folder, args.tile_png)
        seed_script = folder / "seed_loop.py"
        seed_script.write_text(SEED_LOOP)
        print(f"model {args.model}; {len(precisions)} precision(s); {args.runs} runs each, seconds per whole process")
        print("| input | scales | the seed's loop | " + " | ".join(
            f"extract --no-vectorize {p} | ratio" for p in precisions) + " | extract with vectorizing fp32 |")
        print("|---|---|---:|" + "---:|---:|" * len(precisions) + "---:|")
        for name in args.sizes:
            raster = inputs[name]
            for scales in args.scales:
                seed = [timed([sys.executable, str(seed_script), str(raster), scales, args.model])
                        for _ in range(args.runs)]
                cells = [f"{name}", "one" if scales == "1" else "three", "-".join(f"{s:.1f}" for s in seed)]
                extract = [sys.executable, "-m", "core", "extract", str(raster), "--model", args.model, "--out",
                           str(folder / "out"), "--tta-scales", scales, "--overwrite", "--quiet"]
                for precision in precisions:
                    runs = [timed([*extract, "--no-vectorize", "--precision", precision]) for _ in range(args.runs)]
                    cells += ["-".join(f"{s:.1f}" for s in runs), f"{min(runs) / min(seed):.2f}x"]
                vectorized = [timed([*extract, "--precision", "fp32"]) for _ in range(args.runs)]
                cells.append("-".join(f"{s:.1f}" for s in vectorized))
                print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
