"""ORD / USPTO-grants records (selfsup.data.ord) and the ORD-extended route benchmark."""

import math
import warnings

import pandas as pd
import pytest

from selfsup.chem.molecules import canonical_smiles
from selfsup.chem.retro.core.reactions import Reaction
from selfsup.chem.retro.workflows.ord_reactions import ord_reactions
from selfsup.chem.retro.workflows.route_benchmark import (
    build_route_benchmark,
    reactions_from_smiles,
)
from selfsup.chem.retro.workflows.route_benchmark_ord import (
    build_route_benchmark_with_ord,
    ord_dataset_reactions,
)
from selfsup.data.ord import load_ord_uspto, records_from_frame
from selfsup.errors import DataNotFoundError, InputError

MISSING = "<missing>"
# acetic acid + methanol -> methyl acetate, with an unmapped solvent (ether) among the reactants
ESTER = ("[CH3:1][C:2](=[O:3])[OH:4].[CH3:5][OH:6].CCOCC>C(N(CC)CC)C>"
         "[CH3:1][C:2](=[O:3])[O:6][CH3:5]")
# benzoyl chloride + benzylamine -> amide + HCl (side product, smaller)
AMIDE = ("[Cl:9][C:1](=[O:2])[c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1.[NH2:10][CH2:11][c:12]1[cH:13]"
         "[cH:14][cH:15][cH:16][cH:17]1>>[O:2]=[C:1]([NH:10][CH2:11][c:12]1[cH:13][cH:14][cH:15]"
         "[cH:16][cH:17]1)[c:3]1[cH:4][cH:5][cH:6][cH:7][cH:8]1.[ClH:9]")


def _frame() -> pd.DataFrame:
    rows = [
        # 0: good, mapped; reactant columns as ORDerly writes them ("<missing>" padding)
        {"rxn_str": ESTER, "reactant_000": "CC(=O)O", "reactant_001": "CO",
         "reactant_002": MISSING, "product_000": "COC(C)=O", "product_001": MISSING,
         "agent_000": "CCN(CC)CC", "solvent_000": "CCOCC", "extracted_from_file": "ord_a"},
        # 1: no rxn_str at all
        {"rxn_str": None, "reactant_000": "CC", "product_000": "CC", "extracted_from_file": "x"},
        # 2: not a reaction SMILES (one arrow part)
        {"rxn_str": "CCO.CC", "reactant_000": "CCO", "product_000": "CC"},
        # 3: empty product side
        {"rxn_str": "CCO>>", "reactant_000": "CCO", "product_000": MISSING},
        # 4: good, two products, NaN cells
        {"rxn_str": AMIDE, "reactant_000": "O=C(Cl)c1ccccc1", "reactant_001": float("nan"),
         "product_000": "O=C(NCc1ccccc1)c1ccccc1", "product_001": "Cl",
         "extracted_from_file": "ord_b"},
        # 5: unmapped reaction: reactants come from the columns
        {"rxn_str": "CC(=O)O.OCC>>CCOC(C)=O", "reactant_000": "CC(=O)O", "reactant_001": "CCO",
         "product_000": "CCOC(C)=O", "extracted_from_file": "ord_c"},
    ]
    return pd.DataFrame(rows)


def test_records_from_frame_parses_and_counts_skips():
    recs, skipped = records_from_frame(_frame(), "uspto-grants-1976_01")
    assert dict(skipped) == {"no_reaction_smiles": 3}
    assert [r["id"] for r in recs] == ["uspto-grants-1976_01:0", "uspto-grants-1976_01:4",
                                       "uspto-grants-1976_01:5"]
    r0 = recs[0]
    assert r0["source"] == "ord-uspto/uspto-grants-1976_01" and r0["ord_dataset"] == "ord_a"
    assert r0["reaction"] == ESTER and r0["mapped"] is True
    assert r0["reactants"] == ["CC(=O)O", "CO"] and r0["products"] == ["COC(C)=O"]
    assert r0["agents"] == ["CCN(CC)CC", "CCOCC"]
    assert recs[1]["reactants"] == ["O=C(Cl)c1ccccc1"]  # NaN cell dropped
    assert recs[2]["mapped"] is False
    with pytest.raises(InputError, match="rxn_str"):
        records_from_frame(pd.DataFrame([{"smiles": "CC"}]), "bad")


def test_load_ord_uspto_reads_parquet(tmp_path):
    pytest.importorskip("pyarrow")
    frame = _frame()
    frame.iloc[:3].to_parquet(tmp_path / "uspto-grants-1976_01.parquet")
    frame.iloc[3:].to_parquet(tmp_path / "uspto-grants-1978_12.parquet")
    (tmp_path / "other.parquet").write_bytes(b"not read")
    with pytest.warns(UserWarning, match=r"skipped 3 malformed ORD row\(s\)"):
        recs = load_ord_uspto(tmp_path)
    assert [r["id"] for r in recs] == ["uspto-grants-1976_01:0", "uspto-grants-1978_12:1",
                                       "uspto-grants-1978_12:2"]


def test_load_ord_uspto_errors(tmp_path, monkeypatch):
    with pytest.raises(DataNotFoundError, match="uspto-grants"):
        load_ord_uspto(tmp_path)
    (tmp_path / "uspto-grants-1976_01.parquet").write_bytes(b"x")

    def no_engine(*a, **k):
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr(pd, "read_parquet", no_engine)
    with pytest.raises(InputError, match="pip install pyarrow"):
        load_ord_uspto(tmp_path)


def test_ord_reactions_canonical_mapped_reactants_and_dedup():
    recs, _ = records_from_frame(_frame(), "t")
    report: dict = {}
    rxns, ids = ord_reactions(recs + [dict(recs[0], id="dup")], report=report)
    # mapped: the unmapped ether is not a reactant; the main product beats HCl
    assert rxns[0] == Reaction.create("COC(C)=O", ["CC(=O)O", "CO"])
    assert rxns[1] == Reaction.create("O=C(NCc1ccccc1)c1ccccc1", ["O=C(Cl)c1ccccc1",
                                                                  "NCc1ccccc1"])
    assert rxns[2] == Reaction.create("CCOC(C)=O", ["CC(=O)O", "CCO"])
    assert ids == ["t:0", "t:4", "t:5"]
    assert report == {"n_records": 4, "n_mapped": 3, "n_reactions": 3,
                      "skipped": {"duplicate": 1}}
    # de-duplication against USPTO-50k (objects with .key, or keys)
    uspto = reactions_from_smiles({"train": ["CC(=O)O.CO>>COC(C)=O"]})
    rep2: dict = {}
    kept, _ = ord_reactions(recs, exclude=uspto, report=rep2)
    assert len(kept) == 2 and rep2["skipped"] == {"in_exclude": 1}
    kept, _ = ord_reactions(recs, exclude=[rxns[1].key])
    assert rxns[1] not in kept


def test_ord_reactions_skip_reasons():
    base = {"id": "i", "agents": [], "reactants": [], "products": []}
    recs = [
        # two products of the same size: ambiguous
        dict(base, mapped=True, reaction="[CH3:1][CH2:2][Br:3].[OH2:4]>>"
             "[CH3:1][CH2:2][OH:4].[BrH:3].[CH3:5][CH2:6][OH:7]"),
        # product among its own reactants
        dict(base, mapped=True, reaction="[CH3:1][CH2:2][OH:3].[Na+]>>[CH3:1][CH2:2][OH:3]"),
        # mapped product, but no reactant shares a map number
        dict(base, mapped=True, reaction="CCO>>[CH3:1][CH2:2][OH:3]"),
        # unparsable
        dict(base, mapped=True, reaction="C1CC>>[CH3:1][CH3:2]"),
        # unmapped, with a bad reactant column
        dict(base, mapped=False, reaction="X>>CC", reactants=["not a smiles"], products=["CCC"]),
    ]
    report: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rxns, _ = ord_reactions(recs, report=report)
    assert rxns == []
    assert report["skipped"] == {"ambiguous_main_product": 1, "product_in_reactants": 1,
                                 "no_mapped_reactant": 1, "unparsable_reaction": 1,
                                 "invalid_molecule": 1}


# ---- the leak rule and the extended benchmark ------------------------------------------------
T1 = canonical_smiles("CC(=O)NCc1ccccc1")  # a USPTO-50k train product
X = canonical_smiles("CCOC(=O)c1ccccc1")   # a held-out (test) product
USPTO = {"train": ["CC(=O)Cl.NCc1ccccc1>>" + T1],
         "test": ["O=C(O)c1ccccc1.OCC>>" + X]}
ORD = [
    Reaction.create("NNC(=O)c1ccccc1", [X, "NN"]),             # o1: Y from X: 2 steps
    Reaction.create(T1, ["CC(=O)Cl", "NCc1ccccc1"]),           # o2: = the train reaction
    Reaction.create(T1, ["CC(=O)OC(C)=O", "NCc1ccccc1"]),      # o3: another way to T1
    Reaction.create("CN(Cc1ccccc1)C(C)=O", [T1, "CI"]),        # o4: Z from T1
]
Y, Z = canonical_smiles("NNC(=O)c1ccccc1"), canonical_smiles("CN(Cc1ccccc1)C(C)=O")


def _held_out(bench) -> dict[str, int]:
    return {t.smiles: t.length for t in bench.targets["test"]}


def test_ord_dataset_reactions_leak_rules():
    uspto = reactions_from_smiles(USPTO)
    kept, counts = ord_dataset_reactions(ORD, uspto, ids=["a", "b", "c", "d"])
    assert [r.id for r in kept] == ["a", "d"]
    assert counts == {"n_in": 4, "in_uspto50k": 1, "train_product": 1, "n_kept": 2}
    assert [r.index for r in kept] == [2, 3] and {r.split for r in kept} == {"ord"}
    kept, counts = ord_dataset_reactions(ORD, uspto, leak_rule="reaction")
    assert [r.id for r in kept] == ["ord-0", "ord-2", "ord-3"]
    assert counts["train_product"] == 0 and counts["in_uspto50k"] == 1
    with pytest.raises(InputError, match="leak_rule"):
        ord_dataset_reactions(ORD, uspto, leak_rule="none")


def test_benchmark_with_ord_counts_and_no_leak():
    uspto = reactions_from_smiles(USPTO)
    base = build_route_benchmark(uspto, test_splits=("test",))
    assert _held_out(base) == {X: 1}
    assert base.report["groups"]["test"]["n_multistep"] == 0

    bench = build_route_benchmark_with_ord(uspto, ORD, test_splits=("test",))
    assert _held_out(bench) == {X: 1, Y: 2}  # Z needs T1, made only by the dropped o3
    g = bench.report["groups"]["test"]
    assert g["n_multistep"] == 1 and g["multistep_by_split"] == {"ord": 1}
    assert g["length_distribution"] == {"1": 1, "2": 1}
    assert bench.report["ord"]["stock_mode"] == "extended"
    assert "NN" in bench.stock and "CC(=O)Cl" in bench.stock and X not in bench.stock
    # the train targets are those of USPTO-50k alone
    assert [t.smiles for t in bench.targets["train"]] == [T1]

    loose = build_route_benchmark_with_ord(uspto, ORD, test_splits=("test",),
                                           leak_rule="reaction")
    assert _held_out(loose) == {X: 1, Y: 2, Z: 2}  # T1 itself is never a held-out target
    route_ids = {s.metadata["reaction_id"] for s in _steps(loose.targets["test"])}
    assert route_ids.isdisjoint({"train-0"})

    # with the USPTO-50k stock alone hydrazine is not a building block
    narrow = build_route_benchmark_with_ord(uspto, ORD, test_splits=("test",),
                                            stock_mode="uspto")
    assert _held_out(narrow) == {X: 1}
    with pytest.raises(InputError, match="stock_mode"):
        build_route_benchmark_with_ord(uspto, ORD, stock_mode="big")
    with pytest.raises(InputError, match="reserved"):
        build_route_benchmark_with_ord(uspto, ORD, test_splits=("test", "ord"))


def _steps(targets):
    for t in targets:
        stack = [t.route]
        while stack:
            r = stack.pop()
            if r.step is not None:
                yield r.step
                stack.extend(r.step.reactants)


def test_nan_cell_helper_is_not_a_smiles():
    recs, _ = records_from_frame(pd.DataFrame([{"rxn_str": "CC>>CO", "product_000": math.nan,
                                                "reactant_000": "CC"}]), "t")
    assert recs[0]["products"] == ["CO"]  # falls back to the reaction's product side
