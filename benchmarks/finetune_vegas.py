"""Fine-tuning on the user's own road lines, measured: the SpaceNet Las Vegas tile (0.3 m) with its centrelines,
trained on the northern half and scored on the southern half, with `python -m training finetune`'s DEFAULT
settings. Prints the shipped model's figures (before), the fine-tuned model's (after) and the wall-clock time.

    python benchmarks/finetune_vegas.py [--minutes M ...] [--out FOLDER]

Needs ../shared/data/spacenet (research data, not part of the project).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VEGAS = REPO.parent / "shared" / "data" / "spacenet"


def halves(raster: Path, folder: Path) -> tuple[Path, Path]:
    """North and south halves of the raster as polygons in its CRS (GeoJSON)."""
    import rasterio

    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs.to_string()
    middle = (top + bottom) / 2
    paths = []
    for name, (y0, y1) in (("north", (middle, top)), ("south", (bottom, middle))):
        ring = [[left, y0], [right, y0], [right, y1], [left, y1], [left, y0]]
        path = folder / f"{name}.geojson"
        path.write_text(json.dumps({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                                    "features": [{"type": "Feature", "properties": {"half": name},
                                                  "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
        paths.append(path)
    return paths[0], paths[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="*", default=[None],
                        help="training budgets to try (default: finetune's own default)")
    parser.add_argument("--out", default="/tmp/finetune-vegas")
    parser.add_argument("extra", nargs="*", help="more finetune flags after --")
    args = parser.parse_args()
    raster, roads = VEGAS / "vegas_img0.tif", VEGAS / "vegas_img0_roads.geojson"
    if not raster.exists():
        print(f"{raster} not found: this benchmark needs the shared SpaceNet tile", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    north, south = halves(raster, out)
    print("| budget (min) | wall clock (s) | steps | before: completeness / correctness / APLS | "
          "after: completeness / correctness / APLS | road IoU before -> after |")
    print("|---|---|---|---|---|---|")
    for minutes in args.minutes:
        model, report = out / f"vegas-{minutes or 'default'}.pt", out / f"vegas-{minutes or 'default'}.json"
        command = [sys.executable, "-m", "training", "finetune", "--raster", str(raster), "--roads", str(roads),
                   "--train-area", str(north), "--check-area", str(south), "--out", str(model), "--overwrite",
                   "--json", str(report), *(["--minutes", str(minutes)] if minutes else []), *args.extra]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        print(done.stderr, file=sys.stderr)
        result = json.loads(report.read_text())
        b, a = result["before"], result["after"]
        print(f"| {minutes or 'default'} | {seconds:.0f} | {result['steps']} | {b['completeness']:.3f} / "
              f"{b['correctness']:.3f} / {b['apls']:.3f} | {a['completeness']:.3f} / {a['correctness']:.3f} / "
              f"{a['apls']:.3f} | {b['road_iou']:.3f} -> {a['road_iou']:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
