"""Inference: latency at batch 1, throughput at batch 64, and size of every export.

A run (``--run RUN_DIR``, or by default one trained in seconds with
``train.py --preset smoke`` in a temporary folder: speed does not depend on
how well the weights are trained) is exported with
``tf_mtvib.export.export_run`` (the code behind ``python -m tf_mtvib.export
--run RUN --tflite --quantize float16 --quantize int8``), and then, in one
process, interleaved, timed:

* ``savedmodel``: ``tf.saved_model.load(dir).signatures["serving_default"]``
  called with a ``tf.constant``, outputs fetched as numpy;
* ``tflite_float32`` / ``tflite_float16`` / ``tflite_int8``: the ``.tflite``
  files run by the LiteRT interpreter (``ai_edge_litert``) through
  ``tf_mtvib.export_lite.LiteModel`` (its ``serving_default`` signature
  runner), with as many threads as usable cores (TensorFlow's default for
  the SavedModel), one interpreter per batch size so it never resizes.

Latency: milliseconds per call at batch 1 (each timed unit is a burst of
calls, timed one by one; the unit's figure is the median call; median over
the rounds). Throughput: images/s at batch 64. Sizes: the
SavedModel folder (``saved_model.pb`` + ``variables/``) and each ``.tflite``
file. Ratios (TFLite / SavedModel) are medians of the per-round ratios.

    TF_MTVIB_DATA_DIR=../shared/data python benchmarks/bench_inference.py [--quick] [--run RUN_DIR]
"""
from __future__ import annotations

import pathlib
import tempfile
import time

import common

VARIANTS = ("savedmodel", "tflite_float32", "tflite_float16", "tflite_int8")
QUANT = {"tflite_float32": None, "tflite_float16": "float16", "tflite_int8": "int8"}


def bench_run(run_dir: pathlib.Path, workdir: pathlib.Path, data_dir, rounds: int, calls_b1: int,
              calls_b64: int, threads: int, quick: bool):
    import numpy as np
    import tensorflow as tf

    from tf_mtvib import runs
    from tf_mtvib.export import SERVING_SIGNATURE, export_run
    from tf_mtvib.export_lite import LiteModel

    run = runs.load_run(run_dir)
    t0 = time.perf_counter()
    result = export_run(run_dir, output=workdir / "export", tflite=True, quantize=("float16", "int8"),
                        check=False, data_dir=data_dir, calibration_size=64 if quick else 300)
    export_s = time.perf_counter() - t0
    common.log(f"{run.dataset}/{run.model_name}: exported in {export_s:.0f}s")
    sizes = {"savedmodel": next(a.size for a in result.artifacts if a.kind == "savedmodel")}
    paths = {v: result.tflite_path(q) for v, q in QUANT.items()}
    sizes.update({v: p.stat().st_size for v, p in paths.items()})

    loaded = tf.saved_model.load(str(result.saved_model_dir))
    serving = loaded.signatures[SERVING_SIGNATURE]

    def savedmodel(x):
        return lambda: {k: v.numpy() for k, v in serving(image=tf.constant(x)).items()}

    def lite(v, x):
        m = LiteModel(paths[v], num_threads=threads)
        return lambda: m(x)

    try:   # real test images when the data is there (the timing does not depend on it; the agreement does)
        images = run.load_split("test", data_dir=data_dir).images[:64].astype(np.float32) / 255.0
        inputs = "test images"
    except Exception:
        images = np.zeros((0,))
    if len(images) < 64:
        images = np.random.default_rng(0).random((64, *run.spec.input_shape), dtype=np.float32)
        inputs = "uniform random images"
    x1, x64 = images[:1], images
    out = {"dataset": run.dataset, "model": run.model_name, "run": run.path.name, "threads": threads,
           "export_seconds": round(export_s, 1), "bytes": sizes, "rounds": rounds, "inputs": inputs}
    for label, x, calls in (("batch1", x1, calls_b1), ("batch64", x64, calls_b64)):
        fns = {"savedmodel": savedmodel(x), **{v: lite(v, x) for v in QUANT}}
        outputs = {k: f() for k, f in fns.items()}    # warm-up (and agreement with the SavedModel)
        fns = {k: common.per_call(f, calls) for k, f in fns.items()}
        for f in fns.values():
            f()
        times = common.interleave(fns, rounds, warmup=0, log=lambda m: common.log(f"{run.dataset} {label} {m}"))
        per_call = {k: [t / calls for t in v] for k, v in times.items()}
        ref = outputs["savedmodel"]
        tasks = run.spec.task_names
        agree = {k: float(np.mean([np.mean(o[f"{t}_class"] == ref[f"{t}_class"]) for t in tasks])) for k, o in outputs.items()}
        diff = {k: float(max(np.max(np.abs(o[f"{t}_probs"] - ref[f"{t}_probs"])) for t in tasks)) for k, o in outputs.items()}
        out[label] = {
            "batch_size": int(x.shape[0]), "calls_per_round": calls,
            "seconds_per_call": per_call,
            "ms_per_call": {k: 1e3 * common.median(v) for k, v in per_call.items()},
            "ms_per_image": {k: 1e3 * common.median(v) / x.shape[0] for k, v in per_call.items()},
            "images_per_second": {k: x.shape[0] / common.median(v) for k, v in per_call.items()},
            # time ratio variant / savedmodel (< 1: the variant is faster)
            "time_vs_savedmodel": {k: common.ratio_stats(per_call[k], per_call["savedmodel"]) for k in QUANT},
            # speed ratio variant / savedmodel (> 1: the variant is faster)
            "speed_vs_savedmodel": {k: common.ratio_stats(per_call["savedmodel"], per_call[k]) for k in QUANT},
            "argmax_agreement_with_savedmodel": agree,
            "max_abs_prob_diff_vs_savedmodel": diff,
        }
    return out


def main(argv=None) -> int:
    p = common.make_parser("bench_inference", __doc__.split("\n\n")[0])
    p.add_argument("--run", type=pathlib.Path, action="append",
                   help="run directory to export and time (repeatable); default: smoke runs of --datasets")
    p.add_argument("--datasets", default="multimnist,mtfl", help="data sets of the default smoke runs")
    p.add_argument("--model", default="mtvib", help="model of the default smoke runs")
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--threads", type=int, default=None, help="LiteRT threads (default: usable cores)")
    p.add_argument("--calls", default=None, help="calls per timed unit at batch 1 and 64 (default 50,4; --quick 5,1)")
    args = common.parse_args(p, argv, rounds=(2, 7))
    rounds = args.rounds
    calls = (5, 1) if args.quick else (50, 4)
    if args.calls:
        calls = tuple(int(c) for c in args.calls.split(","))
    data_dir = common.data_dir(args.data_dir)
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if args.quick and args.datasets == "multimnist,mtfl":
        datasets = ["multimnist"]

    info = common.machine()
    threads = args.threads or info["cpus_usable"]
    print(f"machine: {common.machine_line(info)}; LiteRT threads: {threads}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        tmp = pathlib.Path(tmp)
        run_dirs = args.run or [common.smoke_run(d, args.model, data_dir, tmp) for d in datasets]
        for i, r in enumerate(run_dirs):
            work = tmp / f"w{i}"
            work.mkdir()
            results.append(bench_run(r, work, data_dir, rounds, calls[0], calls[1], threads, args.quick))
    rows = []
    for r in results:
        b1, b64 = r["batch1"], r["batch64"]
        for v in VARIANTS:
            rows.append([f"{r['dataset']}/{r['model']}", v, r["bytes"][v] / 1e6, b1["ms_per_image"][v],
                         common.ratio_cell(b1["time_vs_savedmodel"].get(v)), b64["images_per_second"][v],
                         common.ratio_cell(b64["speed_vs_savedmodel"].get(v)),
                         b64["argmax_agreement_with_savedmodel"][v]])
    headers = ["model", "artifact", "size MB", "batch-1 latency ms", "latency / SavedModel",
               "batch-64 img/s", "throughput / SavedModel", "arg-max agreement"]
    tab = common.table(headers, rows)
    notes = [f"median over {rounds} interleaved rounds of {calls[0]} calls (batch 1) / {calls[1]} calls (batch 64); "
             "ratios: median [quartiles] of the per-round ratios",
             f"LiteRT with {threads} thread(s); TensorFlow with its default thread pools",
             "agreement: share of arg-max classes equal to the SavedModel's on the 64 timed inputs ("
             + ", ".join(sorted({r["inputs"] for r in results})) + ")"]
    if not args.run:
        notes.append(f"models: {args.model} trained with train.py --preset smoke (speed does not depend on training)")
    common.write_results(args.output, "bench_inference", args, info, {"rows": results}, [tab], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
