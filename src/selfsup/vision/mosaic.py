"""Mosaics of grey items with a per-pixel class map: a dense prediction task from real images.

:func:`make_mosaic` splits a ``size x size`` canvas into ``grid x grid`` cells and places one
item (e.g. a Fashion-MNIST image) in every cell: the item is cropped to the bounding box of its
non-zero pixels, scaled (area resampling, aspect kept) so that the box's longest side is
``scale * cell`` pixels with ``scale`` uniform in ``item_scale``, and put at a uniformly random
(sub-pixel) position inside its cell. A box never leaves its cell, so items never overlap and
every pixel belongs to at most one item. With ``p_empty > 0`` each cell is left empty with that
probability.

The mask is ``0`` for background and ``c + 1`` where the resampled intensity of an item of
class ``c`` is above ``threshold`` (0..255). Grey mosaics are ``(N, 1, size, size)`` uint8, the
items' intensities on black. ``colour=True`` gives ``(N, 3, size, size)``: a random background
colour per image and a random colour per item, painted as in :mod:`selfsup.vision.tinted`
(same hue-bin rules, every item's hue at least ``min_hue_gap`` bins from the background's).

Draw order from the seeded Generator: the items, the empty cells, the scales, the positions,
then (only for ``colour=True``) the colours, so a grey and a colour mosaic with the same seed and
parameters have the same items in the same places and the same masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from selfsup.errors import InputError
from selfsup.vision.tinted import (
    check_items,
    draw_colours,
    item_boxes,
    paste_alpha,
    to_rgb8,
    value_range,
)


class Mosaic(NamedTuple):
    """A mosaic set; unpacks as a tuple.

    ``images``: ``(N, 1 or 3, size, size)`` uint8. ``masks``: ``(N, size, size)`` (0 background,
    ``c + 1`` item of class ``c``). ``item_labels``: ``(N, grid * grid)`` int64, the class in each
    cell in row-major cell order, ``-1`` for an empty cell. ``boxes``: ``(N, grid * grid, 4)``
    float32 ``(top, left, bottom, right)`` of each item's box in pixels, NaN for an empty cell.
    ``source_index``: ``(N, grid * grid)`` int64 row of the input item, ``-1`` when empty.
    ``meta``: the parameters and seed (JSON-able).
    """

    images: np.ndarray
    masks: np.ndarray
    item_labels: np.ndarray
    boxes: np.ndarray
    source_index: np.ndarray
    meta: dict


def make_mosaic(
    images: np.ndarray,
    labels: np.ndarray,
    size: int = 64,
    grid: int = 2,
    seed: int | Sequence[int] = 0,
    *,
    n: int | None = None,
    item_scale: float | Sequence[float] = (0.7, 1.0),
    p_empty: float = 0.0,
    threshold: int = 16,
    colour: bool = False,
    n_hue_bins: int = 8,
    hue_spread: float = 0.5,
    min_hue_gap: int = 2,
    saturation: float | Sequence[float] = (0.6, 1.0),
    value: float | Sequence[float] = (0.6, 1.0),
    mask_dtype: np.dtype | type = np.int64,
    chunk: int = 4096,
) -> Mosaic:
    """Build ``n`` mosaics of ``grid x grid`` items from grey items ``(M, H, W)`` uint8.

    ``n`` defaults to ``M // grid**2``; the items are drawn without replacement while
    ``n * grid**2 <= M`` and with replacement otherwise. ``item_scale``: the longest side of an
    item's box as a fraction of the cell side (range or one number). ``size`` must be a multiple
    of ``grid``.
    """
    images, labels = check_items(images, labels)
    size, grid = int(size), int(grid)
    if grid < 1 or size < 4 * grid or size % grid:
        raise InputError(f"size must be a multiple of grid with cells of 4+ pixels, got "
                         f"size={size}, grid={grid}")
    scale_lo, scale_hi = value_range(item_scale, "item_scale", 0.0, 1.0)
    if scale_lo <= 0:
        raise InputError(f"item_scale must be above 0, got {item_scale!r}")
    if not (0.0 <= p_empty <= 1.0):
        raise InputError(f"p_empty must be in [0, 1], got {p_empty}")
    if not (0 <= threshold < 255):
        raise InputError(f"threshold must be in [0, 255), got {threshold}")
    if chunk < 1:
        raise InputError(f"chunk must be positive, got {chunk}")
    sat = value_range(saturation, "saturation", 0.0, 1.0)
    val = value_range(value, "value", 0.0, 1.0)
    if colour and (n_hue_bins < 2 or not (1 <= min_hue_gap <= n_hue_bins // 2)):
        raise InputError(
            f"need n_hue_bins >= 2 and 1 <= min_hue_gap <= n_hue_bins // 2, got "
            f"{n_hue_bins} and {min_hue_gap}"
        )
    seed_json = int(seed) if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    k = grid * grid
    m = len(images)
    n = m // k if n is None else int(n)
    if n < 1:
        raise InputError(f"need at least one mosaic: {m} items for {k} cells, n={n}")
    rng = np.random.default_rng(seed_json)

    if n * k <= m:
        src = rng.permutation(m)[: n * k].reshape(n, k)
    else:
        src = rng.integers(0, m, (n, k))
    empty = rng.random((n, k)) < p_empty
    scale = rng.uniform(scale_lo, scale_hi, (n, k))
    p = rng.uniform(0.0, 1.0, (n, k, 2))
    if colour:
        _, _, item_hsv, bg_hsv = draw_colours(
            rng, (n, k), n_hue_bins, hue_spread, min_hue_gap, sat, val
        )
        item_rgb = to_rgb8(item_hsv).astype(np.float32)  # (n, k, 3)
        bg_rgb = to_rgb8(bg_hsv).astype(np.float32)  # (n, 3)

    cell = size // grid
    boxes_src = item_boxes(images)[src]  # (n, k, 4)
    bh = boxes_src[..., 1] - boxes_src[..., 0]
    bw = boxes_src[..., 3] - boxes_src[..., 2]
    factor = scale * cell / np.maximum(bh, bw)
    box_h, box_w = bh * factor, bw * factor
    cell_row, cell_col = np.divmod(np.arange(k), grid)
    top = cell_row[None, :] * cell + p[..., 0] * (cell - box_h)
    left = cell_col[None, :] * cell + p[..., 1] * (cell - box_w)

    item_labels = np.where(empty, -1, labels[src]).astype(np.int64)
    out = np.empty((n, 3 if colour else 1, size, size), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=mask_dtype)
    thr = np.float32(threshold / 255.0)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        total = np.zeros((e - s, size, size), dtype=np.float32)
        pix = (np.broadcast_to(bg_rgb[s:e, :, None, None], (e - s, 3, size, size)).copy()
               if colour else None)
        mask = np.zeros((e - s, size, size), dtype=mask_dtype)
        for c in range(k):
            alpha = paste_alpha(images[src[s:e, c]], boxes_src[s:e, c], top[s:e, c],
                                left[s:e, c], box_h[s:e, c], box_w[s:e, c], size)
            alpha[empty[s:e, c]] = 0.0
            total += alpha  # the cells' supports are disjoint
            on = alpha > thr
            mask[on] = np.broadcast_to(item_labels[s:e, c, None, None] + 1, on.shape)[on]
            if colour:
                diff = item_rgb[s:e, c] - bg_rgb[s:e]
                pix += alpha[:, None] * diff[:, :, None, None]
        if colour:
            out[s:e] = np.round(pix).astype(np.uint8)
        else:
            out[s:e, 0] = np.round(np.clip(total, 0.0, 1.0) * 255.0).astype(np.uint8)
        masks[s:e] = mask

    boxes = np.stack([top, left, top + box_h, left + box_w], axis=-1).astype(np.float32)
    boxes[empty] = np.nan
    meta = {
        "generator": "selfsup.vision.mosaic.make_mosaic",
        "n": n,
        "size": size,
        "grid": grid,
        "seed": seed_json,
        "item_scale": [scale_lo, scale_hi],
        "p_empty": float(p_empty),
        "threshold": int(threshold),
        "colour": bool(colour),
        "n_classes": int(labels.max()) + 1,
        "with_replacement": bool(n * k > m),
    }
    if colour:
        meta.update({"n_hue_bins": int(n_hue_bins), "hue_spread": float(hue_spread),
                     "min_hue_gap": int(min_hue_gap), "saturation": list(sat),
                     "value": list(val)})
    return Mosaic(images=out, masks=masks, item_labels=item_labels, boxes=boxes,
                  source_index=np.where(empty, -1, src).astype(np.int64), meta=meta)
