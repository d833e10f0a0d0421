"""SLA: self-supervised label augmentation (Lee, Hwang and Shin, ICML 2020).

One method, five training modes over the same backbone and transformation set
{t_1 = identity, ..., t_M}:

- ``baseline``: N-way head on untransformed images.
- ``da``: the M transformed copies as plain augmentation, all with the original label
  (same effective batch M x B as SLA, so the comparison isolates the joint labels).
- ``mt``: multi-task, an N-way head and an M-way head on all M copies, losses summed.
- ``sla``: one N*M-way head on the joint label (y, j) -> index y*M + j.
- ``sla_sd``: ``sla`` plus an N-way self-distillation head u on the identity copy:
  L = L_SLA + CE(u, y) + tau^2 KL(softmax(AG / tau) || softmax(u / tau)), AG detached.

Inference (``predict``): SI = identity copy, columns (., j=0) of the joint head;
AG = mean over j of the joint logits of t_j(x) at columns (., j), then softmax;
SD = the head u alone (1 x cost). ``joint`` accuracy = argmax over N*M on every copy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Method, MethodContext, backbone_from_config, register

MODES = ("baseline", "da", "mt", "sla", "sla_sd")


def joint_labels(y: torch.Tensor, m: int) -> torch.Tensor:
    """Joint labels for a transform-major expanded batch.

    y: (B,) class labels. Returns (M*B,) labels y*M + j with the copy of transform j of
    sample b at position j*B + b.
    """
    b = y.shape[0]
    j = torch.arange(m, device=y.device).repeat_interleave(b)  # (M*B,)
    return y.repeat(m) * m + j


def own_column_logits(joint: torch.Tensor, n_classes: int, m: int) -> torch.Tensor:
    """The joint logits of each copy j at its own columns (., j).

    joint: (M*B, N*M) logits of the transform-major expanded batch. Returns (M, B, N).
    """
    b = joint.shape[0] // m
    per_copy = joint.view(m, b, n_classes, m)  # (M, B, N, M): copy j, sample, class, column
    idx = torch.arange(m, device=joint.device)
    return per_copy[idx, :, :, idx]


def aggregated_logits(joint: torch.Tensor, n_classes: int, m: int) -> torch.Tensor:
    """AG inference: mean over j of the joint logits of copy j at columns (., j).

    joint: (M*B, N*M) logits of the transform-major expanded batch. Returns (B, N).
    """
    return own_column_logits(joint, n_classes, m).mean(dim=0)


def single_logits(joint_identity: torch.Tensor, n_classes: int, m: int) -> torch.Tensor:
    """SI inference: identity-copy joint logits (B, N*M) -> columns (., j=0), shape (B, N)."""
    return joint_identity.view(-1, n_classes, m)[:, :, 0]


def self_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """tau^2 * KL(softmax(teacher/tau) || softmax(student/tau)), teacher detached, batch mean."""
    t = F.softmax(teacher_logits.detach() / tau, dim=1)
    log_s = F.log_softmax(student_logits / tau, dim=1)
    return (tau**2) * F.kl_div(log_s, t, reduction="batchmean")


@register("sla")
class SLAModel(Method):
    """Backbone plus the heads a mode needs; the method ``sla`` of the training host.

    Its training step augments like the paper's CIFAR recipe (random crop after zero padding of
    the normalised image, horizontal flip), then applies :meth:`loss`."""

    uses_labels = True

    def __init__(
        self, backbone: nn.Module, n_classes: int, label_transform: nn.Module, mode: str
    ) -> None:
        super().__init__()
        if mode not in MODES:
            from ...errors import ConfigError

            raise ConfigError(f"Unknown SLA mode '{mode}'. Valid modes: {', '.join(MODES)}")
        self.backbone = backbone
        self.transform = label_transform
        self.mode = mode
        self.n_classes = n_classes
        self.m = int(label_transform.M)
        d = backbone.out_dim
        if mode in ("baseline", "da", "mt"):
            self.head = nn.Linear(d, n_classes)
        else:
            self.head = nn.Linear(d, n_classes * self.m)
        self.aux_head = nn.Linear(d, self.m) if mode == "mt" else None
        self.sd_head = nn.Linear(d, n_classes) if mode == "sla_sd" else None
        self.tau = 1.0
        self.crop_padding = 0
        self.hflip = False

    @classmethod
    def from_context(cls, ctx: MethodContext) -> SLAModel:
        from ..label_transforms import build_label_transform

        cfg = ctx.cfg
        model = cls(backbone_from_config(cfg, ctx.in_channels, ctx.image_size), ctx.n_classes,
                    build_label_transform(cfg.sla.transform), cfg.sla.mode)
        model.tau = cfg.sla.tau
        model.crop_padding = cfg.data.crop_padding
        model.hflip = cfg.data.hflip
        return model

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        from ..augment import random_crop, random_hflip

        if labels is None:
            from ...errors import ConfigError

            raise ConfigError("SLA trains on labelled images; the training split has none.")
        x = self.normalise(images)
        x, _ = random_crop(x, self.crop_padding, generator=generator)
        if self.hflip:
            x, _ = random_hflip(x, generator=generator)
        return self.loss(x, labels, tau=self.tau)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """One group, weight decay on every parameter (the paper's recipe)."""
        return [{"params": list(self.parameters()), "weight_decay": weight_decay}]

    # ------------------------------------------------------------------------- training
    def loss(self, x: torch.Tensor, y: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, dict]:
        """Training loss of the mode on a clean (already augmented) batch x: (B, C, H, W)."""
        logs: dict[str, torch.Tensor] = {}
        if self.mode == "baseline":
            logits = self.head(self.backbone(x))
            loss = F.cross_entropy(logits, y)
            logs["train_acc"] = (logits.argmax(1) == y).float().mean()
            return loss, logs
        x_all, j_all = self.transform.expand(x)  # (M*B, C, H, W), (M*B,)
        feats = self.backbone(x_all)  # (M*B, D)
        y_rep = y.repeat(self.m)
        if self.mode == "da":
            logits = self.head(feats)
            loss = F.cross_entropy(logits, y_rep)
            logs["train_acc"] = (logits.argmax(1) == y_rep).float().mean()
        elif self.mode == "mt":
            logits = self.head(feats)
            aux = self.aux_head(feats)  # type: ignore[misc]
            loss_cls = F.cross_entropy(logits, y_rep)
            loss_aux = F.cross_entropy(aux, j_all)
            loss = loss_cls + loss_aux
            logs.update(loss_cls=loss_cls.detach(), loss_aux=loss_aux.detach())
            logs["train_acc"] = (logits.argmax(1) == y_rep).float().mean()
        else:
            joint = self.head(feats)  # (M*B, N*M)
            target = joint_labels(y, self.m)
            loss = F.cross_entropy(joint, target)
            logs["loss_sla"] = loss.detach()
            logs["train_joint_acc"] = (joint.argmax(1) == target).float().mean()
            if self.mode == "sla_sd":
                b = x.shape[0]
                sd_logits = self.sd_head(feats[:b])  # type: ignore[misc]  identity copy only
                ag = aggregated_logits(joint, self.n_classes, self.m)
                loss_ce = F.cross_entropy(sd_logits, y)
                loss_kd = self_distillation_loss(sd_logits, ag)
                loss = loss + loss_ce + loss_kd
                logs.update(loss_sd_ce=loss_ce.detach(), loss_sd_kd=loss_kd.detach())
        return loss, logs

    # ------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every inference rule the mode has, each (B, N); plus joint (M*B, N*M)."""
        if self.mode in ("baseline", "da", "mt"):
            return {"single": self.head(self.backbone(x))}
        x_all, _ = self.transform.expand(x)
        feats = self.backbone(x_all)
        joint = self.head(feats)
        b = x.shape[0]
        out = {
            "single": single_logits(joint[:b], self.n_classes, self.m),
            "aggregated": aggregated_logits(joint, self.n_classes, self.m),
            "joint": joint,
        }
        if self.mode == "sla_sd":
            out["distilled"] = self.sd_head(feats[:b])  # type: ignore[misc]
        return out

    def has_classifier(self) -> bool:
        return True

    def primary_rule(self) -> str:
        """The rule the mode is judged by: SD for sla_sd, AG for sla, the N-way head else."""
        return {"sla": "aggregated", "sla_sd": "distilled"}.get(self.mode, "single")

    @torch.no_grad()
    def eval_counts(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Correct predictions per rule; ``joint`` counts the N*M-way head on every copy (divided
        by M, so it reads as an accuracy over the batch); the cross-entropy of ``single``."""
        preds = self.predict(x)
        out: dict[str, float] = {}
        for rule, logits in preds.items():
            if rule == "joint":
                tgt = joint_labels(y, self.m)
                out["joint"] = (logits.argmax(1) == tgt).float().sum().item() / self.m
            else:
                out[rule] = float((logits.argmax(1) == y).sum().item())
        out["loss"] = float(F.cross_entropy(preds["single"].float(), y, reduction="sum"))
        return out
