"""Shared helpers of the benchmark scripts: the one results format (JSON + Markdown), --verify,
and the resumable units of the vision benchmarks (augself, selfpatch): plan, unit cache, run
folders, report tables."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from selfsup.io import atomic_write_json, atomic_write_text  # noqa: E402
from selfsup.provenance import numeric_differences, provenance, summary  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    try:
        import torch

        dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = torch.get_num_threads()
    except Exception:  # pragma: no cover
        dev, threads = "unknown", "?"
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        pass
    return (f"{os.cpu_count()} CPU cores{mem}, {platform.machine()}, {dev}, "
            f"torch threads {threads}")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def row(setting: str, arm: str, metric: str, values: list[float]) -> dict:
    # a JSON null (NaN/Infinity are written as null) reads back as nan; mean and std are over
    # the seeds with a number (e.g. no mean route length where a seed solved nothing)
    vals = [math.nan if v is None else float(v) for v in values]
    finite = [v for v in vals if math.isfinite(v)]
    return {
        "setting": setting, "arm": arm, "metric": metric,
        "mean": statistics.fmean(finite) if finite else float("nan"),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "seeds": vals,
    }


def write_results(name: str, mode: str, command: str, started: str, wall: float,
                  rows: list[dict], out_dir: Path | None, notes: str = "",
                  extra: dict | None = None) -> tuple[Path, Path]:
    """Write <name>.json and <name>.md (full mode: benchmarks/results/; quick: out_dir)."""
    target = RESULTS if (mode == "full" and out_dir is None) else Path(out_dir or ".")
    doc = {"benchmark": name, "mode": mode, "command": command, "machine": machine(),
           "provenance": provenance(), "started": started, "wall_seconds": round(wall, 1),
           "rows": rows}
    if extra:
        doc.update(extra)
    jp = atomic_write_json(target / f"{name}.json", doc)
    md = [f"# Benchmark `{name}` ({mode} mode)", "",
          f"Command: `{command}`  ", f"Machine: {doc['machine']}  ",
          f"Provenance (the process that wrote this file): {summary(doc['provenance'])}  ",
          f"Started: {started}, wall time {wall / 60:.1f} min", ""]
    if notes:
        md += [notes, ""]
    md += ["| setting | arm | metric | mean | std | seeds |", "|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ", ".join(f"{v:.4g}" for v in r["seeds"])
        md.append(f"| {r['setting']} | {r['arm']} | {r['metric']} | {r['mean']:.4f} | "
                  f"{r['std']:.4f} | {seeds} |")
    mp = atomic_write_text(target / f"{name}.md", "\n".join(md) + "\n")
    return jp, mp


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


RESERVED_KEYS = ("benchmark", "mode", "command", "machine", "provenance", "started",
                 "wall_seconds", "rows")


def write_shared_results(name: str, mode: str, command: str, started: str, wall: float,
                         out_dir: Path | None, rows: list[dict], replaces, section: str,
                         notes: str, entries: dict) -> tuple[Path, Path]:
    """Write ``rows`` into a results file that several scripts share.

    The file's earlier rows for which ``replaces(row)`` is true are dropped and ``rows`` are added.
    Other scripts' rows, notes sections and top-level entries stay. This script's notes section
    ``section`` becomes ``notes``, and ``entries`` (top-level keys) are updated. The Markdown
    joins every script's section, in key order.
    """
    target = RESULTS if (mode == "full" and out_dir is None) else Path(out_dir or ".")
    old = load_json(target / f"{name}.json")
    kept = [r for r in old.get("rows", []) if not replaces(r)]
    sections = dict(old.get("notes_sections", {}))
    sections[section] = notes
    extra = {k: v for k, v in old.items() if k not in RESERVED_KEYS}
    extra.update(entries, notes_sections=sections)
    return write_results(name, mode, command, started, wall, kept + rows, out_dir,
                         "\n\n".join(sections[k] for k in sorted(sections)), extra)


# ------------------------------------------------------------------ --verify: old vs new figures
PROVENANCE_ORDER = ("commit", "dirty", "torch", "torch_git", "torch_cpu_capability", "mkl",
                    "onednn", "torch_blas", "torch_threads", "numpy", "rdkit", "python",
                    "cpu_model", "cpu_id", "isa_flags", "cpu_cores", "cpu_cores_usable", "arch",
                    "platform")


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def compare_units(units: list[dict], figures: list[str] | tuple,
                  timing: list[str] | tuple = ()) -> list[dict]:
    """Side-by-side rows for re-run units. ``units``: ``{"key", "old", "new"}`` each (the
    committed cache entry and the re-run's). One row per unit and metric that either side holds
    as a number: old, new, diff (new - old), rel_diff (diff / |old|), equal (bit for bit at the
    precision the cache stores; None where a side lacks the metric). ``timing`` metrics are
    listed with kind "timing": they are never expected to agree."""
    rows = []
    for u in units:
        old, new = u.get("old") or {}, u.get("new") or {}
        for kind, metrics in (("figure", figures), ("timing", timing)):
            for m in metrics:
                a, b = _number(old.get(m)), _number(new.get(m))
                if a is None and b is None:
                    continue
                both = a is not None and b is not None
                nan = both and math.isnan(a) and math.isnan(b)
                diff = None if not both or nan else b - a
                rows.append({"unit": u["key"], "metric": m, "kind": kind, "old": a, "new": b,
                             "diff": diff,
                             "rel_diff": diff / abs(a) if diff is not None and a else None,
                             "equal": (nan or a == b) if both else None})
    return rows


def comparison_summary(rows: list[dict]) -> dict:
    """How many figures (timing rows aside) agree bit for bit, and the largest difference."""
    figs = [r for r in rows if r["kind"] == "figure" and r["equal"] is not None]
    differ = [r for r in figs if not r["equal"]]
    worst = max(differ, key=lambda r: abs(r["diff"]) if r["diff"] is not None else math.inf,
                default=None)
    verdict = ("no figure to compare" if not figs else
               "bit-exact" if not differ else f"{len(differ)} of {len(figs)} figures differ")
    return {"figures": len(figs), "equal": len(figs) - len(differ), "verdict": verdict,
            "largest": None if worst is None else {k: worst[k] for k in
                                                   ("unit", "metric", "old", "new", "diff")}}


def _fmt(v, spec: str = ".10g") -> str:
    return "-" if v is None else format(v, spec)


def format_comparison(rows: list[dict]) -> str:
    """A Markdown table of ``compare_units`` rows (reads as plain text on a terminal too)."""
    lines = ["| unit | metric | committed | re-run | diff | rel. diff | same |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        same = ("(timing)" if r["kind"] == "timing" else "-" if r["equal"] is None
                else "yes" if r["equal"] else "NO")
        lines.append(f"| {r['unit']} | {r['metric']} | {_fmt(r['old'])} | {_fmt(r['new'])} | "
                     f"{_fmt(r['diff'], '+.4g')} | {_fmt(r['rel_diff'], '+.2%')} | {same} |")
    return "\n".join(lines)


def format_provenance_pair(old: dict | None, new: dict | None) -> str:
    """A Markdown table of two provenance records side by side; the keys that can change a
    torch-computed figure and differ are marked."""
    if not old and not new:
        return "Provenance: not recorded on either side."
    differ = set(numeric_differences(old, new))
    keys = [k for k in PROVENANCE_ORDER if k in (old or {}) or k in (new or {})]
    keys += sorted(k for k in {*(old or {}), *(new or {})} if k not in keys)

    def cell(p, k):
        if not p:
            return "not recorded"
        v = p.get(k)
        return " ".join(v) if isinstance(v, list) else "?" if v is None else str(v)

    lines = ["| | committed unit | re-run |", "|---|---|---|"]
    for k in keys:
        lines.append(f"| {k}{' **(differs)**' if k in differ else ''} | {cell(old, k)} | "
                     f"{cell(new, k)} |")
    return "\n".join(lines)


def verification_text(name: str, command: str, started: str, units: list[dict],
                      rows: list[dict]) -> str:
    """The Markdown report of a ``--verify`` run: summary, side-by-side figures, provenance."""
    s = comparison_summary(rows)
    worst = s["largest"]
    md = [f"# Verification of committed `{name}` units", "", f"Command: `{command}`  ",
          f"Started: {started}", "",
          f"**{s['verdict']}**: {s['equal']} of {s['figures']} figures equal bit for bit (at "
          "the precision the cache stores)"
          + (f"; largest difference {worst['unit']} {worst['metric']}: {_fmt(worst['old'])} -> "
             f"{_fmt(worst['new'])} ({_fmt(worst['diff'], '+.4g')})" if worst else "") + ".",
          "", format_comparison(rows), ""]
    for u in units:
        md += [f"## {u['key']}", ""]
        if u.get("old_context"):
            md += [f"Committed unit: {u['old_context']}", ""]
        md += [format_provenance_pair(u.get("old_provenance"), u.get("new_provenance")), ""]
    return "\n".join(md)


def write_verification(out: Path, name: str, command: str, started: str, units: list[dict],
                       rows: list[dict]) -> tuple[Path, Path, str]:
    """Write ``<out>/<name>_verify.{json,md}``; returns both paths and the Markdown text."""
    text = verification_text(name, command, started, units, rows)
    doc = {"benchmark": name, "command": command, "started": started,
           "provenance": provenance(), "summary": comparison_summary(rows), "rows": rows,
           "units": units}
    jp = atomic_write_json(Path(out) / f"{name}_verify.json", doc)
    mp = atomic_write_text(Path(out) / f"{name}_verify.md", text + "\n")
    return jp, mp, text


def select_cheapest(candidates: dict[str, float], group_of, per_group: int = 1) -> list[str]:
    """The ``per_group`` cheapest keys of each group: ``candidates`` maps unit keys to their
    estimated cost (seconds), ``group_of(key)`` names the group (arm, mode). Result in the
    order of the groups' first appearance, cheapest first within each."""
    groups: dict[str, list[str]] = {}
    for key in candidates:
        groups.setdefault(group_of(key), []).append(key)
    return [k for keys in groups.values()
            for k in sorted(keys, key=lambda k: candidates[k])[:per_group]]


def verify_candidates(cache: dict, tasks=None, arms=None, seeds=None,
                      budget: int | None = None) -> dict[str, float]:
    """The ``task|arm|seed|budget`` units of a unit cache that pass the filters (None or empty:
    any), each with its cost in seconds (``unit_seconds``, else ``wall_seconds``, else inf):
    what ``--verify`` picks the cheapest from (:func:`select_cheapest`)."""
    cost = {}
    for key, unit in cache.items():
        if key.count("|") != 3 or not isinstance(unit, dict):
            continue
        task, arm, seed, b = key.split("|")
        if ((tasks and task not in tasks) or (arms and arm not in arms)
                or (seeds and int(seed) not in seeds) or (budget and int(b) != budget)):
            continue
        cost[key] = float(unit.get("unit_seconds") or unit.get("wall_seconds") or math.inf)
    return cost


def verify_folder(out: str | None, name: str) -> Path:
    """The scratch folder of a ``--verify`` run: ``out``, else runs/verify-<name>-<time>. Never
    the committed results folder (its caches must stay as they are)."""
    import time

    path = Path(out) if out else (Path("runs") / f"verify-{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.resolve() == RESULTS.resolve() or RESULTS.resolve() in path.resolve().parents:
        raise SystemExit(f"--verify writes into a scratch folder, not {RESULTS}; pass another "
                         "--out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def provenance_census(units) -> str:
    """One sentence for a results file's notes: how many cached units ran on which torch build,
    CPU kernels, CPU and thread count (their recorded provenance), and how many recorded none;
    when they ran on more than one CPU, that their times compare only within one."""
    counts: dict[str, int] = {}
    cpus = set()
    for u in units:
        p = u.get("provenance") if isinstance(u, dict) else None
        if p:
            cpus.add((p.get("cpu_model"), p.get("cpu_id")))
        label = ("without provenance (finished before units recorded it)" if not p else
                 f"torch {p.get('torch')} ({p.get('torch_cpu_capability')} kernels) on "
                 f"{p.get('cpu_model')} [{p.get('cpu_id')}], {p.get('torch_threads')} thread(s)")
        counts[label] = counts.get(label, 0) + 1
    if not counts:
        return ""
    return ("Units by provenance: " + "; ".join(
        f"{n} {label}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1])) + "."
        + (" Their times are comparable only within one CPU." if len(cpus) > 1 else ""))


def claim_unit(run_root: Path, key: str) -> Path | None:
    """A lock file for one unit, created atomically (O_EXCL) and holding this process's pid, so
    two runners sharing a cache never work on (or resume) the same unit at once. A lock whose
    process is gone is stale and taken over. None: a live runner holds the unit."""
    run_root.mkdir(parents=True, exist_ok=True)
    lock = run_root / (key.replace("|", "-").replace("/", "-") + ".lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text = lock.read_text().strip()
                if not text:
                    return None  # just created by another runner, pid not written yet
                os.kill(int(text), 0)  # raises if no such process
                return None
            except (ValueError, ProcessLookupError, FileNotFoundError):
                lock.unlink(missing_ok=True)  # stale: its runner was killed
                continue
            except PermissionError:  # a live process of another user
                return None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def previous_vision_run(run_root: Path, name: str, config: dict,
                        finished_files: tuple[str, ...] = ("results.json",)) -> Path | None:
    """The newest ``selfsup vision train`` run directory of a unit that a killed benchmark left
    behind: same run name and the same config (torch threads and checkpoint frequency aside),
    with a last checkpoint, or finished with every file of ``finished_files`` (paths relative to
    the run). None when there is none. Resuming it loses at most the work since the last
    checkpoint (10 minutes by default, see trainer.checkpoint_every_minutes)."""
    import json

    import yaml

    from selfsup.config import load_config, to_dict
    from selfsup.errors import ConfigError
    from selfsup.vision.train import VisionTrainConfig

    def key(cfg: dict) -> dict:
        # through the config schema, so a run saved before a key was added compares equal
        cfg = to_dict(load_config(VisionTrainConfig, base=cfg))
        for k in ("threads", "checkpoint_every_minutes", "checkpoint_every_n_steps"):
            cfg.get("trainer", {}).pop(k, None)  # they do not change what a run computes
        return cfg

    found = None
    for path in sorted(Path(run_root).glob(f"{name}-*")):
        try:
            meta = json.loads((path / "run.json").read_text())
            cfg = yaml.safe_load((path / "config.yaml").read_text())
        except (OSError, ValueError, yaml.YAMLError):
            continue  # not a run directory, or one cut off while it was being created
        if meta.get("name") != name or not isinstance(cfg, dict):
            continue
        try:
            if key(cfg) != key(config):
                continue
        except ConfigError:  # a run of an older schema
            continue
        if ((path / "checkpoints" / "last.ckpt").is_file()
                or (meta.get("status") == "finished"
                    and all((path / f).is_file() for f in finished_files))):
            found = path
    return found


# ------------------------------------------------------------------ resumable units of a vision
# benchmark (augself, selfpatch): one unit = one (setting, seed, arm), trained, evaluated and
# kept in a unit cache that several runners may share
REPO = Path(__file__).resolve().parents[1]


def unit_key(setting: str, seed: int, arm: str) -> str:
    """A unit's key in the cache: ``<setting>|<seed>|<arm>``."""
    return f"{setting}|{seed}|{arm}"


def run_name(setting: str, arm: str, seed: int) -> str:
    """A unit's run name (no ``/``): ``<setting with - for />-<arm>-s<seed>``."""
    return f"{setting.replace('/', '-')}-{arm}-s{seed}"


def unit_overrides(setting: str, spec: dict, arm: str, seed: int, threads: int | None,
                   run_root: Path, arm_overrides: dict[str, list[str]]) -> list[str]:
    """The config overrides of one unit: the setting's recipe (``spec["overrides"]``), the
    arm's (``arm_overrides[arm]``), the torch threads (if any), seed, run name and run
    folder."""
    extra = [f"trainer.threads={threads}"] if threads else []
    return (list(spec["overrides"]) + arm_overrides[arm] + extra
            + [f"seed={seed}", f"name={run_name(setting, arm, seed)}", f"run_root={run_root}"])


def arm_seeds(arm: str, seeds: list[int] | None, reference_seeds: list[int] | None,
              quick: bool, references: tuple[str, ...],
              default_reference_seeds: tuple[int, ...]) -> list[int]:
    """Seeds of an arm: --seeds (default 0 1 2, quick 0); the ``references`` arms
    --reference-seeds (default ``default_reference_seeds``), kept to --seeds when only --seeds
    is given."""
    default = [0] if quick else [0, 1, 2]
    if arm not in references:
        return list(seeds or default)
    if reference_seeds:
        return list(reference_seeds)
    return [s for s in default_reference_seeds if seeds is None or s in seeds]


def plan_units(chosen: dict[str, dict], arms: list[str] | None, seeds: list[int] | None,
               reference_seeds: list[int] | None, quick: bool, references: tuple[str, ...],
               default_reference_seeds: tuple[int, ...]) -> list[tuple[str, int, str]]:
    """Units in running order, seed-major (a benchmark stopped part way has whole seeds over
    the arms): (setting, seed, arm). ``chosen``: setting -> spec with its ``"arms"``; ``arms``:
    only these (None: all); seeds as :func:`arm_seeds`."""
    def of(a: str) -> list[int]:
        return arm_seeds(a, seeds, reference_seeds, quick, references, default_reference_seeds)

    units = []
    for setting, spec in chosen.items():
        use = [a for a in spec["arms"] if not arms or a in arms]
        all_seeds = sorted({s for a in use for s in of(a)})
        for s in all_seeds:
            units += [(setting, s, a) for a in use if s in of(a)]
    return units


def unit_planners(arm_overrides: dict[str, list[str]], references: tuple[str, ...],
                  default_reference_seeds: tuple[int, ...]):
    """:func:`unit_overrides`, :func:`arm_seeds` and :func:`plan_units` bound to a benchmark's
    arms (``arm_overrides``) and reference arms with their default seeds: (unit_overrides(
    setting, spec, arm, seed, threads, run_root), arm_seeds(arm, seeds, reference_seeds,
    quick), plan(chosen, arms, seeds, reference_seeds, quick))."""
    import functools

    return (functools.partial(unit_overrides, arm_overrides=arm_overrides),
            functools.partial(arm_seeds, references=references,
                              default_reference_seeds=default_reference_seeds),
            functools.partial(plan_units, references=references,
                              default_reference_seeds=default_reference_seeds))


def previous_selected_run(run_root: Path, name: str, config: dict) -> Path | None:
    """The unit's run left by a killed benchmark (:func:`previous_vision_run`); a finished one
    needs its selected weights too (the evaluation reads them)."""
    return previous_vision_run(run_root, name, config,
                               finished_files=("results.json", "checkpoints/best.pt"))


def init_vision_run(overrides: list[str]):
    """``random_init``: a finished run whose selected weights are the initial model of the
    config's seed (built as a training run builds it: ``seed_everything(seed)``, then the
    method), never trained. Returns (run, results)."""
    import lightning as L

    from selfsup.io import atomic_torch_save
    from selfsup.runs import start_run
    from selfsup.vision.train import VisionTrainConfig, _prepare, build_model

    def body(run, cfg) -> dict:
        data = _prepare(cfg)
        L.seed_everything(cfg.seed, workers=True, verbose=False)
        model = build_model(cfg, data.n_classes, data.in_channels, data.mean, data.std,
                            image_size=int(data.train_x.shape[-1]), total_steps=1)
        atomic_torch_save(model.state_dict(), run.checkpoint_dir / "best.pt")
        atomic_write_json(run.path / "data.json", data.summary())
        results = {"method": cfg.method, "steps": 0, "untrained": True,
                   "dataset": cfg.data.name, "data": data.summary()}
        run.finish(results)
        return results

    return start_run("vision.train", VisionTrainConfig, None, overrides, body)


def log_rows(run_dir: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (none if it has no log; bad lines skipped)."""
    rows = []
    p = Path(run_dir) / "metrics.jsonl"
    if p.is_file():
        for line in p.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def stored_path(path) -> str:
    """A path as a unit cache stores it: relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def train_unit(overrides: list[str], run_root: Path, untrained: bool, tag: str,
               threads: int | None):
    """Train one unit's run on ``threads`` torch threads (None: as they are), go on with the
    one a killed benchmark left (:func:`previous_selected_run`), or (``untrained``) make its
    untrained run (:func:`init_vision_run`). Returns (run, results, config dict, resumed-from
    path or None, seconds)."""
    import torch

    from selfsup.config import load_config, to_dict
    from selfsup.vision.train import VisionTrainConfig, resume, train

    if threads:
        torch.set_num_threads(threads)
    cfg = to_dict(load_config(VisionTrainConfig, None, overrides))
    t0 = time.perf_counter()
    old = previous_selected_run(run_root, cfg["name"], cfg)
    if old is not None:
        print(f"{tag}   going on with {old}", flush=True)
        run, res = resume(old)
        resumed = str(old)
    elif untrained:
        run, res = init_vision_run(overrides)
        resumed = None
    else:
        run, res = train(None, overrides)
        resumed = None
    return run, res, cfg, resumed, time.perf_counter() - t0


def finish_unit(unit: dict, run_path, resumed: str | None, train_s: float,
                eval_s: float) -> dict:
    """Add a unit's run folder, resumed-from folder, wall times, torch threads and provenance
    to its cache entry ``unit`` (in place; returned)."""
    import torch

    unit.update(run=stored_path(run_path), resumed_from=resumed and stored_path(resumed),
                train_seconds=round(train_s, 1), eval_seconds=round(eval_s, 1),
                unit_seconds=round(train_s + eval_s, 1), threads=torch.get_num_threads())
    unit["provenance"] = provenance()
    return unit


def pending_metrics(store: Path, metrics, params_of) -> tuple[dict, list[str]]:
    """A unit's stored evaluation (``store``: metric -> record with its ``params``) and the
    ``metrics`` still to evaluate: those not stored with the arguments ``params_of(metric)``."""
    done = load_json(store)
    return done, [m for m in metrics
                  if not (m in done and done[m].get("params") == params_of(m))]


def loss_summary(rows: list[dict], keys) -> dict:
    """The training loss of a run's log ``rows``: the first of ``keys`` it logs, its first and
    last value and how many were not finite ({} when it logs none)."""
    loss_key = next((k for k in keys if any(k in r for r in rows)), None)
    if not loss_key:
        return {}
    losses = [r[loss_key] for r in rows if loss_key in r]
    return dict(loss_name=loss_key, loss_first=losses[0], loss_last=losses[-1],
                nonfinite_losses=sum(1 for v in losses if not math.isfinite(v)))


def merge_cache(path: Path, cache: dict) -> dict:
    """The cache on disk with this runner's entries added (units finish many minutes apart, so
    merging right before each write is enough for runners that share the file); invocations
    are united, a finished record winning over its unfinished copy."""
    disk = load_json(path)
    out = {**cache, **disk}
    runs: dict = {}
    for i in [*cache.get("invocations", []), *disk.get("invocations", [])]:
        k = (i["started"], i["command"])
        if k not in runs or i.get("seconds") is not None:
            runs[k] = i
    if runs:
        out["invocations"] = sorted(runs.values(), key=lambda i: i["started"])
    return out


def units_of(cache: dict) -> dict[str, dict]:
    """The unit entries of a cache (keys ``setting|seed|arm``), invocations etc. aside."""
    return {k: v for k, v in cache.items() if k.count("|") == 2 and isinstance(v, dict)}


def start_invocation(cache: dict, cache_path: Path, started: str, command: str) -> dict:
    """Record this runner in ``cache`` (already merged with the file by the caller) and write it
    at the runner's start (``started``, ``command``, ``seconds`` None until
    :func:`finish_invocation`), so a runner that is killed still shows in the report. Returns
    the invocation record."""
    invocation = {"started": started, "command": command, "seconds": None}
    cache.setdefault("invocations", []).append(invocation)
    # merged again right before the write: two runners started in the same second each read
    # the file before the other wrote, and the later write dropped the earlier's record
    cache.update(merge_cache(cache_path, cache))
    atomic_write_json(cache_path, cache)
    return invocation


def finish_invocation(cache: dict, cache_path: Path, invocation: dict, t0: float,
                      settle=None) -> dict:
    """Write the runner's seconds since ``t0`` into its invocation record; returns the cache
    merged with the file (through ``settle`` when given)."""
    invocation["seconds"] = round(time.perf_counter() - t0, 1)
    cache = merge_cache(cache_path, {**cache, "invocations": [invocation]})
    cache = settle(cache) if settle else cache
    atomic_write_json(cache_path, cache)
    return cache


def run_planned(plan: list[tuple[str, object]], cache: dict, cache_path: Path, run_root: Path,
                tag: str, describe, settle=None, stamp: bool = False, lock_name=None) -> dict:
    """The unit loop of the benchmarks. ``plan`` holds (key, run) pairs in their order; a key
    already in the cache (merged with the file on disk before each unit, so runners sharing it
    see each other's units) is skipped, and so is one whose lock a live runner holds
    (:func:`claim_unit`; its lock is named ``lock_name(key)`` when given, e.g. for keys too long
    for a file name). Otherwise ``run()`` gives the unit's entry, written to ``cache_path``
    at once; with ``stamp`` it gets the ``unit_seconds`` of ``run()`` (start-up included) and
    the process's ``provenance``. Prints ``tag i/n key`` before and ``describe(entry)`` after
    each unit. ``settle(cache)``, when given, is applied after every merge (e.g. to set aside
    units of other settings, which then run again). Returns the cache."""
    settle = settle or (lambda c: c)
    for i, (key, run) in enumerate(plan):
        if key in (cache := settle(merge_cache(cache_path, cache))):
            continue
        lock = claim_unit(run_root, lock_name(key) if lock_name else key)
        if lock is None:
            print(f"{tag}   another runner is on {key}; skipped here", flush=True)
            continue
        print(f"{tag} {i + 1}/{len(plan)} {key}", flush=True)
        t_unit = time.perf_counter()
        try:
            unit = run()
        finally:
            lock.unlink(missing_ok=True)
        if stamp:
            unit["unit_seconds"] = round(time.perf_counter() - t_unit, 1)
            unit["provenance"] = provenance()
        print(f"{tag}   {describe(unit)}", flush=True)
        cache = settle(merge_cache(cache_path, cache))
        cache[key] = unit
        atomic_write_json(cache_path, cache)
    return cache


def run_units(units: list[tuple[str, int, str]], cache: dict, cache_path: Path,
              run_root: Path, run_unit, chosen: dict[str, dict], threads: int | None,
              started: str, t0: float, tag: str, shown: tuple[str, ...]) -> dict:
    """Run the planned units (setting, seed, arm) not in the cache yet through
    :func:`run_planned`, ``run_unit(setting, spec, arm, seed, threads, run_root)`` giving each
    entry; the invocation (``started``, the command line, its seconds since ``t0`` once done) is
    recorded too. Prints a unit's ``shown`` figures. Returns the cache."""
    cache = merge_cache(cache_path, cache)
    invocation = start_invocation(cache, cache_path, started, "python " + " ".join(sys.argv))
    plan = [(unit_key(setting, seed, arm),
             lambda s=setting, a=arm, sd=seed: run_unit(s, chosen[s], a, sd, threads, run_root))
            for setting, seed, arm in units]

    def describe(unit: dict) -> str:
        return (" ".join(f"{m} {unit[m]:.4f}" for m in shown)
                + f" ({unit['train_seconds']:.0f}s training, {unit['eval_seconds']:.0f}s "
                "evaluation)")

    cache = run_planned(plan, cache, cache_path, run_root, tag, describe)
    return finish_invocation(cache, cache_path, invocation, t0)


# The apprentice's training arithmetic of a chemistry optimisation unit: float32 (the library's
# defaults) or --bf16 (selfsup.chem.optimize.BF16_SPEED_OVERRIDES). A unit cache records which
# one its units ran with, and a run folder is reused or resumed only with the same one.
SPEED_KEYS = ("gegl.imitation_precision", "gegl.imitation_length_groups", "lstm_hc.precision",
              "lstm_hc.length_groups", "reinvent.precision")


def fp32_speed_settings() -> dict[str, str]:
    """The library's defaults (``OptimizeConfig``) of the speed keys, as strings."""
    from selfsup.chem.optimize import OptimizeConfig

    cfg = OptimizeConfig()
    return {k: str(getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1])) for k in SPEED_KEYS}


def speed_overrides(bf16: bool) -> tuple[str, ...]:
    """The ``selfsup chem optimize`` overrides of a speed setting (none for float32)."""
    from selfsup.chem.optimize import BF16_SPEED_OVERRIDES

    return tuple(BF16_SPEED_OVERRIDES) if bf16 else ()


def has_settings(cfg: dict, overrides: tuple[str, ...]) -> bool:
    """Whether a run's config has the settings of ``overrides`` (``section.key=value``: the
    speed settings and any other, e.g. the GuacaMol benchmark's arm settings), and the float32
    defaults for every speed key not in them (a config without a speed key predates it: the
    default)."""
    defaults = fp32_speed_settings()
    want = {**defaults, **dict(o.split("=", 1) for o in overrides)}
    for key, value in want.items():
        got = cfg
        for part in key.split("."):
            got = got.get(part) if isinstance(got, dict) else None
        if got is None:
            got = defaults.get(key)
        if str(got) != value:
            return False
    return True


def shipped_prior() -> tuple[Path, str]:
    """The default prior of the chemistry benchmarks that run the shipped model: (its model.pt,
    where it came from). The shipped strong prior when its hash is set in the catalog, else the
    PMO benchmark's committed 2 x 256 prior."""
    from selfsup.data.catalog import STRONG_PRIOR, STRONG_PRIOR_SHA256

    if STRONG_PRIOR_SHA256:
        from selfsup.data import fetch

        return (fetch(STRONG_PRIOR) / "model.pt",
                f"the shipped strong prior ({STRONG_PRIOR}, sha256 {STRONG_PRIOR_SHA256[:12]})")
    return (RESULTS / "gegl_prior" / "model.pt",
            "the 2 x 256 benchmark prior (the strong prior's hash is not set in "
            "src/selfsup/data/catalog.py)")


def prior_record(path: Path, source: str) -> dict:
    """What a benchmark's cache records of the prior its apprentice arms start from: path (as
    :func:`stored_path`), source, SHA-256, LSTM size, parameters, and the validity and steps of
    its pretraining run when its results.json is beside it."""
    import hashlib

    from selfsup.chem.lstm import SmilesLSTM

    model, _ = SmilesLSTM.load(path)
    c = model.config
    res = load_json(path.parent / "results.json")
    return {"path": stored_path(path), "source": source,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "size": f"{c.n_layers} x {c.hidden_dim}",
            "n_params": sum(p.numel() for p in model.parameters()),
            "validity": res.get("validity"), "steps": res.get("steps")}


def refuse_other_prior(cache: dict, cache_path: Path, prior: dict, has_units: bool) -> None:
    """SystemExit naming the fix when ``cache`` holds units (``has_units``) made from another
    prior than ``prior`` (by SHA-256); else record ``prior`` in it."""
    old = cache.get("prior")
    if old and old.get("sha256") and old.get("sha256") != prior["sha256"] and has_units:
        raise SystemExit(f"{cache_path} holds units of the prior {old.get('path')} (sha256 "
                         f"{old['sha256'][:12]}); pass that --prior or another --out")
    cache["prior"] = prior


def claim_speed_setting(cache: dict, cache_path: Path, bf16: bool, has_units: bool,
                        other_out: str = "another --out") -> None:
    """Record in ``cache`` the speed setting this invocation runs with; refuse (SystemExit naming
    the fix) when the cache already holds units (``has_units``) of the other one."""
    speed = "bf16" if bf16 else "fp32"
    held = cache.get("speed", "fp32")
    if held != speed and has_units:
        raise SystemExit(f"{cache_path} holds units run with speed setting {held!r}; pass the "
                         f"same --bf16 choice or {other_out}")
    cache["speed"] = speed


def unit_wall(u: dict) -> float:
    """The optimiser's wall seconds of a benchmark unit: the working time of all its processes
    (``work_seconds``, :func:`run_work_seconds`) where recorded, else its last process's
    (``wall_seconds``)."""
    return u["work_seconds"] if u.get("work_seconds") is not None else u["wall_seconds"]


def resumed_work_seconds(run_path: Path) -> float | None:
    """:func:`run_work_seconds` of a run resumed after a kill (run.json lists ``resumed``
    times), else None: a benchmark unit's ``work_seconds``, which :func:`unit_wall` prefers to
    the results' ``wall_seconds`` (its last process's)."""
    if not load_json(Path(run_path) / "run.json").get("resumed"):
        return None
    return run_work_seconds(Path(run_path))


def run_work_seconds(run_path: Path) -> float | None:
    """Seconds the processes of a run worked, killed ones included: for each process (the run's
    start and each ``resumed`` time in run.json) the time from its start to its last line in
    ``log.txt`` before the next one started, the last process up to ``finished_at``. run.json's
    ``wall_seconds`` spans the gaps between processes too (a kill at the end of one sitting and a
    resume in the next). Accurate to a log line: meant for runs that log every few seconds (an
    optimiser's rounds). None without run.json's times or a log."""
    meta = load_json(Path(run_path) / "run.json")
    log = Path(run_path) / "log.txt"
    try:
        starts = [datetime.fromisoformat(t).timestamp()
                  for t in [meta["started"], *meta.get("resumed", [])]]
        end = datetime.fromisoformat(meta["finished_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return None
    if not log.is_file():
        return None
    stamps = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:  # "2026-12-07 05:00:20,719 INFO ...", local time
            stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
        except ValueError:
            continue
    total = 0.0
    for i, start in enumerate(starts):
        if i + 1 < len(starts):
            last = [t for t in stamps if start <= t < starts[i + 1]]
            total += (max(last) - start) if last else 0.0
        else:
            total += max(end - start, 0.0)
    return round(total, 1)


def reuse_or_resume_optimize_run(old: Path, tag: str) -> tuple[Path, dict, bool] | None:
    """For a ``selfsup chem optimize`` run folder of the wanted config: ``(folder, results,
    False)`` when it finished, ``(folder, results, True)`` after replay-resuming it when it was
    killed with calls on record, else None (nothing to go on from)."""
    from selfsup.chem.optimize import resume
    from selfsup.runs import Run

    old = Path(old)
    if Run.open(old).meta.get("status") == "finished" and (old / "results.json").is_file():
        return old, load_json(old / "results.json"), False
    if (old / "oracle_calls.csv").is_file():
        print(f"{tag} resuming {old.name}", flush=True)
        run, res = resume(old)
        return run.path, res, True
    return None


def unit_parser(description: str, all_arms, seeds_help: str,
                reference_seeds_help: str) -> argparse.ArgumentParser:
    """The command line of a unit benchmark: --quick, --only, --arms (of ``all_arms``), --seeds,
    --reference-seeds, --threads, --out, --report."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="settings to run (default: all)")
    ap.add_argument("--arms", nargs="+", default=None, choices=all_arms)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help=seeds_help)
    ap.add_argument("--reference-seeds", type=int, nargs="+", default=None,
                    help=reference_seeds_help)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--out", default=None, help="output folder (cache, runs, results)")
    ap.add_argument("--report", action="store_true",
                    help="write the results from the cache without training anything")
    return ap


def unit_benchmark_main(bench, argv: list[str] | None, seeds_help: str,
                        reference_seeds_help: str, metrics: tuple[str, ...], notes,
                        before_run=None) -> int:
    """The ``main`` of a unit benchmark script (augself, selfpatch): parse the command line, run
    the planned units into the cache (unless --report), then write the results of every setting
    from the cache.

    ``bench`` is the script's namespace (``SimpleNamespace(**globals())``); it provides
    ``__doc__``, ``NAME``, ``RESULTS``, ``TAG``, ``ALL_ARMS``, ``settings(quick)``, ``plan(...)``,
    ``run_unit``, ``build_rows``, ``data_meta`` and ``claim_line``.
    ``notes(cache, setting, spec, shown, missing, meta, quick)`` gives a setting's (Markdown,
    differences, claims); ``before_run()`` is called before the units run (e.g. to share data
    sets between them)."""
    args = unit_parser(bench.__doc__.splitlines()[0], bench.ALL_ARMS, seeds_help,
                       reference_seeds_help).parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    chosen = chosen_settings(bench.settings(args.quick), args.only)
    # full mode's cache is committed in benchmarks/results; its runs (checkpoints) never are
    out, cache_path, run_root = output_folders(bench.NAME, args.out, args.quick, bench.RESULTS)
    cache = load_json(cache_path)
    units = bench.plan(chosen, args.arms, args.seeds, args.reference_seeds, args.quick)
    if not args.report:
        if before_run is not None:
            before_run()
        cache = run_units(units, cache, cache_path, run_root, bench.run_unit, chosen,
                          args.threads, started, t0, bench.TAG, tuple(metrics))
    else:
        cache = merge_cache(cache_path, cache)

    rows, text, diffs, claims, meta, missing = [], [], [], [], {}, []
    for setting, spec in chosen.items():
        # rows cover every arm of the mode that has units (a runner given --arms must not drop
        # the other runner's rows from the report)
        shown = list(spec["arms"])
        gone = missing_units(cache, bench.plan({setting: spec}, None, None, None, args.quick))
        missing += gone
        rows += bench.build_rows(cache, setting, shown)
        meta[setting] = bench.data_meta(spec)
        md, d, c = notes(cache, setting, spec, shown, gone, meta[setting], args.quick)
        text.append(f"## {setting}\n\n{md}")
        diffs += d
        claims += c
    write_unit_results(bench.NAME, mode, started, t0, rows,
                       out if args.out or args.quick else None, text, chosen, meta, diffs,
                       claims, missing, cache_path, cache, bench.claim_line)
    return 0


def chosen_settings(table: dict[str, dict], only: list[str] | None) -> dict[str, dict]:
    """The settings of ``table`` named in --only (None or empty: all); an unknown one ends the
    program with the valid names."""
    if only and (bad := [s for s in only if s not in table]):
        raise SystemExit(f"unknown setting in --only {bad}; valid: {', '.join(table)}")
    return {k: v for k, v in table.items() if not only or k in only}


def missing_units(cache: dict, units: list[tuple[str, int, str]]) -> list[str]:
    """The keys of the planned ``units`` (setting, seed, arm) that the cache lacks."""
    return [k for k in (unit_key(*u) for u in units) if k not in cache]


def output_folders(name: str, out: str | None, quick: bool,
                   results: Path = RESULTS) -> tuple[Path, Path, Path]:
    """(output folder, unit cache, run folder) of a unit benchmark: ``out``, else a new
    runs/bench-<name>-quick-<time> (quick) or ``results`` (full: the committed cache; its runs,
    checkpoints and all, go to runs/bench-<name>-full, never committed). Makes the output
    folder."""
    folder = Path(out) if out else (
        REPO / "runs" / f"bench-{name}-quick-{time.strftime('%Y%m%d-%H%M%S')}" if quick
        else results)
    folder.mkdir(parents=True, exist_ok=True)
    run_root = (REPO / "runs" / f"bench-{name}-full" if folder.resolve() == results.resolve()
                else folder / "runs")
    return folder, folder / f"{name}_cache.json", run_root


# ------------------------------------------------------------------ unit reports
def unit_values(cache: dict, setting: str, arm: str, metric: str) -> dict[int, float]:
    """seed -> figure of ``metric`` for the arm's units of the setting (seed order; units
    without it, or with null, left out)."""
    out = {}
    for key, u in units_of(cache).items():
        s, seed, a = key.split("|")
        if s == setting and a == arm and metric in u and u[metric] is not None:
            out[int(seed)] = float(u[metric])
    return dict(sorted(out.items()))


def unit_rows(cache: dict, setting: str, arms: list[str], metrics) -> list[dict]:
    """Result rows (:func:`row` with ``seed_ids``) of every arm x metric with figures, then
    each arm's ``unit_minutes`` (a unit's wall time)."""
    rows = []
    for arm in arms:
        for metric in (*metrics, "unit_minutes"):
            if metric == "unit_minutes":
                vals = {int(k.split("|")[1]): u["unit_seconds"] / 60
                        for k, u in units_of(cache).items()
                        if k.split("|")[0] == setting and k.split("|")[2] == arm
                        and "unit_seconds" in u}
                vals = dict(sorted(vals.items()))
            else:
                vals = unit_values(cache, setting, arm, metric)
            if vals:
                r = row(setting, arm, metric, list(vals.values()))
                r["seed_ids"] = list(vals)
                rows.append(r)
    return rows


def paired_difference(cache: dict, setting: str, base: str, other: str, metric: str,
                      label: str = "other") -> dict | None:
    """``other`` minus ``base`` over the seeds both arms finished (paired by seed): mean,
    sample std of the per-seed differences, the seed std of each arm, ``spread`` (the largest
    of the three) and the per-seed differences. ``label`` names ``other`` and its std in the
    record (``<label>``, ``<label>_std``). None: no seed in common."""
    a, b = unit_values(cache, setting, base, metric), unit_values(cache, setting, other, metric)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [b[s] - a[s] for s in seeds]
    sd = statistics.stdev(d) if len(d) > 1 else 0.0
    sa = statistics.stdev([a[s] for s in seeds]) if len(seeds) > 1 else 0.0
    sb = statistics.stdev([b[s] for s in seeds]) if len(seeds) > 1 else 0.0
    return {"setting": setting, "base": base, label: other, "metric": metric,
            "mean": statistics.fmean(d), "std": sd, "base_std": sa, f"{label}_std": sb,
            "spread": max(sd, sa, sb), "seeds": seeds, "differences": d}


def pm(vals: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± sample std`` of ``vals`` times ``scale`` (one value: the mean alone), with
    ``digits`` decimals."""
    m = statistics.fmean(vals) * scale
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(vals) * scale:.{digits}f}"


def _scale(formats: dict | None, metric: str) -> tuple[float, int]:
    """(scale, decimals) of ``metric`` in ``formats`` (metric -> (scale, decimals)); default
    (100, 1): a share shown in %."""
    return (formats or {}).get(metric, (100.0, 1))


def arms_table(cache: dict, setting: str, arms: list[str], columns, headers: dict,
               formats: dict | None = None) -> str:
    """Arms x ``columns`` (metrics, headed ``headers[m]``), mean ± sample std over the seeds
    (in %, or as ``formats[m]`` = (scale, decimals) says); arms without units left out."""
    lines = ["| arm | seeds | " + " | ".join(headers[m] for m in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for arm in arms:
        cells, n = [], 0
        for m in columns:
            v = unit_values(cache, setting, arm, m)
            n = max(n, len(v))
            cells.append(pm(list(v.values()), *_scale(formats, m)) if v else "-")
        if n:
            lines.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def diff_table(cache: dict, setting: str, arms: list[str], pairs, columns, corner: str,
               headers: dict | None = None, formats: dict | None = None) -> str:
    """``other - base`` of each (base, other) of ``pairs`` whose arms are both shown, paired by
    seed (:func:`paired_difference`), in points (or as ``formats[m]`` = (scale, decimals)
    says): mean (± std and spread with 2+ seeds). Columns headed ``headers[m]`` (None: the
    metric names), first column ``corner``. "" when no pair has a figure."""
    lines = [f"| {corner} | seeds | "
             + " | ".join(headers[m] if headers else m for m in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    any_row = False
    for base, other in pairs:
        if base not in arms or other not in arms:
            continue
        cells, seeds = [], []
        for m in columns:
            d = paired_difference(cache, setting, base, other, m)
            if d is None:
                cells.append("-")
                continue
            seeds = d["seeds"]
            k, n = _scale(formats, m)
            cells.append(f"{d['mean'] * k:+.{n}f}" + (
                f" ± {d['std'] * k:.{n}f} (spread {d['spread'] * k:.{n}f})"
                if len(d["seeds"]) > 1 else ""))
        if seeds:
            any_row = True
            lines.append(f"| {other} - {base} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if any_row else ""


def diagnostic_units(cache: dict, setting: str, arms: list[str], metrics,
                     checks: dict | None = None):
    """(arm, seed, unit, training diagnostics, flags) of each of the setting's units of
    ``arms``, in cache order. Flags: non-finite losses, each flag of ``checks`` (flag ->
    predicate of the diagnostics) that holds, a missing or non-finite figure of ``metrics``."""
    for key, u in units_of(cache).items():
        s, seed, arm = key.split("|")
        if s != setting or arm not in arms:
            continue
        d = u.get("train", {})
        flags = []
        if d.get("nonfinite_losses"):
            flags.append(f"{d['nonfinite_losses']} non-finite losses")
        flags += [flag for flag, holds in (checks or {}).items() if holds(d)]
        if any(v is None or not math.isfinite(float(v)) for m in metrics
               for v in [u.get(m)]):
            flags.append("NaN metric")
        yield arm, seed, u, d, flags


def generator_meta(spec: dict) -> dict:
    """The data part of a setting's results: data set name, generator seed, validation size
    and images per class (None: all), read from its overrides."""
    ov = dict(o.split("=", 1) for o in spec["overrides"])
    return {"name": ov["data.name"], "generator_seed": int(ov["data.generator_seed"]),
            "val_size": int(ov["data.val_size"]),
            "per_class": int(ov["data.per_class"]) if "data.per_class" in ov else None}


def write_unit_results(name: str, mode: str, started: str, t0: float, rows: list[dict],
                       out_dir: Path | None, notes: list[str], chosen: dict, meta: dict,
                       diffs: list[dict], claims: list[dict], missing: list[str],
                       cache_path: Path, cache: dict, claim_line) -> None:
    """:func:`write_results` of a unit benchmark (wall time since ``t0``; the settings' notes
    joined), with its data, settings, differences, claims, missing units, cache path and
    invocations; then prints each claim's ``claim_line`` and where it wrote."""
    command = "python " + " ".join(sys.argv)
    extra = {"data": meta, "settings": dict(chosen), "differences": diffs, "claims": claims,
             "missing_units": missing, "cache": str(cache_path),
             "invocations": cache.get("invocations", [])}
    jp, mp = write_results(name, mode, command, started, time.perf_counter() - t0, rows,
                           out_dir, "\n\n".join(notes), extra)
    for c in claims:
        print(claim_line(c))
    print(f"wrote {jp} and {mp}" + (f" ({len(missing)} units missing)" if missing else ""))


def notes_tail(cache: dict, setting: str, missing: list[str], quick: bool) -> list[str]:
    """The closing lines of a setting's notes: time of its finished units, their provenance
    census, the invocations, the missing units and, in quick mode, that it tests nothing."""
    lines = []
    units = [u for k, u in units_of(cache).items() if k.split("|")[0] == setting]
    if units:
        total = sum(u.get("unit_seconds", 0) for u in units)
        lines.append(f"Time: {len(units)} finished unit(s), {total / 3600:.2f} h in all "
                     "(training + evaluation, each on its recorded threads).")
    census = provenance_census(units)
    if census:
        lines.append(census)
    for inv in cache.get("invocations", []):
        took = (f"{inv['seconds'] / 60:.1f} min" if inv.get("seconds") is not None
                else "stopped before its end, or still running")
        lines.append(f"Started {inv['started']}: {took} (`{inv['command']}`).")
    if missing:
        shown = ", ".join(missing[:12]) + (", ..." if len(missing) > 12 else "")
        lines += ["", f"Missing units ({len(missing)}; all in the JSON): {shown}."]
    if quick:
        lines += ["", "Quick mode: a smoke test of the pipeline (a few training steps), not a "
                  "test of the claim."]
    return lines
