"""Test accuracy of an SLA model's joint head on each transformed copy: copy j read at its own
columns (., j). Plain SLA trains all M copies alike; the SLA+SD model's two extra losses see only
the identity copy, so this shows whether its shared features lean towards that copy.

It reads trained runs that `benchmarks/sla/run.py` leaves under runs/bench-sla-full/ (their
selected best-on-validation weights), so run it on the machine that trained them:

    python benchmarks/sla/per_copy.py RUN_DIR [RUN_DIR ...]

writes benchmarks/results/sla_per_copy.{json,md}: one row per run (setting = run name, arm =
its mode), metrics copy_0_accuracy ... copy_{M-1}_accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import now, row, write_results  # noqa: E402


def per_copy_accuracy(model, batches) -> list[float]:
    """Accuracy of copy j's joint logits at columns (., j), for each j, over ``batches`` of
    (images, labels). ``model.predict(x)["joint"]`` is (M*B, N*M), transform-major."""
    import torch

    from selfsup.vision.methods.sla import own_column_logits

    correct, total = None, 0
    with torch.no_grad():
        for x, y in batches:
            logits = own_column_logits(model.predict(x)["joint"], model.n_classes, model.m)
            hits = (logits.argmax(2) == y).sum(1)  # (M,): right answers of each copy
            correct = hits if correct is None else correct + hits
            total += x.shape[0]
    if not total:
        raise ValueError("no test images to evaluate")
    return [float(c) / total for c in correct]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run folders of mode sla or sla_sd")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    args = ap.parse_args()
    import torch

    from selfsup.errors import InputError
    from selfsup.vision.train import eval_batches, load_selected

    torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    rows = []
    for run in map(Path, args.runs):
        try:
            _, cfg, model, data = load_selected(run)
        except InputError as e:  # not a run folder, or one without selected weights
            raise SystemExit(str(e)) from None
        if cfg.sla.mode not in ("sla", "sla_sd"):
            raise SystemExit(f"{run}: mode {cfg.sla.mode} has no joint head; give runs of "
                             "mode sla or sla_sd")
        accs = per_copy_accuracy(model, eval_batches(data, "test", cfg.trainer.eval_batch_size))
        print(f"[per-copy] {run.name}: {[round(a, 4) for a in accs]}", flush=True)
        rows += [row(run.name, cfg.sla.mode, f"copy_{j}_accuracy", [a])
                 for j, a in enumerate(accs)]
    notes = ("Test accuracy of each run's joint head on copy j of every test image (copy 0 "
             "the identity), read at its own columns (., j), from the run's selected weights. "
             "One run per row; the seed is in the run name.")
    out = Path(args.out) if args.out else None
    command = "python " + " ".join(sys.argv)
    jp, mp = write_results("sla_per_copy", "full", command, started,
                           time.perf_counter() - t0, rows, out, notes)
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
