"""Does a value network trained on self-improvement routes lower Retro*'s iterations against
Retro*-0 at equal success? (issue 23, item 4)

    python benchmarks/retro/value_si.py --si-run RUN [--iteration 1] --targets T.smi \\
        [--stock S] [--max-iterations 500] [--workers 2] [--out DIR]
    python benchmarks/retro/value_si.py --model M.pt --value V.pt --targets T.smi ...
    python benchmarks/retro/value_si.py --model M.pt --quick      # minutes, made here

``--si-run`` is a ``selfsup chem self-improve`` run made with ``value.train=true``: iteration
``i``'s model (``iterations/iter_i/model.pt``) and the value network trained on the solved
routes of that iteration's planning, costs under that model (``iter_i/value.pt``). Both arms
plan the same targets with the same model and stock: ``retro_star_0`` (no value) and
``retro_star_si_value`` (the value network). Reported: each arm's success rate and success
within N iterations, and over the targets both arms solve, the mean iterations to the first
route of each, their paired difference (value minus zero; negative = the value network saves
iterations) with its standard error, and how many targets each solves alone. Without
``--targets`` the targets are the held-out multi-step targets of the chained USPTO-50k route
benchmark (``run_v2.py``'s fixed draw). ``--quick`` makes a small self-improvement run here
(1 iteration, 60 train targets, value.train) and plans 15 targets at 100 iterations.

Writes ``retro_value_si.{json,md}`` (full: ``benchmarks/results/``; quick or ``--out``: the
output folder) and per-target results (``retro_value_si_targets/<arm>.jsonl``) beside them;
each arm's planning resumes target by target (``runs/<arm>.jsonl`` in the output folder).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from v2lib import (  # noqa: E402
    SUCCESS_AT,
    both_solved,
    write_compact,
)

from common import RESULTS, now, row, write_results  # noqa: E402
from selfsup.io import atomic_write_text  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NAME = "retro_value_si"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--si-run", help="self-improvement run made with value.train=true")
    ap.add_argument("--iteration", type=int, default=1)
    ap.add_argument("--model", help="single-step model.pt (with --value, or --quick)")
    ap.add_argument("--value", help="value-network file")
    ap.add_argument("--targets", help="target SMILES file")
    ap.add_argument("--target-set", help="name of the target set")
    ap.add_argument("--n-targets", type=int, default=None)
    ap.add_argument("--stock", default=None)
    ap.add_argument("--stock-exclude", default=None,
                    help="SMILES file of molecules taken out of the stock (run_v2.py's)")
    ap.add_argument("--stock-name", default=None, help="the stock's name in the setting")
    ap.add_argument("--train-value", action="store_true",
                    help="--si-run made without value.train: train iteration --iteration's "
                    "value network now, as value.train would have (into the output's runs "
                    "folder; the run is not changed)")
    ap.add_argument("--max-iterations", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch
    from run_v2 import Bench, parse_args, rel

    from selfsup.chem.retro.workflows.plan import (
        SearchSpec,
        make_model_factory,
        make_value_factory,
        summarize,
    )
    from selfsup.chem.retro.workflows.self_improve import plan_resumable, self_improve

    torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    out = Path(args.out) if args.out else (
        REPO / "runs" / f"bench-value-si-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    full_results = out.resolve() == RESULTS.resolve()
    work = (REPO / "runs" / "bench-value-si-full") if full_results else out
    max_its = args.max_iterations or (100 if args.quick else 500)

    # targets and stock: run_v2's machinery (same draw, same names)
    v2 = [f"--model={args.model or 'unused'}", f"--out={work}", f"--max-iterations={max_its}"]
    v2 += ["--quick"] if args.quick else []
    v2 += [f"--targets={args.targets}"] if args.targets else []
    v2 += [f"--target-set={args.target_set}"] if args.target_set else []
    v2 += [f"--n-targets={args.n_targets}"] if args.n_targets is not None else []
    v2 += [f"--stock={args.stock}"] if args.stock else []
    v2 += [f"--stock-exclude={args.stock_exclude}"] if args.stock_exclude else []
    v2 += [f"--stock-name={args.stock_name}"] if args.stock_name else []
    b = Bench(parse_args(v2))
    b.prepare_targets()

    if args.si_run:
        d = Path(args.si_run) / "iterations" / f"iter_{args.iteration}"
        model, value = d / "model.pt", d / "value.pt"
        if not value.is_file() and args.train_value:
            from selfsup.chem.retro.workflows.self_improve import train_iteration_value

            value = work / "runs" / f"value-{Path(args.si_run).name}-iter{args.iteration}.pt"
            if not value.is_file():
                t = time.perf_counter()
                _, info = train_iteration_value(args.si_run, args.iteration, out=value)
                print(f"[value_si] value network trained on {info['n_routes']} routes "
                      f"({info['n_examples']} examples) in {time.perf_counter() - t:.0f}s: "
                      f"{value}", flush=True)
        if not value.is_file():
            raise SystemExit(f"{value} does not exist: make the self-improvement run with "
                             "value.train=true, or pass --train-value")
    elif args.quick and args.model and not args.value:
        made = work / "si-run.txt"
        if made.is_file():
            run_path = Path(made.read_text().strip())
        else:
            run, res = self_improve(None, b.common_si(0, "value-si-quick") + [
                "n_iterations=1", f"targets.file={b.si_targets_file()}", "targets.n=60",
                "search.max_iterations=30", "value.train=true", "value.epochs=30"])
            run_path = run.path
            atomic_write_text(made, str(run_path) + "\n")
        d = run_path / "iterations" / "iter_1"
        model, value = d / "model.pt", d / "value.pt"
    elif args.model and args.value:
        model, value = Path(args.model), Path(args.value)
    else:
        raise SystemExit("pass --si-run RUN, or --model and --value, or --model with --quick")

    recs = {}
    for arm, v in (("retro_star_0", None), ("retro_star_si_value", value)):
        spec = SearchSpec(make_model_factory(str(model), args.threads), b.stock(),
                          make_value_factory(str(v) if v else None, args.threads),
                          max_iterations=max_its, max_depth=10)
        t = time.perf_counter()
        recs[arm], n_new = plan_resumable(b.targets, spec, work / "runs" / f"{arm}.jsonl",
                                          n_workers=args.workers, description=arm)
        print(f"[value_si] {arm}: {n_new} targets searched in {time.perf_counter() - t:.0f}s",
              flush=True)
        write_compact(out / f"{NAME}_targets" / f"{arm}.jsonl", recs[arm])
    cmp = both_solved(recs["retro_star_0"], recs["retro_star_si_value"])
    setting = b.setting
    rows = []
    for arm, rs in recs.items():
        s = summarize(rs, max_iterations=max_its, success_at=SUCCESS_AT)
        for k in [k for k in SUCCESS_AT if k <= max_its]:
            rows.append(row(setting, arm, f"success_at_{k}", [s[f"success_at_{k}"]]))
        for m in ("success_rate", "mean_iterations", "mean_route_length"):
            rows.append(row(setting, arm, m, [s[m]]))
        rows.append(row(setting, arm, "mean_iterations_both_solved",
                        [cmp["mean_iterations_both_a" if arm == "retro_star_0"
                             else "mean_iterations_both_b"]]))
    rows.append(row(setting, "retro_star_si_value_minus_retro_star_0",
                    "mean_iterations_both_solved", [cmp["mean_difference_b_minus_a"]]))
    notes = (f"Model `{rel(model)}`, value network `{rel(value)}` (trained on "
             "self-improvement routes). "
             f"Stock: {b.stock().describe()}. Targets: {b.target_source}. Over the "
             f"{cmp['n_both_solved']} targets both arms solve, Retro* with the value network "
             f"needs {cmp['mean_difference_b_minus_a']:+.2f} iterations (standard error "
             f"{cmp['stderr_difference']:.2f}) against Retro*-0 (fewer on {cmp['n_b_fewer']}, "
             f"more on {cmp['n_b_more']}); success {cmp['success_rate_a']:.3f} (Retro*-0) vs "
             f"{cmp['success_rate_b']:.3f} (value); solved by one arm alone: Retro*-0 "
             f"{cmp['n_only_a']}, value {cmp['n_only_b']}. One seed (the value network of one "
             "self-improvement run); per-target results in "
             f"`{rel(out / (NAME + '_targets'))}`."
             + (" Quick mode: a smoke test, not a test of the claim." if args.quick else ""))
    jp, mp = write_results(NAME, "quick" if args.quick else "full",
                           "python " + " ".join(sys.argv), started, time.perf_counter() - t0,
                           rows, None if full_results else out, notes,
                           {"comparison": cmp, "model": rel(model), "value": rel(value),
                            "stock": b.stock().describe(), "targets": b.target_source})
    print(f"[value_si] {notes}\n[value_si] wrote {jp} and {mp}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
