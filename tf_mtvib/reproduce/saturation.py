"""``python -m tf_mtvib.reproduce saturation``: does gradient saturation explain the paper's flat FGSM curves?

The hypothesis (docs/robustness.md, "Why the curves differ"): the paper's FGSM
took the gradient of Keras's cross-entropy on softmax probabilities, clipped
to ``[1e-7, 1 - 1e-7]``; on every image whose float32 ``p_true`` is above the
clip the input gradient is exactly 0 and FGSM never moves it, so the curve
drops at the first eta and then stays at ``S_k`` (:mod:`tf_mtvib.saturation`).

For each committed cell of ``mtl``'s preset (``docs/results/<preset>/<dataset>/<model>-s<seed>/``)
this command

1. finds the trained run (``--root``, the layout ``reproduce mtl`` trains into);
   where its checkpoint is gone and ``--retrain`` is given, retrains it from the
   cell's committed ``config.json`` (resumable: an interrupted one resumes);
2. checks that run's clean accuracy against the committed cell, per task,
   within ``max(the seeds' range, 2 binomial standard errors)``;
3. measures ``S_k`` on the whole test split (mean mode);
4. runs FGSM at the paper's eta (``[0, 1]`` pixels, clipped) with the logits
   loss (summed, as today's protocol, and per task, each task attacked by
   its own loss) and with the clipped loss (per task and summed), in mean
   mode and, for stochastic models, in the sampled mode;
5. applies the mechanism check: the masked (clipped, per-task) accuracy at
   every eta >= 0.1 within 2 binomial standard errors of ``S_k``;

and writes it all to the cell's ``saturation.json`` after each step, so an
interrupted run keeps what it finished. ``--report-only`` renders the tables
(``docs/results/<preset>/saturation.md``) from the committed JSON.

The masked protocol is a diagnostic only: the library's robustness figures
stay the logits loss's (``reproduce mtl``).
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import shutil
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import runs, runtime
from ..evaluate import DEFAULT_EPS
from . import mtl
from .docs import doc_paths
from .paper import TABLES_CSV
from .verdicts import two_se

SATURATION_JSON = "saturation.json"
REPORT = "saturation.md"
#: docs/robustness.md's block (the tables) and docs/RESULTS.md's "Why the curves differ" block
BEGIN = "<!-- BEGIN GENERATED: python -m tf_mtvib.reproduce saturation -->"
END = "<!-- END GENERATED: python -m tf_mtvib.reproduce saturation -->"
WHY_BEGIN = "<!-- BEGIN GENERATED WHY: python -m tf_mtvib.reproduce saturation -->"
WHY_END = "<!-- END GENERATED WHY: python -m tf_mtvib.reproduce saturation -->"

#: The FGSM sweeps: name -> evaluate_robustness options. ``sampled`` ones run on stochastic models only.
SWEEPS = {
    "logits-sum": {"loss": "sum", "mode": "mean"},
    "logits-per_task": {"loss": "per_task", "mode": "mean"},
    "clipped-per_task": {"loss": "clipped_prob_ce:per_task", "mode": "mean"},
    "clipped-sum": {"loss": "clipped_prob_ce", "mode": "mean"},
    "clipped-per_task-sampled": {"loss": "clipped_prob_ce:per_task", "mode": "sampled"},
    "clipped-sum-sampled": {"loss": "clipped_prob_ce", "mode": "sampled"},
}
#: The sweep the mechanism check and the distance to the paper rest on
MASKED = "clipped-per_task"
#: eta from which the masked curve should sit on S_k
PLATEAU_FROM = 0.1
#: a paper curve is a plateau when its cells at eta 0.1-0.3 span at most this many points
PAPER_PLATEAU_SPAN = 3.0
#: The study's compute cap: about 25 h of one-at-a-time training (issue "Why the paper's FGSM curves are flat")
CAP_HOURS = 25
#: Planned seed-0 models (``"<data set>/<model>-s0"`` of the full preset) the study stops short of, and why.
#: The report names them wherever it says what was measured; nothing in it speaks for them.
LEFT_OUT = {
    "multifashion/stl-s0": f"left out for the study's compute cap of about {CAP_HOURS} h of training",
    "multifashion/stvib-s0": f"left out for the study's compute cap of about {CAP_HOURS} h of training",
    "multimnist/stvib-s0": ("its retrain's checkpoint was lost with its machine after epoch 10 of 30, and retraining "
                            "it from scratch to epoch 30 would pass the study's compute cap of about "
                            f"{CAP_HOURS} h of training"),
}


def seeds_range(results_dir: pathlib.Path, preset: str, dataset: str, model: str) -> Dict[str, float]:
    """Per task, max - min of the committed cells' clean accuracy (mean mode) over seeds (0 for one seed)."""
    accs: Dict[str, List[float]] = {}
    for cell in sorted((pathlib.Path(results_dir) / preset / dataset).glob(f"{model}-s*")):
        m = cell / runs.METRICS
        if m.exists():
            for t, v in runs.read_json(m)["test"]["mean"].items():
                accs.setdefault(t, []).append(v)
    return {t: max(v) - min(v) for t, v in accs.items()}


def agreement(ours: Dict[str, float], committed: Dict[str, float], spread: Dict[str, float], n: int,
              tasks: Sequence[str]) -> Dict[str, Any]:
    """Per task: our clean accuracy, the committed cell's, the difference and the tolerance
    ``max(seeds' range, 2 SE)``; ``ok`` when every task is within its tolerance."""
    rows = {}
    for t in tasks:
        tol = max(spread.get(t, 0.0), two_se(committed[t], n))
        diff = ours[t] - committed[t]
        rows[t] = {"ours": ours[t], "committed": committed[t], "diff": diff, "tolerance": tol,
                   "ok": abs(diff) <= tol + 1e-12}
    return {"tasks": rows, "ok": all(r["ok"] for r in rows.values())}


def mechanism_check(sweep: Dict[str, Any], S: Dict[str, float], n: int) -> Dict[str, Any]:
    """Per task: does the masked accuracy at every eta >= 0.1 lie within 2 binomial
    standard errors of ``S_k``? (``max_gap``: the largest |accuracy - S_k|, points.)

    ``excess``: accuracy - S_k at each of those eta. A correct saturated image has an all-zero
    gradient under the masked loss, so FGSM leaves it where it is and it counts in the accuracy at
    every eta; the excess is then the share of images the attack did move and left correct (a
    negative excess would mean saturated images were flipped, which a zero gradient rules out)."""
    eps = sweep["eps"]
    rows = {}
    for t, s in S.items():
        accs = [a for e, a in zip(eps, sweep["accuracy"][t]) if e >= PLATEAU_FROM - 1e-9]
        tol = two_se(s, n)
        gap = max(abs(a - s) for a in accs)
        rows[t] = {"S": s, "accuracy": accs, "tolerance": tol, "max_gap": gap, "pass": gap <= tol + 1e-12}
        rows[t]["excess"] = excess(rows[t])   # stored for readers of the JSON; the report derives it again
    return {"tasks": rows, "pass": all(r["pass"] for r in rows.values()), "from_eta": PLATEAU_FROM}


def excess(row: Dict[str, Any]) -> List[float]:
    """accuracy - S_k at each judged eta of a :func:`mechanism_check` row (derived from its accuracy and S)."""
    return [a - row["S"] for a in row["accuracy"]]


def below_s(row: Dict[str, Any]) -> bool:
    """Whether a task's masked accuracy (a :func:`mechanism_check` row) falls below S_k by more than 2 SE at
    some judged eta: what a zero gradient on every correct saturated image rules out."""
    return min(excess(row)) < -(row["tolerance"] + 1e-12)


def excess_sentence(misses: Sequence[Tuple[str, str, Dict[str, Any]]]) -> str:
    """The one sentence, for the report and RESULTS.md alike, on mechanism-check misses that are all excess:
    ``misses`` as ``(cell, task, row)``; the largest is named."""
    worst = max(misses, key=lambda x: x[2]["max_gap"])
    return (f"Every miss is an excess: the masked accuracy never falls below S_k by more than 2 SE, and the "
            f"images above it are ones the attack moved without flipping them (largest: "
            f"{100 * worst[2]['max_gap']:.1f} points, {worst[0]} {worst[1]}). Those misses say that FGSM "
            "with the masked loss fails on unsaturated images there, not that saturated images moved.")


def mechanism_summary(mech: Sequence[Tuple[str, Dict[str, Any]]]) -> str:
    """One sentence on the mechanism checks of a data set: how many tasks pass, and whether the misses are
    all excess (images the attack moved and left correct) rather than a masked accuracy below S_k."""
    tasks = [(n, t, r) for n, m in mech for t, r in m["tasks"].items()]
    misses = [(n, t, r) for n, t, r in tasks if not r["pass"]]
    below = [(n, t) for n, t, r in tasks if below_s(r)]
    text = f"{len(tasks) - len(misses)} of {len(tasks)} tasks pass."
    if below:
        text += (" Below S_k by more than 2 SE, which a zero gradient should rule out: "
                 + ", ".join(f"{n} {t}" for n, t in below) + ".")
    elif misses:
        text += " " + excess_sentence(misses)
    return text


def paper_plateaus(dataset: str, path=TABLES_CSV) -> Dict[str, Dict[str, Any]]:
    """``{model: {task: {"plateau": bool, "span": points, "level": mean %}}}`` of the
    paper's cells at eta 0.1-0.3 (a plateau spans at most :data:`PAPER_PLATEAU_SPAN`)."""
    from .protocols import paper_curves

    out: Dict[str, Dict[str, Any]] = {}
    for model, by_task in paper_curves(dataset, path).items():
        for task, curve in by_task.items():
            cells = [a for e, a in zip(DEFAULT_EPS, curve) if e >= PLATEAU_FROM - 1e-9]
            span = max(cells) - min(cells)
            out.setdefault(model, {})[task] = {"plateau": span <= PAPER_PLATEAU_SPAN, "span": span,
                                               "level": statistics.fmean(cells)}
    return out


def _file_digest(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _trim(result: Dict[str, Any]) -> Dict[str, Any]:
    keep = ("loss", "mode", "eval", "attack_grad", "eps", "accuracy", "clean", "num_examples", "seconds",
            "zero_gradient", "masking", "space", "clip", "batchnorm")
    return {k: result[k] for k in keep if k in result}


def measure_cell(results_dir: pathlib.Path, root: pathlib.Path, preset: str, dataset: str, model: str, seed: int,
                 *, retrain: bool = False, data_dir=None, sweeps: Sequence[str] = tuple(SWEEPS),
                 measure_at: Sequence[int] = (), log=print) -> Optional[Dict[str, Any]]:
    """Everything this study records for one cell, written to its ``saturation.json``
    step by step; None (and a message) when the run is gone and ``retrain`` is False.
    ``measure_at``: a retrain also records S_k and the sweeps at these epochs
    (``train.py --measure-at``, into the run's ``along.json``, copied into the cell);
    it changes what is measured, not how the model trains."""
    from .. import saturation, train as train_module
    from ..evaluate import evaluate_robustness

    cell = mtl.cell_dir(results_dir, preset, dataset, model, seed)
    if not (cell / runs.CONFIG).exists():
        log(f"[saturation] {cell}: no committed cell; run reproduce mtl first")
        return None
    path = mtl.run_dir(root, preset, dataset, model, seed)
    finished = (path / runs.METRICS).exists() and (path / runs.MODEL).exists()
    retrained = None
    if not finished:
        if not retrain:
            log(f"[saturation] {path}: no finished run (checkpoint gone?); --retrain retrains it from "
                f"{cell / runs.CONFIG}")
            return None
        start = time.time()
        config = runs.read_json(cell / runs.CONFIG)
        if measure_at:
            config["training"]["measure_at"] = sorted(set(int(e) for e in measure_at))
        train_module.ensure_run(config, path, data_dir=data_dir, isolate=True,
                                log=lambda m: log(m.replace("[tf_mtvib]", "[saturation]")))
        retrained = {"seconds": round(time.time() - start, 1)}
    from ..saturation import ALONG_JSON

    if (path / ALONG_JSON).exists():     # S_k along this retraining
        shutil.copyfile(path / ALONG_JSON, cell / ALONG_JSON)
    out_path = cell / SATURATION_JSON
    digest = _file_digest(path / runs.MODEL)
    doc = runs.read_json(out_path) if out_path.exists() else {}
    if doc.get("model_digest") != digest:   # another training: start the record anew
        doc = {"model_digest": digest, "sweeps": {}}
    run = runs.load_run(path)
    if retrained is not None or "run" not in doc:
        doc["run"] = {"retrained_here": retrained is not None, "retrain": retrained,
                      "trained": runs.read_json(path / runs.METRICS).get("train_seconds_this_process"),
                      "machine": runtime.machine(), "measured": time.strftime("%Y-%m-%d")}
    if doc["run"].get("retrained_here") and "epoch_seconds" not in doc["run"] and (path / runs.HISTORY).exists():
        doc["run"].update(_training_seconds(path))
    # the committed cell's model, or another training of its config (a retrain: its test accuracy differs)
    doc["run"]["same_model_as_cell"] = (runs.read_json(path / runs.METRICS)["test"]
                                        == runs.read_json(cell / runs.METRICS)["test"])
    split = run.load_split("test", data_dir)
    n = len(split)
    keras_model = run.model
    tasks = list(keras_model.task_names)

    def save():
        runs.write_json(out_path, doc)

    if "saturation" not in doc:
        doc["saturation"] = saturation.measure(keras_model, split)
        save()
        log(f"[saturation] {dataset}/{model}-s{seed}: S = "
            + ", ".join(f"{t} {100 * v:.1f} %" for t, v in doc["saturation"]["S"].items()))
    for name in sweeps:
        kw = SWEEPS[name]
        if name in doc["sweeps"] or (kw["mode"] == "sampled" and not keras_model.is_stochastic):
            continue
        r = evaluate_robustness(keras_model, split, "fgsm", list(DEFAULT_EPS), verbose=0, seed=0, **kw)
        doc["sweeps"][name] = _trim(r)
        save()
        log(f"[saturation] {dataset}/{model}-s{seed} {name}: "
            + "; ".join(f"{t} " + " ".join(f"{100 * a:.1f}" for a in r["accuracy"][t]) for t in tasks))
    ours = doc["sweeps"]["logits-sum"]["clean"] if "logits-sum" in doc["sweeps"] else None
    if ours is not None:
        committed = runs.read_json(cell / runs.METRICS)["test"]["mean"]
        doc["agreement"] = agreement(ours, committed, seeds_range(results_dir, preset, dataset, model), n, tasks)
    if MASKED in doc["sweeps"]:
        doc["mechanism"] = mechanism_check(doc["sweeps"][MASKED], doc["saturation"]["S"], n)
    save()
    return doc


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------
def collect(results_dir: pathlib.Path, preset: str) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """``{dataset: {"<model>-s<seed>": saturation.json}}`` of every committed record."""
    out: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for dataset in mtl.DATASETS:
        for f in sorted((pathlib.Path(results_dir) / preset / dataset).glob(f"*-s*/{SATURATION_JSON}")):
            out.setdefault(dataset, {})[f.parent.name] = runs.read_json(f)
    return out


def _pct(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f}"


def _model_seed(name: str):
    model, seed = name.rsplit("-s", 1)
    return model, int(seed)


def _order(names):
    return sorted(names, key=lambda n: (mtl.ALL_MODELS.index(_model_seed(n)[0])
                                        if _model_seed(n)[0] in mtl.ALL_MODELS else 99, _model_seed(n)[1]))


def _provenance(run: Dict[str, Any]) -> str:
    """Which model a record measured: the committed cell's, or a retraining of its config."""
    same = run.get("same_model_as_cell")
    if same is None:
        return "retrained by this command" if run.get("retrained_here") else "-"
    return "the cell's" if same else "retrained from the cell's config"


def curves_of(records: Dict[str, Dict[str, Any]], sweep: str) -> Dict[str, Dict[str, List[float]]]:
    """``{model: {task: [accuracy %]}}`` of ``sweep``, seed 0 of each model (the paper's models only)."""
    out = {}
    for name in _order(records):
        model, seed = _model_seed(name)
        r = records[name]["sweeps"].get(sweep)
        if seed == 0 and r is not None and model in mtl.MODELS:
            out[model] = {t: [100 * a for a in r["accuracy"][t]] for t in r["accuracy"] if t != "joint"}
    return out


def render(results_dir: pathlib.Path, preset: str) -> str:
    """The Markdown report of every committed ``saturation.json`` of ``preset``."""
    from .protocols import distances, paper_curves

    data = collect(results_dir, preset)
    lines = [f"# Saturated gradients: S_k and the masked FGSM protocol ({preset} preset)", "",
             f"Generated by `python -m tf_mtvib.reproduce saturation --preset {preset} --report-only` from the "
             f"`{SATURATION_JSON}` files under `docs/results/{preset}/`. S_k: the share of test images, for task k, "
             "with float32 p_true > float32(1 - 1e-7) in mean mode (all of them correct); under a cross-entropy of "
             "clipped probabilities their input gradient is exactly 0. Masked protocol: FGSM with that clipped "
             "loss, each task attacked by its own (per task) or all summed, [0, 1] pixels, clipped; a diagnostic "
             "only. Every figure is on the whole test split of one seed's model unless stated.", ""]
    if not data:
        return "\n".join(lines + ["No record yet.", ""])
    for dataset, records in data.items():
        tasks = None
        lines += [f"### {dataset}", ""]
        head = None
        rows = []
        for name in _order(records):
            d = records[name]
            s = d.get("saturation")
            if not s:
                continue
            tasks = list(s["S"])
            if head is None:
                head = ("| cell | n | " + " | ".join(f"S {t}" for t in tasks) + " | all tasks | "
                        + " | ".join(f"margin p50 {t}" for t in tasks) + " | clean vs committed | model |")
                rows += [head, "|---|---:|" + "---:|" * (2 * len(tasks) + 1) + "---|---|"]
            ag = d.get("agreement")
            agtxt = "-" if not ag else ("within tolerance" if ag["ok"] else "OUTSIDE: " + ", ".join(
                f"{t} {100 * r['diff']:+.1f} (tol {100 * r['tolerance']:.1f})"
                for t, r in ag["tasks"].items() if not r["ok"]))
            rows.append(f"| {name} | {s['n']} | " + " | ".join(_pct(s["S"][t]) for t in tasks)
                        + f" | {_pct(s['all_tasks_saturated'])} | "
                        + " | ".join(f"{s['margin_quantiles'][t]['0.5']:.1f}" for t in tasks)
                        + f" | {agtxt} | {_provenance(d.get('run', {}))} |")
        lines += rows + [""]
        # the sweeps, per cell
        lines += ["Accuracy (%) at eta " + ", ".join(f"{e:g}" for e in DEFAULT_EPS) + " per sweep "
                  "(logits-sum: today's protocol on this model; per_task: each task attacked by its own loss; "
                  "clipped: the masked protocol).", ""]
        for name in _order(records):
            d = records[name]
            if not d.get("sweeps"):
                continue
            lines += [f"**{name}**", "", "| sweep | task | " + " | ".join(f"{e:g}" for e in DEFAULT_EPS)
                      + " | zero-grad share |", "|---|---|" + "---:|" * (len(DEFAULT_EPS) + 1)]
            for sname, r in d["sweeps"].items():
                for t in [k for k in r["accuracy"] if k != "joint"]:
                    z = r.get("masking", {}).get("zero_gradient", {}).get(t)
                    lines.append(f"| {sname} | {t} | " + " | ".join(_pct(a) for a in r["accuracy"][t])
                                 + f" | {_pct(z)} |")
            lines.append("")
        # the mechanism check
        mech = [(n, records[n]["mechanism"]) for n in _order(records) if records[n].get("mechanism")]
        if mech:
            lines += ["**Mechanism check**: the masked per-task accuracy at every eta >= 0.1 within 2 binomial "
                      "standard errors of S_k. The excess (accuracy - S_k, points) is the share of images the "
                      "attack moved and left correct: a correct saturated image has an all-zero gradient under "
                      "this loss and is never moved.", "",
                      "| cell | task | S_k | masked accuracy at 0.1-0.3 | excess at 0.1-0.3 | max gap "
                      "| 2 SE | pass |", "|---|---|---:|---|---|---:|---:|---|"]
            for n, m in mech:
                for t, r in m["tasks"].items():
                    lines.append(f"| {n} | {t} | {_pct(r['S'])} | " + ", ".join(_pct(a) for a in r["accuracy"])
                                 + " | " + ", ".join(f"{100 * x:+.1f}" for x in excess(r))
                                 + f" | {_pct(r['max_gap'])} | {_pct(r['tolerance'])} | "
                                 + ("yes" if r["pass"] else "no") + " |")
            lines += ["", mechanism_summary(mech), ""]
        # against the paper
        plateaus = paper_plateaus(dataset)
        rows = []
        for name in _order(records):
            model, seed = _model_seed(name)
            s = records[name].get("saturation")
            if seed != 0 or not s or model not in plateaus:
                continue
            for t, v in s["S"].items():
                p = plateaus[model][t]
                rows.append(f"| {model} | {t} | {_pct(v)} | {p['level']:.1f} | {p['span']:.1f} | "
                            + (f"{abs(100 * v - p['level']):.1f}" if p["plateau"] else "(no plateau)") + " |")
        if rows:
            lines += ["**S_k against the paper's plateau** (the paper's mean at eta 0.1-0.3; a plateau when those "
                      f"cells span at most {PAPER_PLATEAU_SPAN:g} points). A possible confound: if the authors also "
                      "trained through the clipped loss, their margins stopped growing near 16, while ours, trained "
                      "on logits, keep growing.", "",
                      "| model | task | S_k | paper level | paper span | abs(S_k - level) |",
                      "|---|---|---:|---:|---:|---:|", *rows, ""]
        paper = paper_curves(dataset)
        drows = []
        for sweep in ("logits-sum", "logits-per_task", MASKED, "clipped-sum"):
            curves = curves_of(records, sweep)
            if curves:
                d = distances(curves, {m: paper[m] for m in curves})
                drows.append(f"| {sweep} | {', '.join(curves)} | {d['mad']:.1f} | {d['shape']:.1f} | {d['cells']} |")
        if drows:
            lines += ["**Distance to the paper's cells** (mean absolute difference in points over every model, "
                      "task and eta present; shape: after anchoring each curve at its own clean accuracy, eta > 0).",
                      "", "| sweep | models (seed 0) | distance | shape distance | cells |", "|---|---|---:|---:|---:|",
                      *drows, ""]
    return "\n".join(lines + time_rows(data))


def _training_seconds(path: pathlib.Path) -> Dict[str, float]:
    """The seconds a run spent training, over every process that trained it (a resumed run's too): its
    epochs (``history.json``) and the measurements along training between them (each ``along.json``
    record's ``seconds``), which the epoch times leave out."""
    from ..saturation import ALONG_JSON

    out = {"epoch_seconds": round(sum(r["seconds"] for r in runs.read_history(path)), 1)}
    if (path / ALONG_JSON).exists():
        out["measure_seconds"] = round(sum(r["seconds"] for r in runs.read_json(path / ALONG_JSON)["epochs"].values()), 1)
    return out


def retrain_seconds(run: Dict[str, Any]) -> Tuple[Optional[float], bool]:
    """``(seconds, every process)`` of a retrained cell's ``run`` record: its epochs plus the measurements
    along training, summed over every process (:func:`_training_seconds`); a record written before those
    were kept falls back to the wall time of its last process (``run.retrain.seconds``, else
    ``run.trained``), a lower bound if that retrain was resumed."""
    if "epoch_seconds" in run:
        return run["epoch_seconds"] + run.get("measure_seconds", 0.0), True
    return (run.get("retrain") or {}).get("seconds") or run.get("trained"), False


def time_rows(data: Dict[str, Dict[str, Dict[str, Any]]]) -> List[str]:
    """The hours each model this study retrained took (:func:`retrain_seconds`), with the CPU
    (:func:`tf_mtvib.runtime.cpu_label`), and their total."""
    rows, total, last_only = [], 0.0, False
    for dataset, records in data.items():
        for name in _order(records):
            run = records[name].get("run") or {}
            seconds, every = retrain_seconds(run)
            if not run.get("retrained_here") or not seconds:
                continue
            total += seconds
            last_only |= not every
            rows.append(f"| {dataset}/{name} | {seconds / 3600:.2f}{'' if every else '*'} | "
                        f"{runtime.cpu_label(run.get('machine') or {})} |")
    if not rows:
        return []
    note = (" A starred row predates that count: the wall time of its last process (a lower bound had it been "
            "resumed)." if last_only else "")
    return ["### Time of the retrained models", "",
            "Hours per model retrained by this study: its epochs and the measurements along training, summed "
            "over every process that trained it (a resumed retrain's too)." + note, "",
            "| cell | hours | CPU |", "|---|---:|---|", *rows, f"| total ({len(rows)} models) | {total / 3600:.2f} | |", ""]


def along_records(results_dir: pathlib.Path) -> Dict[str, Dict[str, Any]]:
    """``{"<preset>/<dataset>/<cell>": along.json}`` of every committed ``along.json``
    (``train.py --measure-at``: S_k and the sweeps at fixed epochs)."""
    from ..saturation import ALONG_JSON

    return {str(f.parent.relative_to(results_dir)): runs.read_json(f)
            for f in sorted(pathlib.Path(results_dir).glob(f"*/*/*/{ALONG_JSON}"))}


def along_table(records: Dict[str, Dict[str, Any]]) -> List[str]:
    """S_k along training, and the masked and logits FGSM at eta 0.1-0.3 (mean over those eta), per epoch."""
    lines = []
    paper = {d: paper_plateaus(d) for d in {name.split("/")[1] for name in records}}   # read once
    for name, doc in records.items():
        epochs = sorted(doc["epochs"], key=int)
        tasks = list(doc["epochs"][epochs[0]]["saturation"]["S"])
        lines += [f"**{name}** (S_k, then accuracy (%) averaged over eta 0.1-0.3 under the masked per-task and "
                  f"the logits summed FGSM; {doc['epochs'][epochs[0]]['saturation']['n']} test images)", "",
                  "| epoch | " + " | ".join(f"S {t}" for t in tasks) + " | "
                  + " | ".join(f"masked {t}" for t in tasks) + " | " + " | ".join(f"logits {t}" for t in tasks) + " |",
                  "|---:|" + "---:|" * (3 * len(tasks))]
        for e in epochs:
            r = doc["epochs"][e]
            def plateau(sweep, t):
                sw = r["sweeps"].get(sweep)
                if not sw:
                    return None
                vals = [a for x, a in zip(sw["eps"], sw["accuracy"][t]) if x >= PLATEAU_FROM - 1e-9]
                return statistics.fmean(vals)
            lines.append(f"| {e} | " + " | ".join(_pct(r["saturation"]["S"][t]) for t in tasks) + " | "
                         + " | ".join(_pct(plateau("clipped-per_task", t)) for t in tasks) + " | "
                         + " | ".join(_pct(plateau("logits-sum", t)) for t in tasks) + " |")
        stopped = LEFT_OUT.get(name.split("/", 1)[1]) if name.startswith("full/") else None
        lines += ["", along_verdict(name, doc, paper[name.split("/")[1]])
                  + (f" Training stopped there: {stopped}." if stopped else ""), ""]
        if name.startswith("paper/"):
            lines += against_paper_row(name, doc)
    return lines


def against_paper_row(name: str, doc: Dict[str, Any]) -> List[str]:
    """A paper-budget run at its last epoch beside its model's row of the paper's table (each sweep's
    curve per task, the paper's under it) and each sweep's distance to that row (:func:`distances`)."""
    from .paper import TABLE_NUMBER
    from .protocols import distances, paper_curves

    last = max(doc["epochs"], key=int)
    _, dataset, cell = name.split("/")
    model = cell.rsplit("-s", 1)[0]
    paper = paper_curves(dataset).get(model)
    sweeps = {k: v for k, v in doc["epochs"][last]["sweeps"].items() if v["eps"] == list(DEFAULT_EPS)}
    if not paper or not sweeps:
        return []
    lines = [f"At epoch {last} beside Table {TABLE_NUMBER[dataset]}'s {model.upper()} row (accuracy %, eta "
             + ", ".join(f"{e:g}" for e in DEFAULT_EPS) + f"; {doc['epochs'][last]['saturation']['n']} test images, "
             "one seed):", "", "| task | curve | " + " | ".join(f"{e:g}" for e in DEFAULT_EPS) + " |",
             "|---|---|" + "---:|" * len(DEFAULT_EPS)]
    for t in paper:
        lines.append(f"| {t} | paper | " + " | ".join(f"{a:.1f}" for a in paper[t]) + " |")
        for sweep, r in sweeps.items():
            if t in r["accuracy"]:
                lines.append(f"| {t} | {sweep} | " + " | ".join(_pct(a) for a in r["accuracy"][t]) + " |")
    def distance(r):
        return distances({model: {t: [100 * a for a in r["accuracy"][t]] for t in paper if t in r["accuracy"]}},
                         {model: paper})

    lines += ["", "Distance to that row along training (points; in parentheses the shape distance, after anchoring "
              "each curve at its own clean accuracy; " + f"{distance(next(iter(sweeps.values())))['cells']} cells):",
              "", "| epoch | " + " | ".join(sweeps) + " |", "|---:|" + "---:|" * len(sweeps)]
    for e in sorted(doc["epochs"], key=int):
        got = doc["epochs"][e]["sweeps"]
        cells = [distance(got[k]) if k in got and got[k]["eps"] == list(DEFAULT_EPS) else None for k in sweeps]
        lines.append(f"| {e} | " + " | ".join("-" if d is None else f"{d['mad']:.1f} ({d['shape']:.1f})"
                                             for d in cells) + " |")
    return lines + [""]


def along_verdict(name: str, doc: Dict[str, Any], paper: Dict[str, Any]) -> str:
    """One sentence: S_k at the record's last epoch against the paper's plateau of its model's row
    (``paper``: :func:`paper_plateaus` of the record's data set, read once by the caller)."""
    last = max(doc["epochs"], key=int)
    model = name.rsplit("/", 1)[-1].rsplit("-s", 1)[0]
    plateaus = paper.get(model, {})
    S = doc["epochs"][last]["saturation"]["S"]
    gaps = {t: 100 * v - plateaus[t]["level"] for t, v in S.items() if plateaus.get(t, {}).get("plateau")}
    if not gaps:
        return f"At epoch {last}: the paper's {model.upper()} row has no plateau to compare S_k with."
    below = [t for t, g in gaps.items() if g < 0]
    return (f"At epoch {last}, S_k is below the paper's plateau ({model.upper()}'s row, mean at eta "
            f"{PLATEAU_FROM:g}-0.3) on {len(below)} of {len(gaps)} tasks: "
            + ", ".join(f"{t} {100 * S[t]:.1f} against {plateaus[t]['level']:.1f}" for t in gaps)
            + ". One model, one seed: it says how far this training is from the paper's level, not why.")


def why_section(results_dir: pathlib.Path, preset: str) -> str:
    """docs/RESULTS.md's "Why the curves differ": what the saturation study has measured so far,
    stated from the committed JSON only."""
    data = collect(results_dir, preset)
    cells = [(d, n, r) for d, recs in data.items() for n, r in recs.items() if r.get("saturation")]
    planned = len(default_cells(results_dir, preset))
    lines = ["### Why the curves differ", "",
             f"Generated by `python -m tf_mtvib.reproduce saturation --preset {preset}` from the committed "
             f"`{SATURATION_JSON}` and `along.json` files (tables: docs/robustness.md). The hypothesis: the paper's "
             "FGSM took the gradient of Keras's cross-entropy on clipped softmax probabilities, which is exactly 0 "
             "on every image with float32 p_true above 1 - 1e-7; FGSM never moves those, so its curve drops at the "
             "first eta and then stays at S_k, the share of such images.", ""]
    if not cells:
        return "\n".join(lines + [f"Not measured yet: none of the {planned} seed-0 models has a record.", ""])
    paper = {d: paper_plateaus(d) for d in data}   # the paper's table, read once
    measured = sorted({f"{d}/{n}" for d, n, _ in cells})
    left_out = {c: why for c, why in LEFT_OUT.items() if c not in measured}
    others = planned - len(measured) - len(left_out)
    lines.append(f"Measured: {len(measured)} model(s) ({', '.join(measured)}), of the {planned} seed-0 models "
                 "the study plans"
                 + ("; not measured: " + "; ".join(f"{c} ({why})" for c, why in left_out.items()) if left_out else "")
                 + (f"; {others} other(s) not measured yet" if others > 0 else "")
                 + ". Nothing below speaks for a model it does not measure.")
    lines.append("")
    for d, n, r in cells:
        s = r["saturation"]
        parts = [f"S_k {', '.join(f'{t} {_pct(v)} %' for t, v in s['S'].items())} ({s['n']} test images)"]
        m = r.get("mechanism")
        missed = []
        if m:
            ok = [t for t, x in m["tasks"].items() if x["pass"]]
            parts.append(f"masked per-task FGSM within 2 SE of S_k at every eta >= {PLATEAU_FROM:g}: "
                         f"{len(ok)} of {len(m['tasks'])} tasks")
            missed = [(n, t, x) for t, x in m["tasks"].items() if not x["pass"]]
        sw = r.get("sweeps", {})
        if "clipped-per_task" in sw and "logits-per_task" in sw:
            def mean_plateau(sweep):
                vals = [a for t in s["S"] for x, a in zip(sw[sweep]["eps"], sw[sweep]["accuracy"][t])
                        if x >= PLATEAU_FROM - 1e-9]
                return statistics.fmean(vals)
            parts.append(f"accuracy at eta {PLATEAU_FROM:g}-0.3 averaged over tasks: masked "
                         f"{_pct(mean_plateau('clipped-per_task'))} %, logits per task "
                         f"{_pct(mean_plateau('logits-per_task'))} %")
        model = _model_seed(n)[0]
        plateaus = paper[d].get(model, {})
        gaps = [100 * v - plateaus[t]["level"] for t, v in s["S"].items() if plateaus.get(t, {}).get("plateau")]
        if gaps:
            below = [g for g in gaps if g < 0]
            parts.append(f"S_k against the paper's plateau ({model.upper()}'s row, eta {PLATEAU_FROM:g}-0.3): "
                         + (f"below it on {len(below)} of {len(gaps)} tasks, by {min(-g for g in below):.1f} to "
                            f"{max(-g for g in below):.1f} points" if below else "at or above it on every task"))
        ag = r.get("agreement")
        if ag is not None:
            parts.append("clean accuracy " + ("within" if ag["ok"] else "OUTSIDE") + " the committed cell's tolerance")
        lines.append(f"- **{d}/{n}**: " + "; ".join(parts) + "."
                     + (" " + excess_sentence(missed) if missed and not any(below_s(x) for *_, x in missed) else ""))
    lines.append("")
    lines += tally(cells, paper)
    lines += ["What this says so far: where the masked per-task curve sits on S_k from the first eta, the "
              "mechanism gives the paper's shape (a drop, then a flat line); whether it also gives the paper's "
              "level depends on S_k reaching the paper's plateau, which the comparison above states per model. "
              "A model trained at this preset's budget is not the paper's: S_k along training and at the "
              "paper's budget (below) is the test of the rest.", ""]
    along = along_records(results_dir)
    if along:
        lines += ["Along training (`train.py --measure-at`):", ""] + along_table(along)
    else:
        lines += ["S_k along training and at the paper's budget (200 epochs at Adam 1e-4): not measured yet.", ""]
    return "\n".join(lines)


def tally(cells: Sequence[Tuple[str, str, Dict[str, Any]]], paper: Dict[str, Dict[str, Any]]) -> List[str]:
    """Per data set, over the measured seed-0 models' tasks: is the masked curve flat where the paper's is
    (both spanning at most :data:`PAPER_PLATEAU_SPAN` points at eta >= 0.1, or both more), and, where the
    paper's is flat, does S_k reach its level (within 2 binomial SE)? The hypothesis explains a task when the
    paper's curve is flat (its signature is a flat line), the masked curve too, and S_k is at the paper's
    level. ``cells``: ``(data set, cell, saturation.json)``; ``paper``: :func:`paper_plateaus` per data set,
    read once by the caller."""
    by_dataset: Dict[str, List[Dict[str, Any]]] = {}
    for d, n, r in cells:
        model, seed = _model_seed(n)
        sweep = r.get("sweeps", {}).get(MASKED)
        plateaus = paper[d].get(model)
        if seed != 0 or not sweep or not plateaus:
            continue
        for t, S in r["saturation"]["S"].items():
            ours = [100 * a for e, a in zip(sweep["eps"], sweep["accuracy"][t]) if e >= PLATEAU_FROM - 1e-9]
            p = plateaus[t]
            flat = max(ours) - min(ours) <= PAPER_PLATEAU_SPAN + 1e-9
            level = p["plateau"] and abs(100 * S - p["level"]) <= 100 * two_se(S, r["saturation"]["n"]) + 1e-9
            by_dataset.setdefault(d, []).append({"shape": flat == p["plateau"], "level": level, "flat": flat,
                                                 "paper_flat": p["plateau"], "gap": 100 * S - p["level"],
                                                 "span": max(ours) - min(ours), "paper_span": p["span"]})
    if not by_dataset:
        return []
    lines = ["**Tally** (seed 0, the models measured so far; a curve is flat when it spans at most "
             f"{PAPER_PLATEAU_SPAN:g} points at eta {PLATEAU_FROM:g}-0.3; the hypothesis explains a task when the "
             "paper's curve and the masked one are both flat and S_k is within 2 binomial SE of the paper's "
             "level):", ""]
    explained = total = 0
    for d, rows in by_dataset.items():
        n = len(rows)
        ok = sum(r["paper_flat"] and r["flat"] and r["level"] for r in rows)
        text = (f"- **{d}** ({n} tasks): the masked curve is flat on {sum(r['flat'] for r in rows)} of {n} "
                f"(span {min(r['span'] for r in rows):.1f}-{max(r['span'] for r in rows):.1f} points), the paper's "
                f"on {sum(r['paper_flat'] for r in rows)} of {n} (span {min(r['paper_span'] for r in rows):.1f}-"
                f"{max(r['paper_span'] for r in rows):.1f}); the shapes agree on {sum(r['shape'] for r in rows)} "
                f"of {n}.")
        flat_paper = [r for r in rows if r["paper_flat"]]
        if flat_paper:
            below = [r for r in flat_paper if r["gap"] < 0]
            text += (f" Where the paper's is flat, S_k reaches its level on {sum(r['level'] for r in flat_paper)} "
                     f"of {len(flat_paper)}" + (f" (below it on {len(below)}, by {min(-r['gap'] for r in below):.1f}"
                                                f"-{max(-r['gap'] for r in below):.1f} points)" if below else "")
                     + ".")
        text += f" Explained: {ok} of {n}."
        lines.append(text)
        explained, total = explained + ok, total + n
    lines += ["", f"So far the saturated-gradient hypothesis explains the paper's curve on {explained} of {total} "
              "measured tasks" + (": it does not account for the paper's curves on the models measured." if not
                                  explained else ".") + " One seed per model.", ""]
    return lines


def write_docs(results_dir: pathlib.Path, preset: str, robustness: pathlib.Path, results_md: pathlib.Path) -> None:
    """Fill docs/robustness.md's block (:func:`render`) and docs/RESULTS.md's "Why the curves
    differ" block (:func:`why_section`) from the committed JSON."""
    from .docs import write_section

    if robustness.exists():
        write_section(robustness, render(results_dir, preset).split("\n", 2)[2].strip("\n"), BEGIN, END)
    if results_md.exists():
        write_section(results_md, why_section(results_dir, preset), WHY_BEGIN, WHY_END)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_mtvib.reproduce saturation",
                                description="S_k and the masked FGSM protocol on mtl's trained runs.")
    p.add_argument("--preset", default="full")
    p.add_argument("--cells", default=None,
                   help="comma-separated DATASET/MODEL-sSEED, e.g. mtfl/gs-s0,mtfl/stl-s0 "
                        "(default: seed 0 of every committed cell, MTFL first)")
    p.add_argument("--retrain", action="store_true",
                   help="retrain a cell whose run is gone, from its committed config.json")
    p.add_argument("--measure-at", default="", metavar="E1,E2,...",
                   help="with --retrain: also record S_k and the sweeps at these epochs (along.json), e.g. 1,3,10,30")
    p.add_argument("--sweeps", default=",".join(SWEEPS), help="comma-separated subset of " + ", ".join(SWEEPS))
    p.add_argument("--root", type=pathlib.Path, default=None, help="where mtl's runs are (default: its own)")
    p.add_argument("--results-dir", type=pathlib.Path, default=None,
                   help="the committed results (default: docs/results of the checkout)")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--robustness-doc", type=pathlib.Path, default=None,
                   help="default: docs/robustness.md of the checkout")
    p.add_argument("--report", type=pathlib.Path, default=None,
                   help="the page whose 'Why the curves differ' block is filled (default: docs/RESULTS.md of the checkout)")
    p.add_argument("--data-dir", type=pathlib.Path)
    return p


def default_cells(results_dir: pathlib.Path, preset: str) -> List[str]:
    order = ("mtfl", "multimnist", "multifashion")
    out = []
    for dataset in order:
        for model in mtl.MODELS:
            if (mtl.cell_dir(results_dir, preset, dataset, model, 0) / runs.CONFIG).exists():
                out.append(f"{dataset}/{model}-s0")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    doc_paths(parser, args, {"results_dir": "docs/results", "robustness_doc": "docs/robustness.md",
                             "report": "docs/RESULTS.md"})
    sweeps = [s for s in args.sweeps.split(",") if s]
    bad = [s for s in sweeps if s not in SWEEPS]
    if bad:
        make_parser().error(f"unknown sweep(s) {', '.join(bad)}; choose from {', '.join(SWEEPS)}")
    report = args.results_dir / args.preset / REPORT
    if not args.report_only:
        cells = args.cells.split(",") if args.cells else default_cells(args.results_dir, args.preset)
        root = args.root or mtl.default_root()
        for item in cells:
            dataset, name = item.split("/")
            model, seed = _model_seed(name)
            measure_cell(args.results_dir, root, args.preset, dataset, model, seed, retrain=args.retrain,
                         data_dir=args.data_dir, sweeps=sweeps, log=lambda m: print(m, flush=True),
                         measure_at=[int(e) for e in args.measure_at.split(",") if e.strip()])
            report.write_text(render(args.results_dir, args.preset) + "\n")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(args.results_dir, args.preset) + "\n")
    write_docs(args.results_dir, args.preset, args.robustness_doc, args.report)
    print(f"wrote {report}, {args.robustness_doc} and {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
