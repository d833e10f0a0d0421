"""selfsup.provenance and the benchmarks' provenance records and --verify comparison helpers."""

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest

from selfsup import provenance as prov

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("bench_common_under_test",
                                                  ROOT / "benchmarks" / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _fresh_static_cache():
    cached = prov._static
    cached.cache_clear()
    yield
    cached.cache_clear()


_S, _I = (str, type(None)), (int, type(None))
KEYS = {"commit": _S, "dirty": (bool, type(None)), "python": str, "platform": str, "arch": _S,
        "cpu_model": _S, "cpu_id": _S, "isa_flags": (list, type(None)), "cpu_cores": _I,
        "cpu_cores_usable": _I, "numpy": _S, "rdkit": _S, "torch": _S, "torch_git": _S,
        "torch_cpu_capability": _S, "mkl": _S, "onednn": _S, "torch_blas": _S,
        "torch_threads": _I}


def test_provenance_keys_and_types():
    import torch

    p = prov.provenance()
    assert set(KEYS) <= set(p)
    for key, types in KEYS.items():
        assert isinstance(p[key], types), (key, p[key])
    assert p["torch"] == torch.__version__
    assert p["torch_threads"] == torch.get_num_threads()
    assert p["python"].count(".") == 2
    if p["isa_flags"] is not None:
        assert set(p["isa_flags"]) <= set(prov.ISA_FLAGS)
    json.dumps(p)  # goes into results JSON as it is
    line = prov.summary(p)
    assert "torch" in line and "CPU" in line and "\n" not in line


def test_provenance_without_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.setattr(prov, "CPUINFO", str(tmp_path / "no-such-cpuinfo"))
    p = prov.provenance()
    assert p["isa_flags"] is None and p["cpu_id"] is None
    assert isinstance(p["cpu_model"], (str, type(None)))
    assert set(KEYS) <= set(p)


def test_provenance_cpuinfo_unreadable(monkeypatch, tmp_path):
    def boom(*a, **k):
        raise PermissionError("denied")

    monkeypatch.setattr(Path, "read_text", boom)
    p = prov.provenance()
    assert p["isa_flags"] is None and set(KEYS) <= set(p)


def test_cpuinfo_parsing_x86_and_arm(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                   "model name\t: Intel(R) Xeon(R) Platinum 8480+\nstepping\t: 8\n"
                   "flags\t\t: fpu sse4_2 avx avx2 fma avx512f amx_tile amx_bf16 foo\n\n"
                   "processor\t: 1\nmodel name\t: Other\nflags\t\t: fpu\n")
    p = prov.provenance(str(x86))
    assert p["cpu_model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert p["cpu_id"] == "6/143/8"
    assert p["isa_flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f", "amx_tile", "amx_bf16"]
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16\nCPU implementer\t: 0x41\n"
                   "CPU part\t: 0xd40\nCPU variant\t: 0x1\n")
    p = prov.provenance(str(arm))
    assert p["isa_flags"] == ["asimd", "sve", "bf16"] and p["cpu_id"] == "0x41/0xd40/0x1"


def test_provenance_without_git(monkeypatch):
    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    p = prov.provenance()
    assert p["commit"] is None and p["dirty"] is None


def test_provenance_never_raises(monkeypatch):
    def broken(cpuinfo):
        raise RuntimeError("anything")

    monkeypatch.setattr(prov, "_static", broken)
    p = prov.provenance()
    assert "commit" in p and "torch_threads" in p


def test_numeric_differences_and_summary():
    a = {"torch": "2.5", "cpu_model": "A", "isa_flags": ["avx2"], "commit": "x", "python": "3"}
    b = {"torch": "2.5", "cpu_model": "B", "isa_flags": ["avx2", "avx512f"], "commit": "y"}
    assert prov.numeric_differences(a, b) == ["cpu_model", "isa_flags"]
    assert prov.numeric_differences(a, None) == []
    assert prov.summary(None) == "not recorded"
    assert "commit ?" in prov.summary({"torch": "2.5"})


def test_write_results_records_provenance(common, tmp_path):
    rows = [common.row("s", "a", "m", [0.5, 0.7])]
    jp, mp = common.write_results("demo", "quick", "python x", "2020-01-01T00:00:00+00:00",
                                  12.0, rows, tmp_path)
    doc = json.loads(jp.read_text())
    assert set(KEYS) <= set(doc["provenance"])
    assert doc["rows"] == rows
    assert "Provenance (the process that wrote this file): commit" in mp.read_text()


def test_compare_units_and_format(common):
    units = [
        {"key": "t|graph_ga|0|100", "old": {"auc_top10": 0.5, "top1": 0.75, "wall_seconds": 40.0,
                                            "run": "x"},
         "new": {"auc_top10": 0.5, "top1": 0.75, "wall_seconds": 55.5}},
        {"key": "t|gegl|0|100", "old": {"auc_top10": 0.5430, "top1": 0.6, "n_calls": 100},
         "new": {"auc_top10": 0.5449, "top1": 0.6, "top3_mean": 0.59, "n_calls": 100}},
    ]
    rows = common.compare_units(units, ["auc_top10", "top1", "top3_mean", "n_calls", "run"],
                                ["wall_seconds"])
    by = {(r["unit"], r["metric"]): r for r in rows}
    assert ("t|graph_ga|0|100", "run") not in by  # not a number
    assert ("t|graph_ga|0|100", "top3_mean") not in by  # on neither side
    r = by[("t|gegl|0|100", "auc_top10")]
    assert r["diff"] == pytest.approx(0.0019) and r["rel_diff"] == pytest.approx(0.0019 / 0.543)
    assert r["equal"] is False and r["kind"] == "figure"
    assert by[("t|gegl|0|100", "top3_mean")]["equal"] is None
    assert by[("t|gegl|0|100", "top3_mean")]["diff"] is None
    assert by[("t|graph_ga|0|100", "auc_top10")]["equal"] is True
    t = by[("t|graph_ga|0|100", "wall_seconds")]
    assert t["kind"] == "timing" and t["diff"] == pytest.approx(15.5)

    s = common.comparison_summary(rows)
    assert s["figures"] == 5 and s["equal"] == 4
    assert s["verdict"] == "1 of 5 figures differ"
    assert s["largest"]["unit"] == "t|gegl|0|100" and s["largest"]["metric"] == "auc_top10"
    exact = common.comparison_summary([r for r in rows if r["unit"].startswith("t|graph_ga")])
    assert exact["verdict"] == "bit-exact" and exact["largest"] is None
    assert common.comparison_summary([])["verdict"] == "no figure to compare"

    table = common.format_comparison(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| unit | metric | committed | re-run | diff")
    assert len(lines) == 2 + len(rows)
    assert "| t|gegl|0|100 | auc_top10 | 0.543 | 0.5449 | +0.0019 | +0.35% | NO |" in table
    assert "| t|graph_ga|0|100 | top1 | 0.75 | 0.75 | +0 | +0.00% | yes |" in table
    assert "| 40 | 55.5 | +15.5 | +38.75% | (timing) |" in table
    assert "| t|gegl|0|100 | top3_mean | - | 0.59 | - | - | - |" in table


def test_compare_nan_and_zero(common):
    rows = common.compare_units([{"key": "k", "old": {"a": float("nan"), "b": 0.0, "c": True},
                                  "new": {"a": float("nan"), "b": 0.25, "c": False}}],
                                ["a", "b", "c"])
    by = {r["metric"]: r for r in rows}
    assert by["a"]["equal"] is True and by["a"]["diff"] is None
    assert by["b"]["diff"] == 0.25 and by["b"]["rel_diff"] is None  # old 0: no relative diff
    assert "c" not in by  # booleans are not figures
    assert math.isnan(by["a"]["old"])


def test_provenance_pair_and_verification_files(common, tmp_path):
    old = {"commit": "aaa", "torch": "2.5", "cpu_model": "X", "isa_flags": ["avx2"]}
    new = {"commit": "bbb", "torch": "2.5", "cpu_model": "Y", "isa_flags": ["avx2"]}
    table = common.format_provenance_pair(old, new)
    assert "| cpu_model **(differs)** | X | Y |" in table
    assert "| commit | aaa | bbb |" in table  # a commit alone does not change kernels
    assert "| isa_flags | avx2 | avx2 |" in table
    assert "not recorded" in common.format_provenance_pair(None, new)
    units = [{"key": "k", "old": {"m": 1.0}, "new": {"m": 1.0}, "old_provenance": None,
              "new_provenance": new, "old_context": "device cpu (1 threads)"}]
    rows = common.compare_units(units, ["m"])
    jp, mp, text = common.write_verification(tmp_path, "demo", "python v", "t0", units, rows)
    doc = json.loads(jp.read_text())
    assert doc["summary"]["verdict"] == "bit-exact" and doc["units"][0]["key"] == "k"
    assert "provenance" in doc
    assert mp.read_text().startswith("# Verification of committed `demo` units")
    assert "**bit-exact**: 1 of 1 figures" in text and "device cpu (1 threads)" in text


def test_select_cheapest_and_verify_folder(common, tmp_path):
    cost = {"a|graph_ga|0": 40.0, "b|graph_ga|0": 30.0, "a|gegl|0": 140.0, "b|gegl|1": 130.0,
            "c|gegl|2": 150.0}
    arm = lambda k: k.split("|")[1]  # noqa: E731
    assert common.select_cheapest(cost, arm) == ["b|graph_ga|0", "b|gegl|1"]
    assert common.select_cheapest(cost, arm, 2) == ["b|graph_ga|0", "a|graph_ga|0", "b|gegl|1",
                                                     "a|gegl|0"]
    assert common.select_cheapest({}, arm) == []
    with pytest.raises(SystemExit):
        common.verify_folder(str(common.RESULTS), "sla")
    with pytest.raises(SystemExit):
        common.verify_folder(str(common.RESULTS / "sub"), "sla")
    assert common.verify_folder(str(tmp_path / "v"), "sla").is_dir()


def test_sla_verify_picks_cheapest_and_writes_comparison(monkeypatch, tmp_path, capsys):
    import argparse

    from conftest import load_bench_script

    sla = load_bench_script("sla")
    setting = "fashion-mnist/100-per-class"
    cache = {"_invocations": [],
             f"{setting}|0|baseline": {"test_single_acc": 0.75, "epoch_seconds": 2.0,
                                       "device": "cpu (2 threads)"},
             f"{setting}|1|baseline": {"test_single_acc": 0.74, "epoch_seconds": 3.0},
             f"{setting}|0|sla": {"test_single_acc": 0.7, "epoch_seconds": 1.0},
             "gone/setting|0|baseline": {"test_single_acc": 0.1, "epoch_seconds": 0.1}}
    path = tmp_path / "sla_cache.json"
    path.write_text(json.dumps(cache))
    monkeypatch.setattr(sla, "COMMITTED_CACHE", path)
    calls = []

    def fake_train(setting_, overrides, seed, m, threads, run_root):
        calls.append((setting_, seed, m, threads, run_root))
        return {"test_single_acc": 0.7852, "epoch_seconds": 9.0, "provenance": {"torch": "x"}}

    monkeypatch.setattr(sla, "train_unit", fake_train)
    args = argparse.Namespace(only=None, seeds=None, modes=None, verify_per_arm=1,
                              out=str(tmp_path / "v"), threads=None)
    assert sla.verify(args) == 0
    assert calls == [(setting, 0, "baseline", 2, tmp_path / "v" / "runs")]
    doc = json.loads((tmp_path / "v" / "sla_verify.json").read_text())
    assert doc["summary"]["verdict"] == "1 of 1 figures differ"
    assert doc["rows"][0]["diff"] == pytest.approx(0.0352)
    assert "| 0.75 | 0.7852 | +0.0352 |" in capsys.readouterr().out
    assert json.loads(path.read_text()) == cache  # the committed cache is untouched

    calls.clear()  # explicit filters: every mode, cheapest per mode
    args = argparse.Namespace(only=[setting], seeds=[0, 1], modes=None, verify_per_arm=2,
                              out=str(tmp_path / "w"), threads=1)
    sla.verify(args)
    assert [(c[1], c[2], c[3]) for c in calls] == [(0, "baseline", 1), (1, "baseline", 1),
                                                   (0, "sla", 1)]
    with pytest.raises(SystemExit):
        sla.verify(argparse.Namespace(only=["nope"], seeds=None, modes=None, verify_per_arm=1,
                                      out=str(tmp_path / "x"), threads=None))


def test_gegl_verify_picks_cheapest_per_arm(monkeypatch, tmp_path):
    import argparse

    import torch

    from conftest import load_bench_script

    gegl = load_bench_script("gegl")
    prior = tmp_path / "model.pt"
    prior.write_text("not read")
    cache = {"prior": {"path": str(prior)}, "invocations": [],
             "median1|graph_ga|0|10000": {"auc_top10": 0.349159, "unit_seconds": 40.8},
             "median2|graph_ga|0|10000": {"auc_top10": 0.287, "unit_seconds": 85.5},
             "zaleplon_mpo|gegl|1|10000": {"auc_top10": 0.515845, "unit_seconds": 131.8},
             "zaleplon_mpo|gegl|0|10000": {"auc_top10": 0.543009, "unit_seconds": 142.0},
             "median1|lstm_hc|0|10000": {"auc_top10": 0.36, "unit_seconds": 1.0}}
    results = tmp_path / "results"
    results.mkdir()
    (results / "gegl_cache.json").write_text(json.dumps(cache))
    monkeypatch.setattr(gegl, "RESULTS", results)
    calls = []

    def fake_run_unit(task, arm, seed, budget, prior_path, run_root):
        calls.append((task, arm, seed, budget, prior_path))
        return {"auc_top10": {"graph_ga": 0.349159, "gegl": 0.5449}[arm], "wall_seconds": 1.0}

    monkeypatch.setattr(gegl, "run_unit", fake_run_unit)
    threads = torch.get_num_threads()
    try:
        args = argparse.Namespace(tasks=None, arms=None, seeds=None, budget=None, prior=None,
                                  verify_per_arm=1, out=str(tmp_path / "v"), threads=None)
        assert gegl.verify(args) == 0
    finally:
        torch.set_num_threads(threads)
    assert calls == [("median1", "graph_ga", 0, 10000, str(prior)),
                     ("zaleplon_mpo", "gegl", 1, 10000, str(prior))]
    doc = json.loads((tmp_path / "v" / "gegl_verify.json").read_text())
    by = {(r["unit"], r["metric"]): r for r in doc["rows"]}
    assert by[("median1|graph_ga|0|10000", "auc_top10")]["equal"] is True
    assert by[("zaleplon_mpo|gegl|1|10000", "auc_top10")]["equal"] is False
    assert all("provenance" in u["new"] for u in doc["units"])
