"""start_run / resume_run: the one way the commands start a run and go on with a killed one.

A tiny config stands for a command's; the commands themselves are tested through the command line
in test_reliability.py (finished runs, runs of another command, damaged files).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from selfsup import runs
from selfsup.config import load_config
from selfsup.errors import ConfigError, InputError
from selfsup.runs import Run, resume_run, start_run


@dataclass(frozen=True)
class TinyConfig:
    name: str = "tiny"
    seed: int = 0
    run_root: str | None = None
    steps: int = 3


def _snapshot(folder):
    """Every file of a run folder with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def events(monkeypatch):
    """The events announced to the open hooks (started, resumed, finished)."""
    seen: list[str] = []
    monkeypatch.setattr(runs, "OPEN_HOOKS", [lambda run, event: seen.append(event)])
    return seen


def _finish(run, cfg, state=None):
    run.finish({"steps": cfg.steps})
    return {"steps": cfg.steps}


def _never(*args):
    raise AssertionError("the body ran")


def _stopped(kind="chem.plan", status="failed"):
    """A run as a killed command leaves it."""
    def stop(run, cfg):
        run.set_status(status)

    run, _ = start_run(kind, TinyConfig, None, [], stop)
    return run


# ------------------------------------------------------------------------------ start_run


def test_start_run_reads_the_config_makes_the_run_and_runs_the_body(tmp_path, events):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: t\nsteps: 4\n")
    seen = []

    def body(run, cfg):
        seen.append(cfg)
        assert Run.open(run.path).meta["status"] == "running"
        return _finish(run, cfg)

    run, res = start_run("chem.plan", TinyConfig, recipe, ["seed=2"], body)
    assert seen == [TinyConfig(name="t", seed=2, steps=4)] and res == {"steps": 4}
    assert run.path.parent == tmp_path / "runs" and run.path.name.startswith("t-")
    assert run.kind == "chem.plan" and run.meta["seed"] == 2 and run.finished
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {
        "name": "t", "seed": 2, "run_root": None, "steps": 4}
    assert events == ["started"]


def test_start_run_puts_the_run_under_run_root(tmp_path):
    run, _ = start_run("chem.plan", TinyConfig, None, [f"run_root={tmp_path / 'elsewhere'}"],
                       _finish)
    assert run.path.parent == tmp_path / "elsewhere"


def test_start_run_uses_the_command_loader():
    calls = []

    def loader(path, overrides):
        calls.append((path, overrides))
        return load_config(TinyConfig, path, overrides)

    run, res = start_run("chem.plan", TinyConfig, None, ("steps=7",), _finish, loader=loader)
    assert calls == [(None, ["steps=7"])] and res == {"steps": 7}


def _refuse_steps(cfg, *rest):
    if cfg.steps < 1:
        raise ConfigError(f"steps must be >= 1, got {cfg.steps}")
    return cfg


@pytest.mark.parametrize("how", ["override", "loader", "check"])
def test_start_run_fails_before_a_run_folder_is_made(tmp_path, events, how):
    kwargs = {}
    overrides = ["steps=0"]
    if how == "override":
        overrides = ["stpes=1"]  # not a key of the schema
    elif how == "loader":
        kwargs["loader"] = lambda path, ov: _refuse_steps(load_config(TinyConfig, path, ov))
    else:
        kwargs["check"] = _refuse_steps
    with pytest.raises(ConfigError):
        start_run("chem.plan", TinyConfig, None, overrides, _never, **kwargs)
    assert not (tmp_path / "runs").exists() and events == []


def test_start_run_marks_the_run_failed_when_the_body_raises(tmp_path):
    def body(run, cfg):
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        start_run("chem.plan", TinyConfig, None, [], body)
    (path,) = (tmp_path / "runs").iterdir()
    meta = Run.open(path).meta
    assert meta["status"] == "failed" and "ZeroDivisionError" in meta["error"]


# ----------------------------------------------------------------------------- resume_run


def test_resume_run_returns_a_finished_run_unchanged(events):
    run, res = start_run("chem.plan", TinyConfig, None, [], _finish)
    before = _snapshot(run.path)
    again, out = resume_run("chem.plan", TinyConfig, run.path, _never, check=_never)
    assert again.path == run.path and out == res == {"steps": 3}
    assert _snapshot(run.path) == before
    assert events == ["started", "finished"]


@pytest.mark.parametrize(("kind", "how"), [
    ("chem.pretrain", "resume it with `selfsup chem pretrain --resume "),
    ("demo", "`selfsup demo` runs cannot be resumed"),
])
def test_resume_run_refuses_a_run_of_another_kind(kind, how):
    run = _stopped(kind)
    before = _snapshot(run.path)
    with pytest.raises(InputError) as err:
        resume_run("chem.plan", TinyConfig, run.path, _never, check=_never)
    msg = str(err.value)
    assert f"is a `{runs.KINDS[kind][0]}` run, not a `selfsup chem plan` run" in msg
    assert how in msg and "nothing was changed" in msg
    assert _snapshot(run.path) == before


@pytest.mark.parametrize("where", ["check", "loader"])
def test_resume_run_check_failures_leave_the_run_untouched(events, where):
    run = _stopped()
    (run.path / "config.yaml").write_text("name: tiny\nseed: 0\nrun_root: null\nsteps: 0\n")
    before = _snapshot(run.path)
    kwargs = {"check": lambda r, cfg: _refuse_steps(cfg)} if where == "check" else {
        "loader": lambda path, ov, base: _refuse_steps(load_config(TinyConfig, path, ov,
                                                                   base=base))}
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        resume_run("chem.plan", TinyConfig, run.path, _never, **kwargs)
    assert _snapshot(run.path) == before
    assert Run.open(run.path).meta["status"] == "failed" and events == ["started"]


def test_resume_run_passes_the_check_result_to_the_body_and_marks_the_run_resumed(events):
    run = _stopped()
    seen = []

    def check(r, cfg):
        assert Run.open(r.path).meta["status"] == "failed"  # not touched yet
        return {"step": 2}

    def body(r, cfg, state):
        meta = Run.open(r.path).meta
        seen.append((cfg, state, meta["status"], len(meta["resumed"])))
        return "went on"

    again, out = resume_run("chem.plan", TinyConfig, run.path, body, check=check)
    assert out == "went on" and again.path == run.path
    assert seen == [(TinyConfig(), {"step": 2}, "running", 1)]
    assert events == ["started", "resumed"]


def test_resume_run_without_check_passes_none():
    run = _stopped()
    _, state = resume_run("chem.plan", TinyConfig, run.path, lambda r, cfg, state: state)
    assert state is None


def test_resume_run_with_overrides_goes_on_with_a_finished_run_and_records_them():
    run, _ = start_run("chem.plan", TinyConfig, None, [], _finish)
    again, res = resume_run("chem.plan", TinyConfig, run.path, _finish, overrides=["steps=9"])
    assert res == {"steps": 9}
    assert yaml.safe_load((run.path / "config.yaml").read_text())["steps"] == 9
    assert len(Run.open(run.path).meta["resumed"]) == 1
    before = _snapshot(run.path)
    with pytest.raises(ConfigError):  # a bad override: nothing changes
        resume_run("chem.plan", TinyConfig, run.path, _never, overrides=["stpes=1"])
    assert _snapshot(run.path) == before


def test_resume_run_marks_the_run_failed_when_the_body_raises():
    run = _stopped(status="running")

    def body(r, cfg, state):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resume_run("chem.plan", TinyConfig, run.path, body)
    meta = Run.open(run.path).meta
    assert meta["status"] == "failed" and "KeyboardInterrupt" in meta["error"]
