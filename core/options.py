"""Every option a user sets for extraction, vectorization and evaluation, defined once: its default, its range or
choices, its command-line help and its label in QGIS.

The command line's flags (`add_flags`), the jobs the worker protocol carries (`core.frontends.jobs`), the engine's
own parameter objects (`core.extraction.extract.ExtractParams`, `core.roads.vectorize.VectorizeParams` derive from
these classes) and, through `road_extractor/engine_options.json`, the QGIS dialog and Processing parameters are
built from them. The plugin cannot import the engine (it may live in another Python), so it reads that file;
`python -m core.options --write road_extractor/engine_options.json` makes it, and tests/test_engine_worker.py
compares it with what a running engine reports (the worker's `options` operation).

Standard library only: the table is made without loading torch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.errors import InputError

PROTOCOL = 1  # the worker protocol's version; the plugin refuses an engine that speaks another

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What runs the network (`core.extraction.runtimes` says how auto decides).
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
AUGMENTS = ("none", "flip", "d4")
BRIGHTNESS = ("auto", "none")
DEFAULT_SCALES: tuple[float, ...] = (0.75, 1.0, 1.25)
ROAD_WIDTH_M = 7.0  # road lines drawn as masks this wide when nothing better is known (Massachusetts' labels)
# ONNX export (`road-extractor export --onnx`): here, not in core.model.onnx_export, so the command line's flags
# are made without loading torch. Whom the graph is for (what each means: `core.model.onnx_export`), the opsets,
# and the side of a Deepness graph's fixed tiles: 512 px is what the project's models are scored with (`training
# evaluate`: fitted tiles of at most 512 px); Deepness reads the tile size from the input shape and refuses a
# dynamic one.
ONNX_TARGETS = ("road-extractor", "deepness")
MIN_OPSET, DEFAULT_OPSET = 17, 18
DEEPNESS_TILE = 512


def option(default: Any, help: str, *, label: str | None = None, minimum: float | None = None,  # noqa: A002
           maximum: float | None = None, choices: tuple | None = None, flag: str | None = None,
           advanced: bool = False) -> Any:
    """A dataclass field that also carries how front ends present it.

    help: the command line's wording; label: the dialog's and Processing's (default: help, capitalised);
    minimum/maximum: inclusive bounds, checked by `validate`; flag: the command-line flag when it is not
    --field-name; advanced: shown under Processing's advanced parameters.
    """
    meta = {"help": help, "label": label or help[0].upper() + help[1:], "minimum": minimum, "maximum": maximum,
            "choices": choices, "flag": flag, "advanced": advanced}
    if isinstance(default, (list, tuple)):
        default = tuple(default)  # immutable, so one default can be shared by every instance
    return field(default=default, metadata=meta)


def flag_of(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def validate(options) -> None:
    """Refuse values no run can use, naming the option and what it accepts (NaN, infinities, out of range)."""
    for f in fields(options):
        if "help" not in f.metadata:
            continue
        value = getattr(options, f.name)
        meta = f.metadata
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise InputError(f"{f.name} is {v}; give a finite number")
            if meta["minimum"] is not None and v < meta["minimum"]:
                raise InputError(f"{f.name} is {v:g}; it must be at least {meta['minimum']:g}")
            if meta["maximum"] is not None and v > meta["maximum"]:
                raise InputError(f"{f.name} is {v:g}; it must be at most {meta['maximum']:g}")
        if meta["choices"] and value not in meta["choices"]:
            raise InputError(f"{f.name} {value!r} is not known; use one of {', '.join(meta['choices'])}")


@dataclass
class VectorizeOptions:
    """Mask -> skeleton -> road lines, as the user sees it: probabilities, and lengths in metres."""

    high: float = option(0.5, "probability a road piece must reach", minimum=0.0, maximum=1.0)
    low: float = option(0.3, "probability road pieces grow down to (hysteresis)", minimum=0.0, maximum=1.0)
    spur_m: float = option(12.0, "prune dead ends shorter than (m)", minimum=0.0, advanced=True)
    min_length_m: float = option(30.0, "drop isolated pieces shorter than (m)", minimum=0.0, advanced=True)
    bridge_m: float = option(48.0, "join road ends to the road ahead closer than (m)", minimum=0.0, advanced=True)
    simplify_m: float = option(1.0, "simplify lines within (m, Douglas-Peucker)", minimum=0.0, advanced=True)
    close_gaps_m: float = option(2.0, "close gaps in the mask this wide (m)", minimum=0.0, advanced=True)
    fill_holes_m2: float = option(100.0, "fill holes in the mask smaller than (m²)", minimum=0.0, advanced=True)

    def __post_init__(self) -> None:
        validate(self)
        if self.low > self.high:
            raise InputError(f"low ({self.low:g}) is above high ({self.high:g}); road pieces grow from high down to "
                             f"low, so low must not exceed high")

    def user_options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(VectorizeOptions)}


@dataclass(kw_only=True)
class InferenceOptions:
    """How the network runs over a raster."""

    tile: int = option(768, "largest tile side in pixels at the model's GSD; each raster gets the fewest tiles of "
                       "one size up to this that overlap enough to blend (1500 px: 4 tiles of 768)", minimum=32,
                       maximum=8192, label="Largest tile (pixels at the model's resolution)", advanced=True)
    overlap: int = option(32, "least overlap between tiles in pixels, blended with raised-cosine weights",
                          minimum=0, label="Tile overlap (pixels)", advanced=True)
    scales: tuple[float, ...] = option(DEFAULT_SCALES, "scales of multi-scale inference, comma-separated (1 for one "
                                       "pass: faster, usually fewer roads)", minimum=0.1, maximum=4.0,
                                       flag="--tta-scales", label="Inference scales")
    augment: str = option("none", "also average flipped images: flip (mirror, 2x time) or d4 (all 8 flips and "
                          "rotations, 8x time)", choices=AUGMENTS, label="Flips and rotations at inference")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", label="Device (auto, cpu, cuda:N)")
    precision: str = option("auto", "auto: bf16 autocast on GPUs and on CPUs with native bf16 (AMX or AVX-512 BF16 "
                            "flags), fp16 on older GPUs, else fp32", choices=PRECISIONS,
                            label="Precision (auto: bf16 where the hardware has it)")
    runtime: str = option("auto", "what runs the network: auto (on a CPU without native bf16, onnxruntime, else "
                          "OpenVINO, where installed; OpenVINO in bf16 on AVX-512 BF16 without AMX; else torch), "
                          "torch, onnxruntime or openvino (a .pt model is exported to ONNX once and cached); one "
                          "missing or failing to load falls back to torch with a note",
                          choices=RUNTIMES, label="Runtime (auto: OpenVINO on CPUs where it is faster)",
                          advanced=True)
    brightness: str = option("auto", "auto: a raster far darker or brighter than the model's training imagery "
                             "(its median outside their range) is brought into it by one gamma curve; none: values "
                             "as they are", choices=BRIGHTNESS, label="Brightness (auto: match the model's imagery)")
    threshold: float = option(0.5, "road probability for the mask", minimum=0.01, maximum=0.99,
                              label="Road probability threshold of the mask")
    batch_size: int = option(1, "tiles per batch (halved on CUDA out-of-memory)", minimum=1, advanced=True)
    output_resolution: str = option("input", "write results on the input's pixel grid or at the model's GSD",
                                    choices=("input", "model"), advanced=True)

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales:
            raise InputError("scales is empty; give at least one scale, e.g. 1")
        validate(self)
        if self.overlap > self.tile // 2:
            raise InputError(f"overlap {self.overlap} is more than half the tile ({self.tile}); give at most "
                             f"{self.tile // 2}")

    def inference_options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(InferenceOptions)}


@dataclass
class EvaluateOptions:
    """How a prediction is compared with a reference."""

    rho: float = option(3.0, "slack in pixels of relaxed precision/recall", minimum=0.0,
                        label="Relaxed metrics slack (pixels)")
    buffer_m: float = option(3.0, "buffer of completeness/correctness (m)", minimum=0.0,
                             label="Completeness/correctness buffer (m)")
    road_width_m: float = option(ROAD_WIDTH_M, "width to rasterise reference lines at, for a raster prediction (m)",
                                 minimum=0.1, label="Width of reference lines as a mask (m)")
    control_spacing_m: float = option(50.0, "spacing of APLS control nodes (m)", minimum=1.0, advanced=True)
    snap_m: float = option(4.0, "APLS snapping distance (m)", minimum=0.0, advanced=True)

    def __post_init__(self) -> None:
        validate(self)


# A fine-tune's mix of weights may lose at most this road IoU on the parent's own tiles (issue 31's target).
FORGET_TOLERANCE = 0.03
# Labels of an existing, incomplete road map (issue 32): background is taught only near its roads, where the
# parent sees none; a road the map lacks is what update-map looks for and must not be taught as background.
INCOMPLETE_BAND_M, INCOMPLETE_PROBABILITY = 40.0, 0.3


@dataclass(kw_only=True)
class FinetuneOptions:
    """What a user chooses when teaching a model their imagery (`python -m training finetune`, the worker's
    `finetune`; `training.finetune.FinetuneSpec` adds the data and the optimiser's settings)."""

    minutes: float = option(8.0, "training time in minutes (data preparation and scoring come on top)",
                            minimum=0.01, label="Training time (minutes)")
    road_width_m: float = option(0.0, "width the road lines are drawn at in metres (0: the parent model's, else "
                                 f"{ROAD_WIDTH_M:g})",
                                 minimum=0.0, label="Road width in metres (0: the model's)")
    margin_m: float = option(50.0, "without a train area, labels are trusted this far around the lines' extent (m)",
                             minimum=0.0, advanced=True)
    labels: str = option("complete", "what the labels say of the rest: complete (every road of the train area is "
                         "drawn: the rest is background) or incomplete (an existing map that lacks roads: background "
                         f"is trusted only within {INCOMPLETE_BAND_M:g} m of a drawn road and where the parent sees "
                         f"no road, probability below {INCOMPLETE_PROBABILITY:g})", choices=("complete", "incomplete"),
                         label="The road lines are", advanced=True)
    # What keeps the parent's knowledge (issue 31; each default is the variant benchmarks/finetune_places.py chose):
    distill: float = option(0.5, "weight of the parent's own road probabilities as a second target on the same crops "
                            "(learning without forgetting; 0: off)", minimum=0.0, maximum=10.0,
                            label="Keep what the parent sees (distillation weight)", advanced=True)
    # 0.25: on Shanghai (4 images, 4 min) held-out relaxed F1 +0.223 against +0.091 without, the parent's tiles
    # losing about as much (benchmarks/finetune_places.py); a no-op where the parent's data is not on the machine.
    replay: float = option(0.25, "share of each batch cut from the parent's own training data where it is on this "
                           "machine (0: none)", minimum=0.0, maximum=0.9,
                           label="Share of the parent's training data replayed", advanced=True)
    batchnorm: str = option("frozen", "BatchNorm statistics: frozen (the parent's, kept) or trained (re-estimated on "
                            "the user's imagery)", choices=("frozen", "trained"), label="BatchNorm statistics",
                            advanced=True)
    mix: str = option("auto", "weights kept: auto (the mix of parent and fine-tuned weights that scores best on the "
                      "check area, the parent itself included, among those losing at most "
                      f"{FORGET_TOLERANCE:g} road IoU on the "
                      "parent's own tiles where they are on this machine) or all (the fine-tuned weights as they are)",
                      choices=("auto", "all"), label="Weights kept", advanced=True)


@dataclass(kw_only=True)
class CompareOptions:
    """How extracted roads are compared with an existing road layer (`road-extractor update-map`)."""

    tolerance_m: float = option(8.0, "an extracted road and a road of the layer closer than this are the same road "
                                "(m)", minimum=0.5, maximum=100.0, label="Same road within (m)")
    min_piece_m: float = option(15.0, "report missing and unconfirmed pieces from this length; shorter stretches "
                                "count as their neighbours (m)", minimum=0.0, label="Shortest piece reported (m)",
                                advanced=True)
    support_probability: float = option(0.3, "a road of the layer with at least this road probability within the "
                                        "tolerance is supported even where no line was extracted", minimum=0.0,
                                        maximum=1.0, label="Probability that supports a road of the layer",
                                        advanced=True)
    step_m: float = option(2.0, "lines are compared in steps of this length (m)", minimum=0.1, maximum=50.0,
                           advanced=True)

    def __post_init__(self) -> None:
        validate(self)

    def compare_options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(CompareOptions)}


GROUPS = {"inference": InferenceOptions, "vectorize": VectorizeOptions, "evaluate": EvaluateOptions,
          "finetune": FinetuneOptions, "compare": CompareOptions}


def describe(cls) -> dict[str, dict[str, Any]]:
    table = {}
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()
        entry = {"default": list(default) if isinstance(default, tuple) else default, "type": type(default).__name__}
        entry.update({k: list(v) if isinstance(v, tuple) else v for k, v in f.metadata.items()})
        entry["flag"] = flag_of(f)
        table[f.name] = entry
    return table


def option_table() -> dict[str, Any]:
    """Every group's options as JSON-able data: what the plugin builds its fields and parameters from."""
    return {"protocol": PROTOCOL, **{name: describe(cls) for name, cls in GROUPS.items()}}


def table_json() -> str:
    """The table as the plugin's `engine_options.json` holds it."""
    return json.dumps(option_table(), indent=1, ensure_ascii=False) + "\n"


def comma_floats(text: str) -> tuple[float, ...]:
    """A command-line list of numbers, `0.75,1,1.25` (or with `;`)."""
    try:
        return tuple(float(v) for v in text.replace(";", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def add_flags(parser, cls, *, title: str | None = None):
    """One command-line flag per option of `cls`, in a group called `title` if given (returned, for more flags);
    help texts end with the default."""
    target = parser.add_argument_group(title) if title else parser
    for name, entry in describe(cls).items():
        default = entry["default"]
        shown = ",".join(f"{v:g}" for v in default) if isinstance(default, list) else default
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": f"{entry['help']} (default {shown})"}
        if entry["choices"]:
            kwargs["choices"] = entry["choices"]
        parsers = {"float": float, "int": int, "str": str, "list": comma_floats, "tuple": comma_floats}
        kwargs["type"] = parsers[entry["type"]]
        target.add_argument(entry["flag"], **kwargs)
    return target


def from_flags(cls, args: argparse.Namespace, **extra):
    """The options the flags gave; flags left out keep the class's defaults."""
    given = {name: getattr(args, name) for name in describe(cls) if getattr(args, name, None) is not None}
    return cls(**given, **extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.options", description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", metavar="FILE", help="write the table as JSON (road_extractor/engine_options.json)")
    args = parser.parse_args(argv)
    text = table_json()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
