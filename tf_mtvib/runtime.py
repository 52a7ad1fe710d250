"""Process settings for long TensorFlow runs on the CPU: glibc's allocator thresholds.

TensorFlow's CPU allocator takes every tensor from ``malloc``. With glibc's
defaults a large buffer (above the mmap threshold, which adapts up to
32 MiB) is mapped and unmapped on every step, and the free top of the heap
is handed back to the kernel (trim); each training step then faults its
activations and gradients back in, page by page. Where a page fault is
dear (a virtual machine's nested paging), that kernel time is a large share
of a step: ``benchmarks/bench_allocator.py`` times the same training step
with and without :data:`MALLOC_TUNABLES`, in alternating processes.

Raising both thresholds keeps the memory in the process. The cost: a
process does not return freed heap to the kernel, so its resident size stays
at its peak (not measured here).

glibc reads these settings only when a process starts (``GLIBC_TUNABLES``);
``mallopt()`` at run time caps ``M_MMAP_THRESHOLD`` at 32 MiB, which did not
speed up the GS step when tried (one process each way). So the library sets them in the environment of the processes it starts
itself (:func:`child_environment`): the isolated trainings of
``python -m tf_mtvib.reproduce`` (:func:`tf_mtvib.train.ensure_run`) and the
workers of ``python -m tf_mtvib.launch``. A process you start yourself gets
them from its environment::

    export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296

``TF_MTVIB_MALLOC_TUNING=0`` turns :func:`child_environment` off; a name
already in ``GLIBC_TUNABLES`` keeps the value given there.
"""
from __future__ import annotations

import functools
import os
import platform
from typing import Dict, Mapping, Optional

#: glibc tunables set in the environment of the processes the library starts.
MALLOC_TUNABLES: Dict[str, int] = {
    "glibc.malloc.mmap_threshold": 1 << 30,   # 1 GiB: no per-step mmap/munmap of large tensors
    "glibc.malloc.trim_threshold": 1 << 32,   # 4 GiB: freed heap stays in the process
}

#: Set to ``0`` to leave the allocator of child processes at glibc's defaults.
OPT_OUT = "TF_MTVIB_MALLOC_TUNING"


def uses_glibc() -> bool:
    """Whether this Python runs on glibc (where ``GLIBC_TUNABLES`` means something)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def parse_tunables(text: Optional[str]) -> Dict[str, str]:
    """``"a=1:b=2"`` -> ``{"a": "1", "b": "2"}`` (glibc's ``GLIBC_TUNABLES`` syntax)."""
    out: Dict[str, str] = {}
    for item in (text or "").split(":"):
        name, sep, value = item.partition("=")
        if name.strip() and sep:
            out[name.strip()] = value.strip()
    return out


def tunables_string(env: Optional[Mapping[str, str]] = None) -> str:
    """``GLIBC_TUNABLES`` of ``env`` (default: this process's) with every entry of
    :data:`MALLOC_TUNABLES` that it does not name added; values given there win."""
    env = os.environ if env is None else env
    merged = parse_tunables(env.get("GLIBC_TUNABLES"))
    for name, value in MALLOC_TUNABLES.items():
        merged.setdefault(name, str(value))
    return ":".join(f"{k}={v}" for k, v in merged.items())


def child_environment(env: Optional[Mapping[str, str]] = None, **extra: str) -> Dict[str, str]:
    """The environment for a TensorFlow child process: ``env`` (default: this
    process's) plus ``extra``, with :data:`MALLOC_TUNABLES` merged into
    ``GLIBC_TUNABLES`` on glibc unless ``TF_MTVIB_MALLOC_TUNING=0``."""
    out = dict(os.environ if env is None else env, **extra)
    if out.get(OPT_OUT, "1").strip() != "0" and uses_glibc():
        out["GLIBC_TUNABLES"] = tunables_string(out)
    return out


def allocator_tuned(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether ``env`` (default: this process's) sets every name of :data:`MALLOC_TUNABLES`."""
    given = parse_tunables((os.environ if env is None else env).get("GLIBC_TUNABLES"))
    return all(name in given for name in MALLOC_TUNABLES)


#: The ISA flags that decide how fast (and in which arithmetic) TensorFlow's CPU kernels run
ISA_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512f", "avx2", "fma")


def machine() -> Dict[str, object]:
    """The CPU a measurement ran on: model name, the ISA flags of :data:`ISA_FLAGS`
    it has, the usable cores, whether two of them are SMT siblings, and the
    1-minute load average at the call (Linux; elsewhere what ``platform`` gives).
    Only the load average is read again at each call."""
    info = dict(_cpu(), isa=list(_cpu()["isa"]))
    try:
        info["load_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


#: The flags that tell the CPU types apart for bf16 and fp16 (the AMX tiles, the AVX-512 extensions)
LOW_PRECISION_FLAGS = ("amx_bf16", "avx512_bf16", "avx512_fp16")


def cpu_label(info: Mapping[str, object]) -> str:
    """``"<model> (<its flags of LOW_PRECISION_FLAGS>)"`` of a :func:`machine` record, for tables that
    name the machine a figure comes from."""
    isa = info.get("isa")
    flags = "ISA not recorded" if isa is None else ", ".join(f for f in LOW_PRECISION_FLAGS if f in isa) or "no bf16 ISA"
    return f"{info.get('cpu', '?')} ({flags})"


@functools.lru_cache(maxsize=1)
def _cpu() -> Dict[str, object]:
    """The parts of :func:`machine` that do not change while a process runs."""
    info: Dict[str, object] = {"cpu": platform.processor() or platform.machine(), "isa": []}
    flags: set = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and info["cpu"] in ("", platform.machine(), platform.processor()):
                    info["cpu"] = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    info["isa"] = [f for f in ISA_FLAGS if f in flags]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    info["cores"] = len(cores)
    siblings = set()
    for c in cores:
        try:
            with open(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list") as f:
                siblings.add(f.read().strip())
        except OSError:
            siblings.add(str(c))
    info["smt_siblings"] = len(siblings) < len(cores)
    return info
