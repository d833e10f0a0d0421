"""SimCLR (Chen et al., ICML 2020): two views, an MLP projector, the NT-Xent loss over 2B."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..heads import mlp
from ..losses import nt_xent
from .base import MethodContext, register
from .twoview import TwoViewMethod


@dataclass(frozen=True)
class SimCLRConfig:
    temperature: float = 0.5  # 0.5 in the CIFAR recipe (0.1 with LARS on ImageNet)
    proj_hidden: int = 2048
    proj_dim: int = 128


@register("simclr")
class SimCLR(TwoViewMethod):
    default_recipe = "simclr"

    def __init__(self, *, cfg: SimCLRConfig, **common: Any) -> None:
        super().__init__(**common)
        self.temperature = cfg.temperature
        self.projector = mlp(self.feat_dim, cfg.proj_hidden, cfg.proj_dim, layers=2)

    @classmethod
    def from_context(cls, ctx: MethodContext) -> SimCLR:
        return cls(cfg=ctx.cfg.simclr, **cls.common(ctx))

    def ssl_loss(self, f1, f2, views, labels) -> tuple[torch.Tensor, dict[str, Any]]:
        loss = nt_xent(self.projector(f1), self.projector(f2), self.temperature)
        return loss, {"ssl_loss": loss.detach()}
