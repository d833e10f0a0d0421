"""Atomic file writes: a killed process never leaves a half-written file behind."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic(path: str | os.PathLike, mode: str, writer: Callable[[IO], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; use the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    return _atomic(path, "w", lambda fh: fh.write(text))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    return _atomic(path, "wb", lambda fh: fh.write(data))


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-Infinity) replaced by ``None``.

    ``json.dumps`` would write them as ``NaN``/``Infinity``, which is not JSON: strict readers
    (``jq``, JavaScript, most other languages) reject the file. Dicts, lists and tuples are
    walked (tuples become lists, as JSON writes them anyway); anything else is kept as it is.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` ``(obj)`` with ``allow_nan=False``: valid JSON, with
    ``null`` where a value was NaN or infinite (e.g. the cost of an unsolved target)."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (NaN/Infinity written as ``null``)."""
    return atomic_write_text(path, dumps_json(obj, indent=indent, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Append one JSON line to ``path`` and fsync it: a kill loses at most the line being cut.
    NaN/Infinity are written as ``null`` (see :func:`json_safe`)."""
    with open(path, "a") as fh:
        fh.write(dumps_json(obj) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically."""
    import torch

    return _atomic(path, "wb", lambda fh: torch.save(obj, fh))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu",
                    fix: str = "") -> Any:
    """Load a checkpoint without unpickling arbitrary objects (``weights_only=True``).

    A missing, truncated, empty or foreign file raises :class:`InputError` naming the file and
    what went wrong; ``fix`` (what the user can do) is appended to the message."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        import pickle

        if isinstance(exc, FileNotFoundError):
            what = "is missing"
        elif isinstance(exc, pickle.UnpicklingError) and "Weights only" in str(exc):
            what = ("holds pickled Python objects besides tensors and plain data; selfsup never "
                    "unpickles those (torch.load weights_only=True), so it is refused")
        else:
            what = (f"cannot be read as a checkpoint ({_first_line(exc)}); it is truncated, "
                    "damaged or not a file selfsup wrote")
        raise InputError(f"'{path}' {what}. {fix}".strip()) from None


def read_text_file(path: str | os.PathLike, what: str = "file", fix: str = "") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file raises
    :class:`InputError` naming it (``what`` says which file it is, ``fix`` what to do)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        reason = "does not exist"
    except IsADirectoryError:
        reason = "is a directory, not a file"
    except UnicodeDecodeError as exc:
        reason = f"is not UTF-8 text (byte {exc.start}: {exc.reason})"
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror or exc})"
    raise InputError(f"{what} '{path}' {reason}. {fix}".strip())


def read_text_maybe_gzip(path: str | os.PathLike, what: str = "file", fix: str = "") -> str:
    """Like :func:`read_text_file`, for a file that may be gzip-compressed (told by its first
    bytes, not its name); a damaged or mislabelled gzip raises :class:`InputError` too."""
    import gzip
    import zlib

    path = Path(path)
    try:
        with open(path, "rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
    except OSError:
        gz = False  # read_text_file below names the problem
    if not gz:
        if path.suffix.lower() == ".gz" and path.is_file():
            raise InputError(f"{what} '{path}' is named .gz but is not gzip-compressed. Rename "
                             "it without .gz if it is plain text, or compress it with gzip.")
        return read_text_file(path, what, fix)
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
            return fh.read()
    except UnicodeDecodeError as exc:
        reason = f"does not hold UTF-8 text (byte {exc.start}: {exc.reason})"
    except (OSError, EOFError, zlib.error) as exc:
        reason = f"is a damaged or cut gzip file ({_first_line(exc)})"
    raise InputError(f"{what} '{path}' {reason}. {fix}".strip())


def read_json_file(path: str | os.PathLike, what: str = "JSON file", fix: str = "",
                   expect: type = dict) -> Any:
    """Parse ``path`` as JSON holding an ``expect`` (a dict by default); a damaged file raises
    :class:`InputError` that names it and says what to do (``fix``)."""
    text = read_text_file(path, what, fix)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{what} '{path}' is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); it was cut or damaged. {fix}".strip()) from None
    if not isinstance(obj, expect):
        raise InputError(
            f"{what} '{path}' holds a JSON {type(obj).__name__}, not a JSON "
            f"{'object' if expect is dict else expect.__name__}. {fix}".strip())
    return obj


def read_yaml_file(path: str | os.PathLike, what: str = "YAML file", fix: str = "") -> dict:
    """Parse ``path`` with YAML's safe loader into a mapping (an empty file gives ``{}``); a
    damaged file raises :class:`InputError` that names it and says what to do (``fix``)."""
    import yaml

    text = read_text_file(path, what, fix)
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise InputError(f"{what} '{path}' is not valid YAML{where}: it was cut or damaged. "
                         f"{fix}".strip()) from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise InputError(f"{what} '{path}' holds a YAML {type(obj).__name__}, not a mapping of "
                         f"keys to values. {fix}".strip())
    return obj
