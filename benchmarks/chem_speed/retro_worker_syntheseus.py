"""One repeat of the syntheseus arm of `chem_speed`'s Retro* part; runs in syntheseus's venv.

Reads its job (JSON) on stdin and prints one JSON line: per-target records, the timed seconds,
gc counters, the table misses and, with the MLP, where the time went. See ``retro_part.py``.

- ``mode: "table"``: syntheseus's ``RetroStarSearch`` answers from the fixed proposal table. Every
  ``Molecule`` (``canonicalize=False, make_rdkit_mol=False``: the table is canonical) and every
  ``SingleProductReaction`` of the table is built before the clock starts, so the timed region
  holds only the search and its table look-ups (our side likewise builds its table model
  before timing).
- ``mode: "mlp"``: the reaction model is our template MLP (its ``propose`` function, no cache on
  our side: syntheseus caches) and the stock is our ``Stock``; selfsup, torch and rdchiral are
  imported from the paths in the job (appended after this venv's own packages).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from importlib.metadata import version


def main() -> None:
    job = json.loads(sys.stdin.read())
    for p in job.get("extra_paths", []):
        sys.path.append(p)

    from syntheseus.interface.bag import Bag
    from syntheseus.interface.models import BackwardReactionModel
    from syntheseus.interface.molecule import Molecule
    from syntheseus.interface.reaction import SingleProductReaction
    from syntheseus.search.algorithms.best_first.retro_star import RetroStarSearch
    from syntheseus.search.mol_inventory import BaseMolInventory
    from syntheseus.search.node_evaluation.common import (
        ConstantNodeEvaluator,
        ReactionModelLogProbCost,
    )

    top_k = job["top_k"]
    misses: set[str] = set()

    def mol(s: str) -> Molecule:
        return Molecule(s, canonicalize=False, make_rdkit_mol=False)

    if job["mode"] == "table":
        with open(job["table"]) as fh:
            data = json.load(fh)
        stock = set(data["stock"])
        mols: dict[str, Molecule] = {}

        def shared(s: str) -> Molecule:
            m = mols.get(s)
            if m is None:
                m = mols[s] = mol(s)
            return m

        reactions = {
            prod: [SingleProductReaction(product=shared(prod),
                                         reactants=Bag([shared(s) for s in reactants]),
                                         metadata={"probability": p})
                   for reactants, p in entries[:top_k]]
            for prod, entries in data["table"].items()}
        targets = [shared(t) for t in job["targets"]]

        class TableModel(BackwardReactionModel):
            def _get_reactions(self, inputs, num_results):
                out = []
                for m in inputs:
                    rxns = reactions.get(m.smiles)
                    if rxns is None:
                        misses.add(m.smiles)
                        rxns = []
                    out.append(rxns[:num_results])
                return out

        class SetInventory(BaseMolInventory):
            def is_purchasable(self, m):
                return m.smiles in stock

        model = TableModel(use_cache=True, count_cache_in_num_calls=True,
                           default_num_results=top_k)
        inventory = SetInventory()
    else:
        import torch

        from selfsup.chem.retro.core.stock import Stock
        from selfsup.chem.retro.models.mlp import MLPSingleStepModel

        sys.path.insert(0, job["worker_dir"])
        from retro_timing import Timer

        torch.set_num_threads(job["threads"])
        with open(job["stock"]) as fh:
            keys = json.load(fh)
        our_stock = Stock(set(keys["inchikeys"]), name=keys["name"], source=keys["source"])
        mlp = MLPSingleStepModel.load(job["model"], use_cache=False)
        timer = Timer(mlp)
        targets = [mol(t) for t in job["targets"]]

        class OurModel(BackwardReactionModel):
            def _get_reactions(self, inputs, num_results):
                props = mlp.propose([m.smiles for m in inputs], num_results)
                return [[SingleProductReaction(product=m,
                                               reactants=Bag([mol(s) for s in p.reactants]),
                                               metadata={"probability": p.probability})
                         for p in ps] for m, ps in zip(inputs, props)]

        class StockInventory(BaseMolInventory):
            def is_purchasable(self, m):
                return m.smiles in our_stock

        model = OurModel(use_cache=True, count_cache_in_num_calls=True,
                         default_num_results=top_k)
        inventory = StockInventory()

    n = job["max_iterations"]
    alg = RetroStarSearch(
        reaction_model=model, mol_inventory=inventory, limit_iterations=n,
        limit_reaction_model_calls=n, max_expansion_depth=2 * job["max_depth"],
        prevent_repeat_mol_in_trees=True, stop_on_first_solution=True,
        value_function=ConstantNodeEvaluator(0.0),
        and_node_cost_fn=ReactionModelLogProbCost(clip_probability_min=job["min_p"],
                                                  clip_probability_max=1.0))
    records = []
    pause = bool(job.get("gc_pause"))
    gc.collect()
    gc.freeze()  # the same on both sides: set-up objects frozen, gc on at default thresholds
    gc_before = [s["collections"] for s in gc.get_stats()]
    for _ in range(job["passes"]):
        for target in targets:
            alg.reset()
            c, t = time.process_time(), time.perf_counter()
            if pause:  # control arm only: the collector paused around the search, as ours does
                gc.disable()
            graph, _ = alg.run_from_mol(target)
            if pause:
                gc.enable()
            dt, dc = time.perf_counter() - t, time.process_time() - c
            records.append({"target": target.smiles,
                            "success": bool(graph.root_node.has_solution),
                            "iterations": model.num_calls(count_cache=True), "time_s": dt,
                            "cpu_s": dc, "n_nodes": len(graph)})
            if job["mode"] == "mlp":
                records[-1].update(timer.take())
            del graph
    gc_after = [s["collections"] for s in gc.get_stats()]
    print(json.dumps({"records": records, "misses": sorted(misses),
                      "gc_collections": [b - a for a, b in zip(gc_before, gc_after)],
                      "version": version("syntheseus")}))


if __name__ == "__main__":
    main()
