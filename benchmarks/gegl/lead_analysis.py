"""Where GEGL's lead comes from (issue 24, part 4): queue origins, queue diversity, overtaking.

Reads run folders of ``selfsup chem optimize`` (those ``benchmarks/gegl/run.py`` writes under
``<out>/runs/``), groups them by (task, seed, budget) and writes, for every GEGL-type run that has
the queue record ``queues.jsonl`` (GEGL and its ablations write one line per round, see
``selfsup.chem.optimize.gegl``):

* per round: oracle calls so far; molecules new to the run by who proposed them; the share of the
  top-K of the union of both queues (K = the run's ``gegl.queue_size``: what the apprentice
  imitates, best first) and of its top-10 first proposed by an expert child, an apprentice sample
  or the start pool (``origin``: who first proposed the molecule in the run; a molecule sits in
  both queues when both proposed it, counted once, by its first origin, and in ``in_both``);
* internal diversity of each queue: mean pairwise Tanimoto distance (1 - similarity) over the
  unordered pairs of the queue's molecules, Morgan fingerprints radius 2, 2048 bits (RDKit), for
  the apprentice queue, the expert queue and the union's top-K;
* for every run of the group: the running top-10 mean against calls (each call's top-10 mean of
  the calls so far, the mean of all of them before the 10th; a run that stopped early is held
  flat to the budget, as PMO's AUC does), the diversity of its K best calls at the end (the K
  of the gegl run) and how many distinct molecules they are once stereo-isomers count as one
  (``distinct_without_stereo_top<K>_calls_final``), and, for the ``gegl`` run against each
  other arm, the call count from which GEGL's running top-10 mean stays strictly above the
  other's up to the budget (``overtake_calls_vs_<arm>``; none when GEGL is not ahead at the
  budget), whether GEGL leads at the budget, and the share of calls at which it leads. LSTM
  hill climbing runs on GEGL's loop and records its one queue (its top-k) too: its shares and
  diversity come out alike.

Results in the one format (benchmarks/README.md): benchmark ``gegl_lead``, JSON + Markdown
(``benchmarks/results/gegl_lead.{json,md}`` in full mode, the run folder with ``--quick`` or
``--out``), beside them ``gegl_lead/rounds.json`` (every round of every run: ``columns`` and, per
``task|seed|budget|arm``, one row per round) and one PNG per task (``gegl_lead/<task>.png``: the
shares per round and the top-10 curves).

    python benchmarks/gegl/lead_analysis.py --runs runs/bench-gegl-full/runs   # every run there
    python benchmarks/gegl/lead_analysis.py RUN_DIR [RUN_DIR ...]               # these runs
    python benchmarks/gegl/lead_analysis.py --quick                             # minutes
    python benchmarks/gegl/lead_analysis.py --cache benchmarks/results/gegl_guacamol_cache.json \
        --out benchmarks/results/gegl_guacamol_lead     # the finished GuacaMol units

Run folders stay on the machine that made them. Each analysis keeps beside its results every
run's figures (``per_run`` in the JSON), per-round table (``rounds.json``) and running top-10
curve as change points (``gegl_lead/digests.json``), and a later analysis at the same output
carries over the runs whose folders are not given or not on this machine: their figures as
written, their curves for the overtaking against runs that finished later and for the figures
(a task's figure is drawn again only when one of its runs is analysed from its folder and every
run of the task has its curve, else the figure stays as it was; the analyses written before the
curves were kept give figures only, read back from their rows).
With ``--cache`` a carried run must still be a finished unit of the cache (matched by folder
name without its start time, so a run made again for a unit, to bring its folder back, stands
for it). ``--fresh`` carries nothing over.

``--quick`` makes its own small runs first (``osimertinib_mpo`` and ``median1``, 1,000 calls,
gegl, graph_ga, lstm_hc, reinvent, seed 0, the committed benchmark prior
``benchmarks/results/gegl_prior/model.pt``) through ``benchmarks/gegl/run.py``'s units (a killed
quick run started again with the same ``--out`` reuses the finished runs), then analyses them.
Runs made before the queue record existed have no ``queues.jsonl``: their top-10 curves and
overtaking calls are computed, their shares and queue diversities are not.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import load_json, now, row, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
COMMITTED_PRIOR = RESULTS / "gegl_prior" / "model.pt"
QUICK_TASKS = ("osimertinib_mpo", "median1")
QUICK_ARMS = ("gegl", "graph_ga", "lstm_hc", "reinvent")
QUICK_BUDGET = 1000
ORIGINS = ("expert", "apprentice", "pool")
LEAD_ARM = "gegl"
TABLE_ROWS = 12  # rounds shown per run in the Markdown (the JSON holds every round)


# ----------------------------------------------------------------------------- computations
class Fingerprints:
    """Morgan fingerprints (radius 2, 2048 bits) of SMILES, computed once each."""

    def __init__(self, radius: int = 2, n_bits: int = 2048) -> None:
        from rdkit.Chem import rdFingerprintGenerator

        self._gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
        self._fps: dict[str, Any] = {}

    def __call__(self, smiles: str) -> Any:
        fp = self._fps.get(smiles)
        if fp is None:
            from rdkit import Chem

            mol = Chem.MolFromSmiles(smiles)
            if mol is None:
                raise ValueError(f"unparsable SMILES in a queue record: {smiles!r}")
            fp = self._fps[smiles] = self._gen.GetFingerprint(mol)
        return fp


def internal_diversity(smiles: Sequence[str], fingerprints: Fingerprints | None = None) -> float:
    """Mean Tanimoto distance (1 - similarity) over the unordered pairs of distinct entries of
    ``smiles``; nan for fewer than two."""
    from rdkit import DataStructs

    fp = fingerprints or Fingerprints()
    fps = [fp(s) for s in smiles]
    n = len(fps)
    if n < 2:
        return math.nan
    total = 0.0
    for i in range(n - 1):
        total += sum(DataStructs.BulkTanimotoSimilarity(fps[i], fps[i + 1:]))
    return 1.0 - total / (n * (n - 1) / 2)


def union_top(queues: dict[str, list[list[Any]]], k: int) -> list[dict[str, Any]]:
    """The ``k`` best molecules of the union of a round's apprentice and expert queues (each a
    list of ``[smiles, score, origin]`` best first): one entry per molecule with its score,
    origin and ``in_both``; ties in score keep the apprentice queue's order, then the expert's."""
    merged: dict[str, dict[str, Any]] = {}
    for name in ("apprentice", "expert"):
        for smiles, score, origin in queues.get(name, []):
            if smiles in merged:
                merged[smiles]["in_both"] = True
            else:
                merged[smiles] = {"smiles": smiles, "score": float(score), "origin": origin,
                                  "in_both": False}
    ranked = sorted(merged.values(), key=lambda it: -it["score"])  # stable: ties keep order
    return ranked[:k]


def origin_shares(items: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Share of ``items`` by origin (``expert``, ``apprentice``, ``pool``) and the share in
    both queues (``in_both``); nan when there are none."""
    n = len(items)
    out = {o: (sum(it["origin"] == o for it in items) / n if n else math.nan) for o in ORIGINS}
    out["in_both"] = sum(it["in_both"] for it in items) / n if n else math.nan
    return out


def running_top_mean(scores: Iterable[float], k: int = 10,
                     budget: int | None = None) -> list[float]:
    """After each call, the mean of the ``k`` best scores so far (of all of them before the
    ``k``-th call); held flat from the last call to ``budget`` when the run stopped early."""
    best: list[float] = []  # the k best so far, descending
    out: list[float] = []
    for s in scores:
        s = float(s)
        if len(best) < k or s > best[-1]:
            best.append(s)
            best.sort(reverse=True)
            del best[k:]
        out.append(sum(best) / len(best))
    if budget is not None:
        out = out[:budget]
        if out and len(out) < budget:
            out += [out[-1]] * (budget - len(out))
    return out


def overtake(lead: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """Where the curve ``lead`` passes ``other`` for good (same length, one value per call):
    ``calls``, the first call count from which ``lead`` is strictly above ``other`` at every
    call up to the end (None when it is not above at the end), ``leads_at_end`` and
    ``lead_share`` (the share of calls at which it is above)."""
    if len(lead) != len(other):
        raise ValueError(f"curves of {len(lead)} and {len(other)} calls")
    above = [a > b for a, b in zip(lead, other)]
    n = len(above)
    first = None
    i = n
    while i > 0 and above[i - 1]:
        i -= 1
    if i < n:
        first = i + 1  # calls are counted from 1
    return {"calls": first, "leads_at_end": bool(n and above[-1]),
            "lead_share": sum(above) / n if n else math.nan}


def round_table(rows: Sequence[dict[str, Any]], fingerprints: Fingerprints,
                k: int | None = None) -> list[dict[str, Any]]:
    """One entry per line of a run's ``queues.jsonl``: calls, new molecules by origin, origin
    shares of the union's top-K (``k``, default the line's ``queue_size``) and top-10, and the
    internal diversity of the apprentice queue, the expert queue and the union's top-K."""
    out = []
    for r in rows:
        q = r["queues"]
        kk = int(k or r.get("queue_size") or len(q.get("apprentice", [])))
        top = union_top(q, kk)
        entry: dict[str, Any] = {"round": r["round"], "calls": r["calls"]}
        for o in ORIGINS:
            entry[f"new_{o}"] = int((r.get("new") or {}).get(o, 0))
        for label, items in (("topk", top), ("top10", top[:10])):
            for o, v in origin_shares(items).items():
                entry[f"share_{o}_{label}"] = v
        entry["topk_size"] = len(top)
        entry["diversity_apprentice"] = internal_diversity([x[0] for x in q.get("apprentice", [])],
                                                           fingerprints)
        entry["diversity_expert"] = internal_diversity([x[0] for x in q.get("expert", [])],
                                                       fingerprints)
        entry["diversity_union_topk"] = internal_diversity([it["smiles"] for it in top],
                                                           fingerprints)
        out.append(entry)
    return out


# ------------------------------------------------------------------------------ run folders
def load_run(path: Path) -> dict[str, Any] | None:
    """A run folder's config, status, call scores (in call order), smiles and queue record;
    None for a folder that is no optimisation run or has no call record."""
    import yaml

    from selfsup.chem.optimize.base import QUEUE_LOG, read_queue_log
    from selfsup.chem.oracles import load_record

    cfg_path, record = path / "config.yaml", path / "oracle_calls.csv"
    if not cfg_path.is_file() or not record.is_file():
        return None
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    if "optimizer" not in cfg or "objective" not in cfg:
        return None
    calls = load_record(record)
    meta = load_json(path / "run.json")
    queue = path / QUEUE_LOG
    return {"path": path, "task": cfg["objective"], "arm": cfg["optimizer"],
            "seed": int(cfg.get("seed", 0)), "budget": int(cfg["budget"]),
            "prior": cfg.get("prior"), "queue_size": (cfg.get("gegl") or {}).get("queue_size"),
            "status": meta.get("status"), "scores": [c.score for c in calls],
            "smiles": [c.smiles for c in calls],
            "queues": read_queue_log(queue) if queue.is_file() else None}


def collect(paths: Iterable[Path]) -> tuple[dict[tuple, dict[str, dict]], list[str]]:
    """Runs grouped by (task, seed, budget), then by arm; where an arm ran twice the latest
    folder (by name: names end in their start time) wins. Unfinished runs are left out."""
    groups: dict[tuple, dict[str, dict]] = {}
    notes = []
    for p in sorted(paths, key=lambda p: p.name):
        run = load_run(p)
        if run is None:
            continue
        if run["status"] != "finished":
            notes.append(f"{p.name}: status {run['status']}, left out")
            continue
        key = (run["task"], run["seed"], run["budget"])
        if run["arm"] in groups.get(key, {}):
            notes.append(f"{groups[key][run['arm']]['path'].name} replaced by the later {p.name}")
        groups.setdefault(key, {})[run["arm"]] = run
    return groups, notes


def cache_run_dirs(cache_path: Path) -> tuple[list[Path], dict[str, str], set[str]]:
    """The run folders of the finished units in a unit cache of
    ``benchmarks/gegl/guacamol_goal_directed.py`` (its ``task|arm|seed|budget`` entries; the
    ``superseded`` ones, made under other arm settings, are left out), a note for each unit
    whose folder is not on this machine (by folder name), and the folder names of all its
    finished units (those an earlier analysis may be carried over for). A folder recorded under
    another checkout is looked up at the same ``runs/...`` path in this one."""
    try:
        cache = load_json(cache_path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"--cache {cache_path}: cannot read it as JSON ({e}); pass the unit "
                         "cache of benchmarks/gegl/guacamol_goal_directed.py") from e
    if not isinstance(cache, dict):
        raise SystemExit(f"--cache {cache_path}: not a unit cache (a JSON object of units)")
    paths: list[Path] = []
    missing: dict[str, str] = {}
    names: set[str] = set()
    for key, unit in sorted(cache.items()):
        if key.count("|") != 3 or not isinstance(unit, dict) or "run" not in unit:
            continue
        p = Path(unit["run"])
        names.add(p.name)
        if not p.is_dir() and "runs" in p.parts:
            p = REPO.joinpath(*p.parts[p.parts.index("runs"):])
        if p.is_dir():
            paths.append(p)
        else:
            missing[p.name] = f"{key}: run folder not on this machine, left out"
    return paths, missing, names


def distinct_without_stereo(smiles: Sequence[str]) -> int:
    """How many molecules ``smiles`` holds once stereo-isomers count as one (canonical SMILES
    without stereo; GuacaMol scores an answer so). A generator that has collapsed can fill its
    best calls with stereo-isomers of a few molecules, each a unique call with the same score
    when the objective ignores stereo (the median tasks' fingerprints do)."""
    from selfsup.chem.molecules import canonical_smiles

    return len({canonical_smiles(s, keep_stereo=False) or s for s in smiles})


def budget_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 else str(n)


# ------------------------------------------------------- what outlives the run folders
# Run folders stay on the machine that made them; a later analysis on another machine finds
# only some. Each analysis therefore keeps, beside its results, every run's figures
# (``per_run`` in the results JSON), its per-round table (``rounds.json``) and its running
# top-10 curve as change points (``digests.json``); a later analysis at the same output carries
# a run over from them when its folder is gone, and computes from its curve what needs one (the
# overtaking against arms that finished later, the figure).
DIGESTS = "digests.json"
PAIR_METRICS = ("overtake_calls_vs_", "leads_at_end_vs_", "lead_share_of_calls_vs_")
QUEUE_METRICS = ("share_", "diversity_apprentice", "diversity_expert", "diversity_union",
                 "rounds")


def unit_name(folder_name: str) -> str:
    """A run folder's name without its start time (``<name>-YYYYmmdd-HHMMSS[-i]``,
    :meth:`selfsup.runs.Run.create`): a run given as a folder whose unit name is that of one
    unit of the cache, under another folder name, stands for that unit (a run made again for
    it, to bring its folder back on another machine); it keeps ``stands_for``, the cache's
    folder name, in later analyses."""
    import re

    return re.sub(r"-\d{8}-\d{6}(-\d+)?$", "", folder_name)


def run_key(task: str, seed: int, budget: int, arm: str) -> str:
    return f"{task}|{seed}|{budget}|{arm}"


def top_steps(scores: Sequence[float], k: int = 10) -> list[list]:
    """:func:`running_top_mean` (no budget) as change points: ``[call, value]`` at the first
    call and wherever the value changes (calls counted from 1); exact floats."""
    steps: list[list] = []
    for i, v in enumerate(running_top_mean(scores, k)):
        if not steps or v != steps[-1][1]:
            steps.append([i + 1, v])
    return steps


def curve_from_steps(steps: Sequence[Sequence], n_calls: int,
                     budget: int | None = None) -> list[float]:
    """The curve :func:`top_steps` was made from, ``n_calls`` long, then cut or held flat to
    ``budget`` as :func:`running_top_mean` does."""
    out: list[float] = []
    for j, (call, v) in enumerate(steps):
        end = int(steps[j + 1][0]) - 1 if j + 1 < len(steps) else n_calls
        out += [float(v)] * (end - int(call) + 1)
    if budget is not None:
        out = out[:budget]
        if out and len(out) < budget:
            out += [out[-1]] * (budget - len(out))
    return out


def fresh_entry(run: dict[str, Any], fingerprints: Fingerprints) -> dict[str, Any]:
    """A run loaded from its folder, ready for :func:`analyse`: its curve's change points and,
    when it kept a queue record, its per-round table."""
    return {**{k: run[k] for k in ("task", "seed", "budget", "arm", "prior", "queue_size")},
            "path": str(run["path"]), "source": "run folder", "scores": run["scores"],
            "smiles": run["smiles"], "has_queues": run["queues"] is not None,
            "steps": top_steps(run["scores"]), "n_calls": len(run["scores"]),
            "table": round_table(run["queues"], fingerprints) if run["queues"] else None,
            "metrics": None}


def legacy_per_run(doc: dict[str, Any], md_text: str, tables: dict[str, list]
                   ) -> tuple[dict[str, dict], list[str]]:
    """Per-run figures of an analysis written before ``per_run`` was kept: its ``rows`` hold
    the figures of each (setting, arm, metric) over seeds in ascending seed order, its ``runs``
    which runs there were, its Markdown headings the priors. A metric whose seeds cannot be
    matched to runs one to one is left out (noted)."""
    import re

    runs = doc.get("runs") or {}
    parsed = {}
    for key in runs:
        task, seed, budget, arm = key.rsplit("|", 3)
        parsed[key] = (task, int(seed), int(budget), arm)
    priors = {(m[1], int(m[2]), int(m[3])): (None if m[4] == "-" else m[4]) for m in
              re.finditer(r"^### (\S+), seed (\d+), (\d+) calls: arms [^;]*; prior (.*)$",
                          md_text, re.M)}
    per_run = {key: {"path": str(runs[key]), "prior": priors.get((t, s, b)),
                     "has_queues": key in tables, "metrics": {}}
               for key, (t, s, b, a) in parsed.items()}
    notes = []
    for r in doc.get("rows", []):
        task, label = r["setting"].rsplit("/", 1)
        metric, arm = r["metric"], r["arm"]
        cands = sorted((k for k, (t, s, b, a) in parsed.items() if t == task and a == arm
                        and f"{budget_label(b)}-calls" == label), key=lambda k: parsed[k][1])
        pair = next((p for p in PAIR_METRICS if metric.startswith(p)), None)
        if pair:
            other = metric[len(pair):]
            cands = [k for k in cands if run_key(*parsed[k][:3], other) in runs]
        elif metric.startswith(QUEUE_METRICS):
            cands = [k for k in cands if k in tables]
        if len(cands) != len(r["seeds"]):
            notes.append(f"{r['setting']} {arm} {metric}: {len(r['seeds'])} seed values for "
                         f"{len(cands)} runs, not carried over")
            continue
        for k, v in zip(cands, r["seeds"]):
            per_run[k]["metrics"][metric] = None if v is None or math.isnan(v) else v
    for info in per_run.values():  # the K of the group's best-calls figures (the gegl run's)
        ks = [m[1] for m in map(re.compile(r"diversity_top(\d+)_calls_final").fullmatch,
                                info["metrics"]) if m]
        info["queue_size"] = int(ks[0]) if ks else None
    return per_run, notes


def previous_analysis(target: Path) -> tuple[dict[str, dict], list[str]]:
    """The runs of the analysis already written at ``target`` (run key -> entry as
    :func:`fresh_entry`, ``source`` "earlier analysis", with its figures, its per-round table
    and, where kept, its curve), and notes."""
    doc = load_json(target / "gegl_lead.json")
    if not doc.get("rows"):
        return {}, []
    stored = load_json(target / "gegl_lead" / "rounds.json")
    cols = stored.get("columns") or []
    tables = {key: [dict(zip(cols, r)) for r in rows]
              for key, rows in (stored.get("runs") or {}).items()}
    digests = load_json(target / "gegl_lead" / DIGESTS).get("runs") or {}
    notes: list[str] = []
    per_run = doc.get("per_run")
    if per_run is None:
        md = target / "gegl_lead.md"
        per_run, notes = legacy_per_run(doc, md.read_text() if md.is_file() else "", tables)
    out = {}
    for key, info in per_run.items():
        task, seed, budget, arm = key.rsplit("|", 3)
        d = digests.get(key)
        if d and d.get("path") != info["path"]:
            d = None  # a curve of another run of the same unit
        out[key] = {"task": task, "seed": int(seed), "budget": int(budget), "arm": arm,
                    "prior": info.get("prior"), "queue_size": info.get("queue_size"),
                    "path": info["path"], "source": "earlier analysis",
                    "stands_for": info.get("stands_for"),
                    "has_queues": bool(info.get("has_queues")),
                    "steps": d["top10_steps"] if d else None,
                    "n_calls": d["n_calls"] if d else None, "table": tables.get(key),
                    "metrics": dict(info.get("metrics") or {})}
    return out, notes


def drop_stale_pairs(entries: dict[str, dict], earlier: dict[str, dict]) -> None:
    """A carried run without its curve keeps its overtaking figures only against the same runs
    of the other arms as before (or their stand-ins): against a run made again since, they are
    dropped (the notes then say 'not computed')."""
    def same(a: dict | None, b: dict | None) -> bool:
        if not a or not b:
            return False
        names_a = {Path(a["path"]).name, a.get("stands_for")} - {None}
        names_b = {Path(b["path"]).name, b.get("stands_for")} - {None}
        return bool(names_a & names_b)

    for e in entries.values():
        if e["source"] == "run folder" or e["steps"] is not None:
            continue  # computed now from the curves
        for metric in list(e["metrics"]):
            pre = next((p for p in PAIR_METRICS if metric.startswith(p)), None)
            if pre is None:
                continue
            other = run_key(e["task"], e["seed"], e["budget"], metric[len(pre):])
            if not same(earlier.get(other), entries.get(other)):
                del e["metrics"][metric]


def analyse(entries: dict[str, dict[str, Any]], lead_arm: str = LEAD_ARM
            ) -> tuple[dict[str, dict], list[dict], dict[str, Any]]:
    """Per-run figures (run key -> metrics), the results rows (over seeds) and the curves for
    the plots. Runs from a folder are computed; runs carried over keep their figures, except the
    overtaking, computed again wherever both curves are kept."""
    fingerprints = Fingerprints()
    groups: dict[tuple, dict[str, dict]] = {}
    for e in entries.values():
        groups.setdefault((e["task"], e["seed"], e["budget"]), {})[e["arm"]] = e
    per_run: dict[str, dict] = {}
    curves: dict[str, dict[str, Any]] = {}
    for (task, seed, budget), arms in sorted(groups.items()):
        k = int((arms.get(lead_arm) or {}).get("queue_size") or 100)
        top10 = {arm: curve_from_steps(e["steps"], e["n_calls"], budget)
                 for arm, e in arms.items() if e["steps"] is not None}
        curves.setdefault(task, {})[seed] = {
            "top10": top10, "rounds": {a: e["table"] for a, e in arms.items() if e["table"]},
            "fresh": any(e["source"] == "run folder" for e in arms.values()),
            "complete": all(e["steps"] is not None for e in arms.values())}
        for arm, e in sorted(arms.items()):
            key = run_key(task, seed, budget, arm)
            m = dict(e["metrics"] or {})
            if e["source"] == "run folder":
                m["top10_mean_final"] = top10[arm][-1] if top10[arm] else None
                best = sorted(range(len(e["scores"])), key=lambda i: -e["scores"][i])
                top_k = [e["smiles"][i] for i in best[:k]]
                m[f"diversity_top{k}_calls_final"] = internal_diversity(top_k, fingerprints)
                m[f"distinct_without_stereo_top{k}_calls_final"] = distinct_without_stereo(top_k)
                table = e["table"]
                if table:
                    last = table[-1]
                    for o in ORIGINS:
                        m[f"share_{o}_topk_final"] = last[f"share_{o}_topk"]
                        m[f"share_{o}_top10_final"] = last[f"share_{o}_top10"]
                        m[f"share_{o}_topk_mean_over_rounds"] = _fmean(
                            t[f"share_{o}_topk"] for t in table)
                    m["share_in_both_topk_final"] = last["share_in_both_topk"]
                    for q in ("apprentice", "expert", "union_topk"):
                        m[f"diversity_{q}_final"] = last[f"diversity_{q}"]
                        m[f"diversity_{q}_mean_over_rounds"] = _fmean(
                            t[f"diversity_{q}"] for t in table)
                    m["rounds"] = len(table)
            per_run[key] = m
        if lead_arm in arms:
            m = per_run[run_key(task, seed, budget, lead_arm)]
            for other in sorted(a for a in arms if a != lead_arm):
                if lead_arm in top10 and other in top10:
                    o = overtake(top10[lead_arm], top10[other])
                    m[f"overtake_calls_vs_{other}"] = o["calls"]
                    m[f"leads_at_end_vs_{other}"] = float(o["leads_at_end"])
                    m[f"lead_share_of_calls_vs_{other}"] = o["lead_share"]
    for m in per_run.values():
        for name, v in m.items():
            if isinstance(v, float) and math.isnan(v):
                m[name] = None
    per: dict[tuple[str, str, str], list] = {}
    def order(key: str) -> tuple:
        task, seed, budget, arm = key.rsplit("|", 3)
        return task, int(seed), int(budget), arm

    for key in sorted(per_run, key=order):
        task, _, budget, arm = key.rsplit("|", 3)
        setting = f"{task}/{budget_label(int(budget))}-calls"
        for name, v in per_run[key].items():
            per.setdefault((setting, arm, name), []).append(v)
    rows = [row(s, a, m, v) for (s, a, m), v in per.items()]
    return per_run, rows, curves


def _fmean(values: Iterable[float]) -> float:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


# ----------------------------------------------------------------------------------- output
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def notes_text(entries: dict[str, dict], per_run: dict[str, dict], skipped: list[str],
               lead_arm: str) -> str:
    lines = ["Shares: of the top-K of the union of GEGL's two queues (K = gegl.queue_size; what "
             "the apprentice imitates) and of its top-10, first proposed by an expert child, an "
             "apprentice sample or the start pool. Diversity: mean pairwise Tanimoto distance, "
             "Morgan radius 2, 2048 bits. Overtaking: the call count from which GEGL's running "
             "top-10 mean stays strictly above the other arm's up to the budget ('never' when it "
             "is not above at the budget), on the same task and seed.", ""]
    carried = [e for e in entries.values() if e["source"] != "run folder"]
    if carried:
        lines += [f"{len(carried)} of the {len(entries)} runs come from the earlier analysis at "
                  "this output (their run folders are not on this machine): their figures as "
                  "it wrote them, their round tables read back from `rounds.json` (4 decimals); "
                  "those with their running top-10 curve kept (`digests.json`) also count in "
                  "the overtaking and the figures.", ""]
    groups: dict[tuple, dict[str, dict]] = {}
    for e in entries.values():
        groups.setdefault((e["task"], e["seed"], e["budget"]), {})[e["arm"]] = e
    for (task, seed, budget), arms in sorted(groups.items()):
        priors = sorted({str(r['prior']) for r in arms.values() if r['prior']})
        lines.append(f"### {task}, seed {seed}, {budget} calls: arms "
                     f"{', '.join(sorted(arms))}; prior {', '.join(priors) or '-'}")
        lines.append("")
        old = sorted(a for a, e in arms.items() if e["source"] != "run folder")
        if old:
            lines += ["From the earlier analysis: " + ", ".join(
                f"{a} ({'curve kept' if arms[a]['steps'] is not None else 'figures only'})"
                for a in old) + ".", ""]
        stand = sorted(a for a, e in arms.items() if e.get("stands_for"))
        if stand:
            lines += ["Run again for a unit of the cache, standing for it: " + ", ".join(
                f"{a} (`{Path(arms[a]['path']).name}` for `{arms[a]['stands_for']}`)"
                for a in stand) + ".", ""]
        for arm in sorted(arms):
            table = arms[arm]["table"]
            if not arms[arm]["has_queues"] and arm.startswith("gegl"):
                lines.append(f"{arm}: no queues.jsonl (a run from before the record): shares "
                             "and queue diversity unknown.")
                lines.append("")
            if not table:
                continue
            step = max(1, math.ceil(len(table) / TABLE_ROWS))
            shown = table[::step] + ([table[-1]] if (len(table) - 1) % step else [])
            lines += [f"{arm}, per round ({len(table)} rounds"
                      + (f", every {step}th shown" if step > 1 else "") + "):", "",
                      "| round | calls | new app / exp / pool | top-K: expert / apprentice / pool "
                      "(in both) | top-10: expert / apprentice / pool | diversity app / exp / "
                      "union top-K |", "|---|---|---|---|---|---|"]
            for t in shown:
                lines.append(
                    f"| {t['round']} | {t['calls']} | {t['new_apprentice']} / {t['new_expert']} "
                    f"/ {t['new_pool']} | {_f(t['share_expert_topk'], 2)} / "
                    f"{_f(t['share_apprentice_topk'], 2)} / {_f(t['share_pool_topk'], 2)} "
                    f"({_f(t['share_in_both_topk'], 2)}; K holds {t['topk_size']}) | "
                    f"{_f(t['share_expert_top10'], 1)} / {_f(t['share_apprentice_top10'], 1)} / "
                    f"{_f(t['share_pool_top10'], 1)} | {_f(t['diversity_apprentice'])} / "
                    f"{_f(t['diversity_expert'])} / {_f(t['diversity_union_topk'])} |")
            lines.append("")
        if lead_arm in arms and len(arms) > 1:  # overtaking needs another arm of the group
            lead = per_run[run_key(task, seed, budget, lead_arm)]
            parts = []
            for other in sorted(a for a in arms if a != lead_arm):
                if f"lead_share_of_calls_vs_{other}" not in lead:
                    parts.append(f"{other}: not computed (the running top-10 curve of "
                                 f"{lead_arm if arms[lead_arm]['steps'] is None else other} "
                                 "was not kept)")
                    continue
                calls, share = lead.get(f"overtake_calls_vs_{other}"), lead[
                    f"lead_share_of_calls_vs_{other}"]
                ours, theirs = lead.get("top10_mean_final"), per_run[
                    run_key(task, seed, budget, other)].get("top10_mean_final")
                parts.append(f"{other}: " + (f"from call {int(calls)}" if calls else "never")
                             + f" (ahead at {_f(share * 100 if share is not None else None, 0)}%"
                             f" of calls; top-10 at the budget {_f(ours, 4)} vs {_f(theirs, 4)})")
            lines += [f"{lead_arm}'s running top-10 mean passes for good: " + "; ".join(parts)
                      + ".", ""]
    if skipped:
        lines += ["Left out: " + "; ".join(skipped) + ".", ""]
    return "\n".join(lines)


def plot_task(task: str, per_seed: dict[int, dict], path: Path, lead_arm: str) -> Path | None:
    """Top: the origin shares of the union's top-K per round (every GEGL-type run with a queue
    record; one line style per seed). Bottom: the running top-10 mean of every arm."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    styles = ["-", "--", ":", "-."]
    colours = {"expert": "tab:red", "apprentice": "tab:blue", "pool": "tab:grey"}
    arm_colours: dict[str, str] = {}  # one colour per arm over the seeds (line style: the seed)
    for i, (seed, data) in enumerate(sorted(per_seed.items())):
        ls = styles[i % len(styles)]
        for arm, table in sorted(data["rounds"].items()):
            if arm != lead_arm and len(data["rounds"]) > 1:
                continue  # the ablations' shares are in the tables
            x = [t["calls"] for t in table]
            for o in ORIGINS:
                y = [t[f"share_{o}_topk"] for t in table]
                y10 = [t[f"share_{o}_top10"] for t in table]
                if any(v > 0 for v in y + y10):
                    ax1.plot(x, y, ls, color=colours[o], label=f"{o}, top-K (seed {seed})")
                    ax1.plot(x, y10, "o", color=colours[o], alpha=0.5, ms=4,
                             label=f"{o}, top-10 (seed {seed})")
        for arm, curve in sorted(data["top10"].items()):
            ax2.plot(range(1, len(curve) + 1), curve, ls, label=f"{arm} (seed {seed})",
                     color=arm_colours.setdefault(arm, f"C{len(arm_colours)}"),
                     lw=2.0 if arm == lead_arm else 1.0)
    ax1.set_ylabel("share first proposed by")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_title(f"{task}: who first proposed GEGL's top-K (lines) and top-10 (dots)",
                  fontsize=9)
    if ax1.get_legend_handles_labels()[0]:
        ax1.legend(fontsize=7)
    else:  # e.g. only graph GA has finished on this task so far
        ax1.text(0.5, 0.5, "no queue record among these runs", ha="center", va="center",
                 transform=ax1.transAxes)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("unique oracle calls")
    ax2.set_ylabel("running top-10 mean")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_rounds(rounds: dict[str, list[dict]], path: Path) -> Path:
    """The per-round tables of every run as columns and rows (floats to 4 decimals), beside the
    figures: a full analysis holds thousands of rounds, too many for the results JSON."""
    from selfsup.io import atomic_write_json

    columns = list(next(iter(rounds.values()))[0]) if rounds else []
    doc = {"columns": columns,
           "runs": {key: [[round(v, 4) if isinstance(v, float) else v for v in
                           (t[c] for c in columns)] for t in table]
                    for key, table in rounds.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, doc, indent=None)


# ------------------------------------------------------------------------------------ quick
def _bench_module():
    spec = importlib.util.spec_from_file_location("gegl_bench_run",
                                                  Path(__file__).with_name("run.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_quick_runs(run_root: Path, prior: Path) -> None:
    """The quick mode's runs (reused when they finished before)."""
    bench = _bench_module()
    for task in QUICK_TASKS:
        for arm in QUICK_ARMS:
            t = time.perf_counter()
            print(f"[gegl_lead] {task} {arm} seed 0, {QUICK_BUDGET} calls", flush=True)
            unit = bench.run_unit(task, arm, 0, QUICK_BUDGET, str(prior), run_root)
            print(f"[gegl_lead]   top1 {unit['top1']:.3f} top10 {unit['top10_mean']:.3f} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)


def write_digests(entries: dict[str, dict], path: Path) -> Path:
    """Every run's running top-10 curve as change points (``top10_steps``), its call count and
    folder: what a later analysis needs of a run whose folder is gone."""
    from selfsup.io import atomic_write_json

    doc = {"runs": {key: {"path": e["path"], "n_calls": e["n_calls"], "top10_steps": e["steps"]}
                    for key, e in sorted(entries.items()) if e["steps"] is not None}}
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, doc, indent=None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dirs", nargs="*", type=Path, help="run folders of selfsup chem optimize")
    ap.add_argument("--runs", type=Path, nargs="+", default=[],
                    help="folders whose sub-folders are run folders (e.g. <out>/runs of "
                         "benchmarks/gegl/run.py)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="the run folders of the finished units in this unit cache of "
                         "guacamol_goal_directed.py (e.g. "
                         "benchmarks/results/gegl_guacamol_cache.json)")
    ap.add_argument("--quick", action="store_true",
                    help=f"make small runs first ({', '.join(QUICK_TASKS)}; "
                         f"{', '.join(QUICK_ARMS)}; {QUICK_BUDGET} calls; seed 0)")
    ap.add_argument("--prior", type=Path, default=COMMITTED_PRIOR, help="--quick: the prior")
    ap.add_argument("--lead-arm", default=LEAD_ARM, help="the arm whose overtaking is measured")
    ap.add_argument("--out", type=Path, default=None,
                    help="output folder (default: benchmarks/results; --quick: "
                         "runs/bench-gegl_lead-quick-<time>)")
    ap.add_argument("--fresh", action="store_true",
                    help="analyse only the run folders given, carrying nothing over from the "
                         "analysis already at the output")
    ap.add_argument("--threads", type=int, default=1, help="--quick: torch CPU threads")
    args = ap.parse_args(argv)
    started, t0 = now(), time.perf_counter()
    mode = "quick" if args.quick else "full"
    out = args.out or (REPO / "runs" / f"bench-gegl_lead-quick-{time.strftime('%Y%m%d-%H%M%S')}"
                       if args.quick else None)
    target = out if out is not None else RESULTS
    paths = list(args.run_dirs)
    if args.quick:
        import torch

        torch.set_num_threads(args.threads)
        out.mkdir(parents=True, exist_ok=True)
        make_quick_runs(out / "runs", args.prior)
        args.runs.append(out / "runs")
    for d in args.runs:
        if not d.is_dir():
            raise SystemExit(f"--runs {d}: not a folder")
        paths += [p for p in sorted(d.iterdir()) if p.is_dir()]
    not_here: dict[str, str] = {}
    cache_names: set[str] | None = None
    if args.cache is not None:
        cached, not_here, cache_names = cache_run_dirs(args.cache)
        paths += cached
    groups, skipped = collect(paths)
    fingerprints = Fingerprints()
    entries = {run_key(t, s, b, a): fresh_entry(r, fingerprints)
               for (t, s, b), arms in groups.items() for a, r in arms.items()}
    if cache_names is not None:  # a run made again for a unit of the cache stands for it
        for e in entries.values():
            name = Path(e["path"]).name
            same = [n for n in cache_names if n != name and unit_name(n) == unit_name(name)]
            if name not in cache_names and len(same) == 1:
                e["stands_for"] = same[0]
    earlier, carry_notes = ({}, []) if args.fresh else previous_analysis(target)
    for key, e in earlier.items():
        if key in entries:
            continue  # its folder is here (or a later run of the unit): analysed afresh
        if cache_names is not None and not {Path(e["path"]).name, e.get("stands_for")} & (
                cache_names):
            skipped.append(f"{key}: in the earlier analysis but no finished unit of the cache, "
                           "dropped")
            continue
        entries[key] = e
    drop_stale_pairs(entries, earlier)
    covered = {n for e in entries.values() for n in (Path(e["path"]).name, e.get("stands_for"))}
    skipped = [note for name, note in not_here.items() if name not in covered] \
        + skipped + carry_notes
    if not entries:
        raise SystemExit("no run folders: pass RUN_DIR ..., --runs DIR, --cache FILE or --quick"
                         if not paths else "none of the folders is a finished optimisation run")
    per_run, rows, curves = analyse(entries, args.lead_arm)
    pngs = []
    for task, per_seed in sorted(curves.items()):
        png = target / "gegl_lead" / f"{task}.png"
        if not png.is_file() or (any(d["fresh"] for d in per_seed.values())
                                 and all(d["complete"] for d in per_seed.values())):
            plot_task(task, per_seed, png, args.lead_arm)
        pngs.append(str(png))
    rounds = {key: e["table"] for key, e in sorted(entries.items()) if e["table"]}
    rounds_path = write_rounds(rounds, target / "gegl_lead" / "rounds.json")
    digests_path = write_digests(entries, target / "gegl_lead" / DIGESTS)
    notes = notes_text(entries, per_run, skipped, args.lead_arm)
    notes += (f"\nEvery round of every run: `{rounds_path}`; running top-10 curves: "
              f"`{digests_path}`; figures (a task's is drawn again when one of its runs was "
              "analysed from its folder and every run of it has its curve, else kept as it "
              "was): " + ", ".join(f"`{p}`" for p in pngs) + ".")
    extra = {"runs": {key: e["path"] for key, e in sorted(entries.items())},
             "per_run": {key: {"path": e["path"], "prior": e["prior"],
                               "queue_size": e["queue_size"], "has_queues": e["has_queues"],
                               "source": e["source"], "stands_for": e.get("stands_for"),
                               "metrics": per_run[key]}
                         for key, e in sorted(entries.items())},
             "rounds_file": str(rounds_path), "digests_file": str(digests_path),
             "figures": pngs, "left_out": skipped}
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    jp, mp = write_results("gegl_lead", mode, command, started, time.perf_counter() - t0, rows,
                           out, notes, extra)
    print(f"wrote {jp}, {mp} and {len(pngs)} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
