"""``selfsup chem self-improve``: self-improved retrosynthetic planning (Kim et al., ICML 2021).

Each iteration ``i = 1..n_iterations``:

1. plan on (a seeded subset of) the training targets with the current single-step model
   (Retro*-0, :func:`~selfsup.chem.retro.workflows.plan.plan_targets`);
2. collect the reactions of the successful routes (product, reactants, the template the model
   applied);
3. keep those that the *reference* model (the iteration-0 model) ranks within the top ``rank``
   (5) with probability ``>= min_probability`` (0.8) (:func:`confidence_filter`);
4. optionally add forward-augmented reactions: products a forward model predicts from the kept
   reactant sets with ``p >= 0.8`` that the backward model maps back to the same reactants at
   top-1 (:func:`forward_augment`);
5. fine-tune the current model on them (20 epochs, lr 1e-4, batch 1024, dropout 0.4:
   :func:`~selfsup.chem.retro.training.fine_tune.fine_tune`), with
   ``finetune.replay`` > 0 mixed with that many times as many random reactions of the model's
   own training split (rehearsal, so that the model does not drift towards the few templates of
   the routes; see the benchmark notes). That split is the one the model was trained on, read
   from its checkpoint or run folder (:func:`training_split_settings`): USPTO-50k plus the ORD
   training group for a model trained on both, so that rehearsal does not teach it to forget
   the ORD reactions;
6. save ``iterations/iter_i/{model.pt, reactions.csv, plan.jsonl}`` and evaluate one-step
   exact-match top-k on held-out test reactions (reported before and after: it must not drop).

``mode: random_control`` skips planning and fine-tunes on ``control_n_reactions`` true reactions
of that training split drawn at random (the same number the self-improvement iteration kept), to
separate the effect of the planned data from that of more fine-tuning.

At scale (the paper plans on all its training targets; ``configs/retro/self_improve_scale.yaml``
plans on 5,000 per iteration) planning runs over ``n_workers`` processes and is resumable at
target granularity: every finished target is appended to ``iterations/iter_i/plan.jsonl`` at
once, an iteration is finished when its ``summary.json`` is written (after its model), and
``selfsup chem self-improve --resume RUN`` (:func:`resume_self_improve`) skips the finished
iterations (their model and reactions are read back) and plans only the targets of the current
iteration that ``plan.jsonl`` lacks; the stages after planning are deterministic (seeded), so a
resumed run ends with the same reactions and models as one never stopped.

Each iteration reports (``results.json`` ``iterations[i]`` and ``iterations/iter_i/summary.json``)
``n_targets`` planned, ``n_solved``, ``n_route_reactions`` collected, ``n_kept`` by the filter,
``n_not_top1`` (kept reactions the current model does not already rank first: the ones that can
teach it something; the search sees probabilities renormalised over the proposals, so with
``min_probability`` > 0.5 every kept reaction is the reference model's top-1, and at iteration 1,
where the current model is the reference, ``n_not_top1`` is 0 by construction: the paper's filter
keeps only what the model already answers), ``n_forward_augmented`` and ``stage_seconds``
(plan, filter, forward, finetune, value, eval; plan summed over the calls that planned this
iteration, a call killed without a chance to record its time excepted, and
``plan_search_seconds`` the summed per-target search time over all workers).
``value.train: true`` also trains Retro*'s value network
(:mod:`selfsup.chem.retro.models.value`) on the solved routes of the iteration's planning, route
costs under the iteration's fine-tuned model, saved as ``iterations/iter_i/value.pt``
(``benchmarks/retro/value_si.py`` compares Retro* with it against Retro*-0).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfsup.config import load_config
from selfsup.errors import ConfigError, InputError
from selfsup.io import append_jsonl, atomic_write_json, atomic_write_text, read_json_file
from selfsup.progress import Progress
from selfsup.runs import Run, resume_run, start_run

from ..core.single_step import SingleStepModel
from .plan import (
    PlanSearchConfig,
    SearchSpec,
    _check_common,
    make_model_factory,
    plan_targets,
    read_records,
)

__all__ = [
    "RouteReaction",
    "SelfImproveConfig",
    "collect_route_reactions",
    "confidence_filter",
    "forward_augment",
    "load_self_improve_config",
    "not_top1",
    "plan_resumable",
    "resume_self_improve",
    "self_improve",
    "train_iteration_value",
    "training_split_settings",
]


# ============================================================================ config


@dataclass(frozen=True)
class SIDataConfig:
    root: str | None = None  # folder of reaction_templates_50k_*.csv; None: fetch
    cache_dir: str | None = None  # prepared arrays (default <data cache>/derived/...)
    # the model's own training split (rehearsal, random control, default targets and stock):
    # None takes each setting from what the single-step model was trained with (its checkpoint,
    # or its run folder's config.yaml: train_single_step.model_data_settings), so a model
    # trained on USPTO-50k + ORD rehearses both; set them to override
    clean: bool | None = None
    extra_train: list[str] | None = None


@dataclass(frozen=True)
class SITargetsConfig:
    file: str | None = None  # SMILES file; None: train targets of the USPTO route benchmark
    n: int = 200  # seeded random subset (0 = all)
    seed: int = 0
    min_length: int = 1  # known-route length of route-benchmark targets (2: multi-step only)


@dataclass(frozen=True)
class SIFilterConfig:
    rank: int = 5  # the reference model must rank the reaction within its top `rank`
    min_probability: float = 0.8  # ... with at least this probability


@dataclass(frozen=True)
class SIForwardConfig:
    model: str | None = None  # forward model.pt (direction: forward); None: no augmentation
    min_probability: float = 0.8
    n_templates: int = 10


@dataclass(frozen=True)
class SIFinetuneConfig:
    epochs: int = 20
    lr: float = 1e-4
    batch_size: int = 1024
    dropout: float = 0.4
    accumulate: bool = False  # fine-tune on the data of all iterations so far, not only this one
    # rehearsal: add replay x as many random reactions of the model's own training split to the
    # fine-tuning set. 0 = the paper's recipe (the new reactions alone), which here lowered
    # one-step top-1 by 1.6 points after two iterations; 1.0 kept it level (benchmarks/retro).
    replay: float = 1.0
    # model selection: keep the epoch (0 = the weights before fine-tuning) with the best template
    # top-1 on the validation split, so held-out template accuracy cannot fall
    select_on_valid: bool = False


@dataclass(frozen=True)
class SIValueConfig:
    """Retro*'s value network trained on the solved routes of each iteration's planning."""

    train: bool = False
    epochs: int = 50
    hidden: int = 128
    lr: float = 1e-3
    n_negatives: int = 5  # other proposals per route molecule (margin hinge); 0: MSE only
    max_routes: int = 0  # most routes used (0 = all solved ones), a seeded subset


@dataclass(frozen=True)
class SIEvalConfig:
    n_test: int = 500  # held-out test reactions for one-step exact match (0 = the whole split)
    subset_seed: int = 0
    top_k: list[int] = field(default_factory=lambda: [1, 5, 10, 50])
    batch_size: int = 50


@dataclass(frozen=True)
class SelfImproveConfig:
    name: str = "retro-self-improve"
    seed: int = 0
    run_root: str | None = None
    model: str | None = None  # model.pt of the trained single-step model (required)
    mode: str = "self_improve"  # self_improve | random_control
    control_n_reactions: int = 0  # random_control: training reactions per iteration
    n_iterations: int = 2
    stock: str | None = None  # stock file; None: USPTO-50k reactants never produced
    data: SIDataConfig = field(default_factory=SIDataConfig)
    targets: SITargetsConfig = field(default_factory=SITargetsConfig)
    search: PlanSearchConfig = field(default_factory=PlanSearchConfig)
    filter: SIFilterConfig = field(default_factory=SIFilterConfig)
    forward: SIForwardConfig = field(default_factory=SIForwardConfig)
    finetune: SIFinetuneConfig = field(default_factory=SIFinetuneConfig)
    value: SIValueConfig = field(default_factory=SIValueConfig)
    eval: SIEvalConfig = field(default_factory=SIEvalConfig)
    executor: str = "local"
    n_workers: int = 1
    start_method: str = "spawn"
    torch_threads: int = 1


def load_self_improve_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = (), base: dict | None = None
) -> SelfImproveConfig:
    cfg = load_config(SelfImproveConfig, path, list(overrides), base=base)
    if not cfg.model:
        raise ConfigError("model is required: the model.pt of a single-step run")
    if cfg.mode not in ("self_improve", "random_control"):
        raise ConfigError(f"mode must be 'self_improve' or 'random_control', got {cfg.mode!r}")
    if cfg.mode == "random_control" and cfg.control_n_reactions < 1:
        raise ConfigError("mode random_control needs control_n_reactions >= 1 (use the number "
                          "of reactions a self-improvement iteration kept)")
    if cfg.finetune.replay < 0:
        raise ConfigError(f"finetune.replay must be >= 0, got {cfg.finetune.replay}")
    if cfg.n_iterations < 1:
        raise ConfigError(f"n_iterations must be >= 1, got {cfg.n_iterations}")
    if cfg.filter.rank < 1 or not 0.0 <= cfg.filter.min_probability <= 1.0:
        raise ConfigError("filter.rank must be >= 1 and filter.min_probability in [0, 1]")
    if cfg.value.train and (cfg.value.epochs < 1 or cfg.value.max_routes < 0
                            or cfg.value.n_negatives < 0):
        raise ConfigError("value.epochs must be >= 1, value.max_routes and value.n_negatives "
                          ">= 0")
    _check_common(cfg.executor, cfg.n_workers, cfg.search.max_iterations)
    return cfg


# ============================================================================ data steps


@dataclass
class RouteReaction:
    """A reaction for fine-tuning: product, reactants, template, where it came from, and the
    reference model's rank (0-based) and probability of it (``None`` if unranked)."""

    product: str
    reactants: tuple[str, ...]
    template: str
    source: str = "route"
    ref_rank: int | None = None
    ref_probability: float | None = None


def collect_route_reactions(records: Iterable[dict[str, Any]]) -> list[RouteReaction]:
    """Distinct reactions of the best routes of successful planning records (first seen kept).

    A reaction without a template in its metadata (a model that does not use templates) is
    kept with an empty template; :func:`fine_tune` then skips it.
    """
    out: dict[tuple[str, tuple[str, ...]], RouteReaction] = {}

    def walk(node: dict[str, Any]) -> None:
        rxn = node.get("reaction")
        if not rxn:
            return
        reactants = tuple(sorted(r["smiles"] for r in rxn["reactants"]))
        key = (node["smiles"], reactants)
        if key not in out:
            tpl = str((rxn.get("metadata") or {}).get("template", ""))
            out[key] = RouteReaction(node["smiles"], reactants, tpl)
        for r in rxn["reactants"]:
            walk(r)

    for rec in records:
        if rec.get("success") and rec.get("best_route"):
            walk(rec["best_route"])
    return list(out.values())


def confidence_filter(
    reactions: Sequence[RouteReaction],
    reference: SingleStepModel,
    *,
    rank: int = 5,
    min_probability: float = 0.8,
    top_k: int = 50,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[list[RouteReaction], dict[str, int]]:
    """Keep the reactions the reference model ranks within its top ``rank`` proposals with
    probability ``>= min_probability`` (probabilities as the search sees them: ``top_k``
    proposals, renormalised by the model). Returns the kept reactions (with ``ref_rank`` and
    ``ref_probability`` filled in) and counts ``{'n_in', 'n_kept', 'n_not_ranked',
    'n_low_probability'}``. ``on_progress(n)`` is called with the number of distinct products
    asked so far."""
    kept: list[RouteReaction] = []
    counts = {"n_in": len(reactions), "n_kept": 0, "n_not_ranked": 0, "n_low_probability": 0}
    proposals = _proposals(reference, [r.product for r in reactions], max(top_k, rank),
                           on_progress=on_progress)
    for rxn in reactions:
        props = proposals[rxn.product]
        hit = next((i for i, p in enumerate(props) if p.reactants == rxn.reactants), None)
        if hit is None or hit >= rank:
            counts["n_not_ranked"] += 1
            continue
        p = float(props[hit].probability)
        if p < min_probability:
            counts["n_low_probability"] += 1
            continue
        kept.append(RouteReaction(rxn.product, rxn.reactants, rxn.template, rxn.source, hit, p))
    counts["n_kept"] = len(kept)
    return kept, counts


def _proposals(model: SingleStepModel, products: Sequence[str], top_k: int,
               batch_size: int = 64, on_progress: Callable[[int], None] | None = None
               ) -> dict[str, list]:
    """``product -> proposals`` of every distinct product, asked in batches of ``batch_size``
    (one model call per batch); a batch with an unparsable product is asked one by one, and
    that product gets no proposals. ``on_progress(n)`` after each batch (n products done)."""
    unique = list(dict.fromkeys(products))
    out: dict[str, list] = {}
    for s in range(0, len(unique), batch_size):
        chunk = unique[s:s + batch_size]
        try:
            out.update(zip(chunk, model.propose(chunk, top_k)))
        except InputError:
            for p in chunk:
                try:
                    out[p] = model.propose([p], top_k)[0]
                except InputError:
                    out[p] = []
        if on_progress is not None:
            on_progress(len(out))
    return out


def not_top1(reactions: Sequence[RouteReaction], model: SingleStepModel, *, top_k: int = 50
             ) -> list[bool]:
    """For each reaction: ``True`` when ``model`` does not already rank its reactant set first
    for its product (so fine-tuning on it can change the model's answer)."""
    proposals = _proposals(model, [r.product for r in reactions], top_k)
    return [not proposals[r.product] or proposals[r.product][0].reactants != r.reactants
            for r in reactions]


def forward_augment(
    reactions: Sequence[RouteReaction],
    forward_model: Any,
    backward_model: SingleStepModel,
    *,
    min_probability: float = 0.8,
    n_templates: int = 10,
    top_k: int = 50,
) -> list[RouteReaction]:
    """New reactions ``reactants -> product'`` for the reactant sets of ``reactions``: products
    the forward model predicts with ``p >= min_probability`` (not the recorded product) that the
    backward model maps back to the same reactants as its top-1 proposal (backward consistency).
    The template is the backward model's top-1 template."""
    known = {(r.product, r.reactants) for r in reactions}
    out: list[RouteReaction] = []
    sets = list(dict.fromkeys(r.reactants for r in reactions))
    if not sets:
        return out
    preds = forward_model.predict([".".join(s) for s in sets], n_templates=n_templates,
                                  top_k=n_templates)
    for reactants, plist in zip(sets, preds):
        for pred in plist:
            if pred.probability < min_probability or (pred.product, reactants) in known:
                continue
            try:
                back = backward_model.propose([pred.product], top_k)[0]
            except InputError:
                continue
            if back and back[0].reactants == reactants:
                tpl = str(back[0].metadata.get("template", ""))
                out.append(RouteReaction(pred.product, reactants, tpl, "forward", 0,
                                         float(back[0].probability)))
                known.add((pred.product, reactants))
    return out


def _read_reactions_csv(path: Any) -> list[RouteReaction]:
    """The rows of a ``reactions.csv`` written by :func:`_reactions_csv` (an iteration's pool)."""
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.append(RouteReaction(
                r["product"], tuple(r["reactants"].split(".")) if r["reactants"] else (),
                r["template"], r["source"],
                int(r["ref_rank"]) if r["ref_rank"] != "" else None,
                float(r["ref_probability"]) if r["ref_probability"] != "" else None))
    return out


def plan_resumable(
    targets: Sequence[str],
    spec: SearchSpec,
    jsonl: Path,
    *,
    n_workers: int = 1,
    executor: str = "local",
    start_method: str = "spawn",
    description: str = "plan",
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Plan every target not yet in ``jsonl`` (a record counts for the same target at the same
    index only), appending each finished record to ``jsonl`` at once (flushed), so a killed
    call loses at most the searches in flight. Returns all records, sorted by index, and how
    many were searched by this call. Shows progress (``description``); ``on_record`` is called
    after each new record is written."""
    done = [r for r in read_records(jsonl)
            if r["index"] < len(targets) and r.get("target_input") == targets[r["index"]]]
    tally = {"done": len(done), "solved": sum(bool(r.get("success")) for r in done), "new": 0}
    bar = Progress(len(targets), description, "targets")

    def on_result(rec: dict[str, Any]) -> None:
        append_jsonl(jsonl, rec)
        tally["done"] += 1
        tally["new"] += 1
        tally["solved"] += bool(rec.get("success"))
        bar.update(tally["done"], solved=tally["solved"])
        if on_record is not None:
            on_record(rec)

    with bar:
        if done:
            bar.update(len(done), solved=tally["solved"])
        new = plan_targets(targets, spec, n_workers=n_workers, executor=executor,
                           start_method=start_method, skip={r["index"] for r in done},
                           on_result=on_result)
    return sorted(done + new, key=lambda r: r["index"]), tally["new"]


def _reactions_csv(rows: Sequence[RouteReaction]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["product", "reactants", "template", "source", "ref_rank", "ref_probability"])
    for r in rows:
        w.writerow([r.product, ".".join(r.reactants), r.template, r.source,
                    "" if r.ref_rank is None else r.ref_rank,
                    "" if r.ref_probability is None else f"{r.ref_probability:.6g}"])
    return buf.getvalue()


# ============================================================================ the loop


def self_improve(config_path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
                 ) -> tuple[Run, dict[str, Any]]:
    """Run ``n_iterations`` of self-improvement (or the random control); see the module doc."""
    return start_run("chem.self_improve", SelfImproveConfig, config_path, overrides,
                     _self_improve, loader=load_self_improve_config)


def resume_self_improve(run_path: str | os.PathLike) -> tuple[Run, dict[str, Any]]:
    """Go on with a killed self-improvement run: finished iterations are read back (never run
    again), the current iteration's planning searches only the targets its ``plan.jsonl``
    lacks, and the stages after planning run again. A finished run is returned as it is."""
    return resume_run("chem.self_improve", SelfImproveConfig, run_path,
                      lambda run, cfg, _: _self_improve(run, cfg),
                      loader=load_self_improve_config)


def train_iteration_value(run_path: str | os.PathLike, iteration: int = 1,
                          out: str | os.PathLike | None = None) -> tuple[Path, dict[str, Any]]:
    """Retro*'s value network of iteration ``iteration`` of a finished self-improvement run made
    without ``value.train``: trained, as ``value.train=true`` would have, on the solved routes of
    that iteration's planning (``plan.jsonl``), costs under its fine-tuned model, with the run's
    stock and ``value.*`` settings and seed. Saved at ``out`` (default ``iter_i/value.pt``);
    returns the path and what it was trained on."""
    import yaml

    from ..models.mlp import MLPSingleStepModel

    run_path = Path(run_path)
    if not (run_path / "config.yaml").is_file():
        raise InputError(f"{run_path}: no config.yaml; pass a `selfsup chem self-improve` run")
    cfg = load_self_improve_config(base=yaml.safe_load((run_path / "config.yaml").read_text()))
    if cfg.mode != "self_improve":
        raise InputError(f"{run_path} is a {cfg.mode} run: it planned no routes")
    d = run_path / "iterations" / f"iter_{int(iteration)}"
    if _finished_iteration(d) is None or not (d / "plan.jsonl").is_file():
        raise InputError(f"{d}: iteration {iteration} of that run has not finished; resume it "
                         f"with `selfsup chem self-improve --resume {run_path}` first")
    reactions = None
    if cfg.stock is None:
        from .route_benchmark import reactions_from_template_data

        reactions = reactions_from_template_data(_training_data(cfg)[0])
    stock = _run_stock(cfg, reactions)
    if cfg.torch_threads:
        import torch

        torch.set_num_threads(int(cfg.torch_threads))
    path = Path(out) if out is not None else d / "value.pt"
    model = MLPSingleStepModel.load(d / "model.pt")
    info = _train_value(cfg, read_records(d / "plan.jsonl"), model, stock, path, int(iteration))
    return path, info


def _finished_iteration(d: Path) -> dict[str, Any] | None:
    """The summary of iteration folder ``d`` when it finished (summary.json written after its
    model.pt and reactions.csv), else None."""
    if not ((d / "summary.json").is_file() and (d / "model.pt").is_file()
            and (d / "reactions.csv").is_file()):
        return None
    return read_json_file(d / "summary.json", "an iteration's summary",
                          "delete the iteration folder to run that iteration again")


def _add_plan_seconds(d: Path, seconds: float, n_new: int, killed: bool) -> list[dict]:
    """Append one planning call (wall seconds, targets it searched) to ``plan_calls.json``."""
    path = d / "plan_calls.json"
    calls = (read_json_file(path, "the planning calls of an iteration", expect=list)
             if path.is_file() else [])
    calls.append({"seconds": round(seconds, 2), "n_searched": n_new, "stopped": killed})
    atomic_write_json(path, calls)
    return calls


def training_split_settings(cfg: SelfImproveConfig) -> tuple[dict[str, Any], str]:
    """The settings of ``prepare_uspto50k`` for the model's own training split: those the model
    was trained with (:func:`~..training.train_single_step.model_data_settings`), with
    ``data.clean`` / ``data.extra_train`` of ``cfg`` in their place where set; and where they
    were read."""
    from ..training.train_single_step import model_data_settings

    split, source = model_data_settings(cfg.model)
    if cfg.data.clean is not None:
        split["clean"] = bool(cfg.data.clean)
    if cfg.data.extra_train is not None:
        split["extra_train"] = [str(x) for x in cfg.data.extra_train]
    if cfg.data.clean is not None or cfg.data.extra_train is not None:
        source += " and the config"
    return split, source


def _training_data(cfg: SelfImproveConfig) -> tuple[Any, dict[str, Any], str]:
    """The prepared training split of the model (:func:`training_split_settings`), its settings
    and where they were read."""
    from ..training.templates_data import prepare_uspto50k

    split, source = training_split_settings(cfg)
    data, _ = prepare_uspto50k(cfg.data.root, cfg.data.cache_dir, **split)
    return data, split, source


def _run_stock(cfg: SelfImproveConfig, reactions: Any = None):
    """The run's stock: ``cfg.stock``, or the never-produced reactants of ``reactions`` (those of
    the training split of :func:`_training_data`) when it is None."""
    if cfg.stock is not None:
        from .plan import make_stock

        return make_stock(cfg.stock)
    from .route_benchmark import default_stock

    return default_stock(reactions)


def _self_improve(run: Run, cfg: SelfImproveConfig) -> dict[str, Any]:
    import torch

    from ..models.mlp import MLPSingleStepModel
    from ..training.fine_tune import fine_tune
    from ..training.metrics import evaluate_exact_match
    from .route_benchmark import (
        build_route_benchmark,
        load_targets,
        reactions_from_template_data,
    )

    log = run.logger()
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    t_start = time.perf_counter()
    data, split, split_source = _training_data(cfg)
    log.info("training split (rehearsal, control): %s (from %s); %d train reactions",
             split, split_source, len(data["train"]))
    reactions = reactions_from_template_data(data)
    stock = _run_stock(cfg, reactions)
    rng = np.random.default_rng(cfg.targets.seed)

    # -- targets (a resumed run reads the ones it wrote) --------------------------------------
    n_bad = 0
    targets_file = run.path / "targets.smi"
    if targets_file.is_file() and (run.path / "targets.json").is_file():
        targets = [t for t in targets_file.read_text().splitlines() if t]
        n_bad = int(read_json_file(run.path / "targets.json", "the run's target counts")
                    .get("n_bad", 0))
    else:
        if cfg.mode == "random_control":
            targets = []
        elif cfg.targets.file:
            targets, n_bad = load_targets(cfg.targets.file)
        else:
            bench = build_route_benchmark(reactions, stock=stock)
            targets = bench.smiles("train", min_length=cfg.targets.min_length)
        if cfg.targets.n and cfg.targets.n < len(targets):
            targets = [targets[i] for i in sorted(rng.choice(len(targets), cfg.targets.n,
                                                               replace=False))]
        atomic_write_text(targets_file, "".join(t + "\n" for t in targets))
        atomic_write_json(run.path / "targets.json", {"n": len(targets), "n_bad": n_bad})
    if cfg.mode == "self_improve" and not targets:
        raise InputError("no training targets to plan on: check targets.file / the data")
    log.info("%d training targets (%d bad lines); stock %s; run folder %s", len(targets), n_bad,
             stock.describe(), run.path)

    # -- held-out one-step evaluation --------------------------------------------------------
    test = data["test"]
    if cfg.eval.n_test and cfg.eval.n_test < len(test):
        sub = np.random.default_rng(cfg.eval.subset_seed).choice(len(test), cfg.eval.n_test,
                                                                 replace=False)
        test = test.subset(np.sort(sub))
    ks = sorted({int(k) for k in cfg.eval.top_k})

    def onestep(model: MLPSingleStepModel) -> dict[str, float]:
        em = evaluate_exact_match(model, list(test.products), list(test.reactants), ks,
                                  cfg.eval.batch_size)
        model.clear_cache()
        return {f"top{k}": em[f"top{k}"] for k in ks} | {"n": em["n"]}

    reference = MLPSingleStepModel.load(cfg.model)
    before = run.path / "onestep_before.json"
    if before.is_file():
        onestep0 = read_json_file(before, "the one-step accuracy before self-improvement")
    else:
        onestep0 = onestep(reference)
        atomic_write_json(before, onestep0)
    log.info("iteration 0 one-step exact match: %s", onestep0)
    train = data["train"]

    current = str(cfg.model)
    pool: list[RouteReaction] = []
    history: list[dict[str, Any]] = []
    for it in range(1, cfg.n_iterations + 1):
        d = run.path / "iterations" / f"iter_{it}"
        done_row = _finished_iteration(d)
        if done_row is not None:  # finished before a kill: read back, never run again
            history.append(done_row)
            pool = _read_reactions_csv(d / "reactions.csv")
            current = str(d / "model.pt")
            log.info("iteration %d finished before; read back from %s", it, d)
            continue
        d.mkdir(parents=True, exist_ok=True)
        t_it = time.perf_counter()
        row: dict[str, Any] = {"iteration": it}
        secs: dict[str, float] = {}
        if cfg.mode == "self_improve":
            spec = SearchSpec(make_model_factory(current, cfg.torch_threads), stock,
                              top_k=cfg.search.top_k, max_iterations=cfg.search.max_iterations,
                              time_limit_s=cfg.search.time_limit_s,
                              max_depth=cfg.search.max_depth)
            t = time.perf_counter()
            searched = [0]
            stopped = True
            try:
                records, n_new = plan_resumable(
                    targets, spec, d / "plan.jsonl", n_workers=cfg.n_workers,
                    executor=cfg.executor, start_method=cfg.start_method,
                    description=f"self-improve {it}/{cfg.n_iterations} plan",
                    on_record=lambda rec, n=searched: n.__setitem__(0, n[0] + 1))
                stopped = False
            finally:  # a kill by signal 9 skips this; that call's seconds are then missing
                calls = _add_plan_seconds(d, time.perf_counter() - t, searched[0], stopped)
            secs["plan"] = round(sum(c["seconds"] for c in calls), 2)
            secs["plan_search_seconds"] = round(sum(float(r.get("time_s") or 0.0)
                                                    for r in records), 2)
            solved = sum(bool(r.get("success")) for r in records)
            row.update({"n_targets": len(records), "n_planned_this_call": n_new,
                        "n_plan_calls": len(calls), "n_solved": solved,
                        "train_success_rate": solved / len(targets),
                        "n_plan_errors": sum("error" in r for r in records)})
            log.info("iteration %d: planned %d targets (%d this call), %d solved", it,
                     len(records), n_new, solved)

            t = time.perf_counter()
            route_rxns = collect_route_reactions(records)
            n_products = len({r.product for r in route_rxns})
            with Progress(n_products, f"self-improve {it}/{cfg.n_iterations} filter",
                          "products") as fbar:
                kept, counts = confidence_filter(
                    route_rxns, reference, rank=cfg.filter.rank,
                    min_probability=cfg.filter.min_probability, top_k=cfg.search.top_k,
                    on_progress=lambda n, fbar=fbar: fbar.update(n))
            reference.clear_cache()
            backward = reference if current == str(cfg.model) else (
                MLPSingleStepModel.load(current))
            if backward is reference:  # the reference is the current model: its ranks hold
                flags = [k.ref_rank != 0 for k in kept]
            else:
                flags = not_top1(kept, backward, top_k=cfg.search.top_k)
            secs["filter"] = round(time.perf_counter() - t, 2)
            row.update({"n_route_reactions": len(route_rxns), **counts,
                        "n_not_top1": int(sum(flags))})
            new = list(kept)

            t = time.perf_counter()
            row["n_forward_augmented"] = 0
            if cfg.forward.model:
                from ..models.mlp import ForwardTemplateModel

                fwd = ForwardTemplateModel.load(cfg.forward.model)
                aug = forward_augment(kept, fwd, backward,
                                      min_probability=cfg.forward.min_probability,
                                      n_templates=cfg.forward.n_templates,
                                      top_k=cfg.search.top_k)
                new += aug
                row["n_forward_augmented"] = len(aug)
            secs["forward"] = round(time.perf_counter() - t, 2)
            if backward is not reference:
                backward.clear_cache()
        else:
            records = []
            n = min(cfg.control_n_reactions, len(train))
            pick = np.sort(np.random.default_rng(cfg.seed + it).choice(len(train), n,
                                                                       replace=False))
            new = [RouteReaction(train.products[i], tuple(train.reactants[i]),
                                 train.templates[i], "random") for i in pick]
        pool = pool + new if cfg.finetune.accumulate else new
        examples = [(r.product, r.template) for r in pool if r.template]
        n_replay = min(int(round(cfg.finetune.replay * len(examples))), len(train))
        if n_replay:
            pick = np.sort(np.random.default_rng(cfg.seed * 1000 + 500 + it).choice(
                len(train), n_replay, replace=False))
            examples += [(train.products[i], train.templates[i]) for i in pick]
        row["n_replay"] = n_replay
        t = time.perf_counter()
        model = MLPSingleStepModel.load(current)
        select = None
        if cfg.finetune.select_on_valid:
            index = {t: i for i, t in enumerate(model.templates)}
            select = (np.ascontiguousarray(model.fingerprints(list(data["valid"].products))),
                      np.asarray([index.get(t, -1) for t in data["valid"].templates]))
        with Progress(cfg.finetune.epochs, f"self-improve {it}/{cfg.n_iterations} fine-tune",
                      "epochs") as fbar:
            ft = fine_tune(model, examples,
                           epochs=cfg.finetune.epochs, lr=cfg.finetune.lr,
                           batch_size=cfg.finetune.batch_size, dropout=cfg.finetune.dropout,
                           seed=cfg.seed * 1000 + it, select=select,
                           on_epoch=lambda e, loss, fbar=fbar: fbar.update(e, loss=loss))
        secs["finetune"] = round(time.perf_counter() - t, 2)
        if ft.get("select_top1"):
            row.update({"selected_epoch": ft["selected_epoch"],
                        "valid_template_top1_before": ft["select_top1"][0],
                        "valid_template_top1_after": ft["select_top1"][ft["selected_epoch"]]})
        row.update({"n_finetune_examples": ft["n_examples"], "n_finetune_skipped":
                    ft["n_skipped"], "finetune_loss_last": ft["losses"][-1] if ft["losses"]
                    else None})
        if cfg.value.train and cfg.mode == "self_improve":
            log.info("iteration %d: training the value network on its routes", it)
            t = time.perf_counter()
            row["value"] = _train_value(cfg, records, model, stock, d / "value.pt", it)
            model.clear_cache()
            secs["value"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        row["onestep"] = onestep(model)
        secs["eval"] = round(time.perf_counter() - t, 2)
        row["stage_seconds"] = secs
        row["seconds"] = round(time.perf_counter() - t_it, 2)
        # the iteration is finished once summary.json is written, after its model and data
        model.save(d / "model.pt", extra={"iteration": it, "mode": cfg.mode,
                                          "n_finetune_examples": ft["n_examples"],
                                          "data": split})
        atomic_write_text(d / "reactions.csv", _reactions_csv(pool))
        atomic_write_json(d / "summary.json", row)
        history.append(row)
        run.log_metrics({"step": it, **{k: v for k, v in row.items()
                                        if k not in ("onestep", "stage_seconds", "value")},
                         **{f"onestep_{k}": v for k, v in row["onestep"].items()},
                         **{f"seconds_{k}": v for k, v in secs.items()}})
        log.info("iteration %d: %s", it, row)
        current = str(d / "model.pt")

    last = history[-1]["onestep"]
    results = {
        "mode": cfg.mode,
        "n_iterations": cfg.n_iterations,
        "n_targets": len(targets),
        "n_bad_targets": n_bad,
        "stock": stock.describe(),
        "training_split": {**split, "source": split_source, "n_train_reactions": len(train)},
        "onestep_before": onestep0,
        "onestep_after": last,
        "onestep_dropped": {f"top{k}": last[f"top{k}"] < onestep0[f"top{k}"] for k in ks},
        "iterations": history,
        "models": [str(run.path / "iterations" / f"iter_{i}" / "model.pt")
                   for i in range(1, cfg.n_iterations + 1)],
        "value_models": [str(p) for i in range(1, cfg.n_iterations + 1)
                         if (p := run.path / "iterations" / f"iter_{i}" / "value.pt").is_file()],
        "seconds": round(time.perf_counter() - t_start, 2),
    }
    run.finish(results)
    return results


def _train_value(cfg: SelfImproveConfig, records: Sequence[dict[str, Any]], model: Any,
                 stock: Any, path: Path, it: int) -> dict[str, Any]:
    """Train the value network on the solved routes of ``records`` (costs under ``model``),
    save it at ``path``; return what it was trained on and its last epoch."""
    from ..core.routes import Route
    from ..models.value import train_value_network, value_examples_from_routes

    routes = [Route.from_dict(r["best_route"]) for r in records
              if r.get("success") and r.get("best_route")]
    routes = [r for r in routes if r.length > 0]  # a target in stock teaches nothing
    if cfg.value.max_routes and len(routes) > cfg.value.max_routes:
        pick = np.random.default_rng(cfg.seed * 1000 + 700 + it).choice(
            len(routes), cfg.value.max_routes, replace=False)
        routes = [routes[i] for i in sorted(pick)]
    if not routes:
        return {"n_routes": 0, "n_examples": 0, "trained": False}
    examples = value_examples_from_routes(routes, model, stock, top_k=cfg.search.top_k,
                                          n_negatives=cfg.value.n_negatives)
    vmodel, hist = train_value_network(examples, hidden=cfg.value.hidden, lr=cfg.value.lr,
                                       epochs=cfg.value.epochs, seed=cfg.seed * 1000 + it)
    vmodel.extra.update({"iteration": it, "source": "self-improvement routes",
                         "n_routes": len(routes)})
    vmodel.save(path)
    return {"n_routes": len(routes), "n_examples": len(examples), "trained": True,
            "final": hist[-1]}
