"""Training data of the template classifier of Retro* (Chen et al., ICML 2020) from USPTO-50k.

Each reaction of a split becomes one example:

- ``product``: canonical RDKit SMILES of the (single) product, atom maps removed;
- ``reactants``: the sorted tuple of canonical reactant SMILES (the exact-match target);
- ``template``: the rdchiral retro template ``product_pattern>>reactant_patterns`` (the one
  recorded in the file; re-extracted with rdchiral when asked or when none was recorded);
- ``label``: the template's index in the vocabulary, ``-1`` when the template is not in it.

The vocabulary is built from the TRAIN split only (templates seen at least ``min_count``
times), ordered by decreasing count then by string, so a valid/test reaction whose template was
never seen in training keeps ``label == -1`` and counts as a miss in every accuracy.

Inputs of the networks are Morgan fingerprints (radius 2, 2048 bits, as in Retro*), stored as
``uint8`` arrays of shape ``(n, n_bits)``: of the product (backward model) and of the dotted
reactant set (forward model). :func:`prepare_uspto50k` computes everything once and caches it
(an ``.npz`` with bit-packed fingerprints and a JSON with the strings, both written atomically,
keyed by a hash of the source files and the parameters).

Malformed rows never stop preparation: they are skipped and counted per reason in a
:class:`~selfsup.chem.retro.core.reactions.BulkReport` per split.

Cleaned data (``clean=True``, issue 23): the train and valid reactions whose own template does
not give back their reactants (:func:`~selfsup.chem.retro.core.reactions.template_reproduces`)
are dropped and counted (``template_not_reproducing``; the test split is kept whole, so that its
exact-match accuracy is measured on the same reactions as without cleaning), and templates are
identified by their canonical key (:func:`~.template_identity.canonical_template`), not their
string: train templates with one key are one class (named by their most frequent string) and a
valid/test reaction is labelled by its template's key. ``extra_train`` adds reactions (a table
written by :func:`write_reaction_table`, e.g. the ORD training group of
:mod:`selfsup.chem.retro.workflows.ord_split`) to the train split.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.errors import InputError
from selfsup.io import atomic_write_bytes, atomic_write_json, atomic_write_text

from ..core.fingerprints import morgan_fingerprints
from ..core.reactions import BulkReport, Reaction, extract_retro_template
from .template_identity import filter_reproducing, template_keys

__all__ = [
    "CACHE_FORMAT",
    "SPLITS",
    "SplitData",
    "TemplateData",
    "build_split",
    "build_vocabulary",
    "parse_template_records",
    "prepare_from_records",
    "prepare_uspto50k",
    "read_reaction_table",
    "write_reaction_table",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
CACHE_FORMAT = "selfsup.uspto50k_templates/1"
CHECKED_SPLITS = ("train", "valid")  # the splits that clean=True filters by reproduction


# ----------------------------------------------------------------------------------------------
# Examples
# ----------------------------------------------------------------------------------------------


@dataclass
class SplitData:
    """One split: parallel lists of examples plus labels and fingerprints.

    ``labels``: int64 ``(n,)``, ``-1`` for a template outside the vocabulary.
    ``product_fps`` / ``reactant_fps``: uint8 ``(n, n_bits)``.
    """

    name: str
    ids: list[str]
    products: list[str]
    reactants: list[tuple[str, ...]]
    templates: list[str]
    labels: np.ndarray
    product_fps: np.ndarray
    reactant_fps: np.ndarray
    report: BulkReport = field(default_factory=BulkReport)

    def __len__(self) -> int:
        return len(self.products)

    @property
    def coverage(self) -> float:
        """Fraction of the split's reactions whose template is in the vocabulary."""
        return float((self.labels >= 0).mean()) if len(self.labels) else 0.0

    def subset(self, index: Sequence[int] | np.ndarray) -> SplitData:
        """The examples at ``index`` (in that order); the report is shared."""
        idx = np.asarray(index, dtype=np.int64)
        return SplitData(
            name=self.name,
            ids=[self.ids[i] for i in idx],
            products=[self.products[i] for i in idx],
            reactants=[self.reactants[i] for i in idx],
            templates=[self.templates[i] for i in idx],
            labels=self.labels[idx],
            product_fps=self.product_fps[idx],
            reactant_fps=self.reactant_fps[idx],
            report=self.report,
        )


@dataclass
class TemplateData:
    """Prepared data: the template vocabulary (from train) and the splits."""

    templates: list[str]
    splits: dict[str, SplitData]
    params: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, split: str) -> SplitData:
        try:
            return self.splits[split]
        except KeyError:
            raise InputError(
                f"unknown split {split!r}; prepared splits: {', '.join(self.splits)}"
            ) from None

    @property
    def n_templates(self) -> int:
        return len(self.templates)


def parse_template_records(
    records: Iterable[Mapping[str, str]], *, reextract: bool = False
) -> tuple[list[tuple[str, str, tuple[str, ...], str]], BulkReport]:
    """Turn raw rows ``{"id", "reaction", "template"}`` into ``(id, product, reactants, template)``.

    ``reaction`` is an atom-mapped reaction SMILES; ``template`` the recorded rdchiral retro
    template (may be empty). With ``reextract`` (or no usable recorded template) the template is
    extracted from the mapped reaction with rdchiral. Skips, counted in the report:
    ``malformed_reaction`` (unparsable reaction or several product fragments) and
    ``no_template`` (no usable template and rdchiral found none). Re-extractions forced by a
    missing recorded template are logged, not counted as skips.
    """
    report = BulkReport()
    out: list[tuple[str, str, tuple[str, ...], str]] = []
    n_reextracted = 0
    for i, rec in enumerate(records):
        report.n_total += 1
        text = rec.get("reaction", "")
        try:
            rxn = Reaction.from_smiles(text)
        except InputError as err:
            report.skip(i, "malformed_reaction", str(err))
            continue
        template = (rec.get("template") or "").strip()
        usable = template.count(">>") == 1 and all(template.split(">>"))
        if reextract or not usable:
            try:
                template = extract_retro_template(rxn)
            except InputError as err:
                report.skip(i, "no_template", str(err))
                continue
            n_reextracted += not reextract
        out.append((str(rec.get("id", i)), rxn.product, rxn.reactants, template))
        report.n_ok += 1
    if n_reextracted:
        log.info("re-extracted %d template(s) that were missing or malformed", n_reextracted)
    return out, report


def build_vocabulary(templates: Iterable[str], min_count: int = 1, *,
                     by_key: bool = False) -> list[str]:
    """Templates seen at least ``min_count`` times, by decreasing count then by string.

    ``by_key``: templates with the same canonical key (:func:`~.template_identity.template_keys`)
    count as one template, named by its most frequent string (ties: the smallest string).
    """
    if min_count < 1:
        raise InputError(f"min_count must be >= 1, got {min_count}")
    counts = Counter(templates)
    if by_key:
        strings = sorted(counts)
        groups: dict[str, list[str]] = {}
        for t, key in zip(strings, template_keys(strings)):
            groups.setdefault(key, []).append(t)
        named = {min(g, key=lambda t: (-counts[t], t)): sum(counts[t] for t in g)
                 for g in groups.values()}
        counts = Counter(named)
    kept = [t for t, c in counts.items() if c >= min_count]
    return sorted(kept, key=lambda t: (-counts[t], t))


def _label_index(vocab_list: Sequence[str], templates: Iterable[str], by_key: bool
                 ) -> dict[str, int]:
    """Template string -> label for every string in ``templates`` that has one."""
    index = {t: i for i, t in enumerate(vocab_list)}
    if not by_key:
        return index
    key_index = dict(zip(template_keys(vocab_list), range(len(vocab_list))))
    strings = sorted(set(templates) - set(index))
    for t, key in zip(strings, template_keys(strings)):
        if key in key_index:
            index[t] = key_index[key]
    return index


def build_split(
    name: str,
    examples: Sequence[tuple[str, str, tuple[str, ...], str]],
    vocabulary: Mapping[str, int],
    report: BulkReport | None = None,
    *,
    radius: int = 2,
    n_bits: int = 2048,
) -> SplitData:
    """Labels and fingerprints of parsed examples ``(id, product, reactants, template)``."""
    ids = [e[0] for e in examples]
    products = [e[1] for e in examples]
    reactants = [tuple(e[2]) for e in examples]
    templates = [e[3] for e in examples]
    labels = np.array([vocabulary.get(t, -1) for t in templates], dtype=np.int64)
    return SplitData(
        name=name,
        ids=ids,
        products=products,
        reactants=reactants,
        templates=templates,
        labels=labels,
        product_fps=morgan_fingerprints(products, radius, n_bits),
        reactant_fps=morgan_fingerprints([".".join(r) for r in reactants], radius, n_bits),
        report=report if report is not None else BulkReport(),
    )


def prepare_from_records(
    records: Mapping[str, Iterable[Mapping[str, str]]],
    *,
    min_count: int = 1,
    reextract: bool = False,
    radius: int = 2,
    n_bits: int = 2048,
    extra_skips: Mapping[str, int] | None = None,
    clean: bool = False,
) -> tuple[TemplateData, dict[str, Any]]:
    """Prepare splits from in-memory rows (``records[split]``; ``"train"`` is required).

    ``extra_skips[split]`` adds rows that were already dropped upstream (by the file reader) to
    the split's ``malformed_row`` count. ``clean``: see the module docstring. Returns the data
    and the report (see :func:`prepare_uspto50k`).
    """
    if "train" not in records:
        raise InputError("records need a 'train' split: the template vocabulary comes from it")
    parsed: dict[str, tuple[list, BulkReport]] = {}
    for split, rows in records.items():
        t0 = time.perf_counter()
        parsed[split] = parse_template_records(rows, reextract=reextract)
        rep = parsed[split][1]
        if clean and split in CHECKED_SPLITS:
            examples = parsed[split][0]
            keep, _ = filter_reproducing(
                [(Reaction(product=e[1], reactants=tuple(e[2])), e[3]) for e in examples], rep)
            rep.n_ok -= len(examples) - len(keep)
            parsed[split] = ([examples[i] for i in keep], rep)
        n_dropped = int((extra_skips or {}).get(split, 0))
        if n_dropped:
            rep.n_total += n_dropped
            rep.skipped["malformed_row"] = rep.skipped.get("malformed_row", 0) + n_dropped
        log.info(
            "%s: %d/%d reactions parsed in %.1fs", split, rep.n_ok, rep.n_total,
            time.perf_counter() - t0,
        )
    vocab_list = build_vocabulary((e[3] for e in parsed["train"][0]), min_count, by_key=clean)
    vocab = _label_index(vocab_list, (e[3] for ex, _ in parsed.values() for e in ex), clean)
    splits = {
        split: build_split(split, ex, vocab, rep, radius=radius, n_bits=n_bits)
        for split, (ex, rep) in parsed.items()
    }
    params = {
        "min_count": int(min_count),
        "reextract": bool(reextract),
        "radius": int(radius),
        "n_bits": int(n_bits),
        **({"clean": True} if clean else {}),
    }
    data = TemplateData(templates=vocab_list, splits=splits, params=params)
    return data, _report(data)


def _report(data: TemplateData) -> dict[str, Any]:
    train_counts = Counter(data["train"].templates)
    out: dict[str, Any] = {
        "n_templates": data.n_templates,
        "n_distinct_train_templates": len(train_counts),
        "params": dict(data.params),
        "splits": {},
    }
    for name, split in data.splits.items():
        out["splits"][name] = {
            "n_rows": split.report.n_total,
            "n_reactions": len(split),
            "n_skipped": split.report.n_skipped,
            "skipped": dict(split.report.skipped),
            "coverage": round(split.coverage, 6),
            "n_out_of_vocabulary": int((split.labels < 0).sum()),
        }
    return out


# ----------------------------------------------------------------------------------------------
# USPTO-50k files and the cache
# ----------------------------------------------------------------------------------------------


def _open_text(path: Path) -> io.TextIOBase:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _n_data_rows(path: Path) -> int:
    with _open_text(path) as fh:
        return max(sum(1 for _ in fh) - 1, 0)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dataset_root(root: str | os.PathLike | None) -> Path:
    if root is not None:
        return Path(root)
    from selfsup.data.registry import fetch

    return fetch("uspto50k")


def _resolve_table(path: str | os.PathLike) -> Path:
    """``path`` as given when it exists (or is absolute), else under ``<data cache>/derived``
    (where the ORD split writes its tables by default)."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    alt = _default_cache_dir().parent / p
    return alt if alt.exists() else p


def _default_cache_dir() -> Path:
    from selfsup.data.registry import default_root

    return default_root() / "derived" / "uspto50k_templates"


def prepare_uspto50k(
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    min_count: int = 1,
    reextract: bool = False,
    radius: int = 2,
    n_bits: int = 2048,
    splits: Sequence[str] = SPLITS,
    use_cache: bool = True,
    clean: bool = False,
    extra_train: Sequence[str | os.PathLike] = (),
) -> tuple[TemplateData, dict[str, Any]]:
    """Template-classifier data of USPTO-50k, computed once and cached.

    ``root`` is the folder holding ``reaction_templates_50k_{split}.csv`` (as for
    :func:`selfsup.data.molecules.load_uspto50k`); ``None`` fetches the dataset into the data
    cache. ``cache_dir`` (default ``<data cache>/derived/uspto50k_templates``) receives
    ``<key>.json`` (strings, report) and ``<key>.npz`` (bit-packed fingerprints, labels), the
    key hashing the source files and the parameters; a cache whose key or format does not match
    is ignored and rewritten.

    Returns ``(data, report)``; the report holds per split the rows read, reactions kept,
    skips per reason (``malformed_row`` for rows the file reader dropped, ``malformed_reaction``,
    ``no_template``), the coverage of the split by the train vocabulary and the number of
    out-of-vocabulary reactions, plus ``n_templates``, ``params`` and ``cache``.

    ``clean`` drops (and counts) train/valid reactions whose template does not reproduce them
    and identifies templates by canonical key (module docstring); ``extra_train`` lists tables
    (:func:`write_reaction_table`) whose reactions are added to the train split after
    USPTO-50k's (their ids as written; unreadable rows counted as ``malformed_row``). Both are
    part of the cache key (a table by its content).
    """
    from selfsup.data.molecules import load_uspto50k

    if "train" not in splits:
        raise InputError("splits must include 'train': the template vocabulary comes from it")
    base = _dataset_root(root)
    files = {s: base / f"reaction_templates_50k_{s}.csv" for s in splits}
    params: dict[str, Any] = {
        "min_count": int(min_count),
        "reextract": bool(reextract),
        "radius": int(radius),
        "n_bits": int(n_bits),
    }
    if clean:  # only when set, so the key of the default preparation stays what it was
        params["clean"] = True
    extra_paths = [_resolve_table(p) for p in extra_train]
    for p in extra_paths:
        if not p.is_file():
            from selfsup.errors import DataNotFoundError

            raise DataNotFoundError(
                f"missing extra training table {p}; write it with "
                "`python -m selfsup.chem.retro.workflows.ord_split` (or pass an existing file)")
    if extra_paths:
        params["extra_train"] = [_file_digest(p) for p in extra_paths]
    digests = {}
    for s, p in files.items():
        if not p.is_file():
            from selfsup.errors import DataNotFoundError

            raise DataNotFoundError(
                f"missing {p}; run selfsup.data.fetch('uspto50k') or pass root= to the folder "
                "holding reaction_templates_50k_{train,valid,test}.csv"
            )
        digests[s] = _file_digest(p)
    key_src = json.dumps({"format": CACHE_FORMAT, "files": digests, "params": params},
                         sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
    cdir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    json_path, npz_path = cdir / f"uspto50k-{key}.json", cdir / f"uspto50k-{key}.npz"
    if use_cache:
        cached = _load_cache(json_path, npz_path, key)
        if cached is not None:
            data, report = cached
            report["cache"] = {"hit": True, "path": str(npz_path)}
            return data, report

    t0 = time.perf_counter()
    records: dict[str, list[dict]] = {}
    dropped: dict[str, int] = {}
    for s, p in files.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the rows it drops are counted below
            records[s] = load_uspto50k(base, s)
        dropped[s] = _n_data_rows(p) - len(records[s])
    for p in extra_paths:
        rows, n_bad = read_reaction_table(p)
        records["train"] = records["train"] + rows
        dropped["train"] += n_bad
    data, report = prepare_from_records(
        records, min_count=min_count, reextract=reextract, radius=radius, n_bits=n_bits,
        extra_skips=dropped, clean=clean,
    )
    data.params.update({k: v for k, v in params.items() if k == "extra_train"})
    if extra_paths:
        report["extra_train"] = {str(p): d for p, d in zip(extra_paths, params["extra_train"])}
    report["seconds"] = round(time.perf_counter() - t0, 2)
    if use_cache:
        _save_cache(json_path, npz_path, key, data, report)
    report["cache"] = {"hit": False, "path": str(npz_path) if use_cache else None}
    return data, report


TABLE_HEADER = ("id", "reaction", "template")


def write_reaction_table(path: str | os.PathLike, rows: Iterable[Mapping[str, str]]) -> Path:
    """Write ``[{"id", "reaction", "template"}]`` as a tab-separated table (atomically): the
    format of ``extra_train`` (``reaction`` an atom-mapped reaction SMILES, ``template`` its
    rdchiral retro template or empty)."""
    lines = ["\t".join(TABLE_HEADER)]
    for r in rows:
        cells = [str(r.get(c) or "") for c in TABLE_HEADER]
        if any("\t" in c or "\n" in c for c in cells):
            raise InputError(f"row {r.get('id')!r} has a tab or newline in a cell")
        lines.append("\t".join(cells))
    return atomic_write_text(Path(path), "\n".join(lines) + "\n")


def read_reaction_table(path: str | os.PathLike) -> tuple[list[dict[str, str]], int]:
    """Rows of a table written by :func:`write_reaction_table`, and the number of malformed
    lines skipped (wrong number of cells, no reaction)."""
    p = Path(path)
    out: list[dict[str, str]] = []
    bad = 0
    with _open_text(p) as fh:
        header = fh.readline().rstrip("\n").split("\t")
        if tuple(header) != TABLE_HEADER:
            raise InputError(f"{p}: header must be {'/'.join(TABLE_HEADER)} separated by tabs, "
                             f"got {header[:3]}")
        for line in fh:
            cells = line.rstrip("\n").split("\t")
            if len(cells) != len(TABLE_HEADER) or ">" not in cells[1]:
                bad += 1
                continue
            out.append(dict(zip(TABLE_HEADER, cells)))
    return out, bad



def _save_cache(
    json_path: Path, npz_path: Path, key: str, data: TemplateData, report: dict
) -> None:
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "templates": data.templates,
        "params": data.params,
        "report": {k: v for k, v in report.items() if k != "cache"},
        "splits": {
            name: {
                "ids": s.ids,
                "products": s.products,
                "reactants": [".".join(r) for r in s.reactants],
                "templates": s.templates,
                "bulk": s.report.as_dict(),
            }
            for name, s in data.splits.items()
        },
    }
    atomic_write_json(json_path, meta, indent=0)
    arrays: dict[str, np.ndarray] = {"key": np.array(key)}
    for name, s in data.splits.items():
        arrays[f"{name}_labels"] = s.labels
        arrays[f"{name}_product_fps"] = np.packbits(s.product_fps.astype(bool), axis=1)
        arrays[f"{name}_reactant_fps"] = np.packbits(s.reactant_fps.astype(bool), axis=1)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(npz_path, buf.getvalue())  # written last: its presence marks completion


def _load_cache(json_path: Path, npz_path: Path, key: str) -> tuple[TemplateData, dict] | None:
    if not (json_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
            return None
        n_bits = int(meta["params"]["n_bits"])
        with np.load(npz_path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            splits = {}
            for name, sm in meta["splits"].items():
                bulk = sm.get("bulk", {})
                rep = BulkReport(
                    n_total=int(bulk.get("n_total", 0)),
                    n_ok=int(bulk.get("n_ok", 0)),
                    skipped=dict(bulk.get("skipped", {})),
                    examples=[tuple(e) for e in bulk.get("examples", [])],
                )
                splits[name] = SplitData(
                    name=name,
                    ids=list(sm["ids"]),
                    products=list(sm["products"]),
                    reactants=[tuple(r.split(".")) for r in sm["reactants"]],
                    templates=list(sm["templates"]),
                    labels=z[f"{name}_labels"].astype(np.int64),
                    product_fps=np.unpackbits(z[f"{name}_product_fps"], axis=1)[:, :n_bits],
                    reactant_fps=np.unpackbits(z[f"{name}_reactant_fps"], axis=1)[:, :n_bits],
                    report=rep,
                )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        log.warning("ignoring unreadable template-data cache %s: %s", npz_path, err)
        return None
    data = TemplateData(templates=list(meta["templates"]), splits=splits,
                        params=dict(meta["params"]))
    return data, dict(meta["report"])
