"""The dense maps figure (attention and patch-similarity maps beside the dense probe's
segmentation) and the aggregation head's attention weights: maps against hand computations,
the figure for a ViT with and without a CLS token and for a ResNet, and the ``dense`` protocol
leaving the figure in the run."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

from selfsup.vision.backbones import build_backbone
from selfsup.vision.evaluate.dense import dense_evaluate, predict_masks
from selfsup.vision.evaluate.maps import (
    attention_map,
    choose_anchors,
    dense_maps,
    similarity_map,
    write_dense_maps,
)
from selfsup.vision.selfpatch import AggregationHead
from selfsup.vision.vit import VisionTransformer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _vit(cls_token: bool) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, in_channels=1, embed_dim=24, depth=2,
                             num_heads=3, cls_token=cls_token)


def _mosaics(n: int, seed: int, size: int = 16):
    """Masks of 4 x 4 blocks (class 0 background or 1..10) and grey images that show them."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 11, (n, size // 4, size // 4), generator=g)
    cls[:, 0, 0] = 0  # some background in every image
    cls[:, 1, 1] = 3  # and some item
    masks = cls.repeat_interleave(4, 1).repeat_interleave(4, 2).to(torch.uint8)
    return (masks * 20)[:, None].to(torch.uint8), masks


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    w, h = struct.unpack(">II", data[16:24])  # the IHDR chunk
    return w, h


# ------------------------------------------------------------------- aggregation head


def test_aggregation_head_attention_reproduces_its_forward():
    torch.manual_seed(0)
    head = AggregationHead(12, depth=2, num_heads=3)
    for p in head.parameters():  # away from the near-zero init, so the weights are not flat
        nn.init.normal_(p, std=0.3)
    tokens = torch.randn(2, 5, 12)
    mask = torch.tensor([[True, True, False, True, True], [True] * 5])
    a = head.attention(tokens, mask)
    assert a.shape == (2, 3, 6)
    assert torch.allclose(a.sum(-1), torch.ones(2, 3))
    assert bool((a[0, :, 3] == 0).all())  # the masked token (index 2 -> slot 3) gets nothing
    assert float(a[1].detach().std()) > 1e-3  # not uniform
    # the weights reproduce the last block's output, and so the head's forward
    q = head.query.expand(2, -1, -1)
    q = head.blocks[0](q, tokens, mask)
    blk = head.blocks[1]
    u = blk.norm1(torch.cat([q, tokens], dim=1))
    v = blk.kv(u).view(2, 6, 2, 3, 4)[:, :, 1].transpose(1, 2)  # (B, heads, 1 + T, hd)
    mixed = (a.unsqueeze(-1) * v).sum(2).reshape(2, 1, 12)  # heads concatenated
    q = q + blk.proj(mixed)
    q = q + blk.mlp(blk.norm2(q))
    assert torch.allclose(head.norm(q)[:, 0], head(tokens, mask), atol=1e-5)


# --------------------------------------------------------------------------- the maps


def test_attention_maps_sum_to_one_and_name_their_kind():
    x = torch.randn(3, 1, 16, 16)
    with_cls = _vit(True).eval()
    m, kind = attention_map(with_cls, x)
    assert kind == "cls" and m.shape == (3, 4, 4)
    assert torch.allclose(m.flatten(1).sum(1), torch.ones(3), atol=1e-6)
    full = with_cls.last_self_attention(x)[:, :, 0, 1:].mean(1)  # CLS row, patches
    assert torch.allclose(m.flatten(1), full / full.sum(1, keepdim=True), atol=1e-6)

    no_cls = _vit(False).eval()
    m2, kind2 = attention_map(no_cls, x)  # no head: the mean attention each patch receives
    assert kind2 == "received" and m2.shape == (3, 4, 4)
    assert torch.allclose(m2.flatten(1).sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(m2.flatten(1), no_cls.last_self_attention(x).mean(dim=(1, 2)))

    head = AggregationHead(24, depth=2, num_heads=3).eval()
    m3, kind3 = attention_map(no_cls, x, head)
    assert kind3 == "aggregation"
    assert torch.allclose(m3.flatten(1).sum(1), torch.ones(3), atol=1e-6)
    _, tok = no_cls.forward_tokens(x)
    raw = head.attention(tok)[:, :, 1:].mean(1)
    assert torch.allclose(m3.flatten(1), raw / raw.sum(1, keepdim=True), atol=1e-6)

    resnet = build_backbone("resnet8", in_channels=1, width=0.25)
    assert attention_map(resnet, x) == (None, None)


def test_similarity_of_the_anchor_to_itself_is_the_maximum_one():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 8, 3, 4, generator=g)
    anchor = torch.tensor([5, 11])
    s = similarity_map(f, anchor)
    assert s.shape == (2, 3, 4)
    for b in range(2):
        assert float(s[b].flatten()[anchor[b]]) == pytest.approx(1.0, abs=1e-6)
        assert int(s[b].flatten().argmax()) == int(anchor[b])
        # by hand: one other cell
        a = f[b, :, anchor[b] // 4, anchor[b] % 4]
        o = f[b, :, 0, 0]
        assert float(s[b, 0, 0]) == pytest.approx(float(a @ o / (a.norm() * o.norm())), abs=1e-6)


def test_anchors_are_item_cells_or_the_centre():
    masks = torch.zeros(3, 8, 8, dtype=torch.long)
    masks[0, 0:2, 6:8] = 4  # one item cell of the 4 x 4 grid: cell (0, 3)
    masks[2, 4:8, 0:4] = 2  # four item cells: (2, 0), (2, 1), (3, 0), (3, 1)
    a = choose_anchors(masks, (4, 4), seed=0)
    assert a[0] == 3 and a[1] == 2 * 4 + 2  # the centre of an empty image
    assert int(a[2]) in {8, 9, 12, 13}
    assert torch.equal(a, choose_anchors(masks, (4, 4), seed=0))


@pytest.mark.parametrize("arch", ["vit_cls", "vit_no_cls", "resnet"])
def test_dense_maps_figure_for_each_backbone(arch, tmp_path):
    if arch == "resnet":
        torch.manual_seed(0)
        net, head = build_backbone("resnet8", in_channels=1, width=0.25), None
    else:
        net = _vit(arch == "vit_cls")
        head = AggregationHead(24, depth=1, num_heads=3) if arch == "vit_no_cls" else None
    (trx, trm), (vax, vam), (tex, tem) = _mosaics(12, 0), _mosaics(4, 1), _mosaics(9, 2)
    res = dense_evaluate(net, trx, trm, vax, vam, tex, tem, [0.3], [0.3], max_train=150,
                         max_val=40, n_grid=2)
    probe = res["probe"]
    maps = dense_maps(net, probe, tex, tem, [0.3], [0.3], head=head, n_images=3, seed=4)
    assert len(maps.index) == 3 and maps.index == sorted(maps.index)
    assert torch.equal(maps.images, tex[maps.index]) and maps.pred.shape == (3, 16, 16)
    # the probe's prediction is the one the protocol scores
    assert torch.equal(maps.pred, predict_masks(probe, net, tex[maps.index], [0.3], [0.3]))
    h, w = res["feature_map"]
    flat = maps.similarity.flatten(1)
    assert torch.allclose(flat.gather(1, maps.anchor[:, None]), torch.ones(3, 1), atol=1e-5)
    assert torch.equal(flat.argmax(1), maps.anchor)
    if arch == "resnet":
        assert maps.attention is None and maps.attention_kind is None
    else:
        assert maps.attention_kind == ("cls" if arch == "vit_cls" else "aggregation")
        assert maps.attention.shape == (3, h, w)
        assert torch.allclose(maps.attention.flatten(1).sum(1), torch.ones(3), atol=1e-5)
    path = write_dense_maps(tmp_path / "artefacts" / "dense_maps.png", net, probe, tex, tem,
                            [0.3], [0.3], head=head, n_images=3, seed=4, title=arch)
    width, height = _png_size(path)
    # five columns with an attention map, four without
    assert (width > 1050) == (arch != "resnet") and height > 700
    assert not list(path.parent.glob("*.tmp*"))  # written atomically


# ------------------------------------------------------------------ the dense protocol


def test_dense_protocol_leaves_the_figure_in_the_run_and_report(fake_fmnist, tmp_path):
    from selfsup.cli import main
    from selfsup.report import write_report
    from selfsup.vision.protocols import evaluate_protocol
    from selfsup.vision.train import train

    run, _ = train(None, ["method=rotnet", "data.name=fmnist-mosaic", f"data.root={tmp_path}",
                          "data.image_size=16", "data.val_size=20", "optim.epochs=1",
                          "optim.batch_size=64", "trainer.progress=false",
                          "model.backbone=vit_pico", "model.patch_size=4",
                          f"run_root={tmp_path}"])
    fig = run.path / "artefacts" / "dense_maps.png"
    out = evaluate_protocol(run.path, "dense", max_train=200, max_test=10, n_grid=2)
    assert out["maps"] == "artefacts/dense_maps.png" and _png_size(fig)[0] > 1050
    stored = json.loads((run.path / "eval_dense.json").read_text())
    assert stored["maps"] == out["maps"]
    page = write_report(run.path).read_text()
    assert "<h2>dense_maps</h2>" in page
    # the flag skips it; the metrics are the same either way
    fig.unlink()
    assert main(["vision", "eval", str(run.path), "--protocol", "dense", "--max-train", "200",
                 "--n-grid", "2", "--no-maps"]) == 0
    again = json.loads((run.path / "eval_dense.json").read_text())
    assert not fig.exists() and "maps" not in again
    no_maps = evaluate_protocol(run.path, "dense", max_train=200, max_test=10, n_grid=2,
                                maps=False)
    assert no_maps["dense_miou"] == out["dense_miou"] and not fig.exists()
