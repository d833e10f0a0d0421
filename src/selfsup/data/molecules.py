"""Molecule and reaction dataset readers (no torch, no RDKit needed to read).

* ZINC250k (JT-VAE corpus): ``zinc250k.smiles``, one SMILES per line.
* MOSES (Polykovskiy et al. 2020): ``{train,test,test_scaffolds}.csv.gz`` with a ``SMILES`` column.
* USPTO-50k (Schneider et al. 2016) with rdchiral templates: tab-separated
  ``reaction_templates_50k_{train,valid,test}.csv`` with columns ``RxnSmilesClean`` (atom-mapped
  reaction SMILES), ``RetroTemplate`` and ``id`` among others.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import warnings
from pathlib import Path

from selfsup.errors import DataNotFoundError, InputError

PathLike = str | os.PathLike

MOSES_SPLITS = ("train", "test", "test_scaffolds")
USPTO_SPLITS = ("train", "valid", "test")


def _root(root: PathLike | None, name: str) -> Path:
    if root is not None:
        return Path(root)
    from selfsup.data.registry import dataset_dir

    return dataset_dir(name)


def _need(path: Path, name: str) -> Path:
    if not path.is_file():
        raise DataNotFoundError(
            f"missing {path}; run selfsup.data.fetch({name!r}) or pass root= to its directory"
        )
    return path


def _text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def load_zinc250k(root: PathLike | None = None) -> list[str]:
    """The 249,456 ZINC250k SMILES, in file order (blank lines ignored)."""
    path = _need(_root(root, "zinc250k") / "zinc250k.smiles", "zinc250k")
    with _text(path) as fh:
        return [s for s in (line.strip() for line in fh) if s]


def load_moses(root: PathLike | None = None, split: str = "train") -> list[str]:
    """MOSES SMILES of ``split`` (train, test or test_scaffolds), in file order."""
    if split not in MOSES_SPLITS:
        raise InputError(f"unknown MOSES split {split!r}; valid: {', '.join(MOSES_SPLITS)}")
    base = _root(root, "moses")
    path = base / f"{split}.csv.gz"
    if not path.is_file() and (base / f"{split}.csv").is_file():
        path = base / f"{split}.csv"
    with _text(_need(path, "moses")) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or "SMILES" not in header:
            raise InputError(f"{path}: expected a header with a SMILES column, got {header}")
        col = header.index("SMILES")
        return [row[col].strip() for row in reader if len(row) > col and row[col].strip()]


def _is_reaction(smiles: str) -> bool:
    parts = smiles.split(">")
    return len(parts) == 3 and bool(parts[0].strip()) and bool(parts[2].strip())


def load_uspto50k(root: PathLike | None = None, split: str = "train") -> list[dict]:
    """USPTO-50k ``split`` as ``[{"id", "reaction", "template"}]`` in file order.

    ``reaction`` is the atom-mapped ``reactants>>products`` SMILES (``RxnSmilesClean``),
    ``template`` the rdchiral retro template (``RetroTemplate``, products>>reactants) and ``id``
    the patent/row id. Rows with the wrong number of fields, no reaction arrow or an empty
    template are skipped and counted in one warning.
    """
    if split not in USPTO_SPLITS:
        raise InputError(f"unknown USPTO-50k split {split!r}; valid: {', '.join(USPTO_SPLITS)}")
    path = _need(_root(root, "uspto50k") / f"reaction_templates_50k_{split}.csv", "uspto50k")
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, 1 << 24))
    try:
        with _text(path) as fh:
            reader = csv.reader(fh, delimiter="\t")
            header = next(reader, None) or []
            need = ("RxnSmilesClean", "RetroTemplate", "id")
            if any(c not in header for c in need):
                raise InputError(f"{path}: header lacks one of {need} (got {header[:6]}...)")
            i_rxn, i_tpl, i_id = (header.index(c) for c in need)
            out: list[dict] = []
            bad: list[int] = []
            for lineno, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    bad.append(lineno)
                    continue
                rxn, tpl, rid = row[i_rxn].strip(), row[i_tpl].strip(), row[i_id].strip()
                if not _is_reaction(rxn) or not _is_reaction(tpl):
                    bad.append(lineno)
                    continue
                out.append({"id": rid, "reaction": rxn, "template": tpl})
    finally:
        csv.field_size_limit(limit)
    if bad:
        warnings.warn(
            f"skipped {len(bad)} malformed row(s) of {path} (first at line {bad[0]})",
            stacklevel=2,
        )
    return out
