"""Graph GA (Jensen 2019; GuacaMol's and PMO's "Graph GA" baseline): the GA loop and the
budgeted optimiser built on it.

:func:`graph_ga` is the loop, stateless and usable on its own with any scoring function;
:func:`run_graph_ga` (registered as ``graph_ga``) runs it from a ZINC start population until the
oracle budget is spent. Operators and reproduction live in :mod:`selfsup.chem.genetic`.

Stopping rule: the loop runs until its budget is spent: ``stop()`` says so (the optimiser: the
oracle's budget of unique calls is spent) or ``score_fn`` has been called on ``max_evaluations``
unique molecules (for a ``score_fn`` that keeps no budget of its own). Nothing derives a
generation cap from the budget; ``generations`` is an optional cap for callers that want one (the
optimiser passes none). Safeguard: a population whose children are all molecules seen before makes
no progress and would never spend the budget, so the loop also stops after
:data:`MAX_IDLE_GENERATIONS` generations in a row that brought no molecule new to the run
(``GAResult.stopped == "idle"``; ``GAResult.idle_generations`` counts the final run of such
generations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from ...errors import InputError
from ..genetic import OPERATOR_TIME_LIMIT_S, reproduce
from .base import OptimizationContext, OptimizeConfig, register, sample_pool

__all__ = ["MAX_IDLE_GENERATIONS", "Evaluation", "GAResult", "graph_ga", "run_graph_ga"]

#: Generations in a row without a molecule new to the run after which :func:`graph_ga` stops
#: before its budget (the run is stuck: e.g. parents no operator can cut, or a population whose
#: children are all known). Far above any stretch of a run that progresses: the optimiser used to
#: cap a run at ``budget // max(1, offspring_size // 4) + 10`` generations (598 for 10k calls
#: and 70 children), so a run that spent its budget under that cap never had this many idle
#: generations and asks for the same molecules now.
MAX_IDLE_GENERATIONS = 1000


@dataclass(frozen=True)
class Evaluation:
    """One oracle call: canonical SMILES, its score and the generation (0 = initial pool)."""

    smiles: str
    score: float
    generation: int


@dataclass
class GAResult:
    """Every evaluation in call order, the final population (best first) and operator counts.

    ``stopped``: why the loop ended: ``"budget"`` (``max_evaluations`` calls made), ``"stop"``
    (``stop()`` returned True), ``"generations"`` (the optional cap), ``"idle"``
    (:data:`MAX_IDLE_GENERATIONS` generations in a row without a new molecule) or
    ``"empty population"``. ``idle_generations``: generations in a row at the end of the run that
    brought no molecule new to the run.
    """

    evaluations: list[Evaluation]
    population: list[tuple[str, float]]
    generations: int
    n_failed_crossovers: int = 0
    n_failed_mutations: int = 0
    n_timeouts: int = 0
    stopped: str = ""
    idle_generations: int = 0

    def top(self, k: int = 1) -> list[Evaluation]:
        """The k best evaluations (ties in call order)."""
        return sorted(self.evaluations, key=lambda e: -_rank(e.score))[:k]


def _rank(score: float) -> float:
    return score if np.isfinite(score) else -np.inf


def _selection_weights(scores: Sequence[float]) -> np.ndarray:
    """Parent weights proportional to score (GuacaMol's graph GA); shifted when scores < 0."""
    s = np.array([x if np.isfinite(x) else np.nan for x in scores], dtype=float)
    finite = np.isfinite(s)
    if not finite.any():
        return np.ones(len(s))
    low = np.nanmin(s)
    w = np.where(finite, s - min(low, 0.0), 0.0)
    return w if w.sum() > 0 else finite.astype(float)


def graph_ga(
    score_fn: Callable[[list[str]], Sequence[float]],
    initial_population: Sequence[str],
    *,
    rng: np.random.Generator,
    generations: int | None = None,
    population_size: int = 120,
    offspring_size: int = 70,
    mutation_rate: float = 0.067,
    max_heavy_atoms: int | None = None,
    max_evaluations: int | None = None,
    n_jobs: int = 1,
    executor: Executor | None = None,
    stop: Callable[[], bool] | None = None,
    time_limit_s: float | None = OPERATOR_TIME_LIMIT_S,
    max_idle_generations: int = MAX_IDLE_GENERATIONS,
) -> GAResult:
    """Graph GA (Jensen 2019; GuacaMol/PMO baseline defaults 120 / 70 / 0.067), stateless.

    The initial pool is canonicalised (invalid SMILES dropped) and scored; the population is the
    ``population_size`` best unique molecules. Each generation draws ``offspring_size`` children
    from parents weighted by score, scores the ones never seen (``score_fn`` is called only on new
    canonical SMILES, so ``max_evaluations`` counts unique oracle calls) and keeps the best unique
    ``population_size`` of population + children. Non-finite scores rank last.

    The loop runs until its budget is spent (see the module docstring): ``stop``, called before
    each generation, returns True (e.g. an oracle whose own budget is spent, the only budget when
    ``score_fn`` rejects some molecules without paying for them), or ``max_evaluations`` unique
    molecules were scored; ``generations`` optionally caps the number of generations (default:
    none); ``max_idle_generations`` generations in a row without a new molecule end a stuck run.
    At least one of ``stop``, ``max_evaluations`` and ``generations`` must be given.
    ``time_limit_s``: per operator call, see :func:`~selfsup.chem.genetic.reproduce`.
    """
    if population_size < 1 or offspring_size < 1 or (generations is not None and generations < 0):
        raise InputError("population_size and offspring_size must be >= 1, generations >= 0")
    if max_idle_generations < 1:
        raise InputError(f"max_idle_generations must be >= 1, got {max_idle_generations}")
    if stop is None and max_evaluations is None and generations is None:
        raise InputError("graph_ga needs an end: pass stop, max_evaluations or generations")
    known: dict[str, float] = {}
    evaluations: list[Evaluation] = []

    def evaluate(smiles: Sequence[str], generation: int) -> int:
        """Score the molecules never seen; returns how many were new."""
        new = [s for s in dict.fromkeys(smiles) if s not in known]
        if max_evaluations is not None:
            new = new[: max(0, max_evaluations - len(evaluations))]
        if not new:
            return 0
        scores = list(score_fn(new))
        if len(scores) != len(new):
            raise InputError(f"score_fn returned {len(scores)} scores for {len(new)} SMILES")
        for s, v in zip(new, scores):
            known[s] = float(v)
            evaluations.append(Evaluation(s, float(v), generation))
        return len(new)

    def best(smiles: Sequence[str]) -> list[tuple[str, float]]:
        unique = [s for s in dict.fromkeys(smiles) if s in known]
        ranked = sorted(unique, key=lambda s: -_rank(known[s]))
        return [(s, known[s]) for s in ranked[:population_size]]

    start = []
    with BlockLogs():
        for s in initial_population:
            mol = Chem.MolFromSmiles(s)
            if mol is not None and mol.GetNumAtoms() > 0:
                start.append(Chem.MolToSmiles(mol))
    if not start:
        raise InputError("graph_ga needs at least one valid SMILES in initial_population")
    evaluate(start, 0)
    population = best(start)
    n_fx = n_fm = n_to = 0
    generation = idle = 0
    parsed: dict = {}  # the population's parsed graphs, kept from one generation to the next
    while True:
        if not population:
            stopped = "empty population"
        elif max_evaluations is not None and len(evaluations) >= max_evaluations:
            stopped = "budget"
        elif stop is not None and stop():
            stopped = "stop"
        elif generations is not None and generation >= generations:
            stopped = "generations"
        elif idle >= max_idle_generations:
            stopped = "idle"
        else:
            stopped = ""
        if stopped:
            break
        generation += 1
        parents = [s for s, _ in population]
        out = reproduce(
            parents,
            offspring_size,
            rng,
            mutation_rate,
            max_heavy_atoms,
            n_jobs,
            executor,
            parent_weights=_selection_weights([v for _, v in population]),
            time_limit_s=time_limit_s,
            parsed=parsed,
        )
        n_fx += out.n_failed_crossovers
        n_fm += out.n_failed_mutations
        n_to += out.n_timeouts
        idle = 0 if evaluate(out.children, generation) else idle + 1
        population = best(parents + out.children)
        parsed = {s: parsed[s] for s, _ in population if s in parsed}
    return GAResult(evaluations, population, generation, n_fx, n_fm, n_to, stopped, idle)


@register("graph_ga")
def run_graph_ga(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator) -> None:
    """Graph GA from ``start_pool_size`` (default: the population size) start-pool molecules,
    generations until the oracle's budget of unique calls is spent (or the run is stuck, see
    :data:`MAX_IDLE_GENERATIONS`; ``ctx.stop_reason`` then says so)."""
    g = cfg.graph_ga
    start = sample_pool(ctx.start_pool, cfg.start_pool_size or g.population_size, rng)
    # The oracle counts the calls (it also rejects molecules over its length limit unpaid, and
    # answers molecules past its budget with nan), so its budget alone ends the run.
    result = graph_ga(
        ctx.score, start, rng=rng,
        population_size=g.population_size, offspring_size=g.offspring_size,
        mutation_rate=g.mutation_rate, max_heavy_atoms=g.max_heavy_atoms, n_jobs=cfg.n_jobs,
        stop=lambda: ctx.exhausted,
    )
    if result.stopped == "idle":
        ctx.stop_reason = f"no new molecule in {result.idle_generations} generations"
