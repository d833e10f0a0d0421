import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Runs and data caches of a test go to its own temporary folder."""
    monkeypatch.setenv("SELFSUP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    yield


def load_bench_script(name: str, script: str = "run.py"):
    """``benchmarks/<name>/<script>`` as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / name / script
    spec = importlib.util.spec_from_file_location(f"{name}_bench_{Path(script).stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
