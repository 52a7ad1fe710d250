"""Mixed precision on real trainings: accuracy parity and time to accuracy.

Two parts (``--parts``, both by default):

``parity``  trains each of ``--models`` (default mtvib, gs) on MultiMNIST with
            ``train.py --preset cpu --precision P`` for each of ``--precisions``
            (default float32, mixed_bfloat16; add mixed_float16 to see what
            float16 does on a CPU; ``mixed_bfloat16+float32_heads`` adds
            ``--float32-heads``, the latent's heads and the decoders' first FC
            in float32), same seed, at ``--parity-preset`` (default cpu), into
            ``<workdir>/parity-<model>-<precision>``, and compares the clean
            test accuracies (mean mode, ``metrics.json``) with float32's, in
            points (goal: mixed_bfloat16 within 1 point). A run directory
            that already holds ``metrics.json`` is read, not retrained, so a
            table can be rebuilt from finished runs.
``tta``     time to accuracy: each of ``--models`` trained as ``train.py --preset
            P`` trains it (``--tta-preset``, default full: the full MultiMNIST
            training set of 120,000 composites, batch 200, Adam 1e-3 with the
            preset's cosine decay; ``fast`` for the fast preset), once per
            precision and ``--seeds`` seed; every ``--eval-every`` steps the
            clock stops, the whole test set is evaluated (mean mode) and the
            clock restarts. Reported: the training seconds (tracing and the
            input pipeline included, evaluation excluded) until every task
            reaches its target clean test accuracy, per task and for all
            tasks, and the float32/mixed ratio of those times. ``--target``:
            one accuracy for every task (default 0.90), or ``paper``: the
            model's own Table III row less one point per task (the issue
            "Speed"'s targets). Training stops at the target or after
            ``--max-epochs`` (default: the preset's epochs).

Run it on a quiet machine (the load average is recorded at start and end);
it trains for a long time (see benchmarks/README.md). ``--quick`` is a smoke
version (smoke preset, a few hundred images) that proves the script works.

    python benchmarks/bench_precision.py [--quick] [--parts parity,tta] [--models mtvib,gs]
        [--precisions float32,mixed_bfloat16] [--workdir runs/bench_precision]
"""
from __future__ import annotations

import math
import pathlib
import statistics
import tempfile
import time

import common

PARTS = ("parity", "tta")
DATASET = "multimnist"


# --------------------------------------------------------------------------
# Parity: train.py --preset cpu in each precision
# --------------------------------------------------------------------------
#: A variant's suffix (``mixed_bfloat16+float32_heads``) -> the train.py flag it adds.
VARIANT_FLAGS = {"float32_heads": "--float32-heads"}


def parse_variant(name: str):
    """``"P+option+..."`` -> ``(P, [options])``; ValueError for an unknown option."""
    precision, *options = name.split("+")
    unknown = [o for o in options if o not in VARIANT_FLAGS]
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} in {name!r}; choose from {', '.join(VARIANT_FLAGS)}")
    return precision, options


def parity_run(model: str, variant: str, preset: str, workdir: pathlib.Path, data_dir, extra=(),
               seed: int = 0) -> dict:
    """Train (or read) ``<workdir>/parity-<model>-<variant>`` (``-s<seed>`` for seeds other
    than 0; the ``cpu`` preset's names, other presets' ``-<preset>`` after the variant); returns its
    metrics and config. ``variant``: a precision, or one with options (:func:`parse_variant`)."""
    from tf_mtvib import runs, train

    precision, options = parse_variant(variant)
    path = workdir / (f"parity-{model}-{variant}" + (f"-{preset}" if preset != "cpu" else "")
                      + (f"-s{seed}" if seed else ""))
    if not (path / runs.METRICS).exists():
        if path.exists() and any(path.iterdir()):
            argv = ["--resume", "--output-dir", str(path), "--verbose", "0"]   # an interrupted run
        else:
            argv = ["--dataset", DATASET, "--model", model, "--preset", preset, "--precision", precision,
                    *[VARIANT_FLAGS[o] for o in options],
                    "--seed", str(seed), "--output-dir", str(path), "--verbose", "0", "--eval-samples", "0", *extra]
        if data_dir is not None:
            argv += ["--data-dir", str(data_dir)]
        common.log(f"parity: training {model} ({precision}, --preset {preset}) into {path}")
        rc = train.main(argv)
        if rc != 0:
            raise SystemExit(f"training {path} failed (exit status {rc})")
    config = runs.read_json(path / runs.CONFIG)
    if (config["training"].get("precision", "float32") != precision or config["model"] != model
            or config["training"]["seed"] != seed or config["preset"] != preset
            or any(not config["hparams"].get(o) for o in options)):
        raise SystemExit(f"{path} holds a {config['model']} run in {config['training'].get('precision')} (seed "
                         f"{config['training']['seed']}, --preset {config['preset']}), not {model} in {variant} "
                         f"(seed {seed}, --preset {preset}); remove it or choose another --workdir")
    metrics = runs.read_json(path / runs.METRICS)
    return {"model": model, "precision": variant, "seed": seed, "run": path.name, "preset": config["preset"],
            "accuracy": metrics["test"]["mean"], "num_train": metrics["num_train"], "epochs": metrics["epochs"],
            "seconds_per_epoch": metrics.get("seconds_per_epoch", [])}


def parity_table(rows, tasks):
    """One line per (model, precision): clean accuracy per task, the mean over seeds with
    its min-max, and the difference of the means to float32 (points). ``within_1_point``
    is set on every mixed-precision row: all per-task mean differences within 1 point."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["model"], r["precision"]), []).append(r)
    acc = lambda rs, t: [100 * r["accuracy"][t] for r in rs]
    out, summary = [], []
    for (model, precision), rs in groups.items():
        base = groups.get((model, "float32"))
        diff = None
        if base is not None and precision != "float32":
            diff = {t: statistics.fmean(acc(rs, t)) - statistics.fmean(acc(base, t)) for t in [*tasks, "joint"]}
        spread = lambda t: (f"{statistics.fmean(acc(rs, t)):.2f}" if len(rs) == 1 else
                            f"{statistics.fmean(acc(rs, t)):.2f} ({min(acc(rs, t)):.2f}-{max(acc(rs, t)):.2f})")
        spe = [x for r in rs for x in r["seconds_per_epoch"]]
        out.append([model, precision, ",".join(str(r["seed"]) for r in rs), rs[0]["num_train"], rs[0]["epochs"]]
                   + [spread(t) for t in [*tasks, "joint"]]
                   + [", ".join(f"{diff[t]:+.2f}" for t in tasks) if diff else None,
                      common.median(spe) if spe else None])
        entry = {"model": model, "precision": precision, "seeds": [r["seed"] for r in rs],
                 "mean_accuracy": {t: statistics.fmean(acc(rs, t)) / 100 for t in [*tasks, "joint"]}}
        if diff is not None:
            entry["points_vs_float32"] = diff
            entry["within_1_point"] = all(abs(diff[t]) <= 1.0 for t in tasks)
        summary.append(entry)
    headers = (["model", "precision", "seeds", "train images", "epochs"] + [f"{t} %" for t in tasks] + ["joint %"]
               + ["mean points vs float32 (per task)", "s/epoch (median)"])
    return common.table(headers, out), summary


# --------------------------------------------------------------------------
# Time to accuracy
# --------------------------------------------------------------------------
def tta_targets(target: str, model: str, tasks) -> dict:
    """Per task, the clean test accuracy the time-to-accuracy run must reach: ``target`` as a number for every
    task, or ``paper`` for the model's Table III row less one point (:func:`tf_mtvib.reproduce.fast.targets`)."""
    if target == "paper":
        from tf_mtvib.reproduce.fast import targets

        return targets(model=model)
    value = float(target)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"--target {target!r}: give an accuracy in (0, 1] or 'paper'")
    return {t: value for t in tasks}


def time_to_accuracy(model_name: str, precision: str, seed: int, args, data_dir, extra=()) -> dict:
    """Train ``model_name`` in ``precision`` (seed ``seed``) until every task reaches its target test accuracy
    (:func:`tta_targets`)."""
    import keras

    from tf_mtvib import runs, train
    from tf_mtvib.datasets import get_spec, to_dataset
    from tf_mtvib.metrics import evaluate_accuracy
    from tf_mtvib.models import build_model
    from tf_mtvib.precision import policy_scope

    targv = ["--dataset", DATASET, "--model", model_name, "--preset", args.tta_preset, "--precision", precision,
             "--seed", str(seed), *args.tta_flags.split(), *extra]
    config = train.build_config(train.parse_args(targv))
    training = config["training"]
    max_epochs = args.max_epochs or training["epochs"]
    spec = get_spec(DATASET)
    keras.utils.set_random_seed(training["seed"])
    train_split = runs.load_split(config, "train", data_dir)
    test_split = runs.load_split(config, "test", data_dir)
    batch = training["batch_size"]
    steps_per_epoch = math.ceil(len(train_split) / batch)
    train_ds = to_dataset(train_split, batch, shuffle=True, seed=training["seed"], repeat=True)   # as train.py
    test_ds = to_dataset(test_split, 500)
    with policy_scope(precision):
        model = build_model(model_name, spec, **config["hparams"])
    model.compile(optimizer=train.make_optimizer(training, steps_per_epoch))
    tasks = list(spec.task_names)
    goal = tta_targets(args.target, model_name, tasks)
    evals, reached = [], {}
    clock = {"train": 0.0, "since": None, "step": 0}
    label = f"tta {model_name} {precision} seed {seed}"

    class Probe(keras.callbacks.Callback):
        """Every --eval-every steps (and at the end): stop the clock, evaluate on the test set, restart the clock."""

        def on_train_begin(self, logs=None):
            clock["since"] = time.perf_counter()

        def on_train_batch_end(self, batch_index, logs=None):
            clock["step"] += 1
            if clock["step"] % args.eval_every == 0:
                self.evaluate()

        def on_train_end(self, logs=None):
            if not evals or evals[-1]["step"] != clock["step"]:
                self.evaluate()

        def evaluate(self):
            clock["train"] += time.perf_counter() - clock["since"]
            acc = evaluate_accuracy(model, test_ds)
            row = {"step": clock["step"], "images": clock["step"] * batch, "train_seconds": clock["train"],
                   "accuracy": acc}
            evals.append(row)
            for t in [*tasks, "all"]:
                ok = all(acc[k] >= goal[k] for k in tasks) if t == "all" else acc[t] >= goal[t]
                if ok and t not in reached:
                    reached[t] = row
            common.log(f"{label}: step {clock['step']} ({clock['train']:.0f} s training): "
                       + " ".join(f"{k}={v:.4f}" for k, v in acc.items()))
            if "all" in reached:
                self.model.stop_training = True
            clock["since"] = time.perf_counter()

    common.log(f"{label}: {len(train_split):,} training images, batch {batch}, "
               f"lr {training['learning_rate']} ({training.get('lr_schedule', 'constant')}), "
               f"up to {max_epochs} epoch(s), targets " + ", ".join(f"{t} {v:.3f}" for t, v in goal.items()))
    model.fit(train_ds, epochs=max_epochs, steps_per_epoch=steps_per_epoch, verbose=0, callbacks=[Probe()],
              shuffle=False)
    keras.backend.clear_session()
    return {"model": model_name, "precision": precision, "seed": seed, "target": args.target, "targets": goal,
            "num_train": len(train_split), "num_test": len(test_split), "hparams": config["hparams"],
            "batch_size": batch, "learning_rate": training["learning_rate"], "preset": args.tta_preset,
            "flags": args.tta_flags.split(),
            "lr_schedule": training.get("lr_schedule", "constant"), "scheduled_epochs": training["epochs"],
            "eval_every_steps": args.eval_every, "steps_per_epoch": steps_per_epoch, "max_epochs": max_epochs,
            "reached": {t: {"train_seconds": r["train_seconds"], "step": r["step"], "images": r["images"],
                            "epochs": r["step"] / steps_per_epoch} for t, r in reached.items()},
            "best": {t: max(e["accuracy"][t] for e in evals) for t in [*tasks, "joint"]} if evals else {},
            "evaluations": evals}


def tta_table(rows, tasks):
    """One row per (model, seed, precision); the float32/this ratio of the times to every target, against the
    float32 run of the same model and seed."""
    base = {(r["model"], r["seed"]): r for r in rows if r["precision"] == "float32"}
    out = []
    for r in rows:
        got = r["reached"]
        cells = [r["model"], r["seed"], r["precision"], f"{r['num_train']:,}", r["batch_size"],
                 f"{r['learning_rate']:g} {r['lr_schedule']}", " / ".join(f"{100 * r['targets'][t]:.1f}" for t in tasks)]
        cells += [got[t]["train_seconds"] if t in got else f"not reached (best {100 * r['best'].get(t, 0):.1f}%)"
                  for t in tasks]
        cells += [got["all"]["train_seconds"] if "all" in got else "not reached",
                  got["all"]["epochs"] if "all" in got else None]
        ratio = None
        f32 = base.get((r["model"], r["seed"]))
        if f32 is not None and r is not f32 and "all" in got and "all" in f32["reached"]:
            ratio = f32["reached"]["all"]["train_seconds"] / got["all"]["train_seconds"]
            r["speedup_vs_float32"] = ratio
        out.append(cells + [ratio])
    headers = (["model", "seed", "precision", "train images", "batch", "lr", "targets (%)"]
               + [f"s to target {t}" for t in tasks] + ["s to every target", "epochs", "float32 time / this"])
    return common.table(headers, out)


# --------------------------------------------------------------------------
def main(argv=None) -> int:
    p = common.make_parser("bench_precision", __doc__.split("\n\n")[0])
    p.add_argument("--parts", default=",".join(PARTS), help="parity, tta or both")
    p.add_argument("--models", default="mtvib,gs", help="models (both parts)")
    p.add_argument("--precisions", default="float32,mixed_bfloat16",
                   help="precisions (float32 first); parity also takes variants such as mixed_bfloat16+float32_heads")
    p.add_argument("--parity-preset", default="cpu", help="parity: train.py preset (default: %(default)s)")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds, both parts (parity's table shows "
                   "their mean and min-max)")
    p.add_argument("--workdir", type=pathlib.Path, default=None,
                   help="parity run directories (default runs/bench_precision; --quick: a temporary folder)")
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--tta-preset", default="full", help="tta: train.py preset (data, batch, learning rate, schedule)")
    p.add_argument("--target", default="0.90", help="tta: the clean test accuracy every task must reach, or 'paper' "
                   "(the model's Table III row less one point per task)")
    p.add_argument("--tta-flags", default="", help="tta: further train.py flags, e.g. '--task-weights 0.5,0.5' for gs")
    p.add_argument("--eval-every", type=int, default=100, help="tta: steps between test evaluations")
    p.add_argument("--max-epochs", type=int, default=None, help="tta: stop after this many epochs (default: the preset's)")
    args = common.parse_args(p, argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
    models = [x.strip() for x in args.models.split(",") if x.strip()]
    from tf_mtvib.models import MODEL_NAMES
    from tf_mtvib.precision import PRECISIONS

    for part in parts:
        if part not in PARTS:
            p.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    for x in precisions:
        try:
            base, options = parse_variant(x)
        except ValueError as e:
            p.error(str(e))
        if base not in PRECISIONS:
            p.error(f"unknown precision {x!r}; choose from {', '.join(PRECISIONS)}")
        if options and ("parity" not in parts or "tta" in parts):
            p.error(f"{x!r}: variants are for --parts parity")
    for m in models:
        if m not in MODEL_NAMES:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODEL_NAMES)}")
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        if args.target != "paper":
            tta_targets(args.target, models[0], ["task"])
    except ValueError as e:
        p.error(f"--seeds {args.seeds!r} / --target {args.target!r}: {e}")
    data_dir = common.data_dir(args.data_dir)
    tmp = tempfile.TemporaryDirectory(prefix="bench_precision-") if args.quick and args.workdir is None else None
    workdir = pathlib.Path(tmp.name) if tmp else (args.workdir or pathlib.Path("runs") / "bench_precision")
    workdir.mkdir(parents=True, exist_ok=True)
    if args.quick:   # smoke sizes: proves the script, measures nothing
        preset, extra = "smoke", ("--num-train", "256", "--num-test", "128", "--epochs", "1")
        tta_extra = ("--num-train", "512", "--num-test", "256", "--batch-size", "64")
        args.eval_every, args.max_epochs = min(args.eval_every, 4), 1
    else:
        preset, extra, tta_extra = args.parity_preset, (), ()

    import tensorflow as tf  # noqa: F401

    from tf_mtvib.datasets import get_spec

    tasks = list(get_spec(DATASET).task_names)
    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    results, tables, notes = {}, [], []
    if "parity" in parts:
        rows = [parity_run(m, x, preset, workdir, data_dir, extra, seed)
                for m in models for x in precisions for seed in seeds]
        table, summary = parity_table(rows, tasks)
        tables.append(table)
        results["parity"] = rows
        results["parity_summary"] = summary
        notes.append(f"parity: train.py --preset {preset} on {DATASET}, seeds {', '.join(map(str, seeds))}, clean test "
                     "accuracy in mean mode, mean (min-max) over the seeds; mean points vs float32 = (mean mixed - "
                     "mean float32) x 100 per task (goal for mixed_bfloat16: within 1); a difference no larger than "
                     "the seeds' spread is no difference")
    if "tta" in parts:
        rows = [time_to_accuracy(m, x, seed, args, data_dir, tta_extra)
                for m in models for seed in seeds for x in precisions]
        tables.append(tta_table(rows, tasks))
        results["tta"] = rows
        goal = ("its Table III row less one point" if args.target == "paper"
                else f"{100 * float(args.target):.0f}%")
        notes.append(f"time to accuracy: {', '.join(models)} trained as train.py --preset {args.tta_preset} "
                     + (f"{args.tta_flags} " if args.tta_flags else "") + "trains it, seeds "
                     f"{', '.join(map(str, seeds))}; training seconds (tracing and the input pipeline included; test "
                     f"evaluations every {args.eval_every} steps excluded) until the clean test accuracy (mean mode, "
                     f"{rows[0]['num_test']:,} images) reaches {goal} for each task")
    common.write_results(args.output, "bench_precision", args, info, {"rows": results.get("parity", []) +
                         results.get("tta", []), **results}, tables, notes)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
