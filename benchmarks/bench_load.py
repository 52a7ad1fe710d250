"""A training epoch's wall time and CPU time, alone and beside a competing process.

The fast-preset search (``python -m tf_mtvib.reproduce fast``) trains its
candidates one after another on whatever machine the session has, beside
whatever else runs there, and compares them by the process's CPU time to the
target (``cpu_seconds`` in ``history.json``) rather than by wall time. This
measures why: the same ``train.py`` run (MTVIB on MultiMNIST, with a fast
candidate's flags ``--precision mixed_bfloat16 --fused-batchnorm``) is timed
alone, and then beside a competitor, the same training in a second process,
started first and past its first (tracing) epoch. ``--rounds`` alternates
the order (alone first, then loaded first). The first epoch of each measured
run (tracing) is left out.

Reported per condition: the median epoch wall seconds and CPU seconds (the
process's, every thread summed) and the load average at the start; and the
loaded / alone ratio of each, per round. A ratio near 1 for CPU time and
near 2 for wall time on 2 cores means CPU time is the fairer yardstick for
runs made under different loads.

    python benchmarks/bench_load.py [--quick] [--rounds 1] [--num-train 20000] [--epochs 4]
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

FLAGS = ("--precision", "mixed_bfloat16", "--fused-batchnorm")
CONDITIONS = ("alone", "beside a competitor")


def _command(out: pathlib.Path, num_train: int, epochs: int, data_dir) -> list:
    command = [sys.executable, "-m", "tf_mtvib.train", "--dataset", "multimnist", "--model", "mtvib",
               "--preset", "full", "--num-train", str(num_train), "--num-test", "200", "--epochs", str(epochs),
               *FLAGS, "--eval-samples", "0", "--verbose", "0", "--output-dir", str(out)]
    return command + (["--data-dir", str(data_dir)] if data_dir is not None else [])


def _environment() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(common.REPO), env.get("PYTHONPATH")) if p)
    return env


def _measured(out: pathlib.Path, args, data_dir) -> dict:
    """Train once in a fresh process; its epochs' wall and CPU seconds (history.json), the first left out."""
    load = common._load_average()
    proc = subprocess.run(_command(out, args.num_train, args.epochs, data_dir), env=_environment(),
                          cwd=common.REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"train.py failed with exit status {proc.returncode}:\n{proc.stderr[-3000:]}")
    history = json.loads((out / "history.json").read_text())[1:]
    return {"epoch_seconds": [r["seconds"] for r in history], "epoch_cpu_seconds": [r["cpu_seconds"] for r in history],
            "load_at_start": load[0] if load else None}


def _beside_competitor(workdir: pathlib.Path, args, data_dir, index: int) -> dict:
    """:func:`_measured` while the same training runs in a second process (past its first epoch)."""
    rival_dir = workdir / f"competitor-{index}"
    rival = subprocess.Popen(_command(rival_dir, args.num_train, args.epochs * 50, data_dir), env=_environment(),
                             cwd=common.REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not (rival_dir / "history.json").exists():   # its first epoch (tracing) done
            if rival.poll() is not None:
                raise SystemExit(f"the competitor failed:\n{rival.stderr.read()[-3000:]}")
            time.sleep(1)
        return _measured(workdir / f"loaded-{index}", args, data_dir)
    finally:
        rival.terminate()
        rival.wait()


def main(argv=None) -> int:
    p = common.make_parser("bench_load", __doc__.split("\n\n")[0])
    p.add_argument("--num-train", type=int, default=20000, help="MultiMNIST composites per epoch")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (the first, tracing, is left out)")
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    args = common.parse_args(p, argv, rounds=(1, 1))
    rounds = args.rounds
    if args.quick:
        args.num_train, args.epochs = 400, 2
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (the first is left out)")
    data_dir = common.data_dir(args.data_dir)
    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_load-") as tmp:
        workdir = pathlib.Path(tmp)
        for r in range(rounds):
            order = CONDITIONS if r % 2 == 0 else CONDITIONS[::-1]
            for condition in order:
                common.log(f"round {r + 1}/{rounds}: {condition}")
                run = (_measured(workdir / f"alone-{r}", args, data_dir) if condition == "alone"
                       else _beside_competitor(workdir, args, data_dir, r))
                run.update(condition=condition, round=r, median_seconds=common.median(run["epoch_seconds"]),
                           median_cpu_seconds=common.median(run["epoch_cpu_seconds"]))
                runs.append(run)
                common.log(f"  {condition}: {run['median_seconds']:.1f} s wall, {run['median_cpu_seconds']:.1f} s CPU "
                           f"per epoch")
    by = {c: sorted((x for x in runs if x["condition"] == c), key=lambda x: x["round"]) for c in CONDITIONS}
    ratios = {key: common.ratio_stats([x[key] for x in by[CONDITIONS[1]]], [x[key] for x in by["alone"]])
              for key in ("median_seconds", "median_cpu_seconds")}
    rows = [[c, common.median([x["median_seconds"] for x in by[c]]), common.median([x["median_cpu_seconds"] for x in by[c]]),
             ", ".join(f"{x['load_at_start']:.2f}" for x in by[c] if x["load_at_start"] is not None)]
            for c in CONDITIONS]
    tables = [common.table(["condition", "epoch wall s (median)", "epoch CPU s (median)", "load at start"], rows),
              common.table(["loaded / alone", "wall time", "CPU time"],
                           [["ratio", common.ratio_cell(ratios["median_seconds"]),
                             common.ratio_cell(ratios["median_cpu_seconds"])]])]
    notes = [f"train.py --dataset multimnist --model mtvib --preset full --num-train {args.num_train} "
             f"--epochs {args.epochs} {' '.join(FLAGS)}, in a fresh process per run; the first epoch (tracing) left "
             f"out; {rounds} round(s), order alternating",
             "competitor: the same training in a second process, started first and past its first epoch, stopped "
             "when the measured run ends; CPU time: time.process_time() over each epoch (every thread of the "
             "process summed), as history.json's cpu_seconds",
             "ratio: loaded / alone of the median epoch time, median [quartiles] over the rounds"]
    results = {"rounds": rounds, "num_train": args.num_train, "epochs": args.epochs, "rows": runs,
               "loaded_vs_alone": ratios}
    common.write_results(args.output, "bench_load", args, info, results, tables, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
