"""GEGL speed: oracle calls/s, graph-GA children/s against the peer mol_ga, one GEGL round split.

Everything in one run, on one objective (default ``osimertinib_mpo``) and one seeded draw of
ZINC250k molecules:

* oracle calls per second: the objective called directly with no Oracle (``no_oracle``: no
  canonicalisation, no cache), selfsup's :class:`~selfsup.chem.oracles.Oracle` on molecules it
  has not seen (``oracle_first_pass``: canonicalise, score, record) and on the same molecules
  again (``oracle_cached``: answered from the cache, no call spent);
* children per second of selfsup's ``genetic.reproduce`` (crossover, then mutation at GEGL's
  rate 0.01) and of the peer mol_ga (its ``reproduce`` once per child slot, and its
  ``graph_ga_blended_generation``), bred from the same ZINC parents. mol_ga runs in its own
  virtual environment (``--peer-python``) in a subprocess (the code is that of ga_speed.py);
  if that interpreter is missing the script tries ``python3 -m venv`` + ``pip install mol_ga
  rdkit`` there, and otherwise reports our side only and says how to install the peer;
* the cost of one GEGL round split into sampling (apprentice sampling + canonicalisation), GA
  (the expert's ``reproduce``), scoring (both ``ctx.score`` calls) and training (imitation),
  measured on the real loop of ``selfsup.chem.optimize.gegl`` through timing wrappers that this
  script puts around those functions for the duration of the measurement (gegl.py unchanged).

    python benchmarks/gegl/speed.py --quick --threads 1 --prior runs/RUN/model.pt
    python benchmarks/gegl/speed.py --threads 1     # full: benchmarks/results/gegl_speed.{json,md}

Without ``--prior`` it uses the prior of the full GEGL benchmark (runs/bench-gegl-full/) when
there is one, else pretrains one as benchmarks/gegl/run.py does (quick mode: a short one).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "src"))  # ga_speed imports selfsup at module level

from ga_speed import PEER, _peer  # noqa: E402  (the peer side, run in mol_ga's venv)

from common import load_json, now, row, write_results  # noqa: E402

REPO = HERE.parents[1]
DEFAULT_PEER = "/work/peers/molga-venv/bin/python"


# ------------------------------------------------------------------------------------ peer
def ensure_peer(python: str) -> tuple[str | None, str]:
    """The peer interpreter, made with venv + pip if missing; (None, why) when it cannot be."""
    ok = subprocess.run([python, "-c", "import mol_ga, rdkit"], capture_output=True) \
        if Path(python).is_file() else None
    if ok is not None and ok.returncode == 0:
        return python, "found"
    venv = Path(python).parents[1]
    how = (f"python3 -m venv {venv} && {venv}/bin/pip install mol_ga rdkit, then pass "
           f"--peer-python {venv}/bin/python")
    print(f"[gegl speed] no mol_ga at {python}; trying: {how}", flush=True)
    try:
        if not Path(python).is_file():
            subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mol_ga", "rdkit"],
                       check=True, timeout=900)
        return str(venv / "bin" / "python"), "installed by this script"
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"peer not measured ({exc!r}); install it with: {how}"


# ------------------------------------------------------------------------------------ pieces
def oracle_speed(objective: str, molecules: list[str], warm: list[str]) -> dict[str, float]:
    """Calls per second: the objective alone, the Oracle's first pass and its cached pass."""
    from selfsup.chem.objectives import get_objective
    from selfsup.chem.oracles import Oracle

    obj = get_objective(objective)
    obj.score_list(warm)  # targets, fingerprints and lazy imports built outside the clock
    t = time.perf_counter()
    obj.score_list(molecules)
    direct = time.perf_counter() - t
    oracle = Oracle(objective)
    oracle(warm)
    t = time.perf_counter()
    oracle(molecules)
    first = time.perf_counter() - t
    t = time.perf_counter()
    oracle(molecules)
    cached = time.perf_counter() - t
    n = len(molecules)
    return {"no_oracle": n / direct, "oracle_first_pass": n / first, "oracle_cached": n / cached}


def ga_speed(parents: list[str], n_children: int, rate: float, seed: int,
             peer: str | None, frac_mutate: float) -> dict[str, float]:
    import numpy as np

    from selfsup.chem.genetic import reproduce

    out = reproduce(parents, n_children, np.random.default_rng(seed), rate)
    res = {"selfsup_reproduce": len(out.children) / out.seconds}
    if peer:
        cfg = {"parents": parents, "n_children": n_children, "seed": seed, "mutation_rate": rate,
               "frac_mutate": frac_mutate}
        p = json.loads(_peer(peer, PEER, json.dumps(cfg)))
        res["mol_ga_reproduce"] = p["reproduce_children"] / p["reproduce_seconds"]
        res["mol_ga_blended_generation"] = p["blended_unique_children"] / p["blended_seconds"]
    return res


def gegl_round_split(objective: str, prior: str, budget: int, size: int, seed: int
                     ) -> dict[str, list[float]]:
    """Per-round seconds of GEGL's pieces, measured on the real loop through timing wrappers."""
    import numpy as np

    import selfsup.chem.optimize.gegl as gegl_mod
    from selfsup.chem.optimize.base import OPTIMIZERS, OptimizationContext, OptimizeConfig
    from selfsup.chem.oracles import Oracle
    from selfsup.config import load_config

    rounds: list[dict[str, float]] = []

    def add(piece: str, seconds: float) -> None:
        rounds[-1][piece] = rounds[-1].get(piece, 0.0) + seconds

    def timed(piece: str, fn):
        def wrapper(*a, **k):
            if piece == "sampling":  # the first thing of every round
                rounds.append({"start": time.perf_counter()})
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                add(piece, time.perf_counter() - t)
        return wrapper

    class TimedContext(OptimizationContext):
        def score(self, smiles):
            t = time.perf_counter()
            try:
                return super().score(smiles)
            finally:
                if rounds:
                    add("scoring", time.perf_counter() - t)

    cfg = load_config(OptimizeConfig, None, [
        f"objective={objective}", f"budget={budget}", f"prior={prior}", f"seed={seed}",
        "optimizer=gegl", f"gegl.n_apprentice={size}", f"gegl.n_expert={size}",
        f"gegl.queue_size={size}"])
    ctx = TimedContext(Oracle(objective, budget=budget), [], None)
    originals = {n: getattr(gegl_mod, n) for n in ("sample_canonical", "reproduce",
                                                     "train_likelihood")}
    pieces = {"sample_canonical": "sampling", "reproduce": "ga", "train_likelihood": "training"}
    try:
        for n, fn in originals.items():
            setattr(gegl_mod, n, timed(pieces[n], fn))
        OPTIMIZERS["gegl"](ctx, cfg, np.random.default_rng(seed))
        end = time.perf_counter()
    finally:
        for n, fn in originals.items():
            setattr(gegl_mod, n, fn)
    out: dict[str, list[float]] = {k: [] for k in ("sampling", "ga", "scoring", "training",
                                                   "other", "round")}
    for i, r in enumerate(rounds):
        stop = rounds[i + 1]["start"] if i + 1 < len(rounds) else end
        total = stop - r["start"]
        for k in ("sampling", "ga", "scoring", "training"):
            out[k].append(r.get(k, 0.0))
        out["other"].append(total - sum(r.get(k, 0.0) for k in ("sampling", "ga", "scoring",
                                                                  "training")))
        out["round"].append(total)
    if len(rounds) > 1 and ctx.exhausted:  # the last round stops short when the budget ends
        out = {k: v[:-1] for k, v in out.items()}
    out["n_calls"] = [float(ctx.oracle.n_calls)]
    return out


def find_prior(args, out: Path) -> dict:
    from run import ensure_prior

    if args.prior:
        return ensure_prior(out, args.prior, None, args.threads)
    full = load_json(REPO / "runs" / "bench-gegl-full" / "gegl_cache.json").get("prior")
    if full and Path(full["path"]).is_file():
        return full
    from run import QUICK_PRETRAIN_STEPS

    return ensure_prior(out, None, QUICK_PRETRAIN_STEPS if args.quick else None, args.threads)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--objective", default="osimertinib_mpo")
    ap.add_argument("--prior", default=None, help="model.pt of selfsup chem pretrain")
    ap.add_argument("--peer-python", default=DEFAULT_PEER)
    ap.add_argument("--n-molecules", type=int, default=None, help="oracle molecules")
    ap.add_argument("--n-parents", type=int, default=200)
    ap.add_argument("--n-children", type=int, default=None)
    ap.add_argument("--mutation-rate", type=float, default=0.01, help="GEGL's rate")
    ap.add_argument("--peer-frac-mutate", type=float, default=0.10)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--gegl-budget", type=int, default=None, help="oracle calls of the GEGL run")
    ap.add_argument("--gegl-size", type=int, default=100,
                    help="N_app = N_exp = K of the GEGL round (budgeted default 100)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from selfsup.data import molecules, registry

    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    n_mol = args.n_molecules or (500 if args.quick else 5000)
    n_children = args.n_children or (500 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    gegl_budget = args.gegl_budget or (800 if args.quick else 3000)
    out = Path(args.out) if args.out else (
        REPO / "runs" / f"bench-gegl_speed-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else REPO / "runs" / "bench-gegl_speed-full")
    out.mkdir(parents=True, exist_ok=True)

    zinc = molecules.load_zinc250k(registry.fetch("zinc250k"))
    pick = np.random.default_rng(args.seed).permutation(len(zinc))
    parents = [zinc[i] for i in sorted(pick[: args.n_parents])]
    warm = [zinc[i] for i in pick[args.n_parents: args.n_parents + 20]]
    start = args.n_parents + 20
    peer, peer_note = ensure_peer(args.peer_python)
    prior = find_prior(args, out)
    timings: dict[str, float] = {}

    rows, oracle_vals, ga_vals = [], {}, {}
    for r in range(repeats):
        mols = [zinc[i] for i in pick[start + r * n_mol: start + (r + 1) * n_mol]]
        t = time.perf_counter()
        for k, v in oracle_speed(args.objective, mols, warm).items():
            oracle_vals.setdefault(k, []).append(v)
        timings["oracle_seconds"] = timings.get("oracle_seconds", 0) + time.perf_counter() - t
        t = time.perf_counter()
        for k, v in ga_speed(parents, n_children, args.mutation_rate, args.seed + r, peer,
                             args.peer_frac_mutate).items():
            ga_vals.setdefault(k, []).append(v)
        timings["ga_seconds"] = timings.get("ga_seconds", 0) + time.perf_counter() - t
    setting = f"{args.objective}/zinc-{n_mol}-molecules"
    for arm, vals in oracle_vals.items():
        rows.append(row(setting, arm, "calls_per_s", vals))
    setting = f"zinc-{args.n_parents}-parents/{n_children}-children/mutation-{args.mutation_rate}"
    for arm, vals in ga_vals.items():
        rows.append(row(setting, arm, "children_per_s", vals))
    if "mol_ga_reproduce" in ga_vals:
        rows.append(row(setting, "selfsup_reproduce", "speedup_vs_mol_ga_reproduce",
                        [a / b for a, b in zip(ga_vals["selfsup_reproduce"],
                                               ga_vals["mol_ga_reproduce"])]))
    t = time.perf_counter()
    split = gegl_round_split(args.objective, prior["path"], gegl_budget, args.gegl_size,
                             args.seed)
    timings["gegl_seconds"] = time.perf_counter() - t
    size = args.gegl_size
    setting = f"gegl-round/{args.objective}/{size}+{size}-K{size}"
    for piece in ("sampling", "ga", "scoring", "training", "other", "round"):
        rows.append(row(setting, "gegl", f"{piece}_seconds", split[piece]))
    total = sum(statistics.fmean(split[p]) for p in ("sampling", "ga", "scoring", "training",
                                                      "other"))
    for piece in ("sampling", "ga", "scoring", "training"):
        rows.append(row(setting, "gegl", f"{piece}_share",
                        [statistics.fmean(split[piece]) / total]))

    notes = "\n".join([
        f"Objective `{args.objective}`; molecules drawn with seed {args.seed} from ZINC250k "
        f"(selfsup's copy): {args.n_parents} GA parents, {n_mol} oracle molecules per repeat "
        f"(fresh ones each repeat), {repeats} repeat(s) (the `seeds` column holds the repeats). "
        "Oracle arms: no_oracle = the objective's score_list alone (no canonicalisation, no "
        "cache), oracle_first_pass = the Oracle on unseen molecules (canonicalise, score, "
        "record), oracle_cached = the same molecules again (cache hits, no call spent).",
        "",
        f"GA: {n_children} child slots from the same parents, mutation rate "
        f"{args.mutation_rate}, one process each. selfsup_reproduce = genetic.reproduce "
        "(a slot retries up to 5 parent pairs); mol_ga_reproduce = mol_ga's reproduce once per "
        "slot (children that came out); mol_ga_blended_generation = its offspring function "
        f"(unique children; {args.peer_frac_mutate:.0%} mutation-only). Peer: {peer_note}"
        + (f" ({peer})" if peer else "") + ".",
        "",
        f"GEGL round: budgeted GEGL (N_app = N_exp = K = {size}, 8 imitation steps x 64) on "
        f"`{args.objective}` for {gegl_budget} calls, timed on the real loop; `seeds` holds "
        f"every full round ({len(split['round'])}). sampling = apprentice sampling + "
        "canonicalisation, ga = the expert's reproduce, scoring = both oracle calls, training = "
        "imitation; other = the rest (queues, dedup). Prior: "
        f"`{prior['path']}` (validity {prior.get('validity')}).",
        "",
        "Time of each part: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + ".",
    ])
    command = "python " + " ".join(sys.argv)
    extra = {"objective": args.objective, "peer_python": peer, "peer_note": peer_note,
             "prior": prior, "gegl_calls": split["n_calls"][0], "part_seconds": timings}
    jp, mp = write_results("gegl_speed", mode, command, started, time.perf_counter() - t0, rows,
                           out if args.out or args.quick else None, notes, extra)
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
