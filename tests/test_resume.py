"""A run killed (SIGKILL) right after its first checkpoint resumes to the uninterrupted result,
whether that checkpoint closed an epoch or was taken in the middle of one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = [
    "data.name=synthetic", "data.synthetic_size=256", "data.val_size=64",
    "model.backbone=resnet8", "model.width=0.5", "optim.epochs=3", "optim.batch_size=64",
    "sla.mode=sla_sd", "trainer.progress=false", "trainer.log_every_n_steps=1",
]


def _selfsup(args, env_extra=None, root=None):
    env = dict(os.environ, **(env_extra or {}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("every_n_steps, first_step", [(0, 3), (2, 2)],
                         ids=["end-of-epoch", "mid-epoch"])
def test_kill_after_first_checkpoint_then_resume(tmp_path, every_n_steps, first_step):
    root = tmp_path / "runs"
    args = [*ARGS, f"trainer.checkpoint_every_n_steps={every_n_steps}"]
    full = _selfsup(["vision", "train", *args, "name=full", f"run_root={root}"])
    assert full.returncode == 0, full.stderr
    killed = _selfsup(["vision", "train", *args, "name=killed", f"run_root={root}"],
                      {"SELFSUP_FAULT_INJECT": "kill_after_checkpoint"})
    assert killed.returncode == -9  # SIGKILL, right after the first checkpoint
    (run_dir,) = root.glob("killed-*")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert not (run_dir / "results.json").exists()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    steps_before = [json.loads(x)["step"] for x in lines]
    # epochs of 3 steps: killed after the first epoch, or after step 2 of the first
    assert max(steps_before) == first_step

    resumed = _selfsup(["vision", "train", "--resume", str(run_dir)])
    assert resumed.returncode == 0, resumed.stderr
    (full_dir,) = root.glob("full-*")
    a = json.loads((full_dir / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    for key in ("test_acc", "test_single_acc", "test_aggregated_acc", "test_distilled_acc",
                "test_joint_acc", "test_loss", "best_val_acc", "best_epoch", "steps"):
        assert a[key] == b[key], key
    # nothing lost, nothing doubled: the metric logs are identical row by row
    rows_a = (full_dir / "metrics.jsonl").read_text().splitlines()
    rows_b = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert rows_a == rows_b
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "finished" and len(meta["resumed"]) == 1
    assert b["epoch_seconds"] > 0
