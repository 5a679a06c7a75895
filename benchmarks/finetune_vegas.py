"""Fine-tuning on the user's own road lines, measured: the SpaceNet Las Vegas tile (0.3 m) with its centrelines,
trained on the northern half and scored on the southern half, with `python -m training finetune`'s DEFAULT
settings. Prints the shipped model's figures (before), the fine-tuned model's (after) and the wall-clock time.

    python benchmarks/finetune_vegas.py [--minutes M ...] [--out FOLDER] [--picture PNG] [finetune flags]

Needs ../shared/data/spacenet (research data, not part of the project).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

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


def draw_before_after(raster: Path, roads: Path, models: list[tuple[str, Path | None]], out: Path) -> None:
    """Side by side: each model's extracted lines (red) over the tile, the reference lines (thin cyan), and the
    line between the northern half (trained on) and the southern half (checked)."""
    import tempfile

    import rasterio
    import shapely
    from PIL import Image, ImageDraw

    from core.extraction.extract import ExtractParams, extract_roads
    from core.inputs.raster import RasterioSource
    from core.inputs.vectors import pyogrio_raw
    from core.metrics import read_lines
    from core.model.catalog import open_model
    from core.roads.vectorize import vectorize_file

    with rasterio.open(raster) as ds:
        image = ds.read((1, 2, 3)).transpose(1, 2, 0)
        inverse, crs = ~ds.transform, ds.crs.to_wkt()
    reference, _ = read_lines(roads, crs)
    panels = []
    for title, model in models:
        with tempfile.TemporaryDirectory() as folder, RasterioSource(raster) as source:
            result = extract_roads(source, open_model(model), folder, ExtractParams(scales=(1.0,)))
            gpkg = Path(folder) / "roads.gpkg"
            vectorize_file(result.probability, gpkg, workers=1)
            found = pyogrio_raw().read(gpkg, layer="roads", columns=[])[2]
            lines = list(shapely.from_wkb(found)) if found is not None else []
        picture = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
        draw = ImageDraw.Draw(picture)
        for line in reference:
            draw.line([inverse * xy for xy in line.coords], fill=(0, 230, 255), width=2)
        for line in lines:
            draw.line([inverse * xy for xy in line.coords], fill=(230, 30, 30), width=5)
        middle = picture.height / 2
        draw.line([(0, middle), (picture.width, middle)], fill=(255, 255, 255), width=3)
        draw.rectangle([0, 0, picture.width, 34], fill=(0, 0, 0))
        draw.text((8, 8), f"{title} - north: trained on, south: checked", fill=(255, 255, 255))
        panels.append(picture)
    width = sum(p.width for p in panels) + 10 * (len(panels) - 1)
    sheet = Image.new("RGB", (width, panels[0].height), (255, 255, 255))
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + 10
    sheet.thumbnail((1800, 1800))
    sheet.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="*", default=[None],
                        help="training budgets to try (default: finetune's own default)")
    parser.add_argument("--out", default="/tmp/finetune-vegas")
    parser.add_argument("--picture", help="also draw the shipped and the (last) fine-tuned model's lines to this PNG")
    args, extra = parser.parse_known_args()  # any other flag goes to finetune (e.g. --lr 0.001)
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
                   "--json", str(report), *(["--minutes", str(minutes)] if minutes else []), *extra]
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
    if args.picture:
        draw_before_after(raster, roads, [("shipped model", None), ("fine-tuned", model)], Path(args.picture))
        print(f"picture: {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
