"""Retro*'s value network: an estimate of the cost of making a molecule (torch).

Chen et al. (ICML 2020), section 4.3::

    x = MorganFP(m)  (radius 2, 2048 bits)             (B, 2048)
    V(m) = softplus(W2 Dropout(ReLU(W1 x + b1)) + b2)  (B, 1), W1: 2048 -> 128

trained on molecules ``m`` of known routes with target ``y(m)`` = the cost of the route below
``m`` (sum of ``-log p`` of its reactions under the single-step model). Loss::

    L = mean_m (V(m) - y(m))^2
      + lambda * mean_(m, R) max(0, y(m) + margin - (c(R) + sum_{r in R, r not in stock} V(r)))

The second (consistency) term uses *negative* reactions ``R`` of ``m`` (proposals of the model
that are not on the known route, cost ``c(R) = -log p``): a route through a wrong reaction
should cost at least ``margin`` more than the true one. Building blocks have value 0 and are
left out of the sum.

:meth:`ValueModel.as_value_fn` gives the ``smiles -> float`` callable :class:`RetroStar` takes.
Checkpoints hold plain containers and tensors and load with ``weights_only=True``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.errors import InputError
from selfsup.io import atomic_torch_save, safe_torch_load

from ..core.fingerprints import morgan_fingerprints
from ..core.routes import MIN_PROBABILITY, Route, reaction_cost
from ..core.single_step import SingleStepModel
from ..core.stock import Stock

__all__ = [
    "VALUE_FORMAT",
    "ValueExample",
    "ValueMLP",
    "ValueModel",
    "train_value_network",
    "value_examples_from_routes",
]

VALUE_FORMAT = "selfsup.value_mlp/1"


class ValueMLP(nn.Module):
    """Fingerprint ``(B, fp_dim)`` -> non-negative value ``(B,)`` (softplus output)."""

    def __init__(self, fp_dim: int = 2048, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.fp_dim, self.hidden, self.dropout = int(fp_dim), int(hidden), float(dropout)
        self.body = nn.Sequential(nn.Linear(self.fp_dim, self.hidden), nn.ReLU(),
                                  nn.Dropout(self.dropout))
        self.head = nn.Linear(self.hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.head(self.body(x.float()))).squeeze(-1)  # (B,)

    def config(self) -> dict[str, Any]:
        return {"fp_dim": self.fp_dim, "hidden": self.hidden, "dropout": self.dropout}


@dataclass(frozen=True)
class ValueExample:
    """A molecule, its true route cost, and negative reactions ``(cost, open reactants)``."""

    smiles: str
    cost: float
    negatives: tuple[tuple[float, tuple[str, ...]], ...] = ()


@dataclass
class ValueModel:
    """A trained :class:`ValueMLP` with its fingerprint radius; predicts and saves."""

    net: ValueMLP
    radius: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def fingerprints(self, smiles: Sequence[str]) -> np.ndarray:
        return morgan_fingerprints(list(smiles), self.radius, self.net.fp_dim)

    @torch.no_grad()
    def predict(self, smiles: Sequence[str], batch_size: int = 1024) -> np.ndarray:
        """Values ``(len(smiles),)`` float64 (eval mode)."""
        was = self.net.training
        self.net.eval()
        try:
            fps = self.fingerprints(smiles)
            out = [self.net(torch.as_tensor(fps[s:s + batch_size])).double().numpy()
                   for s in range(0, len(fps), batch_size)]
        finally:
            self.net.train(was)
        return np.concatenate(out) if out else np.zeros(0)

    def as_value_fn(self) -> Callable[[str], float]:
        """``smiles -> V(smiles)`` for :class:`RetroStar` (memoised per molecule)."""
        return _ValueFn(self)

    def save(self, path: str | os.PathLike) -> Path:
        ckpt = {"format": VALUE_FORMAT, "config": {**self.net.config(), "radius": self.radius},
                "state_dict": {k: v.detach().cpu().clone()
                               for k, v in self.net.state_dict().items()},
                "extra": dict(self.extra)}
        return atomic_torch_save(ckpt, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValueModel:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no value-network checkpoint at '{path}': pass a file written by "
                             "ValueModel.save()")
        ckpt = safe_torch_load(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != VALUE_FORMAT:
            raise InputError(f"'{path}' is not a value-network checkpoint ({VALUE_FORMAT})")
        cfg = ckpt["config"]
        net = ValueMLP(int(cfg["fp_dim"]), int(cfg["hidden"]), float(cfg["dropout"]))
        net.load_state_dict(ckpt["state_dict"])
        net.eval()
        return cls(net, int(cfg.get("radius", 2)), dict(ckpt.get("extra", {})))


class _ValueFn:
    """Picklable, memoised value callable."""

    def __init__(self, model: ValueModel) -> None:
        self.model = model
        self.memo: dict[str, float] = {}
        self.__qualname__ = "ValueModel.as_value_fn"

    def __call__(self, smiles: str) -> float:
        v = self.memo.get(smiles)
        if v is None:
            v = self.memo[smiles] = float(self.model.predict([smiles])[0])
        return v


# ----------------------------------------------------------------------------------------------
# Training data
# ----------------------------------------------------------------------------------------------


def value_examples_from_routes(
    routes: Iterable[Route],
    model: SingleStepModel | None = None,
    stock: Stock | None = None,
    *,
    top_k: int = 50,
    n_negatives: int = 5,
    min_probability: float = MIN_PROBABILITY,
) -> list[ValueExample]:
    """``(molecule, route cost)`` examples from every non-leaf molecule of ``routes``.

    With a ``model``, each route reaction costs ``-log p`` where ``p`` is the probability the
    model gives its reactant set among its ``top_k`` proposals (clipped at
    ``min_probability``; absent sets cost ``-log min_probability``), and up to ``n_negatives``
    other proposals become negatives (their reactants minus building blocks). Without a model
    the costs stored in the routes are used and there are no negatives. A molecule seen in
    several routes keeps its cheapest cost. Deterministic (first-seen order).
    """
    best: dict[str, ValueExample] = {}

    def visit(node: Route) -> float:
        if node.step is None:
            return 0.0
        below = sum(visit(r) for r in node.step.reactants)
        negatives: tuple = ()
        if model is None:
            c = node.step.cost
        else:
            reactants = tuple(sorted(r.smiles for r in node.step.reactants))
            props = model.propose([node.smiles], top_k)[0]
            p = next((q.probability for q in props if q.reactants == reactants), 0.0)
            c = reaction_cost(p, min_probability)
            neg = []
            for q in props:
                if q.reactants == reactants or len(neg) >= n_negatives:
                    continue
                open_r = tuple(r for r in q.reactants if stock is None or r not in stock)
                neg.append((reaction_cost(q.probability, min_probability), open_r))
            negatives = tuple(neg)
        total = c + below
        old = best.get(node.smiles)
        if old is None or total < old.cost:
            best[node.smiles] = ValueExample(node.smiles, total, negatives)
        return total

    for route in routes:
        visit(route)
    return list(best.values())


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def train_value_network(
    examples: Sequence[ValueExample],
    *,
    hidden: int = 128,
    dropout: float = 0.1,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_size: int = 128,
    margin: float = 1.0,
    hinge_weight: float = 1.0,
    radius: int = 2,
    fp_dim: int = 2048,
    seed: int = 0,
) -> tuple[ValueModel, list[dict[str, float]]]:
    """Fit a :class:`ValueMLP` to ``examples`` with MSE plus the margin hinge (module doc).

    Adam, shuffled minibatches seeded by ``seed``; stops with an error on a non-finite loss.
    Returns the model (eval mode) and one ``{"epoch", "loss", "mse", "hinge"}`` row per epoch.
    """
    if not examples:
        raise InputError("no value examples: pass (molecule, route cost) pairs from routes")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    names: dict[str, int] = {}
    for ex in examples:
        names.setdefault(ex.smiles, len(names))
        for _, reactants in ex.negatives:
            for r in reactants:
                names.setdefault(r, len(names))
    fps = torch.as_tensor(morgan_fingerprints(list(names), radius, fp_dim))  # (n_mol, fp_dim)
    y = torch.tensor([ex.cost for ex in examples], dtype=torch.float32)       # (n_ex,)
    mol_idx = torch.tensor([names[ex.smiles] for ex in examples])
    # negatives as flat arrays: owner example, reaction cost; reactants with their negative id
    neg_owner, neg_cost, r_mol, r_neg = [], [], [], []
    for i, ex in enumerate(examples):
        for c, reactants in ex.negatives:
            for r in reactants:
                r_mol.append(names[r])
                r_neg.append(len(neg_owner))
            neg_owner.append(i)
            neg_cost.append(c)
    neg_owner_t = torch.tensor(neg_owner, dtype=torch.long)
    neg_cost_t = torch.tensor(neg_cost, dtype=torch.float32)
    r_mol_t = torch.tensor(r_mol, dtype=torch.long)
    r_neg_t = torch.tensor(r_neg, dtype=torch.long)

    net = ValueMLP(fp_dim, hidden, dropout)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(examples), generator=gen)
        sums = {"loss": 0.0, "mse": 0.0, "hinge": 0.0}
        for s in range(0, len(order), batch_size):
            batch = order[s:s + batch_size]
            mse = F.mse_loss(net(fps[mol_idx[batch]]), y[batch])
            hinge = torch.zeros(())
            if len(neg_owner) and hinge_weight > 0:
                in_batch = torch.zeros(len(examples), dtype=torch.bool)
                in_batch[batch] = True
                negs = torch.nonzero(in_batch[neg_owner_t]).squeeze(1)  # (n_neg,)
                if len(negs):
                    remap = torch.full((len(neg_owner),), -1, dtype=torch.long)
                    remap[negs] = torch.arange(len(negs))
                    sel = remap[r_neg_t] >= 0
                    v_r = net(fps[r_mol_t[sel]]) if sel.any() else torch.zeros(0)
                    alt = neg_cost_t[negs].index_add(0, remap[r_neg_t[sel]], v_r)  # (n_neg,)
                    hinge = F.relu(y[neg_owner_t[negs]] + margin - alt).mean()
            loss = mse + hinge_weight * hinge
            if not torch.isfinite(loss):
                raise RuntimeError(f"non-finite value loss at epoch {epoch}: {float(loss)}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = len(batch)
            sums["loss"] += float(loss.detach()) * n
            sums["mse"] += float(mse.detach()) * n
            sums["hinge"] += float(hinge.detach()) * n
        history.append({"epoch": epoch, **{k: v / len(examples) for k, v in sums.items()}})
    net.eval()
    model = ValueModel(net, radius, {"n_examples": len(examples), "epochs": epochs,
                                     "margin": margin, "hinge_weight": hinge_weight})
    return model, history
