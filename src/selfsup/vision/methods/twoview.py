"""The common part of two-view methods: views, backbone features, AugSelf, the online probe.

A two-view method draws two views of each image from its view recipe (with their per-image
augmentation parameters), computes backbone features f(v1), f(v2), and adds to its own loss:

- AugSelf (``augself.kinds`` non-empty): heads on concat(f(v1), f(v2)) regress the difference of
  the views' augmentation parameters (:mod:`selfsup.vision.augself`), weight ``augself.weight``;
- an online linear probe (``probe.online``): a linear classifier on the detached features of the
  first view, trained on the labelled images of the batch (label >= 0); it changes nothing in
  the backbone and gives the run a validation accuracy for model selection and a prediction.

Subclasses implement :meth:`ssl_loss` from the two features and views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from .base import Method, MethodContext, backbone_from_config


@dataclass(frozen=True)
class ViewsConfig:
    recipe: str | None = None  # simclr | moco_v2 | simsiam | byol (None: the method's own)
    image_size: int | None = None  # size of the views (None: the images' size)
    blur: bool | None = None  # Gaussian blur (None: on from 64 px, as the CIFAR recipes drop it)


@dataclass(frozen=True)
class AugSelfConfig:
    # augmentation kinds whose parameter difference is predicted (empty: AugSelf off); the
    # paper's default is crop + colour. Others: flip, blur, rotation, solarize.
    kinds: list[str] = field(default_factory=list)
    weight: float = 1.0  # lambda (paper: 1.0 on STL-10, 0.5 on ImageNet-100)
    hidden: int = 512  # hidden width of each kind's 3-layer MLP


@dataclass(frozen=True)
class ProbeConfig:
    online: bool = True  # a linear probe on detached features, trained alongside


def gather(x: torch.Tensor) -> torch.Tensor:
    """``x`` of every process concatenated along dim 0 (no gradient); ``x`` itself when not
    distributed."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    parts = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class TwoViewMethod(Method):
    """Base of SimCLR, MoCo v2, BYOL, SimSiam and supervised pretraining (see module doc)."""

    default_recipe = "simsiam"

    def __init__(self, backbone: nn.Module, n_classes: int, views: Any,
                 augself: AugSelfConfig | None = None, online_probe: bool = True) -> None:
        super().__init__()
        from ..augself import AugSelfHeads, normalise_kinds

        self.backbone = backbone
        self.recipe = views
        d = backbone.out_dim
        self.feat_dim = d
        self.probe = nn.Linear(d, n_classes) if online_probe and n_classes > 0 else None
        a = augself or AugSelfConfig()
        self.augself_kinds = normalise_kinds(a.kinds) if a.kinds else ()
        self.augself_weight = float(a.weight)
        self.augself = (AugSelfHeads(d, self.augself_kinds, hidden=a.hidden)
                        if self.augself_kinds else None)
        if len(self.recipe.views) < 2:
            raise ConfigError(f"view recipe {self.recipe.name!r} makes one view; two-view "
                              "methods need two")

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def common(cls, ctx: MethodContext) -> dict[str, Any]:
        """Backbone, views, AugSelf and probe settings from the run config."""
        from ..views import build_views

        cfg = ctx.cfg
        v = cfg.views
        size = v.image_size or ctx.image_size
        recipe = build_views(v.recipe or cls.default_recipe, size, blur=v.blur,
                             mean=ctx.mean, std=ctx.std)
        return {"backbone": backbone_from_config(cfg, ctx.in_channels, size),
                "n_classes": ctx.n_classes, "views": recipe, "augself": cfg.augself,
                "online_probe": cfg.probe.online}

    # ----------------------------------------------------------------------------- training
    def ssl_loss(self, f1: torch.Tensor, f2: torch.Tensor, views: list,
                 labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        views = self.recipe(images, generator)
        v1, v2 = views[0], views[1]
        # one backbone pass per view, as the papers do: BatchNorm normalises each view's batch
        # on its own (and two passes of B are faster on a CPU than one of 2B)
        f1, f2 = self.backbone(v1.images), self.backbone(v2.images)
        loss, logs = self.ssl_loss(f1, f2, views, labels)
        logs = {f"train_{k}": v for k, v in logs.items()}
        if self.augself is not None:
            spec = self.recipe.views[0]
            aux, aux_logs = self._augself_loss(f1, f2, v1.params, v2.params, spec)
            loss = loss + aux
            logs.update({f"train_{k.replace('/', '_')}": v for k, v in aux_logs.items()})
        probe_loss = self.online_probe_loss(labels, lambda keep: f1.detach()[keep], logs)
        if probe_loss is not None:
            loss = loss + probe_loss
        return loss, logs

    def _augself_loss(self, f1, f2, p1, p2, spec) -> tuple[torch.Tensor, dict[str, Any]]:
        from ..augself import augself_loss

        return augself_loss(self.augself, f1, f2, p1, p2, self.augself_kinds,
                            self.augself_weight, jitter_ranges=spec.jitter,
                            blur_sigma=spec.blur_sigma)

    # ---------------------------------------------------------------------------- inference
