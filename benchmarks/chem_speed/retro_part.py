"""The Retro* part of benchmark `chem_speed`: our ``RetroStar`` against syntheseus's
``RetroStarSearch``, whole planning runs, interleaved repeats (issue 20, deliverable 3).

Two settings, each run as one subprocess per arm and repeat (ours in this venv, the peer in its
own), arm order rotated per repeat:

1. ``retro-star/<targets>/<iterations>it``: the search machinery alone. Both sides answer from
   one fixed table of single-step proposals (product -> reactants, probability), recorded by
   running our Retro*-0 with the template MLP on the targets and completed with every product
   either search asks for (``--fill-rounds``), and look the table's in-stock molecules up in a
   set. Everything is built before the clock starts on both sides (ours: the table model, which
   canonicalises the table once; the peer: every ``Molecule`` with ``canonicalize=False,
   make_rdkit_mol=False`` and every ``SingleProductReaction``), so neither side parses a
   molecule in the timed region (ours counts RDKit parses there: ``rdkit_parses``).
2. ``retro-star-mlp/<targets>/<iterations>it``: end to end with the template MLP in the loop.
   syntheseus wraps the same loaded model (a ``BackwardReactionModel`` whose reactions come from
   our model's ``propose``, uncached on our side since syntheseus caches) and our ``Stock``; both
   sides time the model's forward pass, rdchiral and the rest of the proposal function the same
   way (``retro_timing.py``).

Same rules on both sides: Retro*-0 (value 0), cost ``-log(clip(p, 1e-3, 1))``, top-50 proposals,
at most ``<iterations>`` expansions (model calls, cache hits included), depth <= 10 reactions,
no reactant that is the molecule or an ancestor, stop at the first solution, a fresh model cache
per target. Each worker collects and freezes its set-up objects (``gc.collect(); gc.freeze()``)
and then searches with the garbage collector on at its default thresholds.

Metrics: ``iterations_per_s`` (total expansions / total search seconds of a repeat; the
targets are searched ``passes`` times per repeat in the table setting), ``iterations_per_cpu_s``
(over the worker's CPU seconds), ``ratio_to_peer`` (ours / theirs, per repeat; ``_cpu``: of
the CPU figures), control arms of the table setting ``selfsup_gc_on`` (our search with
``pause_gc=False``) and ``syntheseus_gc_paused`` (the collector paused around each peer
search), ``solved`` (targets solved; must be equal), ``mean_iterations``, and in the MLP setting
``wall_seconds`` and the time shares ``model_seconds_share`` (fingerprints and forward pass),
``templates_seconds_share`` (the rest of the proposal function: rdchiral, canonicalising and
merging its outcomes), ``search_seconds_share`` (everything else).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_PEER = "/work/peers/syntheseus-venv/bin/python"
MAX_DEPTH = 10
TOP_K = 50
MIN_P = 1e-3
FILL_PASSES = 5  # searches per target in each of the peer's probes while completing the table
ARMS = ("selfsup", "syntheseus")
# the table setting's control arms: (worker, collector paused during each search)
CONTROLS = {"selfsup_gc_on": ("selfsup", False), "syntheseus_gc_paused": ("syntheseus", True)}

_STATE: dict = {}  # what measure() found, for describe()



def recording_model(mlp, table: dict[str, list]):
    """A single-step model that answers with ``mlp`` and writes every answer into ``table``
    (product -> [[reactants], probability], ...): the fixed proposal table of the Retro* speed
    comparisons, recorded by our search with the MLP."""
    from selfsup.chem.retro.core.single_step import SingleStepModel

    class Recording(SingleStepModel):
        def __init__(self) -> None:
            super().__init__(renormalize=False)

        def _propose(self, products, top_k):
            res = mlp.propose(products, top_k)
            for p, props in zip(products, res):
                table[p] = [[list(x.reactants), x.probability] for x in props]
            return res

    return Recording()

def settings(quick: bool) -> dict:
    if quick:
        return {"targets": 6, "iterations": 30, "passes": 2, "mlp_targets": 4,
                "mlp_iterations": 20, "fill_rounds": 3}
    return {"targets": 40, "iterations": 200, "passes": 5, "mlp_targets": 20,
            "mlp_iterations": 100, "fill_rounds": 8}


def add_arguments(parser) -> None:
    g = parser.add_argument_group("retro part")
    g.add_argument("--peer-python-syntheseus", default=DEFAULT_PEER,
                   help="python of the venv with syntheseus installed")
    g.add_argument("--model", default=None,
                   help="model.pt of a single-step run (default: the newest "
                        "runs/retro-single-step-*/model.pt)")
    g.add_argument("--retro-targets", type=int, default=None, help="targets (table setting)")
    g.add_argument("--retro-iterations", type=int, default=None, help="expansion limit (table)")
    g.add_argument("--retro-passes", type=int, default=None,
                   help="passes over the targets per repeat (table setting)")
    g.add_argument("--retro-mlp-targets", type=int, default=None, help="targets (MLP setting)")
    g.add_argument("--retro-mlp-iterations", type=int, default=None,
                   help="expansion limit (MLP setting)")
    g.add_argument("--retro-skip-mlp", action="store_true", help="leave out the MLP setting")
    g.add_argument("--retro-no-controls", action="store_true",
                   help="table setting without the control arms selfsup_gc_on and "
                        "syntheseus_gc_paused")
    g.add_argument("--retro-data-root", default=None, help="folder of reaction_templates_50k_*.csv")
    g.add_argument("--retro-cache-dir", default=None, help="prepared USPTO-50k arrays")


def _model_path(args) -> Path:
    if args.model:
        return Path(args.model)
    found = sorted((ROOT / "runs").glob("retro-single-step-*/model.pt"),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no trained single-step model: train one (selfsup chem "
                         "train-single-step --config configs/retro/single_step_cpu.yaml "
                         "optim.epochs=3) or pass --model")
    return found[-1]


def _settings(quick: bool, args) -> dict:
    st = settings(quick)
    for k, flag in (("targets", "retro_targets"), ("iterations", "retro_iterations"),
                    ("passes", "retro_passes"), ("mlp_targets", "retro_mlp_targets"),
                    ("mlp_iterations", "retro_mlp_iterations")):
        if getattr(args, flag, None) is not None:
            st[k] = getattr(args, flag)
    return st


def _worker(arm: str, job: dict, peer_python: str) -> dict:
    side, pause = CONTROLS.get(arm, (arm, arm == "selfsup"))
    python = sys.executable if side == "selfsup" else peer_python
    script = HERE / f"retro_worker_{side}.py"
    run = subprocess.run([python, str(script)], input=json.dumps({**job, "gc_pause": pause}),
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{arm} worker ({python}) failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def _prepare(st: dict, args, out: Path, log) -> dict:
    """Targets, stock and the proposal table (cached in ``out``; reused when the model, the
    targets and the iteration limit are the same)."""
    from selfsup.io import atomic_write_json

    model_path = _model_path(args)
    n_targets = max(st["targets"], st["mlp_targets"])
    meta_path, stock_path = out / "retro_targets.json", out / "retro_stock.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if len(meta.get("targets", [])) < n_targets or not stock_path.is_file():
        from selfsup.chem.retro.workflows.route_benchmark import (
            build_route_benchmark,
            default_stock,
            load_uspto_reactions,
        )

        reactions = load_uspto_reactions(args.retro_data_root, args.retro_cache_dir)
        stock = default_stock(reactions)
        bench = build_route_benchmark(reactions, stock=stock)
        multi = [t.smiles for t in bench.targets["test"] if t.length >= 2]
        meta = {"targets": multi[:n_targets], "available": len(multi),
                "stock": stock.describe()}
        atomic_write_json(stock_path, {"inchikeys": list(stock), "name": stock.name,
                                       "source": stock.source})
        atomic_write_json(meta_path, meta)
    log(f"retro: {len(meta['targets'])} held-out USPTO-50k targets needing >= 2 steps (of "
        f"{meta['available']}); stock {meta['stock']['size']} molecules")

    table_path = out / "retro_table.json"
    key = {"model": str(model_path), "targets": meta["targets"][: st["targets"]],
           "iterations": st["iterations"], "top_k": TOP_K, "max_depth": MAX_DEPTH}
    old = json.loads(table_path.read_text()) if table_path.is_file() else {}
    if old.get("key") == key and old.get("complete") == FILL_PASSES:
        log(f"retro: table of {len(old['table'])} products reused from {table_path}")
        return {"meta": meta, "table": table_path, "model": model_path,
                "stock_file": stock_path, "table_products": len(old["table"])}

    import torch

    from selfsup.chem.retro.core.search import RetroStar
    from selfsup.chem.retro.core.stock import Stock
    from selfsup.chem.retro.models.mlp import MLPSingleStepModel

    torch.set_num_threads(getattr(args, "threads", None) or 1)
    keys = json.loads(stock_path.read_text())
    stock = Stock(set(keys["inchikeys"]), name=keys["name"], source=keys["source"])
    mlp = MLPSingleStepModel.load(model_path)
    table: dict[str, list] = old["table"] if old.get("key") == key else {}

    targets = key["targets"]
    if not table:
        t0 = time.perf_counter()
        rec = RetroStar(recording_model(mlp, table), stock, top_k=TOP_K,
                        max_iterations=st["iterations"], max_depth=MAX_DEPTH,
                        min_probability=MIN_P)
        for t in targets:
            rec.run(t)
        log(f"retro: recorded {len(table)} products with the MLP in "
            f"{time.perf_counter() - t0:.0f} s")

    def write(complete: int) -> None:
        mols = set(targets) | set(table)
        for props in table.values():
            for reactants, _ in props:
                mols.update(reactants)
        atomic_write_json(table_path, {"key": key, "complete": complete, "table": table,
                                       "stock": sorted(m for m in mols if m in stock),
                                       "stock_source": stock.describe()["source"]})

    # syntheseus's order among equal priorities changes from process to process (its graph
    # nodes hash by id), so its probes search every target FILL_PASSES times per round
    for rnd in range(st["fill_rounds"] + 1):
        write(0)
        missing = set()
        for arm in ARMS:
            job = _job("table", st, targets, FILL_PASSES if arm == "syntheseus" else 1,
                       table_path, args, model_path, stock_path)
            missing.update(_worker(arm, job, args.peer_python_syntheseus)["misses"])
        log(f"retro: fill round {rnd}: table {len(table)} products, {len(missing)} missing")
        if not missing:
            write(FILL_PASSES)
            break
        todo = sorted(missing)
        for i in range(0, len(todo), 64):
            recording_model(mlp, table).propose(todo[i:i + 64], TOP_K)
    else:
        log("retro: the table is still incomplete after the fill rounds; timed runs count "
            "their misses (a miss is a molecule without proposals)")
    return {"meta": meta, "table": table_path, "model": model_path, "stock_file": stock_path,
            "table_products": len(table)}


def _job(mode: str, st: dict, targets: list[str], passes: int, table_path: Path, args,
         model_path: Path, stock_path: Path) -> dict:
    mlp = mode == "mlp"
    return {"mode": mode, "table": str(table_path), "targets": targets, "passes": passes,
            "max_iterations": st["mlp_iterations" if mlp else "iterations"],
            "max_depth": MAX_DEPTH, "top_k": TOP_K, "min_p": MIN_P, "model": str(model_path),
            "stock": str(stock_path), "threads": getattr(args, "threads", None) or 1,
            "worker_dir": str(HERE),
            "extra_paths": [sysconfig.get_paths()["purelib"], str(ROOT / "src")]}


def _interleaved(job: dict, repeats: int, args, log, tag: str,
                 arms: tuple[str, ...] = ARMS) -> dict[str, list[dict]]:
    """``repeats`` rounds of one worker per arm, the arm order rotated each round."""
    res: dict[str, list[dict]] = {a: [] for a in arms}
    for rep in range(repeats):
        k = rep % len(arms)
        order = arms[k:] + arms[:k]
        for arm in order:
            load = os.getloadavg()
            out = _worker(arm, job, args.peer_python_syntheseus)
            out["loadavg"] = [load, os.getloadavg()]
            res[arm].append(out)
            recs = out["records"]
            it = sum(r["iterations"] for r in recs)
            secs = sum(r["time_s"] for r in recs)
            cpu = sum(r["cpu_s"] for r in recs)
            log(f"retro {tag} repeat {rep}: {arm}: {it / secs:.1f} it/s ({it} iterations, "
                f"{secs:.2f} s, CPU {cpu:.2f} s), solved "
                f"{sum(r['success'] for r in recs)}/{len(recs)}, load {load[0]:.2f}")
    return res


def _rows(setting: str, res: dict[str, list[dict]], n_targets: int, mlp: bool) -> tuple:
    from common import row

    rows, per = [], {}
    for arm in res:
        reps = res[arm]
        ips = [sum(r["iterations"] for r in o["records"])
               / sum(r["time_s"] for r in o["records"]) for o in reps]
        ipc = [sum(r["iterations"] for r in o["records"])
               / sum(r["cpu_s"] for r in o["records"]) for o in reps]
        first = [r for r in reps[0]["records"][:n_targets]]
        per[arm] = {"ips": ips, "ipc": ipc, "first": first}
        rows.append(row(setting, arm, "iterations_per_s", ips))
        rows.append(row(setting, arm, "iterations_per_cpu_s", ipc))
        rows.append(row(setting, arm, "solved",
                        [sum(r["success"] for r in o["records"][:n_targets]) for o in reps]))
        rows.append(row(setting, arm, "mean_iterations",
                        [statistics.fmean(r["iterations"] for r in o["records"][:n_targets])
                         for o in reps]))
        if mlp:
            wall = [sum(r["time_s"] for r in o["records"]) for o in reps]
            model = [sum(r["model_s"] for r in o["records"]) for o in reps]
            prop = [sum(r["propose_s"] for r in o["records"]) for o in reps]
            rows.append(row(setting, arm, "wall_seconds", wall))
            rows.append(row(setting, arm, "model_seconds_share",
                            [m / w for m, w in zip(model, wall)]))
            rows.append(row(setting, arm, "templates_seconds_share",
                            [(p - m) / w for p, m, w in zip(prop, model, wall)]))
            rows.append(row(setting, arm, "search_seconds_share",
                            [(w - p) / w for p, w in zip(prop, wall)]))
            rows.append(row(setting, arm, "rdchiral_seconds_share",
                            [sum(r["rdchiral_s"] for r in o["records"]) / w
                             for o, w in zip(reps, wall)]))
    ratio = [a / b for a, b in zip(per["selfsup"]["ips"], per["syntheseus"]["ips"])]
    rows.append(row(setting, "selfsup", "ratio_to_peer", ratio))
    rows.append(row(setting, "selfsup", "ratio_to_peer_cpu",
                    [a / b for a, b in zip(per["selfsup"]["ipc"], per["syntheseus"]["ipc"])]))
    if "selfsup_gc_on" in per:
        rows.append(row(setting, "selfsup_gc_on", "ratio_to_peer", [
            a / b for a, b in zip(per["selfsup_gc_on"]["ips"], per["syntheseus"]["ips"])]))
    if "syntheseus_gc_paused" in per:
        rows.append(row(setting, "selfsup", "ratio_to_peer_gc_paused", [
            a / b for a, b in zip(per["selfsup"]["ips"], per["syntheseus_gc_paused"]["ips"])]))
    if mlp:
        wall = {a: [sum(r["time_s"] for r in o["records"]) for o in res[a]] for a in ARMS}
        rows.append(row(setting, "selfsup", "wall_ratio_peer_over_ours",
                        [b / a for a, b in zip(wall["selfsup"], wall["syntheseus"])]))
    agree = sum(a["success"] == b["success"] and a["iterations"] == b["iterations"]
                for a, b in zip(per["selfsup"]["first"], per["syntheseus"]["first"]))
    same_success = sum(a["success"] == b["success"]
                       for a, b in zip(per["selfsup"]["first"], per["syntheseus"]["first"]))
    return rows, {"agree_success_and_iterations": agree, "agree_success": same_success,
                  "loadavg": {a: [o["loadavg"] for o in res[a]] for a in res},
                  "gc_collections": {a: [o["gc_collections"] for o in res[a]] for a in res},
                  "rdkit_parses_selfsup": [o.get("rdkit_parses") for o in res["selfsup"]],
                  "misses": {a: sorted({m for o in res[a] for m in o["misses"]}) for a in res},
                  "syntheseus_version": res["syntheseus"][0].get("version"),
                  "per_target": {a: [{k: r[k] for k in ("target", "success", "iterations")}
                                     for r in per[a]["first"]] for a in ARMS}}


def measure(quick: bool, repeats: int, args, out_dir: Path) -> list[dict]:
    """Rows of both Retro* settings (see the module docstring)."""
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(ROOT / "src"))
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[chem_speed {time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    st = _settings(quick, args)
    out_dir.mkdir(parents=True, exist_ok=True)
    prep = _prepare(st, args, out_dir, log)
    targets = prep["meta"]["targets"]
    rows, details = [], {}

    setting = f"retro-star/{st['targets']}/{st['iterations']}it"
    job = _job("table", st, targets[: st["targets"]], st["passes"], prep["table"], args,
               prep["model"], prep["stock_file"])
    arms = ARMS + tuple(CONTROLS) if not args.retro_no_controls else ARMS
    r, d = _rows(setting, _interleaved(job, repeats, args, log, "table", arms), st["targets"],
                 False)
    rows += r
    details[setting] = d
    if not args.retro_skip_mlp:
        setting = f"retro-star-mlp/{st['mlp_targets']}/{st['mlp_iterations']}it"
        job = _job("mlp", st, targets[: st["mlp_targets"]], 1, prep["table"], args,
                   prep["model"], prep["stock_file"])
        r, d = _rows(setting, _interleaved(job, repeats, args, log, "mlp"), st["mlp_targets"],
                     True)
        rows += r
        details[setting] = d
    from selfsup.io import atomic_write_json

    atomic_write_json(out_dir / "retro_details.json",
                      {"settings": st, "model": str(prep["model"]),
                       "table_products": prep["table_products"], "details": details})
    _STATE.update(st=st, prep=prep, details=details, repeats=repeats)
    for rw in rows:
        if rw["metric"] in ("iterations_per_s", "ratio_to_peer", "solved"):
            log(f"retro: {rw['setting']} {rw['arm']} {rw['metric']} {rw['mean']:.3f} "
                f"(per repeat {', '.join(f'{v:.4g}' for v in rw['seeds'])})")
    return rows


def describe(args) -> str:
    st = _STATE.get("st") or settings(getattr(args, "quick", False))
    prep, details = _STATE.get("prep"), _STATE.get("details", {})
    lines = [
        "**Retro\\*** (ours `RetroStar` against syntheseus's `RetroStarSearch`; "
        "`benchmarks/chem_speed/retro_part.py`). One subprocess per arm and repeat (ours in "
        "this venv, syntheseus in its own), repeats interleaved, arm order rotated per repeat. "
        "Both sides: Retro*-0 (value 0), cost -log(clip(p, 1e-3, 1)), top-50 proposals, "
        f"depth <= {MAX_DEPTH} reactions, no reactant that is the molecule or an ancestor, "
        "first solution stops, a fresh model cache per target; each worker runs "
        "`gc.collect(); gc.freeze()` after its set-up and then searches with the collector on "
        "at default thresholds (our `RetroStar` pauses it inside each search: see below). "
        "Targets: held-out USPTO-50k products of the chained-route benchmark "
        "needing >= 2 steps, in order.",
        "",
        f"`retro-star/{st['targets']}/{st['iterations']}it`: the search machinery alone. Both "
        "sides answer from one fixed table of MLP proposals "
        + (f"({prep['table_products']} products, from `{prep['model']}`) " if prep else "")
        + "and look the table's in-stock molecules up in a set; everything is built before the "
        "clock starts (ours: the table model; syntheseus: every `Molecule` with "
        "`canonicalize=False, make_rdkit_mol=False` and every `SingleProductReaction`), so "
        "neither side parses a molecule while timed (a product missing from the table gets no "
        "proposal; the misses are counted below). syntheseus breaks ties between equal "
        "priorities in an order that changes from process to process (its graph nodes hash "
        "by id), so its iteration counts vary a little between repeats. Each repeat searches "
        "the targets "
        f"{st['passes']} times; iterations_per_s = expansions / search seconds (wall), "
        "iterations_per_cpu_s the same over the worker's CPU seconds (less sensitive to the "
        "machine's load). Our `RetroStar` pauses Python's garbage collector during each "
        "search (library default, `pause_gc=True`); two control arms show what that is worth "
        "on each side: `selfsup_gc_on` (ours with `pause_gc=False`) and "
        "`syntheseus_gc_paused` (the collector paused around each `run_from_mol` of the "
        "peer; `ratio_to_peer_gc_paused` compares ours with it).",
        "",
        f"`retro-star-mlp/{st['mlp_targets']}/{st['mlp_iterations']}it`: end to end with the "
        "template MLP (1 torch thread): syntheseus wraps the same loaded model (its "
        "`BackwardReactionModel` returns our model's `propose` output; our cache off there, "
        "syntheseus caches) and our `Stock` (InChIKey look-up). Shares of the search seconds: "
        "`model` = fingerprints + forward pass, `templates` = the rest of the proposal "
        "function (rdchiral, canonicalising and merging outcomes; rdchiral alone in "
        "`rdchiral_seconds_share`), `search` = everything else (the search and, for "
        "syntheseus, its adapter's `Molecule`/`SingleProductReaction` objects).",
    ]
    for setting, d in details.items():
        load = {a: [round(v[0][0], 2) for v in runs] for a, runs in d["loadavg"].items()}
        lines += ["", f"{setting}: targets agreeing on success {d['agree_success']}, on success "
                  f"and iteration count {d['agree_success_and_iterations']}; table misses "
                  f"{ {a: len(m) for a, m in d['misses'].items()} }; RDKit parses in our timed "
                  f"region {d['rdkit_parses_selfsup']}; gc collections (gen 0/1/2) per repeat "
                  f"{d['gc_collections']}; 1-min load average before each worker {load}; "
                  f"syntheseus {d['syntheseus_version']}."]
    return "\n".join(lines)
