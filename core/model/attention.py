"""Two-branch (channel + spatial) attention: the seed's module and Polarized Self-Attention as published.

Both keep the seed's parameter names (`conv_q_right`, `conv_v_right`, `conv_up`, `conv_q_left`, `conv_v_left`)
so that a seed checkpoint's convolutions load into either; `psa` adds a LayerNorm (`ln`) before the channel gate.
"""

from __future__ import annotations

import torch
from torch import nn


class TwoBranchAttention(nn.Module):
    """out = x * channel_gate(x) + x * spatial_gate(x)   (the parallel layout, PSA_p).

    kind="seed": exactly the seed's code (a copy of DeLightCMU/PSA's `PSA_p`). Its spatial branch takes a softmax
    over the H*W positions *after* the query-key product and then a sigmoid. The softmax weights are about
    1/(H*W), so the sigmoid sits near 0.5 everywhere, passes almost no gradient and drifts with the image size.

    kind="psa": Polarized Self-Attention as its paper (Liu et al. 2021) defines it: the spatial branch's softmax
    runs over the C/2 channels of the globally pooled query *before* the product, and the channel branch puts a
    LayerNorm before its sigmoid.

    residual=True returns x + gamma * out with a learnable gamma starting at 0, so the block starts as the identity
    instead of halving every feature (neither module above has an identity path).
    """

    def __init__(self, channels: int, kind: str = "seed", residual: bool = False) -> None:
        super().__init__()
        if kind not in ("seed", "psa"):
            raise ValueError(f"attention kind must be 'seed' or 'psa', not {kind!r}")
        self.kind = kind
        self.inter_planes = channels // 2
        self.conv_q_right = nn.Conv2d(channels, 1, 1, bias=False)
        self.conv_v_right = nn.Conv2d(channels, self.inter_planes, 1, bias=False)
        self.conv_up = nn.Conv2d(self.inter_planes, channels, 1, bias=False)
        self.conv_q_left = nn.Conv2d(channels, self.inter_planes, 1, bias=False)
        self.conv_v_left = nn.Conv2d(channels, self.inter_planes, 1, bias=False)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        if kind == "psa":
            self.ln = nn.LayerNorm(channels)
        if residual:
            self.gamma = nn.Parameter(torch.zeros(1))

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        value = self.conv_v_right(x).flatten(2)                              # [B, C/2, HW]
        query = torch.softmax(self.conv_q_right(x).flatten(2), dim=2)       # [B, 1, HW]
        context = torch.matmul(value, query.transpose(1, 2)).unsqueeze(-1)  # [B, C/2, 1, 1]
        context = self.conv_up(context)                                     # [B, C, 1, 1]
        if self.kind == "psa":
            context = self.ln(context.reshape(b, -1)).reshape_as(context)
        return torch.sigmoid(context)

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        query = self.avg_pool(self.conv_q_left(x)).reshape(b, 1, self.inter_planes)  # [B, 1, C/2]
        if self.kind == "psa":
            query = torch.softmax(query, dim=2)
        value = self.conv_v_left(x).flatten(2)                                        # [B, C/2, HW]
        context = torch.matmul(query, value)                                          # [B, 1, HW]
        if self.kind == "seed":
            context = torch.softmax(context, dim=2)
        return torch.sigmoid(context.reshape(b, 1, h, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self.channel_gate(x) + x * self.spatial_gate(x)
        if hasattr(self, "gamma"):
            return x + self.gamma * out
        return out
