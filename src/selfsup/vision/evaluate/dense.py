"""Dense evaluation: a linear segmentation probe on frozen feature maps (mIoU, pixel accuracy).

The frozen backbone's last feature map ``forward_features(x) -> (B, D, h, w)`` (a CIFAR ResNet's
stride-4 map, a ViT's patch tokens) is read on images with per-pixel class maps (the
``fmnist-mosaic`` set: 0 background, ``c + 1`` an item of class ``c``; 11 classes). A linear
classifier on single feature vectors ("patches") predicts the class of their cell, and its
logits, upsampled to the pixels, give a segmentation. This is the linear-probe segmentation
protocol of the self-supervised dense-representation papers (e.g. the frozen-feature
segmentation probes next to SelfPatch, CVPR 2022), sized for small images.

1. **Patch labels** (:func:`patch_labels`): the majority pixel class in each feature cell. Cell
   ``(i, j)`` of an ``h x w`` map covers the rows ``floor(i H / h) .. ceil((i + 1) H / h) - 1``
   and likewise the columns (adaptive average pooling's regions: a partition when ``h`` divides
   ``H``); ties go to the smallest class (background first).
2. **Probe**: ``max_train`` patches drawn uniformly without replacement (seeded) from all the
   training images' cells, ``max_val`` likewise from the validation images; the L-BFGS
   multinomial logistic regression of :func:`selfsup.vision.evaluate.linear.linear_probe`
   (features standardised with the training statistics, L2 weight chosen on the validation
   patches among ``n_grid`` log-spaced values in ``[1e-6, 1e5]``, refit on train + val).
3. **Prediction**: the probe's logits of every cell of a test image ``(C, h, w)``, upsampled
   bilinearly (``align_corners=False``) to ``(C, H, W)``, argmax per pixel.
4. **Metrics**, from one confusion matrix accumulated over every pixel of the test set
   (:func:`confusion_matrix`, rows = truth, columns = prediction): per-class IoU
   ``TP / (TP + FP + FN)``, ``miou`` = their mean over the classes present in the truth or the
   prediction (a class absent from both has no IoU and is left out); ``pixel_accuracy`` = the
   trace over the total. ``patch_accuracy``: the probe's argmax per cell against the cell labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from selfsup.errors import InputError
from selfsup.vision.evaluate.features import _encoder_device, _EvalMode, _normalise

__all__ = [
    "confusion_matrix",
    "dense_evaluate",
    "iou_per_class",
    "miou",
    "patch_labels",
    "pixel_accuracy",
    "predict_masks",
]

N_MOSAIC_CLASSES = 11  # background + the 10 Fashion-MNIST classes


# ------------------------------------------------------------------------------- metrics


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(C, C)`` int64 counts: entry ``[t, p]`` is the number of pixels of true class ``t``
    predicted as ``p``. ``pred``, ``target``: integer tensors of one shape with values in
    ``[0, C)``."""
    if pred.shape != target.shape:
        raise InputError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in "
                         "shape")
    p = pred.reshape(-1).long().cpu()
    t = target.reshape(-1).long().cpu()
    if p.numel() and (min(int(p.min()), int(t.min())) < 0
                      or max(int(p.max()), int(t.max())) >= n_classes):
        raise InputError(f"class indices must be in [0, {n_classes}); got pred in "
                         f"[{int(p.min())}, {int(p.max())}], target in [{int(t.min())}, "
                         f"{int(t.max())}]")
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).view(
        n_classes, n_classes)


def iou_per_class(conf: torch.Tensor) -> torch.Tensor:
    """``(C,)`` float64 IoU ``TP / (TP + FP + FN)`` per class; NaN for a class absent from both
    the truth and the prediction."""
    conf = conf.double()
    tp = conf.diagonal()
    denom = conf.sum(0) + conf.sum(1) - tp
    return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, math.nan))


def miou(conf: torch.Tensor) -> float:
    """Mean IoU over the classes present in the truth or the prediction (NaN if none)."""
    iou = iou_per_class(conf)
    keep = ~torch.isnan(iou)
    return float(iou[keep].mean()) if bool(keep.any()) else math.nan


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Correct pixels over all pixels (NaN for an empty matrix)."""
    total = int(conf.sum())
    return float(conf.diagonal().sum()) / total if total else math.nan


def patch_labels(masks: torch.Tensor, size: Sequence[int] | int, n_classes: int) -> torch.Tensor:
    """The majority pixel class in each cell of an ``h x w`` grid over ``masks`` ``(N, H, W)``:
    ``(N, h, w)`` int64. Cells are adaptive pooling's regions (see the module text); ties go to
    the smallest class."""
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if masks.dim() != 3:
        raise InputError(f"masks must be (N, H, W), got {tuple(masks.shape)}")
    out = []
    for i in range(0, masks.shape[0], 256):  # one-hot maps of 256 masks at a time
        m = masks[i : i + 256].long()
        onehot = F.one_hot(m, n_classes).permute(0, 3, 1, 2).float()  # (n, C, H, W)
        frac = F.adaptive_avg_pool2d(onehot, (h, w))  # (n, C, h, w) share of each class
        out.append(frac.argmax(1))  # the first maximum: the smallest class
    return torch.cat(out) if out else torch.zeros(0, h, w, dtype=torch.long)


# ------------------------------------------------------------------------- feature maps


def _maps(encoder, x: torch.Tensor, mean, std, dev, prepare) -> torch.Tensor:
    if prepare is not None:
        x = prepare(x)
    f = encoder(_normalise(x, mean, std, dev))
    if f.dim() != 4 or f.shape[0] != x.shape[0]:
        raise InputError(f"forward_features must return (B, D, h, w); got {tuple(f.shape)} for "
                         f"a batch of {x.shape[0]}")
    return f.float()


@torch.no_grad()
def sample_patches(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    masks: torch.Tensor,
    n_patches: int | None,
    seed: int,
    mean: Any,
    std: Any,
    *,
    n_classes: int = N_MOSAIC_CLASSES,
    batch_size: int = 256,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """``n_patches`` cells drawn uniformly without replacement (``seed``) from all the cells of
    ``images`` (all cells when ``None`` or more than there are): their features ``(n, D)``
    float32 (CPU), majority labels ``(n,)`` and the map size ``(h, w)``. Only the images that
    hold a drawn cell go through the encoder."""
    dev = device or torch.device("cpu")
    n_img = images.shape[0]
    if n_img == 0:
        raise InputError("no images to draw patches from")
    h, w = _maps(encoder, images[:1], mean, std, dev, prepare).shape[-2:]
    cells = h * w
    total = n_img * cells
    g = torch.Generator().manual_seed(int(seed))
    if n_patches is None or n_patches >= total:
        chosen = torch.arange(total)
    else:
        chosen = torch.randperm(total, generator=g)[:n_patches].sort().values
    img = chosen // cells
    feats, labels = [], []
    need = torch.unique(img)
    for s in range(0, len(need), batch_size):
        ids = need[s : s + batch_size]
        f = _maps(encoder, images[ids], mean, std, dev, prepare)  # (b, D, h, w)
        f = f.permute(0, 2, 3, 1).reshape(len(ids) * cells, -1).cpu()
        lab = patch_labels(masks[ids], (h, w), n_classes).reshape(-1)
        # the drawn cells of these images: row (position of the image in ids) * cells + cell
        sel = (img >= ids[0]) & (img <= ids[-1])
        pos = torch.searchsorted(ids, img[sel]) * cells + chosen[sel] % cells
        feats.append(f[pos])
        labels.append(lab[pos])
    return torch.cat(feats), torch.cat(labels), (int(h), int(w))


# ------------------------------------------------------------------------------ protocol


def _cell_logits(model, encoder, x, mean, std, dev, prepare, n_classes) -> torch.Tensor:
    maps = _maps(encoder, x, mean, std, dev, prepare)  # (B, D, h, w)
    b, d, h, w = maps.shape
    logits = model.logits(maps.permute(0, 2, 3, 1).reshape(-1, d).cpu())  # (B h w, C)
    return logits.view(b, h, w, n_classes).permute(0, 3, 1, 2)  # (B, C, h, w)


@torch.no_grad()
def predict_masks(
    probe: Any,
    backbone: torch.nn.Module,
    x: torch.Tensor,
    mean: Any,
    std: Any,
    *,
    n_classes: int = N_MOSAIC_CLASSES,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(B, H, W)`` int64: the segmentation of images ``x`` (B, C, H, W) by a fitted dense
    ``probe`` (``dense_evaluate(...)["probe"]``): step 3 of the module text (``H, W`` of the
    prepared images)."""
    dev = torch.device(device) if device is not None else _encoder_device(backbone)
    with _EvalMode(backbone):
        size = tuple((prepare(x[:1]) if prepare is not None else x).shape[-2:])
        logits = _cell_logits(probe, backbone.forward_features, x, mean, std, dev, prepare,
                              n_classes)
    up = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return up.argmax(1)


@torch.no_grad()
def _predict(model, encoder, x, masks, mean, std, dev, prepare, n_classes):
    logits = _cell_logits(model, encoder, x, mean, std, dev, prepare, n_classes)
    h, w = logits.shape[-2:]
    up = F.interpolate(logits, size=tuple(masks.shape[-2:]), mode="bilinear",
                       align_corners=False)
    conf = confusion_matrix(up.argmax(1), masks, n_classes)
    pconf = confusion_matrix(logits.argmax(1), patch_labels(masks, (h, w), n_classes), n_classes)
    return conf, pconf


def dense_evaluate(
    backbone: torch.nn.Module,
    train_x: torch.Tensor,
    train_masks: torch.Tensor,
    val_x: torch.Tensor,
    val_masks: torch.Tensor,
    test_x: torch.Tensor,
    test_masks: torch.Tensor,
    mean: Any,
    std: Any,
    *,
    n_classes: int = N_MOSAIC_CLASSES,
    max_train: int | None = 20000,
    max_val: int | None = 5000,
    n_grid: int = 45,
    seed: int = 0,
    batch_size: int = 256,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """The protocol of the module text on a frozen ``backbone`` (anything with
    ``forward_features``; put in eval mode for the call). Images ``(N, C, H, W)`` uint8 (or
    float in [0, 1]), masks ``(N, H, W)`` in ``[0, n_classes)``; ``mean``/``std`` as in
    :func:`~selfsup.vision.evaluate.features.extract_features`; ``prepare`` maps a raw batch
    before normalisation (channels / size of another data set). Returns ``miou``,
    ``pixel_accuracy``, ``patch_accuracy``, ``iou_per_class`` (list, ``None`` for a class absent
    from truth and prediction), ``confusion`` (``(C, C)`` tensor), ``l2``, ``refit_converged``,
    ``n_train_patches``, ``n_val_patches``, ``n_test``, ``feature_map`` ``[h, w]``,
    ``feature_dim`` and ``probe`` (the fitted :class:`~selfsup.vision.evaluate.linear.
    LogisticRegression`, for :func:`predict_masks` and the maps of :mod:`.maps`)."""
    from selfsup.vision.evaluate.linear import linear_probe

    if not hasattr(backbone, "forward_features"):
        raise InputError(f"{type(backbone).__name__} has no forward_features(x) -> (B, D, h, w); "
                         "dense evaluation needs a feature map")
    dev = torch.device(device) if device is not None else _encoder_device(backbone)
    enc = backbone.forward_features
    with _EvalMode(backbone):
        common = {"n_classes": n_classes, "batch_size": batch_size, "prepare": prepare,
                  "device": dev}
        tr_f, tr_y, hw = sample_patches(enc, train_x, train_masks, max_train, seed, mean, std,
                                        **common)
        va_f, va_y, _ = sample_patches(enc, val_x, val_masks, max_val, seed + 1, mean, std,
                                       **common)
        # the probe's own test score is not used (the pixels are scored below): val stands in
        res = linear_probe(tr_f, tr_y, va_f, va_y, va_f, va_y, n_grid=n_grid, seed=seed,
                           num_classes=n_classes)
        model = res["model"]
        conf = torch.zeros(n_classes, n_classes, dtype=torch.long)
        pconf = torch.zeros_like(conf)
        for s in range(0, test_x.shape[0], batch_size):
            c, pc = _predict(model, enc, test_x[s : s + batch_size],
                             test_masks[s : s + batch_size], mean, std, dev, prepare, n_classes)
            conf += c
            pconf += pc
    iou = iou_per_class(conf)
    return {
        "miou": miou(conf),
        "pixel_accuracy": pixel_accuracy(conf),
        "patch_accuracy": pixel_accuracy(pconf),
        "iou_per_class": [None if math.isnan(v) else float(v) for v in iou.tolist()],
        "confusion": conf,
        "l2": res["l2"],
        "refit_converged": bool(res["refit_converged"]),
        "n_train_patches": int(tr_f.shape[0]),
        "n_val_patches": int(va_f.shape[0]),
        "n_test": int(test_x.shape[0]),
        "feature_map": list(hw),
        "feature_dim": int(tr_f.shape[1]),
        "probe": model,
    }
