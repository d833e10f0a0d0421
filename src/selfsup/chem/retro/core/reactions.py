"""Reactions and retro templates (rdchiral) for retrosynthesis.

A :class:`Reaction` is one single-step transformation written in the retro direction's terms:
one product and a tuple of reactants, all canonical RDKit SMILES without atom maps. Templates are
rdchiral retro templates (``product_pattern>>reactant_patterns``) as used by Retro* (Chen et al.,
ICML 2020) and its self-improved variant (Kim et al., ICML 2021): extracted from atom-mapped
USPTO reactions with rdchiral's template extractor and applied to a product with
``rdchiralRun``.

Bulk helpers (:func:`parse_reactions`, :func:`extract_templates`) never stop on one bad item: they
skip it and count the reason in a :class:`BulkReport`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rdkit import Chem, rdBase

from selfsup.chem.molecules import canonical_smiles
from selfsup.errors import InputError

__all__ = [
    "BulkReport",
    "Reaction",
    "apply_retro_template",
    "apply_templates",
    "canonical_reactants",
    "clear_template_cache",
    "extract_retro_template",
    "extract_templates",
    "parse_reaction_smiles",
    "parse_reactions",
    "template_reproduces",
]


# ----------------------------------------------------------------------------------------------
# Canonical SMILES
# ----------------------------------------------------------------------------------------------


def canonical_reactants(reactants: str | Iterable[str]) -> tuple[str, ...]:
    """Canonical, sorted tuple of reactant SMILES from ``'A.B'`` or an iterable of SMILES.

    Every dot-separated fragment becomes its own reactant, so ``('A.B',)`` and ``('B', 'A')``
    give the same tuple.
    """
    parts = reactants.split(".") if isinstance(reactants, str) else list(reactants)
    out: list[str] = []
    for part in parts:
        out.extend(canonical_smiles(part, remove_atom_map=True, strict=True).split("."))
    if not out:
        raise InputError("empty reactant list: a reaction needs at least one reactant")
    return tuple(sorted(out))


# ----------------------------------------------------------------------------------------------
# Reaction
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reaction:
    """One reaction: ``reactants -> product`` with canonical, unmapped SMILES.

    ``reactants`` is sorted so that two reactions with the same molecules compare equal;
    ``mapped`` keeps the original atom-mapped reaction SMILES when there is one (needed to
    extract a template). Build with :meth:`create` or :meth:`from_smiles`.
    """

    product: str
    reactants: tuple[str, ...]
    mapped: str | None = field(default=None, compare=False)
    reagents: str = field(default="", compare=False)

    @classmethod
    def create(
        cls, product: str, reactants: str | Iterable[str], *, mapped: str | None = None
    ) -> Reaction:
        """Canonicalise ``product`` and ``reactants`` and build a reaction."""
        prod = canonical_smiles(product, remove_atom_map=True, strict=True)
        if "." in prod:
            raise InputError(
                f"product {product!r} has several fragments: a retro reaction has one product"
            )
        return cls(product=prod, reactants=canonical_reactants(reactants), mapped=mapped)

    @classmethod
    def from_smiles(cls, rxn_smiles: str) -> Reaction:
        """Parse ``'reactants>>product'`` or ``'reactants>reagents>product'`` (maps allowed)."""
        reactants, reagents, product = parse_reaction_smiles(rxn_smiles)
        try:
            rxn = cls.create(product, reactants, mapped=rxn_smiles.strip())
        except InputError as err:
            raise InputError(f"bad reaction SMILES {rxn_smiles!r}: {err}") from None
        return dataclasses.replace(rxn, reagents=reagents) if reagents else rxn

    @property
    def key(self) -> tuple[str, frozenset[str]]:
        """Order-free key for de-duplication: ``(product, frozenset(reactants))``."""
        return self.product, frozenset(self.reactants)

    @property
    def reactants_smiles(self) -> str:
        """Reactants joined with dots."""
        return ".".join(self.reactants)

    def to_smiles(self) -> str:
        """Unmapped reaction SMILES ``'reactants>>product'``."""
        return f"{self.reactants_smiles}>>{self.product}"


def parse_reaction_smiles(rxn_smiles: str) -> tuple[str, str, str]:
    """Split a reaction SMILES into ``(reactants, reagents, product)`` strings (not canonical).

    Accepts ``'R>>P'`` and ``'R>A>P'``; CXSMILES extensions after a space are dropped. Raises
    :class:`InputError` when the string is not of that shape or a side is empty.
    """
    if not isinstance(rxn_smiles, str):
        raise InputError(f"reaction SMILES must be a string, got {type(rxn_smiles).__name__}")
    text = rxn_smiles.strip().split(" ")[0]
    parts = text.split(">")
    if len(parts) != 3:
        raise InputError(
            f"malformed reaction SMILES {rxn_smiles!r}: expected 'reactants>>product' or "
            "'reactants>reagents>product'"
        )
    reactants, reagents, product = (p.strip() for p in parts)
    if not reactants or not product:
        raise InputError(
            f"malformed reaction SMILES {rxn_smiles!r}: reactants and product must be non-empty"
        )
    return reactants, reagents, product


# ----------------------------------------------------------------------------------------------
# Bulk report
# ----------------------------------------------------------------------------------------------


@dataclass
class BulkReport:
    """Counts of a bulk operation: how many items were processed, kept and skipped (and why)."""

    n_total: int = 0
    n_ok: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[tuple[int, str]] = field(default_factory=list)
    max_examples: int = 20

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, index: int, reason: str, message: str) -> None:
        """Record one skipped item (``reason`` is a short category used for counting)."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append((index, message))

    def as_dict(self) -> dict:
        return {
            "n_total": self.n_total,
            "n_ok": self.n_ok,
            "n_skipped": self.n_skipped,
            "skipped": dict(self.skipped),
            "examples": [list(e) for e in self.examples],
        }


def parse_reactions(rxn_smiles: Iterable[str]) -> tuple[list[Reaction], BulkReport]:
    """Parse many reaction SMILES; malformed ones are skipped and counted."""
    report = BulkReport()
    out: list[Reaction] = []
    for i, text in enumerate(rxn_smiles):
        report.n_total += 1
        try:
            out.append(Reaction.from_smiles(text))
        except InputError as err:
            report.skip(i, "malformed_reaction", str(err))
            continue
        report.n_ok += 1
    return out, report


# ----------------------------------------------------------------------------------------------
# Templates (rdchiral)
# ----------------------------------------------------------------------------------------------


def extract_retro_template(mapped_rxn: str | Reaction) -> str:
    """rdchiral retro template ``product_pattern>>reactant_patterns`` of an atom-mapped reaction.

    ``mapped_rxn`` is an atom-mapped reaction SMILES (``'R>>P'`` or ``'R>A>P'``; reagents are
    ignored) or a :class:`Reaction` that kept its mapped text. Raises :class:`InputError` when
    the reaction is malformed or rdchiral cannot extract a template (e.g. no atom maps, no
    changed atoms).
    """
    from rdchiral.template_extractor import extract_from_reaction

    if isinstance(mapped_rxn, Reaction):
        if mapped_rxn.mapped is None:
            raise InputError(
                f"reaction {mapped_rxn.to_smiles()!r} has no atom-mapped text: build it with "
                "Reaction.from_smiles(mapped_reaction_smiles)"
            )
        mapped_rxn = mapped_rxn.mapped
    reactants, _, product = parse_reaction_smiles(mapped_rxn)
    with rdBase.BlockLogs():
        for side in (reactants, product):
            mol = Chem.MolFromSmiles(side)
            if mol is None:
                raise InputError(f"RDKit cannot parse {side!r} in reaction {mapped_rxn!r}")
        if not any(a.GetAtomMapNum() for a in Chem.MolFromSmiles(product).GetAtoms()):
            raise InputError(
                f"reaction {mapped_rxn!r} has no atom maps on the product: template extraction "
                "needs an atom-mapped reaction"
            )
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = extract_from_reaction(
                    {"reactants": reactants, "products": product, "_id": 0}
                )
        except Exception as err:  # rdchiral raises assorted errors on odd inputs
            raise InputError(
                f"rdchiral failed to extract a template from {mapped_rxn!r}: {err}"
            ) from None
    template = result.get("reaction_smarts") if isinstance(result, dict) else None
    if not template:
        raise InputError(
            f"rdchiral found no template in {mapped_rxn!r}: check the atom mapping "
            "(mapped product atoms must come from mapped reactant atoms)"
        )
    return template


_TEMPLATE_CACHE: OrderedDict[str, object] = OrderedDict()
_TEMPLATE_CACHE_SIZE = 20_000


def _rdchiral_reaction(template: str):
    """Compiled ``rdchiralReaction`` for ``template``, from an LRU cache."""
    from rdchiral.initialization import rdchiralReaction

    rxn = _TEMPLATE_CACHE.get(template)
    if rxn is not None:
        _TEMPLATE_CACHE.move_to_end(template)
        return rxn
    if not isinstance(template, str) or template.count(">") != 2 or ">>" not in template:
        raise InputError(
            f"malformed retro template {template!r}: expected 'product_smarts>>reactant_smarts'"
        )
    try:
        with rdBase.BlockLogs(), contextlib.redirect_stdout(io.StringIO()):
            rxn = rdchiralReaction(template)
    except Exception as err:
        raise InputError(f"rdchiral cannot compile template {template!r}: {err}") from None
    _TEMPLATE_CACHE[template] = rxn
    if len(_TEMPLATE_CACHE) > _TEMPLATE_CACHE_SIZE:
        _TEMPLATE_CACHE.popitem(last=False)
    return rxn


def clear_template_cache() -> None:
    """Forget every compiled template."""
    _TEMPLATE_CACHE.clear()


_PRODUCT_CACHE: OrderedDict[str, object] = OrderedDict()
_PRODUCT_CACHE_SIZE = 256


def _rdchiral_product(product: str):
    from rdchiral.initialization import rdchiralReactants

    prep = _PRODUCT_CACHE.get(product)
    if prep is not None:
        _PRODUCT_CACHE.move_to_end(product)
        return prep
    try:
        with rdBase.BlockLogs():
            prep = rdchiralReactants(product)
    except Exception as err:
        raise InputError(f"rdchiral cannot prepare product {product!r}: {err}") from None
    _PRODUCT_CACHE[product] = prep
    if len(_PRODUCT_CACHE) > _PRODUCT_CACHE_SIZE:
        _PRODUCT_CACHE.popitem(last=False)
    return prep


def apply_retro_template(template: str, product_smiles: str) -> list[tuple[str, ...]]:
    """Apply an rdchiral retro template to a product.

    Returns the distinct reactant sets (each a sorted tuple of canonical SMILES), sorted: rdchiral
    returns its outcomes in the iteration order of a set of strings, which changes between
    processes with Python's string hashing, and several outcomes of one template share its
    probability, so their order would decide ties in the model's ranking (the one-step
    accuracy of one model differed by 0.4 points between two processes before this sort). An
    empty list when the template does not match. Raises :class:`InputError` for a
    malformed template or product. Compiled templates are cached (see
    :func:`clear_template_cache`).
    """
    from rdchiral.main import rdchiralRun

    product = canonical_smiles(product_smiles, remove_atom_map=True, strict=True)
    rxn = _rdchiral_reaction(template)
    prep = _rdchiral_product(product)
    try:
        with rdBase.BlockLogs(), contextlib.redirect_stdout(io.StringIO()):
            outcomes = rdchiralRun(rxn, prep, combine_enantiomers=True)
    except Exception as err:
        raise InputError(
            f"rdchiral failed applying template {template!r} to {product!r}: {err}"
        ) from None
    seen: set[tuple[str, ...]] = set()
    out: list[tuple[str, ...]] = []
    for outcome in outcomes:
        try:
            reactants = canonical_reactants(outcome)
        except InputError:
            continue  # rdchiral produced an invalid molecule: not a usable proposal
        if reactants not in seen:
            seen.add(reactants)
            out.append(reactants)
    return sorted(out)


def template_reproduces(template: str, reaction: Reaction) -> bool:
    """Whether applying ``template`` to ``reaction.product`` gives ``reaction.reactants`` among
    its outcomes: a template judged by what it does, not by its string (two extractions of the
    same reaction can give different strings that do the same thing). A template that rdchiral
    cannot compile or apply reproduces nothing."""
    try:
        return reaction.reactants in apply_retro_template(template, reaction.product)
    except InputError:
        return False


def extract_templates(
    reactions: Iterable[str | Reaction],
) -> tuple[list[tuple[Reaction, str]], BulkReport]:
    """Extract retro templates from many atom-mapped reactions.

    Returns ``[(reaction, template), ...]`` for the reactions that worked and a
    :class:`BulkReport` counting ``malformed_reaction`` and ``no_template`` skips.
    """
    report = BulkReport()
    out: list[tuple[Reaction, str]] = []
    for i, item in enumerate(reactions):
        report.n_total += 1
        try:
            rxn = item if isinstance(item, Reaction) else Reaction.from_smiles(item)
        except InputError as err:
            report.skip(i, "malformed_reaction", str(err))
            continue
        try:
            template = extract_retro_template(rxn)
        except InputError as err:
            report.skip(i, "no_template", str(err))
            continue
        out.append((rxn, template))
        report.n_ok += 1
    return out, report


def apply_templates(
    templates: Sequence[str], product_smiles: str
) -> tuple[list[list[tuple[str, ...]]], BulkReport]:
    """Apply each template to one product; bad templates give ``[]`` and are counted."""
    report = BulkReport()
    out: list[list[tuple[str, ...]]] = []
    product = canonical_smiles(product_smiles, remove_atom_map=True, strict=True)
    for i, template in enumerate(templates):
        report.n_total += 1
        try:
            out.append(apply_retro_template(template, product))
        except InputError as err:
            out.append([])
            report.skip(i, "bad_template", str(err))
            continue
        report.n_ok += 1
    return out, report
