"""Where a training step's time goes, per op category, in float32 and in mixed bfloat16 (issue "Speed").

Profiles ``train_on_batch`` steps of the library model (as ``bench_train.py``
builds and compiles it) on one synthetic batch, with TensorFlow's profiler
(``tf.profiler.experimental``), and sums the executed TensorFlow ops' time
from the host plane of the trace (``*.xplane.pb``), per category:

* ``conv``: convolutions and their gradients (oneDNN ``_MklNativeFusedConv2D``,
  ``Conv2DBackprop*``);
* ``matmul``: ``MatMul`` (the Dense layers and their gradients);
* ``batchnorm``: every op under a BatchNormalization's name scope (Keras 3
  computes the moments and the normalisation with separate element-wise and
  reduction ops, in the forward and the backward pass);
* ``optimizer``: every op under the optimizer's name scope (Adam's update);
* ``cast``: ``Cast`` ops outside those (the mixed-precision casts);
* ``other``: everything else (activations, pooling, the losses, the latent).

Each category's time is CPU time summed over the executor's threads (2 cores:
up to twice the wall time). The step's wall time comes from the same trace.
The JSON records the machine (CPU, ISA flags, cores, SMT, load average).

    python benchmarks/profile_step.py [--model mtvib] [--dataset multimnist] [--batch 200] [--steps 10]
"""
from __future__ import annotations

import collections
import glob
import pathlib
import shutil
import tempfile
import time
from typing import Dict

import common

CATEGORIES = ("conv", "matmul", "batchnorm", "optimizer", "cast", "other")
PRECISIONS = ("float32", "mixed_bfloat16")


def category(name: str) -> str:
    """The category of one profiled op, ``scope/.../op_name:OpType``."""
    scope, _, op_type = name.rpartition(":")
    lowered = scope.lower()
    if "_bn" in lowered or "batch_norm" in lowered or "batchnorm" in lowered:
        return "batchnorm"
    if lowered.startswith(("adam", "sgd", "loss_scale_optimizer")) or "/adam/" in lowered:
        return "optimizer"
    if "Conv2D" in op_type:
        return "conv"
    if "MatMul" in op_type:
        return "matmul"
    if op_type == "Cast":
        return "cast"
    return "other"


def summarize_trace(logdir: str, steps: int) -> Dict[str, object]:
    """Per-category op time (ms per step) and the step's wall time, from the trace in ``logdir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(f"{logdir}/**/*.xplane.pb", recursive=True))
    if not files:
        raise SystemExit(f"no profiler trace under {logdir}")
    space = xplane_pb2.XSpace()
    space.ParseFromString(pathlib.Path(files[-1]).read_bytes())
    host = next(p for p in space.planes if p.name == "/host:CPU")
    per_category = collections.Counter()
    per_type = collections.Counter()
    ops = 0
    wall = 0.0
    for line in host.lines:
        for event in line.events:
            name = host.event_metadata[event.metadata_id].name
            ms = event.duration_ps / 1e9
            if line.name == "python" and name == "one_step_on_data":
                wall += ms
            elif ":" in name and "/" in name:        # an executed TensorFlow op, "scope/name:OpType"
                per_category[category(name)] += ms
                per_type[name.rpartition(":")[2]] += ms
                ops += 1
    return {"step_ms": wall / steps, "ops_per_step": ops / steps,
            "op_ms_per_step": {c: per_category[c] / steps for c in CATEGORIES},
            "top_op_types_ms_per_step": {k: v / steps for k, v in per_type.most_common(12)}}


def profile(dataset: str, model: str, batch: int, steps: int, precision: str) -> Dict[str, object]:
    import tensorflow as tf

    from bench_train import library_model, synthetic_batch
    from tf_mtvib.datasets.spec import get_spec

    spec = get_spec(dataset)
    net = library_model(model, spec, 1e-3, False, precision)
    x, y = synthetic_batch(spec, batch)
    for _ in range(3):                     # tracing and warm-up, outside the trace
        net.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(steps):
        net.train_on_batch(x, y)
    unprofiled = (time.perf_counter() - t0) / steps * 1e3
    logdir = tempfile.mkdtemp(prefix="profile_step_")
    try:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            net.train_on_batch(x, y)
        tf.profiler.experimental.stop()
        out = summarize_trace(logdir, steps)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    out["unprofiled_step_ms"] = unprofiled
    out["images_per_second"] = batch / unprofiled * 1e3
    return out


def main(argv=None) -> int:
    p = common.make_parser("profile_step", __doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="multimnist")
    p.add_argument("--model", default="mtvib")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args(argv)
    started = time.perf_counter()
    from tf_mtvib import runtime

    info = dict(common.machine(), **{"cpu_isa": runtime.machine()})
    steps = 2 if args.quick else args.steps
    results = {prec: profile(args.dataset, args.model, args.batch, steps, prec) for prec in PRECISIONS}
    f32, bf16 = results["float32"], results["mixed_bfloat16"]
    rows = [[c, f"{f32['op_ms_per_step'][c]:.1f}", f"{bf16['op_ms_per_step'][c]:.1f}",
             f"{f32['op_ms_per_step'][c] / bf16['op_ms_per_step'][c]:.2f}" if bf16['op_ms_per_step'][c] else "-"]
            for c in CATEGORIES]
    rows.append(["step (wall, unprofiled)", f"{f32['unprofiled_step_ms']:.1f}", f"{bf16['unprofiled_step_ms']:.1f}",
                 f"{f32['unprofiled_step_ms'] / bf16['unprofiled_step_ms']:.2f}"])
    table = common.table(["op category (CPU ms per step, summed over threads)", "float32", "mixed_bfloat16",
                          "float32 / bf16"], rows)
    total = {k: sum(r["op_ms_per_step"].values()) for k, r in results.items()}
    share = {k: {c: r["op_ms_per_step"][c] / total[k] for c in CATEGORIES} for k, r in results.items()}
    notes = [f"{args.model} on {args.dataset}, batch {args.batch}, {steps} profiled steps per precision after 3 "
             f"warm-up steps; CPU ISA: {', '.join(info['cpu_isa']['isa'])}.",
             "Share of op time, float32: " + ", ".join(f"{c} {100 * share['float32'][c]:.0f} %" for c in CATEGORIES)
             + "; mixed_bfloat16: " + ", ".join(f"{c} {100 * share['mixed_bfloat16'][c]:.0f} %" for c in CATEGORIES)
             + "."]
    common.write_results(common.RESULTS / "profile_step_quick.json" if args.quick else args.output,
                         "profile_step", args, info, {"shares": share, **results}, [table], notes, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
