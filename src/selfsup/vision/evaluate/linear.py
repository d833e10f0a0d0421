"""The L-BFGS linear probe: L2-regularised multinomial logistic regression on frozen features.

Objective (exact). For ``n`` training features ``x_i`` (rows of ``X``, ``(n, D)``), labels
``y_i`` in ``[0, C)``, weights ``W`` ``(D, C)`` and bias ``b`` ``(C,)``::

    L(W, b) = (1 / n) * sum_i CE(x_i @ W + b, y_i)  +  (lambda / 2) * ||W||_F^2

with ``CE(z, y) = logsumexp(z) - z_y``. Only the weights are penalised, never the bias. Because
the loss is a *mean*, ``lambda`` is a per-sample strength: the optimum for a given ``lambda``
does not drift as ``n`` grows. scikit-learn's ``LogisticRegression(C=...)`` minimises
``C * sum_i CE + ||W||^2 / 2`` (bias unpenalised with lbfgs), whose minimiser is the same as ours
for ``C = 1 / (lambda * n)``. The softmax is unchanged by adding a constant to ``b``; starting
from a centred ``b`` every L-BFGS step keeps ``sum(b) = 0`` (the gradient in ``b`` sums to zero),
which picks the unique centred bias.

Solver (:func:`fit_logistic_regression`): full batch ``torch.optim.LBFGS`` with the strong-Wolfe
line search, history 20, stopping when the largest absolute gradient entry is ``<= tol`` (or the
loss changes by less than ``tol_change``, or ``max_iter`` iterations). The solver sees the bias
as ``b = beta * sqrt(1 + lambda)`` (a fixed diagonal preconditioner: for large ``lambda`` the
curvature in ``W`` is ~``lambda`` but in ``b`` below 1/4, and plain L-BFGS then leaves ``b`` far
from optimal); the objective and the returned ``b`` are unchanged by this. Precision: by default
float64 on the CPU (the probe's problems are small -- thousands x hundreds -- float64 costs
~2x per iteration and allows a tight tolerance, ``tol = 1e-6``, so fits are reproducible to
many digits) and float32 on a GPU (``tol = 1e-4``; the looser fit stops early at tiny
``lambda`` but in our checks chose the same ``lambda`` and test accuracy); ``dtype=``
overrides. A batch of independent problems of equal size ``(T, n, D)`` is fit at once by
minimising the sum of their objectives (separable, so the joint minimiser is each problem's
minimiser; the gradient test is on the max entry, so each problem meets it, while the
loss-change test sees the summed loss) -- the few-shot protocol uses this.

Probe (:func:`linear_probe`), the protocol of Kornblith et al. (2019) as used by AugSelf:

1. features are standardised with the mean and (population) std of the *training* features
   (constant features get std 1);
2. ``lambda`` is chosen among ``n_grid`` (45) log-spaced values in ``[1e-6, 1e5]``: each is fit on
   train and scored on the validation split (``select="top1"`` or ``"mean_per_class"``); the
   sweep runs from the largest ``lambda`` down, each fit warm-started from the previous
   solution and capped at ``grid_max_iter`` iterations. **Ties** in the validation score go to
   the **largest** ``lambda`` (the simplest model);
3. the model is refit on train + val (standardised with train + val statistics, the same
   ``lambda``, warm-started from the grid solution, up to ``max_iter`` iterations) and scored on
   test: top-1 and mean per-class accuracy.

Without a validation split one is carved from train with :func:`stratified_split` (a seeded,
per-class ``val_fraction`` share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from selfsup.errors import InputError
from selfsup.vision.evaluate.features import (
    _check_features,
    mean_per_class_accuracy,
    top1_accuracy,
)

__all__ = [
    "LogisticRegression",
    "default_l2_grid",
    "fit_logistic_regression",
    "linear_probe",
    "logistic_objective",
    "stratified_split",
]


@dataclass
class LogisticRegression:
    """A fitted model: ``logits = ((x - mean) / std) @ weight + bias``.

    ``weight`` is ``(D, C)`` (or ``(T, D, C)`` for a batch of ``T`` problems), ``bias`` ``(C,)``
    (or ``(T, C)``); ``mean``/``std`` ``(D,)`` are the standardisation (``None``: none).
    ``grad_max`` is the largest absolute gradient entry of the objective at the solution.
    """

    weight: torch.Tensor
    bias: torch.Tensor
    l2: float
    n_iter: int
    grad_max: float
    converged: bool
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.weight.device, self.weight.dtype)
        if self.mean is not None:
            x = (x - self.mean) / self.std
        if self.weight.dim() == 3:
            return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)
        return torch.addmm(self.bias, x, self.weight)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Labels ``(n,)`` (or ``(T, n)``); ties in the logits go to the smallest class."""
        return self.logits(x).argmax(dim=-1)


def default_l2_grid(n_grid: int = 45, low: float = 1e-6, high: float = 1e5) -> list[float]:
    """``n_grid`` log-spaced values from ``low`` to ``high`` (ascending; both ends included)."""
    if n_grid < 1 or not 0 < low <= high:
        raise InputError(f"need n_grid >= 1 and 0 < low <= high, got {n_grid}, {low}, {high}")
    if n_grid == 1:
        return [float(low)]
    return torch.logspace(math.log10(low), math.log10(high), n_grid, dtype=torch.float64).tolist()


def logistic_objective(
    weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor, l2: float
) -> torch.Tensor:
    """The objective of the module text (a 0-dim tensor).

    Batched inputs (``weight (T, D, C)``, ``bias (T, C)``, ``x (T, n, D)``, ``y (T, n)``) give the
    sum over the ``T`` problems of each problem's objective.
    """
    if x.dim() == 2:
        logits = torch.addmm(bias, x, weight)
    else:
        logits = torch.baddbmm(bias.unsqueeze(1), x, weight)
    n = x.shape[-2]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    return ce / n + 0.5 * l2 * weight.pow(2).sum()


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.float64 if device.type == "cpu" else torch.float32


def fit_logistic_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    l2: float,
    *,
    num_classes: int | None = None,
    max_iter: int = 1000,
    tol: float | None = None,
    tol_change: float | None = None,
    history_size: int = 20,
    init: LogisticRegression | tuple[torch.Tensor, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> LogisticRegression:
    """Minimise the objective of the module text for fixed ``l2`` (= lambda) with L-BFGS.

    ``x`` ``(n, D)`` or a batch ``(T, n, D)``; ``y`` ``(n,)`` / ``(T, n)`` integer labels in
    ``[0, num_classes)`` (default ``max(y) + 1``). No standardisation here (the caller's job).
    ``init``: a starting ``(weight, bias)`` or model (warm start; default ``W = 0`` and the
    centred log class counts as bias, the optimum when ``W = 0``). ``tol``:
    gradient tolerance (max abs entry; default 1e-6 in float64, 1e-4 otherwise); ``tol_change``:
    loss-change tolerance (default 1e-12 / 1e-9). Returns the model with ``mean = std = None``.
    """
    if not l2 >= 0 or not math.isfinite(l2):
        raise InputError(f"l2 must be a finite number >= 0, got {l2!r}")
    if max_iter < 1:
        raise InputError(f"max_iter must be >= 1, got {max_iter}")
    dev = torch.device(device) if device is not None else x.device
    dtype = dtype or _default_dtype(dev)
    if x.dim() not in (2, 3) or y.shape != x.shape[:-1]:
        raise InputError(
            f"x must be (n, D) or (T, n, D) with y of shape x.shape[:-1]; got x "
            f"{tuple(x.shape)} and y {tuple(y.shape)}"
        )
    c = int(y.max().item()) + 1 if num_classes is None else int(num_classes)
    if c < int(y.max().item()) + 1:
        raise InputError(f"num_classes = {c} but y has label {int(y.max().item())}")
    wide = dtype == torch.float64
    tol = (1e-6 if wide else 1e-4) if tol is None else tol
    tol_change = (1e-12 if wide else 1e-9) if tol_change is None else tol_change
    X = x.to(dev, dtype)
    Y = y.to(dev).long()
    wshape = (*X.shape[:-2], X.shape[-1], c)
    bshape = (*X.shape[:-2], c)
    if init is None:
        # W = 0 and the bias that is optimal for W = 0: centred log class counts (a class
        # absent from y counts as 1 here; its optimal bias is -inf)
        w0 = torch.zeros(wshape, device=dev, dtype=dtype)
        counts = F.one_hot(Y, c).sum(dim=-2).to(dtype).clamp_min(1.0)
        b0 = counts.log()
        b0 = b0 - b0.mean(dim=-1, keepdim=True)
    else:
        w0, b0 = (init.weight, init.bias) if isinstance(init, LogisticRegression) else init
        if tuple(w0.shape) != wshape or tuple(b0.shape) != bshape:
            raise InputError(
                f"init shapes {tuple(w0.shape)}, {tuple(b0.shape)} do not match {wshape}, {bshape}"
            )
    # The solver works on (W, beta) with b = beta * scale, scale = sqrt(1 + l2): the curvature
    # in W grows like l2 while that in b stays below 1/4, and without this rescaling L-BFGS
    # barely moves b for large l2 (it stalls on the loss-change test with b far from optimal).
    # The stopping test then reads max(|dL/dW|, scale * |dL/db|) <= tol: stricter on b.
    scale = math.sqrt(1.0 + l2)
    W = w0.detach().to(dev, dtype).clone().requires_grad_(True)
    beta = (b0.detach().to(dev, dtype) / scale).requires_grad_(True)
    opt = torch.optim.LBFGS(
        [W, beta],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter * 2,
        tolerance_grad=tol,
        tolerance_change=tol_change,
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=False)
        loss = logistic_objective(W, beta * scale, X, Y, l2)
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[W].get("n_iter", 0))
    W = W.detach().requires_grad_(True)
    b = (beta.detach() * scale).requires_grad_(True)
    gw, gb = torch.autograd.grad(logistic_objective(W, b, X, Y, l2), [W, b])
    grad_max = max(gw.abs().max().item(), gb.abs().max().item())
    return LogisticRegression(
        weight=W.detach(),
        bias=b.detach(),
        l2=float(l2),
        n_iter=n_iter,
        grad_max=grad_max,
        converged=grad_max <= tol,
    )


def stratified_split(
    labels: torch.Tensor, val_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded per-class split: ``(train_idx, val_idx)``, both sorted int64 index tensors.

    A class with ``m`` samples gives ``round(val_fraction * m)`` of them to val, clipped to
    ``[1, m - 1]`` when ``m >= 2`` (so every such class is in both parts); a class with a single
    sample stays in train.
    """
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = labels.reshape(-1).cpu().long()
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        m = idx.numel()
        n_val = 0 if m < 2 else min(max(int(math.floor(val_fraction * m + 0.5)), 1), m - 1)
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _standardiser(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = f.mean(dim=0)
    std = f.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
    return mean, std


def linear_probe(
    train_f: torch.Tensor,
    train_y: torch.Tensor,
    val_f: torch.Tensor | None,
    val_y: torch.Tensor | None,
    test_f: torch.Tensor,
    test_y: torch.Tensor,
    *,
    grid: list[float] | None = None,
    n_grid: int = 45,
    select: str = "top1",
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    grid_max_iter: int = 200,
    tol: float | None = None,
    num_classes: int | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> dict:
    """The full probe of the module text. Returns a dict with:

    ``top1``, ``mean_per_class`` (test, fractions); ``l2`` (chosen lambda) and ``l2_index``;
    ``grid`` (ascending); ``val_top1_per_l2``, ``val_mean_per_class_per_l2`` (aligned with
    ``grid``); ``grid_iters`` (L-BFGS iterations per grid value), ``grid_converged`` (gradient
    test met per value); ``refit_iters``, ``refit_converged``, ``refit_grad_max``;
    ``n_train``, ``n_val``, ``n_test``, ``num_classes``, ``select``; ``test_predictions``
    (tensor) and ``model`` (the refit :class:`LogisticRegression`, standardisation included).

    ``val_f = val_y = None`` carves a stratified ``val_fraction`` split from train (``seed``).
    ``grid`` overrides the default ``n_grid`` log-spaced values in ``[1e-6, 1e5]``.
    """
    if select not in ("top1", "mean_per_class"):
        raise InputError(f"select must be 'top1' or 'mean_per_class', got {select!r}")
    _check_features(train_f, train_y, "train")
    _check_features(test_f, test_y, "test")
    if (val_f is None) != (val_y is None):
        raise InputError("give both val_f and val_y, or neither (to split val off train)")
    if val_f is None:
        tr, va = stratified_split(train_y, val_fraction, seed)
        if va.numel() == 0:
            raise InputError("train is too small to split off a validation set; give val_f")
        train_f, train_y, val_f, val_y = train_f[tr], train_y[tr], train_f[va], train_y[va]
    _check_features(val_f, val_y, "val")
    d = train_f.shape[1]
    if val_f.shape[1] != d or test_f.shape[1] != d:
        raise InputError(
            f"feature widths differ: train {d}, val {val_f.shape[1]}, test {test_f.shape[1]}"
        )
    c = num_classes
    if c is None:
        c = max(int(t.max().item()) for t in (train_y, val_y, test_y)) + 1
    grid = sorted(float(v) for v in (grid if grid is not None else default_l2_grid(n_grid)))
    if not grid or grid[0] <= 0:
        raise InputError("grid must be a non-empty list of values > 0")
    dev = torch.device(device) if device is not None else train_f.device
    dtype = dtype or _default_dtype(dev)

    tr_f = train_f.to(dev, dtype)
    va_f = val_f.to(dev, dtype)
    mean, std = _standardiser(tr_f)
    xtr, xva = (tr_f - mean) / std, (va_f - mean) / std
    ytr = train_y.to(dev).long()

    n = len(grid)
    val_top1 = [0.0] * n
    val_mpc = [0.0] * n
    iters = [0] * n
    converged = [False] * n
    models: list[LogisticRegression | None] = [None] * n
    prev: LogisticRegression | None = None
    for i in reversed(range(n)):
        prev = fit_logistic_regression(
            xtr,
            ytr,
            grid[i],
            num_classes=c,
            max_iter=grid_max_iter,
            tol=tol,
            init=prev,
            dtype=dtype,
            device=dev,
        )
        pred = prev.predict(xva).cpu()
        val_top1[i] = top1_accuracy(pred, val_y)
        val_mpc[i] = mean_per_class_accuracy(pred, val_y, c)
        iters[i] = prev.n_iter
        converged[i] = prev.converged
        models[i] = prev
    score = val_top1 if select == "top1" else val_mpc
    best = max(range(n), key=lambda i: (score[i], i))  # ties -> the largest lambda

    all_f = torch.cat([tr_f, va_f])
    all_y = torch.cat([ytr, val_y.to(dev).long()])
    mean2, std2 = _standardiser(all_f)
    model = fit_logistic_regression(
        (all_f - mean2) / std2,
        all_y,
        grid[best],
        num_classes=c,
        max_iter=max_iter,
        tol=tol,
        init=models[best],
        dtype=dtype,
        device=dev,
    )
    model.mean, model.std = mean2, std2
    pred = model.predict(test_f).cpu()
    return {
        "top1": top1_accuracy(pred, test_y),
        "mean_per_class": mean_per_class_accuracy(pred, test_y, c),
        "l2": grid[best],
        "l2_index": best,
        "grid": grid,
        "val_top1_per_l2": val_top1,
        "val_mean_per_class_per_l2": val_mpc,
        "grid_iters": iters,
        "grid_converged": converged,
        "refit_iters": model.n_iter,
        "refit_converged": model.converged,
        "refit_grad_max": model.grad_max,
        "n_train": int(train_f.shape[0]),
        "n_val": int(val_f.shape[0]),
        "n_test": int(test_f.shape[0]),
        "num_classes": c,
        "select": select,
        "test_predictions": pred,
        "model": model,
    }
