"""``selfsup chem plan``: Retro* or MCTS on many targets, over processes, resumable.

One run plans every target of a SMILES file (one per line; unparsable lines are skipped and
counted) with the planner named by ``planner``: ``retro_star`` (default),
:class:`~selfsup.chem.retro.core.search.RetroStar` (Chen et al., ICML 2020): Retro*-0 without a
value model, Retro* with one (:mod:`selfsup.chem.retro.models.value`); or ``mcts``,
:class:`~selfsup.chem.retro.core.mcts.MCTS` (AiZynthFinder's Monte Carlo tree search, options
under ``mcts.*``). Both count an iteration as one single-step model call. Searches run in a
process pool (``n_workers``; each worker loads the model once) or on Ray (``executor: ray``,
imported only then). Each finished target is appended to ``results.jsonl`` at once (flushed), so
:func:`resume_plan` skips the targets already done after a kill; records are ordered by target
index in every summary, so 1 and N workers give the same results.

The run writes ``results.jsonl`` (one record per target), ``routes.json`` (best route of every
solved target), ``artefacts/route_XXXX.png`` (pictures of the first ``n_draw`` solved routes,
shown by ``selfsup report``) and ``results.json``: success rate within 10/25/50/100/...
iterations (from the iteration at which the first route was found), mean route length of the
solved targets, mean iterations (failures counted at ``max_iterations``), and the stock used.

Model and stock specs: a path to a ``model.pt`` of :class:`~selfsup.chem.retro.models.mlp.
MLPSingleStepModel`, or ``toy:NAME`` / ``toy:all`` for the toy worlds of
:mod:`selfsup.chem.retro.core.toy` (tests and docs). ``stock: null`` is the USPTO-derived default:
reactants of all USPTO-50k reactions that never occur as a product; ``stock:
molbloom:zinc-instock-mini`` is the general one, ZINC20's in-stock molecules as the Bloom filter
that the molbloom wheel ships (optional extra ``retro``; false positives in
benchmarks/results/retro_stock_fpr.md).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from selfsup.config import load_config
from selfsup.errors import ConfigError, InputError
from selfsup.io import append_jsonl, atomic_write_json, atomic_write_text, dumps_json
from selfsup.progress import Progress
from selfsup.runs import Run, resume_run, start_run

from ..core.mcts import MCTS
from ..core.routes import Route, draw_route
from ..core.search import RetroStar
from ..core.single_step import FixedReactionModel, SingleStepModel
from ..core.stock import BloomStock, Stock

__all__ = [
    "PLANNERS",
    "PlanConfig",
    "PlanMctsConfig",
    "SearchSpec",
    "check_planner",
    "load_plan_config",
    "make_model_factory",
    "make_stock",
    "make_value_factory",
    "mcts_options",
    "plan",
    "plan_targets",
    "read_records",
    "resume_plan",
    "summarize",
]

DEFAULT_SUCCESS_AT = [10, 25, 50, 100, 200, 300, 400, 500]
PLANNERS = ("retro_star", "mcts")


# ============================================================================ config


@dataclass(frozen=True)
class PlanDataConfig:
    root: str | None = None  # folder of reaction_templates_50k_*.csv (default stock); None: fetch
    cache_dir: str | None = None  # prepared USPTO-50k arrays (default <data cache>/derived/...)


@dataclass(frozen=True)
class PlanSearchConfig:
    top_k: int = 50  # proposals per expansion (Retro*: 50)
    max_iterations: int = 500  # expansions = single-step model calls per target
    time_limit_s: float | None = None  # per target; makes results depend on the machine
    max_depth: int | None = 10  # most reactions between the target and any molecule


@dataclass(frozen=True)
class PlanMctsConfig:
    """Options of ``planner: mcts`` (AiZynthFinder's defaults; see core/mcts.py)."""

    c: float = 1.4  # exploration constant of the UCB term
    seed: int | None = None  # tie-breaking generator, seeded per target; None: the run's seed
    stock_weight: float = 0.95  # reward = w * share in stock + (1 - w) * depth squash
    depth_midpoint: float = 4.0  # depth at which the squash term is 0.5


@dataclass(frozen=True)
class PlanConfig:
    name: str = "retro-plan"
    seed: int = 0
    run_root: str | None = None
    targets: str | None = None  # file of SMILES, one per line (required)
    max_targets: int = 0  # plan only the first N targets (0 = all)
    model: str | None = None  # model.pt of a trained single-step model, or toy:NAME (required)
    value_model: str | None = None  # value-network checkpoint (None: Retro*-0)
    stock: str | None = None  # file, toy:NAME or molbloom:CATALOG; None: USPTO-50k leaves
    data: PlanDataConfig = field(default_factory=PlanDataConfig)
    search: PlanSearchConfig = field(default_factory=PlanSearchConfig)
    planner: str = "retro_star"  # retro_star | mcts
    mcts: PlanMctsConfig = field(default_factory=PlanMctsConfig)
    executor: str = "local"  # local (process pool) | ray
    n_workers: int = 1
    start_method: str = "spawn"  # multiprocessing start method of the local pool
    torch_threads: int = 1  # per worker
    n_draw: int = 10  # pictures of the first N solved routes
    success_at: list[int] = field(default_factory=lambda: list(DEFAULT_SUCCESS_AT))


def load_plan_config(
    path: str | os.PathLike | None = None, overrides: Sequence[str] = (), base: dict | None = None
) -> PlanConfig:
    """Defaults, ``base``, the YAML at ``path`` and ``key=value`` overrides; validated."""
    cfg = load_config(PlanConfig, path, list(overrides), base=base)
    if not cfg.targets:
        raise ConfigError("targets is required: a file of target SMILES, one per line "
                          "(e.g. targets=benchmark/targets_test.smi)")
    if not cfg.model:
        raise ConfigError("model is required: the model.pt of a single-step run "
                          "(selfsup chem train-single-step) or toy:NAME")
    _check_common(cfg.executor, cfg.n_workers, cfg.search.max_iterations)
    check_planner(cfg.planner, cfg.value_model)
    return cfg


def check_planner(planner: str, value_model: str | None = None) -> None:
    """A :class:`ConfigError` for an unknown planner or a value model given to MCTS."""
    if planner not in PLANNERS:
        raise ConfigError(f"planner must be one of {', '.join(PLANNERS)}, got {planner!r} "
                          "(e.g. planner=mcts)")
    if planner == "mcts" and value_model:
        raise ConfigError("value_model is used by planner retro_star only; drop value_model "
                          "or set planner=retro_star")


def mcts_options(cfg: PlanConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`MCTS` from ``cfg.mcts`` (seed: ``cfg.seed`` if unset)."""
    m = cfg.mcts
    return {"c": m.c, "seed": cfg.seed if m.seed is None else m.seed,
            "stock_weight": m.stock_weight, "depth_midpoint": m.depth_midpoint}


def _check_common(executor: str, n_workers: int, max_iterations: int) -> None:
    if executor not in ("local", "ray"):
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    if n_workers < 1:
        raise ConfigError(f"n_workers must be >= 1, got {n_workers}")
    if max_iterations < 1:
        raise ConfigError(f"search.max_iterations must be >= 1, got {max_iterations}")


# ============================================================================ factories


def _toy_model(name: str) -> SingleStepModel:
    from ..core.toy import toy_worlds

    worlds = toy_worlds()
    if name == "all":
        table: dict[str, list] = {}
        for w in worlds.values():
            for prod, entries in w.reactions.items():
                table.setdefault(prod, []).extend(entries)
        return FixedReactionModel(table)
    if name not in worlds:
        raise InputError(f"unknown toy world {name!r}; known: all, {', '.join(worlds)}")
    return worlds[name].model()


def _load_mlp(path: str, threads: int | None, store: tuple[str, str] | None = None
              ) -> SingleStepModel:
    import torch

    from ..models.mlp import MLPSingleStepModel

    if threads:
        torch.set_num_threads(int(threads))
    model = MLPSingleStepModel.load(path)
    if store is not None:
        from ..core.proposal_store import ProposalStore

        ProposalStore(*store).attach(model)
    return model


def make_model_factory(spec: str, torch_threads: int | None = 1,
                       proposal_store: str | os.PathLike | None = None
                       ) -> Callable[[], SingleStepModel]:
    """Picklable ``() -> model`` for ``toy:NAME`` or a ``model.pt`` path (checked now).

    ``proposal_store``: a folder where the model's proposals are kept and shared with every
    process that plans with the same model file (:mod:`..core.proposal_store`; the same
    searches, less time); ``model.pt`` models only."""
    if spec.startswith("toy:"):
        _toy_model(spec[4:])  # fail early on an unknown name
        return partial(_toy_model, spec[4:])
    if not Path(spec).is_file():
        raise InputError(f"no single-step model at {spec!r}: pass the model.pt of a finished "
                         "selfsup chem train-single-step run")
    store = None
    if proposal_store is not None:
        from ..core.proposal_store import model_file_key

        store = (str(proposal_store), model_file_key(spec))
    return partial(_load_mlp, str(spec), torch_threads, store)


def _load_value(path: str, threads: int | None) -> Callable[[str], float]:
    import torch

    from ..models.value import ValueModel

    if threads:
        torch.set_num_threads(int(threads))
    return ValueModel.load(path).as_value_fn()


def make_value_factory(
    path: str | None, torch_threads: int | None = 1
) -> Callable[[], Callable[[str], float]] | None:
    """Picklable ``() -> value_fn`` of a value-network checkpoint (``None``: Retro*-0)."""
    if not path:
        return None
    if not Path(path).is_file():
        raise InputError(f"no value network at {path!r}: pass a file saved by ValueModel.save()")
    return partial(_load_value, str(path), torch_threads)


def make_stock(spec: str | None, root: str | None = None, cache_dir: str | None = None
               ) -> Stock | BloomStock:
    """A stock file, ``toy:NAME``/``toy:all``, ``molbloom:CATALOG`` (a purchasable-molecule
    Bloom filter, e.g. ``molbloom:zinc-instock-mini``: ZINC20 in stock, false positives stated
    in ``describe()``; needs ``pip install 'selfsup[retro]'``), or (``None``) the
    USPTO-50k-derived default."""
    if spec is not None and spec.startswith("molbloom:"):
        return BloomStock.from_molbloom(spec[len("molbloom:"):])
    if spec is None:
        from .route_benchmark import default_stock, load_uspto_reactions

        return default_stock(load_uspto_reactions(root, cache_dir))
    if spec.startswith("toy:"):
        from ..core.toy import toy_worlds

        worlds = toy_worlds()
        name = spec[4:]
        chosen = list(worlds.values()) if name == "all" else [worlds.get(name)]
        if chosen[0] is None:
            raise InputError(f"unknown toy world {name!r}; known: all, {', '.join(worlds)}")
        smiles = [s for w in chosen for s in w.stock_smiles]  # type: ignore[union-attr]
        return Stock.from_smiles(smiles, name=spec, source="toy world")
    return Stock.from_file(spec)


# ============================================================================ engine


@dataclass(frozen=True)
class SearchSpec:
    """Everything a worker needs to build its planner (picklable): :class:`RetroStar` for
    ``planner='retro_star'``, :class:`MCTS` (keyword arguments ``mcts``) for ``'mcts'``."""

    model_factory: Callable[[], SingleStepModel]
    stock: Stock | BloomStock
    value_factory: Callable[[], Callable[[str], float]] | None = None
    top_k: int = 50
    max_iterations: int | None = 500
    time_limit_s: float | None = None
    max_depth: int | None = None
    planner: str = "retro_star"
    mcts: dict[str, Any] = field(default_factory=dict)

    def build(self) -> RetroStar | MCTS:
        check_planner(self.planner, "value" if self.value_factory is not None else None)
        if self.planner == "mcts":
            return MCTS(self.model_factory(), self.stock, top_k=self.top_k,
                        max_iterations=self.max_iterations, time_limit_s=self.time_limit_s,
                        max_depth=self.max_depth, **self.mcts)
        value_fn = self.value_factory() if self.value_factory is not None else None
        return RetroStar(self.model_factory(), self.stock, value_fn, top_k=self.top_k,
                         max_iterations=self.max_iterations, time_limit_s=self.time_limit_s,
                         max_depth=self.max_depth)


_WORKER: dict[str, RetroStar | MCTS] = {}


def _init_worker(spec: SearchSpec) -> None:
    _WORKER["search"] = spec.build()


def _search_one(search: RetroStar | MCTS, index: int, target: str) -> dict[str, Any]:
    try:
        res = search.run(target)
    except Exception as err:  # a bad target is recorded and counted, never fatal
        return {"index": index, "target": target, "success": False, "iterations": 0,
                "first_solution_iteration": None, "best_route": None,
                "error": f"{type(err).__name__}: {err}", "target_input": target}
    d = res.to_dict(include_routes=False)
    d["stats"] = {k: v for k, v in d["stats"].items() if k not in ("stock", "limits")}
    d["best_route"] = None if res.best_route is None else res.best_route.to_dict()
    return {"index": index, **d, "target_input": target}


def _worker_task(index: int, target: str) -> dict[str, Any]:
    return _search_one(_WORKER["search"], index, target)


def plan_targets(
    targets: Sequence[str],
    spec: SearchSpec,
    *,
    n_workers: int = 1,
    executor: str = "local",
    start_method: str = "spawn",
    skip: Iterable[int] = (),
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Search every target whose index is not in ``skip``; records sorted by index.

    ``on_result`` is called in the main process as each record arrives (any order). With one
    local worker the searches run in this process.
    """
    skip = set(skip)
    todo = [(i, t) for i, t in enumerate(targets) if i not in skip]
    records: list[dict[str, Any]] = []

    def take(rec: dict[str, Any]) -> None:
        records.append(rec)
        if on_result is not None:
            on_result(rec)

    if not todo:
        return []
    if executor == "ray":
        _plan_ray(todo, spec, n_workers, take)
    elif executor != "local":
        raise ConfigError(f"executor must be 'local' or 'ray', got {executor!r}")
    elif n_workers == 1:
        search = spec.build()
        for i, t in todo:
            take(_search_one(search, i, t))
    else:
        ctx = get_context(start_method)
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx,
                                 initializer=_init_worker, initargs=(spec,)) as pool:
            futures = [pool.submit(_worker_task, i, t) for i, t in todo]
            try:
                for fut in as_completed(futures):
                    take(fut.result())
            except BaseException:  # Ctrl-C or a failing callback: drop the queued targets
                pool.shutdown(wait=False, cancel_futures=True)  # (else exit waits for all)
                raise
    return sorted(records, key=lambda r: r["index"])


def _plan_ray(todo: list[tuple[int, str]], spec: SearchSpec, n_workers: int,
              take: Callable[[dict[str, Any]], None]) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray needs the 'ray' package (pip install 'ray[default]'); "
                          "or use executor: local") from None
    if not ray.is_initialized():
        ray.init(num_cpus=n_workers, include_dashboard=False, log_to_driver=False)

    @ray.remote
    class _Worker:
        def __init__(self, spec: SearchSpec) -> None:
            self.search = spec.build()

        def run(self, index: int, target: str) -> dict[str, Any]:
            return _search_one(self.search, index, target)

    workers = [_Worker.remote(spec) for _ in range(n_workers)]
    pending = [workers[j % n_workers].run.remote(i, t) for j, (i, t) in enumerate(todo)]
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        take(ray.get(done[0]))


# ============================================================================ metrics


def summarize(
    records: Sequence[dict[str, Any]],
    *,
    max_iterations: int | None,
    success_at: Sequence[int] = DEFAULT_SUCCESS_AT,
) -> dict[str, Any]:
    """Success within k iterations, mean route length, mean iterations of planning records.

    ``success_at_k`` = fraction of targets whose first route was found within ``k`` expansions
    (``first_solution_iteration <= k``; 0 for a target in stock); every ``k`` up to
    ``max_iterations`` plus ``max_iterations`` itself. ``mean_iterations`` counts a failure at
    ``max_iterations`` (Retro*'s convention); ``mean_route_length`` is over solved targets.
    """
    n = len(records)
    ks = sorted({int(k) for k in success_at if max_iterations is None or k <= max_iterations}
                | ({int(max_iterations)} if max_iterations is not None else set()))
    fsi = [r.get("first_solution_iteration") for r in records]
    out: dict[str, Any] = {"n_targets": n}
    for k in ks:
        out[f"success_at_{k}"] = (sum(f is not None and f <= k for f in fsi) / n) if n else 0.0
    solved = [r for r in records if r.get("success")]
    out["success_rate"] = len(solved) / n if n else 0.0
    out["n_solved"] = len(solved)
    lengths = [r["best_route_length"] for r in solved if r.get("best_route_length") is not None]
    out["mean_route_length"] = sum(lengths) / len(lengths) if lengths else math.nan
    its = []
    for r, f in zip(records, fsi):
        if f is not None:
            its.append(f)
        else:
            its.append(max_iterations if max_iterations is not None else r.get("iterations", 0))
    out["mean_iterations"] = sum(its) / n if n else math.nan
    out["n_errors"] = sum("error" in r for r in records)
    return out


# ============================================================================ runs


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a ``results.jsonl``; a line cut by a kill is dropped (the file is rewritten
    atomically without it), and a target recorded twice keeps its first record."""
    p = Path(path)
    if not p.is_file():
        return []
    good: list[dict[str, Any]] = []
    seen: set[int] = set()
    broken = False
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            idx = int(rec["index"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            broken = True
            continue
        if idx in seen:
            broken = True
            continue
        seen.add(idx)
        good.append(rec)
    if broken:
        atomic_write_text(p, "".join(dumps_json(r) + "\n" for r in good))
    return good


def plan(config_path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
         ) -> tuple[Run, dict[str, Any]]:
    """Plan every target of ``targets`` in a new run; return the run and ``results.json``."""
    return start_run("chem.plan", PlanConfig, config_path, overrides, _execute,
                     loader=load_plan_config)


def resume_plan(run_path: str | os.PathLike) -> tuple[Run, dict[str, Any]]:
    """Continue a killed plan run: targets already in ``results.jsonl`` are not searched again.
    A finished run is returned as it is."""
    return resume_run("chem.plan", PlanConfig, run_path,
                      lambda run, cfg, _: _execute(run, cfg), loader=load_plan_config)


def _execute(run: Run, cfg: PlanConfig) -> dict[str, Any]:
    from .route_benchmark import load_targets

    log = run.logger()
    t0 = time.perf_counter()
    targets, n_bad = load_targets(cfg.targets)  # type: ignore[arg-type]
    if cfg.max_targets:
        targets = targets[: cfg.max_targets]
    if not targets:
        raise InputError(f"no valid target SMILES in {cfg.targets!r} ({n_bad} bad lines)")
    stock = make_stock(cfg.stock, cfg.data.root, cfg.data.cache_dir)
    log.info("%d targets (%d bad lines skipped); stock %s", len(targets), n_bad,
             stock.describe())
    spec = SearchSpec(
        model_factory=make_model_factory(cfg.model, cfg.torch_threads),  # type: ignore[arg-type]
        stock=stock,
        value_factory=make_value_factory(cfg.value_model, cfg.torch_threads),
        top_k=cfg.search.top_k,
        max_iterations=cfg.search.max_iterations,
        time_limit_s=cfg.search.time_limit_s,
        max_depth=cfg.search.max_depth,
        planner=cfg.planner,
        mcts=mcts_options(cfg) if cfg.planner == "mcts" else {},
    )
    jsonl = run.path / "results.jsonl"
    done = read_records(jsonl)
    done = [r for r in done  # a record counts only for the same target at the same index
            if r["index"] < len(targets) and r.get("target_input") == targets[r["index"]]]
    log.info("%d targets already done; %d to search", len(done), len(targets) - len(done))
    n_new = [0]
    solved = [sum(bool(r.get("success")) for r in done)]
    bar = Progress(len(targets), "plan", "targets")

    def on_result(rec: dict[str, Any]) -> None:
        append_jsonl(jsonl, rec)
        n_new[0] += 1
        log.info("target %d: success=%s iterations=%s", rec["index"], rec.get("success"),
                 rec.get("iterations"))
        solved[0] += bool(rec.get("success"))
        bar.update(len(done) + n_new[0], solved=solved[0])

    with bar:
        if done:
            bar.update(len(done), solved=solved[0])
        new = plan_targets(targets, spec, n_workers=cfg.n_workers, executor=cfg.executor,
                           start_method=cfg.start_method, skip={r["index"] for r in done},
                           on_result=on_result)
    records = sorted(done + new, key=lambda r: r["index"])
    results = finalize(run, records, cfg.search.max_iterations, cfg.success_at, cfg.n_draw)
    results.update({
        "n_bad_targets": n_bad,
        "n_skipped_done": len(done),
        "n_searched_this_call": n_new[0],
        "stock": stock.describe(),
        "model": cfg.model,
        "value_model": cfg.value_model,
        "planner": cfg.planner,
        "algorithm": ("MCTS" if cfg.planner == "mcts"
                      else "Retro*" if cfg.value_model else "Retro*-0"),
        "seconds_this_call": round(time.perf_counter() - t0, 2),
    })
    run.finish(results)
    return results


def finalize(run: Run, records: Sequence[dict[str, Any]], max_iterations: int | None,
             success_at: Sequence[int], n_draw: int) -> dict[str, Any]:
    """Write ``routes.json`` and route pictures; return the summary (not yet saved)."""
    routes = [{"index": r["index"], "target": r["target"], "route": r["best_route"]}
              for r in records if r.get("best_route")]
    atomic_write_json(run.path / "routes.json", routes, indent=0)
    for item in routes[:n_draw]:
        try:
            draw_route(Route.from_dict(item["route"]),
                       run.artefact_dir / f"route_{item['index']:04d}.png")
        except Exception as err:  # a picture is never worth failing a run
            run.logger().warning("could not draw route %d: %s", item["index"], err)
    return summarize(records, max_iterations=max_iterations, success_at=success_at)
