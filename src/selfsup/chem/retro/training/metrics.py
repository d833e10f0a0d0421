"""Accuracy of the template MLP: template top-k on fingerprints and exact-match top-k of the
reactant sets (or products) a model proposes.

Used by single-step training (:mod:`.train_single_step`: model selection and ``results.json``),
fine-tuning (:mod:`.fine_tune`: selection on held-out reactions) and self-improvement (one-step
exact match before and after).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from selfsup.errors import InputError

from ..models.mlp import ForwardTemplateModel, MLPSingleStepModel, TemplateMLP

__all__ = ["evaluate_exact_match", "exact_match_topk", "template_topk_accuracy"]


@torch.no_grad()
def template_topk_accuracy(
    net: TemplateMLP,
    fps: np.ndarray,
    labels: np.ndarray,
    ks: Sequence[int] = (1, 5, 10, 50),
    batch_size: int = 2048,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Fraction of rows whose label is among the top-k templates (``-1`` labels are misses).

    Also returns ``loss``: mean cross-entropy over the rows with a known label.
    """
    device = torch.device(device) if device is not None else next(net.parameters()).device
    was_training = net.training
    net.eval()
    kmax = min(max(ks), net.n_templates)
    hits = {k: 0 for k in ks}
    loss_sum, n_known = 0.0, 0
    try:
        for s in range(0, len(fps), batch_size):
            xb = torch.as_tensor(np.asarray(fps[s : s + batch_size])).to(device)
            yb = torch.as_tensor(np.asarray(labels[s : s + batch_size]), dtype=torch.long)
            yb = yb.to(device)
            logits = net(xb)
            top = logits.topk(kmax, dim=1).indices
            match = top == yb[:, None]
            for k in ks:
                hits[k] += int(match[:, :k].any(dim=1).sum())
            known = yb >= 0
            if known.any():
                loss_sum += float(F.cross_entropy(logits[known], yb[known], reduction="sum"))
                n_known += int(known.sum())
    finally:
        net.train(was_training)
    n = max(len(fps), 1)
    out = {f"top{k}": hits[k] / n for k in ks}
    out["loss"] = loss_sum / max(n_known, 1)
    return out


def exact_match_topk(
    predictions: Sequence[Sequence[Any]],
    truths: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10, 50),
) -> dict[str, float]:
    """Top-k exact-match accuracy of ranked predictions against one truth per item.

    ``predictions[i]`` is ranked best first; each entry is compared with ``truths[i]`` after
    taking ``.reactants`` (a :class:`~selfsup.chem.retro.core.single_step.Proposal`) or ``.product``
    (a forward prediction) when present. Returns ``{"top{k}": fraction}``.
    """
    if len(predictions) != len(truths):
        raise InputError(f"{len(predictions)} prediction lists for {len(truths)} truths")
    hits = {k: 0 for k in ks}
    for preds, truth in zip(predictions, truths):
        rank = None
        for r, p in enumerate(preds):
            value = getattr(p, "reactants", getattr(p, "product", p))
            if value == truth:
                rank = r
                break
        for k in ks:
            hits[k] += rank is not None and rank < k
    n = max(len(truths), 1)
    return {f"top{k}": hits[k] / n for k in ks}


def evaluate_exact_match(
    model: MLPSingleStepModel | ForwardTemplateModel,
    inputs: Sequence[str],
    truths: Sequence[Any],
    ks: Sequence[int] = (1, 5, 10, 50),
    batch_size: int = 64,
    progress: logging.Logger | None = None,
) -> dict[str, float]:
    """Exact-match top-k of a backward model (products -> reactant tuples) or a forward one.

    The backward model proposes with ``top_k = max(ks)`` (that many templates applied); the
    forward model applies ``max(ks)`` templates and keeps ``max(ks)`` products.
    """
    kmax = max(ks)
    preds: list[list[Any]] = []
    t0 = time.perf_counter()
    for s in range(0, len(inputs), batch_size):
        chunk = list(inputs[s : s + batch_size])
        if isinstance(model, ForwardTemplateModel):
            preds.extend(model.predict(chunk, n_templates=kmax, top_k=kmax))
        else:
            preds.extend(model.propose(chunk, top_k=kmax))
        if progress is not None:
            progress.info("exact-match eval %d/%d (%.1fs)", len(preds), len(inputs),
                          time.perf_counter() - t0)
    out = exact_match_topk(preds, truths, ks)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    out["n"] = len(inputs)
    out["mean_proposals"] = float(np.mean([len(p) for p in preds])) if preds else 0.0
    return out
