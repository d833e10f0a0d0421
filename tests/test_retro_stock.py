"""Stock keyed by InChIKey, file loading and the reaction-derived default stock."""

from __future__ import annotations

import gzip
import pickle
import sys

import pytest

from selfsup.chem.retro.core.reactions import Reaction
from selfsup.chem.retro.core.stock import (
    BloomStock,
    Stock,
    inchikey,
    kekule_canonical,
    stock_from_reactions,
)
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


# ----------------------------------------------------------------------------------------------
# BloomStock: a purchasable-molecule Bloom filter (molbloom) as a stock
# ----------------------------------------------------------------------------------------------


class _FakeBloom:
    """A set of Kekulé canonical SMILES that counts its look-ups (stands in for molbloom's
    BloomFilter, so the class logic is tested without the package)."""

    def __init__(self, smiles):
        self.keys = {kekule_canonical(s) for s in smiles}
        self.n_queries = 0

    def __contains__(self, s):
        self.n_queries += 1
        return s in self.keys


def _bloom_stock(**kw):
    fake = _FakeBloom(["c1ccccc1C(=O)O", "CCN"])
    stock = BloomStock(fake, name="fake", source="test", false_positive_rate=0.25,
                       n_molecules=2, common={"CCO"}, **kw)
    return stock, fake


def test_kekule_canonical():
    assert kekule_canonical("c1ccccc1") == "C1=CC=CC=C1"
    assert kekule_canonical("OC(=O)c1ccccc1") == kekule_canonical("c1ccccc1C(O)=O")
    assert kekule_canonical("C[C@H](N)C(=O)O") != kekule_canonical("C[C@@H](N)C(=O)O")
    assert kekule_canonical("C1CC") is None and kekule_canonical("") is None


def test_bloom_stock_lookup_any_spelling_common_and_memo():
    stock, fake = _bloom_stock()
    assert "OC(=O)c1ccccc1" in stock and "C1=CC=CC(C(=O)O)=C1" in stock and "NCC" in stock
    assert "CCCl" not in stock and "garbage((" not in stock and None not in stock
    n = fake.n_queries
    assert "OCC" in stock and fake.n_queries == n  # a common reagent: the filter is not asked
    assert "NCC" in stock and fake.n_queries == n  # memoised
    with pytest.raises(TypeError):
        len(stock)  # a filter has no size of its own
    assert stock.describe() == {"name": "fake", "size": 2, "source": "test", "skipped": 0,
                                "kind": "bloom_filter", "false_positive_rate": 0.25,
                                "common_reagents": 1}
    with pytest.raises(InputError, match="filter"):
        BloomStock()


def test_bloom_stock_pickles_and_drops_a_filter_loaded_from_a_file():
    stock, _ = _bloom_stock()
    copy = pickle.loads(pickle.dumps(stock))
    assert "NCC" in copy and "CCCl" not in copy
    from_file, _ = _bloom_stock(path="/nowhere/x.bloom")
    assert "NCC" in from_file
    state = from_file.__getstate__()
    assert state["_bloom"] is None and state["_lookup"] == {}  # loaded again where it is used


def test_planners_accept_a_bloom_stock():
    from selfsup.chem.retro.core.mcts import MCTS
    from selfsup.chem.retro.core.search import RetroStar
    from selfsup.chem.retro.core.toy import dead_end_world

    world = dead_end_world()
    stock = BloomStock(_FakeBloom(world.stock_smiles), name="fake-bloom", false_positive_rate=0.1)
    for planner in (RetroStar, MCTS):
        res = planner(world.model(), stock).run(world.target)
        assert res.success and res.best_cost == pytest.approx(world.optimal_cost)
        assert res.stats["stock"]["name"] == "fake-bloom"
        assert res.stats["stock"]["false_positive_rate"] == 0.1


def test_molbloom_stock_spec_without_the_package(monkeypatch):
    from selfsup.chem.retro.workflows.plan import make_stock

    monkeypatch.setitem(sys.modules, "molbloom", None)  # import molbloom -> ImportError
    with pytest.raises(InputError, match=r"pip install 'selfsup\[retro\]'"):
        make_stock("molbloom:zinc-instock-mini")


def test_molbloom_zinc_instock_mini():
    molbloom = pytest.importorskip(
        "molbloom", reason="molbloom is not installed (optional extra: pip install "
        "'selfsup[retro]')")
    from selfsup.chem.retro.workflows.plan import make_stock

    stock = make_stock("molbloom:zinc-instock-mini")
    d = stock.describe()
    assert d["name"] == "molbloom:zinc-instock-mini" and d["kind"] == "bloom_filter"
    assert d["false_positive_rate"] == 0.07 and d["size"] == 9_227_726
    assert "CCO" in stock and "OC(=O)c1ccccc1" in stock  # ethanol (common), benzoic acid
    for s in ("OC(=O)c1ccccc1", "C[C@H](N)C(=O)O", "Brc1ccc2[nH]ccc2c1", "[13CH3]CO"):
        assert kekule_canonical(s) == molbloom.canon(s)
    copy = pickle.loads(pickle.dumps(stock))
    assert copy._bloom is None and "OC(=O)c1ccccc1" in copy
    with pytest.raises(InputError, match="unknown molbloom catalog"):
        make_stock("molbloom:zinc21")
