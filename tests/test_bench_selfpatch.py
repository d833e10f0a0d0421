"""The SelfPatch benchmark scripts: settings, units, the shared cache, the neighbour counts, the
report and its claim line (no training: units and evaluation are replaced by made-up figures),
and the speed script's recipe."""

import json
import os

import pytest
import torch

from conftest import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("selfpatch")


FULL = "fmnist-mosaic/vit_pico-4ep"
QUICK = "fmnist-mosaic/vit_pico-1ep"


def _unit(bench, **figures):
    u = {m: 0.5 for m in (*bench.METRICS, *bench.EXTRA)}
    u.update(figures)
    u.update(train_seconds=60.0, eval_seconds=30.0, unit_seconds=90.0,
             train={"steps": 10, "loss_first": 9.0, "loss_last": 7.5, "dino_loss_last": 7.4,
                    "val_knn_per_epoch": [0.3]},
             provenance={"torch": "2.x", "torch_threads": 1})
    return u


# ------------------------------------------------------------------------------ units
def test_settings_share_one_vit_without_cls_token(bench):
    full, quick = bench.settings(False), bench.settings(True)
    assert list(full) == [FULL] and list(quick) == [QUICK]
    ov = dict(o.split("=", 1) for o in full[FULL]["overrides"])
    assert ov["data.name"] == "fmnist-mosaic" and ov["data.generator_seed"] == "0"
    assert ov["model.backbone"] == "vit_pico" and ov["model.cls_token"] == "false"
    assert ov["optim.epochs"] == "4" and ov["optim.batch_size"] == "128"
    assert ov["monitor.select"] == "val_knn_acc"
    assert "data.per_class" not in ov  # all 55,000 training mosaics
    # DINO and SelfPatch read the same multi-crop and head settings
    for key in ("out_dim", "n_local", "global_scale", "local_scale", "teacher_temp"):
        assert ov[f"dino.{key}"] == ov[f"selfpatch.{key}"]
    assert ov["selfpatch.k"] == "4" and ov["selfpatch.border"] == "valid"
    assert full[FULL]["arms"] == ("dino", "dino_selfpatch", "mae", "rotnet", "random_init")
    assert quick[QUICK]["arms"] == full[FULL]["arms"]  # every arm in quick mode too
    q = dict(o.split("=", 1) for o in quick[QUICK]["overrides"])
    assert q["optim.epochs"] == "1" and q["data.per_class"] == "30"
    assert q["dino.out_dim"] == q["selfpatch.out_dim"] == "256"  # later overrides win
    assert bench.ARM_OVERRIDES["dino_selfpatch"] == ["method=selfpatch"]
    assert "optim.betas=[0.9,0.95]" in bench.ARM_OVERRIDES["mae"]
    # no arm brings its own backbone, epochs, batch or image size
    for arm, extra in bench.ARM_OVERRIDES.items():
        assert not any(o.startswith(("model.", "optim.epochs", "optim.batch_size", "data."))
                       for o in extra), arm


def test_unit_keys_names_and_plan(bench, tmp_path):
    assert bench.unit_key(FULL, 2, "dino_selfpatch") == f"{FULL}|2|dino_selfpatch"
    name = bench.run_name(FULL, "dino_selfpatch", 2)
    assert "/" not in name and name == "fmnist-mosaic-vit_pico-4ep-dino_selfpatch-s2"
    spec = bench.settings(False)[FULL]
    ov = bench.unit_overrides(FULL, spec, "dino_selfpatch", 1, 1, tmp_path)
    assert ov[-5:] == ["method=selfpatch", "trainer.threads=1", "seed=1",
                       "name=fmnist-mosaic-vit_pico-4ep-dino_selfpatch-s1",
                       f"run_root={tmp_path}"]
    units = bench.plan(bench.settings(False), None, None, None, False)
    # 2 arms x 3 seeds + the three references once (seed 0), seed-major
    assert len(units) == 9 and len(set(units)) == 9
    assert [s for _, s, _ in units] == sorted(s for _, s, _ in units)
    assert {a for _, s, a in units if s > 0} == {"dino", "dino_selfpatch"}
    part = bench.plan(bench.settings(False), ["dino_selfpatch", "random_init"], None, None,
                      False)
    assert part == [(FULL, 0, "dino_selfpatch"), (FULL, 0, "random_init"),
                    (FULL, 1, "dino_selfpatch"), (FULL, 2, "dino_selfpatch")]
    assert not any(a in bench.REFERENCES for _, _, a in
                   bench.plan(bench.settings(False), None, [1, 2], None, False))
    assert bench.plan(bench.settings(False), ["mae"], [1], [0, 1], False) == [
        (FULL, 0, "mae"), (FULL, 1, "mae")]
    assert len(bench.plan(bench.settings(True), None, None, None, True)) == 5


def test_eval_params_and_stored_metrics_are_reused(bench, tmp_path, monkeypatch):
    ev = bench.settings(False)[FULL]["eval"]
    p = bench.eval_params("dense_miou", ev)
    assert p == {"protocol": "dense", "dataset": None, "target": "mask", "seed": 0,
                 "max_train": 20000, "max_test": None, "n_grid": 23}
    assert bench.eval_params("image_linear", ev)["dataset"] == "fashion-mnist"
    assert bench.eval_params("knn_image", ev)["k"] == 20
    nb = bench.eval_params("neighbour_precision", ev)
    assert nb["k"] == 4 and nb["border"] == "valid" and nb["n_test"] == 2000
    stored = {m: {"value": 0.1, "params": bench.eval_params(m, ev)} for m in bench.METRICS}
    (tmp_path / "selfpatch_eval.json").write_text(json.dumps(stored))
    import selfsup.vision.protocols as vp
    import selfsup.vision.train as vt

    def boom(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(vt, "load_selected", boom)
    monkeypatch.setattr(vp, "evaluate_protocol", boom)
    assert bench.evaluate_unit(tmp_path, ev) == stored
    with pytest.raises(AssertionError, match="evaluated again"):  # other arguments
        bench.evaluate_unit(tmp_path, {**ev, "dense_max_train": 10})


# ------------------------------------------------------------------------------ neighbours
def test_neighbour_counts_score_the_selection_against_patch_classes(bench):
    # one 8 x 8 image, 4 px patches: a 2 x 2 grid; top row items of class 3 (mask 4), bottom
    # row background. Every patch has 3 valid neighbours (border 'valid').
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[:, :4] = 4
    images = torch.zeros(1, 1, 8, 8)
    alike = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])  # rows alike

    def run(tokens, k=1):
        return bench.neighbour_counts(lambda x: tokens, images, masks, lambda x: x, 4, k,
                                      "valid")

    c = run(alike)
    assert c["items"] == (1.0, 2)  # each item patch picks the other item patch
    assert c["all"] == (1.0, 4)
    assert c["chance"][0] == pytest.approx(2 / 6) and c["chance"][1] == 6
    columns = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])  # cols alike
    c = run(columns)
    assert c["items"] == (0.0, 2)  # each item patch picks the background below it
    assert c["all"] == (0.0, 4)
    c = run(alike, k=3)  # all three neighbours: the chance share
    assert c["items"][0] == pytest.approx(2 / 6) and c["items"][1] == 6


# ------------------------------------------------------------------------------ cache
def test_merge_keeps_both_runners_units_and_lock_keeps_a_second_runner_off(bench, tmp_path):
    path = tmp_path / "selfpatch_cache.json"
    inv = {"started": "t0", "command": "run A", "seconds": None}
    path.write_text(json.dumps({f"{FULL}|0|dino": {"dense_miou": 0.3},
                                "invocations": [{"started": "t1", "command": "B",
                                                 "seconds": None}]}))
    out = bench.merged(path, {f"{FULL}|0|mae": {"dense_miou": 0.2}, "invocations": [inv]})
    assert set(bench.units_of(out)) == {f"{FULL}|0|dino", f"{FULL}|0|mae"}
    assert [i["command"] for i in out["invocations"]] == ["run A", "B"]
    lock = bench._claim(tmp_path, f"{FULL}|0|dino")
    assert lock is not None and lock.read_text() == str(os.getpid())
    assert bench._claim(tmp_path, f"{FULL}|0|dino") is None


def _fake_main(bench, monkeypatch, tmp_path, argv, figures, calls):
    def fake_run_unit(setting, spec, arm, seed, threads, run_root):
        calls.append((setting, seed, arm))
        return _unit(bench, **figures(arm, seed))

    monkeypatch.setattr(bench, "run_unit", fake_run_unit)
    monkeypatch.setattr(bench, "data_meta", lambda spec: {"generator_seed": 0})
    threads = torch.get_num_threads()
    try:
        assert bench.main(argv + ["--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)


def test_main_caches_units_and_skips_them_when_run_again(bench, monkeypatch, tmp_path):
    calls = []

    def figs(arm, seed):
        return {"dense_miou": 0.40 if arm == "dino_selfpatch" else 0.35}

    _fake_main(bench, monkeypatch, tmp_path, ["--quick", "--arms", "dino", "dino_selfpatch"],
               figs, calls)
    assert calls == [(QUICK, 0, "dino"), (QUICK, 0, "dino_selfpatch")]
    calls.clear()
    _fake_main(bench, monkeypatch, tmp_path, ["--quick", "--report"], figs, calls)
    assert calls == []
    doc = json.loads((tmp_path / "selfpatch.json").read_text())
    assert doc["benchmark"] == "selfpatch" and doc["mode"] == "quick"
    r = {(x["arm"], x["metric"]): x for x in doc["rows"]}
    assert r[("dino_selfpatch", "dense_miou")]["seeds"] == [0.40]
    assert ("dino", "neighbour_precision_chance") in r
    assert doc["data"][QUICK] == {"generator_seed": 0}
    assert len(doc["missing_units"]) == 3  # the references never ran
    md = (tmp_path / "selfpatch.md").read_text()
    assert "| dino_selfpatch - dino | 1 | +5.0 |" in md and "undetermined" in md


# ------------------------------------------------------------------------------ report
def _cache(bench, by_arm):
    """by_arm: arm -> {seed: {metric: value}}"""
    return {f"{FULL}|{s}|{arm}": _unit(bench, **figs) for arm, by_seed in by_arm.items()
            for s, figs in by_seed.items()}


def test_claim_is_computed_from_the_figures(bench):
    dino = {s: {"dense_miou": 0.30 + 0.005 * s, "image_linear": 0.80 + 0.002 * s}
            for s in (0, 1, 2)}
    up = {s: {"dense_miou": v["dense_miou"] + 0.05, "image_linear": v["image_linear"] - 0.005}
          for s, v in dino.items()}
    c = bench.claim(_cache(bench, {"dino": dino, "dino_selfpatch": up}), FULL)
    assert c["dense_diff"] == pytest.approx(0.05) and c["dense_rose_beyond_spread"] is True
    assert c["image_diff"] == pytest.approx(-0.005) and c["image_within_1_point"] is True
    assert c["verdict"] == "holds" and c["seeds"] == [0, 1, 2]
    line = bench.claim_line(c)
    assert "dense_miou +5.0 points (rose beyond the spread" in line
    assert "image_linear -0.5 points, not more than 1 point below DINO" in line
    assert "**holds**" in line
    # dense up, image down by 3 points
    hurt = {s: {**v, "image_linear": v["image_linear"] - 0.03} for s, v in up.items()}
    c = bench.claim(_cache(bench, {"dino": dino, "dino_selfpatch": hurt}), FULL)
    assert c["verdict"].startswith("does not hold (dense rose, but")
    assert "MORE than 1 point below DINO" in bench.claim_line(c)
    # dense up by less than its spread (one seed down), image kept
    noisy = {s: {**v, "dense_miou": v["dense_miou"] + (0.02 if s else -0.01)}
             for s, v in dino.items()}
    c = bench.claim(_cache(bench, {"dino": dino, "dino_selfpatch": noisy}), FULL)
    assert c["dense_rose_beyond_spread"] is False
    assert c["verdict"].startswith("does not hold (image-level kept")
    # one seed: no spread, undetermined; no pair: no claim
    one = _cache(bench, {"dino": {0: dino[0]}, "dino_selfpatch": {0: up[0]}})
    assert bench.claim(one, FULL)["verdict"].startswith("undetermined")
    assert bench.claim(_cache(bench, {"dino": dino}), FULL) is None


def test_report_tables_on_made_up_cache(bench):
    cache = _cache(bench, {
        "dino": {s: {"dense_miou": 0.30 + 0.01 * s, "neighbour_precision": 0.6}
                 for s in (0, 1, 2)},
        "dino_selfpatch": {s: {"dense_miou": 0.36, "neighbour_precision": 0.8}
                           for s in (0, 1, 2)},
        "random_init": {0: {"dense_miou": 0.1}},
    })
    cache[f"{FULL}|1|dino"]["train"].update(nonfinite_losses=2)
    arms = list(bench.FULL_ARMS)
    t = bench.arms_table(cache, FULL, arms)
    assert "| dino | 3 | 31.0 ± 1.0 |" in t and "| random_init | 1 | 10.0 |" in t
    assert "| mae |" not in t  # arms without units are left out
    d = bench.diff_table(cache, FULL, arms)
    assert "| dino_selfpatch - dino | 3 | +5.0 ± 1.0 (spread 1.0) |" in d
    assert "+20.0 ± 0.0 (spread 0.0)" in d
    rows = {(x["arm"], x["metric"]): x for x in bench.build_rows(cache, FULL, arms)}
    assert rows[("dino", "dense_miou")]["seeds"] == pytest.approx([0.30, 0.31, 0.32])
    assert rows[("dino", "unit_minutes")]["mean"] == pytest.approx(1.5)
    assert "2 non-finite losses" in bench.diagnostics_table(cache, FULL, arms)
    spec = bench.settings(False)[FULL]
    text, diffs, claims = bench.make_notes(cache, FULL, spec, arms, ["x"], False)
    assert len(claims) == 1 and claims[0]["verdict"] == "holds"  # image_linear equal
    assert "Claim: **holds**" in text and "Missing units (1" in text
    assert len(diffs) == len(bench.METRICS) + len(bench.EXTRA)


def test_train_diagnostics_read_the_run_log(bench, tmp_path):
    rows = [{"step": 20, "train_ssl_loss": 9.0, "train_dino_loss": 8.5,
             "train_patch_loss": 6.0},
            {"step": 40, "train_ssl_loss": float("nan"), "train_dino_loss": 7.0,
             "train_patch_loss": 4.0},
            {"step": 40, "val_knn_acc": 0.41234}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    d = bench.train_diagnostics(tmp_path, {"steps": 40, "best_epoch": 0})
    assert d["steps"] == 40 and d["loss_name"] == "train_ssl_loss"
    assert d["nonfinite_losses"] == 1 and d["loss_first"] == 9.0
    assert d["patch_loss_first"] == 6.0 and d["patch_loss_last"] == 4.0
    assert d["dino_loss_last"] == 7.0 and d["val_knn_per_epoch"] == [0.4123]


# ------------------------------------------------------------------------------ speed
def test_speed_script_uses_the_quality_recipe():
    speed = load_bench_script("selfpatch", "speed.py")
    assert speed.settings(True)["batch"] < speed.settings(False)["batch"] == 128
    ov = speed.arm_overrides("dino_selfpatch", "vit_nano", 64)
    d = dict(o.split("=", 1) for o in ov)
    assert d["method"] == "selfpatch" and d["model.backbone"] == "vit_nano"
    assert d["optim.batch_size"] == "64" and d["model.cls_token"] == "false"
    assert dict(o.split("=", 1) for o in speed.arm_overrides("dino", "vit_pico", 8))[
        "method"] == "dino"


def test_bench_command_finds_both_scripts(monkeypatch, tmp_path):
    from selfsup import bench as b
    from selfsup.errors import InputError

    for folder, script, doc in (("selfpatch", "run.py", "Quality."),
                                ("selfpatch", "speed.py", "Speed."), ("other", "run.py", "X.")):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / script).write_text(f'"""{doc}\n\nMore."""\n')
    main = '\nif __name__ == "__main__":\n    ap.add_argument("--quick")\n'
    (tmp_path / "other" / "extra.py").write_text('"""Extra."""' + main)
    (tmp_path / "other" / "worker.py").write_text('"""Worker."""\nif __name__ == "__main__":\n')
    (tmp_path / "other" / "lib.py").write_text('"""Helpers."""\n')
    monkeypatch.setenv("SELFSUP_BENCHMARKS", str(tmp_path))
    assert b.list_benchmarks() == [("other", "X."), ("other/extra", "Extra."),
                                   ("selfpatch", "Quality."), ("selfpatch_speed", "Speed.")]
    assert b._script(tmp_path, "other/extra") == tmp_path / "other" / "extra.py"
    assert b._script(tmp_path, "selfpatch_speed") == tmp_path / "selfpatch" / "speed.py"
    assert b._script(tmp_path, "selfpatch") == tmp_path / "selfpatch" / "run.py"
    with pytest.raises(InputError, match="selfpatch_speed"):  # the message lists it
        b.run_benchmark("other_speed")
