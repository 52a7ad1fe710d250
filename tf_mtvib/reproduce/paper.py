"""The MTVIB paper's own figures (Tables III-V) as data, and the facts of a test split
the report sets beside them.

``paper_tables.csv`` (next to this module) holds the journal paper's Tables
III (MultiMNIST), IV (MultiFashion) and V (MTFL): accuracy in % under FGSM at
eta = 0, 0.05, ..., 0.3 for STL, STVIB, GS, UWL and MTVIB. Its comment header
records the provenance, the one typo in the paper ("449.%" read as 44.9) and
how MTFL's unnamed tasks are read (in the order of MTFL's annotation columns).
"""
from __future__ import annotations

import csv
import io
import pathlib
from typing import Dict, Sequence, Tuple

import numpy as np

from ..datasets.spec import get_spec

__all__ = ["TABLES_CSV", "PAPER_MODELS", "TABLE_NUMBER", "PAPER_TEXT_MTVIB_CLEAN_AVERAGE", "load_paper_tables",
           "paper_value", "paper_clean_average", "majority_rates"]

TABLES_CSV = pathlib.Path(__file__).with_name("paper_tables.csv")
PAPER_MODELS = ("stl", "stvib", "gs", "uwl", "mtvib")
TABLE_NUMBER = {"multimnist": "III", "multifashion": "IV", "mtfl": "V"}
#: MTVIB's clean accuracy averaged over tasks, as the paper's text states it (a
#: check on the tables: the rows of paper_tables.csv must average to these).
PAPER_TEXT_MTVIB_CLEAN_AVERAGE = {"multimnist": 94.3, "multifashion": 85.3, "mtfl": 74.2}

#: (dataset, task name, eta) -> {model: accuracy in %}
PaperTables = Dict[Tuple[str, str, float], Dict[str, float]]


def load_paper_tables(path: pathlib.Path = TABLES_CSV) -> PaperTables:
    """The paper's Tables III-V keyed by (data set, task name, eta); the paper's task
    numbers become this project's task names (``spec.task_names`` order)."""
    lines = [line for line in pathlib.Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
    out: PaperTables = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines))):
        names = get_spec(row["dataset"]).task_names
        task = names[int(row["task"]) - 1]
        out[(row["dataset"], task, round(float(row["eps"]), 4))] = {m: float(row[m]) for m in PAPER_MODELS}
    return out


def paper_value(tables: PaperTables, dataset: str, task: str, eps: float, model: str):
    """The paper's accuracy (%) of ``model`` on ``task`` at ``eps``, or None where it has none."""
    return tables.get((dataset, task, round(float(eps), 4)), {}).get(model)


def paper_clean_average(tables: PaperTables, dataset: str, model: str) -> float:
    """The mean over tasks of the paper's clean (eta = 0) accuracies of ``model`` (%)."""
    tasks = get_spec(dataset).task_names
    return float(np.mean([tables[(dataset, t, 0.0)][model] for t in tasks]))


def majority_rates(split) -> Dict[str, Dict[str, float]]:
    """Per task of ``split``: its most frequent class and that class's share (the
    accuracy of always answering it), from the labels."""
    out = {}
    for task in split.spec.tasks:
        counts = np.bincount(np.asarray(split.labels[task.name]), minlength=task.num_classes)
        c = int(np.argmax(counts))
        out[task.name] = {"class": task.class_names[c],
                          "rate": float(counts[c] / counts.sum()), "counts": [int(n) for n in counts]}
    return out
