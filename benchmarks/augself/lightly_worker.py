"""The peer arm of ``benchmarks/augself/speed.py``: a SimSiam training step built from lightly.

Runs in the peer's own virtualenv (lightly, torch, torchvision, Pillow, numpy), never next to
selfsup's training code: only ``selfsup.vision.backbones`` is imported (from ``--src``), so both
sides train the very same backbone class.

Protocol (stdin/stdout, one JSON document per line):

1. the first stdin line is the config: ``images`` (path of a ``.npy`` uint8 array (N, C, H, W)),
   ``batch``, ``warmup``, ``steps``, ``threads``, ``seed``, ``backbone`` and its keyword
   arguments, ``proj_dim``, ``pred_hidden``, ``lr``, ``momentum``, ``weight_decay``, ``mean``,
   ``std``, ``forward`` (``separate``: one backbone pass per view, as lightly's SimSiam example;
   ``concat``: one pass over both views, as selfsup's two-view methods);
2. the worker answers ``{"ready": ..., "lightly": version, ...}``;
3. each ``run`` line: ``warmup`` untimed steps then ``steps`` timed ones; the answer lists the
   seconds of each timed step (``step_s``), each from asking the DataLoader for the next batch
   (PIL conversion and lightly's per-image view transform included) to the end of
   ``optimizer.step()``, and of that the seconds spent in the DataLoader (``data_s``: PIL
   conversion, both views' transforms, collation); ``quit`` ends the worker.

The view transform is lightly's ``SimSiamViewTransform`` configured as the SimSiam CIFAR recipe:
RandomResizedCrop scale (0.2, 1), horizontal flip 0.5, colour jitter (0.4, 0.4, 0.4, 0.1) p 0.8,
grayscale 0.2, no Gaussian blur (probability 0), no vertical flip / rotation (probability 0),
normalised with the same per-channel mean and std as selfsup's arm.
"""

from __future__ import annotations

import json
import sys
import time


def _answer(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    sys.path.insert(0, cfg["src"])

    import lightly
    import numpy as np
    import torch
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
    from lightly.transforms.simsiam_transform import SimSiamTransform
    from PIL import Image
    from torch import nn
    from torch.utils.data import DataLoader, Dataset, RandomSampler

    from selfsup.vision.backbones import build_backbone

    torch.set_num_threads(int(cfg["threads"]))
    torch.manual_seed(cfg["seed"])
    np.random.seed(cfg["seed"])  # lightly's GaussianBlur draws from numpy's global generator

    array = np.load(cfg["images"])  # (N, C, H, W) uint8, as selfsup's arm holds it
    # stored as (N, H, W, C), the layout torchvision's CIFAR10 keeps and feeds to PIL
    hwc = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    size = int(array.shape[-1])
    transform = SimSiamTransform(
        input_size=size, cj_prob=0.8, cj_strength=1.0, cj_bright=0.4, cj_contrast=0.4,
        cj_sat=0.4, cj_hue=0.1, min_scale=0.2, random_gray_scale=0.2, gaussian_blur=0.0,
        vf_prob=0.0, hf_prob=0.5, rr_prob=0.0,
        normalize={"mean": list(cfg["mean"]), "std": list(cfg["std"])})

    class UInt8Images(Dataset):
        """uint8 images -> PIL -> lightly's two views (what a torchvision dataset does)."""

        def __len__(self) -> int:
            return len(hwc)

        def __getitem__(self, i: int):
            img = hwc[i]
            pil = Image.fromarray(img[:, :, 0] if img.shape[-1] == 1 else img)
            return transform(pil)

    class LightlySimSiam(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = build_backbone(cfg["backbone"], **cfg["backbone_kwargs"])
            d = self.backbone.out_dim
            self.projection_head = SimSiamProjectionHead(d, cfg["proj_dim"], cfg["proj_dim"])
            self.prediction_head = SimSiamPredictionHead(cfg["proj_dim"], cfg["pred_hidden"],
                                                         cfg["proj_dim"])

        def forward(self, x):
            f = self.backbone(x).flatten(start_dim=1)
            z = self.projection_head(f)
            p = self.prediction_head(z)
            return z.detach(), p

    model = LightlySimSiam()
    criterion = NegativeCosineSimilarity()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"],
                          weight_decay=cfg["weight_decay"])
    ds = UInt8Images()
    b = int(cfg["batch"])
    n_steps = int(cfg["warmup"]) + int(cfg["steps"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    concat = cfg.get("forward", "separate") == "concat"

    data_s: list[float] = []

    def step(it) -> float:
        t = time.perf_counter()
        x0, x1 = next(it)
        data_s.append(time.perf_counter() - t)
        if concat:
            z, p = model(torch.cat([x0, x1]))
            z0, z1, p0, p1 = z[:b], z[b:], p[:b], p[b:]
        else:  # lightly's SimSiam example
            z0, p0 = model(x0)
            z1, p1 = model(x1)
        loss = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t

    _answer({"ready": True, "lightly": lightly.__version__, "torch": torch.__version__,
             "threads": torch.get_num_threads(), "transform": repr(transform.transforms[0]
                                                                   .transform)})
    model.train()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd != "run":
            continue
        sampler = RandomSampler(ds, num_samples=n_steps * b, generator=gen)
        it = iter(DataLoader(ds, batch_size=b, sampler=sampler, num_workers=0, drop_last=True))
        data_s.clear()
        times = [step(it) for _ in range(n_steps)]
        w = int(cfg["warmup"])
        _answer({"step_s": times[w:], "warmup_s": times[:w], "data_s": data_s[w:]})


if __name__ == "__main__":
    main()
