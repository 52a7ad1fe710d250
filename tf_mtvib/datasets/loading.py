"""``load``: one entry point for every data set, with per-data-set options."""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Optional

from .composites import load_composites
from .domains import load_domains
from .mnist import load_mnist
from .mtfl import PROTOCOLS as _MTFL_PROTOCOLS, load_mtfl
from .pairs import HOLDOUTS as _PAIR_HOLDOUTS, POOLS as _PAIR_POOLS, load_pairs
from .paths import PathLike, resolve_data_dir
from .spec import get_spec
from .split import Split

__all__ = ["SPLITS", "OPTIONS", "load"]

SPLITS = ("train", "test")

_COMPOSITE_OPTIONS = {"num_train": 120_000, "num_test": 10_000, "seed": 0, "max_shift": 4}
_PAIR_OPTIONS = {"per_pair": 1_000, "seed": 0, "pool": "pooled", "holdout": "test"}

#: The options of each data set and their defaults.
OPTIONS: Dict[str, Dict[str, Any]] = {
    "multimnist": _COMPOSITE_OPTIONS,
    "multifashion": _COMPOSITE_OPTIONS,
    "mtfl": {"protocol": "paper", "image_size": get_spec("mtfl").input_shape[0], "seed": 0},
    "pairmnist": _PAIR_OPTIONS,
    "pairmnist64": _PAIR_OPTIONS,
    "digitdomains": {"per_domain": 1_000, "fraction": 0.05, "seed": 0},
    "mnist": {},
}


def _as_int(name: str, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"load({name!r}): option {key} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _options(name: str, given: Dict[str, Any]) -> Dict[str, Any]:
    """The given options completed with defaults, after checking names and values."""
    allowed = OPTIONS[name]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise TypeError(f"load({name!r}) got unknown option(s) {', '.join(unknown)}; "
                        f"its options are: {', '.join(allowed) or 'none'}")
    options = {**allowed, **given}
    minimum = {"num_train": 1, "num_test": 1, "seed": 0, "max_shift": 0, "image_size": 1, "per_pair": 1, "per_domain": 1}
    for key in options.keys() & minimum.keys():
        options[key] = _as_int(name, key, options[key], minimum[key])
    if name == "mtfl" and options["protocol"] not in _MTFL_PROTOCOLS:
        raise ValueError(f"load('mtfl'): protocol must be one of {_MTFL_PROTOCOLS}; got {options['protocol']!r}")
    if "pool" in options and options["pool"] not in _PAIR_POOLS:
        raise ValueError(f"load({name!r}): pool must be one of {_PAIR_POOLS}; got {options['pool']!r}")
    if "holdout" in options and options["holdout"] not in _PAIR_HOLDOUTS:
        raise ValueError(f"load({name!r}): holdout must be one of {tuple(_PAIR_HOLDOUTS)}; got {options['holdout']!r}")
    if "fraction" in options:
        f = options["fraction"]
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 < float(f) < 1.0:
            raise ValueError(f"load({name!r}): fraction must be a number in (0, 1); got {f!r}")
        options["fraction"] = float(f)
    return options


_LOADERS: Dict[str, Callable[..., Split]] = {
    "multimnist": lambda split, data_dir, **o: load_composites("multimnist", split, data_dir, **o),
    "multifashion": lambda split, data_dir, **o: load_composites("multifashion", split, data_dir, **o),
    "mtfl": load_mtfl,
    "pairmnist": lambda split, data_dir, **o: load_pairs("pairmnist", split, data_dir, **o),
    "pairmnist64": lambda split, data_dir, **o: load_pairs("pairmnist64", split, data_dir, **o),
    "digitdomains": load_domains,
    "mnist": load_mnist,
}


def load(name: str, split: str, data_dir: Optional[PathLike] = None, **options: Any) -> Split:
    """Load split ``split`` ("train" or "test") of data set ``name``.

    data_dir: see ``resolve_data_dir``. Options (defaults in ``OPTIONS``):
      multimnist / multifashion: num_train=120_000, num_test=10_000, seed=0, max_shift=4;
      mtfl: protocol="paper" (9,000 / 1,000 from training.txt, drawn with ``seed``) or
            "official" (10,000 / 2,995), image_size=150, seed=0;
      pairmnist / pairmnist64: per_pair=1_000, seed=0, pool="pooled" (or "disjoint"), holdout="test"
            ("train" holds the train and valid label pairs, extra ``environment`` 0 / 1, "test" the test
            pairs) or "valid" ("train" the train pairs, "test" the valid pairs);
      digitdomains: per_domain=1_000 (MNIST train digits per domain, disjoint), fraction=0.05 (of each
            domain's images, per class, in "train"; the rest in "test"), seed=0;
      mnist: none.
    Raises ``DataError`` for missing or bad data, TypeError / ValueError for bad arguments.
    """
    get_spec(name)  # a clear error for unknown names
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    return _LOADERS[name](split, resolve_data_dir(data_dir), **_options(name, options))
