"""The SLA benchmark script finds the run directory of a unit a killed benchmark left behind."""

import json

import pytest
import yaml

from conftest import load_bench_script


@pytest.fixture(scope="module")
def bench():
    return load_bench_script("sla")


def _run_dir(root, stamp, name, cfg, status="running", ckpt=False, results=False):
    path = root / f"{name}-{stamp}"
    (path / "checkpoints").mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"name": name, "status": status}))
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    if ckpt:
        (path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    if results:
        (path / "results.json").write_text("{}")
    return path


def test_previous_run_matches_name_and_config_but_not_threads(bench, tmp_path):
    name = "mnist-100-per-class-sla-s0"
    cfg = {"name": name, "seed": 0, "optim": {"epochs": 30}, "trainer": {"threads": 1}}
    assert bench.previous_run(tmp_path, name, cfg) is None
    other_threads = {**cfg, "trainer": {"threads": 2}}
    a = _run_dir(tmp_path, "20261129-090000", name, other_threads, ckpt=True)
    assert bench.previous_run(tmp_path, name, cfg) == a
    # a newer directory that never reached a checkpoint, one of another recipe, one of another
    # unit whose name starts alike, and a half-created folder: none of them is taken
    _run_dir(tmp_path, "20261129-100000", name, cfg)
    _run_dir(tmp_path, "20261129-110000", name, {**cfg, "optim": {"epochs": 15}}, ckpt=True)
    _run_dir(tmp_path, "20261129-120000", name + "x", cfg, ckpt=True)
    (tmp_path / f"{name}-20261129-130000").mkdir()
    assert bench.previous_run(tmp_path, name, cfg) == a
    # the newest finished one wins (its results are read back without training)
    b = _run_dir(tmp_path, "20261129-140000", name, cfg, status="finished", results=True)
    assert bench.previous_run(tmp_path, name, cfg) == b


def test_mnist_warmup_setting_is_the_fashion_recipe_on_mnist(bench):
    s = bench.settings(quick=False)
    fashion = [o for o in s["fashion-mnist/100-per-class/resnet32-warmup"] if "data.name" not in o]
    mnist = [o for o in s["mnist/100-per-class/resnet32-warmup"] if "data.name" not in o]
    assert fashion == mnist and "optim.warmup=0.1" in mnist
    assert "data.name=mnist" in s["mnist/100-per-class/resnet32-warmup"]


def test_previous_run_ignores_checkpoint_frequency_and_keys_added_since(bench, tmp_path):
    name = "fashion-mnist-full-data-sla-s0"
    cfg = {"name": name, "seed": 0, "optim": {"epochs": 2},
           "trainer": {"threads": 1, "checkpoint_every_minutes": 10.0}}
    # saved before trainer.checkpoint_every_minutes existed: the schema's default fills it
    older = _run_dir(tmp_path, "20261129-090000", name,
                     {"name": name, "seed": 0, "optim": {"epochs": 2}}, ckpt=True)
    assert bench.previous_run(tmp_path, name, cfg) == older
    often = {**cfg, "trainer": {"checkpoint_every_minutes": 1.0, "checkpoint_every_n_steps": 5}}
    newer = _run_dir(tmp_path, "20261129-100000", name, often, ckpt=True)
    assert bench.previous_run(tmp_path, name, cfg) == newer
    # a key the schema does not know (another version of selfsup) is not taken
    _run_dir(tmp_path, "20261129-110000", name, {**cfg, "nonsense": 1}, ckpt=True)
    assert bench.previous_run(tmp_path, name, cfg) == newer


def test_step_cost_times_both_comparisons(bench):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cost = bench.step_cost(repeats=1)
    finally:
        torch.set_num_threads(threads)
    assert set(cost) == {"baseline", "sla", "baseline_m_copies", "ratio", "ratio_same_images"}
    assert all(v > 0 for v in cost.values())
    # with one repeat each median is that repeat: the ratios are built from the step times
    assert cost["ratio"] == pytest.approx(cost["sla"] / (4 * cost["baseline"]))
    assert cost["ratio_same_images"] == pytest.approx(cost["sla"] / cost["baseline_m_copies"])
    # an SLA step sees 4 x 128 images, a baseline step 128
    assert cost["sla"] > cost["baseline"] and cost["baseline_m_copies"] > cost["baseline"]


def test_per_copy_accuracy_reads_each_copy_at_its_own_columns():
    torch = pytest.importorskip("torch")
    per_copy = load_bench_script("sla", "per_copy.py")
    n, m = 3, 2
    y = torch.tensor([0, 1, 2, 1])
    b = y.shape[0]

    class Model:
        """Copy 0 right on every image; copy 1 right at its own column on images 0 and 1 only,
        with a larger wrong logit at copy 0's column that a per-copy read must ignore."""
        def __init__(self):
            self.m, self.n_classes = m, n

        def predict(self, x):
            joint = torch.zeros(m, b, n, m)
            joint[0, torch.arange(b), y, 0] = 5.0
            wrong = (y + 1) % n
            joint[1, torch.arange(b), y, 0] = 9.0  # other copy's column: not read for copy 1
            joint[1, :2, :, 1][torch.arange(2), y[:2]] = 3.0
            joint[1, 2:, :, 1][torch.arange(2), wrong[2:]] = 3.0
            return {"joint": joint.reshape(m * b, n * m)}

    batches = [(torch.zeros(b, 1, 2, 2), y)]
    assert per_copy.per_copy_accuracy(Model(), batches) == [1.0, 0.5]
    # two batches: counts add up over them
    assert per_copy.per_copy_accuracy(Model(), batches * 2) == [1.0, 0.5]
    with pytest.raises(ValueError, match="no test images"):
        per_copy.per_copy_accuracy(Model(), [])
