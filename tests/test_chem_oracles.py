"""Oracle: cache by canonical SMILES, budget of unique molecules, records, PMO AUC."""

from __future__ import annotations

import math

import pytest

from selfsup.chem.objectives import (
    Composite,
    FunctionObjective,
    Thresholded,
    WeightedSum,
    get_objective,
)
from selfsup.chem.oracles import (
    BudgetExhausted,
    Oracle,
    auc_top_k,
    load_record,
    pmo_metrics,
    top_k_mean,
)
from selfsup.errors import InputError, SelfsupError


def heavy_atoms(smiles: str) -> float:
    from rdkit import Chem

    return float(Chem.MolFromSmiles(smiles).GetNumAtoms())


def test_cache_counts_unique_canonical_molecules():
    calls: list[str] = []

    def f(s: str) -> float:
        calls.append(s)
        return heavy_atoms(s)

    oracle = Oracle(f)
    assert oracle(["OCC", "CCO", "C(O)C", "c1ccccc1", "C1=CC=CC=C1"]) == [3, 3, 3, 6, 6]
    assert calls == ["CCO", "c1ccccc1"]  # user function sees canonical SMILES, once each
    assert oracle.n_calls == 2 and oracle.n_cache_hits == 3
    assert oracle(["CCO"]) == [3.0] and oracle.n_calls == 2
    assert oracle("OCC") == 3.0  # a single SMILES gives a float
    assert oracle.lookup("OCC") == 3.0 and oracle.lookup("CCC") is None
    assert [(r.index, r.smiles, r.score) for r in oracle.records] == [
        (1, "CCO", 3.0), (2, "c1ccccc1", 6.0)]


def test_invalid_counted_separately_and_scored_invalid_score():
    oracle = Oracle(get_objective("qed"), budget=2)
    scores = oracle(["C1CC(", "", "CCO", "xx"])
    assert scores[0] == scores[1] == scores[3] == 0.0
    assert oracle.n_invalid == 3 and oracle.n_calls == 1


def test_max_length_rejects_long_canonical_smiles_without_a_call():
    oracle = Oracle(heavy_atoms, budget=2, max_length=4)
    # 'OCCC' is canonical 'CCCO' (4 characters): scored; 'CCCCC' (5): handled like an invalid one
    scores = oracle(["OCCC", "CCCCC", "C(C)CCC", "CC"])
    assert FunctionObjective(heavy_atoms).invalid_score == 0.0
    assert scores == [4.0, 0.0, 0.0, 2.0]
    assert oracle.n_calls == 2 and oracle.n_too_long == 2 and oracle.n_invalid == 0
    assert oracle.metrics()["n_too_long"] == 2.0 and oracle.exhausted
    assert "n_too_long" not in Oracle(heavy_atoms).metrics()
    with pytest.raises(InputError, match="max_length"):
        Oracle(heavy_atoms, max_length=0)


def test_batch_straddling_the_budget_is_scored_up_to_it():
    oracle = Oracle(heavy_atoms, budget=3)
    batch = oracle.score_batch(["C", "CC", "C", "CCC", "CCCC", "x(", "CCCCC", "CC"])
    assert batch.scores[:4] == [1.0, 2.0, 1.0, 3.0]
    assert math.isnan(batch.scores[4]) and math.isnan(batch.scores[6])
    assert batch.over_budget == [False, False, False, False, True, False, True, False]
    assert batch.new == [True, True, False, True, False, False, False, False]
    assert batch.scores[7] == 2.0 and batch.scores[5] == 0.0
    assert batch.exhausted and oracle.exhausted and oracle.remaining == 0
    assert oracle.n_calls == 3 and oracle.n_invalid == 1 and oracle.n_over_budget == 2
    # seen molecules are still answered after exhaustion, for free
    assert oracle(["CC", "CCC"]) == [2.0, 3.0]


def test_raise_policy_carries_partial_batch():
    oracle = Oracle(heavy_atoms, budget=2, on_exhausted="raise")
    with pytest.raises(BudgetExhausted) as info:
        oracle(["C", "CC", "CCC"])
    assert isinstance(info.value, SelfsupError)
    assert info.value.batch.scores[:2] == [1.0, 2.0] and info.value.batch.over_budget[2]
    assert oracle.n_calls == 2
    assert oracle(["CC"]) == [2.0]  # cached: no error


def test_auc_on_hand_made_record():
    # 250 calls, budget 500, logged every 100 calls; top-10 mean at 100, 200 and 250 calls
    scores = [0.1] * 100 + [0.5] * 100 + [1.0] * 50
    y100, y200, y250 = 0.1, 0.5, 1.0
    area = 100 * (0 + y100) / 2 + 100 * (y100 + y200) / 2 + 50 * (y200 + y250) / 2
    area += (500 - 250) * y250  # carried flat to the budget
    assert auc_top_k(scores, 10, budget=500) == pytest.approx(area / 500)
    assert auc_top_k(scores, 10, budget=500, finish=False) == pytest.approx(
        (area - 250 * y250) / 500)
    # a run that spends exactly the budget, top-1 with rising scores
    scores = [i / 300 for i in range(1, 301)]
    expected = (100 * (0 + 100 / 300) / 2 + 100 * (100 / 300 + 200 / 300) / 2
                + 100 * (200 / 300 + 1.0) / 2) / 300
    assert auc_top_k(scores, 1, budget=300) == pytest.approx(expected)
    # calls beyond the budget are ignored
    assert auc_top_k(scores + [5.0], 1, budget=300) == pytest.approx(expected)
    assert auc_top_k([], 10, budget=100) == 0.0
    assert top_k_mean([3, 1, 2], 2) == 2.5 and top_k_mean([], 10) == 0.0


def test_oracle_metrics():
    values = {f"C{'C' * i}O": float(i) for i in range(12)}  # 12 alcohols, scores 0..11
    oracle = Oracle(lambda s: values[s], budget=100)
    oracle(list(values) + ["bad("])
    m = oracle.metrics()
    assert m["top1"] == 11.0
    assert m["top10_mean"] == pytest.approx(sum(range(2, 12)) / 10)
    assert m["top100_mean"] == pytest.approx(5.5)
    assert m["n_calls"] == 12 and m["n_invalid"] == 1
    running = [top_k_mean(range(12), 10)]
    assert m["auc_top10"] == pytest.approx((12 * running[0] / 2 + 88 * running[0]) / 100)
    assert pmo_metrics([1.0, 2.0])["top10_mean"] == 1.5


def test_record_save_load_and_resume(tmp_path):
    oracle = Oracle(heavy_atoms, budget=5)
    oracle(["CCO", "c1ccccc1", "CC(=O)O"])
    for name in ("calls.csv", "calls.jsonl"):
        path = oracle.save_record(tmp_path / name)
        assert load_record(path) == oracle.records
    resumed = Oracle.from_record(heavy_atoms, tmp_path / "calls.csv", budget=5)
    assert resumed.n_calls == 3 and resumed.remaining == 2
    assert resumed(["OCC", "CCCC"]) == [3.0, 4.0] and resumed.n_calls == 4
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="bad.csv"):
        load_record(tmp_path / "bad.csv")
    with pytest.raises(InputError):
        oracle.save_record(tmp_path / "calls.txt")


def test_composition_and_wrapping():
    qed = get_objective("qed")
    ws = WeightedSum([qed, heavy_atoms], weights=[2.0, 0.5], transforms=[None, Thresholded(4)])
    s = "CC(=O)Oc1ccccc1C(=O)O"
    assert ws(s) == pytest.approx(2.0 * qed(s) + 0.5 * 1.0)
    geo = Composite([lambda x: 0.25, lambda x: 1.0], reduce="geometric")
    assert geo("CCO") == pytest.approx(0.5)
    batch = FunctionObjective(lambda xs: [len(x) for x in xs], batch=True)
    mean = Composite([batch, "qed"], weights=[1, 3], reduce="mean")
    assert mean.score_list(["CCO", "bad("]) == pytest.approx([(3 + 3 * qed("CCO")) / 4, 0.0])
    oracle = Oracle(mean, budget=10)
    assert oracle(["OCC"]) == pytest.approx([(3 + 3 * qed("CCO")) / 4])
    with pytest.raises(InputError):
        FunctionObjective(lambda xs: [1.0], batch=True).score_list(["C", "CC"])
    with pytest.raises(InputError):
        Oracle(heavy_atoms, budget=0)
    with pytest.raises(InputError):
        Oracle(3.0)
