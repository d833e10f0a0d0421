"""SelfPatch (Yun et al., "Patch-level Representation Learning for Self-supervised Vision
Transformers", CVPR 2022): DINO plus a patch-level loss, on a ViT without a CLS token.

Per view, the backbone gives patch tokens ``f`` (B, N, D) (no CLS token):

- image level (DINO, :mod:`.dino`): the student's image token is the aggregation head
  (:class:`~selfsup.vision.selfpatch.AggregationHead`: a learnable query, ``agg_depth``
  class-attention blocks, LayerNorm) over all its patch tokens; the teacher's likewise on the 2
  global views; DINO's loss with the image head and the image centre;
- patch level (teacher only): for each patch i the top-``k`` of its 8 neighbours by cosine
  similarity of the teacher's patch tokens (border rule ``border``), aggregated with the
  teacher's aggregation head (one copy of the query per patch, the patch itself included) into
  ``y_i``; the student's raw patch token i through the student's patch head must match the
  teacher's patch-head distribution of ``y_i``, centred with the patch centre and sharpened with
  tau_t: same view only, on every view (global and local), averaged over patches and views
  (:func:`~selfsup.vision.selfpatch.patch_loss`).

Loss = DINO image loss + ``weight`` (0.1) x patch loss. The patch head is a DINO head with
``patch_out_dim`` (4096) outputs and its own centre (EMA of the teacher patch outputs, all views,
after the loss). Aggregation head and patch head have EMA teachers like the backbone and the
image head; both heads' last layers are frozen together during ``freeze_last_layer``.
``features(x)`` is the backbone's image feature (the mean of its normed patch tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError
from ..heads import frozen_copy
from ..selfpatch import (
    BORDERS,
    AggregationHead,
    patch_loss,
    select_neighbours,
)
from .base import register
from .dino import DINO, DINOConfig, by_size, dino_loss, update_center


@dataclass(frozen=True)
class SelfPatchConfig(DINOConfig):
    # every DINO setting (section `selfpatch` holds its own copy), plus:
    k: int = 4  # neighbours kept of the 8 of the 3x3 window
    weight: float = 0.1  # lambda of the patch loss
    patch_out_dim: int = 4096  # the patch head's output
    agg_depth: int = 2  # class-attention blocks of the aggregation head
    border: str = "valid"  # valid (outside neighbours never selected) | wrap (official code)


@register("selfpatch")
class SelfPatch(DINO):
    """SelfPatch (see the module docstring); ``cfg`` is a :class:`SelfPatchConfig`."""

    config_section = "selfpatch"

    def __init__(self, backbone: nn.Module, n_classes: int, views: Any, cfg: SelfPatchConfig,
                 online_probe: bool = True, total_steps: int = 1) -> None:
        if not hasattr(backbone, "forward_tokens"):
            raise ConfigError("selfpatch needs a ViT backbone (model.backbone=vit_pico, "
                              "vit_small, ...) with model.cls_token=false.")
        if getattr(backbone, "has_cls", False):
            raise ConfigError("selfpatch uses a ViT without a CLS token; set "
                              "model.cls_token=false.")
        if not 1 <= cfg.k <= 8:
            raise ConfigError(f"selfpatch.k={cfg.k}: choose between 1 and 8 neighbours.")
        if cfg.border not in BORDERS:
            raise ConfigError(f"selfpatch.border={cfg.border!r}: use one of "
                              f"{', '.join(BORDERS)}.")
        if cfg.weight < 0:
            raise ConfigError(f"selfpatch.weight={cfg.weight}: use 0 or more.")
        super().__init__(backbone, n_classes, views, cfg, online_probe, total_steps)
        d = self.feat_dim
        self.agg = AggregationHead(d, cfg.agg_depth, backbone.num_heads)
        self.patch_head = self.build_head(d, cfg.patch_out_dim)
        self.teacher_agg = frozen_copy(self.agg)
        self.teacher_patch_head = frozen_copy(self.patch_head)
        self.register_buffer("patch_center", torch.zeros(1, cfg.patch_out_dim))

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return super().ema_pairs() + [(self.teacher_agg, self.agg),
                                      (self.teacher_patch_head, self.patch_head)]

    def last_layers(self) -> list[nn.Module]:
        return [self.head.last_layer, self.patch_head.last_layer]

    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        p = self.backbone.patch_size
        return x.shape[-2] // p, x.shape[-1] // p

    @torch.no_grad()
    def teacher_neighbours(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index (B, N, k), valid (B, N, k))``: the neighbours the teacher selects for the
        normalised images ``x`` (for the neighbour-precision benchmark)."""
        _, tok = self.teacher_backbone.forward_tokens(x)
        h, w = self._grid(x)
        return select_neighbours(tok, h, w, self.cfg.k, self.cfg.border)

    def ssl_loss(self, views: list, tau_t: float) -> tuple[torch.Tensor, dict[str, Any],
                                                          torch.Tensor]:
        c = self.cfg
        n_views = len(views)
        s_img: list[torch.Tensor] = []
        s_patch: list[torch.Tensor] = []
        feat0 = None
        for a, b in by_size(views):
            _, tok = self.backbone.forward_tokens(torch.cat([v.images for v in views[a:b]]))
            s_img.append(self.agg(tok))  # (G B, D)
            s_patch.extend(self.patch_head(tok).chunk(b - a))  # each (B, N, K_p)
            if a == 0:
                feat0 = tok.chunk(b - a)[0].mean(dim=1)  # the backbone feature of view 0
        student = self.head(torch.cat(s_img)).chunk(n_views)
        with torch.no_grad():
            t_img: list[torch.Tensor] = []
            t_patch: list[torch.Tensor] = []
            for a, b in by_size(views):
                x = torch.cat([v.images for v in views[a:b]])
                _, tok = self.teacher_backbone.forward_tokens(x)
                h, w = self._grid(x)
                idx, ok = select_neighbours(tok, h, w, c.k, c.border)
                y = self.teacher_agg.aggregate_neighbours(tok, idx, ok)
                t_patch.extend(self.teacher_patch_head(y).chunk(b - a))
                n_glob = max(0, min(b, 2) - a)  # global views (the first 2) in this run
                if n_glob:
                    per_view = tok.shape[0] // (b - a)
                    t_img.append(self.teacher_head(self.teacher_agg(tok[: n_glob * per_view])))
            teacher = torch.cat(t_img)
        img_loss = dino_loss(student, teacher.chunk(2), self.center, c.student_temp, tau_t)
        p_loss = patch_loss(s_patch, t_patch, self.patch_center, c.student_temp, tau_t)
        loss = img_loss + c.weight * p_loss
        self.center.copy_(update_center(self.center, teacher, c.center_momentum))
        all_patches = torch.cat([t.reshape(-1, t.shape[-1]) for t in t_patch])
        self.patch_center.copy_(update_center(self.patch_center, all_patches,
                                              c.center_momentum))
        assert feat0 is not None
        return loss, {"dino_loss": img_loss.detach(), "patch_loss": p_loss.detach()}, feat0
