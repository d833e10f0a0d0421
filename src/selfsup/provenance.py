"""What produced a figure: the commit, the torch build and the CPU it ran on.

A torch-trained figure depends on more than the code and the seed: the CPU's floating-point
kernels (which instruction set torch dispatches to, oneDNN's and MKL's choices, the number of
threads) change the rounding of sums, and a training run amplifies those last-bit differences
into a different model. ``provenance()`` records what a reader needs to tell such a machine
difference from a code change; it is cheap (one ``git`` call or two, ``/proc/cpuinfo``, torch's
build string) and never raises: what cannot be read is ``None``.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

CPUINFO = "/proc/cpuinfo"

# instruction-set flags that decide which kernels torch, oneDNN and MKL use (x86 and Arm names)
ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "asimddp", "sve", "sve2", "bf16", "i8mm", "sme",
)

# the keys whose difference between two machines can change a torch-computed figure
NUMERIC_KEYS = ("torch", "torch_git", "torch_cpu_capability", "mkl", "onednn", "cpu_model",
                "cpu_id", "isa_flags", "torch_threads")


def _git(*args: str) -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_state() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it); None where git is not there."""
    head = _git("rev-parse", "HEAD")
    if head is None or not head.strip():
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return head.strip(), (None if status is None else bool(status.strip()))


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - PackageNotFoundError, or a broken installation
        return None


def _read_cpuinfo(path: str) -> dict[str, Any]:
    """Model name, family/model/stepping and the flags of the first processor in ``path``."""
    try:
        text = Path(path).read_text(errors="replace")
    except (OSError, ValueError):
        return {}
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip().lower(), value.strip())
    flags = set((first.get("flags") or first.get("features") or "").split())
    cpu_id = None
    if "cpu family" in first or "model" in first:
        cpu_id = "/".join(first.get(k, "?") for k in ("cpu family", "model", "stepping"))
    elif "cpu implementer" in first:  # Arm: implementer/part/variant
        cpu_id = "/".join(first.get(k, "?") for k in ("cpu implementer", "cpu part",
                                                       "cpu variant"))
    return {"model": first.get("model name") or first.get("hardware") or None,
            "id": cpu_id, "flags": [f for f in ISA_FLAGS if f in flags], "has_flags": bool(flags)}


@functools.lru_cache(maxsize=4)
def _static(cpuinfo: str) -> dict[str, Any]:
    """The parts that do not change while a process runs (cached)."""
    cpu = _read_cpuinfo(cpuinfo)
    try:
        cores_usable: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores_usable = None
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "arch": platform.machine() or None,
        "cpu_model": cpu.get("model") or platform.processor() or None,
        "cpu_id": cpu.get("id"),
        "isa_flags": cpu.get("flags") if cpu.get("has_flags") else None,
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": cores_usable,
        "numpy": _version("numpy"),
        "rdkit": _version("rdkit"),
        "torch": None, "torch_git": None, "torch_cpu_capability": None,
        "mkl": None, "onednn": None, "torch_blas": None,
    }
    try:
        import torch
    except Exception:  # noqa: BLE001 - no torch, or one that fails to import
        return out
    try:
        out["torch"] = torch.__version__
        out["torch_git"] = getattr(torch.version, "git_version", None)
        cap = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        out["torch_cpu_capability"] = cap() if cap else None
        show = torch.__config__.show()
        mkl = re.search(r"Math Kernel Library Version ([\d.]+)", show)
        dnn = re.search(r"(?:MKL-DNN|oneDNN) (v[^\s]+)", show)
        blas = re.search(r"BLAS_INFO=([^,\s]+)", show)
        out["mkl"] = mkl.group(1) if mkl else None
        out["onednn"] = dnn.group(1) if dnn else None
        out["torch_blas"] = blas.group(1) if blas else None
    except Exception:  # noqa: BLE001 - an older or unusual torch build: keep what was read
        pass
    return out


def provenance(cpuinfo: str | None = None) -> dict[str, Any]:
    """The commit, interpreter, libraries, torch build and CPU of this process, as a flat dict.

    Keys: ``commit`` (HEAD, or None outside a git checkout), ``dirty`` (tracked files differ from
    HEAD), ``python``, ``platform``, ``arch``, ``cpu_model`` (``/proc/cpuinfo``'s model name),
    ``cpu_id`` (family/model/stepping, or the Arm part), ``isa_flags`` (those of ``ISA_FLAGS``
    the CPU has; None where the flags could not be read), ``cpu_cores``, ``cpu_cores_usable``
    (this process's affinity), ``numpy``, ``rdkit``, ``torch``, ``torch_git``,
    ``torch_cpu_capability`` (the kernels torch dispatches to, e.g. AVX2, AVX512),
    ``mkl``, ``onednn``, ``torch_blas``, ``torch_threads``. ``cpuinfo``: the file to read the
    CPU from (default ``CPUINFO``). Never raises.
    """
    try:
        out = dict(_static(cpuinfo or CPUINFO))
    except Exception:  # noqa: BLE001 - never fail a benchmark on its bookkeeping
        out = {}
    try:
        out["commit"], out["dirty"] = _git_state()
    except Exception:  # noqa: BLE001
        out["commit"], out["dirty"] = None, None
    out["torch_threads"] = None
    if "torch" in sys.modules:
        try:
            out["torch_threads"] = sys.modules["torch"].get_num_threads()
        except Exception:  # noqa: BLE001
            pass
    return out


def summary(p: dict[str, Any] | None) -> str:
    """One line: commit, torch build and CPU (what ``provenance()`` returned; '?' where absent)."""
    if not p:
        return "not recorded"

    def g(key: str) -> Any:
        v = p.get(key)
        return "?" if v is None else v

    commit = p.get("commit")
    head = (commit[:10] if isinstance(commit, str) else "?") + (
        " (dirty)" if p.get("dirty") else "")
    flags = p.get("isa_flags")
    isa = " ".join(flags) if isinstance(flags, list) and flags else "?"
    libs = ", ".join(f"{k} {p[k]}" for k in ("mkl", "onednn") if p.get(k))
    return (f"commit {head}; python {g('python')}; torch {g('torch')} "
            f"(git {str(g('torch_git'))[:10]}, CPU kernels {g('torch_cpu_capability')}"
            + (f", {libs}" if libs else "") + f"), {g('torch_threads')} torch thread(s); "
            f"numpy {g('numpy')}, rdkit {g('rdkit')}; CPU {g('cpu_model')} [{g('cpu_id')}] "
            f"({isa}), {g('cpu_cores')} cores")


def numeric_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """The ``NUMERIC_KEYS`` on which two provenance records differ (both must hold the key);
    an empty list when either record is missing."""
    if not a or not b:
        return []
    return [k for k in NUMERIC_KEYS
            if a.get(k) is not None and b.get(k) is not None and a.get(k) != b.get(k)]
