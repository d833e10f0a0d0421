"""Retro*-0, Retro* and self-improved Retro* on the chained USPTO-50k (+ ORD) route benchmark.

    python benchmarks/retro/run.py --model runs/<single-step run>/model.pt --quick
    python benchmarks/retro/run.py --model runs/<single-step run>/model.pt --with-ord   # full

Stand-ins for the paper's data (``shared/DATA.md``): targets are held-out products with a known
multi-step route built by chaining held-out reactions
(``selfsup.chem.retro.workflows.route_benchmark``). USPTO-50k alone gives only 58 held-out
targets that need >= 2 steps, fewer than the paper's 190; ``--with-ord`` adds the ORD
USPTO-grants reactions to the held-out group with the extended stock
(``selfsup.chem.retro.workflows.route_benchmark_ord``: 3,083 such targets), and the script draws
its test targets from those. The stock is every reactant never produced (USPTO-50k, or
USPTO-50k + ORD), not eMolecules; it is written to ``<out>/stock.smi`` and every planning step
uses it. Arms (all on the same test targets and stock):

- ``retro_star_0``: the trained single-step model, no value (Retro*-0); no training, so one run
  serves every seed;
- ``retro_star``: the same model with a value network trained on known train routes (costs
  ``-log p`` under the model, MSE + margin hinge), one network per seed;
- ``retro_star_0_si1`` / ``_si2``: Retro*-0 with the model after 1 / 2 self-improvement
  iterations (planning on a seeded subset of the multi-step train targets, reference filter
  top-5 / p >= 0.8, fine-tuning 20 epochs, lr 1e-4, batch 1024, dropout 0.4, mixed with as
  many random train reactions: ``finetune.replay`` 1.0, the library default; ``--replay 0`` is
  the paper's recipe, the new reactions alone);
- ``retro_star_si1`` / ``_si2``: the same with the value network (trained for the base model);
- ``random_control``: Retro*-0 with the model fine-tuned on as many random true train reactions
  as self-improvement iteration 1 kept (same fine-tuning recipe, replay included).

Metrics: success within 10/25/50/100 iterations, mean route length (solved targets), mean
iterations (failures at the maximum), one-step exact top-1/top-10 on held-out test reactions
(the same fixed subset for every arm). Every seed repeats the parts that involve training or
random choices (value network, training-target subset, fine-tuning, the control's reactions); the
base single-step model is the one given. Finished units are cached in the output folder
(``retro_cache.json``) and skipped on a restart; each records its provenance (commit, torch
build, CPU: ``selfsup.provenance``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import load_json, now, row, write_results  # noqa: E402
from selfsup.io import atomic_write_json, atomic_write_text  # noqa: E402
from selfsup.provenance import provenance  # noqa: E402

ARMS = ["retro_star_0", "retro_star", "retro_star_0_si1", "retro_star_0_si2", "retro_star_si1",
        "retro_star_si2", "random_control"]
SUCCESS_AT = [10, 25, 50, 100, 200]


def settings(quick: bool) -> dict:
    if quick:
        return {"n_test_targets": 15, "test_min_length": 2, "max_iterations": 100,
                "n_value_routes": 300, "value_epochs": 30, "n_train_targets": 40,
                "si_max_iterations": 30, "n_onestep": 100, "finetune_epochs": 20}
    return {"n_test_targets": 100, "test_min_length": 2, "max_iterations": 200,
            "n_value_routes": 1000, "value_epochs": 50, "n_train_targets": 500,
            "si_max_iterations": 100, "n_onestep": 1000, "finetune_epochs": 20}


def stock_smiles(reactions, stock) -> list[str]:
    """One SMILES per stock molecule, taken from the reactants of ``reactions``."""
    seen: dict[str, str] = {}
    for r in reactions:
        for m in r.reactants:
            key = _inchikey(m)
            if key is not None and key not in seen and stock.contains_inchikey(key):
                seen[key] = m
    return sorted(seen.values())


def _inchikey(smiles: str):
    from selfsup.chem.retro.core.stock import inchikey

    return inchikey(smiles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model.pt of a single-step run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--with-ord", action="store_true",
                    help="add the ORD USPTO-grants reactions to the held-out reaction graph "
                         "(extended stock); test targets then come from that benchmark")
    ap.add_argument("--ord-root", default=None, help="folder of the uspto-grants-*.parquet")
    ap.add_argument("--data-root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--cache-dir", default=None, help="prepared USPTO-50k arrays")
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seeds", type=int, nargs="+", default=None,
                    help="default: 0 (quick), 0 1 2 (full)")
    ap.add_argument("--replay", type=float, default=None,
                    help="finetune.replay of self-improvement and the control (default: the "
                         "library's 1.0; 0 = the paper's recipe)")
    ap.add_argument("--select-on-valid", action="store_true",
                    help="fine-tuning keeps its best epoch on the validation split "
                         "(finetune.select_on_valid)")
    ap.add_argument("--report", action="store_true",
                    help="only write results from the cache (run nothing)")
    args = ap.parse_args()

    import numpy as np
    import torch

    from selfsup.chem.retro.core.stock import Stock
    from selfsup.chem.retro.models.mlp import MLPSingleStepModel
    from selfsup.chem.retro.models.value import train_value_network, value_examples_from_routes
    from selfsup.chem.retro.training.templates_data import prepare_uspto50k
    from selfsup.chem.retro.workflows.plan import (
        SearchSpec,
        make_model_factory,
        make_value_factory,
        plan_targets,
        summarize,
    )
    from selfsup.chem.retro.workflows.route_benchmark import (
        build_route_benchmark,
        default_stock,
        reactions_from_template_data,
        write_route_benchmark,
    )
    from selfsup.chem.retro.workflows.self_improve import SIFinetuneConfig, self_improve

    torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    st = settings(args.quick)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    out = Path(args.out) if args.out else (
        Path("runs") / f"bench-retro-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else Path("runs") / (("bench-retro-full-ord" if args.with_ord else "bench-retro-full")
                             + ("-select" if args.select_on_valid else "")))
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "retro_cache.json"
    cache = load_json(cache_path)
    if cache.get("model") not in (None, str(Path(args.model).resolve())):
        raise SystemExit(f"{cache_path} holds units of the model {cache['model']}; pass that "
                         "--model or another --out")
    cache["model"] = str(Path(args.model).resolve())
    replay = args.replay if args.replay is not None else SIFinetuneConfig().replay
    if cache.get("replay", replay) != replay:
        raise SystemExit(f"{cache_path} holds units fine-tuned with replay {cache['replay']}; "
                         "pass that --replay or another --out")
    cache["replay"] = replay
    if cache.get("select_on_valid", args.select_on_valid) != args.select_on_valid:
        raise SystemExit(f"{cache_path} holds units with select_on_valid "
                         f"{cache['select_on_valid']}; pass the same flag or another --out")
    cache["select_on_valid"] = args.select_on_valid

    def save() -> None:
        atomic_write_json(cache_path, cache)

    def log(msg: str) -> None:
        print(f"[retro bench {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    # -- data, stock, route benchmark --------------------------------------------------------
    data, _ = prepare_uspto50k(args.data_root, args.cache_dir)
    reactions = reactions_from_template_data(data)
    all_reactions = list(reactions)
    if args.with_ord:
        from selfsup.chem.retro.workflows.ord_reactions import ord_reactions
        from selfsup.chem.retro.workflows.route_benchmark_ord import build_route_benchmark_with_ord
        from selfsup.data.ord import load_ord_uspto

        ord_rxns, ord_ids = ord_reactions(load_ord_uspto(args.ord_root))
        bench = build_route_benchmark_with_ord(reactions, ord_rxns, ids=ord_ids)
        all_reactions += list(ord_rxns)
    else:
        bench = build_route_benchmark(reactions, stock=default_stock(reactions))
    stock = bench.stock
    write_route_benchmark(bench, out / "route_benchmark")
    stock_file = out / "stock.smi"
    if not stock_file.is_file():
        atomic_write_text(stock_file, "".join(m + "\n" for m in stock_smiles(all_reactions,
                                                                                stock)))
    file_stock = Stock.from_file(stock_file)
    if len(file_stock) != len(stock):
        raise SystemExit(f"{stock_file} holds {len(file_stock)} molecules, the benchmark's stock "
                         f"{len(stock)}: delete it and run again")
    n_multi = bench.report["groups"]["test"]["n_multistep"]
    log(f"route benchmark: {bench.report['groups']['test']['n_targets']} held-out targets, "
        f"{n_multi} need >= 2 steps; stock {stock.describe()}")
    rng = np.random.default_rng(0)  # the test targets are the same for every seed
    test_pool = [t for t in bench.targets["test"] if t.length >= st["test_min_length"]]
    multi = [t for t in test_pool if t.length >= 2]
    single = [t for t in test_pool if t.length < 2]
    n = st["n_test_targets"]
    if len(multi) > n:
        chosen = [multi[i] for i in sorted(rng.choice(len(multi), n, replace=False))]
    else:
        chosen = multi + [single[i] for i in sorted(rng.choice(len(single), n - len(multi),
                                                               replace=False))]
    targets = [t.smiles for t in chosen]
    atomic_write_text(out / "test_targets.smi", "".join(t + "\n" for t in targets))
    train_multi = bench.smiles("train", min_length=2)
    atomic_write_text(out / "train_targets_multistep.smi",
                      "".join(t + "\n" for t in train_multi))
    common_si = [f"data.root={args.data_root}" if args.data_root else "data.root=null",
                 f"data.cache_dir={args.cache_dir}" if args.cache_dir else "data.cache_dir=null",
                 f"run_root={out / 'runs'}", f"torch_threads={args.threads}",
                 f"n_workers={args.workers}", f"stock={stock_file}",
                 f"eval.n_test={st['n_onestep']}", "eval.top_k=[1,10]",
                 f"finetune.epochs={st['finetune_epochs']}"]
    if args.replay is not None:
        common_si.append(f"finetune.replay={args.replay}")
    if args.select_on_valid:
        common_si.append("finetune.select_on_valid=true")

    def plan_arm(key: str, model: str, value: str | None) -> dict:
        if key not in cache:
            if args.report:
                return {}
            t_arm = time.perf_counter()
            spec = SearchSpec(make_model_factory(str(model), args.threads), stock,
                              make_value_factory(str(value) if value else None, args.threads),
                              max_iterations=st["max_iterations"], max_depth=10)
            recs = plan_targets(targets, spec, n_workers=args.workers)
            cache[key] = summarize(recs, max_iterations=st["max_iterations"],
                                   success_at=SUCCESS_AT)
            cache[key]["seconds"] = round(time.perf_counter() - t_arm, 1)
            cache[key]["provenance"] = provenance()
            save()
            log(f"{key}: {cache[key]}")
        return cache[key]

    base_onestep = None
    per_seed: dict[int, dict] = {}
    for seed in seeds:
        sk = f"seed{seed}"
        if args.report and any(f"{sk}:{part}" not in cache for part in ("value", "si",
                                                                          "control")):
            continue
        value_path = out / f"value_seed{seed}.pt"
        if f"{sk}:value" not in cache:
            t_v = time.perf_counter()
            base = MLPSingleStepModel.load(args.model)
            train_routes = [t.route for t in bench.targets["train"]]
            order = np.random.default_rng(seed).permutation(len(train_routes))
            multi_first = sorted(order, key=lambda i: -train_routes[i].length)  # stable
            pick = multi_first[: st["n_value_routes"]]
            examples = value_examples_from_routes([train_routes[i] for i in pick], base, stock)
            vmodel, hist = train_value_network(examples, epochs=st["value_epochs"], seed=seed)
            vmodel.save(value_path)
            cache[f"{sk}:value"] = {"n_routes": len(pick), "n_examples": len(examples),
                                    "final": hist[-1],
                                    "seconds": round(time.perf_counter() - t_v, 1),
                                    "provenance": provenance()}
            save()
            log(f"{sk} value network: {cache[f'{sk}:value']}")
        if f"{sk}:si" not in cache:
            _, res = self_improve(None, common_si + [
                f"model={args.model}", "n_iterations=2", f"seed={seed}",
                f"targets.file={out / 'train_targets_multistep.smi'}",
                f"targets.n={st['n_train_targets']}", f"targets.seed={seed}",
                f"search.max_iterations={st['si_max_iterations']}", f"name=bench-si-s{seed}"])
            cache[f"{sk}:si"] = {"models": res["models"], "onestep_before": res["onestep_before"],
                                 "iterations": res["iterations"], "seconds": res["seconds"],
                                 "provenance": provenance()}
            save()
            log(f"{sk} self-improvement: "
                f"{[(it['n_kept'], it['onestep']) for it in res['iterations']]}")
        if f"{sk}:control" not in cache:
            n_kept = max(int(cache[f"{sk}:si"]["iterations"][0].get("n_kept", 0)), 2)
            _, res = self_improve(None, common_si + [
                f"model={args.model}", "mode=random_control", f"control_n_reactions={n_kept}",
                "n_iterations=1", f"seed={seed}", f"name=bench-random-control-s{seed}"])
            cache[f"{sk}:control"] = {"model": res["models"][0], "onestep": res["onestep_after"],
                                      "n_reactions": n_kept, "provenance": provenance()}
            save()
            log(f"{sk} random control: {cache[f'{sk}:control']}")
        si = cache[f"{sk}:si"]
        base_onestep = si["onestep_before"]
        ctrl = cache[f"{sk}:control"]
        vp = str(value_path)
        arms = {
            "retro_star_0": ("arm:retro_star_0", args.model, None, si["onestep_before"]),
            "retro_star": (f"{sk}:arm:retro_star", args.model, vp, si["onestep_before"]),
            "retro_star_0_si1": (f"{sk}:arm:retro_star_0_si1", si["models"][0], None,
                                 si["iterations"][0]["onestep"]),
            "retro_star_0_si2": (f"{sk}:arm:retro_star_0_si2", si["models"][1], None,
                                 si["iterations"][1]["onestep"]),
            "retro_star_si1": (f"{sk}:arm:retro_star_si1", si["models"][0], vp,
                               si["iterations"][0]["onestep"]),
            "retro_star_si2": (f"{sk}:arm:retro_star_si2", si["models"][1], vp,
                               si["iterations"][1]["onestep"]),
            "random_control": (f"{sk}:arm:random_control", ctrl["model"], None, ctrl["onestep"]),
        }
        per_seed[seed] = {}
        for arm, (key, model, value, onestep) in arms.items():
            res = plan_arm(key, model, value)
            if res:  # the units' provenance stays in the cache
                per_seed[seed][arm] = {**{k: v for k, v in res.items() if k != "provenance"},
                                       "onestep": onestep}

    done_seeds = [s for s in seeds if len(per_seed.get(s, {})) == len(ARMS)]
    setting = ((f"uspto50k+ord-chained/{len(targets)}-heldout-targets" if args.with_ord else
                f"uspto50k-chained/{len(targets)}-heldout-targets")
               + f"-min{st['test_min_length']}steps/{st['max_iterations']}it")
    rows = []
    for arm in ARMS:
        vals = [per_seed[s][arm] for s in done_seeds]
        if not vals:
            continue
        for k in [k for k in SUCCESS_AT if k <= st["max_iterations"]]:
            rows.append(row(setting, arm, f"success_at_{k}",
                            [v.get(f"success_at_{k}", float("nan")) for v in vals]))
        rows.append(row(setting, arm, "mean_route_length", [v["mean_route_length"] for v in vals]))
        rows.append(row(setting, arm, "mean_iterations", [v["mean_iterations"] for v in vals]))
        rows.append(row(setting, arm, "onestep_top1", [v["onestep"]["top1"] for v in vals]))
        rows.append(row(setting, arm, "onestep_top10", [v["onestep"]["top10"] for v in vals]))
    si_rows = {s: [{k: it.get(k) for k in ("iteration", "n_solved", "train_success_rate",
                                            "n_route_reactions", "n_kept", "n_not_ranked",
                                            "n_low_probability", "n_finetune_examples",
                                            "selected_epoch", "onestep", "seconds")
                    if k in it}
                   for it in cache[f"seed{s}:si"]["iterations"]] for s in done_seeds}
    lengths = bench.report["groups"]["test"]["length_distribution"]
    notes = (f"Stock: {stock.describe()} (written to stock.smi), not eMolecules. Targets: "
             f"{len(targets)} held-out products drawn (fixed draw) from the "
             f"{len(test_pool)} held-out targets with a known route of >= "
             f"{st['test_min_length']} steps ({n_multi} need >= 2 steps; known-route lengths "
             f"of all held-out targets: {lengths})"
             + ("; the held-out reaction group includes the ORD USPTO-grants reactions "
                f"({bench.report.get('ord')})" if args.with_ord else "")
             + f". Seeds {done_seeds} (of {seeds}); retro_star_0 involves no training and "
             "no random choice, so its one run is repeated in every seed's column. The base "
             f"single-step model is `{args.model}` (one-step exact on {st['n_onestep']} test "
             f"reactions before: {base_onestep}). The value network of the retro_star_si arms "
             "was trained for the base model. Self-improvement: "
             f"{st['n_train_targets']} multi-step train targets per iteration (seeded subset), "
             f"{st['si_max_iterations']} iterations each, fine-tuning replay {replay} (random "
             "train reactions per new reaction; 0 is the paper's recipe)"
             + (", best epoch on the validation split kept (select_on_valid)"
                if args.select_on_valid else "") + "; per seed and "
             f"iteration: {si_rows}.")
    command = "python " + " ".join(sys.argv)
    target = None if (mode == "full" and not args.out) else out  # full: benchmarks/results/
    name = ("retro_ord" if args.with_ord else "retro") + ("_select" if args.select_on_valid else "")
    write_results(name, mode, command, started, time.perf_counter() - t0, rows, target, notes,
                  extra={"route_benchmark": bench.report, "settings": st, "seeds": done_seeds,
                         "replay": replay, "select_on_valid": args.select_on_valid,
                         "per_seed": {str(s): per_seed[s] for s in done_seeds},
                         "self_improvement": si_rows,
                         "value": {str(s): cache.get(f"seed{s}:value") for s in done_seeds}})
    log(f"wrote {name}.json and {name}.md")


if __name__ == "__main__":
    main()
