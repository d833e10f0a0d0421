"""Objective base class, molecule-level scoring terms, their means, and top-k aggregation.

An :class:`Objective` maps one SMILES to a float. It parses the SMILES once; an invalid SMILES
scores ``invalid_score`` (0.0 by default; GuacaMol itself uses -1.0, see
``GUACAMOL_CORRUPT_SCORE``) and never raises. Terms score an RDKit ``Mol`` and may carry a
score modifier (:mod:`selfsup.chem.objectives.modifiers`). Multi-property objectives combine
terms by an arithmetic or geometric mean, as in GuacaMol (Brown et al., J. Chem. Inf. Model.
2019): geometric mean = (prod_i s_i)^(1/n).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rdkit import Chem

from selfsup.chem.molecules import mol_from_smiles, mol_from_smiles_strict
from selfsup.chem.objectives.fingerprints import fingerprint
from selfsup.chem.objectives.modifiers import Gaussian, Modifier
from selfsup.errors import InputError

__all__ = [
    "GUACAMOL_CORRUPT_SCORE",
    "ArithmeticMean",
    "DescriptorTerm",
    "GeometricMean",
    "IsomerTerm",
    "Objective",
    "SmartsTerm",
    "TanimotoTerm",
    "TaskObjective",
    "TopKSpec",
    "parse_formula",
]

logger = logging.getLogger(__name__)

#: The score GuacaMol's scoring functions give to an invalid SMILES.
GUACAMOL_CORRUPT_SCORE = -1.0


class Objective:
    """Base class: ``__call__(smiles) -> float``; subclasses implement :meth:`score_mol`.

    Attributes: ``name`` (registry name), ``invalid_score`` (score of an unparsable SMILES),
    ``maximize`` (True: higher is better; the oracle and optimisers assume this).
    """

    name: str = "objective"
    invalid_score: float = 0.0
    maximize: bool = True

    def score_mol(self, mol: Chem.Mol) -> float:
        raise NotImplementedError

    def __call__(self, smiles: str) -> float:
        mol = mol_from_smiles(smiles)
        if mol is None:
            return float(self.invalid_score)
        return self.score_parsed(mol, smiles)

    def score_parsed(self, mol: Chem.Mol, smiles: str) -> float:
        """What ``__call__(smiles)`` returns once ``mol_from_smiles(smiles)`` gave ``mol``: for a
        caller that parsed ``smiles`` already (the oracle)."""
        try:
            return float(self.score_mol(mol))
        except Exception as exc:  # a scorer failing on one odd molecule must not stop a run
            logger.warning("objective %s failed on %r (%s); scoring it as invalid",
                           self.name, smiles, exc)
            return float(self.invalid_score)

    def score_list(self, smiles_list: Iterable[str]) -> list[float]:
        """Scores of a batch, in order (override for objectives with a faster batch path)."""
        return [self(s) for s in smiles_list]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _apply(modifier: Modifier | None, value: float) -> float:
    return float(value) if modifier is None else float(modifier(value))


class TanimotoTerm(Objective):
    """``modifier(Tanimoto(fp(mol), fp(target)))`` under fingerprint type ``fp_type``."""

    def __init__(self, target: str, fp_type: str = "ECFP4", modifier: Modifier | None = None,
                 name: str | None = None) -> None:
        self.target = target
        self.fp_type = fp_type
        self.modifier = modifier
        self.name = name or f"tanimoto_{fp_type.lower()}"
        self._ref = fingerprint(mol_from_smiles_strict(target), fp_type)

    def score_mol(self, mol: Chem.Mol) -> float:
        from rdkit import DataStructs

        sim = DataStructs.TanimotoSimilarity(fingerprint(mol, self.fp_type), self._ref)
        return _apply(self.modifier, sim)


class DescriptorTerm(Objective):
    """``modifier(descriptor(mol))`` for any ``descriptor: Mol -> float``."""

    def __init__(self, descriptor: Callable[[Chem.Mol], float],
                 modifier: Modifier | None = None, name: str | None = None) -> None:
        self.descriptor = descriptor
        self.modifier = modifier
        self.name = name or getattr(descriptor, "__name__", "descriptor")

    def score_mol(self, mol: Chem.Mol) -> float:
        return _apply(self.modifier, self.descriptor(mol))


class SmartsTerm(Objective):
    """1 if ``mol`` contains the SMARTS pattern, else 0 (``inverse=True`` swaps them)."""

    def __init__(self, smarts: str, inverse: bool = False, name: str | None = None) -> None:
        pattern = Chem.MolFromSmarts(smarts)
        if pattern is None:
            raise InputError(f"invalid SMARTS {smarts!r}; check its syntax")
        self.smarts = smarts
        self.inverse = inverse
        self._pattern = pattern
        self.name = name or ("no_" if inverse else "has_") + "smarts"

    def score_mol(self, mol: Chem.Mol) -> float:
        hit = mol.HasSubstructMatch(self._pattern)
        return float(hit != self.inverse)


_FORMULA_RE = re.compile(r"([A-Z][a-z]?)(\d*)")


def parse_formula(formula: str) -> list[tuple[str, int]]:
    """``'C9H10N2O2PF2Cl'`` -> ``[('C', 9), ('H', 10), ('N', 2), ('O', 2), ('P', 1), ...]``."""
    parts = _FORMULA_RE.findall(formula)
    if not parts or "".join(e + n for e, n in parts) != formula:
        raise InputError(f"cannot parse molecular formula {formula!r}; write it like 'C7H8N2O2'")
    return [(element, int(n) if n else 1) for element, n in parts]


def _count_element(mol: Chem.Mol, element: str) -> int:
    if element == "H":
        return sum(a.GetTotalNumHs() for a in mol.GetAtoms()) + sum(
            1 for a in mol.GetAtoms() if a.GetSymbol() == "H")
    return sum(1 for a in mol.GetAtoms() if a.GetSymbol() == element)


def _count_all_atoms(mol: Chem.Mol) -> int:
    return mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())


class IsomerTerm(Objective):
    """Closeness to a molecular formula (GuacaMol isomer score).

    One Gaussian(mu = target count, sigma = 1) per element of the formula, hydrogens included,
    plus Gaussian(mu = total atom count, sigma = 2) on the total number of atoms with H;
    combined by the geometric (default) or arithmetic mean. 1.0 exactly for an isomer.
    """

    def __init__(self, formula: str, mean: str = "geometric", name: str | None = None) -> None:
        if mean not in ("geometric", "arithmetic"):
            raise InputError(f"mean must be 'geometric' or 'arithmetic', got {mean!r}")
        self.formula = formula
        self.mean = mean
        self.elements = parse_formula(formula)
        self.total = sum(n for _, n in self.elements)
        self.name = name or f"isomer_{formula}"

    def score_mol(self, mol: Chem.Mol) -> float:
        scores = [Gaussian(n, 1.0)(_count_element(mol, e)) for e, n in self.elements]
        scores.append(Gaussian(self.total, 2.0)(_count_all_atoms(mol)))
        return _geometric(scores) if self.mean == "geometric" else float(np.mean(scores))


def _geometric(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.prod(arr) ** (1.0 / len(arr)))


class ArithmeticMean(Objective):
    """Weighted arithmetic mean ``sum_i w_i s_i / sum_i w_i`` of terms (equal weights default)."""

    def __init__(self, terms: Sequence[Objective], weights: Sequence[float] | None = None,
                 name: str = "arithmetic_mean") -> None:
        self.terms = list(terms)
        self.weights = [1.0] * len(self.terms) if weights is None else [float(w) for w in weights]
        if not self.terms or len(self.weights) != len(self.terms):
            raise InputError("ArithmeticMean needs at least one term and one weight per term")
        self.name = name

    def score_mol(self, mol: Chem.Mol) -> float:
        total = sum(w * t.score_mol(mol) for t, w in zip(self.terms, self.weights))
        return total / sum(self.weights)


class GeometricMean(Objective):
    """Geometric mean ``(prod_i s_i)^(1/n)`` of terms (0 if any term is 0)."""

    def __init__(self, terms: Sequence[Objective], name: str = "geometric_mean") -> None:
        self.terms = list(terms)
        if not self.terms:
            raise InputError("GeometricMean needs at least one term")
        self.name = name

    def score_mol(self, mol: Chem.Mol) -> float:
        return _geometric([t.score_mol(mol) for t in self.terms])


@dataclass(frozen=True)
class TopKSpec:
    """How a benchmark turns the scores of its molecules into one number.

    ``aggregate(scores) = sum_j w_j * (sum of the top_counts[j] best scores / top_counts[j])
    / sum_j w_j`` (GuacaMol's score-contribution specification; equal weights by default).
    Missing molecules count as 0 (sum of fewer than k scores is still divided by k).
    """

    top_counts: tuple[int, ...]
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.top_counts or any(k <= 0 for k in self.top_counts):
            raise InputError(f"top_counts must be positive integers, got {self.top_counts}")
        if self.weights is not None and len(self.weights) != len(self.top_counts):
            raise InputError("TopKSpec needs one weight per top count")

    def contributions(self, scores: Iterable[float]) -> dict[str, float]:
        """``{'top_1': ..., 'top_10': ..., ...}``."""
        ordered = sorted((float(s) for s in scores), reverse=True)
        return {f"top_{k}": sum(ordered[:k]) / k for k in self.top_counts}

    def aggregate(self, scores: Iterable[float]) -> float:
        contrib = list(self.contributions(scores).values())
        weights = self.weights or (1.0,) * len(contrib)
        return float(sum(c * w for c, w in zip(contrib, weights)) / sum(weights))


class TaskObjective(Objective):
    """A named benchmark objective: a scoring term plus its top-k aggregation.

    ``name`` is the registry key (PMO/TDC style, e.g. ``celecoxib_rediscovery``),
    ``display_name`` the benchmark's own name (e.g. ``Celecoxib rediscovery``).
    """

    def __init__(self, name: str, display_name: str, scorer: Objective, topk: TopKSpec,
                 invalid_score: float = 0.0, source: str = "GuacaMol v2",
                 description: str = "") -> None:
        self.name = name
        self.display_name = display_name
        self.scorer = scorer
        self.topk = topk
        self.invalid_score = float(invalid_score)
        self.source = source
        self.description = description

    def score_mol(self, mol: Chem.Mol) -> float:
        return self.scorer.score_mol(mol)

    def benchmark_score(self, scores: Iterable[float]) -> float:
        """The benchmark's number for a set of molecule scores (see :class:`TopKSpec`)."""
        return self.topk.aggregate(scores)

    def __repr__(self) -> str:
        return f"TaskObjective({self.name!r}, {self.display_name!r}, topk={self.topk.top_counts})"
