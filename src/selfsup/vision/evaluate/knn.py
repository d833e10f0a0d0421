"""Weighted k-nearest-neighbour classification on frozen features.

The instance-discrimination kNN protocol (Wu et al., CVPR 2018), as used to monitor and compare
self-supervised encoders:

1. every bank (train) and query feature is L2-normalised, so ``sim(q, b) = <q, b>`` is the cosine
   similarity, in ``[-1, 1]``;
2. for each query the ``k`` bank features with the largest similarity are its neighbours
   (``k = min(k, bank size)``);
3. neighbour ``i`` votes for its label with weight ``exp(sim_i / T)`` (``T`` = ``temperature``,
   0.07 by default); the class with the largest summed vote is the prediction.

Common settings: ``k = 20`` (the default; CIFAR/STL scale) and ``k = 200`` (ImageNet).

Exact numbers: the returned ``votes`` are ``exp(-1 / T) * sum_i exp(sim_i / T)``, i.e. every
weight is computed as ``exp((sim_i - 1) / T) <= 1`` so nothing overflows for small ``T``. The
factor is the same for every query and class, so it changes no prediction.

Ties: between classes with equal votes the *smallest class index* wins (``torch.argmax`` returns
the first maximum). Between bank features with equal similarity at the ``k``-th place, which one
is taken is up to ``torch.topk`` (deterministic for a given device and input, but unspecified).

Memory: the ``(queries, bank)`` similarity matrix is never built whole; queries go in chunks of
``chunk_size`` rows (default: as many as keep one chunk's matrix at ~2^25 entries, 128 MiB in
float32), so 10k queries against a 50k bank fit easily.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.errors import InputError
from selfsup.vision.evaluate.features import (
    _check_features,
    mean_per_class_accuracy,
    top1_accuracy,
)

__all__ = ["knn_evaluate", "knn_predict", "knn_votes"]

_CHUNK_ENTRIES = 1 << 25


def knn_votes(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Class votes ``(Q, num_classes)`` of each query (see the module text for their scale).

    ``num_classes`` defaults to ``max(bank_labels) + 1``. ``device``: where to compute
    (default: that of ``bank_features``); the result is on the CPU. Float64 inputs are kept in
    float64, anything else runs in float32.
    """
    _check_features(bank_features, bank_labels, "bank")
    _check_features(query_features, None, "query")
    if bank_features.shape[1] != query_features.shape[1]:
        raise InputError(
            f"bank features have {bank_features.shape[1]} dims but query features have "
            f"{query_features.shape[1]}; they must come from the same encoder"
        )
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0 or not math.isfinite(temperature):
        raise InputError(f"temperature must be a finite number > 0, got {temperature!r}")
    n_bank = bank_features.shape[0]
    c = int(bank_labels.max().item()) + 1 if num_classes is None else int(num_classes)
    if c < int(bank_labels.max().item()) + 1:
        raise InputError(
            f"num_classes = {c} but the bank has label {int(bank_labels.max().item())}"
        )
    k = min(k, n_bank)
    dev = torch.device(device) if device is not None else bank_features.device
    dtype = torch.float64 if bank_features.dtype == torch.float64 else torch.float32
    bank = F.normalize(bank_features.to(dev, dtype), dim=1)
    labels = bank_labels.to(dev).long()
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_ENTRIES // n_bank)
    elif chunk_size < 1:
        raise InputError(f"chunk_size must be >= 1, got {chunk_size}")
    out = []
    for start in range(0, query_features.shape[0], chunk_size):
        q = F.normalize(query_features[start : start + chunk_size].to(dev, dtype), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weight = torch.exp((sim - 1.0) / temperature)
        votes = torch.zeros(q.shape[0], c, device=dev, dtype=dtype)
        votes.scatter_add_(1, labels[idx], weight)
        out.append(votes.cpu())
    return torch.cat(out)


def knn_predict(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Predicted labels ``(Q,)`` (int64, CPU): the arg-max of :func:`knn_votes`, ties to the
    smallest class index."""
    votes = knn_votes(
        bank_features,
        bank_labels,
        query_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
        device=device,
    )
    return votes.argmax(dim=1)


def knn_evaluate(
    bank_features: torch.Tensor,
    bank_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    per_class: bool = True,
) -> dict:
    """kNN accuracy of the queries: ``{"predictions": (Q,) tensor, "top1": float,
    "mean_per_class": float | None, "k": int, "temperature": float}``.

    Accuracies are fractions in ``[0, 1]``; ``mean_per_class`` is ``None`` unless ``per_class``.
    """
    _check_features(query_features, query_labels, "query")
    c = num_classes
    if c is None:
        c = max(int(bank_labels.max().item()), int(query_labels.max().item())) + 1
    pred = knn_predict(
        bank_features,
        bank_labels,
        query_features,
        k=k,
        temperature=temperature,
        num_classes=c,
        chunk_size=chunk_size,
        device=device,
    )
    return {
        "predictions": pred,
        "top1": top1_accuracy(pred, query_labels),
        "mean_per_class": mean_per_class_accuracy(pred, query_labels, c) if per_class else None,
        "k": min(k, bank_features.shape[0]),
        "temperature": float(temperature),
    }
