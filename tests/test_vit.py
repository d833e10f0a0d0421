"""The Vision Transformer backbone: token shapes, interpolated positional embeddings, attention,
stochastic depth, the registry and config wiring, and a strict state-dict load into timm."""

import pytest
import torch
import torch.nn.functional as F

from selfsup.config import load_config
from selfsup.errors import InputError
from selfsup.vision.backbones import build_backbone, list_backbones
from selfsup.vision.vit import VisionTransformer, drop_path


def _vit(cls_token=True, **kw):
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, in_channels=3, embed_dim=24, depth=2, num_heads=3,
                cls_token=cls_token)
    args.update(kw)
    return VisionTransformer(**args).eval()


def _x(b=2, c=3, h=16, w=16, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("cls_token", [True, False])
def test_token_shapes_and_pooled_feature(cls_token):
    m = _vit(cls_token)
    x = _x()
    cls, patches = m.forward_tokens(x)
    assert patches.shape == (2, 16, 24)
    assert m.out_dim == 24 and m.has_cls is cls_token and m.num_heads == 3
    feat = m(x)
    assert feat.shape == (2, 24)
    if cls_token:
        assert cls.shape == (2, 24) and torch.equal(feat, cls)
    else:
        assert cls is None and torch.allclose(feat, patches.mean(1))
    # tokens come after the final LayerNorm (no affine change at init): zero mean, unit var
    assert torch.allclose(patches.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(patches.var(-1, unbiased=False), torch.ones(2, 16), atol=1e-3)


@pytest.mark.parametrize("patch_size", [2, 4, 8])
def test_any_patch_size_and_the_feature_map(patch_size):
    m = _vit(patch_size=patch_size)
    x = _x()
    g = 16 // patch_size
    _, patches = m.forward_tokens(x)
    assert patches.shape == (2, g * g, 24)
    fmap = m.forward_features(x)
    assert fmap.shape == (2, 24, g, g)
    # row-major: token r * g + c is map position (r, c)
    assert torch.equal(fmap[:, :, 1, 0], patches[:, g])
    assert torch.equal(fmap[:, :, 0, g - 1], patches[:, g - 1])


def test_positional_embeddings_are_interpolated_for_a_smaller_input():
    m = _vit()
    x = _x(h=8, w=12)
    _, patches = m.forward_tokens(x)
    assert patches.shape == (2, 6, 24)
    assert m.forward_features(x).shape == (2, 24, 2, 3)
    grid = m.pos_embed[:, 1:].reshape(1, 4, 4, 24).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(2, 3), mode="bicubic", align_corners=False)
    got = m.patch_pos_embed(2, 3)
    assert torch.allclose(got, want.permute(0, 2, 3, 1).reshape(1, 6, 24))
    assert torch.equal(m.patch_pos_embed(4, 4), m.pos_embed[:, 1:])  # native size: unchanged
    with pytest.raises(InputError, match="divisible by the patch size"):
        m(_x(h=10, w=16))


@pytest.mark.parametrize("cls_token", [True, False])
def test_last_self_attention_rows_sum_to_one(cls_token):
    m = _vit(cls_token)
    att = m.last_self_attention(_x())
    t = 17 if cls_token else 16
    assert att.shape == (2, 3, t, t)
    assert torch.allclose(att.sum(-1), torch.ones(2, 3, t), atol=1e-6)
    assert (att >= 0).all()
    # the weights are those the last block uses: its attention output from them by hand
    x = m._prepend_cls(m.patchify_embed(_x()))
    x = m.blocks[0](x)
    blk = m.blocks[1]
    h = blk.norm1(x)
    _, _, v = blk.attn._qkv(h)
    out = (att @ v).transpose(1, 2).reshape(2, t, 24)
    assert torch.allclose(blk.attn.proj(out), blk.attn(h), atol=1e-5)


def test_drop_path_is_identity_in_eval_and_drops_samples_in_training():
    m = _vit(drop_path=0.5, depth=3)
    assert [b.drop_path.rate for b in m.blocks] == pytest.approx([0.0, 0.25, 0.5])
    x = _x()
    assert torch.equal(m(x), m(x))  # eval: deterministic
    y = torch.ones(1000, 4)
    torch.manual_seed(0)
    out = drop_path(y, 0.25, training=True)
    rows = out[:, 0]
    kept = rows[rows != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / 0.75))
    assert torch.equal(out, rows[:, None].expand(-1, 4))  # whole sample kept or dropped
    assert 0.2 < (rows == 0).float().mean().item() < 0.3
    assert torch.equal(drop_path(y, 0.25, training=False), y)


def test_registry_and_config_wiring():
    assert {"vit_pico", "vit_nano", "vit_tiny", "vit_small", "vit_base"} <= set(list_backbones())
    sizes = {"vit_pico": (96, 4, 3), "vit_nano": (128, 6, 4), "vit_tiny": (192, 12, 3),
             "vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}
    for name, (dim, depth, heads) in sizes.items():
        if name in ("vit_small", "vit_base"):
            continue  # same code path, too slow to build in a timed test
        m = build_backbone(name, img_size=16, patch_size=8, in_channels=1, cls_token=False)
        assert (m.out_dim, len(m.blocks), m.num_heads, m.has_cls) == (dim, depth, heads, False)
    from selfsup.vision.methods.base import backbone_from_config
    from selfsup.vision.train import VisionTrainConfig

    cfg = load_config(VisionTrainConfig, overrides=[
        "model.backbone=vit_pico", "model.patch_size=8", "model.cls_token=false",
        "model.drop_path=0.1"])
    m = backbone_from_config(cfg, 1, image_size=24)
    assert (m.img_size, m.patch_size, m.has_cls, m.in_channels) == (24, 8, False, 1)
    assert m.blocks[-1].drop_path.rate == pytest.approx(0.1)
    r = backbone_from_config(load_config(VisionTrainConfig, overrides=[
        "model.backbone=resnet8", "model.width=0.25"]), 3, image_size=24)
    assert r.out_dim == 16  # ResNets ignore the image size


@pytest.mark.parametrize("cls_token", [True, False])
def test_state_dict_loads_strictly_into_timm(cls_token):
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    ours = _vit(cls_token, depth=3)
    extra = ({"class_token": True, "global_pool": "token"} if cls_token else
             {"class_token": False, "global_pool": "avg", "fc_norm": False})
    ref = timm_vit.VisionTransformer(img_size=16, patch_size=4, in_chans=3, embed_dim=24,
                                     depth=3, num_heads=3, mlp_ratio=4.0, qkv_bias=True,
                                     num_classes=0, **extra).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = _x()
    with torch.no_grad():
        tokens = ref.forward_features(x)  # (B, T, D), after the final norm
        cls, patches = ours.forward_tokens(x)
        if cls_token:
            assert torch.allclose(tokens[:, 0], cls, atol=1e-5)
            tokens = tokens[:, 1:]
        assert torch.allclose(tokens, patches, atol=1e-5)
        assert torch.allclose(ref(x), ours(x), atol=1e-5)


@pytest.mark.parametrize("cls_token", [True, False])
def test_export_spec_gives_timm_arguments_that_load_the_backbone(cls_token):
    timm_vit = pytest.importorskip("timm.models.vision_transformer")
    from selfsup.vision.export import backbone_spec
    from selfsup.vision.methods.base import backbone_from_config
    from selfsup.vision.train import VisionTrainConfig

    cfg = load_config(VisionTrainConfig, overrides=[
        "model.backbone=vit_pico", "model.patch_size=8",
        f"model.cls_token={str(cls_token).lower()}"])
    ours = backbone_from_config(cfg, 1, image_size=16).eval()
    spec = backbone_spec(cfg, 1, image_size=16)
    assert spec["timm_args"]["img_size"] == 16 and spec["cls_token"] is cls_token
    ref = timm_vit.VisionTransformer(**spec["timm_args"]).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = _x(c=1)
    with torch.no_grad():
        assert torch.allclose(ref(x), ours(x), atol=1e-5)
