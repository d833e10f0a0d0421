"""SimSiam (Chen and He, CVPR 2021): a projector, a predictor, stop-gradient, no negatives.

L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 with D the negative cosine similarity;
the projector ends in BatchNorm, the predictor is a bottleneck MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..heads import mlp
from ..losses import negative_cosine
from .base import MethodContext, register
from .twoview import TwoViewMethod


@dataclass(frozen=True)
class SimSiamConfig:
    proj_dim: int = 2048  # projector width and output (paper: 2048)
    proj_layers: int = 3  # 3 on ImageNet, 2 in the CIFAR recipe
    pred_hidden: int = 512  # predictor bottleneck (paper: 512)


@register("simsiam")
class SimSiam(TwoViewMethod):
    default_recipe = "simsiam"

    def __init__(self, *, cfg: SimSiamConfig, **common: Any) -> None:
        super().__init__(**common)
        self.projector = mlp(self.feat_dim, cfg.proj_dim, cfg.proj_dim, layers=cfg.proj_layers,
                             bn_last=True)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, layers=2)

    @classmethod
    def from_context(cls, ctx: MethodContext) -> SimSiam:
        return cls(cfg=ctx.cfg.simsiam, **cls.common(ctx))

    def ssl_loss(self, f1, f2, views, labels) -> tuple[torch.Tensor, dict[str, Any]]:
        z1, z2 = self.projector(f1), self.projector(f2)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * negative_cosine(p1, z2) + 0.5 * negative_cosine(p2, z1)
        # collapse monitor: the std of the normalised projections (1/sqrt(d) when healthy)
        zn = torch.nn.functional.normalize(z1.detach(), dim=1)
        return loss, {"ssl_loss": loss.detach(), "z_std": zn.std(dim=0).mean()}
