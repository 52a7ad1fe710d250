"""``python -m tf_mtvib.reproduce mtl``: the MTVIB paper's comparison, end to end.

For each data set (MultiMNIST, MultiFashion, MTFL), each model (STL, STVIB,
GS, UWL, MTVIB) and each seed it trains a run at the chosen preset (a run
that finished is reused, an interrupted one is resumed), evaluates it clean
and under attack in three settings, and writes the report:

* ``fgsm``: FGSM (eq. 25) in mean mode (z = posterior mean for the attack's
  gradient and for the prediction), the whole test set;
* ``fgsm-eot``: FGSM whose gradient averages ``--eot-samples`` posterior
  draws, predictions averaged over 12 draws (VIB models; the deterministic
  models are the same as in ``fgsm``), on ``--costly-examples`` images;
* ``pgd``: 10-step PGD in mean mode, on ``--costly-examples`` images.

Outputs go to ``docs/results/<preset>/<dataset>/<setting>/`` (the evaluate
module's JSON, Markdown table and plot) and into the generated part of
``docs/RESULTS.md`` (between its BEGIN/END markers). Robustness results are
cached in each run directory, so a second call only redoes what changed.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence

from .. import runs
from ..datasets.spec import get_spec

DATASETS = ("multimnist", "multifashion", "mtfl")
MODELS = ("stl", "stvib", "gs", "uwl", "mtvib")
EPS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
BEGIN = "<!-- BEGIN GENERATED: python -m tf_mtvib.reproduce mtl -->"
END = "<!-- END GENERATED: python -m tf_mtvib.reproduce mtl -->"


def settings(eot_samples: int, costly_examples: Optional[int]) -> Dict[str, Dict[str, Any]]:
    """The robustness settings: name -> evaluate_robustness keyword arguments (minus model/data)."""
    return {
        "fgsm": {"attack": "fgsm", "eval_samples": 0, "eot_samples": 0, "max_examples": None},
        "fgsm-eot": {"attack": "fgsm", "eval_samples": 12, "eot_samples": eot_samples,
                     "max_examples": costly_examples},
        "pgd": {"attack": "pgd", "eval_samples": 0, "eot_samples": 0, "max_examples": costly_examples},
    }


def run_dir(root: pathlib.Path, preset: str, dataset: str, model: str, seed: int) -> pathlib.Path:
    return root / preset / dataset / f"{model}-s{seed}"


# --------------------------------------------------------------------------
# Training and evaluation (resumable)
# --------------------------------------------------------------------------
def ensure_trained(path: pathlib.Path, dataset: str, model: str, preset: str, seed: int,
                   data_dir=None, verbose: int = 2) -> None:
    """Train the run at ``path`` unless it finished; resume it if it was interrupted."""
    if (path / runs.METRICS).exists() and (path / runs.MODEL).exists():
        print(f"[reproduce] {path}: finished, reused", flush=True)
        return
    if (path / runs.CONFIG).exists():
        args = ["--resume", "--output-dir", str(path)]
    else:
        args = ["--dataset", dataset, "--model", model, "--preset", preset, "--seed", str(seed),
                "--output-dir", str(path)]
    if data_dir:
        args += ["--data-dir", str(data_dir)]
    print(f"[reproduce] training {model} on {dataset} (seed {seed}) -> {path}", flush=True)
    # A fresh process per run: TensorFlow's memory does not pile up across 15+ trainings.
    subprocess.run([sys.executable, "-m", "tf_mtvib.train", *args, "--verbose", str(verbose)], check=True)


def ensure_robustness(path: pathlib.Path, name: str, kwargs: Dict[str, Any], data_dir=None) -> Dict[str, Any]:
    """The run's robustness result for setting ``name``, computed once and cached in the run directory."""
    cache = path / f"robustness-{name}.json"
    key = {k: v for k, v in kwargs.items()}
    if cache.exists():
        cached = runs.read_json(cache)
        if cached.get("settings") == key:
            return cached["result"]
    from ..evaluate import evaluate_robustness

    run = runs.load_run(path)
    test = run.load_split("test", data_dir=data_dir)
    print(f"[reproduce] {name} on {path}", flush=True)
    result = evaluate_robustness(run.model, test, eps_list=EPS, verbose=0, **kwargs)
    result["label"] = run.model_name
    runs.write_json(cache, {"settings": key, "result": result})
    return result


# --------------------------------------------------------------------------
# Aggregation over seeds and the report
# --------------------------------------------------------------------------
def aggregate(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean (and spread) of several seeds' results of one model and setting."""
    first = dict(results[0])
    if len(results) == 1:
        return first
    first["accuracy"] = {k: [statistics.fmean(r["accuracy"][k][i] for r in results) for i in range(len(first["eps"]))]
                         for k in first["accuracy"]}
    first["accuracy_std"] = {k: [statistics.stdev(r["accuracy"][k][i] for r in results)
                                 for i in range(len(first["eps"]))] for k in first["accuracy"]}
    first["label"] = f"{first['label']} (mean of {len(results)} seeds)"
    first["seeds"] = len(results)
    return first


def clean_table(dataset: str, rows: Dict[str, List[Dict[str, Any]]]) -> str:
    """Clean test accuracy (%) per model: mean mode and 12-sample average, per task and joint."""
    tasks = list(get_spec(dataset).task_names)
    head = "| Model | eval | " + " | ".join(tasks) + " | joint | s/epoch | seeds |"
    lines = [head, "|---|---|" + "---:|" * (len(tasks) + 3)]
    for model, metrics in rows.items():
        modes = sorted({m for met in metrics for m in met["test"]}, key=lambda m: (m != "mean", m))
        for mode in modes:
            vals = [met["test"][mode] for met in metrics if mode in met["test"]]
            cells = []
            for k in tasks + ["joint"]:
                xs = [100 * v[k] for v in vals]
                cells.append(f"{statistics.fmean(xs):.2f}" + (f" ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else ""))
            secs = [s for met in metrics for s in met.get("seconds_per_epoch", [])]
            per_epoch = f"{statistics.median(secs):.0f}" if secs else "-"
            lines.append(f"| {model} | {mode} | " + " | ".join(cells) + f" | {per_epoch} | {len(vals)} |")
    return "\n".join(lines) + "\n"


def budget_line(path: pathlib.Path) -> str:
    cfg = runs.read_json(path / runs.CONFIG)
    met = runs.read_json(path / runs.METRICS)
    t = cfg["training"]
    return (f"{met['num_train']:,} training / {met['num_test']:,} test images, {t['epochs']} epochs, batch "
            f"{t['batch_size']}, Adam lr {t['learning_rate']:g}, beta {cfg['hparams'].get('beta', 1e-3):g}, "
            f"latent {cfg['hparams'].get('latent_dim', 256)}")


def write_section(report: pathlib.Path, body: str) -> None:
    """Replace the generated part of ``report`` (between BEGIN and END), creating it if needed."""
    text = report.read_text() if report.exists() else "# Results\n\n"
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tf_mtvib.reproduce mtl", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=["cpu", "smoke", "paper"])
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--root", type=pathlib.Path, default=pathlib.Path("runs/reproduce"), help="where runs go")
    p.add_argument("--results-dir", type=pathlib.Path, default=pathlib.Path("docs/results"))
    p.add_argument("--report", type=pathlib.Path, default=pathlib.Path("docs/RESULTS.md"))
    p.add_argument("--eot-samples", type=int, default=8)
    p.add_argument("--costly-examples", type=int, default=1000,
                   help="test images for the EOT and PGD settings (FGSM in mean mode uses all)")
    p.add_argument("--settings", default="fgsm,fgsm-eot,pgd")
    p.add_argument("--only", action="append", default=[], metavar="DATASET=SETTINGS[@N]",
                   help="per data set: these settings only, and N test images for the costly ones "
                        "(e.g. mtfl=fgsm,fgsm-eot@200); repeatable")
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--data-dir", type=pathlib.Path)
    args = p.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    models = [m for m in args.models.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for d in datasets:
        if d not in DATASETS:
            p.error(f"unknown data set {d!r}; choose from {', '.join(DATASETS)}")
    for m in models:
        if m not in MODELS:
            p.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    all_settings = settings(args.eot_samples, args.costly_examples)
    chosen = [s for s in args.settings.split(",") if s]
    per_dataset = {d: (chosen, all_settings) for d in datasets}
    for item in args.only:
        d, _, spec = item.partition("=")
        names, _, n = spec.partition("@")
        if d not in per_dataset:
            p.error(f"--only {item!r}: {d!r} is not among the data sets")
        per_dataset[d] = ([s for s in names.split(",") if s],
                          settings(args.eot_samples, int(n)) if n else all_settings)
    for names, _ in per_dataset.values():
        for s in names:
            if s not in all_settings:
                p.error(f"unknown setting {s!r}; choose from {', '.join(all_settings)}")

    for d in datasets:
        for m in models:
            for s in seeds:
                ensure_trained(run_dir(args.root, args.preset, d, m, s), d, m, args.preset, s, args.data_dir)
    if args.train_only:
        return 0

    from ..evaluate import markdown_table, write_report

    sections = [f"Generated by `python -m tf_mtvib.reproduce mtl --preset {args.preset}` "
                f"(seeds {', '.join(map(str, seeds))}). Accuracies in %."]
    summary: Dict[str, Any] = {}
    for d in datasets:
        paths = {m: [run_dir(args.root, args.preset, d, m, s) for s in seeds] for m in models}
        metrics = {m: [runs.read_json(pth / runs.METRICS) for pth in ps] for m, ps in paths.items()}
        sections.append(f"### {d}\n\nBudget ({args.preset} preset): {budget_line(paths[models[0]][0])}.\n\n"
                        f"Clean test accuracy (mean mode; `mc12`: probabilities averaged over 12 posterior "
                        f"samples):\n\n{clean_table(d, metrics)}")
        summary[d] = {"clean": metrics, "robustness": {}}
        names, kwargs = per_dataset[d]
        for name in names:
            results = [aggregate([ensure_robustness(pth, name, kwargs[name], args.data_dir) for pth in ps])
                       for m, ps in paths.items()]
            out = args.results_dir / args.preset / d / name
            files = write_report(results, out)
            rel = pathlib.Path("results") / args.preset / d / name / files["plot"].name
            sections.append(f"#### {d}: {name}\n\n{markdown_table(results)}\n![{d} {name}]({rel.as_posix()})\n")
            summary[d]["robustness"][name] = results
    out = args.results_dir / args.preset
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / "summary.json", summary)
    write_section(args.report, "\n\n".join(sections))
    print(f"[reproduce] wrote {args.report} and {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
