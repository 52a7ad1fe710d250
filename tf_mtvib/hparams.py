"""The hyper-parameters that can be set, without TensorFlow: :class:`HParam` (one of a weighting or a model
family: default, help and parser), the network's (:data:`DEFAULT_HPARAMS`) and the task weightings'
(:data:`WEIGHTING_CATALOGUE`: name -> one-line summary and hyper-parameters; the package's own declared
at the end of this module, a user's by :func:`tf_mtvib.weightings.register_weighting`).

The model families (:mod:`tf_mtvib.families`) check their own against these when they register;
:mod:`tf_mtvib.catalogue` adds the models on top.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional

__all__ = ["HParam", "WeightingEntry", "WEIGHTING_CATALOGUE", "declare_weighting", "weighting_hparams", "owner_of",
           "add_weighting_arguments", "parse_task_weights", "LATENT_HEADS", "DEFAULT_HPARAMS"]


@dataclasses.dataclass(frozen=True)
class HParam:
    """One hyper-parameter of a weighting.

    ``default`` is used when neither the caller nor the model's recipe sets
    it; ``parse`` turns a command-line string into the value (it may raise
    ``argparse.ArgumentTypeError`` or ``ValueError``); ``help`` is the flag's help.
    """

    default: Any
    help: str
    parse: Callable[[str], Any] = float
    metavar: Optional[str] = None


class InapplicableHParam(ValueError):
    """A hyper-parameter the chosen model has nothing to apply to (the commands exit 2 with this message)."""


# --------------------------------------------------------------------------
# The network's
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
    "float32_heads": False,    # under a mixed policy, the latent's heads and the decoders' first FC in float32
}


# --------------------------------------------------------------------------
# Weightings
# --------------------------------------------------------------------------
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
