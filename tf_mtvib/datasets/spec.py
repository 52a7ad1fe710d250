"""Data-set descriptions: the one place that says what each data set is.

Models, training, evaluation and export read input shapes, task names and
class counts from here; nothing else in the package repeats them.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

__all__ = ["Task", "DatasetSpec", "SPECS", "get_spec", "dataset_names", "spec_to_config", "spec_from_config"]


@dataclasses.dataclass(frozen=True)
class Task:
    """One classification task: its name (a valid tensor name) and class names."""

    name: str
    class_names: Tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Name, input shape (H, W, C) and tasks of one data set."""

    name: str
    input_shape: Tuple[int, int, int]
    tasks: Tuple[Task, ...]
    description: str = ""

    @property
    def task_names(self) -> Tuple[str, ...]:
        return tuple(t.name for t in self.tasks)

    @property
    def num_classes(self) -> Dict[str, int]:
        return {t.name: t.num_classes for t in self.tasks}

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"data set {self.name!r} has no task {name!r}; tasks: {', '.join(self.task_names)}")


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("t_shirt_top", "trouser", "pullover", "dress", "coat",
            "sandal", "shirt", "sneaker", "bag", "ankle_boot")

SPECS: Dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "multimnist", (36, 36, 1),
            (Task("top_left", _DIGITS), Task("bottom_right", _DIGITS)),
            "Two MNIST digits of different classes on a 36x36 canvas (Lin et al. 2019).",
        ),
        DatasetSpec(
            "multifashion", (36, 36, 1),
            (Task("top_left", _FASHION), Task("bottom_right", _FASHION)),
            "Two Fashion-MNIST items of different classes on a 36x36 canvas.",
        ),
        DatasetSpec(
            "mtfl", (150, 150, 3),
            (
                Task("gender", ("male", "female")),
                Task("smile", ("smiling", "not_smiling")),
                Task("glasses", ("glasses", "no_glasses")),
                Task("pose", ("left_profile", "left", "frontal", "right", "right_profile")),
            ),
            "MTFL faces (Zhang et al. 2014), four attributes.",
        ),
        DatasetSpec(
            "pairmnist", (28, 56, 1),
            (Task("left", _DIGITS), Task("right", _DIGITS)),
            "Two MNIST digits side by side, label pairs split 3:1:1 across train / valid / test (MT-CRL, Hu et al. 2022).",
        ),
        DatasetSpec(
            "pairmnist64", (64, 64, 1),
            (Task("left", _DIGITS), Task("right", _DIGITS)),
            "pairmnist on Sun's 64x64 MultiDigitMNIST canvas (MT-CRL, Hu et al. 2022).",
        ),
        DatasetSpec(
            "digitdomains", (28, 28, 1),
            tuple(Task(d, _DIGITS) for d in ("original", "rotated", "negative", "textured")),
            "Four renderings of disjoint MNIST digits, each a task with its own images, trained on a fraction "
            "of each (VMTL's Office-Home structure, Shen et al. 2021).",
        ),
        DatasetSpec(
            "mnist", (28, 28, 1), (Task("digit", _DIGITS),),
            "MNIST digits, single task (Deep VIB, Alemi et al. 2017).",
        ),
    )
}


def dataset_names() -> Tuple[str, ...]:
    return tuple(SPECS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; choose one of: {', '.join(SPECS)}") from None


def spec_to_config(spec: DatasetSpec) -> dict:
    """A JSON-able dict that :func:`spec_from_config` turns back into ``spec``."""
    return {
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "tasks": [{"name": t.name, "class_names": list(t.class_names)} for t in spec.tasks],
        "description": spec.description,
    }


def spec_from_config(config: dict) -> DatasetSpec:
    return DatasetSpec(
        name=config["name"],
        input_shape=tuple(int(d) for d in config["input_shape"]),
        tasks=tuple(Task(t["name"], tuple(t["class_names"])) for t in config["tasks"]),
        description=config.get("description", ""),
    )
