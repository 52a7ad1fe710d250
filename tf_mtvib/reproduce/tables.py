"""Aggregating seeds and formatting the numbers of the reproductions' reports.

Imports neither TensorFlow nor Keras.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, Iterable, List, Sequence

__all__ = ["aggregate", "fmt_spread", "in_order", "spread_diff", "mean_half_range"]


def aggregate(results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Mean and spread (min, max) of several seeds' results of one model and setting."""
    first = dict(results[0])
    n_eps = len(first["eps"])
    keys = list(first["accuracy"])
    cols = {k: [[r["accuracy"][k][i] for r in results] for i in range(n_eps)] for k in keys}
    first["accuracy"] = {k: [statistics.fmean(c) for c in cols[k]] for k in keys}
    first["accuracy_min"] = {k: [min(c) for c in cols[k]] for k in keys}
    first["accuracy_max"] = {k: [max(c) for c in cols[k]] for k in keys}
    first["seeds"] = sorted(r.get("seed", 0) for r in results)
    if len(results) > 1:
        first["label"] = f"{first.get('label') or first['model']} (mean of {len(results)} seeds)"
    return first


def fmt_spread(values: Sequence[float], digits: int = 1) -> str:
    """'77.1' for one value; 'mean (min-max)' for several (values in %)."""
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def in_order(names: Iterable[Any], order: Iterable[str], key=lambda n: n) -> List[Any]:
    """``names`` sorted by their ``key``'s place in ``order`` (the paper's order of models, data
    sets or settings, whatever a JSON's key order), unknown keys last by name."""
    rank = {name: i for i, name in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(key(n), len(rank)), key(n)))


def spread_diff(ours: Sequence[float], paper: float) -> str:
    """Ours minus the paper's (points), e.g. ``+1.2``; in parentheses when it is no larger
    than the spread (max - min) of our seeds, i.e. not a difference."""
    d = statistics.fmean(ours) - paper
    text = f"{d:+.1f}"
    return f"({text})" if len(ours) > 1 and abs(d) <= max(ours) - min(ours) else text


def mean_half_range(values: Sequence[float]) -> str:
    """Fractions of 1 as ``'mean ± half-range (n=seeds)'`` in points; ``'value (n=1)'`` for one seed, which has
    no spread to state; ``'-'`` for none."""
    if not values:
        return "-"
    v = [100 * x for x in values]
    if len(v) == 1:
        return f"{v[0]:.1f} (n=1)"
    return f"{statistics.fmean(v):.1f} ± {(max(v) - min(v)) / 2:.1f} (n={len(v)})"


def seed_range(values: Sequence[float]) -> str:
    """``n = N, range R points`` of per-seed values already in points (``one seed`` for one): the spread that
    stands beside a mean the caller prints in its own units (:func:`mean_half_range` prints both)."""
    return f"n = {len(values)}, range {max(values) - min(values):.2f} points" if len(values) > 1 else "one seed"


def time_table(rows: Sequence[Any], unit: str = "epoch") -> str:
    """Seconds per ``unit`` (the median over the cells' medians) and minutes per run, with the CPU and its
    bf16/fp16 flags (:func:`tf_mtvib.runtime.cpu_label`), from result cells that carry ``seconds_per_epoch``
    and ``machine``: one line per ``(label, cells, units per run)``."""
    from ..runtime import cpu_label

    lines = [f"| method | seconds per {unit} | minutes per run | seeds | CPU |", "|---|---|---|---|---|"]
    for label, cells, units in rows:
        cells = [c for c in cells if c.get("seconds_per_epoch")]
        if not cells:
            continue
        sec = statistics.median(c["seconds_per_epoch"] for c in cells)
        cpus = sorted({cpu_label(c.get("machine") or {}) for c in cells})
        lines.append(f"| {label} | {sec:.1f} | {sec * units / 60:.1f} | {len(cells)} | {'; '.join(cpus)} |")
    return "\n".join(lines) if len(lines) > 2 else "No timed cell yet."
