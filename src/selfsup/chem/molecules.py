"""Molecules as SMILES: parsing, canonicalisation, tokenisation and a token vocabulary.

Core chemistry type: imports RDKit, never torch.

* :func:`canonical_smiles` / :func:`canonicalize_many` turn user SMILES into RDKit canonical
  SMILES; bulk input is skipped and counted when invalid, never raised.
* :func:`mol_from_smiles_strict` is for single user inputs and raises
  :class:`selfsup.errors.InputError`.
* :func:`tokenize` splits a SMILES into the units a SMILES language model (GEGL's apprentice,
  Ahn et al., NeurIPS 2020) reads: bracket atoms (``[nH]``, ``[C@@H]``, ``[N+]``), two-letter
  organic-subset atoms (``Cl``, ``Br``), two-digit ring closures (``%10``) and single characters.
* :class:`Vocabulary` maps tokens to integer ids with ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from rdkit import Chem, rdBase

from selfsup.errors import InputError

__all__ = [
    "SMILES_TOKEN_PATTERN",
    "Vocabulary",
    "canonical_smiles",
    "canonicalize_many",
    "is_valid",
    "mol_from_smiles",
    "mol_from_smiles_strict",
    "quiet_rdkit",
    "tokenize",
]


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's parse/sanitisation warnings inside the block (bulk input).

    Uses ``rdBase.BlockLogs``, which restores the caller's previous log settings afterwards.
    """
    block = rdBase.BlockLogs()
    try:
        yield
    finally:
        del block


def mol_from_smiles(smiles: Any) -> Chem.Mol | None:
    """Parse and sanitise ``smiles``; ``None`` for anything invalid, empty or not a string.

    RDKit's warnings are silenced: callers count the failures themselves.
    """
    if not isinstance(smiles, str):
        return None
    text = smiles.strip()
    if not text:
        return None
    with quiet_rdkit():
        try:
            mol = Chem.MolFromSmiles(text)
        except Exception:  # RDKit raises on a few pathological inputs
            return None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


@functools.lru_cache(maxsize=500_000)
def _canonical(smiles: str, keep_stereo: bool, remove_atom_map: bool) -> str | None:
    mol = mol_from_smiles(smiles)
    if mol is None:
        return None
    if remove_atom_map:
        for atom in mol.GetAtoms():
            atom.SetAtomMapNum(0)
    if not keep_stereo:
        Chem.RemoveStereochemistry(mol)
    try:
        out = Chem.MolToSmiles(mol)
    except Exception:
        return None
    return out or None


def canonical_smiles(
    smiles: Any,
    keep_stereo: bool = True,
    *,
    remove_atom_map: bool = False,
    strict: bool = False,
) -> str | None:
    """RDKit canonical SMILES of ``smiles``: the project's one canonical form.

    ``keep_stereo=False`` removes tetrahedral and double-bond stereo before writing (isotopes
    and charges are kept); ``remove_atom_map=True`` clears atom-map numbers (reaction SMILES
    from USPTO or ORD carry them; retrosynthesis compares molecules without them). An invalid,
    empty or non-string input gives ``None``, or with ``strict=True`` an
    :class:`~selfsup.errors.InputError` naming it (single user inputs, reaction parsing).
    Memoised (bounded LRU; ``canonical_smiles.cache_clear()`` empties it): a search or a
    scoring loop canonicalises the same molecules over and over.
    """
    if not isinstance(smiles, str) or not smiles.strip():
        if strict:
            raise InputError(f"empty or non-string SMILES {smiles!r}: pass a SMILES string")
        return None
    out = _canonical(smiles, bool(keep_stereo), bool(remove_atom_map))
    if out is None and strict:
        raise InputError(f"RDKit cannot parse SMILES {smiles!r}: check the SMILES syntax")
    return out


canonical_smiles.cache_clear = _canonical.cache_clear  # type: ignore[attr-defined]


def is_valid(smiles: Any) -> bool:
    """True when ``smiles`` parses and sanitises with RDKit."""
    return mol_from_smiles(smiles) is not None


def canonicalize_many(
    smiles_list: Iterable[Any], keep_stereo: bool = True
) -> tuple[list[str], int]:
    """Canonicalise a list; returns ``(valid canonical SMILES in input order, n_invalid)``.

    Invalid items are skipped and counted; duplicates are kept (deduplicate with ``dict.fromkeys``
    if needed). Never raises on bad items.
    """
    out: list[str] = []
    n_invalid = 0
    for s in smiles_list:
        can = canonical_smiles(s, keep_stereo=keep_stereo)
        if can is None:
            n_invalid += 1
        else:
            out.append(can)
    return out, n_invalid


def mol_from_smiles_strict(smiles: Any) -> Chem.Mol:
    """Parse one user-given SMILES; raise :class:`InputError` naming it and the fix if invalid."""
    if not isinstance(smiles, str):
        raise InputError(
            f"expected a SMILES string, got {type(smiles).__name__} {smiles!r}; "
            "pass the molecule as a SMILES string such as 'CCO'"
        )
    mol = mol_from_smiles(smiles)
    if mol is None:
        raise InputError(
            f"invalid SMILES {smiles!r}: RDKit could not parse or sanitise it; check brackets, "
            "ring-closure digits, valences and aromatic lower-case atoms (e.g. 'c1ccccc1')"
        )
    return mol


# --------------------------------------------------------------------------------- tokeniser
#: One SMILES token: a bracket atom, a two-letter organic-subset halogen, a two-digit ring
#: closure ``%nn``, a one-letter organic-subset atom (aliphatic or aromatic), a ring-closure
#: digit, or a bond / branch / dot / wildcard symbol.
SMILES_TOKEN_PATTERN = re.compile(
    r"\[[^\[\]]+\]"  # bracket atom: [nH] [C@@H] [N+] [13CH3] [Na+]
    r"|Br|Cl"  # two-letter organic-subset atoms before their one-letter prefixes
    r"|%\d{2}"  # ring closures 10..99
    r"|[BCNOPSFIbcnops]"  # organic-subset atoms
    r"|\d"  # ring closures 0..9
    r"|[()=#\-+\\/.:~@?*$>]"  # bonds, branches, dot, wildcard, reaction arrow pieces
)


def tokenize(smiles: str) -> list[str]:
    """Split ``smiles`` into tokens; ``"".join(tokenize(s)) == s`` always holds.

    Raises :class:`InputError` naming the characters that no token pattern covers.
    """
    if not isinstance(smiles, str):
        raise InputError(f"expected a SMILES string to tokenize, got {type(smiles).__name__}")
    tokens: list[str] = []
    pos = 0
    for m in SMILES_TOKEN_PATTERN.finditer(smiles):
        if m.start() != pos:
            break
        tokens.append(m.group())
        pos = m.end()
    if pos != len(smiles):
        raise InputError(
            f"cannot tokenize SMILES {smiles!r}: unexpected text {smiles[pos:pos + 10]!r} at "
            f"position {pos}; atoms outside B C N O P S F Cl Br I must be written in brackets, "
            "e.g. '[Si]' or '[se]'"
        )
    return tokens


class Vocabulary:
    """Token <-> id map for SMILES language models, with special tokens at ids 0..3.

    ``encode`` wraps a SMILES as ``<bos> tokens <eos>``; ``decode`` stops at the first ``<eos>``
    and drops ``<bos>``/``<pad>``. ``to_dict``/``from_dict`` are JSON-safe so the vocabulary can
    be saved next to a model checkpoint.
    """

    PAD = "<pad>"
    BOS = "<bos>"
    EOS = "<eos>"
    UNK = "<unk>"
    SPECIALS: tuple[str, ...] = (PAD, BOS, EOS, UNK)
    FORMAT_VERSION = 1

    def __init__(self, tokens: Iterable[str] = ()) -> None:
        self._itos: list[str] = list(self.SPECIALS)
        self._stoi: dict[str, int] = {t: i for i, t in enumerate(self._itos)}
        for t in tokens:
            self.add(t)

    # -- construction
    def add(self, token: str) -> int:
        """Add ``token`` if new; return its id."""
        if not isinstance(token, str) or not token:
            raise InputError(f"vocabulary tokens must be non-empty strings, got {token!r}")
        idx = self._stoi.get(token)
        if idx is None:
            idx = len(self._itos)
            self._itos.append(token)
            self._stoi[token] = idx
        return idx

    @classmethod
    def build(
        cls, corpus: Iterable[str], min_freq: int = 1
    ) -> Vocabulary:
        """Vocabulary of every token seen at least ``min_freq`` times in ``corpus``.

        Untokenizable SMILES are skipped (count them with :meth:`build_with_stats`). Token order
        is deterministic: by decreasing frequency, ties broken alphabetically.
        """
        return cls.build_with_stats(corpus, min_freq=min_freq)[0]

    @classmethod
    def build_with_stats(
        cls, corpus: Iterable[str], min_freq: int = 1
    ) -> tuple[Vocabulary, int]:
        """Like :meth:`build`; also returns the number of skipped (untokenizable) SMILES."""
        counts: Counter[str] = Counter()
        n_skipped = 0
        for s in corpus:
            try:
                counts.update(tokenize(s))
            except InputError:
                n_skipped += 1
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        vocab = cls(t for t, c in ordered if c >= min_freq and t not in cls.SPECIALS)
        return vocab, n_skipped

    # -- lookups
    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._itos == other._itos

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    @property
    def tokens(self) -> list[str]:
        """All tokens, index = id."""
        return list(self._itos)

    @property
    def pad_id(self) -> int:
        return self._stoi[self.PAD]

    @property
    def bos_id(self) -> int:
        return self._stoi[self.BOS]

    @property
    def eos_id(self) -> int:
        return self._stoi[self.EOS]

    @property
    def unk_id(self) -> int:
        return self._stoi[self.UNK]

    def token_to_id(self, token: str) -> int:
        return self._stoi.get(token, self.unk_id)

    def id_to_token(self, idx: int) -> str:
        if not 0 <= int(idx) < len(self._itos):
            raise InputError(f"token id {idx} is outside the vocabulary (size {len(self)})")
        return self._itos[int(idx)]

    # -- encode / decode
    def encode(self, smiles: str, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        """Ids of ``<bos> tokenize(smiles) <eos>``; unknown tokens map to ``<unk>``."""
        ids = [self.token_to_id(t) for t in tokenize(smiles)]
        if add_bos:
            ids.insert(0, self.bos_id)
        if add_eos:
            ids.append(self.eos_id)
        return ids

    def decode(self, ids: Sequence[int] | Iterable[int]) -> str:
        """SMILES from ids: stops at the first ``<eos>``, drops ``<bos>`` and ``<pad>``.

        ``<unk>`` is written as the literal ``<unk>`` so that it makes the SMILES invalid.
        """
        out: list[str] = []
        for idx in ids:
            i = int(idx)
            if i == self.eos_id:
                break
            if i in (self.bos_id, self.pad_id):
                continue
            out.append(self.id_to_token(i))
        return "".join(out)

    # -- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe description: ``{"format": ..., "version": 1, "tokens": [...]}``."""
        return {
            "format": "selfsup.smiles_vocabulary",
            "version": self.FORMAT_VERSION,
            "tokens": list(self._itos),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Vocabulary:
        """Inverse of :meth:`to_dict`; raises :class:`InputError` on a malformed dict."""
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise InputError(
                "vocabulary data must be a dict with a 'tokens' list, as written by "
                f"Vocabulary.to_dict(); got {type(data).__name__}"
            )
        tokens = data["tokens"]
        if tuple(tokens[: len(cls.SPECIALS)]) != cls.SPECIALS:
            raise InputError(
                f"vocabulary tokens must start with the special tokens {list(cls.SPECIALS)}; "
                f"got {tokens[: len(cls.SPECIALS)]}: save it with Vocabulary.to_dict()"
            )
        if len(set(tokens)) != len(tokens):
            raise InputError("vocabulary tokens contain duplicates; rebuild the vocabulary")
        return cls(tokens[len(cls.SPECIALS):])
