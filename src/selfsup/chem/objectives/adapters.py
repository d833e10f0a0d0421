"""Objectives from user code: a Python callable as an objective, and weighted combinations.

* :class:`FunctionObjective` wraps ``fn(smiles) -> float`` (or a batch callable);
* :func:`as_objective` turns an objective, a registry name or a callable into an
  :class:`~selfsup.chem.objectives.base.Objective` (what :class:`~selfsup.chem.oracles.Oracle`
  accepts);
* :class:`Composite` / :class:`WeightedSum` combine objectives with per-member transforms and
  weights (sum, weighted mean or weighted geometric mean). The GuacaMol task objectives use
  their own unweighted means (:mod:`selfsup.chem.objectives.base`), as GuacaMol defines them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from rdkit import Chem

from selfsup.chem.molecules import mol_from_smiles
from selfsup.chem.objectives.base import Objective
from selfsup.errors import InputError

__all__ = ["Composite", "FunctionObjective", "WeightedSum", "as_objective"]


class _ValidSmilesObjective(Objective):
    """Shared scoring of the two adapters: invalid SMILES score ``self.invalid_score`` and the
    valid ones go, as one list, to :meth:`_score_valid`."""

    def _score_valid(self, smiles: list[str]) -> Sequence[float]:
        raise NotImplementedError

    def score_mol(self, mol: Chem.Mol) -> float:
        return self.score_list([Chem.MolToSmiles(mol)])[0]

    def __call__(self, smiles: str) -> float:
        return self.score_list([smiles])[0]

    def score_list(self, smiles_list: Iterable[str]) -> list[float]:
        items = list(smiles_list)
        valid = [i for i, s in enumerate(items) if mol_from_smiles(s) is not None]
        out = [float(self.invalid_score)] * len(items)
        if valid:
            for i, v in zip(valid, self._score_valid([items[i] for i in valid])):
                out[i] = float(v)
        return out


class FunctionObjective(_ValidSmilesObjective):
    """Wrap a user callable as an objective.

    ``fn(smiles) -> float`` (``batch=False``) or ``fn(list_of_smiles) -> list_of_floats``
    (``batch=True``). Invalid SMILES never reach ``fn``; they score ``invalid_score``. Inside an
    :class:`Oracle`, ``fn`` receives RDKit canonical SMILES.
    """

    def __init__(self, fn: Callable[..., Any], name: str | None = None, batch: bool = False,
                 invalid_score: float = 0.0, maximize: bool = True) -> None:
        if not callable(fn):
            raise InputError(f"FunctionObjective needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.batch = batch
        self.name = name or getattr(fn, "__name__", "function")
        self.invalid_score = float(invalid_score)
        self.maximize = maximize

    def _score_valid(self, smiles: list[str]) -> list[float]:
        if not self.batch:
            return [self.fn(s) for s in smiles]
        values = list(self.fn(smiles))
        if len(values) != len(smiles):
            raise InputError(
                f"batch objective {self.name!r} returned {len(values)} scores for "
                f"{len(smiles)} SMILES; it must return one score per input"
            )
        return values


def as_objective(obj: Objective | str | Callable[..., Any], **kwargs: Any) -> Objective:
    """An :class:`Objective` from an objective, a registry name or a callable (``kwargs`` go to
    :class:`FunctionObjective`)."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        from selfsup.chem.objectives.registry import get_objective

        return get_objective(obj)
    if callable(obj):
        return FunctionObjective(obj, **kwargs)
    raise InputError(
        f"cannot use {type(obj).__name__} as an objective; pass an Objective, a registry name "
        "(see selfsup.chem.objectives.list_objectives()) or a callable f(smiles) -> float"
    )


class Composite(_ValidSmilesObjective):
    """Combine objectives: score ``s_i`` -> transform ``t_i(s_i)`` -> weighted reduction.

    ``reduce='sum'``: sum_i w_i t_i;  ``'mean'``: sum_i w_i t_i / sum_i w_i;
    ``'geometric'``: prod_i t_i ^ (w_i / sum_i w_i) (transforms should map into [0, inf)).
    Each member is called on the whole batch (so batch callables stay batched).
    """

    _REDUCTIONS = ("sum", "mean", "geometric")

    def __init__(self, objectives: Sequence[Objective | str | Callable[..., Any]],
                 weights: Sequence[float] | None = None,
                 transforms: Sequence[Callable[[float], float] | None] | None = None,
                 reduce: str = "mean", name: str | None = None,
                 invalid_score: float = 0.0) -> None:
        self.objectives = [as_objective(o) for o in objectives]
        n = len(self.objectives)
        self.weights = [1.0] * n if weights is None else [float(w) for w in weights]
        self.transforms = [None] * n if transforms is None else list(transforms)
        if n == 0 or len(self.weights) != n or len(self.transforms) != n:
            raise InputError(
                f"Composite needs >= 1 objective and one weight and transform per objective; got "
                f"{n} objectives, {len(self.weights)} weights, {len(self.transforms)} transforms"
            )
        if reduce not in self._REDUCTIONS:
            raise InputError(f"reduce must be one of {self._REDUCTIONS}, got {reduce!r}")
        if reduce != "sum" and sum(self.weights) == 0:
            raise InputError("Composite weights must not sum to 0 for 'mean' or 'geometric'")
        self.reduce = reduce
        self.name = name or f"{reduce}(" + ",".join(o.name for o in self.objectives) + ")"
        self.invalid_score = float(invalid_score)

    def _score_valid(self, smiles: list[str]) -> np.ndarray:
        columns = []
        for obj, tf in zip(self.objectives, self.transforms):
            vals = np.asarray(obj.score_list(smiles), dtype=float)
            if tf is not None:
                vals = np.asarray([float(tf(v)) for v in vals], dtype=float)
            columns.append(vals)
        mat = np.stack(columns)  # (n_objectives, n_valid)
        w = np.asarray(self.weights, dtype=float)[:, None]
        if self.reduce == "sum":
            return (w * mat).sum(axis=0)
        if self.reduce == "mean":
            return (w * mat).sum(axis=0) / w.sum()
        with np.errstate(divide="ignore"):
            return np.exp((w * np.log(np.clip(mat, 0.0, None))).sum(axis=0) / w.sum())


class WeightedSum(Composite):
    """``sum_i w_i t_i(s_i)``: :class:`Composite` with ``reduce='sum'``."""

    def __init__(self, objectives: Sequence[Objective | str | Callable[..., Any]],
                 weights: Sequence[float] | None = None,
                 transforms: Sequence[Callable[[float], float] | None] | None = None,
                 name: str | None = None, invalid_score: float = 0.0) -> None:
        super().__init__(objectives, weights, transforms, reduce="sum", name=name,
                         invalid_score=invalid_score)
