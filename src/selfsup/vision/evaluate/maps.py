"""Dense maps: what a frozen backbone makes of a few test mosaics, drawn as one figure.

The figure (``RUN/artefacts/dense_maps.png``, written by the ``dense`` protocol) has a row per
image, chosen from the test mosaics with a seed, and these columns:

1. the input image;
2. the ground-truth mask (0 background, ``c + 1`` an item of class ``c``);
3. the prediction of the dense probe the protocol fitted (:func:`.dense.predict_masks`: the
   linear probe's cell logits upsampled bilinearly to the pixels, argmax);
4. an attention map (ViTs only; the column is left out for a backbone without
   ``last_self_attention``, e.g. a ResNet), ``(h, w)`` over the patches, summing to 1:

   - ViT with a CLS token: the CLS row of the last block's softmaxed attention, averaged over the
     heads (DINO's "self-attention of the [CLS] token", Caron et al., ICCV 2021, Fig. 1), its
     patch entries renormalised to sum to 1 (the CLS token's weight on itself is dropped);
   - ViT without a CLS token and an aggregation head (SelfPatch, Yun et al., CVPR 2022): the
     query's attention in the head's last class-attention block, averaged over the heads, its
     patch entries renormalised to sum to 1;
   - ViT without either: the mean attention each patch receives in the last block, averaged
     over the heads and over the ``N`` query rows (a sum of 1, as every row sums to 1);

   upsampled to the pixels by repetition (each patch a ``p x p`` block) and drawn from its
   smallest to its largest value (both printed under it, beside the uniform ``1 / N``);
5. a patch-similarity map: the cosine similarity of every cell of ``forward_features`` (a
   ViT's normed patch tokens, a ResNet's last map) to one anchor cell, marked with a red square,
   drawn from its smallest value to 1.
   The anchor is drawn with the seed among the cells whose majority pixel class (as
   :func:`.dense.patch_labels`) is an item, or is the centre cell when every cell is background.

Items are outlined (cyan) on the attention and similarity maps so both can be read against the
mask. :func:`dense_maps` computes the maps (tested: attention sums to 1, an anchor's similarity
to itself is 1 and the maximum), :func:`draw_dense_maps` draws them, :func:`write_dense_maps`
does both for a run.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.errors import InputError
from selfsup.io import atomic_write_bytes
from selfsup.vision.evaluate.dense import N_MOSAIC_CLASSES, patch_labels, predict_masks
from selfsup.vision.evaluate.features import _encoder_device, _EvalMode, _normalise

__all__ = [
    "ATTENTION_KINDS",
    "DenseMaps",
    "attention_map",
    "choose_anchors",
    "dense_maps",
    "draw_dense_maps",
    "similarity_map",
    "write_dense_maps",
]

#: how the attention column was made, by kind (the figure's title says which)
ATTENTION_KINDS = {
    "cls": "CLS row of the last block's attention (mean over heads)",
    "aggregation": "aggregation head's query attention over the patches (last block, mean over "
                   "heads)",
    "received": "mean attention each patch receives in the last block (mean over heads and "
                "queries)",
}

MOSAIC_CLASS_NAMES = ("background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


@dataclass(frozen=True)
class DenseMaps:
    """The maps of ``n`` images of ``H x W`` pixels on an ``h x w`` feature grid.

    ``images`` (n, C, H, W) uint8 (as the backbone saw them, before normalisation), ``masks``
    (n, H, W) int64, ``pred`` (n, H, W) int64; ``attention`` (n, h, w) float (sums to 1 per
    image) or None, ``attention_kind`` a key of :data:`ATTENTION_KINDS` or None; ``similarity``
    (n, h, w) float in [-1, 1]; ``anchor`` (n,) int64 row-major cell index; ``index`` the rows
    of the test split shown."""

    images: torch.Tensor
    masks: torch.Tensor
    pred: torch.Tensor
    attention: torch.Tensor | None
    attention_kind: str | None
    similarity: torch.Tensor
    anchor: torch.Tensor
    index: list[int]


@torch.no_grad()
def attention_map(backbone: torch.nn.Module, x: torch.Tensor,
                  head: torch.nn.Module | None = None
                  ) -> tuple[torch.Tensor | None, str | None]:
    """``(maps (B, h, w) summing to 1 per image, kind)`` for normalised images ``x``
    (B, C, H, W), or ``(None, None)`` when ``backbone`` has no ``last_self_attention``. The
    kinds are those of the module text; ``head`` (an aggregation head with
    ``attention(tokens) -> (B, heads, 1 + N)``) is used only by a ViT without a CLS token."""
    if not hasattr(backbone, "last_self_attention"):
        return None, None
    p = int(backbone.patch_size)
    h, w = x.shape[-2] // p, x.shape[-1] // p
    if getattr(backbone, "has_cls", False):
        a = backbone.last_self_attention(x)  # (B, heads, 1 + N, 1 + N)
        m, kind = a[:, :, 0, 1:].mean(1), "cls"
    elif head is not None and hasattr(head, "attention"):
        _, tokens = backbone.forward_tokens(x)  # (B, N, D)
        m, kind = head.attention(tokens)[:, :, 1:].mean(1), "aggregation"
    else:
        a = backbone.last_self_attention(x)  # (B, heads, N, N)
        m, kind = a.mean(dim=(1, 2)), "received"
    m = m.float()
    m = m / m.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return m.view(x.shape[0], h, w), kind


def similarity_map(features: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)``: the cosine similarity of every cell of ``features`` (B, D, h, w) to the
    cell ``anchor[b]`` (row-major index) of the same image."""
    b, d, h, w = features.shape
    z = F.normalize(features.float().flatten(2), dim=1)  # (B, D, N)
    a = z.gather(2, anchor.view(b, 1, 1).expand(b, d, 1).to(z.device))  # (B, D, 1)
    return (z * a).sum(1).view(b, h, w)


def choose_anchors(masks: torch.Tensor, size: tuple[int, int], seed: int,
                   n_classes: int = N_MOSAIC_CLASSES) -> torch.Tensor:
    """``(B,)`` anchor cells of an ``h x w`` grid over ``masks`` (B, H, W): per image a seeded
    uniform choice among the cells whose majority class is not background (the centre cell
    when there is none)."""
    h, w = size
    fg = patch_labels(masks, (h, w), n_classes).flatten(1) > 0  # (B, N)
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for row in fg:
        cells = torch.nonzero(row).flatten()
        if len(cells):
            out.append(int(cells[torch.randint(len(cells), (1,), generator=g)]))
        else:
            out.append((h // 2) * w + w // 2)
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def dense_maps(
    backbone: torch.nn.Module,
    probe: Any,
    images: torch.Tensor,
    masks: torch.Tensor,
    mean: Any,
    std: Any,
    *,
    head: torch.nn.Module | None = None,
    n_images: int = 4,
    seed: int = 0,
    n_classes: int = N_MOSAIC_CLASSES,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> DenseMaps:
    """The maps of ``n_images`` of ``images`` (N, C, H, W) uint8 with ``masks`` (N, H, W),
    drawn without replacement with ``seed`` (shown in index order), for a frozen ``backbone``
    and the dense ``probe`` fitted on it (``dense_evaluate(...)["probe"]``); ``mean``, ``std``,
    ``prepare`` as in :func:`.dense.dense_evaluate`, ``head`` as in :func:`attention_map`."""
    if images.shape[0] == 0 or images.shape[0] != masks.shape[0]:
        raise InputError(f"need as many masks as images (at least one); got "
                         f"{images.shape[0]} images and {masks.shape[0]} masks")
    dev = torch.device(device) if device is not None else _encoder_device(backbone)
    g = torch.Generator().manual_seed(int(seed))
    n = min(int(n_images), images.shape[0])
    index = torch.randperm(images.shape[0], generator=g)[:n].sort().values
    raw = images[index]
    x = prepare(raw) if prepare is not None else raw
    m = masks[index].long()
    if tuple(m.shape[-2:]) != tuple(x.shape[-2:]):
        raise InputError(f"masks of {tuple(m.shape[-2:])} pixels do not match images of "
                         f"{tuple(x.shape[-2:])}")
    pred = predict_masks(probe, backbone, x, mean, std, n_classes=n_classes, device=dev).cpu()
    with _EvalMode(backbone), _EvalMode(head):  # each given back in the mode it had
        xn = _normalise(x, mean, std, dev)
        feats = backbone.forward_features(xn).float().cpu()  # (n, D, h, w)
        att, kind = attention_map(backbone, xn, head)
    anchor = choose_anchors(m, tuple(feats.shape[-2:]), seed, n_classes)
    return DenseMaps(images=x.cpu(), masks=m, pred=pred,
                     attention=None if att is None else att.cpu(), attention_kind=kind,
                     similarity=similarity_map(feats, anchor), anchor=anchor,
                     index=index.tolist())


def _upsample(m: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(h, w) -> (H, W)`` by repetition (nearest), each cell a block of pixels."""
    return F.interpolate(m[None, None].float(), size=tuple(size), mode="nearest")[0, 0]


def draw_dense_maps(maps: DenseMaps, title: str = "") -> bytes:
    """The figure of the module text as PNG bytes (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    colours = ["#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
               "#e377c2", "#bcbd22", "#17becf", "#f7f7f7"]
    n_cls = len(colours)
    cmap = ListedColormap(colours)
    n = maps.images.shape[0]
    size = tuple(maps.masks.shape[-2:])
    h, w = maps.similarity.shape[-2:]
    cell_h, cell_w = size[0] / h, size[1] / w
    cols = ["input", "ground truth", "dense probe"]
    if maps.attention is not None:
        cols.append("attention")
    cols.append("patch similarity")
    present = set(torch.unique(maps.masks).tolist()) | set(torch.unique(maps.pred).tolist())
    legend_rows = (len(present) + 5) // 6
    top_in, legend_in = 0.85, 0.15 + 0.22 * legend_rows  # title and legend bands, inches
    fig_h = 2.4 * n + top_in + legend_in
    fig, axes = plt.subplots(n, len(cols), figsize=(2.25 * len(cols), fig_h), squeeze=False)
    for i in range(n):
        img = maps.images[i]
        truth, pred = maps.masks[i], maps.pred[i]
        items = (truth > 0).float().numpy()
        row = axes[i]
        if img.shape[0] == 3:
            row[0].imshow(img.permute(1, 2, 0).numpy())
        else:
            row[0].imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=255)
        row[0].set_xlabel(f"test image {maps.index[i]}", fontsize=8)
        row[1].imshow(truth.numpy(), cmap=cmap, vmin=0, vmax=n_cls - 1, interpolation="nearest")
        row[2].imshow(pred.numpy(), cmap=cmap, vmin=0, vmax=n_cls - 1, interpolation="nearest")
        acc = float((pred == truth).float().mean())
        row[2].set_xlabel(f"pixel accuracy {acc:.2f}", fontsize=8)
        c = 3
        if maps.attention is not None:
            att = maps.attention[i]
            lo, hi = float(att.min()), float(att.max())
            row[c].imshow(_upsample(att, size).numpy(), cmap="inferno", vmin=lo,
                          vmax=max(hi, lo + 1e-12), interpolation="nearest")
            row[c].contour(items, levels=[0.5], colors="cyan", linewidths=0.7)
            row[c].set_xlabel(f"{lo:.4f} .. {hi:.4f} (uniform {1 / att.numel():.4f})",
                              fontsize=8)
            c += 1
        sim = maps.similarity[i]
        row[c].imshow(_upsample(sim, size).numpy(), cmap="viridis", vmin=float(sim.min()),
                      vmax=1.0, interpolation="nearest")
        row[c].contour(items, levels=[0.5], colors="cyan", linewidths=0.7)
        a = int(maps.anchor[i])
        r0, c0 = (a // w) * cell_h - 0.5, (a % w) * cell_w - 0.5
        row[c].add_patch(Rectangle((c0, r0), cell_w, cell_h, fill=False, edgecolor="red",
                                   linewidth=1.6))
        row[c].set_xlabel(f"cosine {float(sim.min()):.2f} .. 1 (red: anchor)", fontsize=8)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], cols, strict=True):
        ax.set_title(name, fontsize=10)
    handles = [Patch(facecolor=colours[k], edgecolor="#888888", label=MOSAIC_CLASS_NAMES[k])
               for k in sorted(present) if 0 <= k < len(MOSAIC_CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))),
               fontsize=8, frameon=False)
    if maps.attention_kind is not None:
        title = f"{title}\nattention: {ATTENTION_KINDS[maps.attention_kind]}".strip()
    fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig_h, va="top")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=legend_in / fig_h + 0.02,
                        top=1 - top_in / fig_h, wspace=0.06, hspace=0.22)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_dense_maps(path: str | os.PathLike, backbone: torch.nn.Module, probe: Any,
                     images: torch.Tensor, masks: torch.Tensor, mean: Any, std: Any, *,
                     title: str = "", **kwargs: Any) -> Path:
    """:func:`dense_maps` then :func:`draw_dense_maps`, written atomically to ``path`` (PNG);
    ``kwargs`` go to :func:`dense_maps`. Returns the path."""
    maps = dense_maps(backbone, probe, images, masks, mean, std, **kwargs)
    return atomic_write_bytes(path, draw_dense_maps(maps, title))
