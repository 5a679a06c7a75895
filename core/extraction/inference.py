"""Multi-scale and flip/rotation test-time inference.

The seed sums the logits of passes at scales 0.75, 1.0 and 1.25, but its loop assigns each resized image back to
`input`, so its 1.0 pass runs on an image shrunk to 0.75 and its 1.25 pass on one resized twice. Here every
scale is resized from the original image, which is what multi-scale inference means.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.model.checkpoint import Normalization
from core.options import DEFAULT_SCALES  # the multi-scale default has one home

Transform = tuple[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]


def _rot(k: int) -> Transform:
    return (lambda x: torch.rot90(x, k, dims=(2, 3))), (lambda x: torch.rot90(x, -k, dims=(2, 3)))


def _flip_then(k: int) -> Transform:
    forward, inverse = _rot(k)
    return (lambda x: forward(torch.flip(x, dims=(3,)))), (lambda x: torch.flip(inverse(x), dims=(3,)))


# name -> list of (transform, inverse); "d4" is the 8 flips and 90-degree rotations of a square (D-LinkNet's TTA).
AUGMENTATIONS: dict[str, list[Transform]] = {
    "none": [_rot(0)],
    "flip": [_rot(0), _flip_then(0)],
    "d4": [_rot(k) for k in range(4)] + [_flip_then(k) for k in range(4)],
}


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """The seed's rounding: int(H * scale + 0.5)."""
    return int(height * scale + 0.5), int(width * scale + 0.5)


def normalize(images: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """Raw pixel values [B, C, H, W] -> the network's input."""
    mean = torch.tensor(normalization.mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(normalization.std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / normalization.scale - mean) / std


def predict_logits(network: nn.Module, images: torch.Tensor, scales: Sequence[float] = DEFAULT_SCALES,
                   augment: str = "none", after_pass: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Logits at the input's size, summed over `scales` (as the seed does) and averaged over the augmentation.

    `images` is the normalised network input [B, C, H, W] of any size; the network must be in eval mode.
    `after_pass(done, total)` is called after each network pass (a scale of a flip or rotation): progress within
    a tile, and the place to stop (raise) when a run is cancelled, so 24 passes of d4 x 3 scales are not waited for.
    """
    if not scales:
        raise ValueError("scales must hold at least one scale, e.g. (1.0,)")
    if any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {list(scales)}")
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}, not {augment!r}")
    transforms = AUGMENTATIONS[augment]
    total: torch.Tensor | None = None
    passes = 0
    for forward, inverse in transforms:
        view = forward(images)
        height, width = view.shape[2:]
        for scale in scales:
            scaled = view if scale == 1.0 else F.interpolate(view, scaled_size(height, width, scale),
                                                             mode="bilinear", align_corners=False)
            logits = network(scaled)
            if scale != 1.0:
                logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
            logits = inverse(logits)
            total = logits if total is None else total + logits
            passes += 1
            if after_pass is not None:
                after_pass(passes, len(transforms) * len(scales))
    assert total is not None
    return total / len(transforms)


def predict_probabilities(network: nn.Module, images: torch.Tensor, scales: Sequence[float] = DEFAULT_SCALES,
                          augment: str = "none", after_pass: Callable[[int, int], None] | None = None
                          ) -> torch.Tensor:
    """Class probabilities from the mean logit over scales: the same argmax as the seed's sum, but not made
    over-confident by the number of scales."""
    return torch.softmax(predict_logits(network, images, scales, augment, after_pass) / len(scales), dim=1)
