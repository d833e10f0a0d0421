"""Single-step (backward) retrosynthesis models: the interface the search depends on.

No torch here. A model implements one batched method::

    _propose(products: list[str], top_k: int) -> list[list[Proposal]]

and :meth:`SingleStepModel.propose` does the rest: canonicalises the products, serves repeated
``(product, top_k)`` queries from a cache, canonicalises and merges identical reactant sets
(probabilities summed), sorts, keeps ``top_k`` and renormalises, and counts every query so that a
search's budget of model calls is exact.

:class:`TemplateModel` is the template-classifier base of Retro*/self-improved Retro*
(Chen et al., ICML 2020; Kim et al., ICML 2021): a subclass returns per-product template
probabilities (shape ``(n_products, n_templates)``); the top-k templates are applied with rdchiral
and every reactant set a template yields gets that template's probability before merging.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from selfsup.chem.molecules import canonical_smiles
from selfsup.errors import InputError

from .reactions import apply_retro_template, canonical_reactants

__all__ = ["FixedReactionModel", "Proposal", "SingleStepModel", "TemplateModel"]

_MAX_REACTANTS_MEMO = 200_000


@dataclass(frozen=True)
class Proposal:
    """One proposed reaction for a product: sorted canonical reactants, probability, metadata."""

    reactants: tuple[str, ...]
    probability: float
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


class SingleStepModel:
    """Base class of backward models; subclasses implement :meth:`_propose` only.

    Counters (reset with :meth:`reset_counts`):

    - ``n_calls``: products queried through :meth:`propose` (one per product, cache hits
      included). One Retro* iteration is one call.
    - ``n_cache_hits``: the part of ``n_calls`` answered from the cache.
    - ``n_model_calls`` (property): products actually passed to :meth:`_propose`.
    - ``n_batches``: invocations of :meth:`_propose`.
    - ``n_invalid``: proposed reactant sets dropped because RDKit could not parse them or they
      contained the product itself.

    ``renormalize`` rescales the kept proposals of each product to sum to 1 (Retro*'s template
    model does this after merging duplicates).
    """

    def __init__(
        self,
        *,
        use_cache: bool = True,
        max_cache_size: int | None = 100_000,
        renormalize: bool = True,
    ) -> None:
        self.use_cache = use_cache
        self.max_cache_size = max_cache_size
        self.renormalize = renormalize
        self._cache: OrderedDict[tuple[str, int], list[Proposal]] = OrderedDict()
        # raw reactant tuple -> canonical_reactants(it): a pure function, memoised because a
        # search sees the same proposals again and again (bounded; invalid sets not kept)
        self._reactants_memo: dict[tuple[str, ...], tuple[str, ...]] = {}
        # called with the newly computed {product: proposals} and top_k (a ProposalStore)
        self._on_fresh: Any = None
        self.reset_counts()

    # -- to implement ----------------------------------------------------------------------
    def _propose(self, products: list[str], top_k: int) -> list[list[Proposal]]:
        """Return, for each canonical product, candidate proposals (any order, may repeat)."""
        raise NotImplementedError

    # -- public --------------------------------------------------------------------------
    def propose(self, products: Sequence[str], top_k: int = 50) -> list[list[Proposal]]:
        """Proposals for each product: merged, sorted by probability, at most ``top_k``."""
        if isinstance(products, str):
            raise InputError("propose() takes a list of SMILES; use propose_one() for one SMILES")
        if top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        canon = [canonical_smiles(p, remove_atom_map=True, strict=True) for p in products]
        self.n_calls += len(canon)
        results: list[list[Proposal] | None] = [None] * len(canon)
        todo: list[int] = []
        for i, prod in enumerate(canon):
            hit = self._cache.get((prod, top_k)) if self.use_cache else None
            if hit is not None:
                self._cache.move_to_end((prod, top_k))
                self.n_cache_hits += 1
                results[i] = hit
            else:
                todo.append(i)
        # Identical products inside one batch are computed once.
        unique = list(dict.fromkeys(canon[i] for i in todo))
        if unique:
            self.n_batches += 1
            raw = self._propose(unique, top_k)
            if len(raw) != len(unique):
                raise RuntimeError(
                    f"{type(self).__name__}._propose returned {len(raw)} lists "
                    f"for {len(unique)} products"
                )
            fresh = {p: self._finalise(p, r, top_k) for p, r in zip(unique, raw)}
            self.n_products_computed += len(unique)
            for i in todo:
                results[i] = fresh[canon[i]]
            if self._on_fresh is not None:
                self._on_fresh(fresh, top_k)
            if self.use_cache:
                for p, props in fresh.items():
                    self._cache[(p, top_k)] = props
                while self.max_cache_size is not None and len(self._cache) > self.max_cache_size:
                    self._cache.popitem(last=False)
        return [list(r) for r in results]  # type: ignore[arg-type]

    def propose_one(self, product: str, top_k: int = 50) -> list[Proposal]:
        return self.propose([product], top_k)[0]

    @property
    def n_model_calls(self) -> int:
        return self.n_calls - self.n_cache_hits

    def reset_counts(self) -> None:
        self.n_calls = 0
        self.n_cache_hits = 0
        self.n_batches = 0
        self.n_products_computed = 0
        self.n_invalid = 0

    def clear_cache(self) -> None:
        self._cache.clear()

    def counts(self) -> dict[str, int]:
        return {
            "n_calls": self.n_calls,
            "n_cache_hits": self.n_cache_hits,
            "n_model_calls": self.n_model_calls,
            "n_batches": self.n_batches,
            "n_invalid": self.n_invalid,
        }

    # -- internals -----------------------------------------------------------------------
    def _finalise(self, product: str, raw: Sequence[Proposal], top_k: int) -> list[Proposal]:
        merged: dict[tuple[str, ...], list] = {}
        memo = self._reactants_memo
        for prop in raw:
            key = prop.reactants
            try:
                reactants = memo.get(key) if type(key) is tuple else None
            except TypeError:  # an unhashable element: not memoised
                reactants, key = None, None
            if reactants is None:
                try:
                    reactants = canonical_reactants(prop.reactants)
                except InputError:
                    self.n_invalid += 1
                    continue
                if type(key) is tuple:
                    if len(memo) >= _MAX_REACTANTS_MEMO:
                        memo.clear()
                    memo[key] = reactants
            p = float(prop.probability)
            if product in reactants or not math.isfinite(p) or p < 0:
                self.n_invalid += 1
                continue
            entry = merged.get(reactants)
            if entry is None:
                merged[reactants] = [p, dict(prop.metadata), p, 1]
            else:
                entry[0] += p
                entry[3] += 1
                if p > entry[2]:  # keep the metadata of the strongest source
                    entry[1], entry[2] = dict(prop.metadata), p
        items = sorted(merged.items(), key=lambda kv: -kv[1][0])[:top_k]
        total = sum(v[0] for _, v in items)
        out: list[Proposal] = []
        for reactants, (p, meta, _, n_merged) in items:
            if n_merged > 1:
                meta["n_merged"] = n_merged
            prob = p / total if (self.renormalize and total > 0) else p
            out.append(Proposal(reactants, prob, meta))
        return out


class FixedReactionModel(SingleStepModel):
    """A model that looks proposals up in a table ``product -> [(reactants, prob), ...]``.

    Reactants may be a tuple of SMILES or a dotted string. Unknown products get no proposal.
    Used by the toy worlds and tests. ``renormalize`` defaults to ``False`` so the table's
    probabilities (and hence hand-computed route costs) are used as written.
    """

    def __init__(
        self,
        table: Mapping[str, Sequence[tuple[str | Sequence[str], float]]],
        *,
        renormalize: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(renormalize=renormalize, **kwargs)
        self.table: dict[str, list[Proposal]] = {}
        for product, entries in table.items():
            key = canonical_smiles(product, remove_atom_map=True, strict=True)
            props = self.table.setdefault(key, [])
            for j, (reactants, prob) in enumerate(entries):
                props.append(Proposal(canonical_reactants(reactants), float(prob), {"entry": j}))

    def _propose(self, products: list[str], top_k: int) -> list[list[Proposal]]:
        return [list(self.table.get(p, ())) for p in products]


class TemplateModel(SingleStepModel):
    """Template-classifier model: apply the ``top_k`` highest-scoring templates with rdchiral.

    Subclasses implement :meth:`_template_scores` returning an array of shape
    ``(len(products), len(templates))`` with template probabilities (e.g. a softmax). Every
    reactant set produced by template ``t`` is proposed with probability ``score[t]``; the base
    class merges identical sets (summing) and renormalises. Metadata: ``template_id`` and
    ``template``. Templates that rdchiral cannot apply are counted in ``n_template_errors``.
    """

    def __init__(self, templates: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.templates = list(templates)
        self.n_template_errors = 0

    def _template_scores(self, products: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _propose(self, products: list[str], top_k: int) -> list[list[Proposal]]:
        scores = np.asarray(self._template_scores(products), dtype=np.float64)
        if scores.shape != (len(products), len(self.templates)):
            raise RuntimeError(
                f"_template_scores returned shape {scores.shape}, expected "
                f"({len(products)}, {len(self.templates)})"
            )
        out: list[list[Proposal]] = []
        k = min(top_k, len(self.templates))
        for product, row in zip(products, scores):
            # stable argsort: ties broken by template index
            order = np.argsort(-row, kind="stable")[:k]
            props: list[Proposal] = []
            for t in order:
                p = float(row[t])
                if not p > 0:
                    continue
                try:
                    outcomes = apply_retro_template(self.templates[t], product)
                except InputError:
                    self.n_template_errors += 1
                    continue
                meta = {"template_id": int(t), "template": self.templates[t]}
                props.extend(Proposal(r, p, meta) for r in outcomes)
            out.append(props)
        return out
