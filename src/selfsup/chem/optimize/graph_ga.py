"""Graph GA (Jensen 2019) as a budgeted optimiser: a ZINC start population, then generations
until the oracle budget is spent. Operators live in :mod:`selfsup.chem.genetic`."""

from __future__ import annotations

import numpy as np

from ..genetic import graph_ga
from .base import OptimizationContext, OptimizeConfig, register, sample_pool


@register("graph_ga")
def run_graph_ga(ctx: OptimizationContext, cfg: OptimizeConfig, rng: np.random.Generator) -> None:
    g = cfg.graph_ga
    start = sample_pool(ctx.start_pool, cfg.start_pool_size or g.population_size, rng)
    # generations: enough to spend the budget (each adds at most offspring_size new molecules)
    generations = cfg.budget // max(1, g.offspring_size // 4) + 10
    graph_ga(
        ctx.score, start, generations=generations, rng=rng,
        population_size=g.population_size, offspring_size=g.offspring_size,
        mutation_rate=g.mutation_rate, max_heavy_atoms=g.max_heavy_atoms,
        # the oracle counts the calls: with max_smiles_length it rejects long molecules unpaid
        max_evaluations=None if cfg.max_smiles_length else cfg.budget, n_jobs=cfg.n_jobs,
        stop=lambda: ctx.exhausted,
    )
