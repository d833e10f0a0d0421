"""Tinted items: a controlled image set built from real grey item images (Fashion-MNIST).

Every output image is RGB ``(3, size, size)`` uint8: a background filled with one colour and
one grey item (its intensity used as an alpha mask) painted in another colour, at a random scale
and position. Colour, position and scale are independent of the item's class, so a linear probe
can ask a representation for each of them separately (the AugSelf benchmark: colour jitter and
random crops should not erase them).

Generation (:func:`make_tinted`), all vectorised, every draw from one ``numpy`` Generator:

* **Item box.** The item is cropped to the bounding box of its non-zero pixels, then scaled
  (area resampling, aspect kept) so that the box's longest side is ``scale * size`` pixels, with
  ``scale`` uniform in ``item_scale`` (a float fixes it). Position and scale are continuous
  (sub-pixel): edge pixels get the covered fraction of the item. The box always lies fully inside
  the image.
* **Position.** For each axis a fraction ``p`` uniform in [0, 1] of the free travel
  ``size - box side``; the box centre is ``box side / 2 + p * travel`` (pixels, 0 = the image's
  top/left edge).
* **Colours.** HSV. Hues come from ``n_hue_bins`` bins centred on ``b / n_hue_bins`` (bin 0 is
  centred on red); inside its bin the hue is uniform over the central ``hue_spread`` fraction, so
  neighbouring bins are separated by a gap and a hue bin is read back exactly from a pixel. The
  item's bin is uniform; the background's bin is the item's plus an offset uniform in
  ``[min_hue_gap, n_hue_bins - min_hue_gap]`` (mod ``n_hue_bins``), so both marginals are
  uniform and the two hues are at least ``(min_hue_gap - hue_spread) / n_hue_bins`` of the
  colour circle apart (67.5 degrees with the defaults). Saturation and value are uniform in
  ``saturation`` and ``value``, drawn separately for item and background. The colours are rounded
  to uint8 RGB before painting.
* **Painting.** ``pixel = background + alpha * (item colour - background)``, rounded, with
  ``alpha = intensity / 255`` of the resampled item; a pixel fully covered by intensity 255 is
  exactly the item colour.

Labels (``TintedSet.labels``, int64, for probes scored as classification):

* ``class``: the source label (Fashion-MNIST: 10 classes).
* ``item_colour``, ``background_colour``: the hue bin, ``0 .. n_hue_bins - 1``.
* ``position``: ``3 * row + col`` with ``row = min(floor(3 * p_y), 2)`` and likewise ``col`` from
  ``p_x``: which third of its possible positions the box centre is in, per axis (9 classes,
  0 = top left, 8 = bottom right). Because the travel depends on the item's size the bin
  boundaries move slightly with it (``size / 3 + side / 6`` pixels for the first one).
* ``scale``: which third of ``item_scale`` the scale is in (3 classes; all 0 for a fixed scale).

``TintedSet.values`` holds the continuous values: ``centre_x``, ``centre_y``, ``box_h``,
``box_w`` (pixels), ``scale``, ``item_hsv`` / ``background_hsv`` (N, 3) float32 in [0, 1],
``item_rgb`` / ``background_rgb`` (N, 3) uint8, and ``source_index`` (int64, the row of the input
image).

The draws happen in a fixed order (colours, then scale, then position), one vector each for the
whole set, so the result depends on ``seed`` and the parameters only, not on ``chunk``.

File format (:meth:`TintedSet.save`): a compressed ``.npz`` holding ``format`` (the string
``selfsup.tinted/1``), ``meta`` (a JSON string), ``images``, one ``labels.NAME`` array per label and
one ``values.NAME`` array per continuous value. Only plain arrays: it loads with
``np.load(path, allow_pickle=False)``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfsup.errors import InputError

FORMAT = "selfsup.tinted/1"
POSITION_BINS = 3  # per axis: 3 x 3 = 9 position classes
SCALE_BINS = 3
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


# --------------------------------------------------------------------------------------------
# shared helpers (also used by selfsup.vision.mosaic)


def check_items(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate grey items ``(N, H, W)`` uint8 and labels ``(N,)``; return them as arrays."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(
            f"items must be a uint8 array (N, H, W) of grey images, got {images.dtype} "
            f"{images.shape}"
        )
    if labels.shape != (len(images),):
        raise InputError(f"labels {labels.shape} do not match {len(images)} items")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    if len(images) == 0:
        raise InputError("no items given")
    return images, labels.astype(np.int64)


def item_boxes(images: np.ndarray) -> np.ndarray:
    """Bounding boxes ``(N, 4)`` float64 ``(row0, row1, col0, col1)`` (end exclusive) of the
    non-zero pixels of each grey item; an all-zero item gets the whole canvas."""
    n, h, w = images.shape
    nz = images > 0
    rows, cols = nz.any(axis=2), nz.any(axis=1)
    empty = ~rows.any(axis=1)
    r0 = np.where(empty, 0, rows.argmax(axis=1))
    r1 = np.where(empty, h, h - rows[:, ::-1].argmax(axis=1))
    c0 = np.where(empty, 0, cols.argmax(axis=1))
    c1 = np.where(empty, w, w - cols[:, ::-1].argmax(axis=1))
    return np.stack([r0, r1, c0, c1], axis=1).astype(np.float64)


def _area_matrices(start: np.ndarray, length: np.ndarray, src0: np.ndarray, src1: np.ndarray,
                   out_size: int, in_size: int) -> np.ndarray:
    """``(N, out_size, in_size)`` area-resampling weights along one axis.

    Output pixel ``i`` covers ``[i, i + 1)``; the source interval ``[src0, src1)`` is stretched
    onto ``[start, start + length)``. The weight of input pixel ``j`` is the length of its overlap
    with the output pixel's footprint (clipped to the source interval) over the footprint's
    length: the output is the mean of the item over the footprint, zero outside the item.
    """
    sc = (src1 - src0) / length  # input pixels per output pixel
    a = (src0[:, None] + (np.arange(out_size)[None, :] - start[:, None]) * sc[:, None])
    a = a.astype(np.float32)
    b = a + sc[:, None].astype(np.float32)
    j = np.arange(in_size, dtype=np.float32)
    jlo = np.maximum(j[None, :], src0[:, None].astype(np.float32))
    jhi = np.minimum(j[None, :] + 1, src1[:, None].astype(np.float32))
    w = np.minimum(b[:, :, None], jhi[:, None, :])
    w -= np.maximum(a[:, :, None], jlo[:, None, :])
    np.maximum(w, 0.0, out=w)
    w *= (1.0 / sc).astype(np.float32)[:, None, None]
    return w


def paste_alpha(items: np.ndarray, boxes: np.ndarray, top: np.ndarray, left: np.ndarray,
                height: np.ndarray, width: np.ndarray, out_size: int) -> np.ndarray:
    """Alpha ``(N, out_size, out_size)`` float32 in [0, 1]: the box ``boxes[n]`` of grey item
    ``items[n]`` resampled onto ``[top, top + height) x [left, left + width)`` (floats)."""
    _, h, w = items.shape
    my = _area_matrices(top, height, boxes[:, 0], boxes[:, 1], out_size, h)
    mx = _area_matrices(left, width, boxes[:, 2], boxes[:, 3], out_size, w)
    alpha = my @ (items.astype(np.float32) / np.float32(255.0)) @ mx.transpose(0, 2, 1)
    return np.clip(alpha, 0.0, 1.0, out=alpha)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV (..., 3) in [0, 1] to RGB (..., 3) float in [0, 1] (the hexcone model)."""
    h, s, v = hsv[..., 0] % 1.0, hsv[..., 1], hsv[..., 2]
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i.astype(np.int64) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def rgb_to_hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in [0, 1) of RGB (..., 3) values (any scale); 0 for greys."""
    rgb = np.asarray(rgb, dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(axis=-1), rgb.min(axis=-1)
    c = np.where(mx > mn, mx - mn, 1.0)
    h = np.where(mx == r, ((g - b) / c) % 6, np.where(mx == g, (b - r) / c + 2, (r - g) / c + 4))
    return np.where(mx > mn, h / 6.0, 0.0) % 1.0


def hue_bin(hue: np.ndarray, n_bins: int) -> np.ndarray:
    """The bin of a hue in [0, 1): bins centred on ``b / n_bins`` (bin 0 centred on red)."""
    return (np.floor(np.asarray(hue) * n_bins + 0.5).astype(np.int64)) % n_bins


def value_range(value: float | Sequence[float], name: str, lo: float,
                hi: float) -> tuple[float, float]:
    """``value`` as a checked ``(low, high)`` pair (a number gives ``(value, value)``)."""
    if isinstance(value, (int, float)):
        pair = (float(value), float(value))
    else:
        seq = list(value)
        if len(seq) != 2:
            raise InputError(f"{name} must be a number or a (low, high) pair, got {value!r}")
        pair = (float(seq[0]), float(seq[1]))
    if not (lo <= pair[0] <= pair[1] <= hi):
        raise InputError(f"{name} must satisfy {lo} <= low <= high <= {hi}, got {pair}")
    return pair


def draw_colours(rng: np.random.Generator, n_item: tuple[int, ...], n_hue_bins: int,
                 hue_spread: float, min_hue_gap: int, saturation: tuple[float, float],
                 value: tuple[float, float]):
    """Background and item colours with the hue-gap rule described in the module docstring.

    ``n_item`` is the shape of the item draws: ``(N,)`` for one item per image, ``(N, k)`` for
    ``k`` items per image (each differs from the image's background). Returns
    ``(item_bin, bg_bin, item_hsv, bg_hsv)``.
    """
    n = n_item[0]
    bg_bin = rng.integers(0, n_hue_bins, n)
    offset = rng.integers(min_hue_gap, n_hue_bins - min_hue_gap + 1, n_item)
    item_bin = (bg_bin.reshape((n,) + (1,) * (len(n_item) - 1)) + offset) % n_hue_bins

    def hsv(bins: np.ndarray) -> np.ndarray:
        shape = bins.shape
        h = ((bins + rng.uniform(-hue_spread / 2, hue_spread / 2, shape)) / n_hue_bins) % 1.0
        s = rng.uniform(saturation[0], saturation[1], shape)
        v = rng.uniform(value[0], value[1], shape)
        return np.stack([h, s, v], axis=-1)

    bg_hsv = hsv(bg_bin)
    item_hsv = hsv(item_bin)
    return item_bin.astype(np.int64), bg_bin.astype(np.int64), item_hsv, bg_hsv


def to_rgb8(hsv: np.ndarray) -> np.ndarray:
    return np.round(hsv_to_rgb(hsv) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# the set


@dataclass
class TintedSet:
    """Tinted images, probe labels, continuous values and the generator's parameters.

    ``images``: ``(N, 3, size, size)`` uint8. ``labels``: name -> ``(N,)`` int64 (see the module
    docstring). ``values``: name -> array of continuous values. ``meta``: JSON-able dict with the
    generator's parameters, seed, the number of classes of every label (``label_classes``) and,
    for Fashion-MNIST, the source split.
    """

    images: np.ndarray
    labels: dict[str, np.ndarray]
    values: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def label_classes(self) -> dict[str, int]:
        """Number of classes of every label (``meta['label_classes']``)."""
        return dict(self.meta.get("label_classes", {}))

    def subset(self, index: np.ndarray | slice) -> TintedSet:
        """The images at ``index`` with their labels and values (``meta`` shared, copied)."""
        return TintedSet(
            images=self.images[index],
            labels={k: v[index] for k, v in self.labels.items()},
            values={k: v[index] for k, v in self.values.items()},
            meta=json.loads(json.dumps(self.meta)),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as a compressed ``.npz`` (format in the module docstring), atomically."""
        from selfsup.io import atomic_write_bytes

        arrays: dict[str, np.ndarray] = {
            "format": np.array(FORMAT),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
            "images": np.ascontiguousarray(self.images),
        }
        for prefix, d in (("labels", self.labels), ("values", self.values)):
            for k, v in d.items():
                arr = np.asarray(v)
                if arr.dtype == object:
                    raise InputError(f"{prefix}.{k}: object arrays cannot be saved")
                arrays[f"{prefix}.{k}"] = arr
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TintedSet:
        """Read a set written by :meth:`save` (never unpickles anything)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                files = set(z.files)
                missing = {"format", "meta", "images"} - files
                if missing:
                    raise InputError(
                        f"{path}: not a tinted set (missing {', '.join(sorted(missing))})"
                    )
                fmt = str(z["format"])
                if fmt != FORMAT:
                    raise InputError(f"{path}: format {fmt!r}, expected {FORMAT!r}")
                meta = json.loads(str(z["meta"]))
                images = z["images"]
                labels = {k[7:]: z[k] for k in sorted(files) if k.startswith("labels.")}
                values = {k[7:]: z[k] for k in sorted(files) if k.startswith("values.")}
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"{path}: not a readable tinted set ({exc})") from exc
        n = len(images)
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise InputError(f"{path}: images must be uint8 (N, 3, S, S), got {images.shape}")
        for k, v in {**labels, **values}.items():
            if len(v) != n:
                raise InputError(f"{path}: {k} has {len(v)} rows, images {n}")
        return cls(images=images, labels=labels, values=values, meta=meta)


def make_tinted(
    images: np.ndarray,
    labels: np.ndarray,
    size: int = 32,
    item_scale: float | Sequence[float] = (0.5, 0.75),
    seed: int | Sequence[int] = 0,
    *,
    n_hue_bins: int = 8,
    hue_spread: float = 0.5,
    min_hue_gap: int = 2,
    saturation: float | Sequence[float] = (0.6, 1.0),
    value: float | Sequence[float] = (0.6, 1.0),
    n_classes: int | None = None,
    chunk: int = 4096,
) -> TintedSet:
    """Paint every grey item of ``images`` ``(N, H, W)`` uint8 on a coloured background.

    ``item_scale``: the longest side of the item's bounding box as a fraction of ``size``, a
    ``(low, high)`` range drawn uniformly or one number. ``seed``: an int or a sequence of ints
    (``numpy.random.default_rng``). ``n_classes``: number of ``class`` labels recorded in
    ``meta['label_classes']`` (default ``max(labels) + 1``). See the module docstring for the
    generation rules, the labels and ``values``.
    """
    images, labels = check_items(images, labels)
    size = int(size)
    if size < 4:
        raise InputError(f"size must be at least 4, got {size}")
    scale_lo, scale_hi = value_range(item_scale, "item_scale", 0.0, 1.0)
    if scale_lo <= 0:
        raise InputError(f"item_scale must be above 0, got {item_scale!r}")
    sat = value_range(saturation, "saturation", 0.0, 1.0)
    val = value_range(value, "value", 0.0, 1.0)
    if n_hue_bins < 2 or not (1 <= min_hue_gap <= n_hue_bins // 2):
        raise InputError(
            f"need n_hue_bins >= 2 and 1 <= min_hue_gap <= n_hue_bins // 2, got "
            f"{n_hue_bins} and {min_hue_gap}"
        )
    if not (0.0 <= hue_spread <= 1.0):
        raise InputError(f"hue_spread must be in [0, 1], got {hue_spread}")
    if chunk < 1:
        raise InputError(f"chunk must be positive, got {chunk}")
    if isinstance(seed, (int, np.integer)):
        seed_json: int | list[int] = int(seed)
    else:
        seed_json = [int(s) for s in seed]
    n = len(images)
    rng = np.random.default_rng(seed_json)

    item_bin, bg_bin, item_hsv, bg_hsv = draw_colours(
        rng, (n,), n_hue_bins, hue_spread, min_hue_gap, sat, val
    )
    item_rgb, bg_rgb = to_rgb8(item_hsv), to_rgb8(bg_hsv)
    scale = rng.uniform(scale_lo, scale_hi, n)
    p = rng.uniform(0.0, 1.0, (n, 2))  # (y, x) fraction of the free travel

    boxes = item_boxes(images)
    bh, bw = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    factor = scale * size / np.maximum(bh, bw)
    box_h, box_w = bh * factor, bw * factor
    top = p[:, 0] * (size - box_h)
    left = p[:, 1] * (size - box_w)

    out = np.empty((n, 3, size, size), dtype=np.uint8)
    bg_f = bg_rgb.astype(np.float32)
    diff = item_rgb.astype(np.float32) - bg_f
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        alpha = paste_alpha(images[s:e], boxes[s:e], top[s:e], left[s:e], box_h[s:e],
                            box_w[s:e], size)
        pix = bg_f[s:e, :, None, None] + alpha[:, None] * diff[s:e, :, None, None]
        out[s:e] = np.round(pix).astype(np.uint8)

    pos_bins = np.minimum(np.floor(p * POSITION_BINS), POSITION_BINS - 1).astype(np.int64)
    if scale_hi > scale_lo:
        frac = (scale - scale_lo) / (scale_hi - scale_lo)
        scale_bin = np.minimum(np.floor(frac * SCALE_BINS), SCALE_BINS - 1).astype(np.int64)
    else:
        scale_bin = np.zeros(n, dtype=np.int64)
    out_labels = {
        "class": labels,
        "item_colour": item_bin,
        "background_colour": bg_bin,
        "position": pos_bins[:, 0] * POSITION_BINS + pos_bins[:, 1],
        "scale": scale_bin,
    }
    values = {
        "centre_y": (top + box_h / 2).astype(np.float32),
        "centre_x": (left + box_w / 2).astype(np.float32),
        "box_h": box_h.astype(np.float32),
        "box_w": box_w.astype(np.float32),
        "scale": scale.astype(np.float32),
        "item_hsv": item_hsv.astype(np.float32),
        "background_hsv": bg_hsv.astype(np.float32),
        "item_rgb": item_rgb,
        "background_rgb": bg_rgb,
        "source_index": np.arange(n, dtype=np.int64),
    }
    meta = {
        "generator": "selfsup.vision.tinted.make_tinted",
        "format": FORMAT,
        "n": n,
        "size": size,
        "item_scale": [scale_lo, scale_hi],
        "seed": seed_json,
        "n_hue_bins": int(n_hue_bins),
        "hue_spread": float(hue_spread),
        "min_hue_gap": int(min_hue_gap),
        "saturation": list(sat),
        "value": list(val),
        "position_bins": POSITION_BINS,
        "scale_bins": SCALE_BINS,
        "label_classes": {
            "class": int(n_classes) if n_classes is not None else int(labels.max()) + 1,
            "item_colour": int(n_hue_bins),
            "background_colour": int(n_hue_bins),
            "position": POSITION_BINS * POSITION_BINS,
            "scale": SCALE_BINS,
        },
    }
    return TintedSet(images=out, labels=out_labels, values=values, meta=meta)


_SPLITS = ("train", "test")


def tinted_fashion_mnist(
    split: str = "train",
    root: str | os.PathLike | None = None,
    size: int = 32,
    seed: int = 0,
    n: int | None = None,
    **kwargs,
) -> TintedSet:
    """Tinted Fashion-MNIST: the first ``n`` images (all when ``None``) of ``split``.

    ``root`` is the data root of :func:`selfsup.data.registry.fetch` (the dataset is fetched
    there when missing). The generator is seeded with ``[seed, 0]`` for train and ``[seed, 1]``
    for test, so the two splits get different colours and positions for the same ``seed``.
    Other keyword arguments go to :func:`make_tinted`. ``meta['source']`` records the dataset,
    split, count and the sha256 of the source files when the cache marker has them.
    """
    from selfsup.data import images as image_io
    from selfsup.data import registry

    if split not in _SPLITS:
        raise InputError(f"unknown split {split!r}; valid splits: {', '.join(_SPLITS)}")
    ddir = registry.fetch("fashion-mnist", root=root)
    x, y = image_io.load_fashion_mnist(ddir, split)
    if n is not None:
        if n < 1:
            raise InputError(f"n must be positive, got {n}")
        x, y = x[:n], y[:n]
    ts = make_tinted(x, y, size=size, seed=[int(seed), _SPLITS.index(split)], n_classes=10,
                     **kwargs)
    marker = registry.read_marker("fashion-mnist", root=root) or {}
    prefix = "train" if split == "train" else "t10k"
    files = {k: v.get("sha256") for k, v in (marker.get("files") or {}).items()
             if k.startswith(prefix) and isinstance(v, dict)}
    ts.meta["source"] = {"dataset": "fashion-mnist", "split": split, "first_n": len(y),
                         "files_sha256": files}
    ts.meta["class_names"] = list(FASHION_MNIST_CLASSES)
    return ts
