"""Morgan bit fingerprints of SMILES lists: the input of the template MLP and the value network.

RDKit only (no torch): one cached ``MorganGenerator`` per (radius, bits, chirality).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import rdFingerprintGenerator

from selfsup.errors import InputError

__all__ = ["morgan_fingerprints"]


_GENERATORS: dict[tuple[int, int, bool], Any] = {}


def _generator(radius: int, n_bits: int, use_chirality: bool):
    key = (radius, n_bits, use_chirality)
    gen = _GENERATORS.get(key)
    if gen is None:
        gen = rdFingerprintGenerator.GetMorganGenerator(
            radius=radius, fpSize=n_bits, includeChirality=use_chirality
        )
        _GENERATORS[key] = gen
    return gen


def morgan_fingerprints(
    smiles: Sequence[str],
    radius: int = 2,
    n_bits: int = 2048,
    *,
    use_chirality: bool = False,
) -> np.ndarray:
    """Morgan bit fingerprints of ``smiles`` as a ``uint8`` array of shape ``(n, n_bits)``.

    A dotted SMILES (a reactant set) gives the fingerprint of all its fragments together.
    An unparsable SMILES gives an all-zero row (callers pass canonical SMILES, so this only
    guards against odd input).
    """
    if isinstance(smiles, str):
        raise InputError("morgan_fingerprints() takes a list of SMILES, not one string")
    gen = _generator(int(radius), int(n_bits), bool(use_chirality))
    out = np.zeros((len(smiles), int(n_bits)), dtype=np.uint8)
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s) if isinstance(s, str) and s else None
            if mol is not None:
                out[i] = gen.GetFingerprintAsNumPy(mol)
    return out
