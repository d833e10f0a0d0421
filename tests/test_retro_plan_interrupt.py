"""A planning call over worker processes that stops (an error in the caller's callback, or
Ctrl-C) drops the targets still queued instead of searching them all before it returns."""

import os
import time

import pytest

from selfsup.chem.retro.core.single_step import FixedReactionModel
from selfsup.chem.retro.core.toy import dead_end_world
from selfsup.chem.retro.workflows.plan import SearchSpec, plan_targets

LOG = "SELFSUP_TEST_SEARCH_LOG"


class _LoggedSlowModel(FixedReactionModel):
    """The dead-end world, slowed down, appending one line per model call to $LOG."""

    def _propose(self, products, top_k):
        with open(os.environ[LOG], "a") as f:
            f.write("call\n")
        time.sleep(0.02)
        return super()._propose(products, top_k)


def _factory():
    return _LoggedSlowModel(dead_end_world().reactions, use_cache=False)


def test_a_stopped_pool_does_not_search_the_queued_targets(tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv(LOG, str(log))
    world = dead_end_world()
    targets = [world.target] * 40  # 4 model calls each: 160 calls for all of them
    spec = SearchSpec(_factory, world.stock(), top_k=5, max_iterations=10)

    def stop(rec):
        raise RuntimeError("stopped by the caller")

    with pytest.raises(RuntimeError, match="stopped by the caller"):
        plan_targets(targets, spec, n_workers=2, start_method="fork", on_result=stop)
    time.sleep(0.5)  # the searches in flight when it stopped end by themselves
    calls = len(log.read_text().splitlines())
    assert 4 <= calls < 160 // 2
