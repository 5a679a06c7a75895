"""`python -m training average`: one model whose weights are the mean of several of the same network: the
snapshots of one run's last epochs (`fit --epoch-snapshots`; stochastic weight averaging, Izmailov et al. 2018,
and SWAD for imagery unlike the training set's, Cha et al. 2021), or models fine-tuned from one parent (a
"model soup", Wortsman et al. 2022). Weights far apart (models trained from different starts) average to
nonsense: score the result with `evaluate` before using it."""

from __future__ import annotations

from pathlib import Path

from core.errors import InputError
from core.model.checkpoint import ModelInfo, Normalization, save_model

from .fit import record_evaluation, road_model


def _union(ranges: list[tuple[float, float] | None]) -> tuple[float, float] | None:
    known = [r for r in ranges if r is not None]
    return (min(r[0] for r in known), max(r[1] for r in known)) if known else None


def average(paths: list[Path], out: Path, half: bool = False, evaluation: dict | None = None) -> Path:
    """Writes the mean of the models at `paths` (training checkpoints or model files) as a model file. Floating
    tensors (weights and BatchNorm statistics) are averaged in fp32; counters come from the first model."""
    if len(paths) < 2:
        raise InputError("give at least two models to average (e.g. RUN/checkpoints/epoch-*.ckpt)")
    first = road_model(paths[0])
    own = first.network.state_dict()
    names = {k: v.shape for k, v in own.items()}
    total = {k: v.detach().float().clone() if v.is_floating_point() else v.clone() for k, v in own.items()}
    normalizations = [first.info.normalization]
    for path in paths[1:]:
        model = road_model(path)
        state = model.network.state_dict()
        if {k: v.shape for k, v in state.items()} != names:
            raise InputError(f"{path} is another network than {paths[0]} ({model.architecture.config.backbone}, "
                             f"{len(state)} tensors against {first.architecture.config.backbone}, {len(names)}); "
                             f"average models of one architecture only")
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
