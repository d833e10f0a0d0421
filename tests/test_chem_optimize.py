"""The shared optimisation loop with graph GA: outputs, budget, determinism, kill + resume."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfsup.chem.optimize import optimize
from selfsup.errors import ConfigError, InputError

POOL = [
    "CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CCN(CC)CC",
    "OC(=O)CCc1ccccc1", "Cc1ccc(N)cc1", "CCOC(=O)c1ccccc1", "O=C(O)c1ccncc1",
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1", "not_a_smiles",
]


@pytest.fixture
def pool_file(tmp_path):
    p = tmp_path / "pool.smi"
    p.write_text("\n".join(POOL) + "\n")
    return p


def _args(pool_file, tmp_path, budget=150, **extra):
    args = [f"start_pool={pool_file}", "objective=qed", f"budget={budget}",
            "graph_ga.population_size=10", "graph_ga.offspring_size=20",
            f"run_root={tmp_path / 'runs'}", "checkpoint_every=50"]
    return args + [f"{k}={v}" for k, v in extra.items()]


def test_graph_ga_run_writes_outputs_and_respects_budget(pool_file, tmp_path):
    run, res = optimize(None, _args(pool_file, tmp_path))
    assert res["n_calls"] == 150 and res["stopped"] == "budget"
    rows = list(csv.DictReader(open(run.path / "oracle_calls.csv")))
    assert len(rows) == 150
    assert len({r["smiles"] for r in rows}) == 150  # unique canonical molecules only
    mols = list(csv.DictReader(open(run.path / "artefacts" / "molecules.csv")))
    scores = [float(r["score"]) for r in mols]
    assert scores == sorted(scores, reverse=True)
    assert res["top1"] == pytest.approx(scores[0], abs=1e-5)
    for f in ("learning_curve.png", "top_molecules.png"):
        assert (run.path / "artefacts" / f).stat().st_size > 1000
    # the GA improves QED over the start pool
    from selfsup.chem.objectives import get_objective

    qed = get_objective("qed")
    assert res["top1"] > max(qed(s) for s in POOL[:-1]) + 0.05
    assert json.loads((run.path / "run.json").read_text())["status"] == "finished"


def test_same_seed_same_molecules(pool_file, tmp_path):
    _, a = optimize(None, _args(pool_file, tmp_path, budget=80))
    _, b = optimize(None, _args(pool_file, tmp_path, budget=80))
    _, c = optimize(None, _args(pool_file, tmp_path, budget=80, seed=1))
    assert a["top10"] == b["top10"]
    assert a["top10"] != c["top10"]


def test_bad_config(pool_file, tmp_path):
    with pytest.raises(InputError, match="valid names"):
        optimize(None, _args(pool_file, tmp_path, objective="qedd"))
    with pytest.raises(ConfigError, match="Valid keys"):
        optimize(None, _args(pool_file, tmp_path) + ["graph_ga.popsize=3"])
    with pytest.raises(ConfigError, match="neither"):
        optimize(None, _args(pool_file, tmp_path) + [f"start_pool={tmp_path / 'nope.smi'}"])


def test_killed_run_resumes_to_the_same_result(pool_file, tmp_path):
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    base = [sys.executable, "-m", "selfsup.cli", "chem", "optimize"]
    full = subprocess.run(base + _args(pool_file, tmp_path, name="full"), env=env,
                          capture_output=True, text=True, timeout=120)
    assert full.returncode == 0, full.stderr
    killed = subprocess.run(base + _args(pool_file, tmp_path, name="killed"),
                            env=dict(env, SELFSUP_FAULT_INJECT="kill_after_checkpoint"),
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9
    (run_dir,) = (tmp_path / "runs").glob("killed-*")
    n_saved = len(list(csv.DictReader(open(run_dir / "oracle_calls.csv"))))
    assert 50 <= n_saved < 150  # killed at its first checkpoint, well before the budget
    resumed = subprocess.run(base + ["--resume", str(run_dir)], env=env, capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    (full_dir,) = (tmp_path / "runs").glob("full-*")
    a = (full_dir / "oracle_calls.csv").read_text()
    b = (run_dir / "oracle_calls.csv").read_text()
    assert a == b  # the same calls in the same order, none paid twice
    ra = json.loads((full_dir / "results.json").read_text())
    rb = json.loads((run_dir / "results.json").read_text())
    for k in ("top1", "top10_mean", "auc_top10", "n_calls", "top10"):
        assert ra[k] == rb[k]


def test_graph_ga_with_a_length_limit_spends_the_budget_on_short_molecules(pool_file, tmp_path):
    """Children over max_smiles_length are not oracle calls, so the GA stops on the oracle's own
    count, not on its count of new children."""
    run, res = optimize(None, _args(pool_file, tmp_path, budget=40, max_smiles_length=14))
    rows = list(csv.DictReader(open(run.path / "oracle_calls.csv")))
    assert res["n_calls"] == 40 and res["stopped"] == "budget"
    assert max(len(r["smiles"]) for r in rows) <= 14 and res["n_too_long"] > 0


def _graph_ga_context(pool, budget, population_size, offspring_size, mutation_rate, seed=0):
    """An oracle context (no run folder) and config for the registered graph GA."""
    from selfsup.chem.optimize.base import GraphGAConfig, OptimizationContext, OptimizeConfig
    from selfsup.chem.oracles import Oracle

    cfg = OptimizeConfig(budget=budget, seed=seed, max_smiles_length=None,
                         graph_ga=GraphGAConfig(population_size=population_size,
                                                offspring_size=offspring_size,
                                                mutation_rate=mutation_rate))
    return OptimizationContext(Oracle("qed", budget=budget), pool, None), cfg


def test_graph_ga_spends_its_whole_budget_where_a_generation_cap_stopped_it():
    """The optimiser used to cap a run at budget // max(1, offspring_size // 4) + 10
    generations (here 60 // 10 + 10 = 16). Two tiny parents, one kept per generation and few
    mutations make few new children per generation, so that cap ended this run at 54 calls; it
    now runs until the oracle's budget is spent."""
    import numpy as np

    from selfsup.chem.optimize.base import OPTIMIZERS, sample_pool
    from selfsup.chem.optimize.graph_ga import graph_ga

    args = (["CCO", "CCN"], 60, 1, 40, 0.01)
    ctx, cfg = _graph_ga_context(*args)
    OPTIMIZERS["graph_ga"](ctx, cfg, np.random.default_rng(0))
    assert ctx.oracle.n_calls == 60 and ctx.exhausted and ctx.stop_reason is None
    # the same run with the old cap stops below its budget
    capped, cfg = _graph_ga_context(*args)
    rng = np.random.default_rng(0)
    start = sample_pool(capped.start_pool, 1, rng)
    out = graph_ga(capped.score, start, rng=rng, generations=60 // (40 // 4) + 10,
                   population_size=1, offspring_size=40, mutation_rate=0.01,
                   stop=lambda: capped.exhausted)
    assert out.stopped == "generations" and capped.oracle.n_calls < 60


def test_graph_ga_stops_a_run_that_makes_no_new_molecule():
    """Single atoms have no bond to cut: no child, ever. The loop stops after
    MAX_IDLE_GENERATIONS generations in a row without a new molecule, says so, and counts them."""
    import numpy as np

    from selfsup.chem.optimize.base import OPTIMIZERS
    from selfsup.chem.optimize.graph_ga import MAX_IDLE_GENERATIONS, graph_ga

    ctx, cfg = _graph_ga_context(["C", "O", "N"], 50, 3, 2, 0.5)
    OPTIMIZERS["graph_ga"](ctx, cfg, np.random.default_rng(0))
    assert ctx.oracle.n_calls == 3 and not ctx.exhausted
    assert ctx.stop_reason == f"no new molecule in {MAX_IDLE_GENERATIONS} generations"
    out = graph_ga(lambda s: [1.0] * len(s), ["C", "O"], rng=np.random.default_rng(0),
                   max_evaluations=50, max_idle_generations=7)
    assert (out.stopped, out.idle_generations, out.generations) == ("idle", 7, 7)
    assert len(out.evaluations) == 2
    with pytest.raises(InputError, match="needs an end"):
        graph_ga(lambda s: [1.0] * len(s), ["CCO"], rng=np.random.default_rng(0))
