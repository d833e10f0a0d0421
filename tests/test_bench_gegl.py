"""The GEGL benchmark script: merge of runners sharing a cache, summary, unit reuse (the per-unit
lock and the unit loop: tests/test_bench_common.py)."""

import json
import sys

import pytest

from conftest import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("gegl")


def _unit(auc, top10, top1=0.5, wall=60.0, top3=None, calls=100):
    u = {"auc_top10": auc, "top10_mean": top10, "top1": top1, "wall_seconds": wall,
         "n_calls": calls}
    if top3 is not None:
        u["top3_mean"] = top3
    return u


def test_summary_table_means_sums_and_missing_cells(bench):
    cache = {
        "median1|gegl|0|100": _unit(0.30, 0.40, wall=120),
        "median1|gegl|1|100": _unit(0.34, 0.42, wall=60, calls=40),
        "zaleplon_mpo|gegl|0|100": _unit(0.50, 0.60, wall=60),
        "zaleplon_mpo|gegl|1|100": {**_unit(0.54, 0.64, wall=0, calls=60),
                                    "stopped": "top-10 unchanged for 1000 rounds"},
        "median1|graph_ga|0|100": _unit(0.20, 0.25),  # seed 1 and zaleplon missing
        "penalized_logp_gegl|gegl|0|50": _unit(0, 0, top1=10.0, top3=8.0),
        "penalized_logp_gegl|gegl|1|50": _unit(0, 0, top1=12.0, top3=9.0),
        "penalized_logp_gegl|reinvent|0|50": _unit(0, 0, top1=99.0, top3=99.0),  # not a plogp arm
    }
    md = bench.summary_table(cache, ["median1", "zaleplon_mpo"], ["gegl", "graph_ga", "reinvent"],
                             [0, 1], 100, 50, ["gegl", "graph_ga"]).splitlines()
    assert md[0] == "| task | gegl | graph_ga | reinvent |"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md[2:]]
    rows = {c[0]: c[1:] for c in cells}
    # mean +- sample std of (0.30, 0.34) = 0.320 +- 0.028; top-10 mean 0.41; one seed: no std
    assert rows["median1"] == ["0.320 +- 0.028 (0.410)", "0.200 (0.250) (n=1)", "-"]
    assert rows["zaleplon_mpo"][1:] == ["-", "-"]
    # per-seed sums 0.80 and 0.88 -> 0.840 +- 0.057; graph_ga has no seed with every task
    assert rows["sum over the tasks above"] == ["**0.840 +- 0.057**", "-", "-"]
    assert rows["top-10 mean at the end, sum over the tasks"] == ["1.030 +- 0.042", "-", "-"]
    stopped = ("runs that stopped before the budget: no new molecule in 20 rounds, or the top-10 "
               "unchanged for 1,000 (their mean calls)")
    assert rows[stopped] == ["2/4 (50 calls; 1 on the top-10 rule)", "0/1", "-"]
    assert rows["optimiser minutes per unit, mean"][0] == "1.0"  # (120+60+60+0)/4 s
    plogp = rows["penalized logP (GEGL form, SMILES <= 100), 50 calls: top-1 / top-3 mean"]
    assert plogp == ["11.00 +- 1.41 / 8.50 +- 0.71", "-", "-"]


def test_merge_keeps_units_of_both_runners_and_the_finished_invocation(bench, tmp_path):
    path = tmp_path / "cache.json"
    start = {"started": "t0", "command": "python run.py --seeds 1", "seconds": None}
    path.write_text(json.dumps({"a|gegl|0|10": {"auc_top10": 0.1}, "invocations": [start]}))
    mine = {"b|gegl|1|10": {"auc_top10": 0.2},
            "invocations": [{**start, "seconds": 12.5},
                            {"started": "t1", "command": "python run.py", "seconds": None}]}
    merged = bench.merge_cache(path, mine)
    assert {"a|gegl|0|10", "b|gegl|1|10"} <= set(merged)
    assert merged["invocations"] == [{**start, "seconds": 12.5},
                                     {"started": "t1", "command": "python run.py",
                                      "seconds": None}]
    notes = bench.make_notes(["median1"], ["gegl"], [0], 10, 0, {}, [], False, merged)
    assert "Started t0: 0.2 min (`python run.py --seeds 1`)." in notes
    assert "Started t1: stopped before its end, or still running" in notes


def test_speed_settings_match_run_configs(bench):
    from selfsup.chem.optimize import BF16_SPEED_OVERRIDES

    bf16 = bench.speed_overrides(True)
    assert bf16 == tuple(BF16_SPEED_OVERRIDES) and bench.speed_overrides(False) == ()
    old = {"gegl": {"n_apprentice": 100}}  # a config from before the settings existed: float32
    assert bench.has_settings(old, ()) and not bench.has_settings(old, bf16)
    new = {"gegl": {"imitation_precision": "bf16", "imitation_length_groups": 1},
           "lstm_hc": {"precision": "bf16"}, "reinvent": {"precision": "bf16"}}
    assert bench.has_settings(new, bf16) and not bench.has_settings(new, ())
    half = {**new, "reinvent": {"precision": "32"}}
    assert not bench.has_settings(half, bf16)
    grouped = {**new, "lstm_hc": {"precision": "bf16", "length_groups": 4}}
    assert not bench.has_settings(grouped, bf16)  # another setting than --bf16's


def test_run_unit_reuses_only_a_run_with_the_same_speed_settings(bench, monkeypatch, tmp_path):
    import yaml

    import selfsup.chem.optimize as opt

    run = tmp_path / "median1-gegl-s0-20261206-120000"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"status": "finished", "kind": "optimize"}))
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"budget": 100, "prior": "p.pt", "max_smiles_length": None, "gegl": {}}))
    (run / "results.json").write_text(json.dumps(
        {"auc_top10": 0.5, "top10_mean": 0.6, "top1": 0.7, "wall_seconds": 1.0, "top10": []}))
    seen = []

    def fake_optimize(config, overrides):
        seen.append(list(overrides))
        raise RuntimeError("stop")

    monkeypatch.setattr(opt, "optimize", fake_optimize)
    got = bench.run_unit("median1", "gegl", 0, 100, "p.pt", tmp_path)  # float32: reused
    assert got["auc_top10"] == 0.5 and got["run"] == str(run) and not seen
    with pytest.raises(RuntimeError):  # bf16: that run is not reused, a new one starts
        bench.run_unit("median1", "gegl", 0, 100, "p.pt", tmp_path, bench.speed_overrides(True))
    assert seen[0][-3:] == list(bench.speed_overrides(True))


def test_named_full_run_and_mixed_speed_cache_is_refused(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["run.py", "--name", "GEGL-strong"])
    with pytest.raises(SystemExit, match="--name GEGL-strong"):
        bench.main()
    cache = tmp_path / "gegl_cache.json"
    prior = tmp_path / "model.pt"
    prior.write_bytes(b"x")
    cache.write_text(json.dumps({"prior": {"path": str(prior)}, "speed": "fp32",
                                 "median1|gegl|0|100": {"auc_top10": 0.5}}))
    monkeypatch.setattr(sys, "argv", ["run.py", "--out", str(tmp_path), "--prior", str(prior),
                                      "--bf16", "--tasks", "median1", "--budget", "100"])
    with pytest.raises(SystemExit, match="speed setting 'fp32'"):
        bench.main()


def test_a_unit_resumed_after_a_kill_counts_the_work_of_every_process(bench, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("TZ", "UTC")  # the log's times are local
    import time

    time.tzset()
    run = tmp_path / "median1-gegl-s0-20261207-100000"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "status": "finished", "started": "2026-12-07T10:00:00+00:00",
        "resumed": ["2026-12-07T18:00:00+00:00"], "finished_at": "2026-12-07T18:00:30+00:00"}))
    (run / "log.txt").write_text("2026-12-07 10:00:01,000 INFO optimizer gegl\n"
                                 "2026-12-07 10:01:00,000 INFO gegl round 3\n"
                                 "2026-12-07 18:00:00,500 INFO resumed\n")
    res = {"auc_top10": 0.5, "top10_mean": 0.6, "top1": 0.7, "wall_seconds": 30.0, "top10": []}
    try:
        unit = bench._summary(res, run, resumed=True)
        assert unit["work_seconds"] == pytest.approx(60.0 + 30.0) and not unit["reused"]
        rows, _ = bench.build_rows({"median1|gegl|0|100": unit}, ["median1"], ["gegl"], [0],
                                   100, 0, [])
        wall = [r for r in rows if r["metric"] == "wall_seconds"]
        assert wall[0]["mean"] == pytest.approx(90.0)  # both processes, not the last one's 30
        once = {**unit, "work_seconds": None}
        (run / "run.json").write_text(json.dumps({"status": "finished"}))
        assert bench._summary(res, run, resumed=False, reused=True)["work_seconds"] is None
        notes = bench.make_notes(["median1"], ["gegl"], [0], 100, 0, {}, [], False,
                                 {"median1|gegl|0|100": unit, "median1|gegl|1|100": once,
                                  "median1|gegl|2|100": {**res, "resumed": True}})
        assert "from the run's log: median1|gegl|0|100." in notes
        assert "their last process's: median1|gegl|2|100." in notes
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_beside_table_ranks_the_arms_under_each_prior_on_paired_seeds(bench):
    def cache(figs):  # figs: arm -> per-seed auc on each of the two tasks
        out = {}
        for arm, per_seed in figs.items():
            for seed, auc in per_seed.items():
                for task in ("median1", "median2"):
                    out[f"{task}|{arm}|{seed}|100"] = _unit(auc, auc + 0.1)
        return out

    first = cache({"gegl": {0: 0.3, 1: 0.4}, "lstm_hc": {0: 0.5, 1: 0.5},
                   "reinvent": {0: 0.2, 1: 0.2}})
    first["penalized_logp_gegl|gegl|0|50"] = _unit(0, 0, top1=10.0)
    this = cache({"gegl": {0: 0.6, 1: 0.6, 2: 0.9}, "lstm_hc": {0: 0.45, 1: 0.55},
                  "reinvent": {0: 0.1}})
    del this["median2|reinvent|0|100"]  # reinvent: no seed finished both tasks in this run
    md, figs = bench.beside_table(this, first, ["median1", "median2"],
                                  ["gegl", "lstm_hc", "reinvent"], [0, 1, 2], 100, 50)
    assert set(figs) == {"gegl", "lstm_hc"}
    g = figs["gegl"]
    assert g["seeds"] == [0, 1]  # seed 2 ran in this run only: not paired
    assert g["auc_top10_sum_first"] == pytest.approx([0.6, 0.8])
    assert g["auc_top10_sum_this"] == pytest.approx([1.2, 1.2])
    assert g["top10_mean_sum_this"] == pytest.approx([1.4, 1.4])
    assert (g["rank_first"], g["rank_this"]) == (2, 1)
    assert (figs["lstm_hc"]["rank_first"], figs["lstm_hc"]["rank_this"]) == (1, 2)
    assert g["plogp_top1_first"] == [10.0] and g["plogp_top1_this"] == []
    row = next(line for line in md.splitlines() if line.startswith("| gegl (seeds [0, 1])"))
    assert "| 0.700 +- 0.141 | 1.200 +- 0.000 | +0.500 | 2 -> 1 |" in row
    assert row.endswith("| 10.00 | - |")
    assert bench.beside_table({}, first, ["median1"], ["gegl"], [0], 100) == ("", {})
