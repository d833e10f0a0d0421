"""Stock keyed by InChIKey, file loading and the reaction-derived default stock."""

from __future__ import annotations

import gzip

import pytest

from selfsup.chem.retro.core.reactions import Reaction
from selfsup.chem.retro.core.stock import Stock, inchikey, stock_from_reactions
from selfsup.errors import DataNotFoundError, InputError


def test_lookup_by_inchikey_any_spelling():
    stock = Stock.from_smiles(["OCC", "c1ccccc1C(=O)O", "not-a-smiles"], name="mini")
    assert "CCO" in stock and "[CH3][CH2][OH]" in stock and "C(C)O" in stock
    assert "OC(=O)c1ccccc1" in stock
    assert "CCN" not in stock and "garbage((" not in stock and None not in stock
    assert len(stock) == 2
    assert stock.describe() == {"name": "mini", "size": 2, "source": "smiles list", "skipped": 1}
    assert inchikey("OCC") == inchikey("CCO") == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"


def test_from_file_plain_and_csv(tmp_path):
    plain = tmp_path / "blocks.smi"
    plain.write_text("# building blocks\nCCO ethanol\n\nc1ccccc1\nC1CC\n")
    stock = Stock.from_file(plain)
    assert len(stock) == 2 and stock.n_skipped == 1 and "OCC" in stock
    assert stock.describe()["name"] == "blocks" and stock.describe()["source"] == str(plain)

    csv_path = tmp_path / "blocks.csv.gz"
    with gzip.open(csv_path, "wt") as fh:
        fh.write('id,SMILES,price\n1,CCN,3\n2,bad((,4\n3,"CC(=O)O",5\n')
    stock = Stock.from_file(csv_path, name="csv")
    assert len(stock) == 2 and stock.n_skipped == 1
    assert "NCC" in stock and "OC(C)=O" in stock

    no_col = tmp_path / "x.csv"
    no_col.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="smiles"):
        Stock.from_file(no_col)
    with pytest.raises(DataNotFoundError):
        Stock.from_file(tmp_path / "missing.smi")


def test_stock_from_reactions_keeps_only_never_produced_reactants():
    rxns = [
        Reaction.create("CC(=O)NCc1ccccc1", ["CC(=O)O", "NCc1ccccc1"]),
        Reaction.create("NCc1ccccc1", ["N#Cc1ccccc1"]),
        Reaction.create("CC(=O)O", ["CCOC(C)=O"]),
    ]
    stock = stock_from_reactions(rxns, name="uspto-leaves")
    assert len(stock) == 2
    assert "N#Cc1ccccc1" in stock and "CCOC(C)=O" in stock
    assert "CC(=O)O" not in stock and "NCc1ccccc1" not in stock
    assert stock.describe()["name"] == "uspto-leaves"
