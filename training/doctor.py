"""`python -m training doctor`: "why doesn't my mIoU move?", answered with measurements of this data and model.

Each check prints what it measured and, where it matters, why. The cheap data checks also run at the start of
every `fit`. A check that finds something that breaks training makes the command exit with status 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from core.extraction.inference import normalize
from core.model import MODULES

from .augment import Augment
from .config import TrainConfig
from .data import IGNORE, LabelMap, RoadCrops
from .losses import road_loss
from .module import RoadSegmentation, learning_rates


@dataclass
class Finding:
    check: str
    level: str  # "ok", "warn" or "fail"
    text: str
    figures: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ data


def label_findings(labels: LabelMap, num_classes: int) -> list[Finding]:
    seen = list(labels.seen_values)
    findings = [Finding("labels", "ok", f"mask values {seen}: {list(labels.road_values)} -> road (class 1), the "
                        f"rest -> background (class 0); white no-data image pixels -> ignore ({IGNORE})",
                        {"mask_values": seen, "road_values": list(labels.road_values)})]
    if 255 in seen and num_classes == 2:
        findings.append(Finding(
            "labels", "warn",
            "these masks store roads as 255. Fed as-is to a 2-class loss with ignore_index=255 (the seed's "
            "codebase), every road pixel is ignored: the network only ever sees background, the loss still falls, "
            "and mIoU stays at the all-background value. This package maps 255 -> 1 (above), so it does not "
            "happen here; in other code, divide such masks by 255 first.",
            {"road_pixels_ignored_by_seed_codebase": 1.0}))
    if num_classes != 2:
        findings.append(Finding("labels", "fail", f"the model has {num_classes} classes but these masks are binary "
                                f"road masks; train with --num-classes 2"))
    return findings


def balance_findings(train_targets: list[np.ndarray], val_targets: list[np.ndarray]) -> list[Finding]:
    def fractions(targets):
        total = sum(t.size for t in targets)
        ignored = sum(int(np.count_nonzero(t == IGNORE)) for t in targets)
        road = sum(int(np.count_nonzero(t == 1)) for t in targets)
        return road / max(total - ignored, 1), ignored / max(total, 1)

    road, ignored = fractions(train_targets)
    val_road, _ = fractions(val_targets) if val_targets else (road, 0.0)
    all_background = (1 - val_road) / 2
    text = (f"roads are {road:.1%} of the valid training pixels ({ignored:.1%} ignored as no-data). Predicting "
            f"background everywhere scores mIoU {all_background:.3f} on the validation tiles (road IoU 0, "
            f"background IoU {1 - val_road:.3f}): judge every mIoU against that figure, or better, read road IoU")
    figures = {"road_fraction": road, "ignored_fraction": ignored, "miou_all_background": all_background,
               "inverse_frequency_weights": [1.0, round((1 - road) / max(road, 1e-6), 2)]}
    level = "warn" if road < 0.02 else "ok"
    if level == "warn":
        text += ". So few road pixels: consider --class-weights 1,5 or --loss ce_dice"
    return [Finding("balance", level, text, figures)]


# ------------------------------------------------------------------------------------------------ model


def stage_findings(module: RoadSegmentation, steps_per_epoch: int) -> list[Finding]:
    network, c = module.network, module.config
    per_module = {name: sum(p.numel() for p in getattr(network, name).parameters()) for name in MODULES}
    batchnorms = sum(1 for m in network.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
    stage1 = {name: 0 if name == "backbone" else count for name, count in per_module.items()}
    def role(name: str) -> str:
        return "frozen (BatchNorm statistics too)" if name == "backbone" else "trains"

    rows = [f"  {name:<11} {count:>11,} parameters   stage 1: {role(name)}   stage 2: trains"
            for name, count in per_module.items()]
    stage1_steps = c.stage1_epochs * steps_per_epoch
    total = (c.stage1_epochs + c.stage2_epochs) * steps_per_epoch
    marks = sorted({0, stage1_steps // 2, max(stage1_steps - 1, 0), stage1_steps,
                    stage1_steps + (total - stage1_steps) // 2, max(total - 1, 0)})
    schedule = []
    for step in marks:
        stage, backbone_rate, head_rate = learning_rates(c, step, steps_per_epoch)
        if stage == 1 and not c.stage1_epochs:
            continue
        schedule.append({"step": step, "stage": stage, "backbone_lr": backbone_rate, "head_lr": head_rate})
    lines = [f"  step {s['step']:>6}  stage {s['stage']}  backbone lr {s['backbone_lr']:.2e}"
             f"{' (frozen)' if s['stage'] == 1 else ''}  head lr {s['head_lr']:.2e}" for s in schedule]
    text = ("parameters by module and stage (" + f"{batchnorms} BatchNorm layers in the backbone):\n"
            + "\n".join(rows) + f"\nlearning rates (poly 0.9 within each stage, {steps_per_epoch} steps per epoch, "
            f"{c.optimizer}):\n" + "\n".join(lines))
    return [Finding("stages", "ok", text, {"parameters": per_module, "stage1_trainable": sum(stage1.values()),
                                            "stage2_trainable": sum(per_module.values()), "schedule": schedule})]


def gradient_findings(module: RoadSegmentation, images: torch.Tensor, target: torch.Tensor) -> list[Finding]:
    """Gradient norm of each module on one batch with everything trainable: a module at ~0 learns nothing."""
    network = module.network
    network.train()
    network.zero_grad()
    loss = road_loss(network(normalize(images, module.normalization)), target, module.config.loss,
                     module.class_weights)
    loss.backward()
    norms = {}
    for name in MODULES:
        grads = [p.grad for p in getattr(network, name).parameters() if p.grad is not None]
        norms[name] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))) if grads else 0.0
    network.zero_grad()
    dead = [name for name, norm in norms.items() if norm < 1e-8 and sum(
        p.numel() for p in getattr(network, name).parameters())]
    text = "gradient norm per module on one batch: " + ", ".join(f"{n} {v:.3g}" for n, v in norms.items())
    if dead:
        text += f". No gradient reaches {', '.join(dead)}: check that it is used in forward()"
    return [Finding("gradients", "fail" if dead else "ok", text, {"grad_norms": norms, "loss": loss.item()})]


def attention_findings(module: RoadSegmentation, images: torch.Tensor) -> list[Finding]:
    """Statistics of each attention module's gates on real crops, at the crop size and at twice it."""
    network = module.network.eval()
    attentions = {name: getattr(network, name) for name in ("attention2", "attention")
                  if hasattr(getattr(network, name), "spatial_gate")}
    if not attentions:
        return [Finding("attention", "ok", "this model has no attention modules")]
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: inputs.__setitem__(name, args[0]))
             for name, m in attentions.items()]
    figures, lines = {}, []
    try:
        for size in (images.shape[-1], images.shape[-1] * 2):
            batch = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
            with torch.no_grad():
                network(normalize(batch, module.normalization))
                for name, attention in attentions.items():
                    spatial = attention.spatial_gate(inputs[name])
                    channel = attention.channel_gate(inputs[name])
                    stats = {"spatial_mean": float(spatial.mean()), "spatial_std": float(spatial.std()),
                             "spatial_min": float(spatial.min()), "spatial_max": float(spatial.max()),
                             "channel_mean": float(channel.mean()), "channel_std": float(channel.std()),
                             "positions": int(spatial.shape[-1] * spatial.shape[-2])}
                    figures[f"{name}@{size}"] = stats
                    lines.append(f"  {name:<10} input {size}px ({stats['positions']} positions): spatial gate "
                                 f"{stats['spatial_mean']:.4f} +- {stats['spatial_std']:.2g} "
                                 f"[{stats['spatial_min']:.4f}, {stats['spatial_max']:.4f}], channel gate "
                                 f"{stats['channel_mean']:.3f} +- {stats['channel_std']:.2g}")
    finally:
        for hook in hooks:
            hook.remove()
    text = "attention gates (out = x * channel gate + x * spatial gate):\n" + "\n".join(lines)
    level = "ok"
    if module.config.model_config().attention == "seed":
        flat = all(s["spatial_std"] < 1e-2 and abs(s["spatial_mean"] - 0.5) < 0.05 for s in figures.values())
        text += ("\n  The seed's spatial gate is a sigmoid of a softmax over all H*W positions: each softmax weight "
                 "is about 1/(H*W), so the gate sits near sigmoid(0) = 0.5 everywhere, carries almost no spatial "
                 "information or gradient, and moves as the image size changes. --attention psa uses the "
                 "published Polarized Self-Attention instead; --attention-residual true adds an identity path.")
        level = "warn" if flat else "ok"
    return [Finding("attention", level, text, figures)]


OVERFIT_FALL = 0.2  # the loss must fall to this share of its first value


def overfit_findings(config: TrainConfig, images: torch.Tensor, target: torch.Tensor, steps: int,
                     lr: float = 1e-3) -> list[Finding]:
    """Train a fresh copy on one batch until the loss has fallen to OVERFIT_FALL of its first value, for at most
    `steps` steps: a network that cannot memorise one batch is mis-wired. The test is relative, and stops as soon
    as it passes: how far and how fast the loss falls depends on the CPU's arithmetic (the same 60 steps reached
    0.0557 on an AVX-512/AMX Intel CPU and below 0.01 on an AVX2 AMD one), a relative fall does not."""
    torch.manual_seed(config.seed)
    module = RoadSegmentation(config.to_dict())
    network = module.network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr)
    x = normalize(images, module.normalization)
    losses: list[float] = []
    started = time.perf_counter()
    passed = False
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(network(x).float(), target, ignore_index=IGNORE)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if len(losses) >= 10 and min(losses[-3:]) <= OVERFIT_FALL * losses[0]:
            passed = True
            break
    seconds = time.perf_counter() - started
    first, last = losses[0], min(losses[-3:])
    text = (f"overfit one batch ({images.shape[0]} crops of {images.shape[-1]}px, AdamW at {lr:g}): cross-entropy "
            f"{first:.3f} -> {last:.4f} in {len(losses)} of at most {steps} steps ({seconds:.0f} s)")
    text += (f": below {OVERFIT_FALL:g}x its start, the network can learn these labels" if passed else
             f": it did NOT fall below {OVERFIT_FALL:g}x its start. A network that cannot memorise one batch has a "
             "wiring problem: labels that are all ignore/background, a frozen or detached module, a learning rate "
             "of 0, or wrong normalisation. Try more steps (--overfit-steps) before looking elsewhere")
    return [Finding("overfit", "ok" if passed else "fail", text,
                    {"loss_first": first, "loss_last": last, "steps": len(losses), "max_steps": steps,
                     "seconds": seconds})]


# ------------------------------------------------------------------------------------------------ all


def doctor(config: TrainConfig, overfit_steps: int = 150, overfit_crop: int = 128, overfit_batch: int = 2,
           log: Callable[[Finding], None] = lambda finding: None) -> list[Finding]:
    findings: list[Finding] = []

    def add(new: list[Finding]) -> None:
        for finding in new:
            findings.append(finding)
            log(finding)

    split = config.split()
    add(label_findings(split.labels, config.model_config().num_classes))
    crops = RoadCrops(split.sources, augment=Augment(crop=config.crop, recipe=config.augment),
                      crops_per_epoch=max(config.batch_size, overfit_batch), seed=config.seed)
    add(balance_findings([t for _, t in crops.tiles], [t for _, _, t in split.read_val()]))
    module = RoadSegmentation(config.to_dict())
    add(stage_findings(module, max(1, config.crops_per_epoch // config.batch_size)))
    batch = [crops[i] for i in range(config.batch_size)]
    images, target = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
    add(gradient_findings(module, images, target))
    add(attention_findings(module, images))
    if overfit_steps:
        small = F.interpolate(images[:overfit_batch], size=(overfit_crop, overfit_crop), mode="bilinear",
                              align_corners=False)
        small_target = F.interpolate(target[:overfit_batch, None].float(), size=(overfit_crop, overfit_crop),
                                     mode="nearest")[:, 0].long()
        add(overfit_findings(config, small, small_target, overfit_steps))
    return findings


def format_finding(finding: Finding) -> str:
    mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[finding.level]
    return f"[{mark}] {finding.check}: {finding.text}"
