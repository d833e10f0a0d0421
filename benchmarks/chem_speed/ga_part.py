"""The graph-GA part of benchmark `chem_speed`: whole ``selfsup chem optimize`` graph-GA runs
against whole mol_ga ``run_ga_maximization`` runs (issue 20, deliverable 2).

Setting ``graph-ga/<objective>/<calls>``: both arms start from the same ``population`` molecules
(the ones our run draws from ZINC250k with the repeat's seed), breed ``offspring`` children per
generation with a population of ``population``, and stop after ``calls`` unique molecules were
scored by the same RDKit function (``selfsup.chem.objectives``, imported by the peer's own
interpreter). Each run is a fresh process (``ga_worker.py``), timed inside it after its imports;
repeats are interleaved (repeat r: every objective, both arms, arm order rotated by r), seed r.

Metrics: ``wall_seconds`` (the timed run), ``calls_per_s`` (unique scored molecules / wall),
``top10_mean`` (mean of the 10 best scores of the run), ``ratio_to_peer`` (mol_ga's wall / ours,
per repeat; on arm selfsup), ``cpu_seconds`` and ``cpu_ratio_to_peer`` (the same on the
processes' CPU time, which a busy machine inflates less than wall time), and for our arm
``start_pool_seconds`` and ``outputs_seconds`` (the ZINC load and the output files, both inside
our timed run; the peer has neither).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER = HERE / "ga_worker.py"
DEFAULT_PEER = "/work/peers/molga-venv/bin/python"
ARMS = ("selfsup", "mol_ga")

_STATE: dict = {}  # what measure() found, for describe()


def add_arguments(parser) -> None:
    g = parser.add_argument_group("graph-GA part")
    g.add_argument("--peer-python-molga", default=DEFAULT_PEER,
                   help="python of the venv with mol_ga installed")
    g.add_argument("--ga-objectives", nargs="+", default=None,
                   help="objectives (default: qed osimertinib_mpo)")
    g.add_argument("--ga-calls", type=int, default=None,
                   help="unique oracle calls per run (default 10000; quick 1000)")
    g.add_argument("--ga-population", type=int, default=120)
    g.add_argument("--ga-offspring", type=int, default=70)
    g.add_argument("--ga-selfsup-src", default=str(ROOT / "src"),
                   help="the selfsup source tree our arm runs (default: this checkout's src)")


def _settings(quick: bool, args) -> dict:
    return {"objectives": args.ga_objectives or ["qed", "osimertinib_mpo"],
            "calls": args.ga_calls or (1000 if quick else 10000),
            "population": args.ga_population, "offspring": args.ga_offspring}


def start_molecules(seed: int, n: int) -> list[str]:
    """The start pool our graph-GA run of ``seed`` draws (same code, same generator state)."""
    import numpy as np

    from selfsup.chem.optimize.base import OptimizeConfig, load_start_pool, sample_pool

    if "pool" not in _STATE:
        _STATE["pool"] = load_start_pool(OptimizeConfig())
    return sample_pool(_STATE["pool"], n, np.random.default_rng(seed))


def _env(python_path: str, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=python_path, PYTHONHASHSEED="0")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    return env


def _run_worker(python: str, job: dict, env: dict) -> dict:
    proc = subprocess.run([python, str(WORKER)], input=json.dumps(job), capture_output=True,
                          text=True, env=env, cwd=str(ROOT))
    if proc.returncode != 0:
        raise SystemExit(f"ga worker ({job['arm']}, {python}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _top10(scores: list[float]) -> float:
    best = sorted(scores, reverse=True)[:10]
    return sum(best) / len(best)


def _n_canonical(smiles: list[str]) -> int:
    from rdkit import Chem

    return len({Chem.MolToSmiles(m) for s in smiles if (m := Chem.MolFromSmiles(s)) is not None})


def _digest(items) -> str:
    return hashlib.sha1("\n".join(sorted(items)).encode()).hexdigest()[:12]


def measure(quick: bool, repeats: int, args, out_dir: Path) -> list[dict]:
    st = _settings(quick, args)
    _STATE.update(settings=st, repeats=repeats, peer=args.peer_python_molga)
    threads = getattr(args, "threads", 1) or 1
    run_root = Path(out_dir) / "ga_runs"
    run_root.mkdir(parents=True, exist_ok=True)
    src = str(Path(args.ga_selfsup_src).resolve())
    envs = {"selfsup": _env(src, threads), "mol_ga": _env(src, threads)}
    pythons = {"selfsup": sys.executable, "mol_ga": args.peer_python_molga}
    results: dict[tuple[str, str], list[dict]] = {}
    log_path = Path(out_dir) / "ga_runs.jsonl"
    for r in range(repeats):
        starts = {}
        for i, objective in enumerate(st["objectives"]):
            start = start_molecules(r, st["population"])
            starts[objective] = start
            k = (r + i) % len(ARMS)
            for arm in ARMS[k:] + ARMS[:k]:
                job = {"arm": arm, "objective": objective, "calls": st["calls"], "seed": r,
                       "population": st["population"], "offspring": st["offspring"],
                       "start": start, "name": f"{objective}-s{r}",
                       "run_root": str(run_root)}
                load0 = os.getloadavg()
                res = _run_worker(pythons[arm], job, envs[arm])
                res["load_before"], res["load_after"] = load0, os.getloadavg()
                n = len(res["smiles"])
                if n != st["calls"] or len(set(res["smiles"])) != n:
                    raise SystemExit(f"{arm} {objective} seed {r}: {n} calls, "
                                     f"{len(set(res['smiles']))} unique; expected {st['calls']}")
                res["start_digest"] = _digest(res["smiles"][:_n_canonical(start)])
                res["top10_mean"] = _top10(res["scores"])
                summary = {k: v for k, v in res.items() if k not in ("smiles", "scores")}
                summary.update(arm=arm, objective=objective, seed=r, calls=n)
                with open(log_path, "a") as f:
                    f.write(json.dumps(summary) + "\n")
                print(f"[chem_speed ga] repeat {r} {objective} {arm}: "
                      f"{res['wall_seconds']:.1f} s (cpu {res['cpu_seconds']:.1f} s), "
                      f"top10 {res['top10_mean']:.4f}, load {load0[0]:.2f}", flush=True)
                results.setdefault((objective, arm), []).append(res)
    rows = []
    for objective in st["objectives"]:
        setting = f"graph-ga/{objective}/{st['calls']}"
        ours, peer = results[(objective, "selfsup")], results[(objective, "mol_ga")]
        for arm, runs in (("selfsup", ours), ("mol_ga", peer)):
            rows.append({"setting": setting, "arm": arm, "metric": "wall_seconds",
                         "seeds": [x["wall_seconds"] for x in runs]})
            rows.append({"setting": setting, "arm": arm, "metric": "calls_per_s",
                         "seeds": [len(x["smiles"]) / x["wall_seconds"] for x in runs]})
            rows.append({"setting": setting, "arm": arm, "metric": "top10_mean",
                         "seeds": [x["top10_mean"] for x in runs]})
            rows.append({"setting": setting, "arm": arm, "metric": "cpu_seconds",
                         "seeds": [x["cpu_seconds"] for x in runs]})
        rows.append({"setting": setting, "arm": "selfsup", "metric": "ratio_to_peer",
                     "seeds": [p["wall_seconds"] / o["wall_seconds"]
                               for o, p in zip(ours, peer)]})
        rows.append({"setting": setting, "arm": "selfsup", "metric": "cpu_ratio_to_peer",
                     "seeds": [p["cpu_seconds"] / o["cpu_seconds"]
                               for o, p in zip(ours, peer)]})
        rows.append({"setting": setting, "arm": "selfsup", "metric": "start_pool_seconds",
                     "seeds": [x["load_start_pool_seconds"] for x in ours]})
        rows.append({"setting": setting, "arm": "selfsup", "metric": "outputs_seconds",
                     "seeds": [x["write_outputs_seconds"] for x in ours]})
        same_start = all(o["start_digest"] == p["start_digest"] for o, p in zip(ours, peer))
        _STATE.setdefault("same_start", {})[setting] = same_start
        if not same_start:
            raise SystemExit(f"{setting}: the arms' first calls are not the same start pool")
    _STATE["load"] = [x["load_before"][0] for runs in results.values() for x in runs]
    return rows


def describe(args) -> str:
    st = _STATE.get("settings") or _settings(False, args)
    load = _STATE.get("load") or []
    load_text = (f" The 1-minute load average before each run was {min(load):.2f} to "
                 f"{max(load):.2f} on the 2 cores (other benchmarks ran beside it); "
                 "`cpu_seconds` is the processes' CPU time over the same span." if load else "")
    text = [
        "**Graph GA, whole runs** (`graph-ga/<objective>/<calls>`).",
        "Arm `selfsup`: `selfsup.chem.optimize.optimize` with the overrides of `selfsup chem "
        f"optimize --optimizer graph_ga --budget {st['calls']} --seed <r> "
        f"graph_ga.population_size={st['population']} "
        f"graph_ga.offspring_size={st['offspring']} n_jobs=1 max_smiles_length=null`, the call "
        "the command makes (no length limit: every unique canonical molecule is scored and "
        "counted, as mol_ga does). Timed from its start to its return: run folder and config, "
        "loading the ZINC250k start pool (registry cache; `start_pool_seconds`), the budgeted "
        "oracle (canonicalising every child with RDKit, the cache, the call record, PMO metrics "
        "every 100 calls), the GA, checkpoints of the record, and every output file (record, "
        "molecule table, learning-curve and molecule-grid PNGs, results.json; "
        "`outputs_seconds`).",
        "Arm `mol_ga`: `run_ga_maximization` of mol_ga 0.2.1 in its own virtual environment, "
        "with the functions of its `default_ga` (`uniform_quantile_sampling`, "
        "`graph_ga_blended_generation`, `heapq.nlargest`), population "
        f"{st['population']}, offspring {st['offspring']}, `random.Random(r)`, started from the "
        "same molecules (the ZINC250k draw our run makes with seed r; the first calls of both "
        "arms are checked to be the same set). Timed: canonicalising the start SMILES, building "
        "the objective and the run.",
        "Same work: both arms score with the same function, our `selfsup.chem.objectives` "
        "(RDKit 2026.09.1 and numpy 2.4.6 in both environments; the peer imports it from "
        "`src/` without torch); both count one call per unique canonical SMILES (mol_ga's "
        "children are canonical SMILES and its `CachedBatchFunction` passes each one once; "
        "ours canonicalises in the oracle); both stop as soon as "
        f"{st['calls']} unique molecules are scored (the peer's scoring function scores up to "
        "the budget, then ends the run). Neither arm caches what the other computes; imports "
        "and interpreter start are outside the clock on both sides; one process per run, one "
        "thread each. The GAs keep their own designs (ours: parents drawn in proportion to "
        "score, crossover then mutation at 0.067; mol_ga: quantile sampling, 10% mutation-only "
        "children, crossover with mutation at 0.01), so they need different numbers of "
        "generations for the same calls.",
        f"{_STATE.get('repeats', '?')} repeats, interleaved (each repeat runs every objective "
        "with both arms, the arm order rotated per repeat and objective), seed = repeat. "
        "`ratio_to_peer` = mol_ga wall / selfsup wall of the same repeat (`cpu_ratio_to_peer`: "
        "the same on CPU time); `top10_mean`: mean of the 10 best scores of the run (same code "
        "for both arms)." + load_text,
    ]
    return "\n\n".join(text)
