"""`python -m training average`: one model whose weights are the mean of several of the same network: the
snapshots of one run's last epochs (`fit --epoch-snapshots`; stochastic weight averaging, Izmailov et al. 2018,
and SWAD for imagery unlike the training set's, Cha et al. 2021), or models fine-tuned from one parent (a
"model soup", Wortsman et al. 2022). Weights far apart (models trained from different starts) average to
nonsense: score the result with `evaluate` before using it."""

from __future__ import annotations

from pathlib import Path

from core.errors import InputError
from core.extraction.brightness import model_range
from core.model.checkpoint import ModelInfo, Normalization, save_model

from .fit import record_evaluation, road_model


def _union(recorded: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    """The brightness range that takes in every model's; unrecorded stays unrecorded only when none records one
    (a file without a range reads imagery as Massachusetts Roads', `brightness.model_range`)."""
    if all(r is None for r in recorded):
        return None
    ranges = [model_range(r) for r in recorded]
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def average(paths: list[Path], out: Path, half: bool = False, evaluation: dict | None = None) -> Path:
    """Writes the mean of the models at `paths` (training checkpoints or model files) as a model file. Floating
    tensors (weights and BatchNorm statistics) are averaged in fp32; counters come from the first model."""
    if len(paths) < 2:
        raise InputError("give at least two models to average (e.g. RUN/checkpoints/epoch-*.ckpt)")
    first = road_model(paths[0])
    own = first.network.state_dict()
    total = {k: v.detach().float().clone() if v.is_floating_point() else v.clone() for k, v in own.items()}
    normalizations = [first.info.normalization]
    for path in paths[1:]:
        model = road_model(path)
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
                     provenance={**first.info.provenance, "averaged": [str(p) for p in paths]})
    if evaluation is not None:
        record_evaluation(info, evaluation)
    return save_model(out, first.network, info, half=half)
