"""A GuacaMol ``GoalDirectedGenerator`` made of any registered selfsup optimiser.

GuacaMol's goal-directed benchmarks call
``generator.generate_optimized_molecules(scoring_function, number_molecules,
starting_population)`` and score the returned list. This wrapper runs a selfsup optimiser
(``gegl``, ``graph_ga``, ``lstm_hc``, ``reinvent``, ...) against the scoring function under a
budget of unique oracle calls and returns the ``number_molecules`` best molecules it scored.

GuacaMol is not imported (duck typing): the scoring function needs ``score_list(smiles_list)``
(used when present: one batched call) or ``score(smiles)``, or may be a plain callable. It is
wrapped as a :class:`~selfsup.chem.objectives.adapters.FunctionObjective` inside a budgeted, caching
:class:`~selfsup.chem.oracles.Oracle` (a fresh one per call, so each task gets the full budget).
Nothing is written to disk.

Example::

    gen = SelfsupGoalDirectedGenerator("gegl", prior="runs/RUN/model.pt", budget=10000, seed=0,
                                       gegl={"n_apprentice": 512})
    smiles = gen.generate_optimized_molecules(scoring_function, 100)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...config import load_config
from ...errors import ConfigError, InputError
from ..objectives.adapters import FunctionObjective
from ..oracles import Oracle
from .base import OPTIMIZERS, OptimizationContext, OptimizeConfig, load_start_pool

__all__ = ["SelfsupGoalDirectedGenerator", "as_function_objective"]


def as_function_objective(scoring_function: Any, name: str = "guacamol") -> FunctionObjective:
    """A selfsup objective from a GuacaMol-like scoring function (``score_list``/``score``) or a
    callable ``f(smiles) -> float``."""
    if callable(getattr(scoring_function, "score_list", None)):
        return FunctionObjective(scoring_function.score_list, name=name, batch=True)
    if callable(getattr(scoring_function, "score", None)):
        return FunctionObjective(scoring_function.score, name=name)
    if callable(scoring_function):
        return FunctionObjective(scoring_function, name=name)
    raise InputError(
        f"cannot score with a {type(scoring_function).__name__}: pass an object with "
        "score_list(smiles_list) or score(smiles) (a GuacaMol ScoringFunction) or a callable"
    )


def _overrides(prefix: str, value: Any) -> list[str]:
    """``key=value`` strings for load_config from keyword arguments (dicts become sections)."""
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _overrides(f"{prefix}.{k}", v)]
    return [f"{prefix}={json.dumps(value)}"]  # JSON scalars are YAML scalars


class SelfsupGoalDirectedGenerator:
    """GuacaMol ``GoalDirectedGenerator`` interface over a selfsup optimiser.

    Args:
        optimizer: a registered optimiser name (``gegl``, ``gegl_no_expert``, ``lstm_hc``,
            ``reinvent``, ``graph_ga``, ``prior_only``, ...).
        prior: ``model.pt`` of a pretrained SMILES LSTM (the apprentice methods need one).
        budget: unique oracle calls per task (PMO: 10000).
        seed: seed of the optimiser's random generator.
        **config: any other :class:`OptimizeConfig` field, sections as dicts
            (``gegl={"n_apprentice": 512}``, ``start_pool="zinc250k"``).
    """

    def __init__(self, optimizer: str, prior: str | None = None, budget: int = 10000,
                 seed: int = 0, **config: Any) -> None:
        from . import gegl, graph_ga, lstm_hc, reinvent  # noqa: F401  (registers the optimisers)

        if optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"Unknown optimizer '{optimizer}'. Valid: {', '.join(sorted(OPTIMIZERS))}"
            )
        if budget < 1:
            raise ConfigError(f"budget must be positive, got {budget}")
        items = {"optimizer": optimizer, "prior": prior, "budget": budget, "seed": seed, **config}
        overrides = [o for k, v in items.items() for o in _overrides(k, v)]
        self.config: OptimizeConfig = load_config(OptimizeConfig, None, overrides)
        self.last_oracle: Oracle | None = None  # the oracle of the latest task (for inspection)

    def generate_optimized_molecules(
        self,
        scoring_function: Any,
        number_molecules: int,
        starting_population: Sequence[str] | None = None,
    ) -> list[str]:
        """The ``number_molecules`` best molecules (canonical SMILES, best first) the optimiser
        found for ``scoring_function`` within the budget.

        ``starting_population`` becomes the start pool (graph GA's first population; the
        apprentice methods use it only with ``start_pool_size``); without it the configured
        ``start_pool`` is loaded when the optimiser needs one. If the run ends with fewer unique
        molecules than asked (a stuck generator), the ranked list is repeated to fill the count.
        """
        cfg = self.config
        if number_molecules < 1:
            raise InputError(f"number_molecules must be >= 1, got {number_molecules}")
        if number_molecules > cfg.budget:
            raise ConfigError(
                f"number_molecules={number_molecules} exceeds the budget of {cfg.budget} unique "
                "oracle calls; raise budget"
            )
        if starting_population is not None:
            pool = list(starting_population)
        elif cfg.optimizer == "graph_ga" or cfg.start_pool_size:
            pool = load_start_pool(cfg)
        else:
            pool = []
        oracle = Oracle(as_function_objective(scoring_function), budget=cfg.budget,
                        keep_stereo=cfg.keep_stereo, max_length=cfg.max_smiles_length)
        self.last_oracle = oracle
        ctx = OptimizationContext(oracle, pool, None, cfg.checkpoint_every)
        run: Callable = OPTIMIZERS[cfg.optimizer]
        run(ctx, cfg, np.random.default_rng(cfg.seed))
        ranked = [r.smiles for r in oracle.top(number_molecules)]
        if not ranked:
            raise InputError(f"optimizer '{cfg.optimizer}' scored no valid molecule")
        return [ranked[i % len(ranked)] for i in range(number_molecules)]
