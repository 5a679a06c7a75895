"""`road-extractor update-map` on a layer with known holes and known false roads (issue 32's benchmark).

    python benchmarks/update_map_vegas.py [--model FILE] [--seeds 0 1 2] [--json OUT.json] [--teach MINUTES]

For each raster with reference centrelines (the SpaceNet Las Vegas tile, 38 lines, and the panchromatic uint16
Las Vegas tile of ../shared/data/odd, 9 lines) and each seed: whole reference lines are removed at random until 30%
of the length is gone, and 10 invented lines of 60 m are added where no road is (at least 25 m from every reference
line, inside the imagery); that is the "existing" layer. The command runs with its defaults, and the figures are:
- missing recall: the removed length within 5 m of a `missing` piece;
- missing precision: the share of `missing` length within 5 m of a real road (any reference line);
- invented flagged: invented lines with at least half of their length in `unconfirmed` pieces;
- real flagged: the share of the kept real lines' length in `unconfirmed` pieces;
- the minutes it took, end to end.
Needs ../shared/data (research data, not part of the project).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.metrics import read_lines, to_local_metres  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RASTERS = (DATA / "spacenet" / "vegas_img0.tif", DATA / "odd" / "vegas_pan_uint16_0.3m.tif")
REMOVED_SHARE, INVENTED, INVENTED_M, CLEARANCE_M, MATCH_M = 0.30, 10, 60.0, 25.0, 5.0


def make_layer(raster: Path, seed: int, folder: Path) -> tuple[Path, list, list, list]:
    """(the layer file, removed lines, kept lines, invented lines), all in the raster's CRS (degrees here)."""
    reference, crs = read_lines(raster.with_name(f"{raster.stem}_roads.geojson"))
    rng = random.Random(seed)
    order = list(range(len(reference)))
    rng.shuffle(order)
    in_metres = to_local_metres(reference)[0]
    total = sum(line.length for line in in_metres)
    removed, gone = set(), 0.0
    for index in order:
        if gone >= REMOVED_SHARE * total:
            break
        removed.add(index)
        gone += in_metres[index].length
    kept = [line for i, line in enumerate(reference) if i not in removed]
    with rasterio.open(raster) as ds:
        left, bottom, right, top = ds.bounds
        valid = ds.dataset_mask()
        to_pixel = ~ds.transform
    lat = (bottom + top) / 2
    from core.inputs.raster import metres_per_degree

    mx, my = metres_per_degree(lat)
    roads = shapely.union_all(reference)
    invented = []
    draws = random.Random(seed + 1000)
    while len(invented) < INVENTED:
        x, y = draws.uniform(left, right), draws.uniform(bottom, top)
        angle = draws.uniform(0, np.pi)
        dx, dy = INVENTED_M * np.cos(angle) / mx, INVENTED_M * np.sin(angle) / my
        line = shapely.LineString([(x, y), (x + dx, y + dy)])
        if not shapely.box(left, bottom, right, top).contains(line):
            continue
        ends = [to_pixel * p for p in line.coords]
        if not all(valid[int(r), int(c)] for c, r in ends):
            continue
        # clearance in metres, measured in a frame scaled at this latitude
        near = shapely.distance(shapely.transform(line, lambda xy: xy * (mx, my)),
                                shapely.transform(roads, lambda xy: xy * (mx, my)))
        if near >= CLEARANCE_M:
            invented.append(line)
    features = [{"type": "Feature", "properties": {"kind": "real"}, "geometry": shapely.geometry.mapping(g)}
                for g in kept] + [{"type": "Feature", "properties": {"kind": "invented"},
                                   "geometry": shapely.geometry.mapping(g)} for g in invented]
    path = folder / f"{raster.stem}_layer_seed{seed}.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path, [reference[i] for i in sorted(removed)], kept, invented


def covered(lines: list, by: list, within_m: float, frame_lines: list) -> np.ndarray:
    """For each line, the share of its length within `within_m` of `by` (metres, in one frame)."""
    lines_m, by_m, _ = to_local_metres(lines, by, frame_lines)
    if not by_m:
        return np.zeros(len(lines_m))
    near = shapely.union_all(by_m).buffer(within_m)
    return np.array([line.intersection(near).length / line.length for line in lines_m])


def score(raster: Path, seed: int, model: str | None, folder: Path, teach_minutes: float = 0.0,
          logs: Path | None = None) -> dict:
    from core.metrics import read_lines as read

    layer, removed, kept, invented = make_layer(raster, seed, folder)
    out = folder / f"{raster.stem}_update_seed{seed}.gpkg"
    with rasterio.open(raster) as ds:
        grey = ds.count == 1  # the panchromatic tile: its one band fed to all three
    bands = ["--bands", "1,1,1"] if grey else []
    started = time.monotonic()
    if teach_minutes:  # the layer, holes and invented lines included, as labels that lack roads
        taught = folder / f"{raster.stem}_taught_seed{seed}.pt"
        teach = subprocess.run([sys.executable, "-m", "training", "finetune", "--raster", str(raster), "--roads",
                                str(layer), "--labels", "incomplete", "--minutes", str(teach_minutes), "--out",
                                str(taught), "--overwrite", "--seed", str(seed), *bands,
                                *(["--init", model] if model else [])], capture_output=True, text=True, cwd=ROOT)
        if teach.returncode != 0:
            raise SystemExit(f"teaching failed on {raster.name}: {teach.stderr.strip().splitlines()[-1]}")
        if logs:
            (logs / f"teach_{raster.stem}_seed{seed}.log").write_text(teach.stderr)
        model = str(taught)
    command = [sys.executable, "-m", "core", "update-map", str(raster), "--roads", str(layer), "--out", str(out),
               "--overwrite", "--quiet", *(["--model", model] if model else []), *bands]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    minutes = (time.monotonic() - started) / 60
    if run.returncode != 0:
        raise SystemExit(f"update-map failed on {raster.name}: {run.stderr.strip().splitlines()[-1]}")
    missing = read(out, layer="missing")[0]
    unconfirmed = read(out, layer="unconfirmed")[0]
    reference = removed + kept
    everything = reference + invented + missing + unconfirmed
    removed_len = to_local_metres(removed)[0]
    recall = float(np.average(covered(removed, missing, MATCH_M, everything),
                              weights=[g.length for g in removed_len])) if removed else float("nan")
    missing_m = to_local_metres(missing)[0]
    precision = float(np.average(covered(missing, reference, MATCH_M, everything),
                                 weights=[g.length for g in missing_m])) if missing else float("nan")
    invented_share = covered(invented, unconfirmed, 1.0, everything)
    kept_m = to_local_metres(kept)[0]
    real_flagged = float(np.average(covered(kept, unconfirmed, 1.0, everything), weights=[g.length for g in kept_m]))
    return {"raster": raster.name, "seed": seed, "missing_recall": recall, "missing_precision": precision,
            "invented_flagged": float(np.mean(invented_share >= 0.5)), "real_flagged": real_flagged,
            "minutes": minutes, "removed_km": sum(g.length for g in removed_len) / 1000}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--teach", type=float, default=0.0, metavar="MINUTES",
                        help="fine-tune on the layer first (--labels incomplete) for this long (default: no)")
    parser.add_argument("--logs", help="keep the fine-tunes' logs in this folder")
    args = parser.parse_args()
    missing = [r for r in RASTERS if not r.exists()]
    if missing:
        print(f"{missing[0]} is missing: this benchmark needs the research data in ../shared/data", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for raster in RASTERS:
            for seed in args.seeds:
                row = score(raster, seed, args.model, Path(folder), args.teach, Path(args.logs) if args.logs else None)
                rows.append(row)
                print(f"{row['raster']:<28} seed {seed}: missing recall {row['missing_recall']:.2f}, precision "
                      f"{row['missing_precision']:.2f}; invented flagged {row['invented_flagged']:.2f}; real "
                      f"flagged {row['real_flagged']:.2f}; {row['minutes']:.1f} min", flush=True)
    print("| raster | missing recall | missing precision | invented flagged | real flagged | minutes |")
    print("|---|---|---|---|---|---|")
    for raster in RASTERS:
        of = [r for r in rows if r["raster"] == raster.name]
        cells = [f"{np.nanmean([r[k] for r in of]):.2f}" for k in ("missing_recall", "missing_precision",
                                                                    "invented_flagged", "real_flagged", "minutes")]
        print(f"| {raster.name} (mean of {len(of)} seeds) | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
