"""Supervised pretraining on two views: cross-entropy of a linear classifier on both views'
backbone features (the paper's supervised reference, and a base for AugSelf)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from .base import MethodContext, register
from .twoview import TwoViewMethod


@dataclass(frozen=True)
class SupervisedConfig:
    label_smoothing: float = 0.0


@register("supervised")
class Supervised(TwoViewMethod):
    default_recipe = "simsiam"
    uses_labels = True

    def __init__(self, *, cfg: SupervisedConfig, **common: Any) -> None:
        common["online_probe"] = False  # the classifier is the model
        super().__init__(**common)
        self.classifier = nn.Linear(self.feat_dim, common["n_classes"])
        self.label_smoothing = cfg.label_smoothing

    @classmethod
    def from_context(cls, ctx: MethodContext) -> Supervised:
        return cls(cfg=ctx.cfg.supervised, **cls.common(ctx))

    def ssl_loss(self, f1, f2, views, labels) -> tuple[torch.Tensor, dict[str, Any]]:
        if labels is None or not bool((labels >= 0).all()):
            raise ConfigError("method=supervised needs a labelled training split")
        logits = self.classifier(torch.cat([f1, f2]))
        y = torch.cat([labels, labels])
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, {"ce": loss.detach(), "acc": (logits.argmax(1) == y).float().mean()}

    def has_classifier(self) -> bool:
        return True

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {"single": self.classifier(self.backbone(x))}
