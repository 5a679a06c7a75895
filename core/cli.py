"""`road-extractor` (also `python -m core`): a thin shell over the engine."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, RoadModel, compare, infer_architecture, load_model, read_weights, save_model
from .model import ConfigError, build_model


def _describe(path: Path, output_stride: int | None, layer4: str | None) -> dict[str, Any]:
    weights = read_weights(path)
    architecture = infer_architecture(weights, output_stride, layer4)
    report = compare(build_model(architecture.config), weights)
    if weights.backbone_only:
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
        for key, value in {**info["metrics"], **info["provenance"]}.items():
            print(f"{key:<12}{value}")
    print("load report")
    print("  " + text.replace("\n", "\n  "))
    print(f"verdict     {details['verdict']}")
    return 0


def _load(args: argparse.Namespace) -> RoadModel:
    return load_model(args.model, output_stride=args.output_stride, layer4=args.layer4, gsd_m=args.gsd)


def cmd_export(args: argparse.Namespace) -> int:
    if not args.onnx and not args.model_file:
        raise CheckpointError("nothing to export; give --onnx OUT.onnx and/or --model-file OUT.pt")
    model = _load(args)
    if args.model_file:
        save_model(args.model_file, model.network, model.info, half=args.half)
        print(f"wrote {args.model_file} (road-extractor model file{', fp16' if args.half else ''})")
    if args.onnx:
        from .onnx_export import export_onnx

        export_onnx(model, args.onnx, opset=args.opset)
        print(f"wrote {args.onnx} (ONNX opset {args.opset}, dynamic batch/height/width)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out))
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
    export.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer; default 18)")
    export.add_argument("--model-file", metavar="OUT.pt",
                        help="write the project's self-describing model file (e.g. from a seed checkpoint)")
    export.add_argument("--gsd", type=float, help="ground sample distance (m/px) the model was trained at")
    export.add_argument("--half", action="store_true", help="store weights as fp16 (half the file size)")
    _architecture_flags(export)
    export.set_defaults(func=cmd_export)

    demo = sub.add_parser("demo", help="run the model end to end on a built-in sample")
    demo.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"road-extractor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("road-extractor: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
