"""Masked autoencoder (He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022).

Each image becomes one view (random resized crop, scale ``crop_scale``, and a horizontal flip,
with per-image parameters drawn from the step's generator), is cut into ``N`` patches of
``p x p`` pixels, and a random subset of ``int(N * (1 - mask_ratio))`` patches is kept per image
(the lowest of ``N`` uniform noise values drawn from the generator). The ViT encoder sees only
the visible patches (``patchify_embed`` -> gather -> ``encode``, with the CLS token when the
backbone has one). A light decoder maps the encoded tokens to ``decoder_dim``, fills the masked
positions with one learned mask token, restores the patch order, adds fixed 2-D sine-cosine
positional embeddings (the paper's choice; the CLS position gets zeros), runs ``decoder_depth``
Transformer blocks (the ViT's :class:`~selfsup.vision.vit.Block`), a LayerNorm and a linear
layer to ``p * p * C`` pixel values per patch.

Loss: the mean squared error over the masked patches only,

    L = sum_i m_i * mean_j (pred_ij - target_ij)^2 / sum_i m_i,   m_i = 1 iff patch i is masked,

where the target is the patchified normalised view; with ``norm_pix_loss`` every target patch is
normalised by its own mean and variance, ``(t - mean) / sqrt(var + 1e-6)`` (population
variance), which the paper found to give better representations.

An online linear probe (``probe.online``) learns to classify the labelled images of the batch
from the detached, unmasked view's backbone feature (one extra forward without gradient), as
the two-view methods' probe does, so a run gets a validation accuracy; the kNN monitor uses the
backbone's feature of the whole image (``features``) in any case.

Shapes: images ``(B, C, H, W)``; ``patchify -> (B, N, p*p*C)`` with patches in row-major order
and pixels inside a patch ordered (row, column, channel); ``unpatchify`` inverts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import ConfigError, InputError
from .. import augment as A
from .base import Method, MethodContext, backbone_from_config, register


@dataclass(frozen=True)
class MAEConfig:
    mask_ratio: float = 0.75  # fraction of patches hidden from the encoder (paper: 0.75)
    decoder_dim: int = 512  # decoder width (paper: 512)
    decoder_depth: int = 8  # decoder blocks (paper: 8)
    decoder_heads: int = 16  # decoder attention heads (paper: 16)
    norm_pix_loss: bool = True  # per-patch normalised pixel targets (paper's default)
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])  # RRC area fraction
    hflip: bool = True  # random horizontal flips


# ------------------------------------------------------------------------------ patches


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, N, p*p*C)``: non-overlapping ``p x p`` patches in row-major order,
    pixels inside a patch ordered (row, column, channel)."""
    b, c, hh, ww = x.shape
    if hh % p or ww % p:
        raise InputError(f"image size {hh}x{ww} is not divisible by the patch size {p}")
    h, w = hh // p, ww // p
    x = x.reshape(b, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(b, h * w, p * p * c)


def unpatchify(patches: torch.Tensor, p: int, h: int, w: int) -> torch.Tensor:
    """``(B, h*w, p*p*C) -> (B, C, h*p, w*p)``: the inverse of :func:`patchify` for an
    ``h x w`` patch grid."""
    b, n, d = patches.shape
    c = d // (p * p)
    if n != h * w or c * p * p != d:
        raise InputError(f"patches of shape {tuple(patches.shape)} do not fit a {h}x{w} grid of "
                         f"{p}x{p} patches")
    x = patches.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(b, c, h * p, w * p)


def normalise_patches(target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch normalised pixels ``(t - mean) / sqrt(var + eps)`` over the last dimension
    (population variance), the paper's ``norm_pix_loss`` target. ``(B, N, P) -> (B, N, P)``."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, unbiased=False, keepdim=True)
    return (target - mean) / (var + eps).sqrt()


def random_masking(b: int, n: int, mask_ratio: float, generator: torch.Generator | None,
                   device: torch.device | str = "cpu"
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image random masking by sorting uniform noise drawn (on the CPU) from ``generator``.

    Keeps ``int(n * (1 - mask_ratio))`` patches per image: those with the lowest noise.
    Returns ``ids_keep`` (B, n_keep) (the kept indices, by increasing noise), ``mask`` (B, n)
    float with 1 for masked and 0 for kept patches, and ``ids_restore`` (B, n): the position of
    each patch in the noise order (undoes the shuffle)."""
    n_keep = int(n * (1 - mask_ratio))
    if n_keep < 1:
        raise ConfigError(f"mae.mask_ratio={mask_ratio} keeps no patch of {n}; lower it")
    noise = torch.rand(b, n, generator=generator)
    ids_shuffle = noise.argsort(dim=1)  # ascending: the first n_keep are kept
    ids_restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(b, n)
    mask[:, :n_keep] = 0
    mask = mask.gather(1, ids_restore)  # back to patch order
    return (ids_shuffle[:, :n_keep].to(device), mask.to(device), ids_restore.to(device))


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """``(h*w, dim)`` fixed 2-D sine-cosine positional embeddings (Vaswani et al. 2017 per
    axis): the first half of the channels encodes the row, the second the column, each as
    ``[sin(pos * omega_k), cos(pos * omega_k)]`` with ``omega_k = 10000^(-k / (dim / 4))``."""
    if dim % 4:
        raise ConfigError(f"mae.decoder_dim={dim} must be a multiple of 4 (2-D sine-cosine "
                          "positional embeddings)")
    q = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(q, dtype=torch.float64) / q)  # (q,)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                                torch.arange(w, dtype=torch.float64), indexing="ij")

    def axis(pos: torch.Tensor) -> torch.Tensor:
        ang = pos.reshape(-1, 1) * omega  # (h*w, q)
        return torch.cat([ang.sin(), ang.cos()], dim=1)  # (h*w, dim/2)

    return torch.cat([axis(rows), axis(cols)], dim=1).float()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per patch ``(B, N, P)``, averaged over masked patches (``mask`` (B, N)
    1 = masked) only."""
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
    return (per_patch * mask).sum() / mask.sum()


# ------------------------------------------------------------------------------ decoder


class MAEDecoder(nn.Module):
    """``(B, T_vis, D) -> (B, N, p*p*C)``: embed, fill mask tokens, unshuffle, sin-cos
    positions, Transformer blocks, LayerNorm, linear to pixels (module docstring)."""

    def __init__(self, embed_dim: int, patch_size: int, in_channels: int, dim: int, depth: int,
                 heads: int, has_cls: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        from ..vit import LN_EPS, Block, init_vit_weights

        if dim % heads:
            raise ConfigError(f"mae.decoder_dim={dim} is not divisible by mae.decoder_heads="
                              f"{heads}; pick a multiple")
        self.has_cls = has_cls
        self.dim = dim
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.pred = nn.Linear(dim, patch_size * patch_size * in_channels)
        init_vit_weights(self)
        nn.init.trunc_normal_(self.mask_token, std=0.02, a=-0.04, b=0.04)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, h: int, w: int
                ) -> torch.Tensor:
        x = self.embed(latent)  # (B, T_vis, dd)
        c = int(self.has_cls)
        b, n = ids_restore.shape
        vis = x[:, c:]  # (B, n_keep, dd) in the order of ids_keep
        fill = self.mask_token.expand(b, n - vis.shape[1], -1)
        full = torch.cat([vis, fill], dim=1)  # (B, N, dd) in noise order
        full = full.gather(1, ids_restore[..., None].expand(-1, -1, self.dim))  # patch order
        pos = sincos_2d(h, w, self.dim).to(full)[None]  # (1, N, dd)
        full = full + pos
        if c:
            full = torch.cat([x[:, :1], full], dim=1)  # CLS position: zero embedding
        for blk in self.blocks:
            full = blk(full)
        return self.pred(self.norm(full))[:, c:]  # (B, N, p*p*C)


# ------------------------------------------------------------------------------- method


@register("mae")
class MAE(Method):
    """Masked autoencoder on a ViT backbone (module docstring)."""

    def __init__(self, backbone: nn.Module, n_classes: int, cfg: MAEConfig, image_size: int,
                 online_probe: bool = True) -> None:
        super().__init__()
        from ..vit import VisionTransformer

        if not isinstance(backbone, VisionTransformer):
            raise ConfigError(f"method=mae needs a Vision Transformer backbone, got "
                              f"{type(backbone).__name__}; set model.backbone=vit_pico (or "
                              "vit_nano/tiny/small/base)")
        if not 0.0 < cfg.mask_ratio < 1.0:
            raise ConfigError(f"mae.mask_ratio={cfg.mask_ratio}: use a value in (0, 1)")
        if len(cfg.crop_scale) != 2 or not 0 < cfg.crop_scale[0] <= cfg.crop_scale[1] <= 1:
            raise ConfigError(f"mae.crop_scale={list(cfg.crop_scale)}: use [lo, hi] with "
                              "0 < lo <= hi <= 1")
        p = backbone.patch_size
        if image_size % p:
            raise ConfigError(f"image size {image_size} is not divisible by model.patch_size="
                              f"{p}; pick a patch size that divides it")
        self.backbone = backbone
        self.patch_size = p
        self.image_size = int(image_size)
        self.mask_ratio = float(cfg.mask_ratio)
        self.norm_pix_loss = bool(cfg.norm_pix_loss)
        self.crop_scale = (float(cfg.crop_scale[0]), float(cfg.crop_scale[1]))
        self.hflip = bool(cfg.hflip)
        self.decoder = MAEDecoder(backbone.out_dim, p, backbone.in_channels, cfg.decoder_dim,
                                  cfg.decoder_depth, cfg.decoder_heads, backbone.has_cls)
        self.probe = nn.Linear(backbone.out_dim, n_classes) if online_probe and n_classes > 0 \
            else None

    @classmethod
    def from_context(cls, ctx: MethodContext) -> MAE:
        cfg = ctx.cfg
        backbone = backbone_from_config(cfg, ctx.in_channels, ctx.image_size)
        return cls(backbone, ctx.n_classes, cfg.mae, ctx.image_size,
                   online_probe=cfg.probe.online)

    # ----------------------------------------------------------------------------- pieces
    def view(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Normalised views ``(B, C, S, S)`` (S = the images' size): random resized crop then
        a horizontal flip with per-image parameters from ``generator``."""
        x = self.to_unit(images)
        x, _ = A.random_resized_crop(x, self.image_size, self.crop_scale, generator=generator)
        if self.hflip:
            x, _ = A.random_horizontal_flip(x, 0.5, generator)
        return (x - self._mean) / self._std

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction target ``(B, N, p*p*C)`` of normalised images ``x``."""
        t = patchify(x, self.patch_size)
        return normalise_patches(t) if self.norm_pix_loss else t

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible patches of ``x`` and decode every patch: ``(pred (B, N, p*p*C),
        mask (B, N), latent (B, T_vis, D))``."""
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.backbone.patchify_embed(x)  # (B, N, D)
        b, n, d = tokens.shape
        ids_keep, mask, ids_restore = random_masking(b, n, self.mask_ratio, generator,
                                                     tokens.device)
        visible = tokens.gather(1, ids_keep[..., None].expand(-1, -1, d))  # (B, n_keep, D)
        latent = self.backbone.encode(visible)  # (B, T_vis, D)
        pred = self.decoder(latent, ids_restore, h, w)
        return pred, mask, latent

    # ----------------------------------------------------------------------------- training
    def training_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                      generator: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        x = self.view(images, generator)
        pred, mask, _ = self.reconstruct(x, generator)
        loss = masked_mse(pred, self.target(x), mask)
        logs: dict[str, Any] = {"train_ssl_loss": loss.detach(),
                                "train_mask_ratio": mask.mean().detach()}
        probe_loss = self.online_probe_loss(labels, lambda keep: self._whole_view(x[keep]), logs)
        if probe_loss is not None:
            loss = loss + probe_loss
        return loss, logs

    @torch.no_grad()
    def _whole_view(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of the whole (unmasked) views, without gradient (the probe's)."""
        return self.backbone(x)

    # ---------------------------------------------------------------------------- inference
