"""`python -m training fit | evaluate | doctor | ablate | export | average | promote | finetune | review | pack`."""

import argparse
import json
import sys
from pathlib import Path

from core.errors import InputError, Terminated, quiet_gdal, stop_on_sigterm
from core.options import EvaluateOptions, InferenceOptions, describe

from .config import add_flags, resolve
from .promotion import LINES_MARGIN, places_verdict, promotion_verdict


def _line_shifts(text: str) -> int:
    from .evaluate import checked_line_shifts

    try:
        return checked_line_shifts(int(text) if text.isdigit() else text)
    except InputError as exc:  # argparse's own one-line refusal, exit 2, before any work
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--line-shifts ")) from None


def _lines_margin(text: str) -> float:
    """`promote --lines-margin`: a share from 0 (the strict rule) to below 1, refused before any file is read."""
    try:
        margin = float(text)
    except ValueError:
        margin = float("nan")
    if not 0 <= margin < 1:
        raise argparse.ArgumentTypeError(f"{text}: give a share from 0 (the strict rule) to below 1")
    return margin


def _add_lines_flags(parser) -> None:
    parser.add_argument("--lines", action="append", default=[], metavar="FOLDER",
                        help="also score extracted road lines against reference centrelines: a folder of NAME.tif + "
                             "NAME_roads.geojson|gpkg (e.g. ../shared/data/spacenet); repeatable")
    parser.add_argument("--buffer-m", type=float, default=5.0,
                        help="completeness/correctness distance for --lines, in metres (5)")
    parser.add_argument("--line-shifts", type=_line_shifts, default=1, metavar="N",
                        help="score each --lines raster N times, its origin moved 0..N-1 pixels in, and report the "
                             "mean and spread (one origin's figure is a draw: the model card's \"How noisy is the "
                             "Vegas tile?\"); 1: the raster as it is (default)")


def _add_evaluate_flags(parser: argparse.ArgumentParser) -> None:
    rho = EvaluateOptions().rho
    parser.add_argument("--rho", type=float, default=rho, help=f"slack of relaxed precision/recall in pixels ({rho:g})")
    parser.add_argument("--no-graphs", action="store_true", help="skip APLS (vectorizing every tile)")
    brightness = describe(InferenceOptions)["brightness"]
    parser.add_argument("--brightness", choices=brightness["choices"], default=brightness["default"],
                        help=f"{brightness['help']} (default {brightness['default']})")


def add_finetune_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per FinetuneSpec field, with its default and help from one place."""
    from core.options import FinetuneOptions
    from core.options import add_flags as add_option_flags

    from .finetune import FinetuneSpec

    d = FinetuneSpec(rasters=[], out="")
    parser.add_argument("--raster", action="append", required=True, dest="rasters", metavar="IMAGE.tif",
                        help="georeferenced imagery (repeat for more rasters)")
    parser.add_argument("--roads", default="", help="road centrelines (GeoPackage, shapefile, GeoJSON; any CRS)")
    parser.add_argument("--masks", action="append", default=[], metavar="MASK.tif",
                        help="instead of --roads: a road mask per raster on its grid (0/1 or 0/255)")
    parser.add_argument("--not-roads", default="", help="lines known not to be road (e.g. an update-map review's "
                        "rejected pieces): taught as background within a road width of them")
    parser.add_argument("--train-area", default="", help="polygons where the labels are complete (default: the "
                                                         f"lines' extent + {d.margin_m:g} m)")
    parser.add_argument("--check-area", default="", help="polygons scored before and after and never trained on "
                                                         "(default: blocks holding a fifth of the labelled road)")
    parser.add_argument("--bands", default="", help="bands read as red, green, blue, as extract's --bands (1,1,1: "
                                                    "a grey band to all three; default: by colour interpretation)")
    add_option_flags(parser, FinetuneOptions)
    parser.add_argument("--out", required=True, help="the new model file (.pt)")
    parser.add_argument("--init", default="", help="the model to start from (default: the shipped model)")
    parser.add_argument("--gsd-m", type=float, default=0.0, help="metres per pixel to learn at (default: the "
                        "imagery's own, within half to once the parent's GSD)")
    for name in ("crop", "batch_size", "lr", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(d, name)), default=getattr(d, name))
    parser.add_argument("--loss", default=d.loss, choices=("ce", "ce_dice", "ce_dice_cldice"))
    parser.add_argument("--precision", default=d.precision, choices=("auto", "fp32", "bf16", "fp16"))
    parser.add_argument("--device", default=d.device)
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--json", help="also write the before/after figures to this JSON file")


def main(argv=None) -> int:
    quiet_gdal()
    parser = argparse.ArgumentParser(prog="python -m training", description="Headless training of road models.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_parser = sub.add_parser("fit", help="two-stage training; resumes from the run folder's last checkpoint")
    add_flags(fit_parser)

    evaluate_parser = sub.add_parser(
        "evaluate", help="a model on the held-out tiles (or all), with and without multi-scale inference")
    evaluate_parser.add_argument("model", help="RUN/checkpoints/best.ckpt, a model file, or a seed checkpoint")
    evaluate_parser.add_argument("--tiles", choices=("val", "all"), default="val",
                                 help="the validation split of --data/--val-tiles/--seed (default), or every tile")
    evaluate_parser.add_argument("--json", help="also write the figures to this JSON file")
    _add_lines_flags(evaluate_parser)
    evaluate_parser.add_argument("--skip-tiles", action="store_true",
                                 help="only the --lines rasters, not the validation tiles")
    evaluate_parser.add_argument("--places", action="store_true",
                                 help="one row per place: the held-out images every --data source's description "
                                      "lists (e.g. --config datasets/places.yaml), one scale")
    _add_evaluate_flags(evaluate_parser)
    add_flags(evaluate_parser)

    doctor_parser = sub.add_parser("doctor", help="why doesn't mIoU move? checks of labels, balance, stages, "
                                                  "gradients, attention gates, and an overfit-one-batch test")
    doctor_parser.add_argument("--overfit-steps", type=int, default=150, help="0 skips the overfit test")
    doctor_parser.add_argument("--json", help="also write the figures to this JSON file")
    add_flags(doctor_parser)

    ablate_parser = sub.add_parser("ablate", help="train and evaluate a grid of variants with the same budget")
    ablate_parser.add_argument("--grid", action="append", default=[], metavar="OPTION=V1,V2",
                               help="an axis, e.g. attention=seed,psa,none (repeat for more axes)")
    _add_lines_flags(ablate_parser)
    ablate_parser.add_argument("--one-at-a-time", action="store_true",
                               help="train the base configuration, then change one axis per variant, instead of "
                                    "every combination (e.g. --grid seed=0,1 then measures the base's noise)")
    add_flags(ablate_parser)

    export_parser = sub.add_parser("export", help="a training checkpoint -> the project's model file")
    export_parser.add_argument("checkpoint", help="e.g. RUN/checkpoints/best.ckpt, or a model file (an `average`) "
                                                  "to record --evaluation figures in")
    export_parser.add_argument("--out", required=True, help="model file to write (.pt)")
    export_parser.add_argument("--half", action="store_true", help="store weights as fp16")
    export_parser.add_argument("--onnx", metavar="OUT.onnx", help="also write ONNX (through core's exporter)")
    export_parser.add_argument("--evaluation", metavar="EVAL.json",
                               help="record held-out figures from `evaluate --json` and the tiles they come from")
    average_parser = sub.add_parser(
        "average", help="one model from the mean of several models' weights (a run's epoch snapshots, a soup)")
    average_parser.add_argument("models", nargs="+", help="training checkpoints or model files of one architecture, "
                                                          "e.g. RUN/checkpoints/epoch-1*.ckpt")
    average_parser.add_argument("--out", required=True, help="model file to write (.pt)")
    average_parser.add_argument("--half", action="store_true", help="store weights as fp16")
    average_parser.add_argument("--evaluation", metavar="EVAL.json",
                                help="record held-out figures from `evaluate --json` of the averaged model")
    average_parser.add_argument("--batchnorm-from", metavar="RUN/config.yaml",
                                help="recompute the BatchNorm statistics for the mean weights on training crops "
                                     "drawn as that run draws them (as SWA does; averaged statistics do not fit "
                                     "averaged weights)")
    average_parser.add_argument("--batchnorm-crops", type=int, default=None, metavar="N",
                                help="crops for --batchnorm-from (default: one epoch of that run's)")
    promote_parser = sub.add_parser(
        "promote", help="does a candidate's evaluation beat the shipped model enough to replace it? (exit 0: yes)")
    promote_parser.add_argument("evaluation", help="the candidate's `evaluate --json` file (with --lines for Vegas)")
    promote_parser.add_argument("--shipped", default="", help="the model to beat (default: the shipped model)")
    promote_parser.add_argument("--shipped-evaluation", default="",
                                help="its `evaluate --json` file, where its model file lacks some figures")
    promote_parser.add_argument("--lines-margin", type=_lines_margin, default=LINES_MARGIN, metavar="M",
                                help="how far reference-line completeness and correctness may fall and still count "
                                     f"as not lower (default {LINES_MARGIN:g}: about two standard errors of the paired "
                                     "difference of two 8-origin means on the Vegas tile; 0: the strict rule)")
    finetune_parser = sub.add_parser(
        "finetune", help="teach a road model your imagery from road lines (or masks) you have, in minutes")
    add_finetune_flags(finetune_parser)
    from core.options import FinetuneOptions

    review_parser = sub.add_parser(
        "review", help="teach from an update-map review (accepted pieces as road, rejected as background), then "
                       "compare again: the next round's GeoPackage, model and reviewed layer")
    review_parser.add_argument("review", help="the update-map GeoPackage, its review fields marked")
    review_parser.add_argument("--minutes", type=float, default=FinetuneOptions().minutes,
                               help="fine-tuning budget (default %(default)g)")
    review_parser.add_argument("--raster", default="", help="the imagery (default: the one the GeoPackage records)")
    review_parser.add_argument("--roads", default="", help="the road layer compared (default: the one it records)")
    review_parser.add_argument("--init", default="", help="the model taught (default: the one that made it)")
    review_parser.add_argument("--out", default="", help="the round's GeoPackage (default: NAME-roundN.gpkg beside "
                                                         "the review; its model and layer beside it)")
    review_parser.add_argument("--overwrite", action="store_true")
    pack_parser = sub.add_parser(
        "pack", help="a small copy of training data (training images, fine ones averaged down, JPEG) to take to a "
                     "machine with a size limit; prints the fit --data flags for it")
    pack_parser.add_argument("--data", action="append", default=[], metavar="FOLDER[:WEIGHT]",
                             help="as for fit (weights are carried into the printed flags); repeatable")
    pack_parser.add_argument("--out", required=True, help="a new folder")
    pack_parser.add_argument("--max-mb", type=float, default=24.0, help="size limit of the copy (default 24)")
    pack_parser.add_argument("--finest-gsd-m", type=float, default=0.5,
                             help="images finer than this are averaged down to it (default 0.5)")
    pack_parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    pack_parser.add_argument("--keep-validation", type=int, default=2, metavar="N",
                             help="validation images of the first source kept, for fit's validation (default 2)")
    pack_parser.add_argument("--whole", action="append", default=[], metavar="NAME",
                             help="a source (its packed folder's name) never trimmed; repeatable")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    try:
        return COMMANDS[args.command](args)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"python -m training {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM as `Terminated`: outputs are written atomically
        stopped = "terminated" if isinstance(exc, Terminated) else "interrupted"
        # fit and ablate keep their checkpoints; the folder is the resolved one (--out, or a --config file's out:).
        after = (f"run the same command again to resume from {resolve(args).out}'s last checkpoint"
                 if args.command in ("fit", "ablate") else "no output was written")
        print(f"python -m training {args.command}: {stopped}; {after}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130


def cmd_pack(args) -> int:
    from .pack import pack

    print(pack(args.data, Path(args.out), args.max_mb, args.finest_gsd_m, args.quality, args.keep_validation,
               tuple(args.whole)))
    return 0


def cmd_fit(args) -> int:
    from .fit import fit

    print(f"best checkpoint: {fit(resolve(args))}")
    return 0


def cmd_evaluate(args) -> int:
    from .data import read_pair
    from .evaluate import evaluate_tiles, format_results, with_and_without_multiscale
    from .fit import LIGHTNING_PRECISIONS, road_model

    config = resolve(args)
    if args.skip_tiles and not args.lines:
        raise InputError("--skip-tiles leaves nothing to score; give --lines FOLDER, or drop --skip-tiles")
    choice = models_by_resolution(Path(args.model)) if Path(args.model).is_dir() else None
    model = choice(None)[0] if choice else road_model(Path(args.model))
    # --precision: the arithmetic of inference here (auto: bf16 where the hardware has it, as for users)
    inferences = with_and_without_multiscale(config.val_tile, config.val_overlap, args.brightness,
                                             LIGHTNING_PRECISIONS.get(config.precision, config.precision))
    results: dict = {}
    if args.places:
        from .evaluate import evaluate_places, format_places

        if args.skip_tiles:
            raise InputError("--places scores held-out tiles; drop --skip-tiles")
        split = config.split()
        single = inferences[0]
        places = evaluate_places(choice or model, split, config.gsd_m, single,
                                 log=lambda m: print(m, file=sys.stderr))
        print(f"{args.model}, one scale, per place (relaxed within {next(iter(places.values()))['rho_m']:g} m):")
        print(format_places(places))
        # The first place is the first source's validation tiles: recorded as the held-out figures, as before.
        results = {single.label: next(iter(places.values())), "places": places}
        inferences = [single]  # and the reference lines at the same one scale
    elif not args.skip_tiles:  # only the tiles need the data folders split
        split = config.split()
        pairs = split.val if args.tiles == "val" else sorted(split.train + split.val, key=lambda p: p.name)
        tiles = ((p.name, *read_pair(p, split.labels)) for p in pairs)
        results = evaluate_tiles(model, tiles, config.gsd_m, inferences, rho=args.rho,
                                 graphs=not args.no_graphs, log=lambda m: print(m, file=sys.stderr))
        print(f"{args.model} on {len(pairs)} {args.tiles} tile(s) of {config.data[0]}:")
        print(format_results(results))
    if args.lines:
        from .evaluate import evaluate_line_references, format_line_results, line_references

        line_pairs = line_references(args.lines)
        if choice:  # the engine's pick for the (first) reference raster's resolution
            from core.inputs.raster import RasterioSource
            from core.model.catalog import imagery_gsd

            with RasterioSource(line_pairs[0].image) as source:
                model, name = choice(imagery_gsd(source.info.gsd_m))
            print(f"{args.model}: {name} for the reference rasters", file=sys.stderr)
        lines = evaluate_line_references(model, line_pairs, inferences, args.buffer_m, shifts=args.line_shifts,
                                         log=lambda m: print(m, file=sys.stderr))
        print(f"{args.model}: extracted lines against {len(line_pairs)} reference line file(s), within "
              f"{args.buffer_m:g} m:")
        print(format_line_results(lines))
        results["lines"] = lines
    if args.json:
        _write_json(Path(args.json), results)
    return 0


def models_by_resolution(folder: Path):
    """A models folder as the engine reads it: imagery GSD (None: unknown) -> (the model it picks, its file name);
    each file loaded once."""
    from core.model.catalog import choose, read_catalog

    from .fit import road_model

    catalog, loaded = read_catalog(folder), {}

    def pick(gsd_m: float | None):
        path = choose(catalog, gsd_m).path
        if path not in loaded:
            loaded[path] = road_model(path)
        return loaded[path], path.name

    return pick


def cmd_finetune(args) -> int:
    from dataclasses import fields

    from .finetune import FinetuneSpec, finetune

    spec = FinetuneSpec(**{f.name: getattr(args, f.name) for f in fields(FinetuneSpec)
                           if getattr(args, f.name, None) is not None})  # flags left out keep the defaults
    result = finetune(spec, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        _write_json(Path(args.json), result)
    print(result["model"])
    return 0


def cmd_review(args) -> int:
    from .review import teach_from_review

    result = teach_from_review(args.review, args.minutes, imagery=args.raster, layer=args.roads, init=args.init,
                               out=args.out, overwrite=args.overwrite,
                               log=lambda m: print(m, file=sys.stderr, flush=True))
    from core.frontends.cli import format_map_update

    print(format_map_update(result))
    print(f"round       {result['out']} (model {result['model']}; the layer as reviewed: {result['roads_layer']})")
    return 0


def cmd_promote(args) -> int:
    from core.model.catalog import open_model, resolve_model

    from .evaluate import Inference
    from .fit import held_out_metrics, line_metrics

    candidate, tiles = held_out_metrics(_read_evaluation(Path(args.evaluation)))
    shipped_path = resolve_model(args.shipped or None)
    shipped_model = open_model(shipped_path)
    shipped = dict(shipped_model.info.metrics)
    if args.shipped_evaluation:
        evaluation = _read_evaluation(Path(args.shipped_evaluation))
        shipped.update(held_out_metrics(evaluation)[0] if Inference(scales=(1.0,)).label in evaluation
                       else line_metrics(evaluation))
    recorded = shipped_model.info.provenance.get("validation_tiles")
    if recorded and sorted(recorded) != sorted(tiles):
        raise InputError(f"the candidate was evaluated on {tiles}, the shipped model on {recorded}; evaluate on the "
                         f"same tiles (--data, --val-tiles, --seed as in its card)")
    if "places" in candidate:  # the per-place rule (issue 30) replaces the Massachusetts + Vegas one
        ok, reasons = places_verdict(candidate, shipped)
    else:
        ok, reasons = promotion_verdict(candidate, shipped, args.lines_margin)
    print(f"candidate {args.evaluation} against {shipped_path.name}:")
    print("\n".join(reasons))
    print("verdict: promote (export it with --evaluation and update the model card)" if ok else
          "verdict: keep the shipped model")
    return 0 if ok else 1


def cmd_doctor(args) -> int:
    from .doctor import doctor, format_finding

    findings = doctor(resolve(args), overfit_steps=args.overfit_steps,
                      log=lambda finding: print(format_finding(finding), flush=True))
    if args.json:
        _write_json(Path(args.json), [f.__dict__ for f in findings], default=str)
    failed = [f.check for f in findings if f.level == "fail"]
    print(f"doctor: {len(findings)} checks, {sum(f.level == 'warn' for f in findings)} warnings, "
          f"{len(failed)} failures{' (' + ', '.join(failed) + ')' if failed else ''}")
    return 1 if failed else 0


def cmd_ablate(args) -> int:
    from .ablate import ablate, parse_grid
    from .evaluate import line_references

    config = resolve(args)
    rows = ablate(config, parse_grid(args.grid), Path(config.out), log=lambda m: print(m, file=sys.stderr),
                  one_at_a_time=args.one_at_a_time, line_pairs=line_references(args.lines), buffer_m=args.buffer_m,
                  line_shifts=args.line_shifts)
    print((Path(config.out) / "results.md").read_text())
    print(f"{len(rows)} rows in {Path(config.out) / 'results.csv'}")
    return 0


def cmd_export(args) -> int:
    from .fit import export

    evaluation = _read_evaluation(Path(args.evaluation)) if args.evaluation else None
    written = export(Path(args.checkpoint), Path(args.out), args.half, evaluation=evaluation)
    print(f"wrote {written}")
    if args.onnx:
        from core.model.checkpoint import load_model
        from core.model.onnx_export import export_onnx

        print(f"wrote {export_onnx(load_model(written), args.onnx, half=args.half)}")
    return 0


def cmd_average(args) -> int:
    from .average import average

    evaluation = _read_evaluation(Path(args.evaluation)) if args.evaluation else None
    batchnorm_from = None
    if args.batchnorm_from:
        from .config import TrainConfig, read_config

        batchnorm_from = TrainConfig.from_dict(read_config(Path(args.batchnorm_from)))
    if args.batchnorm_crops is not None and (args.batchnorm_crops < 1 or batchnorm_from is None):
        raise InputError("--batchnorm-crops N: give a positive number of crops, with --batchnorm-from RUN/config.yaml")
    written = average([Path(m) for m in args.models], Path(args.out), args.half, evaluation=evaluation,
                      batchnorm_from=batchnorm_from, batchnorm_crops=args.batchnorm_crops)
    print(f"wrote {written}")
    return 0


def _write_json(path: Path, data, default=None) -> None:
    """`--json` files whole or not at all: `promote` and `export --evaluation` read them later."""
    from core.atomic import atomic_output

    with atomic_output(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=default))


def _read_evaluation(path: Path) -> dict:
    fix = f"write it with `python -m training evaluate CKPT --json {path}`"
    if not path.is_file():
        raise InputError(f"the evaluation {path} does not exist; {fix}")
    try:
        evaluation = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"the evaluation {path} is not JSON ({exc}); {fix}") from None
    if not isinstance(evaluation, dict):
        raise InputError(f"the evaluation {path} is not what `evaluate --json` writes; {fix}")
    return evaluation


COMMANDS = {"fit": cmd_fit, "evaluate": cmd_evaluate, "doctor": cmd_doctor, "ablate": cmd_ablate,
            "export": cmd_export, "average": cmd_average, "finetune": cmd_finetune,
            "promote": cmd_promote, "review": cmd_review, "pack": cmd_pack}

if __name__ == "__main__":
    sys.exit(main())
