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
  script puts around those functions for the duration of the measurement (gegl.py unchanged);
* the imitation settings compared round by round on another seeded GEGL run with the defaults
  (``gegl-imitation/...``): at every round each arm (fp32, the default; length_groups4; bf16;
  bf16_length_groups4) trains from copies of the same model, Adam state and batch generator
  (the fp32 arm is the loop's own call), seconds and loss of each (see :func:`imitation_compare`),
  then whole seeded runs with each arm (``--quality-seeds``, default 3 in full mode): top-10
  mean, AUC top-10, wall seconds, and whether the run asked for the default's molecules;
* the round split again with both imitation options on (arm ``gegl_bf16_length_groups4``).

    python benchmarks/gegl/speed.py --quick --threads 1 --prior runs/RUN/model.pt
    python benchmarks/gegl/speed.py --threads 1     # full: benchmarks/results/gegl_speed.{json,md}
    python benchmarks/gegl/speed.py --imitation-only --threads 1 --prior runs/RUN/model.pt
                                    # only the imitation settings, into runs/bench-gegl_speed-*

Without ``--prior`` it uses the prior of the full GEGL benchmark (runs/bench-gegl-full/) when
there is one, else pretrains one as benchmarks/gegl/run.py does (quick mode: a short one).
"""

from __future__ import annotations

import argparse
import json
import os
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
# the imitation step's parts (their sum is training_seconds)
IMITATION = ("imitation_forward", "imitation_backward", "imitation_clip_adam", "imitation_rest")
# the imitation arms compared round by round (train_likelihood's precision and length_groups,
# the settings gegl.imitation_precision and gegl.imitation_length_groups); fp32 is the default
IMITATION_ARMS = {"fp32": {}, "length_groups4": {"length_groups": 4},
                  "bf16": {"precision": "bf16"},
                  "bf16_length_groups4": {"precision": "bf16", "length_groups": 4}}
# the round split's runs: the defaults, and both imitation options on (another seeded run)
ROUND_ARMS = {"gegl": (), "gegl_bf16_length_groups4": (
    "gegl.imitation_precision=bf16", "gegl.imitation_length_groups=4")}


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


def gegl_config(objective: str, prior: str, budget: int, size: int, seed: int,
                overrides=()):
    """The budgeted GEGL run every part of this script times: N_app = N_exp = K = ``size``,
    plus ``overrides``."""
    from selfsup.chem.optimize.base import OptimizeConfig
    from selfsup.config import load_config

    return load_config(OptimizeConfig, None, [
        f"objective={objective}", f"budget={budget}", f"prior={prior}", f"seed={seed}",
        "optimizer=gegl", f"gegl.n_apprentice={size}", f"gegl.n_expert={size}",
        f"gegl.queue_size={size}", *overrides])


def gegl_round_split(objective: str, prior: str, budget: int, size: int, seed: int,
                     overrides: tuple[str, ...] = ()) -> dict[str, list[float]]:
    """Per-round seconds of GEGL's pieces, measured on the real loop through timing wrappers
    (``overrides``: more settings, e.g. ``gegl.imitation_precision=bf16``)."""
    import numpy as np
    import torch
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    import selfsup.chem.optimize.gegl as gegl_mod
    from selfsup.chem.lstm import SmilesLSTM, likelihood
    from selfsup.chem.optimize.base import OPTIMIZERS, OptimizationContext
    from selfsup.chem.oracles import Oracle

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

    cfg = gegl_config(objective, prior, budget, size, seed, overrides)
    ctx = TimedContext(Oracle(objective, budget=budget), [], None)
    originals = {n: getattr(gegl_mod, n) for n in ("sample_canonical", "reproduce",
                                                     "train_likelihood")}
    pieces = {"sample_canonical": "sampling", "reproduce": "ga", "train_likelihood": "training"}
    # inside the imitation step: the forward (SmilesLSTM.token_nll, once per batch, or per group
    # with length groups), the update (gradient_step: backward, clipping, Adam), and within it
    # the clipping and Adam's step
    inner = [(SmilesLSTM, "token_nll", "forward"), (likelihood, "gradient_step", "update"),
             (torch.nn.utils, "clip_grad_norm_", "clip")]
    inner_originals = [(owner, n, getattr(owner, n)) for owner, n, _ in inner]
    adam_start: list[float] = []
    hooks = [register_optimizer_step_pre_hook(lambda *_: adam_start.append(time.perf_counter())),
             register_optimizer_step_post_hook(
                 lambda *_: add("adam", time.perf_counter() - adam_start.pop()) if rounds
                 else adam_start.clear())]
    try:
        for n, fn in originals.items():
            setattr(gegl_mod, n, timed(pieces[n], fn))
        for (owner, n, piece), (_, _, fn) in zip(inner, inner_originals):
            setattr(owner, n, timed(piece, fn))
        OPTIMIZERS["gegl"](ctx, cfg, np.random.default_rng(seed))
        end = time.perf_counter()
    finally:
        for n, fn in originals.items():
            setattr(gegl_mod, n, fn)
        for owner, n, fn in inner_originals:
            setattr(owner, n, fn)
        for h in hooks:
            h.remove()
    out: dict[str, list[float]] = {k: [] for k in ("sampling", "ga", "scoring", "training",
                                                   "other", "round", *IMITATION)}
    for i, r in enumerate(rounds):
        stop = rounds[i + 1]["start"] if i + 1 < len(rounds) else end
        total = stop - r["start"]
        for k in ("sampling", "ga", "scoring", "training"):
            out[k].append(r.get(k, 0.0))
        out["other"].append(total - sum(r.get(k, 0.0) for k in ("sampling", "ga", "scoring",
                                                                  "training")))
        out["round"].append(total)
        fwd, upd, clip, adam = (r.get(k, 0.0) for k in ("forward", "update", "clip", "adam"))
        out["imitation_forward"].append(fwd)
        out["imitation_backward"].append(upd - clip - adam)
        out["imitation_clip_adam"].append(clip + adam)
        out["imitation_rest"].append(r.get("training", 0.0) - fwd - upd)
    if len(rounds) > 1 and ctx.exhausted:  # the last round stops short when the budget ends
        out = {k: v[:-1] for k, v in out.items()}
    out["n_calls"] = [float(ctx.oracle.n_calls)]
    return out


def split_rows(setting: str, arm: str, split: dict[str, list[float]]) -> list[dict]:
    rows = [row(setting, arm, f"{piece}_seconds", split[piece])
            for piece in ("sampling", "ga", "scoring", "training", "other", "round")]
    total = sum(statistics.fmean(split[p]) for p in ("sampling", "ga", "scoring", "training",
                                                      "other"))
    for piece in ("sampling", "ga", "scoring", "training"):
        rows.append(row(setting, arm, f"{piece}_share",
                        [statistics.fmean(split[piece]) / total]))
    for piece in IMITATION:
        rows.append(row(setting, arm, f"{piece}_seconds", split[piece]))
    train = statistics.fmean(split["training"])
    for piece in IMITATION:
        rows.append(row(setting, arm, f"{piece}_share_of_training",
                        [statistics.fmean(split[piece]) / train]))
    return rows


def imitation_compare(objective: str, prior: str, budget: int, size: int, seed: int
                      ) -> dict[str, dict[str, list[float]]]:
    """Seconds and loss of every arm of :data:`IMITATION_ARMS` on each imitation round of one
    seeded GEGL run with the default settings (the real loop of selfsup.chem.optimize.gegl).

    At each round the model, Adam's state and the batch generator are copied; every arm runs
    that round's imitation from the copies (arm order rotated by one each round), except fp32,
    which is the loop's own call, so the run goes on exactly as a default run. The round's SMILES
    are tokenised into the loop's cache before the first arm, outside the clock."""
    import copy

    import numpy as np
    import torch

    import selfsup.chem.optimize.gegl as gegl_mod
    from selfsup.chem.lstm import encode_smiles
    from selfsup.chem.optimize.base import OPTIMIZERS, OptimizationContext
    from selfsup.chem.oracles import Oracle

    names = list(IMITATION_ARMS)
    out = {a: {"seconds": [], "loss": []} for a in names}
    real = gegl_mod.train_likelihood

    def compare(model, smiles_list, vocab, **kw):
        if (kw.get("precision"), kw.get("length_groups")) != ("32", 1):
            raise RuntimeError(f"the loop's imitation is not the default: {kw}")
        i = len(out["fp32"]["seconds"])
        order = names[i % len(names):] + names[: i % len(names)]
        encode_smiles(list(smiles_list), vocab, max_len=kw["max_len"], cache=kw["cache"])
        model0 = copy.deepcopy(model)
        adam0 = copy.deepcopy(kw["optimizer"].state_dict())
        gen0 = kw["generator"].get_state()
        result = float("nan")
        for arm in order:
            if arm == "fp32":  # the loop's own call
                m, k = model, kw
            else:
                m = copy.deepcopy(model0)
                adam = torch.optim.Adam(m.parameters())
                adam.load_state_dict(copy.deepcopy(adam0))
                gen = torch.Generator()
                gen.set_state(gen0)
                k = {**kw, "optimizer": adam, "generator": gen, **IMITATION_ARMS[arm]}
            t = time.perf_counter()
            loss = real(m, smiles_list, vocab, **k)
            out[arm]["seconds"].append(time.perf_counter() - t)
            out[arm]["loss"].append(loss)
            if arm == "fp32":
                result = loss
        return result

    cfg = gegl_config(objective, prior, budget, size, seed)
    ctx = OptimizationContext(Oracle(objective, budget=budget), [], None)
    gegl_mod.train_likelihood = compare
    try:
        OPTIMIZERS["gegl"](ctx, cfg, np.random.default_rng(seed))
    finally:
        gegl_mod.train_likelihood = real
    return out


def imitation_rows(setting: str, comp: dict[str, dict[str, list[float]]]) -> list[dict]:
    rows = []
    ref = comp["fp32"]["seconds"]
    for arm, v in comp.items():
        rows.append(row(setting, arm, "imitation_seconds_per_round", v["seconds"]))
        if arm != "fp32":
            rows.append(row(setting, arm, "speedup_vs_fp32",
                            [a / b for a, b in zip(ref, v["seconds"])]))
        rows.append(row(setting, arm, "imitation_loss", v["loss"]))
    return rows


def imitation_notes(comp: dict[str, dict[str, list[float]]], size: int, budget: int,
                    objective: str, loads: tuple[float, float]) -> str:
    ref = sum(comp["fp32"]["seconds"])
    totals = ", ".join(f"{a} {ref / sum(v['seconds']):.2f}x" for a, v in comp.items()
                       if a != "fp32")
    return (
        f"Imitation settings (`gegl-imitation/...`): one seeded GEGL run with the default "
        f"settings (N_app = N_exp = K = {size}, 8 imitation steps x 64, {budget} calls on "
        f"`{objective}`, {len(comp['fp32']['seconds'])} imitation rounds); at every round the "
        "model, Adam's state and the batch generator are copied and each arm runs that round's "
        "imitation from the same state on the same batches (arm order rotated by one each "
        "round; fp32 is the loop's own call, so the run is a default run). Arms: fp32 = the "
        "default (gegl.imitation_precision=32, gegl.imitation_length_groups=1); length_groups4 "
        "= gegl.imitation_length_groups=4 (each batch sorted by length and run as 4 groups, "
        "each trimmed to its longest row: same loss, other rounding); bf16 = "
        "gegl.imitation_precision=bf16 (the forward under bfloat16 autocast, fp32 weights, loss "
        "and Adam); bf16_length_groups4 = both. `seeds` holds the rounds; speedup_vs_fp32 = "
        "fp32 seconds / arm seconds of the same round; imitation_loss = the arm's mean loss of "
        f"the round. Ratio of total imitation seconds: {totals}. Both options change the "
        "numbers, so seeded runs with them differ from the committed GEGL figures (made with "
        "the defaults). Machine load "
        f"(1-minute average) before and after this part: {loads[0]:.2f}, {loads[1]:.2f}.")


def imitation_part(args, prior: dict, budget: int, size: int) -> tuple[list[dict], str, dict]:
    """Rows, notes and JSON extras of the comparison of imitation settings."""
    before = os.getloadavg()
    comp = imitation_compare(args.objective, prior["path"], budget, size, args.seed)
    after = os.getloadavg()
    setting = f"gegl-imitation/{args.objective}/{size}+{size}-K{size}"
    notes = imitation_notes(comp, size, budget, args.objective, (before[0], after[0]))
    rows = imitation_rows(setting, comp)
    extra = {"imitation_loadavg": {"before": list(before), "after": list(after)}}
    seeds = list(range(args.quality_seeds))
    if seeds:
        qual = quality_runs(args.objective, prior["path"], budget, size, seeds)
        done = os.getloadavg()
        q_setting = f"gegl-imitation-runs/{args.objective}/{budget}-calls"
        for arm, v in qual.items():
            for metric, vals in v.items():
                rows.append(row(q_setting, arm, metric, vals))
            if arm != "fp32":
                rows.append(row(q_setting, arm, "speedup_vs_fp32",
                                [a / b for a, b in zip(qual["fp32"]["wall_seconds"],
                                                       v["wall_seconds"])]))
        extra["quality_loadavg_end"] = list(done)
        notes += (
            f"\n\nWhole runs (`gegl-imitation-runs/...`): GEGL with each arm's settings, "
            f"seeds {', '.join(map(str, seeds))} (`seeds` holds them), {budget} calls on "
            f"`{args.objective}`, N_app = N_exp = K = {size}, arm order rotated by one each "
            "seed, one after another in this process: top-10 mean and AUC top-10 at the "
            "budget, the run's wall seconds (sampling, GA and scoring included), speedup_vs_fp32 "
            "of the same seed, same_calls_as_fp32 = 1 where the run asked the oracle for the same "
            "molecules in the same order as fp32 with that seed (rounding too small to change a "
            "sampled token), 0 where not. Where the molecules differ, the scores differ by seed; "
            f"{len(seeds)} seeds show the size of the effect, not a significant one. Load "
            f"(1-minute average) at the end of these runs: {done[0]:.2f}.")
    else:
        notes += " Effect on scores: not measured in this run (--quality-seeds 0)."
    return rows, notes, extra


def quality_runs(objective: str, prior: str, budget: int, size: int, seeds: list[int]
                 ) -> dict[str, dict[str, list[float]]]:
    """Whole seeded GEGL runs with each imitation arm: top-10 mean and AUC top-10 at ``budget``
    calls, and the run's wall seconds; arm order rotated by one each seed."""
    import numpy as np

    from selfsup.chem.optimize.base import OPTIMIZERS, OptimizationContext
    from selfsup.chem.oracles import Oracle, pmo_metrics

    names = list(IMITATION_ARMS)
    out = {a: {"top10_mean": [], "auc_top10": [], "wall_seconds": []} for a in names}
    calls: dict[tuple[str, int], list[str]] = {}
    setting_of = {"precision": "gegl.imitation_precision",
                  "length_groups": "gegl.imitation_length_groups"}
    for i, seed in enumerate(seeds):
        for arm in names[i % len(names):] + names[: i % len(names)]:
            cfg = gegl_config(objective, prior, budget, size, seed,
                              [f"{setting_of[k]}={v}" for k, v in IMITATION_ARMS[arm].items()])
            oracle = Oracle(objective, budget=budget)
            t = time.perf_counter()
            OPTIMIZERS["gegl"](OptimizationContext(oracle, [], None), cfg,
                               np.random.default_rng(seed))
            out[arm]["wall_seconds"].append(time.perf_counter() - t)
            m = pmo_metrics([r.score for r in oracle.records], budget=budget)
            out[arm]["top10_mean"].append(m["top10_mean"])
            out[arm]["auc_top10"].append(m["auc_top10"])
            calls[arm, seed] = [r.smiles for r in oracle.records]
            print(f"[gegl speed] quality seed {seed} {arm}: top10 {m['top10_mean']:.4f} "
                  f"in {out[arm]['wall_seconds'][-1]:.0f}s", flush=True)
    for arm in names[1:]:  # 1: the run asked for the same molecules in the same order
        out[arm]["same_calls_as_fp32"] = [float(calls[arm, s] == calls["fp32", s])
                                          for s in seeds]
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
    ap.add_argument("--quality-seeds", type=int, default=None,
                    help="whole GEGL runs per imitation arm (default 3 full, 0 quick)")
    ap.add_argument("--imitation-only", action="store_true",
                    help="only the comparison of imitation settings, written to a run folder")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from selfsup.data import molecules, registry

    started, t0 = now(), time.perf_counter()
    load_start = os.getloadavg()
    mode = "quick" if args.quick else "full"
    n_mol = args.n_molecules or (500 if args.quick else 5000)
    n_children = args.n_children or (500 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    gegl_budget = args.gegl_budget or (800 if args.quick else 3000)
    if args.quality_seeds is None:
        args.quality_seeds = 0 if args.quick else 3
    out = Path(args.out) if args.out else (
        REPO / "runs" / f"bench-gegl_speed-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else REPO / "runs" / "bench-gegl_speed-full")
    out.mkdir(parents=True, exist_ok=True)

    zinc = molecules.load_zinc250k(registry.fetch("zinc250k"))
    pick = np.random.default_rng(args.seed).permutation(len(zinc))
    parents = [zinc[i] for i in sorted(pick[: args.n_parents])]
    warm = [zinc[i] for i in pick[args.n_parents: args.n_parents + 20]]
    start = args.n_parents + 20
    prior = find_prior(args, out)
    timings: dict[str, float] = {}
    size = args.gegl_size
    command = "python " + " ".join(sys.argv)
    if args.imitation_only:
        out = Path(args.out) if args.out else (
            REPO / "runs" / f"bench-gegl_speed-imitation-{time.strftime('%Y%m%d-%H%M%S')}")
        out.mkdir(parents=True, exist_ok=True)
        rows, notes, extra = imitation_part(args, prior, gegl_budget, size)
        jp, mp = write_results("gegl_speed", "imitation-only", command, started,
                               time.perf_counter() - t0, rows, out, notes,
                               {**extra, "prior": prior})
        print(f"wrote {jp} and {mp}")
        return 0
    peer, peer_note = ensure_peer(args.peer_python)

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
    setting = f"gegl-round/{args.objective}/{size}+{size}-K{size}"
    for arm, overrides in ROUND_ARMS.items():
        t = time.perf_counter()
        split = gegl_round_split(args.objective, prior["path"], gegl_budget, args.gegl_size,
                                 args.seed, overrides)
        timings[f"{arm}_seconds"] = time.perf_counter() - t
        rows += split_rows(setting, arm, split)
        if arm == "gegl":
            n_rounds, gegl_calls = len(split["round"]), split["n_calls"][0]
    t = time.perf_counter()
    imit_rows, imit_notes, imit_extra = imitation_part(args, prior, gegl_budget, size)
    timings["imitation_seconds"] = time.perf_counter() - t
    rows += imit_rows

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
        f"every full round ({n_rounds} for the defaults). sampling = apprentice sampling + "
        "canonicalisation, ga = the expert's reproduce, scoring = both oracle calls, training = "
        "imitation; other = the rest (queues, dedup). Inside training: imitation_forward = "
        "SmilesLSTM.token_nll (embedding, LSTM, head, cross-entropy; once per group with length "
        "groups), imitation_backward = "
        "gradient_step less clipping and Adam (zeroing the gradients, backpropagation), "
        "imitation_clip_adam = clip_grad_norm_ + Adam's step, imitation_rest = encoding the "
        "queues' SMILES, cutting the batches, the mean over the batch's tokens, reading the "
        "losses back (shares of training time). Arm gegl = the default settings; arm "
        "gegl_bf16_length_groups4 = another seeded run with gegl.imitation_precision=bf16 and "
        "gegl.imitation_length_groups=4 (other arithmetic, so other molecules: its rounds are "
        "a breakdown, not paired with the default's; the paired comparison is "
        "`gegl-imitation/...`). Prior: "
        f"`{prior['path']}` (validity {prior.get('validity')}).",
        "",
        imit_notes,
        "",
        f"Machine load (1-minute average, os.getloadavg) at the start {load_start[0]:.2f}, at "
        f"the end {os.getloadavg()[0]:.2f}, on {os.cpu_count()} cores.",
        "",
        "Time of each part: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + ".",
    ])
    extra = {"objective": args.objective, "peer_python": peer, "peer_note": peer_note,
             "prior": prior, "gegl_calls": gegl_calls, "part_seconds": timings,
             "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg()),
             **imit_extra}
    jp, mp = write_results("gegl_speed", mode, command, started, time.perf_counter() - t0, rows,
                           out if args.out or args.quick else None, notes, extra)
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
