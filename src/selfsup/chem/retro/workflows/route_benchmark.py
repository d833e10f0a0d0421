"""A multi-step route benchmark built from USPTO-50k by chaining its reactions.

No Retro* route set (USPTO-190, PaRoutes) and no building-block catalogue is reachable here
(``shared/DATA.md``), so the benchmark is derived from the single-step data itself:

- **Stock** (default): the reactants of all reactions of all splits that never occur as the
  product of any reaction (:func:`default_stock`, the USPTO-derived stand-in for eMolecules).
- **Reaction groups.** The *train* group holds the train-split reactions. The *held-out* group
  holds the reactions of ``test_splits`` (default valid + test: neither is trained on) whose key
  ``(product, set of reactants)`` does **not** occur in the train split (USPTO-50k repeats a few
  reactions across splits).
- **Known route.** Within one group, a molecule is *makeable* if it is in stock, or if some
  reaction of that group makes it from makeable reactants. Its known route is the tree with the
  fewest reactions (ties: smaller depth, then the reaction that comes first in dataset order),
  computed as the least fixed point of ``n(m) = 0`` (stock), ``n(m) = min_R 1 + sum n(r)``.
  Along a chosen tree ``n`` strictly decreases, so the tree is acyclic.
- **Targets.** A train target is a product of a train reaction with a known train-group route;
  a held-out target is a product of a held-out reaction with a known held-out-group route that
  is **not** the product of any train reaction (so no train reaction makes a test target) and
  is not in stock. A target is labelled by the split of its route's root reaction.

Leakage guarantee: a held-out route only uses reactions that do not occur in the train split,
and a held-out target is never a train product, so self-improvement (which plans on train
targets and fine-tunes on what it finds) and the single-step model (trained on the train split)
never see a held-out route's reactions as data. Intermediates of held-out routes may still be
products of train reactions (the model may know another way to make them); that is allowed.

Everything is deterministic: targets are sorted by SMILES within each split.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfsup.errors import InputError
from selfsup.io import atomic_write_json, atomic_write_text

from ..core.reactions import Reaction
from ..core.routes import Route, RouteStep
from ..core.stock import Stock, stock_from_reactions

__all__ = [
    "BenchmarkTarget",
    "DatasetReaction",
    "RouteBenchmark",
    "build_route_benchmark",
    "default_stock",
    "known_routes",
    "load_route_benchmark",
    "load_targets",
    "load_uspto_reactions",
    "reactions_from_smiles",
    "reactions_from_template_data",
    "write_route_benchmark",
]

TRAIN = "train"
HELD_OUT = "test"


@dataclass(frozen=True)
class DatasetReaction:
    """One dataset reaction: position in the dataset, split, id, canonical product/reactants."""

    index: int
    split: str
    id: str
    product: str
    reactants: tuple[str, ...]
    template: str = ""

    @property
    def key(self) -> tuple[str, frozenset[str]]:
        return self.product, frozenset(self.reactants)


@dataclass
class BenchmarkTarget:
    """A target molecule, the group it belongs to (train / test), its root split and route."""

    smiles: str
    group: str
    split: str
    route: Route

    @property
    def length(self) -> int:
        return self.route.length

    @property
    def depth(self) -> int:
        return self.route.depth

    def to_dict(self) -> dict[str, Any]:
        return {"smiles": self.smiles, "group": self.group, "split": self.split,
                "length": self.length, "depth": self.depth, "route": self.route.to_dict()}


@dataclass
class RouteBenchmark:
    """``targets[group]`` (``'train'``, ``'test'``), the stock used and the counts report."""

    targets: dict[str, list[BenchmarkTarget]]
    stock: Stock
    report: dict[str, Any] = field(default_factory=dict)

    def smiles(self, group: str, min_length: int = 1) -> list[str]:
        return [t.smiles for t in self.targets[group] if t.length >= min_length]


# ----------------------------------------------------------------------------------------------
# Reactions
# ----------------------------------------------------------------------------------------------


def reactions_from_smiles(rows: Mapping[str, Sequence[str]]) -> list[DatasetReaction]:
    """``{split: [reaction SMILES (maps allowed), ...]}`` -> dataset reactions (bad ones raise)."""
    out: list[DatasetReaction] = []
    for split, texts in rows.items():
        for j, text in enumerate(texts):
            rxn = Reaction.from_smiles(text)
            out.append(DatasetReaction(len(out), split, f"{split}-{j}", rxn.product,
                                       rxn.reactants))
    return out


def load_uspto_reactions(
    root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None
) -> list[DatasetReaction]:
    """Every USPTO-50k reaction (train, valid, test, in file order) from the prepared cache.

    Uses :func:`~selfsup.chem.retro.training.templates_data.prepare_uspto50k` (canonical SMILES
    and the recorded templates); ``root=None`` fetches the dataset.
    """
    from ..training.templates_data import prepare_uspto50k

    data, _ = prepare_uspto50k(root, cache_dir)
    return reactions_from_template_data(data)


def reactions_from_template_data(data: Any) -> list[DatasetReaction]:
    """Dataset reactions of a prepared
    :class:`~selfsup.chem.retro.training.templates_data.TemplateData` (splits train, valid, test in
    that order)."""
    out: list[DatasetReaction] = []
    for split in ("train", "valid", "test"):
        if split not in data.splits:
            continue
        s = data[split]
        for i in range(len(s)):
            out.append(DatasetReaction(len(out), split, str(s.ids[i]), s.products[i],
                                       tuple(s.reactants[i]), s.templates[i]))
    return out


def default_stock(reactions: Iterable[DatasetReaction], name: str = "uspto50k-leaves") -> Stock:
    """Reactants of all ``reactions`` that never occur as a product (the default stock)."""
    reactions = list(reactions)
    rxns = [Reaction(product=r.product, reactants=r.reactants) for r in reactions]
    splits = sorted({r.split for r in reactions})
    return stock_from_reactions(rxns, name=name, source=f"USPTO-50k {'+'.join(splits)}")


# ----------------------------------------------------------------------------------------------
# Known routes
# ----------------------------------------------------------------------------------------------


def known_routes(
    reactions: Sequence[DatasetReaction], in_stock: Callable[[str], bool] | Stock
) -> dict[str, DatasetReaction]:
    """Best reaction of every makeable non-stock product (fewest reactions, then depth).

    Least fixed point of ``n(m) = 0`` for stock molecules and ``n(m) = min_R 1 + sum n(r)``
    over ``reactions`` (relaxed in dataset order until nothing changes).
    """
    memo: dict[str, bool] = {}
    check = in_stock.__contains__ if isinstance(in_stock, Stock) else in_stock

    def stock(m: str) -> bool:
        hit = memo.get(m)
        if hit is None:
            hit = memo[m] = bool(check(m))
        return hit

    cost: dict[str, tuple[int, int]] = {}
    best: dict[str, DatasetReaction] = {}
    inf = (math.inf, math.inf)
    changed = True
    while changed:
        changed = False
        for r in reactions:
            if stock(r.product):
                continue
            n_sum, d_max = 1, 1
            ok = True
            for m in r.reactants:
                if stock(m):
                    continue
                c = cost.get(m)
                if c is None:
                    ok = False
                    break
                n_sum += c[0]
                d_max = max(d_max, 1 + c[1])
            if ok and (n_sum, d_max) < cost.get(r.product, inf):
                cost[r.product] = (n_sum, d_max)
                best[r.product] = r
                changed = True
    return best


def _route(smiles: str, best: Mapping[str, DatasetReaction], stock_fn) -> Route:
    r = best.get(smiles)
    if r is None:
        return Route(smiles, in_stock=bool(stock_fn(smiles)))
    step = RouteStep(
        reactants=[_route(m, best, stock_fn) for m in r.reactants],
        probability=1.0,
        cost=0.0,
        metadata={"reaction_index": r.index, "reaction_id": r.id, "split": r.split,
                  **({"template": r.template} if r.template else {})},
    )
    return Route(smiles, in_stock=False, step=step)


def _reactions_of(route: Route) -> Iterable[int]:
    if route.step is None:
        return
    yield int(route.step.metadata["reaction_index"])
    for r in route.step.reactants:
        yield from _reactions_of(r)


def build_route_benchmark(
    reactions: Sequence[DatasetReaction],
    *,
    stock: Stock | None = None,
    train_splits: Sequence[str] = ("train",),
    test_splits: Sequence[str] = ("valid", "test"),
) -> RouteBenchmark:
    """Train and held-out targets with their known routes (see the module docstring)."""
    if not reactions:
        raise InputError("no reactions: pass the dataset reactions of every split")
    if set(train_splits) & set(test_splits):
        raise InputError(f"train_splits {train_splits} and test_splits {test_splits} overlap")
    stock = stock if stock is not None else default_stock(reactions)
    memo: dict[str, bool] = {}

    def in_stock(m: str) -> bool:
        hit = memo.get(m)
        if hit is None:
            hit = memo[m] = m in stock
        return hit

    train_rxns = [r for r in reactions if r.split in train_splits]
    train_keys = {r.key for r in train_rxns}
    train_products = {r.product for r in train_rxns}
    test_all = [r for r in reactions if r.split in test_splits]
    test_rxns = [r for r in test_all if r.key not in train_keys]

    groups = {TRAIN: train_rxns, HELD_OUT: test_rxns}
    targets: dict[str, list[BenchmarkTarget]] = {}
    excluded: dict[str, Counter] = {}
    for group, rxns in groups.items():
        best = known_routes(rxns, in_stock)
        out: list[BenchmarkTarget] = []
        skip: Counter = Counter()
        for product in sorted({r.product for r in rxns}):
            if in_stock(product):
                skip["in_stock"] += 1
            elif product not in best:
                skip["no_known_route"] += 1
            elif group == HELD_OUT and product in train_products:
                skip["train_product"] += 1
            else:
                route = _route(product, best, in_stock)
                out.append(BenchmarkTarget(product, group, best[product].split, route))
        targets[group] = out
        excluded[group] = skip
    # The guarantee, checked rather than assumed.
    by_index = {r.index: r for r in reactions}
    for t in targets[HELD_OUT]:
        for i in _reactions_of(t.route):
            r = by_index[i]
            if r.split not in test_splits or r.key in train_keys:
                raise AssertionError(f"held-out route of {t.smiles} uses train reaction {r.id}")
    report = {
        "stock": stock.describe(),
        "train_splits": list(train_splits),
        "test_splits": list(test_splits),
        "n_reactions": {s: n for s, n in sorted(Counter(r.split for r in reactions).items())},
        "n_test_reactions_also_in_train": len(test_all) - len(test_rxns),
        "groups": {g: _describe(targets[g], excluded[g]) for g in targets},
    }
    return RouteBenchmark(targets=targets, stock=stock, report=report)


def _describe(targets: Sequence[BenchmarkTarget], excluded: Counter) -> dict[str, Any]:
    lengths = Counter(t.length for t in targets)
    depths = Counter(t.depth for t in targets)
    return {
        "n_targets": len(targets),
        "n_multistep": sum(t.length >= 2 for t in targets),
        "by_split": dict(sorted(Counter(t.split for t in targets).items())),
        "multistep_by_split": dict(sorted(Counter(t.split for t in targets
                                                  if t.length >= 2).items())),
        "length_distribution": {str(k): lengths[k] for k in sorted(lengths)},
        "depth_distribution": {str(k): depths[k] for k in sorted(depths)},
        "excluded_products": dict(sorted(excluded.items())),
    }


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def write_route_benchmark(bench: RouteBenchmark, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``targets_{group}.smi``, ``targets_{group}_multistep.smi`` (length >= 2),
    ``routes_{group}.json`` (known routes) and ``report.json`` into ``out_dir``."""
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for group, targets in bench.targets.items():
        paths[f"targets_{group}"] = atomic_write_text(
            out / f"targets_{group}.smi", "".join(t.smiles + "\n" for t in targets))
        paths[f"targets_{group}_multistep"] = atomic_write_text(
            out / f"targets_{group}_multistep.smi",
            "".join(t.smiles + "\n" for t in targets if t.length >= 2))
        paths[f"routes_{group}"] = atomic_write_json(
            out / f"routes_{group}.json", [t.to_dict() for t in targets], indent=0)
    paths["report"] = atomic_write_json(out / "report.json", bench.report)
    return paths


def load_route_benchmark(path: str | os.PathLike, group: str) -> list[BenchmarkTarget]:
    """Targets and known routes of ``group`` from a folder written by
    :func:`write_route_benchmark`."""
    p = Path(path) / f"routes_{group}.json"
    if not p.is_file():
        raise InputError(f"no {p}: build the benchmark with write_route_benchmark() first")
    rows = json.loads(p.read_text())
    return [BenchmarkTarget(d["smiles"], d["group"], d["split"], Route.from_dict(d["route"]))
            for d in rows]


def load_targets(path: str | os.PathLike) -> tuple[list[str], int]:
    """Target SMILES from a file (one per line, first token; ``#`` comments and blank lines
    ignored; ``.gz`` read transparently). Returns ``(canonical SMILES, number of unparsable
    lines skipped)``."""
    from selfsup.chem.molecules import canonical_smiles

    p = Path(path)
    if not p.is_file():
        raise InputError(f"targets file {str(p)!r} does not exist: pass a file of SMILES, "
                         "one per line")
    out: list[str] = []
    bad = 0
    raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    for line in raw.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        smi = canonical_smiles(line.split()[0], remove_atom_map=True)
        if smi is None:
            bad += 1
        else:
            out.append(smi)
    return out, bad
