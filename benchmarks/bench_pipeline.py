"""Input pipeline: images per second ``tf.data`` delivers, as a ratio to training.

On the real data (``$TF_MTVIB_DATA_DIR`` or ``--data-dir``; the cpu preset's
training-set sizes: 10,000 MultiMNIST composites, 3,000 MTFL faces), in one
process and interleaved, this times

* ``pipeline``: one epoch of ``tf_mtvib.datasets.to_dataset(split, batch,
  shuffle=True)`` (shuffle over the whole split, batch, scale to [0, 1],
  prefetch), iterated to the end, exactly as ``train.py`` builds it; the
  epoch includes creating the iterator and filling the shuffle buffer, which
  every training epoch pays;
* ``train_<model>``: ``fit`` steps of the library model on synthetic batches
  held in memory (no input pipeline cost), for the fastest model (gs) and
  for mtvib; the first step of each ``fit`` call is not timed, and a
  call's time is its median step time (as in ``bench_train.py``);
* ``train_gs_real``: the same gs ``fit`` fed by the real pipeline
  (``to_dataset(..., repeat=True)``), to see whether the pipeline slows
  training down.

Reported: images/s of each (median over the rounds), pipeline/training
(target >= 10 for the fastest model) and real-pipeline/synthetic training,
as medians of the per-round ratios. Loading the arrays (``datasets.load``,
from the cache) is not part of the pipeline time.

    TF_MTVIB_DATA_DIR=../shared/data python benchmarks/bench_pipeline.py [--quick]
"""
from __future__ import annotations

import pathlib
import time

import common

DATASETS = ("multimnist", "mtfl")
TRAIN_MODELS = ("gs", "mtvib")


def load_split(dataset: str, data_dir, quick: bool):
    """The cpu preset's training split (``data`` options and ``max_train``)."""
    from tf_mtvib.datasets import load
    from tf_mtvib.train import PRESETS

    options = dict(PRESETS["cpu"]["data"].get(dataset, {}))
    max_train = options.pop("max_train", None)
    options.pop("max_test", None)
    options.pop("num_test", None)
    if quick:
        if "num_train" in options:
            options["num_train"] = 2000
        max_train = 500 if max_train is None else min(max_train, 500)
    split = load(dataset, "train", data_dir=data_dir, **options)
    return split.sample(max_train), options  # the preset's cap: a seeded stratified subset


def pipeline_timer(split, batch: int):
    """One epoch of the training pipeline; returns its seconds (iterator creation included)."""
    from tf_mtvib.datasets import to_dataset

    ds = to_dataset(split, batch, shuffle=True, seed=0)

    def run():
        n = 0
        for images, _ in ds:
            n += int(images.shape[0])
        assert n == len(split), (n, len(split))
    return run


def bench_dataset(dataset: str, data_dir, batch: int, steps: int, rounds: int, quick: bool):
    import keras

    from bench_train import fit_timer, library_model, synthetic
    from tf_mtvib.datasets import get_spec, to_dataset

    spec = get_spec(dataset)
    t0 = time.perf_counter()
    split, options = load_split(dataset, data_dir, quick)
    load_s = time.perf_counter() - t0
    common.log(f"{dataset}: {len(split):,} training images loaded in {load_s:.1f}s; building models")
    keras.utils.set_random_seed(0)
    fake = synthetic(spec, batch)
    fns = {"pipeline": pipeline_timer(split, batch)}
    models = {m: library_model(m, spec, 1e-3, False) for m in TRAIN_MODELS}
    for m, model in models.items():
        fns[f"train_{m}"] = fit_timer(model, fake, steps)
    real = to_dataset(split, batch, shuffle=True, seed=0, drop_remainder=True, repeat=True)
    fns["train_gs_real"] = fit_timer(models["gs"], real, steps)
    for f in fns.values():   # warm-up
        f()
    times = common.interleave(fns, rounds, warmup=0, log=lambda m: common.log(f"{dataset} {m}"))
    units = {"pipeline": len(split), **{k: batch * (steps - 1) for k in fns if k != "pipeline"}}
    ips = {k: units[k] / common.median(v) for k, v in times.items()}
    # images/s ratio per round = (units_a / t_a) / (units_b / t_b)
    def speed_ratio(a, b):
        st = common.ratio_stats(times[b], times[a])
        scale = units[a] / units[b]
        return {k: (v * scale if k != "rounds" else v) for k, v in st.items()}

    out = {"dataset": dataset, "data_options": options, "train_images": len(split), "batch_size": batch,
           "steps_per_round": steps, "timed_steps_per_round": steps - 1, "rounds": rounds,
           "load_seconds": round(load_s, 2), "seconds": times, "images_per_second": ips,
           "pipeline_vs_training": {m: speed_ratio("pipeline", f"train_{m}") for m in TRAIN_MODELS},
           "real_vs_synthetic_training_gs": speed_ratio("train_gs_real", "train_gs")}
    keras.backend.clear_session()
    return out


def main(argv=None) -> int:
    p = common.make_parser("bench_pipeline", __doc__.split("\n\n")[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--batch-size", default="multimnist=100,mtfl=32",
                   help="batch size per data set (as bench_train.py)")
    p.add_argument("--steps", default="multimnist=11,mtfl=6", help="fit steps per timed training unit")
    args = common.parse_args(p, argv, rounds=(2, 7))
    rounds = args.rounds
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if args.quick and args.datasets == ",".join(DATASETS):
        datasets = ["multimnist"]
    batch = common.per_dataset(args.batch_size, datasets, "--batch-size", p)
    steps = common.per_dataset(args.steps, datasets, "--steps", p)
    if args.quick:
        batch = {d: min(b, 16) for d, b in batch.items()}
        steps = {d: 3 for d in steps}
    data_dir = common.data_dir(args.data_dir)

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    results = [bench_dataset(d, data_dir, batch[d], steps[d], rounds, args.quick) for d in datasets]
    rows = []
    for r in results:
        ips = r["images_per_second"]
        pv = r["pipeline_vs_training"]
        rows.append([r["dataset"], f"{r['train_images']:,}", r["batch_size"], ips["pipeline"], ips["train_gs"],
                     common.ratio_cell(pv["gs"]), ips["train_mtvib"], common.ratio_cell(pv["mtvib"]),
                     ips["train_gs_real"], common.ratio_cell(r["real_vs_synthetic_training_gs"])])
    headers = ["data set", "images", "batch", "pipeline img/s", "train gs img/s", "pipeline/gs",
               "train mtvib img/s", "pipeline/mtvib", "gs on real pipeline img/s", "real/synthetic gs"]
    tab = common.table(headers, rows)
    worst = min(min(v["median_of_round_ratios"] for v in r["pipeline_vs_training"].values()) for r in results)
    notes = [f"images/s: median over {rounds} interleaved rounds; ratios: median [quartiles] of the per-round ratios",
             "pipeline: one epoch of to_dataset(shuffle=True) per round, iterator creation and shuffle-buffer fill "
             "included; training: fit on synthetic in-memory batches (no pipeline)",
             f"lowest pipeline/training ratio: {worst:.1f} (target >= 10)"]
    common.write_results(args.output, "bench_pipeline", args, info,
                         {"rows": results, "min_pipeline_vs_training": worst}, [tab], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
