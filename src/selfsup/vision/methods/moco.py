"""MoCo v2 (Chen et al., 2020): queries from the encoder, keys from a momentum encoder, a queue
of past keys as negatives, InfoNCE at temperature 0.2.

Symmetric here: each view is a query once (against the other view's key), and both views' keys
enter the queue. The queue holds the momentum encoder's KEYS (the AugSelf code queued queries,
a bug). Across processes the keys are gathered before they are queued; BatchNorm is not shuffled
across processes (one process: nothing to shuffle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..heads import ema_update, frozen_copy, mlp_no_bn
from ..losses import info_nce_queue
from .base import MethodContext, register
from .twoview import TwoViewMethod, gather


@dataclass(frozen=True)
class MoCoConfig:
    temperature: float = 0.2
    queue_size: int = 65536  # K (paper: 65536; small data sets need fewer, e.g. 4096)
    momentum: float = 0.999  # key encoder EMA (paper: 0.999)
    proj_hidden: int = 2048
    proj_dim: int = 128


@register("moco")
class MoCo(TwoViewMethod):
    default_recipe = "moco_v2"

    def __init__(self, *, cfg: MoCoConfig, **common: Any) -> None:
        super().__init__(**common)
        self.temperature = cfg.temperature
        self.momentum = cfg.momentum
        self.projector = mlp_no_bn(self.feat_dim, cfg.proj_hidden, cfg.proj_dim, layers=2)
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        g = torch.Generator().manual_seed(0)
        queue = F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim, generator=g), dim=1)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_context(cls, ctx: MethodContext) -> MoCo:
        return cls(cfg=ctx.cfg.moco, **cls.common(ctx))

    @torch.no_grad()
    def _keys(self, views) -> tuple[torch.Tensor, torch.Tensor]:
        k1, k2 = (F.normalize(self.key_projector(self.key_backbone(v.images)), dim=1)
                  for v in views[:2])
        return k1, k2

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` into the queue at its pointer (wrapping around), oldest first out."""
        keys = gather(keys)
        k = self.queue.shape[0]
        n = min(keys.shape[0], k)
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % k
        self.queue[idx] = keys[-n:].to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % k)

    def ssl_loss(self, f1, f2, views, labels) -> tuple[torch.Tensor, dict[str, Any]]:
        q1, q2 = self.projector(f1), self.projector(f2)
        k1, k2 = self._keys(views)
        queue = self.queue.clone().detach()
        loss = 0.5 * (info_nce_queue(q1, k2, queue, self.temperature)
                      + info_nce_queue(q2, k1, queue, self.temperature))
        self.enqueue(torch.cat([k1, k2]))
        return loss, {"ssl_loss": loss.detach()}

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.key_backbone, self.backbone, self.momentum)
        ema_update(self.key_projector, self.projector, self.momentum)
