import json

import pytest

from selfsup.errors import InputError
from selfsup.io import atomic_torch_save, atomic_write_json, safe_torch_load
from selfsup.runs import Run


def test_run_layout_and_metrics(tmp_path):
    run = Run.create("demo", {"a": 1}, seed=3, root=tmp_path)
    assert run.path.parent == tmp_path and run.path.name.startswith("demo-")
    for f in ("config.yaml", "run.json", "env.json"):
        assert (run.path / f).is_file()
    assert run.config == {"a": 1}
    assert run.meta["seed"] == 3 and run.meta["status"] == "running"
    for step in range(5):
        run.log_metrics({"step": step, "loss": 1.0 / (step + 1)})
    assert [r["step"] for r in run.read_metrics()] == [0, 1, 2, 3, 4]
    run.finish({"acc": 0.5})
    assert json.loads((run.path / "results.json").read_text()) == {"acc": 0.5}
    assert (run.path / "metrics.csv").read_text().splitlines()[0] == "step,loss"
    assert Run.open(run.path).meta["status"] == "finished"


def test_trim_drops_rows_after_checkpoint_and_cut_lines(tmp_path):
    run = Run.create("r", {}, root=tmp_path)
    for step in range(6):
        run.log_metrics({"step": step})
    with open(run.path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 6, "lo')  # a line cut by a kill
    assert len(run.read_metrics()) == 6
    assert run.trim_metrics(3) == 4
    assert [r["step"] for r in run.read_metrics()] == [0, 1, 2, 3]


def test_two_runs_same_second_get_distinct_dirs(tmp_path):
    a = Run.create("x", {}, root=tmp_path)
    b = Run.create("x", {}, root=tmp_path)
    assert a.path != b.path


def test_open_rejects_non_run(tmp_path):
    with pytest.raises(InputError, match="not a selfsup run directory"):
        Run.open(tmp_path)


def test_resume_records_time(tmp_path):
    run = Run.create("x", {}, root=tmp_path)
    again = Run.resume(run.path)
    assert len(again.meta["resumed"]) == 1 and again.meta["status"] == "running"


def test_atomic_writes_leave_no_temp_files(tmp_path):
    import torch

    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_torch_save({"w": torch.ones(2)}, tmp_path / "w.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "w.pt"]
    assert torch.equal(safe_torch_load(tmp_path / "w.pt")["w"], torch.ones(2))


def test_atomic_writes_have_the_usual_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_failed_write_keeps_old_file(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "a.json", {"x": Boom()})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_safe_load_refuses_pickled_objects(tmp_path, capsys):
    import pickle

    import torch

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"x": Evil()}, fh)
    with pytest.raises(InputError, match="evil.pt' holds pickled Python objects.*never unpickles"):
        safe_torch_load(tmp_path / "evil.pt")
    assert "unpickled!" not in capsys.readouterr().out
    assert torch is not None


def test_marks_failure_records_status_and_reraises(tmp_path):
    run = Run.create("x", {}, root=tmp_path)
    with pytest.raises(ZeroDivisionError):
        with run.marks_failure():
            raise ZeroDivisionError("boom")
    meta = Run.open(run.path).meta
    assert meta["status"] == "failed" and "ZeroDivisionError" in meta["error"]


def test_runs_of_one_name_under_two_roots_keep_their_own_logs(tmp_path, monkeypatch):
    """Run folders are named by the second they start in: two of one name under different roots
    can share a folder name, and each must still log into its own log.txt."""
    from datetime import datetime

    import selfsup.runs as runs

    class Frozen(datetime):  # both runs start in the same second
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(runs, "datetime", Frozen)
    a = Run.create("same", {}, root=tmp_path / "a")
    b = Run.create("same", {}, root=tmp_path / "b")
    assert a.path.name == b.path.name
    a.logger().info("from a")
    b.logger().info("from b")
    for h in a.logger().handlers + b.logger().handlers:
        h.flush()
    assert "from a" in (a.path / "log.txt").read_text()
    assert "from b" not in (a.path / "log.txt").read_text()
    assert "from b" in (b.path / "log.txt").read_text()


def test_finish_closes_the_log_file_and_a_later_message_appends(tmp_path):
    """Commands log a closing line after finish() (vision train, chem pretrain): it must reach
    log.txt through the logger they already hold."""
    run = Run.create("closing", {}, root=tmp_path)
    log = run.logger()
    log.info("before")
    assert len(log.handlers) == 1
    run.finish({"x": 1})
    assert log.handlers[0].stream is None  # no file left open for a finished run
    log.info("after")
    run.close_logger()
    assert log.handlers[0].stream is None and len(run.logger().handlers) == 1
    assert (run.path / "log.txt").read_text().splitlines()[0].endswith("INFO before")
    assert (run.path / "log.txt").read_text().splitlines()[1].endswith("INFO after")
