"""``python -m tf_mtvib.reproduce protocols``: which FGSM protocol gives the paper's curves?

The paper's FGSM curves (Tables III-V) drop sharply at eta 0.05 and then
stay nearly flat up to 0.3, for deterministic and stochastic models alike;
ordinary FGSM on [0, 1] pixels gives a steady decay instead. The paper does
not state its pixel range, normalisation, clipping, attack loss or how z is
used. This study measures which of those choices reproduces its numbers.

On the runs that ``python -m tf_mtvib.reproduce mtl --preset P`` trained
(``--root``, same layout), for a seeded subset of each run's test images
(``--examples``, ``--subset-seed``; ``Split.sample``, stratified), it runs FGSM at the paper's eta under a
grid of protocols (:func:`protocol_grid`; each protocol is a set of
:func:`tf_mtvib.evaluate.evaluate_robustness` options: ``space``, ``clip``,
``loss``, ``mode``, ``batchnorm``) and reports, per data set and protocol:

* the curve shape: the drop from eta 0 to 0.05 and the slope from 0.05 to
  0.3 (points per 0.1 eta), averaged over models and tasks, beside the paper's;
* the distance to the paper: the mean absolute difference (points) over the
  cells of Tables III-V for that data set (every model present, task and
  eta), and the same after anchoring each curve at its own clean accuracy
  (the shape distance, blind to a clean-accuracy gap);
* the closest protocol, and by how much; a protocol "comes close" when its
  distance is at most :data:`CLOSE` points;
* the fraction of images whose input gradient is exactly zero under each
  attack loss (today's protocol otherwise), the saturation hypothesis;
* the masking check (#16 item 3): on the same images, FGSM, PGD with random
  restarts and random-sign perturbations of the same L-inf size, and a verdict
  by the rule in :func:`masking_verdict`.

Outputs: ``<results-dir>/<preset>/protocols/protocols.json`` (everything),
``protocols.md`` (the tables) and ``<dataset>.png`` (the paper's curve, ours
under today's protocol and under the closest protocol, for the first task,
one panel per model); and the generated block of ``docs/robustness.md``
(between its BEGIN/END markers), rendered from the JSON. Each run's result
per protocol is cached in ``<run>/protocols/``, so a rerun only computes
what changed.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import pathlib
import statistics
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import runs
from ..datasets.spec import get_spec
from ..evaluate import DEFAULT_EPS
from . import mtl
from . import cache
from .docs import doc_paths, write_section
from .paper import TABLES_CSV, load_paper_tables, paper_value

BEGIN = "<!-- BEGIN GENERATED: python -m tf_mtvib.reproduce protocols -->"
END = "<!-- END GENERATED: python -m tf_mtvib.reproduce protocols -->"
#: The settings a study's data sets share: a data set studied under other settings is not merged into it.
SETTINGS = ("preset", "seed", "subset_seed", "examples", "eps", "masking", "grid")


def markers(preset: str) -> Tuple[str, str]:
    """The generated block of ``preset``'s study in the document: the ``cpu`` preset's is :data:`BEGIN` /
    :data:`END` (the block that came first); every other preset has its own, so that the studies stand side
    by side."""
    if preset == "cpu":
        return BEGIN, END
    return (BEGIN.replace(" -->", f" --preset {preset} -->"), END.replace(" -->", f" --preset {preset} -->"))


def same_settings(previous: Optional[Dict[str, Any]], doc: Dict[str, Any]) -> bool:
    """Whether a committed study (``previous``) ran under ``doc``'s :data:`SETTINGS`, so that its parts can
    stand beside ``doc``'s."""
    return previous is not None and all(previous.get(k) == doc.get(k) for k in SETTINGS)


def merged(previous: Optional[Dict[str, Any]], doc: Dict[str, Any]) -> Dict[str, Any]:
    """``doc`` with the data sets of ``previous`` (the committed study of the same preset) that it did not
    study, when both ran under the same :data:`SETTINGS`: a study can grow one data set at a time, as
    the models it needs are trained, without redoing or dropping the others."""
    out = dict(doc, datasets=dict(doc["datasets"]))
    if same_settings(previous, doc):
        for name, result in previous.get("datasets", {}).items():
            out["datasets"].setdefault(name, result)
    ordered = mtl.in_order(out["datasets"].items(), mtl.DATASETS, key=lambda kv: kv[0])
    out["datasets"] = dict(ordered)
    out["examples_text"] = "/".join(str(r["num_examples"]) for _, r in ordered)
    return out

#: a protocol "comes close" to the paper when its mean absolute difference is at most this many points
CLOSE = 5.0

#: today's protocol: the defaults of evaluate_robustness
TODAY = {"space": "unit", "clip": True, "loss": "sum", "mode": "mean", "batchnorm": "inference"}
#: every level of every option
LEVELS = {
    "space": ("unit", "standardized", "pixel255"),
    "clip": (True, False),
    "loss": ("sum", "training", "clipped_prob_ce"),
    "mode": ("mean", "sampled", "eot"),
    "batchnorm": ("inference", "batch"),
}
LOSS_LEVELS = LEVELS["loss"]
SATURATION_LOSS = "clipped_prob_ce"


# --------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------
def protocol_name(protocol: Dict[str, Any]) -> str:
    """``today`` or the options that differ from it, e.g. ``loss=clipped_prob_ce+clip=off``."""
    parts = []
    for key in LEVELS:
        value = protocol[key]
        if value != TODAY[key]:
            parts.append(f"{key}={'on' if value is True else 'off' if value is False else value}")
    return "+".join(parts) or "today"


def protocol_grid(kind: str = "default") -> List[Dict[str, Any]]:
    """The protocols to run.

    ``default``: today's protocol; every option changed on its own (one factor
    at a time); and the saturation loss (``clipped_prob_ce``, the leading
    explanation of a drop-then-plateau curve) crossed with every other
    option's alternatives. ``one-factor``: the first two parts. ``full``: every
    combination (108 protocols).
    """
    if kind == "full":
        return [dict(zip(LEVELS, values)) for values in itertools.product(*LEVELS.values())]
    if kind not in ("default", "one-factor"):
        raise ValueError(f"unknown grid {kind!r}; choose default, one-factor or full")
    grid = [dict(TODAY)]
    for key, levels in LEVELS.items():
        grid += [{**TODAY, key: v} for v in levels if v != TODAY[key]]
    if kind == "default":
        for key, levels in LEVELS.items():
            if key != "loss":
                grid += [{**TODAY, "loss": SATURATION_LOSS, key: v} for v in levels if v != TODAY[key]]
    return grid


def effective(protocol: Dict[str, Any], stochastic: bool) -> Dict[str, Any]:
    """The protocol as it acts on a model: without a posterior every mode is the mean mode."""
    return protocol if stochastic else {**protocol, "mode": "mean"}


def parse_protocol(name: str) -> Dict[str, Any]:
    """Inverse of :func:`protocol_name`."""
    protocol = dict(TODAY)
    if name == "today":
        return protocol
    for part in name.split("+"):
        key, _, value = part.partition("=")
        if key not in LEVELS:
            raise ValueError(f"unknown option {key!r} in protocol {name!r}; options: {', '.join(LEVELS)}")
        parsed = {"on": True, "off": False}.get(value, value) if key == "clip" else value
        if parsed not in LEVELS[key]:
            raise ValueError(f"unknown {key} {value!r} in protocol {name!r}")
        protocol[key] = parsed
    return protocol


# --------------------------------------------------------------------------
# The paper's numbers
# --------------------------------------------------------------------------
def paper_curves(dataset: str, path=TABLES_CSV) -> Dict[str, Dict[str, List[float]]]:
    """The paper's curves of ``dataset`` (:mod:`tf_mtvib.reproduce.paper`, Tables III-V):
    ``{model: {task: [accuracy % at each eta of DEFAULT_EPS]}}``."""
    tables = load_paper_tables(path)
    return {m: {t: [paper_value(tables, dataset, t, e, m) for e in DEFAULT_EPS] for t in get_spec(dataset).task_names}
            for m in mtl.MODELS}


# --------------------------------------------------------------------------
# Curve shape, distance, verdicts
# --------------------------------------------------------------------------
def _at(curve: Sequence[float], eps: Sequence[float], e: float) -> float:
    return curve[[round(x, 6) for x in eps].index(round(e, 6))]


def curve_shape(curve: Sequence[float], eps: Sequence[float] = DEFAULT_EPS) -> Dict[str, float]:
    """``drop``: accuracy at 0 minus at 0.05; ``slope``: change from 0.05 to 0.3 per 0.1 eta
    (negative when accuracy falls); in the units of ``curve``."""
    a0, a5, a30 = _at(curve, eps, 0.0), _at(curve, eps, 0.05), _at(curve, eps, 0.3)
    return {"drop": a0 - a5, "slope": (a30 - a5) / 2.5}


def distances(ours: Dict[str, Dict[str, List[float]]], paper: Dict[str, Dict[str, List[float]]]) -> Dict[str, float]:
    """Mean absolute difference (points) over every model x task x eta cell both hold
    (``mad``), and over eta > 0 after subtracting each curve's clean accuracy (``shape``)."""
    cells, anchored = [], []
    for model, by_task in ours.items():
        for task, curve in by_task.items():
            ref = paper[model][task]
            cells += [abs(a - b) for a, b in zip(curve, ref)]
            anchored += [abs((a - curve[0]) - (b - ref[0])) for a, b in zip(curve[1:], ref[1:])]
    return {"mad": statistics.fmean(cells), "shape": statistics.fmean(anchored), "cells": len(cells)}


def mean_shape(curves: Dict[str, Dict[str, List[float]]]) -> Dict[str, float]:
    shapes = [curve_shape(c) for by_task in curves.values() for c in by_task.values()]
    return {k: statistics.fmean(s[k] for s in shapes) for k in ("drop", "slope")}


def mean_task_curve(result: Dict[str, Any]) -> List[float]:
    """Per eps, the mean over tasks of the task accuracies (the sum loss's objective)."""
    return [statistics.fmean(result["accuracy"][t][i] for t in result["tasks"]) for i in range(len(result["eps"]))]


def masking_verdict(fgsm: Dict[str, Any], pgd: Dict[str, Any], rand: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, Any]:
    """:func:`masking_rule` on the mean of the task accuracies at each eps (:func:`mean_task_curve`) of three
    sweeps on the same images; ``rand`` (the random-sign control) may be missing."""
    return masking_rule(fgsm["eps"], fgsm["num_examples"], mean_task_curve(fgsm), mean_task_curve(pgd),
                        mean_task_curve(rand) if rand is not None else None)


def masking_rule(eps: Sequence[float], n: int, f: Sequence[float], p: Sequence[float],
                 r: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """The masking rule on accuracy curves over ``eps`` (fractions of 1, on the same ``n`` images): FGSM
    ``f``, PGD with restarts ``p`` and the random-sign control ``r`` (``None`` when it was not run).

    With ``m(eps) = 2 * sqrt(p (1 - p) / n)`` (two binomial standard errors of the
    FGSM accuracy ``p`` on ``n`` images, at least ``1 / n``):

    * (a) random sign below FGSM by more than ``m``: a direction that ignores the
      model beats the gradient's, so the gradient misleads (``random_below_fgsm`` is
      ``None`` when ``r`` is missing: not checked);
    * (b) PGD with restarts above FGSM by more than ``m``: iterating the gradient
      does worse than one step;
    * (c) FGSM accuracy rises with eps by more than ``m`` between neighbours.

    Verdict: ``masking`` if (a) or (b) holds at some eps; ``overshoot`` if only
    (c) holds and PGD does not rise with eps (the single step overshoots,
    the gradient is fine); ``none`` otherwise.
    """
    margin = [max(2.0 * math.sqrt(a * (1.0 - a) / n), 1.0 / n) for a in f]
    a = None if r is None else [e for i, e in enumerate(eps) if e > 0 and r[i] < f[i] - margin[i]]
    b = [e for i, e in enumerate(eps) if e > 0 and p[i] > f[i] + margin[i]]
    c = [eps[i] for i in range(2, len(eps)) if f[i] > f[i - 1] + margin[i]]
    pgd_rises = [eps[i] for i in range(2, len(eps)) if p[i] > p[i - 1] + margin[i]]
    verdict = "masking" if a or b else "overshoot" if c and not pgd_rises else "none"
    return {"verdict": verdict, "random_below_fgsm": a, "pgd_above_fgsm": b, "fgsm_rises": c,
            "pgd_rises": pgd_rises, "fgsm": list(f), "pgd": list(p), "random_sign": None if r is None else list(r),
            "margin": margin}


# --------------------------------------------------------------------------
# Running (cached per run and protocol)
# --------------------------------------------------------------------------
def study_subset(run: "runs.Run", examples: Optional[int], seed: int, data_dir=None):
    """The run's test split (:meth:`Run.load_split`: its data options and ``max_test``
    cap), then a seeded random subset of ``examples`` images, stratified on the labels
    (:meth:`Split.sample`; all of them when ``examples`` is None or larger)."""
    return run.load_split("test", data_dir).sample(examples, seed=seed)


def _fingerprint(split) -> str:
    h = hashlib.sha1(np.ascontiguousarray(split.images).tobytes())
    for t in sorted(split.labels):
        h.update(np.ascontiguousarray(split.labels[t]).tobytes())
    return h.hexdigest()[:12]


class RunCache:
    """One run: its model, test subset and input statistics loaded once; results cached on disk."""

    def __init__(self, path: pathlib.Path, examples: Optional[int], subset_seed: int, data_dir=None):
        self.path = pathlib.Path(path)
        self.run = runs.load_run(self.path)
        self.examples, self.subset_seed, self.data_dir = examples, subset_seed, data_dir
        self._split = self._stats = None
        self.computed = 0

    @property
    def split(self):
        if self._split is None:
            self._split = study_subset(self.run, self.examples, self.subset_seed, self.data_dir)
        return self._split

    def stats(self):
        from ..evaluate import run_input_statistics

        if self._stats is None:
            self._stats = run_input_statistics(self.run, self.data_dir)
        return self._stats

    def result(self, name: str, kwargs: Dict[str, Any], images: Optional[int] = None) -> Dict[str, Any]:
        """evaluate_robustness(**kwargs) on the subset (or ``images`` of it, :meth:`Split.sample`),
        cached as ``protocols/<name>.json``."""
        from ..evaluate import evaluate_robustness

        key = {"kwargs": kwargs, "examples": self.examples, "subset_seed": self.subset_seed, "images": images,
               "eps": list(DEFAULT_EPS), "model_mtime": (self.path / runs.MODEL).stat().st_mtime_ns}
        path = self.path / "protocols" / f"{name}.json"
        hit = cache.lookup(path, key)
        if hit is not None:
            return hit
        split = self.split.sample(images, seed=self.subset_seed)   # the masking check: a subset of the subset
        extra = {"input_stats": self.stats()} if kwargs.get("space") == "standardized" else {}
        print(f"[protocols] {self.path}: {name}", flush=True)
        result = evaluate_robustness(self.run.model, split, eps_list=DEFAULT_EPS, verbose=0, **kwargs, **extra)
        result["test_set"] = _fingerprint(split)
        cache.store(path, key, result)
        self.computed += 1
        return result


def _curves(results: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, List[float]]]:
    """{model: {task: [accuracy % per eps]}}."""
    return {m: {t: [100.0 * a for a in r["accuracy"][t]] for t in r["tasks"]} for m, r in results.items()}


def model_record(cell: RunCache, grid: List[Dict[str, Any]], masking: Dict[str, Any]) -> Dict[str, Any]:
    """One model's part of a data set's study, measured on its run: its FGSM curves and zero-gradient
    shares under every protocol of ``grid``, its zero-gradient share under each attack loss, and its masking
    check (FGSM, PGD with restarts, random sign on ``masking['examples']`` images)."""
    curves, zero_by_protocol = {}, {}
    for protocol in grid:
        eff = effective(protocol, cell.run.model.is_stochastic)
        r = cell.result(f"fgsm-{protocol_name(eff)}", {"attack": "fgsm", **eff})
        curves[protocol_name(protocol)] = _curves({"m": r})["m"]
        zero_by_protocol[protocol_name(protocol)] = r.get("zero_gradient")
    by_loss = {}
    for loss in LOSS_LEVELS:
        r = cell.result(f"fgsm-{protocol_name({**TODAY, 'loss': loss})}", {"attack": "fgsm", **TODAY, "loss": loss})
        by_loss[loss] = r["zero_gradient"]
    n_mask = masking["examples"]
    f = cell.result(f"mask-fgsm-n{n_mask}", {"attack": "fgsm", **TODAY}, images=n_mask)
    p = cell.result(f"mask-pgd{masking['steps']}-r{masking['restarts']}-n{n_mask}",
                    {"attack": "pgd", "steps": masking["steps"], "restarts": masking["restarts"], **TODAY},
                    images=n_mask)
    rs = cell.result(f"mask-random-d{masking['draws']}-n{n_mask}",
                     {"attack": "random_sign", "restarts": masking["draws"], **TODAY}, images=n_mask)
    check = {"num_examples": f["num_examples"], **masking_verdict(f, p, rs),
             "accuracy": {"fgsm": f["accuracy"], "pgd": p["accuracy"], "random_sign": rs["accuracy"]}}
    return {"curves": curves, "zero_by_protocol": zero_by_protocol, "zero_gradient": by_loss, "masking": check,
            "num_examples": len(cell.split), "test_set": _fingerprint(cell.split)}


def carried_record(entry: Dict[str, Any], model: str) -> Dict[str, Any]:
    """``model``'s part of a data set's study read back from a committed study of that data set (``entry``,
    run under the same settings): what :func:`model_record` measured when its run still existed."""
    return {"curves": {n: p["curves"][model] for n, p in entry["protocols"].items()},
            "zero_by_protocol": {n: p["zero_gradient"][model] for n, p in entry["protocols"].items()},
            "zero_gradient": entry["zero_gradient"][model], "masking": entry["masking"][model],
            "num_examples": entry["num_examples"], "test_set": entry.get("test_set")}


def study_dataset(dataset: str, records: Dict[str, Dict[str, Any]], grid: List[Dict[str, Any]],
                  paper: Dict[str, Dict[str, List[float]]], carried: Sequence[str] = ()) -> Dict[str, Any]:
    """Everything the study reports for one data set (JSON-able), from each model's record
    (:func:`model_record`, or :func:`carried_record` for the models in ``carried``, whose runs are gone)."""
    sizes = {r["num_examples"] for r in records.values()}
    if len(sizes) != 1:
        raise ValueError(f"{dataset}: the models were studied on different numbers of images ({sorted(sizes)})")
    # the same images for every model: a part committed before the fingerprint was kept has none to compare
    test_sets = {r.get("test_set") for r in records.values()} - {None}
    if len(test_sets) > 1:
        raise ValueError(f"{dataset}: the models were studied on different images (test-subset fingerprints "
                         f"{', '.join(sorted(test_sets))})")
    models = [m for m, _ in mtl.in_order(records.items(), mtl.ALL_MODELS, key=lambda kv: kv[0])]
    protocols: Dict[str, Any] = {}
    for protocol in grid:
        name = protocol_name(protocol)
        curves = {m: records[m]["curves"][name] for m in models}
        protocols[name] = {
            "protocol": protocol,
            "shape": mean_shape(curves),
            "distance": distances(curves, paper),
            "curves": curves,
            "zero_gradient": {m: records[m]["zero_by_protocol"][name] for m in models},
        }
    today = protocols["today"]["distance"]
    ranked = sorted(protocols, key=lambda n: protocols[n]["distance"]["mad"])
    by_shape = sorted(protocols, key=lambda n: protocols[n]["distance"]["shape"])
    best = ranked[0]
    return {
        "dataset": dataset,
        "models": models,
        "carried": [m for m in models if m in carried],
        "tasks": list(get_spec(dataset).task_names),
        "num_examples": sizes.pop(),
        "test_set": test_sets.pop() if test_sets else None,
        "paper": {m: paper[m] for m in models},
        "paper_shape": mean_shape({m: paper[m] for m in models}),
        "protocols": protocols,
        "ranking": ranked,
        "ranking_by_shape": by_shape,
        "closest": {"protocol": best, "mad": protocols[best]["distance"]["mad"], "today_mad": today["mad"],
                    "gain": today["mad"] - protocols[best]["distance"]["mad"],
                    "comes_close": protocols[best]["distance"]["mad"] <= CLOSE},
        "closest_shape": {"protocol": by_shape[0], "shape": protocols[by_shape[0]]["distance"]["shape"],
                          "today_shape": today["shape"]},
        "zero_gradient": {m: records[m]["zero_gradient"] for m in models},
        "masking": {m: records[m]["masking"] for m in models},
    }


# --------------------------------------------------------------------------
# Report: Markdown (from the JSON only) and plots
# --------------------------------------------------------------------------
def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}"


def _model_order(per_model: Dict[str, Any]):
    """``per_model``'s items in the paper's model order (the JSON keeps its keys sorted)."""
    return mtl.in_order(per_model.items(), mtl.ALL_MODELS, key=lambda kv: kv[0])


def render_markdown(doc: Dict[str, Any]) -> str:
    """The study's tables and conclusions, from its JSON alone."""
    lines = [f"Generated by `python -m tf_mtvib.reproduce protocols --preset {doc['preset']}` from "
             f"`{doc['json']}`. Runs: the `{doc['preset']}` preset's models (seed {doc['seed']}). "
             f"FGSM at eta {', '.join(f'{e:g}' for e in doc['eps'])} on a seeded random subset "
             f"(seed {doc['subset_seed']}, stratified on the labels) of {doc['examples_text']} test images per data "
             f"set; the masking check on {doc['masking']['examples']} of them (drawn the same way). Distances in accuracy points against the paper's "
             f"Tables III-V (the cells of the models present); a protocol comes close at a distance of at most "
             f"{CLOSE:g} points."]
    absent = [d for d in mtl.DATASETS if d not in doc["datasets"]]
    if absent:
        lines[-1] += (f" Not studied yet at this preset: {', '.join(absent)}; nothing here speaks for "
                      f"{'it' if len(absent) == 1 else 'them'}.")
    lines.append("")
    for _, d in mtl.in_order(doc["datasets"].items(), mtl.DATASETS, key=lambda kv: kv[0]):
        c, cs = d["closest"], d["closest_shape"]
        lines += [f"### {d['dataset']} ({', '.join(d['models'])}; {d['num_examples']} images)", ""]
        if d.get("carried"):
            lines += [f"{', '.join(d['carried']).upper()}: measured by an earlier run of this study under the same "
                      f"settings, on the same images; {'its run is' if len(d['carried']) == 1 else 'their runs are'}"
                      f" gone, so {'its part is' if len(d['carried']) == 1 else 'their parts are'} carried "
                      f"from the committed JSON.", ""]
        if c["comes_close"]:
            lines.append(f"Closest protocol: **{c['protocol']}**, {c['mad']:.1f} points from the paper "
                         f"(today's protocol: {c['today_mad']:.1f}, {c['gain']:.1f} points closer).")
        else:
            lines.append(f"No protocol comes close: the closest, **{c['protocol']}**, is {c['mad']:.1f} points from "
                         f"the paper (today's protocol: {c['today_mad']:.1f}).")
        lines.append(f"Closest in shape (curves anchored at their clean accuracy): **{cs['protocol']}**, "
                     f"{cs['shape']:.1f} points (today: {cs['today_shape']:.1f}). Paper: drop at 0.05 "
                     f"{d['paper_shape']['drop']:.1f} points, slope 0.05->0.3 {d['paper_shape']['slope']:.1f} "
                     f"points per 0.1 eta.")
        lines += ["", "| protocol | drop at 0.05 | slope 0.05->0.3 (per 0.1) | distance | shape distance |",
                  "|---|---:|---:|---:|---:|",
                  f"| paper | {d['paper_shape']['drop']:.1f} | {d['paper_shape']['slope']:.1f} | - | - |"]
        for name in d["ranking"]:
            p = d["protocols"][name]
            lines.append(f"| {name} | {p['shape']['drop']:.1f} | {p['shape']['slope']:.1f} | "
                         f"{p['distance']['mad']:.1f} | {p['distance']['shape']:.1f} |")
        lines += ["", "Images whose input gradient is exactly zero (%), today's protocol with each attack loss:", "",
                  "| model | " + " | ".join(LOSS_LEVELS) + " |", "|---|" + "---:|" * len(LOSS_LEVELS)]
        for model, by_loss in _model_order(d["zero_gradient"]):
            lines.append(f"| {model} | " + " | ".join(_pct(by_loss[l]) for l in LOSS_LEVELS) + " |")
        m = doc["masking"]
        lines += ["", f"Masking check (today's protocol; mean of the task accuracies, %): FGSM, PGD ({m['steps']} "
                  f"steps, worst of {m['restarts']} random restarts), random sign (worst of {m['draws']} draws).", "",
                  "| model | attack | " + " | ".join(f"eta={e:g}" for e in doc["eps"]) + " | verdict |",
                  "|---|---|" + "---:|" * (len(doc["eps"]) + 1)]
        for model, chk in _model_order(d["masking"]):
            for key, label in (("fgsm", "FGSM"), ("pgd", "PGD"), ("random_sign", "random sign")):
                verdict = chk["verdict"] if key == "fgsm" else ""
                lines.append(f"| {model} | {label} | " + " | ".join(_pct(a) for a in chk[key]) + f" | {verdict} |")
        lines += ["", f"![{d['dataset']}]({d['plot']})", ""]
    lines += ["Verdicts: `masking` when random sign beats FGSM or PGD with restarts does worse than FGSM by more "
              "than two standard errors at some eta; `overshoot` when only FGSM's accuracy rises with eta and PGD's "
              "does not; `none` otherwise."]
    return "\n".join(lines) + "\n"


def plot_dataset(d: Dict[str, Any], path: pathlib.Path) -> pathlib.Path:
    """Paper, today's protocol and the closest protocol: the first task, one panel per model."""
    from ..evaluate import accuracy_panels, save_accuracy_panels

    task = d["tasks"][0]
    models = d["models"]
    fig, axes = accuracy_panels(len(models), 3.2, 3.3)
    best = d["closest"]["protocol"]
    eps = list(DEFAULT_EPS)
    for ax, model in zip(axes, models):
        ax.plot(eps, d["paper"][model][task], "k-o", markersize=3, label="paper")
        ax.plot(eps, d["protocols"]["today"]["curves"][model][task], "-o", markersize=3, label="ours: today")
        if best != "today":
            ax.plot(eps, d["protocols"][best]["curves"][model][task], "-s", markersize=3, label=f"ours: {best}")
        ax.set_title(f"{model}: {task}")
    return save_accuracy_panels(fig, axes, f"{d['dataset']}: FGSM, the paper vs today's protocol vs the closest",
                                path, xlabel="eta", legend_size="x-small", dpi=110)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------
def train_run(path: pathlib.Path, dataset: str, model: str, preset: str, seed: int, root: pathlib.Path,
              results_dir: pathlib.Path, data_dir=None) -> None:
    """Train one run as ``reproduce mtl`` does (GS with its grid-searched weights) unless it
    finished, and publish its metrics into mtl's results cell; writes no report."""
    from ..tune import DEFAULT_GRID

    if (path / runs.MODEL).exists():
        return
    if model == "gs":
        search = mtl.ensure_gs_search(root, results_dir, preset, dataset, epochs=mtl.search_epochs(preset),
                                      grid=list(DEFAULT_GRID), data_dir=data_dir, verbose=0)
        config = mtl.gs_config(dataset, preset, seed, search)
    else:
        config = mtl.train_config(dataset, model, preset, seed)
    mtl.ensure_trained(path, config, data_dir, verbose=0)
    mtl.publish(path, mtl.cell_dir(results_dir, preset, dataset, model, seed))


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tf_mtvib.reproduce protocols", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", help="the preset whose runs are studied (default: %(default)s)")
    p.add_argument("--root", type=pathlib.Path, default=None,
                   help="the runs' root, as given to reproduce mtl (default: reproduce mtl's default root)")
    p.add_argument("--seed", type=int, default=0, help="which training seed's runs (default: %(default)s)")
    p.add_argument("--datasets", default=",".join(mtl.DATASETS))
    p.add_argument("--models", default=",".join(mtl.MODELS))
    p.add_argument("--grid", default="default", choices=("default", "one-factor", "full"))
    p.add_argument("--protocols", default=None, help="comma-separated protocol names instead of --grid "
                                                     "(e.g. today,loss=clipped_prob_ce+clip=off)")
    p.add_argument("--examples", type=int, default=500, help="test images per run (seeded subset; default %(default)s)")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--masking-examples", type=int, default=200)
    p.add_argument("--restarts", type=int, default=3, help="PGD random restarts in the masking check")
    p.add_argument("--draws", type=int, default=5, help="random-sign draws in the masking check")
    p.add_argument("--pgd-steps", type=int, default=10)
    p.add_argument("--results-dir", type=pathlib.Path, default=None,
                   help="the committed results (default: docs/results of the checkout)")
    p.add_argument("--doc", type=pathlib.Path, default=None,
                   help="the document whose generated block is filled (default: docs/robustness.md of the checkout)")
    p.add_argument("--paper-tables", type=pathlib.Path, default=TABLES_CSV)
    p.add_argument("--train", action="store_true",
                   help="train missing runs first, as `python -m tf_mtvib.reproduce mtl --train-only` would "
                        "(same preset, root, seed and results directory), without writing its report")
    p.add_argument("--data-dir", type=pathlib.Path)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    doc_paths(parser, args, {"results_dir": "docs/results", "doc": "docs/robustness.md"})
    datasets = mtl.comma_choices(parser, args.datasets, mtl.DATASETS, "data set")
    models = mtl.comma_choices(parser, args.models, mtl.MODELS, "model")
    for flag in ("examples", "masking_examples", "restarts", "draws", "pgd_steps"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1")
    try:
        grid = ([parse_protocol(n) for n in args.protocols.split(",") if n] if args.protocols
                else protocol_grid(args.grid))
    except ValueError as e:
        parser.error(str(e))
    if TODAY not in grid:
        grid.insert(0, dict(TODAY))
    root = args.root or mtl.default_root()
    paths = {d: {m: mtl.run_dir(root, args.preset, d, m, args.seed) for m in models} for d in datasets}
    if args.train:
        for d in datasets:
            for m in models:
                train_run(paths[d][m], d, m, args.preset, args.seed, root, args.results_dir, args.data_dir)
    out = args.results_dir / args.preset / "protocols"
    masking = {"examples": args.masking_examples, "restarts": args.restarts, "draws": args.draws,
               "steps": args.pgd_steps}
    doc: Dict[str, Any] = {"preset": args.preset, "seed": args.seed, "subset_seed": args.subset_seed,
                           "examples": args.examples, "eps": list(DEFAULT_EPS), "masking": masking,
                           "close": CLOSE, "grid": [protocol_name(p) for p in grid], "datasets": {}}
    # a model whose run is gone keeps its part of the committed study of the same settings, so that a data
    # set's study can grow one model at a time as runs come and go
    previous = runs.read_json(out / "protocols.json") if (out / "protocols.json").exists() else None
    same = same_settings(previous, doc)
    committed = {d: (previous["datasets"].get(d) if same else None) or {} for d in datasets}
    carried = {d: [m for m in models if not (paths[d][m] / runs.MODEL).exists()
                   and m in committed[d].get("models", ())] for d in datasets}
    missing = [str(paths[d][m]) for d in datasets for m in models
               if not (paths[d][m] / runs.MODEL).exists() and m not in carried[d]]
    if missing:
        print(f"error: {len(missing)} run(s) not trained, e.g. {missing[0]}, and not in the committed study of "
              f"these settings; train them with `python -m tf_mtvib.reproduce mtl --preset {args.preset} "
              f"--root {root} --train-only` or pass --train", file=sys.stderr)
        return 2

    out.mkdir(parents=True, exist_ok=True)
    computed = 0
    for d in datasets:
        records = {}
        for m in models:
            if m in carried[d]:
                print(f"[protocols] {d}/{m}: its run is gone; its part is carried from {out / 'protocols.json'}",
                      flush=True)
                records[m] = carried_record(committed[d], m)
            else:
                cell = RunCache(paths[d][m], args.examples, args.subset_seed, args.data_dir)
                records[m] = model_record(cell, grid, masking)
                computed += cell.computed
        result = study_dataset(d, records, grid, paper_curves(d, args.paper_tables), carried=carried[d])
        plot = plot_dataset(result, out / f"{d}.png")
        result["plot"] = (pathlib.Path("results") / args.preset / "protocols" / plot.name).as_posix()
        doc["datasets"][d] = result
    # where the committed file lives in a checkout (no machine's path: as the plots above)
    doc["json"] = (pathlib.Path("docs") / "results" / args.preset / "protocols" / "protocols.json").as_posix()
    doc = merged(runs.read_json(out / "protocols.json") if (out / "protocols.json").exists() else None, doc)
    runs.write_json(out / "protocols.json", doc)
    text = render_markdown(doc)
    (out / "protocols.md").write_text(text)
    if args.doc:
        begin, end = markers(args.preset)
        write_section(args.doc, text, begin=begin, end=end)
    print(text)
    print(f"[protocols] {computed} evaluation(s) computed, the rest from the caches; wrote {out} and {args.doc}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
