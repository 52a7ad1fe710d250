"""Verdict rules of the MTVIB reproduction, on exact counts.

Every accuracy in the committed JSON is a count over ``n`` test images, so it is
held here as the exact fraction ``round(acc * n) / n`` (:func:`exact`); the
paper's one-decimal percentages are exact decimals. Means, spreads and slacks
are then exact, and a difference that lands exactly on a rule's boundary is a
*tie*, printed as such, instead of a float rounding deciding the row.

The rules (docs/RESULTS.md states them beside each table):

* one comparison (:func:`judge`): MTVIB against one baseline, with a slack of
  the rule's margin plus the larger of the two models' seed spreads (max - min;
  0 for one seed);
* a row (:func:`row`): reproduced when every baseline's comparison is, not
  reproduced when none is, mixed otherwise;
* a claim's headline (:func:`headline`): reproduced when every row is, not
  reproduced when no row is, mixed only when some rows are and some are not.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

REPRODUCED, NOT, MIXED, NO_DATA = "reproduced", "not reproduced", "mixed", "no data"


def exact(acc: float, n: int) -> Fraction:
    """``acc``, an accuracy over ``n`` images, as the exact fraction ``count / n``."""
    return Fraction(round(float(acc) * int(n)), int(n))


def paper_exact(percent: float) -> Fraction:
    """A one-decimal percentage of the paper's tables as an exact fraction of 1."""
    return Fraction(str(percent)) / 100


def mean(values: Sequence[Fraction]) -> Fraction:
    return sum(values, Fraction(0)) / len(values)


def spread(values: Sequence[Fraction]) -> Fraction:
    return max(values) - min(values) if len(values) > 1 else Fraction(0)


def seeds_note(*counts: int) -> str:
    """``"; N seed(s)."``, with the caveat when a compared side has one seed (no known spread)."""
    n = min(counts)
    return f"; {n} seed(s)" + (": one seed, not a finding." if n == 1 else ".")


def judge(ours: Sequence[Fraction], other: Sequence[Fraction], direction: str,
          margin: Fraction = Fraction(0)) -> Tuple[str, bool]:
    """(verdict, tie) of MTVIB's values ``ours`` against a baseline's ``other`` (per seed).

    ``direction``:
      ``"not_below"``: reproduced when ``mean(ours) >= mean(other) - slack`` (Claim 1: no more
      than the margin below);
      ``"above"``: reproduced when ``mean(ours) > mean(other) + slack`` (higher is better);
      ``"below"``: reproduced when ``mean(ours) < mean(other) - slack`` (lower is better).

    ``slack = margin + max(spread(ours), spread(other))``. ``tie`` is True when the
    difference lies exactly on the boundary (the verdict then follows the rule's
    inequality: "no more than" includes it, "by more than" does not).
    """
    slack = margin + max(spread(ours), spread(other))
    a, o = mean(ours), mean(other)
    if direction == "not_below":
        edge, ok = o - slack, a >= o - slack
    elif direction == "above":
        edge, ok = o + slack, a > o + slack
    elif direction == "below":
        edge, ok = o - slack, a < o - slack
    else:
        raise ValueError(f"unknown direction {direction!r}")
    return (REPRODUCED if ok else NOT), a == edge


def combine(verdicts: Sequence[str]) -> str:
    """A row: reproduced / not reproduced when every comparison agrees, else mixed."""
    verdicts = [v for v in verdicts if v != NO_DATA]
    if not verdicts:
        return NO_DATA
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if all(v == NOT for v in verdicts):
        return NOT
    return MIXED


def headline(rows: Sequence[str]) -> str:
    """A claim's headline from its rows: reproduced when every row is, not reproduced when
    no row is (mixed rows included), mixed only when some rows are reproduced and some not."""
    rows = [v for v in rows if v != NO_DATA]
    if not rows:
        return NO_DATA
    if all(v == REPRODUCED for v in rows):
        return REPRODUCED
    if not any(v == REPRODUCED for v in rows):
        return NOT
    return MIXED


def row(judged: Dict[str, Tuple[str, bool]], missing: Sequence[str] = ()) -> Tuple[str, str]:
    """(label, verdict) of a row from ``{baseline: (verdict, tie)}``. A row missing a
    baseline is 'incomplete' and judges nothing; a tie is named in the label."""
    if missing:
        return f"incomplete (no {', '.join(m.upper() for m in missing)})", NO_DATA
    verdict = combine([v for v, _ in judged.values()])
    ties = [b.upper() for b, (_, tie) in judged.items() if tie]
    return verdict + (f" (tie with {', '.join(ties)})" if ties else ""), verdict


# --------------------------------------------------------------------------
# What is compared
# --------------------------------------------------------------------------
def clean_average(accs: Dict[str, float], n: int, tasks: Sequence[str]) -> Fraction:
    """Clean accuracy averaged over the tasks, exactly."""
    return mean([exact(accs[t], n) for t in tasks])


def _attacked(result: Dict, task: str) -> Tuple[Fraction, Fraction]:
    """(clean, mean accuracy over the attacked eta) of ``task``, exactly."""
    n = result["num_examples"]
    pairs = list(zip(result["eps"], result["accuracy"][task]))
    clean = next(exact(a, n) for e, a in pairs if e == 0)
    return clean, mean([exact(a, n) for e, a in pairs if e > 0])


#: The three forms of "decays more slowly", and which direction is better
FORMS = {"decay": "below", "level": "above", "retention": "above"}
FORM_TEXT = {"decay": "clean minus the mean attacked accuracy, smaller is slower",
             "level": "the mean attacked accuracy, higher is better",
             "retention": "the mean attacked accuracy over the clean one, higher is better"}


def decay_forms(result: Dict, tasks: Sequence[str]) -> Dict[str, Fraction]:
    """Per form of :data:`FORMS`, averaged over the tasks (fractions of 1; retention a ratio):
    ``decay`` = clean - mean over eta > 0, ``level`` = mean over eta > 0, ``retention`` =
    level / clean."""
    parts = [_attacked(result, t) for t in tasks]
    return {"decay": mean([c - a for c, a in parts]), "level": mean([a for _, a in parts]),
            "retention": mean([a / c if c else Fraction(0) for c, a in parts])}


def paper_result(tables, dataset: str, model: str, tasks: Sequence[str], eps: Sequence[float]) -> Dict:
    """The paper's Tables III-V for ``model`` in the shape of a robustness result (1,000 'images'
    per one-decimal percent, so that :func:`exact` keeps the paper's digits)."""
    from .paper import paper_value

    return {"eps": list(eps), "num_examples": 1000,
            "accuracy": {t: [float(paper_exact(paper_value(tables, dataset, t, e, model))) for e in eps]
                         for t in tasks}}


def two_se(p: float, n: int) -> float:
    """Two binomial standard errors of an accuracy ``p`` on ``n`` images (at least 1/n)."""
    return max(2.0 * math.sqrt(max(p * (1 - p), 0.0) / n), 1.0 / n)


def fgsm_pgd_gaps(fgsm: Dict[str, List[Dict]], pgd: Dict[str, List[Dict]], tasks: Sequence[str],
                  threshold: float) -> List[Tuple[str, str, float, float, float]]:
    """``(model, task, eta, fgsm %, pgd %)`` wherever FGSM's accuracy (seeds' mean) exceeds PGD's
    by more than ``threshold`` points, the largest gap per model and task."""
    out = []
    for model in fgsm:
        if model not in pgd:
            continue
        for t in tasks:
            best = None
            eps = fgsm[model][0]["eps"]
            for i, e in enumerate(eps):
                if e == 0:
                    continue
                f = 100 * sum(r["accuracy"][t][i] for r in fgsm[model]) / len(fgsm[model])
                p = 100 * sum(r["accuracy"][t][i] for r in pgd[model]) / len(pgd[model])
                if f - p > threshold and (best is None or f - p > best[3] - best[4]):
                    best = (model, t, e, f, p)
            if best:
                out.append(best)
    return out


def majority_rates(facts: Optional[Dict]) -> Dict[str, float]:
    """``{task: majority-class rate}`` from a data set's ``test-labels.json``."""
    return {t: v["rate"] for t, v in ((facts or {}).get("majority") or {}).items()}
