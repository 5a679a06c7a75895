"""How much of a Vegas figure is rounding: models on the SpaceNet Las Vegas tile, scored as `training evaluate
--lines` scores them (one scale, 512 px tiles, 64 px overlap, brightness matching), in fp32 arithmetic and, where
the CPU has native bf16, in bf16 autocast. A model file stored in fp16 (`export --half`, the shipped file) can be
given beside the checkpoint it came from: the difference between the rows of one model is noise that any
comparison of two models on this tile must be read against.

    python benchmarks/vegas_arithmetic.py [MODEL ...]   (training checkpoints or model files; default: the shipped)

Needs ../shared/data/spacenet (research data, not part of the project).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VEGAS = REPO.parent / "shared" / "data" / "spacenet"


def main() -> int:
    from core.extraction.devices import native_cpu_bf16
    from core.model.catalog import default_model
    from training.evaluate import Inference, evaluate_line_references, line_references
    from training.fit import road_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="training checkpoints or model files (default: the shipped model)")
    args = parser.parse_args()
    if not (VEGAS / "vegas_img0.tif").exists():
        print(f"{VEGAS} is missing: this benchmark needs the research data in ../shared/data/spacenet")
        return 2
    pairs = line_references([str(VEGAS)])
    bf16_flag = native_cpu_bf16()
    arithmetics = ["fp32"] + (["bf16"] if bf16_flag else [])
    print(f"{len(pairs)} raster(s) of {VEGAS}, lines within 5 m; bf16: "
          f"{bf16_flag or 'no native bf16 on this CPU, fp32 only'}\n")
    print("| model | arithmetic | completeness | correctness | APLS | km found |")
    print("|---|---|---|---|---|---|")
    for path in args.models or [str(default_model())]:
        model = road_model(Path(path))
        for arithmetic in arithmetics:
            inference = Inference(tile=512, overlap=64, precision=arithmetic)
            f = evaluate_line_references(model, pairs, [inference])[inference.label]
            print(f"| {Path(path).name} | {arithmetic} | {f['completeness']:.3f} | {f['correctness']:.3f} | "
                  f"{f['apls']:.3f} | {f['proposal_km']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
