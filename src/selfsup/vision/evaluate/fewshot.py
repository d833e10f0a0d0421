"""N-way K-shot evaluation of frozen features with logistic regression.

Protocol (AugSelf's few-shot evaluation; 2000 tasks in the paper):

1. a task draws ``n_way`` distinct classes among those with at least ``k_shot + n_query``
   samples, then, for each, ``k_shot`` support and ``n_query`` (default 15) query samples without
   replacement; task labels are ``0 .. n_way - 1`` in the order the classes were drawn. All draws
   come from one ``torch.Generator`` seeded with ``seed``, tasks in order, so a seed fixes every
   task whatever ``task_batch`` or device is used.
2. features are preprocessed (``preprocess``): ``"l2"`` (default) L2-normalises each feature (no
   statistics, nothing leaks between support and query); ``"standardize"`` uses the mean and
   population std of the task's *support* features; ``"none"`` uses them as they are.
3. a multinomial logistic regression with a fixed L2 weight is fit on the support set -- the
   objective of :mod:`selfsup.vision.evaluate.linear`: mean cross-entropy
   ``+ (l2 / 2) * ||W||^2``, bias unpenalised. ``l2=None`` (default) takes
   ``l2 = 1 / (n_way * k_shot)``, which is scikit-learn's default ``C = 1`` on the same support
   set. ``task_batch`` tasks are fit together as one batched L-BFGS problem.
4. a task's accuracy is the fraction of its ``n_way * n_query`` queries predicted right; the
   result is the mean over tasks ``+-`` the 95% interval half-width
   ``1.96 * std / sqrt(n_tasks)`` (``std``: population std over tasks, ``ddof = 0``, as
   ``numpy.std``; so one task gives 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from selfsup.errors import InputError
from selfsup.vision.evaluate.features import _check_features
from selfsup.vision.evaluate.linear import fit_logistic_regression

__all__ = ["confidence_interval95", "few_shot_eval", "sample_tasks"]


def confidence_interval95(accuracies: torch.Tensor) -> tuple[float, float]:
    """``(mean, 1.96 * std / sqrt(n))`` of per-task accuracies (population std, ``ddof = 0``)."""
    a = accuracies.reshape(-1).double()
    if a.numel() == 0:
        raise InputError("no accuracies to summarise")
    return a.mean().item(), 1.96 * a.std(unbiased=False).item() / math.sqrt(a.numel())


def sample_tasks(
    labels: torch.Tensor,
    *,
    n_way: int,
    k_shot: int,
    n_query: int,
    n_tasks: int,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices into ``labels`` of every task: ``(support (n_tasks, n_way * k_shot),
    query (n_tasks, n_way * n_query))``, class-major (the first ``k_shot`` support entries
    are task class 0, and so on). See the module text for the sampling."""
    for name, v, low in (
        ("n_way", n_way, 2),
        ("k_shot", k_shot, 1),
        ("n_query", n_query, 1),
        ("n_tasks", n_tasks, 1),
    ):
        if not isinstance(v, int) or v < low:
            raise InputError(f"{name} must be an integer >= {low}, got {v!r}")
    labels = labels.reshape(-1).cpu().long()
    classes, counts = torch.unique(labels, return_counts=True)
    need = k_shot + n_query
    eligible = classes[counts >= need]
    if eligible.numel() < n_way:
        raise InputError(
            f"{n_way}-way {k_shot}-shot tasks with {n_query} queries need {n_way} classes with "
            f">= {need} samples each; only {eligible.numel()} classes have that many"
        )
    members = {int(c): torch.nonzero(labels == c).flatten() for c in eligible.tolist()}
    g = torch.Generator().manual_seed(seed)
    support = torch.empty(n_tasks, n_way, k_shot, dtype=torch.long)
    query = torch.empty(n_tasks, n_way, n_query, dtype=torch.long)
    for t in range(n_tasks):
        chosen = eligible[torch.randperm(eligible.numel(), generator=g)[:n_way]]
        for j, c in enumerate(chosen.tolist()):
            idx = members[c]
            pick = idx[torch.randperm(idx.numel(), generator=g)[:need]]
            support[t, j] = pick[:k_shot]
            query[t, j] = pick[k_shot:]
    return support.reshape(n_tasks, -1), query.reshape(n_tasks, -1)


def _preprocess(s: torch.Tensor, q: torch.Tensor, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    if how == "l2":
        return F.normalize(s, dim=-1), F.normalize(q, dim=-1)
    if how == "standardize":
        mean = s.mean(dim=1, keepdim=True)
        std = s.std(dim=1, unbiased=False, keepdim=True)
        std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
        return (s - mean) / std, (q - mean) / std
    return s, q


def few_shot_eval(
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    n_way: int = 5,
    k_shot: int = 5,
    n_query: int = 15,
    n_tasks: int = 2000,
    l2: float | None = None,
    preprocess: str = "l2",
    seed: int = 0,
    task_batch: int = 250,
    max_iter: int = 500,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """Few-shot accuracy of ``features`` ``(N, D)`` with ``labels`` ``(N,)``.

    Returns ``{"mean", "ci95", "std", "accuracies" ((n_tasks,) float64 tensor), "n_tasks",
    "n_way", "k_shot", "n_query", "l2", "preprocess", "seed", "all_converged"}``; accuracies are
    fractions in ``[0, 1]``. ``dtype``/``device`` as in
    :func:`~selfsup.vision.evaluate.linear.fit_logistic_regression` (float64 on the CPU).
    """
    _check_features(features, labels, "few-shot")
    if preprocess not in ("l2", "standardize", "none"):
        raise InputError(f"preprocess must be 'l2', 'standardize' or 'none', got {preprocess!r}")
    if task_batch < 1:
        raise InputError(f"task_batch must be >= 1, got {task_batch}")
    sup_idx, qry_idx = sample_tasks(
        labels, n_way=n_way, k_shot=k_shot, n_query=n_query, n_tasks=n_tasks, seed=seed
    )
    lam = 1.0 / (n_way * k_shot) if l2 is None else float(l2)
    dev = torch.device(device) if device is not None else features.device
    dtype = dtype or (torch.float64 if dev.type == "cpu" else torch.float32)
    feats = features.to(dev, dtype)
    sup_y = torch.arange(n_way, device=dev).repeat_interleave(k_shot)
    qry_y = torch.arange(n_way, device=dev).repeat_interleave(n_query)
    accs = []
    all_converged = True
    for start in range(0, n_tasks, task_batch):
        si = sup_idx[start : start + task_batch].to(dev)
        qi = qry_idx[start : start + task_batch].to(dev)
        s, q = _preprocess(feats[si], feats[qi], preprocess)
        t = s.shape[0]
        model = fit_logistic_regression(
            s,
            sup_y.expand(t, -1),
            lam,
            num_classes=n_way,
            max_iter=max_iter,
            dtype=dtype,
            device=dev,
        )
        all_converged &= model.converged
        pred = model.predict(q)
        accs.append((pred == qry_y).double().mean(dim=1).cpu())
    acc = torch.cat(accs)
    mean, ci = confidence_interval95(acc)
    return {
        "mean": mean,
        "ci95": ci,
        "std": acc.std(unbiased=False).item(),
        "accuracies": acc,
        "n_tasks": n_tasks,
        "n_way": n_way,
        "k_shot": k_shot,
        "n_query": n_query,
        "l2": lam,
        "preprocess": preprocess,
        "seed": seed,
        "all_converged": all_converged,
    }
