"""Frozen features of an encoder, and the checks and metrics that every protocol shares.

Feature extraction follows the frozen-feature protocol of AugSelf (and of Kornblith et al.,
2019): one view per image, the *centre view* -- the images exactly as given (resize and crop
them beforehand), scaled to ``[0, 1]`` and normalised per channel -- passed through the encoder
in eval mode under ``torch.no_grad``. Nothing is augmented or averaged over views.

- :func:`extract_features`: a tensor of images ``(N, C, H, W)`` (uint8 in ``[0, 255]`` or float
  in ``[0, 1]``) -> features ``(N, D)``.
- :func:`extract_features_from_loader`: a loader of ``(x, y)`` batches -> ``(features, labels)``.

Metrics (fractions in ``[0, 1]``, not percent):

- :func:`top1_accuracy`: ``mean(pred == y)``.
- :func:`mean_per_class_accuracy`: the accuracy of each class that occurs in ``y``, averaged
  with equal weight per class (classes absent from ``y`` are skipped, whatever is predicted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from selfsup.errors import InputError

__all__ = [
    "extract_features",
    "extract_features_from_loader",
    "mean_per_class_accuracy",
    "top1_accuracy",
]


def _encoder_device(encoder: Callable[[torch.Tensor], torch.Tensor]) -> torch.device:
    if isinstance(encoder, nn.Module):
        for p in encoder.parameters():
            return p.device
        for b in encoder.buffers():
            return b.device
    return torch.device("cpu")


def _channel_stats(
    values: Sequence[float] | torch.Tensor, channels: int, name: str
) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(channels)
    if t.numel() != channels:
        raise InputError(
            f"{name} has {t.numel()} values but the images have {channels} channels; "
            f"give one value per channel"
        )
    if name == "std" and bool((t <= 0).any()):
        raise InputError(f"std must be > 0 for every channel, got {t.tolist()}")
    return t.view(1, channels, 1, 1)


def _normalise(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    if x.dim() != 4:
        raise InputError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        x = x.to(device, non_blocking=True).float().div_(255.0)
    elif x.is_floating_point():
        x = x.to(device, dtype=torch.float32, non_blocking=True)
    else:
        raise InputError(f"images must be uint8 or floating point, got {x.dtype}")
    if mean is None and std is None:
        return x
    c = x.shape[1]
    m = _channel_stats(0.0 if mean is None else mean, c, "mean").to(device)
    s = _channel_stats(1.0 if std is None else std, c, "std").to(device)
    return (x - m) / s


class _EvalMode:
    """Puts an ``nn.Module`` in eval mode and restores its previous mode on exit."""

    def __init__(self, encoder: object) -> None:
        self.module = encoder if isinstance(encoder, nn.Module) else None
        self.was_training = False

    def __enter__(self) -> None:
        if self.module is not None:
            self.was_training = self.module.training
            self.module.eval()

    def __exit__(self, *exc: object) -> None:
        if self.module is not None:
            self.module.train(self.was_training)


def _as_2d(f: torch.Tensor, n: int) -> torch.Tensor:
    if f.dim() < 2 or f.shape[0] != n:
        raise InputError(
            f"the encoder returned shape {tuple(f.shape)} for a batch of {n} images; "
            f"it must return (batch, ...) features"
        )
    return f.reshape(n, -1)


@torch.no_grad()
def extract_features(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mean: Sequence[float] | torch.Tensor | None,
    std: Sequence[float] | torch.Tensor | None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Features ``(N, D)`` (float32, on the CPU) of ``images`` ``(N, C, H, W)``.

    uint8 images are divided by 255, float images are taken to be in ``[0, 1]`` already; then
    ``(x - mean) / std`` per channel (``mean``/``std``: one value per channel, or one for all, on
    the ``[0, 1]`` scale; ``None`` skips that part). Outputs with more than two dims are
    flattened. ``device``: where the encoder runs; by default the device of its first
    parameter (the CPU for plain callables). An ``nn.Module`` is put in eval mode for the call
    and given back in the mode it had.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a tensor (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise InputError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else _encoder_device(encoder)
    out: list[torch.Tensor] = []
    with _EvalMode(encoder):
        for start in range(0, images.shape[0], batch_size):
            x = _normalise(images[start : start + batch_size], mean, std, dev)
            out.append(_as_2d(encoder(x), x.shape[0]).float().cpu())
    if not out:
        raise InputError("images is empty (N = 0); give at least one image")
    return torch.cat(out)


@torch.no_grad()
def extract_features_from_loader(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features (N, D) float32, labels (N,) int64)``, both on the CPU, from ``(x, y)`` batches.

    Each ``x`` is treated as in :func:`extract_features`. With ``mean = std = None`` (the
    default) float batches are used as they come, for loaders whose transform already
    normalises; uint8 batches are still divided by 255.
    """
    dev = torch.device(device) if device is not None else _encoder_device(encoder)
    feats: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    with _EvalMode(encoder):
        for batch in loader:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise InputError("the loader must yield (images, labels) batches")
            x, y = batch[0], batch[1]
            x = _normalise(x, mean, std, dev)
            feats.append(_as_2d(encoder(x), x.shape[0]).float().cpu())
            labels.append(torch.as_tensor(y).reshape(-1).long().cpu())
    if not feats:
        raise InputError("the loader yielded no batches")
    return torch.cat(feats), torch.cat(labels)


def top1_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of ``pred == target`` (both ``(N,)`` integer labels)."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    if pred.numel() != target.numel() or target.numel() == 0:
        raise InputError(
            f"pred and target must be non-empty and the same length, "
            f"got {pred.numel()} and {target.numel()}"
        )
    return (pred.cpu() == target.cpu()).double().mean().item()


def mean_per_class_accuracy(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int | None = None
) -> float:
    """Average over the classes present in ``target`` of that class's accuracy (recall).

    Each present class weighs the same however many samples it has; a class that never occurs
    in ``target`` is left out of the mean (its false positives count against the true class).
    """
    pred, target = pred.reshape(-1).cpu().long(), target.reshape(-1).cpu().long()
    if pred.numel() != target.numel() or target.numel() == 0:
        raise InputError(
            f"pred and target must be non-empty and the same length, "
            f"got {pred.numel()} and {target.numel()}"
        )
    c = int(target.max().item()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(target, minlength=c).double()
    hits = torch.bincount(target[pred == target], minlength=c).double()
    present = counts > 0
    return (hits[present] / counts[present]).mean().item()


def _check_features(f: torch.Tensor, y: torch.Tensor | None, name: str) -> None:
    if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] == 0:
        shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
        raise InputError(f"{name} features must be a non-empty (N, D) tensor, got {shape}")
    if not f.is_floating_point():
        raise InputError(f"{name} features must be floating point, got {f.dtype}")
    if not bool(torch.isfinite(f).all()):
        raise InputError(f"{name} features contain NaN or inf")
    if y is not None:
        if y.dim() != 1 or y.shape[0] != f.shape[0]:
            raise InputError(
                f"{name} labels must be (N,) with N = {f.shape[0]} (the number of feature "
                f"rows), got shape {tuple(y.shape)}"
            )
        if y.is_floating_point() or y.dtype == torch.bool:
            raise InputError(f"{name} labels must be integers, got {y.dtype}")
        if y.numel() and int(y.min().item()) < 0:
            raise InputError(f"{name} labels must be >= 0, got {int(y.min().item())}")
