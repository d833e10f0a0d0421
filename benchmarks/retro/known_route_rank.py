"""Where the known routes of the reachable targets stand in each model's proposals (issue 23).

    python benchmarks/retro/known_route_rank.py          # results/retro_known_route_rank.*
    python benchmarks/retro/known_route_rank.py --quick  # 20 targets, seed 0: runs/bench-...

The retro v2 benchmark (``run_v2.py``) plans the reachable held-out targets
(``benchmarks/results/retro_reachable/``) with the base single-step model and with the models
that fine-tuning made from it: self-improvement iterations 1 and 2 and the random control, one
of each per seed and stock, all listed in its cache (``retro_cache.json``). This script asks
each of those models, without any search, about every step of every target's known route:

- ``solvable_share``: targets whose every known step is among the model's top-50 proposals (the
  planner's view: templates applied with rdchiral, identical reactant sets merged) -- the
  ceiling of ``route_benchmark_reachable`` for that model;
- ``steps_in_top50_share``: the same per step;
- ``median_template_rank`` and ``template_rank_gt50_share``: the rank of the step's own template
  (matched to the model's vocabulary by canonical key) among the model's template scores;
- ``mean_entropy``: the mean entropy (nats) of the template distribution on the steps' products;
- ``mean_known_probability``: the mean probability of the step's own template.

Seeds are the benchmark's seeds (the base model has one value, repeated per seed so that every
row has the same seeds). Arms: ``base``, ``si1``, ``si2``, ``random_control``; setting
``known-route/<stock>``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import RESULTS, load_json, now, row, write_results  # noqa: E402
from selfsup.io import atomic_write_json  # noqa: E402

NAME = "retro_known_route_rank"
ROUTES = RESULTS / "retro_reachable" / "reachable_routes.json"
CACHE = RESULTS / "retro_cache.json"
ARMS = ("base", "si1", "si2", "random_control")
METRICS = ("solvable_share", "steps_in_top50_share", "median_template_rank",
           "template_rank_gt50_share", "mean_entropy", "mean_known_probability")


def route_steps(route: dict) -> list[tuple[str, tuple[str, ...], str | None]]:
    """``(product, sorted reactants, template)`` of every step of a known route (the nested
    dict of ``reachable_routes.json``), breadth first from the target."""
    out, queue = [], [route]
    while queue:
        node = queue.pop(0)
        step = node.get("reaction") or {}
        kids = step.get("reactants") or []
        if kids:
            meta = step.get("metadata") or {}
            out.append((node["smiles"], tuple(sorted(k["smiles"] for k in kids)),
                        meta.get("template")))
            queue.extend(kids)
    return out


def models_from_cache(cache: dict, stock: str) -> dict[str, dict[int, str]]:
    """``{arm: {seed: model.pt}}`` of the fine-tuned models the benchmark made for ``stock``."""
    out: dict[str, dict[int, str]] = {"si1": {}, "si2": {}, "random_control": {}}
    for key, entry in cache.items():
        parts = key.split(":")
        if len(parts) != 4 or parts[0] != "prep" or parts[2] != stock:
            continue
        seed = int(parts[3].removeprefix("seed"))
        if parts[1] == "si":
            out["si1"][seed], out["si2"][seed] = entry["models"][0], entry["models"][1]
        elif parts[1] == "control":
            out["random_control"][seed] = entry["model"]
    return out


def model_hashes(cache: dict) -> dict[str, str]:
    """``{model.pt: SHA-256 prefix}`` of the base and fine-tuned models whose hash the cache
    records (``run_v2.py`` records them since the runs moved between machines)."""
    out = {cache["model"]: cache["model_sha256"]} if cache.get("model_sha256") else {}
    for key, entry in cache.items():
        if not key.startswith(("prep:si:", "prep:control:")) or not isinstance(entry, dict):
            continue
        paths = entry.get("models") or [entry.get("model")]
        shas = entry.get("model_sha256")
        shas = shas if isinstance(shas, list) else [shas]
        out.update({p: h for p, h in zip(paths, shas) if p and h})
    return out


def model_figures(model, targets: list[dict], top_k: int = 50) -> tuple[dict, list[dict]]:
    """The metrics of the module docstring for one model, and one record per target."""
    import numpy as np

    from selfsup.chem.retro.training.template_identity import template_keys

    index = {k: i for i, k in enumerate(template_keys(model.templates)) if k}
    records, ranks, probs, ents, in_top = [], [], [], [], []
    for t in targets:
        steps = route_steps(t["route"])
        products = [p for p, _, _ in steps]
        scores = model.template_scores(products)
        proposals = model.propose(products, top_k)
        keys = template_keys([tpl or "" for _, _, tpl in steps])
        ok_all = True
        for (_, reactants, _), key, s, props in zip(steps, keys, scores, proposals):
            ok = any(tuple(sorted(p.reactants)) == reactants for p in props)
            ok_all &= ok
            in_top.append(ok)
            s = np.asarray(s, dtype=np.float64)
            ents.append(float(-(s[s > 0] * np.log(s[s > 0])).sum()))
            j = index.get(key) if key else None
            if j is not None:
                ranks.append(int((s > s[j]).sum()) + 1)
                probs.append(float(s[j]))
        records.append({"smiles": t["smiles"], "solvable": ok_all})
        model.clear_cache()
    n = max(len(records), 1)
    figures = {
        "solvable_share": sum(r["solvable"] for r in records) / n,
        "steps_in_top50_share": sum(in_top) / max(len(in_top), 1),
        "median_template_rank": statistics.median(ranks) if ranks else math.nan,
        "template_rank_gt50_share": (sum(r > top_k for r in ranks) / len(ranks)
                                     if ranks else math.nan),
        "mean_entropy": statistics.fmean(ents) if ents else math.nan,
        "mean_known_probability": statistics.fmean(probs) if probs else math.nan,
        "n_steps": len(in_top), "n_steps_with_template": len(ranks),
    }
    return figures, records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the first 20 targets, seed 0 only")
    ap.add_argument("--cache", default=str(CACHE), help="the retro v2 benchmark's cache")
    ap.add_argument("--routes", default=str(ROUTES))
    ap.add_argument("--stocks", nargs="+", default=None,
                    help="stock names of the cache (default: every one with a model)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from selfsup.chem.retro.models.mlp import MLPSingleStepModel

    torch.set_num_threads(1)
    started, t0 = now(), time.perf_counter()
    cache = load_json(Path(args.cache))
    if not cache.get("model"):
        raise SystemExit(f"{args.cache}: no retro v2 benchmark cache (run benchmarks/retro/"
                         "run_v2.py first, or pass --cache)")
    targets = load_json(Path(args.routes)) if Path(args.routes).is_file() else None
    if not targets:
        raise SystemExit(f"{args.routes}: no known routes (write them with python -m "
                         "selfsup.chem.retro.workflows.route_benchmark_reachable)")
    if args.quick:
        targets = targets[:20]
    stocks = args.stocks or sorted({k.split(":")[2] for k in cache
                                    if k.startswith(("prep:si:", "prep:control:"))})
    out = Path(args.out) if args.out else (
        RESULTS if not args.quick
        else Path("runs") / f"bench-{NAME}-quick-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"[{NAME}] {len(targets)} targets, stocks {stocks}; output {out}", flush=True)
    memo: dict[str, dict] = {}
    # figures of models known by hash, kept beside the results: a model whose file is gone
    # (made on another machine) keeps its figures
    sha_of = model_hashes(cache)
    kept_path = out / f"{NAME}_cache.json"
    kept = load_json(kept_path) if not args.quick else {}
    key_targets = f"{len(targets)} targets"

    def figures_of(path: str) -> dict:
        sha = sha_of.get(path)
        if path not in memo and sha and (kept.get(sha) or {}).get("targets") == key_targets:
            memo[path] = kept[sha]["figures"]
        if path not in memo:
            if not Path(path).is_file():
                raise SystemExit(f"{path} is gone and its figures are not kept in {kept_path}: "
                                 "run benchmarks/retro/run_v2.py again to make it (it checks "
                                 "the remade model against its cache)")
            tm = time.perf_counter()
            memo[path] = model_figures(MLPSingleStepModel.load(path), targets)[0]
            print(f"[{NAME}]   {path}: solvable {memo[path]['solvable_share']:.3f}, median "
                  f"rank {memo[path]['median_template_rank']}, entropy "
                  f"{memo[path]['mean_entropy']:.3f} ({time.perf_counter() - tm:.0f}s)",
                  flush=True)
            if sha and not args.quick:
                kept[sha] = {"model": path, "targets": key_targets, "figures": memo[path]}
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_json(kept_path, kept)
        return memo[path]

    rows, seeds_of = [], {}
    for stock in stocks:
        made = models_from_cache(cache, stock)
        seeds = sorted(set(made["si1"]) | set(made["random_control"]))
        if args.quick:
            seeds = seeds[:1]
        seeds_of[stock] = seeds
        setting = f"known-route/{stock}"
        per_arm = {"base": {s: cache["model"] for s in seeds},
                   **{a: {s: made[a][s] for s in seeds if s in made[a]} for a in ARMS[1:]}}
        for arm in ARMS:
            if not per_arm[arm]:
                continue
            figs = [figures_of(per_arm[arm][s]) for s in sorted(per_arm[arm])]
            rows += [row(setting, arm, m, [f[m] for f in figs]) for m in METRICS]
    notes = ("Each model asked about every step of the known routes of the reachable targets "
             f"({len(targets)}), no search: see the script's docstring. Seeds per stock: "
             + "; ".join(f"{k} {v}" for k, v in seeds_of.items()) + ". Models: the cache's "
             "`prep:si:<stock>:seed<n>` (iterations 1 and 2) and `prep:control:...` entries.")
    jp, mp = write_results(NAME, "quick" if args.quick else "full",
                           "python benchmarks/retro/known_route_rank.py"
                           + (" --quick" if args.quick else ""), started,
                           time.perf_counter() - t0, rows, out, notes)
    print(f"[{NAME}] wrote {jp} and {mp}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
