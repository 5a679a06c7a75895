"""`python -m training fit`: two-stage training with Lightning, resumable, checkpoints chosen by road IoU."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from core.errors import InputError
from core.extraction.devices import Precision, resolve_precision
from core.model.checkpoint import (
    ModelInfo,
    RoadModel,
    load_into,
    load_model,
    nonfinite_tensors,
    read_weights,
    save_model,
)

from .augment import Augment
from .config import TrainConfig
from .data import CropOrder, RoadCrops, TileShard, read_pair
from .doctor import balance_findings, format_finding, label_findings
from .evaluate import MULTI_SCALE, Inference, evaluate_line_references, line_references
from .module import RoadSegmentation


class WholeTiles(Dataset):
    def __init__(self, pairs, labels) -> None:
        self.tiles = [read_pair(p, labels) for p in pairs]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index):
        image, target = self.tiles[index]
        return torch.from_numpy(image.copy()), torch.from_numpy(target.copy())


class TrainingClock(L.Callback):
    """Seconds spent training (steps and validation), kept in every checkpoint so that a run resumed after an
    interruption still knows its whole training time (`training_seconds`)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since: float | None = None

    def on_train_epoch_start(self, trainer, module) -> None:
        self._since = time.monotonic()

    def on_train_batch_end(self, trainer, module, *args) -> None:
        self._tick()

    def on_validation_end(self, trainer, module) -> None:
        self._tick()

    def _tick(self) -> None:
        now = time.monotonic()
        if self._since is not None:
            self.seconds += now - self._since
        self._since = now

    def state_dict(self) -> dict:
        self._tick()
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict) -> None:
        self.seconds = float(state.get("seconds", 0.0))


def training_seconds(checkpoint: Path) -> float | None:
    """The whole training time a checkpoint records (None for runs from before TrainingClock)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    for name, value in state.get("callbacks", {}).items():
        if "TrainingClock" in name and isinstance(value, dict):
            return float(value.get("seconds", 0.0))
    return None


class CropSchedule(L.Callback):
    """Each process's share of the crops and validation tiles, and the crops' (epoch, step) from the trainer, so
    the same run, resumed or not, sees the same crops."""

    def __init__(self, crops: CropOrder, tiles: TileShard) -> None:
        self.crops, self.tiles = crops, tiles

    def setup(self, trainer, module, stage) -> None:
        # Runs before Lightning sizes the epochs from the samplers' lengths.
        self.crops.distribute(trainer.global_rank, trainer.world_size)
        self.tiles.distribute(trainer.global_rank, trainer.world_size)
        self.crops.position = lambda: (trainer.current_epoch, trainer.global_step)


class LineScores(L.Callback):
    """After each validation, the model's extracted lines on rasters with reference centrelines (`--val-lines`):
    completeness, correctness and APLS by epoch, beside the validation tiles' road IoU. Scored on the first
    process only (the figures are logged from there) and never during Lightning's sanity check."""

    def __init__(self, pairs, config: TrainConfig) -> None:
        self.pairs, self.tile, self.overlap = pairs, config.val_tile, config.val_overlap

    def on_validation_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        inference = Inference(tile=self.tile, overlap=self.overlap, device=str(module.device))
        scores = evaluate_line_references(module.road_model(), self.pairs, [inference])[inference.label]
        for name in ("completeness", "correctness", "apls"):
            module.log(f"val_lines/{name}", float(scores[name]), rank_zero_only=True)
        print(f"val_lines   epoch {trainer.current_epoch}: completeness {scores['completeness']:.3f}, correctness "
              f"{scores['correctness']:.3f}, APLS {scores['apls']:.3f} on {len(self.pairs)} raster(s)",
              file=sys.stderr)


class EpochSnapshots(L.pytorch.callbacks.ModelCheckpoint):
    """The weights of every Nth epoch, kept (`--epoch-snapshots N`): weights only, a third of a resumable
    checkpoint's size, for scoring and for `training average`, never for resuming."""

    def __init__(self, folder: Path, every_n_epochs: int) -> None:
        super().__init__(folder, filename="epoch-{epoch:02d}", save_top_k=-1, every_n_epochs=every_n_epochs,
                         save_weights_only=True, auto_insert_metric_name=False, enable_version_counter=False)

    @property
    def state_key(self) -> str:
        # Lightning keys a checkpoint callback's saved state by its settings; `last` has the same ones.
        return self._generate_state_key(snapshots_every_n_epochs=self._every_n_epochs)


class ResumableCSVLogger(L.pytorch.loggers.CSVLogger):
    """Lightning's CSV logger deletes metrics.csv when its writer starts in a folder that has one, so a resumed run
    lost the whole history before the resume (it happened to this project's own model run). This one puts the
    file back and continues its columns, so the resumed run appends."""

    @property
    def experiment(self):
        path = Path(self.log_dir) / "metrics.csv"
        history = path.read_text() if self._experiment is None and path.exists() else None
        writer = super().experiment
        if history is not None:
            path.write_text(history)
            writer.metrics_keys = sorted(next(csv.reader(io.StringIO(history)), []))
        return writer


def training_crops(config: TrainConfig, split, crops_per_epoch: int | None = None) -> RoadCrops:
    """The crops a run with this configuration trains on (its data, crop size, augmentation and seed)."""
    return RoadCrops(split.sources, augment=Augment(crop=config.crop, recipe=config.augment,
                                                    invert_brightness=config.invert_brightness),
                     crops_per_epoch=crops_per_epoch or config.crops_per_epoch, seed=config.seed,
                     log=lambda message: print(message, file=sys.stderr))


def build(config: TrainConfig):
    split = config.split()
    train = training_crops(config, split)
    val = WholeTiles(split.val, split.labels)
    crops, tiles = CropOrder(len(train), config.batch_size), TileShard(len(val))
    train_loader = DataLoader(train, batch_size=config.batch_size, sampler=crops, num_workers=config.num_workers,
                              drop_last=True, persistent_workers=config.num_workers > 0)
    val_loader = DataLoader(val, batch_size=1, sampler=tiles, num_workers=0)
    return train_loader, val_loader, split, CropSchedule(crops, tiles)


LIGHTNING_PRECISIONS = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16", "16-mixed": "fp16"}


def precision_for(config: TrainConfig) -> Precision:
    """auto | fp32 | bf16 | fp16 (or Lightning's own names) on the accelerator the run uses: bf16 autocast where
    the GPU or the CPU has native bf16 arithmetic (core.extraction.devices), else fp32."""
    requested = LIGHTNING_PRECISIONS.get(config.precision, config.precision)
    return resolve_precision(requested, training_device(config))


def training_device(config: TrainConfig) -> torch.device:
    """The device a run with this configuration computes on: its --accelerator, auto: the GPU where there is one."""
    gpu = config.accelerator in ("gpu", "cuda") or (config.accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if gpu else "cpu")


def fit(config: TrainConfig) -> Path:
    line_pairs = line_references(config.val_lines)  # refused before anything is written, not after an epoch
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder for the run (checkpoints, logs, its config)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the run folder {out} ({exc.strerror}); give --out a folder you can write "
                         f"to") from None
    config.save(out / "config.yaml")
    L.seed_everything(config.seed, workers=True)
    train_loader, val_loader, split, schedule = build(config)
    sources = ", ".join(f"{len(s.pairs)} of {s.name} (weight {s.weight:g})" for s in split.sources)
    print(f"data        training tiles: {sources}; {len(split.val)} validation tiles of {split.sources[0].name} "
          f"({', '.join(p.name for p in split.val)}); mask values {list(split.labels.seen_values)} -> road = "
          f"{list(split.labels.road_values)}", file=sys.stderr)
    for finding in label_findings(split.labels, config.model_config().num_classes) + balance_findings(
            [t for _, t in train_loader.dataset.tiles], [t for _, t in val_loader.dataset.tiles]):
        if finding.level == "fail":
            raise InputError(finding.text)
        print(format_finding(finding), file=sys.stderr)
    precision = precision_for(config)
    print(f"precision   {precision.why}", file=sys.stderr)
    brightness = train_loader.dataset.brightness_range()
    print(f"brightness  training images' median brightness {brightness[0]:.0f}-{brightness[1]:.0f} of 255 (10th-"
          f"90th percentile; recorded in the model file)", file=sys.stderr)
    module = RoadSegmentation(config.to_dict(), precision_used=precision.name, brightness=list(brightness))
    if config.init:
        report = load_into(module.network, read_weights(config.init))
        print(f"init        {config.init}: {report.file_kind}\n{report.format()}", file=sys.stderr)
    checkpoints = out / "checkpoints"
    # Three files: the best by validation road IoU, the end of the latest epoch, and the latest step (a killed run
    # loses at most --checkpoint-every-n-steps steps). Lightning's own save_last only follows top-k saves.
    best = L.pytorch.callbacks.ModelCheckpoint(checkpoints, filename="best", monitor="val/road_iou", mode="max",
                                               enable_version_counter=False)
    last = L.pytorch.callbacks.ModelCheckpoint(checkpoints, filename="last", save_top_k=1, every_n_epochs=1,
                                               enable_version_counter=False)
    periodic = L.pytorch.callbacks.ModelCheckpoint(checkpoints, filename="last-step",
                                                   every_n_train_steps=config.checkpoint_every_n_steps,
                                                   save_top_k=1, enable_version_counter=False)
    snapshots = [EpochSnapshots(checkpoints, config.epoch_snapshots)] if config.epoch_snapshots else []
    validating = config.validate_every > 0
    trainer = L.Trainer(
        default_root_dir=out, max_epochs=config.stage1_epochs + config.stage2_epochs,
        accelerator=config.accelerator, devices=config.devices, strategy=_strategy(config),
        num_nodes=config.num_nodes, precision=precision.lightning, gradient_clip_val=config.grad_clip or None,
        logger=[ResumableCSVLogger(out, name="logs", version="", flush_logs_every_n_steps=config.log_every_n_steps),
                L.pytorch.loggers.TensorBoardLogger(out, name="tensorboard", version="")],
        callbacks=[*([best] if validating else []), last, periodic, *snapshots, schedule, TrainingClock(),
                   *([LineScores(line_pairs, config)] if line_pairs else [])], use_distributed_sampler=False,
        log_every_n_steps=config.log_every_n_steps,
        check_val_every_n_epoch=max(1, config.validate_every), limit_val_batches=None if validating else 0,
        num_sanity_val_steps=None if validating else 0,
        deterministic=False, enable_model_summary=False,
    )
    resume = _latest(checkpoints)
    if resume:
        print(f"resume      from {resume}", file=sys.stderr)
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=resume)
    except SystemExit as exc:
        # Lightning ends its graceful shutdown after Ctrl-C (or SIGTERM, as core.errors.Terminated) in sys.exit(1):
        # the interrupt goes on to the command line, which says how to resume, with its own exit status.
        if isinstance(exc.__context__, KeyboardInterrupt):
            raise exc.__context__ from None
        raise
    if module.skipped_steps:
        print(f"skipped     {module.skipped_steps} step(s) whose loss was not finite", file=sys.stderr)
    if nonfinite_tensors(module.network.state_dict()):
        raise InputError(f"training diverged: the weights in {checkpoints} hold NaN or infinity; lower the learning "
                         f"rate (--lr-stage2, --lr-stage1) and train into a new --out")
    return Path(best.best_model_path) if validating and best.best_model_path else checkpoints / "last.ckpt"


def _strategy(config: TrainConfig):
    """DDP's reducer expects a gradient for every parameter that required one when the model was wrapped; stage 1
    freezes the backbone after that, so DDP must be told to look for unused parameters while stages differ."""
    if config.strategy == "ddp" and config.stage1_epochs > 0:
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(find_unused_parameters=True)
    return config.strategy


def _latest(checkpoints: Path) -> str | None:
    """The newest checkpoint that reads whole: one cut short (a full disk, a kill during the write of a file that was
    not written atomically, a copy) is passed over with a warning for the one before it."""
    candidates = [p for p in (checkpoints / "last.ckpt", checkpoints / "last-step.ckpt") if p.exists()]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001 - zip, pickle and storage errors all mean the file is unusable
            print(f"warning     {path} cannot be read ({str(exc).splitlines()[0][:120]}); resuming from an "
                  f"earlier checkpoint", file=sys.stderr)
            continue
        return str(path)
    return None


def load_checkpoint(checkpoint: Path) -> tuple[RoadSegmentation, dict, dict]:
    """A training checkpoint (weights only) -> (module, validation metrics, provenance)."""
    if not checkpoint.is_file():
        raise InputError(f"{checkpoint}: no such file; give RUN/checkpoints/best.ckpt or last.ckpt of a run")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        config = TrainConfig.from_dict(state["hyper_parameters"]["config"])
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip, pickle, storage and key errors all mean the file is unusable
        reason = str(exc).splitlines()[0].split(". ")[0][:120] if str(exc) else type(exc).__name__
        raise InputError(f"{checkpoint} is not a readable training checkpoint ({reason}); it may be cut short (a "
                         f"run killed while writing it): use another of the run's checkpoints") from None
    module = RoadSegmentation(config.to_dict(), brightness=state["hyper_parameters"].get("brightness"))
    module.load_state_dict(state["state_dict"])
    metrics = {}
    for callback in state.get("callbacks", {}).values():
        if isinstance(callback, dict) and callback.get("monitor") == "val/road_iou":
            if callback.get("best_model_score") is not None:
                metrics["val_road_iou"] = float(callback["best_model_score"])
    provenance = {"trained_with": "python -m training fit", "data": config.data, "epoch": int(state.get("epoch", -1)),
                  "global_step": int(state.get("global_step", -1)),
                  "precision": state["hyper_parameters"].get("precision_used", "fp32")}
    return module, metrics, provenance


def road_model(path: Path) -> RoadModel:
    """A training checkpoint (.ckpt) or anything core's loader reads (model file, seed checkpoint) -> RoadModel."""
    if Path(path).suffix == ".ckpt":
        module, _, provenance = load_checkpoint(Path(path))
        model = module.road_model()
        # What `export` would record (data, step, arithmetic), so an average of checkpoints says what it came from.
        model.info.provenance = {**model.info.provenance, **provenance}
        return model
    return load_model(path)


HELD_OUT_FIGURES = ("road_iou", "f1", "precision", "recall", "relaxed_f1", "apls", "miou", "miou_all_background")


def line_metrics(evaluation: dict[str, dict]) -> dict[str, float]:
    """`lines_<name>`: extracted lines against reference centrelines (`evaluate --lines`), one scale; the mean over
    the rasters' origin shifts where there were several (`lines_shifts`, `lines_<name>_sd`)."""
    lines = evaluation.get("lines", {}).get(Inference(scales=(1.0,)).label)
    if not lines:
        return {}
    names = ("completeness", "correctness", "apls", "completeness_sd", "correctness_sd")
    metrics = {f"lines_{name}": float(lines[name]) for name in names if math.isfinite(lines.get(name, float("nan")))}
    metrics["lines_shifts"] = int(lines.get("shifts", 1))
    metrics["lines_metric_version"] = int(lines.get("metric_version", 1))
    if "arithmetic" in lines:
        metrics["lines_arithmetic"] = str(lines["arithmetic"])
    if lines.get("references"):  # which reference sets the pooled figures cover, so two models are compared on one
        metrics["lines_references"] = "; ".join(lines["references"])
        metrics["lines_overlapping_references"] = bool(lines.get("overlapping_references", False))
    return {**metrics, "lines_buffer_m": float(lines["buffer_m"])}


PLACE_FIGURES = ("road_iou", "relaxed_precision", "relaxed_recall", "relaxed_f1", "tiles")


def place_metrics(evaluation: dict) -> dict:
    """`places`: the per-place table (`evaluate --places`) as {place: {figure: value, "tile_names": [...]}}, with
    its arithmetic and slack, for the model file, the card and `promote`'s per-place rule."""
    places = evaluation.get("places")
    if not places:
        return {}
    table = {place: {**{name: summary[name] for name in PLACE_FIGURES}, "tile_names": list(summary["tile_names"])}
             for place, summary in places.items()}
    first = next(iter(places.values()))
    return {"places": table, "places_arithmetic": str(first.get("arithmetic", "")), "places_rho_m": first["rho_m"]}


def held_out_metrics(evaluation: dict[str, dict]) -> tuple[dict, list[str]]:
    """`python -m training evaluate --json` output -> (flat metrics for the model file, the tiles they come from).
    Single-scale figures are `heldout_<name>`, multi-scale ones `heldout_multiscale_<name>`: the regression test
    and the model card read them from the file itself."""
    prefixes = {Inference(scales=(1.0,)).label: "heldout_", Inference(scales=MULTI_SCALE).label: "heldout_multiscale_"}
    metrics, tiles = {}, []
    for label, summary in evaluation.items():
        prefix = prefixes.get(label)
        if prefix is None:  # other settings (flips, rotations) are not recorded
            continue
        # A figure that was not measured (APLS with --no-graphs is NaN) is left out rather than stored as NaN.
        metrics.update({prefix + name: float(summary[name]) for name in HELD_OUT_FIGURES
                        if isinstance(summary.get(name), (int, float)) and math.isfinite(summary[name])})
        tiles = tiles or list(summary.get("tile_names", []))
        if prefix == "heldout_" and "arithmetic" in summary:
            metrics["heldout_arithmetic"] = str(summary["arithmetic"])
    metrics.update(line_metrics(evaluation))
    metrics.update(place_metrics(evaluation))
    if "heldout_road_iou" not in metrics or not tiles:
        raise InputError("the evaluation has no single-scale result with tile names; write it with "
                         "`python -m training evaluate CKPT --json EVAL.json` (this version) and export again")
    return metrics, tiles


def export(checkpoint: Path, out: Path, half: bool = False, metrics: dict | None = None,
           evaluation: dict | None = None) -> Path:
    """A Lightning checkpoint -> the project's self-describing model file, with its validation metrics and, given
    an `evaluate --json` result, its held-out figures and the names of the tiles they were measured on. Given a
    model file instead (an `average`, say), the same weights are written again with the figures added: the file
    that was evaluated is the one that ships, not a second average whose BatchNorm pass rounded differently."""
    # By name first, as `road_model` does: a cut-short .ckpt gets load_checkpoint's advice (use another of the run's).
    model_file = checkpoint.suffix != ".ckpt" and checkpoint.is_file()
    if model_file and read_weights(checkpoint).kind == "road-extractor model":
        road = load_model(checkpoint)
        network, info = road.network, road.info
        info.metrics.update(metrics or {})
    else:
        module, best, provenance = load_checkpoint(checkpoint)
        config = module.config
        network = module.network
        info = ModelInfo(config=config.model_config(), gsd_m=config.gsd_m, normalization=module.normalization,
                         provenance=provenance, metrics={**best, **(metrics or {})})
    if evaluation is not None:
        record_evaluation(info, evaluation)
    return save_model(out, network, info, half=half)


def record_evaluation(info: ModelInfo, evaluation: dict) -> None:
    """Puts an `evaluate --json` result's held-out figures, and the names of the tiles they were measured on, into
    a model file's description (what `promote` and the shipped model's regression test read)."""
    held_out, tiles = held_out_metrics(evaluation)
    info.metrics.update(held_out)
    info.provenance["validation_tiles"] = tiles
