"""benchmarks/gegl/guacamol_goal_directed.py (issue 24, part 2): our side of the bridge to
GuacaMol's goal-directed harness. The budgeted generator adapter runs a graph GA against fake
GuacaMol-like scoring functions on a small generated start population (offline, no prior); unit
naming, rows, the merge into the results file and the cost projection use made-up units. The
end-to-end exchange with GuacaMol's own benchmark object runs only where the GuacaMol venv is."""

import math
from pathlib import Path

import pytest

from conftest import load_bench_script
from selfsup.chem.molecules import canonical_smiles
from selfsup.chem.objectives import (
    get_objective,
    register_objective,
    unregister_objective,
)
from selfsup.errors import InputError

GUACAMOL_PYTHON = Path("/work/peers/guacamol-venv/bin/python")
# a small start population: substituted benzenes, pyridines and chains (all valid)
HEADS = ["c1ccccc1", "c1ccncc1", "C1CCCCC1", "c1ccoc1"]
TAILS = ["C", "CC", "CCO", "CN", "C(=O)O", "CCl", "OC", "C(F)(F)F", "CC(C)C", "N"]
POP = [f"{h}{t}" for h in HEADS for t in TAILS] + [f"{t}{h}" for h in HEADS for t in TAILS[:5]]


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("gegl", "guacamol_goal_directed.py")


class ListScorer:
    """GuacaMol-like: ``score_list``; the score is the share of heteroatoms among heavy atoms
    (deterministic, in [0, 1]); every SMILES it sees is kept."""

    def __init__(self):
        self.seen: list[str] = []

    @staticmethod
    def value(smiles: str) -> float:
        from rdkit import Chem

        mol = Chem.MolFromSmiles(smiles)
        atoms = [a.GetSymbol() for a in mol.GetAtoms()]
        return sum(s != "C" for s in atoms) / len(atoms)

    def score_list(self, smiles_list):
        items = list(smiles_list)
        self.seen += items
        return [self.value(s) for s in items]


class OneScorer:
    """GuacaMol-like with ``score`` only."""

    def __init__(self):
        self.n = 0

    def score(self, smiles):
        self.n += 1
        return ListScorer.value(smiles)


def _generate(bench, scorer, tmp_path, n=20, budget=60, seed=0, pop=POP):
    return bench.generate(scorer, n, pop, arm="graph_ga", seed=seed, budget=budget, prior=None,
                          run_root=tmp_path, name="fake-graph_ga-s0", objective="test_goal_fake",
                          overrides=("graph_ga.population_size=20", "graph_ga.offspring_size=10"))


def test_generator_adapter_spends_the_budget_and_returns_the_best(bench, tmp_path):
    scorer = ListScorer()
    mols, info = _generate(bench, scorer, tmp_path)
    # the budget is the number of unique molecules GuacaMol's function scored
    assert len(scorer.seen) == len(set(scorer.seen)) == info["n_calls"] == 60
    assert info["stopped"] == "budget" and info["resumed"] is False
    assert info["n_returned"] == len(mols) == 20
    # the answer: the best-scored molecules, best first, one per molecule without stereo
    scores = [ListScorer.value(s) for s in mols]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(max(ListScorer.value(s) for s in scorer.seen))
    assert len({canonical_smiles(s, keep_stereo=False) for s in mols}) == 20
    # the run folder of the code path of selfsup chem optimize, with the registered objective
    run = Path(info["run"])
    assert run.parent == tmp_path and run.name.startswith("fake-graph_ga-s0-")
    assert (run / "oracle_calls.csv").is_file() and (run / "artefacts/molecules.csv").is_file()
    assert (tmp_path / "fake-graph_ga-s0.start.smi").read_text().split() == POP
    # the name is this call's only: gone afterwards
    with pytest.raises(InputError):
        get_objective("test_goal_fake")


def test_generator_adapter_reuses_a_finished_run_without_scoring_again(bench, tmp_path):
    first = ListScorer()
    mols, info = _generate(bench, first, tmp_path)
    again = ListScorer()
    mols2, info2 = _generate(bench, again, tmp_path)
    assert again.seen == [] and mols2 == mols and info2["run"] == info["run"]
    # flagged: this process only ranked the molecules, so its CPU seconds are not the unit's
    assert info["reused"] is False and info2["reused"] is True and info2["resumed"] is False
    other = ListScorer()  # another budget is another run
    _, info3 = _generate(bench, other, tmp_path, budget=40)
    assert info3["run"] != info["run"] and info3["n_calls"] == len(other.seen) == 40


class DyingScorer(ListScorer):
    """Fails on its ``fail_at``-th batch, like a GuacaMol worker that is killed."""

    def __init__(self, fail_at):
        super().__init__()
        self.batches, self.fail_at = 0, fail_at

    def score_list(self, smiles_list):
        self.batches += 1
        if self.batches == self.fail_at:
            raise RuntimeError("the GuacaMol worker ended")
        return super().score_list(smiles_list)


def test_generator_adapter_resumes_a_killed_unit_from_its_record(bench, tmp_path):
    every = ("checkpoint_every=20",)
    ref = ListScorer()  # the same unit without interruption
    want, _ = bench.generate(ref, 20, POP, arm="graph_ga", seed=0, budget=60, prior=None,
                             run_root=tmp_path / "ref", name="u", objective="test_goal_ref",
                             overrides=("graph_ga.population_size=20",
                                        "graph_ga.offspring_size=10", *every))
    dying = DyingScorer(fail_at=4)
    kw = dict(arm="graph_ga", seed=0, budget=60, prior=None, run_root=tmp_path / "k", name="u",
              objective="test_goal_k", overrides=("graph_ga.population_size=20",
                                                  "graph_ga.offspring_size=10", *every))
    with pytest.raises(RuntimeError, match="worker ended"):
        bench.generate(dying, 20, POP, **kw)
    (run,) = (tmp_path / "k").glob("u-2*")
    saved = [ln.split(",")[1] for ln in (run / "oracle_calls.csv").read_text().splitlines()[1:]]
    assert 0 < len(saved) < 60
    again = ListScorer()
    mols, info = bench.generate(again, 20, POP, **kw)
    assert info["resumed"] is True and info["run"] == str(run) and info["n_calls"] == 60
    assert info["reused"] is False
    # the replay asked GuacaMol only for what the record lacked, and ended where the
    # uninterrupted unit ended
    assert not set(again.seen) & set(saved)
    assert set(saved) | set(again.seen) == set(ref.seen) and mols == want


def test_generator_adapter_takes_a_score_only_function(bench, tmp_path):
    scorer = OneScorer()
    mols, info = _generate(bench, scorer, tmp_path, n=10, budget=30)
    assert scorer.n == info["n_calls"] == 30 and len(mols) == 10


def test_generator_adapter_refuses_more_molecules_than_the_budget(bench, tmp_path):
    with pytest.raises(ValueError, match="budget"):
        _generate(bench, ListScorer(), tmp_path, n=61, budget=60)


def test_best_unique_drops_stereo_isomers_of_earlier_molecules(bench):
    ranked = ["C[C@H](N)O", "C[C@@H](N)O", "CC(N)O", "CCO", "not a smiles", "OCC"]
    assert bench.best_unique(ranked, 5) == ["C[C@H](N)O", "CCO"]
    assert bench.best_unique(ranked, 1) == ["C[C@H](N)O"]


def test_unit_names_and_tasks(bench):
    gegl = load_bench_script("gegl")
    assert tuple(bench.TASKS) == gegl.HARDEST  # the PMO benchmark's eight hardest tasks
    assert bench.TASKS["median1"] == "Median molecules 1"
    assert bench.TASKS["osimertinib_mpo"] == "Osimertinib MPO"
    assert bench.unit_key("median2", "gegl", 1, 50000) == "median2|gegl|1|50000"
    assert bench.unit_name("median2", "gegl", 1) == "median2-gegl-s1"
    assert bench.objective_name("zaleplon_mpo") == "guacamol_v2_goal_zaleplon_mpo"
    assert bench.setting_name(50000) == "guacamol-v2/50k-calls"
    assert bench.setting_name(2500) == "guacamol-v2/2500-calls"


def _unit(score, wall, calls=1000, top1=None):
    return {"score": score, "top1": top1 if top1 is not None else score + 0.1,
            "wall_seconds": wall, "n_calls": calls}


def _cache(bench):
    k = bench.unit_key
    return {"prior": {"path": "p"}, "invocations": [],
            k("median1", "gegl", 0, 1000): _unit(0.3, 10.0),
            k("median1", "gegl", 1, 1000): _unit(0.5, 30.0),
            k("osimertinib_mpo", "gegl", 0, 1000): _unit(0.8, 20.0),
            # seed 1 of osimertinib for gegl is missing
            k("median1", "graph_ga", 0, 1000): _unit(0.2, 4.0, calls=500),
            k("osimertinib_mpo", "graph_ga", 0, 1000): _unit(0.7, 6.0),
            k("median1", "graph_ga", 0, 2000): _unit(0.9, 99.0)}  # another budget


def test_rows_per_task_and_sums_over_complete_seeds(bench):
    rows, missing = bench.build_rows(_cache(bench), ["median1", "osimertinib_mpo"],
                                     ["gegl", "graph_ga"], [0, 1], 1000)
    by = {(r["arm"], r["metric"]): r for r in rows}
    assert {r["setting"] for r in rows} == {"guacamol-v2/1k-calls"}
    assert by["gegl", "score_median1"]["seeds"] == [0.3, 0.5]
    assert by["gegl", "score_median1"]["mean"] == pytest.approx(0.4)
    assert by["gegl", "score_median1"]["std"] == pytest.approx(math.sqrt(0.02))
    assert by["gegl", "top1_osimertinib_mpo"]["seeds"] == [pytest.approx(0.9)]
    assert by["gegl", "wall_seconds_median1"]["seeds"] == [10.0, 30.0]
    assert by["graph_ga", "calls_median1"]["seeds"] == [500]
    assert by["gegl", "score_sum"]["seeds"] == [pytest.approx(1.1)]  # seed 0 only
    assert by["gegl", "wall_seconds"]["seeds"] == [30.0]
    assert by["graph_ga", "score_sum"]["seeds"] == [pytest.approx(0.9)]
    assert "score_median1" in {m for a, m in by if a == "graph_ga"}
    assert sorted(missing) == ["median1|graph_ga|1|1000", "osimertinib_mpo|gegl|1|1000",
                               "osimertinib_mpo|graph_ga|1|1000"]
    # a resumed unit's wall time is the working time of all its processes where recorded
    cache = _cache(bench)
    cache[bench.unit_key("median1", "gegl", 1, 1000)]["work_seconds"] = 45.0
    rows, _ = bench.build_rows(cache, ["median1"], ["gegl"], [0, 1], 1000)
    by = {(r["arm"], r["metric"]): r for r in rows}
    assert by["gegl", "wall_seconds_median1"]["seeds"] == [10.0, 45.0]
    assert bench.seconds_per_1k(cache, ["gegl"], 1000) == {"gegl": pytest.approx(25.0)}


def test_seconds_per_thousand_calls_and_projection(bench):
    per = bench.seconds_per_1k(_cache(bench), ["gegl", "graph_ga", "reinvent"], 1000)
    assert per == {"gegl": pytest.approx(20.0), "graph_ga": pytest.approx(1000 * 10 / 1500)}
    assert bench.seconds_per_1k(_cache(bench), ["graph_ga"])["graph_ga"] == pytest.approx(
        1000 * 109 / 2500)  # every budget
    k = bench.unit_key
    timed = {k("a", "gegl", 0, 1000): {"wall_seconds": 9.0, "n_calls": 1000, "cpu_seconds": 3.0,
                                       "worker_cpu_seconds": 1.0},
             k("b", "gegl", 0, 1000): {"wall_seconds": 9.0, "n_calls": 1000}}  # no CPU record
    assert bench.seconds_per_1k(timed, ["gegl"], cpu=True) == {"gegl": pytest.approx(4.0)}
    assert bench.seconds_per_1k(timed, ["gegl"]) == {"gegl": pytest.approx(9.0)}
    # a unit resumed after a kill counts its last process's CPU only: left out of the CPU figure
    timed[k("c", "gegl", 0, 1000)] = {"wall_seconds": 5.0, "work_seconds": 20.0, "n_calls": 1000,
                                      "cpu_seconds": 1.0, "worker_cpu_seconds": 0.0,
                                      "resumed": True}
    assert bench.seconds_per_1k(timed, ["gegl"], cpu=True) == {"gegl": pytest.approx(4.0)}
    assert bench.seconds_per_1k(timed, ["gegl"]) == {"gegl": pytest.approx(1000 * 38 / 3000)}
    # so does a unit taken from a finished run folder (its CPU seconds: the ranking only)
    timed[k("d", "gegl", 0, 1000)] = {"wall_seconds": 4.0, "n_calls": 1000, "cpu_seconds": 0.1,
                                      "worker_cpu_seconds": 0.0, "reused": True}
    assert bench.seconds_per_1k(timed, ["gegl"], cpu=True) == {"gegl": pytest.approx(4.0)}
    assert bench.seconds_per_1k(timed, ["gegl"]) == {"gegl": pytest.approx(1000 * 42 / 4000)}
    timed.pop(k("a", "gegl", 0, 1000))
    assert bench.seconds_per_1k(timed, ["gegl"], cpu=True) == {}
    # 8 tasks x 2 seeds x 50 thousand calls
    assert bench.projection({"a": 36.0, "b": 9.0}) == pytest.approx(45 * 50 * 16 / 3600)
    assert bench.projection({"a": 36.0}, n_tasks=1, n_seeds=1, budget=1000) == pytest.approx(0.01)


def test_notes_put_published_scores_beside_ours(bench):
    text = bench.notes_text(_cache(bench), ["median1", "osimertinib_mpo"], ["gegl", "graph_ga"],
                            [0, 1], 1000, {"source": "test prior"}, ["x"], quick=True)
    assert "| task | gegl | graph_ga | published graph_ga | published smiles_lstm_hc |" in text
    # ours (mean +- std over the seeds), then GuacaMol's published baselines
    assert "| Median molecules 1 (`median1`) | 0.400 +- 0.141 | 0.200 | 0.406 | 0.438 |" in text
    assert "| sum over the tasks | 1.100 | 0.900 | 1.359 | 1.345 |" in text
    assert "GEGL: the GEGL paper's table could not be read here" in text
    assert "Missing units (1): x." in text
    assert "| unique calls per unit, mean | 1.0k | 0.8k | - | - |" in text
    # a unit that stopped before the budget is named with its calls and reason
    assert "and spent all of it but these" in text
    assert "median1|graph_ga|0|1000 at 500 calls (?)" in text
    full = {k: v for k, v in _cache(bench).items() if k != bench.unit_key("median1", "graph_ga",
                                                                         0, 1000)}
    text = bench.notes_text(full, ["median1"], ["gegl"], [0, 1], 1000, {}, [], quick=False)
    assert "and spent all of it." in text and "Units resumed" not in text
    full[bench.unit_key("median1", "gegl", 1, 1000)]["work_seconds"] = 45.0  # resumed once
    text = bench.notes_text(full, ["median1"], ["gegl"], [0, 1], 1000, {}, [], quick=False)
    assert "adds up the working time of every process" in text
    assert text.count("median1|gegl|1|1000") == 1
    assert "Units taken from a run folder" not in text
    full[bench.unit_key("median1", "gegl", 0, 1000)]["reused"] = True
    text = bench.notes_text(full, ["median1"], ["gegl"], [0, 1], 1000, {}, [], quick=False)
    assert "count the ranking of the answer only" in text
    assert text.count("median1|gegl|0|1000") == 1
    # units that ran on two CPUs: the census says so, as their times do not compare
    assert "Units by provenance: 2 without provenance" in text and "one CPU" not in text
    for seed, cpu in ((0, "25/17/1"), (1, "26/2/1")):
        full[bench.unit_key("median1", "gegl", seed, 1000)]["provenance"] = {
            "torch": "2.x", "torch_cpu_capability": "AVX512", "cpu_model": "CPU",
            "cpu_id": cpu, "torch_threads": 1}
    text = bench.notes_text(full, ["median1"], ["gegl"], [0, 1], 1000, {}, [], quick=False)
    assert ("Units by provenance: 1 torch 2.x (AVX512 kernels) on CPU [25/17/1], 1 thread(s); "
            "1 torch 2.x (AVX512 kernels) on CPU [26/2/1], 1 thread(s). Their times are "
            "comparable only within one CPU.") in text


def test_register_objective_for_this_process():
    with pytest.raises(InputError, match="built in"):
        register_objective("osimertinib_mpo", lambda: None)
    with pytest.raises(InputError, match="built in"):
        register_objective("Median molecules 1", lambda: None)  # GuacaMol's name of median1
    with pytest.raises(InputError, match="built in"):
        register_objective("constrained_plogp_gegl", lambda: None)  # a parameterised family
    from selfsup.chem.objectives.adapters import FunctionObjective

    key = register_objective("Test Goal-X", lambda: FunctionObjective(len, name="len"))
    try:
        assert key == "test_goal_x"
        assert get_objective("test_goal_x")("CCO") == 3.0
        with pytest.raises(InputError, match="already registered"):
            register_objective("test_goal_x", lambda: None)
        register_objective("test_goal_x", lambda: FunctionObjective(lambda s: 1.0), replace=True)
        assert get_objective("Test Goal X")("CCO") == 1.0
    finally:
        unregister_objective("test_goal_x")
    with pytest.raises(InputError, match="unknown objective"):
        get_objective("test_goal_x")


@pytest.mark.skipif(not GUACAMOL_PYTHON.is_file(),
                    reason="needs the GuacaMol venv (benchmarks/peers/make_guacamol_venv.sh): "
                           "guacamol is not installed in .venv")
def test_worker_runs_guacamols_own_benchmark(bench, tmp_path):
    """GuacaMol's Osimertinib MPO benchmark asks for 100 molecules, scores ours on request with
    its own function (equal to our RDKit objective), then scores the answer itself: 3 unique
    molecules, the rest padded with zeros."""
    ours = get_objective("osimertinib_mpo")
    chan = bench.WorkerChannel(str(GUACAMOL_PYTHON), {"benchmark": "Osimertinib MPO"},
                               tmp_path / "w.log")
    try:
        req = chan.receive("generate")
        assert req == {"op": "generate", "number_molecules": 100, "starting_population": None}
        remote = bench.RemoteScoringFunction(chan)
        mols = ["CCOc1ccccc1NC(=O)C=C", "CN(C)CCN(C)c1cc(Nc2ncccn2)ccc1", "c1ccccc1O"]
        scores = remote.score_list(mols)
        assert scores == pytest.approx([ours(s) for s in mols], abs=1e-9)
        assert remote.score_list([]) == [] and remote.n_scored == 3
        chan.send({"op": "molecules", "smiles": mols + [mols[0]]})  # a duplicate is dropped
        res = chan.receive("result")
    finally:
        assert chan.close() == 0
    top = sorted(scores, reverse=True)
    want = (top[0] + sum(top) / 10 + sum(top) / 100) / 3
    assert res["score"] == pytest.approx(want, abs=1e-9)
    assert res["number_scoring_function_calls"] == 3  # our requests (the answer is scored apart)
    assert res["top_counts"] == [1, 10, 100] and res["versions"]["guacamol"] == "0.5.5"


def test_matching_runs_skips_a_run_of_another_speed_setting(bench, tmp_path):
    """A killed unit run under float32 is not resumed by a --bf16 runner (nor the reverse)."""
    import yaml

    from selfsup.chem.optimize import BF16_SPEED_OVERRIDES

    want = {"budget": 100, "optimizer": "gegl", "seed": 0}
    configs = {
        "u-gegl-s0-20260101-000000": {**want},  # float32: the library's defaults
        "u-gegl-s0-20260102-000000": {**want, "gegl": {"imitation_precision": "bf16",
                                                       "imitation_length_groups": 1},
                                      "lstm_hc": {"precision": "bf16"},
                                      "reinvent": {"precision": "bf16"}},
        "u-gegl-s0-20260103-000000": {**want, "budget": 200},  # another budget
    }
    for name, cfg in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text("{}")
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    fp32 = bench._matching_runs(tmp_path, "u-gegl-s0", want)
    bf16 = bench._matching_runs(tmp_path, "u-gegl-s0", want, tuple(BF16_SPEED_OVERRIDES))
    assert [p.name for p in fp32] == ["u-gegl-s0-20260101-000000"]
    assert [p.name for p in bf16] == ["u-gegl-s0-20260102-000000"]


def test_matching_runs_skips_a_run_of_other_arm_settings(bench, tmp_path):
    """A killed lstm_hc unit run with the optimiser's 1k-10k defaults is not resumed under this
    protocol's settings (GuacaMol's baseline sizes), nor the reverse."""
    import yaml

    want = {"budget": 100, "optimizer": "lstm_hc", "seed": 0}
    protocol = bench.ARM_SETTINGS["lstm_hc"]
    assert "lstm_hc.n_samples=1024" in protocol and "lstm_hc.keep_top=512" in protocol
    configs = {"u-lstm_hc-s0-20260101-000000": {**want, "lstm_hc": {"n_samples": 256,
                                                                     "keep_top": 128,
                                                                     "batch_size": 64}},
               "u-lstm_hc-s0-20260102-000000": {**want, "lstm_hc": {"n_samples": 1024,
                                                                     "keep_top": 512,
                                                                     "batch_size": 256,
                                                                     "stale_rounds": 200}},
               # GuacaMol's sizes but the default top-10 rule (1,000 rounds)
               "u-lstm_hc-s0-20260103-000000": {**want, "lstm_hc": {"n_samples": 1024,
                                                                     "keep_top": 512,
                                                                     "batch_size": 256,
                                                                     "stale_rounds": 1000}}}
    for name, cfg in configs.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text("{}")
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert [p.name for p in bench._matching_runs(tmp_path, "u-lstm_hc-s0", want, protocol)] == [
        "u-lstm_hc-s0-20260102-000000"]
    assert [p.name for p in bench._matching_runs(
        tmp_path, "u-lstm_hc-s0", want, ("lstm_hc.n_samples=256", "lstm_hc.keep_top=128",
                                         "lstm_hc.batch_size=64"))] == [
        "u-lstm_hc-s0-20260101-000000"]


def test_units_of_other_arm_settings_are_superseded_and_named(bench):
    """A cached unit made under other arm settings than the protocol's (one without the record:
    the optimiser defaults) leaves the tables for ``superseded``, so it is run again; the report
    names it with its score, calls and stop reason, and gives the protocol's settings."""
    k = bench.unit_key
    old = {"score": 0.359, "n_calls": 3661, "stopped": "no new molecule in 20 rounds",
           "wall_seconds": 529.0}
    new = {"score": 0.41, "top1": 0.42, "n_calls": 1000, "wall_seconds": 9.0,
           "arm_settings": list(bench.ARM_SETTINGS["lstm_hc"])}
    # no record: gegl has no protocol settings
    gegl = {"score": 0.40, "top1": 0.4, "n_calls": 1000, "wall_seconds": 9.0}
    cache = {k("median1", "lstm_hc", 0, 1000): old, k("median1", "lstm_hc", 1, 1000): new,
             k("median1", "gegl", 0, 1000): gegl, "invocations": []}
    settled = bench.settle(cache)
    assert k("median1", "lstm_hc", 0, 1000) not in settled
    assert settled["superseded"] == {k("median1", "lstm_hc", 0, 1000): old}
    assert settled[k("median1", "lstm_hc", 1, 1000)] is new
    assert settled[k("median1", "gegl", 0, 1000)] is gegl
    assert bench.settle(settled) == settled  # idempotent
    rows, missing = bench.build_rows(settled, ["median1"], ["lstm_hc"], [0, 1], 1000)
    assert missing == [k("median1", "lstm_hc", 0, 1000)]
    assert [r["seeds"] for r in rows if r["metric"] == "score_median1"] == [[0.41]]
    text = bench.notes_text(settled, ["median1"], ["gegl", "lstm_hc"], [0, 1], 1000, {},
                            missing, quick=False)
    assert ("lstm_hc: `lstm_hc.n_samples=1024 lstm_hc.keep_top=512 lstm_hc.batch_size=256 "
            "lstm_hc.stale_rounds=200` (GuacaMol's own SMILES LSTM hill-climbing baseline") in text
    assert "reinvent" not in text  # not an arm of this report
    assert ("median1|lstm_hc|0|1000 with `the defaults`: score 0.359 at 3,661 calls (no new "
            "molecule in 20 rounds)") in text
    # another budget's superseded units belong to another setting's report
    assert "Superseded" not in bench.notes_text(settled, ["median1"], ["lstm_hc"], [0, 1], 2000,
                                                {}, [], quick=False)


def test_a_unit_set_aside_with_a_reason_stays_out_and_is_named(bench, tmp_path):
    """--supersede KEY --because TEXT moves a unit to ``superseded`` with its reason, so it runs
    again; a runner that read the cache before and brings the old copy back (same run folder)
    does not put it back in the tables; a new unit of the key does."""
    import json

    k = bench.unit_key("ranolazine_mpo", "graph_ga", 0, 1000)
    unit = {"score": 0.93, "top1": 0.94, "n_calls": 1000, "wall_seconds": 9.0,
            "arm_settings": list(bench.ARM_SETTINGS.get("graph_ga", ())), "run": "/r/old"}
    path = tmp_path / "gegl_guacamol_cache.json"
    path.write_text(json.dumps({k: unit, "invocations": []}))
    with pytest.raises(SystemExit, match="needs --because"):
        bench.supersede(path, [k], " ")
    with pytest.raises(SystemExit, match="no such unit"):
        bench.supersede(path, ["median1|graph_ga|0|1000"], "x")
    assert bench.main(["--supersede", k, "--because", "not reproduced by a rerun",
                       "--out", str(tmp_path)]) == 0
    cache = json.loads(path.read_text())
    assert k not in cache and cache["superseded"][k]["superseded_because"] == (
        "not reproduced by a rerun")
    stale = bench.settle({**cache, k: unit})  # a runner's old copy merged back
    assert k not in stale
    fresh = bench.settle({**cache, k: {**unit, "run": "/r/new", "score": 0.94}})
    assert fresh[k]["score"] == 0.94
    text = bench.notes_text(stale, ["ranolazine_mpo"], ["graph_ga"], [0], 1000, {}, [k],
                            quick=False)
    assert ("ranolazine_mpo|graph_ga|0|1000 (not reproduced by a rerun): score 0.930 at 1,000 "
            "calls") in text


def test_verify_runs_committed_units_again_and_compares(bench, tmp_path, monkeypatch, capsys):
    """--verify re-runs the cheapest graph GA unit by default (its figures involve no torch),
    with the committed prior, into a scratch unit cache that a second call reuses; the committed
    cache stays as it was."""
    import argparse
    import json

    import common  # benchmarks/common.py, on the path the script puts it on

    prior = tmp_path / "model.pt"
    prior.write_text("not read")
    results = tmp_path / "results"
    results.mkdir()
    settings = {a: list(v) for a, v in bench.ARM_SETTINGS.items()}
    cache = {"prior": {"path": str(prior)}, "speed": "bf16", "invocations": [],
             "median1|graph_ga|0|1000": {"score": 0.38, "n_calls": 1000, "unit_seconds": 30.0,
                                         "arm_settings": settings.get("graph_ga", [])},
             "median1|graph_ga|1|1000": {"score": 0.37, "n_calls": 1000, "unit_seconds": 50.0,
                                         "arm_settings": settings.get("graph_ga", [])},
             "median1|gegl|0|1000": {"score": 0.39, "n_calls": 1000, "unit_seconds": 9.0,
                                     "arm_settings": settings.get("gegl", [])}}
    (results / "gegl_guacamol_cache.json").write_text(json.dumps(cache))
    monkeypatch.setattr(common, "RESULTS", results)
    calls = []

    def fake_run_unit(task, arm, seed, budget, prior_path, run_root, python, threads, overrides):
        calls.append((task, arm, seed, budget, prior_path, overrides))
        return {"score": 0.3812, "n_calls": 1000, "wall_seconds": 3.0}

    monkeypatch.setattr(bench, "run_unit", fake_run_unit)
    python = tmp_path / "python"
    python.write_text("")
    args = argparse.Namespace(tasks=None, arms=None, seeds=None, budget=None, prior=None,
                              verify_per_arm=1, out=str(tmp_path / "v"), threads=1,
                              guacamol_python=str(python))
    assert bench.verify(args) == 0
    assert [c[:5] for c in calls] == [("median1", "graph_ga", 0, 1000, str(prior))]
    doc = json.loads((tmp_path / "v" / "gegl_guacamol_verify.json").read_text())
    assert doc["summary"]["verdict"] == "1 of 2 figures differ"  # score differs, n_calls equal
    assert "| median1|graph_ga|0|1000 | score | 0.38 | 0.3812 |" in capsys.readouterr().out
    assert bench.verify(args) == 0 and len(calls) == 1  # the scratch cache's unit is reused
    assert json.loads((results / "gegl_guacamol_cache.json").read_text()) == cache
    with pytest.raises(SystemExit, match="no unit"):
        bench.verify(argparse.Namespace(**{**vars(args), "tasks": ["zaleplon_mpo"]}))
