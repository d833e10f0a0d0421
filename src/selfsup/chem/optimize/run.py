"""Running an optimiser: ``optimize`` starts a run, ``resume`` replays a killed one.

Importing this module registers every optimiser (it imports their modules); :mod:`.base` holds
the shared loop parts and the registry without knowing the optimisers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import ConfigError
from ...progress import Progress
from ...runs import Run, resume_run, start_run
from ..oracles import Oracle
from . import gegl, graph_ga, lstm_hc, reinvent  # noqa: F401  (registers the optimisers)
from .base import (
    OPTIMIZERS,
    STATE_FILE,
    OptimizationContext,
    OptimizeConfig,
    _write_outputs,
    load_start_pool,
)


def _run(run: Run, cfg: OptimizeConfig, resumed: bool) -> dict[str, Any]:
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(
            f"Unknown optimizer '{cfg.optimizer}'. Valid: {', '.join(sorted(OPTIMIZERS))}"
        )
    record = run.path / "oracle_calls.csv"
    if resumed and record.is_file():
        oracle = Oracle.from_record(cfg.objective, record, budget=cfg.budget,
                                    keep_stereo=cfg.keep_stereo,
                                    max_length=cfg.max_smiles_length)
    else:
        oracle = Oracle(cfg.objective, budget=cfg.budget, keep_stereo=cfg.keep_stereo,
                        max_length=cfg.max_smiles_length)
    pool = load_start_pool(cfg)
    # The rows logged up to the saved call record are the run's history and stay; those logged
    # after it are dropped, and the replay logs them again as it passes the same call counts.
    run.trim_metrics(oracle.n_calls if resumed else -1)
    ctx = OptimizationContext(oracle, pool, run, cfg.checkpoint_every,
                              state_every_seconds=cfg.state_every_seconds)
    ctx._last_logged = oracle.n_calls
    rng = np.random.default_rng(cfg.seed)
    log = run.logger()
    log.info("optimizer %s objective %s budget %d pool %d (resumed from %d calls)",
             cfg.optimizer, cfg.objective, cfg.budget, len(pool), oracle.n_calls)
    ctx.progress = Progress(cfg.budget, f"optimize {cfg.objective}", "calls")
    with ctx.progress:
        OPTIMIZERS[cfg.optimizer](ctx, cfg, rng)
    results = _write_outputs(run, ctx, cfg)
    results["stopped"] = "budget" if oracle.exhausted else (ctx.stop_reason or "optimizer finished")
    run.finish(results)
    (run.path / STATE_FILE).unlink(missing_ok=True)  # a finished run is not resumed
    return results


def _check(cfg: OptimizeConfig) -> None:
    if cfg.budget <= 0:
        raise ConfigError(f"budget must be positive, got {cfg.budget}")
    if cfg.state_every_seconds is not None and not cfg.state_every_seconds >= 0:
        raise ConfigError(f"state_every_seconds must be >= 0 (0: every round) or null (no "
                          f"snapshots), got {cfg.state_every_seconds}")
    from ..objectives import get_objective

    get_objective(cfg.objective)  # fail early on an unknown objective, listing valid names


def _check_record(run: Run, cfg: OptimizeConfig) -> None:
    record = run.path / "oracle_calls.csv"
    if record.is_file():
        from ..oracles import load_record

        load_record(record)  # a damaged record fails here, before the run is touched


def optimize(config_path: str | None, overrides: Sequence[str]) -> tuple[Run, dict[str, Any]]:
    return start_run("chem.optimize", OptimizeConfig, config_path, overrides,
                     lambda run, cfg: _run(run, cfg, resumed=False), check=_check)


def resume(run_path: str | os.PathLike) -> tuple[Run, dict[str, Any]]:
    """Go on with a killed run by replaying it from its call record. A finished run, a run of
    another command or a damaged config or record: nothing in the run changes."""
    return resume_run("chem.optimize", OptimizeConfig, run_path,
                      lambda run, cfg, _: _run(run, cfg, resumed=True), check=_check_record)
