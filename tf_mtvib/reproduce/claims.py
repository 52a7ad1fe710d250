"""The verdict on the MTVIB paper's claims, rendered from loaded results (no file is read here).

Three claims of Qian et al., each judged on exact counts by the rules of
:mod:`tf_mtvib.reproduce.verdicts`, per data set and evaluation mode, with the
paper's own Tables III-V judged by the same rules beside ours:

* Claim 1 (:func:`claim1`): MTVIB's clean accuracy is on par with the baselines';
* Claim 2 (:func:`claim2`): under FGSM (eq. 25) its accuracy decays more slowly,
  in three forms of decay (:data:`verdicts.FORMS`);
* Fig. 5 (:func:`fig5`): its joint accuracy under FGSM against UWL's and GS's.

Two notes follow them: where FGSM and PGD disagree (:func:`fgsm_pgd_note`), and
where the paper's split cannot be ours (:func:`split_note`). :func:`report`
assembles the section that opens docs/RESULTS.md; ``reproduce mtl`` loads the
committed JSON and calls it (:func:`tf_mtvib.reproduce.mtl.verdict`).

A data set's results (``data[d]``) are :func:`tf_mtvib.reproduce.mtl.load_dataset_results`'s
dict: ``metrics`` and ``robust`` per model (one entry per seed), ``seeds``, ``cells``, ``facts``.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..datasets.spec import get_spec
from ..metrics import MC_SAMPLES
from . import verdicts as V
from .paper import PAPER_MODELS as MODELS
from .paper import paper_clean_average, paper_value
from .tables import fmt_spread

#: Claim 1's margin: MTVIB's clean accuracy within this many points of each baseline's.
ON_PAR_POINTS = 0.5
BASELINES = ("stl", "stvib", "gs", "uwl")
MC = f"mc{MC_SAMPLES}"             # the metrics.json key of the Monte-Carlo test accuracy
#: The rows of ``reproduce saturation``'s sweeps on the retrained seed-0 models (saturation.json):
#: each task attacked by its own loss, and the summed loss on the same models
PER_TASK_ROWS = {"fgsm per task (seed 0, retrained)": "logits-per_task",
                 "fgsm summed (seed 0, retrained)": "logits-sum"}
#: FGSM settings: the paper's attack; the headline of Claim 2 rests on these alone
FGSM_SETTINGS = ("fgsm", "fgsm-sampled", "fgsm-eot") + tuple(PER_TASK_ROWS)
#: FGSM above PGD by more than this many points is called out
FGSM_PGD_GAP = 20.0
#: Fig. 5 (journal text): MTVIB's joint accuracy under attack against UWL and GS, per data set:
#: "above" both, or (MultiMNIST) comparable to UWL and above GS
FIG5_CLAIM = {"multimnist": {"uwl": "comparable", "gs": "above"},
              "multifashion": {"uwl": "above", "gs": "above"},
              "mtfl": {"uwl": "above", "gs": "above"}}



def _fmt_points(x) -> str:
    return f"{100 * float(x):+.1f}"


def _seed_note(v: Dict[str, Any], models: Sequence[str]) -> str:
    one = [m.upper() for m in models if len(v["seeds"].get(m, [])) == 1]
    return ", ".join(one) if one else "-"


def claim1(data: Mapping[str, Dict[str, Any]], tables) -> List[str]:
    """Claim 1: MTVIB's clean accuracy on par with every baseline's, within :data:`ON_PAR_POINTS`."""
    margin = Fraction(str(ON_PAR_POINTS)) / 100
    rows, judged_rows, paper_rows = [], [], {}
    for d, v in data.items():
        tasks = get_spec(d).task_names
        paper_m = [V.paper_exact(paper_clean_average(tables, d, "mtvib"))]
        paper_judged = {b: V.judge(paper_m, [V.paper_exact(paper_clean_average(tables, d, b))], "not_below", margin)
                        for b in BASELINES}
        paper_rows[d] = V.row(paper_judged)[0]
        for mode in ("mean", MC):
            if not any(mode in met["test"] for met in v["metrics"]["mtvib"]):
                continue

            def values(model):
                return [V.clean_average(met["test"].get(mode, met["test"]["mean"]), met["num_test"], tasks)
                        for met in v["metrics"][model]]

            ours_m = values("mtvib")
            cells, judged = [], {}
            for b in BASELINES:
                if b not in v["metrics"]:
                    cells.append("-")
                    continue
                ours_b = values(b)
                judged[b] = V.judge(ours_m, ours_b, "not_below", margin)
                pd = paper_clean_average(tables, d, "mtvib") - paper_clean_average(tables, d, b)
                cells.append(f"{_fmt_points(V.mean(ours_m) - V.mean(ours_b))} ({pd:+.1f})"
                             + (" tie" if judged[b][1] else ""))
            label, verdict_ = V.row(judged, [b for b in BASELINES if b not in v["metrics"]])
            judged_rows.append(verdict_)
            rows.append(f"| {d} | {mode} | {fmt_spread([100 * float(x) for x in ours_m])} "
                        f"({paper_clean_average(tables, d, 'mtvib'):.1f}) | " + " | ".join(cells)
                        + f" | {label} | {paper_rows[d]} | {_seed_note(v, ('mtvib',) + BASELINES)} |")
    paper_head = V.headline([r.split(" (")[0] for r in paper_rows.values()])
    lines = [f"**Claim 1: MTVIB's clean accuracy is on par with the baselines' (the paper: within about "
             f"{ON_PAR_POINTS} points). {V.headline(judged_rows).capitalize()}.** By the paper's own tables: "
             f"{paper_head}. Clean accuracy on the whole test "
             "split, averaged over the tasks; MTVIB's (the paper's in parentheses), then MTVIB minus each "
             f"baseline (the paper's difference in parentheses). A row is reproduced when MTVIB is no more than "
             f"{ON_PAR_POINTS} points (plus the seeds' spread) below every baseline, not reproduced when it is "
             "further below all of them, mixed otherwise. The rule is one-sided: it tests that MTVIB is not "
             "worse, and a row where MTVIB is well above a baseline counts as reproduced.", "",
             "| data set | eval | MTVIB | vs " + " | vs ".join(b.upper() for b in BASELINES)
             + " | verdict | paper's tables | one seed |",
             "|---|---|---:|" + "---:|" * len(BASELINES) + "---|---|---|", *rows, ""]
    return lines


def claim2(data: Mapping[str, Dict[str, Any]], tables,
           per_task: Mapping[str, Dict[str, Dict[str, List[Dict[str, Any]]]]]) -> List[str]:
    """Claim 2: MTVIB's accuracy under FGSM decays more slowly, in each form of decay; ``per_task[d]``
    holds the :data:`PER_TASK_ROWS` of data set ``d`` where they were measured (they come first)."""
    rows, by_form, by_mode, pgd_rows, paper_c2 = [], {f: [] for f in V.FORMS}, {}, [], {}
    for d, v in data.items():
        tasks = get_spec(d).task_names
        eps = sorted({k[2] for k in tables if k[0] == d})
        paper_forms = {m: V.decay_forms(V.paper_result(tables, d, m, tasks, eps), tasks) for m in MODELS}
        paper_c2[d] = V.row({b: V.judge([paper_forms["mtvib"]["decay"]], [paper_forms[b]["decay"]], "below")
                             for b in BASELINES})[0]
        for name, per_model in {**per_task.get(d, {}), **v["robust"]}.items():
            if "mtvib" not in per_model:
                continue
            forms = {m: [V.decay_forms(r, tasks) for r in per_model[m]] for m in per_model}
            missing = [b for b in BASELINES if b not in forms]
            labels = {}
            for form, direction in V.FORMS.items():
                judged_f = {b: V.judge([f[form] for f in forms["mtvib"]], [f[form] for f in forms[b]], direction)
                            for b in BASELINES if b in forms}
                labels[form], verdict_ = V.row(judged_f, missing)
                if name in FGSM_SETTINGS:
                    by_form[form].append(verdict_)
                    if form == "decay":
                        by_mode.setdefault(name, []).append(verdict_)
                elif form == "decay":
                    pgd_rows.append(verdict_)
            cells = [fmt_spread([100 * float(f["decay"]) for f in forms[m]])
                     + f" ({100 * float(paper_forms[m]['decay']):.1f})" if m in forms else "-"
                     for m in ("mtvib",) + BASELINES]
            rows.append(f"| {d} | {name} | " + " | ".join(cells) + f" | {labels['decay']} | {labels['level']} | "
                        f"{labels['retention']} | {paper_c2[d] if name in FGSM_SETTINGS else '-'} | "
                        f"{_seed_note(v, ('mtvib',) + BASELINES)} |")
    head = V.headline(by_form["decay"])
    mode_note = ""
    if len({V.headline(vs) for vs in by_mode.values()}) > 1:
        mode_note = " The answer depends on the FGSM mode: " + "; ".join(
            f"{n}: {V.headline(vs)}" for n, vs in by_mode.items()) + "."
    forms_note = (" The verdict does not depend on the form of decay" if len({V.headline(vs) for vs in by_form.values()}) == 1
                  else " The verdict depends on the form of decay") + ": " + "; ".join(
        f"{form} ({V.FORM_TEXT[form]}): {V.headline(vs)}" for form, vs in by_form.items()) + "."
    pgd_note = f" Under PGD, which the paper did not run: {V.headline(pgd_rows)}." if pgd_rows else ""
    paper_head = V.headline([r.split(" (")[0] for r in paper_c2.values()])
    lines = [f"**Claim 2: under FGSM, MTVIB's accuracy decays more slowly than the others'. {head.capitalize()}.** "
             f"By the paper's own tables: {paper_head}.{mode_note}{forms_note}{pgd_note} Decay = clean accuracy "
             "minus the mean accuracy over eta 0.05-0.3, averaged over the tasks (points; smaller is slower; the "
             "paper's, from its tables, in parentheses). A row is reproduced when MTVIB is better than every "
             "baseline by more than the seeds' spread, in the form of its column, not reproduced when that holds "
             "for none of them, mixed otherwise. The headline rests on the FGSM rows in the decay form. Each row's "
             "models were attacked on the same test images (see the data set's section). Rows marked per task "
             "(where measured) attack each task with its own loss, as a single-task network is attacked: they "
             "are the primary evidence, beside the summed loss on the same retrained seed-0 models; the other "
             "rows attack the committed models with the summed loss.", "",
             "| data set | setting | MTVIB | " + " | ".join(b.upper() for b in BASELINES)
             + " | verdict (decay) | by level | by retention | paper's tables (decay) | one seed |",
             "|---|---|---:|" + "---:|" * len(BASELINES) + "---|---|---|---|---|", *rows, ""]
    return lines


def fig5(data: Mapping[str, Dict[str, Any]]) -> List[str]:
    """Fig. 5: MTVIB's joint accuracy under FGSM against UWL's and GS's (:data:`FIG5_CLAIM`); no lines
    when no data set has the FGSM sweeps."""
    rows, judged_rows = [], []
    for d, v in data.items():
        claim = FIG5_CLAIM.get(d)
        if not claim:
            continue
        for name in FGSM_SETTINGS:
            per_model = v["robust"].get(name, {})
            if "mtvib" not in per_model:
                continue
            level = {m: [V.decay_forms(r, ["joint"])["level"] for r in per_model[m]] for m in per_model}
            judged, cells = {}, []
            n = per_model["mtvib"][0]["num_examples"]
            se = Fraction(V.two_se(float(V.mean(level["mtvib"])), n)).limit_denominator(10 ** 6)
            for b, how in claim.items():
                if b not in level:
                    cells.append("-")
                    continue
                if how == "above":
                    judged[b] = V.judge(level["mtvib"], level[b], "above", se)
                else:   # comparable: within the slack either way
                    slack = se + max(V.spread(level["mtvib"]), V.spread(level[b]))
                    diff = abs(V.mean(level["mtvib"]) - V.mean(level[b]))
                    judged[b] = (V.REPRODUCED if diff <= slack else V.NOT, diff == slack)
                cells.append(f"{_fmt_points(V.mean(level['mtvib']) - V.mean(level[b]))} ({how})")
            label, verdict_ = V.row(judged, [b for b in claim if b not in level])
            if all(x == 0 for m in ("mtvib",) + tuple(claim) if m in level for x in level[m]):
                label, verdict_ = "no signal (every model at 0)", V.NO_DATA
            judged_rows.append(verdict_)
            rows.append(f"| {d} | {name} | {fmt_spread([100 * float(x) for x in level['mtvib']])} | "
                        + " | ".join(cells) + f" | {label} | {_seed_note(v, ('mtvib',) + tuple(claim))} |")
    if not rows:
        return []
    return [f"**Fig. 5: MTVIB's joint accuracy under FGSM is comparable to UWL's and above GS's on MultiMNIST, "
            f"and above both on MultiFashion and MTFL. {V.headline(judged_rows).capitalize()}.** Joint accuracy (every "
            "task right) averaged over eta 0.05-0.3 (%), then MTVIB minus UWL and minus GS (points). Above: "
            "by more than the seeds' spread plus two binomial standard errors of MTVIB's level on the test "
            "images; comparable: within that slack. A row where every model is at 0 judges nothing.", "",
            "| data set | setting | MTVIB | vs UWL | vs GS | verdict | one seed |",
            "|---|---|---:|---:|---:|---|---|", *rows, ""]


def fgsm_pgd_note(data: Mapping[str, Dict[str, Any]]) -> List[str]:
    """Where mean-mode FGSM sits above PGD by more than :data:`FGSM_PGD_GAP` points (the largest gap
    per model and task); no lines when nowhere."""
    gaps = []
    for d, v in data.items():
        if "fgsm" in v["robust"] and "pgd" in v["robust"]:
            gaps += [(d,) + g for g in V.fgsm_pgd_gaps(v["robust"]["fgsm"], v["robust"]["pgd"],
                                                       get_spec(d).task_names, FGSM_PGD_GAP)]
    if not gaps:
        return []
    return [f"**Where FGSM and PGD disagree** (mean-mode FGSM above PGD by more than {FGSM_PGD_GAP:g} points "
            "at some eta; the largest gap per model and task; the lower accuracy is the one to believe): "
            + "; ".join(f"{d} {m.upper()} {t} at eta {e:g}: {f:.1f} under FGSM, {p:.1f} under PGD"
                        for d, m, t, e, f, p in sorted(gaps, key=lambda g: g[4] - g[5], reverse=True)) + ".", ""]


def split_note(data: Mapping[str, Dict[str, Any]], tables) -> List[str]:
    """A data set whose paper models, on every binary task, stay below our split's majority-class rate:
    the paper's split or preprocessing is not ours (MTFL: 82.7 against glasses' 85.8)."""
    lines = []
    for d, v in data.items():
        rates = V.majority_rates(v.get("facts"))
        binary = [t.name for t in get_spec(d).tasks if t.num_classes == 2]
        if not rates or not binary:
            continue
        best_paper = max((paper_value(tables, d, t, 0.0, m), t, m) for t in binary for m in MODELS)
        top_rate, top_task = max((rates[t], t) for t in binary)
        if best_paper[0] < 100 * top_rate:
            lines += [f"**The paper's {d} split is not ours:** its best clean accuracy on any binary task "
                      f"({best_paper[0]:.1f}, {best_paper[2].upper()} on {best_paper[1]}) is below our test split's "
                      f"majority-class rate for {top_task} ({100 * top_rate:.1f}), so under no ordering of its "
                      f"tasks do its models beat the majority class there: its split or preprocessing differs from "
                      "ours, and its per-task numbers are not comparable with ours.", ""]
    return lines


def report(data: Mapping[str, Dict[str, Any]], tables, preset: str, budgets: Mapping[str, str],
           per_task: Mapping[str, Dict[str, Dict[str, List[Dict[str, Any]]]]],
           progress: Optional[str] = None) -> str:
    """The section that opens docs/RESULTS.md: the rules, then :func:`claim1`, :func:`claim2`, :func:`fig5`,
    :func:`fgsm_pgd_note` and :func:`split_note`. ``budgets[d]`` states data set ``d``'s training budget;
    ``progress``, which planned cells are still missing (None: all there)."""
    if not data:
        return (f"## Verdict on the paper's claims ({preset} preset)\n\nNo committed MTVIB results under "
                f"`docs/results/{preset}/` yet.")
    seeds = "; ".join(f"{d}: " + ", ".join(f"{m} {'/'.join(map(str, s))}" for m, s in v["seeds"].items())
                      for d, v in data.items())
    lines = [f"## Verdict on the paper's claims ({preset} preset)", "",
             f"Generated from the JSON under `docs/results/{preset}/` by `python -m tf_mtvib.reproduce mtl --preset "
             f"{preset}`. It rests on this budget ({'; '.join(f'{d}: {b}' for d, b in budgets.items())}) and these "
             f"seeds ({seeds}). With several seeds a "
             "value is their mean, and a difference no larger than the seeds' spread (max - min) is not counted. "
             "Accuracies are compared as exact counts over the test images; a difference exactly on a rule's "
             "boundary is marked tie. A cell with one seed has no known spread: the last column names those "
             "models, and a difference of about a point there is not a finding."
             + ("" if any(len(s) > 1 for v in data.values() for s in v["seeds"].values()) else
                " Every cell here has one seed, so no spread is known: the verdicts below describe this one "
                "measurement and are not yet findings.")
             + " A row missing a baseline is marked incomplete and left out of the claim's verdict. A claim's "
             "headline is reproduced when every row is, not reproduced when no row is, mixed when some are "
             "and some are not. The paper's own tables are judged by the same rules (one value per cell).", ""]
    lines += [progress, ""] if progress else []
    lines += claim1(data, tables) + claim2(data, tables, per_task) + fig5(data)
    lines += fgsm_pgd_note(data) + split_note(data, tables)
    return "\n".join(lines).rstrip("\n")
