"""BYOL (Grill et al., NeurIPS 2020): an online network with a predictor regresses the
projections of an EMA target network; the target's momentum rises from ``momentum`` to 1 along a
cosine over training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..heads import ema_update, frozen_copy, mlp
from ..losses import byol_loss
from ..schedules import cosine_ramp
from .base import MethodContext, register
from .twoview import TwoViewMethod


@dataclass(frozen=True)
class BYOLConfig:
    momentum: float = 0.996  # base target momentum tau (paper: 0.996, ramped to 1)
    proj_hidden: int = 4096
    proj_dim: int = 256
    pred_hidden: int = 4096


@register("byol")
class BYOL(TwoViewMethod):
    default_recipe = "byol"

    def __init__(self, *, cfg: BYOLConfig, **common: Any) -> None:
        super().__init__(**common)
        self.base_momentum = cfg.momentum
        self.projector = mlp(self.feat_dim, cfg.proj_hidden, cfg.proj_dim, layers=2)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim, layers=2)
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)

    @classmethod
    def from_context(cls, ctx: MethodContext) -> BYOL:
        return cls(cfg=ctx.cfg.byol, **cls.common(ctx))

    def ssl_loss(self, f1, f2, views, labels) -> tuple[torch.Tensor, dict[str, Any]]:
        p1, p2 = self.predictor(self.projector(f1)), self.predictor(self.projector(f2))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(views[0].images))
            t2 = self.target_projector(self.target_backbone(views[1].images))
        loss = byol_loss(p1, t2) + byol_loss(p2, t1)
        return loss, {"ssl_loss": loss.detach()}

    def after_step(self, step: int, total_steps: int) -> None:
        m = cosine_ramp(step, total_steps, self.base_momentum, 1.0)
        ema_update(self.target_backbone, self.backbone, m)
        ema_update(self.target_projector, self.projector, m)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return [g for g in super().param_groups(weight_decay) if g["params"]]
