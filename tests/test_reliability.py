"""Resuming never harms a run; a damaged or wrong file ends in one clear line, not a traceback.

Each test here reproduces a finding of the reliability issue: resuming a finished run, resuming a
run of another command, the metric history of a killed and resumed run, and damaged run files.
"""

import json
import os

import pytest

from conftest import killed_at
from selfsup.cli import main
from selfsup.config import to_dict
from selfsup.errors import ConfigError, InputError
from selfsup.runs import Run

POOL = [
    "CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CCN(CC)CC",
    "OC(=O)CCc1ccccc1", "Cc1ccc(N)cc1", "CCOC(=O)c1ccccc1", "O=C(O)c1ccncc1",
    "CC(C)Cc1ccc(C(C)C(=O)O)cc1",
]
VISION = [
    "data.name=synthetic", "data.synthetic_size=128", "data.val_size=32",
    "model.backbone=resnet8", "model.width=0.25", "optim.epochs=2", "optim.batch_size=32",
    "sla.mode=baseline", "trainer.progress=false", "trainer.log_every_n_steps=1",
]


def _snapshot(folder):
    """Every file of a run folder with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _optimize_args(tmp_path, budget=200, **extra):
    pool = tmp_path / "pool.smi"
    pool.write_text("\n".join(POOL) + "\n")
    args = [f"start_pool={pool}", "objective=qed", f"budget={budget}",
            "graph_ga.population_size=10", "graph_ga.offspring_size=20",
            f"run_root={tmp_path / 'runs'}"]
    return args + [f"{k}={v}" for k, v in extra.items()]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("selfsup: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------------ resuming a run


def test_resuming_a_finished_optimize_run_changes_nothing(tmp_path, capsys):
    from selfsup.chem.optimize import optimize

    run, res = optimize(None, _optimize_args(tmp_path))
    assert len(run.read_metrics()) == 2  # rows at 100 and 200 calls
    before = _snapshot(run.path)
    assert main(["chem", "optimize", "--resume", str(run.path)]) == 0
    assert _snapshot(run.path) == before
    assert "finished" in capsys.readouterr().err


def test_resuming_a_finished_vision_run_changes_nothing(tmp_path, capsys):
    from selfsup.vision.train import train

    run, res = train(None, [*VISION, f"run_root={tmp_path / 'runs'}"])
    assert res["epochs"] == 2
    before = _snapshot(run.path)
    assert main(["vision", "train", "--resume", str(run.path)]) == 0
    assert _snapshot(run.path) == before
    assert json.loads((run.path / "results.json").read_text())["epochs"] == 2


def _vision_run(tmp_path, status="failed", **meta):
    """A vision run folder as a killed training leaves it (no training needed)."""
    from selfsup.vision.train import VisionTrainConfig

    run = Run.create("v", to_dict(VisionTrainConfig()), root=tmp_path / "runs",
                     kind="vision.train")
    run.meta.update(meta)
    run.set_status(status)
    return run


@pytest.mark.parametrize("recorded", ["kind", "command"])
def test_resuming_a_run_of_another_command_changes_nothing(tmp_path, capsys, recorded):
    extra = ({} if recorded == "kind" else
             {"kind": None, "command": ["/usr/bin/selfsup", "vision", "train", "x=1"]})
    run = _vision_run(tmp_path, **extra)
    before = _snapshot(run.path)
    assert main(["chem", "optimize", "--resume", str(run.path)]) == 2
    line = _error_line(capsys)
    assert "is a `selfsup vision train` run" in line
    assert f"selfsup vision train --resume {run.path}" in line
    assert _snapshot(run.path) == before


def test_resuming_an_unknown_kind_with_a_foreign_config_changes_nothing(tmp_path, capsys):
    run = _vision_run(tmp_path, kind=None, command=["python", "script.py"])
    before = _snapshot(run.path)
    assert main(["chem", "plan", "--resume", str(run.path)]) == 2
    assert "does not fit this command" in _error_line(capsys)
    assert _snapshot(run.path) == before


def test_a_killed_and_resumed_optimize_run_keeps_its_whole_metric_history(tmp_path,
                                                                          monkeypatch):
    from selfsup.chem.optimize import optimize, resume

    args = _optimize_args(tmp_path, budget=450, checkpoint_every=250)
    full, _ = optimize(None, [*args, "name=full"])
    with killed_at(monkeypatch, "kill_after_checkpoint"):
        optimize(None, [*args, "name=killed"])
    (killed,) = (tmp_path / "runs").glob("killed-*")
    before = [r["step"] for r in Run.open(killed).read_metrics()]
    assert before and max(before) <= 300  # killed at its first record save (about 250 calls)
    run, res = resume(killed)
    rows_full = full.read_metrics()
    rows_resumed = run.read_metrics()
    assert [r["step"] for r in rows_resumed][: len(before)] == before  # history kept
    assert rows_resumed == rows_full  # and the same rows as the uninterrupted run
    assert len(rows_full) == 4


# ------------------------------------------------------------------------ damaged files


def _damage(path, how):
    data = path.read_bytes() if path.is_file() else b""
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "random": os.urandom(64) + b"\xff\xfe",
                      "list": b"[1, 2, 3]\n"}[how])


@pytest.mark.parametrize("how", ["truncated", "empty", "random"])
def test_damaged_vision_checkpoint_on_resume(tmp_path, capsys, how):
    import torch

    run = _vision_run(tmp_path)
    ckpt = run.path / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(exist_ok=True)
    torch.save({"global_step": 3, "state_dict": {"w": torch.zeros(50)}}, ckpt)
    _damage(ckpt, how)
    before = _snapshot(run.path)
    assert main(["vision", "train", "--resume", str(run.path)]) == 2
    line = _error_line(capsys)
    assert str(ckpt) in line and "Delete" in line
    assert _snapshot(run.path) == before


def test_damaged_best_weights_on_eval(tmp_path, capsys):
    import torch

    run = _vision_run(tmp_path, status="finished")
    best = run.path / "checkpoints" / "best.pt"
    best.parent.mkdir(exist_ok=True)
    torch.save({"w": torch.zeros(100)}, best)
    _damage(best, "truncated")
    assert main(["vision", "eval", str(run.path)]) == 2
    assert str(best) in _error_line(capsys)


@pytest.mark.parametrize("how", ["truncated", "list"])
@pytest.mark.parametrize("name", ["run.json", "results.json"])
@pytest.mark.parametrize("command", ["report", "resume"])
def test_damaged_run_files(tmp_path, capsys, how, name, command):
    run = _vision_run(tmp_path, status="finished")
    run.write_results({"test_acc": 0.5, "epochs": 2})
    _damage(run.path / name, how)
    before = _snapshot(run.path)
    argv = (["report", str(run.path)] if command == "report"
            else ["vision", "train", "--resume", str(run.path)])
    assert main(argv) == 2
    line = _error_line(capsys)
    assert str(run.path / name) in line
    assert ("not valid JSON" if how == "truncated" else "not a JSON object") in line
    assert _snapshot(run.path) == before


@pytest.mark.parametrize("command", ["vision", "chem"])
def test_damaged_config_on_resume(tmp_path, capsys, command):
    run = _vision_run(tmp_path)
    if command == "chem":
        run.meta["kind"] = "chem.optimize"
        run._save_meta()
    cfg = run.path / "config.yaml"
    cfg.write_text("name: v\nseed: 0\ndata: {name: [synth\n")
    before = _snapshot(run.path)
    argv = ["vision", "train"] if command == "vision" else ["chem", "optimize"]
    assert main([*argv, "--resume", str(run.path)]) == 2
    line = _error_line(capsys)
    assert str(cfg) in line and "not valid YAML" in line
    assert _snapshot(run.path) == before


def test_damaged_oracle_record_on_resume(tmp_path, capsys):
    run = _vision_run(tmp_path)
    run.meta["kind"] = "chem.optimize"
    run._save_meta()
    from selfsup.chem.optimize.base import OptimizeConfig

    (run.path / "config.yaml").write_text(json.dumps(to_dict(OptimizeConfig())))
    (run.path / "oracle_calls.csv").write_bytes(b"index,smiles,score\n1,CCO,0.4\n2,\xff\xfe")
    before = _snapshot(run.path)
    assert main(["chem", "optimize", "--resume", str(run.path)]) == 2
    assert "oracle_calls.csv" in _error_line(capsys)
    assert _snapshot(run.path) == before


def test_non_utf8_config_file(tmp_path, capsys):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_bytes(b"name: x\n\xff\xfe\n")
    assert main(["chem", "optimize", "--config", str(cfg)]) == 2
    assert "recipe.yaml' is not UTF-8" in _error_line(capsys)


# ------------------------------------------------------------------------ run names


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "a\\b"])
def test_run_names_cannot_leave_the_run_root(tmp_path, name):
    with pytest.raises(ConfigError, match="plain folder name"):
        Run.create(name, {}, root=tmp_path / "runs")
    assert not (tmp_path / "x").exists() and not any(tmp_path.glob("x-*"))


def test_run_name_with_a_separator_on_the_command_line(tmp_path, capsys):
    rc = main(["chem", "optimize", *_optimize_args(tmp_path), "name=../escape"])
    assert rc == 2 and "plain folder name" in _error_line(capsys)
    assert not list(tmp_path.glob("escape-*"))


def test_reopen_checks_nothing_is_written(tmp_path):
    run = _vision_run(tmp_path)
    before = _snapshot(run.path)
    again = Run.reopen(run.path, "vision.train")
    assert again.kind == "vision.train" and not again.finished
    assert _snapshot(run.path) == before
    with pytest.raises(InputError, match="nothing was changed"):
        Run.reopen(run.path, "chem.pretrain")


@pytest.mark.parametrize("how", ["not-gzip", "cut-gzip", "not-utf8", "directory"])
def test_damaged_start_pool(tmp_path, capsys, how):
    import gzip

    pool = tmp_path / ("bad.smi.gz" if how != "not-utf8" else "bad.smi")
    full = gzip.compress(("\n".join(POOL * 20) + "\n").encode())
    if how == "not-gzip":
        pool.write_text("CCO\n")
    elif how == "cut-gzip":
        pool.write_bytes(full[: len(full) // 2])
    elif how == "not-utf8":
        pool.write_bytes(b"CCO\n\xff\xfeCC\n")
    else:
        pool.mkdir()
    args = [a for a in _optimize_args(tmp_path) if not a.startswith("start_pool=")]
    assert main(["chem", "optimize", *args, f"start_pool={pool}"]) == 2
    line = _error_line(capsys)
    assert str(pool) in line or how == "directory"


def test_damaged_pretraining_corpus(tmp_path, capsys):
    import gzip

    corpus = tmp_path / "corpus.smi.gz"
    data = gzip.compress(("\n".join(POOL * 50) + "\n").encode())
    corpus.write_bytes(data[: len(data) // 2])
    rc = main(["chem", "pretrain", f"data.dataset={corpus}", f"run_root={tmp_path / 'runs'}"])
    assert rc == 2
    line = _error_line(capsys)
    assert "corpus.smi.gz' is a damaged or cut gzip file" in line
