"""Brightness matching measured on the SpaceNet Las Vegas tile (0.3 m, 8-bit, median brightness 25 of 255): a model
on the tile as it is (`--brightness none`), with the default matching (`auto`: one gamma curve bringing its median to
the model's training range) and with a sweep of fixed gammas around it, at one scale and at the default three.
Prints the extracted lines' length completeness / correctness within 5 m of the tile's 38 centrelines, APLS and
the length found. One tile: the sweep shows how much of a figure is the gamma and how much the tile's few long
lines (a line kept or lost moves completeness by several points).

    python benchmarks/brightness_vegas.py [--model FILE] [--gammas 0.5,0.6,...] [--scales 1 0.75,1,1.25]

Needs ../shared/data/spacenet (research data, not part of the project).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VEGAS = REPO.parent / "shared" / "data" / "spacenet"


def score(model, raster: Path, lines: Path, scales: tuple[float, ...], brightness: str, gamma: float | None):
    from core.extraction.extract import ExtractParams, extract_roads
    from core.inputs.raster import RasterioSource
    from core.metrics import evaluate_files
    from core.options import EvaluateOptions
    from core.roads.vectorize import VectorizeParams, vectorize_file

    with tempfile.TemporaryDirectory() as folder, RasterioSource(raster) as source:
        result = extract_roads(source, model, folder, ExtractParams(scales=scales, brightness=brightness,
                                                                    gamma=gamma))
        roads = Path(folder) / "roads.gpkg"
        vectorize_file(result.probability, roads, VectorizeParams(), workers=1)
        figures = evaluate_files(roads, lines, EvaluateOptions(buffer_m=5.0))
    note = next((n for n in result.notes if n.startswith("brightness")), "")
    return figures, note


def main() -> int:
    from core.model.catalog import default_model, open_model
    from core.options import comma_floats

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="model file (default: the shipped model)")
    parser.add_argument("--gammas", type=comma_floats, default=(0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9))
    parser.add_argument("--scales", nargs="+", type=comma_floats, default=[(1.0,), (0.75, 1.0, 1.25)])
    args = parser.parse_args()
    raster, lines = VEGAS / "vegas_img0.tif", VEGAS / "vegas_img0_roads.geojson"
    if not raster.exists():
        print(f"{raster} is missing: this benchmark needs the research data in ../shared/data/spacenet")
        return 2
    model = open_model(args.model or default_model())
    print(f"model {args.model or default_model()}; {raster.name}, lines within 5 m\n")
    print("| scales | brightness | completeness | correctness | APLS | km found |")
    print("|---|---|---|---|---|---|")
    for scales in args.scales:
        label = "/".join(f"{s:g}" for s in scales)
        runs = [("none", None, "none"), ("auto", None, "auto")] + [("none", g, f"gamma {g:g}") for g in args.gammas]
        for brightness, gamma, name in runs:
            f, note = score(model, raster, lines, scales, brightness, gamma)
            if brightness == "auto":
                name = f"auto ({note.split('; ')[-1].split(' (')[0]})"
            print(f"| {label} | {name} | {f['completeness']:.3f} | {f['correctness']:.3f} | {f['apls']:.3f} | "
                  f"{f['proposal_km']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
