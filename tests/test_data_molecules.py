"""Molecule and reaction readers on small files written by the test."""

from __future__ import annotations

import gzip

import pytest

from selfsup.data.molecules import load_moses, load_uspto50k, load_zinc250k
from selfsup.errors import DataNotFoundError, InputError


def test_zinc250k_lines(tmp_path):
    (tmp_path / "zinc250k.smiles").write_text("CCO\n\n  c1ccccc1  \nCC(=O)O\n")
    assert load_zinc250k(tmp_path) == ["CCO", "c1ccccc1", "CC(=O)O"]
    with pytest.raises(DataNotFoundError, match="fetch\\('zinc250k'\\)"):
        load_zinc250k(tmp_path / "empty")


def test_moses_csv_gz(tmp_path):
    with gzip.open(tmp_path / "train.csv.gz", "wt") as fh:
        fh.write("SMILES\nCCO\nCCN\n")
    (tmp_path / "test.csv").write_text("SMILES,SPLIT\nCCC,test\n")  # plain csv accepted
    assert load_moses(tmp_path, "train") == ["CCO", "CCN"]
    assert load_moses(tmp_path, "test") == ["CCC"]
    with pytest.raises(InputError, match="test_scaffolds"):
        load_moses(tmp_path, "valid")


HEADER = ["RxnSmilesClean", "PseudoHash", "RetroTemplate", "id", "split_id"]


def test_uspto50k_rows_and_malformed(tmp_path):
    rows = [
        HEADER,
        ["[CH3:1][OH:2].[Cl:3]>>[CH3:1][Cl:3]", "h", "[C:1]-[Cl]>>[C:1]-[OH]", "US1;;0", "0"],
        ["CCO>>CC=O", "h", "[C:1]=[O]>>[C:1]-[OH]", "US2;;1"],  # too few fields
        ["not a reaction", "h", "[C:1]>>[C:1]", "US3;;2", "2"],  # no arrow
        ["C>CO>CCl", "h", "[C:1]-[Cl]>>[C:1]", "US4;;3", "3"],  # agents allowed
        ["C>>CCl", "h", "", "US5;;4", "4"],  # empty template
    ]
    path = tmp_path / "reaction_templates_50k_valid.csv"
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    with pytest.warns(UserWarning, match="skipped 3 malformed row.*first at line 3"):
        out = load_uspto50k(tmp_path, "valid")
    assert [r["id"] for r in out] == ["US1;;0", "US4;;3"]
    assert out[0] == {"id": "US1;;0", "reaction": "[CH3:1][OH:2].[Cl:3]>>[CH3:1][Cl:3]",
                      "template": "[C:1]-[Cl]>>[C:1]-[OH]"}
    with pytest.raises(InputError, match="valid: train, valid, test"):
        load_uspto50k(tmp_path, "dev")


def test_uspto50k_bad_header(tmp_path):
    (tmp_path / "reaction_templates_50k_test.csv").write_text("a\tb\n1\t2\n")
    with pytest.raises(InputError, match="RxnSmilesClean"):
        load_uspto50k(tmp_path, "test")
