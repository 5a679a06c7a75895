"""`road-extractor` (also `python -m core`): a thin shell over the engine."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.atomic import check_output_file
from core.errors import InputError, OutputError, Terminated, quiet_gdal, stop_on_sigterm
from core.options import (
    DEEPNESS_TILE,
    DEFAULT_OPSET,
    MIN_OPSET,
    ONNX_TARGETS,
    CompareOptions,
    EvaluateOptions,
    InferenceOptions,
    VectorizeOptions,
    add_flags,
    comma_floats,
    from_flags,
)

# Commands import what they need when they run: `vectorize` and `evaluate` never load torch (1.5 s).


def _describe(path: Path, output_stride: int | None, layer4: str | None) -> dict[str, Any]:
    from core.model import build_model
    from core.model.checkpoint import (
        compare,
        impossible_statistics,
        infer_architecture,
        nonfinite_tensors,
        read_weights,
    )

    weights = read_weights(path)
    architecture = infer_architecture(weights, output_stride, layer4)
    report = compare(build_model(architecture.config), weights)
    broken = nonfinite_tensors(weights.state_dict)
    negative = impossible_statistics(weights.state_dict)
    if broken:
        verdict = (f"refused: {len(broken)} tensors hold NaN or infinite values ({broken[0]}, ...); the training "
                   f"that made it diverged")
    elif negative:
        verdict = (f"refused: {len(negative)} BatchNorm variances are negative ({negative[0]}, ...); the file is "
                   f"damaged or was edited")
    elif weights.backbone_only:
        verdict = (f"backbone weights only: use them to initialise training (python -m training fit --init "
                   f"{path}), not for inference")
    elif report.complete:
        verdict = "ready for inference: every layer of the model comes from this file"
    else:
        verdict = (f"refused for inference: {', '.join(report.untrained_modules)} would be left untrained; "
                   f"it can still initialise training, which loads the matching tensors")
    return {
        "file": str(path),
        "size_bytes": path.stat().st_size,
        "kind": weights.kind,
        "extras": weights.extras,
        "architecture": {name: {"value": value, "source": architecture.sources[name]}
                         for name, value in architecture.config.to_dict().items()},
        "cannot_be_seen_in_weights": architecture.unseen,
        "info": weights.info.to_dict() if weights.info else None,
        "parameters": sum(t.numel() for k, t in weights.state_dict.items() if "num_batches_tracked" not in k),
        "report": report.to_dict(),
        "report_text": report.format(),
        "verdict": verdict,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    details = _describe(Path(args.file), args.output_stride, args.layer4)
    text = details.pop("report_text")
    if args.json:
        print(json.dumps(details, indent=2, default=str))
        return 0
    extras = ", ".join(f"{k} {v}" for k, v in details["extras"].items())
    print(f"file        {details['file']} ({details['size_bytes'] / 1e6:.1f} MB)")
    print(f"kind        {details['kind']}{f' ({extras})' if extras else ''}")
    print(f"tensors     {details['parameters'] / 1e6:.2f} M values")
    print("architecture")
    for name, entry in details["architecture"].items():
        print(f"  {name:<24}{str(entry['value']):<12}{entry['source']}")
    if details["cannot_be_seen_in_weights"]:
        print(f"  note: {', '.join(details['cannot_be_seen_in_weights'])} cannot be read from the weights; set them "
              f"with --output-stride/--layer4 if the model was trained otherwise")
    info = details["info"]
    if info:
        print(f"classes     {', '.join(info['class_names'])}")
        print(f"bands       {', '.join(info['bands'])}")
        print(f"gsd         {info['gsd_m']} m/px" if info["gsd_m"] else "gsd         unknown")
        norm = info["normalization"]
        print(f"normalise   /{norm['scale']:g}, mean {norm['mean']}, std {norm['std']}")
        from core.extraction.brightness import model_range

        low, high = model_range(norm.get("brightness"))
        print(f"brightness  median {low:g}-{high:g} of 255 in training"
              + ("" if norm.get("brightness") else " (not recorded: Massachusetts Roads' range assumed)"))
        for key, value in {**info["metrics"], **info["provenance"]}.items():
            if key != "places":  # a table of its own below
                print(f"{key:<11} {value}")
        from core.model.checkpoint import ModelInfo

        places = ModelInfo.from_dict(info).place_lines()
        if places:
            print("by place    held-out images of each place the model was scored on, one scale")
            print("\n".join(f"  {line}" for line in places))
    print("load report")
    print("  " + text.replace("\n", "\n  "))
    print(f"verdict     {details['verdict']}")
    return 0


def _load(args: argparse.Namespace):
    from core.model.checkpoint import load_model

    return load_model(args.model, output_stride=args.output_stride, layer4=args.layer4, gsd_m=args.gsd)


def cmd_export(args: argparse.Namespace) -> int:
    from core.model.checkpoint import save_model

    if not args.onnx and not args.model_file and not args.stac:
        raise InputError("nothing to export; give --onnx OUT.onnx, --model-file OUT.pt and/or --stac")
    if args.target != "road-extractor" and not args.onnx:
        raise InputError(f"--for {args.target} shapes an ONNX graph; give --onnx OUT.onnx with it")
    # With neither output, --stac describes the model file given: how the item beside a shipped model is made.
    artifacts = [Path(p) for p in (args.model_file, args.onnx) if p] or [Path(args.model)]
    targets = [Path(p) for p in (args.model_file, args.onnx) if p]
    if args.stac:
        from core.model.stac import item_path

        targets += [item_path(a) for a in artifacts]
    for target in targets:
        _check_target(target, args.overwrite)
    model = _load(args)
    if args.stac and not (args.model_file or args.onnx) and Path(args.model).suffix.lower() == ".onnx":
        raise InputError(f"{args.model} is already an ONNX file; --stac describes the model file it came from")
    kinds: dict[Path, str] = {}
    if args.model_file:
        save_model(args.model_file, model.network, model.info, half=args.half)
        kinds[Path(args.model_file)] = "road-extractor model"
        print(f"wrote {args.model_file} (road-extractor model file{', fp16' if args.half else ''})")
    if args.onnx:
        from core.model.onnx_export import export_onnx

        export_onnx(model, args.onnx, opset=args.opset, half=args.half, target=args.target, tile=args.tile)
        kinds[Path(args.onnx)] = "onnx"
        shape = (f"for Deepness: {args.tile}x{args.tile} px tiles of RGB/255 in, class probabilities out"
                 if args.target == "deepness" else "dynamic batch/height/width")
        print(f"wrote {args.onnx} (ONNX opset {args.opset}, {shape})")
    if args.stac:
        from core.model.stac import write_stac_item

        for artifact in artifacts:
            kind = kinds.get(artifact, "road-extractor model")
            deepness = kind == "onnx" and args.target == "deepness"
            written = write_stac_item(model, artifact, kind, io=args.target if kind == "onnx" else "road-extractor",
                                      tile=args.tile if deepness else None)
            print(f"wrote {written} (STAC item, MLM extension, describing {artifact.name})")
    return 0


def _check_target(path: Path, overwrite: bool) -> None:
    """An output file that can be written, refused before any work when it cannot or may not be."""
    import os

    check_output_file(path, overwrite)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"the folder {folder} does not exist; create it or give another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the folder {folder} is not writable; give a path you can write to")


def cmd_extract(args: argparse.Namespace) -> int:
    from core.frontends.jobs import ExtractJob, run_extract
    from core.progress import CancelToken

    if len(args.input) > 1 or Path(args.input[0]).is_dir() or args.workers or args.scheduler:
        return cmd_extract_region(args)
    args.input = args.input[0]
    job = ExtractJob(input=args.input, out_dir=args.out, model=args.model, bands=args.bands, gsd_m=args.gsd,
                     value_scale=args.value_scale, bbox=list(args.bbox) if args.bbox else None,
                     bbox_crs=args.bbox_crs, aoi=args.aoi, overwrite=args.overwrite, vectorize=not args.no_vectorize,
                     vectorize_options=_vectorize_options(args), **_inference_options(args))
    from tqdm import tqdm

    bars: list = []  # made on the first progress report, so a bad input gives its error alone

    def show(progress) -> None:
        if not bars:
            bars.append(tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {postfix}", disable=args.quiet,
                             file=sys.stderr))
        bar = bars[0]
        bar.n = round(progress.fraction * 100)
        eta = f", ETA {progress.eta_s:.0f} s" if progress.eta_s else ""
        bar.set_postfix_str(f"{progress.stage}: {progress.tiles_done}/{progress.tiles_total} tiles, "
                            f"{progress.megapixels_per_s:.2f} MP/s{eta}")

    def note(message: str) -> None:
        (bars[0].write if bars else print)(f"note: {message}", file=sys.stderr)

    try:
        result = run_extract(job, progress=show, cancel=CancelToken(), log=note)
    finally:
        for bar in bars:
            bar.close()
    print(f"probability {result['probability']}")
    print(f"mask        {result['mask']}")
    print(f"{result['tiles']} tiles, {result['input_megapixels']:.2f} MP in {result['seconds']:.1f} s "
          f"({result['input_megapixels'] / result['seconds']:.3f} MP/s); roads cover {result['road_fraction']:.1%} "
          f"of the valid area")
    if job.vectorize:
        _report_network(result)
    print(f"the network ran {result['network_seconds']:.1f} s of the {result['seconds']:.1f} s "
          f"({result['network_seconds'] / result['seconds']:.0%}); reading, blending and writing took the rest")
    return 0


def cmd_extract_region(args: argparse.Namespace) -> int:
    from core.frontends.region import RegionJob, run_region

    if args.bbox or args.aoi or args.gsd:
        raise InputError("--bbox, --aoi and --gsd are for single rasters; cut the mosaic with gdalbuildvrt -te, or "
                         "run without --workers/--scheduler")
    job = RegionJob(inputs=args.input, out_dir=args.out, model=args.model, block=args.block, bands=args.bands,
                    vectorize=not args.no_vectorize, vectorize_options=_vectorize_options(args), cog=args.cog,
                    **_inference_options(args))

    def show(p) -> None:
        if not args.quiet:
            eta = f", ETA {p.eta_s:.0f} s" if p.eta_s else ""
            print(f"blocks {p.blocks_done}/{p.blocks_total}, {p.megapixels_per_s:.2f} MP/s{eta}", file=sys.stderr)

    try:
        result = run_region(job, workers=args.workers or 1, scheduler=args.scheduler, progress=show,
                            log=lambda message: print(f"note: {message}", file=sys.stderr))
    except KeyboardInterrupt:
        print("interrupted: finished blocks are kept; run the same command again to continue", file=sys.stderr)
        return 130
    print(f"probability {result.probability}")
    print(f"mask        {result.mask}")
    print(f"{result.blocks} blocks ({result.blocks_run} run now), {result.megapixels:.1f} MP in {result.seconds:.0f} s")
    if result.roads:
        _report_network(result.network)
    return 0


def _vectorize_options(args: argparse.Namespace) -> dict[str, Any]:
    return from_flags(VectorizeOptions, args).user_options()


def _inference_options(args: argparse.Namespace) -> dict[str, Any]:
    return from_flags(InferenceOptions, args).inference_options()


def _report_network(summary: dict) -> None:
    print(f"roads       {summary['roads']}: {summary['road_count']} roads, {summary['length_km']:.2f} km, "
          f"{summary['junction_count']} junctions")


def cmd_update_map(args: argparse.Namespace) -> int:
    from core.frontends.jobs import UpdateMapJob, run_update_map
    from core.progress import CancelToken

    job = UpdateMapJob(input=args.input, roads=args.roads, out=args.out, model=args.model, bands=args.bands,
                       value_scale=args.value_scale, overwrite=args.overwrite,
                       bbox=list(args.bbox) if args.bbox else None, bbox_crs=args.bbox_crs, aoi=args.aoi,
                       compare_options=from_flags(CompareOptions, args).compare_options(),
                       vectorize_options=_vectorize_options(args), **_inference_options(args))

    def show(progress) -> None:
        if not args.quiet:
            print(f"{progress.stage}: {progress.tiles_done}/{progress.tiles_total} tiles", file=sys.stderr)

    result = run_update_map(job, progress=show, cancel=CancelToken(),
                            log=lambda message: print(f"note: {message}", file=sys.stderr))
    print(format_map_update(result))
    return 0


def format_map_update(result: dict) -> str:
    """The summary the command line prints (the plugin's message bar says the same in one line)."""
    offset = (f"offset {result['offset_mean_m']:.1f} m on average, {result['offset_p90_m']:.1f} m at the 90th "
              f"percentile" if math.isfinite(result["offset_mean_m"]) else "no offset measured")
    return (f"wrote       {result['out']}\n"
            f"missing     {result['missing_km']:.2f} km in {result['missing_pieces']} pieces: roads in the imagery "
            f"that the layer lacks (review field: new)\n"
            f"unconfirmed {result['unconfirmed_km']:.2f} km in {result['unconfirmed_pieces']} pieces: roads of the "
            f"layer the imagery does not show\n"
            f"matched     {result['matched_km']:.2f} km found on both; {offset}\n"
            f"outside     {result['outside_km']:.2f} km of the layer beyond the imagery's valid area (not judged)\n"
            f"tolerance   {result['tolerance_m']:g} m")


def cmd_vectorize(args: argparse.Namespace) -> int:
    from core.frontends.jobs import VectorizeJob, run_vectorize

    _report_network(run_vectorize(VectorizeJob(args.raster, args.out, args.gsd, args.overwrite,
                                               _vectorize_options(args)),
                                  log=lambda message: print(f"note: {message}", file=sys.stderr)))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from core.atomic import atomic_output
    from core.metrics import evaluate_files, format_table

    if args.json:
        target = Path(args.json).resolve()
        if target in (Path(args.prediction).resolve(), Path(args.reference).resolve()):
            raise OutputError(f"--json {args.json} is one of the files being compared; give another file name")
        check_output_file(target, args.overwrite)
    results = evaluate_files(args.prediction, args.reference, from_flags(EvaluateOptions, args), ignore=args.ignore,
                             area=args.area)
    print(format_table(results))
    if args.json:
        with atomic_output(args.json) as tmp:
            tmp.write_text(json.dumps(_json_numbers(results), indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    return 0


def _json_numbers(value):
    """NaN and infinities (a figure with nothing to score) as null: JSON has no NaN, and readers refuse one."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_numbers(v) for v in value]
    return value


def cmd_demo(args: argparse.Namespace) -> int:
    from core.frontends.demo import run_demo

    run_demo(Path(args.out), size=args.size, model=args.model)
    return 0


def _architecture_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-stride", type=int, choices=(8, 16),
                        help="output stride the model runs at (weights cannot show it; default: the file's, else 16)")
    parser.add_argument("--layer4", choices=("plain", "multigrid"),
                        help="layer4 dilations (weights cannot show it; default: the file's, else the seed's plain)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="road-extractor", description="Road extraction from aerial imagery.")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="what a model file holds and whether it loads, module by module")
    inspect.add_argument("file", help="a road-extractor model, a seed checkpoint, a state dict or ImageNet ResNet")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    _architecture_flags(inspect)
    inspect.set_defaults(func=cmd_inspect)

    export = sub.add_parser("export", help="write a model as ONNX and/or as the project's model file")
    export.add_argument("model", help="any model file `inspect` calls ready for inference")
    export.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX model with the description embedded")
    export.add_argument("--for", dest="target", choices=ONNX_TARGETS, default=ONNX_TARGETS[0],
                        help="whom the ONNX graph is for: road-extractor (normalised input, logits, any size; "
                        "default) or deepness (the Deepness QGIS plugin: RGB/255 in fixed tiles, probabilities, "
                        "its metadata keys)")
    export.add_argument("--tile", type=int, default=DEEPNESS_TILE,
                        help=f"tile side of the --for deepness graph in pixels (default {DEEPNESS_TILE})")
    export.add_argument("--stac", action="store_true",
                        help="also write a STAC item (MLM extension) NAME.stac.json beside each file written; "
                        "alone, beside the model file given")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset ({MIN_OPSET} or newer; default {DEFAULT_OPSET})")
    export.add_argument("--model-file", metavar="OUT.pt",
                        help="write the project's self-describing model file (e.g. from a seed checkpoint)")
    export.add_argument("--gsd", type=float, help="ground sample distance (m/px) the model was trained at")
    export.add_argument("--overwrite", action="store_true", help="replace existing output files")
    export.add_argument("--half", action="store_true",
                        help="store weights as fp16 (half the file size; ONNX still computes in fp32)")
    _architecture_flags(export)
    export.set_defaults(func=cmd_export)

    extract = sub.add_parser("extract", help="road probability and mask GeoTIFFs from a raster")
    extract.add_argument("input", nargs="+", help="a raster GDAL reads (GeoTIFF, VRT, JPEG2000, PNG with --gsd, ...); "
                         "several rasters or folders are run as one mosaic on Dask (see --workers)")
    extract.add_argument("--model", help="model file (default: the shipped model, resources/models/; "
                         "road-extractor inspect says whether a file is usable)")
    extract.add_argument("--out", required=True, help="output folder")
    inference = add_flags(extract, InferenceOptions, title="inference")
    inference.add_argument("--flip-tta", dest="augment", action="store_const", const="flip", help="= --augment flip")
    inference.add_argument("--d4-tta", dest="augment", action="store_const", const="d4", help="= --augment d4")
    extract.add_argument("--bbox", type=comma_floats, help="xmin,ymin,xmax,ymax to extract (in --bbox-crs)")
    extract.add_argument("--bbox-crs", help="CRS of --bbox, e.g. EPSG:4326 (default: the raster's)")
    extract.add_argument("--aoi", help="vector file with polygons: only tiles touching them run, results are clipped")
    extract.add_argument("--gsd", type=float, help="input metres per pixel (overrides the georeferencing; needed "
                                                   "for rasters without it)")
    extract.add_argument("--bands", help="bands fed as red,green,blue: 1-based numbers (3,2,1) or rgb, bgr, rgbnir")
    extract.add_argument("--value-scale", choices=("auto", "percentile", "none"), default="auto",
                         help="auto: 8-bit as is, other types by 2-98%% percentiles to 0..255")
    extract.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.add_argument("--no-vectorize", action="store_true", help="write the rasters only, no road GeoPackage")
    add_flags(extract, VectorizeOptions, title="vectorization (lengths in metres)")
    region = extract.add_argument_group("region scale (Dask distributed)")
    region.add_argument("--workers", type=int, help="run blocks on a local cluster of N worker processes")
    region.add_argument("--scheduler", metavar="ADDRESS", help="run blocks on an existing Dask cluster, e.g. "
                        "tcp://head:8786 (dask-jobqueue for SLURM, dask-kubernetes for Kubernetes)")
    region.add_argument("--block", type=int, default=4096,
                        help="about this many pixels per block side at the model's GSD, in whole tiles of the "
                        "mosaic's tile plan (4096)")
    region.add_argument("--cog", action="store_true", help="also assemble the blocks into Cloud-Optimized GeoTIFFs")
    extract.set_defaults(func=cmd_extract)

    vectorize = sub.add_parser("vectorize", help="road centrelines and junctions (GeoPackage) from a mask or "
                                                 "probability raster")
    vectorize.add_argument("raster", help="a road mask or probability GeoTIFF (as extract writes them)")
    vectorize.add_argument("--out", required=True, help="output GeoPackage (.gpkg)")
    vectorize.add_argument("--overwrite", action="store_true", help="replace an existing GeoPackage")
    vectorize.add_argument("--gsd", type=float, help="metres per pixel, for a raster without georeferencing")
    add_flags(vectorize, VectorizeOptions, title="vectorization (lengths in metres)")
    vectorize.set_defaults(func=cmd_vectorize)

    evaluate = sub.add_parser("evaluate", help="compare a prediction with a reference (pixels or road graphs)")
    evaluate.add_argument("prediction", help="mask/probability raster, or road lines (GeoPackage, GeoJSON, ...)")
    evaluate.add_argument("reference", help="reference mask raster or road centrelines")
    add_flags(evaluate, EvaluateOptions)
    evaluate.add_argument("--ignore", help="raster whose non-zero pixels are left out of pixel metrics")
    evaluate.add_argument("--area", help="polygons (any vector file) where the reference is complete: both sides are "
                                         "scored inside them only (for a reference that covers part of the imagery)")
    evaluate.add_argument("--json", help="also write the results as JSON to this file")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    evaluate.set_defaults(func=cmd_evaluate)

    update = sub.add_parser("update-map", help="roads missing from an existing road layer, and roads of the layer "
                                               "the imagery does not show (a GeoPackage to review in QGIS)")
    update.add_argument("input", help="georeferenced imagery (any raster GDAL reads, any CRS)")
    update.add_argument("--roads", required=True, help="the existing road layer: lines or multilines in any vector "
                                                       "format and CRS (an OpenStreetMap export, a municipal layer)")
    update.add_argument("--out", required=True, help="output GeoPackage with layers missing, unconfirmed, matched")
    update.add_argument("--model", help="model file (default: the shipped model)")
    update.add_argument("--bands", help="bands fed as red,green,blue (as for extract)")
    update.add_argument("--value-scale", choices=("auto", "percentile", "none"), default="auto",
                        help="auto: 8-bit as is, other types by 2-98%% percentiles to 0..255")
    update.add_argument("--bbox", type=comma_floats, help="xmin,ymin,xmax,ymax to compare (in --bbox-crs): roads "
                                                          "of the layer outside it are not judged")
    update.add_argument("--bbox-crs", help="CRS of --bbox, e.g. EPSG:4326 (default: the raster's)")
    update.add_argument("--aoi", help="vector file with polygons: only the imagery inside them is compared")
    update.add_argument("--overwrite", action="store_true", help="replace an existing output")
    update.add_argument("--quiet", action="store_true", help="no progress bar")
    add_flags(update, CompareOptions, title="comparison (lengths in metres)")
    add_flags(update, InferenceOptions, title="inference")
    add_flags(update, VectorizeOptions, title="vectorization (lengths in metres)")
    update.set_defaults(func=cmd_update_map)

    demo = sub.add_parser("demo", help="run the model end to end on a built-in sample")
    demo.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    demo.add_argument("--model", help="model file to run (default: the shipped model)")
    demo.add_argument("--size", type=int, default=512, help="side of the sample in pixels at 1 m/px (512)")
    demo.set_defaults(func=cmd_demo)
    return parser


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--bbox -115.17,36.2,...` as `--bbox=-115.17,36.2,...`: argparse takes a value that starts with '-' (and is
    not one plain number) for an option and stops with "expected one argument"."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--bbox" and arg[:1] == "-" and arg[1:2].isdigit():
            joined[-1] = f"--bbox={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    quiet_gdal()
    stop_on_sigterm()
    try:
        return int(args.func(args))
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"road-extractor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print(f"road-extractor: {'terminated' if isinstance(exc, Terminated) else 'interrupted'}; no output was "
              f"written", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # noqa: BLE001 - the last resort: one line, with the type, and status 1
        from core.progress import Cancelled

        if isinstance(exc, Cancelled):
            print("road-extractor: cancelled; no output was written", file=sys.stderr)
            return 130
        if _is_rasterio_error(exc):
            print(f"road-extractor: error: GDAL could not read or write a file: {exc}; check that the file is "
                  f"complete (not truncated or still downloading) and that the disk has space", file=sys.stderr)
            return 2
        print(f"road-extractor: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _is_rasterio_error(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("rasterio")


if __name__ == "__main__":
    sys.exit(main())
