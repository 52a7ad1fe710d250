"""The layout every reproduction shares: run directories (checkpoints, outside the
repository) and results cells (committed JSON), one per (data set, model, seed); the
seed lists of the command lines; collecting the committed cells; and the attack sweeps
every family's cells carry (:data:`ATTACKS`, :func:`attack_sweep`).

Imports neither TensorFlow nor Keras.
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple

from .. import runs

__all__ = ["run_dir", "cell_dir", "parse_seeds", "cell_seeds", "collect", "ensure_argv_cell", "argv_cell_parser",
           "ATTACKS", "attack_sweep"]

#: Every family's robustness sweeps (:func:`attack_sweep`): FGSM, and PGD with 10 steps (in no seed paper
#: but the check each family gets: a single step can understate a network's vulnerability)
ATTACKS: Dict[str, Dict[str, Any]] = {"fgsm": {"attack": "fgsm"}, "pgd": {"attack": "pgd", "steps": 10}}


def run_dir(root: pathlib.Path, preset: str, dataset: str, model: str, seed: int) -> pathlib.Path:
    return pathlib.Path(root) / preset / dataset / f"{model}-s{seed}"


def cell_dir(results_dir: pathlib.Path, preset: str, dataset: str, model: str, seed: int) -> pathlib.Path:
    """The committed results of one (data set, model, seed)."""
    return pathlib.Path(results_dir) / preset / dataset / f"{model}-s{seed}"


def parse_seeds(text: str) -> List[int]:
    """'0,1,2' -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be comma-separated integers, got {text!r}")
    if not seeds:
        raise argparse.ArgumentTypeError("expected at least one seed")
    return seeds


def cell_seeds(dataset: str, model: str, seeds: Sequence[int],
               rules: Iterable[Tuple[Sequence[str], Sequence[str], Sequence[int]]] = ()) -> List[int]:
    """The seeds of one (data set, model): ``seeds`` plus those of every matching rule."""
    out = set(seeds)
    for models, datasets, extra in rules:
        if model in models and dataset in datasets:
            out.update(extra)
    return sorted(out)


def collect(results_dir: pathlib.Path, preset: str, dataset: str,
            models: Sequence[str]) -> Dict[str, Dict[int, pathlib.Path]]:
    """model -> {seed: results cell} for every committed cell with a metrics.json."""
    base = pathlib.Path(results_dir) / preset / dataset
    found: Dict[str, Dict[int, pathlib.Path]] = {}
    for m in models:
        for cell in sorted(base.glob(f"{m}-s*")):
            seed = cell.name[len(m) + 2:]
            if seed.isdigit() and (cell / runs.METRICS).exists():
                found.setdefault(m, {})[int(seed)] = cell
    return {m: dict(sorted(c.items())) for m, c in found.items()}


RETRAIN_KEPT = ("test", "num_test", "seconds_per_epoch", "machine")   # an earlier run's record, kept on a retrain


def ensure_argv_cell(root: pathlib.Path, results: pathlib.Path, name: str, argv: Sequence[str],
                     measure: Callable[[pathlib.Path], Dict[str, Any]],
                     done: Callable[[Dict[str, Any]], bool] = lambda cell: True, data_dir=None,
                     log=print) -> Dict[str, Any]:
    """One cell of a reproduction whose cells are ``train.py`` command lines (MT-CRL's, VMTL's): train (or
    reuse, or resume) the run ``root/name`` from ``argv``, then write ``results/name.json`` holding ``argv``
    and what ``measure(run_dir)`` returns. A cell whose JSON holds the same arguments (and satisfies
    ``done``, e.g. holds a measurement added later) is returned as it is, with no training. One that lacks
    such a measurement is measured again; when that means training anew (no finished run directory), the
    earlier run's record (:data:`RETRAIN_KEPT`) is kept under ``retrained_from``, so a report can state
    what the retrain changed."""
    from .. import train

    path = pathlib.Path(results) / f"{name}.json"
    earlier = None
    if path.exists():
        cell = runs.read_json(path)
        if cell.get("argv") == list(argv):
            if done(cell):
                return cell
            # the same cell, measured again for what it lacks: keep what the earlier run measured, since a
            # run trained anew (its checkpoint gone) differs from it by the run-to-run spread
            earlier = cell.get("retrained_from") or {k: cell[k] for k in RETRAIN_KEPT if k in cell}
    config = train.build_config(train.parse_args(list(argv)))
    run_dir = pathlib.Path(root) / name
    trained = not (run_dir / "metrics.json").exists()
    train.ensure_run(config, run_dir, data_dir=data_dir, isolate=True, log=log)
    cell = {"argv": list(argv), **measure(run_dir)}
    if earlier and trained:
        cell["retrained_from"] = earlier
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, cell)
    return cell


def attack_sweep(model, split, attack: str = "fgsm", *, by_task: bool = False, seed: int = 0,
                 **settings) -> Dict[str, Any]:
    """One attack sweep of a reproduction's cell, over :data:`tf_mtvib.evaluate.DEFAULT_EPS`, compact enough
    to commit: the settings, eps, accuracy per task and eps, the examples attacked, and the masking check
    (the share of images whose attack gradient is exactly 0, and S, per task).

    ``settings`` go to :func:`tf_mtvib.evaluate.evaluate_robustness` (``loss`` defaults to ``per_task``,
    ``mode`` to ``mean``: every family's robustness protocol). ``by_task`` is for data whose tasks have their
    own examples (VMTL's): each task attacked on its own images (:func:`evaluate_robustness_by_task`), the
    examples then counted per task."""
    from ..evaluate import DEFAULT_EPS, evaluate_robustness, evaluate_robustness_by_task

    settings = {"loss": "per_task", "mode": "mean", **settings}
    evaluate = evaluate_robustness_by_task if by_task else evaluate_robustness
    r = evaluate(model, split, attack, DEFAULT_EPS, verbose=0, seed=seed, **settings)
    masking = r.get("masking") or {}
    return {"attack": attack, **settings, "eps": r["eps"], "tasks": list(r["tasks"]), "accuracy": r["accuracy"],
            "num_examples": r["num_examples_per_task"] if by_task else r["num_examples"],
            "zero_gradient": r.get("zero_gradient"),
            "masking": {k: masking[k] for k in ("zero_gradient", "S") if k in masking}}


def argv_cell_parser(name: str, description: str, stages_default: str, stages_help: str) -> argparse.ArgumentParser:
    """The command line of a reproduction of ``train.py`` cells (VMTL's, the fast preset's search): its stages,
    where runs and cells go (``runs/<name>``, ``docs/results/<name>``, ``docs/<name>.md`` by default), and
    ``--report-only``, ``--smoke`` and ``--dry-run``."""
    p = argparse.ArgumentParser(prog=f"python -m tf_mtvib.reproduce {name}", description=description)
    p.add_argument("--stages", default=stages_default, help=stages_help)
    p.add_argument("--root", type=pathlib.Path, help=f"run directories (default: runs/{name} under the runs directory)")
    p.add_argument("--results-dir", type=pathlib.Path, help=f"the cells' JSON (default docs/results/{name})")
    p.add_argument("--report", type=pathlib.Path, help=f"the report file (default docs/{name}.md)")
    p.add_argument("--data-dir", type=pathlib.Path)
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the committed JSON")
    p.add_argument("--smoke", action="store_true", help="the cells at a budget of seconds (tests)")
    p.add_argument("--dry-run", action="store_true", help="print each cell's train.py arguments and stop")
    return p
