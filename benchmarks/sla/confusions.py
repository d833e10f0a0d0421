"""Where the test errors of each SLA-benchmark arm go: total errors and the class pairs a
rotation can map onto each other (MNIST 6 <-> 9), per seed.

It reads the trained runs that `benchmarks/sla/run.py` leaves under runs/bench-sla-full/ (the
selected best-on-validation weights, checkpoints/best.pt), so run it on the machine that trained
them:

    python benchmarks/sla/confusions.py --setting mnist/100-per-class/resnet32-warmup

writes benchmarks/results/sla_confusions.{json,md}. Each arm is judged by its own rule, as in
the benchmark: SI, AG or SD for the SLA arms, the N-way head for the others.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import ARMS  # noqa: E402  (arm -> trained mode and results key, as in the benchmark)

from common import now, row, write_results  # noqa: E402

PAIRS = {"mnist": [(6, 9)], "fashion-mnist": []}  # classes a 180-degree turn maps onto each other


def confusion(run: Path, rule: str, threads: int):
    """(N x N confusion counts, rows = true class) of the run's selected weights on test."""
    import torch

    from selfsup.vision.train import eval_batches, load_selected

    torch.set_num_threads(threads)
    _, cfg, model, data = load_selected(run)
    cm = torch.zeros(data.n_classes, data.n_classes, dtype=torch.long)
    with torch.no_grad():
        for x, y in eval_batches(data, "test", cfg.trainer.eval_batch_size):
            pred = model.predict(x)[rule].argmax(1)
            cm.index_put_((y, pred), torch.ones_like(y), accumulate=True)
    return cm, cfg.data.name


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="mnist/100-per-class/resnet32-warmup")
    ap.add_argument("--runs", default="runs/bench-sla-full", help="the benchmark's run folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    args = ap.parse_args()
    started, t0 = now(), time.perf_counter()
    name = args.setting.replace("/", "-")
    rows = []
    for arm, (mode, key) in ARMS.items():
        rule = key.removeprefix("test_").removesuffix("_acc")  # test_aggregated_acc: aggregated
        per_seed: dict[str, list[float]] = {}
        for seed in args.seeds:
            found = sorted(p for p in Path(args.runs).glob(f"{name}-{mode}-s{seed}-*")
                           if (p / "checkpoints" / "best.pt").is_file())
            if not found:
                raise SystemExit(f"no finished run of {name}-{mode}-s{seed} under {args.runs}; "
                                 "train it with benchmarks/sla/run.py first")
            cm, dataset = confusion(found[-1], rule, args.threads)
            off = cm.sum() - cm.trace()
            per_seed.setdefault("test_errors", []).append(int(off))
            for a, b in PAIRS.get(dataset, []):
                per_seed.setdefault(f"errors_{a}_{b}_swapped", []).append(
                    int(cm[a, b] + cm[b, a]))
            print(f"[confusions] {arm} seed {seed}: {int(off)} errors", flush=True)
        rows += [row(args.setting, arm, metric, vals) for metric, vals in per_seed.items()]
    notes = ("Test errors (of 10,000) of each arm's selected weights, and how many of them are "
             "a class read as the class a 180-degree turn makes of it (6 as 9 plus 9 as 6). "
             f"Runs from {args.runs}, one per seed.")
    out = Path(args.out) if args.out else None
    command = "python " + " ".join(sys.argv)
    jp, mp = write_results("sla_confusions", "full", command, started,
                           time.perf_counter() - t0, rows, out, notes)
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
