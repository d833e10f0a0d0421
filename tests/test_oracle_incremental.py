"""The oracle's running PMO metrics equal the reference ``pmo_metrics`` bit for bit, at a constant
cost per call (issue 20)."""

from __future__ import annotations

import math
import types
from bisect import insort

import numpy as np
import pytest

from selfsup.chem import oracles
from selfsup.chem.objectives.adapters import as_objective
from selfsup.chem.oracles import Oracle, RunningMetrics, pmo_metrics
from selfsup.errors import InputError


def _same(a: dict, b: dict) -> None:
    """Equal keys and values, bit for bit (the sign of a zero and nan included)."""
    assert list(a) == list(b)
    for key in a:
        x, y = a[key], b[key]
        assert type(x) is type(y), key
        if math.isnan(y):
            assert math.isnan(x), key
        else:
            assert x == y and math.copysign(1.0, x) == math.copysign(1.0, y), (key, x, y)


def _streams():
    rng = np.random.default_rng(20)
    yield "uniform", list(rng.random(2345))
    # few distinct values: ties everywhere, signed zeros among them
    yield "ties", [float(v) for v in rng.choice([0.0, -0.0, 0.25, 0.5, 0.5, 1.0], size=1777)]
    yield "negative", list(-rng.exponential(size=1234))
    yield "infinite", [float(v) for v in rng.choice([-np.inf, 0.1, 0.2, np.inf], size=321)]
    yield "rising", list(np.sort(rng.random(650)))  # every call enters the top-100
    yield "short", list(rng.random(7))


@pytest.mark.filterwarnings("ignore:invalid value")  # inf - inf in a mean: nan, as in the reference
@pytest.mark.parametrize("budget", [None, 300, 1000, 5000])
@pytest.mark.parametrize("freq_log", [100, 37])
def test_running_metrics_equal_reference_along_the_stream(budget, freq_log):
    for name, scores in _streams():
        running = RunningMetrics(budget, freq_log)
        _same(running.metrics(), pmo_metrics([], budget, freq_log))
        checks = set(range(0, len(scores), 113)) | {len(scores) - 1}
        checks |= {i for i in range(len(scores)) if (i + 1) % freq_log in (0, 1, freq_log - 1)
                   and (i < 400 or i > len(scores) - 150)}  # around checkpoints
        for i, s in enumerate(scores):
            running.add(s)
            if i in checks:
                ref = pmo_metrics(scores[: i + 1], budget, freq_log)
                _same(running.metrics(), ref)
        assert running.n == (len(scores) if budget is None else min(budget, len(scores))), name


def test_running_metrics_nan_falls_back_to_the_reference():
    rng = np.random.default_rng(3)
    scores = list(rng.random(900))
    for i in (5, 222, 640):
        scores[i] = math.nan
    running = RunningMetrics(1000)
    for i, s in enumerate(scores):
        running.add(s)
        if i % 97 == 0 or i == len(scores) - 1:
            _same(running.metrics(), pmo_metrics(scores[: i + 1], 1000))
    assert running.has_nan


def test_running_metrics_checks_its_arguments():
    with pytest.raises(InputError, match="freq_log"):
        RunningMetrics(None, 0)
    with pytest.raises(InputError, match="budget"):
        RunningMetrics(0)


def _objective(table: dict[str, float]):
    return as_objective(lambda s: table.get(s, 0.125), name="table")


CHAINS = ["C" * n for n in range(1, 41)] + ["C" * n + "O" for n in range(1, 41)] + [
    "c1ccccc1" + "C" * n for n in range(30)]


def _oracle_stream(budget, nan: bool = False):
    """An oracle fed seeded batches of molecules (repeats, invalid SMILES, rewritings) whose
    scores have ties; yields it after each batch."""
    rng = np.random.default_rng(7)
    table = {}
    for s in CHAINS:
        from selfsup.chem.molecules import canonical_smiles

        table[canonical_smiles(s)] = float(rng.choice([0.0, 0.3, 0.3, 0.7, rng.random()]))
    if nan:
        table[canonical_smiles("CCCCO")] = math.nan
    oracle = Oracle(_objective(table), budget=budget, freq_log=10)
    for _ in range(30):
        batch = [str(s) for s in rng.choice(CHAINS, size=9)] + ["not a smiles", "OCC"]
        oracle.score_batch(batch)
        yield oracle


@pytest.mark.parametrize("budget", [None, 55, 200])
@pytest.mark.parametrize("nan", [False, True])
def test_oracle_metrics_equal_reference(budget, nan, tmp_path):
    seen = 0
    for oracle in _oracle_stream(budget, nan):
        ref = pmo_metrics([r.score for r in oracle.records], budget, 10)
        got = oracle.metrics()
        assert got["n_invalid"] > 0
        _same({k: got[k] for k in ref}, ref)
        seen = oracle.n_calls
    assert seen > 20 and (budget != 55 or seen == 55)
    recorded_nan = any(math.isnan(r.score) for r in oracle.records)
    assert oracle._running.has_nan == recorded_nan
    assert recorded_nan or not nan or budget is not None  # scored and recorded without a budget
    # rebuilt from its record: the same metrics; and it goes on in step with the reference
    path = oracle.save_record(tmp_path / "calls.csv")
    again = Oracle.from_record(oracle.objective, path, budget=budget, freq_log=10)
    _same(again.metrics() | {"n_invalid": 0.0, "n_cache_hits": 0.0},
          oracle.metrics() | {"n_invalid": 0.0, "n_cache_hits": 0.0})
    again.score_batch(["C" * 45, "C" * 46 + "O"])
    _same({k: again.metrics()[k] for k in ref},
          pmo_metrics([r.score for r in again.records], budget, 10))


def test_from_record_longer_than_the_budget(tmp_path):
    rng = np.random.default_rng(1)
    scores = [float(v) for v in rng.random(len(CHAINS))]
    calls = [oracles.OracleCall(i + 1, s, v) for i, (s, v) in enumerate(zip(CHAINS, scores))]
    path = oracles.save_record(calls, tmp_path / "calls.jsonl")
    oracle = Oracle.from_record(_objective({}), path, budget=40)
    got = oracle.metrics()
    _same({k: got[k] for k in pmo_metrics([])}, pmo_metrics(scores, 40))
    assert got["n_calls"] == 40.0


def test_metrics_cost_does_not_grow_with_the_calls(monkeypatch):
    """Count the numbers the metrics sort and average: per call, the same for 1,000 and 20,000
    calls (the reference sorts every score each time)."""
    touched = {"n": 0}

    def counting_sorted(values, *a, **kw):
        values = list(values)
        touched["n"] += len(values)
        return sorted(values, *a, **kw)

    def counting_mean(values, *a, **kw):
        touched["n"] += len(values)
        return np.mean(values, *a, **kw)

    longest = {"n": 0}

    def counting_insort(lst, key):
        longest["n"] = max(longest["n"], len(lst))
        insort(lst, key)

    monkeypatch.setattr(oracles, "sorted", counting_sorted, raising=False)
    monkeypatch.setattr(oracles, "np", types.SimpleNamespace(mean=counting_mean))
    monkeypatch.setattr(oracles, "insort", counting_insort)

    def per_call(n: int) -> tuple[float, float]:
        running = RunningMetrics(n)
        rng = np.random.default_rng(n)
        touched["n"] = 0
        for i, v in enumerate(rng.random(n)):
            running.add(float(v))
            if (i + 1) % 100 == 0:
                running.metrics()  # as the optimisation loop logs them
        adding = touched["n"] / n
        touched["n"] = 0
        running.metrics()
        return adding, touched["n"]

    small, large = per_call(1000), per_call(20000)
    assert small == large  # numbers touched per call while adding, and per metrics() call
    assert large == (2.22, 111)  # three means (top-1, -10, -100) per checkpoint and per query
    assert longest["n"] == RunningMetrics.KEEP  # a binary search into at most the 100 best
    # the reference touches every score
    touched["n"] = 0
    pmo_metrics(list(np.random.default_rng(0).random(20000)), 20000)
    assert touched["n"] > 20000
