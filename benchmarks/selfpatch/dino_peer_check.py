"""Is DINO's plateau at log K on this machine's scale ours, or DINO's? Our head and loss beside the
peer library lightly's, on the same everything else.

DINO runs on the CPU recipes (``configs/selfpatch/*_cpu.yaml``) stay near the uniform output
(loss close to log K) for hundreds of steps. This script tells a bug in our DINO head, loss or
centring apart from the method's behaviour at this scale: two students train side by side,
interleaved step by step in one process, on the same batches and the same multi-crop views (our
``views.multi_crop``: 2 x 32 px, scale 0.25-1, + 4 x 16 px, 0.05-0.25), the same ViT
(``vit_pico``, 4 px patches, no CLS token, the same initial weights), the same optimiser (AdamW
lr 5e-4, 10% warm-up then cosine, weight decay 0.04), the same per-parameter clipping (3.0) and
the same EMA teacher (momentum 0.996 -> 1, cosine). Only the head, the loss and the centre differ:

- ``selfsup``: :class:`selfsup.vision.methods.dino.DINOHead` (3-layer MLP, hidden 256,
  bottleneck 128, weight-normalised last layer with its norm fixed, K = 2048), ``dino_loss`` and
  ``update_center`` (tau_s 0.1, tau_t 0.04, centre momentum 0.9);
- ``lightly``: lightly's ``DINOProjectionHead`` (the same sizes, no BatchNorm,
  ``norm_last_layer=True``) and ``DINOLoss`` (the same temperatures and centre momentum, no
  temperature warm-up);
- ``selfsup_bn`` (``--arms``): ours with BatchNorm in the head (``dino.head_bn``, DINO's
  ``use_bn_in_head``).

Data: the first 10,000 Fashion-MNIST training images (single items, 28 px brought to 32 px);
metric ``loss_<step>`` (mean loss of the 25 steps up to that step), ``knn_init`` / ``knn_end``
(weighted cosine kNN, k 20, temperature 0.07, of the backbone features: 2,000 test images
against 5,000 training images). It needs lightly, so it runs with the peer's interpreter and
this checkout's sources on the path:

    PYTHONPATH=src:benchmarks /work/peers/lightly-venv/bin/python \\
        benchmarks/selfpatch/dino_peer_check.py [--steps 250] [--threads 2]

Results: ``benchmarks/results/<name>.{json,md}`` (``--name``, default ``dino_peer_check``;
``--out DIR`` elsewhere). ``--arms selfsup selfsup_bn --name dino_head_bn`` compares the heads
with and without BatchNorm (lightly is then not imported).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

from common import now, row, write_results  # noqa: E402
from selfsup.vision.backbones import build_backbone  # noqa: E402
from selfsup.vision.data import load_vision_data  # noqa: E402
from selfsup.vision.methods.dino import (  # noqa: E402
    DINOHead,
    clip_per_parameter,
    dino_loss,
    update_center,
)
from selfsup.vision.views import build_views  # noqa: E402

K, BATCH, LR, WD, SEED = 2048, 128, 5e-4, 0.04, 0
ARMS = ("selfsup", "lightly", "selfsup_bn")
SETTING = "fashion-mnist/vit_pico-multicrop"


def to32(x: torch.Tensor) -> torch.Tensor:
    y = F.interpolate(x.float(), size=(32, 32), mode="bilinear", align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def build(arm: str):
    """(student, teacher, loss state) of ``arm``; both arms start from the same ViT weights."""
    def one():
        torch.manual_seed(SEED)
        bb = build_backbone("vit_pico", img_size=32, patch_size=4, in_channels=1,
                            cls_token=False)
        if arm in ("selfsup", "selfsup_bn"):
            head = DINOHead(bb.out_dim, K, 256, 128, 3, True, bn=arm == "selfsup_bn")
            return torch.nn.Sequential(bb, head), None
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead

        head = DINOProjectionHead(bb.out_dim, 256, 128, K, batch_norm=False,
                                  freeze_last_layer=-1, norm_last_layer=True)
        return torch.nn.Sequential(bb, head), DINOLoss(K, 0.04, 0.04, 0, 0.1, 0.9)

    student, crit = one()
    teacher, _ = one()  # lightly's weight norm cannot be deep-copied: build again, copy weights
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    return {"student": student, "teacher": teacher, "crit": crit, "center": torch.zeros(1, K),
            "opt": torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=WD), "loss": []}


@torch.no_grad()
def knn(backbone, mean, std, bank_x, bank_y, test_x, test_y) -> float:
    backbone.eval()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)

    def feats(x):
        out = [backbone((x[i:i + 500].float() / 255 - m) / s) for i in range(0, len(x), 500)]
        return F.normalize(torch.cat(out), dim=1)

    a, b = feats(bank_x), feats(test_x)
    sim, idx = (b @ a.T).topk(20, dim=1)
    votes = torch.zeros(len(b), 10).scatter_add_(1, bank_y[idx], (sim / 0.07).exp())
    backbone.train()
    return float((votes.argmax(1) == test_y).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=["selfsup", "lightly"])
    ap.add_argument("--name", default="dino_peer_check", help="results file name")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, t0 = now(), time.time()
    print(f"[dino_peer_check] results into {args.out or REPO / 'benchmarks' / 'results'}"
          f"/{args.name}.json",
          flush=True)
    d = load_vision_data("fashion-mnist", val_size=5000)
    train_x, train_y = to32(d.train_x[:10000]), d.train_y[:10000]
    test_x, test_y = to32(d.test_x[:2000]), d.test_y[:2000]
    views = build_views("multi_crop", 32, local_size=16, n_local=4, global_scale=(0.25, 1.0),
                        local_scale=(0.05, 0.25), mean=d.mean, std=d.std)
    chosen = tuple(args.arms)
    arms = {a: build(a) for a in chosen}
    probe = (d.mean, d.std, train_x[:5000], train_y[:5000], test_x, test_y)
    figures: dict[str, dict[str, float]] = {a: {} for a in chosen}
    for a in chosen:
        figures[a]["knn_init"] = knn(arms[a]["student"][0], *probe)
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(SEED))
    span = len(train_x) - BATCH
    for step in range(args.steps):
        start = (step * BATCH) % span
        vs = views(train_x[perm[start:start + BATCH]], torch.Generator().manual_seed(step))
        glob = torch.cat([v.images for v in vs[:2]])
        loc = torch.cat([v.images for v in vs[2:]])
        warm = min(1.0, (step + 1) / max(1, int(0.1 * args.steps)))
        lr = LR * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        m = 1 - (1 - 0.996) * (math.cos(math.pi * step / args.steps) + 1) / 2
        for a in chosen:  # interleaved: both arms see this step's views before the next step
            st = arms[a]
            out = torch.cat([st["student"](glob), st["student"](loc)])
            student = list(out[:len(glob)].chunk(2)) + list(out[len(glob):].chunk(len(vs) - 2))
            with torch.no_grad():
                t = st["teacher"](glob)
            teacher = list(t.chunk(2))
            if st["crit"] is None:
                loss = dino_loss(student, teacher, st["center"], 0.1, 0.04)
                st["center"] = update_center(st["center"], t, 0.9)
            else:
                loss = st["crit"](teacher, student, epoch=0)
            for g in st["opt"].param_groups:
                g["lr"] = lr
            st["opt"].zero_grad()
            loss.backward()
            clip_per_parameter(st["student"].parameters(), 3.0)
            st["opt"].step()
            with torch.no_grad():
                for pt, ps in zip(st["teacher"].parameters(), st["student"].parameters()):
                    pt.mul_(m).add_(ps.detach(), alpha=1 - m)
            st["loss"].append(float(loss.detach()))
        if (step + 1) % 25 == 0:
            for a in chosen:
                figures[a][f"loss_{step + 1}"] = float(np.mean(arms[a]["loss"][-25:]))
            print(f"[dino_peer_check] step {step + 1}/{args.steps}: "
                  + ", ".join(f"{a} {figures[a][f'loss_{step + 1}']:.3f}" for a in chosen)
                  + f" (log K {math.log(K):.3f}; {time.time() - t0:.0f} s)", flush=True)
    for a in chosen:
        figures[a]["knn_end"] = knn(arms[a]["student"][0], *probe)
        print(f"[dino_peer_check] {a}: kNN {figures[a]['knn_init']:.4f} -> "
              f"{figures[a]['knn_end']:.4f}", flush=True)
    rows = [row(SETTING, a, k, [v]) for a in chosen for k, v in figures[a].items()]
    notes = (f"Two DINO students side by side (see the script's docstring): {args.steps} steps "
             f"of batch {BATCH}, one seed, log K = {math.log(K):.3f} (the loss of a uniform "
             "teacher and student). Only the head, the loss and the centre differ between "
             "the arms.")
    command = "PYTHONPATH=src:benchmarks python benchmarks/selfpatch/dino_peer_check.py " + \
        " ".join(argv if argv is not None else sys.argv[1:])
    jp, mp = write_results(args.name, "full", command.strip(), started,
                           time.time() - t0, rows, Path(args.out) if args.out else None, notes)
    print(f"[dino_peer_check] wrote {jp} and {mp}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
