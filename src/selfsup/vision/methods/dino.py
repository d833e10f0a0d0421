"""DINO (Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021):
self-distillation with no labels.

A student network g_s (backbone + DINO head) is trained to match the output distribution of a
teacher g_t of the same architecture whose weights are an exponential moving average of the
student's (no gradient). Views come from multi-crop (:func:`selfsup.vision.views.multi_crop`):
2 global views and ``n_local`` local ones; the teacher sees the global views only, the student
all of them. With K output dimensions, view outputs ``s_v, t_g`` (B, K) and a centre ``c``
(1, K)::

    P_t(g) = softmax((t_g - c) / tau_t)          P_s(v) = log_softmax(s_v / tau_s)
    L = mean over pairs (g, v), g in globals, v in all views, v != g of
        mean over the batch of  - sum_k P_t(g)_k log P_s(v)_k

The centre is an EMA of the batch mean of the teacher outputs (all processes), updated after the
loss: ``c <- m c + (1 - m) mean(t)``, m = ``center_momentum`` (0.9). Centring and sharpening
(tau_t < tau_s) together avoid collapse.

Schedules (each a function of the step, so a resumed run recomputes them):

- teacher momentum: cosine from ``momentum_teacher`` (0.996) to 1 over the run (``after_step``);
- teacher temperature: linear from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
  ``warmup_teacher_temp_frac`` of the steps, then constant;
- weight decay: cosine from ``optim.weight_decay`` (0.04) to ``weight_decay_end`` (0.4) on the
  decayed parameter group (set by :meth:`DINO.before_optimizer_step` before each step);
- last layer frozen: the gradient of the head's last layer is dropped during the first
  ``freeze_last_layer`` fraction of the steps (the optimiser then skips it: no update, no
  weight decay);
- gradient clipping: each parameter's gradient is rescaled to norm at most ``clip_grad`` (3.0),
  parameter by parameter, as DINO does (0 turns it off).

DINO head: a 3-layer MLP (hidden 2048, GELU) to a 256-d bottleneck, L2 normalisation, and a
weight-normalised linear layer without bias to ``out_dim`` (65536) whose norm is fixed at 1
(``norm_last_layer``; else the norm g is learned).

An online linear probe on the detached backbone features of the first global view gives the
run a validation accuracy (as in :mod:`.twoview`); ``features(x)`` is the student backbone's
image feature (a ViT's CLS token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..heads import ema_update, frozen_copy
from ..schedules import cosine_ramp, linear_warmup_value
from .base import Method, MethodContext, backbone_from_config, register

# ================================================================================= config


@dataclass(frozen=True)
class DINOConfig:
    out_dim: int = 65536  # K, the last layer's output (paper: 65536)
    hidden: int = 2048  # the head MLP's hidden width
    bottleneck: int = 256  # the head MLP's output, L2-normalised before the last layer
    head_layers: int = 3  # linear layers of the head MLP before the bottleneck output
    # BatchNorm after each hidden linear layer of the head (DINO's use_bn_in_head: off for ViTs
    # in the paper, on for ResNets); statistics over every row the head sees in a step
    head_bn: bool = False
    norm_last_layer: bool = True  # weight-normalised last layer with its norm g fixed at 1
    momentum_teacher: float = 0.996  # teacher EMA momentum, cosine to 1 over training
    teacher_temp: float = 0.04  # tau_t after the warm-up
    warmup_teacher_temp: float = 0.04  # tau_t at step 0
    warmup_teacher_temp_frac: float = 0.0  # fraction of the steps of the linear tau_t warm-up
    student_temp: float = 0.1  # tau_s
    center_momentum: float = 0.9
    weight_decay_end: float | None = 0.4  # cosine from optim.weight_decay; None: constant
    freeze_last_layer: float = 0.0  # fraction of the steps with the last layer frozen
    clip_grad: float = 3.0  # per-parameter gradient-norm clipping (0: off)
    # multi-crop views (the views config's recipe must be unset or multi_crop)
    global_size: int | None = None  # None: views.image_size, else the images' size
    local_size: int | None = None  # None: half the global size
    n_local: int = 6
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])


# =================================================================================== head


class NormedLinear(nn.Module):
    """Weight-normalised linear layer without bias (Salimans and Kingma 2016):
    ``y = x (g * V / ||V||_row)^T`` for ``x`` (..., in_dim) -> (..., out_dim). With
    ``learn_norm=False`` the norm g is fixed at 1 (DINO's ``norm_last_layer``) and not a
    parameter."""

    def __init__(self, in_dim: int, out_dim: int, learn_norm: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02, a=-0.04, b=0.04)
        self.norm = nn.Parameter(torch.ones(out_dim, 1)) if learn_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.normalize(self.weight, dim=1)
        if self.norm is not None:
            w = self.norm * w
        return F.linear(x, w)


class DINOHead(nn.Module):
    """``(..., in_dim) -> (..., out_dim)``: MLP (``layers`` linear layers, GELU between, after a
    BatchNorm with ``bn``; hidden ``hidden``, output ``bottleneck``) -> L2 normalisation ->
    :class:`NormedLinear` to ``out_dim``. Linear weights start from a truncated normal (std
    0.02), biases at 0."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256,
                 layers: int = 3, norm_last_layer: bool = True, bn: bool = False) -> None:
        super().__init__()
        if layers < 1:
            raise ConfigError(f"dino.head_layers={layers}: use 1 or more.")
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, hidden)] + ([nn.BatchNorm1d(hidden)] if bn else []) + [nn.GELU()]
            d = hidden
        mods.append(nn.Linear(d, bottleneck))
        self.mlp = nn.Sequential(*mods)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
        self.last_layer = NormedLinear(bottleneck, out_dim, learn_norm=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]  # BatchNorm1d wants (rows, features): patch tokens are flattened
        z = self.mlp(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)
        return self.last_layer(F.normalize(z, dim=-1))


# ============================================================================ loss pieces


def soft_cross_entropy(teacher_probs: torch.Tensor, student_logits: torch.Tensor,
                       student_temp: float) -> torch.Tensor:
    """``- sum_k p_k log softmax(s / tau_s)_k`` averaged over every leading position:
    ``teacher_probs`` and ``student_logits`` (..., K)."""
    logp = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    return -(teacher_probs * logp).sum(dim=-1).mean()


def teacher_probs(teacher_logits: torch.Tensor, center: torch.Tensor,
                  teacher_temp: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution ``softmax((t - c) / tau_t)``, (..., K)."""
    return F.softmax((teacher_logits.float() - center) / teacher_temp, dim=-1)


def dino_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
              center: torch.Tensor, student_temp: float, teacher_temp: float) -> torch.Tensor:
    """DINO's multi-crop loss (see the module docstring).

    ``student``: V tensors (B, K), the student outputs of every view, globals first;
    ``teacher``: G tensors (B, K), the teacher outputs of the G global views (teacher view g is
    the same view as student view g); ``center`` (1, K). Averaged over the G * V - G pairs of
    different views."""
    if not teacher or len(student) < len(teacher):
        raise ValueError("dino_loss needs teacher outputs of the first G of the student views")
    total = student[0].new_zeros((), dtype=torch.float32)
    pairs = 0
    for g, t in enumerate(teacher):
        p = teacher_probs(t, center, teacher_temp)
        for v, s in enumerate(student):
            if v == g:
                continue
            total = total + soft_cross_entropy(p, s, student_temp)
            pairs += 1
    if pairs == 0:
        raise ValueError("dino_loss needs at least two views")
    return total / pairs


def global_mean(x: torch.Tensor) -> torch.Tensor:
    """``(1, K)``: the mean of the rows of ``x`` (N, K) over every process (all-reduced sums and
    counts when torch.distributed is initialised), without gradient."""
    import torch.distributed as dist

    x = x.detach().float()
    s = x.sum(dim=0, keepdim=True)
    n = torch.tensor([float(x.shape[0])], device=x.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(s)
        dist.all_reduce(n)
    return s / n


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_logits: torch.Tensor,
                  momentum: float) -> torch.Tensor:
    """The new centre ``m c + (1 - m) mean(t)`` (1, K) from teacher outputs ``(N, K)``."""
    return center * momentum + global_mean(teacher_logits) * (1.0 - momentum)


@torch.no_grad()
def clip_per_parameter(params, max_norm: float) -> None:
    """Rescale each parameter's gradient to L2 norm at most ``max_norm`` (DINO's clipping, one
    parameter at a time; ``grad * min(1, max_norm / (norm + 1e-6))``, no host synchronisation)."""
    for p in params:
        if p.grad is not None:
            factor = (max_norm / (p.grad.norm() + 1e-6)).clamp(max=1.0)
            p.grad.mul_(factor)


def by_size(views: Sequence[Any]) -> list[tuple[int, int]]:
    """``[(start, end)]``: runs of consecutive views with the same image size, so each run can
    go through the backbone as one concatenated batch (multi-crop: the globals, then the
    locals)."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(views) + 1):
        if i == len(views) or views[i].images.shape[-2:] != views[start].images.shape[-2:]:
            runs.append((start, i))
            start = i
    return runs


# ================================================================================= method


@register("dino")
class DINO(Method):
    """DINO on any backbone (see the module docstring); ``cfg`` is a :class:`DINOConfig`."""

    config_section = "dino"

    def __init__(self, backbone: nn.Module, n_classes: int, views: Any, cfg: DINOConfig,
                 online_probe: bool = True, total_steps: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        self._check(cfg, self.config_section)
        self.backbone = backbone
        self.recipe = views
        if len(views.views) < 2:
            raise ConfigError(f"{self.config_section} needs two global views "
                              "(views.recipe=multi_crop)")
        self.feat_dim = backbone.out_dim
        self.total_steps = max(int(total_steps), 1)
        self.head = self.build_head(self.feat_dim, cfg.out_dim)
        self.probe = nn.Linear(self.feat_dim, n_classes) if online_probe and n_classes > 0 else None
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        # the optimiser steps done (set by after_step; in checkpoints, so a resume keeps tau_t)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._wd_start: float | None = None

    def build_head(self, in_dim: int, out_dim: int) -> DINOHead:
        c = self.cfg
        return DINOHead(in_dim, out_dim, c.hidden, c.bottleneck, c.head_layers,
                        c.norm_last_layer, bn=c.head_bn)

    @staticmethod
    def _check(c: DINOConfig, section: str) -> None:
        for key in ("warmup_teacher_temp_frac", "freeze_last_layer"):
            if not 0.0 <= getattr(c, key) < 1.0:
                raise ConfigError(f"{section}.{key}={getattr(c, key)}: use a fraction of the "
                                  "steps in [0, 1).")
        for key in ("teacher_temp", "warmup_teacher_temp", "student_temp"):
            if getattr(c, key) <= 0:
                raise ConfigError(f"{section}.{key}={getattr(c, key)}: use a positive "
                                  "temperature.")
        for key in ("center_momentum", "momentum_teacher"):
            if not 0.0 <= getattr(c, key) <= 1.0:
                raise ConfigError(f"{section}.{key}={getattr(c, key)}: use a value in [0, 1].")
        if c.clip_grad < 0:
            raise ConfigError(f"{section}.clip_grad={c.clip_grad}: use 0 (off) or a positive "
                              "norm.")
        if c.n_local < 0:
            raise ConfigError(f"{section}.n_local={c.n_local}: use 0 or more local views.")

    # ------------------------------------------------------------------------ construction
    @classmethod
    def multi_crop_views(cls, ctx: MethodContext, c: DINOConfig):
        """The multi-crop recipe from the method's config (sizes, scales, n_local) and the
        views config (image size, blur)."""
        from ..views import build_views

        v = ctx.cfg.views
        if v.recipe not in (None, "multi_crop", "multi-crop"):
            raise ConfigError(f"views.recipe={v.recipe!r}: {cls.name} draws multi-crop views; "
                              "leave views.recipe unset or use multi_crop.")
        size = c.global_size or v.image_size or ctx.image_size
        local = c.local_size or max(size // 2, 1)
        for key in ("global_scale", "local_scale"):
            s = list(getattr(c, key))
            if len(s) != 2 or not 0.0 < s[0] <= s[1] <= 1.0:
                raise ConfigError(f"{cls.config_section}.{key}={s}: use [low, high] with "
                                  "0 < low <= high <= 1.")
        return build_views("multi_crop", size, local_size=local, n_local=c.n_local,
                           global_scale=tuple(c.global_scale), local_scale=tuple(c.local_scale),
                           blur=v.blur, mean=ctx.mean, std=ctx.std)

    @classmethod
    def from_context(cls, ctx: MethodContext) -> DINO:
        c = getattr(ctx.cfg, cls.config_section)
        views = cls.multi_crop_views(ctx, c)
        size = views.views[0].out_size[0]  # a ViT's positional embeddings: the global size
        return cls(backbone_from_config(ctx.cfg, ctx.in_channels, size), ctx.n_classes, views,
                   c, online_probe=ctx.cfg.probe.online, total_steps=ctx.total_steps)

    # ----------------------------------------------------------------------------- schedules
    def teacher_temp(self, step: int) -> float:
        """tau_t at ``step``: linear warm-up, then ``teacher_temp``."""
        c = self.cfg
        w = int(c.warmup_teacher_temp_frac * self.total_steps)
        return linear_warmup_value(step, w, c.warmup_teacher_temp, c.teacher_temp)

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        return cosine_ramp(step, total_steps, self.cfg.momentum_teacher, 1.0)

    def weight_decay(self, step: int, total_steps: int) -> float | None:
        """The decayed group's weight decay at ``step`` (None: leave it as it is)."""
        if self.cfg.weight_decay_end is None or self._wd_start is None:
            return None
        return cosine_ramp(step, total_steps, self._wd_start, self.cfg.weight_decay_end)

    def last_layer_frozen(self, step: int, total_steps: int) -> bool:
        return step < int(self.cfg.freeze_last_layer * total_steps)

    # ----------------------------------------------------------------------------- training
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(teacher, student) modules whose weights the teacher follows by EMA."""
        return [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]

    def last_layers(self) -> list[nn.Module]:
        """The layers frozen during the first ``freeze_last_layer`` of the run."""
        return [self.head.last_layer]

    def ssl_loss(self, views: list, tau_t: float) -> tuple[torch.Tensor, dict[str, Any],
                                                          torch.Tensor]:
        """DINO's loss of the views; returns (loss, logs, backbone features of view 0)."""
        c = self.cfg
        feats: list[torch.Tensor] = []
        for a, b in by_size(views):
            x = torch.cat([v.images for v in views[a:b]])
            feats.extend(self.backbone(x).chunk(b - a))
        student = self.head(torch.cat(feats)).chunk(len(views))
        with torch.no_grad():
            glob = torch.cat([v.images for v in views[:2]])
            teacher = self.teacher_head(self.teacher_backbone(glob))
        loss = dino_loss(student, teacher.chunk(2), self.center, c.student_temp, tau_t)
        self.center.copy_(update_center(self.center, teacher, c.center_momentum))
        return loss, {"dino_loss": loss.detach()}, feats[0]

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        views = self.recipe(images, generator)
        tau_t = self.teacher_temp(int(self.steps_done))
        loss, logs, f1 = self.ssl_loss(views, tau_t)
        logs = {f"train_{k}": v for k, v in logs.items()}
        logs["train_ssl_loss"] = loss.detach()
        logs["train_teacher_temp"] = tau_t
        probe_loss = self.online_probe_loss(labels, lambda keep: f1.detach()[keep], logs)
        if probe_loss is not None:
            loss = loss + probe_loss
        return loss, logs

    def before_optimizer_step(self, step: int, total_steps: int, optimizer: Any) -> None:
        """Clip gradients, drop the last layers' gradients while frozen, set the weight decay."""
        if self.cfg.clip_grad > 0:
            clip_per_parameter(self.parameters(), self.cfg.clip_grad)
        if self.last_layer_frozen(step, total_steps):
            for layer in self.last_layers():
                for p in layer.parameters():
                    p.grad = None
        wd = self.weight_decay(step, total_steps)
        if wd is not None:
            for g in optimizer.param_groups:
                if g.get("scheduled_weight_decay"):
                    g["weight_decay"] = wd

    def after_step(self, step: int, total_steps: int) -> None:
        m = self.teacher_momentum(step, total_steps)
        for teacher, student in self.ema_pairs():
            ema_update(teacher, student, m)
        self.steps_done.fill_(int(step))

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The base groups; the decayed one is marked for the weight-decay schedule."""
        self._wd_start = float(weight_decay)
        groups = super().param_groups(weight_decay)
        groups[0]["scheduled_weight_decay"] = True  # weights; norms and biases stay at 0
        return [g for g in groups if g["params"]]

    # ---------------------------------------------------------------------------- inference
