"""SelfPatch: neighbour indexing and the border rule, top-k selection against a brute-force
reference, the aggregation head, the patch loss, separate centres, neighbour precision, the
config checks, a short CPU run through the host, and the recipes' configs."""

import json
import math
from pathlib import Path

import pytest
import torch

from selfsup.config import load_config
from selfsup.errors import ConfigError
from selfsup.vision.methods import MethodContext, build_method
from selfsup.vision.selfpatch import (
    AggregationHead,
    neighbour_index,
    neighbour_precision,
    patch_loss,
    select_neighbours,
)
from selfsup.vision.train import VisionTrainConfig

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------ neighbours


def test_neighbour_index_on_a_3x3_grid():
    idx, ok = neighbour_index(3, 3, "valid")
    assert idx.shape == (9, 8) and ok.shape == (9, 8)
    assert idx[4].tolist() == [0, 1, 2, 3, 5, 6, 7, 8] and bool(ok[4].all())
    # corner 0: only right (0, 1) -> 1, below (1, 0) -> 3 and diagonal (1, 1) -> 4 exist
    assert ok[0].tolist() == [False, False, False, False, True, False, True, True]
    assert idx[0][ok[0]].tolist() == [1, 3, 4]
    assert idx[0][~ok[0]].tolist() == [0] * 5  # invalid slots point at the patch itself
    # edge 1 (top middle): 5 neighbours
    assert idx[1][ok[1]].tolist() == [0, 2, 3, 4, 5]
    assert idx[8][ok[8]].tolist() == [4, 5, 7]
    wrap, wok = neighbour_index(3, 3, "wrap")
    assert bool(wok.all())
    assert wrap[0].tolist() == [8, 6, 7, 2, 1, 5, 3, 4]
    assert wrap[4].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]
    with pytest.raises(ConfigError, match="border"):
        neighbour_index(3, 3, "mirror")


def test_valid_counts_on_a_larger_grid():
    _, ok = neighbour_index(4, 5, "valid")
    counts = ok.sum(1).view(4, 5)
    assert bool((counts[1:-1, 1:-1] == 8).all())  # 8 per interior patch
    assert counts[0, 0] == counts[0, -1] == counts[-1, 0] == counts[-1, -1] == 3
    assert bool((counts[0, 1:-1] == 5).all()) and bool((counts[1:-1, 0] == 5).all())
    idx, _ = neighbour_index(4, 5, "wrap")
    assert all(len(set(row)) == 8 for row in idx.tolist())  # no repeats from 3x3 upwards


def _brute_force(tokens, h, w, k, border):
    """Reference: Python loops over patches and their window."""
    out_idx, out_ok = [], []
    for b in range(tokens.shape[0]):
        rows_i, rows_ok = [], []
        for r in range(h):
            for c in range(w):
                i = r * w + c
                cands = []
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        if dr == dc == 0:
                            continue
                        rr, cc = r + dr, c + dc
                        if border == "wrap":
                            rr, cc = rr % h, cc % w
                        elif not (0 <= rr < h and 0 <= cc < w):
                            continue
                        j = rr * w + cc
                        a, v = tokens[b, i].tolist(), tokens[b, j].tolist()
                        cos = sum(x * y for x, y in zip(a, v, strict=True)) / (
                            math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in v)))
                        cands.append((cos, j))
                cands.sort(reverse=True)
                top = [j for _, j in cands[:k]]
                rows_i.append(top + [i] * (k - len(top)))
                rows_ok.append([True] * len(top) + [False] * (k - len(top)))
        out_idx.append(rows_i)
        out_ok.append(rows_ok)
    return torch.tensor(out_idx), torch.tensor(out_ok)


@pytest.mark.parametrize("border", ["valid", "wrap"])
@pytest.mark.parametrize("k", [1, 4, 6])
def test_top_k_selection_matches_brute_force(border, k):
    g = torch.Generator().manual_seed(k)
    tokens = torch.randn(2, 4 * 5, 6, generator=g)
    idx, ok = select_neighbours(tokens, 4, 5, k, border)
    ref_idx, ref_ok = _brute_force(tokens, 4, 5, k, border)
    assert idx.shape == (2, 20, k) and torch.equal(ok, ref_ok)
    assert torch.equal(idx[ok], ref_idx[ref_ok])
    if border == "valid" and k > 3:  # a corner has 3 candidates: the rest are invalid
        assert ok[:, 0].sum(-1).tolist() == [3, 3]
    with pytest.raises(ConfigError, match="k=9"):
        select_neighbours(tokens, 4, 5, 9, border)


def test_neighbour_precision_by_hand():
    labels = torch.tensor([[0, 0, 1, 1]])  # a 2x2 grid: left column 0, right column 1
    selected = torch.tensor([[[1, 2], [0, 3], [3, 0], [2, 2]]])
    valid = torch.tensor([[[True, True], [True, False], [True, True], [True, False]]])
    # valid pairs: 0-1 same, 0-2 diff, 1-0 same, 2-3 same, 2-0 diff, 3-2 same -> 4 / 6
    assert neighbour_precision(selected, valid, labels) == pytest.approx(4 / 6)
    assert math.isnan(neighbour_precision(selected, torch.zeros_like(valid), labels))


# ------------------------------------------------------------------------ aggregation head


def test_aggregation_head_shapes_and_masking():
    torch.manual_seed(0)
    head = AggregationHead(12, depth=2, num_heads=3).eval()
    tokens = torch.randn(2, 5, 12)
    assert head(tokens).shape == (2, 12)
    assert len(head.blocks) == 2 and head.query.shape == (1, 1, 12)
    mask = torch.tensor([[True, True, True, False, False]] * 2)
    out = head(tokens, mask)
    other = tokens.clone()
    other[:, 3:] = torch.randn(2, 2, 12)  # masked tokens do not matter
    assert torch.allclose(head(other, mask), out, atol=1e-6)
    assert torch.allclose(out, head(tokens[:, :3]), atol=1e-6)
    # per patch: the patch itself and its valid selected neighbours, one query copy each
    patches = torch.randn(2, 9, 12)
    idx, ok = select_neighbours(patches, 3, 3, 4, "valid")
    y = head.aggregate_neighbours(patches, idx, ok)
    assert y.shape == (2, 9, 12)
    b, i = 1, 0  # a corner: itself + 3 valid neighbours
    group = torch.cat([patches[b, i : i + 1], patches[b, idx[b, i][ok[b, i]]]])
    assert group.shape[0] == 4
    assert torch.allclose(y[b, i], head(group.unsqueeze(0))[0], atol=1e-5)


def test_patch_loss_by_hand():
    s = [torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[[0.5, 0.5]]])]
    t = [torch.tensor([[[0.2, 0.0], [0.0, 0.1]]]), torch.tensor([[[0.3, -0.1]]])]
    c = torch.tensor([[0.05, -0.05]])

    def ce(tv, sv):
        p = [math.exp((tv[k] - c[0, k].item()) / 0.04) for k in range(2)]
        p = [a / sum(p) for a in p]
        q = [math.exp(sv[k] / 0.1) for k in range(2)]
        q = [a / sum(q) for a in q]
        return -sum(pk * math.log(qk) for pk, qk in zip(p, q, strict=True))

    view0 = (ce([0.2, 0.0], [1.0, 0.0]) + ce([0.0, 0.1], [0.0, 1.0])) / 2
    view1 = ce([0.3, -0.1], [0.5, 0.5])
    got = patch_loss(s, t, c, 0.1, 0.04).item()
    assert got == pytest.approx((view0 + view1) / 2, rel=1e-5)


# --------------------------------------------------------------------------------- method

TINY = ["model.backbone=vit_pico", "model.patch_size=4", "model.cls_token=false",
        "selfpatch.out_dim=32", "selfpatch.patch_out_dim=32", "selfpatch.hidden=16",
        "selfpatch.bottleneck=8", "selfpatch.n_local=2", "selfpatch.local_size=8"]


def _selfpatch(*extra):
    torch.manual_seed(0)
    cfg = load_config(VisionTrainConfig, overrides=["method=selfpatch", *TINY, *extra])
    ctx = MethodContext(cfg=cfg, n_classes=4, in_channels=3, image_size=16, mean=[0.5] * 3,
                        std=[0.25] * 3, total_steps=10)
    return build_method("selfpatch", ctx)


def _images(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, 16, 16), generator=g, dtype=torch.uint8)


def test_selfpatch_needs_a_vit_without_cls_token():
    with pytest.raises(ConfigError, match="model.cls_token=false"):
        _selfpatch("model.cls_token=true")
    with pytest.raises(ConfigError, match="model.backbone=vit"):
        _selfpatch("model.backbone=resnet8")
    with pytest.raises(ConfigError, match="selfpatch.border"):
        _selfpatch("selfpatch.border=mirror")


def test_separate_centres_follow_their_own_teacher_outputs():
    m = _selfpatch()
    x = _images()
    views = m.recipe(x, torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, tok = m.teacher_backbone.forward_tokens(torch.cat([v.images for v in views[:2]]))
        t_img = m.teacher_head(m.teacher_agg(tok))
        rows = []
        for v in views:
            _, tok = m.teacher_backbone.forward_tokens(v.images)
            n = int(math.isqrt(tok.shape[1]))
            idx, ok = select_neighbours(tok, n, n, 4, "valid")
            rows.append(m.teacher_patch_head(m.teacher_agg.aggregate_neighbours(tok, idx, ok))
                        .reshape(-1, 32))
        t_patch = torch.cat(rows)
    assert t_patch.shape[0] == 4 * (2 * 16 + 2 * 4)  # every patch of every view
    loss, logs = m.training_step(x, None, torch.Generator().manual_seed(3))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(
        (logs["train_dino_loss"] + 0.1 * logs["train_patch_loss"]).item(), rel=1e-5)
    assert torch.allclose(m.center, 0.1 * t_img.mean(0, keepdim=True), atol=1e-5)
    assert torch.allclose(m.patch_center, 0.1 * t_patch.mean(0, keepdim=True), atol=1e-5)
    assert not torch.allclose(m.center, m.patch_center, atol=1e-4)
    # gradients reach the student's aggregation query and both heads, never the teacher
    loss.backward()
    assert m.agg.query.grad is not None and m.patch_head.mlp[0].weight.grad is not None
    assert all(p.grad is None for p in m.teacher_agg.parameters())
    # EMA covers the aggregation and patch heads; both last layers freeze together
    assert len(m.ema_pairs()) == 4 and len(m.last_layers()) == 2


def test_selfpatch_features_and_neighbours():
    m = _selfpatch()
    x = m.normalise(_images())
    _, tok = m.backbone.forward_tokens(x)
    assert torch.allclose(m.features(x), tok.mean(1), atol=1e-6)
    idx, ok = m.teacher_neighbours(x)
    assert idx.shape == (4, 16, 4) and ok.shape == (4, 16, 4)


# ------------------------------------------------------------------------- run on the host

RUN = ["data.name=synthetic", "data.synthetic_size=48", "data.val_size=16", "optim.epochs=1",
       "optim.batch_size=16", "optim.optimizer=adamw", "optim.lr=1e-3", "optim.weight_decay=0.04",
       "trainer.progress=false", "trainer.log_every_n_steps=1", "monitor.bank_size=16"]


def test_short_cpu_run_of_selfpatch(tmp_path):
    from selfsup.vision.train import train

    run, res = train(None, [*RUN, "method=selfpatch", *TINY, f"run_root={tmp_path}"])
    assert res["method"] == "selfpatch" and res["steps"] == 2
    assert 0.0 <= res["test_acc"] <= 1.0 and 0.0 <= res["test_knn_acc"] <= 1.0
    rows = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_patch_loss"] for r in rows if "train_patch_loss" in r]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (run.path / "checkpoints" / "best.pt").is_file()
    assert (run.path / "checkpoints" / "last.ckpt").is_file()


# -------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("name", ["imagenet_vits16_dino_paper", "imagenet_vits16_selfpatch_paper",
                                  "fmnist_mosaic_dino_cpu", "fmnist_mosaic_selfpatch_cpu"])
def test_recipes_load(name):
    cfg = load_config(VisionTrainConfig, ROOT / "configs" / "selfpatch" / f"{name}.yaml")
    assert cfg.method in ("dino", "selfpatch")
    assert cfg.model.backbone.startswith("vit_")
    sec = getattr(cfg, cfg.method)
    assert sec.momentum_teacher == 0.996 and sec.student_temp == 0.1
    if cfg.method == "selfpatch":
        assert not cfg.model.cls_token
        assert (sec.k, sec.weight, sec.agg_depth, sec.border) == (4, 0.1, 2, "valid")
    if "paper" in name:
        assert (cfg.model.backbone, cfg.model.patch_size) == ("vit_small", 16)
        assert (sec.global_size, sec.local_size, sec.n_local) == (224, 96, 8)
        assert cfg.optim.batch_size == 1024 and cfg.optim.lr == pytest.approx(2e-3)
