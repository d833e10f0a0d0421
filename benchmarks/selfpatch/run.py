"""SelfPatch (quality): does it raise the dense metric over DINO without hurting the image one?

Issue 19's claim, on ``fmnist-mosaic`` (32 px grey 2 x 2 mosaics of Fashion-MNIST items with
per-pixel class maps, made by ``selfsup.vision.mosaic.make_mosaic`` from
``data.generator_seed=0``; image label: the class of the top-left item): adding SelfPatch's
patch loss (Yun et al., CVPR 2022) to DINO (Caron et al., ICCV 2021) raises the dense metric
(mIoU of a linear segmentation probe on the frozen patch tokens) and keeps the image-level one
(the linear probe of the class) within about a point.

Setting ``fmnist-mosaic/<vit>-<epochs>ep``. Full mode: ``vit_pico`` (embed 96, depth 4, 3 heads,
4 px patches: 8 x 8 = 64 tokens) WITHOUT a CLS token for every arm (SelfPatch needs none, and
the comparison must be like for like: DINO accepts ``model.cls_token=false`` and its image
feature, the one its DINO head and the probes see, is then the mean of the normed patch tokens;
SelfPatch's DINO head sees its aggregation head's token, while its probed feature is the same
mean of the patch tokens), 4 epochs over all 55,000 training mosaics (5,000 held out for
validation), batch 128 (1,716 steps), AdamW lr 5e-4, cosine with 10% warm-up, weight decay 0.04
(DINO/SelfPatch: cosine to 0.4). DINO and SelfPatch as in ``configs/selfpatch/*_cpu.yaml``:
multi-crop 2 x 32 px (scale 0.25-1) + 4 x 16 px (0.05-0.25), heads out 2048 / hidden 256 /
bottleneck 128 with BatchNorm in the head's MLP (``head_bn``: without it DINO's loss stays near
log K at this scale, in ours and in lightly's DINO alike; benchmarks/results/dino_peer_check.md,
dino_head_bn.md), teacher momentum 0.996 -> 1, tau_t 0.04, tau_s 0.1, centre momentum 0.9, last
layer frozen for the first 2% of the steps, per-parameter clipping 3.0; SelfPatch: k = 4 of the
8 neighbours, border rule ``valid``, patch head out 512, 2 class-attention blocks, weight 0.1.
Arms, seeds 0 1 2: ``dino``, ``dino_selfpatch`` (method ``selfpatch``). References, seed 0:
``mae`` (mask 0.75, decoder 64 wide x 2 blocks, 4 heads, normalised pixel targets; its paper
optimiser: lr 3e-4, betas (0.9, 0.95), weight decay 0.05, 5% warm-up), ``rotnet`` (four
rotations of every image, linear head; the shared AdamW recipe: the ResNet config's SGD 0.1 is a
ResNet recipe) and ``random_init`` (the network a ``dino`` run of the seed builds, never
trained: its state saved as the run's selected weights). All arms: the same ViT, epochs, batch
and image size. Model selection (best.pt): the epoch with the best validation kNN accuracy of
the image label (the kNN monitor, 5,000 training images as the bank), every arm.

Metrics (the library's protocols of ``selfsup vision eval`` on the selected weights):

* ``dense_miou``, ``dense_pixel_accuracy``: ``--protocol dense`` (a linear L-BFGS probe on
  20,000 training patches of the frozen patch-token maps, L2 weight chosen on 5,000 validation
  patches among ``n_grid`` values, logits upsampled to the pixels; mIoU over the 11 classes,
  background included, over all 10,000 test mosaics);
* ``image_linear``: the L-BFGS linear probe of the class on single-item Fashion-MNIST images
  (``--dataset fashion-mnist``: brought to the run's 32 px and 1 channel, normalised with the
  run's statistics; all 55,000 training images, L2 on the 5,000 validation ones among
  ``n_grid`` values, refit on train + val, top-1 on the 10,000 test images);
* ``knn_image``: weighted cosine kNN (k 20) of the class, Fashion-MNIST test images against its
  training images, the same way;
* ``neighbour_precision``: the share of the neighbours the TEACHER selects (SelfPatch's rule: the
  top k = 4 of the 8 neighbours of the 3x3 window by cosine similarity of the patch tokens,
  border ``valid``) that carry the patch's own class, on the first 2,000 test mosaics, with the
  weights at the end of training (``last.ckpt``; ``random_init``: its initial weights). Patch
  class = the majority pixel class of the patch (``patch_labels`` of the dense protocol).
  **Background patches are excluded** as centres (their neighbours are mostly background, so
  they would inflate the figure without saying anything about objects); for an item patch a
  background neighbour counts as a miss. ``neighbour_precision_with_background`` counts every
  patch; ``neighbour_precision_chance`` is the same share over all valid neighbours (what a
  selection that ignores the tokens gets on average). Computed for every arm with the same
  rule: DINO's and SelfPatch's teacher backbone, the other arms' backbone (no teacher).

The image probes use evaluation seed 0 for every unit. Each data set's features are extracted
once per unit and shared by its metrics (the figures are those of
``selfsup.vision.protocols.evaluate_protocol``, which would extract them per metric).

Sizing (measured 2026-12-06 on this machine's 2 cores, both busy with other benchmarks (load
3.5-5), one torch thread, ``nice -n 5``, batch 128, 32 px, the CPU config's multi-crop, median of
5 steps after one): vit_pico dino 2.12 s/step, selfpatch 3.82 s, mae 0.47 s, rotnet 2.26 s;
vit_nano (embed 128, depth 6) dino 4.37 s, selfpatch 6.63 s (too slow for 3 seeds). A frozen
vit_pico forward: about 2,600 images/s. The full evaluation of one unit (measured on a quick
unit with the full evaluation parameters): 9 min (dense 1.7 min, image linear probe 6.8 min --
L-BFGS over 55,000 x 96 features, 23 L2 values --, image kNN and neighbours a few seconds).
Full setting: vit_pico, 4 epochs x 429 steps = 1,716 steps at batch 128: training about 109 min
per selfpatch unit, 61 per dino unit, 14 mae, 65 rotnet, plus about 10 min of validation kNN,
test and evaluation per unit (random_init: evaluation only); about 11.3 core-hours in all, i.e.
84 core-minutes per trained unit. Two single-thread runners sharing the cache:

    .venv/bin/python benchmarks/selfpatch/run.py --arms dino_selfpatch                  # ~6.0 h
    .venv/bin/python benchmarks/selfpatch/run.py --arms dino mae rotnet random_init     # ~5.4 h

Quick mode (minutes): the same recipe at vit_pico, 300 training images (30 per class), 500 for
validation, 1 epoch of batch 64 (4 steps), smaller heads, seed 0, every arm; the probes on
fewer images (Fashion-MNIST: 2,000 training and 2,000 test images; dense: 2,000 training
patches, 500 test mosaics; neighbours: 500 test mosaics).

    .venv/bin/python benchmarks/selfpatch/run.py --quick    # runs/bench-selfpatch-quick-*/
    .venv/bin/python benchmarks/selfpatch/run.py            # full: benchmarks/results/selfpatch.*
    .venv/bin/python benchmarks/selfpatch/run.py --report   # tables from the cache, no training

One unit = one (setting, seed, arm): train (or go on from a killed run's last checkpoint: same
run name and config, found again in the run folder), then evaluate every metric (finished
metrics are kept in the run folder's ``selfpatch_eval.json``, so a unit killed while evaluating
keeps them). A finished unit's figures, training diagnostics, wall times and provenance go into
the unit cache at once: ``benchmarks/results/selfpatch_cache.json`` in full mode (committed; its
runs go to ``runs/bench-selfpatch-full/``), ``<out>/selfpatch_cache.json`` otherwise. Runners
with other ``--arms``/``--seeds`` may share one cache: each merges the file from disk before it
writes, and a lock file per unit (``<runs>/<unit>.lock``, its pid) keeps two runners off the
same unit. The mosaic generator's parameters go into the results' ``data``.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common  # noqa: E402
from common import load_json, now, run_name, unit_key, units_of  # noqa: E402, F401
from selfsup.io import atomic_write_json  # noqa: E402

NAME = "selfpatch"
REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
TAG = "[selfpatch bench]"

MAE_RECIPE = ["mae.mask_ratio=0.75", "mae.decoder_dim=64", "mae.decoder_depth=2",
              "mae.decoder_heads=4", "mae.norm_pix_loss=true", "mae.crop_scale=[0.2,1.0]",
              "optim.lr=3e-4", "optim.betas=[0.9,0.95]", "optim.weight_decay=0.05",
              "optim.warmup=0.05"]
ARM_OVERRIDES = {
    "dino": ["method=dino"],
    "dino_selfpatch": ["method=selfpatch"],
    "mae": ["method=mae", *MAE_RECIPE],
    "rotnet": ["method=rotnet", "rotnet.head=linear"],
    # never trained: the model a dino run builds (the backbone is built first, so every
    # method's backbone starts from these weights for the same seed)
    "random_init": ["method=dino"],
}
ALL_ARMS = tuple(ARM_OVERRIDES)
FULL_ARMS = ("dino", "dino_selfpatch", "mae", "rotnet", "random_init")
QUICK_ARMS = FULL_ARMS
REFERENCES = ("mae", "rotnet", "random_init")  # default seeds: REFERENCE_SEEDS only
REFERENCE_SEEDS = (0,)
PAIRS = (("dino", "dino_selfpatch"),)

# metric -> (protocol, dataset (None: the run's own), target)
METRICS = {
    "dense_miou": ("dense", None, "mask"),
    "dense_pixel_accuracy": ("dense", None, "mask"),
    "image_linear": ("linear", "fashion-mnist", "class"),
    "knn_image": ("knn", "fashion-mnist", "class"),
    "neighbour_precision": ("neighbours", None, "patch_class"),
}
# further figures of the neighbour evaluation, kept beside the metrics (rows too)
EXTRA = ("neighbour_precision_with_background", "neighbour_precision_chance")
DENSE = "dense_miou"  # the claim's dense metric
IMAGE = "image_linear"  # the claim's image-level metric
WITHIN = 0.01  # "without hurting": image_linear at most a point below DINO (fraction)

# DINO's and SelfPatch's shared settings (configs/selfpatch/fmnist_mosaic_*_cpu.yaml)
DINO_RECIPE = {
    "out_dim": "2048", "hidden": "256", "bottleneck": "128", "norm_last_layer": "true",
    "head_bn": "true",
    "momentum_teacher": "0.996", "teacher_temp": "0.04", "warmup_teacher_temp": "0.04",
    "student_temp": "0.1", "center_momentum": "0.9", "weight_decay_end": "0.4",
    "freeze_last_layer": "0.02", "clip_grad": "3.0", "global_size": "32", "local_size": "16",
    "n_local": "4", "global_scale": "[0.25,1.0]", "local_scale": "[0.05,0.25]",
}
SELFPATCH_RECIPE = {"k": "4", "weight": "0.1", "patch_out_dim": "512", "agg_depth": "2",
                    "border": "valid"}

RECIPE = [
    "data.name=fmnist-mosaic", "data.generator_seed=0",
    "model.patch_size=4", "model.cls_token=false",
    "optim.optimizer=adamw", "optim.schedule=cosine", "optim.lr=5e-4", "optim.warmup=0.1",
    "optim.weight_decay=0.04", "optim.batch_size=128",
    *[f"dino.{k}={v}" for k, v in DINO_RECIPE.items()],
    *[f"selfpatch.{k}={v}" for k, v in {**DINO_RECIPE, **SELFPATCH_RECIPE}.items()],
    # model selection on the validation kNN accuracy of the image label, every arm
    "monitor.knn=true", "monitor.select=val_knn_acc",
    "trainer.progress=false", "trainer.log_every_n_steps=20", "trainer.eval_batch_size=1000",
]


def settings(quick: bool) -> dict[str, dict]:
    """setting -> {"overrides", "arms", "eval"}: the training recipe, the arms of the mode and
    the evaluation parameters."""
    if quick:
        small = ["out_dim=256", "hidden=128", "bottleneck=64"]
        return {"fmnist-mosaic/vit_pico-1ep": {
            "overrides": RECIPE + ["model.backbone=vit_pico", "data.per_class=30",
                                   "data.val_size=500", "optim.epochs=1",
                                   "optim.batch_size=64", "trainer.log_every_n_steps=1",
                                   *[f"dino.{s}" for s in small],
                                   *[f"selfpatch.{s}" for s in small],
                                   "selfpatch.patch_out_dim=128"],
            "arms": QUICK_ARMS,
            "eval": {"seed": 0, "k": 20, "n_grid": 12,
                     "max_train": {"fashion-mnist": 2000}, "max_test": 2000,
                     "dense_max_train": 2000, "dense_max_test": 500, "neighbour_test": 500}}}
    return {"fmnist-mosaic/vit_pico-4ep": {
        "overrides": RECIPE + ["model.backbone=vit_pico", "data.val_size=5000",
                               "optim.epochs=4"],
        "arms": FULL_ARMS,
        "eval": {"seed": 0, "k": 20, "n_grid": 23,
                 "max_train": {"fashion-mnist": None}, "max_test": None,
                 "dense_max_train": 20000, "dense_max_test": None, "neighbour_test": 2000}}}


# unit_overrides(setting, spec, arm, seed, threads, run_root), arm_seeds(arm, seeds,
# reference_seeds, quick), plan(chosen, arms, seeds, reference_seeds, quick): common's
unit_overrides, arm_seeds, plan = common.unit_planners(ARM_OVERRIDES, REFERENCES, REFERENCE_SEEDS)


# ------------------------------------------------------------------------------ run folders
previous_run = common.previous_selected_run  # the unit's run left by a killed benchmark


def train_diagnostics(run_dir: Path, res: dict) -> dict:
    """What the training logged that tells a healthy run from a broken one: the loss (first,
    last, non-finite ones), DINO's image and SelfPatch's patch loss (first, last), the
    validation kNN accuracy per epoch."""
    rows = common.log_rows(run_dir)
    out: dict = {k: res[k] for k in ("steps", "epochs", "best_val_acc", "best_epoch",
                                     "selected_by", "test_knn_acc", "epoch_seconds")
                 if k in res}
    out.update(common.loss_summary(rows, ("train_ssl_loss", "train_rot_loss", "train_loss")))
    for key, name in (("train_dino_loss", "dino_loss"), ("train_patch_loss", "patch_loss")):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[f"{name}_first"], out[f"{name}_last"] = vals[0], vals[-1]
    vals = [round(r["val_knn_acc"], 4) for r in rows if "val_knn_acc" in r]
    if vals:
        out["val_knn_per_epoch"] = vals
    return out


# ------------------------------------------------------------------------------ evaluation
def eval_params(metric: str, ev: dict) -> dict:
    """The protocol arguments of one metric (stored beside its figure; a stored figure is
    reused only for the same arguments)."""
    protocol, dataset, target = METRICS[metric]
    p: dict = {"protocol": protocol, "dataset": dataset, "target": target, "seed": ev["seed"]}
    if protocol == "dense":
        p.update(max_train=ev["dense_max_train"], max_test=ev["dense_max_test"],
                 n_grid=ev["n_grid"])
    elif protocol == "neighbours":
        p.update(k=int(SELFPATCH_RECIPE["k"]), border=SELFPATCH_RECIPE["border"],
                 n_test=ev["neighbour_test"], background="excluded as centres",
                 weights="end of training")
    else:
        p.update(max_train=ev["max_train"].get(dataset), max_test=ev["max_test"])
        if protocol == "knn":
            p["k"] = ev["k"]
        else:
            p["n_grid"] = ev["n_grid"]
    return p


def end_of_training(model, run_dir: Path) -> str:
    """Load the run's weights at the end of training (``last.ckpt``, saved after the last
    epoch's validation) into ``model``; returns which weights it holds."""
    from selfsup.io import safe_torch_load

    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return "best.pt (no last.ckpt: the untrained initial weights)"
    state = safe_torch_load(last)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items()
                           if k.startswith("model.")})
    model.eval()
    return "last.ckpt (end of training)"


def neighbour_counts(tokens_fn, images, masks, normalise, patch: int, k: int, border: str,
                     batch_size: int = 500) -> dict:
    """Counts of the neighbour selection on mosaics: for each patch the top-``k`` of its 8
    neighbours by cosine similarity of ``tokens_fn(normalise(x)) -> (B, N, D)``
    (:func:`selfsup.vision.selfpatch.select_neighbours`), scored against the majority pixel
    class of each patch (:func:`selfsup.vision.evaluate.dense.patch_labels`) with
    :func:`selfsup.vision.selfpatch.neighbour_precision`. Returns the precisions over item
    patches (background centres excluded), over every patch, and the chance share (all valid
    neighbours of the item patches), with their neighbour counts."""
    import torch

    from selfsup.vision.evaluate.dense import N_MOSAIC_CLASSES, patch_labels
    from selfsup.vision.selfpatch import neighbour_index, neighbour_precision, select_neighbours

    sums = {"items": [0.0, 0], "all": [0.0, 0], "chance": [0.0, 0]}
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            x = normalise(images[s : s + batch_size])
            tok = tokens_fn(x)
            b, n, _ = tok.shape
            h, w = x.shape[-2] // patch, x.shape[-1] // patch
            idx, ok = select_neighbours(tok, h, w, k, border)
            lab = patch_labels(masks[s : s + batch_size], (h, w), N_MOSAIC_CLASSES)
            lab = lab.reshape(b, n).to(idx.device)
            item = (lab > 0).unsqueeze(-1)
            all8, ok8 = neighbour_index(h, w, border, idx.device)
            all8, ok8 = all8.expand(b, n, 8), ok8.expand(b, n, 8)
            for name, (sel, valid) in {"items": (idx, ok & item), "all": (idx, ok),
                                       "chance": (all8, ok8 & item)}.items():
                count = int(valid.sum())
                if count:
                    sums[name][0] += neighbour_precision(sel, valid, lab) * count
                    sums[name][1] += count
    return {name: (v / c if c else float("nan"), c) for name, (v, c) in sums.items()}


def evaluate_unit(run_dir: Path, ev: dict, metrics: tuple[str, ...] = tuple(METRICS)) -> dict:
    """Every metric of a trained run: ``{metric: {"value", "seconds", "params", details}}``.

    Dense: ``evaluate_protocol(RUN, "dense", ...)``. Image level: the steps of
    ``evaluate_protocol`` (selected weights, Fashion-MNIST brought to the run's channels and
    size, normalised with the run's statistics, the same probes and arguments) with the
    features extracted once for both probes. Neighbours: :func:`neighbour_counts`. Finished
    metrics are written to ``RUN/selfpatch_eval.json`` one by one and reused when the unit is
    evaluated again with the same arguments."""
    store = run_dir / "selfpatch_eval.json"
    done, todo = common.pending_metrics(store, metrics, lambda m: eval_params(m, ev))
    if not todo:
        return {m: done[m] for m in metrics}

    def save(name: str, out: dict) -> None:
        nonlocal done
        done = load_json(store)
        done[name] = out
        atomic_write_json(store, done)

    if any(METRICS[m][0] == "dense" for m in todo):
        from selfsup.vision.protocols import evaluate_protocol

        t0 = time.perf_counter()
        p = eval_params(DENSE, ev)
        res = evaluate_protocol(run_dir, "dense", max_train=p["max_train"],
                                max_test=p["max_test"], seed=p["seed"], n_grid=p["n_grid"])
        details = {k: res[k] for k in ("dense_patch_accuracy", "iou_per_class", "l2",
                                       "refit_converged", "n_train_patches", "n_test")
                   if k in res}
        for m in ("dense_miou", "dense_pixel_accuracy"):
            if m in metrics:
                save(m, {"value": res[m], "params": eval_params(m, ev), **details,
                         "seconds": round(time.perf_counter() - t0, 2)})
    image = [m for m in todo if METRICS[m][0] in ("linear", "knn")]
    if image:
        _image_metrics(run_dir, ev, image, save)
    if "neighbour_precision" in todo:
        _neighbour_metric(run_dir, ev, save)
    done = load_json(store)
    return {m: done[m] for m in metrics}


def _image_metrics(run_dir: Path, ev: dict, names: list[str], save) -> None:
    import dataclasses

    import torch

    from selfsup.vision.evaluate import extract_features, knn_evaluate, linear_probe
    from selfsup.vision.protocols import _labels, adapt_images, probe_rows
    from selfsup.vision.train import _prepare, load_selected

    t_data = time.perf_counter()
    _, cfg, model, own = load_selected(run_dir)
    channels, size = int(own.train_x.shape[1]), int(own.train_x.shape[-1])
    mean, std = model._mean.flatten().tolist(), model._std.flatten().tolist()
    dataset = METRICS[names[0]][1]
    other = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, name=dataset, per_class=None, imbalance_ratio=1.0, unlabeled=False,
        path=None))
    data = _prepare(other)
    feats: dict = {}

    def features(split: str, rows) -> torch.Tensor:
        key = (split, None if rows is None else int(rows.sum()))
        if key not in feats:
            x = {"train": data.train_x, "val": data.val_x, "test": data.test_x}[split]
            x = x if rows is None else x[rows]
            feats[key] = extract_features(model.features, adapt_images(x, channels, size),
                                          mean, std, batch_size=512)
        return feats[key]

    load_s = time.perf_counter() - t_data
    for m in names:
        t0 = time.perf_counter()
        params = eval_params(m, ev)
        labels = _labels(data, "class")
        keep = probe_rows(labels["train"] >= 0, params["max_train"], params["seed"])
        n_test = min(len(labels["test"]), params["max_test"] or len(labels["test"]))
        test_rows = torch.zeros(len(labels["test"]), dtype=torch.bool)
        test_rows[:n_test] = True  # the first max_test, as evaluate_protocol takes them
        tr_f, tr_y = features("train", keep), labels["train"][keep]
        te_f, te_y = features("test", test_rows), labels["test"][:n_test]
        out: dict = {"params": params}
        if METRICS[m][0] == "knn":
            res = knn_evaluate(tr_f, tr_y, te_f, te_y, k=params["k"])
            out.update(value=round(res["top1"], 6))
        else:
            res = linear_probe(tr_f, tr_y, features("val", None), labels["val"], te_f, te_y,
                               seed=params["seed"], n_grid=params["n_grid"])
            out.update(value=round(res["top1"], 6), l2=res["l2"],
                       refit_converged=bool(res["refit_converged"]))
        out.update(n_train=int(keep.sum()), n_test=n_test,
                   seconds=round(time.perf_counter() - t0 + load_s, 2))
        load_s = 0.0  # the data set's loading is charged to its first metric
        save(m, out)


def _neighbour_metric(run_dir: Path, ev: dict, save) -> None:
    from selfsup.vision.train import load_selected

    t0 = time.perf_counter()
    _, cfg, model, data = load_selected(run_dir)
    weights = end_of_training(model, run_dir)
    net = getattr(model, "teacher_backbone", None)
    which = "teacher backbone" if net is not None else "backbone"
    net = net if net is not None else model.backbone
    if not hasattr(net, "forward_tokens"):
        raise SystemExit(f"{run_dir}: neighbour_precision needs a ViT backbone")
    params = eval_params("neighbour_precision", ev)
    n = min(params["n_test"] or len(data.test_x), len(data.test_x))
    counts = neighbour_counts(lambda x: net.forward_tokens(x)[1], data.test_x[:n],
                              data.masks["test"][:n], model.normalise, int(net.patch_size),
                              params["k"], params["border"])
    save("neighbour_precision", {
        "value": round(counts["items"][0], 6), "params": params, "tokens": which,
        "weights": weights, "n_selected": counts["items"][1],
        "with_background": round(counts["all"][0], 6), "n_selected_all": counts["all"][1],
        "chance": round(counts["chance"][0], 6), "n_candidates": counts["chance"][1],
        "n_test": n, "seconds": round(time.perf_counter() - t0, 2)})


# ------------------------------------------------------------------------------ one unit
def run_unit(setting: str, spec: dict, arm: str, seed: int, threads: int | None,
             run_root: Path) -> dict:
    """Train (or resume, or find finished) and evaluate one unit; its cache entry."""
    overrides = unit_overrides(setting, spec, arm, seed, threads, run_root)
    run, res, _, resumed, train_s = common.train_unit(overrides, run_root, arm == "random_init",
                                                      TAG, threads)
    t1 = time.perf_counter()
    figures = evaluate_unit(Path(run.path), spec["eval"])
    eval_s = time.perf_counter() - t1
    unit: dict = {m: figures[m]["value"] for m in METRICS}
    nb = figures["neighbour_precision"]
    unit["neighbour_precision_with_background"] = nb["with_background"]
    unit["neighbour_precision_chance"] = nb["chance"]
    unit["eval"] = figures
    unit["train"] = train_diagnostics(Path(run.path), res)
    return common.finish_unit(unit, run.path, resumed, train_s, eval_s)


# ------------------------------------------------------------------------------ cache
merged = common.merge_cache  # the cache on disk with this runner's entries added
_claim = common.claim_unit  # a unit's lock


# ------------------------------------------------------------------------------ report
def build_rows(cache: dict, setting: str, arms: list[str]) -> list[dict]:
    return common.unit_rows(cache, setting, arms, (*METRICS, *EXTRA))


def difference(cache: dict, setting: str, base: str, other: str, metric: str) -> dict | None:
    """``other`` minus ``base`` over the seeds both arms finished (paired by seed): mean,
    sample std of the per-seed differences, the seed std of each arm, ``spread`` (the largest
    of the three) and the per-seed differences."""
    return common.paired_difference(cache, setting, base, other, metric)


def claim(cache: dict, setting: str, base: str = "dino",
          other: str = "dino_selfpatch") -> dict | None:
    """Issue 19's claim, computed from the figures: the dense metric (``dense_miou``) rose by
    more than its seed spread (needs 2+ paired seeds: with one there is no spread and the claim
    is undetermined), and the image-level one (``image_linear``) fell by at most ``WITHIN`` (a
    point). The pixel accuracy and the image kNN are reported beside it, not judged."""
    dense = difference(cache, setting, base, other, DENSE)
    image = difference(cache, setting, base, other, IMAGE)
    if dense is None or image is None:
        return None
    seeds = sorted(set(dense["seeds"]) & set(image["seeds"]))
    n = len(seeds)
    kept = image["mean"] >= -WITHIN - 1e-9  # a fall of exactly one point counts as kept
    rose = None if n < 2 else dense["mean"] > 0 and dense["mean"] > dense["spread"]
    if rose is None:
        verdict = "undetermined (needs 2+ seeds of both arms for a spread)"
    elif rose and kept:
        verdict = "holds"
    elif rose:
        verdict = "does not hold (dense rose, but the image-level probe fell by more than a point)"
    elif kept:
        verdict = "does not hold (image-level kept, dense not raised beyond the spread)"
    else:
        verdict = ("does not hold (dense not raised beyond the spread, image-level fell by more "
                   "than a point)")
    side = {m: (d["mean"] if d else None) for m in ("dense_pixel_accuracy", "knn_image",
                                                     "neighbour_precision")
            for d in [difference(cache, setting, base, other, m)]}
    return {"setting": setting, "base": base, "other": other, "seeds": seeds,
            "dense_diff": dense["mean"], "dense_spread": dense["spread"],
            "dense_rose_beyond_spread": rose, "image_diff": image["mean"],
            "image_spread": image["spread"], "image_within_1_point": kept,
            "other_diffs": side, "verdict": verdict}


def claim_line(c: dict) -> str:
    dense = (f"{DENSE} {c['dense_diff'] * 100:+.1f} points"
             + ("" if c["dense_rose_beyond_spread"] is None else
                f" ({'rose beyond' if c['dense_rose_beyond_spread'] else 'not beyond'} the "
                f"spread {c['dense_spread'] * 100:.1f})"))
    side = "; ".join(f"{m} {v * 100:+.1f}" for m, v in c["other_diffs"].items() if v is not None)
    return (f"- **{c['other']} - {c['base']}** ({len(c['seeds'])} paired seed(s)): {dense}; "
            f"{IMAGE} {c['image_diff'] * 100:+.1f} points, "
            f"{'not more' if c['image_within_1_point'] else 'MORE'} than 1 point below DINO"
            + (f"; beside: {side}" if side else "") + f". Claim: **{c['verdict']}**.")


SHORT = {"dense_miou": "dense mIoU", "dense_pixel_accuracy": "pixel acc.",
         "image_linear": "image linear", "knn_image": "image kNN",
         "neighbour_precision": "nb. precision", "neighbour_precision_with_background":
         "nb. prec. (all patches)", "neighbour_precision_chance": "nb. chance"}


def arms_table(cache: dict, setting: str, arms: list[str]) -> str:
    """Arms x metrics, mean ± sample std over the seeds (in %)."""
    return common.arms_table(cache, setting, arms, (*METRICS, *EXTRA), SHORT)


def diff_table(cache: dict, setting: str, arms: list[str]) -> str:
    return common.diff_table(cache, setting, arms, PAIRS, (*METRICS, *EXTRA), "difference",
                             SHORT)


def diagnostics_table(cache: dict, setting: str, arms: list[str]) -> str:
    lines = ["| unit | steps | loss first -> last | DINO loss last | patch loss first -> last "
             "| val kNN per epoch | train min | eval min | flags |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, seed, u, d, flags in common.diagnostic_units(cache, setting, arms, METRICS):
        loss = (f"{d['loss_first']:.3f} -> {d['loss_last']:.3f}" if "loss_last" in d else "-")
        dino = f"{d['dino_loss_last']:.3f}" if "dino_loss_last" in d else "-"
        patch = (f"{d['patch_loss_first']:.3f} -> {d['patch_loss_last']:.3f}"
                 if "patch_loss_last" in d else "-")
        knn = ", ".join(f"{v:.3f}" for v in d.get("val_knn_per_epoch", [])) or "-"
        lines.append(f"| {arm} s{seed} | {d.get('steps', '-')} | {loss} | {dino} | {patch} | "
                     f"{knn} | {u.get('train_seconds', 0) / 60:.1f} | "
                     f"{u.get('eval_seconds', 0) / 60:.1f} | {', '.join(flags) or '-'} |")
    return "\n".join(lines)


def make_notes(cache: dict, setting: str, spec: dict, arms: list[str], missing: list[str],
               quick: bool) -> tuple[str, list[dict], list[dict]]:
    ov = dict(o.split("=", 1) for o in spec["overrides"])
    ev = spec["eval"]
    diffs = [d for base, other in PAIRS if base in arms and other in arms
             for m in (*METRICS, *EXTRA) if (d := difference(cache, setting, base, other, m))]
    claims = [c for base, other in PAIRS if base in arms and other in arms
              if (c := claim(cache, setting, base, other))]
    images = (f"{ov['data.per_class']} training mosaics per class" if "data.per_class" in ov
              else "all 55,000 training mosaics")
    fm = ev["max_train"].get("fashion-mnist")
    lines = [
        f"Setting `{setting}`: fmnist-mosaic (32 px grey 2 x 2 mosaics, generator seed "
        f"{ov['data.generator_seed']}; generator parameters in the JSON's `data`), "
        f"{ov['model.backbone']} with {ov['model.patch_size']} px patches and no CLS token for "
        f"every arm, {ov['optim.epochs']} epoch(s) over {images}, {ov['data.val_size']} held "
        f"out for validation; batch {ov['optim.batch_size']}, AdamW lr {ov['optim.lr']} (cosine, "
        f"warm-up {ov['optim.warmup']}), weight decay {ov['optim.weight_decay']} (DINO and "
        f"SelfPatch: cosine to {ov['dino.weight_decay_end']}). DINO/SelfPatch heads out "
        f"{ov['dino.out_dim']}, hidden {ov['dino.hidden']}, bottleneck {ov['dino.bottleneck']}; "
        f"multi-crop 2 x {ov['dino.global_size']} px + {ov['dino.n_local']} x "
        f"{ov['dino.local_size']} px; SelfPatch k {ov['selfpatch.k']}, border "
        f"{ov['selfpatch.border']}, patch head out {ov['selfpatch.patch_out_dim']}, weight "
        f"{ov['selfpatch.weight']}. References: `mae` (its paper optimiser), `rotnet` (the "
        "shared AdamW recipe), `random_init` (the initial weights of a dino run of the seed, "
        "never trained). Model selection (best.pt): the validation kNN accuracy of the image "
        "label, every arm.",
        "",
        "Metrics in % (tables) / fractions (rows): dense mIoU and pixel accuracy of the linear "
        f"segmentation probe (`--protocol dense`: {ev['dense_max_train']:,} training patches, "
        + ("all test mosaics" if ev["dense_max_test"] is None
           else f"the first {ev['dense_max_test']:,} test mosaics")
        + "); image linear probe and kNN (k "
        f"{ev['k']}) of the class on single-item Fashion-MNIST brought to 32 px ("
        + ("all training images" if fm is None else f"at most {fm:,} training images")
        + (", all test images" if ev["max_test"] is None
           else f", the first {ev['max_test']:,} test images")
        + f"; L2 among {ev['n_grid']} values); neighbour precision: the share of the k = "
        f"{SELFPATCH_RECIPE['k']} neighbours the teacher selects (other arms: the backbone) "
        "that carry the patch's own class (majority pixel class), item patches as centres "
        "(background excluded; `nb. prec. (all patches)` includes them), end-of-training "
        f"weights, the first {ev['neighbour_test']:,} test mosaics; `nb. chance`: the share "
        "over all valid neighbours. Evaluation seed "
        f"{ev['seed']} for every unit.",
        "",
        "Arms x metrics (mean ± sample std over the seeds, %):", "",
        arms_table(cache, setting, arms), ""]
    dt = diff_table(cache, setting, arms)
    if dt:
        lines += ["SelfPatch minus DINO, paired by seed (points; ± the std of the per-seed "
                  "differences; spread = the largest of that and the two arms' seed stds):", "",
                  dt, ""]
    if claims:
        lines += [f"Issue 19's claim ({DENSE} risen beyond its spread; {IMAGE} at most "
                  f"{WITHIN * 100:.0f} point below DINO), computed from the figures above:", ""]
        lines += [claim_line(c) for c in claims] + [""]
    lines += ["Training diagnostics:", "", diagnostics_table(cache, setting, arms), ""]
    lines += common.notes_tail(cache, setting, missing, quick)
    return "\n".join(lines), diffs, claims


def data_meta(spec: dict) -> dict:
    """The mosaic generator's parameters of the setting (from the library; no images kept)."""
    from selfsup.vision.data import _load_mosaic

    out = common.generator_meta(spec)
    seed = out["generator_seed"]
    try:
        out.update(copy.deepcopy(_load_mosaic(None, None, seed)[-1]))
    except Exception as exc:  # noqa: BLE001 (a report must not fail on a missing data cache)
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


# ------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    return common.unit_benchmark_main(
        SimpleNamespace(**globals()), argv,
        "seeds of dino and dino_selfpatch (default 0 1 2; quick 0)",
        "seeds of mae, rotnet and random_init (default 0)", (*METRICS, *EXTRA),
        lambda cache, setting, spec, shown, gone, _meta, quick:
            make_notes(cache, setting, spec, shown, gone, quick))


if __name__ == "__main__":
    sys.exit(main())
