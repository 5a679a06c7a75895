"""`python -m training fit | export` (evaluate, doctor and ablate are not in this release yet)."""

import argparse
import sys
from pathlib import Path

from core.errors import InputError

from .config import add_flags, resolve


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description="Headless training of road models.")
    sub = parser.add_subparsers(dest="command", required=True)
    fit_parser = sub.add_parser("fit", help="two-stage training; resumes from the run folder's last checkpoint")
    add_flags(fit_parser)
    export_parser = sub.add_parser("export", help="a training checkpoint -> the project's model file")
    export_parser.add_argument("checkpoint", help="e.g. RUN/checkpoints/best.ckpt")
    export_parser.add_argument("--out", required=True, help="model file to write (.pt)")
    export_parser.add_argument("--half", action="store_true", help="store weights as fp16")
    args = parser.parse_args(argv)
    try:
        if args.command == "fit":
            from .fit import fit

            print(f"best checkpoint: {fit(resolve(args))}")
        else:
            from .fit import export

            print(f"wrote {export(Path(args.checkpoint), Path(args.out), args.half)}")
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"python -m training: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
