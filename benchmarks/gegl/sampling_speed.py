"""SMILES-LSTM sampling: the whole-batch sampler against one whose finished rows leave the batch.

Until commit b297309 ``SmilesLSTM._sample_chunk`` ran every row of a batch through the LSTM at
every step until the longest sequence ended; now a row leaves the LSTM's batch once it has
emitted ``<eos>``, and the random draws are still made on the whole batch (so a seeded sample
gives the same tokens, up to the float rounding of the smaller matrix products). This script
measures what that buys, with the earlier sampler rebuilt here (:func:`whole_batch_chunk`, the
same steps) and swapped in for the ``whole_batch`` arm:

* ``sampling/<n>-samples``: ``model.sample(n)`` from the prior, both arms on the same seeds,
  arm order alternating by repeat: CPU seconds (this process), row-steps run by the LSTM, and
  whether the tokens are equal;
* ``runs/<optimizer>/<objective>/<budget>-calls``: whole seeded runs of ``lstm_hc`` and ``gegl``
  (the library's defaults, with the opt-in ``--bf16`` speed setting the GuacaMol runner uses)
  on a PMO objective, each seed with both arms, arm order rotated by seed: wall and CPU seconds
  of the run (sampling, scoring, the expert and training included), the speedup of the same
  seed, and ``same_calls`` = 1 where both arms asked the oracle for the same molecules in the
  same order.

    python benchmarks/gegl/sampling_speed.py --quick        # a minute, into runs/
    python benchmarks/gegl/sampling_speed.py --prior benchmarks/results/gegl_prior_strong/model.pt
        # full: benchmarks/results/gegl_sampling_speed.{json,md}
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import now, row, write_results  # noqa: E402

REPO = HERE.parents[1]
NAME = "gegl_sampling_speed"
ARMS = ("whole_batch", "finished_rows_leave")


def whole_batch_chunk(self, b, max_len, temperature, generator, device):
    """The sampler before b297309: every row runs every step until all rows have ended."""
    import torch
    import torch.nn.functional as F

    from selfsup.chem.lstm.model import BOS_ID, EOS_ID, PAD_ID

    tok = torch.full((b, 1), BOS_ID, dtype=torch.long, device=device)
    out = [tok]
    log_probs = torch.zeros(b, device=device)
    finished = torch.zeros(b, dtype=torch.bool, device=device)
    hidden = None
    for _ in range(max_len):
        logits, hidden = self(tok, hidden)
        logits = logits[:, -1, :].float()
        if temperature == 0:
            nxt = logits.argmax(dim=-1)
        else:
            probs = F.softmax(logits / temperature, dim=-1)
            if generator is not None and generator.device != probs.device:
                probs = probs.to(generator.device)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        step_lp = F.log_softmax(logits, dim=-1).gather(1, nxt[:, None]).squeeze(1)
        log_probs += torch.where(finished, torch.zeros_like(step_lp), step_lp)
        nxt = torch.where(finished, torch.full_like(nxt, PAD_ID), nxt)
        out.append(nxt[:, None])
        finished |= nxt == EOS_ID
        tok = nxt[:, None]
        if bool(finished.all()):
            break
    return torch.cat(out, dim=1), log_probs, finished


def use_arm(arm: str):
    """Context: ``SmilesLSTM._sample_chunk`` is the arm's sampler inside."""
    import contextlib
    from unittest import mock

    from selfsup.chem.lstm.model import SmilesLSTM

    if arm == "whole_batch":
        return mock.patch.object(SmilesLSTM, "_sample_chunk", whole_batch_chunk)
    return contextlib.nullcontext()


def sampling_part(prior: str, n: int, repeats: int) -> tuple[list[dict], dict]:
    """CPU seconds of ``sample(n)`` per arm and repeat (seed = repeat), row-steps, equal tokens."""
    import torch

    from selfsup.chem.lstm.model import PAD_ID, SmilesLSTM

    model, vocab = SmilesLSTM.load(prior)
    secs: dict[str, list[float]] = {a: [] for a in ARMS}
    equal, row_steps = [], {a: [] for a in ARMS}
    for r in range(repeats):
        got = {}
        for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
            with use_arm(arm):
                t = time.process_time()
                s = model.sample(n, vocab, generator=torch.Generator().manual_seed(r),
                                 return_details=True)
                secs[arm].append(time.process_time() - t)
            got[arm] = s.tokens
            lengths = (s.tokens[:, 1:] != PAD_ID).sum(1)  # tokens emitted, <eos> included
            width = s.tokens.shape[1] - 1  # steps run
            # whole batch: every row every step; otherwise a row runs until its <eos>
            row_steps[arm].append(float(n * width) if arm == "whole_batch"
                                  else float(lengths.sum()))
        equal.append(float(torch.equal(got["whole_batch"], got["finished_rows_leave"])))
        print(f"[{NAME}] sampling repeat {r}: " + ", ".join(
            f"{a} {secs[a][-1]:.2f}s" for a in ARMS) + f"; tokens equal {bool(equal[-1])}",
            flush=True)
    setting = f"sampling/{n}-samples"
    rows = [row(setting, a, "cpu_seconds", secs[a]) for a in ARMS]
    rows += [row(setting, a, "row_steps", row_steps[a]) for a in ARMS]
    rows.append(row(setting, "finished_rows_leave", "speedup_vs_whole_batch",
                    [w / f for w, f in zip(secs["whole_batch"], secs["finished_rows_leave"])]))
    rows.append(row(setting, "finished_rows_leave", "same_tokens", equal))
    return rows, {"n": n, "repeats": repeats}


def run_once(optimizer: str, objective: str, prior: str, budget: int, seed: int,
             bf16: bool) -> tuple[float, float, list[str], float]:
    """(wall s, CPU s, the oracle's molecules in call order, top-10 mean) of one seeded run."""
    import numpy as np

    from selfsup.chem.optimize import BF16_SPEED_OVERRIDES
    from selfsup.chem.optimize.base import OPTIMIZERS, OptimizationContext, OptimizeConfig
    from selfsup.chem.oracles import Oracle, pmo_metrics
    from selfsup.config import load_config

    cfg = load_config(OptimizeConfig, None, [
        f"objective={objective}", f"budget={budget}", f"prior={prior}", f"seed={seed}",
        f"optimizer={optimizer}", *(BF16_SPEED_OVERRIDES if bf16 else ())])
    oracle = Oracle(objective, budget=budget)
    t, c = time.perf_counter(), time.process_time()
    OPTIMIZERS[optimizer](OptimizationContext(oracle, [], None), cfg,
                          np.random.default_rng(seed))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    m = pmo_metrics([r.score for r in oracle.records], budget=budget)
    return wall, cpu, [r.smiles for r in oracle.records], m["top10_mean"]


def runs_part(optimizers: list[str], objective: str, prior: str, budget: int, seeds: list[int],
              bf16: bool) -> list[dict]:
    rows = []
    for opt in optimizers:
        wall = {a: [] for a in ARMS}
        cpu = {a: [] for a in ARMS}
        top10 = {a: [] for a in ARMS}
        same = []
        for i, seed in enumerate(seeds):
            calls = {}
            for arm in (ARMS if i % 2 == 0 else ARMS[::-1]):
                with use_arm(arm):
                    w, c, calls[arm], t10 = run_once(opt, objective, prior, budget, seed, bf16)
                wall[arm].append(w)
                cpu[arm].append(c)
                top10[arm].append(t10)
                print(f"[{NAME}] {opt} seed {seed} {arm}: {w:.0f}s wall, {c:.0f}s CPU, "
                      f"{len(calls[arm])} calls, top-10 {t10:.4f}", flush=True)
            same.append(float(calls["whole_batch"] == calls["finished_rows_leave"]))
        setting = f"runs/{opt}/{objective}/{budget}-calls" + ("/bf16" if bf16 else "")
        for a in ARMS:
            rows += [row(setting, a, "wall_seconds", wall[a]),
                     row(setting, a, "cpu_seconds", cpu[a]),
                     row(setting, a, "top10_mean", top10[a])]
        rows += [row(setting, "finished_rows_leave", "speedup_vs_whole_batch",
                     [w / f for w, f in zip(cpu["whole_batch"], cpu["finished_rows_leave"])]),
                 row(setting, "finished_rows_leave", "same_calls", same)]
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--prior", default=str(REPO / "benchmarks/results/gegl_prior_strong/model.pt"))
    ap.add_argument("--objective", default="osimertinib_mpo")
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--budget", type=int, default=None, help="oracle calls per whole run")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--optimizers", nargs="+", default=["lstm_hc", "gegl"])
    ap.add_argument("--fp32", action="store_true", help="runs without the bf16 speed setting")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if not Path(args.prior).is_file():
        raise SystemExit(f"prior {args.prior} not found; pass --prior <model.pt of selfsup chem "
                         "pretrain>")
    mode = "quick" if args.quick else "full"
    n = args.n_samples or (64 if args.quick else 256)
    repeats = args.repeats or (2 if args.quick else 6)
    budget = args.budget or (300 if args.quick else 3000)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    out = Path(args.out) if args.out else (
        REPO / "runs" / f"bench-{NAME}-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else None)
    print(f"[{NAME}] {mode} mode; results in {out or REPO / 'benchmarks/results'}", flush=True)
    started, t0, load0 = now(), time.perf_counter(), os.getloadavg()
    rows, meta = sampling_part(args.prior, n, repeats)
    load1 = os.getloadavg()
    rows += runs_part(args.optimizers, args.objective, args.prior, budget, seeds,
                      not args.fp32)
    load2 = os.getloadavg()
    notes = "\n".join([
        "whole_batch = the sampler before commit b297309 (every row runs every step until the "
        "longest sequence ends), rebuilt in this script; finished_rows_leave = the library's "
        "sampler (a row leaves the LSTM's batch after its `<eos>`; the draws stay the whole "
        "batch's). Both in this process, one torch thread, arm order alternating.",
        "",
        f"sampling/{n}-samples: `model.sample({n})` from `{args.prior}`, seeds 0..{repeats - 1} "
        "(the `seeds` column holds the repeats); cpu_seconds = this process's CPU time; "
        "row_steps = rows run through the LSTM summed over steps; same_tokens = 1 where both "
        "arms sampled the same tokens.",
        "",
        f"runs/...: whole seeded runs (seeds {', '.join(map(str, seeds))}; library defaults"
        + ("" if args.fp32 else " with the opt-in bf16 speed setting") + f") on `{args.objective}`"
        f" at {budget} oracle calls, both arms per seed; speedup_vs_whole_batch = the CPU "
        "seconds of the whole_batch run over the other's, same seed; same_calls = 1 where both "
        "asked the oracle for the same molecules in the same order.",
        "",
        f"Machine load (1-minute average): {load0[0]:.2f} at the start, {load1[0]:.2f} after the "
        f"sampling part, {load2[0]:.2f} at the end, on {os.cpu_count()} cores (CPU seconds are "
        "this process's, so less sensitive to other jobs than wall seconds).",
    ])
    jp, mp = write_results(NAME, mode, "python " + " ".join(sys.argv), started,
                           time.perf_counter() - t0, rows, out, notes,
                           {"prior": args.prior, **meta, "budget": budget, "seeds": seeds,
                            "loadavg": [load0[0], load1[0], load2[0]]})
    print(f"[{NAME}] wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
