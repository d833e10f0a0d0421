"""The dataset registry: look up a dataset, fetch it, tell whether it is there.

The entries (what each dataset provides and its ordered sources) are in
:mod:`selfsup.data.catalog`; :func:`register` adds more (tests, plug-ins). ``fetch(name)`` tries
the dataset's sources in order. Each source fills a private staging directory; the files are
verified (sha256), moved into the dataset directory with ``os.replace`` and a ``.complete`` JSON
marker holding their sha256 and sizes is written last, so a half-fetched dataset never looks
complete.

The cache root is ``$SELFSUP_DATA`` or ``~/.cache/selfsup/data``; every function takes ``root``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from selfsup.data.catalog import DATASETS
from selfsup.data.sources import (
    ManualSource,
    Source,
    SourceError,
    file_digest,
    verify_file,
)
from selfsup.data.spec import DatasetSpec
from selfsup.errors import DataNotFoundError, InputError
from selfsup.io import atomic_write_json

log = logging.getLogger(__name__)

ENV_VAR = "SELFSUP_DATA"
MARKER = ".complete"


_REGISTRY: dict[str, DatasetSpec] = {s.name: s for s in DATASETS}


def default_root() -> Path:
    """``$SELFSUP_DATA`` if set, else ``~/.cache/selfsup/data``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "selfsup" / "data"


# --------------------------------------------------------------------------------------------
# public API


def list_datasets() -> list[DatasetSpec]:
    """Every registered dataset, in registry order."""
    return list(_REGISTRY.values())


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` called ``name``; :class:`InputError` listing valid names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(
            f"unknown dataset {name!r}; valid names: {', '.join(_REGISTRY)}"
        ) from None


def register(spec: DatasetSpec, replace: bool = False) -> None:
    """Add a dataset (tests and plug-ins); ``replace=True`` to overwrite an entry."""
    if spec.name in _REGISTRY and not replace:
        raise InputError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def unregister(name: str) -> None:
    """Remove a dataset added with :func:`register`."""
    _REGISTRY.pop(name, None)


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>``, ``root`` defaulting to :func:`default_root`. Nothing is created."""
    get_spec(name)
    return (Path(root).expanduser() if root is not None else default_root()) / name


def read_marker(name: str, root: str | os.PathLike | None = None) -> dict | None:
    """The ``.complete`` marker's content (source, files with sha256 and size) or ``None``."""
    path = dataset_dir(name, root) / MARKER
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_available(name: str, root: str | os.PathLike | None = None) -> bool:
    """True when the marker exists and every file it lists is present with its recorded size."""
    spec = get_spec(name)
    if not spec.fetchable:
        return False
    marker = read_marker(name, root)
    if not marker or set(marker.get("files", {})) != set(spec.files):
        return False
    d = dataset_dir(name, root)
    for f, info in marker["files"].items():
        p = d / f
        if not p.is_file() or p.stat().st_size != info.get("size"):
            return False
    return True


def manual_instructions(spec: DatasetSpec, target: Path) -> str:
    """Text saying which files to place where by hand."""
    lines = [f"To install {spec.name} by hand, put these files in {target}/ :"]
    lines += [f"    {target / f}" for f in spec.files]
    manual = [s for s in spec.sources if isinstance(s, ManualSource)]
    for m in manual:
        for layout in m.layouts:
            if layout.files != spec.files:
                lines.append("  or, instead, " + ", ".join(str(target / f) for f in layout.files))
        if m.note:
            lines.append(f"  ({m.note})")
    lines.append(f"then run `selfsup data fetch {spec.name}` "
                 f"(or selfsup.data.fetch({spec.name!r})) again, which verifies and adopts "
                 f"them (set ${ENV_VAR} or pass root= to use another data directory).")
    return "\n".join(lines)


def fetch(name: str, root: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Make ``name`` available under ``dataset_dir(name, root)`` and return that directory.

    Idempotent: returns at once when the dataset is already complete (unless ``force``).
    Otherwise tries each source in order; raises :class:`DataNotFoundError` listing every source
    tried with its error, and the exact directory and file names to place by hand.
    """
    spec = get_spec(name)
    target = dataset_dir(name, root)
    if not spec.fetchable:
        raise InputError(f"{name!r} cannot be fetched: {spec.description}")
    if not force and is_available(name, root):
        return target
    target.mkdir(parents=True, exist_ok=True)
    try:
        (target / MARKER).unlink()
    except FileNotFoundError:
        pass
    attempts: list[str] = []
    for i, source in enumerate(spec.sources, 1):
        t0 = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
        try:
            source.fetch(staging, target)
            record = _verify_staged(spec, source, staging)
            for f in spec.files:
                dst = target / f
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / f, dst)
                os.chmod(dst, 0o644)
            marker = {
                "name": spec.name,
                "source": source.describe(),
                "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.perf_counter() - t0, 2),
                "files": record,
            }
            atomic_write_json(target / MARKER, marker)
            os.chmod(target / MARKER, 0o644)
            log.info("fetched %s from %s in %.1f s", name, source.describe(), marker["seconds"])
            return target
        except Exception as exc:  # every failure of one source is recorded, then the next runs
            msg = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
            attempts.append(f"  {i}. {source.describe()}: {msg}")
            log.info("source %d for %s failed: %s", i, name, msg)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise DataNotFoundError(
        f"could not fetch dataset {name!r}; every source failed:\n"
        + "\n".join(attempts)
        + "\n"
        + manual_instructions(spec, target)
    )


def _verify_staged(spec: DatasetSpec, source: Source, staging: Path) -> dict[str, dict]:
    missing = [f for f in spec.files if not (staging / f).is_file()]
    if missing:
        raise SourceError(f"it did not produce {', '.join(missing)}")
    record = {}
    for f in spec.files:
        expected = source.sha256.get(f)
        if expected is not None:
            verify_file(staging / f, sha256=expected)
        record[f] = {
            "sha256": expected or file_digest(staging / f),
            "size": (staging / f).stat().st_size,
        }
    return record
