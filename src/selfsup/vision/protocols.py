"""``selfsup vision eval RUN --protocol ...``: frozen-feature evaluation of a trained run.

Protocols (features of the run's selected weights, a single centre view of each image):

- ``rules``: the run's own classifier with every inference rule (SLA: SI, AG, SD, joint);
- ``linear``: the L-BFGS linear probe, L2 weight chosen on the validation split, refit on
  train + val, top-1 and mean per-class accuracy on the test split;
- ``knn``: weighted cosine kNN of the test images against the training images;
- ``fewshot``: N-way K-shot logistic regression over sampled tasks of the test split, mean and
  95% interval;
- ``dense``: a linear segmentation probe on the frozen ``backbone.forward_features`` maps of the
  ``fmnist-mosaic`` images (the run's own data when it trained on them, else made at the run's
  image size and brought to its channels): mIoU over the 11 classes (background and the 10
  items) and pixel accuracy (:mod:`selfsup.vision.evaluate.dense`); ``max_train`` caps the
  training patches (default 20000), ``max_test`` the test mosaics. Unless ``maps=False`` it also
  draws ``RUN/artefacts/dense_maps.png`` (:mod:`selfsup.vision.evaluate.maps`: a few test
  mosaics with their masks, the probe's prediction, an attention map for a ViT and a
  patch-similarity map), which the run report shows.

``dataset`` evaluates on another data set (transfer): its images are brought to the run's
channels (grey <-> RGB) and size and normalised as the run's training images were. ``target``
names the label to predict: ``class``, or a further label of the data set (tinted Fashion-MNIST:
``item_colour``, ``background_colour``, ``position``, ``scale``).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError
from ..io import atomic_write_json

PROTOCOLS = ("rules", "linear", "knn", "fewshot", "dense")
DENSE_DATASET = "fmnist-mosaic"
DENSE_MAX_TRAIN = 20000  # training patches of the dense probe (drawn with the seed)
DENSE_MAX_VAL = 5000  # validation patches (the L2 choice)


def adapt_images(x: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) with ``channels`` channels (grey repeated to RGB, RGB averaged
    to grey) at ``size`` x ``size`` (bilinear); uint8 out."""
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif channels == 1:
            x = x.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        else:
            raise InputError(f"cannot map {x.shape[1]}-channel images to {channels} channels")
    if x.shape[-1] != size or x.shape[-2] != size:
        out = []
        for i in range(0, len(x), 2048):
            xb = F.interpolate(x[i : i + 2048].float(), size=(size, size), mode="bilinear",
                               align_corners=False)
            out.append(xb.round().clamp(0, 255).to(torch.uint8))
        x = torch.cat(out)
    return x.contiguous()


def probe_rows(labelled: torch.Tensor, max_train: int | None, seed: int) -> torch.Tensor:
    """The training rows a probe uses (bool mask): the ``labelled`` ones, at most ``max_train``
    of them drawn with ``seed``."""
    keep = labelled.clone()
    if max_train is not None and int(keep.sum()) > max_train:
        g = torch.Generator().manual_seed(seed)
        idx = torch.nonzero(keep).flatten()
        chosen = idx[torch.randperm(len(idx), generator=g)[:max_train]]
        keep = torch.zeros_like(keep)
        keep[chosen] = True
    return keep


def _labels(data, target: str) -> dict[str, torch.Tensor]:
    if target == "class":
        return {"train": data.train_y, "val": data.val_y, "test": data.test_y}
    if target not in data.targets:
        have = ", ".join(["class", *sorted(data.targets)])
        raise ConfigError(f"--target {target!r}: this data set's labels are {have}")
    return data.targets[target]


def evaluate_protocol(run_path: str | os.PathLike, protocol: str = "linear",
                      dataset: str | None = None, target: str | Sequence[str] = "class", *,
                      k: int = 20, n_way: int = 5, k_shot: int = 5, n_tasks: int = 2000,
                      n_query: int = 15, max_train: int | None = None,
                      max_test: int | None = None, seed: int = 0, n_grid: int = 45,
                      batch_size: int = 512, maps: bool = True) -> dict[str, Any]:
    """Evaluate a run's selected weights with ``protocol``; writes
    ``RUN/eval_<protocol>[_<dataset>][_<target>].json`` and returns its contents.

    ``target`` may be a list of labels: the features are then extracted once and the result is
    ``{target: result}``. ``max_train`` / ``max_test`` use at most that many images (drawn with
    ``seed``; the test images are the first ``max_test``). ``n_grid``: how many L2 values the
    linear probe tries (log-spaced in [1e-6, 1e5]; 45 in the AugSelf paper). ``maps``
    (``dense`` only): also draw ``RUN/artefacts/dense_maps.png``."""
    from .evaluate import extract_features, few_shot_eval, knn_evaluate, linear_probe
    from .train import _prepare, evaluate, load_selected

    targets = [target] if isinstance(target, str) else list(target)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if protocol == "rules":
        if dataset or targets != ["class"]:
            raise ConfigError("--protocol rules uses the run's own classifier on its own data; "
                              "use linear, knn or fewshot with --dataset or --target")
        return evaluate(run_path)
    if protocol == "dense" and (targets != ["class"] or dataset not in (None, DENSE_DATASET)):
        raise ConfigError(f"--protocol dense scores segmentations of {DENSE_DATASET}; drop "
                          "--target and --dataset")
    t0 = time.perf_counter()
    run, cfg, model, data = load_selected(run_path)
    channels, size = int(data.train_x.shape[1]), int(data.train_x.shape[-1])
    if protocol == "dense":
        return _dense(run, cfg, model, data, channels, size, max_train=max_train,
                      max_test=max_test, seed=seed, n_grid=n_grid, batch_size=batch_size, t0=t0,
                      maps=maps)
    if dataset:
        import dataclasses

        other = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, name=dataset, per_class=None, imbalance_ratio=1.0, unlabeled=False,
            path=None if dataset != cfg.data.name else cfg.data.path))
        data = _prepare(other)
    labels = {t: _labels(data, t) for t in targets}
    splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
    labelled = torch.ones(len(data.train_y), dtype=torch.bool)
    for lab in labels.values():
        labelled &= lab["train"] >= 0
    train_idx = torch.nonzero(probe_rows(labelled, max_train, seed)).flatten()
    test_idx = torch.arange(min(len(data.test_y), max_test or len(data.test_y)))

    def take(x, idx):
        return x.subset(idx.numpy()) if hasattr(x, "subset") else x[idx]

    splits["train"] = take(splits["train"], train_idx)
    splits["test"] = take(splits["test"], test_idx)
    labels = {t: {**lab, "train": lab["train"][train_idx], "test": lab["test"][test_idx]}
              for t, lab in labels.items()}
    mean, std = model._mean.flatten().tolist(), model._std.flatten().tolist()
    feats = {}
    for name, x in splits.items():
        if protocol == "fewshot" and name != "test":
            continue
        if protocol == "knn" and name == "val":
            continue
        parts = []  # batch by batch: an image folder is decoded as it goes
        for i in range(0, len(x), 4 * batch_size):
            xb = adapt_images(x[i : i + 4 * batch_size], channels, size)
            parts.append(extract_features(model.features, xb, mean, std, batch_size=batch_size))
        feats[name] = torch.cat(parts)
    t_feat = time.perf_counter() - t0
    results: dict[str, Any] = {}
    for t in targets:
        t1 = time.perf_counter()
        lab = labels[t]
        out: dict[str, Any] = {"protocol": protocol, "dataset": dataset or cfg.data.name,
                               "target": t, "n_train": len(lab["train"]),
                               "n_test": len(lab["test"])}
        if protocol == "linear":
            res = linear_probe(feats["train"], lab["train"], feats["val"], lab["val"],
                               feats["test"], lab["test"], seed=seed, n_grid=n_grid)
            out.update(top1=res["top1"], mean_per_class=res["mean_per_class"], l2=res["l2"],
                       n_grid=n_grid, refit_converged=bool(res["refit_converged"]))
        elif protocol == "knn":
            res = knn_evaluate(feats["train"], lab["train"], feats["test"], lab["test"], k=k)
            out.update(top1=res["top1"], mean_per_class=res["mean_per_class"], k=k)
        else:
            res = few_shot_eval(feats["test"], lab["test"], n_way=n_way, k_shot=k_shot,
                                n_query=n_query, n_tasks=n_tasks, seed=seed)
            out.update(mean=res["mean"], ci95=res["ci95"], n_way=n_way, k_shot=k_shot,
                       n_tasks=n_tasks)
        out = {k2: (round(v, 6) if isinstance(v, float) else v) for k2, v in out.items()}
        out["seconds"] = round(t_feat + time.perf_counter() - t1, 2)
        parts_ = [protocol] + ([re.sub(r"[^A-Za-z0-9_.-]", "_", dataset)] if dataset else []) + (
            [t] if t != "class" else [])
        atomic_write_json(run.path / f"eval_{'_'.join(parts_)}.json", out)
        results[t] = out
    return results[targets[0]] if isinstance(target, str) else results


def _dense(run, cfg, model, data, channels: int, size: int, *, max_train: int | None,
           max_test: int | None, seed: int, n_grid: int, batch_size: int,
           t0: float, maps: bool = True) -> dict[str, Any]:
    """The ``dense`` protocol (module text); writes ``RUN/eval_dense.json``."""
    import dataclasses

    from .evaluate.dense import dense_evaluate
    from .train import _prepare

    if "test" not in data.masks:  # another data set: the mosaics at the run's size
        if size % 2:
            raise ConfigError(f"--protocol dense makes {DENSE_DATASET} at the run's image size, "
                              f"which must be even; this run's is {size}")
        other = dataclasses.replace(cfg, data=dataclasses.replace(
            cfg.data, name=DENSE_DATASET, image_size=size, per_class=None, imbalance_ratio=1.0,
            unlabeled=False, lazy=False, path=None))
        data = _prepare(other)
    n_test = min(len(data.test_y), max_test or len(data.test_y))
    mean, std = model._mean.flatten().tolist(), model._std.flatten().tolist()
    res = dense_evaluate(
        model.backbone, data.train_x, data.masks["train"], data.val_x, data.masks["val"],
        data.test_x[:n_test], data.masks["test"][:n_test], mean, std,
        max_train=max_train or DENSE_MAX_TRAIN, max_val=DENSE_MAX_VAL, n_grid=n_grid,
        seed=seed, batch_size=batch_size, prepare=lambda x: adapt_images(x, channels, size))
    out: dict[str, Any] = {
        "protocol": "dense", "dataset": DENSE_DATASET, "target": "mask",
        "dense_miou": res["miou"], "dense_pixel_accuracy": res["pixel_accuracy"],
        "dense_patch_accuracy": res["patch_accuracy"], "iou_per_class": res["iou_per_class"],
        "l2": res["l2"], "n_grid": n_grid, "refit_converged": res["refit_converged"],
        "n_train_patches": res["n_train_patches"], "n_val_patches": res["n_val_patches"],
        "n_test": res["n_test"], "feature_map": res["feature_map"],
        "feature_dim": res["feature_dim"], "patch_label": "majority pixel class of the cell",
    }
    out = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in out.items()}
    out["iou_per_class"] = [None if v is None else round(v, 6) for v in out["iou_per_class"]]
    out["seconds"] = round(time.perf_counter() - t0, 2)
    if maps:  # the figure of a few test mosaics (not counted in "seconds")
        from .evaluate.maps import write_dense_maps

        write_dense_maps(
            run.artefact_dir / "dense_maps.png", model.backbone, res["probe"],
            data.test_x[:n_test], data.masks["test"][:n_test], mean, std,
            head=getattr(model, "agg", None), seed=seed,
            prepare=lambda x: adapt_images(x, channels, size),
            title=f"{run.path.name}: {cfg.method}, {cfg.model.backbone}, dense probe mIoU "
                  f"{out['dense_miou']:.3f}")
        out["maps"] = "artefacts/dense_maps.png"
    atomic_write_json(run.path / "eval_dense.json", out)
    return out
