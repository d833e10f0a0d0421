"""GEGL's queue record (queues.jsonl) and benchmarks/gegl/lead_analysis.py (issue 24, part 4):
the record on a tiny run with a tiny prior trained here, its consistency after a kill and a
replay-resume, and the shares, diversities and overtaking against hand-computed values."""

import csv
import json
import math
import shutil

import pytest
import torch

from conftest import killed_at, load_bench_script
from selfsup.chem.lstm import SmilesLSTM, SmilesLSTMConfig, train_likelihood
from selfsup.chem.molecules import Vocabulary, canonical_smiles, canonicalize_many
from selfsup.chem.optimize import optimize, resume
from selfsup.runs import Run

HEADS = ["", "O", "N", "Cl", "F", "N#C", "OC", "NC", "C(=O)O", "C(=O)N", "c1ccccc1", "c1ccncc1",
         "C1CCCCC1", "S", "C=C", "CC(C)", "OC(=O)C", "N(C)C", "C1CC1", "c1ccoc1"]
POOL = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CCN(CC)CC", "OC(=O)CCc1ccccc1"]
K = 24


@pytest.fixture(scope="module")
def lead():
    return load_bench_script("gegl", "lead_analysis.py")


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny SMILES LSTM: 100 steps on 160 small molecules (a group on a carbon chain)."""
    corpus, _ = canonicalize_many([f"{h}{'C' * k}" for h in HEADS for k in range(1, 9)])
    vocab = Vocabulary.build(corpus)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SmilesLSTM(SmilesLSTMConfig(len(vocab), embed_dim=16, hidden_dim=48,
                                            n_layers=1, dropout=0.0))
        train_likelihood(model, corpus, vocab, steps=100, batch_size=32, lr=1e-2,
                         generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(threads)
    return str(model.save(tmp_path_factory.mktemp("prior") / "model.pt", vocab))


def _args(prior, tmp_path, optimizer="gegl", budget=120, **extra):
    pool = tmp_path / "pool.smi"
    pool.write_text("\n".join(POOL) + "\n")
    small = {"gegl.n_apprentice": 24, "gegl.n_expert": 24, "gegl.queue_size": K,
             "gegl.imitation_steps": 2, "gegl.imitation_batch": 24, "gegl.sample_max_len": 40,
             "start_pool_size": 5, "checkpoint_every": 1000}
    args = [f"optimizer={optimizer}", f"prior={prior}", f"start_pool={pool}", "objective=qed",
            f"budget={budget}", f"run_root={tmp_path / 'runs'}"]
    return args + [f"{k}={v}" for k, v in {**small, **extra}.items()]


def _rows(run_path):
    return [json.loads(line) for line in (run_path / "queues.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------- the record
def test_each_round_records_its_queues_with_the_origin_of_every_molecule(prior, tmp_path):
    run, res = optimize(None, _args(prior, tmp_path))
    rows = _rows(run.path)
    calls = {r["smiles"]: float(r["score"])
             for r in csv.DictReader(open(run.path / "oracle_calls.csv"))}
    pool = {canonical_smiles(s) for s in POOL}
    assert [r["round"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 3
    assert rows[-1]["calls"] == res["n_calls"] == 120
    before = 0
    for r in rows:
        # every call of the round was first proposed by exactly one of the three
        assert sum(r["new"].values()) == r["calls"] - before
        before = r["calls"]
        assert r["queue_size"] == K
        for name, allowed in (("apprentice", {"apprentice", "pool", "expert"}),
                              ("expert", {"expert", "apprentice"})):
            items = r["queues"][name]
            assert 0 < len(items) <= K
            assert [v for _, v, _ in items] == sorted((v for _, v, _ in items), reverse=True)
            for smiles, score, origin in items:
                assert origin in allowed and calls[smiles] == score  # the oracle's own score
                assert (origin == "pool") == (smiles in pool)
    assert rows[0]["new"]["pool"] == 5 and all(r["new"]["pool"] == 0 for r in rows[1:])
    # the ablation without an expert records an empty expert queue
    run2, _ = optimize(None, _args(prior, tmp_path, "gegl_no_expert", name="noexp"))
    assert all(r["queues"]["expert"] == [] and r["new"]["expert"] == 0 for r in _rows(run2.path))


def _killed_run(prior, tmp_path, monkeypatch, name):
    with killed_at(monkeypatch, "kill_after_checkpoint"):
        optimize(None, _args(prior, tmp_path, name=name, checkpoint_every=60))
    (path,) = (tmp_path / "runs").glob(f"{name}-*")
    return path


def test_a_killed_and_resumed_run_records_every_round_once(prior, tmp_path, monkeypatch):
    full, _ = optimize(None, _args(prior, tmp_path, name="full", checkpoint_every=60))
    expected = (full.path / "queues.jsonl").read_text()
    killed = _killed_run(prior, tmp_path, monkeypatch, "killed")
    saved = len((killed / "oracle_calls.csv").read_text().splitlines()) - 1
    rows = _rows(killed)
    assert 60 <= saved < 120 and rows and rows[-1]["calls"] <= saved  # killed mid-run
    # a round written after the saved record, and a line cut by the kill: both replayed
    with open(killed / "queues.jsonl", "a") as fh:
        fh.write(json.dumps({**rows[-1], "round": len(rows) + 1, "calls": saved + 7}) + "\n")
        fh.write('{"round": 9, "calls": 1')
    run, _ = resume(killed)
    assert (run.path / "queues.jsonl").read_text() == expected  # no round twice, none missing
    assert (run.path / "oracle_calls.csv").read_text() == (
        full.path / "oracle_calls.csv").read_text()


def test_a_resumed_run_without_a_record_writes_none(prior, tmp_path, monkeypatch):
    """A run begun before the record existed: its replayed early rounds cannot tell their calls,
    so nothing is recorded (rather than rows with wrong call counts)."""
    killed = _killed_run(prior, tmp_path, monkeypatch, "old")
    (killed / "queues.jsonl").unlink()
    run, res = resume(killed)
    assert res["n_calls"] == 120 and not (run.path / "queues.jsonl").exists()
    assert Run.open(run.path).meta["status"] == "finished"


# ------------------------------------------------------------------------- the computations
def _tanimoto_by_hand(a, b):
    """|A and B| / |A or B| of the Morgan (radius 2, 2048 bits) on-bit sets."""
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    x, y = (set(gen.GetFingerprint(Chem.MolFromSmiles(s)).GetOnBits()) for s in (a, b))
    return len(x & y) / len(x | y)


def test_internal_diversity_is_the_mean_pairwise_tanimoto_distance(lead):
    mols = ["CCO", "CCN", "c1ccccc1O"]
    pairs = [(0, 1), (0, 2), (1, 2)]
    hand = sum(1 - _tanimoto_by_hand(mols[i], mols[j]) for i, j in pairs) / 3
    assert lead.internal_diversity(mols) == pytest.approx(hand, abs=1e-12)
    assert lead.internal_diversity(["CCO", "CCO"]) == 0.0
    assert math.isnan(lead.internal_diversity(["CCO"])) and math.isnan(lead.internal_diversity([]))
    # ethanol and methylamine share only the methyl environment: C, O and N bits differ
    assert 0 < _tanimoto_by_hand("CO", "CN") < 1


def test_union_top_k_and_its_origin_shares(lead):
    queues = {"apprentice": [["A", 0.9, "apprentice"], ["B", 0.5, "pool"],
                             ["E", 0.1, "apprentice"]],
              "expert": [["C", 0.8, "expert"], ["A", 0.9, "apprentice"], ["D", 0.5, "expert"]]}
    top = lead.union_top(queues, 3)
    assert [t["smiles"] for t in top] == ["A", "C", "B"]  # B ties D at 0.5: apprentice first
    assert [t["in_both"] for t in top] == [True, False, False]
    shares = lead.origin_shares(top)
    assert shares == {"expert": 1 / 3, "apprentice": 1 / 3, "pool": 1 / 3, "in_both": 1 / 3}
    top5 = lead.union_top(queues, 10)
    assert [t["smiles"] for t in top5] == ["A", "C", "B", "D", "E"]
    assert lead.origin_shares(top5) == {"expert": 0.4, "apprentice": 0.4, "pool": 0.2,
                                        "in_both": 0.2}
    assert all(math.isnan(v) for v in lead.origin_shares([]).values())


def test_stereo_isomers_count_as_one_molecule(lead):
    # 2,3-butanediol: three stereo-specified forms and the unspecified one; ethanol written twice
    isomers = ["C[C@H](O)[C@@H](C)O", "C[C@@H](O)[C@@H](C)O", "C[C@H](O)[C@H](C)O",
               "CC(O)C(C)O"]
    assert lead.distinct_without_stereo(isomers) == 1
    assert lead.distinct_without_stereo([*isomers, "CCO", "OCC"]) == 2
    assert lead.distinct_without_stereo([]) == 0


def test_round_table_of_a_hand_made_record(lead):
    rows = [{"round": 1, "calls": 4, "queue_size": 2, "new": {"apprentice": 2, "expert": 2,
                                                               "pool": 0},
             "queues": {"apprentice": [["CCO", 0.7, "apprentice"], ["CCN", 0.2, "apprentice"]],
                        "expert": [["c1ccccc1O", 0.9, "expert"], ["CCO", 0.7, "apprentice"]]}}]
    (t,) = lead.round_table(rows, lead.Fingerprints())
    assert t["calls"] == 4 and t["new_expert"] == 2 and t["topk_size"] == 2
    assert t["share_expert_topk"] == 0.5 and t["share_apprentice_topk"] == 0.5
    assert t["share_in_both_topk"] == 0.5 and t["share_pool_top10"] == 0.0
    assert t["diversity_apprentice"] == pytest.approx(1 - _tanimoto_by_hand("CCO", "CCN"))
    assert t["diversity_union_topk"] == pytest.approx(1 - _tanimoto_by_hand("c1ccccc1O", "CCO"))


def test_running_top10_and_the_call_of_overtaking(lead):
    assert lead.running_top_mean([0.1, 0.5, 0.3], k=2) == [0.1, 0.3, 0.4]
    assert lead.running_top_mean([0.1, 0.5, 0.3], k=2, budget=5) == [0.1, 0.3, 0.4, 0.4, 0.4]
    scores = [float(i % 7) for i in range(30)]
    curve = lead.running_top_mean(scores, 10)
    assert curve[-1] == pytest.approx(sum(sorted(scores)[-10:]) / 10)
    o = lead.overtake([1, 3, 2, 4, 5], [2, 2, 2, 3, 3])
    assert o == {"calls": 4, "leads_at_end": True, "lead_share": 0.6}
    assert lead.overtake([1, 2], [1, 2]) == {"calls": None, "leads_at_end": False,
                                             "lead_share": 0.0}
    assert lead.overtake([2, 3], [1, 2])["calls"] == 1


def test_the_analysis_of_tiny_runs_writes_the_one_format(prior, tmp_path, lead):
    for arm in ("gegl", "prior_only"):
        optimize(None, _args(prior, tmp_path, arm, budget=80, name=arm))
    out = tmp_path / "out"
    assert lead.main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    doc = json.loads((out / "gegl_lead.json").read_text())
    assert doc["benchmark"] == "gegl_lead" and (out / "gegl_lead.md").is_file()
    assert (out / "gegl_lead" / "qed.png").is_file()
    got = {(r["arm"], r["metric"]): r["mean"] for r in doc["rows"]}
    stored = json.loads((out / "gegl_lead" / "rounds.json").read_text())
    table = [dict(zip(stored["columns"], r)) for r in stored["runs"]["qed|0|80|gegl"]]
    last = table[-1]
    assert last["calls"] == 80 and got[("gegl", "rounds")] == len(table)
    assert got[("gegl", "share_expert_topk_final")] == pytest.approx(last["share_expert_topk"],
                                                                      abs=1e-4)
    assert sum(last[f"share_{o}_topk"] for o in ("expert", "apprentice", "pool")) == (
        pytest.approx(1.0, abs=1e-3))
    assert got[("prior_only", "share_expert_topk_final")] == 0.0
    assert ("gegl", "overtake_calls_vs_prior_only") in got
    assert got[("gegl", f"diversity_top{K}_calls_final")] > 0
    assert 1 <= got[("gegl", f"distinct_without_stereo_top{K}_calls_final")] <= K
    assert "gegl's running top-10 mean passes for good: prior_only: " in (
        out / "gegl_lead.md").read_text()
    # a group of the gegl run alone: no overtaking line (there is no other arm to pass)
    (gegl_run,) = (tmp_path / "runs").glob("gegl-*")
    assert lead.main([str(gegl_run), "--out", str(tmp_path / "alone")]) == 0
    assert "passes for good" not in (tmp_path / "alone" / "gegl_lead.md").read_text()


def test_cache_gives_the_run_folders_of_its_finished_units(lead, tmp_path, monkeypatch):
    monkeypatch.setattr(lead, "REPO", tmp_path / "checkout")
    here = tmp_path / "here-run"
    moved = tmp_path / "checkout" / "runs" / "bench" / "runs" / "median1-gegl-s1"
    here.mkdir()
    moved.mkdir(parents=True)
    cache = {
        "median1|graph_ga|0|500": {"run": str(here), "score": 0.3},
        # made under another checkout: found at the same runs/... path in this one
        "median1|gegl|1|500": {"run": "/elsewhere/repo/runs/bench/runs/median1-gegl-s1"},
        "median2|gegl|0|500": {"run": str(tmp_path / "gone")},
        "superseded": {"median1|lstm_hc|1|500": {"run": str(here)}},
        "invocations": [{"command": "x"}],
    }
    path = tmp_path / "cache.json"
    path.write_text(json.dumps(cache))
    paths, notes, names = lead.cache_run_dirs(path)
    assert paths == [moved, here]  # sorted by unit key; the superseded unit is left out
    assert notes == {"gone": "median2|gegl|0|500: run folder not on this machine, left out"}
    assert names == {"here-run", "median1-gegl-s1", "gone"}  # the superseded unit is no unit
    path.write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read it as JSON"):
        lead.cache_run_dirs(path)
    path.write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not a unit cache"):
        lead.cache_run_dirs(path)


def _two_seeds_of_two_arms(prior, tmp_path):
    """gegl and prior_only, seeds 0 and 1, 60 calls each, in ``tmp_path / "runs"``."""
    for seed in (0, 1):
        for arm in ("gegl", "prior_only"):
            optimize(None, _args(prior, tmp_path, arm, budget=60, seed=seed,
                                 name=f"{arm}-s{seed}"))
    return tmp_path / "runs"


def test_curve_change_points_give_back_the_running_top10(lead):
    g = torch.Generator().manual_seed(0)
    scores = [round(float(v), 2) for v in torch.rand(300, generator=g)]  # rounded: ties
    steps = lead.top_steps(scores)
    assert steps[0][0] == 1 and len(steps) < len(scores)
    for budget in (None, 120, 300, 500):
        assert lead.curve_from_steps(steps, len(scores), budget) == lead.running_top_mean(
            scores, 10, budget)
    assert lead.curve_from_steps([], 0, 50) == []


def test_a_later_analysis_carries_over_the_runs_whose_folders_are_gone(prior, tmp_path, lead):
    runs, out = _two_seeds_of_two_arms(prior, tmp_path), tmp_path / "out"
    assert lead.main(["--runs", str(runs), "--out", str(out)]) == 0
    first = json.loads((out / "gegl_lead.json").read_text())
    assert {e["source"] for e in first["per_run"].values()} == {"run folder"}
    assert set(json.loads((out / "gegl_lead" / "digests.json").read_text())["runs"]) == set(
        first["per_run"])
    # another machine: two of the four folders are gone
    for name in ("prior_only-s0", "gegl-s1"):
        (folder,) = runs.glob(f"{name}-*")
        shutil.rmtree(folder)
    assert lead.main(["--runs", str(runs), "--out", str(out)]) == 0
    second = json.loads((out / "gegl_lead.json").read_text())
    assert second["rows"] == first["rows"]  # the overtaking again from the kept curves
    sources = {k: e["source"] for k, e in second["per_run"].items()}
    assert sorted(k for k, s in sources.items() if s != "run folder") == [
        "qed|0|60|prior_only", "qed|1|60|gegl"]
    md = (out / "gegl_lead.md").read_text()
    assert "From the earlier analysis: prior_only (curve kept)." in md
    assert "2 of the 4 runs come from the earlier analysis" in md
    # --fresh: only the folders here
    assert lead.main(["--runs", str(runs), "--out", str(out), "--fresh"]) == 0
    assert set(json.loads((out / "gegl_lead.json").read_text())["per_run"]) == {
        "qed|0|60|gegl", "qed|1|60|prior_only"}


def test_an_analysis_written_before_per_run_figures_is_carried_over_from_its_rows(
        prior, tmp_path, lead):
    runs, out = _two_seeds_of_two_arms(prior, tmp_path), tmp_path / "out"
    assert lead.main(["--runs", str(runs), "--out", str(out)]) == 0
    doc = json.loads((out / "gegl_lead.json").read_text())
    want = {k: e["metrics"] for k, e in doc["per_run"].items()}
    # the format of the first analyses: no per_run, no digests
    del doc["per_run"]
    (out / "gegl_lead.json").write_text(json.dumps(doc))
    (out / "gegl_lead" / "digests.json").unlink()
    earlier, notes = lead.previous_analysis(out)
    assert notes == []
    assert {k: e["metrics"] for k, e in earlier.items()} == want
    assert all(e["steps"] is None and e["prior"] == prior for e in earlier.values())
    # gegl seed 0 from the old figures (no curve): the overtaking against the prior_only run
    # whose folder is here cannot be computed again, and is kept as it was
    (folder,) = runs.glob("gegl-s0-*")
    shutil.rmtree(folder)
    figure = (out / "gegl_lead" / "qed.png").read_bytes()
    assert lead.main(["--runs", str(runs), "--out", str(out)]) == 0
    assert (out / "gegl_lead" / "qed.png").read_bytes() == figure  # a run without its curve
    again = json.loads((out / "gegl_lead.json").read_text())
    assert again["rows"] == doc["rows"]
    assert again["per_run"]["qed|0|60|gegl"]["source"] == "earlier analysis"
    assert "From the earlier analysis: gegl (figures only)." in (out / "gegl_lead.md").read_text()
    # prior_only seed 0 made again (another run): the old overtaking figures of the carried gegl
    # run were against the run before, so they go
    (folder,) = runs.glob("prior_only-s0-*")
    shutil.rmtree(folder)
    optimize(None, _args(prior, tmp_path, "prior_only", budget=60, seed=0, name="prior_only-s0",
                         **{"gegl.n_apprentice": 12}))
    assert lead.main(["--runs", str(runs), "--out", str(out)]) == 0
    last = json.loads((out / "gegl_lead.json").read_text())["per_run"]["qed|0|60|gegl"]
    assert not any(m.startswith("overtake_calls_vs_") for m in last["metrics"])
    assert "prior_only: not computed" in (out / "gegl_lead.md").read_text()


def test_a_run_made_again_for_a_unit_stands_for_it(lead):
    assert lead.unit_name("median1-gegl-s0-20261207-045207") == "median1-gegl-s0"
    assert lead.unit_name("median1-gegl-s0-20261207-045207-2") == "median1-gegl-s0"
    assert lead.unit_name("qed") == "qed"


def test_a_run_made_again_for_a_cache_unit_stands_for_it_in_later_analyses(prior, tmp_path,
                                                                           lead):
    for arm in ("gegl", "prior_only"):
        optimize(None, _args(prior, tmp_path, arm, budget=60, name=f"{arm}-s0"))
    runs, out = tmp_path / "runs", tmp_path / "out"
    (gegl_run,) = runs.glob("gegl-s0-*")
    (again,) = runs.glob("prior_only-s0-*")
    gone = "prior_only-s0-20260101-000000"  # the unit's own folder, on another machine
    cache = tmp_path / "cache.json"
    cache.write_text(json.dumps({"qed|gegl|0|60": {"run": str(gegl_run)},
                                 "qed|prior_only|0|60": {"run": str(runs / gone)}}))
    assert lead.main(["--cache", str(cache), str(again), "--out", str(out)]) == 0
    doc = json.loads((out / "gegl_lead.json").read_text())
    assert doc["per_run"]["qed|0|60|prior_only"]["stands_for"] == gone
    assert doc["left_out"] == []  # the unit's missing folder is covered by its stand-in
    assert f"prior_only (`{again.name}` for `{gone}`)" in (out / "gegl_lead.md").read_text()
    # later, without the folder: carried over as the unit's stand-in
    shutil.rmtree(again)
    assert lead.main(["--cache", str(cache), "--out", str(out)]) == 0
    later = json.loads((out / "gegl_lead.json").read_text())
    assert later["rows"] == doc["rows"]
    assert later["per_run"]["qed|0|60|prior_only"]["source"] == "earlier analysis"
    # the unit run again under a new folder (the old one superseded): the stand-in is dropped
    cache.write_text(json.dumps({"qed|gegl|0|60": {"run": str(gegl_run)},
                                 "qed|prior_only|0|60": {"run": str(runs / "prior_only-s0-2")}}))
    assert lead.main(["--cache", str(cache), "--out", str(out)]) == 0
    last = json.loads((out / "gegl_lead.json").read_text())
    assert set(last["per_run"]) == {"qed|0|60|gegl"}
    assert any("no finished unit of the cache, dropped" in n for n in last["left_out"])
