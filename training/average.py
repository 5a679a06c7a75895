"""`python -m training average`: one model whose weights are the mean of several of the same network: the
snapshots of one run's last epochs (`fit --epoch-snapshots`; stochastic weight averaging, Izmailov et al. 2018,
and SWAD for imagery unlike the training set's, Cha et al. 2021), or models fine-tuned from one parent (a
"model soup", Wortsman et al. 2022; a fine-tuned model and its parent, WiSE-FT, Wortsman et al. 2022). Weights far
apart (models trained from different starts) average to nonsense: score the result with `evaluate` before using it.

BatchNorm's running statistics are not weights: the mean of several networks' statistics does not describe the
activations of the network whose weights are the mean. SWA recomputes them with one pass over training data
(`torch.optim.swa_utils.update_bn`); `--batchnorm-from RUN/config.yaml` does that on the crops that run draws."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader

from core.errors import InputError
from core.extraction.brightness import model_range
from core.extraction.inference import normalize
from core.model.checkpoint import ModelInfo, Normalization, save_model

from .config import TrainConfig
from .fit import precision_for, record_evaluation, road_model, training_crops, training_device

# What describes one state of a run, not the mean of several (the steps of each are kept in `averaged_steps`).
ONE_STATE = ("epoch", "global_step", "file")


def _union(recorded: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    """The brightness range that takes in every model's; unrecorded stays unrecorded only when none records one
    (a file without a range reads imagery as Massachusetts Roads', `brightness.model_range`)."""
    if all(r is None for r in recorded):
        return None
    ranges = [model_range(r) for r in recorded]
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def recompute_batchnorm(network: torch.nn.Module, normalization: Normalization, config: TrainConfig,
                        crops: int | None = None) -> dict:
    """Sets every BatchNorm layer's running mean and variance to their average over `crops` training crops (one
    epoch of the run's by default) drawn as `config`'s run draws them, in its arithmetic; returns what was done,
    for the model file's provenance."""
    dataset = training_crops(config, config.split(), crops)
    precision = precision_for(config)
    print(f"batchnorm   statistics from {len(dataset)} crops of {', '.join(config.data)} ({config.augment} "
          f"augmentation, seed {config.seed}), {precision.why}", file=sys.stderr)
    device = training_device(config)
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.num_workers)
    batches = (normalize(images.to(device), normalization).contiguous(memory_format=torch.channels_last)
               for images, _ in loader)
    network.float().to(device)
    with torch.no_grad(), torch.autocast(device.type, dtype=precision.autocast or torch.bfloat16,
                                         enabled=precision.autocast is not None):
        update_bn(batches, network)
    network.cpu()
    return {"crops": len(dataset), "data": list(config.data), "augment": config.augment, "seed": config.seed,
            "precision": precision.name}


def average(paths: list[Path], out: Path, half: bool = False, evaluation: dict | None = None,
            batchnorm_from: TrainConfig | None = None, batchnorm_crops: int | None = None) -> Path:
    """Writes the mean of the models at `paths` (training checkpoints or model files) as a model file. Floating
    tensors (weights and BatchNorm statistics) are averaged in fp32; counters come from the first model. With
    `batchnorm_from`, the statistics are then recomputed for the mean weights (`recompute_batchnorm`)."""
    if len(paths) < 2:
        raise InputError("give at least two models to average (e.g. RUN/checkpoints/epoch-*.ckpt)")
    first = road_model(paths[0])
    own = first.network.state_dict()
    total = {k: v.detach().float().clone() if v.is_floating_point() else v.clone() for k, v in own.items()}
    normalizations = [first.info.normalization]
    steps = [first.info.provenance.get("global_step")]
    for path in paths[1:]:
        model = road_model(path)
        steps.append(model.info.provenance.get("global_step"))
        # The whole configuration, not only the tensors' shapes: output stride and layer4's dilations change what
        # the same weights compute.
        if model.info.config != first.info.config:
            theirs, ours = model.info.config.to_dict(), first.info.config.to_dict()
            differ = ", ".join(f"{k} {theirs[k]} against {ours[k]}" for k in ours if theirs[k] != ours[k])
            raise InputError(f"{path} is another network than {paths[0]} ({differ}); average models of one "
                             f"architecture only")
        state = model.network.state_dict()
        norm, base = model.info.normalization, normalizations[0]
        if (norm.mean, norm.std, norm.scale) != (base.mean, base.std, base.scale):
            raise InputError(f"{path} expects other pixel values than {paths[0]} (its normalisation differs); "
                             f"average models trained on the same input only")
        normalizations.append(norm)
        for key, value in state.items():
            if value.is_floating_point():
                total[key] += value.detach().float()
    mean = {k: (v / len(paths)).to(own[k].dtype) if v.is_floating_point() else v for k, v in total.items()}
    first.network.load_state_dict(mean)
    base = normalizations[0]
    info = ModelInfo(config=first.info.config, gsd_m=first.info.gsd_m,
                     normalization=Normalization(base.mean, base.std, base.scale,
                                                 _union([n.brightness for n in normalizations])),
                     provenance={**{k: v for k, v in first.info.provenance.items() if k not in ONE_STATE},
                                 "averaged": [str(p) for p in paths], "averaged_steps": steps})
    if batchnorm_from is not None:
        info.provenance["batchnorm_recomputed"] = recompute_batchnorm(first.network, info.normalization,
                                                                      batchnorm_from, batchnorm_crops)
    if evaluation is not None:
        record_evaluation(info, evaluation)
    return save_model(out, first.network, info, half=half)
