"""Template identity by behaviour: a canonical key of an rdchiral retro template, and matching a
reaction onto a template vocabulary by what the templates do.

Two extractions of one reaction can give different template strings that do the same thing:
the atoms of a SMARTS pattern can be written in another order and the atom-map numbers
assigned in another order (re-extracting 300 USPTO-50k test reactions with the installed
rdchiral gives the recorded string for only about half of them, issue 23). Two tools here:

- :func:`canonical_template` turns ``product>>reactants`` into a key that does not depend on the
  order in which atoms, fragments and map numbers were written. The template is read as one
  labelled graph: a node per pattern atom (its SMARTS query without the map number, and its
  side), a node per bond (its SMARTS query), and a link node joining a product atom to the
  reactant atom of the same map number (so map numbers only say *which* atoms correspond, as in
  rdchiral). RDKit's canonical atom ranking of that graph (labels as isotopes of dummy atoms)
  orders the nodes; the key is the SHA-256 of the labels in that order and the edges between
  ranks, plus the stereo marks normalised to that order (tetrahedral tags as a parity relative
  to the neighbours' symmetry classes, bond directions relative to the ranks of the bond's ends).
  Equal keys mean the two labelled graphs are isomorphic with the same stereo marks, hence the
  same template (no false match); equivalent templates can still get different keys (a stereo
  centre whose neighbours are symmetric gives no key; two spellings of one atom query that RDKit
  does not write the same). ``None`` means no key (unparsable template, a map number that is not
  on exactly one atom of each side, component-level grouping, ambiguous stereo).
- :class:`TemplateMatcher` maps a reaction onto a vocabulary: by exact string, then by canonical
  key (both cheap), then by application (:func:`~..core.reactions.template_reproduces`): first
  over a candidate list (e.g. the model's top-k templates for the product), then, if asked, a
  full scan of the vocabulary in which a template is applied only when its product pattern
  matches the product (a substructure test, microseconds; the rdchiral application costs about a
  millisecond).

:func:`filter_reproducing` drops, and counts (``template_not_reproducing``), reactions whose own
template does not give back their reactants.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rdkit import Chem, rdBase

from selfsup.errors import InputError

from ..core.reactions import (
    BulkReport,
    Reaction,
    apply_retro_template,
    extract_retro_template,
    template_reproduces,
)

__all__ = [
    "MatchResult",
    "agreement",
    "TemplateMatcher",
    "canonical_template",
    "filter_reproducing",
    "template_keys",
]

_FLIP = {Chem.ChiralType.CHI_TETRAHEDRAL_CW: Chem.ChiralType.CHI_TETRAHEDRAL_CCW,
         Chem.ChiralType.CHI_TETRAHEDRAL_CCW: Chem.ChiralType.CHI_TETRAHEDRAL_CW}
_DIR_SWAP = str.maketrans({"/": "\\", "\\": "/"})


def _permutation_parity(seq: Sequence[int]) -> int:
    """0 for an even permutation of distinct sortable items, 1 for an odd one."""
    seq = list(seq)
    parity = 0
    for i in range(len(seq)):
        for j in range(i + 1, len(seq)):
            parity ^= seq[i] > seq[j]
    return parity


def _side(smarts: str) -> Chem.Mol | None:
    if not smarts or smarts.startswith("("):
        return None  # component-level grouping: its meaning is not kept by the graph below
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmarts(smarts)
    return mol


def canonical_template(template: str) -> str | None:
    """Canonical key (hex SHA-256) of an rdchiral retro template, or ``None`` (see the module
    docstring): equal keys mean the same pattern graphs with the same atom correspondence."""
    if not isinstance(template, str) or template.count(">") != 2 or ">>" not in template:
        return None
    prod_text, reac_text = (s.strip() for s in template.split(">>"))
    sides = [_side(prod_text), _side(reac_text)]
    if sides[0] is None or sides[1] is None:
        return None
    labels: list[str] = []
    edges: list[tuple[int, int]] = []
    atom_node: list[dict[int, int]] = [{}, {}]  # side -> atom index -> node
    maps: list[dict[int, int]] = [{}, {}]  # side -> map number -> node
    bond_info: list[tuple[int, int, int, str]] = []  # (bond node, begin node, end node, text)
    for s, mol in enumerate(sides):
        tag = "P" if s == 0 else "R"
        bare = Chem.Mol(mol)  # a copy whose atoms are written without map number and chirality
        for atom in bare.GetAtoms():
            atom.SetAtomMapNum(0)
            atom.SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
        for atom in mol.GetAtoms():
            node = len(labels)
            mapno = atom.GetAtomMapNum()
            labels.append(f"{tag}|{bare.GetAtomWithIdx(atom.GetIdx()).GetSmarts()}")
            atom_node[s][atom.GetIdx()] = node
            if mapno:
                if mapno in maps[s]:
                    return None  # a map number twice on one side
                maps[s][mapno] = node
        for bond in mol.GetBonds():
            node = len(labels)
            text = bond.GetSmarts()
            labels.append(f"B|{text.translate({ord('/'): '*', ord(chr(92)): '*'})}")
            a, b = atom_node[s][bond.GetBeginAtomIdx()], atom_node[s][bond.GetEndAtomIdx()]
            edges += [(a, node), (node, b)]
            bond_info.append((node, a, b, text))
    if set(maps[0]) != set(maps[1]):
        return None  # every mapped product atom must come from one mapped reactant atom
    for m, pnode in maps[0].items():
        node = len(labels)
        labels.append("M")
        edges += [(pnode, node), (node, maps[1][m])]

    # the labelled graph as dummy atoms whose isotope is the label's rank among the labels
    order = {lab: i + 1 for i, lab in enumerate(sorted(set(labels)))}
    rw = Chem.RWMol()
    for lab in labels:
        a = Chem.Atom(0)
        a.SetIsotope(order[lab])
        a.SetNoImplicit(True)
        rw.AddAtom(a)
    for a, b in edges:
        rw.AddBond(a, b, Chem.BondType.SINGLE)
    graph = rw.GetMol()
    graph.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(graph)
    classes = list(Chem.CanonicalRankAtoms(graph, breakTies=False, includeChirality=False))
    ranks = list(Chem.CanonicalRankAtoms(graph, breakTies=True, includeChirality=False))

    stereo: list[str] = []
    for s, mol in enumerate(sides):
        for atom in mol.GetAtoms():
            tag = atom.GetChiralTag()
            if tag == Chem.ChiralType.CHI_UNSPECIFIED:
                continue
            if tag not in _FLIP:
                return None  # non-tetrahedral stereo: not handled
            # the tag is relative to the order of the atom's bonds; our graph puts a bond node
            # between two atoms, so the neighbours' classes are those of the bond nodes
            node = atom_node[s][atom.GetIdx()]
            nbr_classes = []
            for bond in atom.GetBonds():
                other = atom_node[s][bond.GetOtherAtomIdx(atom.GetIdx())]
                nbr_classes.append((classes[other], classes[_bond_node(bond_info, node, other)]))
            if len(set(nbr_classes)) != len(nbr_classes):
                return None  # symmetric neighbours: no canonical parity
            perm = sorted(range(len(nbr_classes)), key=lambda i: nbr_classes[i])
            norm = tag if _permutation_parity(perm) == 0 else _FLIP[tag]
            stereo.append(f"{ranks[node]}:{int(norm)}")
    for node, a, b, text in bond_info:
        if "/" in text or "\\" in text:
            norm = text if ranks[a] < ranks[b] else text.translate(_DIR_SWAP)
            stereo.append(f"{ranks[node]}:{norm}")

    by_rank = sorted(range(len(labels)), key=lambda i: ranks[i])
    pairs = sorted(tuple(sorted((ranks[a], ranks[b]))) for a, b in edges)
    text = "\n".join([
        " ".join(labels[i] for i in by_rank),
        " ".join(f"{a}-{b}" for a, b in pairs),
        " ".join(sorted(stereo)),
    ])
    return hashlib.sha256(text.encode()).hexdigest()


def _bond_node(bond_info: Sequence[tuple[int, int, int, str]], a: int, b: int) -> int:
    for node, x, y, _ in bond_info:
        if {x, y} == {a, b}:
            return node
    raise AssertionError("bond not found")  # pragma: no cover - graph built above


def template_keys(templates: Iterable[str]) -> list[str]:
    """Identity key of each template: its canonical key, or ``"raw:" + template`` when it has
    none (then only the same string is the same template)."""
    out = []
    for t in templates:
        key = canonical_template(t)
        out.append(key if key is not None else f"raw:{t}")
    return out


# ----------------------------------------------------------------------------------------------
# Reactions whose own template reproduces them
# ----------------------------------------------------------------------------------------------


def filter_reproducing(
    items: Sequence[tuple[Reaction, str]], report: BulkReport | None = None,
    indices: Sequence[int] | None = None, labels: Sequence[str] | None = None,
) -> tuple[list[int], BulkReport]:
    """Positions of the ``(reaction, template)`` items whose template gives back the reaction's
    reactants from its product (:func:`~..core.reactions.template_reproduces`); the others are
    skipped in ``report`` as ``template_not_reproducing`` (``indices`` give the item numbers the
    report names, default the positions; ``labels``, e.g. record ids, start each message)."""
    report = report if report is not None else BulkReport()
    keep: list[int] = []
    for pos, (rxn, template) in enumerate(items):
        if template_reproduces(template, rxn):
            keep.append(pos)
        else:
            who = f"{labels[pos]}: " if labels is not None else ""
            report.skip(pos if indices is None else int(indices[pos]),
                        "template_not_reproducing",
                        f"{who}template {template!r} does not give {rxn.reactants_smiles!r} "
                        f"back from {rxn.product!r}")
    return keep, report


# ----------------------------------------------------------------------------------------------
# Matching onto a vocabulary
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchResult:
    """Index of the vocabulary template that does what the reaction does (``-1``: none) and how
    it was found: ``string``, ``key``, ``candidates`` (application, candidate list), ``scan``
    (application, full vocabulary) or ``none``; ``n_applied`` templates were applied."""

    index: int
    how: str
    n_applied: int = 0


class TemplateMatcher:
    """Find the template of ``templates`` that behaves like a given template or reaction.

    Keys are computed lazily (about 0.8 ms per USPTO-50k template). :meth:`match` order: exact
    string, canonical key (both only when a template is given), then application to the
    reaction: the ``candidates`` in their order (e.g. the model's top-k for the product), then, with
    ``scan=True``, every template in vocabulary order whose product pattern matches the product.
    Among several templates that reproduce the reaction the first found is returned (for a
    candidate list ranked by the model: the model's preferred one; in a scan: the lowest index,
    i.e. the most frequent in training for a vocabulary built by count).
    """

    def __init__(self, templates: Sequence[str]) -> None:
        self.templates = list(templates)
        self._string = {}
        for i, t in enumerate(self.templates):
            self._string.setdefault(t, i)
        self._keys: dict[str, int] | None = None
        self._patterns: list[Chem.Mol | None] | None = None

    def __len__(self) -> int:
        return len(self.templates)

    @property
    def keys(self) -> dict[str, int]:
        """Canonical key -> lowest vocabulary index with that key."""
        if self._keys is None:
            self._keys = {}
            for i, key in enumerate(template_keys(self.templates)):
                self._keys.setdefault(key, i)
        return self._keys

    def lookup(self, template: str) -> tuple[int, str]:
        """``(index, how)`` of a template string by string, then by canonical key; ``(-1,
        'none')`` when neither matches."""
        i = self._string.get(template)
        if i is not None:
            return i, "string"
        key = canonical_template(template)
        i = self.keys.get(key if key is not None else f"raw:{template}")
        return (i, "key") if i is not None else (-1, "none")

    def _product_patterns(self) -> list[Chem.Mol | None]:
        if self._patterns is None:
            pats: list[Chem.Mol | None] = []
            with rdBase.BlockLogs():
                for t in self.templates:
                    prod = t.split(">>")[0] if ">>" in t else ""
                    pats.append(Chem.MolFromSmarts(prod) if prod else None)
            self._patterns = pats
        return self._patterns

    def reproducing(self, reaction: Reaction, candidates: Iterable[int] | None = None,
                    *, scan: bool = False, first: bool = True) -> tuple[list[int], int]:
        """Indices of templates that reproduce ``reaction`` (the first only with ``first``),
        from ``candidates`` then, with ``scan``, the whole vocabulary; and the number applied."""
        found: list[int] = []
        tried: set[int] = set()
        n_applied = 0
        for i in () if candidates is None else candidates:
            i = int(i)
            if i in tried or not 0 <= i < len(self.templates):
                continue
            tried.add(i)
            n_applied += 1
            if template_reproduces(self.templates[i], reaction):
                found.append(i)
                if first:
                    return found, n_applied
        if scan:
            with rdBase.BlockLogs():
                mol = Chem.MolFromSmiles(reaction.product)
            if mol is None:
                raise InputError(f"RDKit cannot parse product {reaction.product!r}")
            for i, pat in enumerate(self._product_patterns()):
                if i in tried or pat is None or not mol.HasSubstructMatch(pat):
                    continue
                n_applied += 1
                if template_reproduces(self.templates[i], reaction):
                    found.append(i)
                    if first:
                        return found, n_applied
        return found, n_applied

    def match(self, reaction: Reaction | None, template: str | None = None,
              candidates: Iterable[int] | None = None, *, scan: bool = True) -> MatchResult:
        """The vocabulary template that does what ``template`` (or ``reaction``) does."""
        if template is not None:
            i, how = self.lookup(template)
            if i >= 0:
                return MatchResult(i, how)
        if reaction is None:
            return MatchResult(-1, "none")
        cands = [int(c) for c in (() if candidates is None else candidates)]
        found, n = self.reproducing(reaction, cands, scan=scan)
        if not found:
            return MatchResult(-1, "none", n)
        return MatchResult(found[0], "candidates" if found[0] in set(cands) else "scan", n)


# ----------------------------------------------------------------------------------------------
# Measurement: re-extracted templates against recorded ones and a model's vocabulary
# ----------------------------------------------------------------------------------------------


def agreement(rows: Sequence[dict], model: Any = None, *, top_k: int = 50,
              scan: bool = True) -> dict[str, Any]:
    """How re-extracted templates of ``rows`` (``{"reaction", "template"}``, e.g. USPTO-50k
    test) agree with the recorded ones: same string, same canonical key, each reproduces the
    reaction, and for a pair of different strings with one key whether applying both to the
    product gives the same outcomes (``same_key_same_outcomes``). With ``model``
    (``templates``, ``template_scores``): how each re-extracted template is placed in the
    model's vocabulary (:meth:`TemplateMatcher.match`; seconds and templates applied per
    reaction placed by application)."""
    import time

    import numpy as np

    counts: dict[str, int] = {}

    def add(name: str, flag: bool = True) -> None:
        counts[name] = counts.get(name, 0) + int(bool(flag))

    matcher = TemplateMatcher(model.templates) if model is not None else None
    app_seconds: list[float] = []
    app_applied: list[int] = []
    for row in rows:
        try:
            rxn = Reaction.from_smiles(row["reaction"])
            new = extract_retro_template(rxn)
        except InputError:
            add("no_template")
            continue
        add("n")
        rec = row["template"]
        k_rec, k_new = canonical_template(rec), canonical_template(new)
        add("same_string", new == rec)
        add("same_key", k_rec is not None and k_rec == k_new)
        if k_rec is not None and k_rec == k_new and new != rec:  # soundness: same outcomes
            same = _outcomes(rec, rxn.product) == _outcomes(new, rxn.product)
            add("same_key_same_outcomes", same)
        add("recorded_reproduces", template_reproduces(rec, rxn))
        add("reextracted_reproduces", template_reproduces(new, rxn))
        if matcher is None:
            continue
        t0 = time.perf_counter()
        i, how = matcher.lookup(new)
        if i < 0 and template_reproduces(new, rxn):
            scores = model.template_scores([rxn.product])[0]
            res = matcher.match(rxn, None, np.argsort(-scores, kind="stable")[:top_k],
                                scan=scan)
            i, how = res.index, res.how
            app_seconds.append(time.perf_counter() - t0)
            app_applied.append(res.n_applied)
        add(f"vocab_{how}")
    out: dict[str, Any] = dict(sorted(counts.items()))
    if app_seconds:
        out["application_seconds_mean"] = round(float(np.mean(app_seconds)), 4)
        out["application_seconds_max"] = round(float(np.max(app_seconds)), 4)
        out["application_templates_applied_mean"] = round(float(np.mean(app_applied)), 1)
    return out


def _outcomes(template: str, product: str) -> list[tuple[str, ...]] | None:
    try:
        return apply_retro_template(template, product)
    except InputError:
        return None


def main(argv: Iterable[str] | None = None) -> dict[str, Any]:
    """Print :func:`agreement` on the first ``--n`` reactions of a USPTO-50k split."""
    import argparse
    import json
    import warnings

    from selfsup.data.molecules import load_uspto50k

    ap = argparse.ArgumentParser(description="re-extracted vs recorded USPTO-50k templates")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--root", default=None, help="folder of reaction_templates_50k_*.csv")
    ap.add_argument("--model", default=None, help="a saved template model: place each "
                    "re-extracted template in its vocabulary")
    ap.add_argument("--top-k", type=int, default=50)
    args = ap.parse_args(None if argv is None else list(argv))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = load_uspto50k(args.root, args.split)[: args.n]
    model = None
    if args.model:
        from ..models.mlp import load_template_model

        model = load_template_model(args.model)
    out = {"split": args.split, "n_rows": len(rows), "model": args.model,
           **agreement(rows, model, top_k=args.top_k)}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    from selfsup.errors import command_main

    raise SystemExit(command_main(main))
