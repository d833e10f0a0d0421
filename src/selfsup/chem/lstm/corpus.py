"""The pretraining corpus of the SMILES LSTM: load, subset, canonicalise, split, vocabulary, encode.

:func:`load_corpus` reads the raw SMILES of a data set (ZINC250k, the MOSES train split, or a file
of SMILES); :func:`prepare_corpus` turns them into the canonical, deduplicated train/validation
splits, the vocabulary of the training split and their padded encodings (:class:`Corpus`);
:func:`batch_tokens` cuts a batch out of an encoded corpus. :class:`DataConfig` is the ``data``
section of :class:`~selfsup.chem.lstm.training.PretrainConfig`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from selfsup.chem.lstm.model import EncodedSmiles, encode_smiles
from selfsup.chem.molecules import Vocabulary, canonicalize_many
from selfsup.errors import ConfigError, InputError
from selfsup.io import read_text_maybe_gzip

__all__ = ["Corpus", "DataConfig", "batch_tokens", "load_corpus", "prepare_corpus"]


@dataclass(frozen=True)
class DataConfig:
    # zinc250k | moses | a file: one SMILES per line (first field), or a .csv with a SMILES column
    dataset: str = "zinc250k"
    root: str | None = None  # dataset cache (default $SELFSUP_DATA or ~/.cache/selfsup/data)
    max_train_molecules: int | None = None  # seeded random subset of the corpus (CPU recipes)
    val_size: int = 2000  # held-out molecules for the validation loss (at most a fifth)
    max_len: int = 100  # most tokens per SMILES, <eos> included; longer ones are skipped
    keep_stereo: bool = True  # canonical SMILES keep stereo marks (ZINC250k has them)


def _read_smiles_file(path: Path) -> list[str]:
    text = read_text_maybe_gzip(path, "SMILES corpus", "Pass a SMILES file (one per line, or "
                                "a .csv with a SMILES column), optionally gzipped.")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None) or []
        cols = [c.strip().lower() for c in header]
        if "smiles" not in cols:
            raise InputError(f"{path}: a .csv corpus needs a SMILES column; header is {header}")
        col = cols.index("smiles")
        return [r[col].strip() for r in reader if len(r) > col and r[col].strip()]
    out = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].lower() != "smiles":
            out.append(parts[0])
    return out


def load_corpus(data: DataConfig) -> list[str]:
    """Raw SMILES of ``data.dataset`` (zinc250k, moses train split, or a file), in file order."""
    if data.dataset == "zinc250k":
        from selfsup.data import fetch, load_zinc250k

        return load_zinc250k(fetch("zinc250k", root=data.root))
    if data.dataset == "moses":
        from selfsup.data import fetch, load_moses

        return load_moses(fetch("moses", root=data.root), split="train")
    path = Path(data.dataset).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"data.dataset={data.dataset!r} is neither zinc250k, moses nor an existing file of "
            "SMILES (one per line, or a .csv with a SMILES column)"
        )
    return _read_smiles_file(path)


@dataclass
class Corpus:
    """The prepared corpus: canonical train/val SMILES, vocabulary, encodings and counts."""

    train_smiles: list[str]
    val_smiles: list[str]
    vocab: Vocabulary
    train: EncodedSmiles
    val: EncodedSmiles
    stats: dict[str, int]


def prepare_corpus(data: DataConfig, seed: int) -> Corpus:
    """Load, subset (seeded), canonicalise (invalid skipped), deduplicate, split, encode.

    The vocabulary is built from the training split; validation SMILES with tokens outside it
    are skipped and counted. Everything is a function of ``data``, ``seed`` and the corpus file.
    """
    raw = load_corpus(data)
    n_raw = len(raw)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_raw, generator=g).tolist()
    if data.max_train_molecules is not None:
        order = order[: data.max_train_molecules]
    picked = [raw[i] for i in order]
    canon, n_invalid = canonicalize_many(picked, keep_stereo=data.keep_stereo)
    unique = list(dict.fromkeys(canon))
    if len(unique) < 2:
        raise InputError(
            f"the corpus {data.dataset!r} holds {len(unique)} valid distinct SMILES "
            f"({n_invalid} invalid of {len(picked)} read); give it at least a few hundred"
        )
    n_val = min(data.val_size, len(unique) // 5)
    val_smiles, train_smiles = unique[:n_val], unique[n_val:]
    vocab, n_untok = Vocabulary.build_with_stats(train_smiles)
    small = torch.int16 if len(vocab) < 2**15 else torch.int32
    train = encode_smiles(train_smiles, vocab, max_len=data.max_len, dtype=small)
    val = encode_smiles(val_smiles, vocab, max_len=data.max_len, dtype=small)
    if len(train) == 0:
        raise InputError(f"no training SMILES of {data.dataset!r} could be encoded")
    stats = {
        "n_read": n_raw,
        "n_used": len(picked),
        "n_invalid": n_invalid,
        "n_duplicates": len(canon) - len(unique),
        "n_train": len(train),
        "n_val": len(val),
        "n_train_skipped": train.n_skipped,
        "n_val_skipped": val.n_skipped,
        "n_too_long": train.skipped.get("too_long", 0) + val.skipped.get("too_long", 0),
        "vocab_size": len(vocab),
    }
    return Corpus(
        train_smiles=[train_smiles[i] for i in train.index],
        val_smiles=[val_smiles[i] for i in val.index],
        vocab=vocab, train=train, val=val, stats=stats,
    )


def batch_tokens(enc: EncodedSmiles, idx: torch.Tensor, device: torch.device | str
                 ) -> torch.Tensor:
    """Rows ``idx`` of an encoded corpus, trimmed to their longest row: (b, T) long."""
    width = int(enc.lengths[idx].max())
    return enc.tokens[idx, :width].long().to(device, non_blocking=True)
