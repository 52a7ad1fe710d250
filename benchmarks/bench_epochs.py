"""Epoch boundaries: ``fit`` with a fresh training iterator per epoch against one endless iterator.

``train.py`` used to hand ``fit`` the training ``tf.data.Dataset`` as it is, so
Keras created a new iterator at every epoch; it now hands it the same batches
repeated (``to_dataset(..., repeat=True)``, the batches of each epoch unchanged:
``tests/test_datasets.py``) with ``steps_per_epoch``, and one iterator serves the
whole training. In the fast preset's time-to-target runs, some epochs' first
75 steps took about 50 s longer than the others' (``precision_tta_fast.json``).
This measures what the change buys, in one process and interleaved:

* ``fresh``: ``fit(to_dataset(split, batch, shuffle=True), epochs=E)``;
* ``endless``: ``fit(to_dataset(..., repeat=True), epochs=E, steps_per_epoch=ceil(n / batch))``;

each a new model of the fast preset (MTVIB, mixed bfloat16, fused BatchNorm,
its batch, learning rate and schedule) on the first ``--images`` MultiMNIST
training composites. Per fit: the seconds of epochs 2..E (epoch 1 holds the
tracing) and, per epoch, the wait before its first step (from the previous
epoch's last step). Reported: each mode's median over the rounds, and the
per-round ratio fresh / endless (median and quartiles; one seed of data order,
the same in both modes).

    TF_MTVIB_DATA_DIR=../shared/data python benchmarks/bench_epochs.py [--quick]
"""
from __future__ import annotations

import math
import pathlib
import time

import common

MODES = ("fresh", "endless")


def fit_epochs(mode: str, split, args) -> dict:
    """One fit of ``args.epochs`` epochs in ``mode``: the seconds of each epoch and the wait before its first step."""
    import keras

    from tf_mtvib import train
    from tf_mtvib.datasets import get_spec, to_dataset
    from tf_mtvib.models import build_model
    from tf_mtvib.precision import policy_scope

    config = train.build_config(train.parse_args(["--dataset", "multimnist", "--model", args.model,
                                                  "--preset", "fast"]))
    training = config["training"]
    batch = training["batch_size"]
    steps = math.ceil(len(split) / batch)
    endless = mode == "endless"
    ds = to_dataset(split, batch, shuffle=True, seed=0, repeat=endless)
    keras.utils.set_random_seed(0)
    with policy_scope(training["precision"]):
        model = build_model(args.model, get_spec("multimnist"), **config["hparams"])
    model.compile(optimizer=train.make_optimizer(training, steps))
    marks = {"epochs": [], "waits": []}

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks["begin"], marks["first"] = time.perf_counter(), True

        def on_train_batch_begin(self, batch_index, logs=None):
            if marks.pop("first", False) and "last" in marks:
                marks["waits"].append(time.perf_counter() - marks["last"])

        def on_train_batch_end(self, batch_index, logs=None):
            marks["last"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            marks["epochs"].append(time.perf_counter() - marks["begin"])

    model.fit(ds, epochs=args.epochs, steps_per_epoch=steps if endless else None, verbose=0, callbacks=[Clock()],
              shuffle=False)
    keras.backend.clear_session()
    return {"epoch_seconds": marks["epochs"], "first_step_waits": marks["waits"],
            "timed_seconds": sum(marks["epochs"][1:]), "steps_per_epoch": steps}


def main(argv=None) -> int:
    p = common.make_parser("bench_epochs", __doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--model", default="mtvib")
    p.add_argument("--images", type=int, default=48_000, help="training composites (the first N of the split)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first one is not timed)")
    args = common.parse_args(p, argv, rounds=(1, 2))
    rounds = args.rounds
    if args.quick:
        args.images, args.epochs = 1_200, 3
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the first epoch is not timed)")
    from tf_mtvib.datasets import load

    split = load("multimnist", "train", data_dir=common.data_dir(args.data_dir)).take(args.images)
    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    fits = {m: [] for m in MODES}
    for r in range(rounds):
        for mode in (MODES if r % 2 == 0 else MODES[::-1]):     # alternate the order between rounds
            fit = fit_epochs(mode, split, args)
            common.log(f"round {r + 1} {mode}: epochs " + ", ".join(f"{s:.1f}" for s in fit["epoch_seconds"])
                       + " s; waits before the first step " + ", ".join(f"{s:.2f}" for s in fit["first_step_waits"]))
            fits[mode].append(fit)
    timed = {m: [f["timed_seconds"] for f in fits[m]] for m in MODES}
    ratio = common.ratio_stats(timed["fresh"], timed["endless"])
    waits = {m: max(w for f in fits[m] for w in f["first_step_waits"]) for m in MODES}
    rows = [[m, f"{args.images:,}", args.epochs - 1, common.median(timed[m]), waits[m]] for m in MODES]
    tab = common.table(["iterator", "images", "timed epochs", "median seconds", "longest wait before an epoch's first step (s)"],
                       rows)
    notes = [f"{args.model} at --preset fast; {rounds} interleaved round(s), the order alternating; seconds: epochs 2 to "
             f"{args.epochs} of one fit (epoch 1 traces); fresh / endless per round: {common.ratio_cell(ratio)} "
             f"(median [quartiles])"]
    summary = [{"iterator": m, "timed_seconds": timed[m], "median_seconds": common.median(timed[m]),
                "longest_wait": waits[m]} for m in MODES]
    common.write_results(args.output, "bench_epochs", args, info,
                         {"model": args.model, "images": args.images, "epochs": args.epochs, "rounds": rounds,
                          "rows": summary, "fits": fits, "fresh_vs_endless": ratio}, [tab], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
