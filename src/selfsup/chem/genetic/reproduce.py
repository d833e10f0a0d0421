"""Reproduction of a population with the graph GA operators, over a process pool.

:func:`reproduce` makes children by crossover of parent pairs (drawn uniformly or by weight),
then mutation (the operators of :mod:`.operators`, each child slot under their time guard). It is
one generation of the graph GA loop (:mod:`selfsup.chem.optimize.graph_ga`) and GEGL's genetic
expert (:mod:`selfsup.chem.optimize.gegl`).

Difference from the reference code, on purpose: reproduction runs over processes with seeds drawn
from the caller's ``numpy.random.Generator``, so results depend only on the seed and ``n_jobs``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from rdkit.rdBase import BlockLogs

from selfsup.errors import InputError

from .operators import (
    MUTATION_KINDS,
    OPERATOR_TIME_LIMIT_S,
    _crossover,
    _GaveUp,
    _Graph,
    _mutate,
    _parse_or_raise,
    _prepare,
    _time_guard,
)

__all__ = ["ReproductionResult", "reproduce"]

_PAIR_TRIES = 5  # parent pairs tried per child slot in ``reproduce``


@dataclass
class ReproductionResult:
    """Children (canonical SMILES, at most ``n_children``) of one ``reproduce`` call.

    ``n_failed_crossovers``: parent pairs that gave no child after all crossover tries (a slot
    draws up to 5 pairs, so ``len(children) < n_children`` only when all 5 fail);
    ``n_mutations``: children chosen for mutation; ``n_failed_mutations``: of those, the ones
    kept unmutated because every mutation kind failed or the mutation gave up;
    ``n_timeouts``: operator calls that ran past ``time_limit_s`` (a child slot whose crossover
    gave up makes no child; a mutation that gave up keeps its child unmutated).
    """

    children: list[str]
    n_failed_crossovers: int = 0
    n_mutations: int = 0
    n_failed_mutations: int = 0
    seconds: float = 0.0
    n_timeouts: int = 0


def _breed(
    parents: Sequence[str],
    weights: np.ndarray | None,
    n: int,
    seed: int,
    mutation_rate: float,
    max_heavy: int | None,
    time_limit_s: float | None = OPERATOR_TIME_LIMIT_S,
    graphs: dict[int, _Graph] | None = None,
) -> ReproductionResult:
    """One worker's share: ``n`` child slots with its own generator (module level: picklable)."""
    rng = np.random.default_rng(seed)
    graphs = {} if graphs is None else graphs
    out = ReproductionResult([])
    with BlockLogs():
        for _ in range(n):
            child = None
            try:
                with _time_guard(time_limit_s):
                    for _ in range(_PAIR_TRIES):
                        a, b = (int(x) for x in rng.choice(len(parents), size=2, p=weights))
                        for idx in (a, b):
                            if idx not in graphs:
                                graphs[idx] = _parse_or_raise(parents[idx])
                        child = _crossover(graphs[a], graphs[b], rng, max_heavy, 10, None)
                        if child is not None:
                            break
                        out.n_failed_crossovers += 1
            except _GaveUp:
                out.n_timeouts += 1
                continue
            if child is None:
                continue
            smiles = child[0]
            if rng.random() < mutation_rate:
                out.n_mutations += 1
                try:
                    with _time_guard(time_limit_s):
                        mutated = _mutate(_prepare(child[1]), rng, max_heavy,
                                          list(MUTATION_KINDS))
                except _GaveUp:
                    out.n_timeouts += 1
                    mutated = None
                if mutated is None:
                    out.n_failed_mutations += 1
                else:
                    smiles = mutated[0]
            out.children.append(smiles)
    return out


def reproduce(
    parents: list[str],
    n_children: int,
    rng: np.random.Generator,
    mutation_rate: float = 0.01,
    max_heavy_atoms: int | None = None,
    n_jobs: int = 1,
    executor: Executor | None = None,
    *,
    parent_weights: Sequence[float] | None = None,
    time_limit_s: float | None = OPERATOR_TIME_LIMIT_S,
    parsed: dict[str, _Graph] | None = None,
) -> ReproductionResult:
    """Make children by crossover of parent pairs, then mutation with ``mutation_rate``.

    Pairs are drawn with replacement, uniformly or proportionally to ``parent_weights`` (>= 0).
    The work is split into ``n_jobs`` shares, each with a seed drawn from ``rng``; shares run on
    ``executor`` if given, else on a new ProcessPoolExecutor when ``n_jobs > 1``, else inline. The
    children depend only on the state of ``rng`` and on ``n_jobs``. ``max_heavy_atoms``: optional
    size cap on children (default none). ``time_limit_s``: seconds a child slot's crossover, or
    its mutation, may take before it gives up (counted in ``n_timeouts``; None: no limit). Every
    parent must parse (InputError otherwise). ``parsed``: parsed parents by SMILES, kept by the
    caller from one call to the next (the graph GA's population changes by a few molecules per
    generation): parents found there are not parsed again, new ones are added. A parse depends
    on the SMILES alone, so the children are the same with or without it.
    """
    start = time.perf_counter()
    if not parents:
        raise InputError("reproduce needs at least one parent SMILES; got an empty list")
    if n_jobs < 1:
        raise InputError(f"n_jobs must be >= 1, got {n_jobs}")
    weights = None
    if parent_weights is not None:
        weights = np.asarray(parent_weights, dtype=float)
        if weights.shape != (len(parents),) or not np.all(np.isfinite(weights)):
            raise InputError("parent_weights must be finite, one per parent")
        if np.any(weights < 0) or weights.sum() <= 0:
            raise InputError("parent_weights must be >= 0 with a positive sum")
        weights = weights / weights.sum()
    graphs = {}
    for i, s in enumerate(parents):  # fail fast on a bad parent, and reuse the parse inline
        graph = None if parsed is None else parsed.get(s)
        if graph is None:
            graph = _parse_or_raise(s)
            if parsed is not None:
                parsed[s] = graph
        graphs[i] = graph
    seeds = [int(s) for s in rng.integers(0, 2**63 - 1, size=n_jobs)]
    shares = [n_children // n_jobs + (j < n_children % n_jobs) for j in range(n_jobs)]
    if time_limit_s is not None and not time_limit_s > 0:
        raise InputError(f"time_limit_s must be positive or None, got {time_limit_s!r}")
    args = [(parents, weights, n, s, mutation_rate, max_heavy_atoms, time_limit_s)
            for n, s in zip(shares, seeds)]
    if executor is None and n_jobs == 1:
        parts = [_breed(*args[0], graphs=graphs)]
    elif executor is not None:
        parts = [f.result() for f in [executor.submit(_breed, *a) for a in args]]
    else:
        with ProcessPoolExecutor(max_workers=n_jobs) as pool:
            parts = [f.result() for f in [pool.submit(_breed, *a) for a in args]]
    out = ReproductionResult([])
    for part in parts:
        out.children += part.children
        out.n_failed_crossovers += part.n_failed_crossovers
        out.n_mutations += part.n_mutations
        out.n_failed_mutations += part.n_failed_mutations
        out.n_timeouts += part.n_timeouts
    out.seconds = time.perf_counter() - start
    return out
