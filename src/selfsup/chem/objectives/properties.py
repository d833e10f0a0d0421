"""Molecular properties and the penalized-logP family of objectives.

* logP: Wildman-Crippen (RDKit ``MolLogP``).  QED: Bickerton et al. 2012 (RDKit ``QED.qed``).
* SA score: Ertl & Schuffenhauer 2009, RDKit's Contrib ``SA_Score/sascorer.py``, loaded from
  ``RDConfig.RDContribDir`` at first use (1 = easy ... 10 = hard to synthesise).
* Penalized logP (Kusner et al. 2017; GEGL, Ahn et al. NeurIPS 2020):
  ``raw``:  logP - SA - max(largest ring size - 6, 0)
  ``gegl``: z(logP) - z(SA) - z(cycle), each term z-normalised with ZINC250k statistics
  (the form GEGL optimises; its 31.40 is in this form). The "largest ring" is taken over
  networkx's cycle basis of the molecular graph (``ring="cycle_basis"``, as in GEGL and JT-VAE)
  or over RDKit's SSSR rings (``ring="sssr"``); each ring definition has its own cycle-term
  statistics in the ``gegl`` form.
* Constrained improvement (JT-VAE / GEGL constrained optimisation): for a start molecule x0 and a
  candidate x, ``plogp(x) - plogp(x0)`` if ``Tanimoto(x, x0) >= delta`` else a failure marker.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from rdkit import Chem, DataStructs
from rdkit.Chem import QED, Descriptors, RDConfig

from selfsup.chem.molecules import mol_from_smiles, mol_from_smiles_strict
from selfsup.chem.objectives.base import Objective
from selfsup.chem.objectives.fingerprints import fingerprint
from selfsup.errors import DataNotFoundError, InputError

__all__ = [
    "GEGL_ZINC_STATS",
    "ConstrainedImprovement",
    "PenalizedLogP",
    "QEDObjective",
    "SAObjective",
    "cycle_penalty",
    "largest_ring_size",
    "logp",
    "penalized_logp",
    "qed",
    "sa_score",
]

#: ZINC250k mean / standard deviation of each penalized-logP term, as used by GEGL to
#: z-normalise (logP, SA score, cycle term under each ring definition).
GEGL_ZINC_STATS: dict[str, tuple[float, float]] = {
    "logp": (2.4570965532649507, 1.4339810636722639),
    "sa": (3.0508333383104556, 0.8327034846660627),
    "cycle_basis": (0.048152237188108474, 0.2860582871837183),
    "sssr": (0.03805126763956079, 0.22377819597468795),
}

_RING_DEFS = ("cycle_basis", "sssr")
_FORMS = ("raw", "gegl")


def logp(mol: Chem.Mol) -> float:
    """Wildman-Crippen logP."""
    return float(Descriptors.MolLogP(mol))


def qed(mol: Chem.Mol) -> float:
    """Quantitative estimate of drug-likeness in [0, 1]."""
    return float(QED.qed(mol))


@lru_cache(maxsize=1)
def _sascorer() -> ModuleType:
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    if not path.is_file():
        raise DataNotFoundError(
            f"RDKit's SA_Score contribution was not found at {path}; install an RDKit build that "
            "ships Contrib (the PyPI 'rdkit' wheel does)"
        )
    spec = importlib.util.spec_from_file_location("_selfsup_rdkit_sascorer", path)
    if spec is None or spec.loader is None:
        raise DataNotFoundError(f"cannot load RDKit's SA scorer from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sa_score(mol: Chem.Mol) -> float:
    """Synthetic accessibility score (Ertl & Schuffenhauer 2009), 1 (easy) .. 10 (hard)."""
    return float(_sascorer().calculateScore(mol))


def largest_ring_size(mol: Chem.Mol, ring: str = "cycle_basis") -> int:
    """Size of the largest ring; 0 for acyclic molecules.

    ``cycle_basis``: over networkx's cycle basis of the heavy-atom graph (GEGL, JT-VAE);
    ``sssr``: over RDKit's smallest set of smallest rings.
    """
    if ring == "sssr":
        rings = mol.GetRingInfo().AtomRings()
    elif ring == "cycle_basis":
        import networkx as nx

        # built from the adjacency matrix (as GEGL does): the basis found depends on the
        # graph's node and neighbour order, and so can the largest ring of fused systems
        graph = nx.from_numpy_array(Chem.GetAdjacencyMatrix(mol))
        rings = nx.cycle_basis(graph)
    else:
        raise InputError(f"ring must be one of {_RING_DEFS}, got {ring!r}")
    return max((len(r) for r in rings), default=0)


def cycle_penalty(mol: Chem.Mol, ring: str = "cycle_basis") -> int:
    """``max(largest ring size - 6, 0)``."""
    return max(largest_ring_size(mol, ring) - 6, 0)


def penalized_logp(mol: Chem.Mol, form: str = "raw", ring: str = "cycle_basis") -> float:
    """Penalized logP of ``mol``; ``form`` is ``'raw'`` or ``'gegl'`` (ZINC-z-normalised)."""
    if form not in _FORMS:
        raise InputError(f"penalized logP form must be one of {_FORMS}, got {form!r}")
    lp, sa, cyc = logp(mol), sa_score(mol), float(cycle_penalty(mol, ring))
    if form == "raw":
        return lp - sa - cyc
    (m_l, s_l), (m_s, s_s), (m_c, s_c) = (GEGL_ZINC_STATS[k] for k in ("logp", "sa", ring))
    return (lp - m_l) / s_l - (sa - m_s) / s_s - (cyc - m_c) / s_c


class PenalizedLogP(Objective):
    """Penalized logP objective; ``name`` says its form (``penalized_logp`` = raw,
    ``penalized_logp_gegl`` = ZINC-normalised). Invalid SMILES score ``invalid_score``
    (GEGL uses -1000 for this unbounded objective)."""

    def __init__(self, form: str = "raw", ring: str = "cycle_basis",
                 invalid_score: float = -1000.0) -> None:
        if form not in _FORMS or ring not in _RING_DEFS:
            raise InputError(f"PenalizedLogP form in {_FORMS} and ring in {_RING_DEFS}; "
                             f"got form={form!r}, ring={ring!r}")
        self.form = form
        self.ring = ring
        self.invalid_score = float(invalid_score)
        suffix = "" if form == "raw" else "_gegl"
        self.name = f"penalized_logp{suffix}" + ("" if ring == "cycle_basis" else "_sssr")

    def score_mol(self, mol: Chem.Mol) -> float:
        return penalized_logp(mol, self.form, self.ring)


class QEDObjective(Objective):
    """QED (PMO task ``qed``)."""

    name = "qed"

    def score_mol(self, mol: Chem.Mol) -> float:
        return qed(mol)


class SAObjective(Objective):
    """SA score (lower is easier: ``maximize = False``)."""

    name = "sa_score"
    maximize = False

    def __init__(self, invalid_score: float = 10.0) -> None:
        self.invalid_score = float(invalid_score)

    def score_mol(self, mol: Chem.Mol) -> float:
        return sa_score(mol)


class ConstrainedImprovement(Objective):
    """Penalized-logP improvement over ``start`` under a similarity constraint.

    ``improvement(smiles)`` returns ``plogp(x) - plogp(start)`` when
    ``Tanimoto(x, start) >= delta`` and ``None`` otherwise (also for invalid SMILES).
    As an objective, a failure scores ``failure_score`` (-1000, GEGL's marker).

    Defaults: ZINC-normalised penalized logP with SSSR rings and the ECFP4 count fingerprint.
    GEGL's ``run_gegl_constrained.py`` ran with cycle-basis rings (its default; SSSR only with
    ``--use_atomrings``): ``ring='cycle_basis'``, as the registry's
    ``constrained_penalized_logp_gegl:<delta>:<SMILES>`` does. JT-VAE's code
    (``jtnn/jtprop_vae.py``) measures similarity with ``GetMorganFingerprint(mol, 2)``, the same
    unfolded count fingerprint as ``ECFP4``; ``MORGAN2_BITS`` is the 2048-bit folded variant.
    """

    def __init__(self, start: str, delta: float = 0.4, form: str = "gegl", ring: str = "sssr",
                 fp_type: str = "ECFP4", failure_score: float = -1000.0) -> None:
        if not 0.0 <= delta <= 1.0:
            raise InputError(f"similarity threshold delta must lie in [0, 1], got {delta}")
        start_mol = mol_from_smiles_strict(start)
        self.start = Chem.MolToSmiles(start_mol)
        self.delta = float(delta)
        self.plogp = PenalizedLogP(form=form, ring=ring)
        self.fp_type = fp_type
        self.failure_score = float(failure_score)
        self.invalid_score = self.failure_score
        self.start_score = self.plogp.score_mol(start_mol)
        self._ref = fingerprint(start_mol, fp_type)
        self.name = f"constrained_{self.plogp.name}_delta{delta:g}"

    def similarity(self, mol: Chem.Mol) -> float:
        return float(DataStructs.TanimotoSimilarity(fingerprint(mol, self.fp_type), self._ref))

    def improvement_mol(self, mol: Chem.Mol) -> float | None:
        if self.similarity(mol) < self.delta:
            return None
        return self.plogp.score_mol(mol) - self.start_score

    def improvement(self, smiles: str) -> float | None:
        """Improvement, or ``None`` when invalid or less similar than ``delta``."""
        mol = mol_from_smiles(smiles)
        return None if mol is None else self.improvement_mol(mol)

    def score_mol(self, mol: Chem.Mol) -> float:
        imp = self.improvement_mol(mol)
        return self.failure_score if imp is None else imp
