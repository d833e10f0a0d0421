"""Held-out route targets that a template model can reach, and the ceiling of a target set
(issue 23, deliverable 3).

The chained route benchmark (:mod:`.route_benchmark`, :mod:`.route_benchmark_ord`) has a low
ceiling: most known routes of its held-out targets contain a step that no template of the
model does. This module builds, from the reactions the model was trained with and the ORD
family split (:mod:`.ord_split`), a target set whose ceiling is known:

- **Reactions.** Train group: USPTO-50k train (split ``train``) and the ORD training group
  (``ord_train``); held-out group: USPTO-50k valid and test and the held-out ORD families
  (``ord``). Known routes are chained within each group by
  :func:`~.route_benchmark.build_route_benchmark` (its leakage rules and checks apply).
- **Stock.** Any object with ``__contains__`` (e.g. :class:`~..core.stock.Stock`, or a
  purchasable-molecule filter), wrapped by :class:`HeldOutFreeStock` so that it holds no
  molecule that a held-out reaction makes: no held-out intermediate or target is ever a
  building block. :func:`leaves_stock` is the default base: the reactants of all reactions that
  no reaction makes (then every known-route leaf is in stock by construction; a general stock
  can leave some out, which the ceiling reports).
- **Targets** (:func:`build_reachable_targets`): held-out targets with a known route of at least
  two steps such that every step is reproduced by some template of the model's vocabulary, by
  behaviour (:class:`~..training.template_identity.TemplateMatcher`: the step's own template by
  string or canonical key, else the model's top-k templates for the product, else a scan), and
  that no single template of the vocabulary turns into in-stock reactants (no route of fewer
  than two steps solves it from the stock: every template whose product pattern matches is
  applied and each outcome checked against the stock).
- **Ceiling** (:func:`known_route_ceiling`): per target, the first step of its known route
  (breadth first from the target) that the model cannot propose, and why:
  ``template_absent`` (no vocabulary template reproduces the step), ``beyond_top50`` (one does,
  but the step's reactants are not among the model's proposals from its top ``top_k``
  templates); else ``leaf_not_in_stock`` when a leaf of the route is not in the stock; else
  ``solvable``. Rows: setting ``ceiling/<target set>``, arm ``known_route``, metrics
  ``solvable_share``, ``template_absent_share``, ``beyond_top50_share``,
  ``leaf_not_in_stock_share``.

Run ``python -m selfsup.chem.retro.workflows.route_benchmark_reachable --model M.pt --out DIR``
(after :mod:`.ord_split`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rdkit import Chem, rdBase

from selfsup.errors import InputError
from selfsup.io import atomic_write_json, atomic_write_text

from ..core.reactions import Reaction, apply_retro_template
from ..core.routes import Route
from ..core.stock import Stock, inchikey
from ..training.template_identity import MatchResult, TemplateMatcher
from .route_benchmark import BenchmarkTarget, DatasetReaction, build_route_benchmark

__all__ = [
    "CEILING_METRICS",
    "HeldOutFreeStock",
    "ReachableTargets",
    "build_reachable_targets",
    "ceiling_rows",
    "dataset_reactions_with_ord",
    "known_route_ceiling",
    "leaves_stock",
    "one_step_solutions",
    "training_targets",
]

TRAIN_SPLITS = ("train", "ord_train")
TEST_SPLITS = ("valid", "test", "ord")
CEILING_STATUSES = ("solvable", "template_absent", "beyond_top50", "leaf_not_in_stock")
CEILING_METRICS = tuple(f"{s}_share" for s in CEILING_STATUSES)


# ----------------------------------------------------------------------------------------------
# Reactions and stock
# ----------------------------------------------------------------------------------------------


def dataset_reactions_with_ord(
    uspto: Sequence[DatasetReaction],
    ord_train: Iterable[Any],
    ord_heldout: Iterable[Any],
) -> list[DatasetReaction]:
    """USPTO-50k reactions followed by the ORD training group (split ``ord_train``) and the
    held-out ORD families (split ``ord``); ORD items have ``.id``, ``.template`` and
    ``.reaction`` (:class:`~.ord_split.OrdReaction`)."""
    out = list(uspto)
    for split, items in (("ord_train", ord_train), ("ord", ord_heldout)):
        for it in items:
            out.append(DatasetReaction(len(out), split, str(it.id), it.reaction.product,
                                       tuple(it.reaction.reactants), it.template))
    return out


def reaction_leaves(reactions: Iterable[DatasetReaction]) -> list[str]:
    """Reactants of ``reactions`` that no reaction of ``reactions`` makes (sorted SMILES)."""
    reactions = list(reactions)
    made = {r.product for r in reactions}
    return sorted({m for r in reactions for m in r.reactants if m not in made})


def leaves_stock(reactions: Iterable[DatasetReaction], name: str = "all-reaction-leaves") -> Stock:
    """Reactants of ``reactions`` that no reaction of ``reactions`` makes."""
    reactions = list(reactions)
    leaves = reaction_leaves(reactions)
    splits = "+".join(sorted({r.split for r in reactions}))
    return Stock.from_smiles(leaves, name=name,
                             source=f"reactants never produced, {len(reactions)} reactions "
                             f"({splits})")


def training_targets(reactions: Iterable[DatasetReaction], stock: Any = None) -> list[str]:
    """The targets self-improvement plans on (issue 23, item 4; the paper plans on all its
    training targets): every product of a training reaction (splits ``train`` and
    ``ord_train``) that no held-out reaction makes and that ``stock`` (if given) does not hold;
    sorted, unique. Products made in both groups are left out so that self-improvement never
    plans a held-out intermediate."""
    reactions = list(reactions)
    held_out = {r.product for r in reactions if r.split in TEST_SPLITS}
    products = {r.product for r in reactions if r.split in TRAIN_SPLITS}
    return sorted(p for p in products - held_out if stock is None or p not in stock)


class HeldOutFreeStock:
    """``base`` without the molecules in ``excluded`` (compared by InChIKey): a stock that holds
    no held-out intermediate. ``base`` is anything with ``__contains__``."""

    def __init__(self, base: Any, excluded: Iterable[str], *, name: str | None = None) -> None:
        if not hasattr(base, "__contains__"):
            raise InputError(f"stock {base!r} has no __contains__: pass a Stock or a set-like "
                             "object of SMILES")
        self.base = base
        self.excluded = sorted(set(excluded))  # as given (written out beside a target set)
        self._excluded = {k for k in map(inchikey, self.excluded) if k is not None}
        self.name = name or f"{getattr(base, 'name', type(base).__name__)}-minus-heldout-products"
        self._memo: dict[str, bool] = {}

    def __contains__(self, smiles: object) -> bool:
        if not isinstance(smiles, str):
            return False
        hit = self._memo.get(smiles)
        if hit is None:
            hit = inchikey(smiles) not in self._excluded and smiles in self.base
            self._memo[smiles] = hit
        return hit

    def describe(self) -> dict:
        base = self.base.describe() if hasattr(self.base, "describe") else {
            "name": getattr(self.base, "name", type(self.base).__name__)}
        return {"name": self.name, "base": base, "n_excluded": len(self._excluded),
                "source": "base stock minus every molecule a held-out reaction makes"}


# ----------------------------------------------------------------------------------------------
# One-step solutions and step reachability
# ----------------------------------------------------------------------------------------------


def one_step_solutions(
    target: str, matcher: TemplateMatcher, stock: Any, *, first: bool = True
) -> list[tuple[int, tuple[str, ...]]]:
    """``(template index, reactants)`` of vocabulary templates that turn ``target`` into
    reactants all in ``stock`` (the first only with ``first``). Only templates whose product
    pattern matches are applied."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(target)
    if mol is None:
        raise InputError(f"RDKit cannot parse target {target!r}")
    out: list[tuple[int, tuple[str, ...]]] = []
    for i, pat in enumerate(matcher._product_patterns()):
        if pat is None or not mol.HasSubstructMatch(pat):
            continue
        try:
            outcomes = apply_retro_template(matcher.templates[i], target)
        except InputError:
            continue
        for reactants in outcomes:
            if all(m in stock for m in reactants):
                out.append((i, reactants))
                if first:
                    return out
    return out


def _steps(route: Route) -> list[Route]:
    """Nodes with a step, breadth first from the root."""
    out, queue = [], [route]
    while queue:
        node = queue.pop(0)
        if node.step is not None:
            out.append(node)
            queue.extend(node.step.reactants)
    return out


class _StepMatcher:
    """Memoised behavioural match of route steps onto the model's vocabulary."""

    def __init__(self, model: Any, matcher: TemplateMatcher, top_k: int, scan: bool) -> None:
        self.model, self.matcher, self.top_k, self.scan = model, matcher, top_k, scan
        self.memo: dict[tuple, MatchResult] = {}
        self.n_applied = 0

    def __call__(self, node: Route) -> MatchResult:
        reactants = tuple(sorted(r.smiles for r in node.step.reactants))
        key = (node.smiles, reactants)
        res = self.memo.get(key)
        if res is None:
            rxn = Reaction(product=node.smiles, reactants=reactants)
            template = node.step.metadata.get("template") or None
            cands: Sequence[int] = ()
            if self.top_k > 0:
                row = self.model.template_scores([node.smiles])[0]
                cands = np.argsort(-row, kind="stable")[: self.top_k]
            res = self.matcher.match(rxn, template, cands, scan=self.scan)
            self.n_applied += res.n_applied
            self.memo[key] = res
        return res


@dataclass
class ReachableTargets:
    """The chosen targets, the stock, per-target facts and the counts report."""

    targets: list[BenchmarkTarget]
    stock: Any
    report: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    candidates: list[BenchmarkTarget] = field(default_factory=list)  # before the filters
    step_matcher: Any = None  # the memoised step matches (reused by known_route_ceiling)
    stock_smiles: list[str] | None = None  # the default base stock's SMILES (to write it out)


def build_reachable_targets(
    reactions: Sequence[DatasetReaction],
    model: Any,
    *,
    stock: Any = None,
    train_splits: Sequence[str] = TRAIN_SPLITS,
    test_splits: Sequence[str] = TEST_SPLITS,
    min_length: int = 2,
    n_targets: int | None = None,
    seed: int = 0,
    top_k: int = 50,
    scan: bool = True,
    progress: Callable[[str], None] | None = None,
) -> ReachableTargets:
    """Held-out targets whose known route is reachable by ``model``'s templates and that no
    single template solves from the stock (module docstring).

    ``model`` has ``templates`` and ``template_scores(products)`` (an
    :class:`~..models.mlp.MLPSingleStepModel`). ``stock`` (default :func:`leaves_stock` of all
    ``reactions``) is wrapped in :class:`HeldOutFreeStock`. ``n_targets`` draws that many
    (seeded, sorted by SMILES) from the eligible targets; ``None`` keeps all.
    """
    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    held_products = {r.product for r in reactions if r.split in test_splits}
    base = stock if stock is not None else leaves_stock(reactions)
    base_smiles = reaction_leaves(reactions) if stock is None else None
    st = HeldOutFreeStock(base, held_products)
    bench = build_route_benchmark(reactions, stock=_Described(st), train_splits=train_splits,
                                  test_splits=test_splits)
    candidates = [t for t in bench.targets["test"] if t.length >= min_length]
    say(f"{len(candidates)} held-out targets with a known route of >= {min_length} steps")
    matcher = TemplateMatcher(model.templates)
    steps = _StepMatcher(model, matcher, top_k, scan)
    counts: Counter = Counter()
    facts: dict[str, dict[str, Any]] = {}
    eligible: list[BenchmarkTarget] = []
    for n, t in enumerate(candidates):
        fact: dict[str, Any] = {"length": t.length, "split": t.split}
        unreached = [node.smiles for node in _steps(t.route) if steps(node).index < 0]
        fact["n_steps_unreached"] = len(unreached)
        if unreached:
            counts["step_not_reachable"] += 1
        else:
            sol = one_step_solutions(t.smiles, matcher, st)
            fact["one_step_solution"] = [sol[0][0], list(sol[0][1])] if sol else None
            if sol:
                counts["one_step_solvable"] += 1
            else:
                counts["eligible"] += 1
                eligible.append(t)
        facts[t.smiles] = fact
        if (n + 1) % 100 == 0:
            say(f"{n + 1}/{len(candidates)} checked: {dict(counts)}")
    chosen = eligible
    if n_targets is not None and n_targets < len(eligible):
        pick = np.sort(np.random.default_rng(seed).choice(len(eligible), n_targets,
                                                          replace=False))
        chosen = [eligible[i] for i in pick]
    how = Counter(r.how for r in steps.memo.values())
    report = {
        "route_benchmark": bench.report,
        "stock": st.describe(),
        "n_candidates": len(candidates),
        "counts": dict(counts),
        "n_eligible": len(eligible),
        "n_targets": len(chosen),
        "seed": int(seed),
        "step_matches": {"n_steps": len(steps.memo), "how": dict(sorted(how.items())),
                         "n_templates_applied": steps.n_applied},
        "lengths": dict(sorted(Counter(str(t.length) for t in chosen).items())),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return ReachableTargets(chosen, st, report, facts, candidates, steps, base_smiles)


class _Described:
    """A stock-like object with ``describe()`` for :func:`build_route_benchmark`."""

    def __init__(self, stock: Any) -> None:
        self.stock = stock

    def __contains__(self, smiles: object) -> bool:
        return smiles in self.stock

    def describe(self) -> dict:
        return self.stock.describe() if hasattr(self.stock, "describe") else {
            "name": type(self.stock).__name__}


# ----------------------------------------------------------------------------------------------
# Ceiling
# ----------------------------------------------------------------------------------------------


def known_route_ceiling(
    targets: Sequence[BenchmarkTarget],
    model: Any,
    stock: Any,
    *,
    top_k: int = 50,
    scan: bool = True,
    step_matcher: Any = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Shares of ``targets`` per status (``CEILING_STATUSES``) and one record per target (see
    the module docstring). ``model`` proposes with ``propose(products, top_k)`` and has
    ``templates`` and ``template_scores``; ``stock`` has ``__contains__``. ``step_matcher``: the
    one of :func:`build_reachable_targets` for the same model and ``top_k`` (its matches are
    reused)."""
    steps = step_matcher if step_matcher is not None else _StepMatcher(
        model, TemplateMatcher(model.templates), top_k, scan)
    records: list[dict[str, Any]] = []
    for t in targets:
        status, where = "solvable", None
        for node in _steps(t.route):
            reactants = tuple(sorted(r.smiles for r in node.step.reactants))
            props = model.propose([node.smiles], top_k)[0]
            if any(p.reactants == reactants for p in props):
                continue
            where = node.smiles
            status = "beyond_top50" if steps(node).index >= 0 else "template_absent"
            break
        missing = [m for m in t.route.leaves() if m not in stock]
        if status == "solvable" and missing:
            status = "leaf_not_in_stock"
        records.append({"smiles": t.smiles, "length": t.length, "status": status,
                        "first_failing_step": where, "leaves_not_in_stock": missing})
    n = max(len(records), 1)
    c = Counter(r["status"] for r in records)
    return {f"{s}_share": c[s] / n for s in CEILING_STATUSES}, records


def ceiling_rows(target_set: str, shares: Mapping[str, float]) -> list[dict[str, Any]]:
    """Result rows (the one results format) of a ceiling: setting ``ceiling/<target_set>``,
    arm ``known_route``, one row per metric (one value: the ceiling has no seed)."""
    return [{"setting": f"ceiling/{target_set}", "arm": "known_route", "metric": m,
             "mean": float(shares[m]), "std": 0.0, "seeds": [float(shares[m])]}
            for m in CEILING_METRICS]


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _write(out: Path, name: str, rt: ReachableTargets) -> None:
    atomic_write_text(out / f"{name}.smi", "".join(t.smiles + "\n" for t in rt.targets))
    atomic_write_json(out / f"{name}_routes.json", [t.to_dict() for t in rt.targets], indent=0)
    atomic_write_json(out / f"{name}_report.json", {**rt.report, "facts": rt.facts})
    if isinstance(rt.stock, HeldOutFreeStock) and rt.stock_smiles is not None:
        # the stock as the planners take it: `--stock stock.smi --stock-exclude
        # stock_exclude.smi` of benchmarks/retro/run_v2.py
        atomic_write_text(out / "stock.smi", "".join(m + "\n" for m in rt.stock_smiles))
        atomic_write_text(out / "stock_exclude.smi",
                          "".join(m + "\n" for m in rt.stock.excluded))


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Build the reachable target set for a model and write it with its ceiling."""
    from selfsup.provenance import provenance

    from ..models.mlp import load_template_model
    from .ord_split import HELD_OUT, TRAIN, default_split_root, load_ord_split
    from .route_benchmark import load_uspto_reactions

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="a saved backward template model (.pt); "
                    "required unless --train-targets")
    ap.add_argument("--split-dir", default=None,
                    help="folder of the ORD split (default <data cache>/derived/ord_split/seed0)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--name", default="reachable", help="target set name")
    ap.add_argument("--n-targets", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--no-scan", action="store_true",
                    help="match route steps by string, key and the model's top-k templates only "
                    "(no scan of the whole vocabulary: faster, may miss reachable steps)")
    ap.add_argument("--stock-file", default=None,
                    help="a SMILES file as base stock (default: leaves of all reactions)")
    ap.add_argument("--train-targets", action="store_true",
                    help="only write OUT/train_targets.smi.gz (the training targets that "
                    "self-improvement plans on, see training_targets) and stop")
    args = ap.parse_args(None if argv is None else list(argv))
    t0 = time.perf_counter()
    if not args.train_targets and (args.model is None or not Path(args.model).is_file()):
        what = ("--model is missing" if args.model is None else
                f"--model {args.model}: no such model file")
        raise InputError(f"{what}; pass a saved template model (the model.pt of `selfsup chem "
                         "train-single-step`)")
    split_dir = Path(args.split_dir) if args.split_dir else default_split_root() / "seed0"
    ord_train, ord_held = load_ord_split(split_dir, TRAIN), load_ord_split(split_dir, HELD_OUT)
    reactions = dataset_reactions_with_ord(load_uspto_reactions(), ord_train, ord_held)
    if args.train_targets:
        import gzip

        from selfsup.io import atomic_write_bytes

        base = Stock.from_file(args.stock_file) if args.stock_file else None
        targets = training_targets(reactions, base)
        path = Path(args.out) / "train_targets.smi.gz"
        atomic_write_bytes(path, gzip.compress("".join(t + "\n" for t in targets).encode(),
                                               mtime=0))
        print(f"{len(targets)} training targets -> {path}")
        return {"n_train_targets": len(targets), "path": str(path)}
    model = load_template_model(args.model)
    stock = Stock.from_file(args.stock_file) if args.stock_file else None
    rt = build_reachable_targets(reactions, model, stock=stock, n_targets=args.n_targets,
                                 seed=args.seed, top_k=args.top_k, scan=not args.no_scan,
                                 progress=lambda m: print(m, flush=True))
    out = Path(args.out)
    _write(out, args.name, rt)
    rows: list[dict[str, Any]] = []
    ceilings: dict[str, dict[str, float]] = {}
    for name, targets in ((args.name, rt.targets), ("heldout-min2steps", rt.candidates)):
        shares, records = known_route_ceiling(targets, model, rt.stock, top_k=args.top_k,
                                              step_matcher=rt.step_matcher)
        atomic_write_json(out / f"{name}_ceiling_targets.json", records, indent=0)
        rows += ceiling_rows(name, shares)
        ceilings[name] = {"n_targets": len(targets), **shares}
    doc = {"benchmark": "retro_ceiling", "mode": "full",
           "command": "python -m selfsup.chem.retro.workflows.route_benchmark_reachable "
           + " ".join(argv if argv is not None else sys.argv[1:]),
           "provenance": provenance(), "wall_seconds": round(time.perf_counter() - t0, 1),
           "model": args.model, "stock": rt.stock.describe(), "report": rt.report,
           "rows": rows}
    atomic_write_json(out / "ceiling.json", doc)
    print(json.dumps({"report": {k: v for k, v in rt.report.items()
                                 if k != "route_benchmark"}, "ceiling": ceilings}, indent=1))
    return doc


if __name__ == "__main__":
    from selfsup.errors import command_main

    raise SystemExit(command_main(main))
