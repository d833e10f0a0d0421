"""Molecules: canonicalisation, strict parsing, tokenizer round trip, vocabulary."""

from __future__ import annotations

import json

import pytest

from selfsup.chem.molecules import (
    Vocabulary,
    canonical_smiles,
    canonicalize_many,
    is_valid,
    mol_from_smiles_strict,
    tokenize,
)
from selfsup.errors import InputError


def test_canonical_smiles_and_validity():
    assert canonical_smiles("OCC") == canonical_smiles("CCO") == "CCO"
    assert canonical_smiles("C1=CC=CC=C1") == "c1ccccc1"
    assert canonical_smiles("C[C@H](N)O") == "C[C@H](N)O"
    assert canonical_smiles("C[C@H](N)O", keep_stereo=False) == "CC(N)O"
    assert canonical_smiles("[13CH4]", keep_stereo=False) == "[13CH4]"  # isotopes kept
    for bad in ("", "   ", "C1CC(", "c1cccc1", "C(C)(C)(C)(C)C", None, 3):
        assert canonical_smiles(bad) is None
        assert not is_valid(bad)
    assert is_valid("[nH]1cccc1")


def test_canonicalize_many_counts_and_skips():
    good, n_bad = canonicalize_many(["OCC", "xyz", "", "c1ccccc1", None, "CCO"])
    assert good == ["CCO", "c1ccccc1", "CCO"]
    assert n_bad == 3


def test_strict_parse_names_the_smiles():
    assert mol_from_smiles_strict("CCO").GetNumAtoms() == 3
    with pytest.raises(InputError, match="C1CC\\("):
        mol_from_smiles_strict("C1CC(")
    with pytest.raises(InputError, match="SMILES string"):
        mol_from_smiles_strict(42)


@pytest.mark.parametrize(
    ("smiles", "tokens"),
    [
        ("CCl", ["C", "Cl"]),
        ("BrC(Br)=O", ["Br", "C", "(", "Br", ")", "=", "O"]),
        ("c1cc[nH]c1", ["c", "1", "c", "c", "[nH]", "c", "1"]),
        ("C[C@@H](N)C(=O)[O-]", ["C", "[C@@H]", "(", "N", ")", "C", "(", "=", "O", ")", "[O-]"]),
        ("C[N+](C)(C)C", ["C", "[N+]", "(", "C", ")", "(", "C", ")", "C"]),
        ("C%10CC%10", ["C", "%10", "C", "C", "%10"]),
        ("F/C=C\\F", ["F", "/", "C", "=", "C", "\\", "F"]),
        ("[Na+].[Cl-]", ["[Na+]", ".", "[Cl-]"]),
        ("C#N", ["C", "#", "N"]),
        ("Sc1ccsc1", ["S", "c", "1", "c", "c", "s", "c", "1"]),
    ],
)
def test_tokenize_keeps_multichar_tokens(smiles, tokens):
    assert tokenize(smiles) == tokens
    assert "".join(tokenize(smiles)) == smiles


def test_tokenize_rejects_unknown_text():
    with pytest.raises(InputError, match="position 1"):
        tokenize("CXC")
    with pytest.raises(InputError):
        tokenize("C[Si")


def test_vocabulary_roundtrip_and_json():
    corpus = ["CCl", "c1cc[nH]c1", "C%10CC%10", "C[C@@H](N)C(=O)[O-]", "bad X", "CCO"]
    vocab, n_skipped = Vocabulary.build_with_stats(corpus)
    assert n_skipped == 1
    assert vocab.tokens[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, 3)
    assert vocab.tokens[4] == "C"  # most frequent token first
    for s in corpus[:4] + ["CCO"]:
        ids = vocab.encode(s)
        assert ids[0] == vocab.bos_id and ids[-1] == vocab.eos_id
        assert len(ids) == len(tokenize(s)) + 2
        assert vocab.decode(ids) == s
    # decode stops at eos and drops padding
    assert vocab.decode(vocab.encode("CCl") + [vocab.pad_id, vocab.token_to_id("C")]) == "CCl"
    assert vocab.encode("CBr", add_bos=False, add_eos=False) == [vocab.token_to_id("C"),
                                                                   vocab.unk_id]
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert restored == vocab and len(restored) == len(vocab)
    assert Vocabulary.build(corpus, min_freq=100).tokens == list(Vocabulary.SPECIALS)
    with pytest.raises(InputError):
        Vocabulary.from_dict({"tokens": ["C", "<pad>"]})
    with pytest.raises(InputError):
        Vocabulary.from_dict([1, 2])
    with pytest.raises(InputError):
        vocab.id_to_token(999)


def test_bulk_parsing_is_quiet(capfd):
    canonicalize_many(["C1CC(", "c1cccc1"])
    err = capfd.readouterr().err
    assert "SMILES Parse Error" not in err and "Can't kekulize" not in err
