"""The resumable-unit helpers the vision benchmarks (augself, selfpatch) share in
``benchmarks/common.py``: command line, unit plan, run-log summaries, stored evaluations, cache
entries and the report tables (no training)."""

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402

S = "data/net-1ep"


def _cache(figures: dict) -> dict:
    """figures: (seed, arm) -> {metric: value}"""
    return {f"{S}|{seed}|{arm}": {**f, "unit_seconds": 60.0 * (seed + 1), "train": {}}
            for (seed, arm), f in figures.items()}


def test_keys_names_overrides_and_plan():
    assert common.unit_key(S, 1, "a") == f"{S}|1|a"
    assert common.run_name(S, "a", 1) == "data-net-1ep-a-s1"
    spec = {"overrides": ["x=1"], "arms": ("a", "b", "ref")}
    ov = common.unit_overrides(S, spec, "b", 2, 4, Path("r"), {"b": ["method=b"]})
    assert ov == ["x=1", "method=b", "trainer.threads=4", "seed=2", "name=data-net-1ep-b-s2",
                  "run_root=r"]
    assert common.unit_overrides(S, spec, "b", 0, None, Path("r"), {"b": []})[1] == "seed=0"
    refs, ref_seeds = ("ref",), (0,)
    assert common.arm_seeds("a", None, None, False, refs, ref_seeds) == [0, 1, 2]
    assert common.arm_seeds("a", None, None, True, refs, ref_seeds) == [0]
    assert common.arm_seeds("ref", [1, 2], None, False, refs, ref_seeds) == []
    assert common.arm_seeds("ref", [1], [3], False, refs, ref_seeds) == [3]
    units = common.plan_units({S: spec}, None, None, None, False, refs, ref_seeds)
    assert units[:3] == [(S, 0, "a"), (S, 0, "b"), (S, 0, "ref")] and len(units) == 7
    assert common.plan_units({S: spec}, ["b"], [2], None, False, refs, ref_seeds) == [(S, 2, "b")]
    assert common.missing_units({f"{S}|0|a": {}}, units[:2]) == [f"{S}|0|b"]
    overrides, seeds_of, plan = common.unit_planners({"b": ["method=b"]}, refs, ref_seeds)
    assert overrides(S, spec, "b", 2, 4, Path("r")) == ov
    assert seeds_of("ref", None, None, False) == [0]
    assert plan({S: spec}, None, None, None, False) == units


def test_command_line_settings_and_folders(tmp_path):
    ap = common.unit_parser("demo", ("a", "b"), "method seeds", "reference seeds")
    args = ap.parse_args(["--arms", "b", "--seeds", "1", "2", "--report"])
    assert args.arms == ["b"] and args.seeds == [1, 2] and args.report and args.threads == 1
    assert args.reference_seeds is None and args.out is None and not args.quick
    with pytest.raises(SystemExit):
        ap.parse_args(["--arms", "c"])
    table = {"s1": {}, "s2": {}}
    assert list(common.chosen_settings(table, None)) == ["s1", "s2"]
    assert list(common.chosen_settings(table, ["s2"])) == ["s2"]
    with pytest.raises(SystemExit, match="unknown setting"):
        common.chosen_settings(table, ["s3"])
    out, cache, runs = common.output_folders("demo", str(tmp_path / "o"), False)
    assert out.is_dir() and cache == out / "demo_cache.json" and runs == out / "runs"
    # the committed results folder: the runs go to runs/bench-<name>-full
    res = tmp_path / "results"
    out, cache, runs = common.output_folders("demo", None, False, results=res)
    assert out == res and runs == common.REPO / "runs" / "bench-demo-full"


def test_run_log_loss_and_stored_evaluation(tmp_path):
    assert common.log_rows(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text(
        '{"train_ssl_loss": 2.0}\nnot json\n{"train_ssl_loss": NaN}\n{"train_ssl_loss": 1.0}\n')
    rows = common.log_rows(tmp_path)
    assert len(rows) == 3
    s = common.loss_summary(rows, ("train_ce", "train_ssl_loss"))
    assert s == {"loss_name": "train_ssl_loss", "loss_first": 2.0, "loss_last": 1.0,
                 "nonfinite_losses": 1}
    assert common.loss_summary(rows, ("train_ce",)) == {}
    store = tmp_path / "eval.json"
    store.write_text(json.dumps({"m1": {"value": 1, "params": {"k": 1}},
                                 "m2": {"value": 2, "params": {"k": 1}}}))
    done, todo = common.pending_metrics(store, ("m1", "m2", "m3"),
                                        lambda m: {"k": 2 if m == "m2" else 1})
    assert done["m1"]["value"] == 1 and todo == ["m2", "m3"]


def test_unit_entry_paths_and_provenance(tmp_path):
    inside = common.REPO / "runs" / "x"
    assert common.stored_path(inside) == os.path.join("runs", "x")
    assert common.stored_path(tmp_path) == str(tmp_path.resolve())
    unit = common.finish_unit({"m": 0.5}, inside, None, 10.04, 5.0)
    assert list(unit) == ["m", "run", "resumed_from", "train_seconds", "eval_seconds",
                          "unit_seconds", "threads", "provenance"]
    assert unit["resumed_from"] is None and unit["unit_seconds"] == 15.0
    assert unit["train_seconds"] == 10.0 and isinstance(unit["provenance"], dict)
    assert common.finish_unit({}, inside, str(inside), 1, 1)["resumed_from"] == unit["run"]


def test_values_rows_differences_and_tables():
    cache = _cache({(0, "a"): {"m": 0.5, "n": None}, (1, "a"): {"m": 0.7},
                    (0, "b"): {"m": 0.6}, (1, "b"): {"m": 0.9}, (0, "c"): {"m": 0.1}})
    cache["invocations"] = []
    assert common.unit_values(cache, S, "a", "m") == {0: 0.5, 1: 0.7}
    assert common.unit_values(cache, S, "a", "n") == {}
    rows = common.unit_rows(cache, S, ["a"], ("m", "n"))
    assert [(r["metric"], r["seed_ids"]) for r in rows] == [("m", [0, 1]),
                                                            ("unit_minutes", [0, 1])]
    assert rows[1]["seeds"] == [1.0, 2.0]
    d = common.paired_difference(cache, S, "a", "b", "m", label="aug")
    assert d["aug"] == "b" and "aug_std" in d and d["differences"] == pytest.approx([0.1, 0.2])
    assert d["spread"] == pytest.approx(max(d["std"], d["base_std"], d["aug_std"]))
    assert list(d) == ["setting", "base", "aug", "metric", "mean", "std", "base_std", "aug_std",
                       "spread", "seeds", "differences"]
    assert "other" in common.paired_difference(cache, S, "a", "b", "m")
    assert common.paired_difference(cache, S, "a", "x", "m") is None
    assert common.pm([0.5]) == "50.0" and common.pm([0.5, 0.7]) == "60.0 ± 14.1"
    t = common.arms_table(cache, S, ["a", "x", "c"], ("m",), {"m": "M"})
    assert t.splitlines() == ["| arm | seeds | M |", "|---|---|---|", "| a | 2 | 60.0 ± 14.1 |",
                              "| c | 1 | 10.0 |"]
    dt = common.diff_table(cache, S, ["a", "b"], (("a", "b"), ("a", "x")), ("m", "n"), "diff")
    assert dt.splitlines()[0] == "| diff | seeds | m | n |"
    assert dt.splitlines()[2].startswith("| b - a | 2 | +15.0 ± 7.1 (spread ") and "| - |" in dt
    assert common.diff_table(cache, S, ["a"], (("a", "b"),), ("m",), "diff") == ""
    headed = common.diff_table(cache, S, ["a", "b"], (("a", "b"),), ("m",), "d", {"m": "M"})
    assert headed.startswith("| d | seeds | M |")


def test_diagnostics_flags_notes_and_data_meta():
    cache = _cache({(0, "a"): {"m": math.nan}, (1, "a"): {"m": 0.5}, (0, "b"): {"m": 0.5}})
    cache[f"{S}|1|a"]["train"] = {"nonfinite_losses": 2, "bad": True}
    got = list(common.diagnostic_units(cache, S, ["a"], ("m",), {"BAD": lambda d: "bad" in d}))
    assert [(arm, seed, flags) for arm, seed, _, _, flags in got] == [
        ("a", "0", ["NaN metric"]), ("a", "1", ["2 non-finite losses", "BAD"])]
    cache["invocations"] = [{"started": "t0", "command": "x", "seconds": 120.0},
                            {"started": "t1", "command": "y", "seconds": None}]
    tail = common.notes_tail(cache, S, [f"{S}|2|a"], True)
    assert tail[0].startswith("Time: 3 finished unit(s), 0.07 h")
    assert "Units by provenance: 3 without provenance" in tail[1]
    assert tail[2] == "Started t0: 2.0 min (`x`)." and "still running" in tail[3]
    assert "Missing units (1;" in tail[5] and tail[-1].startswith("Quick mode")
    assert common.notes_tail({}, S, [], False) == []
    meta = common.generator_meta({"overrides": ["data.name=d", "data.generator_seed=3",
                                                "data.val_size=10", "x=1"]})
    assert meta == {"name": "d", "generator_seed": 3, "val_size": 10, "per_class": None}


def test_shared_results_file_keeps_other_writers_rows_sections_and_entries(tmp_path):
    """Three scripts write gegl_guacamol.json: each replaces only its own rows and section."""
    def r(setting, arm, metric, v):
        return common.row(setting, arm, metric, [v])

    common.write_shared_results(
        "shared", "quick", "cmd a", "t0", 1.0, tmp_path,
        [r("prior/p", "smiles_lstm", "validity", 0.9)], lambda x: x["setting"] == "prior/p",
        "a", "section A", {"distribution_learning": {"p": 1}})
    common.write_shared_results(
        "shared", "quick", "cmd b", "t1", 2.0, tmp_path,
        [r("g/1k", "gegl", "score_sum", 1.0), r("g/1k", "reinvent", "score_sum", 2.0)],
        lambda x: x["setting"] == "g/1k", "b", "section B", {"goal_directed": {"g/1k": 1}})
    # b again, replacing gegl only: reinvent's row stays
    common.write_shared_results(
        "shared", "quick", "cmd b2", "t2", 3.0, tmp_path, [r("g/1k", "gegl", "score_sum", 5.0)],
        lambda x: x["setting"] == "g/1k" and x["arm"] == "gegl", "b", "section B2",
        {"goal_directed": {"g/1k": 2}})
    doc = json.loads((tmp_path / "shared.json").read_text())
    assert [(x["setting"], x["arm"], x["mean"]) for x in doc["rows"]] == [
        ("prior/p", "smiles_lstm", 0.9), ("g/1k", "reinvent", 2.0), ("g/1k", "gegl", 5.0)]
    assert doc["notes_sections"] == {"a": "section A", "b": "section B2"}
    assert doc["distribution_learning"] == {"p": 1} and doc["goal_directed"] == {"g/1k": 2}
    assert doc["command"] == "cmd b2" and doc["wall_seconds"] == 3.0
    md = (tmp_path / "shared.md").read_text()
    assert md.index("section A") < md.index("section B2") and "section B\n" not in md


def test_run_work_seconds_adds_up_each_process_to_its_last_log_line(tmp_path):
    """Three processes: killed at 10:00:40 (last line), resumed at 18:00:00 the next sitting and
    killed again after 10:00:05 of it... the gaps between sittings do not count."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "started": "2026-12-07T10:00:00+00:00",
        "resumed": ["2026-12-07T18:00:00+00:00", "2026-12-08T09:00:00+00:00"],
        "finished_at": "2026-12-08T09:01:30+00:00"}))
    lines = ["2026-12-07 10:00:01,000 INFO optimizer gegl ...",
             "2026-12-07 10:00:40,500 INFO gegl round 9: ...",
             "  a continuation line without a time",
             "2026-12-07 18:00:00,100 INFO optimizer gegl ... (resumed from 500 calls)",
             "2026-12-07 18:00:05,000 INFO gegl round 12: ...",
             "2026-12-08 09:00:00,200 INFO optimizer gegl ... (resumed from 800 calls)"]
    (run / "log.txt").write_text("\n".join(lines) + "\n")
    with pytest.MonkeyPatch.context() as m:  # the log's times are local: pin the zone to UTC
        m.setenv("TZ", "UTC")
        import time

        time.tzset()
        try:
            assert common.run_work_seconds(run) == pytest.approx(40.5 + 5.0 + 90.0)
        finally:
            m.delenv("TZ")
            time.tzset()
    (run / "log.txt").unlink()
    assert common.run_work_seconds(run) is None
    (run / "run.json").write_text(json.dumps({"started": "2026-12-07T10:00:00+00:00"}))
    assert common.run_work_seconds(run) is None  # not finished


# ------------------------------------------------------ the per-unit lock and the unit loop


def test_claim_is_exclusive_and_released(tmp_path):
    lock = common.claim_unit(tmp_path, "median1|gegl|0|10000")
    assert lock is not None and lock.name == "median1-gegl-0-10000.lock"
    assert lock.read_text() == str(os.getpid())
    assert common.claim_unit(tmp_path, "median1|gegl|0|10000") is None  # held by a live process
    assert common.claim_unit(tmp_path, "median1|gegl|1|10000") is not None  # others are free
    lock.unlink()
    assert common.claim_unit(tmp_path, "median1|gegl|0|10000") is not None


def test_stale_lock_of_a_dead_runner_is_taken_over(tmp_path):
    import subprocess

    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / "zaleplon_mpo-reinvent-2-10000.lock").write_text(proc.stdout.strip())
    lock = common.claim_unit(tmp_path, "zaleplon_mpo|reinvent|2|10000")
    assert lock is not None and lock.read_text() == str(os.getpid())


def test_lock_being_written_counts_as_held(tmp_path):
    (tmp_path / "median2-lstm_hc-0-10000.lock").write_text("")
    assert common.claim_unit(tmp_path, "median2|lstm_hc|0|10000") is None


def test_unit_loop_skips_cached_and_held_units_and_writes_each_at_once(tmp_path, capsys):
    path, root = tmp_path / "cache.json", tmp_path / "runs"
    path.write_text(json.dumps({"a": {"x": 1.0}}))  # another runner's unit
    ran = []
    (root / "c.lock").parent.mkdir()
    (root / "c.lock").write_text(str(os.getpid()))  # a live runner holds unit c

    def unit(key):
        def run():
            ran.append(key)
            # the entry of the previous unit is on disk before this one starts
            assert key != "d" or "b" in json.loads(path.read_text())
            if key == "e":
                raise RuntimeError("unit e failed")
            return {"x": float(len(ran))}
        return run

    plan = [(k, unit(k)) for k in "abcde"]
    with pytest.raises(RuntimeError, match="unit e failed"):
        common.run_planned(plan, {}, path, root, "[t]", lambda u: f"x {u['x']}", stamp=True)
    assert ran == ["b", "d", "e"]
    disk = json.loads(path.read_text())
    assert disk["a"] == {"x": 1.0} and set(disk) == {"a", "b", "d"}
    assert disk["b"]["x"] == 1.0 and disk["b"]["unit_seconds"] >= 0 and disk["b"]["provenance"]
    assert not (root / "e.lock").exists() and (root / "c.lock").exists()  # e's lock released
    out = capsys.readouterr().out
    assert "[t] 2/5 b" in out and "[t]   x 1.0" in out and "another runner is on c" in out


def test_unit_loop_settles_the_merged_cache_and_records_the_invocation(tmp_path):
    path, root = tmp_path / "cache.json", tmp_path / "runs"
    path.write_text(json.dumps({"a": {"old": True}, "b": {"x": 0.0}}))

    def settle(cache):  # units made under old settings are set aside, so they run again
        return {k: v for k, v in cache.items() if not (isinstance(v, dict) and v.get("old"))}

    cache = common.merge_cache(path, {})  # the caller merges; start_invocation writes it
    invocation = common.start_invocation(cache, path, "t0", "python bench.py")
    disk = json.loads(path.read_text())
    assert disk["invocations"] == [invocation] and disk["b"] == {"x": 0.0}  # at the start
    cache = common.run_planned([(k, lambda: {"x": 2.0}) for k in "ab"], cache, path, root,
                               "[t]", str, settle=settle)
    assert cache["a"] == {"x": 2.0} and cache["b"] == {"x": 0.0}  # b was cached: not rerun
    assert "unit_seconds" not in cache["a"]  # no stamp asked
    done = common.finish_invocation(cache, path, invocation, time.perf_counter() - 3, settle)
    disk = json.loads(path.read_text())
    assert disk == done and disk["invocations"][0]["seconds"] >= 3
    assert disk["invocations"][0]["command"] == "python bench.py"


def test_runners_started_together_both_record_their_invocation(tmp_path):
    path = tmp_path / "cache.json"
    path.write_text(json.dumps({"a": {"x": 1.0}}))
    first, second = common.merge_cache(path, {}), common.merge_cache(path, {})  # both read
    common.start_invocation(first, path, "t0", "python bench.py --seeds 0")
    common.start_invocation(second, path, "t0", "python bench.py --seeds 1")
    disk = json.loads(path.read_text())
    assert sorted(i["command"] for i in disk["invocations"]) == [
        "python bench.py --seeds 0", "python bench.py --seeds 1"] and disk["a"] == {"x": 1.0}


def test_unit_loop_names_locks_as_asked(tmp_path):
    path, root = tmp_path / "cache.json", tmp_path / "runs"
    root.mkdir()
    long_key = "0.4|gegl|0|2000|gegl|CC(=O)N/C=C/c1ccccc1"
    (root / "m000.lock").write_text(str(os.getpid()))  # a live runner holds it by its lock name
    out = common.run_planned([(long_key, lambda: {"x": 1.0})], {}, path, root, "[t]", str,
                             lock_name={long_key: "m000"}.get)
    assert long_key not in out  # skipped: its named lock is held
    (root / "m000.lock").unlink()
    out = common.run_planned([(long_key, lambda: {"x": 1.0})], {}, path, root, "[t]", str,
                             lock_name={long_key: "m000"}.get)
    assert out[long_key] == {"x": 1.0} and not list(root.glob("*.lock"))


def test_a_cache_refuses_units_of_another_prior(tmp_path):
    cache = {"prior": {"path": "a.pt", "sha256": "a" * 64}}
    common.refuse_other_prior(cache, tmp_path / "c.json", {"path": "a.pt", "sha256": "a" * 64},
                              has_units=True)
    with pytest.raises(SystemExit, match="holds units of the prior a.pt .*pass that --prior"):
        common.refuse_other_prior(cache, tmp_path / "c.json",
                                  {"path": "b.pt", "sha256": "b" * 64}, has_units=True)
    common.refuse_other_prior(cache, tmp_path / "c.json", {"path": "b.pt", "sha256": "b" * 64},
                              has_units=False)  # no units yet: the new prior is recorded
    assert cache["prior"]["path"] == "b.pt"


def test_provenance_census_counts_and_flags_mixed_cpus():
    def unit(cpu, threads=1):
        return {"provenance": {"torch": "2.x", "torch_cpu_capability": "AVX512",
                               "cpu_model": "CPU", "cpu_id": cpu, "torch_threads": threads}}
    assert common.provenance_census([]) == ""
    one_cpu = common.provenance_census([unit("1/2/3"), unit("1/2/3", 2), {"score": 1.0}])
    assert one_cpu == ("Units by provenance: 1 torch 2.x (AVX512 kernels) on CPU [1/2/3], "
                       "1 thread(s); 1 torch 2.x (AVX512 kernels) on CPU [1/2/3], 2 thread(s); "
                       "1 without provenance (finished before units recorded it).")
    two_cpus = common.provenance_census([unit("1/2/3"), unit("1/2/3"), unit("4/5/6")])
    assert two_cpus == ("Units by provenance: 2 torch 2.x (AVX512 kernels) on CPU [1/2/3], "
                        "1 thread(s); 1 torch 2.x (AVX512 kernels) on CPU [4/5/6], 1 thread(s). "
                        "Their times are comparable only within one CPU.")
