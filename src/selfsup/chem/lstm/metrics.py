"""Sample metrics of a generative SMILES model: validity, uniqueness and novelty.

The definitions are MOSES' and GuacaMol's; :func:`selfsup.chem.lstm.training.pretrain` reports
them for the samples of a freshly trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfsup.chem.molecules import canonical_smiles

__all__ = ["sample_metrics"]


def sample_metrics(
    samples: Sequence[str], training_set: set[str] | frozenset[str], keep_stereo: bool = True
) -> tuple[dict[str, float | int], list[dict[str, Any]]]:
    """Validity, uniqueness and novelty of sampled SMILES (MOSES / GuacaMol definitions).

    validity = valid / sampled (RDKit parses it); uniqueness = unique valid / valid (by canonical
    SMILES); novelty = unique valid not in ``training_set`` (canonical SMILES) / unique valid.
    ``training_set`` must hold canonical SMILES written with the same ``keep_stereo``. Returns the
    numbers and one row per sample (smiles, valid, canonical, novel).
    """
    rows: list[dict[str, Any]] = []
    unique: set[str] = set()
    novel: set[str] = set()
    n_valid = 0
    for s in samples:
        can = canonical_smiles(s, keep_stereo=keep_stereo) if s else None
        if can is not None:
            n_valid += 1
            unique.add(can)
            if can not in training_set:
                novel.add(can)
        rows.append({
            "smiles": s, "valid": can is not None, "canonical": can or "",
            "novel": can is not None and can not in training_set,
        })
    n = len(samples)
    metrics: dict[str, float | int] = {
        "n_samples": n,
        "n_valid": n_valid,
        "n_unique": len(unique),
        "n_novel": len(novel),
        "validity": n_valid / n if n else 0.0,
        "uniqueness": len(unique) / n_valid if n_valid else 0.0,
        "novelty": len(novel) / len(unique) if unique else 0.0,
    }
    return metrics, rows
