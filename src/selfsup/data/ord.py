"""ORD / USPTO grants reactions (Open Reaction Database, extracted by ORDerly) as records.

Data (``shared/DATA.md``): the orderly 1.0.0 wheel ships eight monthly USPTO-grant slices of the
ORD (1976-01 ... 2001-07, 13,501 reactions) as parquet tables, fetched by the registry entry
``ord-uspto``. Each row has ``rxn_str`` (an atom-mapped reaction SMILES
``reactants>agents>products``), ``reactant_NNN`` / ``product_NNN`` / ``agent_NNN`` /
``solvent_NNN`` columns (missing cells are ``None``, NaN or the literal ``"<missing>"``),
``is_mapped`` and ``extracted_from_file`` (the ORD dataset id). There is no reaction id column:
a record's id is ``"<table stem>:<row>"``.

* :func:`load_ord_uspto` reads the tables into plain records (pandas + pyarrow, no RDKit);
  malformed rows are skipped and counted.
* :func:`selfsup.chem.retro.workflows.ord_reactions.ord_reactions` (in the chemistry layer)
  turns records into canonical, de-duplicated
  :class:`~selfsup.chem.retro.core.reactions.Reaction` objects (RDKit), optionally dropping those
  that USPTO-50k already holds.

Reactants follow the USPTO-50k convention: a mapped record's reactants are the molecules of the
reactant (and agent) side of ``rxn_str`` that share at least one atom-map number with the main
product; an unmapped record uses its ``reactant_NNN`` columns. The main product is the product
with the most heavy atoms (a tie is ambiguous and skipped): side products such as HCl or water
are dropped, as a retro reaction has one product.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfsup.errors import DataNotFoundError, InputError

PathLike = str | os.PathLike

DATASET = "ord-uspto"
MISSING = "<missing>"
_MAP_RE = re.compile(r":\d+\]")

__all__ = [
    "DATASET",
    "load_ord_uspto",
    "ord_table_files",
    "records_from_frame",
]


def _root(root: PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    from selfsup.data.registry import dataset_dir, fetch, is_available

    if not is_available(DATASET):
        fetch(DATASET)
    return dataset_dir(DATASET)


def ord_table_files(root: PathLike | None = None) -> list[Path]:
    """The ``uspto-grants-*.parquet`` tables under ``root`` (default: the fetched dataset)."""
    base = _root(root)
    files = sorted(base.glob("uspto-grants-*.parquet"))
    if not files:
        raise DataNotFoundError(
            f"no uspto-grants-*.parquet in {base}; run selfsup.data.fetch({DATASET!r}) or pass "
            "root= to the folder holding the ORDerly tables"
        )
    return files


def _cell(value: Any) -> str | None:
    """A usable SMILES cell, or ``None`` for None / NaN / ``"<missing>"`` / blank."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    return None if not text or text == MISSING else text


def _columns(row: dict, prefix: str) -> list[str]:
    keys = sorted(k for k in row if k.startswith(prefix) and k[len(prefix):].isdigit())
    return [c for c in (_cell(row[k]) for k in keys) if c is not None]


def records_from_frame(frame: Any, source: str) -> tuple[list[dict], Counter]:
    """Records of one ORDerly table (a pandas DataFrame) and the counts of skipped rows.

    Record keys: ``id`` (``"<source>:<row>"``), ``source`` (``"ord-uspto/<source>"``),
    ``ord_dataset`` (``extracted_from_file``), ``reaction`` (``rxn_str``), ``mapped`` (the
    reaction SMILES carries atom-map numbers), ``reactants``, ``products``, ``agents`` (lists
    of SMILES from the columns, solvents included in ``agents``).
    Skip reasons: ``no_reaction_smiles`` (missing ``rxn_str`` or not ``R>A>P`` with both sides
    non-empty) and ``no_product``.
    """
    if "rxn_str" not in frame.columns:
        raise InputError(f"ORD table {source!r} has no rxn_str column (columns: "
                         f"{list(frame.columns)[:8]}...): is it an ORDerly extraction?")
    out: list[dict] = []
    skipped: Counter = Counter()
    for i, row in enumerate(frame.to_dict(orient="records")):
        rxn = _cell(row.get("rxn_str"))
        parts = rxn.split(" ")[0].split(">") if rxn else []
        if len(parts) != 3 or not parts[0].strip() or not parts[2].strip():
            skipped["no_reaction_smiles"] += 1
            continue
        products = _columns(row, "product_") or parts[2].split(".")
        if not products:
            skipped["no_product"] += 1
            continue
        reactants = _columns(row, "reactant_") or parts[0].split(".")
        agents = _columns(row, "agent_") + _columns(row, "solvent_")
        out.append({
            "id": f"{source}:{i}",
            "source": f"{DATASET}/{source}",
            "ord_dataset": _cell(row.get("extracted_from_file")) or "",
            "reaction": rxn,
            "mapped": bool(_MAP_RE.search(parts[2])),
            "reactants": reactants,
            "products": products,
            "agents": agents,
        })
    return out, skipped


def load_ord_uspto(
    root: PathLike | None = None, *, files: Sequence[PathLike] | None = None
) -> list[dict]:
    """Every ORD USPTO-grants record (tables in name order, rows in file order).

    ``root`` is the folder of the ``uspto-grants-*.parquet`` tables (``None``: fetch the
    ``ord-uspto`` dataset); ``files`` overrides the table list. Needs pandas with pyarrow (or
    fastparquet) to read parquet. Malformed rows are skipped and counted in one warning. See
    :func:`records_from_frame` for the record keys.
    """
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is a dependency
        raise InputError("reading the ORD tables needs pandas: pip install pandas") from exc
    paths = [Path(f) for f in files] if files is not None else ord_table_files(root)
    records: list[dict] = []
    skipped: Counter = Counter()
    for path in paths:
        if not path.is_file():
            raise DataNotFoundError(f"missing ORD table {path}: run selfsup.data.fetch("
                                    f"{DATASET!r}) or pass root= to its folder")
        try:
            frame = pd.read_parquet(path)
        except ImportError as exc:
            raise InputError(
                f"cannot read {path}: pandas needs a parquet engine; pip install pyarrow"
            ) from exc
        recs, skip = records_from_frame(frame, path.name.removesuffix(".parquet"))
        records.extend(recs)
        skipped.update(skip)
    if skipped:
        counts = dict(sorted(skipped.items()))
        warnings.warn(
            f"skipped {sum(skipped.values())} malformed ORD row(s): {counts}",
            stacklevel=2,
        )
    return records
