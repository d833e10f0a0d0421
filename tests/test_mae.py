"""The masked autoencoder: masking, patches, the masked-only loss, the norm-pix target, the
method's checks, the MAE configs, and a short CPU run on the host."""

import json
from pathlib import Path

import pytest
import torch

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.vision.methods import MethodContext, build_method
from selfsup.vision.methods.mae import (
    masked_mse,
    normalise_patches,
    patchify,
    random_masking,
    sincos_2d,
    unpatchify,
)
from selfsup.vision.train import VisionTrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "mae"

SMALL = ["method=mae", "model.backbone=vit_pico", "model.patch_size=4", "mae.decoder_dim=32",
         "mae.decoder_depth=1", "mae.decoder_heads=2"]


def _method(*extra, in_channels=3, n_classes=4, image_size=16):
    cfg = load_config(VisionTrainConfig, overrides=[*SMALL, *extra])
    ctx = MethodContext(cfg=cfg, n_classes=n_classes, in_channels=in_channels,
                        image_size=image_size, mean=[0.5] * in_channels,
                        std=[0.25] * in_channels, total_steps=10)
    torch.manual_seed(0)
    return build_method("mae", ctx)


def _images(b=4, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, 16, 16), generator=g, dtype=torch.uint8)


# ----------------------------------------------------------------------------- masking


def test_masking_keeps_the_lowest_noise_patches_per_image():
    ids_keep, mask, ids_restore = random_masking(6, 16, 0.75, torch.Generator().manual_seed(3))
    assert ids_keep.shape == (6, 4) and mask.shape == (6, 16)
    assert torch.equal(mask.sum(1), torch.full((6,), 12.0))  # exactly 16 - int(16 * 0.25)
    noise = torch.rand(6, 16, generator=torch.Generator().manual_seed(3))
    for i in range(6):
        lowest = set(noise[i].argsort()[:4].tolist())
        assert set(ids_keep[i].tolist()) == lowest
        assert set(torch.nonzero(mask[i] == 0).flatten().tolist()) == lowest
    # different images, different masks
    assert len({tuple(sorted(r.tolist())) for r in ids_keep}) == 6
    # ids_restore undoes the noise order
    order = noise.argsort(1)
    assert torch.equal(order.gather(1, ids_restore), torch.arange(16).expand(6, 16))
    # int(N * (1 - r)) for a ratio that does not divide evenly: int(10 * 0.4) = 4
    _, m, _ = random_masking(2, 10, 0.6, torch.Generator().manual_seed(0))
    assert torch.equal(m.sum(1), torch.full((2,), 6.0))
    with pytest.raises(ConfigError, match="keeps no patch"):
        random_masking(1, 4, 0.9, None)


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    p = patchify(x, 4)
    assert p.shape == (2, 6, 48)
    # patch 4 is row 1, column 1 (row-major, 3 columns); pixels (row, column, channel)
    assert torch.equal(p[:, 4].reshape(2, 4, 4, 3), x[:, :, 4:8, 4:8].permute(0, 2, 3, 1))
    assert torch.equal(unpatchify(p, 4, 2, 3), x)


def test_norm_pix_target_has_zero_mean_and_unit_variance_per_patch():
    t = normalise_patches(5 + 3 * torch.randn(2, 7, 48, generator=torch.Generator().manual_seed(1)))
    assert torch.allclose(t.mean(-1), torch.zeros(2, 7), atol=1e-5)
    assert torch.allclose(t.var(-1, unbiased=False), torch.ones(2, 7), atol=1e-4)


def test_loss_counts_only_masked_patches():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randn(2, 8, 12, generator=g), torch.randn(2, 8, 12, generator=g)
    mask = torch.zeros(2, 8)
    mask[0, [1, 5]] = 1
    mask[1, [0, 2, 7]] = 1
    loss = masked_mse(pred, target, mask)
    by_hand = sum(((pred[i, j] - target[i, j]) ** 2).mean()
                  for i, j in [(0, 1), (0, 5), (1, 0), (1, 2), (1, 7)]) / 5
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    changed = pred.clone()
    changed[0, 0] += 100.0  # a visible patch
    assert masked_mse(changed, target, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    exact = torch.where(mask[..., None].bool(), target, pred)
    assert masked_mse(exact, target, mask).item() == 0.0


def test_sincos_positions():
    pe = sincos_2d(2, 3, 8)
    assert pe.shape == (6, 8)
    assert torch.allclose(pe[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    # patch (1, 2): row 1 in the first half, column 2 in the second; omega = (1, 1/100)
    r = torch.tensor([1.0, 0.01])
    c = torch.tensor([2.0, 0.02])
    assert torch.allclose(pe[5], torch.cat([r.sin(), r.cos(), c.sin(), c.cos()]))
    with pytest.raises(ConfigError, match="multiple of 4"):
        sincos_2d(2, 2, 6)


# ------------------------------------------------------------------------------ method


@pytest.mark.parametrize("cls_token", [True, False])
def test_method_step_loss_and_probe(cls_token):
    m = _method(f"model.cls_token={str(cls_token).lower()}")
    x, y = _images(), torch.tensor([0, 1, -1, 3])
    loss, logs = m.training_step(x, y, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad
    assert logs["train_mask_ratio"].item() == pytest.approx(0.75)
    assert {"train_ssl_loss", "train_probe_loss", "train_probe_acc"} <= set(logs)
    loss.backward()
    assert m.decoder.mask_token.grad is not None and m.backbone.pos_embed.grad is not None
    # the loss is the masked MSE of the decoder output against the norm-pix target
    v = m.view(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    m.view(x, g)  # the same draws as the step, then the masking noise
    pred, mask, latent = m.reconstruct(v, g)
    assert latent.shape == (4, 4 + int(cls_token), 96)  # 16 patches, 4 visible
    assert pred.shape == (4, 16, 48)
    want = masked_mse(pred, normalise_patches(patchify(v, 4)), mask)
    assert logs["train_ssl_loss"].item() == pytest.approx(want.item(), rel=1e-5)
    _, logs = m.training_step(x, None, torch.Generator().manual_seed(0))
    assert "train_probe_loss" not in logs
    assert m.predict(m.normalise(x))["single"].shape == (4, 4)
    assert m.features(m.normalise(x)).shape == (4, 96)


def test_probe_gradient_stays_out_of_the_backbone():
    m = _method()
    x = _images()
    grads = []
    for labels in (torch.tensor([0, 1, 2, 3]), None):
        m.zero_grad()
        loss, _ = m.training_step(x, labels, torch.Generator().manual_seed(0))
        loss.backward()
        grads.append([p.grad.clone() for p in m.backbone.parameters()])
    assert m.probe.weight.grad is None  # the unlabelled step trains no probe
    for with_probe, without in zip(*grads, strict=True):
        assert torch.equal(with_probe, without)


def test_method_needs_a_vit_and_sane_settings():
    with pytest.raises(ConfigError, match="model.backbone=vit_pico"):
        _method("model.backbone=resnet8", "model.width=0.25")
    with pytest.raises(ConfigError, match="mask_ratio"):
        _method("mae.mask_ratio=1.0")
    with pytest.raises(ConfigError, match="decoder_heads"):
        _method("mae.decoder_heads=3")
    with pytest.raises(ConfigError, match="patch_size"):
        _method("model.patch_size=3", image_size=16)


def test_same_generator_same_loss():
    a, b = _method(), _method()
    b.load_state_dict(a.state_dict())
    la, _ = a.training_step(_images(), None, torch.Generator().manual_seed(5))
    lb, _ = b.training_step(_images(), None, torch.Generator().manual_seed(5))
    lc, _ = b.training_step(_images(), None, torch.Generator().manual_seed(6))
    assert la.item() == lb.item() and la.item() != lc.item()


# ----------------------------------------------------------------------------- configs


def test_mae_configs_load():
    paper = load_config(VisionTrainConfig, CONFIGS / "imagenet_vit_base16_paper.yaml")
    assert paper.method == "mae" and paper.model.backbone == "vit_base"
    assert paper.model.patch_size == 16
    assert (paper.mae.mask_ratio, paper.mae.decoder_dim, paper.mae.decoder_depth,
            paper.mae.decoder_heads, paper.mae.norm_pix_loss) == (0.75, 512, 8, 16, True)
    o = paper.optim
    assert (o.optimizer, o.batch_size, o.epochs, o.weight_decay) == ("adamw", 4096, 1600, 0.05)
    assert o.lr == pytest.approx(1.5e-4 * 4096 / 256) and tuple(o.betas) == (0.9, 0.95)
    assert o.warmup == pytest.approx(40 / 1600)
    cpu = load_config(VisionTrainConfig, CONFIGS / "fmnist_mosaic_cpu.yaml")
    assert (cpu.method, cpu.model.backbone, cpu.model.patch_size) == ("mae", "vit_pico", 4)


# ------------------------------------------------------------------------- host run

RUN = ["data.name=synthetic", "data.synthetic_size=96", "data.val_size=32", "optim.epochs=1",
       "optim.batch_size=32", "optim.optimizer=adamw", "optim.lr=1e-3",
       "optim.weight_decay=0.05", "trainer.progress=false", "trainer.log_every_n_steps=1",
       "model.patch_size=8", *SMALL]


def test_short_cpu_run(tmp_path):
    from selfsup.vision.train import train

    run, res = train(None, [*RUN, f"run_root={tmp_path}"])
    assert res["method"] == "mae" and res["steps"] == 2
    assert 0.0 <= res["test_acc"] <= 1.0 and 0.0 <= res["test_knn_acc"] <= 1.0
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_ssl_loss"] for r in rows if "train_ssl_loss" in r]
    assert losses and all(torch.isfinite(torch.tensor(v)) for v in losses)
    assert (run.path / "checkpoints" / "best.pt").is_file()
    assert (run.path / "checkpoints" / "last.ckpt").is_file()
