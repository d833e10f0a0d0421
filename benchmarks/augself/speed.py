"""Training-step speed of SimSiam and SimSiam + AugSelf beside the peer library lightly.

Setting ``speed/<backbone>-batch<B>-<px>px`` (issue 18). Four arms, all on the same backbone
class (``selfsup.vision.backbones.build_backbone``), the same SimSiam projector / predictor
widths, the same optimiser (SGD, momentum 0.9, weight decay on every parameter), the same batch
of B images and the same torch CPU threads (``--threads``):

* ``pure_model``: forward + backward + SGD step of backbone, projector and predictor (SimSiam's
  loss, no AugSelf heads) on ready tensors: two fixed, already augmented and normalised views
  of B images each, one backbone pass per view as selfsup does. No data loading, no
  augmentation.
* ``simsiam``: a full training step of ``selfsup.vision.methods`` SimSiam as the training host
  runs it: a torch DataLoader (0 workers) over a TensorDataset of the uint8 images gives the
  uint8 batch; ``method.training_step(uint8, None, step_generator(seed, step))`` (uint8 ->
  float, both views' batched augmentation, normalisation, one backbone pass per view, the
  loss), ``loss.backward()``, ``opt.step()``, ``opt.zero_grad()``.
* ``simsiam_augself``: the same with ``augself.kinds=[crop,colour]`` (AugSelf heads and loss).
* ``lightly_simsiam``: lightly's SimSiam in the peer's own virtualenv (``lightly_worker.py``, a
  subprocess): a torch DataLoader (0 workers) over a dataset that turns each uint8 image into a
  PIL image and applies lightly's ``SimSiamTransform`` (torchvision transforms, per image; the
  SimSiam recipe: RRC (0.2, 1), flip 0.5, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.2,
  blur probability 0), lightly's ``SimSiamProjectionHead`` / ``SimSiamPredictionHead`` /
  ``NegativeCosineSimilarity``; by default one backbone pass per view as lightly's SimSiam
  example does and selfsup does (``--peer-forward concat``: one pass over both views).

Each timed step runs from asking the DataLoader for the next batch to the end of the optimiser
step (pure_model: forward to optimiser step). Repeats are interleaved (ours pure, ours simsiam,
ours augself, peer), each timing ``--steps`` steps after ``--warmup`` untimed ones; metric
``images_per_s`` = B x steps / their seconds (images, not views: a step sees 2B views), one value
per repeat in ``seeds``, median over repeats in ``summary``. ``ratio_to_pure`` divides an arm's
images/s by pure_model's of the same repeat (issue goal for simsiam_augself: >= 0.85);
``ratio_to_lightly`` divides by lightly_simsiam's. The timed steps of simsiam and
simsiam_augself also carry timers (``profile``): data loading, the view recipe (uint8 -> float,
augmentation of both views, normalisation), the rest of the forward pass, backward, optimiser.

    .venv/bin/python benchmarks/augself/speed.py --quick  # -> runs/bench-augself_speed-quick-*/
    .venv/bin/python benchmarks/augself/speed.py          # -> benchmarks/results/augself_speed.*
    .venv/bin/python benchmarks/augself/speed.py --backbone resnet20   # the CIFAR ResNet-20 setting

The peer venv: ``python3 -m venv /tmp/peers-venv && /tmp/peers-venv/bin/pip install
'torch>=2.4' 'torchvision>=0.19' lightly`` (``--peer-python``; the first of
``.peers-venv``, ``/tmp/peers-venv`` that exists is the default).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import now, row, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
WORKER = Path(__file__).resolve().parent / "lightly_worker.py"
PEER_CANDIDATES = (ROOT / ".peers-venv" / "bin" / "python", Path("/tmp/peers-venv/bin/python"))
PHASES = ("data", "augment", "forward", "backward", "optimiser")
ARMS = ("pure_model", "simsiam", "simsiam_augself", "lightly_simsiam")
SEED = 0
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4  # SimSiam's CIFAR recipe; lr = 0.03 x B / 256


def settings(quick: bool) -> dict:
    if quick:
        return {"repeats": 2, "steps": 3, "warmup": 1, "n_images": 1024}
    return {"repeats": 3, "steps": 10, "warmup": 1, "n_images": 2048}


def load_images(source: str, n: int, px: int) -> tuple:
    """uint8 (n, 3, px, px) numpy images and a description of where they came from."""
    import numpy as np

    if source == "tinted":
        try:
            from selfsup.vision.tinted import tinted_fashion_mnist

            ts = tinted_fashion_mnist("train", n=n, size=px)
            return np.ascontiguousarray(ts.images), (
                f"tinted Fashion-MNIST (selfsup.vision.tinted), first {n} training images, "
                f"{px} px RGB")
        except Exception as e:  # no local Fashion-MNIST and no network
            print(f"tinted Fashion-MNIST unavailable ({e}); using random images", flush=True)
    rng = np.random.default_rng(SEED)
    return (rng.integers(0, 256, (n, 3, px, px), dtype=np.uint8),
            f"random uniform uint8 images ({n}, 3, {px}, {px}), numpy seed {SEED}")


def find_peer(arg: str | None) -> str | None:
    if arg:
        return arg
    for p in PEER_CANDIDATES:
        if p.exists():
            return str(p)
    return None


class Peer:
    """The lightly worker, kept alive across repeats (its model and optimiser persist, as ours)."""

    def __init__(self, python: str, cfg: dict) -> None:
        self.proc = subprocess.Popen([python, str(WORKER)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.info = self._ask(json.dumps(cfg))

    def _ask(self, line: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        if not out:
            raise SystemExit(f"peer worker died (exit {self.proc.wait()}); see its stderr above")
        return json.loads(out)

    def run(self) -> dict:
        return self._ask("run")

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


class TimedRecipe:
    """Wraps a view recipe and adds the seconds of each call to ``self.seconds``."""

    def __init__(self, recipe) -> None:
        self.recipe, self.seconds = recipe, 0.0

    def __getattr__(self, name):
        return getattr(self.recipe, name)

    def __call__(self, x, generator=None):
        t = time.perf_counter()
        out = self.recipe(x, generator)
        self.seconds += time.perf_counter() - t
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few steps, into runs/")
    ap.add_argument("--backbone", default="resnet18",
                    help="resnet18 (torchvision, small-image stem) or a CIFAR ResNet (resnet20)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--px", type=int, default=32, help="image (and view) size")
    ap.add_argument("--proj-dim", type=int, default=2048, help="projector width and output")
    ap.add_argument("--pred-hidden", type=int, default=512, help="predictor bottleneck")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps before each repeat")
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    ap.add_argument("--data", choices=("tinted", "random"), default="tinted")
    ap.add_argument("--peer-python", default=None, help="python of the venv with lightly")
    ap.add_argument("--peer-forward", choices=("separate", "concat"), default="separate",
                    help="lightly arm: a backbone pass per view (lightly's example) or one")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    args = ap.parse_args()
    st = settings(args.quick)
    for k in st:
        if getattr(args, k) is not None:
            st[k] = getattr(args, k)

    import numpy as np
    import torch
    from torch.utils.data import DataLoader, RandomSampler, TensorDataset

    from selfsup.config import load_config
    from selfsup.vision.augment import step_generator
    from selfsup.vision.methods import MethodContext, build_method
    from selfsup.vision.train import VisionTrainConfig

    torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else (
        ROOT / "runs" / f"bench-augself_speed-quick-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.quick else None)

    def log(msg: str) -> None:
        print(f"[augself_speed {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    b, px = args.batch, args.px
    array, data_desc = load_images(args.data, st["n_images"], px)
    unit = array.astype(np.float64) / 255.0
    mean = [float(v) for v in unit.mean(axis=(0, 2, 3))]
    std = [float(v) for v in unit.std(axis=(0, 2, 3))]
    lr = 0.03 * b / 256
    log(f"{data_desc}; mean {np.round(mean, 3).tolist()} std {np.round(std, 3).tolist()}")

    cifar = args.backbone not in ("resnet18", "resnet50")
    overrides = ["method=simsiam", f"model.backbone={args.backbone}",
                 f"simsiam.proj_dim={args.proj_dim}", f"simsiam.pred_hidden={args.pred_hidden}",
                 "probe.online=false", f"seed={SEED}"]
    overrides.append("model.width=1.0" if cifar else "model.small_image_stem=true")
    backbone_kwargs = ({"in_channels": 3, "width": 1.0} if cifar else
                       {"in_channels": 3, "small_image_stem": True})

    def build(extra: list[str]):
        cfg = load_config(VisionTrainConfig, overrides=overrides + extra)
        ctx = MethodContext(cfg=cfg, n_classes=10, in_channels=3, image_size=px, mean=mean,
                            std=std, total_steps=1000)
        torch.manual_seed(SEED)
        m = build_method("simsiam", ctx)
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=MOMENTUM,
                              weight_decay=WEIGHT_DECAY)
        return m, opt

    ours = {"pure_model": build([]), "simsiam": build([]),
            "simsiam_augself": build(["augself.kinds=[crop,colour]"])}
    dataset = TensorDataset(torch.from_numpy(array))
    n_steps = st["warmup"] + st["steps"]
    gens = {arm: torch.Generator().manual_seed(SEED) for arm in ours}
    step_no = {arm: 0 for arm in ours}

    # pure_model's ready views: one augmented, normalised batch of both views, fixed
    with torch.no_grad():
        x0 = torch.from_numpy(array[:b])
        views = ours["simsiam"][0].recipe(x0, step_generator(SEED, 10**6))
        ready = [views[0].images.contiguous(), views[1].images.contiguous()]

    def loader(arm: str):
        sampler = RandomSampler(dataset, num_samples=n_steps * b, generator=gens[arm])
        return iter(DataLoader(dataset, batch_size=b, sampler=sampler, num_workers=0,
                               drop_last=True))

    def pure_step(method, opt) -> float:
        t = time.perf_counter()
        f1, f2 = method.backbone(ready[0]), method.backbone(ready[1])  # one pass per view
        loss, _ = method.ssl_loss(f1, f2, None, None)
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t

    # our arms' steps, split by timers (perf_counter calls only): data loading, the view recipe
    # (uint8 -> float, augmentation of both views, normalisation), the rest of the forward
    # pass (backbone, heads, losses), backward, optimiser step + zero_grad
    parts = {arm: {k: [] for k in PHASES} for arm in ("simsiam", "simsiam_augself")}
    timed = {}
    for arm in parts:
        timed[arm] = TimedRecipe(ours[arm][0].recipe)
        ours[arm][0].recipe = timed[arm]

    def method_step(arm: str, it, record: bool) -> float:
        method, opt = ours[arm]
        t1 = time.perf_counter()
        (x,) = next(it)
        t2 = time.perf_counter()
        timed[arm].seconds = 0.0
        loss, _ = method.training_step(x, None, step_generator(SEED, step_no[arm]))
        t3 = time.perf_counter()
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t5 = time.perf_counter()
        step_no[arm] += 1
        if record:
            aug = timed[arm].seconds
            for k, v in zip(PHASES, (t2 - t1, aug, t3 - t2 - aug, t4 - t3, t5 - t4)):
                parts[arm][k].append(v)
        return t5 - t1

    def run_ours(arm: str) -> list[float]:
        if arm == "pure_model":
            times = [pure_step(*ours[arm]) for _ in range(n_steps)]
        else:
            it = loader(arm)
            times = [method_step(arm, it, i >= st["warmup"]) for i in range(n_steps)]
        return times[st["warmup"]:]

    peer_python = None if args.no_peer else find_peer(args.peer_python)
    peer = None
    tmp = tempfile.TemporaryDirectory(prefix="augself-speed-")
    if peer_python:
        npy = Path(tmp.name) / "images.npy"
        np.save(npy, array)
        peer = Peer(peer_python, {
            "src": str(SRC), "images": str(npy), "batch": b, "warmup": st["warmup"],
            "steps": st["steps"], "threads": args.threads, "seed": SEED,
            "backbone": args.backbone, "backbone_kwargs": backbone_kwargs,
            "proj_dim": args.proj_dim, "pred_hidden": args.pred_hidden, "lr": lr,
            "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "mean": mean, "std": std,
            "forward": args.peer_forward})
        log(f"peer: lightly {peer.info['lightly']}, torch {peer.info['torch']}, "
            f"{peer.info['threads']} thread(s), {peer_python}")
    else:
        log("no peer venv found (or --no-peer): lightly_simsiam is left out")

    arms = [a for a in ARMS if a != "lightly_simsiam" or peer]
    reps: dict[str, list[list[float]]] = {a: [] for a in arms}
    loads = []
    peer_data: list[float] = []
    peer_steps: list[float] = []
    for r in range(st["repeats"]):
        loads.append(os.getloadavg()[0])
        for arm in arms:
            if arm == "lightly_simsiam":
                ans = peer.run()
                times = ans["step_s"]
                peer_data += ans["data_s"]
                peer_steps += times
            else:
                times = run_ours(arm)
            reps[arm].append(times)
            log(f"repeat {r + 1}/{st['repeats']} {arm}: {b * len(times) / sum(times):.1f} "
                f"images/s (median step {statistics.median(times):.3f} s)")
    loads.append(os.getloadavg()[0])
    if peer:
        peer.close()
    tmp.cleanup()

    # -- profile: where a timed step of ours spent its time ---------------------------------
    profile = {}
    for arm, ph in parts.items():
        total = sum(sum(v) for v in ph.values())
        profile[arm] = {k: {"median_s": statistics.median(v), "share": sum(v) / total}
                        for k, v in ph.items()}
        log(f"profile {arm}: " + ", ".join(
            f"{k} {v['median_s'] * 1e3:.0f} ms ({v['share']:.1%})" for k, v in
            profile[arm].items()))
    if peer_steps:  # lightly: the DataLoader (PIL + per-image transforms) vs the rest
        share = sum(peer_data) / sum(peer_steps)
        profile["lightly_simsiam"] = {
            "data_and_augment": {"median_s": statistics.median(peer_data), "share": share},
            "model_and_optimiser": {
                "median_s": statistics.median(s - d for s, d in zip(peer_steps, peer_data)),
                "share": 1 - share}}
        log(f"profile lightly_simsiam: DataLoader (PIL + transforms) "
            f"{statistics.median(peer_data) * 1e3:.0f} ms ({share:.1%}), model + optimiser "
            f"{profile['lightly_simsiam']['model_and_optimiser']['median_s'] * 1e3:.0f} ms")

    # -- results ------------------------------------------------------------------------------
    setting = f"speed/{args.backbone}-batch{b}-{px}px"
    ips = {a: [b * len(t) / sum(t) for t in reps[a]] for a in arms}
    rows = [row(setting, a, "images_per_s", ips[a]) for a in arms]
    ratios: dict[str, dict[str, list[float]]] = {}
    for a in ("simsiam", "simsiam_augself"):
        ratios[a] = {"ratio_to_pure": [x / p for x, p in zip(ips[a], ips["pure_model"])]}
        if peer:
            ratios[a]["ratio_to_lightly"] = [x / p for x, p in
                                             zip(ips[a], ips["lightly_simsiam"])]
        rows += [row(setting, a, m, v) for m, v in ratios[a].items()]
    if peer:
        ratios["pure_model"] = {"ratio_to_lightly": [x / p for x, p in
                                                     zip(ips["pure_model"],
                                                         ips["lightly_simsiam"])]}
        rows.append(row(setting, "pure_model", "ratio_to_lightly",
                        ratios["pure_model"]["ratio_to_lightly"]))
    for a, prof in profile.items():
        share = prof["augment" if "augment" in prof else "data_and_augment"]["share"]
        rows.append(row(setting, a, "augmentation_share_of_step", [share]))
    for r_ in rows:
        r_["median"] = statistics.median(r_["seeds"])

    summary = {a: {"images_per_s_median": round(statistics.median(ips[a]), 2)} for a in arms}
    for a, ms in ratios.items():
        for m, v in ms.items():
            summary[a][f"{m}_median"] = round(statistics.median(v), 3)
    for a in arms:
        log(f"{a}: median {summary[a]['images_per_s_median']} images/s  "
            + "  ".join(f"{k} {v}" for k, v in summary[a].items() if k.startswith("ratio")))
    goal = summary["simsiam_augself"]["ratio_to_pure_median"]
    log(f"simsiam_augself ratio_to_pure {goal} (goal >= 0.85: "
        f"{'met' if goal >= 0.85 else 'NOT met'}); load average 1 min at the repeats: "
        f"{[round(v, 2) for v in loads]}")

    notes = (
        f"Images/s count images (B = {b} per step), not views (a step sees 2B). Columns: mean "
        f"and sample std over {st['repeats']} interleaved repeats of {st['steps']} timed steps "
        f"after {st['warmup']} warm-up steps; medians in the JSON `summary`. Data: "
        f"{data_desc}. Backbone {args.backbone} "
        f"({'CIFAR ResNet, width 1' if cifar else 'torchvision, 3x3 stride-1 stem, no max-pool'})"
        f", projector {args.proj_dim}-{args.proj_dim}-{args.proj_dim} (3 layers, BN last), "
        f"predictor {args.proj_dim}-{args.pred_hidden}-{args.proj_dim}; SGD lr {lr:g}, momentum "
        f"{MOMENTUM}, weight decay {WEIGHT_DECAY} on every parameter; torch threads "
        f"{args.threads} on both sides; DataLoader with 0 workers on both sides. Ours: uint8 "
        "batch -> batched augmentation of both views (selfsup.vision.augment) -> two backbone "
        "passes of B views. lightly: uint8 -> PIL -> per-image torchvision transforms "
        "(SimSiamTransform: RRC (0.2, 1), flip 0.5, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grey "
        "0.2, blur p 0) -> "
        + ("two backbone passes of B views (lightly's SimSiam example)"
           if args.peer_forward == "separate" else "one backbone pass over 2B views")
        + ". Differences that cannot be matched: lightly resizes PIL crops with antialiasing "
        "(ours: bilinear without), its jitter works on uint8 PIL images (rounding between "
        "ops), its last projector BatchNorm has no affine parameters (ours has), and it draws "
        "a no-op vertical flip, rotation and blur per image. Load average (1 min) at the "
        f"start of each repeat and at the end: {[round(v, 2) for v in loads]}.")
    extra = {"settings": {**st, "batch": b, "px": px, "backbone": args.backbone,
                          "threads": args.threads, "proj_dim": args.proj_dim,
                          "pred_hidden": args.pred_hidden, "peer_forward": args.peer_forward,
                          "lr": lr, "data": data_desc},
             "summary": summary, "step_seconds": reps, "profile": profile,
             "load_average_1min": loads,
             "peer": None if not peer else {"python": peer_python, **peer.info}}
    command = "python " + " ".join(sys.argv)
    jp, mp = write_results("augself_speed", mode, command, started, time.perf_counter() - t0,
                           rows, out, notes, extra=extra)
    log(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
