"""The exported backbone loads into torchvision; a two-process DDP run (gloo, CPU) ends with the
same kind of run folder and checkpoint as a one-process run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

RUN = ["data.name=synthetic", "data.synthetic_size=96", "data.val_size=32", "optim.epochs=1",
       "optim.batch_size=16", "trainer.progress=false", "method=simsiam",
       "simsiam.proj_dim=32", "simsiam.pred_hidden=8"]


@pytest.mark.parametrize("small_stem", [False, True])
def test_exported_backbone_loads_into_torchvision(tmp_path, small_stem):
    import torchvision
    from torch import nn

    from selfsup.vision.export import export_backbone
    from selfsup.vision.train import load_selected, train

    run, _ = train(None, [*RUN, "model.backbone=resnet18", f"run_root={tmp_path}",
                          f"model.small_image_stem={str(small_stem).lower()}",
                          "data.synthetic_size=48", "optim.batch_size=8"])
    spec = export_backbone(run.path)
    weights = run.path / "artefacts" / "backbone.pt"
    assert json.loads(weights.with_suffix(".json").read_text())["backbone"] == "resnet18"
    state = torch.load(weights, weights_only=True)
    _, cfg, model, data = load_selected(run.path)
    net = torchvision.models.resnet18()
    c = data.in_channels
    if small_stem:
        net.conv1 = nn.Conv2d(c, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif c != 3:
        net.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
    missing, unexpected = net.load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    net.fc = nn.Identity()
    net.eval()
    model.eval()
    x = torch.randn(2, c, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), model.backbone(x), atol=1e-5)
    assert spec["tensors"] == len(state)


def _selfsup(args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "selfsup.cli", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_two_process_ddp_on_cpu(tmp_path):
    one = _selfsup(["vision", "train", *RUN, "name=one", f"run_root={tmp_path}",
                    "model.backbone=resnet8", "model.width=0.25", "trainer.accelerator=cpu"])
    assert one.returncode == 0, one.stderr[-2000:]
    two = _selfsup(["vision", "train", *RUN, "name=two", f"run_root={tmp_path}",
                    "model.backbone=resnet8", "model.width=0.25", "trainer.accelerator=cpu",
                    "trainer.devices=2", "trainer.strategy=ddp", "trainer.threads=1"])
    assert two.returncode == 0, two.stderr[-3000:]
    (d1,) = tmp_path.glob("one-*")
    (d2,) = tmp_path.glob("two-*")
    for d in (d1, d2):
        assert json.loads((d / "run.json").read_text())["status"] == "finished"
        ck = torch.load(d / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
        assert {"state_dict", "global_step", "optimizer_states"} <= set(ck)
        assert (d / "checkpoints" / "best.pt").is_file()
    k1 = set(torch.load(d1 / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    k2 = set(torch.load(d2 / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert k1 == k2
    r1 = json.loads((d1 / "results.json").read_text())
    r2 = json.loads((d2 / "results.json").read_text())
    # each of the two processes takes half of every epoch's batches
    assert r2["steps"] * 2 == r1["steps"] and r2["method"] == "simsiam"


def test_lazy_image_folder_trains_and_counts_bad_files(tmp_path):
    import numpy as np
    from PIL import Image

    from selfsup.vision.folder import FolderImages
    from selfsup.vision.train import VisionTrainConfig as Cfg
    from selfsup.vision.train import _prepare, load_config, train

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(30):
            arr = rng.integers(0, 255, (20 + i % 3, 24, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    (tmp_path / "imgs" / "cat" / "broken.png").write_bytes(b"not a png")
    good = tmp_path / "imgs" / "dog" / "0.png"
    data_args = ["data.name=imagefolder", f"data.path={tmp_path / 'imgs'}", "data.lazy=true",
                 "data.image_size=16", "data.val_size=10"]
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = _prepare(load_config(Cfg, overrides=data_args))
    assert isinstance(data.train_x, FolderImages) and data.meta["skipped"] == 1
    assert data.train_x.shape[1:] == (3, 16, 16) and len(data.val_y) == 10
    assert data.train_x[0:4].shape == (4, 3, 16, 16) and data.train_x[0:4].dtype == torch.uint8
    # a file that breaks after listing becomes a black image and is counted
    sub = FolderImages([good], 16)
    good.write_bytes(good.read_bytes()[:40])
    with pytest.warns(UserWarning, match="could not be decoded"):
        assert int(sub[0].max()) == 0 and sub.decode_errors == 1
    run, res = train(None, [*RUN, *data_args, "model.backbone=resnet8", "model.width=0.25",
                            f"run_root={tmp_path / 'runs'}"])
    assert res["data"]["train"] == 40 and 0 <= res["test_acc"] <= 1
