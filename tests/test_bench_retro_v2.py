"""The retro v2 benchmark's helpers (benchmarks/retro/v2lib.py, run_v2.py): setting names, the
comparison over targets both arms solve, success-within-N curves, compact per-target records,
and the report written from a cache of made-up units (no planning, no training)."""

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import load_bench_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "retro"))


@pytest.fixture(scope="module")
def lib():
    return load_bench_script("retro", "v2lib.py")


def _rec(i, fsi, its=None, length=None):
    return {"index": i, "target": f"C{'C' * i}O", "target_input": f"C{'C' * i}O",
            "success": fsi is not None, "first_solution_iteration": fsi,
            "iterations": its if its is not None else (fsi if fsi is not None else 50),
            "best_route_length": length if fsi is not None else None, "time_s": 0.1,
            "best_route": {"smiles": "x"}}


def test_names(lib):
    assert lib.stock_label(None) == "uspto50k-leaves"
    assert lib.stock_label("molbloom:zinc-instock-mini") == "zinc-instock-mini"
    assert lib.stock_label("/a/b/reachable_stock.smi.gz") == "reachable_stock"
    assert lib.setting_name("reachable", "zinc-instock-mini", 200, 500) == (
        "reachable/zinc-instock-mini/200/500it")
    assert lib.file_key("a/b/15/100it|0|mcts_si1") == "a-b-15-100it__0__mcts_si1"


def test_both_solved_pairs_targets_by_index(lib):
    zero = [_rec(0, 10), _rec(1, 4), _rec(2, None), _rec(3, 30), _rec(4, 7)]
    value = [_rec(0, 6), _rec(1, 5), _rec(2, 20), _rec(3, None), _rec(4, 3)]
    c = lib.both_solved(zero, value[::-1])  # order does not matter
    assert c["n_targets"] == 5 and c["n_both_solved"] == 3  # targets 0, 1, 4
    assert c["success_rate_a"] == c["success_rate_b"] == 0.8
    assert c["mean_iterations_both_a"] == pytest.approx(7.0)   # (10 + 4 + 7) / 3
    assert c["mean_iterations_both_b"] == pytest.approx(14 / 3)  # (6 + 5 + 3) / 3
    assert c["mean_difference_b_minus_a"] == pytest.approx(-7 / 3)  # -4, +1, -4
    sd = math.sqrt(((-4 + 7 / 3) ** 2 * 2 + (1 + 7 / 3) ** 2) / 2)
    assert c["stderr_difference"] == pytest.approx(sd / math.sqrt(3))
    assert (c["n_b_fewer"], c["n_b_more"], c["n_only_a"], c["n_only_b"]) == (2, 1, 1, 1)
    with pytest.raises(ValueError, match="different targets"):
        lib.both_solved(zero, value[:4])


def test_success_curve_and_compact_records(lib, tmp_path):
    recs = [_rec(0, 0, 0), _rec(1, 3, 3, 1), _rec(2, None), _rec(3, 10, 10, 2)]
    curve = lib.success_curve(recs, 10)
    assert len(curve) == 11
    assert curve[0] == 0.25 and curve[2] == 0.25 and curve[3] == 0.5 and curve[9] == 0.5
    assert curve[10] == 0.75
    lib.write_compact(tmp_path / "u.jsonl", recs)
    rows = [json.loads(x) for x in (tmp_path / "u.jsonl").read_text().splitlines()]
    assert [r["first_solution_iteration"] for r in rows] == [0, 3, None, 10]
    assert rows[1]["route_length"] == 1 and "best_route" not in rows[1]


def test_report_from_a_cache_of_made_up_units(tmp_path, monkeypatch):
    v2 = load_bench_script("retro", "run_v2.py")
    common = sys.modules["common"]
    out = tmp_path / "out"
    b = v2.Bench(v2.parse_args(["--model", str(tmp_path / "m.pt"), "--quick",
                                "--out", str(out), "--seeds", "0", "1"]))
    b.targets = ["CCO", "CCN", "CCC"]
    b.target_source = "three made-up targets"
    b.stock_name = "toy-all"
    b.setting = "made-up/toy-all/3/100it"
    cache = {"model": str(tmp_path / "m.pt"), "setting_meta": {b.setting: {
        "targets_hash": "h", "n_targets": 3, "target_source": "three made-up targets",
        "stock_spec": "toy:all", "stock": {"name": "toy:all", "size": 6},
        "max_iterations": 100, "settings": b.st}}}
    fsis = {"retro_star_0": [5, None, 40], "mcts": [20, 80, None], "retro_star": [5, 9, 40]}
    iters = {"retro_star_0": [1.0, 1.0], "mcts": [10.0, 11.0], "retro_star": [3.0, 4.0]}
    for seed in (0, 1):
        for arm, fs in fsis.items():
            recs = [_rec(i, f, length=2) for i, f in enumerate(fs)]
            p = b.targets_dir / f"{arm}_{seed}.jsonl"
            v2.write_compact(p, recs)
            s = {f"success_at_{k}": sum(f is not None and f <= k for f in fs) / 3
                 for k in (10, 25, 50, 100)}
            cache[common.unit_key(b.setting, seed, arm)] = {
                **s, "mean_route_length": 2.0, "mean_iterations": iters[arm][seed],
                "onestep_top1": 0.4,
                "onestep_top10": 0.8, "per_target": str(p), "unit_seconds": 60.0}
    v2.report(b, cache)
    doc = json.loads((out / "retro.json").read_text())
    got = {(r["arm"], r["metric"]): r for r in doc["rows"]}
    assert got[("retro_star_0", "success_at_50")]["seeds"] == [2 / 3, 2 / 3]
    assert got[("mcts", "success_at_100")]["mean"] == pytest.approx(2 / 3)
    assert ("mcts", "success_at_200") not in got  # beyond the 100-iteration budget
    assert got[("mcts", "unit_minutes")]["seeds"] == [1.0, 1.0]
    md = (out / "retro.md").read_text()
    assert "![curves](retro_curves.png)" in md and "toy:all" in md
    assert "Missing units (12)" in md  # 9 arms x 2 seeds, 6 made up
    # README's table: shares with 3 decimals, iterations with 1, route length with 2
    assert ("| retro_star_0 | 2 | 0.333 ± 0.000 | 0.333 ± 0.000 | 0.667 ± 0.000 | "
            "0.667 ± 0.000 | 1.0 ± 0.0 | 2.00 ± 0.00 | 0.400 ± 0.000 |") in md
    assert "| mcts | 2 | 0.000 ± 0.000 | 0.333 ± 0.000 |" in md and "| 10.5 ± 0.7 |" in md
    assert "| mcts_si1 |" not in md  # arms without units are left out
    # paired by seed: retro_star - retro_star_0 solves one more target within 10, +2.5 its
    assert ("| retro_star - retro_star_0 | 2 | +0.333 ± 0.000 (spread 0.000) |" in md
            and "| +2.5 ± 0.7 (spread 0.7) |" in md)
    assert "random_control" not in md.split("Paired by seed")[1].split("##")[0]
    assert (out / "retro_curves.png").stat().st_size > 1000


def test_units_plan_toy_targets_cache_them_and_share_retro_star_0(tmp_path, monkeypatch):
    import time

    from selfsup.chem.retro.core.toy import cycle_world, dead_end_world

    v2 = load_bench_script("retro", "run_v2.py")
    common = sys.modules["common"]
    out = tmp_path / "out"
    b = v2.Bench(v2.parse_args(["--model", "toy:all", "--quick", "--out", str(out), "--seeds",
                                "0", "1", "--stock", "toy:all", "--arms", "retro_star_0",
                                "mcts"]))
    b.targets = [dead_end_world().target, cycle_world().target, "NCCN"]  # NCCN: no reaction
    b.target_source = "the toy worlds' targets and a dead molecule"
    b.stock_name = "toy-all"
    b.setting = v2.setting_name("toy", "toy-all", 3, 100)
    b.cache = {"model": "toy:all", "setting_meta": {b.setting: {
        "targets_hash": v2.text_hash(b.targets), "n_targets": 3,
        "target_source": b.target_source, "stock_spec": "toy:all",
        "stock": b.stock().describe(), "max_iterations": 100, "settings": b.st}}}
    monkeypatch.setattr(b, "onestep", lambda m: {"top1": 0.5, "top10": 0.9, "n": 2})
    units = [(b.setting, s, a) for s in (0, 1) for a in ("retro_star_0", "mcts")]
    cache = common.run_units(units, b.cache, b.cache_path, b.run_root, b.run_unit,
                             {b.setting: {}}, 1, "now", time.perf_counter(), "[test]",
                             ("success_at_10",))
    u0 = cache[common.unit_key(b.setting, 0, "retro_star_0")]
    u1 = cache[common.unit_key(b.setting, 1, "retro_star_0")]
    # dead_end: 4 iterations, cycle: 2, NCCN fails (counted at the 100-iteration maximum)
    assert u0["success_at_10"] == u0["success_rate"] == pytest.approx(2 / 3)
    assert u0["mean_iterations"] == pytest.approx((4 + 2 + 100) / 3)
    assert u0["n_searched"] == 3 and u0["copied_from_seed"] is None
    assert u1["copied_from_seed"] == 0 and u1["n_searched"] == 0
    assert u1["mean_iterations"] == u0["mean_iterations"]
    assert u0["stock"]["name"] == "toy:all" and u0["planner"] == "retro_star"
    assert cache[common.unit_key(b.setting, 1, "mcts")]["planner"] == "mcts"
    rows = [json.loads(x) for x in (out / u0["per_target"]).read_text().splitlines()]
    assert [r["first_solution_iteration"] for r in rows] == [4, 2, None]
    # a second runner finds every unit done and plans nothing
    again = common.run_units(units, cache, b.cache_path, b.run_root, b.run_unit,
                             {b.setting: {}}, 1, "later", time.perf_counter(), "[test]",
                             ("success_at_10",))
    assert {k: v for k, v in again.items() if k != "invocations"} == {
        k: v for k, v in cache.items() if k != "invocations"}
    v2.report(b, again)
    doc = json.loads((out / "retro.json").read_text())
    got = {(r["arm"], r["metric"]): r for r in doc["rows"]}
    assert got[("retro_star_0", "success_at_100")]["seeds"] == [2 / 3, 2 / 3]
    assert got[("mcts", "onestep_top10")]["mean"] == 0.9


def test_stock_exclude_takes_molecules_out_of_the_stock_and_names_it(tmp_path):
    from selfsup.chem.retro.core.toy import dead_end_world

    v2 = load_bench_script("retro", "run_v2.py")
    targets = tmp_path / "t.smi"
    targets.write_text(dead_end_world().target + "\n")
    heldout = tmp_path / "heldout_products.smi"
    heldout.write_text("OCC\n")  # CCO (a dead_end building block) written another way
    b = v2.Bench(v2.parse_args(["--model", "toy:all", "--quick", "--out", str(tmp_path / "o"),
                                "--targets", str(targets), "--target-set", "toy",
                                "--stock", "toy:all", "--stock-exclude", str(heldout)]))
    b.prepare_targets()
    assert b.setting == "toy/toy-all-minus-heldout_products/1/100it"
    stock = b.stock()
    assert "CCO" not in stock and "CCN" in stock  # CCN: the other dead_end building block
    assert stock.describe()["n_excluded"] == 1


def test_a_killed_benchmark_resumes_its_self_improvement_run_of_the_same_config(tmp_path):
    import yaml

    v2 = load_bench_script("retro", "run_v2.py")
    b = v2.Bench(v2.parse_args(["--model", "toy:all", "--quick", "--out", str(tmp_path / "o"),
                                "--stock", "toy:all"]))
    si = b.run_root / "si"
    want = ["model=toy:all", "seed=0", "stock=null", "targets.n=30", "eval.top_k=[1,10]",
            "targets.file=t.smi"]

    def folder(stamp, **changes):
        cfg = {"model": "toy:all", "seed": 0, "stock": None,
               "targets": {"n": 30, "file": "t.smi"}, "eval": {"top_k": [1, 10]}}
        for k, v in changes.items():
            cfg[k] = v
        d = si / f"bench-si-s0-{stamp}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        return d

    assert b.si_run_to_resume("bench-si-s0", want) is None  # nothing there yet
    older = folder("20261206-100000")
    folder("20261206-110000", seed=1)  # newer, but another seed
    (si / "bench-si-s0-20261206-120000").mkdir()  # no config (killed before writing it)
    assert b.si_run_to_resume("bench-si-s0", want) == older
    assert b.si_run_to_resume("bench-si-s0", want + ["targets.n=5000"]) is None
    assert b.si_run_to_resume("bench-si-s1", want) is None


def test_runners_sharing_a_cache_keep_each_settings_meta(tmp_path):
    """Two runners of two stocks write one cache: each setting's meta (what the refusal checks
    compare with) reaches the file and stays there; what is on disk does not overwrite a
    runner's newer meta of its own setting."""
    from selfsup.chem.retro.core.toy import dead_end_world

    v2 = load_bench_script("retro", "run_v2.py")
    targets = tmp_path / "t.smi"
    targets.write_text(dead_end_world().target + "\n")
    heldout = tmp_path / "heldout_products.smi"
    heldout.write_text("OCC\n")
    out = str(tmp_path / "o")
    common = ["--model", "toy:all", "--quick", "--out", out, "--targets", str(targets),
              "--target-set", "toy", "--stock", "toy:all"]
    benches = [v2.Bench(v2.parse_args(common)),
               v2.Bench(v2.parse_args(common + ["--stock-exclude", str(heldout)]))]
    for b in benches:
        b.prepare_targets()
        b.cache = b.load_cache()
        v2.atomic_write_json(b.cache_path, b.merged())
    first, second = benches
    assert first.setting != second.setting
    disk = json.loads(first.cache_path.read_text())
    assert set(disk["setting_meta"]) == {first.setting, second.setting}
    # the first runner's meta changes (e.g. a recorded setting it had lacked): its write keeps
    # it, and the second runner's next write keeps both
    first.cache["setting_meta"][first.setting]["value_routes"] = "with-ord"
    v2.atomic_write_json(first.cache_path, first.merged())
    v2.atomic_write_json(second.cache_path, second.merged())
    disk = json.loads(first.cache_path.read_text())
    assert disk["setting_meta"][first.setting]["value_routes"] == "with-ord"
    assert set(disk["setting_meta"]) == {first.setting, second.setting}


def test_retro_star_0_is_planned_afresh_and_checked_when_the_first_seeds_records_are_gone(
        tmp_path, monkeypatch):
    """On another machine the first seed's full records (run folder) are gone: a later seed's
    Retro*-0 unit plans again and must give back the first seed's per-target results (kept
    beside the table); a base model that plans differently stops the benchmark."""
    import shutil
    import time

    from selfsup.chem.retro.core.toy import cycle_world, dead_end_world

    v2 = load_bench_script("retro", "run_v2.py")
    common = sys.modules["common"]
    b = v2.Bench(v2.parse_args(["--model", "toy:all", "--quick", "--out",
                                str(tmp_path / "out"), "--seeds", "0", "1", "2",
                                "--stock", "toy:all", "--arms", "retro_star_0"]))
    b.targets = [dead_end_world().target, cycle_world().target, "NCCN"]
    b.target_source = "toy"
    b.stock_name = "toy-all"
    b.setting = v2.setting_name("toy", "toy-all", 3, 100)
    b.cache = {"model": "toy:all", "setting_meta": {b.setting: {
        "targets_hash": v2.text_hash(b.targets), "n_targets": 3, "target_source": "toy",
        "stock_spec": "toy:all", "stock": b.stock().describe(), "max_iterations": 100,
        "settings": b.st}}}
    monkeypatch.setattr(b, "onestep", lambda m: {"top1": 0.5, "top10": 0.9, "n": 2})

    def run(seeds, cache):
        return common.run_units([(b.setting, s, "retro_star_0") for s in seeds], cache,
                                b.cache_path, b.run_root, b.run_unit, {b.setting: {}}, 1,
                                "now", time.perf_counter(), "[test]", ("success_at_10",))

    cache = run([0], b.cache)
    shutil.rmtree(b.run_root / "targets")  # another machine: the run folder is gone
    cache = run([1], cache)
    u1 = cache[common.unit_key(b.setting, 1, "retro_star_0")]
    assert u1["copied_from_seed"] is None and u1["n_searched"] == 3
    assert u1["mean_iterations"] == cache[common.unit_key(b.setting, 0,
                                                          "retro_star_0")]["mean_iterations"]
    # the first seed's kept results say otherwise (another model): refused, nothing cached
    shutil.rmtree(b.run_root / "targets")
    kept = b.targets_dir / (v2.file_key(common.unit_key(b.setting, 0, "retro_star_0"))
                            + ".jsonl")
    rows = [json.loads(x) for x in kept.read_text().splitlines()]
    rows[1]["first_solution_iteration"] = 3
    kept.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="1 targets .first: index 1. differ"):
        run([2], cache)


def test_prepared_files_made_again_keep_the_cache_only_when_they_are_the_same_work(lib):
    """Self-improvement models, controls and value networks made again on another machine:
    the cached entry takes the new paths when the deterministic figures agree, and the
    benchmark stops when they differ or when nothing can be compared."""
    it = {"iteration": 1, "n_targets": 50, "n_solved": 48, "n_kept": 40, "n_not_top1": 0,
          "finetune_loss_last": 0.0935, "onestep": {"top1": 0.45, "top10": 0.72, "n": 1000},
          "stage_seconds": {"plan": 400.0}}
    cached = {"models": ["/gone/iter_1/model.pt"], "run": "/gone", "seconds": 900.0,
              "iterations": [it]}
    new = {"models": ["/here/iter_1/model.pt"], "run": "/here", "seconds": 950.0,
           "model_sha256": ["abc"], "iterations": [{**it, "stage_seconds": {"plan": 420.0}}],
           "provenance": {"cpu": "x"}}
    out = lib.remade_entry("prep:si:s:seed0", cached, new, lib.compare_iterations)
    assert out["models"] == ["/here/iter_1/model.pt"] and out["run"] == "/here"
    assert out["model_sha256"] == ["abc"]
    assert out["seconds"] == 900.0 and out["iterations"] == [it]  # the original run's figures
    assert "iteration 1 finetune_loss_last" in out["remade"][0]["checked"]
    # a later remake checks the hash recorded the first time
    again = lib.remade_entry("k", out, {**new, "run": "/third"}, lib.compare_iterations)
    assert again["run"] == "/third" and len(again["remade"]) == 2
    with pytest.raises(SystemExit, match="model_sha256"):
        lib.remade_entry("k", out, {**new, "model_sha256": ["abd"]}, lib.compare_iterations)
    changed = {**new, "iterations": [{**it, "n_kept": 41}]}
    with pytest.raises(SystemExit, match="iteration 1 n_kept: cached 40, made now 41"):
        lib.remade_entry("prep:si:s:seed0", cached, changed, lib.compare_iterations)
    # a control cached before it recorded its own figures: its unit's one-step top-1
    ctl_old = {"model": "/gone/m.pt", "n_reactions": 40}
    ctl_new = {"model": "/here/m.pt", "n_reactions": 40, "onestep": {"top1": 0.435}}
    unit = {"onestep_top1": 0.435}
    out = lib.remade_entry("c", ctl_old, ctl_new,
                           lambda o, n: lib.compare_control(o, n, unit))
    assert out["model"] == "/here/m.pt"
    assert out["remade"][0]["checked"] == ["n_reactions", "onestep top1 of its unit"]
    with pytest.raises(SystemExit, match="onestep top1 of its unit"):
        lib.remade_entry("c", ctl_old, {**ctl_new, "onestep": {"top1": 0.44}},
                         lambda o, n: lib.compare_control(o, n, unit))
    v_old = {"path": "/gone/v.pt", "n_examples": 10, "final": {"loss": 0.1}}
    assert lib.remade_entry("v", v_old, {**v_old, "path": "/here/v.pt"},
                            lib.compare_value)["path"] == "/here/v.pt"
    with pytest.raises(SystemExit, match="nothing to check"):
        lib.remade_entry("v", {"path": "/gone"}, {"path": "/here"}, lib.compare_value)


def test_the_cache_knows_its_base_and_forward_models_by_hash_wherever_they_lie(tmp_path):
    """Made again on another machine, the base and forward models lie at other paths: the
    cache takes them when their SHA-256 agrees with what it recorded, and refuses other
    files."""
    import shutil

    from selfsup.chem.retro.core.toy import dead_end_world

    v2 = load_bench_script("retro", "run_v2.py")
    targets = tmp_path / "t.smi"
    targets.write_text(dead_end_world().target + "\n")
    for name, data in (("old/base.pt", b"base weights"), ("old/fwd.pt", b"forward weights")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)

    def bench(base, fwd):
        b = v2.Bench(v2.parse_args(["--model", str(base), "--quick", "--out",
                                    str(tmp_path / "o"), "--targets", str(targets),
                                    "--target-set", "toy", "--stock", "toy:all",
                                    "--forward-model", str(fwd)]))
        b.prepare_targets()
        return b

    b = bench(tmp_path / "old/base.pt", tmp_path / "old/fwd.pt")
    b.cache = b.load_cache()
    b.cache[f"prep:si:{b.stock_name}:seed0"] = {"models": []}  # a made self-improvement run
    v2.atomic_write_json(b.cache_path, b.merged())
    shutil.copytree(tmp_path / "old", tmp_path / "new")
    again = bench(tmp_path / "new/base.pt", tmp_path / "new/fwd.pt")
    cache = again.load_cache()
    assert cache["model"] == str((tmp_path / "new/base.pt").resolve())
    assert cache["model_sha256"] == b.cache["model_sha256"]
    (tmp_path / "new/fwd.pt").write_bytes(b"other forward weights")
    with pytest.raises(SystemExit, match="--forward-model"):
        bench(tmp_path / "new/base.pt", tmp_path / "new/fwd.pt").load_cache()
    (tmp_path / "new/base.pt").write_bytes(b"other base weights")
    with pytest.raises(SystemExit, match="SHA-256 begins"):
        bench(tmp_path / "new/base.pt", tmp_path / "old/fwd.pt").load_cache()
