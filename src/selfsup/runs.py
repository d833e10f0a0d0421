"""Run directories: every command that trains, optimises or plans writes one.

Layout of ``<root>/<name>-<YYYYmmdd-HHMMSS>/``::

    config.yaml      the resolved config (defaults + YAML + overrides)
    run.json         command, seed, status (running / finished / failed), times
    env.json         Python, torch, device, packages, git commit
    metrics.jsonl    one JSON object per logged step (append-only; trimmed on resume)
    metrics.csv      the same table as CSV (rewritten atomically)
    queues.jsonl     chem optimize (GEGL, LSTM-HC): each round's queues (chem/optimize/base.py)
    tensorboard/     TensorBoard events (training commands)
    checkpoints/     last.ckpt and friends (atomic writes)
    results.json     final numbers
    log.txt          the log
    report.html      written by ``selfsup report RUN``

The commands start a run with :func:`start_run` and go on with a killed one with
:func:`resume_run` (the config, the checks that come before anything is written, the status). On
resume the command restores its last checkpoint and calls :meth:`Run.trim_metrics` so no row
after the checkpoint is counted twice.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError, InputError
from .io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    read_json_file,
    read_yaml_file,
)

DEFAULT_RUN_ROOT = "runs"

# Callbacks ``hook(run, event)`` called when a run is created (event "started") or reopened to go
# on (event "resumed"). The command line registers one that prints the run folder at once and
# remembers it for the Ctrl-C message; library use stays silent.
OPEN_HOOKS: list = []


def _announce(run: Run, event: str) -> None:
    for hook in list(OPEN_HOOKS):
        hook(run, event)


def run_root(root: str | os.PathLike | None = None) -> Path:
    """The folder that holds run directories: ``root``, else $SELFSUP_RUNS, else ./runs."""
    return Path(root or os.environ.get("SELFSUP_RUNS", DEFAULT_RUN_ROOT))


# The kinds of run, each with the command that makes it (recorded in run.json as ``kind``) and
# whether that command takes ``--resume``.
KINDS: dict[str, tuple[str, bool]] = {
    "vision.train": ("selfsup vision train", True),
    "chem.optimize": ("selfsup chem optimize", True),
    "chem.pretrain": ("selfsup chem pretrain", True),
    "chem.train_single_step": ("selfsup chem train-single-step", True),
    "chem.plan": ("selfsup chem plan", True),
    "chem.self_improve": ("selfsup chem self-improve", True),
    "demo": ("selfsup demo", False),
}

_DAMAGED = ("selfsup writes this file atomically, so it was changed or cut outside selfsup: "
            "restore it from a copy of the run, or start a new run.")


def check_run_name(name: str) -> str:
    """``name`` if it can name a folder inside the run root; else a :class:`ConfigError`."""
    bad = not name or name in (".", "..") or "\0" in name or any(
        sep and sep in name for sep in ("/", "\\", os.sep, os.altsep))
    if bad:
        raise ConfigError(
            f"name={name!r}: a run name must be a plain folder name (no '/' or '\\', not '.' "
            "or '..'); the run goes to <run_root>/<name>-<time>/, so choose the folder with "
            "run_root=DIR instead.")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_summary() -> dict[str, Any]:
    """What produced a run: interpreter, platform, key package versions and devices."""
    from importlib import metadata

    pkgs = {}
    for name in ("selfsup", "torch", "torchvision", "lightning", "rdkit", "rdchiral", "numpy"):
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": pkgs,
        "git_commit": _git_commit(),
    }
    if "torch" in sys.modules or pkgs.get("torch"):
        try:
            import torch

            env["cuda"] = torch.cuda.is_available()
            env["cuda_devices"] = [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            ]
            env["mps"] = bool(getattr(torch.backends, "mps", None)) and (
                torch.backends.mps.is_available()
            )
            env["torch_threads"] = torch.get_num_threads()
        except Exception as exc:  # pragma: no cover - defensive: never fail a run on this
            env["torch_error"] = repr(exc)
    return env


@dataclass
class Run:
    """A run directory and its bookkeeping."""

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- creation / reopening
    @classmethod
    def create(
        cls,
        name: str,
        config: dict[str, Any],
        seed: int | None = None,
        root: str | os.PathLike | None = None,
        command: list[str] | None = None,
        kind: str | None = None,
    ) -> Run:
        """A new run folder ``<root>/<name>-<time>/`` holding the config; ``kind`` (a key of
        :data:`KINDS`) is what ``--resume`` checks before it touches the run."""
        check_run_name(name)
        if kind is not None and kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}; known: {', '.join(KINDS)}")
        base = run_root(root)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = base / f"{name}-{stamp}"
        i = 1
        while path.exists():
            i += 1
            path = base / f"{name}-{stamp}-{i}"
        path.mkdir(parents=True)
        run = cls(path=path)
        atomic_write_text(path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        atomic_write_json(path / "env.json", environment_summary())
        run.meta = {
            "name": name,
            "kind": kind,
            "seed": seed,
            "command": command if command is not None else sys.argv,
            "status": "running",
            "started": _now(),
            "resumed": [],
        }
        run._save_meta()
        _announce(run, "started")
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> Run:
        """An existing run, read only: nothing in its folder changes."""
        path = Path(path)
        if not (path / "run.json").is_file():
            raise InputError(
                f"'{path}' is not a selfsup run directory (no run.json). "
                "Pass the folder that a selfsup command created under runs/."
            )
        meta = read_json_file(path / "run.json", "the run's bookkeeping file", _DAMAGED)
        return cls(path=path, meta=meta)

    @property
    def kind(self) -> str | None:
        """The run's kind (a key of :data:`KINDS`): recorded, or for a run made before kinds
        were recorded, read from its command line; ``None`` when unknown."""
        kind = self.meta.get("kind")
        if kind:
            return kind
        words = [os.path.basename(str(w)) for w in self.meta.get("command") or []]
        for k, (cmd, _) in KINDS.items():
            tail = cmd.split()[1:]  # e.g. ["chem", "optimize"]
            if any(words[i : i + len(tail)] == tail for i in range(len(words))):
                return k
        return None

    @property
    def finished(self) -> bool:
        return self.meta.get("status") == "finished"

    @classmethod
    def reopen(cls, path: str | os.PathLike, kind: str) -> Run:
        """Open a run to go on with it, checking that it is a ``kind`` run; nothing changes yet.

        The caller checks whatever else it needs (config, checkpoints) and then calls
        :meth:`mark_resumed`, or, for a finished run, :meth:`unchanged`. A run of another kind
        raises :class:`InputError` and stays as it was."""
        run = cls.open(path)
        have = run.kind
        if have is not None and have != kind:
            cmd, resumable = KINDS.get(have, (have, False))
            how = (f"resume it with `{cmd} --resume {run.path}`" if resumable
                   else f"`{cmd}` runs cannot be resumed")
            raise InputError(
                f"'{run.path}' is a `{cmd}` run, not a `{KINDS[kind][0]}` run; nothing was "
                f"changed. To go on with it, {how}.")
        return run

    def load_config(self, schema: type, overrides: list[str] | None = None,
                    loader: Any = None) -> Any:
        """The run's config.yaml read into ``schema`` (a config dataclass) by ``loader`` (called
        as ``loader(None, overrides, base=...)``; default :func:`selfsup.config.load_config`);
        a config of another kind of run or a damaged file raises before anything changes."""
        from .config import load_config

        def default(path, overrides, base):
            return load_config(schema, path, overrides, base=base)

        try:
            return (loader or default)(None, list(overrides or []), base=self.config)
        except ConfigError as exc:
            if overrides:
                raise
            raise ConfigError(
                f"the config of run '{self.path}' does not fit this command ({exc}); nothing "
                "was changed. Was the run made by another command?") from None

    def read_checkpoint(self, name: str, key: str, unit: str = "step") -> dict[str, Any] | None:
        """``checkpoints/<name>`` for a resume, or None when there is none yet. A damaged file,
        or one without ``key`` (the position it holds, e.g. ``global_step``), raises
        :class:`InputError` that says to delete it to train again from the first ``unit``."""
        from .io import safe_torch_load

        path = self.path / "checkpoints" / name
        if not path.is_file():
            return None
        fix = f"Delete '{path}' to train this run again from its first {unit}, or start a new run."
        state = safe_torch_load(path, fix=fix)
        if not isinstance(state, dict) or key not in state:
            raise InputError(f"'{path}' is not a checkpoint of this command (no {key}). {fix}")
        return state

    def mark_resumed(self) -> None:
        """Record that the run goes on now (status running, the time in ``resumed``)."""
        self.meta.setdefault("resumed", []).append(_now())
        self.meta["status"] = "running"
        self.meta.pop("error", None)
        self._save_meta()
        _announce(self, "resumed")

    def unchanged(self) -> dict[str, Any]:
        """For a finished run asked to resume: change nothing, say so, return its results."""
        _announce(self, "finished")
        return self.read_results()

    @classmethod
    def resume(cls, path: str | os.PathLike, kind: str | None = None) -> Run:
        """:meth:`reopen` (when ``kind`` is given) and :meth:`mark_resumed` in one step, for
        callers that have nothing to check in between."""
        run = cls.reopen(path, kind) if kind else cls.open(path)
        run.mark_resumed()
        return run

    # ---------------------------------------------------------------------------- contents
    @property
    def config(self) -> dict[str, Any]:
        return read_yaml_file(self.path / "config.yaml", "the run's config", _DAMAGED)

    @property
    def checkpoint_dir(self) -> Path:
        d = self.path / "checkpoints"
        d.mkdir(exist_ok=True)
        return d

    @property
    def artefact_dir(self) -> Path:
        d = self.path / "artefacts"
        d.mkdir(exist_ok=True)
        return d

    def _save_meta(self) -> None:
        atomic_write_json(self.path / "run.json", self.meta)

    def set_status(self, status: str, **extra: Any) -> None:
        self.meta["status"] = status
        self.meta[f"{status}_at"] = _now()
        self.meta.update(extra)
        self._save_meta()

    @contextlib.contextmanager
    def marks_failure(self) -> Iterator[Run]:
        """Run the body; if it raises (Ctrl-C included), record status 'failed' and re-raise."""
        try:
            yield self
        except BaseException as exc:
            self.set_status("failed", error=repr(exc))
            raise

    def logger(self) -> logging.Logger:
        """A logger writing to ``log.txt`` of this run (and nowhere else). It is keyed by the
        run folder's full path: two runs of one name under different roots (made in the same
        second) keep their own logs."""
        log = logging.getLogger(self._logger_name())
        if not any(isinstance(h, logging.FileHandler) for h in log.handlers):
            h = logging.FileHandler(self.path / "log.txt")
            h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(h)
            log.setLevel(logging.INFO)
            log.propagate = False
        return log

    def _logger_name(self) -> str:
        return "selfsup.run." + str(self.path.resolve()).replace(".", "_")

    def close_logger(self) -> None:
        """Close this run's ``log.txt`` file (:meth:`finish` does): a process that runs
        thousands of units keeps no file open per finished one. The handler stays on the
        logger, so a message logged later (a command's closing line) opens the file again and
        appends (a closed ``FileHandler`` in append mode re-opens on its next record)."""
        log = logging.Logger.manager.loggerDict.get(self._logger_name())
        for h in getattr(log, "handlers", ()):
            if isinstance(h, logging.FileHandler):
                h.close()

    # ----------------------------------------------------------------------------- metrics
    def log_metrics(self, row: dict[str, Any]) -> None:
        """Append one row (must hold ``step``) to metrics.jsonl; flushed to disk at once."""
        row = {k: (float(v) if hasattr(v, "item") else v) for k, v in row.items()}
        append_jsonl(self.path / "metrics.jsonl", row)

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text(encoding="utf-8", errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: dropped, the checkpoint replays it
        return rows

    def trim_metrics(self, last_step: int) -> int:
        """Drop rows logged after ``last_step`` (the resumed checkpoint); return rows kept.
        Rows up to it are the run's history and stay."""
        rows = [r for r in self.read_metrics() if int(r.get("step", -1)) <= last_step]
        atomic_write_text(
            self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows)
        )
        return len(rows)

    def write_metrics_csv(self) -> Path:
        rows = self.read_metrics()
        cols: list[str] = []
        for r in rows:
            for k in r:
                if k not in cols:
                    cols.append(k)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
        return atomic_write_text(self.path / "metrics.csv", buf.getvalue())

    # ----------------------------------------------------------------------------- results
    def write_results(self, results: dict[str, Any]) -> Path:
        return atomic_write_json(self.path / "results.json", results)

    def read_results(self) -> dict[str, Any]:
        p = self.path / "results.json"
        if not p.is_file():
            return {}
        return read_json_file(p, "the run's results", "Resume the run (--resume) to write it "
                              "again if the command supports it, or start a new run.")

    def finish(self, results: dict[str, Any] | None = None) -> None:
        if results is not None:
            self.write_results(results)
        if (self.path / "metrics.jsonl").is_file():
            self.write_metrics_csv()
        self.set_status("finished", wall_seconds=self._elapsed())
        self.close_logger()

    def _elapsed(self) -> float | None:
        try:
            started = datetime.fromisoformat(self.meta["started"])
            return round((datetime.now(timezone.utc) - started).total_seconds(), 2)
        except (KeyError, ValueError):
            return None


# ============================================================================ start / resume

_T = TypeVar("_T")


def start_run(
    kind: str,
    schema: type,
    config_path: str | os.PathLike | None,
    overrides: Sequence[str],
    body: Callable[[Run, Any], _T],
    *,
    loader: Callable[..., Any] | None = None,
    check: Callable[[Any], None] | None = None,
) -> tuple[Run, _T]:
    """Start a new ``kind`` run (a key of :data:`KINDS`) and return ``(run, body(run, cfg))``.

    The config is read by ``loader(config_path, overrides)`` (default
    :func:`selfsup.config.load_config` into ``schema``), then ``check(cfg)`` raises for what must
    fail before a run folder is made (an unknown objective, a precision the device lacks). Only
    then is the folder made (:meth:`Run.create` with ``cfg.name``, ``cfg.seed``, ``cfg.run_root``);
    ``body`` runs under :meth:`Run.marks_failure`, so an exception records status 'failed'."""
    from .config import load_config, to_dict

    if loader is None:
        cfg = load_config(schema, config_path, list(overrides))
    else:
        cfg = loader(config_path, list(overrides))
    if check is not None:
        check(cfg)
    run = Run.create(cfg.name, to_dict(cfg), seed=cfg.seed, root=cfg.run_root, kind=kind)
    with run.marks_failure():
        return run, body(run, cfg)


def resume_run(
    kind: str,
    schema: type,
    run_path: str | os.PathLike,
    body: Callable[[Run, Any, Any], _T],
    *,
    loader: Callable[..., Any] | None = None,
    check: Callable[[Run, Any], Any] | None = None,
    overrides: Sequence[str] = (),
) -> tuple[Run, _T | dict[str, Any]]:
    """Go on with the ``kind`` run at ``run_path``; return ``(run, body(run, cfg, state))``.

    In order, and nothing in the run changes before :meth:`Run.mark_resumed`: :meth:`Run.reopen`
    (a run of another kind is refused, naming its command); a finished run without ``overrides``
    is returned as it is, with its results (:meth:`Run.unchanged`); the run's config is read into
    ``schema`` with ``overrides`` (:meth:`Run.load_config`, ``loader`` as there); ``state =
    check(run, cfg)`` raises for a damaged checkpoint or record, and what it returns (say the
    checkpoint read) is passed on to ``body``. Then :meth:`Run.mark_resumed`, config.yaml
    rewritten when ``overrides`` changed it, and ``body`` under :meth:`Run.marks_failure`."""
    from .config import to_yaml

    run = Run.reopen(run_path, kind)
    if run.finished and not overrides:
        return run, run.unchanged()
    cfg = run.load_config(schema, list(overrides), loader=loader)
    state = check(run, cfg) if check is not None else None
    run.mark_resumed()
    if overrides:
        atomic_write_text(run.path / "config.yaml", to_yaml(cfg))
    with run.marks_failure():
        return run, body(run, cfg, state)


DDP_RUN_ENV = "SELFSUP_DDP_RUN"


def ddp_child_run() -> Run | None:
    """In a process that a data-parallel launcher started for rank > 0 (``LOCAL_RANK`` set and
    not 0, see :func:`selfsup.device.setup_fabric`): the run of rank 0, whose folder rank 0 put
    in ``$SELFSUP_DDP_RUN`` before it launched, opened read only (:meth:`Run.open`), so that
    all processes share one run; else None. Such a process writes nothing into the run."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(DDP_RUN_ENV):
        return Run.open(os.environ[DDP_RUN_ENV])
    return None


@contextlib.contextmanager
def ddp_run_env(run: Run, parallel: bool) -> Iterator[None]:
    """With ``parallel``: ``$SELFSUP_DDP_RUN`` names ``run`` while the body runs (the processes
    launched in it join the run, :func:`ddp_child_run`); without: nothing changes."""
    if not parallel or os.environ.get("LOCAL_RANK", "0") != "0":
        yield
        return
    old = os.environ.get(DDP_RUN_ENV)
    os.environ[DDP_RUN_ENV] = str(run.path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(DDP_RUN_ENV, None)
        else:
            os.environ[DDP_RUN_ENV] = old


class Timer:
    """A small wall-clock timer: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
