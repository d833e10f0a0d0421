"""Retro* iterations per second: selfsup's ``RetroStar`` versus the peer library syntheseus.

Superseded by the Retro* part of ``benchmarks/chem_speed`` (issue 20): here the syntheseus
adapter builds ``Molecule(s)`` (RDKit parsing and canonicalisation) for every reactant of every
proposal inside the timed region and our side clears the canonicalisation cache per target, so
the two sides do not do the same work and the figures are not a fair comparison.

Both searches answer from the same fixed single-step table and the same stock, so only the
search machinery is timed (no torch on either side):

1. **Targets**: held-out USPTO-50k products of the chained-route benchmark
   (``selfsup.chem.retro.workflows.route_benchmark``) that need >= 2 steps, in SMILES order.
2. **Table**: our Retro*-0 runs on the targets with the trained template MLP (``--model``,
   top-50 templates, rdchiral); every product the search asks for is recorded with its final
   proposals (merged, renormalised probabilities). The table is then completed: any product the
   peer search asks for that is missing is computed with the same MLP and added, and both
   searches are run again (up to ``--fill-rounds``), so both sides answer every query from the
   table (``table_misses`` says how many were not).
3. **Stock**: the USPTO-50k stand-in (``default_stock``: reactants never produced); the table
   file lists which of its molecules are in stock, and both sides look those up in a set.
4. **Searches**: Retro*-0 on both sides with the same rules: cost ``-log(clip(p, 1e-3, 1))``,
   value 0, at most ``--max-iterations`` expansions (one expansion = one model call, cache hits
   included), no reaction whose reactant is the molecule or an ancestor, at most 10 reactions
   deep, stop at the first solution, a fresh model cache per target. syntheseus runs its
   ``RetroStarSearch`` with an adapter (a ``BackwardReactionModel`` that builds its reactions
   from the table, an inventory that checks the set) in a subprocess of its own virtualenv
   (``--peer-python``), so the two libraries are never imported together.

Reported per arm (``selfsup_retro_star``, ``syntheseus_retro_star``): iterations per second
(total expansions / total search time, one value per repeat), success rate and mean iterations.

    PYTHONPATH=src .venv/bin/python benchmarks/retro/speed.py --quick
    PYTHONPATH=src .venv/bin/python benchmarks/retro/speed.py        # full -> benchmarks/results/
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chem_speed.retro_part import recording_model  # noqa: E402
from common import now, row, write_results  # noqa: E402
from selfsup.io import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "runs" / "retro-single-step-cpu-20261128-001009" / "model.pt"
DEFAULT_PEER = "/work/peers/syntheseus-venv/bin/python"
MAX_DEPTH = 10
TOP_K = 50
MIN_P = 1e-3

# Runs in the peer's virtualenv; reads {"table": path, "targets": [...], ...} on stdin.
PEER = r"""
import json, sys, time
from importlib.metadata import version
from syntheseus.interface.bag import Bag
from syntheseus.interface.models import BackwardReactionModel
from syntheseus.interface.molecule import Molecule
from syntheseus.interface.reaction import SingleProductReaction
from syntheseus.search.algorithms.best_first.retro_star import RetroStarSearch
from syntheseus.search.mol_inventory import BaseMolInventory
from syntheseus.search.node_evaluation.common import (
    ConstantNodeEvaluator, ReactionModelLogProbCost)

cfg = json.loads(sys.stdin.read())
with open(cfg["table"]) as fh:
    data = json.load(fh)
table, stock = data["table"], set(data["stock"])
misses = set()


class TableModel(BackwardReactionModel):
    def _get_reactions(self, inputs, num_results):
        out = []
        for mol in inputs:
            entries = table.get(mol.smiles)
            if entries is None:
                misses.add(mol.smiles)
                entries = []
            out.append([SingleProductReaction(
                product=mol, reactants=Bag([Molecule(s) for s in reactants]),
                metadata={"probability": p}) for reactants, p in entries[:num_results]])
        return out


class SetInventory(BaseMolInventory):
    def is_purchasable(self, mol):
        return mol.smiles in stock


n = cfg["max_iterations"]
model = TableModel(use_cache=True, count_cache_in_num_calls=True,
                   default_num_results=cfg["top_k"])
alg = RetroStarSearch(
    reaction_model=model, mol_inventory=SetInventory(), limit_iterations=n,
    limit_reaction_model_calls=n, max_expansion_depth=2 * cfg["max_depth"],
    prevent_repeat_mol_in_trees=True, stop_on_first_solution=True,
    value_function=ConstantNodeEvaluator(0.0),
    and_node_cost_fn=ReactionModelLogProbCost(clip_probability_min=cfg["min_p"],
                                              clip_probability_max=1.0))
repeats = []
for _ in range(cfg["repeats"]):
    recs = []
    for target in cfg["targets"]:
        alg.reset()
        t = time.perf_counter()
        graph, _ = alg.run_from_mol(Molecule(target))
        dt = time.perf_counter() - t
        recs.append({"target": target, "success": bool(graph.root_node.has_solution),
                     "iterations": model.num_calls(count_cache=True), "time_s": dt,
                     "n_nodes": len(graph)})
    repeats.append(recs)
print(json.dumps({"repeats": repeats, "misses": sorted(misses),
                  "version": version("syntheseus")}))
"""


def _peer(python: str, cfg: dict) -> dict:
    run = subprocess.run([python, "-c", PEER], input=json.dumps(cfg), capture_output=True,
                         text=True)
    if run.returncode != 0:
        sys.exit(f"peer interpreter {python} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def settings(quick: bool) -> dict:
    if quick:
        return {"n_targets": 6, "max_iterations": 30, "repeats": 2, "fill_rounds": 2}
    return {"n_targets": 20, "max_iterations": 100, "repeats": 3, "fill_rounds": 3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="model.pt of a single-step run")
    ap.add_argument("--peer-python", default=DEFAULT_PEER,
                    help="python of the venv with syntheseus installed")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data-root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--cache-dir", default=None, help="prepared USPTO-50k arrays")
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    ap.add_argument("--n-targets", type=int, default=None)
    ap.add_argument("--max-iterations", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--fill-rounds", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (table only)")
    args = ap.parse_args()
    st = settings(args.quick)
    for k in st:
        if getattr(args, k) is not None:
            st[k] = getattr(args, k)

    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else (
        ROOT / "runs" / f"bench-retro_speed-quick-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.quick else ROOT / "benchmarks" / "results" / "retro_speed")
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[retro_speed {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    from selfsup.chem.molecules import canonical_smiles
    from selfsup.chem.retro.core.search import RetroStar
    from selfsup.chem.retro.core.single_step import FixedReactionModel
    from selfsup.chem.retro.core.stock import Stock
    from selfsup.chem.retro.workflows.route_benchmark import (
        build_route_benchmark,
        default_stock,
        load_uspto_reactions,
    )

    # -- targets and the stock ---------------------------------------------------------------
    reactions = load_uspto_reactions(args.data_root, args.cache_dir)
    stock = default_stock(reactions)
    bench = build_route_benchmark(reactions, stock=stock)
    multi = [t.smiles for t in bench.targets["test"] if t.length >= 2]
    targets = multi[: st["n_targets"]]
    log(f"{len(targets)} held-out targets needing >= 2 steps (of {len(multi)}); stock "
        f"{stock.describe()}")

    # -- the table: our search with the MLP, recording every answer --------------------------
    import torch

    from selfsup.chem.retro.models.mlp import MLPSingleStepModel

    torch.set_num_threads(args.threads)
    mlp = MLPSingleStepModel.load(args.model)
    table: dict[str, list] = {}

    def fill(products) -> None:
        todo = [p for p in products if p not in table]
        for i in range(0, len(todo), 64):
            recording_model(mlp, table).propose(todo[i:i + 64], TOP_K)

    rec_search = RetroStar(recording_model(mlp, table), stock, top_k=TOP_K,
                           max_iterations=st["max_iterations"], max_depth=MAX_DEPTH)
    t_rec = time.perf_counter()
    mlp_runs = [rec_search.run(t) for t in targets]
    log(f"recorded {len(table)} products with the MLP in {time.perf_counter() - t_rec:.0f} s; "
        f"MLP success {sum(r.success for r in mlp_runs)}/{len(targets)}")

    class SetStock(Stock):
        """The same in-stock decisions as the peer's inventory: a set of table SMILES."""

        def __init__(self, smiles: set[str]) -> None:
            super().__init__(name=stock.name, source=stock.source)
            self._set = smiles

        def __contains__(self, smiles: object) -> bool:
            return smiles in self._set

        def __len__(self) -> int:
            return len(self._set)

    def write_table() -> tuple[Path, set[str]]:
        mols = set(targets) | set(table)
        for props in table.values():
            for reactants, _ in props:
                mols.update(reactants)
        in_stock = {m for m in mols if m in stock}
        path = atomic_write_json(out / "table.json", {
            "model": str(args.model), "top_k": TOP_K, "table": table,
            "stock": sorted(in_stock), "stock_source": stock.describe()})
        return path, in_stock

    def ours(in_stock: set[str]) -> tuple[list[list[dict]], int]:
        model = FixedReactionModel(table, renormalize=False)
        search = RetroStar(model, SetStock(in_stock), top_k=TOP_K,
                           max_iterations=st["max_iterations"], max_depth=MAX_DEPTH,
                           min_probability=MIN_P)
        misses: set[str] = set()
        reps = []
        for _ in range(st["repeats"]):
            recs = []
            for t in targets:
                model.clear_cache()
                canonical_smiles.cache_clear()  # cold per target, like the peer's fresh cache
                r = search.run(t)
                recs.append({"target": r.target, "success": r.success,
                             "iterations": r.iterations, "time_s": r.time_s})
                misses.update(n.smiles for n in _expanded(r.root) if n.smiles not in table)
            reps.append(recs)
        return reps, len(misses)

    peer: dict = {}
    for rnd in range(st["fill_rounds"] + 1):
        path, in_stock = write_table()
        peer = _peer(args.peer_python, {
            "table": str(path), "targets": targets, "max_iterations": st["max_iterations"],
            "max_depth": MAX_DEPTH, "top_k": TOP_K, "min_p": MIN_P, "repeats": 1})
        log(f"round {rnd}: table {len(table)} products, peer misses {len(peer['misses'])}")
        if not peer["misses"] or rnd == st["fill_rounds"]:
            break
        fill(peer["misses"])

    # -- timed runs --------------------------------------------------------------------------
    path, in_stock = write_table()
    our_reps, our_misses = ours(in_stock)
    peer = _peer(args.peer_python, {
        "table": str(path), "targets": targets, "max_iterations": st["max_iterations"],
        "max_depth": MAX_DEPTH, "top_k": TOP_K, "min_p": MIN_P, "repeats": st["repeats"]})
    arms = {"selfsup_retro_star": (our_reps, our_misses),
            "syntheseus_retro_star": (peer["repeats"], len(peer["misses"]))}

    setting = (f"uspto50k-heldout-multistep/{len(targets)}-targets/{st['max_iterations']}it/"
               "fixed-mlp-table")
    rows, summary = [], {}
    for arm, (reps, n_miss) in arms.items():
        ips = [sum(r["iterations"] for r in rep) / sum(r["time_s"] for r in rep) for rep in reps]
        succ = [sum(r["success"] for r in rep) / len(rep) for rep in reps]
        iters = [statistics.fmean(r["iterations"] for r in rep) for rep in reps]
        rows += [row(setting, arm, "iterations_per_s", ips),
                 row(setting, arm, "success_rate", succ),
                 row(setting, arm, "mean_iterations", iters)]
        summary[arm] = {"iterations_per_s": round(statistics.fmean(ips), 1),
                        "success_rate": succ[0], "mean_iterations": iters[0],
                        "table_misses": n_miss,
                        "per_target": [{k: r[k] for k in ("target", "success", "iterations")}
                                       for r in reps[0]]}
        log(f"{arm}: {summary[arm]['iterations_per_s']} it/s, success {succ[0]:.3f}, "
            f"mean iterations {iters[0]:.1f}, table misses {n_miss}")
    agree = sum(a["success"] == b["success"] and a["iterations"] == b["iterations"]
                for a, b in zip(summary["selfsup_retro_star"]["per_target"],
                                summary["syntheseus_retro_star"]["per_target"]))
    notes = (f"Both arms: Retro*-0 over the same fixed table of MLP proposals ({len(table)} "
             f"products, top-{TOP_K}, recorded from {args.model}) and the same stock (USPTO-50k "
             f"reactants never produced, looked up in a set of the table's in-stock molecules); "
             f"cost -log(clip(p, {MIN_P}, 1)), <= {st['max_iterations']} expansions, depth <= "
             f"{MAX_DEPTH}, first solution stops, fresh model cache per target, 1 process. "
             f"syntheseus {peer.get('version')} in its own venv. Targets agreeing on success and "
             f"iteration count: {agree}/{len(targets)}. Repeats are the seeds column.")
    command = "python " + " ".join(sys.argv)
    target = None if (mode == "full" and not args.out) else out
    jp, _ = write_results("retro_speed", mode, command, started, time.perf_counter() - t0, rows,
                          target, notes, extra={"settings": st, "targets": targets,
                                                "summary": summary,
                                                "table_products": len(table),
                                                "agreeing_targets": agree})
    log(f"wrote {jp}")


def _expanded(root):
    from selfsup.chem.retro.core.search import MoleculeNode, iter_nodes

    return [n for n in iter_nodes(root) if isinstance(n, MoleculeNode) and n.expanded]


if __name__ == "__main__":
    main()
