"""Training-step time and peak memory of DINO and DINO + SelfPatch on one ViT.

Setting ``speed/<vit>-batch<B>`` (issue 19). Two arms built exactly as the quality benchmark
(``benchmarks/selfpatch/run.py``) builds them: the same ViT without a CLS token (default
``vit_pico``, 4 px patches, 32 px images), the same multi-crop (2 x 32 px + 4 x 16 px), heads,
schedules and AdamW; ``dino`` (method dino) and ``dino_selfpatch`` (method selfpatch: the
aggregation head, the teacher's neighbour selection and aggregation, the patch head and loss).

* ``step_seconds``: one full training step as the training host runs it: the uint8 batch of B
  ``fmnist-mosaic`` training images (random uint8 images when the data set cannot be made) ->
  ``method.training_step`` (multi-crop views drawn batched on the device, student and teacher
  passes, losses) -> ``backward`` -> ``before_optimizer_step`` (DINO's per-parameter clipping,
  weight-decay schedule) -> AdamW step -> ``zero_grad`` -> ``after_step`` (teacher EMA). On
  CUDA the step runs under bf16 autocast (the host's ``auto`` precision) and is timed between
  ``torch.cuda.synchronize()`` calls. Repeats are interleaved (dino, dino_selfpatch, dino, ...),
  each timing ``--steps`` steps after ``--warmup`` untimed ones; one value per repeat (the mean
  step of that repeat) in ``seeds``, the median over repeats in ``summary``.
  ``ratio_to_dino``: dino_selfpatch's step time over dino's of the same repeat.
* ``peak_memory_mb``: measured in a fresh subprocess per arm (so one arm's allocations never
  count for the other), after ``--warmup`` + ``--steps`` steps. CUDA:
  ``torch.cuda.max_memory_allocated`` (tensors the caching allocator handed out: weights,
  gradients, optimiser state, activations; peak reset after the model was built and moved, so
  the weights count, as they stay allocated). CPU: the growth of the process's peak resident set
  (``VmHWM`` of /proc/self/status, reset through /proc/self/clear_refs after the model, the
  optimiser and the images are in memory) over the resident set at that moment, i.e. what the
  training steps added at their peak: activations, gradients, AdamW's state (made at the first
  step) and what the allocator keeps. Where the reset is not possible, the growth of
  ``ru_maxrss`` (which can under-count if an earlier peak was higher). tracemalloc is not used:
  it does not see torch's tensor memory.

    .venv/bin/python benchmarks/selfpatch/speed.py --quick   # runs/bench-selfpatch_speed-quick-*/
    .venv/bin/python benchmarks/selfpatch/speed.py           # benchmarks/results/selfpatch_speed.*
    .venv/bin/python benchmarks/selfpatch/speed.py --device cuda --backbone vit_small --batch 256
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import now, row, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NAME = "selfpatch_speed"
ARMS = ("dino", "dino_selfpatch")
SEED = 0


def settings(quick: bool) -> dict:
    if quick:
        return {"repeats": 2, "steps": 2, "warmup": 1, "batch": 32, "n_images": 256}
    return {"repeats": 3, "steps": 5, "warmup": 1, "batch": 128, "n_images": 1024}


def quality_bench():
    """``benchmarks/selfpatch/run.py`` as a module (its recipe and arms)."""
    path = Path(__file__).resolve().parent / "run.py"
    spec = importlib.util.spec_from_file_location("selfpatch_bench_run", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def arm_overrides(arm: str, backbone: str, batch: int) -> list[str]:
    """The quality benchmark's recipe and arm, at ``backbone`` and ``batch``."""
    q = quality_bench()
    return (list(q.RECIPE) + [f"model.backbone={backbone}", f"optim.batch_size={batch}",
                              f"seed={SEED}"] + q.ARM_OVERRIDES[arm])


def load_images(n: int, px: int):
    """uint8 (n, 1, px, px) images and their labels, and where they came from."""
    import torch

    try:
        from selfsup.vision.data import _load_mosaic

        trx, try_ = _load_mosaic(None, px, 0)[:2]
        x = torch.from_numpy(trx[:n].copy()).permute(0, 3, 1, 2).contiguous()
        return x, torch.from_numpy(try_[:n].copy()).long(), (
            f"fmnist-mosaic (generator seed 0), first {n} training mosaics, {px} px grey")
    except Exception as e:  # noqa: BLE001 (no local Fashion-MNIST and no network)
        print(f"fmnist-mosaic unavailable ({e}); using random images", flush=True)
    g = torch.Generator().manual_seed(SEED)
    return (torch.randint(0, 256, (n, 1, px, px), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g),
            f"random uniform uint8 images ({n}, 1, {px}, {px}), torch seed {SEED}")


class Arm:
    """One arm's method, optimiser and step counter on ``device``."""

    def __init__(self, arm: str, args, images, labels, device) -> None:
        import torch

        from selfsup.config import load_config
        from selfsup.vision.methods import MethodContext, build_method
        from selfsup.vision.train import VisionTrainConfig

        cfg = load_config(VisionTrainConfig, overrides=arm_overrides(arm, args.backbone,
                                                                     args.batch))
        unit = images.float() / 255.0
        ctx = MethodContext(cfg=cfg, n_classes=10, in_channels=int(images.shape[1]),
                            image_size=args.px, mean=unit.mean(dim=(0, 2, 3)).tolist(),
                            std=unit.std(dim=(0, 2, 3)).tolist(), total_steps=1000)
        torch.manual_seed(SEED)
        self.method = build_method(cfg.method, ctx).to(device)
        self.method.train()
        self.opt = torch.optim.AdamW(self.method.param_groups(cfg.optim.weight_decay),
                                     lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
        self.images, self.labels, self.device = images, labels, device
        self.batch, self.step_no, self.total = args.batch, 0, 1000

    def step(self) -> float:
        """One full training step (seconds)."""
        import torch

        from selfsup.vision.augment import step_generator

        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        i = (self.step_no * self.batch) % max(len(self.images) - self.batch + 1, 1)
        x = self.images[i : i + self.batch].to(self.device, non_blocking=True)
        y = self.labels[i : i + self.batch].to(self.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss, _ = self.method.training_step(x, y, step_generator(SEED, self.step_no))
        loss.backward()
        self.method.before_optimizer_step(self.step_no, self.total, self.opt)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.method.after_step(self.step_no, self.total)
        self.step_no += 1
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t


def _status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_worker(args) -> dict:
    """Peak memory of ``args.memory_worker``'s steps in this (fresh) process (module text)."""
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    images, labels, _ = load_images(args.n_images, args.px)
    arm = Arm(args.memory_worker, args, images, labels, device)
    gc.collect()
    n = args.warmup + args.steps
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(n):
            arm.step()
        return {"arm": args.memory_worker, "peak_memory_mb":
                torch.cuda.max_memory_allocated() / 2**20,
                "kind": "torch.cuda.max_memory_allocated", "steps": n}
    kind = "peak RSS growth (VmHWM after a clear_refs reset minus VmRSS)"
    base = _status_kb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = _status_kb("VmHWM") is not None and base is not None
    except OSError:
        reset = False
    if not reset:
        kind = "ru_maxrss growth (no VmHWM reset possible)"
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(n):
        arm.step()
    peak = (_status_kb("VmHWM") if reset
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return {"arm": args.memory_worker, "peak_memory_mb": (peak - base) / 1024,
            "baseline_rss_mb": base / 1024, "kind": kind, "steps": n}


def measure_memory(arm: str, args) -> dict:
    """:func:`memory_worker` of ``arm`` in a subprocess (its JSON line)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-worker", arm,
           "--backbone", args.backbone, "--batch", str(args.batch), "--px", str(args.px),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--n-images",
           str(args.n_images), "--threads", str(args.threads), "--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode or not lines:
        raise SystemExit(f"memory worker for {arm} failed (exit {out.returncode}):\n"
                         f"{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few small steps, into runs/")
    ap.add_argument("--backbone", default="vit_pico")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--px", type=int, default=32, help="image (global view) size")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps before each repeat")
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    ap.add_argument("--no-memory", action="store_true", help="skip peak_memory_mb")
    ap.add_argument("--memory-worker", choices=ARMS, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    args = ap.parse_args(argv)
    st = settings(args.quick)
    for k in ("repeats", "steps", "warmup", "batch", "n_images"):
        if getattr(args, k) is None:
            setattr(args, k, st[k])
    args.n_images = max(args.n_images, args.batch)

    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.memory_worker:
        print(json.dumps(memory_worker(args)), flush=True)
        return 0
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else (
        ROOT / "runs" / f"bench-{NAME}-quick-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.quick else None)

    def log(msg: str) -> None:
        print(f"[{NAME} {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    images, labels, data_desc = load_images(args.n_images, args.px)
    log(f"{data_desc}; device {device}, torch threads {torch.get_num_threads()}")
    arms = {a: Arm(a, args, images, labels, device) for a in ARMS}
    reps: dict[str, list[list[float]]] = {a: [] for a in ARMS}
    loads = []
    for r in range(args.repeats):
        loads.append(os.getloadavg()[0])
        for a, arm in arms.items():
            for _ in range(args.warmup):
                arm.step()
            times = [arm.step() for _ in range(args.steps)]
            reps[a].append(times)
            log(f"repeat {r + 1}/{args.repeats} {a}: mean step {statistics.fmean(times):.3f} s")
    loads.append(os.getloadavg()[0])
    del arms
    gc.collect()

    memory = {}
    if not args.no_memory:
        for a in ARMS:
            memory[a] = measure_memory(a, args)
            log(f"{a}: peak_memory_mb {memory[a]['peak_memory_mb']:.1f} ({memory[a]['kind']})")

    setting = f"speed/{args.backbone}-batch{args.batch}"
    step_s = {a: [statistics.fmean(t) for t in reps[a]] for a in ARMS}
    rows = [row(setting, a, "step_seconds", step_s[a]) for a in ARMS]
    ratio = [s / d for s, d in zip(step_s["dino_selfpatch"], step_s["dino"])]
    rows.append(row(setting, "dino_selfpatch", "ratio_to_dino", ratio))
    rows += [row(setting, a, "peak_memory_mb", [memory[a]["peak_memory_mb"]]) for a in memory]
    for r_ in rows:
        r_["median"] = statistics.median(r_["seeds"])
    summary = {a: {"step_seconds_median": round(statistics.median(step_s[a]), 4),
                   **({"peak_memory_mb": round(memory[a]["peak_memory_mb"], 1)}
                      if a in memory else {})} for a in ARMS}
    summary["dino_selfpatch"]["ratio_to_dino_median"] = round(statistics.median(ratio), 3)
    for a in ARMS:
        log(f"{a}: " + "  ".join(f"{k} {v}" for k, v in summary[a].items()))
    kind = next(iter(memory.values()))["kind"] if memory else "not measured"
    notes = (
        f"Backbone {args.backbone} (4 px patches, no CLS token), {args.px} px images, batch "
        f"{args.batch}, multi-crop 2 x {args.px} px + 4 x {args.px // 2} px, the recipe of "
        "`benchmarks/selfpatch/run.py` (heads out 2048, SelfPatch patch head out 512, k 4); "
        f"device {device}" + (" (bf16 autocast)" if device.type == "cuda" else "")
        + f", torch threads {torch.get_num_threads()}. step_seconds: mean over "
        f"{args.steps} timed steps after {args.warmup} warm-up step(s), one value per repeat, "
        f"{args.repeats} interleaved repeats (medians in the JSON `summary`); a step includes "
        "drawing the views, both networks, the losses, backward, clipping, the AdamW step and "
        f"the teacher EMA. peak_memory_mb: {kind}, in a fresh subprocess per arm over "
        f"{args.warmup + args.steps} steps. Data: {data_desc}. Load average (1 min) at the "
        f"start of each repeat and at the end: {[round(v, 2) for v in loads]}.")
    extra = {"settings": {"backbone": args.backbone, "batch": args.batch, "px": args.px,
                          "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup,
                          "n_images": args.n_images, "threads": args.threads,
                          "device": str(device), "data": data_desc},
             "summary": summary, "step_seconds": reps, "memory": memory,
             "load_average_1min": loads}
    command = "python " + " ".join(sys.argv)
    jp, mp = write_results(NAME, mode, command, started, time.perf_counter() - t0, rows, out,
                           notes, extra=extra)
    log(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
