"""The pure parts of SelfPatch (Yun et al., "Patch-level Representation Learning for
Self-supervised Vision Transformers", CVPR 2022): neighbours, their selection, the aggregation
head, the patch loss and the neighbour precision.

SelfPatch adds to DINO a patch-level loss on a ViT without a CLS token. For each patch ``i`` of
an ``h x w`` grid (row-major, ``N = h w``) its candidate neighbours are the 8 patches of its
3x3 window; the teacher keeps the top-``k`` (k = 4) of them by cosine similarity of its patch
tokens and aggregates them with the class-attention head into ``y_i``; the student's raw patch
token ``i`` must match the teacher's distribution of ``y_i`` (DINO-style cross-entropy with its
own head and centre, same view only, every view).

Decisions (documented choices where the paper leaves room):

- Border rule ``'valid'`` (the default): neighbours outside the image do not exist; they are
  marked invalid and never selected before a valid one. A corner patch has 3 candidates, an
  edge patch 5, an interior patch 8. When ``k`` exceeds a patch's valid count, the extra
  selected slots are invalid (their index is the patch itself and ``valid`` is False): the
  aggregation masks them out, so such a patch is aggregated over all its valid neighbours, and
  :func:`neighbour_precision` does not count them. ``'wrap'`` (as the official code) wraps
  indices around the border (a torus): every patch has 8 candidates, and a border patch's may
  lie on the opposite side of the image (on grids smaller than 3 some repeat).
- The patch itself is part of its own aggregation: the per-patch query attends to
  ``[query; f_i; f_j for the k selected j]`` (invalid j masked), so ``y_i`` always carries the
  patch's own content and is defined even for a corner patch with few neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from .vit import LN_EPS, Mlp

BORDERS = ("valid", "wrap")

#: the 8 offsets (d_row, d_col) of the 3x3 window without its centre, in row-major order
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _check_border(border: str) -> None:
    if border not in BORDERS:
        raise ConfigError(f"border={border!r}: use one of {', '.join(BORDERS)}.")


def neighbour_index(h: int, w: int, border: str = "valid",
                    device: torch.device | str | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index (N, 8) long, valid (N, 8) bool)``: the 3x3-window neighbours of every patch of an
    ``h x w`` grid, patches and neighbours in row-major order (offsets as :data:`OFFSETS`).

    ``border='valid'``: a neighbour outside the grid is invalid and its index is the patch
    itself (a safe index to gather); ``'wrap'``: rows and columns wrap around (all valid)."""
    _check_border(border)
    if h < 1 or w < 1:
        raise InputError(f"patch grid {h}x{w}: use at least one patch per side")
    r = torch.arange(h, device=device).view(h, 1, 1).expand(h, w, 8)
    c = torch.arange(w, device=device).view(1, w, 1).expand(h, w, 8)
    off = torch.tensor(OFFSETS, device=device)  # (8, 2)
    nr, nc = r + off[:, 0], c + off[:, 1]  # (h, w, 8)
    if border == "wrap":
        nr, nc = nr % h, nc % w
        valid = torch.ones(h, w, 8, dtype=torch.bool, device=device)
    else:
        valid = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        nr, nc = torch.where(valid, nr, r), torch.where(valid, nc, c)
    return (nr * w + nc).reshape(h * w, 8), valid.reshape(h * w, 8)


def select_neighbours(tokens: torch.Tensor, h: int, w: int, k: int = 4, border: str = "valid"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index (B, N, k) long, valid (B, N, k) bool)``: for every patch the ``k`` candidates of
    its 3x3 window with the highest cosine similarity of ``tokens`` (B, N, D), most similar
    first; invalid candidates (``border='valid'``) rank below every valid one and come back with
    ``valid`` False. Vectorised over batch and patches."""
    b, n, _ = tokens.shape
    if n != h * w:
        raise InputError(f"tokens have {n} patches but the grid is {h}x{w}={h * w}")
    if not 1 <= k <= 8:
        raise ConfigError(f"k={k}: choose between 1 and 8 of the 8 neighbours.")
    idx, ok = neighbour_index(h, w, border, tokens.device)  # (N, 8)
    z = F.normalize(tokens.float(), dim=-1)
    sims = torch.einsum("bnd,bnjd->bnj", z, z[:, idx])  # (B, N, 8)
    sims = sims.masked_fill(~ok, float("-inf"))
    top = sims.topk(k, dim=-1).indices  # (B, N, k)
    index = idx.expand(b, n, 8).gather(-1, top)
    valid = ok.expand(b, n, 8).gather(-1, top)
    return index, valid


def neighbour_precision(selected: torch.Tensor, valid: torch.Tensor,
                        patch_labels: torch.Tensor) -> float:
    """Share of the valid selected neighbours whose label equals the patch's own label.

    ``selected`` (B, N, k) patch indices, ``valid`` (B, N, k) bool, ``patch_labels`` (B, N).
    NaN when nothing is valid."""
    b, n, k = selected.shape
    nb_labels = patch_labels.gather(1, selected.reshape(b, n * k)).view(b, n, k)
    same = (nb_labels == patch_labels.unsqueeze(-1)) & valid
    count = int(valid.sum())
    return float(same.sum()) / count if count else float("nan")


# ====================================================================== aggregation head


class ClassAttentionBlock(nn.Module):
    """Class attention (CaiT, Touvron et al. ICCV 2021): only the query token is updated::

        u = norm1([q; x])                      # (B, 1 + T, D)
        q = q + proj(softmax(W_q u_0 (W_k u)^T / sqrt(d)) W_v u)   # per head, u_0 the query
        q = q + mlp(norm2(q))

    ``query`` (B, 1, D), ``tokens`` (B, T, D), ``mask`` (B, T) bool (True: attend) or None; the
    query always attends to itself."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = int(num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, query: torch.Tensor, tokens: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = tokens.shape
        hd = d // self.num_heads
        u = self.norm1(torch.cat([query, tokens], dim=1))  # (B, 1 + T, D)
        q = self.q(u[:, :1]).view(b, 1, self.num_heads, hd).transpose(1, 2)  # (B, h, 1, hd)
        kv = self.kv(u).view(b, 1 + t, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        attn_mask = None
        if mask is not None:
            keep = torch.cat([mask.new_ones(b, 1), mask.bool()], dim=1)  # (B, 1 + T)
            attn_mask = keep.view(b, 1, 1, 1 + t)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=attn_mask)
        query = query + self.proj(out.transpose(1, 2).reshape(b, 1, d))
        return query + self.mlp(self.norm2(query))

    def attention(self, query: torch.Tensor, tokens: torch.Tensor,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, heads, 1 + T)``: the softmaxed weights of the query over ``[query; tokens]``
        that :meth:`forward` uses (``softmax(W_q u_0 (W_k u)^T / sqrt(d))``; masked tokens get
        0). For inspection (attention maps); :meth:`forward` does not call it."""
        b, t, d = tokens.shape
        hd = d // self.num_heads
        u = self.norm1(torch.cat([query, tokens], dim=1))  # (B, 1 + T, D)
        q = self.q(u[:, :1]).view(b, 1, self.num_heads, hd).transpose(1, 2)  # (B, h, 1, hd)
        k = self.kv(u).view(b, 1 + t, 2, self.num_heads, hd)[:, :, 0].transpose(1, 2)
        logits = (q @ k.transpose(-2, -1))[:, :, 0] * hd ** -0.5  # (B, h, 1 + T)
        if mask is not None:
            keep = torch.cat([mask.new_ones(b, 1), mask.bool()], dim=1)  # (B, 1 + T)
            logits = logits.masked_fill(~keep[:, None], float("-inf"))
        return logits.softmax(dim=-1)


class AggregationHead(nn.Module):
    """SelfPatch's aggregation: a learnable query, ``depth`` class-attention blocks, LayerNorm.

    ``forward(tokens (B, T, D), mask (B, T) | None) -> (B, D)``: the query aggregated over the
    tokens (the student's image token from all its patch tokens).
    :meth:`aggregate_neighbours` gives one token per patch from the patch and its selected
    neighbours, a copy of the query for each patch (the teacher's ``y_i``)."""

    def __init__(self, dim: int, depth: int = 2, num_heads: int = 3,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"selfpatch.agg_depth={depth}: use 1 or more blocks.")
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.query, std=0.02, a=-0.04, b=0.04)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.query.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        for blk in self.blocks:
            q = blk(q, tokens, mask)
        return self.norm(q)[:, 0]

    def attention(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, heads, 1 + T)``: the last block's query attention over ``[query; tokens]``
        (index 0: the query itself), the query having gone through the blocks before it as in
        :meth:`forward` (whose output this does not change)."""
        q = self.query.expand(tokens.shape[0], -1, -1).to(tokens.dtype)
        for blk in self.blocks[:-1]:
            q = blk(q, tokens, mask)
        return self.blocks[-1].attention(q, tokens, mask)

    def aggregate_neighbours(self, patches: torch.Tensor, index: torch.Tensor,
                             valid: torch.Tensor) -> torch.Tensor:
        """``(B, N, D)``: for each patch i, the head over ``[f_i; f_j for j in index[:, i]]``
        (``patches`` (B, N, D), ``index``/``valid`` (B, N, k) from :func:`select_neighbours`;
        invalid neighbours masked out, the patch itself always in)."""
        b, n, d = patches.shape
        k = index.shape[-1]
        flat = patches.reshape(b * n, d)
        offset = (torch.arange(b, device=index.device) * n).view(b, 1, 1)
        neighbours = flat[(index + offset).reshape(-1)].view(b, n, k, d)
        group = torch.cat([patches.unsqueeze(2), neighbours], dim=2)  # (B, N, 1 + k, D)
        mask = torch.cat([valid.new_ones(b, n, 1), valid], dim=2)
        out = self(group.reshape(b * n, 1 + k, d), mask.reshape(b * n, 1 + k))
        return out.view(b, n, d)


# ============================================================================ patch loss


def patch_loss(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
               center: torch.Tensor, student_temp: float, teacher_temp: float) -> torch.Tensor:
    """SelfPatch's patch loss: per view, the student patch logits ``student[v]`` (B, N_v, K) of
    the raw patch tokens against the teacher patch logits ``teacher[v]`` (B, N_v, K) of the
    aggregated ``y_i`` of the same view::

        mean over views v of mean over (b, i) of
            - sum_k softmax((t_vbi - c) / tau_t)_k log softmax(s_vbi / tau_s)_k

    ``center`` (1, K) is the patch centre (not the image centre)."""
    if len(student) != len(teacher) or not student:
        raise ValueError("patch_loss needs one teacher tensor per student view")
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        p = F.softmax((t.float() - center) / teacher_temp, dim=-1)
        logp = F.log_softmax(s.float() / student_temp, dim=-1)
        total = total - (p * logp).sum(dim=-1).mean()
    return total / len(student)
