"""SLA vs its baselines on real images (Fashion-MNIST, MNIST), several seeds, equal epochs.

Arms (REFERENCES.md section 1): baseline, da, mt (trained with those modes), sla_si and sla_ag
(one model trained with mode sla, evaluated with the SI and AG rules), sla_sd (mode sla_sd,
evaluated with the distilled head u). Metrics: test_accuracy (model selected on a held-out
validation split) and epoch_seconds. A separate setting "speed" measures the cost of one
training step of SLA against M x the baseline step on the same batch.

    python benchmarks/sla/run.py --quick          # minutes; writes into runs/bench-sla-quick-*/
    python benchmarks/sla/run.py                  # full; writes benchmarks/results/sla.{json,md}

Finished (setting, seed, mode) trainings are cached in the output folder's sla_cache.json, so a
killed benchmark started again with the same arguments skips what it already did. The full
run's cache is committed as benchmarks/results/sla_cache.json (per seed and mode: accuracies,
epoch seconds, threads), so `--report` rebuilds the tables from it and a run with another
`--out` resumes from a copy of it. Runners with different --modes or --seeds may share one
--out at the same time (each merges the cache file before writing it). A unit killed half way
is resumed from its run directory's last checkpoint (same run name and config) when the benchmark
runs again, so a long setting can be spread over several sessions.

    python benchmarks/sla/run.py --verify         # re-train committed units, compare figures

``--verify`` trains committed units again (default: the cheapest baseline unit; ``--only``,
``--seeds``, ``--modes`` and ``--verify-per-arm N`` choose others) into a scratch folder, never
the committed cache, and prints old and new figures side by side with the provenance (commit,
torch build, CPU) of both; ``sla_verify.{json,md}`` in the scratch folder hold the comparison.
Every unit finished from now on records its provenance in the cache.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    compare_units,
    load_json,
    now,
    previous_vision_run,
    provenance_census,
    row,
    select_cheapest,
    verify_folder,
    write_results,
    write_verification,
)
from selfsup.io import atomic_write_json  # noqa: E402
from selfsup.provenance import provenance  # noqa: E402

MODES = ("baseline", "da", "mt", "sla", "sla_sd")
ARMS = {  # arm -> (trained mode, results key)
    "baseline": ("baseline", "test_single_acc"),
    "da": ("da", "test_single_acc"),
    "mt": ("mt", "test_single_acc"),
    "sla_si": ("sla", "test_single_acc"),
    "sla_ag": ("sla", "test_aggregated_acc"),
    "sla_sd": ("sla_sd", "test_distilled_acc"),
}


def settings(quick: bool) -> dict[str, list[str]]:
    common = ["model.backbone=resnet20", "model.width=0.5", "trainer.progress=false",
              "trainer.log_every_n_steps=50", "trainer.eval_batch_size=1000"]
    low = ["data.per_class=100", "data.val_size=1000", "optim.batch_size=64", "optim.epochs=15"]
    resnet32_warmup = [
        "model.backbone=resnet32", "model.width=1.0", "trainer.progress=false",
        "trainer.log_every_n_steps=50", "trainer.eval_batch_size=1000",
        "data.per_class=100", "data.val_size=1000", "optim.batch_size=64",
        "optim.epochs=30", "optim.warmup=0.1"]
    full_data = [
        "model.backbone=resnet32", "model.width=1.0", "trainer.progress=false",
        "trainer.log_every_n_steps=50", "trainer.eval_batch_size=1000",
        "data.name=fashion-mnist", "data.val_size=5000", "optim.batch_size=128",
        "optim.warmup=0.1"]
    if quick:
        return {
            "fashion-mnist/20-per-class": common + [
                "data.name=fashion-mnist", "data.per_class=20", "optim.batch_size=50",
                "optim.epochs=3", "data.val_size=1000"],
        }
    return {
        "fashion-mnist/100-per-class": common + low + ["data.name=fashion-mnist"],
        "mnist/100-per-class": common + low + ["data.name=mnist"],
        # the paper's network (full-width ResNet-32), 30 epochs
        "fashion-mnist/100-per-class/resnet32": [
            "model.backbone=resnet32", "model.width=1.0", "trainer.progress=false",
            "trainer.log_every_n_steps=50", "trainer.eval_batch_size=1000",
            "data.per_class=100", "data.val_size=1000", "optim.batch_size=64",
            "optim.epochs=30", "data.name=fashion-mnist"],
        # the same with a linear lr warm-up over the first 10% of the steps: without it, the
        # multi-copy modes (da, mt, sla_sd) at lr 0.1 can stall near chance for 10+ of the 30
        # epochs (450 steps in all)
        "fashion-mnist/100-per-class/resnet32-warmup": resnet32_warmup + [
            "data.name=fashion-mnist"],
        "mnist/100-per-class/resnet32-warmup": resnet32_warmup + ["data.name=mnist"],
        # the whole training set (55k images after the 5k validation split), the network and
        # warm-up of the low-data setting that trains every arm, batch 128 as in the paper; two
        # epochs (858 steps) because one epoch of all arms costs about 1.6 h of one core here
        # (SLA alone about 25 min)
        "fashion-mnist/full-data/resnet32-warmup": full_data + ["optim.epochs=2"],
        # the same three times longer (2,574 steps), for baseline and SLA: whether the joint
        # 40-way task needs more than 2 epochs of the whole set to pay (SLA: 2.5 h of one core)
        "fashion-mnist/full-data/resnet32-warmup-6-epochs": full_data + ["optim.epochs=6"],
    }


def _net(overrides: list[str]) -> str:
    kv = dict(o.split("=", 1) for o in overrides)
    warm = f", lr warm-up {kv['optim.warmup']} of the steps" if "optim.warmup" in kv else ""
    return f"{kv['model.backbone']} x{kv['model.width']}, {kv['optim.epochs']} epochs{warm}"


def _threads(cache: dict) -> dict[str, str]:
    """``setting -> 'mode: device, ...'`` of the cached units (the device names the threads)."""
    seen: dict[str, dict[str, set]] = {}
    for key, unit in cache.items():
        if key.count("|") == 2 and isinstance(unit, dict):
            setting, _, mode = key.split("|")
            seen.setdefault(setting, {}).setdefault(mode, set()).add(unit.get("device", "?"))
    return {k: ", ".join(f"{m} {'/'.join(sorted(d))}" for m, d in v.items())
            for k, v in seen.items()}


def _merge_history(a: list[dict], b: list[dict]) -> list[dict]:
    """Union of two invocation lists, in start order."""
    seen = {(h["command"], h["started"]): h for h in a + b}
    return sorted(seen.values(), key=lambda h: h["started"])


def previous_run(run_root: Path, name: str, config: dict) -> Path | None:
    """The unit's run left by a killed benchmark (:func:`common.previous_vision_run`)."""
    return previous_vision_run(run_root, name, config)


def step_cost(repeats: int = 21) -> dict[str, float]:
    """Seconds of one training step (forward + backward + SGD) on the same batch of 128.

    Baseline and SLA steps are interleaved (triples), so load from other processes hits all
    alike. Two ratios, medians over triples: sla / (M x baseline step on 128 images), the one
    the issue bounds, and sla / (baseline step on the M x 128 images an SLA step sees), which
    isolates SLA's own overhead from the CPU's cost of a larger batch (on a CPU a batch of
    512 costs more than 4 batches of 128, cache effects).
    """
    import statistics

    import torch

    from selfsup.vision.backbones import build_backbone
    from selfsup.vision.label_transforms import build_label_transform
    from selfsup.vision.methods.sla import SLAModel

    x = torch.randn(128, 1, 28, 28)
    y = torch.randint(0, 10, (128,))
    models, opts = {}, {}
    for mode in ("baseline", "sla"):
        torch.manual_seed(0)
        models[mode] = SLAModel(build_backbone("resnet20", in_channels=1, width=0.5), 10,
                                build_label_transform("rotation"), mode)
        opts[mode] = torch.optim.SGD(models[mode].parameters(), lr=0.01)
    m = models["sla"].m
    x_m = torch.randn(m * 128, 1, 28, 28)
    y_m = torch.randint(0, 10, (m * 128,))

    def step(mode: str, xb: torch.Tensor = x, yb: torch.Tensor = y) -> float:
        t = time.perf_counter()
        loss, _ = models[mode].loss(xb, yb)
        opts[mode].zero_grad()
        loss.backward()
        opts[mode].step()
        return time.perf_counter() - t

    step("baseline"), step("sla"), step("baseline", x_m, y_m)  # warm-up
    runs = [(step("baseline"), step("sla"), step("baseline", x_m, y_m))
            for _ in range(repeats)]
    return {
        "baseline": statistics.median(b for b, _, _ in runs),
        "sla": statistics.median(s for _, s, _ in runs),
        "baseline_m_copies": statistics.median(bm for _, _, bm in runs),
        "ratio": statistics.median(s / (m * b) for b, s, _ in runs),
        "ratio_same_images": statistics.median(s / bm for _, s, bm in runs),
    }


def train_unit(setting: str, overrides: list[str], seed: int, m: str, threads: int | None,
               run_root: Path) -> dict:
    """Train one (setting, seed, mode) unit, or go on from a killed one's checkpoint; the cache
    entry: the run's flat results and the provenance of this process."""
    from selfsup.config import load_config, to_dict
    from selfsup.vision.train import VisionTrainConfig, resume, train

    name = setting.replace("/", "-")
    extra = [f"trainer.threads={threads}"] if threads else []
    unit_overrides = overrides + extra + [f"sla.mode={m}", f"seed={seed}",
                                          f"name={name}-{m}-s{seed}", f"run_root={run_root}"]
    cfg = to_dict(load_config(VisionTrainConfig, None, unit_overrides))
    old = previous_run(run_root, cfg["name"], cfg)
    if old is not None:  # a killed benchmark's unit: go on from its checkpoint
        print(f"[sla bench]   resuming {old}", flush=True)
        _, res = resume(old)
    else:
        _, res = train(None, unit_overrides)
    unit = {k: v for k, v in res.items() if not isinstance(v, dict)}
    unit["provenance"] = provenance()  # after training: the threads it ran with
    return unit


# what --verify compares: the figures a unit's rows come from, and its timing (never equal)
VERIFY_FIGURES = ("test_single_acc", "test_aggregated_acc", "test_distilled_acc",
                  "test_joint_acc", "test_loss", "best_val_acc", "best_epoch", "steps")
VERIFY_TIMING = ("epoch_seconds",)
COMMITTED_CACHE = Path(__file__).resolve().parents[1] / "results" / "sla_cache.json"


def _unit_threads(unit: dict) -> int | None:
    """The torch threads a cached unit trained with (its provenance, else its device string)."""
    threads = (unit.get("provenance") or {}).get("torch_threads")
    if isinstance(threads, int):
        return threads
    found = re.search(r"\((\d+) threads?\)", str(unit.get("device", "")))
    return int(found.group(1)) if found else None


def verify(args: argparse.Namespace) -> int:
    """--verify: train again the cheapest committed units (per mode) that match --only, --seeds
    and --modes into a scratch folder, and report old and new figures side by side."""
    table = settings(False)
    if args.only and (bad := [s for s in args.only if s not in table]):
        raise SystemExit(f"unknown setting in --only {bad}; valid: {', '.join(table)}")
    committed = load_json(COMMITTED_CACHE)
    narrowed = bool(args.only or args.seeds or args.modes)
    modes = args.modes or (MODES if narrowed else ("baseline",))
    cost = {}
    for key, unit in committed.items():
        if key.count("|") != 2 or not isinstance(unit, dict):
            continue
        setting, seed, m = key.split("|")
        if (setting not in table or (args.only and setting not in args.only)
                or (args.seeds and int(seed) not in args.seeds) or m not in modes):
            continue
        epochs = int(dict(o.split("=", 1) for o in table[setting])["optim.epochs"])
        cost[key] = float(unit.get("epoch_seconds", math.inf)) * epochs
    picked = select_cheapest(cost, lambda k: k.split("|")[2], args.verify_per_arm)
    if not picked:
        raise SystemExit(f"no unit of {COMMITTED_CACHE} matches --only/--seeds/--modes")
    scratch = verify_folder(args.out, "sla")
    started, command = now(), "python " + " ".join(sys.argv)
    print(f"[sla verify] {len(picked)} committed unit(s) into {scratch}: {', '.join(picked)}",
          flush=True)
    units: list[dict] = []
    for key in picked:
        setting, seed, m = key.split("|")
        old = committed[key]
        threads = args.threads or _unit_threads(old) or 1
        print(f"[sla verify] {key}: {threads} thread(s), about {cost[key] / 60:.1f} min of "
              "training on the machine that ran it", flush=True)
        new = train_unit(setting, table[setting], int(seed), m, threads, scratch / "runs")
        context = ", ".join(f"{k} {old[k]}" for k in ("device", "rebuilt_from") if k in old)
        units.append({"key": key, "old": old, "new": new,
                      "old_provenance": old.get("provenance"),
                      "new_provenance": new.get("provenance"), "old_context": context})
        rows = compare_units(units, VERIFY_FIGURES, VERIFY_TIMING)
        jp, mp, text = write_verification(scratch, "sla", command, started, units, rows)
    print(text)
    print(f"wrote {jp} and {mp}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="settings to run (default: all)")
    ap.add_argument("--out", default=None, help="output folder (default by mode)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--modes", nargs="*", default=None, choices=MODES,
                    help="train only these modes (default: all; rows for arms whose modes ran)")
    ap.add_argument("--report", action="store_true",
                    help="write the results from the cache without training anything new")
    ap.add_argument("--verify", action="store_true",
                    help="train again committed units of benchmarks/results/sla_cache.json into "
                         "a scratch folder (--out, default runs/verify-sla-<time>) and compare "
                         "their figures with the committed ones; default: the cheapest baseline "
                         "unit, else the cheapest per mode of those --only/--seeds/--modes match")
    ap.add_argument("--verify-per-arm", type=int, default=1, metavar="N",
                    help="--verify: the N cheapest matching units of each mode (default 1)")
    args = ap.parse_args()
    if args.verify:
        if args.quick or args.report:
            raise SystemExit("--verify re-runs committed full-mode units; drop --quick/--report")
        return verify(args)
    import torch

    if args.threads:  # the process's threads, for the speed row too (units also get them)
        torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    mode = "quick" if args.quick else "full"
    out = Path(args.out) if args.out else (
        Path("runs") / f"bench-sla-quick-{time.strftime('%Y%m%d-%H%M%S')}" if args.quick
        else Path(__file__).resolve().parents[1] / "results")
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "sla_cache.json"
    cache = load_json(cache_path)
    history = cache.setdefault("_invocations", [])
    if not args.report:  # a report fills nothing; the history names what trained units
        history.append({"command": "python " + " ".join(sys.argv), "started": started})
    # the full mode's default out is benchmarks/results (its cache is committed there); its
    # training runs (checkpoints) go under runs/, never into the repository
    results_dir = Path(__file__).resolve().parents[1] / "results"
    run_root = (Path("runs") / "bench-sla-full" if out.resolve() == results_dir.resolve()
                else out / "runs")
    chosen = {k: v for k, v in settings(args.quick).items() if not args.only or k in args.only}
    if args.only and len(chosen) != len(args.only):
        valid = ", ".join(settings(args.quick))
        raise SystemExit(f"unknown setting in --only {args.only}; valid: {valid}")
    for setting, overrides in chosen.items():
        for seed in seeds:
            for m in args.modes or MODES:
                key = f"{setting}|{seed}|{m}"
                if key in cache or args.report:
                    continue
                print(f"[sla bench] {key}", flush=True)
                unit = train_unit(setting, overrides, seed, m, args.threads, run_root)
                # reload before writing: another runner with other --modes/--seeds may share
                # this cache (units finish minutes apart, so merging here is enough)
                fresh = load_json(cache_path)
                fresh.update({k: v for k, v in cache.items() if k not in fresh})
                fresh[key] = unit
                fresh["_invocations"] = _merge_history(fresh.get("_invocations", []), history)
                cache = fresh
                history = cache["_invocations"]
                atomic_write_json(cache_path, cache)
    cache = {**load_json(cache_path), **{k: v for k, v in cache.items()
                                         if k not in load_json(cache_path)}}
    history = _merge_history(cache.get("_invocations", []), history)
    rows = []
    # the tables cover the mode's default seeds at least: a runner given --seeds 0 must not
    # replace 3-seed rows with 1-seed ones
    seeds = sorted(set(seeds) | ({0} if args.quick else {0, 1, 2}))
    for setting in settings(args.quick):
        done = {m for m in MODES if all(f"{setting}|{s}|{m}" in cache for s in seeds)}
        if "baseline" not in done:
            continue
        base_t = [cache[f"{setting}|{s}|baseline"]["epoch_seconds"] for s in seeds]
        for arm, (m, key) in ARMS.items():
            if m not in done:
                continue
            accs = [cache[f"{setting}|{s}|{m}"][key] for s in seeds]
            secs = [cache[f"{setting}|{s}|{m}"]["epoch_seconds"] for s in seeds]
            rows.append(row(setting, arm, "test_accuracy", accs))
            rows.append(row(setting, arm, "epoch_seconds", secs))
            rows.append(row(setting, arm, "epoch_seconds_vs_baseline",
                            [a / b for a, b in zip(secs, base_t)]))
    speed_threads = torch.get_num_threads()
    cost = step_cost()
    speed = "speed/resnet20x0.5-batch128-28px"
    rows.append(row(speed, "sla", "step_cost_over_M_x_baseline", [cost["ratio"]]))
    rows.append(row(speed, "baseline", "step_seconds", [cost["baseline"]]))
    rows.append(row(speed, "sla", "step_seconds", [cost["sla"]]))
    rows.append(row(speed, "baseline", "step_seconds_on_M_x_128_images",
                    [cost["baseline_m_copies"]]))
    rows.append(row(speed, "sla", "step_cost_over_baseline_on_same_images",
                    [cost["ratio_same_images"]]))
    command = "python " + " ".join(sys.argv)
    notes = ("Arms sla_si and sla_ag are one model (mode sla) evaluated with two rules; "
             "sla_sd is a model trained with the self-distillation head and evaluated with it. "
             "Model selection on a held-out validation split of training images (1k for the "
             "per-class settings, 5k for full data). Rotation (M=4), SGD 0.1 with x0.1 steps "
             "at 50% and 75% of the steps. Networks: "
             + "; ".join(f"{k}: {_net(v)}" for k, v in settings(args.quick).items()) + ". "
             "epoch_seconds come from runs that shared the 2 cores with other jobs, so their "
             "ratios are noisy; the speed row is the clean comparison (interleaved steps on one "
             f"batch, torch threads {speed_threads}). Threads per setting and mode: "
             + "; ".join(f"{k}: {v}" for k, v in _threads(cache).items()) + ".")
    notes += (" Invocations that filled the unit cache: "
              + "; ".join(f"`{h['command']}` ({h['started']})" for h in history) + ".")
    notes += " " + provenance_census(v for k, v in cache.items() if k.count("|") == 2)
    jp, mp = write_results("sla", mode, command, started, time.perf_counter() - t0, rows,
                           out if args.out or args.quick else None, notes,
                           extra={"invocations": history})
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
