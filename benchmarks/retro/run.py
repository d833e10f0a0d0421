"""Retro*-0, Retro* and self-improved Retro* on the USPTO-50k chained-route benchmark.

    python benchmarks/retro/run.py --model runs/<single-step run>/model.pt --quick
    python benchmarks/retro/run.py --model runs/<single-step run>/model.pt      # full

Stand-ins for the paper's data (``shared/DATA.md``): targets are held-out (valid + test)
USPTO-50k products with a known multi-step route built by chaining held-out reactions
(``selfsup.chem.retro.route_benchmark``; only 58 held-out targets need >= 2 steps, fewer than
the paper's 190); the stock is every USPTO-50k reactant never produced by any reaction, not
eMolecules. Arms (all on the same test targets and stock):

- ``retro_star_0``: the trained single-step model, no value (Retro*-0);
- ``retro_star``: the same model with a value network trained on the known train routes (costs
  ``-log p`` under the model, MSE + margin hinge);
- ``retro_star_0_si1`` / ``_si2``: Retro*-0 with the model after 1 / 2 self-improvement
  iterations (planning on train targets, reference filter top-5 / p >= 0.8, fine-tuning);
- ``retro_star_si1`` / ``_si2``: the same with the value network (trained for the base model);
- ``random_control``: Retro*-0 with the model fine-tuned on as many random true train reactions
  as self-improvement iteration 1 kept.

Metrics: success within 10/25/50/100 iterations, mean route length (solved targets), mean
iterations (failures at the maximum), one-step exact top-1/top-10 on held-out test reactions.
Finished units are cached in the output folder (``retro_cache.json``) and skipped on a restart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import load_json, now, row, write_results  # noqa: E402
from selfsup.io import atomic_write_json  # noqa: E402

ARMS = ["retro_star_0", "retro_star", "retro_star_0_si1", "retro_star_0_si2", "retro_star_si1",
        "retro_star_si2", "random_control"]
SUCCESS_AT = [10, 25, 50, 100]


def settings(quick: bool) -> dict:
    if quick:
        return {"n_test_targets": 15, "test_min_length": 2, "max_iterations": 100,
                "n_value_routes": 300, "value_epochs": 30, "n_train_targets": 40,
                "si_max_iterations": 30, "n_onestep": 100, "finetune_epochs": 20}
    return {"n_test_targets": 190, "test_min_length": 1, "max_iterations": 500,
            "n_value_routes": 5000, "value_epochs": 50, "n_train_targets": 1000,
            "si_max_iterations": 100, "n_onestep": 1000, "finetune_epochs": 20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model.pt of a single-step run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data-root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--cache-dir", default=None, help="prepared USPTO-50k arrays")
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import torch

    from selfsup.chem.retro.mlp import MLPSingleStepModel
    from selfsup.chem.retro.plan import (
        SearchSpec,
        make_model_factory,
        make_value_factory,
        plan_targets,
        summarize,
    )
    from selfsup.chem.retro.route_benchmark import (
        build_route_benchmark,
        default_stock,
        reactions_from_template_data,
        write_route_benchmark,
    )
    from selfsup.chem.retro.self_improve import self_improve
    from selfsup.chem.retro.templates_data import prepare_uspto50k
    from selfsup.chem.retro.value import train_value_network, value_examples_from_routes

    torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    st = settings(args.quick)
    out = Path(args.out) if args.out else (
        Path("runs") / f"bench-retro-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else Path(__file__).resolve().parents[1] / "results" / "retro")
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "retro_cache.json"
    cache = load_json(cache_path)

    def save() -> None:
        atomic_write_json(cache_path, cache)

    def log(msg: str) -> None:
        print(f"[retro bench {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    # -- data, stock, route benchmark --------------------------------------------------------
    data, _ = prepare_uspto50k(args.data_root, args.cache_dir)
    reactions = reactions_from_template_data(data)
    stock = default_stock(reactions)
    bench = build_route_benchmark(reactions, stock=stock)
    write_route_benchmark(bench, out / "route_benchmark")
    log(f"route benchmark: {bench.report['groups']['test']['n_targets']} held-out targets, "
        f"{bench.report['groups']['test']['n_multistep']} need >= 2 steps; stock "
        f"{stock.describe()}")
    rng = np.random.default_rng(args.seed)
    test_pool = [t for t in bench.targets["test"] if t.length >= st["test_min_length"]]
    multi = [t for t in test_pool if t.length >= 2]
    single = [t for t in test_pool if t.length < 2]
    n = st["n_test_targets"]
    chosen = multi[:n] if len(multi) >= n else multi + [
        single[i] for i in sorted(rng.choice(len(single), n - len(multi), replace=False))]
    if len(multi) > n:
        chosen = [multi[i] for i in sorted(rng.choice(len(multi), n, replace=False))]
    targets = [t.smiles for t in chosen]
    (out / "test_targets.smi").write_text("".join(t + "\n" for t in targets))
    common_si = [f"data.root={args.data_root}" if args.data_root else "data.root=null",
                 f"data.cache_dir={args.cache_dir}" if args.cache_dir else "data.cache_dir=null",
                 f"run_root={out / 'runs'}", f"torch_threads={args.threads}",
                 f"n_workers={args.workers}", f"seed={args.seed}",
                 f"eval.n_test={st['n_onestep']}", "eval.top_k=[1,10]",
                 f"finetune.epochs={st['finetune_epochs']}"]

    # -- value network -----------------------------------------------------------------------
    value_path = out / "value.pt"
    if not value_path.is_file():
        base = MLPSingleStepModel.load(args.model)
        train_routes = [t.route for t in bench.targets["train"]]
        multi_first = sorted(range(len(train_routes)), key=lambda i: -train_routes[i].length)
        pick = multi_first[: st["n_value_routes"]]
        examples = value_examples_from_routes([train_routes[i] for i in pick], base, stock)
        vmodel, hist = train_value_network(examples, epochs=st["value_epochs"], seed=args.seed)
        vmodel.save(value_path)
        cache["value"] = {"n_routes": len(pick), "n_examples": len(examples),
                          "final": hist[-1]}
        save()
        log(f"value network: {cache['value']}")

    # -- self-improvement and the random control ---------------------------------------------
    if "si" not in cache:
        _, res = self_improve(None, common_si + [
            f"model={args.model}", "n_iterations=2", f"targets.n={st['n_train_targets']}",
            f"search.max_iterations={st['si_max_iterations']}", "name=bench-si"])
        cache["si"] = {"models": res["models"], "onestep_before": res["onestep_before"],
                       "iterations": [{k: v for k, v in it.items()} for it in res["iterations"]]}
        save()
        log(f"self-improvement: {[(it['n_kept'], it['onestep']) for it in res['iterations']]}")
    if "control" not in cache:
        n_kept = max(int(cache["si"]["iterations"][0].get("n_kept", 0)), 2)
        _, res = self_improve(None, common_si + [
            f"model={args.model}", "mode=random_control", f"control_n_reactions={n_kept}",
            "n_iterations=1", "name=bench-random-control"])
        cache["control"] = {"model": res["models"][0], "onestep": res["onestep_after"],
                            "n_reactions": n_kept}
        save()
        log(f"random control: {cache['control']}")

    si_models = cache["si"]["models"]
    onestep_base = cache["si"]["onestep_before"]
    arms = {
        "retro_star_0": (args.model, None, onestep_base),
        "retro_star": (args.model, value_path, onestep_base),
        "retro_star_0_si1": (si_models[0], None, cache["si"]["iterations"][0]["onestep"]),
        "retro_star_0_si2": (si_models[1], None, cache["si"]["iterations"][1]["onestep"]),
        "retro_star_si1": (si_models[0], value_path, cache["si"]["iterations"][0]["onestep"]),
        "retro_star_si2": (si_models[1], value_path, cache["si"]["iterations"][1]["onestep"]),
        "random_control": (cache["control"]["model"], None, cache["control"]["onestep"]),
    }
    for arm, (model, value, _) in arms.items():
        if f"arm:{arm}" in cache:
            continue
        spec = SearchSpec(make_model_factory(str(model), args.threads), stock,
                          make_value_factory(str(value) if value else None, args.threads),
                          max_iterations=st["max_iterations"], max_depth=10)
        recs = plan_targets(targets, spec, n_workers=args.workers)
        cache[f"arm:{arm}"] = summarize(recs, max_iterations=st["max_iterations"],
                                        success_at=SUCCESS_AT)
        save()
        log(f"{arm}: {cache[f'arm:{arm}']}")

    setting = (f"uspto50k-chained/{len(targets)}-heldout-targets"
               f"-min{st['test_min_length']}steps/{st['max_iterations']}it")
    rows = []
    for arm, (_, _, onestep) in arms.items():
        s = cache[f"arm:{arm}"]
        for k in SUCCESS_AT:
            rows.append(row(setting, arm, f"success_at_{k}", [s.get(f"success_at_{k}",
                                                                     float("nan"))]))
        rows.append(row(setting, arm, "mean_route_length", [s["mean_route_length"]]))
        rows.append(row(setting, arm, "mean_iterations", [s["mean_iterations"]]))
        rows.append(row(setting, arm, "onestep_top1", [onestep["top1"]]))
        rows.append(row(setting, arm, "onestep_top10", [onestep["top10"]]))
    notes = ("Stock: USPTO-50k reactants never produced (" + str(stock.describe()) + "), not "
             "eMolecules. Targets: held-out USPTO-50k products with known chained routes "
             f"({bench.report['groups']['test']['n_multistep']} held-out targets need >= 2 "
             "steps). One seed. The value network of the retro_star_si arms was trained for "
             "the base model.")
    command = "python " + " ".join(sys.argv)
    target = None if (mode == "full" and not args.out) else out  # full: benchmarks/results/
    write_results("retro", mode, command, started, time.perf_counter() - t0, rows, target, notes,
                  extra={"route_benchmark": bench.report, "settings": st,
                         "self_improvement": cache["si"], "random_control": cache["control"],
                         "value": cache.get("value")})
    log("wrote retro.json and retro.md")


if __name__ == "__main__":
    main()
