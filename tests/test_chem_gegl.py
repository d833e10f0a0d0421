"""GEGL and the apprentice optimisers (lstm_hc, reinvent, prior_only), the max-reward queue and
the GuacaMol wrapper: a tiny prior trained in the test, tiny budgets, seeded, offline."""

import csv
import math
import re

import numpy as np
import pytest
import torch

from conftest import killed_at
from selfsup.chem.lstm import SmilesLSTM, SmilesLSTMConfig, train_likelihood
from selfsup.chem.molecules import Vocabulary, canonicalize_many
from selfsup.chem.optimize import (
    OPTIMIZERS,
    OptimizationContext,
    OptimizeConfig,
    optimize,
    resume,
)
from selfsup.chem.optimize.base import STATE_FILE
from selfsup.chem.optimize.common import Progress
from selfsup.chem.optimize.generator import SelfsupGoalDirectedGenerator
from selfsup.chem.optimize.queues import MaxRewardQueue
from selfsup.chem.oracles import Oracle
from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.io import atomic_torch_save, safe_torch_load
from selfsup.runs import Run

HEADS = ["", "O", "N", "Cl", "F", "N#C", "OC", "NC", "C(=O)O", "C(=O)N", "c1ccccc1", "c1ccncc1",
         "C1CCCCC1", "S", "C=C", "CC(C)", "OC(=O)C", "N(C)C", "C1CC1", "c1ccoc1"]
POOL = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "OC(=O)CCc1ccccc1"]
APPRENTICES = ["gegl", "gegl_no_expert", "gegl_no_learning", "lstm_hc", "reinvent", "prior_only"]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _tiny_prior(tmp_path_factory, n_layers: int = 1, dropout: float = 0.0) -> str:
    """A tiny SMILES LSTM trained for 150 steps on 160 small molecules (a group on a chain)."""
    corpus, n_bad = canonicalize_many([f"{h}{'C' * k}" for h in HEADS for k in range(1, 9)])
    assert n_bad == 0
    vocab = Vocabulary.build(corpus)
    threads = torch.get_num_threads()  # module fixtures run before the function-scoped one
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmilesLSTM(SmilesLSTMConfig(len(vocab), embed_dim=16, hidden_dim=64,
                                            n_layers=n_layers, dropout=dropout))
        train_likelihood(model, corpus, vocab, steps=150, batch_size=32, lr=1e-2,
                         generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(threads)
    return str(model.save(tmp_path_factory.mktemp("prior") / "model.pt", vocab))


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    return _tiny_prior(tmp_path_factory)


@pytest.fixture(scope="module")
def prior_with_dropout(tmp_path_factory):
    """Two layers with dropout between them: imitation draws from torch's global generator."""
    return _tiny_prior(tmp_path_factory, n_layers=2, dropout=0.3)


@pytest.fixture
def pool_file(tmp_path):
    p = tmp_path / "pool.smi"
    p.write_text("\n".join(POOL) + "\n")
    return p


def _args(prior, pool_file, tmp_path, optimizer, budget=60, **extra):
    small = {"gegl.n_apprentice": 24, "gegl.n_expert": 24, "gegl.queue_size": 24,
             "gegl.imitation_steps": 3, "gegl.imitation_batch": 24, "gegl.sample_max_len": 40,
             "lstm_hc.n_samples": 32, "lstm_hc.keep_top": 16, "lstm_hc.batch_size": 16,
             "lstm_hc.sample_max_len": 40, "reinvent.batch_size": 16,
             "reinvent.experience_replay": 4, "reinvent.sample_max_len": 40}
    args = [f"optimizer={optimizer}", f"prior={prior}", f"start_pool={pool_file}",
            "objective=qed", f"budget={budget}", f"run_root={tmp_path / 'runs'}",
            "checkpoint_every=1000"]
    return args + [f"{k}={v}" for k, v in {**small, **extra}.items()]


def _calls(run):
    return list(csv.DictReader(open(run.path / "oracle_calls.csv")))


# ------------------------------------------------------------------------------------- queue
def test_queue_keeps_the_top_k_unique_with_deterministic_ties():
    q = MaxRewardQueue(3)
    assert q.add(["CCO", "OCC", "c1ccccc1", "not_a_smiles"], [0.5, 0.9, 0.2, 1.0]) == 2
    assert q.items() == [("CCO", 0.5), ("c1ccccc1", 0.2)]  # 'OCC' is 'CCO': first score kept
    assert q.add(["CCN", "CCC", "CCCl", "CO"], [0.5, 0.5, math.nan, 0.1]) == 2
    assert q.smiles() == ["CCO", "CCN", "CCC"]  # tie at 0.5: insertion order
    assert q.scores() == [0.5, 0.5, 0.5] and len(q) == 3
    assert q.add(["CCCC"], [0.4]) == 0  # below the queue's worst
    assert q.add(["c1ccncc1"], [0.7]) == 1
    assert q.smiles() == ["c1ccncc1", "CCO", "CCN"]
    state = q.state_dict()
    assert state["size"] == 3 and [s for s, _, _ in state["items"]] == q.smiles()
    copy = MaxRewardQueue(1)
    copy.load_state_dict(state)
    assert copy.items() == q.items()
    raw = MaxRewardQueue(2, canonicalize=False)  # trusts its input
    raw.add(["OCC", "CCO"], [0.1, 0.2])
    assert raw.smiles() == ["CCO", "OCC"]


# ------------------------------------------------------------------------------ optimisers
@pytest.mark.parametrize("optimizer", APPRENTICES)
def test_each_optimizer_spends_exactly_the_budget(prior, pool_file, tmp_path, optimizer):
    run, res = optimize(None, _args(prior, pool_file, tmp_path, optimizer))
    rows = _calls(run)
    assert res["n_calls"] == 60 and res["stopped"] == "budget" and len(rows) == 60
    assert len({r["smiles"] for r in rows}) == 60
    assert 0.0 < res["top1"] <= 1.0
    if optimizer != "graph_ga":  # the apprentice loops log each round, with the top-10 rule's count
        assert re.search(r"round 1: calls \d+ new \d+ top-10 unchanged 0/1000 ",
                         (run.path / "log.txt").read_text())


def test_same_seed_same_molecules(prior, pool_file, tmp_path):
    a, _ = optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="a"))
    b, _ = optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="b"))
    c, _ = optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="c", seed=1))
    assert _calls(a) == _calls(b)
    assert _calls(a) != _calls(c)  # (reinvent's determinism: the replay test below)


@pytest.mark.parametrize("optimizer", ["gegl", "reinvent"])
def test_replay_from_a_partial_record_asks_for_the_same_molecules(prior, pool_file, tmp_path,
                                                                 optimizer):
    """What resume does: an oracle rebuilt from the first calls, the optimiser replayed."""
    args = _args(prior, pool_file, tmp_path, optimizer)
    run, _ = optimize(None, args)
    lines = (run.path / "oracle_calls.csv").read_text().splitlines()
    part = tmp_path / "part.csv"
    part.write_text("\n".join(lines[:31]) + "\n")  # header + 30 of 60 calls
    cfg = load_config(OptimizeConfig, None, args)
    oracle = Oracle.from_record("qed", part, budget=60)
    OPTIMIZERS[optimizer](OptimizationContext(oracle, POOL, None), cfg,
                          np.random.default_rng(cfg.seed))
    assert [r.smiles for r in oracle.records] == [r["smiles"] for r in _calls(run)]


# ------------------------------------------------------------------------- state snapshots
def _killed_after_state(args, tmp_path, monkeypatch, name, nth):
    """Run ``args`` with a snapshot every round and 'kill' it right after its ``nth``."""
    with killed_at(monkeypatch, "kill_after_state", nth):
        optimize(None, args + [f"name={name}", "state_every_seconds=0"])
    (path,) = (tmp_path / "runs").glob(f"{name}-*")
    return path


def _counting_samples(monkeypatch):
    """Count SmilesLSTM.sample calls (one per round of each apprentice optimiser)."""
    n = []
    orig = SmilesLSTM.sample

    def sample(self, *a, **k):
        n.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(SmilesLSTM, "sample", sample)
    return n


@pytest.mark.parametrize("optimizer", ["gegl", "lstm_hc", "reinvent"])
def test_a_run_killed_after_a_state_snapshot_goes_on_from_it_to_the_same_calls(
        prior_with_dropout, pool_file, tmp_path, monkeypatch, optimizer):
    args = _args(prior_with_dropout, pool_file, tmp_path, optimizer, budget=150)
    rounds = _counting_samples(monkeypatch)
    full, res_full = optimize(None, args + ["name=full", "state_every_seconds=null"])
    n_full = len(rounds)
    assert n_full >= 4 and not (full.path / STATE_FILE).exists()
    killed = _killed_after_state(args, tmp_path, monkeypatch, "killed", nth=2)
    state = safe_torch_load(killed / STATE_FILE)
    saved = len(_calls(Run.open(killed)))
    assert state["optimizer"] == optimizer and state["round"] == 2
    assert 0 < state["calls"] == saved < 150  # the record was saved with the snapshot
    rounds.clear()
    run, res = resume(killed)
    assert len(rounds) == n_full - 2  # rounds 1 and 2 were not run again
    assert _calls(run) == _calls(full)  # the same molecules in the same order
    for k in ("top1", "top10_mean", "auc_top10", "n_calls", "top10"):
        assert res[k] == res_full[k]
    if optimizer != "reinvent":  # the queue record: every round once, as the full run's
        assert (run.path / "queues.jsonl").read_text() == (full.path / "queues.jsonl").read_text()
    assert "resuming from the state of round 2" in (run.path / "log.txt").read_text()
    assert not (run.path / STATE_FILE).exists()  # a finished run keeps no snapshot


def test_a_damaged_or_foreign_snapshot_is_set_aside_and_the_run_replays(
        prior_with_dropout, pool_file, tmp_path, monkeypatch):
    args = _args(prior_with_dropout, pool_file, tmp_path, "gegl", budget=150)
    full, _ = optimize(None, args + ["name=full"])
    for name, spoil in (("cut", lambda p: p.write_bytes(p.read_bytes()[:100])),
                        ("other", lambda p: atomic_torch_save(
                            {**safe_torch_load(p), "optimizer": "reinvent"}, p))):
        killed = _killed_after_state(args, tmp_path, monkeypatch, name, nth=2)
        spoil(killed / STATE_FILE)
        rounds = _counting_samples(monkeypatch)
        run, _ = resume(killed)
        assert len(rounds) >= 4  # replayed from round 1
        assert _calls(run) == _calls(full)
        assert "replaying the run from its start" in (run.path / "log.txt").read_text()


def test_state_every_seconds_is_checked(prior, pool_file, tmp_path):
    with pytest.raises(ConfigError, match="state_every_seconds"):
        optimize(None, _args(prior, pool_file, tmp_path, "gegl") + ["state_every_seconds=-1"])


class _Ctx:
    """What Progress reads of an OptimizationContext: no run, a budget that never runs out."""

    exhausted = False
    run = None
    stop_reason = None
    progress = None


def test_progress_stops_without_new_molecules_after_patience():
    ctx = _Ctx()
    p = Progress(ctx, "t", patience=2)
    assert p.start_round()
    p.saw(["C", "CC"])
    assert p.start_round()  # round 2: round 1 brought new molecules
    p.saw(["C"])  # seen before
    assert p.start_round()  # one idle round
    p.saw(["CC"])
    assert not p.start_round()  # two idle rounds in a row
    assert ctx.stop_reason == "no new molecule in 2 rounds"


def test_progress_stops_when_the_top10_is_unchanged_for_stale_rounds():
    ctx = _Ctx()
    p = Progress(ctx, "t", patience=100, stale_rounds=3)
    assert p.start_round()
    p.saw([f"C{'C' * i}" for i in range(10)], [float(i) for i in range(10)])  # top-10: 0..9
    for k in range(3):  # new molecules each round, none above the 10th best (0.0)
        assert p.start_round()
        p.saw([f"N{'C' * k}", f"O{'C' * k}"], [0.0, float("nan")])
    assert not p.start_round()
    assert ctx.stop_reason == "top-10 unchanged for 3 rounds"
    # a molecule entering the top-10 resets the count; a repeat of a seen molecule does not count
    ctx = _Ctx()
    p = Progress(ctx, "t", patience=100, stale_rounds=2)
    p.start_round()
    p.saw([f"C{'C' * i}" for i in range(10)], [float(i) for i in range(10)])
    p.start_round()
    p.saw(["N"], [0.5])  # enters (above 0.0)
    assert p.start_round() and p.stale == 0
    p.saw(["CC"], [99.0])  # seen before: not a new top-10 entry
    assert p.start_round() and p.stale == 1
    p.saw(["S", "S"], [0.7, 0.7])  # one molecule twice in a batch: one entry
    assert p.new == 1 and sorted(p.top10).count(0.7) == 1
    assert p.start_round() and p.stale == 0
    p.saw(["O"], [0.1])  # below the 10th best, now 0.7
    assert p.start_round() and p.stale == 1
    p.saw(["OC"], [0.2])
    assert not p.start_round()
    # stale_rounds=0: the rule is off
    ctx = _Ctx()
    p = Progress(ctx, "t", patience=100, stale_rounds=0)
    for k in range(50):
        assert p.start_round()
        p.saw([f"S{'C' * k}"], [-1.0])
    assert ctx.stop_reason is None


def test_the_status_line_shows_the_round_and_how_long_the_top10_is_unchanged():
    """A collapsed policy finds few new molecules a round: the command line's status line says
    which round it is in and how far the top-10 rule has counted, not only the calls."""
    import io

    from selfsup.progress import Progress as StatusLine

    ctx = _Ctx()
    out = io.StringIO()
    ctx.progress = StatusLine(1000, "optimize", "calls", stream=out, interval=0, enabled=True,
                              rich=False)
    p = Progress(ctx, "t", patience=100, stale_rounds=5)
    p.start_round()
    p.saw([f"C{'C' * i}" for i in range(10)], [float(i) for i in range(10)])
    for k in range(3):
        p.start_round()
        p.saw([f"N{'C' * k}"], [-1.0])
    assert out.getvalue().splitlines()[-1].startswith(
        "[optimize] 0/1000 calls (0%)  round=4  top10_unchanged=2/5")
    ctx.progress = StatusLine(1000, "optimize", "calls", stream=out, interval=0, enabled=True,
                              rich=False)
    p = Progress(ctx, "t", patience=100, stale_rounds=0)  # the rule off: the round alone
    p.start_round()
    assert out.getvalue().splitlines()[-1].startswith("[optimize] 0/1000 calls (0%)  round=1  ")


def test_a_run_on_a_flat_objective_stops_on_the_top10_rule(prior, pool_file, tmp_path):
    """A constant objective (a user callable) fills the top-10 in the first round and never
    changes it, so the run stops 3 rounds later, long before its budget, and says why."""
    cfg = load_config(OptimizeConfig, None, _args(prior, pool_file, tmp_path, "gegl",
                                                  budget=5000, **{"gegl.stale_rounds": 3}))
    oracle = Oracle(lambda s: 0.5, budget=5000)
    ctx = OptimizationContext(oracle, POOL, None)
    OPTIMIZERS["gegl"](ctx, cfg, np.random.default_rng(0))
    assert ctx.stop_reason == "top-10 unchanged for 3 rounds"
    assert 10 <= oracle.n_calls <= 4 * 48  # 4 rounds of at most 24 + 24 molecules


def test_gegl_beats_sampling_the_prior_on_qed(prior, pool_file, tmp_path):
    _, g = optimize(None, _args(prior, pool_file, tmp_path, "gegl", budget=150))
    _, p = optimize(None, _args(prior, pool_file, tmp_path, "prior_only", budget=150))
    # measured on seeds 0-4: +0.078, +0.057, +0.053, +0.046, +0.054 (QED top-10 mean)
    assert g["top10_mean"] > p["top10_mean"] + 0.04
    assert g["top1"] >= p["top1"]


def test_imitation_options_default_to_the_exact_run_and_reject_bad_values(prior, pool_file,
                                                                            tmp_path):
    a, _ = optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="a"))
    b, _ = optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="b",
                                **{"gegl.imitation_precision": "32",
                                   "gegl.imitation_length_groups": 1}))
    assert _calls(a) == _calls(b)  # the defaults, given explicitly: the same molecules
    fast, res = optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="fast",
                                     **{"gegl.imitation_precision": "bf16",
                                        "gegl.imitation_length_groups": 4}))
    assert res["n_calls"] == 60 and len({r["smiles"] for r in _calls(fast)}) == 60
    for key, bad, shown in (("gegl.imitation_precision", "fp16", "'fp16'"),
                            ("gegl.imitation_length_groups", 0, "0")):
        with pytest.raises(ConfigError, match=f"{key}={shown}"):
            optimize(None, _args(prior, pool_file, tmp_path, "gegl", name="bad", **{key: bad}))


@pytest.mark.parametrize("optimizer,options,bad", [
    ("lstm_hc", {"lstm_hc.precision": "bf16", "lstm_hc.length_groups": 4},
     {"lstm_hc.precision": "fp16", "lstm_hc.length_groups": 0}),
    ("reinvent", {"reinvent.precision": "bf16"}, {"reinvent.precision": "fp16"}),
])
def test_lstm_hc_and_reinvent_speed_options_default_to_the_exact_run(prior, pool_file, tmp_path,
                                                                      optimizer, options, bad):
    a, _ = optimize(None, _args(prior, pool_file, tmp_path, optimizer, name="a"))
    b, _ = optimize(None, _args(prior, pool_file, tmp_path, optimizer, name="b",
                                **{k: "32" if "precision" in k else 1 for k in options}))
    assert _calls(a) == _calls(b)  # the defaults, given explicitly: the same molecules
    fast, res = optimize(None, _args(prior, pool_file, tmp_path, optimizer, name="fast",
                                     **options))
    assert res["n_calls"] == 60 and len({r["smiles"] for r in _calls(fast)}) == 60
    assert all(math.isfinite(float(r["score"])) for r in _calls(fast))
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            optimize(None, _args(prior, pool_file, tmp_path, optimizer, name="bad",
                                 **{key: value}))


def test_missing_prior_is_a_clear_error(pool_file, tmp_path):
    args = [a for a in _args("x", pool_file, tmp_path, "gegl") if not a.startswith("prior=")]
    with pytest.raises(ConfigError, match="selfsup chem pretrain"):
        optimize(None, args)
    with pytest.raises(ConfigError, match="not a file"):
        optimize(None, _args(str(tmp_path / "nope.pt"), pool_file, tmp_path, "reinvent"))


# --------------------------------------------------------------------------------- guacamol
class FakeScoringFunction:
    """The duck-typed GuacaMol interface: score(smiles) and score_list(smiles_list)."""

    def __init__(self):
        self.calls = 0

    def score(self, smiles):
        return self.score_list([smiles])[0]

    def score_list(self, smiles_list):
        self.calls += len(smiles_list)
        return [min(1.0, s.count("c") / 6.0) for s in smiles_list]  # aromatic carbons


def test_guacamol_wrapper_returns_the_best_molecules(prior, tmp_path):
    gen = SelfsupGoalDirectedGenerator("gegl", prior=prior, budget=40, seed=0,
                                       gegl={"n_apprentice": 16, "n_expert": 16,
                                             "queue_size": 16, "imitation_steps": 2,
                                             "sample_max_len": 40})
    fn = FakeScoringFunction()
    out = gen.generate_optimized_molecules(fn, 10)
    assert len(out) == 10 and len(set(out)) == 10
    assert fn.calls == 40 == gen.last_oracle.n_calls  # the budget, each molecule once
    scores = fn.score_list(out)
    assert scores == sorted(scores, reverse=True)
    assert gen.generate_optimized_molecules(fn, 10) == out  # seeded: same answer again
    with pytest.raises(ConfigError, match="exceeds the budget"):
        gen.generate_optimized_molecules(fn, 41)
    ga = SelfsupGoalDirectedGenerator("graph_ga", budget=30, seed=0,
                                      graph_ga={"population_size": 5, "offspring_size": 10})
    assert len(ga.generate_optimized_molecules(fn, 5, starting_population=POOL)) == 5
    with pytest.raises(ConfigError, match="Valid: .*gegl_no_expert"):
        SelfsupGoalDirectedGenerator("gegl_typo", prior=prior)


@pytest.mark.parametrize("optimizer", ["gegl", "lstm_hc"])
def test_max_smiles_length_keeps_long_molecules_out_of_calls_and_queues(prior, pool_file, tmp_path,
                                                                        optimizer):
    """GEGL's reference scores only SMILES of at most 100 characters; here the limit is 6, so
    the tiny prior's longer chains are dropped unpaid and the budget still fills."""
    free, _ = optimize(None, _args(prior, pool_file, tmp_path, optimizer, budget=30, name="f"))
    assert max(len(r["smiles"]) for r in _calls(free)) > 6  # without the limit: longer ones
    run, res = optimize(None, _args(prior, pool_file, tmp_path, optimizer, budget=30,
                                    max_smiles_length=6))
    rows = _calls(run)
    assert res["n_calls"] == 30 and res["stopped"] == "budget" and len(rows) == 30
    assert max(len(r["smiles"]) for r in rows) <= 6
