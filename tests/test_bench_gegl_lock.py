"""The GEGL benchmark's per-unit lock: two runners sharing one cache never run the same unit."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gegl" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gegl_bench_run", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_claim_is_exclusive_and_released(bench, tmp_path):
    lock = bench._claim(tmp_path, "median1|gegl|0|10000")
    assert lock is not None and lock.name == "median1-gegl-0-10000.lock"
    assert lock.read_text() == str(os.getpid())
    assert bench._claim(tmp_path, "median1|gegl|0|10000") is None  # held by a live process
    assert bench._claim(tmp_path, "median1|gegl|1|10000") is not None  # other units are free
    lock.unlink()
    assert bench._claim(tmp_path, "median1|gegl|0|10000") is not None


def test_stale_lock_of_a_dead_runner_is_taken_over(bench, tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(proc.stdout)
    (tmp_path / "zaleplon_mpo-reinvent-2-10000.lock").write_text(str(dead))
    lock = bench._claim(tmp_path, "zaleplon_mpo|reinvent|2|10000")
    assert lock is not None and lock.read_text() == str(os.getpid())


def test_lock_being_written_counts_as_held(bench, tmp_path):
    (tmp_path / "median2-lstm_hc-0-10000.lock").write_text("")
    assert bench._claim(tmp_path, "median2|lstm_hc|0|10000") is None
