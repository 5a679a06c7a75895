"""Road losses: cross-entropy, soft Dice and soft clDice over the pixels that are not ignored. Plain torch (no
Lightning), so fine-tuning runs in the QGIS plugin's engine environment too."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import IGNORE


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice of the road class over the pixels that are not ignored."""
    valid = (target != IGNORE).float()
    road = torch.softmax(logits.float(), dim=1)[:, 1] * valid
    truth = (target == 1).float()
    intersection = (road * truth).sum()
    return 1 - (2 * intersection + 1) / (road.sum() + truth.sum() + 1)


def soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Differentiable morphological skeleton of [B, 1, H, W] maps in 0..1 (Shit et al. 2021, clDice)."""

    def erode(t):
        return torch.minimum(-F.max_pool2d(-t, (3, 1), 1, (1, 0)), -F.max_pool2d(-t, (1, 3), 1, (0, 1)))

    def open_(t):
        return F.max_pool2d(erode(t), 3, 1, 1)

    skeleton = F.relu(x - open_(x))
    for _ in range(iterations):
        x = erode(x)
        delta = F.relu(x - open_(x))
        skeleton = skeleton + F.relu(delta - skeleton * delta)
    return skeleton


def soft_cldice_loss(logits: torch.Tensor, target: torch.Tensor, iterations: int = 10) -> torch.Tensor:
    """1 - clDice: how much of each skeleton lies inside the other mask. It rewards unbroken, unbloated roads,
    which pixel losses do not see; `iterations` must reach half the widest road in pixels."""
    valid = (target != IGNORE).float().unsqueeze(1)
    road = torch.softmax(logits.float(), dim=1)[:, 1:2] * valid
    truth = (target == 1).float().unsqueeze(1)
    road_skeleton, truth_skeleton = soft_skeleton(road, iterations), soft_skeleton(truth, iterations)
    precision = ((road_skeleton * truth).sum() + 1) / (road_skeleton.sum() + 1)
    sensitivity = ((truth_skeleton * road).sum() + 1) / (truth_skeleton.sum() + 1)
    return 1 - 2 * precision * sensitivity / (precision + sensitivity)


LOSSES = ("ce", "ce_dice", "ce_dice_cldice")


def road_loss(logits: torch.Tensor, target: torch.Tensor, kind: str, class_weights: torch.Tensor) -> torch.Tensor:
    if kind not in LOSSES:
        raise ValueError(f"loss {kind!r} is not known; use one of {', '.join(LOSSES)}")
    if not (target != IGNORE).any():
        # Nothing to learn from (every pixel no-data): cross-entropy would be 0/0 = NaN. A zero that keeps the graph
        # leaves the weights as they are (AdamW's decay aside) and logs 0, not NaN.
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=IGNORE)
    if kind in ("ce_dice", "ce_dice_cldice"):
        loss = loss + dice_loss(logits, target)
    if kind == "ce_dice_cldice":
        loss = loss + soft_cldice_loss(logits, target)
    return loss
