"""RotNet, the fmnist-mosaic data set and the dense (segmentation) evaluation: rotations and
metrics against hand computations, the mosaic set on a tiny offline stand-in of Fashion-MNIST,
short CPU runs through the host and the ``dense`` protocol end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import short_vision_run
from selfsup.config import load_config
from selfsup.errors import ConfigError, InputError
from selfsup.vision.evaluate.dense import (
    confusion_matrix,
    dense_evaluate,
    iou_per_class,
    miou,
    patch_labels,
    pixel_accuracy,
    sample_patches,
)
from selfsup.vision.methods import MethodContext, build_method
from selfsup.vision.methods.rotnet import rotate_batch
from selfsup.vision.train import VisionTrainConfig

SMALL = ["model.backbone=resnet8", "model.width=0.25"]


def _method(*extra, in_channels=1, n_classes=4, size=16):
    cfg = load_config(VisionTrainConfig, overrides=["method=rotnet", *SMALL, *extra])
    ctx = MethodContext(cfg=cfg, n_classes=n_classes, in_channels=in_channels, image_size=size,
                        mean=[0.5] * in_channels, std=[0.25] * in_channels, total_steps=10)
    return build_method("rotnet", ctx)


def _images(b=6, c=1, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, size, size), generator=g, dtype=torch.uint8)


# ------------------------------------------------------------------------------- RotNet


def test_rotate_batch_copies_and_labels():
    x = torch.arange(3 * 2 * 5 * 5, dtype=torch.float32).view(3, 2, 5, 5)
    x4, y = rotate_batch(x)
    assert x4.shape == (12, 2, 5, 5)
    assert y.tolist() == [0, 1, 2, 3] * 3
    for i in range(3):
        for k in range(4):
            assert torch.equal(x4[4 * i + k], torch.rot90(x[i], k, dims=(-2, -1)))
    # rot90 by 1 is counter-clockwise: the top-right corner goes to the top left
    assert x4[1, 0, 0, 0] == x[0, 0, 0, 4]
    with pytest.raises(ConfigError, match="square"):
        rotate_batch(torch.zeros(2, 1, 4, 6))


def test_rotnet_feeds_the_four_rotations_of_the_same_augmented_image():
    m = _method()
    seen = []
    m.backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    x, y = _images(), torch.tensor([0, 1, 2, 3, -1, 1])
    loss, logs = m.training_step(x, y, torch.Generator().manual_seed(7))
    aug = m.augment(x, torch.Generator().manual_seed(7))  # the same draws
    assert not torch.equal(aug, m.normalise(x))  # the crop / flip did something
    fed = seen[0]
    assert fed.shape == (24, 1, 16, 16)
    for i in range(6):
        for k in range(4):
            assert torch.equal(fed[4 * i + k], torch.rot90(aug[i], k, dims=(-2, -1)))
    assert torch.isfinite(loss) and loss.requires_grad
    assert {"train_rot_loss", "train_rot_acc", "train_probe_loss", "train_probe_acc"} <= set(logs)
    # the loss is the rotation CE plus the probe's CE on the unrotated copies of labelled images
    f = m.backbone(fed)
    rot_ce = nn.functional.cross_entropy(m.head(f), torch.arange(4).repeat(6))
    keep = y >= 0
    probe_ce = nn.functional.cross_entropy(m.probe(f[0::4][keep]), y[keep])
    assert loss.item() == pytest.approx((rot_ce + probe_ce).item(), rel=1e-5)
    assert logs["train_rot_loss"].item() == pytest.approx(rot_ce.item(), rel=1e-5)


def test_rotnet_probe_is_detached_and_heads_configurable():
    m = _method()
    x, y = _images(), torch.tensor([0, 1, 2, 3, 0, 1])
    m.training_step(x, y, torch.Generator().manual_seed(0))[0].backward()
    assert m.probe.weight.grad is not None and m.head.weight.grad is not None
    # the probe's loss alone reaches no backbone weight
    m.zero_grad()
    f = m.backbone(rotate_batch(m.augment(x, torch.Generator().manual_seed(0)))[0])
    nn.functional.cross_entropy(m.probe(f[0::4].detach()), y).backward()
    assert all(p.grad is None or not p.grad.any() for p in m.backbone.parameters())
    # unlabelled batch: no probe loss; predictions from the probe
    _, logs = m.training_step(x, None, torch.Generator().manual_seed(0))
    assert "train_probe_loss" not in logs
    assert m.predict(m.normalise(x))["single"].shape == (6, 4) and m.has_classifier()
    assert m.predict_rotation(m.normalise(x)).shape == (6, 4)
    mlp = _method("rotnet.head=mlp", "rotnet.hidden=8")
    assert isinstance(mlp.head, nn.Sequential) and mlp.head[0].out_features == 8
    with pytest.raises(ConfigError, match="rotnet.head"):
        _method("rotnet.head=conv")
    no_probe = _method("probe.online=false")
    assert no_probe.probe is None and no_probe.predict(no_probe.normalise(x)) == {}


def test_rotnet_same_generator_same_loss():
    a, b = _method(), _method()
    b.load_state_dict(a.state_dict())
    x = _images()
    la, _ = a.training_step(x, None, torch.Generator().manual_seed(3))
    lb, _ = b.training_step(x, None, torch.Generator().manual_seed(3))
    assert la.item() == lb.item()


RUN = short_vision_run(*SMALL)


def test_short_cpu_run_of_rotnet(tmp_path):
    from selfsup.vision.train import evaluate, train

    run, res = train(None, [*RUN, "method=rotnet", f"run_root={tmp_path}"])
    assert res["method"] == "rotnet" and res["steps"] == 2
    assert 0.0 <= res["test_acc"] <= 1.0 and 0.0 <= res["test_knn_acc"] <= 1.0
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert any("train_rot_loss" in r for r in rows)
    assert evaluate(run.path)["test_acc"] == pytest.approx(res["test_acc"], abs=1e-6)


def test_rotnet_runs_on_a_vit():
    pytest.importorskip("selfsup.vision.vit")
    m = _method("model.backbone=vit_pico", "model.patch_size=4", size=16)
    x, y = _images(b=3), torch.tensor([0, 1, 2])
    loss, logs = m.training_step(x, y, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "train_probe_loss" in logs
    loss.backward()
    assert m.head.weight.grad is not None


def test_cpu_config_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "configs" / "rotnet" / "fmnist_mosaic_cpu.yaml"
    cfg = load_config(VisionTrainConfig, path)
    assert cfg.method == "rotnet" and cfg.data.name == "fmnist-mosaic"
    assert cfg.rotnet.head == "linear" and cfg.model.backbone == "resnet20"


# ------------------------------------------------------------------- the mosaic data set


def test_mosaic_labels_by_hand():
    from selfsup.vision.data import mosaic_labels

    m = np.zeros((3, 4, 4), dtype=np.uint8)
    m[0, 0, 0] = 3  # cell 0: 1 pixel
    m[0, 0:2, 2:4] = 5  # cell 1: 4 pixels -> the largest
    m[1, 2, 0] = 1  # cell 2: 1 pixel
    m[1, 3, 3] = 2  # cell 3: 1 pixel -> a tie: the first cell (2)
    items = np.array([[2, 4, 0, 0], [7, 8, 0, 1], [1, 1, 1, 1]])
    assert mosaic_labels(m, items, 2).tolist() == [4, 0, -1]


def test_fmnist_mosaic_data_set(fake_fmnist, tmp_path):
    from selfsup.vision.data import IMAGE_DATASETS, load_vision_data

    assert "fmnist-mosaic" in IMAGE_DATASETS
    d = load_vision_data("fmnist-mosaic", root=str(tmp_path), val_size=20, generator_seed=3)
    assert d.train_x.shape == (100, 1, 32, 32) and d.train_x.dtype == torch.uint8
    assert d.val_x.shape == (20, 1, 32, 32) and d.test_x.shape == (40, 1, 32, 32)
    for split, x in (("train", d.train_x), ("val", d.val_x), ("test", d.test_x)):
        m = d.masks[split]
        assert m.shape == (len(x), 32, 32) and m.dtype == torch.uint8
        assert int(m.max()) <= 10
        # item pixels are above the threshold (16 of 255, before rounding), background below
        assert bool((x[:, 0][m > 0] >= 16).all()) and bool((x[:, 0][m == 0] <= 16).all())
    # the image label is the class of the top-left cell: its pixels are class + 1
    tl = d.masks["train"][:, :16, :16].reshape(100, -1)
    for i in range(100):
        on = tl[i][tl[i] > 0]
        assert len(on) and bool((on == d.train_y[i] + 1).all())
    assert d.n_classes == 10 and set(d.targets) == {"cell1", "cell2", "cell3", "largest"}
    assert d.targets["cell3"]["test"].shape == (40,)
    assert d.meta["grid"] == 2 and d.meta["train"]["n"] == 120 and d.meta["test"]["seed"] == [3, 1]
    assert d.summary()["masks"] is True
    # made from the generator seed: the same images for every run seed, others for another
    e = load_vision_data("fmnist-mosaic", root=str(tmp_path), val_size=20, generator_seed=3,
                         seed=5)
    assert torch.equal(e.test_x, d.test_x) and torch.equal(e.masks["test"], d.masks["test"])
    f = load_vision_data("fmnist-mosaic", root=str(tmp_path), val_size=20, generator_seed=4)
    assert not torch.equal(f.test_x, d.test_x)
    g = load_vision_data("fmnist-mosaic", root=str(tmp_path), val_size=20, image_size=16,
                         per_class=2)
    assert g.train_x.shape[1:] == (1, 16, 16) and g.masks["train"].shape == (20, 16, 16)


# ---------------------------------------------------------------------------- metrics


def test_confusion_iou_and_pixel_accuracy_by_hand():
    target = torch.tensor([[0, 0, 1], [1, 2, 2]])
    pred = torch.tensor([[0, 1, 1], [1, 2, 0]])
    conf = confusion_matrix(pred, target, 4)
    assert conf.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # IoU: class 0: 1 / (2 + 2 - 1) = 1/3; class 1: 2 / (2 + 3 - 2) = 2/3; class 2: 1 / 2;
    # class 3: absent from both -> left out
    iou = iou_per_class(conf)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 2]) and math.isnan(iou[3])
    assert miou(conf) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    assert pixel_accuracy(conf) == pytest.approx(4 / 6)
    # a class predicted but never true counts (IoU 0)
    conf2 = confusion_matrix(torch.tensor([3, 1]), torch.tensor([1, 1]), 4)
    assert miou(conf2) == pytest.approx((0.5 + 0.0) / 2)
    assert math.isnan(miou(torch.zeros(3, 3, dtype=torch.long)))
    with pytest.raises(InputError):
        confusion_matrix(torch.tensor([4]), torch.tensor([0]), 4)


def test_patch_labels_are_the_majority_of_each_cell():
    m = torch.tensor([[[0, 0, 3, 3],
                       [0, 5, 3, 0],
                       [1, 1, 2, 4],
                       [0, 1, 4, 2]]])
    # cells of 2 x 2: {0,0,0,5} -> 0; {3,3,3,0} -> 3; {1,1,0,1} -> 1; {2,4,4,2} tie -> 2
    assert patch_labels(m, 2, 6).tolist() == [[[0, 3], [1, 2]]]
    assert torch.equal(patch_labels(m, 4, 6), m)  # one pixel per cell
    assert patch_labels(m, 1, 6).tolist() == [[[0]]]  # 5 zeros of 16


# ---------------------------------------------------------------------- dense evaluation


class ClassMap(nn.Module):
    """Feature map = one-hot of the class a pixel's value encodes (value = 20 * class): a
    backbone whose features separate the classes perfectly, at full or pooled resolution."""

    def __init__(self, n_classes: int = 11, pool: int = 1) -> None:
        super().__init__()
        self.n, self.pool = n_classes, pool
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        cls = (x[:, 0] * 255 / 20).round().long().clamp(0, self.n - 1)
        f = nn.functional.one_hot(cls, self.n).permute(0, 3, 1, 2).float()
        return nn.functional.avg_pool2d(f, self.pool) if self.pool > 1 else f


def _blocks(n: int, seed: int, size: int = 8):
    """Masks of 2 x 2 blocks of random classes 0..10 and the images that encode them."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 11, (n, size // 2, size // 2), generator=g)
    masks = cls.repeat_interleave(2, 1).repeat_interleave(2, 2).to(torch.uint8)
    return (masks * 20)[:, None].to(torch.uint8), masks


def test_dense_evaluate_separable_features_give_miou_one():
    (trx, trm), (vax, vam), (tex, tem) = _blocks(40, 0), _blocks(10, 1), _blocks(20, 2)
    res = dense_evaluate(ClassMap(), trx, trm, vax, vam, tex, tem, 0.0, 1.0, max_train=1500,
                         max_val=300, n_grid=3)
    assert res["miou"] > 0.99 and res["pixel_accuracy"] > 0.99 and res["patch_accuracy"] > 0.99
    assert res["feature_map"] == [8, 8] and res["feature_dim"] == 11
    assert res["n_train_patches"] == 1500 and res["n_val_patches"] == 300 and res["n_test"] == 20
    assert int(res["confusion"].sum()) == 20 * 64
    # pooled to the 2 x 2 blocks: still one class per cell
    pooled = dense_evaluate(ClassMap(pool=2), trx, trm, vax, vam, tex, tem, 0.0, 1.0,
                            max_train=None, max_val=None, n_grid=3)
    assert pooled["feature_map"] == [4, 4] and pooled["n_train_patches"] == 40 * 16
    assert pooled["patch_accuracy"] > 0.99 and pooled["miou"] > 0.6


def test_sample_patches_draws_the_cells_it_says():
    x, m = _blocks(6, 3)
    f, y, hw = sample_patches(ClassMap().forward_features, x, m, 50, seed=0, mean=0.0, std=1.0)
    assert hw == (8, 8) and f.shape == (50, 11) and y.shape == (50,)
    assert torch.equal(f.argmax(1), y)  # each feature row is the one-hot of its own label
    f2, y2, _ = sample_patches(ClassMap().forward_features, x, m, 50, seed=0, mean=0.0, std=1.0)
    assert torch.equal(f, f2) and torch.equal(y, y2)
    fa, _, _ = sample_patches(ClassMap().forward_features, x, m, None, seed=0, mean=0.0, std=1.0)
    assert fa.shape == (6 * 64, 11)


def test_dense_evaluate_random_resnet_gives_a_finite_number():
    from selfsup.vision.backbones import build_backbone

    torch.manual_seed(0)
    net = build_backbone("resnet8", in_channels=1, width=0.25)
    (trx, trm), (vax, vam), (tex, tem) = _blocks(30, 0, 16), _blocks(10, 1, 16), _blocks(8, 2, 16)
    res = dense_evaluate(net, trx, trm, vax, vam, tex, tem, [0.3], [0.3], max_train=400,
                         max_val=100, n_grid=3)
    assert res["feature_map"] == [4, 4]
    assert 0.0 <= res["miou"] <= 1.0 and 0.0 <= res["pixel_accuracy"] <= 1.0
    assert net.training  # given back in the mode it had


def test_dense_evaluate_on_a_vit():
    vit = pytest.importorskip("selfsup.vision.vit")
    torch.manual_seed(0)
    net = vit.VisionTransformer(img_size=8, patch_size=2, in_channels=1, embed_dim=16, depth=1,
                                num_heads=2)
    (trx, trm), (vax, vam), (tex, tem) = _blocks(20, 0), _blocks(6, 1), _blocks(6, 2)
    res = dense_evaluate(net, trx, trm, vax, vam, tex, tem, 0.0, 1.0, max_train=200,
                         max_val=50, n_grid=3)
    assert res["feature_map"] == [4, 4] and res["feature_dim"] == 16
    assert 0.0 <= res["miou"] <= 1.0


def test_dense_protocol_end_to_end(fake_fmnist, tmp_path):
    from selfsup.cli import main
    from selfsup.vision.protocols import evaluate_protocol
    from selfsup.vision.train import train

    run, res = train(None, ["method=rotnet", "data.name=fmnist-mosaic", f"data.root={tmp_path}",
                            "data.image_size=16", "data.val_size=20", "optim.epochs=1",
                            "optim.batch_size=32", "trainer.progress=false",
                            f"run_root={tmp_path}", *SMALL])
    assert res["steps"] == 3
    out = evaluate_protocol(run.path, "dense", max_train=300, n_grid=3)
    assert out["protocol"] == "dense" and out["dataset"] == "fmnist-mosaic"
    assert 0.0 <= out["dense_miou"] <= 1.0 and 0.0 <= out["dense_pixel_accuracy"] <= 1.0
    assert out["n_train_patches"] == 300 and out["n_test"] == 40 and out["feature_map"] == [4, 4]
    assert len(out["iou_per_class"]) == 11
    stored = json.loads((run.path / "eval_dense.json").read_text())
    assert stored["dense_miou"] == out["dense_miou"]
    with pytest.raises(ConfigError, match="dense"):
        evaluate_protocol(run.path, "dense", target="cell1")
    assert main(["vision", "eval", str(run.path), "--protocol", "dense", "--max-train", "200",
                 "--n-grid", "2"]) == 0
    assert json.loads((run.path / "eval_dense.json").read_text())["n_train_patches"] == 200


def test_dense_protocol_on_a_run_of_another_data_set(fake_fmnist, tmp_path):
    from selfsup.vision.protocols import evaluate_protocol
    from selfsup.vision.train import train

    # synthetic glyphs (16 px) have no masks: the mosaics are made at the run's size
    run, _ = train(None, [*RUN, "method=rotnet", f"data.root={tmp_path}", f"run_root={tmp_path}"])
    out = evaluate_protocol(run.path, "dense", max_train=200, max_test=10, n_grid=2)
    assert out["n_test"] == 10 and out["feature_map"] == [4, 4]
    assert math.isfinite(out["dense_miou"])
