"""`python -m training fit | evaluate | doctor | ablate | export`."""

import argparse
import json
import sys
from pathlib import Path

from core.errors import InputError

from .config import add_flags, resolve


def _add_evaluate_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rho", type=float, default=3.0, help="slack of relaxed precision/recall in pixels (3)")
    parser.add_argument("--no-graphs", action="store_true", help="skip APLS (vectorizing every tile)")


def main(argv=None) -> int:
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
    add_flags(ablate_parser)

    export_parser = sub.add_parser("export", help="a training checkpoint -> the project's model file")
    export_parser.add_argument("checkpoint", help="e.g. RUN/checkpoints/best.ckpt")
    export_parser.add_argument("--out", required=True, help="model file to write (.pt)")
    export_parser.add_argument("--half", action="store_true", help="store weights as fp16")
    export_parser.add_argument("--onnx", metavar="OUT.onnx", help="also write ONNX (through core's exporter)")
    export_parser.add_argument("--evaluation", metavar="EVAL.json",
                               help="record held-out figures from `evaluate --json` and the tiles they come from")
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"python -m training {args.command}: error: {exc}", file=sys.stderr)
        return 2


def cmd_fit(args) -> int:
    from .fit import fit

    print(f"best checkpoint: {fit(resolve(args))}")
    return 0


def cmd_evaluate(args) -> int:
    from .data import read_pair
    from .evaluate import evaluate_tiles, format_results, with_and_without_multiscale
    from .fit import road_model

    config = resolve(args)
    split = config.split()
    pairs = split.val if args.tiles == "val" else sorted(split.train + split.val, key=lambda p: p.name)
    model = road_model(Path(args.model))
    tiles = ((p.name, *read_pair(p, split.labels)) for p in pairs)
    inferences = with_and_without_multiscale(config.val_tile, config.val_overlap)
    results = evaluate_tiles(model, tiles, config.gsd_m, inferences, rho=args.rho,
                             graphs=not args.no_graphs, log=lambda m: print(m, file=sys.stderr))
    print(f"{args.model} on {len(pairs)} {args.tiles} tile(s) of {config.data}:")
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import doctor, format_finding

    findings = doctor(resolve(args), overfit_steps=args.overfit_steps,
                      log=lambda finding: print(format_finding(finding), flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps([f.__dict__ for f in findings], indent=2, default=str))
    failed = [f.check for f in findings if f.level == "fail"]
    print(f"doctor: {len(findings)} checks, {sum(f.level == 'warn' for f in findings)} warnings, "
          f"{len(failed)} failures{' (' + ', '.join(failed) + ')' if failed else ''}")
    return 1 if failed else 0


def cmd_ablate(args) -> int:
    from .ablate import ablate, parse_grid

    config = resolve(args)
    rows = ablate(config, parse_grid(args.grid), Path(config.out), log=lambda m: print(m, file=sys.stderr))
    print((Path(config.out) / "results.md").read_text())
    print(f"{len(rows)} rows in {Path(config.out) / 'results.csv'}")
    return 0


def cmd_export(args) -> int:
    from .fit import export

    evaluation = _read_evaluation(Path(args.evaluation)) if args.evaluation else None
    written = export(Path(args.checkpoint), Path(args.out), args.half, evaluation=evaluation)
    print(f"wrote {written}")
    if args.onnx:
        from core.checkpoint import load_model
        from core.onnx_export import export_onnx

        print(f"wrote {export_onnx(load_model(written), args.onnx, half=args.half)}")
    return 0


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
            "export": cmd_export}

if __name__ == "__main__":
    sys.exit(main())
