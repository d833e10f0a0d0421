"""Feedback on long work: the progress reporter, the run folder printed at the start, and the
exact resume command on Ctrl-C."""

import argparse
import io
import json

import pytest

from selfsup import progress, runs
from selfsup.chem.optimize import base, optimize
from selfsup.cli import _interrupted_message, main
from selfsup.progress import Progress

POOL = ["CCO", "c1ccccc1", "CC(=O)Oc1ccccc1C(=O)O", "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "CCN(CC)CC",
        "OC(=O)CCc1ccccc1", "Cc1ccc(N)cc1", "CCOC(=O)c1ccccc1", "O=C(O)c1ccncc1",
        "CC(C)Cc1ccc(C(C)C(=O)O)cc1"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress.time, "monotonic", c)
    return c


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


# ------------------------------------------------------------------------------ the reporter


def test_plain_lines_are_rate_limited_and_end_with_a_final_line(clock):
    out = io.StringIO()
    with Progress(10000, "optimize", "calls", stream=out, interval=30, enabled=True) as bar:
        bar.update(100, best=0.5)  # the first update is shown at once
        clock.now += 10
        bar.update(200, best=0.7)  # within 30 s: held back
        clock.now += 25
        bar.update(1200, best=0.912, top10=None)  # 35 s after the first line
        clock.now += 5
        bar.update(1300, best=0.92)  # held back, then shown as the final line
    lines = _lines(out)
    assert len(lines) == 3
    assert lines[0] == "[optimize] 100/10000 calls (1%)  best=0.5  0s"
    assert lines[1] == "[optimize] 1200/10000 calls (12%)  best=0.912  top10=-  35s"
    assert lines[2] == "[optimize] 1300/10000 calls (13%)  best=0.92  top10=-  40s"


def test_no_final_line_twice_and_zero_interval_shows_every_update(clock):
    out = io.StringIO()
    with Progress(3, "plan", "targets", stream=out, interval=0, enabled=True) as bar:
        for i in range(1, 4):
            bar.update(i, solved=i - 1)
    assert _lines(out) == [f"[plan] {i}/3 targets ({100 * i // 3}%)  solved={i - 1}  0s"
                           for i in range(1, 4)]
    out = io.StringIO()
    with Progress(None, "pretrain", stream=out, interval=0, enabled=True):
        pass  # no update at all: one line still says where it ended
    assert _lines(out) == ["[pretrain] 0 steps  0s"]


def test_quiet_unless_enabled(clock):
    assert progress.ENABLED is False  # library use and tests are quiet by default
    out = io.StringIO()
    with Progress(10, "x", stream=out, interval=0) as bar:
        bar.update(5, loss=1.0)
    assert out.getvalue() == "" and bar.done == 5
    was = progress.enable(True)
    try:
        with Progress(10, "x", stream=out, interval=0) as bar:
            bar.update(5, loss=1.0)
    finally:
        progress.enable(was)
    assert _lines(out) == ["[x] 5/10 steps (50%)  loss=1  0s"]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv(progress.ENV_SECONDS, raising=False)
    assert progress.interval_seconds() == 30
    for raw, want in [("0", 0), ("2.5", 2.5), ("-1", 30), ("soon", 30), ("nan", 30)]:
        monkeypatch.setenv(progress.ENV_SECONDS, raw)
        assert progress.interval_seconds() == want


def test_rich_bar_draws_and_nests():
    out = io.StringIO()
    with Progress(4, "outer", "steps", stream=out, enabled=True, rich=True) as outer:
        with Progress(2, "inner", "epochs", stream=out, enabled=True, rich=True) as inner:
            inner.update(2, loss=0.25)
            assert inner._bar is outer._bar  # one live display; the inner one is a task of it
        outer.update(4, loss=0.5)
    assert progress._live == []
    assert "outer" in out.getvalue() and "4/4" in out.getvalue()


# ------------------------------------------------------------------------ the command line


@pytest.fixture
def optimize_argv(tmp_path):
    pool = tmp_path / "pool.smi"
    pool.write_text("\n".join(POOL) + "\n")
    return ["chem", "optimize", "--objective", "qed", "--budget", "60", "--optimizer", "graph_ga",
            f"start_pool={pool}", "graph_ga.population_size=10", "graph_ga.offspring_size=10",
            f"run_root={tmp_path / 'runs'}"]


def test_optimize_prints_the_run_folder_first_and_status_lines(optimize_argv, tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv(progress.ENV_SECONDS, "0")
    seen_at_first_score: list[str] = []
    score = base.OptimizationContext.score

    def spy(self, smiles):
        if not seen_at_first_score:
            seen_at_first_score.append(capsys.readouterr().err)
        return score(self, smiles)

    monkeypatch.setattr(base.OptimizationContext, "score", spy)
    assert main(optimize_argv) == 0
    (run_dir,) = (tmp_path / "runs").glob("optimize-*")
    assert seen_at_first_score[0] == f"run folder: {run_dir}\n"  # before any work was done
    err = capsys.readouterr().err.splitlines()
    status = [ln for ln in err if ln.startswith("[optimize qed] ")]
    assert len(status) >= 2 and "best=" in status[0]
    assert status[-1].startswith("[optimize qed] 60/60 calls (100%)  best=")
    assert runs.OPEN_HOOKS == [] and progress.ENABLED is False  # only for the command


def test_ctrl_c_prints_the_exact_resume_command(optimize_argv, tmp_path, capsys, monkeypatch):
    def interrupt(self, smiles):
        raise KeyboardInterrupt

    monkeypatch.setattr(base.OptimizationContext, "score", interrupt)
    assert main(optimize_argv) == 130
    (run_dir,) = (tmp_path / "runs").glob("optimize-*")
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"selfsup: interrupted; the run is kept in {run_dir}; "
        f"resume with: selfsup chem optimize --resume {run_dir}")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert runs.OPEN_HOOKS == [] and progress.ENABLED is False


def test_interrupted_message_without_resume_or_run():
    si = argparse.Namespace(group="chem", cmd="self-improve")
    assert _interrupted_message(si, ["runs/si-1"]) == (
        "selfsup: interrupted; the run is kept in runs/si-1")
    assert _interrupted_message(si, []) == "selfsup: interrupted"
    vt = argparse.Namespace(group="vision", cmd="train", resume=None)
    assert _interrupted_message(vt, ["runs/my run"]).endswith(
        "resume with: selfsup vision train --resume 'runs/my run'")


def test_plan_reports_targets_done_and_solved(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress.ENV_SECONDS, "0")
    from selfsup.chem.retro.core.toy import cycle_world, dead_end_world

    targets = tmp_path / "targets.smi"
    targets.write_text("\n".join([dead_end_world().target, cycle_world().target, "CCOCC"]) + "\n")
    argv = ["chem", "plan", "--targets", str(targets), "model=toy:all", "stock=toy:all",
            "search.max_iterations=20", "n_draw=0", f"run_root={tmp_path / 'runs'}"]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("run folder: ")
    status = [ln for ln in err if ln.startswith("[plan] ")]
    assert status[-1].startswith("[plan] 3/3 targets (100%)  solved=2")


def test_library_calls_stay_silent(tmp_path, capsys):
    pool = tmp_path / "pool.smi"
    pool.write_text("\n".join(POOL) + "\n")
    optimize(None, [f"start_pool={pool}", "budget=30", "graph_ga.population_size=10",
                    "graph_ga.offspring_size=10", f"run_root={tmp_path / 'runs'}"])
    assert capsys.readouterr().err == ""


RXN = {
    "boc": "CC(C)(C)OC(=O)[NH:1][CH2:2][CH2:3][OH:4]>>[NH2:1][CH2:2][CH2:3][OH:4]",
    "acetyl": "[CH3:1][C:2](=[O:3])O.[NH2:5][CH2:6][CH2:7][OH:8]"
    ">>[CH3:1][C:2](=[O:3])[NH:5][CH2:6][CH2:7][OH:8]",
    "ester": "C[O:1][C:2](=[O:3])[c:4]1[cH:5][cH:6][c:7]([CH3:10])[cH:8][cH:9]1"
    ">>[OH:1][C:2](=[O:3])[c:4]1[cH:5][cH:6][c:7]([CH3:10])[cH:8][cH:9]1",
}


def test_train_single_step_and_self_improve_report_progress(tmp_path, capsys, monkeypatch):
    from selfsup.chem.retro.core.reactions import extract_retro_template

    monkeypatch.setenv(progress.ENV_SECONDS, "0")
    root = tmp_path / "uspto"
    root.mkdir()
    for split, names in {"train": ["boc", "acetyl", "ester"], "valid": ["boc"],
                         "test": ["ester"]}.items():
        lines = ["RxnSmilesClean\tRetroTemplate\tid"]
        lines += [f"{RXN[n]}\t{extract_retro_template(RXN[n])}\t{n}" for n in names]
        (root / f"reaction_templates_50k_{split}.csv").write_text("\n".join(lines) + "\n")
    data = [f"data.root={root}", f"data.cache_dir={root / 'cache'}",
            f"run_root={tmp_path / 'runs'}", "eval.n_test=0", "eval.top_k=[1]"]
    assert main(["chem", "train-single-step", *data, "model.hidden=16", "optim.batch_size=2",
                 "optim.epochs=3", "trainer.threads=1", "trainer.device=cpu"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("run folder: ")
    status = [ln for ln in err if ln.startswith("[train-single-step] ")]
    assert len(status) >= 3  # 3 epochs of one step each (the third example is a batch of one)
    assert status[-1].startswith("[train-single-step] 3/3 steps (100%)  epoch=3/3  loss=")
    assert "valid_top1=" in status[-1]

    model = err[0].removeprefix("run folder: ") + "/model.pt"
    targets = tmp_path / "targets.smi"
    targets.write_text("NCCO\nCC(=O)NCCO\n")
    assert main(["chem", "self-improve", *data, f"model={model}", f"targets.file={targets}",
                 "n_iterations=1", "search.max_iterations=5", "finetune.epochs=2",
                 "finetune.batch_size=8", "finetune.replay=0"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("run folder: ")
    assert any(ln.startswith("[self-improve 1/1 plan] 2/2 targets (100%)  solved=")
               for ln in err)
    assert any(ln.startswith("[self-improve 1/1 fine-tune] ") for ln in err)
