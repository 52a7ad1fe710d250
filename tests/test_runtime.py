"""tf_mtvib.runtime: glibc's allocator thresholds for the processes the library starts."""
import json
import subprocess
import sys

import pytest

from tf_mtvib import runtime

# A child that mallocs, touches and frees a 96 MiB buffer ten times and prints its minor page faults.
# With glibc's defaults a buffer above the mmap threshold (at most 32 MiB) is mapped afresh each time,
# so every round faults its 24,576 pages in again; with MALLOC_TUNABLES it is reused from the heap.
FAULTS = r"""
import ctypes, resource
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 96 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_child_environment_adds_the_tunables_and_keeps_the_users():
    env = {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=7:glibc.malloc.arena_max=2"}
    out = runtime.child_environment(env, TF_CONFIG="{}")
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.trim_threshold=7:glibc.malloc.arena_max=2"   # not mutated
    assert out["PATH"] == "/bin" and out["TF_CONFIG"] == "{}"
    if runtime.uses_glibc():
        given = runtime.parse_tunables(out["GLIBC_TUNABLES"])
        assert given == {"glibc.malloc.trim_threshold": "7", "glibc.malloc.arena_max": "2",
                         "glibc.malloc.mmap_threshold": str(runtime.MALLOC_TUNABLES["glibc.malloc.mmap_threshold"])}
        assert runtime.allocator_tuned(out) and not runtime.allocator_tuned(env)
        fresh = runtime.child_environment({})
        assert runtime.parse_tunables(fresh["GLIBC_TUNABLES"]) == {k: str(v) for k, v in runtime.MALLOC_TUNABLES.items()}
    off = runtime.child_environment({runtime.OPT_OUT: "0"})
    assert "GLIBC_TUNABLES" not in off


def test_parse_tunables():
    assert runtime.parse_tunables(None) == {}
    assert runtime.parse_tunables("a=1:b=x=y::c") == {"a": "1", "b": "x=y"}


def _faults(env):
    proc = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split()[-1])


@pytest.mark.skipif(not runtime.uses_glibc(), reason="glibc's allocator only")
def test_the_tunables_reach_glibc_and_stop_refaulting_large_buffers():
    """Not a timing: page-fault counts, which do not depend on the machine's load."""
    base = runtime.child_environment({"PATH": "/usr/bin:/bin", runtime.OPT_OUT: "0"})
    default = _faults(base)
    tuned = _faults(runtime.child_environment(base, **{runtime.OPT_OUT: "1"}))
    pages = 10 * (96 << 20) // 4096
    assert default > 0.8 * pages, json.dumps({"default": default, "tuned": tuned})   # refaulted every round
    assert tuned < 0.3 * pages, json.dumps({"default": default, "tuned": tuned})     # faulted in once, reused


def test_readme_gives_the_tunables_the_library_sets():
    import pathlib

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"export GLIBC_TUNABLES={runtime.tunables_string({})}\n" in readme


def test_machine_names_the_cpu_its_isa_and_the_cores():
    from tf_mtvib.runtime import ISA_FLAGS, machine

    m = machine()
    assert m["cpu"] and isinstance(m["cpu"], str)
    assert set(m["isa"]) <= set(ISA_FLAGS)
    assert m["cores"] >= 1 and isinstance(m["smt_siblings"], bool)
    import json

    json.dumps(m)   # JSON-able, for metrics.json and every benchmark


def test_cpu_label_and_the_time_table_name_the_machine():
    """Each reproduction's time table names the CPU and its bf16/fp16 flags, from the cells' machine records."""
    from tf_mtvib.reproduce.tables import time_table

    amx = {"cpu": "Xeon", "isa": ["amx_tile", "amx_bf16", "avx512_bf16", "avx512_fp16", "avx2"]}
    epyc = {"cpu": "EPYC", "isa": ["avx512_bf16", "avx512f", "avx2"]}
    assert runtime.cpu_label(amx) == "Xeon (amx_bf16, avx512_bf16, avx512_fp16)"
    assert runtime.cpu_label(epyc) == "EPYC (avx512_bf16)"
    assert runtime.cpu_label({"cpu": "old", "isa": ["avx2"]}) == "old (no bf16 ISA)"
    assert runtime.cpu_label({"cpu": "older"}) == "older (ISA not recorded)"
    assert set(runtime.LOW_PRECISION_FLAGS) <= set(runtime.ISA_FLAGS)
    cells = [{"seconds_per_epoch": s, "machine": m} for s, m in ((2.0, amx), (4.0, epyc), (3.0, amx))]
    table = time_table([("a", cells, 30), ("untimed", [{"machine": amx}], 30)], unit="100 iterations")
    assert "| a | 3.0 | 1.5 | 3 | EPYC (avx512_bf16); Xeon (amx_bf16, avx512_bf16, avx512_fp16) |" in table
    assert "seconds per 100 iterations" in table and "untimed" not in table
    assert time_table([("b", [], 1)]) == "No timed cell yet."


def test_seed_summaries_print_the_spread_and_name_a_single_seed():
    from tf_mtvib.reproduce.tables import mean_half_range, seed_range

    assert seed_range([1.2, 1.5, 1.3]) == "n = 3, range 0.30 points"
    assert seed_range([1.2]) == "one seed"
    assert mean_half_range([0.5, 0.6]) == "55.0 ± 5.0 (n=2)" and mean_half_range([]) == "-"
    assert mean_half_range([0.5]) == "50.0 (n=1)"   # one seed: no spread shown, not a spread of 0
