"""ORD records (:mod:`selfsup.data.ord`) made into retro reactions.

The data layer reads the records; turning them into
:class:`~selfsup.chem.retro.core.reactions.Reaction` objects needs the chemistry layer, so it
lives here (the data layer imports nothing from chemistry).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from selfsup.errors import InputError

# ----------------------------------------------------------------------------------------------
# Records -> Reaction objects (RDKit)
# ----------------------------------------------------------------------------------------------


def reaction_fragments(side: str) -> list[Any]:
    from rdkit import Chem, rdBase

    if not side.strip():
        return []
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(side)
    if mol is None:
        raise InputError(f"RDKit cannot parse {side!r}")
    return list(Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False))


def atom_map_numbers(mol: Any) -> set[int]:
    return {a.GetAtomMapNum() for a in mol.GetAtoms() if a.GetAtomMapNum() > 0}


def _unmapped_smiles(mol: Any) -> str:
    from rdkit import Chem

    mol = Chem.Mol(mol)
    for atom in mol.GetAtoms():
        atom.SetAtomMapNum(0)
    return Chem.MolToSmiles(mol)


def main_product_index(heavy: Sequence[int]) -> int | None:
    top = max(heavy)
    hits = [i for i, h in enumerate(heavy) if h == top]
    return hits[0] if len(hits) == 1 and top > 0 else None


def _one_reaction(rec: dict) -> tuple[Any, str | None]:
    """``(Reaction, None)`` or ``(None, skip reason)`` for one record."""
    from ..core.reactions import Reaction

    text = rec["reaction"].split(" ")[0]
    left, mid, right = text.split(">")
    if rec.get("mapped"):
        try:
            prods = reaction_fragments(right)
            donors = reaction_fragments(left) + reaction_fragments(mid)
        except InputError:
            return None, "unparsable_reaction"
        if not prods:
            return None, "no_product"
        pick = main_product_index([p.GetNumHeavyAtoms() for p in prods])
        if pick is None:
            return None, "ambiguous_main_product"
        product = prods[pick]
        pmaps = atom_map_numbers(product)
        if not pmaps:
            return None, "unmapped_product"
        reactants = [_unmapped_smiles(m) for m in donors if atom_map_numbers(m) & pmaps]
        if not reactants:
            return None, "no_mapped_reactant"
        product_smiles = _unmapped_smiles(product)
    else:
        from rdkit import Chem, rdBase

        heavy = []
        for smi in rec["products"]:
            with rdBase.BlockLogs():
                mol = Chem.MolFromSmiles(smi)
            heavy.append(-1 if mol is None else mol.GetNumHeavyAtoms())
        pick = main_product_index(heavy)
        if pick is None:
            return None, "ambiguous_main_product"
        product_smiles = rec["products"][pick]
        reactants = list(rec["reactants"])
    try:
        rxn = Reaction.create(product_smiles, reactants, mapped=rec["reaction"])
    except InputError:
        return None, "invalid_molecule"
    if rxn.product in rxn.reactants:
        return None, "product_in_reactants"
    return rxn, None


def ord_reactions(
    records: Iterable[dict],
    *,
    exclude: Iterable[Any] = (),
    report: dict | None = None,
) -> tuple[list[Any], list[str]]:
    """Canonical, de-duplicated retro reactions of ORD records, and the id of each.

    ``exclude`` holds reactions (objects with ``.key``, e.g. USPTO-50k's) or keys
    ``(product, frozenset(reactants))``; a record whose reaction key is among them is dropped
    (``skipped['in_exclude']``), as is a later duplicate of an ORD reaction already kept
    (``skipped['duplicate']``: first occurrence in record order wins). Records that cannot be
    made into a one-product reaction are skipped with their reason. ``report``, if given, is
    filled with ``n_records``, ``n_mapped``, ``n_reactions`` and ``skipped`` (reason -> count).
    """
    excluded = {x if isinstance(x, tuple) else x.key for x in exclude}
    seen: set = set()
    out: list[Any] = []
    ids: list[str] = []
    skipped: Counter = Counter()
    n = n_mapped = 0
    for rec in records:
        n += 1
        n_mapped += bool(rec.get("mapped"))
        rxn, reason = _one_reaction(rec)
        if rxn is None:
            skipped[reason] += 1
            continue
        if rxn.key in excluded:
            skipped["in_exclude"] += 1
            continue
        if rxn.key in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(rxn.key)
        out.append(rxn)
        ids.append(str(rec.get("id", "")))
    if report is not None:
        report.update({"n_records": n, "n_mapped": n_mapped, "n_reactions": len(out),
                       "skipped": dict(sorted(skipped.items()))})
    return out, ids
