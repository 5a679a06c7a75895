"""The training configuration: one typed object, read from YAML, every field also a command-line flag, saved
beside each run as it was resolved."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from core.errors import InputError, unknown_fields
from core.model import ModelConfig
from core.options import PRECISIONS, ROAD_WIDTH_M

from .augment import Augment
from .yaml_files import read_yaml


@dataclass
class TrainConfig:
    # Training data folders, `PATH` or `PATH:WEIGHT` (how often its crops are drawn, relative); validation tiles
    # come from the first one only, so adding folders keeps every validation figure comparable.
    data: list[str] = field(default_factory=list)
    out: str = "runs/road"
    val_tiles: float = 4  # whole tiles held out: a count, or a fraction below 1
    crop: int = 256
    augment: str = "sensors"  # mild (flips, scale, +-10% colour) or sensors (other sensors, seasons, resolutions)
    invert_brightness: float = 0.0  # share of crops with brightness inverted, colours kept (dark roads, light ground)
    batch_size: int = 8
    crops_per_epoch: int = 800
    # The seed's two stages: backbone frozen (BatchNorm statistics too) at the larger rate, then everything.
    stage1_epochs: int = 2
    stage2_epochs: int = 8
    lr_stage1: float = 0.01
    lr_stage2: float = 0.001
    backbone_lr_factor: float = 0.1  # the seed codebase's 1x backbone / 10x head
    optimizer: str = "sgd"  # sgd (momentum 0.9) or adamw
    weight_decay: float = 5e-4
    loss: str = "ce_dice"  # ce, ce_dice, or ce_dice_cldice (soft clDice for connectivity)
    class_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    grad_clip: float = 1.0
    init: str = ""  # ImageNet ResNet weights or any checkpoint core's loader reads
    gsd_m: float = 1.0  # ground sample distance of the training data (georeferenced rasters are resampled to it)
    road_width_m: float = ROAD_WIDTH_M  # width road centrelines are rasterised at (vector labels only)
    # What a road-surface mask (a dataset.yaml's `label: surface`) is trained as: as_is, or centreline (its
    # skeleton widened to --road-width-m is road, the rest of the surface ignored; centreline buffers stay as
    # drawn), or one_width (centreline, and buffers of a stated other label_width_m redrawn at --road-width-m too).
    label_target: str = "as_is"
    seed: int = 0  # weights' initialisation, crops and augmentation
    # Which tiles are held out: apart from --seed, so runs with other seeds are scored on the same tiles and
    # never train on them (the model card's 6 tiles are --val-tiles 6 --split-seed 0).
    split_seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on GPUs and CPUs with native bf16 (core.extraction.devices)
    val_scales: list[float] = field(default_factory=lambda: [1.0])
    val_tile: int = 512
    val_overlap: int = 64
    # Folders of rasters with reference centrelines (as `evaluate --lines`), scored after every validation: how
    # the run does on imagery unlike its own, epoch by epoch. Logged only; the best checkpoint is still chosen by
    # the validation tiles' road IoU, so these rasters stay a test, not something the run is tuned to.
    val_lines: list[str] = field(default_factory=list)
    num_workers: int = 0
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 50  # mid-epoch checkpoints, so a killed run loses little
    # Keep the weights of every Nth epoch as checkpoints/epoch-NN.ckpt (0: none), e.g. for `training average`.
    epoch_snapshots: int = 0
    # Epochs between validations (0: none, e.g. on a machine without GDAL, whose tiled validation writes GeoTIFFs;
    # the run's result is then its last epoch).
    validate_every: int = 1
    model: dict[str, Any] = field(default_factory=lambda: ModelConfig(backbone="resnet18").to_dict())

    def check(self) -> None:
        """Values no run can use, refused before any work with the option's flag named."""
        import math

        def refuse(name: str, rule: str) -> None:
            raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: give {rule}")

        for name, low in (("crop", 32), ("batch_size", 1), ("crops_per_epoch", 1), ("num_nodes", 1),
                          ("log_every_n_steps", 1), ("checkpoint_every_n_steps", 1), ("val_tile", 64)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < low:
                refuse(name, f"a whole number of at least {low}")
        for name in ("stage1_epochs", "stage2_epochs", "val_overlap", "num_workers", "epoch_snapshots",
                     "validate_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                refuse(name, "a whole number, 0 or more")
        if self.stage1_epochs + self.stage2_epochs == 0:
            refuse("stage2_epochs", "at least one epoch in one of the two stages")
        for name in ("lr_stage1", "lr_stage2", "gsd_m", "road_width_m"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                refuse(name, "a positive number")
        try:  # the augmentation's own rules (recipe, shares), asked before the run folder is made
            Augment(crop=self.crop, recipe=self.augment, invert_brightness=self.invert_brightness)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        for name in ("backbone_lr_factor", "weight_decay", "grad_clip"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                refuse(name, "a number, 0 or more")
        if not (0 < self.val_tiles and math.isfinite(self.val_tiles)):
            refuse("val_tiles", "a count of tiles (1 or more) or a fraction between 0 and 1")
        from .data import LABEL_TARGETS

        if self.label_target not in LABEL_TARGETS:
            refuse("label_target", " or ".join(LABEL_TARGETS))
        if self.val_overlap * 2 >= self.val_tile:
            refuse("val_overlap", f"less than half of --val-tile ({self.val_tile})")

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def split(self):
        from .data import split_dataset

        return split_dataset(self.data, self.val_tiles, self.split_seed, self.gsd_m, self.road_width_m,
                             self.label_target)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = unknown_fields(cls, data)
        if unknown:
            raise InputError(f"unknown training option(s) {', '.join(unknown)}; see python -m training fit --help")
        if isinstance(data.get("data"), str):  # runs saved before several folders were possible
            data = {**data, "data": [data["data"]] if data["data"] else []}
        config = cls(**data)
        config.model = {**ModelConfig(backbone="resnet18").to_dict(), **config.model}
        config.model_config()  # validates
        config.check()
        return config

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig))
FLAG_HELP = {  # flags whose name alone does not say what they do
    "epoch_snapshots": "keep the weights of every Nth epoch as RUN/checkpoints/epoch-NN.ckpt, e.g. for `python -m "
                       "training average`; 0: none ",
    "invert_brightness": "share of training crops whose brightness is inverted with their colours kept, so that "
                         "roads darker than the ground around them (new asphalt in a desert) are seen too ",
    "label_target": "as_is | centreline | one_width: what road-surface masks (a dataset.yaml's label: surface) "
                    "are trained as; centreline: their skeleton widened to --road-width-m, the rest of the surface "
                    "ignored; one_width: that, and centreline buffers of another label_width_m redrawn at "
                    "--road-width-m, so every place teaches one width ",
    "precision": f"{' | '.join(PRECISIONS)}: training arithmetic for `fit`, inference arithmetic for `evaluate` "
                 "(auto: bf16 where the GPU or CPU has it natively) ",
}


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option (model options too: --backbone, --attention, ...); unset flags keep the YAML's value."""
    parser.add_argument("--config", help="YAML file with any of the options below")
    for f in fields(TrainConfig):
        if f.name == "model":
            continue
        if f.name == "data":
            parser.add_argument("--data", action="append", default=None, metavar="FOLDER[:WEIGHT]",
                                help="training data; repeat for more folders (validation tiles come from the first)")
            continue
        if f.name == "val_lines":
            parser.add_argument("--val-lines", action="append", default=None, metavar="FOLDER",
                                help="after each validation also score extracted lines against the reference "
                                     "centrelines of a folder of NAME.tif + NAME_roads.geojson|gpkg (logged as "
                                     "val_lines/*; not used to choose the best checkpoint); repeatable")
            continue
        kind = {"int": int, "float": float, "str": str}.get(str(f.type), None)
        if str(f.type).startswith("list"):
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=lambda s: [float(v) for v in s.split(",")],
                                default=None, help=f"comma-separated (default {getattr(TrainConfig(), f.name)})")
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind or str, default=None,
                                help=f"{FLAG_HELP.get(f.name, '')}(default {getattr(TrainConfig(), f.name)!r})")
    for f in fields(ModelConfig):
        kind = bool if f.type in ("bool",) else int if f.type in ("int",) else str
        if kind is bool:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=lambda s: s.lower() in ("1", "true", "yes"),
                                default=None, help="true or false")
        else:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)


def resolve(args: argparse.Namespace) -> TrainConfig:
    data: dict[str, Any] = {}
    if args.config:
        data = read_config(Path(args.config))
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if f.name != "model" and value is not None:
            data[f.name] = value
    model = dict(data.get("model") or {})
    for name in MODEL_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            model[name] = value
    data["model"] = model
    return TrainConfig.from_dict(data)


def read_config(path: Path) -> dict[str, Any]:
    fix = "give a YAML file like the config.yaml a run writes into its folder"
    data = read_yaml(path, f"the configuration {path}", fix, InputError)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"the configuration {path} is not a mapping of options; {fix}")
    return data
