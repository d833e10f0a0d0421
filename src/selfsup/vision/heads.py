"""Small blocks the methods share: MLP heads and the exponential moving average of weights."""

from __future__ import annotations

import torch
from torch import nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2, bn_last: bool = False,
        bias_last: bool = True) -> nn.Sequential:
    """``layers`` linear layers, BatchNorm + ReLU after each but the last (and BatchNorm after
    the last too with ``bn_last``, as SimSiam's projector): the projectors and predictors of
    SimCLR, MoCo v2, BYOL and SimSiam, and AugSelf's heads."""
    if layers < 1:
        raise ValueError("an MLP needs at least one layer")
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim, bias=bias_last and not bn_last))
    if bn_last:
        mods.append(nn.BatchNorm1d(out_dim))
    return nn.Sequential(*mods)


def mlp_no_bn(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """Linear + ReLU layers without BatchNorm (MoCo v2's projector)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter; buffers
    (BatchNorm statistics) are copied. The two modules must have the same structure."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.mul_(momentum).add_(o.detach(), alpha=1.0 - momentum)
    for t, o in zip(target.buffers(), online.buffers(), strict=True):
        t.copy_(o)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with gradients off (a momentum encoder or EMA teacher)."""
    import copy

    twin = copy.deepcopy(module)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin
