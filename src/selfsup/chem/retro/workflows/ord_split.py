"""The ORD USPTO-grants reactions split into a training group and a held-out group that holds
whole known routes (issue 23).

The route benchmark (:mod:`.route_benchmark`, :mod:`.route_benchmark_ord`) chains the reactions
of one group into known routes: a held-out target's route uses only held-out reactions. So that
a single-step model can be trained on the ORD reactions that are *not* held out and the held-out
group still holds multi-step routes, the ORD reactions are split by **families**, never one by
one:

1. **Cleaning** (:func:`clean_ord_reactions`). The ORD records become canonical, de-duplicated
   reactions (:func:`~.ord_reactions.ord_reactions`; those whose key ``(product, set of
   reactants)`` is a USPTO-50k reaction are dropped: USPTO-50k keeps its copy). Only mapped
   records are kept (a template needs atom maps): the mapped reaction is rewritten as the
   reactants that share a map number with the main product ``>>`` the main product (maps kept),
   its rdchiral template is extracted, and the reaction is dropped and counted when there is
   none (``no_template``) or when it does not give back its own reactants
   (``template_not_reproducing``, :func:`~..training.template_identity.filter_reproducing`).
2. **Families** (:func:`reaction_families`): reactions are joined when one's product is a
   reactant of the other or both make the same product (union-find); a family holds every chain
   of reactions that could form a route, so a whole family goes to one group. Sharing a reactant
   alone does not join (common reagents would join everything).
3. **Seeded draw** (:func:`split_families`): a family whose reactions chain (some reaction uses
   another's product: it can hold a multi-step route) is held out with probability
   ``p_chain``, any other with ``p_single``; a family that makes a USPTO-50k train product
   stays in training (such a product is never a held-out target, and holding its family out
   would only take training data away). The draw is a numpy generator seeded with ``seed`` over
   the families in a fixed order (by their smallest reaction id), so it is reproducible.

:func:`build_ord_split` writes ``<out>/seed<seed>/train.tsv`` and ``heldout.tsv`` (tables of
:func:`~..training.templates_data.write_reaction_table`: id, mapped reaction, template) and
``report.json``; the cleaned reactions are cached in ``<out>/clean.tsv`` (keyed by the ORD and
USPTO-50k files and ``CLEANING_VERSION``, raised whenever the cleaning changes).
``configs/retro/single_step_ord_cpu.yaml`` trains on USPTO-50k train + the ``train.tsv`` of seed 0
(``data.extra_train``), cleaned as above. Run::

    python -m selfsup.chem.retro.workflows.ord_split [--seed 0] [--out DIR]
    python -m selfsup.chem.retro.workflows.ord_split --evaluate MODEL.pt [...]

(the second prints one-step exact-match top-k of a model on the held-out ORD reactions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.errors import InputError
from selfsup.io import atomic_write_json

from ..core.reactions import BulkReport, Reaction, extract_retro_template
from ..training.template_identity import filter_reproducing
from ..training.templates_data import read_reaction_table, write_reaction_table

__all__ = [
    "OrdReaction",
    "build_ord_split",
    "clean_ord_reactions",
    "load_ord_split",
    "mapped_main_reaction",
    "reaction_families",
    "split_families",
]

TRAIN, HELD_OUT = "train", "heldout"


@dataclass(frozen=True)
class OrdReaction:
    """A cleaned ORD reaction: record id, mapped ``reactants>>product`` text, template, and the
    canonical reaction."""

    id: str
    mapped: str
    template: str
    reaction: Reaction

    def row(self) -> dict[str, str]:
        return {"id": self.id, "reaction": self.mapped, "template": self.template}


# ----------------------------------------------------------------------------------------------
# Cleaning
# ----------------------------------------------------------------------------------------------


def mapped_main_reaction(rec: dict) -> str | None:
    """``reactants>>product`` (atom maps kept) of a mapped ORD record: the main product (most
    heavy atoms, unique) and the reactant/agent molecules sharing a map number with it; ``None``
    when the record is unmapped or has no such reaction."""
    from rdkit import Chem

    from .ord_reactions import atom_map_numbers, main_product_index, reaction_fragments

    if not rec.get("mapped"):
        return None
    left, mid, right = rec["reaction"].split(" ")[0].split(">")
    try:
        prods = reaction_fragments(right)
        donors = reaction_fragments(left) + reaction_fragments(mid)
    except InputError:
        return None
    if not prods:
        return None
    pick = main_product_index([p.GetNumHeavyAtoms() for p in prods])
    if pick is None:
        return None
    pmaps = atom_map_numbers(prods[pick])
    kept = [Chem.MolToSmiles(m) for m in donors if atom_map_numbers(m) & pmaps]
    if not pmaps or not kept:
        return None
    return ".".join(kept) + ">>" + Chem.MolToSmiles(prods[pick])


def clean_ord_reactions(
    records: Iterable[dict], *, exclude: Iterable[Any] = (), report: dict | None = None
) -> list[OrdReaction]:
    """Cleaned, de-duplicated ORD reactions (step 1 of the module docstring), in record order.

    ``exclude``: reactions or keys dropped as in :func:`~.ord_reactions.ord_reactions` (e.g.
    USPTO-50k's). ``report`` is filled with the conversion counts and the cleaning skips
    (``unmapped``, ``no_template``, ``template_not_reproducing``).
    """
    from .ord_reactions import ord_reactions

    records = list(records)
    conv: dict[str, Any] = {}
    rxns, ids = ord_reactions(records, exclude=exclude, report=conv)
    by_id = {str(r.get("id", "")): r for r in records}
    bulk = BulkReport()
    items: list[tuple[Reaction, str]] = []
    kept: list[tuple[str, str]] = []
    at: list[int] = []  # position of each item among the converted reactions (for the report)
    for i, (rxn, rid) in enumerate(zip(rxns, ids)):
        bulk.n_total += 1
        text = mapped_main_reaction(by_id.get(rid, {}))
        if text is None:
            bulk.skip(i, "unmapped", f"{rid}: no mapped reaction")
            continue
        try:
            mapped = Reaction.from_smiles(text)
            if mapped.key != rxn.key:  # the canonical reaction must be the one ORD gave
                bulk.skip(i, "unmapped", f"{rid}: mapped reaction differs from the record's")
                continue
            template = extract_retro_template(text)
        except InputError as err:
            bulk.skip(i, "no_template", f"{rid}: {err}")
            continue
        items.append((rxn, template))
        kept.append((rid, text))
        at.append(i)
    keep, _ = filter_reproducing(items, bulk, indices=at, labels=[k[0] for k in kept])
    out = [OrdReaction(kept[j][0], kept[j][1], items[j][1], items[j][0]) for j in keep]
    bulk.n_ok = len(out)
    if report is not None:
        report.update({"conversion": conv, "cleaning": bulk.as_dict()})
    return out


# ----------------------------------------------------------------------------------------------
# Families and the seeded split
# ----------------------------------------------------------------------------------------------


def reaction_families(reactions: Sequence[Reaction]) -> list[int]:
    """Family number of each reaction (union-find over "one's product is the other's reactant"
    and "same product"); families are numbered by their first reaction."""
    parent = list(range(len(reactions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    makers: dict[str, int] = {}
    for i, r in enumerate(reactions):
        if r.product in makers:
            union(i, makers[r.product])
        else:
            makers[r.product] = i
    for i, r in enumerate(reactions):
        for m in r.reactants:
            j = makers.get(m)
            if j is not None:
                union(i, j)
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(reactions))]


def split_families(
    reactions: Sequence[Reaction],
    ids: Sequence[str],
    *,
    seed: int = 0,
    p_chain: float = 0.5,
    p_single: float = 0.1,
    train_products: Iterable[str] = (),
) -> tuple[list[str], dict[str, Any]]:
    """Group (``"train"`` / ``"heldout"``) of every reaction (steps 2-3 of the module docstring)
    and counts. Deterministic in ``seed``."""
    if len(ids) != len(reactions):
        raise InputError(f"{len(ids)} ids for {len(reactions)} reactions")
    for name, p in (("p_chain", p_chain), ("p_single", p_single)):
        if not 0.0 <= p <= 1.0:
            raise InputError(f"{name} must be in [0, 1], got {p}")
    fam = reaction_families(reactions)
    n_fam = max(fam, default=-1) + 1
    products = {r.product for r in reactions}
    chain = [False] * n_fam
    forced = [False] * n_fam
    first_id = [""] * n_fam
    train_products = set(train_products)
    for i, r in enumerate(reactions):
        f = fam[i]
        chain[f] |= any(m in products for m in r.reactants)
        forced[f] |= r.product in train_products
        first_id[f] = min(first_id[f], str(ids[i])) if first_id[f] else str(ids[i])
    order = sorted(range(n_fam), key=lambda f: first_id[f])
    rng = np.random.default_rng(int(seed))
    draws = rng.random(n_fam)  # one draw per family, in the fixed order
    held = [False] * n_fam
    for pos, f in enumerate(order):
        held[f] = bool(not forced[f] and draws[pos] < (p_chain if chain[f] else p_single))
    groups = [HELD_OUT if held[fam[i]] else TRAIN for i in range(len(reactions))]
    sizes = Counter(Counter(fam).values())
    report = {
        "seed": int(seed), "p_chain": p_chain, "p_single": p_single,
        "n_reactions": len(reactions), "n_families": n_fam,
        "n_chain_families": sum(chain), "n_forced_train_families": sum(forced),
        "family_size_distribution": {str(k): sizes[k] for k in sorted(sizes)},
        "n_heldout_families": sum(held),
        "n_heldout_chain_families": sum(h and c for h, c in zip(held, chain)),
        "n_reactions_by_group": dict(sorted(Counter(groups).items())),
    }
    return groups, report


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def default_split_root() -> Path:
    from selfsup.data.registry import default_root

    return default_root() / "derived" / "ord_split"


# Part of the key of the cached cleaned reactions (``clean.tsv``) besides the input data: raise it
# whenever the cleaning (``clean_ord_reactions`` and what it calls) changes what it keeps, so a
# cache made by the old code is rebuilt rather than reused.
CLEANING_VERSION = 1


def _digest(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _cached_clean(out: Path, ord_root: str | None, uspto_root: str | None,
                  cache_dir: str | None) -> tuple[list[OrdReaction], dict, list]:
    """The cleaned ORD reactions (cached in ``out/clean.tsv``) and the USPTO-50k reactions."""
    from selfsup.data.ord import load_ord_uspto, ord_table_files

    from .route_benchmark import load_uspto_reactions

    uspto = load_uspto_reactions(uspto_root, cache_dir)
    key = f"v{CLEANING_VERSION}-" + _digest(ord_table_files(ord_root)) + "-" + hashlib.sha256(
        "\n".join(f"{r.split}\t{r.product}\t{'.'.join(r.reactants)}" for r in uspto).encode()
    ).hexdigest()[:16]
    table, meta = out / "clean.tsv", out / "clean.json"
    if table.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("key") == key:
            rows, _ = read_reaction_table(table)
            return [OrdReaction(r["id"], r["reaction"], r["template"],
                                Reaction.from_smiles(r["reaction"])) for r in rows], info, uspto
    t0 = time.perf_counter()
    report: dict[str, Any] = {}
    clean = clean_ord_reactions(load_ord_uspto(ord_root), exclude=uspto, report=report)
    info = {"key": key, "seconds": round(time.perf_counter() - t0, 1), **report}
    write_reaction_table(table, [c.row() for c in clean])
    atomic_write_json(meta, info)  # written last: marks the table complete
    return clean, info, uspto


def build_ord_split(
    out: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    p_chain: float = 0.5,
    p_single: float = 0.1,
    ord_root: str | None = None,
    uspto_root: str | None = None,
    cache_dir: str | None = None,
) -> dict[str, Any]:
    """Clean (cached), split and write the ORD reactions (module docstring); returns the report
    with the paths of ``train.tsv`` and ``heldout.tsv``."""
    base = Path(out) if out is not None else default_split_root()
    clean, info, uspto = _cached_clean(base, ord_root, uspto_root, cache_dir)
    train_products = {r.product for r in uspto if r.split == "train"}
    groups, rep = split_families([c.reaction for c in clean], [c.id for c in clean], seed=seed,
                                 p_chain=p_chain, p_single=p_single,
                                 train_products=train_products)
    d = base / f"seed{int(seed)}"
    paths = {}
    for g in (TRAIN, HELD_OUT):
        paths[g] = str(write_reaction_table(
            d / f"{g}.tsv", [c.row() for c, gg in zip(clean, groups) if gg == g]))
    report = {"clean": {k: v for k, v in info.items() if k != "key"}, "split": rep,
              "paths": paths}
    atomic_write_json(d / "report.json", report)
    return report


def load_ord_split(path: str | os.PathLike, group: str) -> list[OrdReaction]:
    """The reactions of ``group`` (``train`` / ``heldout``) from a folder written by
    :func:`build_ord_split` (``<out>/seed<seed>``)."""
    if group not in (TRAIN, HELD_OUT):
        raise InputError(f"group must be {TRAIN!r} or {HELD_OUT!r}, got {group!r}")
    p = Path(path) / f"{group}.tsv"
    if not p.is_file():
        name = Path(path).name
        how = (f" --out {Path(path).parent} --seed {name[4:]}"
               if name.startswith("seed") and name[4:].isdigit() else "")
        raise InputError(f"no {p}: build the split with "
                         f"`python -m selfsup.chem.retro.workflows.ord_split{how}` first "
                         "(or point to the folder of an existing split)")
    rows, _ = read_reaction_table(p)
    return [OrdReaction(r["id"], r["reaction"], r["template"], Reaction.from_smiles(r["reaction"]))
            for r in rows]


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Build the split (default) or evaluate a model's one-step accuracy on its held-out group."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=None, help="folder (default <data cache>/derived/ord_split)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--p-chain", type=float, default=0.5)
    ap.add_argument("--p-single", type=float, default=0.1)
    ap.add_argument("--ord-root", default=None)
    ap.add_argument("--uspto-root", default=None)
    ap.add_argument("--evaluate", default=None, metavar="MODEL",
                    help="a saved template model: print its exact-match top-k on the held-out "
                    "ORD reactions of this seed's split")
    ap.add_argument("--n", type=int, default=0,
                    help="evaluate on a subset of N drawn with --seed (0: all)")
    ap.add_argument("--top-k", type=int, nargs="+", default=[1, 10, 50])
    args = ap.parse_args(None if argv is None else list(argv))
    if args.evaluate is None:
        result = build_ord_split(args.out, seed=args.seed, p_chain=args.p_chain,
                                 p_single=args.p_single, ord_root=args.ord_root,
                                 uspto_root=args.uspto_root)
    else:
        from ..models.mlp import load_template_model
        from ..training.metrics import evaluate_exact_match

        if not Path(args.evaluate).is_file():
            raise InputError(f"--evaluate {args.evaluate}: no such model file; pass a saved "
                             "template model (the model.pt of `selfsup chem train-single-step`)")
        base = Path(args.out) if args.out is not None else default_split_root()
        held = load_ord_split(base / f"seed{args.seed}", HELD_OUT)
        if args.n and args.n < len(held):
            pick = np.sort(np.random.default_rng(args.seed).choice(len(held), args.n,
                                                                   replace=False))
            held = [held[i] for i in pick]
        model = load_template_model(args.evaluate)
        em = evaluate_exact_match(model, [h.reaction.product for h in held],
                                  [h.reaction.reactants for h in held], args.top_k)
        result = {"model": args.evaluate, "split": str(base / f"seed{args.seed}"), **em}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from selfsup.errors import command_main

    raise SystemExit(command_main(main))
