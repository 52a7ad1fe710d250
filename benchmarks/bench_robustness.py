"""Robustness evaluation cost: the full FGSM sweep as a ratio to one clean evaluation pass.

On the real MultiMNIST test set (10,000 composites; ``$TF_MTVIB_DATA_DIR`` or
``--data-dir``), in one process, interleaved, this times

* ``clean``: one clean evaluation pass, ``tf_mtvib.metrics.evaluate_accuracy``
  over ``to_dataset(test, batch)`` (what ``train.py`` runs for metrics.json);
* ``fgsm_sweep``: ``tf_mtvib.evaluate.evaluate_robustness(model, test,
  attack="fgsm", eps_list=(0, 0.05, ..., 0.3))``, the code behind
  ``python -m tf_mtvib.evaluate --attack fgsm``: per batch one clean pass,
  one gradient (the FGSM direction, shared by every eps) and six attacked
  passes.

Both in mean mode (z = posterior mean), batch 100. The sweep builds a fresh
``tf.function`` for the gradient on every call, so each timed sweep includes
that tracing (as every real call does). A lower bound for the ratio is 7
forward passes + 1 forward-and-backward pass, about 9-10 clean passes.
The model: ``--run RUN_DIR`` or one trained in seconds with ``train.py
--preset smoke`` (speed does not depend on the weights).

    TF_MTVIB_DATA_DIR=../shared/data python benchmarks/bench_robustness.py [--quick]
"""
from __future__ import annotations

import pathlib
import tempfile
import time

import common
from tf_mtvib.evaluate import DEFAULT_EPS as EPS   # the paper's eta list



def bench_model(run_dir, test, batch: int, rounds: int, eval_samples: int):
    from tf_mtvib import runs
    from tf_mtvib.datasets import to_dataset
    from tf_mtvib.evaluate import evaluate_robustness
    from tf_mtvib.metrics import evaluate_accuracy

    run = runs.load_run(run_dir)
    model = run.model
    results = {}

    def clean():
        results["clean"] = evaluate_accuracy(model, to_dataset(test, batch), samples=eval_samples)

    def sweep():
        results["sweep"] = evaluate_robustness(model, test, attack="fgsm", eps_list=EPS, batch_size=batch,
                                               eval_samples=eval_samples, verbose=0)

    fns = {"clean": clean, "fgsm_sweep": sweep}
    t0 = time.perf_counter()
    for f in fns.values():
        f()
    warm = time.perf_counter() - t0
    times = common.interleave(fns, rounds, warmup=0, log=lambda m: common.log(f"{run.model_name} {m}"))
    s = results["sweep"]
    assert abs(s["clean"]["joint"] - results["clean"]["joint"]) < 1e-9 or eval_samples, (s["clean"], results["clean"])
    return {"dataset": run.dataset, "model": run.model_name, "run": run.path.name, "test_images": len(test),
            "batch_size": batch, "eps": list(EPS), "eval": s["eval"], "attack_grad": s["attack_grad"],
            "rounds": rounds, "warmup_seconds": round(warm, 1), "seconds": times,
            "median_seconds": {k: common.median(v) for k, v in times.items()},
            "sweep_vs_clean": common.ratio_stats(times["fgsm_sweep"], times["clean"]),
            "accuracy": s["accuracy"]}


def main(argv=None) -> int:
    p = common.make_parser("bench_robustness", __doc__.split("\n\n")[0])
    p.add_argument("--run", type=pathlib.Path, action="append",
                   help="run directory (repeatable); default: smoke runs of --models on --dataset")
    p.add_argument("--dataset", default="multimnist")
    p.add_argument("--models", default="mtvib,gs", help="models of the default smoke runs")
    p.add_argument("--data-dir", type=pathlib.Path, help="data directory (default: $TF_MTVIB_DATA_DIR)")
    p.add_argument("--test-images", type=int, default=None, help="test images (default 10,000; --quick 500)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=0, help="0: mean mode; N: average N posterior samples")
    args = common.parse_args(p, argv, rounds=(2, 3))
    rounds = args.rounds
    n_test = args.test_images or (500 if args.quick else 10_000)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.quick and args.models == "mtvib,gs":
        models = ["mtvib"]
    data_dir = common.data_dir(args.data_dir)

    from tf_mtvib.datasets import load

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    options = {"num_test": n_test} if args.dataset in ("multimnist", "multifashion") else {}
    test = load(args.dataset, "test", data_dir=data_dir, **options)
    test = test.sample(n_test)  # a seeded stratified subset
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-robustness-") as tmp:
        run_dirs = args.run or [common.smoke_run(args.dataset, m, data_dir, tmp) for m in models]
        for r in run_dirs:
            results.append(bench_model(r, test, args.batch_size, rounds, args.eval_samples))
    rows = [[f"{r['dataset']}/{r['model']}", f"{r['test_images']:,}", r["eval"], r["median_seconds"]["clean"],
             r["median_seconds"]["fgsm_sweep"], r["sweep_vs_clean"]["median_of_round_ratios"],
             r["sweep_vs_clean"]["min"], r["sweep_vs_clean"]["max"]] for r in results]
    headers = ["model", "test images", "eval", "clean pass s", "FGSM sweep s (7 eps)", "sweep / clean",
               "min", "max"]
    tab = common.table(headers, rows)
    notes = [f"seconds: median over {rounds} interleaved rounds; sweep/clean: median (min, max) of the per-round ratios",
             "eps = " + ", ".join(f"{e:g}" for e in EPS) + f"; batch {args.batch_size}; real {args.dataset} test images"]
    if not args.run:
        notes.append("models trained with train.py --preset smoke (speed does not depend on training)")
    common.write_results(args.output, "bench_robustness", args, info, {"rows": results}, [tab], notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
