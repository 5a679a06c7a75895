"""What the vectorizer's settings do to the lines a user gets: the shipped model's single-scale probabilities on
the model card's 6 validation tiles and on the SpaceNet Las Vegas tile, vectorized with each setting.

    python benchmarks/vectorize_quality.py [--model FILE] [--cache DIR]

For each variant (the engine's defaults with one setting changed) it prints the validation tiles' mean APLS, the
length completeness and correctness within 5 m pooled over the tiles (against the reference masks vectorized with
the defaults), how many reference junctions (benchmarks/junction_fade.py's definition) have an extracted junction
within 12 m, and the Vegas tile's completeness and correctness against its centrelines. `--cache DIR` keeps the
probabilities, so a second run (another variant) takes seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from junction_fade import PIXELS, junctions_of, reference_junctions, within  # noqa: E402

from core.extraction.extract import extract_roads  # noqa: E402
from core.inputs.raster import RasterioSource  # noqa: E402
from core.metrics import AplsParams, apls, evaluate_files, length_metrics, pooled_length_metrics  # noqa: E402
from core.model.catalog import default_model, open_model  # noqa: E402
from core.options import EvaluateOptions  # noqa: E402
from core.roads.vectorize import VectorizeParams, vectorize_array, vectorize_file  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import IGNORE  # noqa: E402
from training.evaluate import Inference, predict_tile  # noqa: E402

VARIANTS = {
    "defaults": {},
    "joins within 24 m": {"bridge_m": 24.0},
    "joins within 40 m": {"bridge_m": 40.0},
    "joins within 56 m": {"bridge_m": 56.0},
    "no evidence check": {"bridge_evidence": 0.0},
    "median evidence >= 0.10": {"bridge_evidence": 0.10},
}


def probabilities(model_path: str, data: Path, cache: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], Path]:
    """(name, probability, target) of the validation tiles, and the Vegas probability GeoTIFF; cached in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    model = None
    tiles = []
    for name, image, target in TrainConfig.from_dict({"data": [str(data / "massroads")], "val_tiles": 6,
                                                      "split_seed": 0}).split().read_val():
        path = cache / f"{name}.npy"
        if not path.exists():
            model = model or open_model(model_path)
            probability, _ = predict_tile(model, image, target != IGNORE, 1.0, Inference())
            np.save(path, probability)
        tiles.append((name, np.load(path), target))
    vegas = cache / "vegas_img0_road_probability.tif"
    if not vegas.exists():
        model = model or open_model(model_path)
        with RasterioSource(data / "spacenet" / "vegas_img0.tif") as source:
            extract_roads(source, model, cache, Inference().extract_params())
    return tiles, vegas


def score(params: VectorizeParams, tiles, vegas: Path, references: dict, lines: Path) -> str:
    apls_values, lengths, matched, total = [], [], 0, 0
    for name, probability, target in tiles:
        reference, centres = references[name]
        proposal = vectorize_array(np.where(target != IGNORE, probability, 0).astype(np.float32), PIXELS, params)
        apls_values.append(apls(reference.roads, proposal.roads, AplsParams())["apls"])
        lengths.append(length_metrics(reference.roads, proposal.roads, 5.0))
        found = junctions_of(proposal)
        matched += sum(within(found, x, y) for x, y in centres)
        total += len(centres)
    with tempfile.TemporaryDirectory() as folder:
        roads = Path(folder) / "roads.gpkg"
        vectorize_file(vegas, roads, params, workers=1)
        far = evaluate_files(roads, lines, EvaluateOptions(buffer_m=5.0))
    pooled = pooled_length_metrics(lengths)
    return (f"APLS {np.mean(apls_values):.3f}  completeness / correctness {pooled['completeness']:.3f} / "
            f"{pooled['correctness']:.3f}  junctions {matched} of {total}  Vegas {far['completeness']:.3f} / "
            f"{far['correctness']:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model()))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="the folder holding massroads/ and spacenet/")
    parser.add_argument("--cache", help="folder to keep the probabilities in (default: a temporary one)")
    args = parser.parse_args()
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as scratch:
        tiles, vegas = probabilities(args.model, data, Path(args.cache or scratch))
        with rasterio.open(vegas) as ds:  # read once here: a truncated cache fails now, not midway
            ds.read(1, window=((0, 1), (0, 1)))
        references = {name: (vectorize_array((target == 1).astype(np.float32), PIXELS, VectorizeParams()),
                             reference_junctions(target == 1, target != IGNORE)) for name, _, target in tiles}
        lines = data / "spacenet" / "vegas_img0_roads.geojson"
        for label, changes in VARIANTS.items():
            figures = score(VectorizeParams(**changes), tiles, vegas, references, lines)
            print(f"{label:<26} {figures}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
