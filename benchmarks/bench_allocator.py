"""glibc's allocator thresholds raised (``tf_mtvib.runtime.MALLOC_TUNABLES``) against glibc's defaults.

glibc reads ``GLIBC_TUNABLES`` only when a process starts, so the two
variants cannot alternate within one process: each round starts two
processes of ``benchmarks/bench_train.py --no-xla --no-bf16`` (the library
model, compiled as ``train.py`` compiles it, and its hand-written reference,
on one in-memory batch), one with ``GLIBC_TUNABLES`` removed from the
environment (``default``) and one with ``tf_mtvib.runtime.child_environment()``
(``tuned``: what ``reproduce`` and ``launch`` give their trainings); the
order alternates between rounds (default, tuned; tuned, default; ...).

Reported per model: the library's images/s of each variant (median over
rounds) and the tuned/default ratio (median [quartiles] of the per-round
ratios: the two processes of a round run a minute apart). Per process, from
``os.wait4``: minor page faults and user / system CPU seconds of the whole
process (import, model building and both models' steps), whose system
share is the kernel time the thresholds save, and its peak resident size
(``ru_maxrss``), the memory the thresholds cost: a tuned process keeps the
heap it freed.

    python benchmarks/bench_allocator.py [--quick] [--rounds 4] [--models gs,mtvib] [--steps 20]
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import common

VARIANTS = ("default", "tuned")


def _environment(variant: str) -> dict:
    from tf_mtvib.runtime import OPT_OUT, child_environment

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(common.REPO), env.get("PYTHONPATH")) if p)
    env.pop("GLIBC_TUNABLES", None)
    if variant == "tuned":
        env.pop(OPT_OUT, None)
        env = child_environment(env)
    return env


def _one_process(variant: str, args, workdir: pathlib.Path, index: int) -> dict:
    """Run bench_train.py once in a fresh process; its per-model images/s and the process's rusage."""
    out = workdir / f"{variant}-{index}.json"
    command = [sys.executable, str(common.HERE / "bench_train.py"), "--datasets", "multimnist",
               "--models", args.models, "--no-xla", "--no-bf16", "--batch-size", str(args.batch_size),
               "--rounds", str(args.steps), "--output", str(out)] + (["--quick"] if args.quick else [])
    env = _environment(variant)
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=common.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_train.py ({variant}) failed with exit status {proc.returncode}:\n{text[-3000:]}")
    doc = json.loads(out.read_text())
    return {
        "variant": variant,
        "glibc_tunables": env.get("GLIBC_TUNABLES"),
        "images_per_second": {r["model"]: r["images_per_second"]["library"] for r in doc["results"]["rows"]},
        "steps": {r["model"]: r["rounds"] for r in doc["results"]["rows"]},
        "batch_size": doc["results"]["rows"][0]["batch_size"],
        "wall_seconds": time.perf_counter() - t0,
        "user_seconds": usage.ru_utime,
        "system_seconds": usage.ru_stime,
        "minor_page_faults": usage.ru_minflt,
        "peak_resident_mib": usage.ru_maxrss / 1024,   # Linux reports ru_maxrss in KiB
    }


def main(argv=None) -> int:
    p = common.make_parser("bench_allocator", __doc__.split("\n\n")[0])
    p.add_argument("--models", default="gs,mtvib", help="comma-separated models (MultiMNIST's network)")
    p.add_argument("--batch-size", type=int, default=200, help="the full preset's MultiMNIST batch")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each model per process")
    args = common.parse_args(p, argv, rounds=(1, 4))
    rounds = args.rounds
    if args.quick:
        args.steps = min(args.steps, 3)

    from tf_mtvib.runtime import MALLOC_TUNABLES, uses_glibc

    if not uses_glibc():
        raise SystemExit("bench_allocator.py measures glibc's allocator; this Python does not run on glibc")
    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    processes = []
    with tempfile.TemporaryDirectory(prefix="bench_allocator-") as tmp:
        for r in range(rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                common.log(f"round {r + 1}/{rounds}: {variant}")
                run = _one_process(variant, args, pathlib.Path(tmp), r)
                run["round"] = r
                processes.append(run)
                common.log(f"  {variant}: " + ", ".join(f"{m} {v:.0f} images/s"
                                                        for m, v in run["images_per_second"].items())
                           + f"; {run['minor_page_faults']:,} minor faults, "
                             f"{run['system_seconds']:.1f} s system / {run['user_seconds']:.1f} s user, "
                             f"peak resident {run['peak_resident_mib']:.0f} MiB")

    by = {v: sorted((p_ for p_ in processes if p_["variant"] == v), key=lambda p_: p_["round"]) for v in VARIANTS}
    models = list(by["default"][0]["images_per_second"])
    rows, table_rows = [], []
    for m in models:
        ips = {v: [p_["images_per_second"][m] for p_ in by[v]] for v in VARIANTS}
        ratio = common.ratio_stats(ips["tuned"], ips["default"])
        rows.append({"model": m, "images_per_second": ips,
                     "median_images_per_second": {v: common.median(ips[v]) for v in VARIANTS},
                     "tuned_vs_default": ratio})
        table_rows.append([m, common.median(ips["default"]), common.median(ips["tuned"]),
                           common.ratio_cell(ratio)])
    per_process = {}
    for v in VARIANTS:
        cpu = [p_["user_seconds"] + p_["system_seconds"] for p_ in by[v]]
        per_process[v] = {
            "minor_page_faults": common.median([p_["minor_page_faults"] for p_ in by[v]]),
            "system_seconds": common.median([p_["system_seconds"] for p_ in by[v]]),
            "user_seconds": common.median([p_["user_seconds"] for p_ in by[v]]),
            "system_share": common.median([p_["system_seconds"] / c for p_, c in zip(by[v], cpu)]),
            "peak_resident_mib": common.median([p_["peak_resident_mib"] for p_ in by[v]]),
        }
    tables = [
        common.table(["model", "default images/s", "tuned images/s", "tuned / default"], table_rows),
        common.table(["variant", "minor page faults", "system CPU s", "user CPU s", "system share",
                      "peak resident MiB"],
                     [[v, per_process[v]["minor_page_faults"], per_process[v]["system_seconds"],
                       per_process[v]["user_seconds"], per_process[v]["system_share"],
                       per_process[v]["peak_resident_mib"]] for v in VARIANTS]),
    ]
    notes = [
        f"{rounds} round(s); each round one process per variant, order alternating; each process times "
        f"{args.steps} training step(s) per model at batch {by['default'][0]['batch_size']} (bench_train.py "
        "--no-xla --no-bf16: the library model and its hand-written reference, in turn); images/s: the library "
        "model's; ratio: median [quartiles] of the per-round ratios",
        "tuned: GLIBC_TUNABLES=" + ":".join(f"{k}={v}" for k, v in MALLOC_TUNABLES.items())
        + " (tf_mtvib.runtime.child_environment); default: GLIBC_TUNABLES unset",
        "second table: medians over each variant's processes of the whole process's rusage (os.wait4), "
        "import and model building included; system share = system / (user + system) CPU seconds; "
        "peak resident MiB: ru_maxrss, the process's largest resident set",
    ]
    results = {"rounds": rounds, "steps": args.steps, "rows": rows, "per_process": per_process,
               "tuned_vs_default_peak_resident": per_process["tuned"]["peak_resident_mib"]
               / per_process["default"]["peak_resident_mib"],
               "processes": processes,
               "min_tuned_vs_default": min(r["tuned_vs_default"]["median_of_round_ratios"] for r in rows)}
    common.write_results(args.output, "bench_allocator", args, info, results, tables, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
