"""Two-view methods on the host: losses against hand computations, the MoCo queue, EMA, the
online probe, AugSelf in the loop, and a short CPU run of every method."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import short_vision_run
from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.vision.heads import ema_update, mlp
from selfsup.vision.losses import byol_loss, info_nce_queue, negative_cosine, nt_xent
from selfsup.vision.methods import MethodContext, build_method, list_methods
from selfsup.vision.schedules import cosine_factor, cosine_ramp, linear_warmup_value
from selfsup.vision.train import VisionTrainConfig

# ----------------------------------------------------------------------------------- losses


def test_nt_xent_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    t = 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1).tolist()
    expected = 0.0
    for i in range(4):
        pos = (i + 2) % 4
        sims = {j: sum(a * b for a, b in zip(z[i], z[j], strict=True)) / t
                for j in range(4) if j != i}
        expected += -(sims[pos] - math.log(sum(math.exp(s) for s in sims.values())))
    assert nt_xent(z1, z2, t).item() == pytest.approx(expected / 4, rel=1e-6)


def test_info_nce_queue_by_hand():
    q = torch.tensor([[3.0, 4.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    t = 0.2
    qn = [0.6, 0.8]
    logits = [qn[0] / t, qn[1] / t, -qn[0] / t]  # pos = q.k, then the two queued keys
    expected = -(logits[0] - math.log(sum(math.exp(v) for v in logits)))
    assert info_nce_queue(q, k, queue, t).item() == pytest.approx(expected, rel=1e-6)


def test_cosine_losses_by_hand_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    z = torch.tensor([[0.0, 1.0], [2.0, 2.0]], requires_grad=True)
    assert negative_cosine(p, z).item() == pytest.approx(-(0.0 + 1.0) / 2)
    assert byol_loss(p, z).item() == pytest.approx(((2 - 0) + (2 - 2)) / 2)
    byol_loss(p, z).backward()
    assert z.grad is None and p.grad is not None  # the target gets no gradient


def test_ema_and_schedules():
    a, b = mlp(3, 4, 2), mlp(3, 4, 2)
    before = [t.clone() for t in a.parameters()]
    ema_update(a, b, 0.9)
    for t, t0, o in zip(a.parameters(), before, b.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * t0 + 0.1 * o)
    assert cosine_ramp(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_ramp(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_ramp(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_factor(0, 100, warmup=0.1) == pytest.approx(0.1)
    assert cosine_factor(10, 100, warmup=0.1) == pytest.approx(1.0)
    assert cosine_factor(99, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    assert linear_warmup_value(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert linear_warmup_value(20, 10, 0.04, 0.07) == 0.07


# ---------------------------------------------------------------------------------- methods

SMALL = ["model.backbone=resnet8", "model.width=0.25", "moco.queue_size=64",
         "simclr.proj_hidden=32", "simsiam.proj_dim=32", "simsiam.pred_hidden=8",
         "byol.proj_hidden=32", "byol.proj_dim=16", "byol.pred_hidden=32",
         "moco.proj_hidden=32", "moco.proj_dim=16"]


def _method(name, *extra, in_channels=3, n_classes=4):
    cfg = load_config(VisionTrainConfig, overrides=[f"method={name}", *SMALL, *extra])
    ctx = MethodContext(cfg=cfg, n_classes=n_classes, in_channels=in_channels, image_size=16,
                        mean=[0.5] * in_channels, std=[0.25] * in_channels, total_steps=10)
    return build_method(name, ctx)


def _images(b=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, 16, 16), generator=g, dtype=torch.uint8)


def test_every_method_is_registered():
    assert {"sla", "simclr", "moco", "byol", "simsiam", "supervised"} <= set(list_methods())
    with pytest.raises(ConfigError, match="Valid: .*simclr"):
        _method("nope")


def test_moco_queue_holds_the_momentum_keys_not_the_queries():
    m = _method("moco")
    with torch.no_grad():  # make the key encoder differ from the query encoder
        for p in m.key_backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = _images()
    views = m.recipe(x, torch.Generator().manual_seed(1))
    k1, k2 = m._keys(views)
    q1 = F.normalize(m.projector(m.backbone(views[0].images)), dim=1)
    m.training_step(x, None, torch.Generator().manual_seed(1))
    assert int(m.queue_ptr) == 16
    assert torch.allclose(m.queue[:16], torch.cat([k1, k2]), atol=1e-6)
    assert not torch.allclose(m.queue[:8], q1, atol=1e-3)
    # wrap-around: 64 slots, 16 per step
    for s in range(4):
        m.training_step(x, None, torch.Generator().manual_seed(2 + s))
    assert int(m.queue_ptr) == (16 * 5) % 64


def test_byol_target_follows_the_online_network_by_ema():
    m = _method("byol")
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in m.target_backbone.parameters()]
    m.after_step(0, 10)  # momentum 0.996 at the first step
    for t, a, o in zip(m.target_backbone.parameters(), t0, m.backbone.parameters(), strict=True):
        assert torch.allclose(t, 0.996 * a + 0.004 * o, atol=1e-6)
    assert not any(p.requires_grad for p in m.target_backbone.parameters())


@pytest.mark.parametrize("name", ["simclr", "moco", "byol", "simsiam"])
def test_ssl_step_with_and_without_labels_and_augself(name):
    m = _method(name, "augself.kinds=[crop,colour,flip]")
    x, y = _images(), torch.tensor([0, 1, 2, 3, 0, 1, -1, -1])
    loss, logs = m.training_step(x, y, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad
    assert {"train_ssl_loss", "train_augself_crop", "train_augself_colour",
            "train_augself_flip", "train_probe_loss"} <= set(logs)
    loss.backward()
    assert m.augself.heads["crop"][0].weight.grad is not None
    # the probe trains on detached features: its loss alone sends no gradient to the backbone
    m.zero_grad()
    _, logs = m.training_step(x, None, torch.Generator().manual_seed(0))
    assert "train_probe_loss" not in logs  # unlabelled batch
    preds = m.predict(m.normalise(x))
    assert preds["single"].shape == (8, 4)


def test_online_probe_gradient_stays_out_of_the_backbone():
    m = _method("simsiam")
    x, y = _images(), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    views = m.recipe(x, torch.Generator().manual_seed(0))
    f1 = m.backbone(views[0].images)
    F.cross_entropy(m.probe(f1.detach()), y).backward()
    assert all(p.grad is None for p in m.backbone.parameters())


def test_supervised_needs_labels():
    m = _method("supervised")
    with pytest.raises(ConfigError, match="labelled"):
        m.training_step(_images(), None, torch.Generator().manual_seed(0))


def test_same_generator_same_loss():
    a, b = _method("simclr"), _method("simclr")
    b.load_state_dict(a.state_dict())
    x = _images()
    la, _ = a.training_step(x, None, torch.Generator().manual_seed(3))
    lb, _ = b.training_step(x, None, torch.Generator().manual_seed(3))
    assert la.item() == lb.item()


# ------------------------------------------------------------------------ runs on the host

RUN = short_vision_run(*SMALL)


@pytest.mark.parametrize("name", ["simclr", "moco", "byol", "simsiam", "supervised"])
def test_short_cpu_run_of_each_method(tmp_path, name):
    from selfsup.vision.train import evaluate, train

    extra = ["augself.kinds=[crop]"] if name in ("simsiam", "moco") else []
    run, res = train(None, [*RUN, f"method={name}", f"run_root={tmp_path}", *extra])
    assert res["method"] == name and res["steps"] == 2
    assert 0.0 <= res["test_acc"] <= 1.0 and "test_single_acc" in res
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert any("train_ssl_loss" in r or "train_ce" in r for r in rows)
    assert (run.path / "checkpoints" / "best.pt").is_file()
    assert evaluate(run.path)["test_acc"] == pytest.approx(res["test_acc"], abs=1e-6)


# -------------------------------------------------------------- monitors and eval protocols


def test_knn_monitor_selects_a_method_without_a_classifier(tmp_path):
    from selfsup.vision.train import train

    run, res = train(None, [*RUN, "method=simsiam", "probe.online=false",
                            f"run_root={tmp_path}", "optim.epochs=2"])
    assert res["selected_by"] == "val_knn_acc" and 0.0 <= res["test_knn_acc"] <= 1.0
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    knn = [r["val_knn_acc"] for r in rows if "val_knn_acc" in r]
    assert len(knn) == 2 and res["best_val_acc"] == pytest.approx(max(knn), abs=1e-6)
    with pytest.raises(ConfigError, match="no classifier"):
        train(None, [*RUN, "method=simsiam", "probe.online=false", "monitor.select=val_acc",
                     f"run_root={tmp_path}"])


def test_eval_protocols_on_a_trained_run(tmp_path, capsys):
    from selfsup.cli import main
    from selfsup.vision.protocols import evaluate_protocol
    from selfsup.vision.train import train

    run, _ = train(None, [*RUN, "method=simclr", f"run_root={tmp_path}"])
    lin = evaluate_protocol(run.path, "linear")
    assert 0 <= lin["top1"] <= 1 and lin["n_train"] == 64 and lin["l2"] > 0
    assert json.loads((run.path / "eval_linear.json").read_text())["top1"] == lin["top1"]
    knn = evaluate_protocol(run.path, "knn", k=5)
    assert 0 <= knn["top1"] <= 1 and knn["k"] == 5
    few = evaluate_protocol(run.path, "fewshot", n_way=2, k_shot=1, n_query=1, n_tasks=20)
    assert 0 <= few["mean"] <= 1 and few["ci95"] >= 0
    with pytest.raises(ConfigError, match="labels are class"):
        evaluate_protocol(run.path, "linear", target="position")
    assert main(["vision", "eval", str(run.path), "--protocol", "knn", "--k", "3"]) == 0
    assert (run.path / "eval_knn.json").is_file()


def test_adapt_images_for_transfer():
    from selfsup.vision.protocols import adapt_images

    grey = torch.full((2, 1, 8, 8), 100, dtype=torch.uint8)
    rgb = adapt_images(grey, 3, 16)
    assert rgb.shape == (2, 3, 16, 16) and rgb.dtype == torch.uint8 and int(rgb.max()) == 100
    back = adapt_images(rgb, 1, 8)
    assert back.shape == (2, 1, 8, 8) and torch.equal(back, grey)
