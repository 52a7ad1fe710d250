"""What can be built, without TensorFlow: the models and the task weightings by name.

The command lines (``train.py``, ``tune``, ``reproduce``) build their flags,
help and checks from this module alone, so that ``--help`` and a wrong flag
answer at once instead of after TensorFlow's import. The Keras side reads the
same facts from here: :mod:`tf_mtvib.models` builds a model of
:data:`MODEL_NAMES` with the defaults of its :class:`ModelEntry`, and
:mod:`tf_mtvib.weightings` gives each declared weighting its class.

* **Models** (:data:`MODEL_CATALOGUE`): name -> default weighting,
  description and overrides of the network's hyper-parameters
  (:data:`DEFAULT_HPARAMS`). The networks themselves are in
  :mod:`tf_mtvib.models`, one builder per name.
* **Weightings** (:data:`WEIGHTING_CATALOGUE`): name -> one-line summary and
  hyper-parameters (:class:`HParam`). The package's own are declared below;
  a user's weighting is declared by
  :func:`tf_mtvib.weightings.register_weighting` from its class's ``HPARAMS``
  and docstring, so that it stays one class plus one decorator.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional

__all__ = [
    "HParam", "WeightingEntry", "WEIGHTING_CATALOGUE", "declare_weighting", "weighting_hparams", "owner_of",
    "add_weighting_arguments", "add_family_arguments", "parse_task_weights", "LATENT_HEADS", "DEFAULT_HPARAMS", "ModelEntry",
    "MODEL_CATALOGUE", "MODEL_NAMES", "default_weighting", "hparam_defaults", "check_weighting",
]


# --------------------------------------------------------------------------
# Weightings
# --------------------------------------------------------------------------
from .hparams import HParam  # noqa: E402  (one definition, shared with tf_mtvib.families)


@dataclasses.dataclass(frozen=True)
class WeightingEntry:
    """A weighting's name, one-line summary (for ``--help``) and hyper-parameters."""

    name: str
    summary: str
    hparams: Mapping[str, HParam]


#: name -> declared weighting, in declaration order.
WEIGHTING_CATALOGUE: Dict[str, WeightingEntry] = {}


def declare_weighting(name: str, summary: str, hparams: Mapping[str, HParam]) -> WeightingEntry:
    """Declare weighting ``name`` (declaring it again with the same hyper-parameters
    does nothing). Hyper-parameter names must be unique across weightings: they share
    the run config's ``hparams`` with the network's."""
    old = WEIGHTING_CATALOGUE.get(name)
    if old is not None:
        if dict(old.hparams) != dict(hparams):
            raise ValueError(f"a weighting named {name!r} is declared already, with hyper-parameters "
                             f"{sorted(old.hparams)}")
        return old
    for other in WEIGHTING_CATALOGUE.values():
        clash = set(other.hparams) & set(hparams)
        if clash:
            raise ValueError(f"hyper-parameter(s) {sorted(clash)} of weighting {name!r} are {other.name!r}'s already")
    clash = set(hparams) & set(DEFAULT_HPARAMS)
    if clash:
        raise ValueError(f"hyper-parameter(s) {sorted(clash)} of weighting {name!r} are the network's")
    entry = WeightingEntry(name, summary, dict(hparams))
    WEIGHTING_CATALOGUE[name] = entry
    return entry


def weighting_hparams() -> Dict[str, HParam]:
    """Every declared weighting's hyper-parameters, name -> :class:`HParam`."""
    return {k: h for e in WEIGHTING_CATALOGUE.values() for k, h in e.hparams.items()}


def owner_of(hparam: str) -> Optional[str]:
    """The name of the weighting that declares ``hparam`` (None for a non-weighting key)."""
    return next((e.name for e in WEIGHTING_CATALOGUE.values() if hparam in e.hparams), None)


def parse_task_weights(text: str):
    """'0.3,0.7' (task order) or 'top_left=0.3,bottom_right=0.7'."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            return {k.strip(): float(v) for k, v in (p.split("=", 1) for p in parts)}
        return [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"task weights must be numbers, e.g. 0.5,0.5 or gender=1,smile=2; got {text!r}")


def add_weighting_arguments(group) -> None:
    """Add ``--weighting`` and one flag per declared hyper-parameter to an argparse (group).

    Every flag defaults to None (= the model's recipe, then the weighting's default).
    """
    group.add_argument("--weighting", choices=list(WEIGHTING_CATALOGUE),
                       help="task weighting (default: the model's own: "
                            + ", ".join(f"{e.name} = {e.summary}" for e in WEIGHTING_CATALOGUE.values()) + ")")
    for e in WEIGHTING_CATALOGUE.values():
        for key, h in e.hparams.items():
            group.add_argument("--" + key.replace("_", "-"), dest=key, type=h.parse, metavar=h.metavar,
                               help=f"{h.help} ({e.name} weighting)")


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
#: Heads of the Gaussian latent (:class:`tf_mtvib.layers.GaussianLatent`):
#: "paper" = FC + BN + ReLU for the mean and for the scale (Tables I-II),
#: "linear" = one Dense each (Alemi et al. 2017).
LATENT_HEADS = ("paper", "linear")

#: The network's hyper-parameters and their defaults. The weightings' come from
#: their declarations (:func:`hparam_defaults` lists both).
DEFAULT_HPARAMS = {
    "latent_dim": 256,
    "beta": 1e-3,
    "latent_head": "paper",    # GaussianLatent heads, one of LATENT_HEADS
    "sync_batchnorm": False,   # BatchNormalization(synchronized=True) under MirroredStrategy
    "fused_batchnorm": False,  # FusedBatchNormalization (TF's fused kernel) for the unsynchronised BNs
}


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A model's default weighting (a key of :data:`WEIGHTING_CATALOGUE`), its
    description and its overrides of :data:`DEFAULT_HPARAMS`."""

    weighting: str
    description: str = ""
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: name -> model of the package's own families (:mod:`tf_mtvib.families`, one file each),
#: the paper's five first (in its tables' order), then Alemi et al.'s Deep VIB and its
#: deterministic twin; filled at the end of this module from the families' specs.
MODEL_CATALOGUE: Dict[str, ModelEntry] = {}
MODEL_NAMES: tuple = ()


def model_entry(name: str) -> ModelEntry:
    """The catalogue entry of model ``name``, a registered family (ValueError listing the choices otherwise)."""
    from .families import get_family

    spec = get_family(name)
    return ModelEntry(spec.default_weighting, spec.description, dict(spec.defaults))


def default_weighting(name: str) -> str:
    """The weighting model ``name`` is trained with unless told otherwise."""
    return model_entry(name).weighting


def hparam_defaults() -> dict:
    """Every hyper-parameter ``build_model`` accepts, with its default: the
    network's (:data:`DEFAULT_HPARAMS`), ``weighting`` (None: the model's own)
    and each declared weighting's."""
    from .families import families

    own = {k: h.default for f in families().values() for k, h in f.hparams.items()}
    return {**DEFAULT_HPARAMS, "weighting": None, **{k: h.default for k, h in weighting_hparams().items()}, **own}


def add_family_arguments(group) -> None:
    """One flag per family's own hyper-parameter (:attr:`FamilySpec.hparams`), default None."""
    from .families import families

    owners: Dict[str, list] = {}
    declared = {}
    for f in families().values():
        for key, h in f.hparams.items():
            owners.setdefault(key, []).append(f.name)
            declared.setdefault(key, h)
    for key, h in declared.items():
        who = ", ".join(owners[key])
        group.add_argument("--" + key.replace("_", "-"), dest=key, type=h.parse, metavar=h.metavar,
                           help=f"{h.help} ({who} {'family' if len(owners[key]) == 1 else 'families'}; "
                                f"default {h.default})")


def check_weighting(name: str, weighting: Optional[str], hparams: Mapping) -> str:
    """The weighting model ``name`` uses (``weighting`` or its default); ValueError
    for an unknown weighting or a hyper-parameter of another weighting."""
    wname = weighting or default_weighting(name)
    if wname not in WEIGHTING_CATALOGUE:
        raise ValueError(f"unknown weighting {wname!r}; choose one of: {', '.join(WEIGHTING_CATALOGUE)}")
    foreign = sorted(k for k, v in hparams.items() if v is not None and owner_of(k) not in (None, wname))
    if foreign:
        raise ValueError(", ".join(f"{k} is a hyper-parameter of the {owner_of(k)!r} weighting" for k in foreign)
                         + f", not of {wname!r} (model {name!r})")
    return wname


# --------------------------------------------------------------------------
# The package's weightings (their classes: tf_mtvib.weightings)
# --------------------------------------------------------------------------
declare_weighting("fixed", "Fixed task weights: ``sum_k w_k * CE_k`` (the grid-search baseline, GS)", {
    "task_weights": HParam(None, "fixed task weights: 0.5,0.5 (task order) or name=w,...; "
                                 "default 1 per task (gs: 1/K each)", parse_task_weights, "W,..."),
})
declare_weighting("uncertainty", "Learned homoscedastic-uncertainty weighting (MTVIB eq. 22-23)", {
    "init_log_sigma": HParam(0.0, "initial log sigma_k of every task"),
})
declare_weighting("dwa", "Dynamic weight average (Liu, Johns and Davison 2019, \"End-to-End Multi-Task "
                         "Learning with Attention\")", {
    "dwa_temperature": HParam(2.0, "temperature T of the softmax over loss ratios"),
})
declare_weighting("pcgrad", "Projecting conflicting gradients (Yu et al. 2020, \"Gradient Surgery for Multi-Task "
                            "Learning\", Algorithm 1)", {})


# --------------------------------------------------------------------------
# The package's families (tf_mtvib/families/<name>.py): their catalogue entries
# --------------------------------------------------------------------------
from . import families as _families_pkg  # noqa: E402  (after the weightings: the specs name them)

_families_pkg._load_package_families()
MODEL_CATALOGUE.update({n: model_entry(n) for n in _families_pkg.PACKAGE_FAMILIES})
MODEL_NAMES = tuple(MODEL_CATALOGUE)
