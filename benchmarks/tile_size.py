"""Does the tile size change what the model finds? The shipped model on the model card's 6 validation tiles
(Massachusetts, 1500x1500 px at 1 m), one scale, at several largest tile sides. The engine fits tiles to the
raster (the fewest tiles of at most --tile px, one size, evenly spread), so each row says the size it used.

    python benchmarks/tile_size.py --data ../shared/data/massroads [--tiles 512 768 1024] [--model FILE]

The allowed range for --tile (docs/user/command-line.md) follows from this table.
"""

from __future__ import annotations

import argparse
import time

from core.inputs.tiling import TileGrid
from core.model.catalog import default_model
from core.model.checkpoint import load_model
from training.config import TrainConfig
from training.data import read_pair
from training.evaluate import Inference, evaluate_tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/massroads")
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 768, 1024])
    parser.add_argument("--overlap", type=int, default=64)
    args = parser.parse_args()
    config = TrainConfig(data=[args.data], val_tiles=6, seed=0)  # the model card's split
    split = config.split()
    model = load_model(args.model)
    print(f"{args.model} on the {len(split.val)} validation tiles of {args.data}, one scale, overlap {args.overlap}")
    print("| --tile | tile used (1500 px) | tiles per 1500 px | MP computed | road IoU | F1 | APLS | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for tile in args.tiles:
        grid = TileGrid(0, 0, 1500, 1500, tile, args.overlap)
        size = grid.rows()[0][0].width
        started = time.perf_counter()
        tiles = ((p.name, *read_pair(p, split.labels)) for p in split.val)
        result = evaluate_tiles(model, tiles, config.gsd_m, [Inference(tile=tile, overlap=args.overlap)])
        summary = next(iter(result.values()))
        print(f"| {tile} | {size} | {len(grid)} | {len(grid) * size * size / 1e6:.2f} | {summary['road_iou']:.3f} | "
              f"{summary['f1']:.3f} | {summary['apls']:.3f} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
