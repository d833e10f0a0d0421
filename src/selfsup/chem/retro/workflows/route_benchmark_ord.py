"""The chained USPTO-50k route benchmark with the ORD / USPTO-grants reactions added held-out.

USPTO-50k alone yields few held-out targets that need >= 2 steps (58). The ORD USPTO-grants
reactions (``selfsup.data.ord``, 13,501 reactions of 1976-2001 grants) are not in USPTO-50k's
train split, so they are added to the **held-out** reaction group of
:func:`~selfsup.chem.retro.workflows.route_benchmark.build_route_benchmark` as a third held-out
split ``"ord"`` (no API change is needed: it takes any splits). Rules, on top of the base
module's:

- **De-duplication.** ORD reactions are canonicalised and de-duplicated
  (:func:`selfsup.chem.retro.workflows.ord_reactions.ord_reactions`); an ORD reaction whose key
  ``(product, set of reactants)`` occurs anywhere in USPTO-50k is dropped (the USPTO-50k copy
  stays in its own split).
- **Leak rule** (``leak_rule``): ``"product"`` (default) also drops every ORD reaction whose
  product is the product of a USPTO-50k *train* reaction, so an ORD reaction never offers a
  second way to a molecule the single-step model was trained to make (ORD and USPTO-50k map and
  label reagents differently, so the same chemistry can appear with a different reactant set;
  this rule removes such near-duplicates). ``"reaction"`` drops only exact train keys, as the
  base module does for valid/test. Either way the base module then excludes targets that are
  train products and checks that no held-out route uses a train reaction.
- **Stock** (``stock_mode``): ``"uspto"`` keeps the USPTO-50k stock (reactants never produced by
  a USPTO-50k reaction); ``"extended"`` (default) adds the ORD reactants that no USPTO-50k or
  ORD reaction produces. The extended stock only grows, so every USPTO-50k target and route of
  the base benchmark is kept; ``"combined"`` is the leaves of USPTO-50k + ORD together (it also
  removes USPTO-50k leaves that ORD produces, changing the base targets).

Run ``python -m selfsup.chem.retro.workflows.route_benchmark_ord --out DIR`` to build and write it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from selfsup.errors import InputError

from ..core.reactions import Reaction
from ..core.stock import Stock, inchikey
from .route_benchmark import (
    DatasetReaction,
    RouteBenchmark,
    build_route_benchmark,
    default_stock,
    load_uspto_reactions,
    write_route_benchmark,
)

__all__ = [
    "LEAK_RULES",
    "ORD_SPLIT",
    "STOCK_MODES",
    "build_route_benchmark_with_ord",
    "ord_dataset_reactions",
]

ORD_SPLIT = "ord"
LEAK_RULES = ("product", "reaction")
STOCK_MODES = ("extended", "uspto", "combined")


def ord_dataset_reactions(
    ord_rxns: Sequence[Reaction],
    uspto: Sequence[DatasetReaction],
    *,
    ids: Sequence[str] | None = None,
    leak_rule: str = "product",
    train_splits: Sequence[str] = ("train",),
) -> tuple[list[DatasetReaction], dict[str, int]]:
    """ORD reactions as held-out :class:`DatasetReaction` (split ``"ord"``) after the leak rule.

    Indices continue after ``uspto``'s. Returns the kept reactions and the counts
    ``{"n_in": ..., "in_uspto50k": ..., "train_product": ..., "n_kept": ...}``.
    """
    if leak_rule not in LEAK_RULES:
        raise InputError(f"leak_rule must be one of {LEAK_RULES}, got {leak_rule!r}")
    if ids is not None and len(ids) != len(ord_rxns):
        raise InputError(f"{len(ids)} ids for {len(ord_rxns)} ORD reactions")
    uspto_keys = {r.key for r in uspto}
    train_products = {r.product for r in uspto if r.split in train_splits}
    start = max((r.index for r in uspto), default=-1) + 1
    out: list[DatasetReaction] = []
    counts = {"n_in": len(ord_rxns), "in_uspto50k": 0, "train_product": 0}
    for j, rxn in enumerate(ord_rxns):
        if rxn.key in uspto_keys:
            counts["in_uspto50k"] += 1
            continue
        if leak_rule == "product" and rxn.product in train_products:
            counts["train_product"] += 1
            continue
        rid = ids[j] if ids is not None else f"{ORD_SPLIT}-{j}"
        out.append(DatasetReaction(start + len(out), ORD_SPLIT, rid, rxn.product, rxn.reactants))
    counts["n_kept"] = len(out)
    return out, counts


_key = functools.lru_cache(maxsize=1_000_000)(inchikey)


def _stock(mode: str, uspto: Sequence[DatasetReaction], ord_all: Sequence[Reaction]) -> Stock:
    if mode not in STOCK_MODES:
        raise InputError(f"stock_mode must be one of {STOCK_MODES}, got {mode!r}")
    base = default_stock(uspto)
    if mode == "uspto":
        return base
    produced = {_key(r.product) for r in uspto} | {_key(r.product) for r in ord_all}
    ord_leaves = {k for r in ord_all for k in map(_key, r.reactants)
                  if k is not None and k not in produced}
    if mode == "combined":
        keys = {k for r in uspto for k in map(_key, r.reactants)
                if k is not None and k not in produced} | ord_leaves
        return Stock(keys, name="uspto50k+ord-leaves",
                     source="USPTO-50k + ORD USPTO grants: reactants never produced "
                     f"({len(uspto) + len(ord_all)} reactions)")
    added = ord_leaves - set(base)
    return Stock(set(base) | added, name="uspto50k-leaves+ord-leaves",
                 source=f"{base.source}; plus {len(added)} ORD USPTO-grants reactants never "
                 f"produced by USPTO-50k or ORD ({len(ord_all)} ORD reactions)",
                 n_skipped=base.n_skipped)


def build_route_benchmark_with_ord(
    uspto: Sequence[DatasetReaction],
    ord_rxns: Sequence[Reaction],
    *,
    ids: Sequence[str] | None = None,
    leak_rule: str = "product",
    stock_mode: str = "extended",
    stock: Stock | None = None,
    train_splits: Sequence[str] = ("train",),
    test_splits: Sequence[str] = ("valid", "test"),
) -> RouteBenchmark:
    """The route benchmark of ``uspto`` with ``ord_rxns`` added to the held-out group.

    ``ord_rxns`` should come from :func:`selfsup.chem.retro.workflows.ord_reactions.ord_reactions`.
    ``stock`` overrides ``stock_mode``. The report gains an ``"ord"`` entry (counts of the leak
    rule, the stock mode) and ``"groups"["test"]`` counts targets of all held-out splits, ORD
    included.
    """
    if ORD_SPLIT in train_splits or ORD_SPLIT in test_splits:
        raise InputError(f"split name {ORD_SPLIT!r} is reserved for the ORD reactions")
    ord_ds, counts = ord_dataset_reactions(ord_rxns, uspto, ids=ids, leak_rule=leak_rule,
                                           train_splits=train_splits)
    st = stock if stock is not None else _stock(stock_mode, uspto, ord_rxns)
    bench = build_route_benchmark(list(uspto) + ord_ds, stock=st, train_splits=train_splits,
                                  test_splits=tuple(test_splits) + (ORD_SPLIT,))
    bench.report["ord"] = {"leak_rule": leak_rule,
                           "stock_mode": "given" if stock is not None else stock_mode,
                           **counts}
    return bench


def _summary(bench: RouteBenchmark) -> dict[str, Any]:
    g = bench.report["groups"]["test"]
    return {"n_targets": g["n_targets"], "n_multistep": g["n_multistep"],
            "multistep_by_split": g["multistep_by_split"],
            "length_distribution": g["length_distribution"], "stock": bench.stock.describe()}


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Build the base and the ORD-extended benchmarks and print their held-out counts."""
    from selfsup.data.ord import load_ord_uspto

    from .ord_reactions import ord_reactions

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uspto-root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--cache-dir", default=None, help="prepared USPTO-50k arrays")
    ap.add_argument("--ord-root", default=None, help="folder of the uspto-grants-*.parquet")
    ap.add_argument("--leak-rule", default="product", choices=LEAK_RULES)
    ap.add_argument("--stock-mode", default="extended", choices=STOCK_MODES)
    ap.add_argument("--out", default=None, help="write the extended benchmark here")
    ap.add_argument("--all-variants", action="store_true",
                    help="also report every leak rule x stock mode")
    args = ap.parse_args(None if argv is None else list(argv))
    uspto = load_uspto_reactions(args.uspto_root, args.cache_dir)
    conv: dict[str, Any] = {}
    rxns, ids = ord_reactions(load_ord_uspto(args.ord_root), report=conv)
    result: dict[str, Any] = {"ord_conversion": conv,
                              "base": _summary(build_route_benchmark(uspto))}
    variants = ([(lr, sm) for lr in LEAK_RULES for sm in STOCK_MODES] if args.all_variants
                else [(args.leak_rule, args.stock_mode)])
    for lr, sm in variants:
        bench = build_route_benchmark_with_ord(uspto, rxns, ids=ids, leak_rule=lr, stock_mode=sm)
        result[f"ord/{lr}/{sm}"] = {**_summary(bench), "ord": bench.report["ord"]}
        if args.out and (lr, sm) == (args.leak_rule, args.stock_mode):
            write_route_benchmark(bench, args.out)
    print(json.dumps(result, indent=1))
    if args.out:
        from selfsup.io import atomic_write_json

        atomic_write_json(os.path.join(args.out, "ord_summary.json"), result)
    return result


if __name__ == "__main__":
    from selfsup.errors import command_main

    raise SystemExit(command_main(main))
