"""One repeat of the selfsup arm of `chem_speed`'s Retro* part; runs in this repository's venv.

The twin of ``retro_worker_syntheseus.py`` (same job on stdin, same JSON line out, same process
shape, the same gc set-up before the clock starts):

- ``mode: "table"``: ``RetroStar`` over a ``FixedReactionModel`` of the table (built before the
  clock starts; it canonicalises the table once, so the search finds every SMILES in the
  canonicalisation memo) and a stock that looks the table's in-stock molecules up in a set.
  ``rdkit_parses`` counts the molecules RDKit parsed inside the timed region (expected 0).
- ``mode: "mlp"``: ``RetroStar`` over our template MLP and our ``Stock``.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path


def main() -> None:
    job = json.loads(sys.stdin.read())
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
    from selfsup.chem.molecules import _canonical
    from selfsup.chem.retro.core.search import RetroStar
    from selfsup.chem.retro.core.single_step import FixedReactionModel
    from selfsup.chem.retro.core.stock import Stock

    misses: set[str] = set()
    timer = None
    if job["mode"] == "table":
        with open(job["table"]) as fh:
            data = json.load(fh)
        in_stock = set(data["stock"])

        class SetStock(Stock):
            """In stock: the table's in-stock molecules, looked up in a set (as the peer)."""

            def __contains__(self, smiles: object) -> bool:
                return smiles in in_stock

            def __len__(self) -> int:
                return len(in_stock)

        table = data["table"]
        model = FixedReactionModel({p: [(tuple(r), q) for r, q in e] for p, e in table.items()},
                                   renormalize=False)
        stock = SetStock(name="table-stock", source=data.get("stock_source", ""))
    else:
        import torch

        from selfsup.chem.retro.models.mlp import MLPSingleStepModel

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from retro_timing import Timer

        torch.set_num_threads(job["threads"])
        with open(job["stock"]) as fh:
            keys = json.load(fh)
        stock = Stock(set(keys["inchikeys"]), name=keys["name"], source=keys["source"])
        model = MLPSingleStepModel.load(job["model"])
        timer = Timer(model)
        table = None

    search = RetroStar(model, stock, top_k=job["top_k"], max_iterations=job["max_iterations"],
                       max_depth=job["max_depth"], min_probability=job["min_p"],
                       pause_gc=job.get("gc_pause", True))
    records = []
    gc.collect()
    gc.freeze()  # the same on both sides: set-up objects frozen, gc on at default thresholds
    gc_before = [s["collections"] for s in gc.get_stats()]
    parses0 = _canonical.cache_info().misses
    for _ in range(job["passes"]):
        for target in job["targets"]:
            model.clear_cache()
            c, t = time.process_time(), time.perf_counter()
            r = search.run(target)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            records.append({"target": r.target, "success": r.success,
                            "iterations": r.iterations, "time_s": dt, "cpu_s": dc,
                            "n_nodes": r.stats["n_molecule_nodes"] + r.stats["n_reaction_nodes"]})
            if timer is not None:
                records[-1].update(timer.take())
            if table is not None:
                stack = [r.root]
                while stack:
                    node = stack.pop()
                    if getattr(node, "expanded", False) and node.smiles not in table:
                        misses.add(node.smiles)
                    stack.extend(node.children)
            del r
    gc_after = [s["collections"] for s in gc.get_stats()]
    print(json.dumps({"records": records, "misses": sorted(misses),
                      "gc_collections": [b - a for a, b in zip(gc_before, gc_after)],
                      "rdkit_parses": _canonical.cache_info().misses - parses0}))


if __name__ == "__main__":
    main()
