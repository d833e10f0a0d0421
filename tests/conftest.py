import os

import pytest

os.environ.setdefault("PYTHONWARNINGS", "ignore")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Runs and data caches of a test go to its own temporary folder."""
    monkeypatch.setenv("SELFSUP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "data"))
    yield
