"""AugSelf (quality): does it keep the class accuracy and raise the augmentation-sensitive ones?

Issue 18's claim, on tinted Fashion-MNIST (32 px RGB: a Fashion-MNIST item painted in one colour
on a background of another, at a random position and scale; ``data.generator_seed=0``): adding
AugSelf (``augself.kinds=[crop,colour]``, weight 1.0) to a self-supervised method keeps the
augmentation-invariant accuracy (the class) within about a point and raises the
augmentation-sensitive ones (item colour, background colour, position).

Setting ``tinted-fashion-mnist/<backbone>-<epochs>ep``. Full mode: CIFAR ResNet-20 (width 1, 64
features), 3 epochs over 25,000 training images (2,500 per class, drawn by the run's seed from the
55,000 left after 5,000 are held out for validation), batch 128,
SGD momentum 0.9, lr 0.06 with a cosine schedule and 5% linear warm-up, weight decay 5e-4;
projectors reduced for the 64-dim backbone (SimSiam 2 x 512 with a 128 predictor bottleneck;
MoCo v2 512 -> 128, queue 4096, key momentum 0.99). Arms, seeds 0 1 2: ``simsiam``,
``simsiam_augself``, ``moco``, ``moco_augself``; references, seed 0: ``supervised``
(method=supervised, the same recipe) and ``random_init`` (the initial weights of seed 0, never
trained: the model is built as a run builds it and its state saved as the run's selected weights;
BatchNorm keeps its initial running statistics). Quick mode (minutes): ResNet-8 width 0.5, 2,000
training images (200 per class), 1 epoch, seed 0, and also ``simclr``, ``simclr_augself``,
``byol``, ``byol_augself``. Model selection: the epoch with the best validation kNN accuracy of
the class (every arm). Each method trains with its own view recipe (SimSiam and MoCo v2: RRC
(0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grey 0.2, flip; no blur at 32 px).

Metrics (frozen features of the run's selected weights, one centre view; the library's protocols
of ``selfsup vision eval``): ``linear_class`` (invariant), ``linear_item_colour``,
``linear_background_colour``, ``linear_position`` (sensitive) -- the L-BFGS linear probe, L2 weight
chosen on the validation split among 23 values (full; quick 12) log-spaced in [1e-6, 1e5], refit
on train + val, top-1 on the test split; ``knn_class`` (weighted cosine kNN, k 20, against the
training images); ``transfer_mnist_linear`` (the linear probe on MNIST, images brought to 3
channels and 32 px, 10,000 of its training images; quick 2,000); ``fewshot_mnist_5way5shot``
(5-way 5-shot logistic regression over tasks of MNIST's test split, 15 queries per class; 1,000
tasks full, 200 quick). Every probe uses evaluation seed 0, so all arms and seeds see the same
tasks and subsets. The features of each data set are extracted once per unit and shared by its
metrics (the figures are those of ``selfsup.vision.protocols.evaluate_protocol``, which would
extract them per metric).

    .venv/bin/python benchmarks/augself/run.py --quick      # minutes: runs/bench-augself-quick-*/
    .venv/bin/python benchmarks/augself/run.py --threads 1   # full -> benchmarks/results/augself.*
    .venv/bin/python benchmarks/augself/run.py --arms moco moco_augself   # one runner's share
    .venv/bin/python benchmarks/augself/run.py --report      # tables from the cache, no training

One unit = one (setting, seed, arm): train (or go on from a killed run's last checkpoint: same run
name and config, found again in the run folder), then evaluate every metric (finished metrics are
kept in the run folder's ``augself_eval.json``, so a unit killed while evaluating keeps them).
A finished unit's figures, training diagnostics (z_std, validation kNN per epoch, losses), wall
times and provenance go into the unit cache at once: ``benchmarks/results/augself_cache.json`` in
full mode (committed; its runs go to ``runs/bench-augself-full/``), ``<out>/augself_cache.json``
otherwise. Runners with other ``--arms``/``--seeds`` (or the same command twice) may share one
cache: each merges the file from disk before it writes, and a lock file per unit
(``<runs>/<unit>.lock``, its pid) keeps two runners off the same unit.
"""

from __future__ import annotations

import copy
import functools
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from common import load_json, now, run_name, unit_key, units_of  # noqa: E402, F401
from selfsup.io import atomic_write_json  # noqa: E402

NAME = "augself"
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
TAG = "[augself bench]"

AUGSELF = ["augself.kinds=[crop,colour]", "augself.weight=1.0"]
ARM_OVERRIDES = {
    "simsiam": ["method=simsiam"],
    "simsiam_augself": ["method=simsiam", *AUGSELF],
    "moco": ["method=moco"],
    "moco_augself": ["method=moco", *AUGSELF],
    "simclr": ["method=simclr"],
    "simclr_augself": ["method=simclr", *AUGSELF],
    "byol": ["method=byol"],
    "byol_augself": ["method=byol", *AUGSELF],
    "supervised": ["method=supervised"],
    # never trained: the model a simsiam run builds (the backbone is built first, so every
    # method's backbone starts from these weights for the same seed)
    "random_init": ["method=simsiam"],
}
ALL_ARMS = tuple(ARM_OVERRIDES)
FULL_ARMS = ("simsiam", "simsiam_augself", "moco", "moco_augself", "supervised", "random_init")
QUICK_ARMS = ("simsiam", "simsiam_augself", "moco", "moco_augself", "simclr", "simclr_augself",
              "byol", "byol_augself", "supervised", "random_init")
REFERENCES = ("supervised", "random_init")  # default seeds: REFERENCE_SEEDS only
REFERENCE_SEEDS = (0,)
PAIRS = (("simsiam", "simsiam_augself"), ("moco", "moco_augself"), ("simclr", "simclr_augself"),
         ("byol", "byol_augself"))

# metric -> (protocol, dataset (None: the run's own), target)
METRICS = {
    "linear_class": ("linear", None, "class"),
    "linear_item_colour": ("linear", None, "item_colour"),
    "linear_background_colour": ("linear", None, "background_colour"),
    "linear_position": ("linear", None, "position"),
    "knn_class": ("knn", None, "class"),
    "transfer_mnist_linear": ("linear", "mnist", "class"),
    "fewshot_mnist_5way5shot": ("fewshot", "mnist", "class"),
}
INVARIANT = ("linear_class",)
SENSITIVE = ("linear_item_colour", "linear_background_colour", "linear_position")
WITHIN = 0.01  # "within about a point": |AugSelf - base| of linear_class, accuracy as a fraction

RECIPE = [
    "data.name=tinted-fashion-mnist", "data.generator_seed=0",
    "optim.optimizer=sgd", "optim.schedule=cosine", "optim.warmup=0.05", "optim.lr=0.06",
    "optim.weight_decay=5e-4", "optim.momentum=0.9", "optim.batch_size=128",
    "simsiam.proj_dim=512", "simsiam.proj_layers=2", "simsiam.pred_hidden=128",
    "moco.proj_hidden=512", "moco.proj_dim=128", "moco.queue_size=4096", "moco.momentum=0.99",
    "simclr.proj_hidden=512", "simclr.proj_dim=128",
    "byol.proj_hidden=512", "byol.proj_dim=128", "byol.pred_hidden=512", "byol.momentum=0.99",
    # model selection on the validation kNN accuracy of the class (the kNN monitor, 5,000
    # training images as the bank), the same rule for every arm: the online probe (lr 0.06 on
    # moving features) stays near chance for the first epochs here, so its validation accuracy
    # would pick an epoch at random
    "monitor.select=val_knn_acc",
    "trainer.progress=false", "trainer.log_every_n_steps=25", "trainer.eval_batch_size=1000",
]


def settings(quick: bool) -> dict[str, dict]:
    """setting -> {"overrides", "arms", "eval"}: the training recipe, the arms of the mode and
    the evaluation parameters (``max_train``: at most this many training images in the probes
    of that data set, None: all)."""
    if quick:
        return {"tinted-fashion-mnist/resnet8-1ep": {
            "overrides": RECIPE + ["model.backbone=resnet8", "model.width=0.5",
                                   "data.per_class=200", "data.val_size=1000", "optim.epochs=1",
                                   "trainer.log_every_n_steps=5"],
            "arms": QUICK_ARMS,
            "eval": {"max_train": {"tinted-fashion-mnist": None, "mnist": 2000}, "k": 20,
                     "n_tasks": 200, "n_grid": 12, "seed": 0}}}
    return {"tinted-fashion-mnist/resnet20-3ep": {
        "overrides": RECIPE + ["model.backbone=resnet20", "model.width=1.0",
                               "data.val_size=5000", "data.per_class=2500", "optim.epochs=3"],
        "arms": FULL_ARMS,
        "eval": {"max_train": {"tinted-fashion-mnist": None, "mnist": 10000}, "k": 20,
                 "n_tasks": 1000, "n_grid": 23, "seed": 0}}}


# unit_overrides(setting, spec, arm, seed, threads, run_root), arm_seeds(arm, seeds,
# reference_seeds, quick), plan(chosen, arms, seeds, reference_seeds, quick): common's
unit_overrides, arm_seeds, plan = common.unit_planners(ARM_OVERRIDES, REFERENCES, REFERENCE_SEEDS)


# ------------------------------------------------------------------------------ run folders
previous_run = common.previous_selected_run  # the unit's run left by a killed benchmark


def train_diagnostics(run_dir: Path, res: dict, cfg: dict) -> dict:
    """What the training logged that tells a healthy run from a broken one: losses (first and
    last), SimSiam's z_std (collapse: towards 0; healthy about 1/sqrt(proj_dim)), the validation
    kNN and online-probe accuracy per epoch, non-finite losses."""
    rows = common.log_rows(run_dir)
    out: dict = {k: res[k] for k in ("steps", "epochs", "best_val_acc", "best_epoch",
                                     "selected_by", "test_acc", "test_knn_acc", "epoch_seconds")
                 if k in res}
    out.update(common.loss_summary(rows, ("train_ssl_loss", "train_ce", "train_loss")))
    aug = [r["train_augself_total"] for r in rows if "train_augself_total" in r]
    if aug:
        out.update(augself_loss_first=aug[0], augself_loss_last=aug[-1])
    z = [r["train_z_std"] for r in rows if "train_z_std" in r]
    if z:
        d = int(cfg.get("simsiam", {}).get("proj_dim", 1))
        out.update(z_std_first=z[0], z_std_last=z[-1], z_std_min=min(z),
                   z_std_healthy=round(1 / math.sqrt(d), 6))
    for key, name in (("val_knn_acc", "val_knn_per_epoch"), ("val_acc", "val_acc_per_epoch")):
        vals = [round(r[key], 4) for r in rows if key in r]
        if vals:
            out[name] = vals
    return out


def collapsed(diag: dict) -> bool:
    """SimSiam's projections collapsed: their per-dimension std (of l2-normalised z) fell below
    a fifth of the healthy 1/sqrt(d) by the end."""
    return "z_std_last" in diag and diag["z_std_last"] < 0.2 * diag["z_std_healthy"]


# ------------------------------------------------------------------------------ evaluation
def _keep(labels_train, max_train: int | None, seed: int):
    """The training rows a probe uses: those of ``evaluate_protocol`` (the library's rule)."""
    from selfsup.vision.protocols import probe_rows

    return probe_rows(labels_train >= 0, max_train, seed)

def eval_params(metric: str, ev: dict) -> dict:
    """The protocol arguments of one metric (stored beside its figure; a stored figure is
    reused only for the same arguments)."""
    protocol, dataset, target = METRICS[metric]
    p = {"protocol": protocol, "dataset": dataset, "target": target, "seed": ev["seed"]}
    if protocol == "knn":
        p["k"] = ev["k"]
    if protocol == "fewshot":
        p.update(n_way=5, k_shot=5, n_query=15, n_tasks=ev["n_tasks"])
    else:
        p["max_train"] = ev["max_train"].get(dataset or "tinted-fashion-mnist")
    if protocol == "linear":
        p["n_grid"] = ev.get("n_grid", 45)
    return p


def evaluate_unit(run_dir: Path, ev: dict, metrics: tuple[str, ...] = tuple(METRICS)) -> dict:
    """Every metric of a trained run: ``{metric: {"value", "seconds", params..., details}}``.

    The steps of ``evaluate_protocol`` (selected weights, images adapted to the run's channels
    and size, normalised with the run's statistics, the same probes and arguments), with each
    data set loaded and its features extracted once for all its metrics. Finished metrics are
    written to ``RUN/augself_eval.json`` one by one and reused when the unit is evaluated again.
    """
    import dataclasses

    import torch

    from selfsup.vision.evaluate import (
        extract_features,
        few_shot_eval,
        knn_evaluate,
        linear_probe,
    )
    from selfsup.vision.protocols import _labels, adapt_images
    from selfsup.vision.train import _prepare, load_selected

    store = run_dir / "augself_eval.json"
    done, todo = common.pending_metrics(store, metrics, lambda m: eval_params(m, ev))
    if not todo:
        return {m: done[m] for m in metrics}
    _, cfg, model, own = load_selected(run_dir)
    channels, size = int(own.train_x.shape[1]), int(own.train_x.shape[-1])
    mean, std = model._mean.flatten().tolist(), model._std.flatten().tolist()
    by_data: dict[str | None, list[str]] = {}
    for m in todo:
        by_data.setdefault(METRICS[m][1], []).append(m)
    for dataset, names in by_data.items():
        t_data = time.perf_counter()
        if dataset is None:
            data = own
        else:
            other = dataclasses.replace(cfg, data=dataclasses.replace(
                cfg.data, name=dataset, per_class=None, imbalance_ratio=1.0, unlabeled=False,
                path=None if dataset != cfg.data.name else cfg.data.path))
            data = _prepare(other)
        cache: dict = {}

        def feats(split: str, rows=None, data=data, cache=cache):
            """Features of a split (train: of the rows asked for), each image extracted once."""
            x = {"train": data.train_x, "val": data.val_x, "test": data.test_x}[split]
            rows = torch.ones(len(x), dtype=torch.bool) if rows is None else rows
            f, have = cache.get(split, (None, torch.zeros(len(x), dtype=torch.bool)))
            need = rows & ~have
            if bool(need.any()):
                new = extract_features(model.features, adapt_images(x[need], channels, size),
                                       mean, std, batch_size=512)
                if f is None:
                    f = torch.zeros(len(x), new.shape[1], dtype=new.dtype)
                f[need] = new
                cache[split] = (f, have | need)
            return f[rows]

        load_s = time.perf_counter() - t_data
        for m in names:
            t0 = time.perf_counter()
            params = eval_params(m, ev)
            protocol, _, target = METRICS[m]
            labels = _labels(data, target)
            out: dict = {"params": params}
            if protocol == "fewshot":
                res = few_shot_eval(feats("test"), labels["test"], n_way=params["n_way"],
                                    k_shot=params["k_shot"], n_query=params["n_query"],
                                    n_tasks=params["n_tasks"], seed=params["seed"])
                out.update(value=round(res["mean"], 6), ci95=round(res["ci95"], 6),
                           n_test=len(labels["test"]))
            else:
                keep = _keep(labels["train"], params["max_train"], params["seed"])
                tr_f, tr_y = feats("train", keep), labels["train"][keep]
                if protocol == "knn":
                    res = knn_evaluate(tr_f, tr_y, feats("test"), labels["test"], k=params["k"])
                    out.update(value=round(res["top1"], 6))
                else:
                    res = linear_probe(tr_f, tr_y, feats("val"), labels["val"], feats("test"),
                                       labels["test"], seed=params["seed"],
                                       n_grid=params["n_grid"])
                    out.update(value=round(res["top1"], 6), l2=res["l2"],
                               refit_converged=bool(res["refit_converged"]))
                out.update(n_train=int(keep.sum()), n_test=len(labels["test"]))
            out["seconds"] = round(time.perf_counter() - t0 + load_s, 2)
            load_s = 0.0  # the data set's loading is charged to its first metric
            done = load_json(store)
            done[m] = out
            atomic_write_json(store, done)
    return {m: done[m] for m in metrics}


# ------------------------------------------------------------------------------ one unit
def run_unit(setting: str, spec: dict, arm: str, seed: int, threads: int | None,
             run_root: Path) -> dict:
    """Train (or resume, or find finished) and evaluate one unit; its cache entry."""
    overrides = unit_overrides(setting, spec, arm, seed, threads, run_root)
    run, res, cfg, resumed, train_s = common.train_unit(overrides, run_root,
                                                        arm == "random_init", TAG, threads)
    t1 = time.perf_counter()
    figures = evaluate_unit(Path(run.path), spec["eval"])
    eval_s = time.perf_counter() - t1
    unit: dict = {m: figures[m]["value"] for m in METRICS}
    unit["eval"] = figures
    unit["train"] = train_diagnostics(Path(run.path), res, cfg)
    return common.finish_unit(unit, run.path, resumed, train_s, eval_s)


# ------------------------------------------------------------------------------ cache
merged = common.merge_cache  # the cache on disk with this runner's entries added
_claim = common.claim_unit  # a unit's lock


# ------------------------------------------------------------------------------ report
def build_rows(cache: dict, setting: str, arms: list[str]) -> list[dict]:
    return common.unit_rows(cache, setting, arms, METRICS)


def difference(cache: dict, setting: str, base: str, aug: str, metric: str) -> dict | None:
    """AugSelf minus base over the seeds both arms finished (paired by seed): mean, sample std
    of the per-seed differences, the seed std of each arm, ``spread`` (the largest of the
    three) and the per-seed differences."""
    return common.paired_difference(cache, setting, base, aug, metric, label="augself")


def claim(cache: dict, setting: str, base: str, aug: str) -> dict | None:
    """Issue 18's claim for one base method, computed from the figures: linear_class within
    ``WITHIN`` (one point) of the base, and every sensitive metric risen by more than its seed
    spread (needs 2+ paired seeds: with one there is no spread and that part is undetermined)."""
    inv = difference(cache, setting, base, aug, "linear_class")
    if inv is None:
        return None
    sens = {m: difference(cache, setting, base, aug, m) for m in SENSITIVE}
    n = len(inv["seeds"])
    within = abs(inv["mean"]) <= WITHIN + 1e-9  # a difference of exactly one point counts
    rose = {m: (None if d is None or n < 2 else d["mean"] > 0 and d["mean"] > d["spread"])
            for m, d in sens.items()}
    if n < 2 or any(v is None for v in rose.values()):
        verdict = "undetermined (needs 2+ seeds of both arms for a spread)"
    elif within and all(rose.values()):
        verdict = "holds"
    elif within and any(rose.values()):
        verdict = "holds in part (class kept, some sensitive metrics rose)"
    elif within:
        verdict = "does not hold (class kept, no sensitive metric rose beyond the spread)"
    else:
        verdict = "does not hold (class accuracy moved by more than a point)"
    return {"setting": setting, "base": base, "augself": aug, "seeds": inv["seeds"],
            "linear_class_diff": inv["mean"], "linear_class_within_1_point": within,
            "sensitive_rose_beyond_spread": rose,
            "sensitive_diff": {m: (d["mean"] if d else None) for m, d in sens.items()},
            "sensitive_spread": {m: (d["spread"] if d else None) for m, d in sens.items()},
            "verdict": verdict}


SHORT = {"linear_class": "class", "linear_item_colour": "item colour",
         "linear_background_colour": "bg colour", "linear_position": "position",
         "knn_class": "kNN class", "transfer_mnist_linear": "MNIST linear",
         "fewshot_mnist_5way5shot": "MNIST 5w5s"}


def arms_table(cache: dict, setting: str, arms: list[str]) -> str:
    """Arms x metrics, mean ± sample std over the seeds (accuracy in %), n where not 3."""
    return common.arms_table(cache, setting, arms, METRICS, SHORT)


def diff_table(cache: dict, setting: str, arms: list[str]) -> str:
    return common.diff_table(cache, setting, arms, PAIRS, METRICS, "AugSelf - base")


def claim_line(c: dict) -> str:
    sens = "; ".join(
        f"{m} {c['sensitive_diff'][m] * 100:+.1f}"
        + ("" if c["sensitive_rose_beyond_spread"][m] is None else
           f" ({'rose beyond' if c['sensitive_rose_beyond_spread'][m] else 'not beyond'} the "
           f"spread {c['sensitive_spread'][m] * 100:.1f})")
        for m in SENSITIVE if c["sensitive_diff"][m] is not None)
    return (f"- **{c['base']}** ({len(c['seeds'])} paired seed(s)): linear_class "
            f"{c['linear_class_diff'] * 100:+.1f} points with AugSelf, "
            f"{'within' if c['linear_class_within_1_point'] else 'NOT within'} 1 point; "
            f"sensitive: {sens}. Claim: **{c['verdict']}**.")


def diagnostics_table(cache: dict, setting: str, arms: list[str]) -> str:
    lines = ["| unit | steps | loss first -> last | z_std last (healthy) | val kNN per epoch | "
             "train min | eval min | flags |", "|---|---|---|---|---|---|---|---|"]
    for arm, seed, u, d, flags in common.diagnostic_units(cache, setting, arms, METRICS,
                                                          {"COLLAPSED": collapsed}):
        loss = (f"{d['loss_first']:.3f} -> {d['loss_last']:.3f}" if "loss_last" in d else "-")
        z = (f"{d['z_std_last']:.4f} ({d['z_std_healthy']:.4f})" if "z_std_last" in d else "-")
        knn = ", ".join(f"{v:.3f}" for v in d.get("val_knn_per_epoch", [])) or "-"
        lines.append(f"| {arm} s{seed} | {d.get('steps', '-')} | {loss} | {z} | {knn} | "
                     f"{u.get('train_seconds', 0) / 60:.1f} | {u.get('eval_seconds', 0) / 60:.1f}"
                     f" | {', '.join(flags) or '-'} |")
    return "\n".join(lines)


def make_notes(cache: dict, setting: str, spec: dict, arms: list[str], missing: list[str],
               data_meta: dict | None, quick: bool) -> tuple[str, list[dict], list[dict]]:
    ov = dict(o.split("=", 1) for o in spec["overrides"])
    ev = spec["eval"]
    diffs = [d for base, aug in PAIRS if base in arms and aug in arms
             for m in METRICS if (d := difference(cache, setting, base, aug, m))]
    claims = [c for base, aug in PAIRS if base in arms and aug in arms
              if (c := claim(cache, setting, base, aug))]
    lines = [
        f"Setting `{setting}`: tinted Fashion-MNIST (32 px RGB, generator seed "
        f"{ov['data.generator_seed']}; generator parameters in the JSON's `data`), "
        f"{ov['model.backbone']} width {ov['model.width']}, {ov['optim.epochs']} epoch(s), "
        + (f"{ov['data.per_class']} training images per class, " if "data.per_class" in ov
           else "all 55,000 training images, ")
        + f"{ov['data.val_size']} held out for validation; batch {ov['optim.batch_size']}, SGD "
        f"lr {ov['optim.lr']} (cosine, warm-up {ov['optim.warmup']}), momentum "
        f"{ov['optim.momentum']}, weight decay {ov['optim.weight_decay']}; SimSiam projector "
        f"{ov['simsiam.proj_layers']} x {ov['simsiam.proj_dim']}, predictor bottleneck "
        f"{ov['simsiam.pred_hidden']}; MoCo v2 {ov['moco.proj_hidden']} -> {ov['moco.proj_dim']},"
        f" queue {ov['moco.queue_size']}, momentum {ov['moco.momentum']}; SimCLR "
        f"{ov['simclr.proj_hidden']} -> {ov['simclr.proj_dim']}; BYOL {ov['byol.proj_hidden']} -> "
        f"{ov['byol.proj_dim']}, predictor {ov['byol.pred_hidden']}, base momentum "
        f"{ov['byol.momentum']}. AugSelf: kinds crop + colour, weight 1.0. Model selection "
        "(best.pt): the validation kNN accuracy of the class, every arm. "
        "`random_init`: the initial weights of the seed (built, never trained; BatchNorm with "
        "its initial running statistics).",
        "",
        "Metrics in % (tables) / fractions (rows): linear probes (L-BFGS, L2 chosen on "
        "validation, refit on train + val) of the class (invariant) and of item colour, "
        "background colour (8 hue bins each) and position (3 x 3) (sensitive); kNN (k "
        f"{ev['k']}) of the class; linear probe on MNIST (transfer); 5-way 5-shot on MNIST's "
        f"test split ({ev['n_tasks']} tasks, 15 queries per class). Training images in the "
        "probes: "
        + ", ".join(f"{k} {'all' if v is None else f'at most {v:,}'}"
                    for k, v in ev["max_train"].items())
        + f"; evaluation seed {ev['seed']} for every unit.",
        "",
        "Arms x metrics (mean ± sample std over the seeds, %):", "",
        arms_table(cache, setting, arms), ""]
    dt = diff_table(cache, setting, arms)
    if dt:
        lines += ["AugSelf minus its base method, paired by seed (points; ± the std of the "
                  "per-seed differences; spread = the largest of that and the two arms' seed "
                  "stds):", "", dt, ""]
    if claims:
        lines += [f"Issue 18's claim per base method (linear_class within {WITHIN * 100:.0f} "
                  "point of the base; each sensitive metric's mean difference above its "
                  "spread), computed from the figures above:", ""]
        lines += [claim_line(c) for c in claims] + [""]
    lines += ["Training diagnostics (SimSiam collapse: z_std of the l2-normalised projections "
              "towards 0; healthy about 1/sqrt(d)):", "",
              diagnostics_table(cache, setting, arms), ""]
    lines += common.notes_tail(cache, setting, missing, quick)
    return "\n".join(lines), diffs, claims


def data_meta(spec: dict) -> dict:
    """The tinted generator's parameters of the setting (from the library; no images kept)."""
    from selfsup.vision.tinted import tinted_fashion_mnist

    out = common.generator_meta(spec)
    seed = out["generator_seed"]
    try:
        out["train"] = copy.deepcopy(tinted_fashion_mnist("train", seed=seed, n=1).meta)
        out["test"] = copy.deepcopy(tinted_fashion_mnist("test", seed=seed, n=1).meta)
        for split in ("train", "test"):  # the generator's parameters; n is the whole split's
            out[split].pop("n", None)
            out[split]["source"].pop("first_n", None)
    except Exception as exc:  # noqa: BLE001 (a report must not fail on a missing data cache)
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def share_tinted_sets() -> None:
    """Make each tinted split once in this process: a unit's training and its evaluation (and
    the next units) load the same images (they depend on the generator's seed and parameters
    only), about 6 s a load. A memo around ``selfsup.vision.tinted.tinted_fashion_mnist``,
    which the data loader looks up at each call."""
    from selfsup.vision import tinted

    if not getattr(tinted.tinted_fashion_mnist, "augself_bench_memo", False):
        memo = functools.lru_cache(maxsize=4)(tinted.tinted_fashion_mnist)
        memo.augself_bench_memo = True
        tinted.tinted_fashion_mnist = memo


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    return common.unit_benchmark_main(
        SimpleNamespace(**globals()), argv, "seeds of the method arms (default 0 1 2; quick 0)",
        "seeds of supervised and random_init (default 0)", tuple(METRICS), make_notes,
        before_run=share_tinted_sets)


if __name__ == "__main__":
    sys.exit(main())
