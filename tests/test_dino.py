"""DINO: the loss against a hand computation, centring, the teacher EMA and its schedules, the
teacher-temperature warm-up, the last-layer freeze, the weight-decay schedule, clipping, and a
short CPU run through the host."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.vision.methods import MethodContext, build_method
from selfsup.vision.methods.base import Method
from selfsup.vision.methods.dino import (
    DINOHead,
    clip_per_parameter,
    dino_loss,
    update_center,
)
from selfsup.vision.train import VisionTrainConfig

TINY = ["model.backbone=vit_pico", "model.patch_size=4", "dino.out_dim=32", "dino.hidden=16",
        "dino.bottleneck=8", "dino.n_local=2", "dino.local_size=8"]


def _dino(*extra, total_steps=10, n_classes=4):
    torch.manual_seed(0)
    cfg = load_config(VisionTrainConfig, overrides=["method=dino", *TINY, *extra])
    ctx = MethodContext(cfg=cfg, n_classes=n_classes, in_channels=3, image_size=16,
                        mean=[0.5] * 3, std=[0.25] * 3, total_steps=total_steps)
    return build_method("dino", ctx)


def _images(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, 16, 16), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------------------ loss


def _softmax(v):
    m = max(v)
    e = [math.exp(a - m) for a in v]
    return [a / sum(e) for a in e]


def test_dino_loss_by_hand_skips_same_view_pairs():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 3, generator=g) for _ in range(3)]  # 2 global + 1 local views
    teacher = [torch.randn(2, 3, generator=g) for _ in range(2)]
    center = torch.tensor([[0.3, -0.2, 0.1]])
    ts, tt = 0.1, 0.04
    total, pairs = 0.0, 0
    for gi in range(2):
        for v in range(3):
            if v == gi:
                continue
            ce = 0.0
            for b in range(2):
                p = _softmax([(teacher[gi][b, k].item() - center[0, k].item()) / tt
                              for k in range(3)])
                q = _softmax([student[v][b, k].item() / ts for k in range(3)])
                ce += -sum(pk * math.log(qk) for pk, qk in zip(p, q, strict=True))
            total += ce / 2
            pairs += 1
    assert pairs == 4
    got = dino_loss(student, teacher, center, ts, tt).item()
    assert got == pytest.approx(total / pairs, rel=1e-5)


def test_centring_uses_and_updates_the_centre():
    g = torch.Generator().manual_seed(1)
    s = [torch.randn(3, 4, generator=g) for _ in range(2)]
    t = [torch.randn(3, 4, generator=g) for _ in range(2)]
    c = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    # the loss sees t - c
    shifted = [x - c for x in t]
    assert dino_loss(s, t, c, 0.1, 0.04).item() == pytest.approx(
        dino_loss(s, shifted, torch.zeros(1, 4), 0.1, 0.04).item(), rel=1e-6)
    assert dino_loss(s, t, c, 0.1, 0.04).item() != pytest.approx(
        dino_loss(s, t, torch.zeros(1, 4), 0.1, 0.04).item())
    new = update_center(c, torch.cat(t), 0.9)
    assert torch.allclose(new, 0.9 * c + 0.1 * torch.cat(t).mean(0, keepdim=True), atol=1e-6)


def test_training_step_updates_the_centre_by_ema_of_the_teacher_outputs():
    m = _dino()
    x = _images()
    views = m.recipe(x, torch.Generator().manual_seed(5))
    with torch.no_grad():
        glob = torch.cat([v.images for v in views[:2]])
        t = m.teacher_head(m.teacher_backbone(glob))
    assert torch.count_nonzero(m.center) == 0
    loss, logs = m.training_step(x, None, torch.Generator().manual_seed(5))
    assert torch.isfinite(loss) and "train_dino_loss" in logs
    assert torch.allclose(m.center, 0.1 * t.mean(0, keepdim=True), atol=1e-6)
    c1 = m.center.clone()
    m.training_step(x, None, torch.Generator().manual_seed(5))  # same views, same teacher
    assert torch.allclose(m.center, 0.9 * c1 + 0.1 * t.mean(0, keepdim=True), atol=1e-6)


# --------------------------------------------------------------------------------- teacher


def test_teacher_follows_the_student_by_ema_with_a_cosine_momentum():
    m = _dino()
    assert not any(p.requires_grad for p in m.teacher_backbone.parameters())
    assert not any(p.requires_grad for p in m.teacher_head.parameters())
    with torch.no_grad():
        for p in list(m.backbone.parameters()) + list(m.head.parameters()):
            p.add_(0.5)
    t0 = [p.clone() for p in m.teacher_head.parameters()]
    assert m.teacher_momentum(0, 10) == pytest.approx(0.996)
    assert m.teacher_momentum(10, 10) == pytest.approx(1.0)
    assert m.teacher_momentum(5, 10) == pytest.approx(0.998)
    m.after_step(0, 10)
    for t, a, s in zip(m.teacher_head.parameters(), t0, m.head.parameters(), strict=True):
        assert torch.allclose(t, 0.996 * a + 0.004 * s, atol=1e-6)
    t1 = [p.clone() for p in m.teacher_backbone.parameters()]
    m.after_step(10, 10)  # momentum 1 at the end: the teacher stays
    for t, a in zip(m.teacher_backbone.parameters(), t1, strict=True):
        assert torch.equal(t, a)
    assert int(m.steps_done) == 10 and "steps_done" in m.state_dict()


def test_teacher_temperature_warm_up():
    m = _dino("dino.warmup_teacher_temp=0.04", "dino.teacher_temp=0.07",
              "dino.warmup_teacher_temp_frac=0.5")
    assert m.teacher_temp(0) == pytest.approx(0.04)
    assert m.teacher_temp(2) == pytest.approx(0.04 + 0.03 * 2 / 5)
    assert m.teacher_temp(5) == pytest.approx(0.07)
    assert m.teacher_temp(9) == pytest.approx(0.07)
    # the step comes from the steps done (kept in the state dict for resumes)
    m.after_step(2, 10)
    _, logs = m.training_step(_images(), None, torch.Generator().manual_seed(0))
    assert logs["train_teacher_temp"] == pytest.approx(0.052)
    with pytest.raises(ConfigError, match="dino.warmup_teacher_temp_frac"):
        _dino("dino.warmup_teacher_temp_frac=1.5")


# ------------------------------------------------------------------- optimiser-step hooks


def _step(m, step, total, opt):
    opt.zero_grad()
    loss, _ = m.training_step(_images(), torch.tensor([0, 1, 2, 3]),
                              torch.Generator().manual_seed(step))
    loss.backward()
    m.before_optimizer_step(step, total, opt)
    opt.step()


def test_last_layer_is_frozen_during_the_first_fraction():
    m = _dino("dino.freeze_last_layer=0.3")
    opt = torch.optim.AdamW(m.param_groups(0.04), lr=1e-2)
    last0 = m.head.last_layer.weight.clone()
    mlp0 = m.head.mlp[0].weight.clone()
    for step in range(3):  # steps 0, 1, 2 < 0.3 * 10
        _step(m, step, 10, opt)
        assert torch.equal(m.head.last_layer.weight, last0)
    assert not torch.equal(m.head.mlp[0].weight, mlp0)
    _step(m, 3, 10, opt)
    assert not torch.equal(m.head.last_layer.weight, last0)


def test_weight_decay_schedule_endpoints_on_the_decayed_group_only():
    m = _dino("dino.weight_decay_end=0.4")
    opt = torch.optim.AdamW(m.param_groups(0.04), lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.04, 0.0]
    m.before_optimizer_step(0, 10, opt)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.04)
    m.before_optimizer_step(5, 10, opt)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.22)
    m.before_optimizer_step(10, 10, opt)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.4)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    fixed = _dino("dino.weight_decay_end=null")
    opt = torch.optim.AdamW(fixed.param_groups(0.04), lr=1e-3)
    fixed.before_optimizer_step(10, 10, opt)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.04)


def test_per_parameter_gradient_clipping():
    a = torch.nn.Parameter(torch.zeros(3))
    b = torch.nn.Parameter(torch.zeros(2))
    a.grad = torch.tensor([3.0, 4.0, 0.0])  # norm 5 -> 3
    b.grad = torch.tensor([1.0, 1.0])  # norm sqrt 2, kept
    clip_per_parameter([a, b], 3.0)
    assert torch.allclose(a.grad, torch.tensor([1.8, 2.4, 0.0]), atol=1e-5)
    assert torch.equal(b.grad, torch.tensor([1.0, 1.0]))


def test_default_hook_changes_nothing():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=1e-4)
    before = dict(opt.param_groups[0])
    Method().before_optimizer_step(0, 10, opt)
    assert opt.param_groups[0].keys() == before.keys()
    assert all(opt.param_groups[0][k] is before[k] for k in before)


def test_dino_head_is_weight_normalised():
    head = DINOHead(12, 20, hidden=16, bottleneck=8, layers=3)
    assert dict(head.last_layer.named_parameters()).keys() == {"weight"}  # g fixed at 1
    z = torch.randn(5, 12)
    out = head(z)
    assert out.shape == (5, 20)
    bottleneck = F.normalize(head.mlp(z), dim=-1)
    w = head.last_layer.weight
    assert torch.allclose(out, bottleneck @ (w / w.norm(dim=1, keepdim=True)).T, atol=1e-6)
    assert sum(isinstance(x, torch.nn.Linear) for x in head.mlp) == 3
    assert sum(isinstance(x, torch.nn.GELU) for x in head.mlp) == 2
    learnt = DINOHead(12, 20, hidden=16, bottleneck=8, norm_last_layer=False)
    assert learnt.last_layer.norm is not None and learnt.last_layer.norm.requires_grad


def test_head_batch_norm_normalises_hidden_units_over_every_row():
    torch.manual_seed(0)
    head = DINOHead(12, 20, hidden=16, bottleneck=8, layers=3, bn=True)
    assert sum(isinstance(x, torch.nn.BatchNorm1d) for x in head.mlp) == 2
    tokens = torch.randn(3, 5, 12) * 4 + 2  # (B, N, D): patch tokens go through as 15 rows
    out = head(tokens)
    assert out.shape == (3, 5, 20)
    hidden = head.mlp[1](head.mlp[0](tokens.reshape(15, 12)))  # after the first BatchNorm
    assert torch.allclose(hidden.mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(hidden.var(0, unbiased=False), torch.ones(16), atol=1e-3)
    flat = head(tokens.reshape(15, 12)).reshape(3, 5, 20)
    assert torch.allclose(out, flat, atol=1e-6)  # same rows, same statistics
    cfg = load_config(VisionTrainConfig, overrides=["method=dino", *TINY, "dino.head_bn=true"])
    assert cfg.dino.head_bn is True


def test_views_and_features():
    m = _dino()
    views = m.recipe(_images(), torch.Generator().manual_seed(0))
    assert [tuple(v.images.shape[-2:]) for v in views] == [(16, 16)] * 2 + [(8, 8)] * 2
    x = m.normalise(_images())
    assert torch.allclose(m.features(x), m.backbone(x))  # the CLS token
    assert m.predict(x)["single"].shape == (4, 4)
    with pytest.raises(ConfigError, match="views.recipe"):
        _dino("views.recipe=simclr")


# ------------------------------------------------------------------------- run on the host

RUN = ["data.name=synthetic", "data.synthetic_size=48", "data.val_size=16", "optim.epochs=1",
       "optim.batch_size=16", "optim.optimizer=adamw", "optim.lr=1e-3", "optim.weight_decay=0.04",
       "trainer.progress=false", "trainer.log_every_n_steps=1", "monitor.bank_size=16"]


def test_short_cpu_run_of_dino(tmp_path):
    from selfsup.vision.train import evaluate, train

    run, res = train(None, [*RUN, "method=dino", *TINY, "dino.freeze_last_layer=0.5",
                            f"run_root={tmp_path}"])
    assert res["method"] == "dino" and res["steps"] == 2
    assert 0.0 <= res["test_acc"] <= 1.0 and 0.0 <= res["test_knn_acc"] <= 1.0
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_dino_loss"] for r in rows if "train_dino_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (run.path / "checkpoints" / "best.pt").is_file()
    ckpt = torch.load(run.path / "checkpoints" / "last.ckpt", weights_only=True)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    # the host called the method's hook: wd of the last step (1 of 2) on the cosine 0.04 -> 0.4
    assert groups[0]["weight_decay"] == pytest.approx(0.22) and groups[1]["weight_decay"] == 0
    assert evaluate(run.path)["test_acc"] == pytest.approx(res["test_acc"], abs=1e-6)
