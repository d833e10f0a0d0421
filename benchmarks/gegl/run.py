"""GEGL vs Graph GA, SMILES-LSTM hill climbing, REINVENT and the GEGL ablations, PMO protocol.

PMO protocol (Gao et al. 2022): a budget of unique oracle calls per run (10k), several seeds,
metric AUC of the running top-10 mean versus calls (``auc_top10``), also ``top10_mean``, ``top1``
and ``wall_seconds``. Arms (REFERENCES.md section 4): gegl, graph_ga, lstm_hc, reinvent,
gegl_no_expert, gegl_no_learning and the control prior_only, all with their library defaults
(budgeted GEGL: 100 + 100 per round, K = 100); every arm that needs a prior starts from the same
pretrained SMILES LSTM. Tasks: by default the eight hardest PMO tasks (both median-molecule tasks
and the Osimertinib, Ranolazine, Perindopril, Amlodipine, Sitagliptin and Zaleplon MPOs);
``--tasks all`` runs the 20 PMO tasks that need no downloaded model. Settings are named as
GuacaMol names the task. Also unconstrained penalized logP in GEGL's ZINC-normalised form, with
SMILES of at most 100 characters as in GEGL's reference (top1 and top3_mean).

    python benchmarks/gegl/run.py --quick --threads 1   # minutes: 2 tasks, 500 calls, 1 seed
    python benchmarks/gegl/run.py --threads 1            # full: 8 tasks, 10k calls, seeds 0 1 2
    python benchmarks/gegl/run.py --prior runs/RUN/model.pt --tasks all

Without ``--prior`` the script pretrains one with configs/chem/pretrain_zinc_bench.yaml into
``<out>/prior/`` once (quick mode: a much shorter pretraining) and reuses it. Every finished
(task, arm, seed) unit is cached in ``<out>/gegl_cache.json``; a unit killed half way is resumed
from its run directory (replay-resume of ``selfsup.chem.optimize``), so a killed benchmark started
again with the same arguments goes on where it was. ``--report`` writes the results from the
cache without running what is missing. Full mode keeps its unit cache in
``benchmarks/results/gegl_cache.json`` and its prior in ``benchmarks/results/gegl_prior/`` (both
committed, so a benchmark spread over several sessions or machines goes on where it was), its runs
in ``runs/bench-gegl-full/``, and writes ``benchmarks/results/gegl.{json,md}``; quick mode writes
everything into its output folder. Several runners may share one cache (e.g. different
``--seeds``): each merges the file from disk before it writes a finished unit, and a lock file
per unit (``<out>/runs/<unit>.lock``, its pid) keeps two runners off the same unit.

    python benchmarks/gegl/run.py --name gegl_strong --bf16 \
        --prior benchmarks/results/gegl_prior_strong/model.pt \
        --arms gegl lstm_hc reinvent gegl_no_expert prior_only graph_ga

(issue 24's rerun with the shipped prior: ``--name`` keeps a second full benchmark beside the first,
``benchmarks/results/gegl_strong.{json,md}``, its cache ``gegl_strong_cache.json`` and its runs in
``runs/bench-gegl_strong-full/``; ``--bf16`` trains every apprentice arm with the opt-in bf16
settings, ``selfsup.chem.optimize.BF16_SPEED_OVERRIDES``, recorded in the cache, which then refuses
units of the other setting; a run folder is reused only with the same settings. Its report puts
each arm beside the first prior's run, ``--beside benchmarks/results/gegl_cache.json`` by default:
AUC and final top-10 sums over the tasks on the seeds both finished, and each arm's rank under
each prior, so the prior's part in the ranking shows.)

    python benchmarks/gegl/run.py --verify               # re-run committed units, compare

``--verify`` runs committed units again (default: the cheapest graph_ga and gegl units;
``--tasks``, ``--arms``, ``--seeds``, ``--budget`` and ``--verify-per-arm N`` choose others) with
the committed prior into a scratch folder, never the committed cache, and prints old and new
figures side by side with the provenance (commit, torch build, CPU) of both;
``gegl_verify.{json,md}`` in the scratch folder hold the comparison. Every unit finished from now
on records its provenance in the cache.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    claim_speed_setting,
    compare_units,
    finish_invocation,
    has_settings,
    load_json,
    merge_cache,
    now,
    provenance_census,
    resumed_work_seconds,
    row,
    run_planned,
    select_cheapest,
    speed_overrides,
    start_invocation,
    stored_path,
    unit_wall,
    verify_candidates,
    verify_folder,
    write_results,
    write_verification,
)
from selfsup.provenance import provenance  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
COMMITTED_PRIOR = RESULTS / "gegl_prior"
PRETRAIN_CONFIG = REPO / "configs" / "chem" / "pretrain_zinc_bench.yaml"
QUICK_PRETRAIN_STEPS = 300

ARMS = ("gegl", "graph_ga", "lstm_hc", "reinvent", "gegl_no_expert", "gegl_no_learning",
        "prior_only")
# REINVENT's sigma 500 assumes scores in [0, 1]; penalized logP is unbounded and scores an
# invalid SMILES -1000, which would swamp its loss, so it sits out the penalized-logP setting.
PLOGP_ARMS = tuple(a for a in ARMS if a != "reinvent")
HARDEST = ("median1", "median2", "osimertinib_mpo", "ranolazine_mpo", "perindopril_mpo",
           "amlodipine_mpo", "sitagliptin_mpo", "zaleplon_mpo")
QUICK_TASKS = ("osimertinib_mpo", "median1")
# GEGL's form: z(logP) - z(SA) - z(max(largest ring - 6, 0)), ZINC250k statistics, cycle-basis
# rings; scored only for canonical SMILES of <= 100 characters, the limit of GEGL's reference code
# (unlimited, the score grows with chain length: a graph GA passed 500 raw within 1.5k calls here)
PLOGP = "penalized_logp_gegl"
PLOGP_MAX_SMILES = 100


def pmo_tasks() -> list[str]:
    """The PMO tasks that need no downloaded classifier (registry suite 'pmo': 23 minus DRD2,
    GSK3B, JNK3)."""
    from selfsup.chem.objectives import list_objectives

    return list(list_objectives("pmo"))


def display_name(task: str) -> str:
    from selfsup.chem.objectives import get_objective

    return getattr(get_objective(task), "display_name", task)


def budget_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


# ------------------------------------------------------------------------------------ prior
def _resolved(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


def _commit_prior(info: dict) -> dict:
    """Copy a prior pretrained under runs/ into benchmarks/results/gegl_prior/ (model.pt with its
    config and results, a few MB) so that the committed cache's units keep their prior."""
    import shutil

    src = _resolved(info["path"]).parent
    COMMITTED_PRIOR.mkdir(parents=True, exist_ok=True)
    for name in ("model.pt", "results.json", "config.yaml"):
        if (src / name).is_file():
            tmp = COMMITTED_PRIOR / f".{name}.tmp"
            shutil.copyfile(src / name, tmp)
            tmp.replace(COMMITTED_PRIOR / name)
    return {**info, "path": stored_path(COMMITTED_PRIOR / "model.pt"),
            "pretrained_in": info["path"]}


def _prior_info(model_path: Path, source: str) -> dict:
    import hashlib

    import yaml

    res = load_json(model_path.parent / "results.json")
    cfg_file = model_path.parent / "config.yaml"
    model = (yaml.safe_load(cfg_file.read_text()) or {}).get("model", {}) if cfg_file.is_file() \
        else {}
    return {"path": stored_path(model_path), "source": source,
            "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
            "validity": res.get("validity"), "n_samples": res.get("n_samples"),
            "val_loss": res.get("val_loss"), "steps": res.get("steps"),
            "n_params": res.get("n_params"), "n_train": res.get("n_train"),
            "size": (f"{model['n_layers']} x {model['hidden_dim']}"
                     if {"n_layers", "hidden_dim"} <= set(model) else None),
            "train_seconds": res.get("train_seconds")}


def ensure_prior(out: Path, given: str | None, steps: int | None, threads: int | None,
                 cache: dict | None = None) -> dict:
    """The prior every apprentice arm starts from: ``given``, else one pretrained (once) into
    ``<out>/prior/`` with configs/chem/pretrain_zinc_bench.yaml (``steps`` overrides its
    max_steps), resumed from its checkpoint if an earlier pretraining was killed."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise SystemExit(f"--prior {given}: no such file (a model.pt of selfsup chem pretrain)")
        return _prior_info(path, "given (--prior)")
    if cache is not None and "prior" in cache and _resolved(cache["prior"]["path"]).is_file():
        return cache["prior"]
    from selfsup.chem import lstm as pt
    from selfsup.runs import Run

    root = out / "prior"
    overrides = [f"run_root={root}"] + ([f"trainer.threads={threads}"] if threads else []) + (
        [f"optim.max_steps={steps}"] if steps else [])
    runs = sorted(p for p in root.glob("*") if (p / "run.json").is_file()) if root.is_dir() else []
    print(f"[gegl bench] pretraining the prior ({PRETRAIN_CONFIG.name}, "
          f"{'resumed' if runs else 'new'}) into {root}", flush=True)
    if runs and Run.open(runs[-1]).meta.get("status") == "finished":
        run_path = runs[-1]
    elif runs and (runs[-1] / "checkpoints" / "last.ckpt").is_file():
        run_path = pt.resume(runs[-1])[0].path
    else:
        run_path = pt.pretrain(str(PRETRAIN_CONFIG), overrides)[0].path
    info = _prior_info(run_path / "model.pt", f"pretrained here ({PRETRAIN_CONFIG.name}"
                       + (f", max_steps={steps}" if steps else "") + ")")
    if cache is not None:
        cache["prior"] = info
    return info


# ------------------------------------------------------------------------------------ units
def _summary(res: dict, run_path: Path, resumed: bool, reused: bool = False) -> dict:
    """A unit's cache entry from its run's results. ``resumed``: this process resumed a killed
    run; ``reused``: it found the run finished and only read it. ``work_seconds``: for a run
    resumed after a kill (by this process or an earlier one), the working time of all its
    processes (:func:`common.run_work_seconds`; the results' ``wall_seconds`` are its last
    process's), else None."""
    top = [t["score"] for t in res.get("top10", [])][:3]
    keys = ("auc_top10", "top10_mean", "top1", "wall_seconds", "n_calls", "stopped", "n_too_long",
            "benchmark_score")
    out = {k: res[k] for k in keys if k in res}
    out.update(top3_mean=sum(top) / len(top) if top else float("nan"), run=str(run_path),
               resumed=resumed, reused=reused,
               work_seconds=resumed_work_seconds(run_path))
    return out


def run_unit(task: str, arm: str, seed: int, budget: int, prior: str, run_root: Path,
             overrides: tuple[str, ...] = ()) -> dict:
    """One (task, arm, seed) optimisation through selfsup.chem.optimize; resumes a killed one.
    ``overrides``: the speed settings (:func:`speed_overrides`)."""
    import yaml

    from selfsup.chem.optimize import optimize, resume
    from selfsup.runs import Run

    name = f"{task}-{arm}-s{seed}"
    # the committed MPO/median units ran without a length limit (the library's old default);
    # the limit is passed explicitly ("null") now that OptimizeConfig defaults to 100
    limit = PLOGP_MAX_SMILES if task == PLOGP else None
    for old in sorted(run_root.glob(f"{name}-2*"), reverse=True):
        if not (old / "run.json").is_file() or not (old / "config.yaml").is_file():
            continue
        cfg = yaml.safe_load((old / "config.yaml").read_text()) or {}
        if (cfg.get("budget") != budget or cfg.get("prior") != prior
                or cfg.get("max_smiles_length") != limit or not has_settings(cfg, overrides)):
            continue
        if Run.open(old).meta.get("status") == "finished" and (old / "results.json").is_file():
            return _summary(load_json(old / "results.json"), old, resumed=False, reused=True)
        if (old / "oracle_calls.csv").is_file():
            print(f"[gegl bench] resuming {old.name}", flush=True)
            run, res = resume(old)
            return _summary(res, run.path, resumed=True)
    run, res = optimize(None, [f"name={name}", f"run_root={run_root}", f"objective={task}",
                               f"optimizer={arm}", f"seed={seed}", f"budget={budget}",
                               f"prior={prior}", "n_jobs=1",
                               f"max_smiles_length={'null' if limit is None else limit}",
                               *overrides])
    return _summary(res, run.path, resumed=False)


def unit_key(task: str, arm: str, seed: int, budget: int) -> str:
    return f"{task}|{arm}|{seed}|{budget}"


# ------------------------------------------------------------------------------------ rows
def build_rows(cache: dict, tasks: list[str], arms: list[str], seeds: list[int], budget: int,
               plogp_budget: int, plogp_arms: list[str]) -> tuple[list[dict], list[str]]:
    rows, missing = [], []
    for task in tasks:
        setting = display_name(task)
        for arm in arms:
            done = [cache[k] for s in seeds if (k := unit_key(task, arm, s, budget)) in cache]
            missing += [unit_key(task, arm, s, budget) for s in seeds
                        if unit_key(task, arm, s, budget) not in cache]
            if done:
                for metric in ("auc_top10", "top10_mean", "top1"):
                    rows.append(row(setting, arm, metric, [u[metric] for u in done]))
                rows.append(row(setting, arm, "wall_seconds", [unit_wall(u) for u in done]))
    for arm in arms:  # per-seed sums over the tasks (only seeds where every task finished)
        full = [s for s in seeds if all(unit_key(t, arm, s, budget) in cache for t in tasks)]
        if full and tasks:
            rows.append(row("sum-over-tasks", arm, "auc_top10_sum",
                            [sum(cache[unit_key(t, arm, s, budget)]["auc_top10"] for t in tasks)
                             for s in full]))
            rows.append(row("sum-over-tasks", arm, "wall_seconds_sum",
                            [sum(unit_wall(cache[unit_key(t, arm, s, budget)])
                                 for t in tasks) for s in full]))
    setting = f"penalized-logP/{budget_label(plogp_budget)}-calls"
    for arm in plogp_arms:
        done = [cache[k] for s in seeds if (k := unit_key(PLOGP, arm, s, plogp_budget)) in cache]
        missing += [unit_key(PLOGP, arm, s, plogp_budget) for s in seeds
                    if unit_key(PLOGP, arm, s, plogp_budget) not in cache]
        if done:
            for metric in ("top1", "top3_mean"):
                rows.append(row(setting, arm, metric, [u[metric] for u in done]))
            rows.append(row(setting, arm, "wall_seconds", [unit_wall(u) for u in done]))
    return rows, missing


# what --verify compares: the figures of a unit, and its timing (never equal)
VERIFY_FIGURES = ("auc_top10", "top10_mean", "top1", "top3_mean", "n_calls", "n_too_long",
                  "benchmark_score")
VERIFY_TIMING = ("wall_seconds", "unit_seconds")
VERIFY_DEFAULT_ARMS = ("graph_ga", "gegl")


def verify(args: argparse.Namespace) -> int:
    """--verify: run again the cheapest committed units (per arm) that match --tasks, --arms,
    --seeds and --budget into a scratch folder, and report old and new figures side by side."""
    import torch

    cache_path = RESULTS / "gegl_cache.json"
    committed = load_json(cache_path)
    if args.tasks in (None, ["all"]):
        tasks = None  # any task of the cache
    elif args.tasks == ["hardest"]:
        tasks = list(HARDEST)
    else:
        tasks = list(args.tasks)
    narrowed = bool(args.tasks or args.arms or args.seeds or args.budget)
    arms = args.arms or (ARMS if narrowed else VERIFY_DEFAULT_ARMS)
    cost = verify_candidates(committed, tasks, arms, args.seeds, args.budget)
    picked = select_cheapest(cost, lambda k: k.split("|")[1], args.verify_per_arm)
    if not picked:
        raise SystemExit(f"no unit of {cache_path} matches --tasks/--arms/--seeds/--budget")
    prior = committed.get("prior") or {}
    prior_path = Path(args.prior) if args.prior else _resolved(prior.get("path", ""))
    if not prior_path.is_file():
        raise SystemExit(f"the committed units' prior {prior_path} is missing; pass --prior")
    scratch = verify_folder(args.out, "gegl")
    started, command = now(), "python " + " ".join(sys.argv)
    print(f"[gegl verify] {len(picked)} committed unit(s) into {scratch}: {', '.join(picked)}",
          flush=True)
    units: list[dict] = []
    for key in picked:
        task, arm, seed, budget = key.split("|")
        old = committed[key]
        # the committed units ran with --threads 1 (their invocations); a recorded one wins
        threads = (args.threads or (old.get("provenance") or {}).get("torch_threads") or 1)
        torch.set_num_threads(int(threads))
        print(f"[gegl verify] {key}: {threads} thread(s), about {cost[key] / 60:.1f} min on the "
              "machine that ran it", flush=True)
        t_unit = time.perf_counter()
        new = run_unit(task, arm, int(seed), int(budget), str(prior_path), scratch / "runs")
        new["unit_seconds"] = round(time.perf_counter() - t_unit, 1)
        new["provenance"] = provenance()
        units.append({"key": key, "old": old, "new": new,
                      "old_provenance": old.get("provenance"),
                      "new_provenance": new["provenance"],
                      "old_context": f"run {old.get('run', '?')}, prior {prior.get('path', '?')}"})
        rows = compare_units(units, VERIFY_FIGURES, VERIFY_TIMING)
        jp, mp, text = write_verification(scratch, "gegl", command, started, units, rows)
    print(text)
    print(f"wrote {jp} and {mp}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 tasks, 500 calls, 1 seed")
    ap.add_argument("--tasks", nargs="+", default=None,
                    help="registry names, 'hardest' (default) or 'all' (the 20 PMO tasks that "
                         "need no downloaded model)")
    ap.add_argument("--arms", nargs="+", default=None, choices=ARMS)
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--budget", type=int, default=None, help="unique oracle calls per run")
    ap.add_argument("--plogp-budget", type=int, default=None,
                    help="budget of the penalized-logP setting (default: --budget); 0 skips it")
    ap.add_argument("--prior", default=None, help="model.pt of selfsup chem pretrain")
    ap.add_argument("--pretrain-steps", type=int, default=None,
                    help=f"max_steps of the pretraining when there is no --prior (default: the "
                         f"config's 2400; quick mode {QUICK_PRETRAIN_STEPS})")
    ap.add_argument("--out", default=None, help="output folder (cache, runs, prior)")
    ap.add_argument("--name", default="gegl",
                    help="full mode: the benchmark's name, gegl or gegl_<tag> (e.g. gegl_strong "
                    "for the run with the shipped prior): results benchmarks/results/<name>."
                    "{json,md}, unit cache <name>_cache.json, runs runs/bench-<name>-full")
    ap.add_argument("--beside", default=None, metavar="CACHE",
                    help="a unit cache of another run of this benchmark (e.g. the first prior's "
                    "benchmarks/results/gegl_cache.json) whose arms the report puts beside "
                    "this run's (sums over the tasks, ranks); default: that file for a full "
                    "run named gegl_<tag>, none otherwise")
    ap.add_argument("--bf16", action="store_true",
                    help="every apprentice arm with its opt-in bf16 speed settings "
                    "(selfsup.chem.optimize.BF16_SPEED_OVERRIDES); a cache holds units of one "
                    "setting")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--report", action="store_true",
                    help="only write results from the cache (run nothing)")
    ap.add_argument("--verify", action="store_true",
                    help="run committed units of benchmarks/results/gegl_cache.json again into a "
                         "scratch folder (--out, default runs/verify-gegl-<time>) and compare "
                         "their figures with the committed ones; default: the cheapest graph_ga "
                         "and gegl units, else the cheapest per arm of those --tasks/--arms/"
                         "--seeds/--budget match")
    ap.add_argument("--verify-per-arm", type=int, default=1, metavar="N",
                    help="--verify: the N cheapest matching units of each arm (default 1)")
    args = ap.parse_args()
    if args.verify:
        if args.quick or args.report:
            raise SystemExit("--verify re-runs committed full-mode units; drop --quick/--report")
        return verify(args)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    if args.tasks in (None, ["hardest"]):
        tasks = list(QUICK_TASKS if args.quick else HARDEST)
    elif args.tasks == ["all"]:
        tasks = pmo_tasks()
    else:
        valid = pmo_tasks()
        bad = [t for t in args.tasks if t not in valid]
        if bad:
            raise SystemExit(f"--tasks {bad}: not PMO tasks of the registry; valid: {valid}")
        tasks = list(args.tasks)
    arms = list(args.arms or ARMS)
    plogp_arms = [a for a in arms if a in PLOGP_ARMS]
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    budget = args.budget or (500 if args.quick else 10000)
    plogp_budget = budget if args.plogp_budget is None else args.plogp_budget
    name = args.name
    if not re.fullmatch(r"gegl(_[a-z0-9]+)?", name):
        raise SystemExit(f"--name {name}: use gegl or gegl_<tag> (lower-case letters, digits)")
    out = Path(args.out) if args.out else (
        REPO / "runs" / f"bench-{name}-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else REPO / "runs" / f"bench-{name}-full")
    out.mkdir(parents=True, exist_ok=True)
    committed = not (args.out or args.quick)  # full mode's cache and prior live in the repository
    cache_path = (RESULTS if committed else out) / f"{name}_cache.json"
    cache = load_json(cache_path)
    run_root = out / "runs"
    steps = args.pretrain_steps or (QUICK_PRETRAIN_STEPS if args.quick else None)

    if args.report:
        prior = cache.get("prior") or ({"path": args.prior} if args.prior else {})
    else:
        print(f"[gegl bench] run folder {out}; unit cache {cache_path}", flush=True)
        t_prior = time.perf_counter()
        before = cache.get("prior", {}).get("path")
        prior = ensure_prior(out, args.prior, steps, args.threads, cache)
        if committed and not args.prior and not _resolved(prior["path"]).is_relative_to(
                COMMITTED_PRIOR):
            prior = _commit_prior(prior)
        if before and before != prior["path"] and any("|" in k for k in cache):
            raise SystemExit(f"{cache_path} holds units run with the prior {before}; pass that "
                             "--prior or another --out")
        prior.setdefault("seconds_this_run", round(time.perf_counter() - t_prior, 1))
        cache = merge_cache(cache_path, cache)
        cache["prior"] = prior
        claim_speed_setting(cache, cache_path, args.bf16, any("|" in k for k in cache),
                            "another --out/--name")
        invocation = start_invocation(cache, cache_path, started,
                                      "python " + " ".join(sys.argv))
        prior_path = str(_resolved(prior["path"]))
        # seed-major: a benchmark stopped part way has whole seeds over every task
        units = []
        for s in seeds:
            units += [(t, a, s, budget) for t in tasks for a in arms]
            if plogp_budget:
                units += [(PLOGP, a, s, plogp_budget) for a in plogp_arms]
        overrides = speed_overrides(args.bf16)
        plan = [(unit_key(*u), lambda u=u: run_unit(*u, prior_path, run_root, overrides))
                for u in units]
        cache = run_planned(
            plan, cache, cache_path, run_root, "[gegl bench]", stamp=True,
            describe=lambda u: (f"auc_top10 {u['auc_top10']:.4f} top1 {u['top1']:.4f} "
                                f"{u['wall_seconds']:.0f}s ({u['unit_seconds']:.0f}s with "
                                "start-up)"))
        cache = finish_invocation(cache, cache_path, invocation, t0)

    rows, missing = build_rows(cache, tasks, arms, seeds, budget,
                               plogp_budget if plogp_budget else 0,
                               plogp_arms if plogp_budget else [])
    notes = make_notes(tasks, arms, seeds, budget, plogp_budget, prior, missing, args.quick,
                       cache)
    command = "python " + " ".join(sys.argv)
    extra = {"tasks": tasks, "arms": arms, "seeds": seeds, "budget": budget,
             "plogp_budget": plogp_budget, "prior": prior, "missing_units": missing,
             "cache": str(cache_path), "speed": cache.get("speed", "fp32")}
    beside = args.beside or (str(RESULTS / "gegl_cache.json") if committed and name != "gegl"
                             else None)
    if beside:
        first = load_json(Path(beside))
        if not first:
            raise SystemExit(f"--beside {beside}: no such unit cache (a <name>_cache.json of "
                             "this benchmark)")
        table, figures = beside_table(cache, first, tasks, arms, seeds, budget,
                                      plogp_budget if plogp_budget else 0)
        fp = first.get("prior", {})
        notes += ("\n\n## Beside another prior's run\n\n"
                  f"The same tasks, seeds and budget with the prior of `{beside}` (first "
                  f"prior: `{fp.get('path', '?')}`, {fp.get('size') or '2 x 256'}, validity "
                  f"{_fmt(fp.get('validity'))}; this run's: `{prior.get('path', '?')}`, "
                  f"{prior.get('size') or '?'}, validity {_fmt(prior.get('validity'))}), arms "
                  "that finished every task on some seed in both; sums over the tasks, mean "
                  "+- std over those seeds; rank by the mean AUC sum among these arms "
                  "(1 = best). The first run's speed setting: "
                  f"{first.get('speed', 'fp32')}; this run's: {cache.get('speed', 'fp32')}."
                  + (f"\n\n{table}" if table else "\n\nNo arm has finished in both yet."))
        extra["beside"] = {"cache": beside, "prior": fp, "arms": figures}
    jp, mp = write_results(name, mode, command, started, time.perf_counter() - t0, rows,
                           out if args.out or args.quick else None, notes, extra)
    print(f"wrote {jp} and {mp}" + (f" ({len(missing)} units missing)" if missing else ""))
    return 0


def _pm(vals: list[float], digits: int = 3) -> str:
    """mean +- sample std of the values (the value alone when there is one)."""
    import statistics

    m = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} +- {statistics.stdev(vals):.{digits}f}"


def seed_sums(cache: dict, tasks: list[str], arm: str, seeds: list[int], budget: int,
              metric: str) -> list[float]:
    """Per seed, the sum over ``tasks`` of the arm's ``metric``: only seeds where every task
    finished."""
    full = [s for s in seeds if all(unit_key(t, arm, s, budget) in cache for t in tasks)]
    return [sum(cache[unit_key(t, arm, s, budget)][metric] for t in tasks) for s in full]


def beside_table(cache: dict, first: dict, tasks: list[str], arms: list[str], seeds: list[int],
                 budget: int, plogp_budget: int = 0) -> tuple[str, dict]:
    """This run's arms beside the same arms of another cache (``first``: the first prior's
    benchmark), so the prior's part in the ranking shows: per arm the AUC and final top-10 sums
    over the tasks (mean +- std over the seeds where every task finished in both), the arms'
    ranks by mean AUC sum under each prior (1 = best; among the arms complete in both), and the
    penalized-logP top-1 (every seed each run has). Returns (Markdown, the same figures as a
    dict)."""
    import statistics

    paired = {a: [sd for sd in seeds if tasks and all(
        unit_key(t, a, sd, budget) in c for t in tasks for c in (cache, first))]
        for a in arms}  # seeds where every task finished in both runs
    both = [a for a in arms if paired[a]]
    if not both:
        return "", {}
    figures: dict[str, dict] = {}
    for a in both:
        f = figures[a] = {"seeds": paired[a]}
        for tag, c in (("first", first), ("this", cache)):
            for metric in ("auc_top10", "top10_mean"):
                f[f"{metric}_sum_{tag}"] = seed_sums(c, tasks, a, f["seeds"], budget, metric)
            f[f"plogp_top1_{tag}"] = [c[k]["top1"] for sd in seeds
                                      if (k := unit_key(PLOGP, a, sd, plogp_budget)) in c]
    for tag in ("first", "this"):
        order = sorted(both, key=lambda a: -statistics.fmean(figures[a][f"auc_top10_sum_{tag}"]))
        for i, a in enumerate(order):
            figures[a][f"rank_{tag}"] = i + 1
    lines = ["| arm | AUC sum, first prior | AUC sum, this prior | change of the mean | rank "
             "(first -> this) | top-10 sum, first | top-10 sum, this | penalized logP top-1, "
             "first | this |", "|---" * 9 + "|"]
    for a in both:
        f = figures[a]
        change = (statistics.fmean(f["auc_top10_sum_this"])
                  - statistics.fmean(f["auc_top10_sum_first"]))
        n = "" if len(f["seeds"]) == len(seeds) else f" (seeds {f['seeds']})"
        lines.append(
            f"| {a}{n} | {_pm(f['auc_top10_sum_first'])} | {_pm(f['auc_top10_sum_this'])} | "
            f"{change:+.3f} | {f['rank_first']} -> {f['rank_this']} | "
            f"{_pm(f['top10_mean_sum_first'])} | {_pm(f['top10_mean_sum_this'])} | "
            f"{_pm(f['plogp_top1_first'], 2) if f['plogp_top1_first'] else '-'} | "
            f"{_pm(f['plogp_top1_this'], 2) if f['plogp_top1_this'] else '-'} |")
    return "\n".join(lines), figures


def summary_table(cache: dict, tasks: list[str], arms: list[str], seeds: list[int], budget: int,
                  plogp_budget: int = 0, plogp_arms: list[str] | tuple = ()) -> str:
    """The README's table: task x arm, auc_top10 mean +- std over the finished seeds with the
    top-10 mean at the budget in brackets; the per-seed sums over the tasks of auc_top10 and of
    the final top-10 mean (seeds where every task finished); how many runs stopped before the
    budget because the optimiser found no new molecules or its top-10 stayed unchanged for
    ``stale_rounds`` rounds (AUC then carries the last value flat);
    mean optimiser minutes per unit; penalized logP top-1 and top-3 mean."""
    import statistics

    from selfsup.chem.optimize.base import GEGLConfig

    def units(task, arm, b):
        return [cache[k] for s in seeds if (k := unit_key(task, arm, s, b)) in cache]

    def note(n: int) -> str:
        return "" if n == len(seeds) else f" (n={n})"

    lines = ["| task | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for t in tasks:
        cells = []
        for a in arms:
            u = units(t, a, budget)
            cells.append(f"{_pm([x['auc_top10'] for x in u])} "
                         f"({statistics.fmean(x['top10_mean'] for x in u):.3f}){note(len(u))}"
                         if u else "-")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    for label, metric, bold in (("sum over the tasks above", "auc_top10", "**"),
                                ("top-10 mean at the end, sum over the tasks", "top10_mean", "")):
        cells = [f"{bold}{_pm(v)}{bold}{note(len(v))}"
                 if (v := seed_sums(cache, tasks, a, seeds, budget, metric)) else "-"
                 for a in arms]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for a in arms:
        u = [x for t in tasks for x in units(t, a, budget) if "n_calls" in x]
        short = [x for x in u if x["n_calls"] < budget]
        stale = sum(str(x.get("stopped", "")).startswith("top-10 unchanged") for x in short)
        cells.append(f"{len(short)}/{len(u)}"
                     + (f" ({statistics.fmean(x['n_calls'] for x in short):.0f} calls"
                        + (f"; {stale} on the top-10 rule" if stale else "") + ")"
                        if short else "") if u else "-")
    rules = GEGLConfig()  # every apprentice arm ran with these stopping defaults
    lines.append(f"| runs that stopped before the budget: no new molecule in {rules.patience} "
                 f"rounds, or the top-10 unchanged for {rules.stale_rounds:,} (their mean calls) | "
                 + " | ".join(cells) + " |")
    cells = []
    for a in arms:
        u = [x for t in tasks for x in units(t, a, budget)]
        cells.append(f"{statistics.fmean(unit_wall(x) for x in u) / 60:.1f}" if u else "-")
    lines.append("| optimiser minutes per unit, mean | " + " | ".join(cells) + " |")
    if plogp_budget and plogp_arms:
        cells = []
        for a in arms:
            u = units(PLOGP, a, plogp_budget) if a in plogp_arms else []
            cells.append(f"{_pm([x['top1'] for x in u], 2)} / {_pm([x['top3_mean'] for x in u], 2)}"
                         f"{note(len(u))}" if u else "-")
        lines.append(f"| penalized logP (GEGL form, SMILES <= {PLOGP_MAX_SMILES}), "
                     f"{budget_label(plogp_budget)} calls: top-1 / top-3 "
                     "mean | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _count(n) -> str | None:
    return f"{n:,}" if isinstance(n, int) else None


def make_notes(tasks, arms, seeds, budget, plogp_budget, prior, missing, quick, cache) -> str:
    names = ", ".join(f"{display_name(t)} (`{t}`)" for t in tasks)
    validity = prior.get("validity")
    lines = [
        f"Tasks that ran ({len(tasks)} of the 20 PMO tasks that need no downloaded model): "
        f"{names}. Budget {budget} unique oracle calls per run, seeds {seeds}, arms "
        f"{', '.join(arms)}; every arm with its library defaults (budgeted GEGL: 100 apprentice "
        "samples + 100 expert children per round, K = 100 per queue, 8 imitation steps x 64; "
        "Graph GA: population 120, 70 offspring, mutation 0.067, ZINC250k start; REINVENT: PMO's "
        "lr 5e-4, batch 64, sigma 500, replay 24; LSTM-HC: 256 samples, top 128).",
        "",
        f"Prior (one model for every apprentice arm): {prior.get('source', '?')}, "
        f"`{prior.get('path', '?')}`, {prior.get('steps', '?')} steps, validity "
        f"{validity if validity is not None else '?'} of {prior.get('n_samples') or 500} samples, "
        f"validation loss {_fmt(prior.get('val_loss'))}, {prior.get('n_params', '?')} parameters "
        f"({prior.get('size') or '2 x 256'} LSTM on "
        f"{_count(prior.get('n_train')) or '50k'} ZINC250k molecules). "
        + ("Apprentice training in bfloat16 autocast (`--bf16`: "
           + ", ".join(f"`{o}`" for o in speed_overrides(True)) + "). "
           if cache.get("speed") == "bf16" else "")
        + "PMO's published numbers used a REINVENT-style prior "
        "trained on ChEMBL/ZINC of a different (larger) size, 5 seeds and its own GA/LSTM "
        "settings, so absolute values are not comparable with its tables; the arms here share "
        "one prior and one oracle.",
        "",
        "auc_top10: area under the running top-10 mean vs calls (logged every 100 calls, "
        "carried flat to the budget if a run stops early), divided by the budget. "
        "sum-over-tasks/auc_top10_sum: per-seed sum over the tasks above (seeds where every task "
        "finished); wall_seconds_sum likewise.",
    ]
    if plogp_budget:
        lines += ["", f"penalized-logP/{budget_label(plogp_budget)}-calls: unconstrained "
                  "penalized logP in GEGL's ZINC-normalised form (objective "
                  f"`{PLOGP}`: z(logP) - z(SA) - z(max(largest ring - 6, 0)), cycle-basis rings; "
                  "the form of the paper's 31.40), scored only for canonical SMILES of at most "
                  f"{PLOGP_MAX_SMILES} characters, the limit of GEGL's reference code (longer "
                  "ones are dropped unpaid, `max_smiles_length`); without a limit the score "
                  "grows with molecule size (a run here without it: graph GA at 506 raw after "
                  "1,466 calls with a 2,264-character SMILES, GEGL 38.6 raw with a 209-character "
                  f"one). Budget {plogp_budget} unique calls (the paper: about 3.3 M), metrics "
                  "top1 (best value) and top3_mean. REINVENT sits out this setting: its sigma 500 "
                  "assumes scores in [0, 1] and an invalid SMILES scores -1000 here."]
    mine = {k: u for k, u in cache.items() if "|" in k and k.split("|")[0] in (*tasks, PLOGP)
            and k.split("|")[1] in arms}
    # start-up of the unit's last process + the optimiser's working time over all its processes
    unit_s = sum(u.get("unit_seconds", u["wall_seconds"]) - u["wall_seconds"] + unit_wall(u)
                 for u in mine.values())
    lines += ["", f"Time: the finished units took {unit_s / 3600:.2f} h in all (start-up included; "
              "each row's wall_seconds is the optimiser's own time)"
              + (f"; the prior's pretraining took {prior['train_seconds'] / 60:.0f} min"
                 if prior.get("train_seconds") else "") + "."]
    summed = [k for k, u in mine.items() if u.get("work_seconds") is not None]
    last_only = [k for k, u in mine.items() if u.get("resumed") and "work_seconds" not in u]
    if summed:
        lines.append("Units resumed after a kill (an apprentice arm goes on from its last state "
                     "snapshot, a graph GA replays its call record): their wall_seconds add up "
                     "the working time of every process, from the run's log: "
                     f"{', '.join(summed)}.")
    if last_only:
        lines.append("Units resumed after a kill before the benchmark recorded the working time "
                     "of every process: their wall_seconds are their last process's: "
                     f"{', '.join(last_only)}.")
    lines.append(provenance_census(u for k, u in cache.items() if "|" in k
                                   and k.split("|")[0] in (*tasks, PLOGP)
                                   and k.split("|")[1] in arms))
    for inv in cache.get("invocations", []):
        took = (f"{inv['seconds'] / 60:.1f} min" if inv.get("seconds") is not None
                else "stopped before its end, or still running")
        lines.append(f"Started {inv['started']}: {took} (`{inv['command']}`).")
    if quick:
        lines += ["", f"Quick mode: {len(tasks)} tasks, {budget} calls, {len(seeds)} seed(s)"
                  + ("; the prior is a much shorter pretraining than the full mode's 2400 steps"
                     if "max_steps" in str(prior.get("source", "")) else "") + "."]
        est = _estimate(cache, tasks, arms, seeds, budget)
        if est:
            lines.append(est)
    lines += ["", "Summary (auc_top10 mean +- std over the seeds, top-10 mean at the budget in "
              "brackets; n = seeds finished where fewer than asked):", "",
              summary_table(cache, tasks, arms, seeds, budget, plogp_budget,
                            [a for a in arms if a in PLOGP_ARMS])]
    if missing:
        shown = ", ".join(missing[:12]) + (", ..." if len(missing) > 12 else "")
        lines += ["", f"Missing units (not run yet, {len(missing)}; all listed in the JSON): "
                  f"{shown}."]
    return "\n".join(lines)


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x if x is not None else "?")


def _estimate(cache, tasks, arms, seeds, budget) -> str:
    """Rough full-mode time from the quick units: optimiser time scaled linearly in calls, plus
    each unit's start-up (loading the start pool and the prior) unscaled."""
    per_arm, startup = {}, []
    for arm in arms:
        units = [cache[k] for t in tasks for s in seeds if (k := unit_key(t, arm, s, budget))
                 in cache]
        if units:
            per_arm[arm] = sum(unit_wall(u) for u in units) / len(units)
            startup += [u["unit_seconds"] - u["wall_seconds"] for u in units
                        if "unit_seconds" in u]
    if not per_arm:
        return ""
    scale = 10000 / budget
    extra = sum(startup) / len(startup) if startup else 0.0
    one = sum(per_arm.values()) * scale + extra * len(per_arm)  # one task and seed, all arms
    full_h = one * (len(HARDEST) + 1) * 3 / 3600  # 8 tasks + penalized logP, 3 seeds
    parts = ", ".join(f"{a} {v:.0f}s" for a, v in per_arm.items())
    return (f"Mean optimiser wall time per unit here ({budget} calls): {parts}; start-up "
            f"{extra:.0f}s a unit. Scaled linearly to 10k calls: about {one / 60:.0f} min per "
            f"task and seed for all arms, {full_h:.1f} h for the full mode (8 tasks + penalized "
            "logP, 3 seeds) on this machine; only a rough guide (runs whose generator collapses "
            "onto known molecules need more rounds per new call).")


if __name__ == "__main__":
    sys.exit(main())
