"""Similarity-constrained penalized logP: the registry objective, checked against RDKit by hand,
its errors, and the benchmark's molecule selection and per-run summary (issue 24 part 3)."""

import importlib.util
import math
from pathlib import Path

import networkx as nx
import pytest
from rdkit import Chem, DataStructs, RDConfig, RDLogger
from rdkit.Chem import AllChem, Descriptors

from conftest import load_bench_script
from selfsup.chem.objectives import get_objective
from selfsup.chem.oracles import OracleCall
from selfsup.errors import InputError

REF = "O=C(NCc1ccccc1)N1CCCCCC1"  # an azepane: cycle term 1 in both forms
SIMILAR = "O=C(NCc1ccccc1)N1CCCCC1"  # the piperidine: similar, no cycle term
FAR = "CCCCCCCCCC"


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("gegl", "constrained_plogp.py")


def _sascorer():
    path = Path(RDConfig.RDContribDir) / "SA_Score" / "sascorer.py"
    spec = importlib.util.spec_from_file_location("_test_sascorer", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _by_hand(smiles: str, form: str) -> float:
    """Penalized logP from RDKit's descriptors, SA scorer and networkx's cycle basis; GEGL's
    ZINC250k statistics typed in (its util/chemistry/benchmarks.py)."""
    mol = Chem.MolFromSmiles(smiles)
    lp = Descriptors.MolLogP(mol)
    sa = _sascorer().calculateScore(mol)
    rings = nx.cycle_basis(nx.Graph(Chem.GetAdjacencyMatrix(mol)))
    cyc = max(max((len(r) for r in rings), default=0) - 6, 0)
    if form == "raw":
        return lp - sa - cyc
    return ((lp - 2.4570965532649507) / 1.4339810636722639
            - (sa - 3.0508333383104556) / 0.8327034846660627
            - (cyc - 0.048152237188108474) / 0.2860582871837183)


def _sim(a: str, b: str) -> float:
    RDLogger.DisableLog("rdApp.*")  # GetMorganFingerprint is deprecated (still the reference)
    fa, fb = (AllChem.GetMorganFingerprint(Chem.MolFromSmiles(s), 2) for s in (a, b))
    return DataStructs.TanimotoSimilarity(fa, fb)


@pytest.mark.parametrize("name,form", [("constrained_penalized_logp", "raw"),
                                       ("constrained_plogp", "raw"),
                                       ("constrained_penalized_logp_gegl", "gegl")])
def test_improvement_matches_rdkit_by_hand(name, form):
    obj = get_objective(f"{name}:0.4:{REF}")
    expected = _by_hand(SIMILAR, form) - _by_hand(REF, form)
    assert _sim(REF, SIMILAR) >= 0.4
    assert obj(SIMILAR) == pytest.approx(expected, abs=1e-9)
    assert obj(REF) == pytest.approx(0.0, abs=1e-12)
    if form == "raw":  # the azepane -> piperidine step removes the cycle term (1 raw unit)
        assert _by_hand(SIMILAR, "raw") - _by_hand(REF, "raw") == pytest.approx(
            Descriptors.MolLogP(Chem.MolFromSmiles(SIMILAR))
            - Descriptors.MolLogP(Chem.MolFromSmiles(REF))
            - (_sascorer().calculateScore(Chem.MolFromSmiles(SIMILAR))
               - _sascorer().calculateScore(Chem.MolFromSmiles(REF))) + 1.0, abs=1e-9)


def test_similarity_threshold_and_failure_score():
    sim = _sim(REF, SIMILAR)
    assert get_objective(f"constrained_plogp:{sim!r}:{REF}")(SIMILAR) > -1000.0  # >= passes
    assert get_objective(f"constrained_plogp:{sim + 1e-9!r}:{REF}")(SIMILAR) == -1000.0
    obj = get_objective(f"constrained_penalized_logp_gegl:0.4:{REF}")
    assert _sim(REF, FAR) < 0.4
    assert obj(FAR) == -1000.0  # GEGL's score for a molecule breaking the constraint
    assert obj("C1CC") == -1000.0  # ... and for an invalid one
    assert obj.name == "constrained_penalized_logp_gegl_delta0.4"
    # the SMILES goes last and keeps its own ':' (atom maps) and '='
    mapped = get_objective("constrained_plogp:0.4:[CH3:1]C(=O)Nc1ccc(O)cc1")
    assert mapped("CC(=O)Nc1ccc(O)cc1") == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name,match", [
    ("constrained_plogp", "needs a similarity threshold"),
    ("constrained_plogp:0.4", "needs a similarity threshold"),
    ("constrained_plogp:0.4: ", "needs a similarity threshold"),
    ("constrained_plogp:abc:CCO", "'abc' is not a number"),
    ("constrained_plogp:1.5:CCO", r"must lie in \[0, 1\]"),
    ("constrained_plogp:-0.1:CCO", r"must lie in \[0, 1\]"),
    ("constrained_plogp:nan:CCO", r"must lie in \[0, 1\]"),
    ("constrained_plogp:0.4:C1CC", "invalid SMILES 'C1CC'"),
    ("qed:0.4:CCO", "'qed' takes no parameters"),
    ("not_an_objective", "unknown objective"),
])
def test_bad_input(name, match):
    with pytest.raises(InputError, match=match):
        get_objective(name)


# ---------------------------------------------------------------------- the benchmark's pieces
def test_selection_seeded_lowest_first(bench):
    smiles = [f"mol{i}" for i in range(40)] + ["bad"]
    score = {f"mol{i}": float((i * 17) % 40) - 20.0 for i in range(40)}
    fn = score.get  # "bad" scores None: dropped
    a = bench.select_molecules(smiles, 5, split_size=30, n_lowest=10, seed=3, score=fn)
    b = bench.select_molecules(smiles, 5, split_size=30, n_lowest=10, seed=3, score=fn)
    c = bench.select_molecules(smiles, 5, split_size=30, n_lowest=10, seed=4, score=fn)
    assert a == b and a != c
    vals = [v for _, v in a]
    assert vals == sorted(vals) and len(set(s for s, _ in a)) == 5
    # every pick lies among the 10 lowest of the seeded 30-molecule split
    import numpy as np

    split = np.random.default_rng(3).choice(len(smiles), size=30, replace=False)
    lowest = sorted(score[smiles[i]] for i in split if smiles[i] in score)[:10]
    assert all(v <= lowest[-1] for v in vals) and all(score[s] == v for s, v in a)
    # split_size 0: the whole list; n == n_lowest: exactly the lowest, lowest first
    whole = bench.select_molecules(smiles, 3, split_size=0, n_lowest=3, seed=0, score=fn)
    assert [v for _, v in whole] == [-20.0, -19.0, -18.0]
    with pytest.raises(SystemExit):
        bench.select_molecules(smiles, 11, split_size=0, n_lowest=10, seed=0, score=fn)


def test_selection_default_score_is_gegl_form(bench):
    smiles = [REF, SIMILAR, FAR, "C1CC", "c1ccccc1O"]
    got = bench.select_molecules(smiles, 4, split_size=0, n_lowest=4, seed=0)
    assert [s for s, _ in got] == sorted(smiles[:3] + ["c1ccccc1O"], key=lambda s: _by_hand(
        s, "gegl"))
    assert all(v == pytest.approx(_by_hand(s, "gegl"), abs=1e-9) for s, v in got)


def test_summarise_run_success_and_failure(bench):
    obj = get_objective(f"constrained_penalized_logp_gegl:0.4:{REF}")
    ref = Chem.MolToSmiles(Chem.MolFromSmiles(REF))
    calls = [OracleCall(1, ref, 0.0), OracleCall(2, FAR, -1000.0),
             OracleCall(3, Chem.MolToSmiles(Chem.MolFromSmiles(SIMILAR)), obj(SIMILAR)),
             OracleCall(4, "CCO", math.nan)]
    out = bench.summarise_run(calls, REF, 0.4, "gegl")
    assert out["success"] and out["best_call"] == 3 and out["n_calls"] == 4
    assert out["improvement"] == pytest.approx(_by_hand(SIMILAR, "gegl") - _by_hand(REF, "gegl"))
    assert out["improvement_raw"] == pytest.approx(_by_hand(SIMILAR, "raw") - _by_hand(REF, "raw"))
    assert out["similarity"] == pytest.approx(_sim(REF, SIMILAR))
    fail = bench.summarise_run(calls[:2], REF, 0.4, "gegl")  # nothing beats the reference
    assert not fail["success"] and fail["improvement"] == 0.0 and fail["similarity"] == 1.0
    assert fail["best_smiles"] == ref


def test_aggregate_and_rows(bench):
    units = [{"improvement": 2.0, "improvement_raw": 1.0, "success": True, "similarity": 0.5,
              "wall_seconds": 10.0},
             {"improvement": 0.0, "improvement_raw": 0.0, "success": False, "similarity": 1.0,
              "wall_seconds": 5.0}]
    agg = bench.aggregate(units)
    assert agg["mean_improvement"] == 1.0 and agg["success_rate"] == 0.5
    assert agg["improvement_std"] == pytest.approx(math.sqrt(2.0))
    assert agg["mean_similarity"] == 0.5 and agg["wall_seconds"] == 15.0
    assert agg["mean_improvement_raw"] == 0.5
    cache = {bench.unit_key(0.4, "gegl", 0, 100, "gegl", r): u
             for r, u in zip(["A", "B"], units)}
    rows, missing, partial = bench.build_rows(cache, ["A", "B"], [0.4, 0.6], ["gegl"], [0],
                                              100, "gegl")
    assert {r["setting"] for r in rows} == {"constrained-plogp/delta-0.4/2-molecules"}
    got = {r["metric"]: r["mean"] for r in rows}
    assert got["mean_improvement"] == 1.0 and got["success_rate"] == 0.5
    assert len(missing) == 2 and not partial  # delta 0.6 not run


def test_notes_time_and_provenance_census(bench):
    """The notes time the finished units of this selection and say which CPUs they ran on."""
    import argparse

    def unit(cpu):
        return {"improvement": 1.0, "improvement_raw": 1.0, "success": True, "similarity": 0.5,
                "wall_seconds": 10.0, "unit_seconds": 12.0,
                "provenance": {"torch": "2.x", "torch_cpu_capability": "AVX512",
                               "cpu_model": "CPU", "cpu_id": cpu, "torch_threads": 1}}
    cache = {bench.unit_key(0.4, "gegl", 0, 100, "gegl", "A"): unit("25/17/1"),
             bench.unit_key(0.4, "gegl", 0, 100, "gegl", "B"): unit("26/2/1"),
             bench.unit_key(0.4, "gegl", 0, 100, "gegl", "C"): unit("26/2/1")}  # not selected
    rows, missing, partial = bench.build_rows(cache, ["A", "B"], [0.4], ["gegl"], [0], 100,
                                              "gegl")
    selection = {"n_lowest": 800, "split_size": 5000, "seed": 0, "lowest": -9.0,
                 "highest": -2.0}
    text = bench.notes_text(argparse.Namespace(deltas=[0.4], arms=["gegl"]), ["A", "B"],
                            selection, {"source": "test prior"}, 100, "gegl", missing, partial,
                            cache, rows)
    assert "Time: 2 finished units took 0.01 h in all, 12 s a unit with start-up." in text
    assert ("Units by provenance: 1 torch 2.x (AVX512 kernels) on CPU [25/17/1], 1 thread(s); "
            "1 torch 2.x (AVX512 kernels) on CPU [26/2/1], 1 thread(s). Their times are "
            "comparable only within one CPU.") in text
