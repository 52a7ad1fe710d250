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
  hyper-parameters (:class:`HParam`), from :mod:`tf_mtvib.hparams`, where the
  package's own are declared (below the families, which check against them); a
  user's weighting is declared by
  :func:`tf_mtvib.weightings.register_weighting` from its class's ``HPARAMS``
  and docstring, so that it stays one class plus one decorator.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional

__all__ = [
    "HParam", "WeightingEntry", "WEIGHTING_CATALOGUE", "declare_weighting", "weighting_hparams", "owner_of",
    "add_weighting_arguments", "add_family_arguments", "parse_task_weights", "LATENT_HEADS", "DEFAULT_HPARAMS", "ModelEntry",
    "MODEL_CATALOGUE", "MODEL_NAMES", "default_weighting", "hparam_defaults", "check_weighting",
]


# The hyper-parameters (the network's, the weightings') live in tf_mtvib.hparams, below the families;
# they are named here too, for the command lines and the Keras side.
from .hparams import (DEFAULT_HPARAMS, LATENT_HEADS, WEIGHTING_CATALOGUE, HParam,  # noqa: E402,F401
                      WeightingEntry, add_weighting_arguments, declare_weighting, owner_of, parse_task_weights,
                      weighting_hparams)


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
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
# The package's families (tf_mtvib/families/<name>.py): their catalogue entries
# --------------------------------------------------------------------------
from . import families as _families_pkg  # noqa: E402

_families_pkg._load_package_families()
MODEL_CATALOGUE.update({n: model_entry(n) for n in _families_pkg.PACKAGE_FAMILIES})
MODEL_NAMES = tuple(MODEL_CATALOGUE)
