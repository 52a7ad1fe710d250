"""``python -m tf_mtvib.reproduce mtl``: the MTVIB paper's comparison, end to end.

For each data set (MultiMNIST, MultiFashion, MTFL), each model (STL, STVIB,
GS, UWL, MTVIB) and each seed (a *cell*) it trains a run at the chosen preset,
evaluates it clean and under attack, and writes the report. GS's task weights
are chosen first, as in the paper, by keras-tuner's grid search over the
simplex (:func:`tf_mtvib.tune.tune`, ``kt.GridSearch``) on a validation split
carved from the training data; the search's budget and its choice are recorded
in the GS runs' ``config.json`` and in the report.

Robustness settings (:func:`settings`), all at eta (eps) = 0, 0.05, ..., 0.3:

* ``fgsm``: FGSM (eq. 25) in mean mode (z = posterior mean for the attack's
  gradient and for the prediction);
* ``fgsm-sampled``: FGSM as the paper words it: the gradient through one
  draw of z, and one draw of z per prediction;
* ``fgsm-eot``: FGSM whose gradient averages ``--eot-samples`` posterior
  draws, predictions averaged over 12 draws;
* ``pgd``: 10-step PGD in mean mode.

For the deterministic models (STL, GS, UWL) the four FGSM modes coincide.
Every setting of a data set is evaluated on the same test images: the whole
test set, or one seeded subset of ``--examples`` images (per data set with
``--only``), so the report never compares modes on different images.

Results persist across sittings. As soon as a run finishes, its
``config.json``, ``metrics.json`` and ``history.json`` are copied into
``docs/results/<preset>/<dataset>/<model>-s<seed>/``, and each robustness
result is written there as ``robustness-<setting>.json`` (small JSON only;
models and checkpoints stay in ``--root``, outside the repository, by default
``$TF_MTVIB_RUNS_DIR/reproduce`` or ``~/.cache/tf_mtvib/runs/reproduce``).
A cell whose results are all there is skipped (no training, no evaluation);
an interrupted run is resumed from its checkpoint. The report (the generated
part of ``docs/RESULTS.md`` and ``docs/results/<preset>/<dataset>/<setting>/``)
is built from those JSON files alone: ``--report-only`` rebuilds it on a fresh
clone without training anything.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import statistics
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .. import runs, runtime
from ..datasets.paths import runs_dir
from . import cache
from .cache import as_json as _plain   # a value as it reads back from JSON, to compare with a saved file
from .cells import cell_dir, cell_seeds, parse_seeds, run_dir  # noqa: F401 (re-exported)
from .cells import collect as _collect_cells
from .tables import aggregate, fmt_spread, in_order, spread_diff  # noqa: F401 (re-exported)
from .docs import doc_paths, write_section  # noqa: F401 (write_section: re-exported)
from ..datasets.spec import get_spec
from ..evaluate import DEFAULT_EPS
from ..metrics import EOT_SAMPLES, MC_SAMPLES
from . import claims
from .paper import PAPER_MODELS, TABLE_NUMBER

DATASETS = tuple(TABLE_NUMBER)     # the data sets of the paper's Tables III-V
MODELS = PAPER_MODELS              # the paper's five models, in its tables' order
#: Rows beyond the paper: name -> (network, more ``train.py`` flags), i.e. ``train.py --model
#: NETWORK FLAGS...``. Trained only when named in ``--models``; reported whenever committed;
#: never part of the verdict (the paper has no such row). ``dwa``: the GS network weighted
#: by dynamic weight average; ``mtvib-linear``: MTVIB with linear Gaussian heads (Alemi et
#: al.) instead of Table I's FC + BN + ReLU heads, the latent-head ablation.
VARIANTS = {"dwa": ("gs", ("--weighting", "dwa")),
            "mtvib-linear": ("mtvib", ("--latent-head", "linear"))}
ALL_MODELS = MODELS + tuple(VARIANTS)
EPS = DEFAULT_EPS                  # the paper's eta list
MC = f"mc{MC_SAMPLES}"             # the metrics.json key of the Monte-Carlo test accuracy
DEFAULT_SETTINGS = ("fgsm", "fgsm-sampled", "fgsm-eot", "pgd")
#: The files of a finished run copied into its results cell (small JSON only).
RESULT_FILES = (runs.CONFIG, runs.METRICS, runs.HISTORY)
#: The GS grid search's record in docs/results/<preset>/<dataset>/.
SEARCH_JSON = "gs-search.json"
#: Epochs of every trial of the GS grid search, per preset (the search may use a
#: smaller budget than the final run; the report says which). cpu: 1 of the run's 3
#: epochs (MTFL's 20-point grid at 3 epochs costs over half an hour on 2 cores).
#: A doubled preset (``full-x2``) takes its base preset's (:func:`search_epochs`).
SEARCH_EPOCHS = {"smoke": 1, "cpu": 1, "full": 4, "paper": 20}
#: Share of the training split held out as the search's validation split.
SEARCH_VAL_FRACTION = 0.1
#: The search runs once per data set (seed 0); every GS seed trains with its choice.
SEARCH_SEED = 0
#: Seed of the test subset shared by every setting of a data set (when --examples caps it).
SUBSET_SEED = 0
#: Test images of every robustness setting when ``--examples`` is not given: this many,
#: unless the preset names a data set here (0: the whole test split). cpu: 300 MTFL images
#: (150x150 attacks on 2 cores); full: every data set's whole test split (10,000 / 10,000 /
#: 1,000 images, the paper's), whose attacks cost minutes beside the hours of training.
DEFAULT_EXAMPLES = 2000
#: A doubled preset (``full-x2``) evaluates on its base preset's images (:func:`default_examples`).
PRESET_EXAMPLES = {"cpu": {"mtfl": 300}, "full": {d: 0 for d in DATASETS}}
#: Facts of a data set's test split (majority-class rate per task), in docs/results/<preset>/<dataset>/.
TEST_FACTS_JSON = "test-labels.json"
#: The setting set beside the paper's tables: the first one present. The paper's
#: stochastic models predict by sampling z, which is what fgsm-sampled does.
PAPER_SETTING_ORDER = ("fgsm-sampled", "fgsm")


class ReproduceError(Exception):
    """A run directory or results cell that clashes with what is asked for."""


def settings(eot_samples: int = EOT_SAMPLES) -> Dict[str, Dict[str, Any]]:
    """The robustness settings: name -> evaluate_robustness keyword arguments (minus model/data)."""
    return {
        "fgsm": {"attack": "fgsm", "eval_samples": 0, "eot_samples": 0},
        "fgsm-sampled": {"attack": "fgsm", "eval_samples": 1, "eot_samples": 1},
        "fgsm-eot": {"attack": "fgsm", "eval_samples": MC_SAMPLES, "eot_samples": eot_samples},
        "pgd": {"attack": "pgd", "eval_samples": 0, "eot_samples": 0},
    }


def default_examples(preset: str, dataset: str) -> Optional[int]:
    """Robustness test images of ``dataset`` at ``preset`` when --examples is not given (None: all)."""
    from ..train import base_name

    return PRESET_EXAMPLES.get(base_name(preset), {}).get(dataset, DEFAULT_EXAMPLES) or None


def search_epochs(preset: str) -> int:
    """Epochs of each GS grid-search trial at ``preset`` (a doubled preset: its base's, so that
    the doubling changes the training budget alone)."""
    from ..train import base_name

    return SEARCH_EPOCHS.get(base_name(preset), 3)


def default_root() -> pathlib.Path:
    """Where run directories and checkpoints go by default (outside the repository)."""
    return runs_dir() / "reproduce"


# --------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------
def parse_seed_rule(text: str) -> Optional[Tuple[Tuple[str, ...], Tuple[str, ...], List[int]]]:
    """``MODELS[@DATASETS]=SEEDS``, e.g. ``mtvib,uwl,gs@multimnist,mtfl=1,2``: these
    seeds as well for these models (on these data sets; all when omitted). ``none``: no
    rule (None), to run ``--seeds`` alone where a preset plans more."""
    if text.strip().lower() == "none":
        return None
    head, sep, seeds = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MODELS[@DATASETS]=SEEDS, got {text!r}")
    models, _, datasets = head.partition("@")
    models_t = tuple(m for m in models.split(",") if m) or MODELS
    datasets_t = tuple(d for d in datasets.split(",") if d) or DATASETS
    for m in models_t:
        if m not in ALL_MODELS:
            raise argparse.ArgumentTypeError(f"unknown model {m!r} in {text!r}; choose from {', '.join(ALL_MODELS)}")
    for d in datasets_t:
        if d not in DATASETS:
            raise argparse.ArgumentTypeError(f"unknown data set {d!r} in {text!r}; choose from {', '.join(DATASETS)}")
    return models_t, datasets_t, parse_seeds(seeds)


#: The seeds a preset plans beyond seed 0, as ``--seeds-for`` rules (its default): the full
#: preset's issue asks for seeds 1 and 2 of MTVIB, UWL and GS on MultiMNIST and MTFL.
PRESET_SEEDS_FOR: Dict[str, Tuple[str, ...]] = {"full": ("mtvib,uwl,gs@multimnist,mtfl=1,2",)}


def planned_cells(preset: str, datasets: Sequence[str] = DATASETS,
                  models: Sequence[str] = MODELS) -> Dict[str, Dict[str, List[int]]]:
    """data set -> model -> seeds: every cell the preset plans (seed 0 of the paper's models,
    plus :data:`PRESET_SEEDS_FOR`), what ``--preset P`` with no seed flags runs. A doubled
    preset (``full-x2``) plans none: it prices the next doubling on models chosen by hand."""
    from ..train import base_name

    if base_name(preset) != preset:
        return {}
    rules = [parse_seed_rule(r) for r in PRESET_SEEDS_FOR.get(preset, ())]
    return {d: {m: cell_seeds(d, m, [0], rules) for m in models} for d in datasets}


def missing_cells(results_dir: pathlib.Path, preset: str,
                  datasets: Sequence[str] = DATASETS) -> Dict[str, Dict[str, List[int]]]:
    """The planned cells (:func:`planned_cells`) whose metrics and default robustness
    settings are not all committed: data set -> model -> seeds (only those with some missing)."""
    all_settings = settings()
    out: Dict[str, Dict[str, List[int]]] = {}
    for d, per_model in planned_cells(preset, datasets).items():
        examples = default_examples(preset, d)
        for m, seeds in per_model.items():
            left = [s for s in seeds if not cell_complete(cell_dir(results_dir, preset, d, m, s),
                                                          DEFAULT_SETTINGS, all_settings, examples)]
            if left:
                out.setdefault(d, {})[m] = left
    return out


def progress_line(results_dir: pathlib.Path, preset: str, datasets: Sequence[str] = DATASETS) -> Optional[str]:
    """One sentence: how many of the preset's planned cells are committed, which are not, and
    the command that fills them; None for a preset that plans no cells (:func:`planned_cells`)."""
    planned = sum(len(s) for per_model in planned_cells(preset, datasets).values() for s in per_model.values())
    if not planned:
        return None
    missing = missing_cells(results_dir, preset, datasets)
    left = sum(len(s) for per_model in missing.values() for s in per_model.values())
    rules = "".join(f" --seeds-for {r}" for r in PRESET_SEEDS_FOR.get(preset, ()))
    plan = "seed 0 of every model" + (f", plus `{rules.strip()}`" if rules else "")
    if not left:
        return f"Progress: all {planned} planned cells ({plan}) are committed."
    listed = "; ".join(f"{d}: " + ", ".join(f"{m} {'/'.join(map(str, s))}" for m, s in per_model.items())
                       for d, per_model in missing.items())
    return (f"Progress: {planned - left} of the {planned} planned cells ({plan}) are committed. Still to run: "
            f"{listed}. `python -m tf_mtvib.reproduce mtl --preset {preset}` runs them (committed cells are "
            f"skipped; `--dry-run` prices them).")


# --------------------------------------------------------------------------
# Configurations, the GS grid search and training (resumable)
# --------------------------------------------------------------------------
def train_config(dataset: str, model: str, preset: str, seed: int) -> Dict[str, Any]:
    """The run configuration ``train.py --dataset D --model M --preset P --seed S`` resolves to."""
    from .. import train as train_module

    network, flags = VARIANTS.get(model, (model, ()))
    argv = ["--dataset", dataset, "--model", network, "--preset", preset, "--seed", str(seed), *flags]
    return train_module.build_config(train_module.parse_args(argv))


def search_config(dataset: str, preset: str, epochs: int) -> Dict[str, Any]:
    """The configuration of every trial of GS's grid search: the preset's data and
    optimiser, ``epochs`` epochs, a validation split of ``SEARCH_VAL_FRACTION``."""
    config = train_config(dataset, "gs", preset, SEARCH_SEED)
    config["training"].update(epochs=int(epochs), val_fraction=SEARCH_VAL_FRACTION)
    return config


def finished_search(results_dir: pathlib.Path, preset: str, dataset: str, *,
                    epochs: int, grid: Sequence[float]) -> Optional[Dict[str, Any]]:
    """The committed record of GS's grid search on ``dataset`` when it was run with
    these settings (``docs/results/<preset>/<dataset>/gs-search.json``), else None."""
    record_path = pathlib.Path(results_dir) / preset / dataset / SEARCH_JSON
    if not record_path.exists():
        return None
    wanted = _plain({"config": search_config(dataset, preset, epochs), "search": "grid", "grid": list(grid)})
    record = runs.read_json(record_path)
    return record if record.get("search_settings") == wanted else None


def ensure_gs_search(root: pathlib.Path, results_dir: pathlib.Path, preset: str, dataset: str, *,
                     epochs: int, grid: Sequence[float], data_dir=None, verbose: int = 2) -> Dict[str, Any]:
    """GS's task weights for ``dataset``: the record of a finished search with these
    settings (``docs/results/<preset>/<dataset>/gs-search.json``), else a new
    keras-tuner grid search (resumed where an earlier one stopped)."""
    from .. import tune

    config = search_config(dataset, preset, epochs)
    wanted = _plain({"config": config, "search": "grid", "grid": list(grid)})
    record_path = pathlib.Path(results_dir) / preset / dataset / SEARCH_JSON
    record = finished_search(results_dir, preset, dataset, epochs=epochs, grid=grid)
    if record is not None:
        print(f"[reproduce] GS grid search on {dataset}: finished, reused ({record_path})", flush=True)
        return record
    out = pathlib.Path(root) / preset / dataset / f"gs-search-e{epochs}"
    print(f"[reproduce] GS grid search on {dataset} ({epochs} epoch(s) per trial) -> {out}", flush=True)
    best = tune.tune(config, out, search="grid", grid=grid, data_dir=data_dir, verbose=min(verbose, 1))
    record = {
        "search_settings": wanted,
        "task_weights": best["hparams"]["task_weights"],
        "objective_name": best["objective_name"], "objective": best["objective"],
        "best_trial": best["best_trial"], "best_epoch": best["best_epoch"],
        "budget": {"epochs_per_trial": int(epochs), "num_train": best["num_train"], "num_val": best["num_val"],
                   "val_fraction": SEARCH_VAL_FRACTION, "trials": len(best["trials"]),
                   "batch_size": config["training"]["batch_size"],
                   "learning_rate": config["training"]["learning_rate"], "seed": SEARCH_SEED},
        "trials": [{k: t.get(k) for k in ("trial_id", "hparams", "objective", "best_epoch", "val_accuracy",
                                          "seconds")} for t in best["trials"]],
        "seconds": tune.search_seconds(best["trials"]),
    }
    record_path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(record_path, record)
    return record


def gs_config(dataset: str, preset: str, seed: int, search: Dict[str, Any]) -> Dict[str, Any]:
    """GS's run configuration with the searched task weights; ``gs_search`` records
    the choice and the search's budget."""
    config = train_config(dataset, "gs", preset, seed)
    config["hparams"]["task_weights"] = dict(search["task_weights"])
    config["gs_search"] = {"task_weights": dict(search["task_weights"]), "objective": search["objective"],
                           "objective_name": search["objective_name"], "budget": search["budget"],
                           "grid": search["search_settings"]["grid"]}
    return config


def ensure_trained(path: pathlib.Path, config: Dict[str, Any], data_dir=None, verbose: int = 2) -> None:
    """Train the run at ``path`` with ``config`` unless it finished; resume it if it
    was interrupted (:func:`tf_mtvib.train.ensure_run`, in a fresh process per run:
    TensorFlow's memory does not pile up across 15+ trainings). A run directory
    holding another configuration is a :class:`ReproduceError`."""
    from .. import train as train_module

    try:
        train_module.ensure_run(config, path, data_dir=data_dir, verbose=verbose, isolate=True,
                                log=lambda m: print(m.replace("[tf_mtvib]", "[reproduce]"), flush=True))
    except train_module.RunConflict as e:
        raise ReproduceError(str(e)) from None


def publish(path: pathlib.Path, cell: pathlib.Path) -> None:
    """Copy a finished run's small JSON files into its results cell."""
    cell.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (path / name).exists():
            shutil.copyfile(path / name, cell / name)


def preset_test_split(dataset: str, preset: str, data_dir=None):
    """The test split every run of ``preset`` on ``dataset`` is scored on (its data
    options and ``max_test`` cap), for the facts of :func:`ensure_test_facts`."""
    config = train_config(dataset, "stl", preset, 0)
    return runs.load_split(config, "test", data_dir=data_dir), config


def ensure_test_facts(results_dir: pathlib.Path, preset: str, dataset: str, data_dir=None) -> Dict[str, Any]:
    """``docs/results/<preset>/<dataset>/test-labels.json``: the test split's size and each
    task's majority class and its rate (the accuracy of always answering it)."""
    from .paper import majority_rates

    path = pathlib.Path(results_dir) / preset / dataset / TEST_FACTS_JSON
    config = train_config(dataset, "stl", preset, 0)
    key = _plain({"data": config["data"], "max_test": config["limits"].get("max_test")})
    if path.exists():
        facts = runs.read_json(path)
        if facts.get("split") == key:
            return facts
    test, _ = preset_test_split(dataset, preset, data_dir)
    facts = {"split": key, "num_test": len(test), "majority": majority_rates(test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.write_json(path, facts)
    return facts


# --------------------------------------------------------------------------
# Robustness (cached in the results cell)
# --------------------------------------------------------------------------
def robustness_key(kwargs: Dict[str, Any], examples: Optional[int]) -> Dict[str, Any]:
    """What a cached robustness result must match: the setting, eps and the test images."""
    return _plain({**kwargs, "eps": list(EPS), "examples": examples, "subset_seed": SUBSET_SEED})


def evaluation_split(run: "runs.Run", examples: Optional[int], data_dir=None):
    """(images to evaluate, size of the test split): the run's test split (its
    ``max_test`` cap applied), then, when ``examples`` is smaller, a subset drawn
    with :data:`SUBSET_SEED`: the same images for every model and setting of a
    data set."""
    test = run.load_split("test", data_dir=data_dir)
    whole = len(test)
    if examples is not None and examples < whole:
        test = test.sample(examples, seed=SUBSET_SEED)   # stratified, the same for every model and setting
    return test, whole


def cached_robustness(cell: pathlib.Path, name: str, kwargs: Dict[str, Any],
                      examples: Optional[int]) -> Optional[Dict[str, Any]]:
    return cache.lookup(cell / f"robustness-{name}.json", robustness_key(kwargs, examples), field="settings")


def sampling_free(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` without posterior sampling: what a setting means for a deterministic model."""
    return {**kwargs, "eval_samples": 0, "eot_samples": 0}


def ensure_robustness(path: pathlib.Path, cell: pathlib.Path, name: str, kwargs: Dict[str, Any],
                      examples: Optional[int], data_dir=None, label: Optional[str] = None) -> Dict[str, Any]:
    """The run's robustness result for setting ``name``, computed once and kept in its results cell.

    A deterministic model (no Gaussian latent) has no posterior to sample: a
    sampled or EOT setting is exactly its sampling-free twin (e.g. ``fgsm``),
    whose result is reused (computed once) and recorded with ``same_as``."""
    cached = cached_robustness(cell, name, kwargs, examples)
    if cached is not None:
        return cached
    from ..evaluate import evaluate_robustness

    run = runs.load_run(path)
    plain = sampling_free(kwargs)
    if plain != kwargs and not run.model.is_stochastic:
        twin = next((n for n, kw in settings().items() if kw == plain), None)
        if twin is not None:
            result = dict(ensure_robustness(path, cell, twin, plain, examples, data_dir, label))
            result.update(setting=name, same_as=twin)
            cache.store(cell / f"robustness-{name}.json", robustness_key(kwargs, examples), result, field="settings")
            return result
    test, whole = evaluation_split(run, examples, data_dir)
    print(f"[reproduce] {name} on {path} ({len(test):,} test images)", flush=True)
    result = evaluate_robustness(run.model, test, eps_list=EPS, verbose=0, **kwargs)
    result["label"] = label or run.model_name
    result["setting"] = name
    result["seed"] = run.config["training"]["seed"]
    result["test_split_size"] = whole
    cache.store(cell / f"robustness-{name}.json", robustness_key(kwargs, examples), result, field="settings")
    return result


def cell_complete(cell: pathlib.Path, names: Sequence[str], all_settings: Dict[str, Dict[str, Any]],
                  examples: Optional[int]) -> bool:
    """True when the cell's metrics and every asked-for robustness result are committed."""
    return (cell / runs.METRICS).exists() and all(
        cached_robustness(cell, n, all_settings[n], examples) is not None for n in names)


# --------------------------------------------------------------------------
# Aggregation over seeds and the report (from the committed JSON alone)
# --------------------------------------------------------------------------
def collect(results_dir: pathlib.Path, preset: str, dataset: str,
            models: Sequence[str] = ALL_MODELS) -> Dict[str, Dict[int, pathlib.Path]]:
    """model -> {seed: results cell} for every committed cell of the paper's models (and variants)."""
    return _collect_cells(results_dir, preset, dataset, models)


def clean_table(dataset: str, metrics: Dict[str, List[Dict[str, Any]]],
                majority: Optional[Dict[str, Any]] = None) -> str:
    """Clean test accuracy (%) per model: mean mode and 12-sample average, per task and joint;
    with ``majority`` (:func:`tf_mtvib.reproduce.paper.majority_rates` JSON), a last row
    with each task's majority-class rate on the same test split."""
    tasks = list(get_spec(dataset).task_names)
    head = "| Model | eval | " + " | ".join(tasks) + " | joint | s/epoch | seeds |"
    lines = [head, "|---|---|" + "---:|" * (len(tasks) + 3)]
    for model, mets in metrics.items():
        modes = sorted({m for met in mets for m in met["test"]}, key=lambda m: (m != "mean", m))
        for mode in modes:
            vals = [met["test"][mode] for met in mets if mode in met["test"]]
            cells = [fmt_spread([100 * v[k] for v in vals], 2) for k in tasks + ["joint"]]
            secs = [s for met in mets for s in met.get("seconds_per_epoch", [])]
            per_epoch = f"{statistics.median(secs):.0f}" if secs else "-"
            lines.append(f"| {model} | {mode} | " + " | ".join(cells) + f" | {per_epoch} | {len(vals)} |")
    if majority:
        rates = majority["majority"]
        lines.append("| majority class | - | " + " | ".join(f"{100 * rates[t]['rate']:.2f}" for t in tasks)
                     + " | - | - | - |")
    return "\n".join(lines) + "\n"


def budget_line(cell: pathlib.Path) -> str:
    from ..models import DEFAULT_HPARAMS

    cfg = runs.read_json(cell / runs.CONFIG)
    hp = cfg["hparams"]
    met = runs.read_json(cell / runs.METRICS)
    t = cfg["training"]
    schedule = ""
    if t.get("lr_schedule", "constant") not in ("constant", None):
        schedule = f" ({t['lr_schedule']} decay)"
    elif t.get("lr_decay", 1.0) != 1.0:
        schedule = f" (x{t['lr_decay']:g} every {t['lr_decay_epochs']} epochs)"
    return (f"{met['num_train']:,} training / {met['num_test']:,} test images, {t['epochs']} epochs, batch "
            f"{t['batch_size']}, Adam lr {t['learning_rate']:g}{schedule}, beta {hp.get('beta', DEFAULT_HPARAMS['beta']):g}, "
            f"latent {hp.get('latent_dim', DEFAULT_HPARAMS['latent_dim'])}")


def search_line(results_dir: pathlib.Path, preset: str, dataset: str) -> Optional[str]:
    path = pathlib.Path(results_dir) / preset / dataset / SEARCH_JSON
    if not path.exists():
        return None
    rec = runs.read_json(path)
    b = rec["budget"]
    weights = ", ".join(f"{t} {rec['task_weights'][t]:g}" for t in get_spec(dataset).task_names)
    return (f"GS task weights, chosen by keras-tuner's grid search over the simplex ({b['trials']} points of "
            f"the grid {{{', '.join(f'{w:g}' for w in rec['search_settings']['grid'])}}}): "
            f"**{weights}** ({rec['objective_name']} {100 * rec['objective']:.2f}%). Search budget: "
            f"{b['epochs_per_trial']} epoch(s) per trial on {b['num_train']:,} training images, scored on "
            f"{b['num_val']:,} validation images held out from the training split (seed {b['seed']}); "
            + search_time_text(rec) + ".")


def search_time_text(record: Dict[str, Any]) -> str:
    """What a GS search record says of its cost (the fit time of its trials)."""
    if record.get("seconds") is None:
        return "its time is not in the record"
    return f"its {len(record['trials'])} trials took {record['seconds'] / 3600:.2f} h of training"


def robustness_results(cells: Dict[str, Dict[int, pathlib.Path]], name: str) -> Dict[str, List[Dict[str, Any]]]:
    """model -> the committed results of setting ``name``, one per seed."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for m, by_seed in cells.items():
        for cell in by_seed.values():
            path = cell / f"robustness-{name}.json"
            if path.exists():
                doc = runs.read_json(path)
                r = doc["result"]
                images = (doc["settings"].get("subset_seed"), r["num_examples"], r.get("test_split_size"))
                out.setdefault(m, []).append({**r, "_images": images})
    return out


def settings_present(cells: Dict[str, Dict[int, pathlib.Path]]) -> List[str]:
    names = {p.name[len("robustness-"):-len(".json")] for by_seed in cells.values() for c in by_seed.values()
             for p in c.glob("robustness-*.json")}
    return in_order(names, settings())


def load_dataset_results(results_dir: pathlib.Path, preset: str, dataset: str,
                         models: Sequence[str] = ALL_MODELS) -> Dict[str, Any]:
    """Everything the report says about one data set, read from the committed JSON:
    ``cells``, ``metrics`` and ``seeds`` per model, ``robust`` (setting -> model ->
    per-seed results), ``images`` (the distinct (subset seed, images, test split size)
    of the robustness results), ``facts`` (test-labels.json) and ``search`` (gs-search.json)."""
    base = pathlib.Path(results_dir) / preset / dataset
    cells = collect(results_dir, preset, dataset, models)
    robust: Dict[str, Dict[str, List[Dict[str, Any]]]] = {}
    images = set()
    for name in settings_present(cells):
        per_model = robustness_results(cells, name)
        images.update(r.pop("_images") for rs in per_model.values() for r in rs)
        robust[name] = per_model
    return {
        "dataset": dataset, "preset": preset, "cells": cells,
        "metrics": {m: [runs.read_json(c / runs.METRICS) for c in by_seed.values()] for m, by_seed in cells.items()},
        "seeds": {m: list(by_seed) for m, by_seed in cells.items()},
        "robust": robust, "images": images,
        "facts": runs.read_json(base / TEST_FACTS_JSON) if (base / TEST_FACTS_JSON).exists() else None,
        "search": runs.read_json(base / SEARCH_JSON) if (base / SEARCH_JSON).exists() else None,
    }


def paper_setting(data: Dict[str, Any]) -> Optional[str]:
    """The setting set beside the paper's tables (:data:`PAPER_SETTING_ORDER`), if any is committed."""
    return next((n for n in PAPER_SETTING_ORDER if n in data["robust"]), None)


def paper_table(data: Dict[str, Any], setting: str, tables) -> str:
    """For every task and eta: the paper's figure, ours (mean (min-max) over seeds) and
    ours minus the paper's, per model (%)."""
    from .paper import TABLE_NUMBER, paper_value

    dataset = data["dataset"]
    per_model = data["robust"][setting]
    models = [m for m in ALL_MODELS if m in per_model]
    head = "| task | eta | " + " | ".join(f"{m} paper | {m} ours | {m} diff" for m in models) + " |"
    lines = [f"#### {dataset}: the paper's Table {TABLE_NUMBER[dataset]} beside ours ({setting})", "", head,
             "|---|---:|" + "---:|" * (3 * len(models))]
    first = per_model[models[0]][0]
    for task in get_spec(dataset).task_names:
        for i, e in enumerate(first["eps"]):
            cells = []
            for m in models:
                ours = [100 * r["accuracy"][task][i] for r in per_model[m]]
                paper = paper_value(tables, dataset, task, e, m)
                cells += ["-" if paper is None else f"{paper:.1f}", fmt_spread(ours),
                          "-" if paper is None else spread_diff(ours, paper)]
            lines.append(f"| {task} | {e:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def clean_average_table(data: Dict[str, Any], tables) -> str:
    """Clean accuracy averaged over tasks (%), per model: the paper's (its tables; MTVIB's
    also in its text) and ours on the whole test split, in mean mode and averaged over 12 samples."""
    from .paper import paper_clean_average

    dataset = data["dataset"]
    tasks = get_spec(dataset).task_names
    lines = [f"| Model | paper | ours, mean mode | diff | ours, {MC} | seeds |", "|---|---:|---:|---:|---:|---:|"]
    for m in [m for m in ALL_MODELS if m in data["metrics"]]:
        mets = data["metrics"][m]
        paper = paper_clean_average(tables, dataset, m) if m in MODELS else None
        mean = [100 * statistics.fmean(met["test"]["mean"][t] for t in tasks) for met in mets]
        mc = [100 * statistics.fmean(met["test"][MC][t] for t in tasks) for met in mets if MC in met["test"]]
        lines.append(f"| {m} | {'-' if paper is None else f'{paper:.2f}'} | {fmt_spread(mean, 2)} | "
                     f"{'-' if paper is None else spread_diff(mean, paper)} | "
                     f"{fmt_spread(mc, 2) if mc else '-'} | {len(mets)} |")
    return "\n".join(lines) + "\n"


def dataset_section(results_dir: pathlib.Path, preset: str, dataset: str, models: Sequence[str],
                    tables=None) -> Tuple[str, Dict[str, Any]]:
    """The report's section of one data set (and the data it rests on), from the committed JSON."""
    from ..evaluate import markdown_table, write_report
    from .paper import PAPER_TEXT_MTVIB_CLEAN_AVERAGE, TABLE_NUMBER, load_paper_tables

    tables = tables if tables is not None else load_paper_tables()
    data = load_dataset_results(results_dir, preset, dataset, models)
    if not data["cells"]:
        return f"### {dataset}\n\nNo committed results yet.\n", data
    first = next(iter(next(iter(data["cells"].values())).values()))
    parts = [f"### {dataset}\n\nBudget ({preset} preset): {budget_line(first)}.\n\nSeeds: "
             + "; ".join(f"{m} {', '.join(map(str, s))}" for m, s in data["seeds"].items()) + "."]
    line = search_line(results_dir, preset, dataset)
    if line:
        parts.append(line)
    majority = " The last row is each task's majority-class rate on the same split." if data["facts"] else ""
    parts.append(f"Clean test accuracy on the whole test split (%; mean mode; `{MC}`: probabilities averaged over "
                 f"{MC_SAMPLES} posterior samples; with several seeds: mean (min-max)).{majority}\n\n"
                 + clean_table(dataset, data["metrics"], data["facts"]))
    parts.append(f"Clean accuracy averaged over the tasks, beside the paper's (Table {TABLE_NUMBER[dataset]}; its "
                 f"text gives MTVIB's as {PAPER_TEXT_MTVIB_CLEAN_AVERAGE[dataset]}). A difference in parentheses is "
                 "no larger than the spread of our seeds and is not a difference.\n\n" + clean_average_table(data, tables))
    robust = {name: {m: aggregate(rs) for m, rs in per_model.items()} for name, per_model in data["robust"].items()}
    if robust:
        images = set(data["images"])
        if len(images) == 1:
            subset_seed, n, whole = images.pop()
            where = ("the whole test split" if whole is not None and n >= whole else
                     f"one subset of {n:,} test images drawn with seed {subset_seed}")
            parts.append(f"Every robustness setting below was evaluated on the same images: {where} ({n:,} images).")
        else:
            parts.append("**Warning: the robustness settings below were evaluated on different test images "
                         f"({sorted(images, key=str)}); do not compare them with each other.**")
    setting = paper_setting(data)
    if setting:
        notes = ["A difference in parentheses is no larger than the spread (min-max) of our seeds: not a difference."]
        if dataset == "multifashion":
            notes.append("The paper prints STL's top_left accuracy at eta 0.3 as \"449.%\"; it is read as 44.9.")
        if dataset == "mtfl":
            notes.append("Table V does not name MTFL's tasks; they are read in the order of MTFL's annotation "
                         "columns (gender, smile, glasses, pose); only pose (5 classes) is certain.")
        parts.append(paper_table(data, setting, tables) + "\n" + " ".join(notes))
    for name, per_model in robust.items():
        results = list(per_model.values())
        out = pathlib.Path(results_dir) / preset / dataset / name
        files = write_report(results, out)
        rel = pathlib.Path("results") / preset / dataset / name / files["plot"].name
        parts.append(f"#### {dataset}: {name}\n\n{markdown_table(results)}\n![{dataset} {name}]({rel.as_posix()})\n")
    return "\n\n".join(parts), data


# --------------------------------------------------------------------------
# A preset's accuracy and time goals (from the committed JSON)
# --------------------------------------------------------------------------
#: Goals of a preset, per data set: each model's clean per-task accuracy (mean mode, whole
#: test split) at most ``below`` points under the paper's (its Tables III-V at eta 0);
#: with ``majority``, also above the test split's majority-class rate on every task.
#: The full preset's (its issue): MultiMNIST within 2 points of Table III, MultiFashion
#: within 3 of Table IV, MTFL above the majority rate and at or above Table V; and no
#: model's training longer than about ``hours``.
PRESET_GOALS: Dict[str, Dict[str, Any]] = {
    "full": {"hours": 2.0, "datasets": {"multimnist": {"below": 2.0}, "multifashion": {"below": 3.0},
                                         "mtfl": {"below": 0.0, "majority": True}}},
}
def cell_times(cell: pathlib.Path) -> Tuple[float, float]:
    """(training seconds, robustness-evaluation seconds) of one committed cell, from its
    metrics.json (seconds per epoch) and robustness JSON (settings reused via ``same_as`` cost nothing)."""
    met = runs.read_json(cell / runs.METRICS)
    train = sum(met.get("seconds_per_epoch", []))
    evaluation = 0.0
    for path in cell.glob("robustness-*.json"):
        r = runs.read_json(path)["result"]
        if not r.get("same_as"):
            evaluation += r.get("seconds", 0.0)
    return train, evaluation


def epoch_seconds(results_dir: pathlib.Path, preset: str, dataset: str, model: str) -> Optional[float]:
    """The median seconds per epoch of ``model``'s committed cells at ``preset`` on ``dataset``
    (None when none is committed): what ``--dry-run`` prices one more training with."""
    per_epoch = [t for c in collect(results_dir, preset, dataset, [model]).get(model, {}).values()
                 for t in runs.read_json(c / runs.METRICS).get("seconds_per_epoch", [])]
    return statistics.median(per_epoch) if per_epoch else None


def resumable_epochs(path: pathlib.Path) -> int:
    """The epochs done by the interrupted training at ``path`` that its resume checkpoint
    holds (0 when there is none): the epochs ``--dry-run`` leaves out of its price."""
    from ..checkpoints import epochs_done

    try:
        return epochs_done(pathlib.Path(path) / runs.BACKUP)
    except (OSError, ValueError, KeyError, TypeError):
        return 0                 # an unreadable record: the training is priced from scratch


def same_training(preset: str, dataset: str, model: str) -> List[str]:
    """The other data sets on which ``model`` at ``preset`` is the same computation as on
    ``dataset``: the same input shape and the same training configuration but for the data
    set's name (MultiMNIST and MultiFashion). Their epoch times price each other's."""
    def key(d: str) -> Tuple[Tuple[int, ...], Dict[str, Any]]:
        config = dict(train_config(d, model, preset, 0))
        config.pop("dataset")
        return tuple(get_spec(d).input_shape), config

    from ..train import presets_for

    mine = key(dataset)
    return [d for d in DATASETS if d != dataset and preset in presets_for(d) and key(d) == mine]


def price_epoch(results_dir: pathlib.Path, preset: str, dataset: str,
                model: str) -> Tuple[Optional[float], Optional[str]]:
    """(median seconds per epoch, the data set that timed it) for one more training of
    ``model`` on ``dataset``: its own committed seeds (:func:`epoch_seconds`), else those of a
    data set where it is the same computation (:func:`same_training`); (None, None) when
    neither has a committed seed."""
    for d in [dataset] + same_training(preset, dataset, model):
        seconds = epoch_seconds(results_dir, preset, d, model)
        if seconds is not None:
            return seconds, d
    return None, None


def goal_rows(data: Dict[str, Any], goal: Dict[str, Any], hours: float, tables, width: int,
              label: str = "") -> List[Tuple[str, str]]:
    """One markdown row per model of ``data`` (``width`` task columns) and whether it meets
    ``goal`` (accuracy) and the ``hours`` of training (the longest seed's): ``"met"``,
    ``"missed"``, or ``"unknown"`` when only the time is in doubt (a GS whose grid search
    was not timed and whose training alone is within the hours)."""
    from .paper import paper_value

    dataset = data["dataset"]
    tasks = get_spec(dataset).task_names
    rates = (data["facts"] or {}).get("majority", {})
    rows = []
    for m in [m for m in MODELS if m in data["metrics"]]:
        mets = data["metrics"][m]
        accurate, cells = True, []
        for t in tasks:
            ours = [100 * met["test"]["mean"][t] for met in mets]
            paper = paper_value(tables, dataset, t, 0.0, m)
            diff = statistics.fmean(ours) - paper
            accurate &= diff >= -goal["below"]
            text = f"{fmt_spread(ours)} ({paper:.1f}, {diff:+.1f})"
            if goal.get("majority"):
                rate = 100 * rates[t]["rate"] if t in rates else None
                above = rate is not None and min(ours) > rate
                accurate &= above
                text += "" if above else " **<= majority**"
            cells.append(text)
        cells += [""] * (width - len(tasks))
        times = [cell_times(c) for c in data["cells"][m].values()]
        train_h, shortest_h = max(t for t, _ in times) / 3600, min(t for t, _ in times) / 3600
        eval_min = statistics.fmean(e for _, e in times) / 60
        hours_text, untimed = f"{train_h:.2f}", False
        if f"{shortest_h:.2f}" != hours_text:      # seeds that ran on machines (or sittings) of other speeds
            hours_text += f" (shortest {shortest_h:.2f})"
        if m == "gs" and data["search"]:           # GS's cost includes the grid search that chose its weights
            seconds = data["search"].get("seconds")
            untimed = seconds is None
            hours_text += " + search untimed" if untimed else f" + {seconds / 3600:.2f} search"
            train_h += (seconds or 0.0) / 3600
        # judged on the hours as printed (two decimals), so that the row reads as its verdict;
        # an untimed search leaves the time unknown unless the training alone is over
        in_time = round(train_h, 2) <= hours
        missed = [what for what, ok in (("accuracy", accurate), ("time", in_time)) if not ok]
        status = "missed" if missed else "unknown" if untimed else "met"
        text = {"missed": f"missed ({', '.join(missed)})", "met": "met",
                "unknown": "accuracy met, time unknown (search untimed)"}[status]
        rows.append((f"| {dataset} | {m}{label} | {len(mets)} | " + " | ".join(cells)
                     + f" | {hours_text} | {eval_min:.0f} | {text} |", status))
    return rows


def goals_section(results_dir: pathlib.Path, preset: str, datasets: Sequence[str] = DATASETS,
                  loaded: Optional[Dict[str, Dict[str, Any]]] = None) -> Optional[str]:
    """The preset's goals (:data:`PRESET_GOALS`), model by model, with the measured time per
    model and, when committed, what the next doubling of the budget bought (the preset at twice
    its epochs, train.py's ``doubled_name(preset)``, e.g. ``full-x2``); None when the
    preset sets no goals. ``loaded``: data set -> :func:`load_dataset_results` of ``preset``
    (of at least the paper's models), when the caller has read it already."""
    from ..train import doubled_name
    from .paper import TABLE_NUMBER, load_paper_tables

    spec = PRESET_GOALS.get(preset)
    if spec is None:
        return None
    loaded = loaded or {}
    tables = load_paper_tables()
    width = max(len(get_spec(d).task_names) for d in datasets)
    header = ["| data set | model | seeds | " + " | ".join(f"task {i + 1}" for i in range(width))
              + " | train h | eval min | goal |", "|---|---|---:|" + "---|" * width + "---:|---:|---|"]
    lines = [f"### Goals of the {preset} preset", "",
             "Each model's clean per-task accuracy (mean mode, whole test split; with several seeds, mean "
             "(min-max)), then in parentheses the paper's (its table at eta 0) and ours minus the paper's. "
             + " ".join(f"{d}: at most {g['below']:g} points under Table {TABLE_NUMBER[d]}"
                        + (", and above the majority-class rate on every task (every seed)" if g.get("majority") else "")
                        + "." for d, g in spec["datasets"].items() if d in datasets)
             + f" Time: the longest seed's training (hours; for GS, plus the grid search that chose its task weights; "
             f"the goal is at most {spec['hours']:g} h per model) and "
             "the mean robustness evaluation (minutes, all settings), from the runs' own timings on the machine "
             "each ran on (cells ran in different sittings, on machines of different speeds, which other jobs "
             "may have shared); with several seeds whose times differ, the shortest seed's training follows in "
             "parentheses. A row is met when both its accuracy and its training time are; "
             "a GS row whose grid search was not timed has its time unknown.",
             "", *header]
    counts = {"met": 0, "missed": 0, "unknown": 0}
    doubled = []
    for d in datasets:
        goal = spec["datasets"].get(d)
        if goal is None:
            continue
        data = loaded.get(d) or load_dataset_results(results_dir, preset, d, MODELS)
        if data["metrics"]:
            names = list(get_spec(d).task_names)
            lines.append(f"| {d} | (tasks) | - | " + " | ".join(names + [""] * (width - len(names))) + " | - | - | - |")
        for row, status in goal_rows(data, goal, spec["hours"], tables, width):
            lines.append(row)
            counts[status] += 1
        more = load_dataset_results(results_dir, doubled_name(preset), d, MODELS)
        if more["metrics"]:
            label = f" ({doubled_name(preset)})"
            doubled += [row for row, _ in goal_rows(more, goal, spec["hours"], tables, width, label=label)]
    unknown = (f"; {counts['unknown']} more met the accuracy goal, with the time unknown" if counts["unknown"]
               else "")
    lines += ["", f"Goals met: {counts['met']} of {sum(counts.values())} committed model rows{unknown}."]
    if doubled:
        lines += ["", f"The next doubling of the budget (the `{doubled_name(preset)}` preset: every epoch count "
                  f"doubled), on the models it was run for:", "", *header, *doubled]
    return "\n".join(lines)


def build_report(results_dir: pathlib.Path, preset: str, datasets: Sequence[str] = DATASETS) -> str:
    """The generated part of docs/RESULTS.md, from the JSON under ``results_dir/preset`` alone
    (every committed model, whatever ``--models`` trained this time), each data set's read once."""
    from .paper import load_paper_tables

    tables = load_paper_tables()
    sections = [f"Generated by `python -m tf_mtvib.reproduce mtl --preset {preset}` from the JSON committed under "
                f"`docs/results/{preset}/`. Accuracies in %."]
    bodies, loaded = [], {}
    for d in datasets:
        body, loaded[d] = dataset_section(results_dir, preset, d, ALL_MODELS, tables)
        bodies.append(body)
    goals = goals_section(results_dir, preset, datasets, loaded=loaded)
    return "\n\n".join([*sections, *([goals] if goals else []), *bodies])


# --------------------------------------------------------------------------
# The verdict on the paper's claims (rendered by tf_mtvib.reproduce.claims from the committed JSON)
# --------------------------------------------------------------------------
def per_task_rows(results_dir: pathlib.Path, preset: str, dataset: str) -> Dict[str, Dict[str, List[Dict[str, Any]]]]:
    """``{row: {model: [result]}}`` of :data:`claims.PER_TASK_ROWS`, when every paper model's seed-0
    cell has its ``saturation.json`` with both sweeps (mean mode, the whole test split), else {}."""
    docs = {}
    for m in MODELS:
        path = cell_dir(results_dir, preset, dataset, m, 0) / "saturation.json"
        if not path.exists():
            return {}
        docs[m] = runs.read_json(path).get("sweeps", {})
    if not all(s in d for d in docs.values() for s in claims.PER_TASK_ROWS.values()):
        return {}
    return {row: {m: [docs[m][sweep]] for m in MODELS} for row, sweep in claims.PER_TASK_ROWS.items()}


def verdict(results_dir: pathlib.Path, preset: str, datasets: Sequence[str] = DATASETS) -> str:
    """The short section that opens docs/RESULTS.md (:func:`tf_mtvib.reproduce.claims.report`), from the
    committed JSON alone: the data sets whose MTVIB cells exist, with the paper's models only."""
    from .paper import load_paper_tables

    data = {d: load_dataset_results(results_dir, preset, d, MODELS) for d in datasets}
    data = {d: v for d, v in data.items() if "mtvib" in v["metrics"]}
    budgets = {d: budget_line(next(iter(v["cells"]["mtvib"].values()))) for d, v in data.items()}
    per_task = {d: per_task_rows(results_dir, preset, d) for d in data}
    return claims.report(data, load_paper_tables(), preset, budgets, per_task,
                         progress_line(results_dir, preset, datasets) if data else None)


def markers(preset: str, part: str = "") -> Tuple[str, str]:
    """(begin, end): the comments around one preset's generated ``part`` of docs/RESULTS.md
    (``""``: the tables; ``"VERDICT"``: the verdict). Each preset has its own blocks, so the
    full preset's report stands beside the cpu preset's instead of replacing it."""
    what = f"GENERATED {part}".rstrip()
    cmd = f"python -m tf_mtvib.reproduce mtl --preset {preset}"
    return f"<!-- BEGIN {what}: {cmd} -->", f"<!-- END {what}: {cmd} -->"


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    from .. import train as train_module
    from ..tune import DEFAULT_GRID

    p = argparse.ArgumentParser(prog="python -m tf_mtvib.reproduce mtl", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=list(train_module.PRESETS))
    p.add_argument("--datasets", default=None,
                   help="comma-separated subset (default: all, or the data sets a preset was chosen for)")
    p.add_argument("--models", default=None,
                   help="comma-separated models to train and evaluate (default: the paper's, except under a "
                        "doubled preset such as full-x2, which prices the next doubling on models named here): "
                        "the paper's " + ", ".join(MODELS)
                        + "; beyond the paper " + ", ".join(f"{v} (--model {n} {' '.join(f)})"
                                                           for v, (n, f) in VARIANTS.items()))
    p.add_argument("--seeds", type=parse_seeds, default=[0], help="comma-separated seeds of every cell")
    p.add_argument("--seeds-for", type=parse_seed_rule, action="append", default=None,
                   metavar="MODELS[@DATASETS]=SEEDS",
                   help="more seeds for some models (and data sets), e.g. mtvib,uwl,gs@multimnist,mtfl=1,2; "
                        "repeatable; replaces the preset's planned seeds ("
                        + "; ".join(f"{k}: {' '.join(v)}" for k, v in PRESET_SEEDS_FOR.items())
                        + "); 'none' for --seeds alone")
    p.add_argument("--root", type=pathlib.Path, default=None,
                   help="where run directories and checkpoints go (default: $TF_MTVIB_RUNS_DIR/reproduce "
                        "or ~/.cache/tf_mtvib/runs/reproduce)")
    p.add_argument("--results-dir", type=pathlib.Path, default=None,
                   help="the committed results (default: docs/results of the checkout)")
    p.add_argument("--report", type=pathlib.Path, default=None, help="default: docs/RESULTS.md of the checkout")
    p.add_argument("--eot-samples", type=int, default=EOT_SAMPLES)
    p.add_argument("--examples", type=int, default=None,
                   help="test images for every robustness setting: one seeded subset shared by all settings "
                        "and models of a data set (0: the whole test split; default: %d, or the preset's "
                        "choice per data set: %s)" % (DEFAULT_EXAMPLES, "; ".join(
                            f"{k} " + ", ".join(f"{d} {n or 'all'}" for d, n in v.items())
                            for k, v in PRESET_EXAMPLES.items())))
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    p.add_argument("--only", action="append", default=[], metavar="DATASET=SETTINGS[@N]",
                   help="per data set: these settings only, on N test images (e.g. mtfl=fgsm,fgsm-sampled@500); "
                        "repeatable")
    p.add_argument("--search-epochs", type=int, help="epochs per trial of GS's grid search "
                   "(default per preset: " + ", ".join(f"{k} {v}" for k, v in SEARCH_EPOCHS.items()) + ")")
    p.add_argument("--search-grid", type=float, nargs="+", default=list(DEFAULT_GRID), metavar="W",
                   help="GS weight values; K tasks: w_1..w_{K-1} from the grid, w_K = 1 - their sum")
    p.add_argument("--train-only", action="store_true", help="train (and publish metrics) only")
    p.add_argument("--search-only", action="store_true",
                   help="run GS's grid search on each data set and record it (gs-search.json, which every GS "
                        "seed reuses), and train nothing else: a search fits in a sitting where a whole GS cell "
                        "does not")
    p.add_argument("--report-only", action="store_true",
                   help="rebuild the report from the committed JSON; train and evaluate nothing")
    p.add_argument("--dry-run", action="store_true", help="list what would be trained or evaluated, and stop")
    p.add_argument("--data-dir", type=pathlib.Path)
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=2, help="Keras progress output of training")
    return p


def comma_choices(parser: argparse.ArgumentParser, text: str, allowed: Sequence[str], what: str) -> List[str]:
    """The items of a comma-separated flag value, each one of ``allowed`` (else a usage error, exit 2)."""
    items = [x for x in text.split(",") if x]
    for x in items:
        if x not in allowed:
            parser.error(f"unknown {what} {x!r}; choose from {', '.join(allowed)}")
    return items


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..train import base_name

    p = make_parser()
    args = p.parse_args(argv)
    doc_paths(p, args, {"results_dir": "docs/results", "report": "docs/RESULTS.md"})
    from ..train import check_preset, presets_for

    chosen_for = [d for d in DATASETS if args.preset in presets_for(d)]
    datasets = comma_choices(p, args.datasets or ",".join(chosen_for), DATASETS, "data set")
    for d in datasets:
        try:
            check_preset(args.preset, d)
        except ValueError as e:
            p.error(str(e))
    if args.models is None and base_name(args.preset) != args.preset and not (args.report_only or args.search_only):
        p.error(f"--preset {args.preset} doubles {base_name(args.preset)}'s budget to price the next doubling "
                "on chosen models: name them with --models (e.g. --models mtvib)")
    models = comma_choices(p, args.models or ",".join(MODELS), ALL_MODELS, "model")
    if (args.examples is not None and args.examples < 0) or args.eot_samples < 1:
        p.error("--examples must be >= 0 and --eot-samples >= 1")
    if args.seeds_for is None:
        args.seeds_for = [parse_seed_rule(r) for r in PRESET_SEEDS_FOR.get(args.preset, ())]
    args.seeds_for = [r for r in args.seeds_for if r is not None]
    all_settings = settings(args.eot_samples)
    chosen = [s for s in args.settings.split(",") if s]
    per_dataset = {d: (chosen, default_examples(args.preset, d) if args.examples is None else args.examples or None)
                   for d in datasets}
    for item in args.only:
        d, _, spec = item.partition("=")
        names, _, n = spec.partition("@")
        if d not in per_dataset:
            p.error(f"--only {item!r}: {d!r} is not among the data sets")
        if n and (not n.isdigit() or int(n) < 0):
            p.error(f"--only {item!r}: N must be a non-negative integer")
        per_dataset[d] = ([s for s in names.split(",") if s], (int(n) or None) if n else per_dataset[d][1])
    for names, _ in per_dataset.values():
        for s in names:
            if s not in all_settings:
                p.error(f"unknown setting {s!r}; choose from {', '.join(all_settings)}")
    root = args.root or default_root()
    trial_epochs = args.search_epochs or search_epochs(args.preset)

    estimates: List[Optional[float]] = []     # --dry-run: hours of each training to run (None: untimed)
    per_epoch: Dict[Tuple[str, str], Tuple[Optional[float], Optional[str]]] = {}   # --dry-run: price_epoch
    searching: Set[str] = set()               # --dry-run: data sets whose GS search it announced (once each)
    if args.search_only and not args.report_only:
        for d in datasets:
            if not args.dry_run:
                ensure_gs_search(root, args.results_dir, args.preset, d, epochs=trial_epochs, grid=args.search_grid,
                                 data_dir=args.data_dir, verbose=args.verbose)
            elif finished_search(args.results_dir, args.preset, d, epochs=trial_epochs, grid=args.search_grid):
                print(f"[reproduce] GS grid search on {d}: finished, recorded", flush=True)
            else:
                print(f"[reproduce] would run GS's grid search on {d} ({trial_epochs} epoch(s) per trial)", flush=True)
        return 0
    if not (args.report_only or args.dry_run) and runtime.uses_glibc() and not runtime.allocator_tuned():
        print("[reproduce] trainings run in child processes with glibc's allocator thresholds raised; the "
              "evaluations in this process run at glibc's defaults: start it with "
              f"GLIBC_TUNABLES={runtime.tunables_string()} to speed them up (tf_mtvib/runtime.py)", flush=True)
    if not args.report_only:
        for d in datasets:
            names, examples = per_dataset[d]
            if not args.dry_run:
                ensure_test_facts(args.results_dir, args.preset, d, args.data_dir)
            for m in models:
                for s in cell_seeds(d, m, args.seeds, args.seeds_for):
                    cell = cell_dir(args.results_dir, args.preset, d, m, s)
                    path = run_dir(root, args.preset, d, m, s)
                    if cell_complete(cell, [] if args.train_only else names, all_settings, examples):
                        print(f"[reproduce] {d} {m} seed {s}: results committed in {cell}, skipped", flush=True)
                        continue
                    need_training = not ((cell / runs.METRICS).exists() and (path / runs.MODEL).exists())
                    if args.dry_run:
                        train = None
                        if need_training:
                            total = train_config(d, m, args.preset, s)["training"]["epochs"]
                            done = min(resumable_epochs(path), total)
                            epochs = total - done
                            if (d, m) not in per_epoch:
                                per_epoch[d, m] = price_epoch(args.results_dir, args.preset, d, m)
                            seconds, timer = per_epoch[d, m]
                            hours = None if seconds is None else seconds * epochs / 3600
                            whose = ("its committed seeds'" if timer == d else
                                     f"{timer}'s committed {m} seeds' (the same network and budget)")
                            train = (f"resume from its epoch-{done} checkpoint and train the last {epochs} of "
                                     f"{total} epochs (" if done else f"train {epochs} epochs (") + (
                                f"about {hours:.1f} h at {whose} median epoch time)" if hours is not None
                                else "no committed seed to time it)")
                            estimates.append(hours)
                            if m == "gs" and d in searching:
                                train += " with the grid search's choice"
                            elif m == "gs" and finished_search(args.results_dir, args.preset, d, epochs=trial_epochs,
                                                               grid=args.search_grid) is None:
                                searching.add(d)        # the search runs once per data set, for every seed
                                train = (f"keras-tuner grid search first ({trial_epochs} epoch(s) per trial, "
                                         "not priced), then " + train)
                        todo = [train] + [n for n in ([] if args.train_only else names)
                                          if cached_robustness(cell, n, all_settings[n], examples) is None]
                        print(f"[reproduce] would run {d} {m} seed {s}: {', '.join(t for t in todo if t)}", flush=True)
                        continue
                    if need_training:
                        if m == "gs":
                            search = ensure_gs_search(root, args.results_dir, args.preset, d, epochs=trial_epochs,
                                                      grid=args.search_grid, data_dir=args.data_dir,
                                                      verbose=args.verbose)
                            config = gs_config(d, args.preset, s, search)
                        else:
                            config = train_config(d, m, args.preset, s)
                        ensure_trained(path, config, args.data_dir, args.verbose)
                        publish(path, cell)
                    if args.train_only:
                        continue
                    for name in names:
                        ensure_robustness(path, cell, name, all_settings[name], examples, args.data_dir, label=m)
        if args.dry_run:
            timed = [h for h in estimates if h is not None]
            if estimates:
                priced = (f"the {len(timed)} timed from committed seeds: about {sum(timed):.1f} h (training only, "
                          "on the machine that timed them)" if timed else "none has a committed seed to time it")
                print(f"[reproduce] {len(estimates)} training(s) to run; {priced}", flush=True)
            return 0

    write_section(args.report, build_report(args.results_dir, args.preset, datasets), *markers(args.preset))
    write_section(args.report, verdict(args.results_dir, args.preset), *markers(args.preset, "VERDICT"), top=True)
    print(f"[reproduce] wrote {args.report} from {args.results_dir / args.preset}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
