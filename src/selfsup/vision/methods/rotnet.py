"""RotNet: self-supervision by predicting image rotations (Gidaris et al., ICLR 2018).

Each training image gets a light augmentation (random crop after zero padding,
``data.crop_padding``, and a horizontal flip, ``data.hflip``) and is then rotated by 0, 90, 180
and 270 degrees counter-clockwise; all four copies go into the batch (the paper's choice: it
trains on the four rotations of every image at once, which worked better than one random
rotation per image). A 4-way classifier on the backbone's pooled features predicts the rotation
``k`` of each copy, trained with cross-entropy::

    loss = (1 / 4B) * sum_i sum_k CE(head(f(rot90(x_i, k))), k)

Batch layout (:func:`rotate_batch`): copy ``4 i + k`` is image ``i`` rotated by ``k * 90``
degrees, so the labels cycle ``0, 1, 2, 3, 0, 1, ...``. One backbone pass sees all ``4B`` copies.

The head (``rotnet.head``) is ``linear`` or a small ``mlp`` (``rotnet.mlp_layers`` layers,
BatchNorm + ReLU between, hidden width ``rotnet.hidden``). The paper classifies from conv
features of a NIN; here the head sits on the pooled features ``(B, D)`` of any backbone (CIFAR
or torchvision ResNet, ViT), so the same method runs on every backbone.

An online linear probe (``probe.online``, as the two-view methods') trains on the detached
pooled features of the unrotated copies (``k = 0``) of the labelled images of the batch; it
sends no gradient to the backbone and gives the run a validation accuracy and a prediction.
Rotation needs square images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from .base import Method, MethodContext, backbone_from_config, register

N_ROTATIONS = 4


@dataclass(frozen=True)
class RotNetConfig:
    head: str = "linear"  # linear | mlp: the 4-way rotation classifier on pooled features
    hidden: int = 512  # mlp head: hidden width
    mlp_layers: int = 2  # mlp head: linear layers (BatchNorm + ReLU between)


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rotations of every image: ``x`` ``(B, C, S, S)`` -> ``(4B, C, S, S)`` with copy
    ``4 i + k`` = ``torch.rot90(x[i], k, dims=(-2, -1))`` (counter-clockwise), and the labels
    ``(4B,)`` int64 ``k`` (``0, 1, 2, 3, 0, 1, ...``)."""
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ConfigError(f"RotNet rotates square images (B, C, S, S); got {tuple(x.shape)}")
    b = x.shape[0]
    rot = torch.stack([torch.rot90(x, k, dims=(-2, -1)) for k in range(N_ROTATIONS)], dim=1)
    labels = torch.arange(N_ROTATIONS, device=x.device).repeat(b)
    return rot.reshape(b * N_ROTATIONS, *x.shape[1:]), labels


def rotation_head(d: int, cfg: RotNetConfig) -> nn.Module:
    """The 4-way rotation classifier on ``(B, d)`` features."""
    if cfg.head == "linear":
        return nn.Linear(d, N_ROTATIONS)
    if cfg.head == "mlp":
        from ..heads import mlp

        if cfg.mlp_layers < 2 or cfg.hidden < 1:
            raise ConfigError(f"rotnet.head=mlp needs rotnet.mlp_layers >= 2 and rotnet.hidden "
                              f">= 1, got {cfg.mlp_layers} and {cfg.hidden}")
        return mlp(d, cfg.hidden, N_ROTATIONS, layers=cfg.mlp_layers)
    raise ConfigError(f"rotnet.head={cfg.head!r}: use linear or mlp")


@register("rotnet")
class RotNet(Method):
    """Rotation prediction (see the module docstring)."""

    def __init__(self, backbone: nn.Module, n_classes: int, cfg: RotNetConfig | None = None,
                 online_probe: bool = True, crop_padding: int = 0, hflip: bool = False) -> None:
        super().__init__()
        cfg = cfg or RotNetConfig()
        self.backbone = backbone
        d = backbone.out_dim
        self.feat_dim = d
        self.head = rotation_head(d, cfg)
        self.probe = nn.Linear(d, n_classes) if online_probe and n_classes > 0 else None
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)

    @classmethod
    def from_context(cls, ctx: MethodContext) -> RotNet:
        cfg = ctx.cfg
        return cls(backbone_from_config(cfg, ctx.in_channels, ctx.image_size), ctx.n_classes,
                   cfg.rotnet, online_probe=cfg.probe.online,
                   crop_padding=cfg.data.crop_padding, hflip=cfg.data.hflip)

    # ----------------------------------------------------------------------------- training
    def augment(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Normalised images with the light augmentation (padded random crop, flip)."""
        from ..augment import random_crop, random_hflip

        x = self.normalise(images)
        x, _ = random_crop(x, self.crop_padding, generator=generator)
        if self.hflip:
            x, _ = random_hflip(x, generator=generator)
        return x

    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        x = self.augment(images, generator)
        x4, rot = rotate_batch(x)
        f = self.backbone(x4)  # (4B, D)
        logits = self.head(f)
        loss = F.cross_entropy(logits, rot)
        logs: dict[str, Any] = {"train_rot_loss": loss.detach(),
                                "train_rot_acc": (logits.argmax(1) == rot).float().mean()}
        # the probe sees the unrotated copies, (B, D)
        probe_loss = self.online_probe_loss(
            labels, lambda keep: f[0::N_ROTATIONS].detach()[keep], logs)
        if probe_loss is not None:
            loss = loss + probe_loss
        return loss, logs

    # ---------------------------------------------------------------------------- inference

    @torch.no_grad()
    def predict_rotation(self, x: torch.Tensor) -> torch.Tensor:
        """Rotation logits ``(B, 4)`` of normalised images."""
        return self.head(self.backbone(x))
