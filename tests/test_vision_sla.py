"""SLA: joint-label indexing, the inference rules, the SD loss and a one-epoch run of every mode."""

import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.vision.label_transforms import build_label_transform
from selfsup.vision.methods.sla import (
    MODES,
    SLAModel,
    aggregated_logits,
    joint_labels,
    self_distillation_loss,
    single_logits,
)


def test_joint_labels_transform_major():
    y = torch.tensor([2, 0, 1])
    m = 4
    lab = joint_labels(y, m)
    # copy j of sample b sits at j*B + b and has label y_b*M + j
    for j in range(m):
        for b in range(3):
            assert lab[j * 3 + b].item() == y[b].item() * m + j


def test_joint_labels_agree_with_the_transform_module():
    t = build_label_transform("rotation")
    y = torch.tensor([1, 3])
    x = torch.zeros(2, 1, 4, 4)
    _, j_all = t.expand(x)
    assert torch.equal(joint_labels(y, t.M), y.repeat(t.M) * t.M + j_all)


def test_single_inference_uses_identity_columns():
    n, m, b = 3, 4, 2
    joint_identity = torch.arange(b * n * m, dtype=torch.float).view(b, n * m)
    si = single_logits(joint_identity, n, m)
    # columns y*M + 0 for y = 0..N-1
    assert torch.equal(si, joint_identity[:, [0, 4, 8]])


def test_aggregated_inference_is_mean_of_diagonal_blocks():
    n, m, b = 3, 2, 2
    torch.manual_seed(0)
    joint = torch.randn(m * b, n * m)
    ag = aggregated_logits(joint, n, m)
    expected = torch.zeros(b, n)
    for bi in range(b):
        for y in range(n):
            expected[bi, y] = sum(joint[j * b + bi, y * m + j] for j in range(m)) / m
    assert torch.allclose(ag, expected)


def test_sd_loss_against_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    tau = 2.0
    pt = [math.exp(v / tau) for v in (0.0, 2.0, 0.0)]
    pt = [p / sum(pt) for p in pt]
    ps = [math.exp(v / tau) for v in (1.0, 0.0, -1.0)]
    ps = [p / sum(ps) for p in ps]
    kl = sum(a * math.log(a / b) for a, b in zip(pt, ps))
    got = self_distillation_loss(s, t, tau=tau).item()
    assert got == pytest.approx(tau**2 * kl, rel=1e-6)
    # the teacher is detached: no gradient flows into it
    t_req = t.clone().requires_grad_(True)
    self_distillation_loss(s.clone().requires_grad_(True), t_req).backward()
    assert t_req.grad is None


def _tiny_model(mode):
    from selfsup.vision.backbones import build_backbone

    torch.manual_seed(0)
    return SLAModel(build_backbone("resnet8", in_channels=1, width=0.5), 5,
                    build_label_transform("rotation"), mode)


@pytest.mark.parametrize("mode", MODES)
def test_loss_and_predict_shapes(mode):
    model = _tiny_model(mode)
    x = torch.randn(6, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss, logs = model.loss(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    model.eval()
    preds = model.predict(x)
    assert preds["single"].shape == (6, 5)
    assert model.primary_rule() in preds
    if mode in ("sla", "sla_sd"):
        assert preds["aggregated"].shape == (6, 5)
        assert preds["joint"].shape == (24, 20)
        # at initialisation the SLA loss is close to log(N*M)
        assert logs["loss_sla"].item() == pytest.approx(math.log(20), abs=0.7)


def test_sla_sd_loss_decomposes():
    model = _tiny_model("sla_sd")
    model.eval()  # fixed BN statistics so the pieces can be recomputed
    x = torch.randn(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3])
    loss, logs = model.loss(x, y)
    x_all, _ = model.transform.expand(x)
    feats = model.backbone(x_all)
    joint = model.head(feats)
    l_sla = F.cross_entropy(joint, joint_labels(y, 4))
    u = model.sd_head(feats[:4])
    ag = aggregated_logits(joint, 5, 4)
    expected = l_sla + F.cross_entropy(u, y) + self_distillation_loss(u, ag)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_unknown_mode_is_rejected():
    from selfsup.errors import ConfigError

    with pytest.raises(ConfigError, match="Valid modes"):
        _tiny_model("slaa")


TINY = [
    "data.name=synthetic", "data.synthetic_size=160", "data.val_size=32",
    "model.backbone=resnet8", "model.width=0.5", "optim.epochs=1", "optim.batch_size=32",
    "trainer.progress=false", "trainer.log_every_n_steps=1",
]


@pytest.mark.parametrize("mode", MODES)
def test_one_epoch_cpu_run_of_every_mode(mode, tmp_path):
    from selfsup.vision.train import evaluate, train

    run, res = train(None, TINY + [f"sla.mode={mode}", f"run_root={tmp_path}"])
    assert res["steps"] == 4 and res["epochs"] == 1
    assert 0.0 <= res["test_acc"] <= 1.0
    expected_rules = {"single"} | ({"aggregated", "joint"} if mode.startswith("sla") else set())
    if mode == "sla_sd":
        expected_rules.add("distilled")
    assert {k[5:-4] for k in res if k.startswith("test_") and k.endswith("_acc")} >= expected_rules
    assert (run.path / "checkpoints" / "last.ckpt").is_file()
    assert run.meta["status"] == "finished"
    assert any("val_acc" in r for r in run.read_metrics())
    # eval of the selected weights reproduces the test numbers of the run
    ev = evaluate(run.path)
    assert ev["test_acc"] == pytest.approx(res["test_acc"], abs=1e-6)


def test_lr_factor_warmup_then_step_decay():
    from selfsup.errors import ConfigError
    from selfsup.vision.train import lr_factor

    f = [lr_factor(s, 100, [0.5, 0.75], 0.1, warmup=0.1) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == 1.0
    assert f[49] == 1.0 and f[50] == pytest.approx(0.1) and f[75] == pytest.approx(0.01)
    assert [lr_factor(s, 100, [0.5], 0.1) for s in (0, 49, 50)] == [1.0, 1.0, pytest.approx(0.1)]
    with pytest.raises(ConfigError, match="optim.warmup"):
        lr_factor(0, 100, [], 0.1, warmup=1.5)


def test_negative_checkpoint_frequency_is_rejected(tmp_path):
    from selfsup.errors import ConfigError
    from selfsup.vision.train import train

    with pytest.raises(ConfigError, match="checkpoint_every_minutes=-1.0"):
        train(None, [*TINY, f"run_root={tmp_path}", "trainer.checkpoint_every_minutes=-1"])
