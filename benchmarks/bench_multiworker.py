"""Multi-worker training: throughput of 1 vs 2 worker processes on this machine, and the bytes
all-reduced per step.

Each unit is a whole training job, ``python -m tf_mtvib.launch --workers W -- train.py ...
--strategy multi-worker`` (the custom loop under ``MultiWorkerMirroredStrategy``, workers on
localhost ports, each pinned to its share of the usable cores), with the same global batch and
data for W = 1 and W = 2; the two alternate (1, 2, 2, 1, ...). A job's figure is the images/s of
its epochs after the first (``history.json``: the first epoch includes tracing), median over
those epochs.

**On one machine this is an overhead figure, not a speed-up.** The two workers share the cores
the one worker has to itself (on a 2-core machine: one core each against two), so 2 workers /
1 worker measures what the multi-worker machinery costs (gRPC collectives between processes,
two processes' pipelines, the per-process thread pools), not the gain from adding a machine.

Communication per step: every step all-reduces (sums) one gradient per trainable variable,
float32, plus, with synchronised BatchNorm, each layer's per-channel sum, sum of squares and
count. In a ring all-reduce each worker sends and receives ``2 (W - 1) / W`` times that.

    TF_MTVIB_DATA_DIR=../shared/data python benchmarks/bench_multiworker.py [--quick]
"""
from __future__ import annotations

import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import common

MODELS = ("gs", "mtvib")
_JOBS = itertools.count(1)


def communication(model_name: str, dataset: str, workers: int) -> dict:
    """Bytes all-reduced per step for ``model_name`` with synchronised BatchNorm."""
    from tf_mtvib import distributed
    from tf_mtvib.datasets import get_spec
    from tf_mtvib.models import build_model

    model = build_model(model_name, get_spec(dataset), sync_batchnorm=True)
    grads = distributed.gradient_bytes(model)
    bn = distributed.sync_batchnorm_bytes(model)
    return {"parameters": int(model.count_params()), "gradient_bytes": grads, "sync_batchnorm_bytes": bn,
            "all_reduced_bytes_per_step": grads + bn,
            "ring_bytes_sent_per_worker_per_step": round(2 * (workers - 1) / workers * (grads + bn))}


def job(workers: int, model: str, dataset: str, options: dict, data_dir, workdir: pathlib.Path):
    """A function running one training job with ``workers`` workers; returns its median seconds per
    timed epoch (epochs after the first)."""
    def run():
        out = workdir / f"{model}-{workers}w-{next(_JOBS)}"
        cmd = [sys.executable, "-m", "tf_mtvib.launch", "--workers", str(workers), "--log-dir", str(out) + "-logs",
               "--", "--dataset", dataset, "--model", model, "--preset", "smoke", "--sync-batchnorm",
               "--num-train", str(options["num_train"]), "--batch-size", str(options["batch_size"]),
               "--epochs", str(options["epochs"]), "--eval-samples", "0", "--output-dir", str(out), "--verbose", "0"]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(common.REPO), env.get("PYTHONPATH")) if p)
        proc = subprocess.run(cmd, env=env, cwd=common.REPO, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        history = json.loads((out / "history.json").read_text())
        return common.median([r["seconds"] for r in history[1:]])
    return run


def bench_model(model: str, dataset: str, options: dict, rounds: int, data_dir, workdir) -> dict:
    steps = options["num_train"] // options["batch_size"]
    images = steps * options["batch_size"]
    fns = {"1 worker": job(1, model, dataset, options, data_dir, workdir),
           "2 workers": job(2, model, dataset, options, data_dir, workdir)}
    times = common.interleave(fns, rounds, warmup=0, log=lambda m: common.log(f"{model} {m}"))
    ips = {k: images / common.median(v) for k, v in times.items()}
    # throughput ratio per round: (images / t2) / (images / t1) = t1 / t2
    return {"model": model, "dataset": dataset, **options, "steps_per_epoch": steps, "rounds": rounds,
            "seconds_per_epoch": times, "images_per_second": ips,
            "two_vs_one_worker_throughput": common.ratio_stats(times["1 worker"], times["2 workers"]),
            "communication": communication(model, dataset, 2)}


def main(argv=None) -> int:
    p = common.make_parser("bench_multiworker", __doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--dataset", default="multimnist")
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--num-train", type=int, default=4000, help="training composites per job")
    p.add_argument("--batch-size", type=int, default=100, help="global batch size")
    p.add_argument("--epochs", type=int, default=3, help="epochs per job (the first is not timed)")
    args = common.parse_args(p, argv, rounds=(1, 3))
    rounds = args.rounds
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    options = {"num_train": args.num_train, "batch_size": args.batch_size, "epochs": args.epochs}
    if args.quick:
        models = models[:1]
        options = {"num_train": 512, "batch_size": 32, "epochs": 2}
    if options["epochs"] < 2:
        p.error("--epochs must be >= 2 (the first epoch is not timed)")
    data_dir = common.data_dir(args.data_dir)

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    with tempfile.TemporaryDirectory(prefix="bench_multiworker-") as tmp:
        results = [bench_model(m, args.dataset, options, rounds, data_dir, pathlib.Path(tmp)) for m in models]
    rows = []
    for r in results:
        c = r["communication"]
        rows.append([r["model"], r["batch_size"], r["steps_per_epoch"], r["images_per_second"]["1 worker"],
                     r["images_per_second"]["2 workers"], common.ratio_cell(r["two_vs_one_worker_throughput"]),
                     f"{c['parameters']:,}", round(c["all_reduced_bytes_per_step"] / 2**20, 2),
                     round(c["ring_bytes_sent_per_worker_per_step"] / 2**20, 2)])
    headers = ["model", "global batch", "steps/epoch", "1 worker img/s", "2 workers img/s",
               "2 workers / 1 worker", "parameters", "all-reduced MiB/step", "ring MiB sent/worker/step"]
    tab = common.table(headers, rows)
    cores = info["cpus_usable"]
    notes = [f"images/s: global images per second, median over the timed epochs (all but the first) of a job, then "
             f"over {rounds} interleaved round(s); ratio: median [quartiles] of the per-round ratios",
             f"OVERHEAD, NOT SPEED-UP: the 1 worker and the 2 workers share the same {cores} usable core(s) of one "
             f"machine (the 2 workers are pinned to half each); 2 workers / 1 worker < 1 is the cost of the "
             f"multi-worker machinery, not a scaling result",
             "all-reduced bytes per step: float32 gradients of every trainable variable plus synchronised BatchNorm "
             "statistics; a ring all-reduce sends 2(W-1)/W of that per worker (W = 2)"]
    common.write_results(args.output, "bench_multiworker", args, info, {"rows": results}, [tab], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
