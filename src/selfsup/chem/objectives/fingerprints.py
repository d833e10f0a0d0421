"""Molecular fingerprints and Tanimoto similarity.

Fingerprint types (names as in GuacaMol, Brown et al. 2019):

* ``ECFP4`` / ``ECFP6``: Morgan (extended-connectivity) fingerprints of radius 2 / 3 with atom
  counts (unfolded sparse count vectors).
* ``FCFP4`` / ``FCFP6``: the same with pharmacophoric feature invariants instead of atom types.
* ``AP``: atom pairs (topological distance 1..10), unfolded sparse counts.
* ``PHCO``: Gobbi-Poppinger 2D pharmacophore fingerprint (sparse bits).
* ``MORGAN2_BITS``: radius-2 Morgan bit vector folded to 2048 bits (often named for the JT-VAE
  constrained-optimisation benchmark; JT-VAE's own code, ``jtnn/jtprop_vae.py``, and GEGL's use
  ``GetMorganFingerprint(mol, 2)``, the unfolded count fingerprint ``ECFP4`` here).

Tanimoto on count vectors is the generalised form sum(min(a, b)) / sum(max(a, b)); on bit
vectors it is |a & b| / |a | b|. Both come from RDKit's ``DataStructs.TanimotoSimilarity``.
"""

from __future__ import annotations

from functools import cache, lru_cache
from typing import Any

from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from selfsup.chem.molecules import mol_from_smiles_strict
from selfsup.errors import InputError

__all__ = ["FINGERPRINT_TYPES", "fingerprint", "tanimoto", "tanimoto_mols"]

FINGERPRINT_TYPES: tuple[str, ...] = (
    "ECFP4",
    "ECFP6",
    "FCFP4",
    "FCFP6",
    "AP",
    "PHCO",
    "MORGAN2_BITS",
)


@cache
def _generator(fp_type: str) -> Any:
    if fp_type in ("ECFP4", "ECFP6"):
        return rdFingerprintGenerator.GetMorganGenerator(radius=2 if fp_type == "ECFP4" else 3)
    if fp_type in ("FCFP4", "FCFP6"):
        return rdFingerprintGenerator.GetMorganGenerator(
            radius=2 if fp_type == "FCFP4" else 3,
            atomInvariantsGenerator=rdFingerprintGenerator.GetMorganFeatureAtomInvGen(),
        )
    if fp_type == "AP":
        return rdFingerprintGenerator.GetAtomPairGenerator(minDistance=1, maxDistance=10)
    if fp_type == "MORGAN2_BITS":
        return rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    raise KeyError(fp_type)


@lru_cache(maxsize=1)
def _gobbi_factory() -> Any:
    from rdkit.Chem.Pharm2D import Gobbi_Pharm2D

    return Gobbi_Pharm2D.factory


def fingerprint(mol: Chem.Mol, fp_type: str = "ECFP4") -> Any:
    """Fingerprint of ``mol`` of type ``fp_type`` (one of :data:`FINGERPRINT_TYPES`)."""
    key = fp_type.upper()
    if key not in FINGERPRINT_TYPES:
        raise InputError(
            f"unknown fingerprint type {fp_type!r}; use one of {', '.join(FINGERPRINT_TYPES)}"
        )
    if key == "PHCO":
        from rdkit.Chem.Pharm2D import Generate

        return Generate.Gen2DFingerprint(mol, _gobbi_factory())
    gen = _generator(key)
    if key == "MORGAN2_BITS":
        return gen.GetFingerprint(mol)
    return gen.GetSparseCountFingerprint(mol)


def tanimoto_mols(a: Chem.Mol, b: Chem.Mol, fp_type: str = "ECFP4") -> float:
    """Tanimoto similarity of two RDKit molecules under ``fp_type``."""
    return float(DataStructs.TanimotoSimilarity(fingerprint(a, fp_type), fingerprint(b, fp_type)))


def tanimoto(smiles_a: str, smiles_b: str, fp_type: str = "ECFP4") -> float:
    """Tanimoto similarity of two SMILES; raises :class:`InputError` if either is invalid."""
    a, b = mol_from_smiles_strict(smiles_a), mol_from_smiles_strict(smiles_b)
    return tanimoto_mols(a, b, fp_type)
