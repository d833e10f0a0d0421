"""Vision Transformer backbone (Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021).

An image ``(B, C, H, W)`` is cut into non-overlapping ``p x p`` patches by a stride-``p``
convolution (the patch embedding), giving ``N = (H/p)(W/p)`` tokens of width ``D`` in row-major
order; learned positional embeddings are added, an optional learned CLS token is prepended, and
``depth`` pre-norm blocks follow::

    x = x + drop_path(attn(norm1(x)))      # multi-head self-attention, softmax(q k^T / sqrt(d)) v
    x = x + drop_path(mlp(norm2(x)))       # Linear(D, r D) -> GELU -> Linear(r D, D)

then a final LayerNorm (eps 1e-6). Stochastic depth (Huang et al. 2016) drops each residual
branch per sample with a rate rising linearly from 0 to ``drop_path`` over the blocks.
Linear layers, the CLS token and the positional embeddings start from a truncated normal with
std 0.02 (biases 0, LayerNorm 1/0); the patch-embedding convolution keeps PyTorch's default.

Inputs of another size (any ``H, W`` divisible by ``p``, e.g. multi-crop local views) get the
positional embeddings of the patch grid resized bicubically (``align_corners=False``, no
antialiasing); the CLS token's positional embedding is kept as it is.

Outputs (all after the final LayerNorm):

- ``forward(x) -> (B, D)``: the CLS token, or without one the mean of the patch tokens;
- ``forward_tokens(x) -> (cls (B, D) or None, patches (B, N, D))``;
- ``forward_features(x) -> (B, D, H/p, W/p)``: the patch tokens as a map;
- ``last_self_attention(x) -> (B, heads, T, T)``: the softmaxed attention of the last block,
  ``T = N + 1`` with the CLS token at index 0, else ``N``;
- MAE (He et al. 2022): ``patchify_embed(x) -> (B, N, D)`` (patch + positional embeddings, no
  CLS) and ``encode(tokens) -> (B, T, D)`` (prepend CLS, blocks, final norm).

Parameter names follow timm, so ``state_dict()`` loads with ``strict=True`` into
``timm.models.vision_transformer.VisionTransformer`` built with::

    VisionTransformer(img_size=S, patch_size=p, in_chans=C, embed_dim=D, depth=L,
                      num_heads=h, mlp_ratio=r, qkv_bias=True, num_classes=0,
                      class_token=True,  global_pool="token")              # cls_token=True
                      class_token=False, global_pool="avg", fc_norm=False) # cls_token=False

and timm's ``forward_features`` then gives our tokens and ``forward`` our pooled feature. In the
no-CLS case ``fc_norm=False`` is needed: timm's default for ``global_pool="avg"`` would move the
final LayerNorm after the pooling (``fc_norm``), whereas here every patch token is normalised
and then averaged; ``no_embed_class`` makes no difference without a class token (the positional
embedding then has ``N`` rows either way). timm resizes positional embeddings only with
``dynamic_img_size=True`` and with antialiasing, so the match holds at the built size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .backbone_base import Backbone

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "Mlp",
    "PatchEmbed",
    "VisionTransformer",
    "VIT_SIZES",
    "drop_path",
    "vit_factory",
]

LN_EPS = 1e-6


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch ``x`` (B, ...) of a sample with
    probability ``rate`` and scale the kept ones by ``1 / (1 - rate)``; identity in eval."""
    if rate <= 0.0 or not training:
        return x
    keep = 1.0 - rate
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """:func:`drop_path` as a module (no parameters)."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.rate, self.training)


class PatchEmbed(nn.Module):
    """``(B, C, H, W) -> (B, N, D)``: a ``p x p`` stride-``p`` convolution, flattened row-major."""

    def __init__(self, patch_size: int, in_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = int(patch_size)
        self.proj = nn.Conv2d(in_channels, embed_dim, self.patch_size, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)  # (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    """Multi-head self-attention: ``softmax(q k^T / sqrt(d)) v`` per head, then a projection.

    ``qkv``: one ``Linear(D, 3D)``; its output splits into q, k, v (in that order), each into
    ``num_heads`` heads of width ``d = D / num_heads``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise InputError(f"embed_dim {dim} is not divisible by num_heads {num_heads}; pick "
                             "a width that is a multiple of the number of heads")
        self.num_heads = int(num_heads)
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, d)
        return q, k, v

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, D) -> (B, heads, T, T)``: the softmaxed attention weights."""
        q, k, _ = self._qkv(x)
        return ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self._qkv(x)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, T, d), same scale 1/sqrt(d)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    """``Linear(D, hidden) -> GELU -> Linear(hidden, D)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm Transformer block ``(B, T, D) -> (B, T, D)`` with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02, cut at +-2 std) linear weights, zero biases, LayerNorm 1/0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class VisionTransformer(Backbone):
    """ViT backbone without a classifier (see the module docstring).

    Args:
        img_size: the square input size the positional embeddings are learned for.
        patch_size: ``p``; ``img_size`` and every input side must be divisible by it.
        in_channels: image channels.
        embed_dim, depth, num_heads, mlp_ratio: ``D``, blocks, heads, MLP width / ``D``.
        cls_token: prepend a learned CLS token (the image feature); else the image feature is
            the mean of the patch tokens.
        drop_path: stochastic-depth rate of the last block (linear from 0 over the blocks).

    Attributes: ``out_dim == embed_dim``, ``patch_size``, ``num_heads``, ``has_cls``,
    ``grid_size`` (``img_size / p``).
    """

    def __init__(self, img_size: int = 32, patch_size: int = 4, in_channels: int = 3,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, cls_token: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        for key, val in (("img_size", img_size), ("patch_size", patch_size),
                         ("in_channels", in_channels), ("embed_dim", embed_dim),
                         ("depth", depth), ("num_heads", num_heads)):
            if int(val) != val or val < 1:
                raise InputError(f"{key} must be a positive integer, got {val!r}")
        if img_size % patch_size:
            raise InputError(f"img_size {img_size} is not divisible by patch_size {patch_size}; "
                             "pick a patch size that divides the image size")
        if not 0.0 <= drop_path < 1.0:
            raise InputError(f"drop_path must be in [0, 1), got {drop_path!r}")
        self.img_size = int(img_size)
        self.patch_size = int(patch_size)
        self.in_channels = int(in_channels)
        self.num_heads = int(num_heads)
        self.depth = int(depth)
        self.has_cls = bool(cls_token)
        self.out_dim = self.embed_dim = int(embed_dim)
        self.grid_size = self.img_size // self.patch_size
        n = self.grid_size ** 2

        self.patch_embed = PatchEmbed(self.patch_size, self.in_channels, self.embed_dim)
        if self.has_cls:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + int(self.has_cls), self.embed_dim))
        rates = torch.linspace(0, float(drop_path), self.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(self.embed_dim, self.num_heads, mlp_ratio, True, r) for r in rates)
        self.norm = nn.LayerNorm(self.embed_dim, eps=LN_EPS)

        init_vit_weights(self)
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        if self.has_cls:
            nn.init.trunc_normal_(self.cls_token, std=0.02, a=-0.04, b=0.04)

    # ----------------------------------------------------------------------- embeddings
    def patch_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """``(1, h*w, D)``: the patch positional embeddings for an ``h x w`` grid (bicubic
        resize of the learned ``grid_size x grid_size`` ones when the grid differs)."""
        pe = self.pos_embed[:, int(self.has_cls):]  # (1, g*g, D)
        g = self.grid_size
        if (h, w) == (g, g):
            return pe
        grid = pe.reshape(1, g, g, self.embed_dim).permute(0, 3, 1, 2)  # (1, D, g, g)
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False)
        return grid.to(pe.dtype).permute(0, 2, 3, 1).reshape(1, h * w, self.embed_dim)

    def _grid(self, x: torch.Tensor) -> tuple[int, int]:
        self._check_input(x, self.in_channels)
        hh, ww = x.shape[-2:]
        p = self.patch_size
        if hh % p or ww % p:
            raise InputError(f"image size {hh}x{ww} is not divisible by the patch size {p}; "
                             f"resize or crop the images to a multiple of {p}")
        return hh // p, ww // p

    def patchify_embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, N, D)``: patch embeddings plus positional embeddings (no CLS)."""
        h, w = self._grid(x)
        return self.patch_embed(x) + self.patch_pos_embed(h, w)

    def _prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        if not self.has_cls:
            return tokens
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)  # (B, 1 + N, D)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N', D) -> (B, T, D)``: prepend the CLS token (with its positional embedding)
        when there is one, run the blocks and the final norm. ``tokens`` are embedded patches
        (any subset, e.g. MAE's visible ones)."""
        x = self._prepend_cls(tokens)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    # --------------------------------------------------------------------------- outputs
    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(B, C, H, W) -> (cls (B, D) or None, patches (B, N, D))``, after the final norm."""
        out = self.encode(self.patchify_embed(x))  # (B, T, D)
        if self.has_cls:
            return out[:, 0], out[:, 1:]
        return None, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, D)``: the normed CLS token, else the mean normed patch token."""
        cls, patches = self.forward_tokens(x)
        return cls if cls is not None else patches.mean(dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, D, H/p, W/p)``: the normed patch tokens as a map."""
        h, w = self._grid(x)
        _, patches = self.forward_tokens(x)  # (B, N, D)
        return patches.transpose(1, 2).reshape(x.shape[0], self.embed_dim, h, w)

    @torch.no_grad()
    def last_self_attention(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, heads, T, T)``: the softmaxed attention weights of the last
        block (rows sum to 1; CLS at index 0 when there is one)."""
        t = self._prepend_cls(self.patchify_embed(x))
        for blk in self.blocks[:-1]:
            t = blk(t)
        last = self.blocks[-1]
        return last.attn.attention(last.norm1(t))


# ---------------------------------------------------------------------------------------------
# Named sizes
# ---------------------------------------------------------------------------------------------

#: name -> (embed_dim, depth, num_heads); tiny/small/base as in DeiT/ViT, pico/nano for CPUs.
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "vit_pico": (96, 4, 3),
    "vit_nano": (128, 6, 4),
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}


def vit_factory(name: str) -> Callable[..., VisionTransformer]:
    """The backbone factory of a named size (keywords: img_size, patch_size, in_channels,
    cls_token, drop_path)."""
    dim, depth, heads = VIT_SIZES[name]

    def factory(*, img_size: int = 32, patch_size: int = 4, in_channels: int = 3,
                cls_token: bool = True, drop_path: float = 0.0) -> VisionTransformer:
        return VisionTransformer(img_size=img_size, patch_size=patch_size,
                                 in_channels=in_channels, embed_dim=dim, depth=depth,
                                 num_heads=heads, cls_token=cls_token, drop_path=drop_path)

    factory.__doc__ = f"ViT {name}: embed {dim}, depth {depth}, {heads} heads, MLP ratio 4."
    return factory
