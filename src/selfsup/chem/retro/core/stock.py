"""Building-block stock (inventory) keyed by InChIKey.

Retro* (Chen et al., ICML 2020) treats a molecule as solved at cost 0 when it is a purchasable
building block (eMolecules in the paper). eMolecules is not reachable here, so
:func:`stock_from_reactions` builds the honest stand-in described in ``shared/DATA.md``: the
reactants of a reaction set (USPTO-50k) that never occur as a product. Every result should carry
``stock.describe()`` so that it says which stock it used.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rdkit import Chem, rdBase

from selfsup.errors import DataNotFoundError, InputError

from .reactions import Reaction

__all__ = ["BloomStock", "Stock", "inchikey", "kekule_canonical", "stock_from_reactions"]


@functools.lru_cache(maxsize=500_000)
def inchikey(smiles: str) -> str | None:
    """Standard InChIKey of ``smiles`` (RDKit), or ``None`` when it cannot be computed.

    Memoised (bounded LRU): stock look-ups during a search repeat the same molecules.
    """
    mol = _parse(smiles)
    if mol is None:
        return None
    with rdBase.BlockLogs():
        key = Chem.MolToInchiKey(mol)
    return key or None


def _parse(smiles: object):
    """RDKit molecule of a non-empty SMILES string with at least one atom, else ``None``
    (RDKit's messages silenced: a stock look-up answers no, it does not warn)."""
    if not isinstance(smiles, str) or not smiles.strip():
        return None
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles.strip())
    return None if mol is None or mol.GetNumAtoms() == 0 else mol


class Stock:
    """A set of building blocks, compared by InChIKey so any valid SMILES spelling matches.

    ``name`` and ``source`` say where the stock came from; ``n_skipped`` counts input lines that
    could not be parsed. ``smiles in stock`` is ``False`` for an unparsable SMILES.
    """

    def __init__(
        self,
        inchikeys: Iterable[str] = (),
        *,
        name: str = "stock",
        source: str = "in-memory",
        n_skipped: int = 0,
    ) -> None:
        self._keys: set[str] = set(inchikeys)
        self.name = name
        self.source = source
        self.n_skipped = n_skipped
        self._lookup: dict[str, bool] = {}

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_smiles(
        cls, smiles: Iterable[str], *, name: str = "stock", source: str = "smiles list"
    ) -> Stock:
        """Stock of the given SMILES; unparsable ones are skipped and counted."""
        keys: set[str] = set()
        skipped = 0
        for s in smiles:
            key = inchikey(s)
            if key is None:
                skipped += 1
            else:
                keys.add(key)
        return cls(keys, name=name, source=source, n_skipped=skipped)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike,
        *,
        name: str | None = None,
        smiles_column: str = "smiles",
    ) -> Stock:
        """Read a stock file: one SMILES per line (extra columns after whitespace ignored) or a
        CSV/TSV whose header has a ``smiles`` column (case-insensitive). ``.gz`` is read
        transparently; blank lines and ``#`` comments are ignored; bad lines are counted in
        ``n_skipped``.
        """
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"stock file {str(path)!r} does not exist: check the path")
        text = _read_stock_text(path)
        stock = cls.from_smiles(
            _smiles_from_text(text, smiles_column),
            name=name or path.name.split(".")[0],
            source=str(path),
        )
        return stock

    # -- queries -----------------------------------------------------------------------------
    def __contains__(self, smiles: object) -> bool:
        if not isinstance(smiles, str):
            return False
        hit = self._lookup.get(smiles)
        if hit is None:
            key = inchikey(smiles)
            hit = key is not None and key in self._keys
            if len(self._lookup) > 1_000_000:
                self._lookup.clear()
            self._lookup[smiles] = hit
        return hit

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._keys))

    def contains_inchikey(self, key: str) -> bool:
        return key in self._keys

    def add(self, smiles: str) -> bool:
        """Add one molecule; returns ``False`` (and counts a skip) when it cannot be parsed."""
        key = inchikey(smiles)
        if key is None:
            self.n_skipped += 1
            return False
        self._keys.add(key)
        self._lookup.pop(smiles, None)
        return True

    def describe(self) -> dict:
        """``{'name', 'size', 'source', 'skipped'}``: what every result says about its stock."""
        return {
            "name": self.name,
            "size": len(self),
            "source": self.source,
            "skipped": self.n_skipped,
        }

    def __repr__(self) -> str:
        return f"Stock(name={self.name!r}, size={len(self)}, source={self.source!r})"


def _read_stock_text(path: Path) -> str:
    """The UTF-8 text of a stock file (gunzipped for ``.gz``); a damaged, compressed-in-name-only,
    unreadable or non-UTF-8 file raises :class:`InputError` naming it."""
    gz = path.suffix == ".gz"
    try:
        if gz:
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InputError(
            f"stock file {str(path)!r} is named .gz but is not a complete gzip file ({exc}); "
            "gzip it again (gzip -k FILE) or drop the .gz from its name if it is plain text"
        ) from None
    except OSError as exc:
        raise InputError(f"stock file {str(path)!r} cannot be read ({exc.strerror or exc}); "
                         "check its permissions") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"stock file {str(path)!r} is not UTF-8 text{' once gunzipped' if gz else ''} "
            f"(byte {exc.start}: {exc.reason}); pass a text file of SMILES, one per line, "
            "or a CSV/TSV with a 'smiles' column"
        ) from None


def _smiles_from_text(text: str, smiles_column: str) -> Iterator[str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        return
    header = lines[0]
    delim = "\t" if "\t" in header else ("," if "," in header else None)
    if delim is not None:
        columns = [c.strip().lower() for c in next(csv.reader([header], delimiter=delim))]
        if smiles_column.lower() in columns:
            col = columns.index(smiles_column.lower())
            for row in csv.reader(io.StringIO("\n".join(lines[1:])), delimiter=delim):
                yield row[col].strip() if col < len(row) else ""
            return
        if delim == ",":
            raise InputError(
                f"CSV stock file has no {smiles_column!r} column (columns: {columns}): "
                "name the SMILES column 'smiles' or pass smiles_column="
            )
    for i, line in enumerate(lines):
        token = line.split()[0]
        if i == 0 and token.lower() == smiles_column.lower():
            continue  # a one-column file with a header
        yield token


def stock_from_reactions(
    reactions: Iterable[Reaction], *, name: str = "reaction-leaves", source: str = "reactions"
) -> Stock:
    """Stock of the reactants that never occur as a product of any of ``reactions``.

    This is the USPTO-derived stand-in for a building-block catalogue (``shared/DATA.md``).
    """
    reactions = list(reactions)
    products: set[str] = set()
    for rxn in reactions:
        key = inchikey(rxn.product)
        if key is not None:
            products.add(key)
    leaves: set[str] = set()
    skipped = 0
    for rxn in reactions:
        for smi in rxn.reactants:
            key = inchikey(smi)
            if key is None:
                skipped += 1
            elif key not in products:
                leaves.add(key)
    return Stock(
        leaves,
        name=name,
        source=f"{source}: reactants never produced ({len(reactions)} reactions)",
        n_skipped=skipped,
    )


# ----------------------------------------------------------------------------------------------
# A purchasable-molecule Bloom filter as a stock (molbloom)
# ----------------------------------------------------------------------------------------------

MOLBLOOM_SHIPPED = "zinc-instock-mini"  # the one filter inside the molbloom wheel


@functools.lru_cache(maxsize=500_000)
def kekule_canonical(smiles: str) -> str | None:
    """RDKit canonical isomeric SMILES in Kekulé form (the strings molbloom's filters hold, as
    ``molbloom.canon`` writes them), or ``None`` when RDKit cannot parse ``smiles``."""
    mol = _parse(smiles)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol, canonical=True, isomericSmiles=True, kekuleSmiles=True)


class BloomStock:
    """A stock that is a Bloom filter of purchasable molecules (molbloom; White et al.).

    ``smiles in stock`` canonicalises ``smiles`` (``canonicalize``, by default
    :func:`kekule_canonical`), answers ``True`` for a molecule of ``common`` (molbloom's list of
    common reagents and solvents) and otherwise asks ``bloom`` (anything with ``__contains__``
    on strings). A Bloom filter has false positives and no false negatives for the strings it
    was built from: a "yes" is "probably purchasable", at ``false_positive_rate``; a molecule
    whose canonical SMILES differs from the one the filter was built with (another RDKit version)
    is missed. There is no ``__len__`` or iteration: ``describe()['size']`` is the number of
    molecules the filter was built from, as its maker states.

    Picklable: a filter loaded from a file (``path``) is dropped when pickled and loaded again
    on first use, so worker processes each load it once.
    """

    def __init__(
        self,
        bloom: Any = None,
        *,
        name: str = "bloom",
        source: str = "in-memory filter",
        false_positive_rate: float | None = None,
        n_molecules: int | None = None,
        common: Iterable[str] = (),
        canonicalize: Callable[[str], str | None] = kekule_canonical,
        path: str | None = None,
    ) -> None:
        if bloom is None and path is None:
            raise InputError("BloomStock needs a filter object or the path of a molbloom filter")
        self._bloom = bloom
        self._path = path
        self.name = name
        self.source = source
        self.false_positive_rate = false_positive_rate
        self.n_molecules = n_molecules
        self.common = frozenset(common)
        self.canonicalize = canonicalize
        self._lookup: dict[str, bool] = {}

    @classmethod
    def from_molbloom(cls, catalog: str = MOLBLOOM_SHIPPED, *, check_common: bool = True
                      ) -> BloomStock:
        """The molbloom filter ``catalog`` (needs the ``molbloom`` package: ``pip install
        'selfsup[retro]'``). Only ``zinc-instock-mini`` (ZINC20 in stock, FPR 0.07 by molbloom's
        own description) ships in the wheel; the others must already be in molbloom's cache
        folder (``~/.cache/molbloom/<catalog>.bloom``), since their download is not reachable
        here. ``check_common`` also accepts molbloom's list of common reagents, as its
        ``buy()`` does by default."""
        try:
            import molbloom
        except ImportError:
            raise InputError(
                f"stock molbloom:{catalog} needs the molbloom package: "
                "pip install 'selfsup[retro]' (or pip install molbloom)") from None
        described = molbloom.catalogs()
        if catalog not in described:
            raise InputError(f"unknown molbloom catalog {catalog!r}; known: "
                             f"{', '.join(sorted(described))} (e.g. molbloom:{MOLBLOOM_SHIPPED})")
        from importlib import resources

        shipped = Path(str(resources.files("molbloom.data").joinpath(f"{catalog}.bloom")))
        cached = Path.home() / ".cache" / "molbloom" / f"{catalog}.bloom"
        path = shipped if shipped.is_file() else cached
        if not path.is_file():
            raise InputError(
                f"molbloom catalog {catalog!r} is not in the molbloom wheel and not at {cached}: "
                f"it must be downloaded first (molbloom.buy(..., catalog={catalog!r}) does it "
                f"where the internet is reachable), or use molbloom:{MOLBLOOM_SHIPPED}")
        text = described[catalog]
        fpr = re.search(r"FPR of ([0-9.eE+-]+)", text)
        count = re.search(r"\(([0-9,]+) mols\)", text)
        common: Iterable[str] = ()
        if check_common:
            common = getattr(getattr(molbloom, "common", None), "_common", ())
        version = getattr(molbloom, "__version__", "?")
        return cls(
            name=f"molbloom:{catalog}",
            source=f"molbloom {version} {catalog}: {text}",
            false_positive_rate=float(fpr.group(1).rstrip(".")) if fpr else None,
            n_molecules=int(count.group(1).replace(",", "")) if count else None,
            common=common,
            path=str(path),
        )

    def _filter(self) -> Any:
        if self._bloom is None:
            from molbloom import BloomFilter

            self._bloom = BloomFilter(str(self._path))
        return self._bloom

    def __contains__(self, smiles: object) -> bool:
        if not isinstance(smiles, str):
            return False
        hit = self._lookup.get(smiles)
        if hit is None:
            canon = self.canonicalize(smiles)
            hit = canon is not None and (canon in self.common or canon in self._filter())
            if len(self._lookup) > 1_000_000:
                self._lookup.clear()
            self._lookup[smiles] = hit
        return hit

    def describe(self) -> dict:
        """``{'name', 'size', 'source', 'skipped', 'kind', 'false_positive_rate',
        'common_reagents'}``; ``size`` is the number of molecules the filter was built from."""
        return {
            "name": self.name,
            "size": self.n_molecules,
            "source": self.source,
            "skipped": 0,
            "kind": "bloom_filter",
            "false_positive_rate": self.false_positive_rate,
            "common_reagents": len(self.common),
        }

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if state.get("_path") is not None:
            state["_bloom"] = None  # a C object: loaded again from the file where it is used
        state["_lookup"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"BloomStock(name={self.name!r}, false_positive_rate={self.false_positive_rate},"
                f" source={self.source!r})")
