"""Benchmark retro v2 (issue 23, item 6): Retro*-0, Retro*, self-improved Retro*, the random
control and MCTS on one target set and stock, success within 10..500 iterations.

    python benchmarks/retro/run_v2.py --model M.pt --quick                        # minutes
    python benchmarks/retro/run_v2.py --model M.pt --targets T.smi --target-set reachable \\
        --stock S.smi [--si-runs RUN0 RUN1 RUN2] [--values V0 V1 V2] [--workers 2]    # full

Everything that defines a setting comes in as an argument, so that any target set plugs in:
``--targets`` (SMILES file, one per line; ``--n-targets`` takes a fixed seeded subset),
``--target-set`` (its name), ``--stock`` (a stock file, ``molbloom:zinc-instock-mini``, or
nothing: the USPTO-50k leaves, every reactant never produced), ``--model`` (the base
single-step ``model.pt``), ``--si-runs`` (one ``selfsup chem self-improve`` run folder per
seed, iterations 1 and 2 used), ``--control-models`` (one random-control ``model.pt`` per seed)
and ``--values`` (one value-network file per seed). What is not given is made here, per seed,
and cached: self-improvement (2 iterations on ``--si-targets``, default a seeded subset of the
train targets of the chained USPTO-50k route benchmark, planned with the same stock), the random
control (as many random true train reactions as self-improvement iteration 1 kept) and the
value network (trained on known train routes of the chained USPTO-50k benchmark, or with
``--value-routes with-ord`` of the one chained over USPTO-50k and the ORD split, costs under the
base model, as ``run.py``). Without ``--targets`` the targets are the held-out multi-step
targets of the chained USPTO-50k route benchmark (``workflows/route_benchmark.py``, the fixed
draw of ``run.py``), target set ``uspto50k-chained``.

Setting ``<target set>/<stock>/<n targets>/<max iterations>it``. Arms:
``retro_star_0`` (base model, no value; deterministic, so seed 0's run is every seed's),
``retro_star`` (base model + value network), ``retro_star_0_si1``/``_si2`` (Retro*-0 with the
model after 1/2 self-improvement iterations), ``retro_star_si1``/``_si2`` (the same with the
base model's value network), ``random_control`` (Retro*-0, control model), ``mcts`` and
``mcts_si1`` (AiZynthFinder's MCTS, ``core/mcts.py``, default options, its tie-breaking seeded
by the seed; base and iteration-1 models). Metrics: ``success_at_10/25/50/100/200/500`` (first
route within N single-step model calls; only N <= max iterations), ``mean_route_length`` (solved
targets), ``mean_iterations`` (failures at the maximum), ``onestep_top1``/``onestep_top10``
(exact match of the arm's model on a fixed subset of USPTO-50k test reactions), and
``unit_minutes``. Every result names its stock (notes and each unit's ``stock``).

Proposal store: the units that plan with the same single-step model file (Retro*-0, Retro*,
MCTS with the base model; each seed's iteration-1 model under three arms) share its proposals
through ``<runs>/proposals/<model sha256>/`` (``selfsup.chem.retro.core.proposal_store``):
searches, iterations and routes are exactly those computed afresh (tested), but a unit that
runs after another with the same model spends less time, so ``unit_minutes``, ``plan_seconds``
and ``iterations_per_s`` depend on the order units ran in (each unit names its store;
``--no-proposal-store`` turns it off).

Files: ``retro.{json,md}`` and ``retro_curves.png`` (success within N per arm, mean over seeds
and their range; linked from the .md) in ``benchmarks/results/`` (full) or the run folder
(quick, or ``--out``); the unit cache ``retro_cache.json`` beside them (a killed run loses
nothing; ``--report`` rewrites the files from it; it may hold several settings, each reported);
per-target results of every unit, one JSON line per target (success, first-solution iteration,
iterations, route length and cost, seconds) in ``retro_targets/<unit>.jsonl`` beside the table,
and the full records with routes (``plan.jsonl`` format; a unit's planning resumes target by
target) in ``<runs>/targets/<unit>.jsonl`` (full mode: ``runs/bench-retro-v2-full/``, not
committed).

On another machine (the cache is committed, the run folder is not): the base and forward models
are known by SHA-256, so the same files made again (``ord_split`` and ``train-single-step``
are deterministic on one thread) are accepted at any path and other files refused. Prepared
files that are gone are made again and kept only when they are the same work
(``v2lib.remade_entry``): a self-improvement run's deterministic figures per iteration (solved,
kept, not top-1, forward-augmented, last fine-tuning loss, one-step accuracy) and, from now on,
its models' hashes; the control's and value network's figures alike; a later seed's Retro*-0,
whose first-seed records are gone, plans afresh and must give back the first seed's per-target
results. Anything else stops the run, naming what differs.

Sizing of the full mode (200 targets, 500 iterations, 3 seeds, self-improvement on 5,000 train
targets at 100 iterations, 1,000 one-step reactions), from what was measured here with the
3-epoch template MLP in the loop, one torch thread per process, on this 2-core machine shared
with two other benchmarks (load average 4-5):
- planning: Retro*-0 11.6 iterations/s and MCTS 12.0 on 12 chained held-out targets with fresh
  proposal caches; in the quick mode's units 18 to 38 iterations/s (Retro* arms 18-38, MCTS
  18-19; molecules shared between targets hit the model's cache). A unit costs
  ``n_targets * mean_iterations / speed``: at 200 targets, a mean of 150 iterations and 20/s,
  25 min; 25 planning units (retro_star_0 runs once) 10.4 core-hours; at a mean of 250
  iterations and 12/s, 29 core-hours;
- self-improvement per iteration: planning 0.15 s per train target (mean 1.55 iterations),
  the filter 0.125 s per route reaction (~1.05 per target), fine-tuning ~15 s, evaluation
  ~1 min: ~25 min for 5,000 targets, x 2 iterations x 3 seeds = 2.5 core-hours; value networks
  (1,000 known routes, ~4 min each), controls and one-step evaluations ~0.5 core-hour.
So ~13 core-hours (6.5 hours with ``--workers 2``) at a mean of 150 iterations and 20/s, and
over the 12-hour limit when a target set needs a mean near 250 at the slow end: run the quick
mode on a new target set first (its ``unit_minutes`` and per-unit ``iterations_per_s`` give the
cost) and lower ``--max-iterations`` or ``--n-targets`` if needed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from v2lib import (  # noqa: E402
    SUCCESS_AT,
    check_same_search,
    compare_control,
    compare_iterations,
    compare_value,
    draw_curves,
    file_key,
    remade_entry,
    setting_name,
    stock_label,
    success_curve,
    text_hash,
    write_compact,
)

import common  # noqa: E402
from common import RESULTS, load_json, merge_cache, now, write_results  # noqa: E402
from selfsup.chem.retro.core.proposal_store import (  # noqa: E402
    model_file_key as file_sha256,
)
from selfsup.io import atomic_write_json, atomic_write_text  # noqa: E402
from selfsup.provenance import provenance  # noqa: E402

NAME = "retro"
TAG = "[retro v2]"
ARMS = ["retro_star_0", "retro_star", "retro_star_0_si1", "retro_star_0_si2", "retro_star_si1",
        "retro_star_si2", "random_control", "mcts", "mcts_si1"]
REPO = Path(__file__).resolve().parents[2]


def settings(quick: bool) -> dict:
    if quick:
        return {"n_targets": 15, "max_iterations": 100, "seeds": [0], "n_si_targets": 30,
                "si_max_iterations": 30, "si_min_length": 2, "finetune_epochs": 20,
                "n_onestep": 100, "n_value_routes": 150, "value_epochs": 30}
    return {"n_targets": 200, "max_iterations": 500, "seeds": [0, 1, 2], "n_si_targets": 5000,
            "si_max_iterations": 100, "si_min_length": 1, "finetune_epochs": 20,
            "n_onestep": 1000, "n_value_routes": 1000, "value_epochs": 50}


# the arms table's columns (README's): success within N, mean iterations, route length, top-1
SHORT = {**{f"success_at_{k}": f"@{k}" for k in SUCCESS_AT}, "mean_iterations": "mean iterations",
         "mean_route_length": "route length", "onestep_top1": "one-step top-1"}
FORMATS = {**{f"success_at_{k}": (1.0, 3) for k in SUCCESS_AT}, "mean_iterations": (1.0, 1),
           "mean_route_length": (1.0, 2), "onestep_top1": (1.0, 3)}
# paired by seed in the differences table: (base, other) -> other - base
PAIRS = [("retro_star_0", "retro_star"), ("retro_star_0", "retro_star_0_si1"),
         ("retro_star_0", "retro_star_0_si2"), ("random_control", "retro_star_0_si1"),
         ("retro_star", "retro_star_si1"), ("mcts", "mcts_si1")]


def summary_tables(cache: dict, setting: str, max_iterations: int) -> str:
    """The setting's arms x (success within 10 / 25 / 50 / 100 / 500 or fewer, mean iterations,
    route length, one-step top-1), mean ± sample std over seeds, then the paired differences of
    :data:`PAIRS`."""
    cols = [f"success_at_{k}" for k in (10, 25, 50, 100, 500) if k <= max_iterations] + [
        "mean_iterations", "mean_route_length", "onestep_top1"]
    out = ["Mean ± sample std over seeds (success as shares):", "",
           common.arms_table(cache, setting, ARMS, cols, SHORT, FORMATS)]
    diff = common.diff_table(cache, setting, ARMS, PAIRS, cols, "difference", SHORT, FORMATS)
    if diff:
        out += ["", "Paired by seed, other minus base: mean ± std of the per-seed differences "
                "(spread: the largest of that std and the two arms' seed stds):", "", diff]
    return "\n".join(out)


def metrics(max_iterations: int) -> list[str]:
    return ([f"success_at_{k}" for k in SUCCESS_AT if k <= max_iterations]
            + ["mean_route_length", "mean_iterations", "onestep_top1", "onestep_top10"])


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="base single-step model.pt")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", help="target SMILES file (default: chained USPTO-50k held-out "
                    "multi-step targets)")
    ap.add_argument("--target-set", help="name of the target set in the setting (default: the "
                    "targets file's stem, or uspto50k-chained)")
    ap.add_argument("--n-targets", type=int, default=None,
                    help="fixed seeded subset of the targets (default: quick 15, full 200; "
                         "0 = all of --targets)")
    ap.add_argument("--stock", default=None, help="stock file, molbloom:CATALOG, or nothing "
                    "(USPTO-50k leaves)")
    ap.add_argument("--stock-exclude", default=None,
                    help="SMILES file of molecules taken out of the stock (by InChIKey), e.g. "
                         "every product of a held-out reaction: no held-out intermediate is "
                         "a building block (route_benchmark_reachable.HeldOutFreeStock); "
                         "self-improvement made here plans with the stock without it")
    ap.add_argument("--stock-name", default=None,
                    help="the stock's name in the setting (default: from the file names, "
                         "<stock>-minus-<stock-exclude>)")
    ap.add_argument("--max-iterations", type=int, default=None,
                    help="search budget per target (default: quick 100, full 500)")
    ap.add_argument("--si-runs", nargs="+", default=None,
                    help="self-improvement run folders, one per seed (in --seeds order)")
    ap.add_argument("--control-models", nargs="+", default=None,
                    help="random-control model.pt files, one per seed")
    ap.add_argument("--values", nargs="+", default=None,
                    help="value-network files, one per seed")
    ap.add_argument("--value-routes", choices=["uspto50k-chained", "with-ord"],
                    default="uspto50k-chained",
                    help="train routes the value networks learn from: the chained USPTO-50k "
                         "benchmark's, or those chained over USPTO-50k and the ORD split "
                         "(with-ord; for target sets from the ORD split)")
    ap.add_argument("--ord-split-dir", default=None,
                    help="the ORD split (default <data cache>/derived/ord_split/seed0)")
    ap.add_argument("--forward-model", default=None,
                    help="forward template model.pt (train-single-step model.direction=forward) "
                         "for the self-improvement runs made here: kept reactions are augmented "
                         "with the products it predicts (default: none)")
    ap.add_argument("--si-targets", default=None,
                    help="train targets that self-improvement plans on (default: chained "
                         "USPTO-50k train targets)")
    ap.add_argument("--arms", nargs="+", default=None, choices=ARMS)
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--workers", type=int, default=1, help="planning processes")
    ap.add_argument("--no-proposal-store", action="store_true",
                    help="do not share the single-step proposals of a model between its units "
                         "(default: shared through <runs>/proposals; same searches, less time)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--data-root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--cache-dir", default=None, help="prepared USPTO-50k arrays")
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    ap.add_argument("--report", action="store_true",
                    help="only write the results from the cache (run nothing)")
    return ap.parse_args(argv)


class Bench:
    """The state one invocation shares between its units (data, targets, prepared models)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick = args.quick
        self.st = settings(args.quick)
        if args.max_iterations:
            self.st["max_iterations"] = args.max_iterations
        if args.n_targets is not None:
            self.st["n_targets"] = args.n_targets
        self.seeds = args.seeds or self.st["seeds"]
        for what in ("si_runs", "control_models", "values"):
            given = getattr(args, what)
            if given is not None and len(given) != len(self.seeds):
                raise SystemExit(f"--{what.replace('_', '-')} needs one entry per seed "
                                 f"({len(self.seeds)}: {self.seeds}), got {len(given)}")
        self.t0 = time.perf_counter()
        self.started = now()
        if args.out:
            self.out = Path(args.out)
        elif args.quick:
            self.out = REPO / "runs" / f"bench-retro-v2-quick-{time.strftime('%Y%m%d-%H%M%S')}"
        else:
            self.out = RESULTS
        self.out.mkdir(parents=True, exist_ok=True)
        self.full_results = self.out.resolve() == RESULTS.resolve()
        self.run_root = (REPO / "runs" / "bench-retro-v2-full" if self.full_results
                         else self.out / "runs")
        self.run_root.mkdir(parents=True, exist_ok=True)
        self.cache_path = self.out / f"{NAME}_cache.json"
        self.targets_dir = self.out / "retro_targets"
        self._data = None
        self._bench = None
        self._value_bench = None
        self._stock = None
        self.onestep_memo_path = self.run_root / "onestep.json"

    def log(self, msg: str) -> None:
        print(f"{TAG} [{time.perf_counter() - self.t0:7.1f}s] {msg}", flush=True)

    # -- data --------------------------------------------------------------------------------
    def data(self):
        if self._data is None:
            from selfsup.chem.retro.training.templates_data import prepare_uspto50k

            self._data, _ = prepare_uspto50k(self.args.data_root, self.args.cache_dir)
        return self._data

    def route_bench(self):
        """The chained USPTO-50k route benchmark (with its USPTO-50k-leaves stock)."""
        if self._bench is None:
            from selfsup.chem.retro.workflows.route_benchmark import (
                build_route_benchmark,
                default_stock,
                reactions_from_template_data,
            )

            reactions = reactions_from_template_data(self.data())
            self._bench = build_route_benchmark(reactions, stock=default_stock(reactions))
            self.log(f"chained USPTO-50k route benchmark: {self._bench.report['groups']}")
        return self._bench

    def value_route_bench(self):
        """The route benchmark whose train routes the value networks learn from: the chained
        USPTO-50k one, or (``--value-routes with-ord``) the one chained over USPTO-50k and the
        ORD family split (the reactions the reachable target set comes from; stock: every
        reactant no reaction makes), as ``route_benchmark_reachable`` builds it."""
        if self.args.value_routes != "with-ord":
            return self.route_bench()
        if self._value_bench is None:
            from selfsup.chem.retro.workflows.ord_split import (
                HELD_OUT,
                TRAIN,
                default_split_root,
                load_ord_split,
            )
            from selfsup.chem.retro.workflows.route_benchmark import (
                build_route_benchmark,
                load_uspto_reactions,
            )
            from selfsup.chem.retro.workflows.route_benchmark_reachable import (
                dataset_reactions_with_ord,
                leaves_stock,
            )

            split = Path(self.args.ord_split_dir) if self.args.ord_split_dir else (
                default_split_root() / "seed0")
            reactions = dataset_reactions_with_ord(
                load_uspto_reactions(self.args.data_root, self.args.cache_dir),
                load_ord_split(split, TRAIN), load_ord_split(split, HELD_OUT))
            self._value_bench = build_route_benchmark(reactions, stock=leaves_stock(reactions))
            self.log("USPTO-50k + ORD route benchmark (value routes): "
                     f"{self._value_bench.report['groups']['train']}")
        return self._value_bench

    def stock(self):
        if self._stock is None:
            from selfsup.chem.retro.workflows.plan import make_stock

            self._stock = make_stock(self.args.stock, self.args.data_root, self.args.cache_dir)
            if self.args.stock_exclude:
                from selfsup.chem.retro.workflows.route_benchmark import load_targets
                from selfsup.chem.retro.workflows.route_benchmark_reachable import (
                    HeldOutFreeStock,
                )

                excluded, _ = load_targets(self.args.stock_exclude)
                self._stock = HeldOutFreeStock(self._stock, excluded, name=self.stock_name)
        return self._stock

    def prepare_targets(self) -> None:
        import numpy as np

        from selfsup.chem.retro.workflows.route_benchmark import load_targets

        n = self.st["n_targets"]
        if self.args.targets:
            targets, n_bad = load_targets(self.args.targets)
            if not targets:
                raise SystemExit(f"no valid SMILES in {self.args.targets} ({n_bad} bad lines)")
            self.target_set = self.args.target_set or stock_label(self.args.targets)
            source = f"{self.args.targets} ({len(targets)} valid, {n_bad} bad lines)"
            if n and n < len(targets):
                pick = np.random.default_rng(0).choice(len(targets), n, replace=False)
                targets = [targets[i] for i in sorted(pick)]
                source += f", fixed draw (seed 0) of {n}"
        else:  # run.py's draw: held-out targets with a known route of >= 2 steps
            bench = self.route_bench()
            multi = [t for t in bench.targets["test"] if t.length >= 2]
            rng = np.random.default_rng(0)
            source = (f"held-out products of the chained USPTO-50k route benchmark with a known "
                      f"route of >= 2 held-out reactions, all {len(multi)}")
            if n and len(multi) > n:
                multi = [multi[i] for i in sorted(rng.choice(len(multi), n, replace=False))]
                source += f", fixed draw (seed 0) of {n}"
            targets = [t.smiles for t in multi]
            self.target_set = self.args.target_set or "uspto50k-chained"
        self.targets = targets
        self.target_source = source
        self.stock_name = self.args.stock_name or stock_label(self.args.stock) + (
            f"-minus-{stock_label(self.args.stock_exclude)}" if self.args.stock_exclude else "")
        self.setting = setting_name(self.target_set, self.stock_name, len(targets),
                                    self.st["max_iterations"])
        d = self.run_root / "targets"
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / (file_key(self.setting) + ".smi"),
                          "".join(t + "\n" for t in targets))

    # -- the cache ---------------------------------------------------------------------------
    def load_cache(self) -> dict:
        cache = load_json(self.cache_path)
        model = str(Path(self.args.model).resolve())
        sha = file_sha256(model) if Path(model).is_file() else None  # None: a toy model
        if cache.get("model_sha256") not in (None, sha):
            raise SystemExit(f"{self.cache_path} holds units of a base model ({cache['model']}) "
                             f"whose SHA-256 begins {cache['model_sha256']}; {model} "
                             f"{'begins ' + sha if sha else 'is not a file'}: pass that model "
                             "(its file, wherever it lies) or another --out")
        if cache.get("model") not in (None, model) and not cache.get("model_sha256"):
            raise SystemExit(f"{self.cache_path} holds units of the base model {cache['model']}; "
                             "pass that --model or another --out")
        cache["model"] = model  # the same file (by hash) may lie elsewhere on another machine
        if sha:
            cache["model_sha256"] = sha
        forward = self.args.forward_model
        forward_sha = file_sha256(forward) if forward and Path(forward).is_file() else None
        meta = {"targets_hash": text_hash(self.targets), "n_targets": len(self.targets),
                "target_source": self.target_source, "stock_spec": self.args.stock,
                "stock_exclude": self.args.stock_exclude,
                "stock": self.stock().describe(), "max_iterations": self.st["max_iterations"],
                "settings": self.st, "si_runs": self.args.si_runs,
                "control_models": self.args.control_models, "values": self.args.values,
                "value_routes": self.args.value_routes,
                "forward_model": self.args.forward_model,
                "forward_model_sha256": forward_sha}
        old = cache.setdefault("setting_meta", {}).get(self.setting)
        if old and (old["targets_hash"] != meta["targets_hash"]
                    or old.get("stock_spec") != meta["stock_spec"]
                    or old.get("stock_exclude") != meta["stock_exclude"]):
            raise SystemExit(f"{self.cache_path} holds setting {self.setting} with other targets "
                             "or another stock; use another --out or --target-set")
        for what in ("si_runs", "control_models", "values"):
            if old and old.get(what) != meta[what]:
                raise SystemExit(f"{self.cache_path} holds setting {self.setting} made with "
                                 f"{what} {old.get(what)}; pass the same or another --out")
        valued = [k for k in common.units_of(cache) if k.startswith(self.setting + "|")
                  and k.split("|")[-1] in ("retro_star", "retro_star_si1", "retro_star_si2")]
        if old and valued and old.get("value_routes", "uspto50k-chained") != meta["value_routes"]:
            raise SystemExit(f"{self.cache_path} holds units of setting {self.setting} whose "
                             f"value networks learnt from --value-routes "
                             f"{old.get('value_routes', 'uspto50k-chained')}; pass the same or "
                             "another --out")
        made_si = [k for k in cache if k.startswith(f"prep:si:{self.stock_name}:")]
        same_forward = old is None or old.get("forward_model") == meta["forward_model"] or (
            old.get("forward_model_sha256") is not None
            and old["forward_model_sha256"] == forward_sha)
        if made_si and not same_forward:
            raise SystemExit(f"{self.cache_path} holds self-improvement runs of setting "
                             f"{self.setting} made with --forward-model "
                             f"{old.get('forward_model')}; pass the same or another --out")
        cache["setting_meta"][self.setting] = meta
        return cache

    def merged(self) -> dict:
        """The cache on disk with this runner's entries added (:func:`common.merge_cache`, where
        what is on disk wins), and this runner's checked ``setting_meta`` of its own setting in
        place of the file's (another runner's settings kept as the file has them)."""
        out = merge_cache(self.cache_path, self.cache)
        own = (self.cache.get("setting_meta") or {}).get(self.setting)
        if own is not None:
            out["setting_meta"] = {**(out.get("setting_meta") or {}), self.setting: own}
        return out

    def save_prep(self, key: str, entry: dict) -> None:
        cache = self.merged()
        cache[key] = entry
        atomic_write_json(self.cache_path, cache)
        self.cache = cache

    # -- prepared models ---------------------------------------------------------------------
    def value(self, seed: int) -> tuple[str, float]:
        """(value-network path, seconds spent making it now)."""
        if self.args.values:
            return self.args.values[self.seeds.index(seed)], 0.0
        with_ord = self.args.value_routes == "with-ord"
        key = f"prep:value:with-ord:seed{seed}" if with_ord else f"prep:value:seed{seed}"
        path = self.run_root / (f"value_with_ord_seed{seed}.pt" if with_ord
                                else f"value_seed{seed}.pt")
        if key in self.cache and path.is_file():
            return str(path), 0.0
        import numpy as np

        from selfsup.chem.retro.models.mlp import MLPSingleStepModel
        from selfsup.chem.retro.models.value import (
            train_value_network,
            value_examples_from_routes,
        )

        t = time.perf_counter()
        bench = self.value_route_bench()
        base = MLPSingleStepModel.load(self.args.model)
        routes = [tg.route for tg in bench.targets["train"]]
        order = np.random.default_rng(seed).permutation(len(routes))
        pick = sorted(order, key=lambda i: -routes[i].length)[: self.st["n_value_routes"]]
        examples = value_examples_from_routes([routes[i] for i in pick], base, bench.stock)
        vmodel, hist = train_value_network(examples, epochs=self.st["value_epochs"], seed=seed)
        vmodel.save(path)
        secs = time.perf_counter() - t
        entry = {"path": str(path), "n_routes": len(pick), "n_examples": len(examples),
                 "final": hist[-1],
                 "source": "known train routes of the chained "
                           + ("USPTO-50k + ORD" if with_ord else "USPTO-50k")
                           + " benchmark (longest first), costs under the base model",
                 "seconds": round(secs, 1), "model_sha256": file_sha256(path),
                 "provenance": provenance()}
        cached = self.merged().get(key)
        if cached is not None:  # its file is gone (another machine): the same network again?
            entry = remade_entry(key, cached, entry, compare_value)
        self.save_prep(key, entry)
        self.log(f"seed {seed} value network: {len(examples)} examples, {secs:.0f}s")
        return str(path), secs

    def si_targets_file(self) -> str:
        if self.args.si_targets:
            return self.args.si_targets
        path = self.run_root / f"si_train_targets_min{self.st['si_min_length']}.smi"
        if not path.is_file():
            smiles = self.route_bench().smiles("train", min_length=self.st["si_min_length"])
            atomic_write_text(path, "".join(s + "\n" for s in smiles))
        return str(path)

    def common_si(self, seed: int, name: str) -> list[str]:
        a = self.args
        return [f"model={a.model}", f"seed={seed}", f"name={name}",
                f"run_root={self.run_root / 'si'}", f"torch_threads={a.threads}",
                f"n_workers={a.workers}",
                f"stock={a.stock}" if a.stock else "stock=null",
                f"data.root={a.data_root}" if a.data_root else "data.root=null",
                f"data.cache_dir={a.cache_dir}" if a.cache_dir else "data.cache_dir=null",
                # rehearse the model's own training split (USPTO-50k + ORD train for the
                # USPTO+ORD model); runs made before this setting existed are not resumed
                "data.clean=null", "data.extra_train=null",
                f"eval.n_test={self.st['n_onestep']}", "eval.top_k=[1,10]",
                f"finetune.epochs={self.st['finetune_epochs']}",
                f"forward.model={a.forward_model}" if a.forward_model else "forward.model=null"]

    def si_run_to_resume(self, name: str, overrides: list[str]) -> Path | None:
        """The newest self-improvement run folder ``<runs>/si/<name>-<time>`` whose config holds
        every ``key=value`` of ``overrides`` (the same model, stock, targets, ...), else None."""
        import yaml

        for d in sorted((self.run_root / "si").glob(f"{name}-*"), reverse=True):
            try:
                cfg = yaml.safe_load((d / "config.yaml").read_text())
            except (OSError, yaml.YAMLError):
                continue
            if all(_config_value(cfg, o) for o in overrides):
                return d
        return None

    def si(self, seed: int) -> tuple[dict, float]:
        """({'models': [iter 1, iter 2], 'iterations': [summaries]}, seconds spent now)."""
        from selfsup.io import read_json_file

        if self.args.si_runs:
            run = Path(self.args.si_runs[self.seeds.index(seed)])
            its = []
            for i in (1, 2):
                d = run / "iterations" / f"iter_{i}"
                if not (d / "model.pt").is_file():
                    raise SystemExit(f"{run} has no finished iteration {i} ({d / 'model.pt'}); "
                                     "pass a self-improvement run with n_iterations >= 2")
                its.append(read_json_file(d / "summary.json", "an iteration's summary"))
            return {"models": [str(run / "iterations" / f"iter_{i}" / "model.pt")
                               for i in (1, 2)], "iterations": its, "run": str(run)}, 0.0
        key = f"prep:si:{self.stock_name}:seed{seed}"
        cached = self.cache.get(key)
        if cached is not None and all(Path(m).is_file() for m in cached["models"]):
            return cached, 0.0
        if cached is not None:
            self.log(f"seed {seed} self-improvement: the models of {cached['run']} are gone "
                     "(another machine); made again and checked against the cached run")
        from selfsup.chem.retro.workflows.self_improve import (
            resume_self_improve,
            self_improve,
        )

        t = time.perf_counter()
        overrides = self.common_si(seed, f"bench-si-s{seed}") + [
            "n_iterations=2", f"targets.file={self.si_targets_file()}",
            f"targets.n={self.st['n_si_targets']}", f"targets.seed={seed}",
            f"search.max_iterations={self.st['si_max_iterations']}"]
        old = self.si_run_to_resume(f"bench-si-s{seed}", overrides)
        if old is not None:  # a killed benchmark: its self-improvement goes on where it was
            self.log(f"seed {seed} self-improvement: resuming {old}")
            run, res = resume_self_improve(old)
        else:
            run, res = self_improve(None, overrides)
        secs = time.perf_counter() - t
        entry = {"models": res["models"], "iterations": res["iterations"], "run": str(run.path),
                 "n_targets": res["n_targets"], "seconds": round(secs, 1),
                 "model_sha256": [file_sha256(m) for m in res["models"]],
                 "provenance": provenance()}
        if cached is not None:
            entry = remade_entry(key, cached, entry, compare_iterations)
        self.save_prep(key, entry)
        self.log(f"seed {seed} self-improvement ({secs:.0f}s): " + "; ".join(
            f"iter {it['iteration']}: solved {it.get('n_solved')}/{it.get('n_targets')}, "
            f"kept {it.get('n_kept')}, not top-1 {it.get('n_not_top1')}"
            for it in res["iterations"]))
        return entry, secs

    def control(self, seed: int) -> tuple[str, float]:
        if self.args.control_models:
            return self.args.control_models[self.seeds.index(seed)], 0.0
        key = f"prep:control:{self.stock_name}:seed{seed}"
        cached = self.cache.get(key)
        if cached is not None and Path(cached["model"]).is_file():
            return cached["model"], 0.0
        if cached is not None:
            self.log(f"seed {seed} random control: {cached['model']} is gone (another "
                     "machine); made again and checked against the cached one")
        from selfsup.chem.retro.workflows.self_improve import self_improve

        si, secs = self.si(seed)
        n_kept = max(int(si["iterations"][0].get("n_kept", 0)), 2)
        t = time.perf_counter()
        run, res = self_improve(None, self.common_si(seed, f"bench-random-control-s{seed}") + [
            "mode=random_control", f"control_n_reactions={n_kept}", "n_iterations=1"])
        secs += time.perf_counter() - t
        it = res["iterations"][0]
        entry = {"model": res["models"][0], "n_reactions": n_kept, "run": str(run.path),
                 "seconds": round(secs, 1), "model_sha256": file_sha256(res["models"][0]),
                 "finetune_loss_last": it.get("finetune_loss_last"),
                 "onestep": it.get("onestep"), "provenance": provenance()}
        if cached is not None:
            unit = self.cache.get(common.unit_key(self.setting, seed, "random_control"))
            entry = remade_entry(key, cached, entry, lambda old, new: compare_control(
                old, new, unit))
        self.save_prep(key, entry)
        return entry["model"], secs

    # -- one-step accuracy of a model (memoised by path) --------------------------------------
    def onestep(self, model_path: str) -> dict:
        memo = load_json(self.onestep_memo_path)
        key = f"{Path(model_path).resolve()}|{self.st['n_onestep']}"
        if key in memo:
            return memo[key]
        import numpy as np

        from selfsup.chem.retro.models.mlp import MLPSingleStepModel
        from selfsup.chem.retro.training.metrics import evaluate_exact_match

        test = self.data()["test"]
        n = self.st["n_onestep"]
        if n and n < len(test):
            test = test.subset(np.sort(np.random.default_rng(0).choice(len(test), n,
                                                                      replace=False)))
        model = MLPSingleStepModel.load(model_path)
        em = evaluate_exact_match(model, list(test.products), list(test.reactants), (1, 10), 50)
        out = {"top1": em["top1"], "top10": em["top10"], "n": em["n"],
               "seconds": em["seconds"]}
        memo = load_json(self.onestep_memo_path)
        memo[key] = out
        atomic_write_json(self.onestep_memo_path, memo)
        return out

    # -- a unit ------------------------------------------------------------------------------
    def arm_spec(self, arm: str, seed: int) -> tuple[str, str | None, str, float]:
        """(model, value, planner, seconds spent preparing now) of an arm."""
        base = str(self.args.model)
        if arm in ("retro_star_0", "mcts"):
            return base, None, "mcts" if arm == "mcts" else "retro_star", 0.0
        if arm == "retro_star":
            v, s = self.value(seed)
            return base, v, "retro_star", s
        if arm == "random_control":
            m, s = self.control(seed)
            return m, None, "retro_star", s
        si, s = self.si(seed)
        model = si["models"][0 if arm.endswith("1") else 1]
        if arm == "mcts_si1":
            return model, None, "mcts", s
        if arm.startswith("retro_star_si"):
            v, s2 = self.value(seed)
            return model, v, "retro_star", s + s2
        return model, None, "retro_star", s

    def run_unit(self, setting: str, spec: dict, arm: str, seed: int, threads, run_root) -> dict:
        from selfsup.chem.retro.workflows.plan import (
            SearchSpec,
            make_model_factory,
            make_value_factory,
            summarize,
        )
        from selfsup.chem.retro.workflows.self_improve import plan_resumable

        t_unit = time.perf_counter()
        self.cache = self.merged()
        key = common.unit_key(setting, seed, arm)
        model, value, planner, prep_s = self.arm_spec(arm, seed)
        # the records' file names the unit's model and value network (but Retro*-0 with the base
        # model, whose first seed's file the other seeds copy), so that records planned with
        # another self-improvement run or value network (other --value-routes, --forward-model)
        # are never resumed into it
        tag = "" if arm == "retro_star_0" else "__" + text_hash([str(model), str(value)])[:8]
        full = self.run_root / "targets" / (file_key(key) + tag + ".jsonl")
        full.parent.mkdir(parents=True, exist_ok=True)
        copied = None
        zero = common.unit_key(setting, self.seeds[0], arm)
        src = self.run_root / "targets" / (file_key(zero) + ".jsonl")
        if (arm == "retro_star_0" and seed != self.seeds[0] and zero in self.cache
                and src.is_file()):
            # deterministic: the first seed's search is every seed's (records copied; planned
            # afresh when they are gone, and then checked against the first seed's results)
            atomic_write_text(full, src.read_text())
            copied = self.seeds[0]
        t = time.perf_counter()
        store = None if self.args.no_proposal_store else self.run_root / "proposals"
        spec_ = SearchSpec(make_model_factory(model, self.args.threads, proposal_store=store),
                           self.stock(),
                           make_value_factory(value, self.args.threads),
                           max_iterations=self.st["max_iterations"], max_depth=10,
                           planner=planner, mcts={"seed": seed} if planner == "mcts" else {})
        records, n_new = plan_resumable(self.targets, spec_, full, n_workers=self.args.workers,
                                        description=f"{arm} seed {seed}")
        plan_s = time.perf_counter() - t
        summary = summarize(records, max_iterations=self.st["max_iterations"],
                            success_at=SUCCESS_AT)
        if arm == "retro_star_0" and seed != self.seeds[0] and copied is None \
                and zero in self.cache:
            check_same_search(records, self.targets_dir / (file_key(zero) + ".jsonl"))
        t = time.perf_counter()
        one = self.onestep(model)
        eval_s = time.perf_counter() - t
        per_target = self.targets_dir / (file_key(key) + ".jsonl")
        write_compact(per_target, records)
        n_its = sum(int(r.get("iterations") or 0) for r in records)
        return {**{k: v for k, v in summary.items()
                   if k.startswith("success_at_") or k in ("success_rate", "n_solved",
                                                          "n_targets", "mean_route_length",
                                                          "mean_iterations", "n_errors")},
                "onestep_top1": one["top1"], "onestep_top10": one["top10"],
                "n_onestep": one["n"], "model": model, "value": value, "planner": planner,
                "stock": self.stock().describe(),
                "per_target": str(per_target.relative_to(self.out)),  # beside the cache
                "records": rel(full), "n_searched": n_new, "copied_from_seed": copied,
                "total_iterations": n_its,
                "iterations_per_s": round(n_its / plan_s, 2) if n_new and not copied else None,
                "proposal_store": rel(store) if store is not None else None,
                "train_seconds": round(prep_s, 1), "eval_seconds": round(plan_s + eval_s, 1),
                "plan_seconds": round(plan_s, 1),
                "unit_seconds": round(time.perf_counter() - t_unit, 1),
                "provenance": provenance()}


# ------------------------------------------------------------------ report


def _config_value(cfg: dict, override: str) -> bool:
    """Whether the nested config ``cfg`` holds ``key.sub=value`` (values compared as YAML reads
    them, so ``null``, numbers and lists compare by value)."""
    import yaml

    key, _, text = override.partition("=")
    node: object = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    want = yaml.safe_load(text) if text else None
    return node == want or str(node) == str(want)


def rel(path) -> str:
    """``path`` relative to the repository when it lies inside it (results name no home)."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(REPO))
    except ValueError:
        return str(p)


def si_table(cache: dict) -> str:
    """Per seed and iteration, what self-improvement planned, kept and spent (Markdown)."""
    lines = ["| prep | iteration | targets | solved | route reactions | kept | not top-1 | "
             "forward | fine-tune examples | plan s | filter s | forward s | fine-tune s | "
             "eval s |", "|" + "---|" * 14]
    for key in sorted(k for k in cache if k.startswith("prep:si:")):
        for it in cache[key]["iterations"]:
            s = it.get("stage_seconds", {})
            lines.append("| " + " | ".join(str(x) for x in (
                key.removeprefix("prep:si:"), it["iteration"], it.get("n_targets"),
                it.get("n_solved"), it.get("n_route_reactions"), it.get("n_kept"),
                it.get("n_not_top1"), it.get("n_forward_augmented"),
                it.get("n_finetune_examples"), s.get("plan"), s.get("filter"),
                s.get("forward"), s.get("finetune"), s.get("eval"))) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def report(b: Bench, cache: dict) -> None:
    units = common.units_of(cache)
    settings_done = [s for s in cache.get("setting_meta", {})
                     if any(k.split("|")[0] == s for k in units)]
    rows, notes, curves = [], [], {}
    for setting in settings_done:
        meta = cache["setting_meta"][setting]
        mx = int(meta["max_iterations"])
        rows += common.unit_rows(cache, setting, ARMS, metrics(mx))
        curves[setting] = {}
        for arm in ARMS:
            seeds = []
            for key, u in sorted(units.items()):
                s, _, a = key.split("|")
                path = b.out / u.get("per_target", "-")  # relative to the cache's folder
                if s == setting and a == arm and path.is_file():
                    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                    seeds.append(success_curve(recs, mx))
            if seeds:
                curves[setting][arm] = seeds
        planned = [(s, a) for s in b.seeds for a in (b.args.arms or ARMS)]
        missing = [common.unit_key(setting, s, a) for s, a in planned
                   if common.unit_key(setting, s, a) not in cache]
        st = meta["stock"]
        its = [u["iterations_per_s"] for k, u in units.items()
               if k.startswith(setting + "|") and u.get("iterations_per_s")]
        notes.append("\n".join([
            f"## {setting}", "",
            f"Stock: `{meta['stock_spec'] or 'USPTO-50k leaves (default)'}`"
            + (f" minus the molecules of `{meta['stock_exclude']}`"
               if meta.get("stock_exclude") else "") + f": {st}. "
            f"Targets: {meta['target_source']} (hash {meta['targets_hash']}). Base model: "
            f"`{rel(cache['model'])}`. Max iterations {mx}; metrics success_at_N only for "
            f"N <= {mx}.",
            f"Self-improvement runs: {meta.get('si_runs') or 'made here (prep:si)'} "
            + (f"with forward augmentation by `{rel(meta['forward_model'])}`"
               if meta.get("forward_model") else "without forward augmentation")
            + "; random "
            f"controls: {meta.get('control_models') or 'made here (prep:control)'}; value "
            f"networks: {meta.get('values') or 'made here from the known train routes of the '}"
            + ("" if meta.get("values") else (
                "chained USPTO-50k + ORD benchmark (prep:value:with-ord)"
                if meta.get("value_routes") == "with-ord"
                else "chained USPTO-50k benchmark (prep:value)"))
            + ". retro_star_0 is deterministic: the first seed's search serves every seed.",
            (f"Planning speed of the units run here: {min(its):.1f} to {max(its):.1f} "
             "iterations/s (one process per unit, the machine shared)." if its else ""),
            (f"Missing units ({len(missing)}): {', '.join(missing)}." if missing else ""),
            "", summary_tables(cache, setting, mx),
        ]))
    si = si_table(cache)
    png = b.out / f"{NAME}_curves.png"
    if curves:
        draw_curves(curves, png)
    head = [f"Success within N iterations per arm (mean over seeds, band: their range): "
            f"![curves]({png.name}) ([{png.name}]({png.name})).",
            f"Per-target results (one JSON line per target and unit): `{rel(b.targets_dir)}` "
            "(`retro_targets/<unit>.jsonl`); full records with routes under "
            f"`{rel(b.run_root / 'targets')}`."]
    if si:
        head += ["", "Self-improvement made here, per seed and iteration (not top-1: kept "
                 "reactions the current model did not already rank first; seconds per stage):",
                 "", si]
    if b.quick:
        head += ["", "Quick mode: a smoke test of the pipeline (15 targets, 100 iterations, "
                 "one seed, tiny self-improvement), not a test of any claim."]
    command = "python " + " ".join(sys.argv)
    extra = {"settings": cache.get("setting_meta", {}), "cache": str(b.cache_path),
             "per_target_dir": str(b.targets_dir), "curves": str(png),
             "prep": {k: {kk: vv for kk, vv in v.items() if kk != "provenance"}
                      for k, v in cache.items() if k.startswith("prep:")},
             "invocations": cache.get("invocations", [])}
    jp, mp = write_results(NAME, "quick" if b.quick else "full", command, b.started,
                           time.perf_counter() - b.t0, rows,
                           None if b.full_results else b.out,
                           "\n\n".join(["\n".join(head), *notes]), extra)
    b.log(f"wrote {jp}, {mp} and {png}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    b = Bench(args)
    b.prepare_targets()
    b.cache = b.load_cache()
    atomic_write_json(b.cache_path, b.merged())
    b.log(f"setting {b.setting}; output {b.out}; runs {b.run_root}")
    if not args.report:
        arms = args.arms or ARMS
        units = [(b.setting, s, a) for s in b.seeds for a in arms]

        def run_unit(*a):
            unit = b.run_unit(*a)
            b.cache = b.merged()
            return unit

        shown = ("success_at_10", f"success_at_{min(100, b.st['max_iterations'])}",
                 "mean_iterations")
        b.cache = common.run_units(units, b.cache, b.cache_path, b.run_root, run_unit,
                                   {b.setting: {}}, args.threads, b.started, b.t0, TAG, shown)
    report(b, b.merged())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
