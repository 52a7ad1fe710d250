"""Where a training step's time goes, per op category, in float32 and in mixed bfloat16 (issue "Speed").

Profiles ``train_on_batch`` steps of the library model (as ``bench_train.py``
builds and compiles it; with Keras's BatchNormalization and with the library's
``FusedBatchNormalization``, ``--fused-batchnorm``) on one synthetic batch, with TensorFlow's profiler
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
#: name -> (precision, fused BatchNorm): Keras's BatchNormalization, then the library's fused one
VARIANTS = {"float32": ("float32", False), "mixed_bfloat16": ("mixed_bfloat16", False),
            "float32_fused_bn": ("float32", True), "mixed_bfloat16_fused_bn": ("mixed_bfloat16", True)}


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


def profile(dataset: str, model: str, batch: int, steps: int, precision: str, fused: bool = False) -> Dict[str, object]:
    import tensorflow as tf

    from bench_train import library_model, synthetic_batch
    from tf_mtvib.datasets.spec import get_spec

    spec = get_spec(dataset)
    net = library_model(model, spec, 1e-3, False, precision, fused_batchnorm=fused)
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
    args = common.parse_args(p, argv)

    info = common.machine()
    steps = 2 if args.quick else args.steps
    results = {name: profile(args.dataset, args.model, args.batch, steps, prec, fused)
               for name, (prec, fused) in VARIANTS.items()}
    names = list(VARIANTS)
    rows = [[c] + [f"{results[n]['op_ms_per_step'][c]:.1f}" for n in names] for c in CATEGORIES]
    rows.append(["step (wall, unprofiled)"] + [f"{results[n]['unprofiled_step_ms']:.1f}" for n in names])
    table = common.table(["op category (CPU ms per step, summed over threads)"] + names, rows)
    total = {k: sum(r["op_ms_per_step"].values()) for k, r in results.items()}
    share = {k: {c: r["op_ms_per_step"][c] / total[k] for c in CATEGORIES} for k, r in results.items()}
    step = {n: results[n]["unprofiled_step_ms"] for n in names}
    speedups = {"bf16_over_fp32": step["float32"] / step["mixed_bfloat16"],
                "fused_bn_fp32": step["float32"] / step["float32_fused_bn"],
                "fused_bn_bf16": step["mixed_bfloat16"] / step["mixed_bfloat16_fused_bn"],
                "fused_bn_bf16_over_keras_fp32": step["float32"] / step["mixed_bfloat16_fused_bn"]}
    notes = [f"{args.model} on {args.dataset}, batch {args.batch}, {steps} profiled steps per variant after 3 "
             f"warm-up steps, all variants in one process; CPU ISA: {', '.join(info['isa'])}.",
             "Share of op time: " + "; ".join(f"{n}: " + ", ".join(f"{c} {100 * share[n][c]:.0f} %" for c in CATEGORIES)
                                              for n in names) + ".",
             f"Step-time ratios (unprofiled, same run): bf16 / fp32 speed-up {speedups['bf16_over_fp32']:.2f}x; "
             f"fused BatchNorm {speedups['fused_bn_fp32']:.2f}x in fp32 and {speedups['fused_bn_bf16']:.2f}x in bf16; "
             f"bf16 with fused BatchNorm against Keras's fp32 step {speedups['fused_bn_bf16_over_keras_fp32']:.2f}x."]
    common.write_results(common.RESULTS / "profile_step_quick.json" if args.quick else args.output,
                         "profile_step", args, info, {"shares": share, "speedups": speedups, **results}, [table], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
