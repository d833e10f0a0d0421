"""The AugSelf quality benchmark script: units, the shared cache, the report and its claim lines
(no training: units and evaluation are replaced by made-up figures)."""

import json
import os

import pytest
import yaml

from conftest import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("augself")


FULL = "tinted-fashion-mnist/resnet20-3ep"
QUICK = "tinted-fashion-mnist/resnet8-1ep"


def _unit(bench, **figures):
    u = {m: 0.5 for m in bench.METRICS}
    u.update(figures)
    u.update(train_seconds=60.0, eval_seconds=30.0, unit_seconds=90.0,
             train={"steps": 10, "loss_first": 1.0, "loss_last": 0.5,
                    "z_std_last": 0.04, "z_std_healthy": 0.0442, "val_knn_per_epoch": [0.3]},
             provenance={"torch": "2.x", "torch_threads": 1})
    return u


# ------------------------------------------------------------------------------ units
def test_settings_and_arms_of_both_modes(bench):
    full, quick = bench.settings(False), bench.settings(True)
    assert list(full) == [FULL] and list(quick) == [QUICK]
    ov = dict(o.split("=", 1) for o in full[FULL]["overrides"])
    assert ov["data.name"] == "tinted-fashion-mnist" and ov["data.generator_seed"] == "0"
    assert ov["model.backbone"] == "resnet20" and ov["optim.epochs"] == "3"
    assert ov["data.val_size"] == "5000" and ov["data.per_class"] == "2500"
    assert full[FULL]["arms"] == ("simsiam", "simsiam_augself", "moco", "moco_augself",
                                  "supervised", "random_init")
    for a in ("simclr", "simclr_augself", "byol", "byol_augself"):  # quick mode has them all
        assert a in quick[QUICK]["arms"]
    q = dict(o.split("=", 1) for o in quick[QUICK]["overrides"])
    assert q["model.backbone"] == "resnet8" and q["model.width"] == "0.5"
    assert q["data.per_class"] == "200" and q["optim.epochs"] == "1"
    assert "augself.kinds=[crop,colour]" in bench.ARM_OVERRIDES["moco_augself"]
    assert not any(o.startswith("augself") for o in bench.ARM_OVERRIDES["moco"])


def test_unit_keys_names_and_plan(bench, tmp_path):
    assert bench.unit_key(FULL, 2, "moco_augself") == f"{FULL}|2|moco_augself"
    name = bench.run_name(FULL, "moco_augself", 2)
    assert "/" not in name and name == "tinted-fashion-mnist-resnet20-3ep-moco_augself-s2"
    spec = bench.settings(False)[FULL]
    ov = bench.unit_overrides(FULL, spec, "simsiam_augself", 1, 1, tmp_path)
    assert ov[-4:] == ["trainer.threads=1", "seed=1",
                       "name=tinted-fashion-mnist-resnet20-3ep-simsiam_augself-s1",
                       f"run_root={tmp_path}"]
    assert "method=simsiam" in ov and "augself.kinds=[crop,colour]" in ov
    units = bench.plan(bench.settings(False), None, None, None, False)
    # 4 method arms x 3 seeds + the two references once (seed 0), seed-major
    assert len(units) == 14 and len(set(units)) == 14
    assert [s for _, s, _ in units] == sorted(s for _, s, _ in units)
    assert {a for _, s, a in units if s > 0} == {"simsiam", "simsiam_augself", "moco",
                                                 "moco_augself"}
    # one runner's share
    part = bench.plan(bench.settings(False), ["moco", "random_init"], None, None, False)
    assert part == [(FULL, 0, "moco"), (FULL, 0, "random_init"), (FULL, 1, "moco"),
                    (FULL, 2, "moco")]
    # --seeds 1 2 leaves the references (seed 0) out; --reference-seeds brings them in
    assert not any(a in bench.REFERENCES for _, _, a in
                   bench.plan(bench.settings(False), None, [1, 2], None, False))
    refs = bench.plan(bench.settings(False), ["supervised"], [1], [0, 1], False)
    assert refs == [(FULL, 0, "supervised"), (FULL, 1, "supervised")]
    assert len(bench.plan(bench.settings(True), None, None, None, True)) == 10


def _run_dir(root, stamp, name, cfg, status="running", ckpt=False, best=False):
    path = root / f"{name}-{stamp}"
    (path / "checkpoints").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"name": name, "status": status}))
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    if ckpt:
        (path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if status == "finished":
        (path / "results.json").write_text("{}")
    if best:
        (path / "checkpoints" / "best.pt").write_bytes(b"x")
    return path


def test_previous_run_finds_the_unit_again(bench, tmp_path):
    name = "tinted-fashion-mnist-resnet20-3ep-simsiam-s0"
    cfg = {"name": name, "seed": 0, "method": "simsiam", "trainer": {"threads": 1}}
    assert bench.previous_run(tmp_path, name, cfg) is None
    a = _run_dir(tmp_path, "20261130-090000", name, {**cfg, "trainer": {"threads": 2}},
                 ckpt=True)
    assert bench.previous_run(tmp_path, name, cfg) == a
    # another arm's config, and a finished run without selected weights: not taken
    _run_dir(tmp_path, "20261130-100000", name, {**cfg, "augself": {"kinds": ["crop"]}},
             ckpt=True)
    _run_dir(tmp_path, "20261130-110000", name, cfg, status="finished")
    assert bench.previous_run(tmp_path, name, cfg) == a
    b = _run_dir(tmp_path, "20261130-120000", name, cfg, status="finished", best=True)
    assert bench.previous_run(tmp_path, name, cfg) == b


# ------------------------------------------------------------------------------ cache
def test_merge_keeps_both_runners_units_and_finished_invocations(bench, tmp_path):
    path = tmp_path / "augself_cache.json"
    inv = {"started": "t0", "command": "run A", "seconds": None}
    disk = {f"{FULL}|0|moco": {"linear_class": 0.7},
            "invocations": [{"started": "t1", "command": "run B", "seconds": None}]}
    path.write_text(json.dumps(disk))
    mine = {f"{FULL}|0|simsiam": {"linear_class": 0.8}, "invocations": [inv]}
    out = bench.merged(path, mine)
    assert set(bench.units_of(out)) == {f"{FULL}|0|moco", f"{FULL}|0|simsiam"}
    assert [i["command"] for i in out["invocations"]] == ["run A", "run B"]
    # a finished record of an invocation wins over its unfinished copy on disk
    path.write_text(json.dumps(out))
    done = bench.merged(path, {"invocations": [{**inv, "seconds": 12.0}]})
    assert [i["seconds"] for i in done["invocations"]] == [12.0, None]


def test_unit_lock_keeps_a_second_runner_off(bench, tmp_path):
    key = f"{FULL}|0|moco"
    lock = bench._claim(tmp_path, key)
    assert lock is not None and lock.read_text() == str(os.getpid())
    assert bench._claim(tmp_path, key) is None  # held by a live process (this one)
    lock.write_text("999999999")  # a runner that is gone: stale, taken over
    again = bench._claim(tmp_path, key)
    assert again == lock and lock.read_text() == str(os.getpid())


def _fake_main(bench, monkeypatch, tmp_path, argv, figures, calls):
    import torch

    def fake_run_unit(setting, spec, arm, seed, threads, run_root):
        calls.append((setting, seed, arm))
        # another runner sharing the cache finishes a unit meanwhile
        path = tmp_path / "augself_cache.json"
        disk = json.loads(path.read_text())
        disk.setdefault(f"{setting}|9|other", _unit(bench))
        path.write_text(json.dumps(disk))
        return _unit(bench, **figures(arm, seed))

    monkeypatch.setattr(bench, "run_unit", fake_run_unit)
    monkeypatch.setattr(bench, "data_meta", lambda spec: {"generator_seed": 0})
    monkeypatch.setattr(bench, "share_tinted_sets", lambda: None)
    threads = torch.get_num_threads()
    try:
        assert bench.main(argv + ["--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)


def test_main_caches_units_merges_and_skips_them_when_run_again(bench, monkeypatch, tmp_path):
    calls = []
    figs = lambda arm, seed: {"linear_class": 0.8 if "augself" in arm else 0.75}  # noqa: E731
    _fake_main(bench, monkeypatch, tmp_path, ["--quick", "--arms", "simsiam",
                                               "simsiam_augself"], figs, calls)
    assert calls == [(QUICK, 0, "simsiam"), (QUICK, 0, "simsiam_augself")]
    cache = json.loads((tmp_path / "augself_cache.json").read_text())
    # both units, and the one the other runner wrote in between (merge before each write)
    assert {f"{QUICK}|0|simsiam", f"{QUICK}|0|simsiam_augself", f"{QUICK}|9|other"} <= set(cache)
    assert cache["invocations"][0]["seconds"] is not None
    calls.clear()
    _fake_main(bench, monkeypatch, tmp_path, ["--quick", "--arms", "simsiam"], figs, calls)
    assert calls == []  # cached: nothing trains again
    doc = json.loads((tmp_path / "augself.json").read_text())
    assert doc["benchmark"] == "augself" and doc["mode"] == "quick"
    r = {(x["arm"], x["metric"]): x for x in doc["rows"]}
    assert r[("simsiam_augself", "linear_class")]["mean"] == pytest.approx(0.8)
    assert r[("simsiam", "linear_class")]["seeds"] == [0.75]
    # the other runner's rows stay in a report of a runner given --arms
    assert ("simsiam_augself", "linear_item_colour") in r
    assert doc["data"][QUICK] == {"generator_seed": 0}
    md = (tmp_path / "augself.md").read_text()
    assert "| simsiam_augself - simsiam | 1 |" in md and "+5.0" in md
    assert "undetermined" in md  # one seed: no spread
    calls.clear()
    _fake_main(bench, monkeypatch, tmp_path, ["--quick", "--report"], figs, calls)
    assert calls == []


# ------------------------------------------------------------------------------ report
def _cache(bench, pairs):
    """pairs: arm -> {seed: {metric: value}}"""
    return {f"{FULL}|{s}|{arm}": _unit(bench, **figs) for arm, by_seed in pairs.items()
            for s, figs in by_seed.items()}


def test_claim_lines_are_computed_from_the_figures(bench):
    base = {s: {"linear_class": 0.80 + 0.002 * s, "linear_item_colour": 0.50 + 0.01 * s,
                "linear_background_colour": 0.60, "linear_position": 0.40 + 0.005 * s}
            for s in (0, 1, 2)}
    # simsiam + AugSelf: class -0.5 points, every sensitive metric up 10 points
    aug = {s: {"linear_class": v["linear_class"] - 0.005,
               "linear_item_colour": v["linear_item_colour"] + 0.10,
               "linear_background_colour": 0.70 + 0.01 * s,
               "linear_position": v["linear_position"] + 0.10} for s, v in base.items()}
    # moco + AugSelf: class -3 points; colour up by less than its spread
    moco_aug = {s: {"linear_class": v["linear_class"] - 0.03,
                    "linear_item_colour": v["linear_item_colour"] + (0.05 if s == 0 else -0.03),
                    "linear_background_colour": 0.60, "linear_position": 0.40}
                for s, v in base.items()}
    cache = _cache(bench, {"simsiam": base, "simsiam_augself": aug, "moco": base,
                           "moco_augself": moco_aug})
    c = bench.claim(cache, FULL, "simsiam", "simsiam_augself")
    assert c["linear_class_diff"] == pytest.approx(-0.005)
    assert c["linear_class_within_1_point"] is True
    assert c["sensitive_rose_beyond_spread"] == {m: True for m in bench.SENSITIVE}
    assert c["verdict"] == "holds" and c["seeds"] == [0, 1, 2]
    m = bench.claim(cache, FULL, "moco", "moco_augself")
    assert m["linear_class_within_1_point"] is False
    assert m["sensitive_rose_beyond_spread"]["linear_item_colour"] is False
    assert m["verdict"].startswith("does not hold (class accuracy moved")
    d = bench.difference(cache, FULL, "moco", "moco_augself", "linear_item_colour")
    assert d["differences"] == pytest.approx([0.05, -0.03, -0.03])
    assert d["spread"] == pytest.approx(max(d["std"], d["base_std"], d["augself_std"]))
    line = bench.claim_line(c)
    assert "**simsiam**" in line and "-0.5 points" in line and "within 1 point" in line
    assert "linear_item_colour +10.0 (rose beyond the spread" in line
    assert "NOT within 1 point" in bench.claim_line(m)
    # class kept, nothing rose: its own verdict
    flat = _cache(bench, {"simsiam": base, "simsiam_augself": base})
    assert bench.claim(flat, FULL, "simsiam", "simsiam_augself")["verdict"].startswith(
        "does not hold (class kept")
    # no pair, no claim
    assert bench.claim(_cache(bench, {"simsiam": base}), FULL, "simsiam",
                       "simsiam_augself") is None


def test_report_tables_on_made_up_cache(bench):
    cache = _cache(bench, {
        "simsiam": {s: {"linear_class": 0.80 + 0.01 * s, "linear_position": 0.3}
                    for s in (0, 1, 2)},
        "simsiam_augself": {s: {"linear_class": 0.80, "linear_position": 0.5} for s in (0, 1, 2)},
        "random_init": {0: {"linear_class": 0.2}},
    })
    cache[f"{FULL}|1|simsiam"]["train"].update(z_std_last=0.001, nonfinite_losses=2)
    arms = list(bench.FULL_ARMS)
    t = bench.arms_table(cache, FULL, arms)
    assert "| simsiam | 3 | 81.0 ± 1.0 |" in t and "| random_init | 1 | 20.0 |" in t
    assert "| moco |" not in t  # arms without units are left out
    d = bench.diff_table(cache, FULL, arms)
    assert "| simsiam_augself - simsiam | 3 | -1.0 ± 1.0 (spread 1.0) |" in d
    assert "+20.0 ± 0.0 (spread 0.0)" in d and "moco" not in d
    rows = bench.build_rows(cache, FULL, arms)
    r = {(x["arm"], x["metric"]): x for x in rows}
    assert r[("simsiam", "linear_class")]["seeds"] == pytest.approx([0.80, 0.81, 0.82])
    assert r[("simsiam", "linear_class")]["seed_ids"] == [0, 1, 2]
    assert r[("simsiam", "unit_minutes")]["mean"] == pytest.approx(1.5)
    diag = bench.diagnostics_table(cache, FULL, arms)
    assert "COLLAPSED" in diag and "2 non-finite losses" in diag
    spec = bench.settings(False)[FULL]
    text, diffs, claims = bench.make_notes(cache, FULL, spec, arms, ["x"], {}, False)
    # class -1.0 point (counts as within), position +20, the colours unchanged
    assert len(claims) == 1 and claims[0]["verdict"].startswith("holds in part")
    assert "Claim: **holds in part" in text and "Missing units (1" in text
    assert len(diffs) == len(bench.METRICS)


def test_train_diagnostics_read_the_run_log(bench, tmp_path):
    rows = [{"step": 25, "train_ssl_loss": -0.3, "train_z_std": 0.040,
             "train_augself_total": 2.0},
            {"step": 50, "train_ssl_loss": -0.9, "train_z_std": 0.002,
             "train_augself_total": 1.0},
            {"step": 50, "val_knn_acc": 0.41234, "val_acc": 0.3},
            {"step": 100, "train_ssl_loss": float("nan"), "train_z_std": 0.001},
            {"step": 100, "val_knn_acc": 0.45, "val_acc": 0.35}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    d = bench.train_diagnostics(tmp_path, {"steps": 100, "best_val_acc": 0.35},
                                {"simsiam": {"proj_dim": 400}})
    assert d["steps"] == 100 and d["loss_name"] == "train_ssl_loss"
    assert d["loss_first"] == -0.3 and d["nonfinite_losses"] == 1
    assert d["z_std_last"] == 0.001 and d["z_std_healthy"] == pytest.approx(0.05)
    assert d["val_knn_per_epoch"] == [0.4123, 0.45] and d["augself_loss_last"] == 1.0
    assert bench.collapsed(d) and not bench.collapsed({**d, "z_std_last": 0.04})
    assert not bench.collapsed({})


def test_evaluation_reuses_stored_metrics_of_the_same_arguments(bench, tmp_path, monkeypatch):
    ev = bench.settings(False)[FULL]["eval"]
    stored = {m: {"value": 0.1, "params": bench.eval_params(m, ev)} for m in bench.METRICS}
    (tmp_path / "augself_eval.json").write_text(json.dumps(stored))
    import selfsup.vision.train as vt

    def boom(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(vt, "load_selected", boom)
    assert bench.evaluate_unit(tmp_path, ev) == stored
    p = bench.eval_params("fewshot_mnist_5way5shot", ev)
    assert p == {"protocol": "fewshot", "dataset": "mnist", "target": "class", "seed": 0,
                 "n_way": 5, "k_shot": 5, "n_query": 15, "n_tasks": 1000}
    lin = bench.eval_params("linear_position", ev)
    assert lin["target"] == "position" and lin["n_grid"] == 23 and lin["max_train"] is None
    assert bench.eval_params("transfer_mnist_linear", ev)["max_train"] == 10000
    # other arguments (more few-shot tasks): that metric is evaluated again
    with pytest.raises(AssertionError, match="evaluated again"):
        bench.evaluate_unit(tmp_path, {**ev, "n_tasks": 10})


def test_tinted_sets_are_made_once_per_process(bench, monkeypatch):
    from selfsup.vision import tinted

    calls = []

    def fake(split="train", root=None, size=32, seed=0, n=None):
        calls.append((split, seed))
        return object()

    monkeypatch.setattr(tinted, "tinted_fashion_mnist", fake)
    bench.share_tinted_sets()
    bench.share_tinted_sets()  # not wrapped twice
    a = tinted.tinted_fashion_mnist("train", root=None, size=32, seed=0)
    assert tinted.tinted_fashion_mnist("train", root=None, size=32, seed=0) is a
    tinted.tinted_fashion_mnist("test", root=None, size=32, seed=0)
    assert calls == [("train", 0), ("test", 0)]
