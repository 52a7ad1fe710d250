"""Model families as plugins: one file per family, found by name.

A family is a network shape, ``image -> {task: logits}``, with its default
task weighting and its hyper-parameters. Each is one file,
``tf_mtvib/families/<name>.py``, holding

* ``SPEC``, a :class:`FamilySpec`: the name, a one-line description, the
  default weighting, the family's own hyper-parameters (:class:`HParam`, with
  defaults and help), the data sets it accepts, the batch extras it needs, and
  whether it is stochastic; and
* ``build(dataset_spec, hp)``, the builder, returning ``(inputs, outputs)``
  of a functional network; ``hp`` holds every resolved hyper-parameter.

Importing a family file imports neither TensorFlow nor Keras: the builder
imports them when it is called, so ``train.py --help`` and the commands' flags
(generated from the specs) answer at once.

A family outside this package registers in one of two ways, and then reaches
``train``, ``evaluate``, ``export``, ``tune`` and ``reproduce`` with no edit to
tf_mtvib:

* the entry-point group ``tf_mtvib.families`` of its distribution, naming a
  module that defines ``SPEC`` (and ``build``), or a :class:`FamilySpec`::

      [project.entry-points."tf_mtvib.families"]
      toy = "my_package.toy"

* :func:`register_family` from code that runs before the command builds its parser.

See docs/families.md ("Write your own family").
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from ..hparams import HParam

__all__ = ["FamilySpec", "HParam", "IncompatibleDataset", "check_dataset", "register_family", "get_family", "family_names", "families", "builder_of",
           "terms_of", "risk_environments_of", "with_derived_extras", "ENTRY_POINT_GROUP", "PACKAGE_FAMILIES"]

#: The entry-point group through which other distributions register families
ENTRY_POINT_GROUP = "tf_mtvib.families"

#: The package's own families, in the paper's tables' order, then Alemi et al.'s Deep VIB and its twin,
#: then MT-CRL's (Hu et al. 2022): its LeNet STL and shared-bottom baselines, MMoE, and MT-CRL itself,
#: and MTVIB on the same LeNet trunk; then VMTL's (Shen et al. 2021): BMTL, VBMTL and VMTL, and MTVIB on the
#: same frozen features
PACKAGE_FAMILIES = ("stl", "gs", "uwl", "stvib", "mtvib", "vib_mlp", "mlp", "lenet_stl", "lenet_mtl", "mmoe", "mtcrl",
                    "lenet_mtvib", "bmtl", "vbmtl", "vmtl", "domain_mtvib")


@dataclasses.dataclass(frozen=True)
class FamilySpec:
    """What the commands know of a family without building it.

    ``builder``: ``"module:function"`` (imported when called; default: ``build`` in
    the module that defines the spec). ``hparams``: the family's *own*
    hyper-parameters (flags ``--<name>`` are generated from them); they share the
    run configuration's ``hparams`` with the network's common ones
    (:data:`tf_mtvib.hparams.DEFAULT_HPARAMS`) and the weightings', so their names
    must not clash; families may share one only by declaring the same :class:`HParam`
    (e.g. MMoE's and MT-CRL's ``num_modules``). ``defaults``: the family's overrides of the common ones (e.g.
    ``latent_head``). ``weighting_defaults``: ``"module:function"`` mapping a
    :class:`~tf_mtvib.datasets.spec.DatasetSpec` to overrides of the default
    weighting's hyper-parameters (GS: 1/K per task). ``datasets``: the data sets it
    accepts (None: any). ``needs``: the per-example batch extras it reads beyond
    the image and the labels (the training batches' inputs are then
    ``{"image": ..., <extra>: ...}``). ``inputs``: ``"image"`` (one image, every task
    labelled) or ``"per_task"`` (multi-input: each task its own images, a batch holds a
    sub-batch of each with the others' labels -1). ``terms``: ``"module:function"``
    mapping ``(dataset_spec, hp)`` to the family's loss terms (:mod:`tf_mtvib.terms`).
    ``risk_environments``: ``"module:function"`` mapping ``hp`` to the environments (values of
    the extra ``environment``) whose examples the task losses read in training (empty: all);
    MT-CRL's risk reads the train environment only. ``prepare``: ``"module:function"`` called with the data
    directory before the family builds (it fetches or trains, once, what the builder then finds cached:
    VMTL's frozen extractor). ``derive_extras``: ``"module:function"`` mapping ``(splits, pool)`` to
    extras ``{name: (N, ...) array}``, one per split, that the family computes for the images of each split
    from the training split ``pool`` before training (VMTL's cross attention over each task's same-class training images); they must
    be among ``needs``. ``stochastic``: its predictions sample (a posterior).
    ``search``/``default_search``: the hyper-parameters ``tune`` searches, and how.
    """

    name: str
    description: str
    default_weighting: str = "fixed"
    hparams: Mapping[str, HParam] = dataclasses.field(default_factory=dict)
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    builder: Optional[str] = None
    weighting_defaults: Optional[str] = None
    datasets: Optional[Tuple[str, ...]] = None
    inputs: str = "image"
    needs: Tuple[str, ...] = ()
    terms: Optional[str] = None
    risk_environments: Optional[str] = None
    prepare: Optional[str] = None
    derive_extras: Optional[str] = None
    stochastic: bool = False
    search: Tuple[str, ...] = ()       # what ``tune`` searches by default (empty: the family is not tunable)
    default_search: str = "bayesian"   # ``tune --search`` when not given: grid, bayesian or random
    module: Optional[str] = None       # where the spec was defined (set on registration)


class IncompatibleDataset(ValueError):
    """A family asked for a data set it cannot take (the commands exit 2 with this message)."""


def check_dataset(spec: "FamilySpec", dataset: str) -> None:
    """Raise :class:`IncompatibleDataset` unless ``spec`` takes the data set ``dataset``."""
    if spec.datasets is not None and dataset not in spec.datasets:
        raise IncompatibleDataset(f"model {spec.name!r} does not take data set {dataset!r}; "
                                  f"it takes: {', '.join(spec.datasets)}")


#: What a family's network reads: one image per example with every task labelled, or each task its own images
INPUT_KINDS = ("image", "per_task")

_FAMILIES: Dict[str, FamilySpec] = {}
_ENTRY_POINTS_LOADED = False


def register_family(spec: FamilySpec, module: Optional[str] = None) -> FamilySpec:
    """Register ``spec`` (again with an equal spec: nothing happens). ``module`` names
    where its ``build`` lives when ``spec.builder`` is not given."""
    from ..hparams import DEFAULT_HPARAMS, WEIGHTING_CATALOGUE, weighting_hparams

    if not isinstance(spec, FamilySpec):
        raise TypeError(f"register_family takes a FamilySpec, got {type(spec).__name__}")
    if module and not spec.module:
        spec = dataclasses.replace(spec, module=module)
    if spec.builder is None and spec.module is None:
        raise ValueError(f"family {spec.name!r}: give builder='module:function' or register it from its module")
    old = _FAMILIES.get(spec.name)
    if old is not None:
        if old == spec:
            return old
        raise ValueError(f"a family named {spec.name!r} is registered already (from {old.module or old.builder})")
    if spec.default_weighting not in WEIGHTING_CATALOGUE:
        raise ValueError(f"family {spec.name!r}: unknown default weighting {spec.default_weighting!r}; "
                         f"choose one of: {', '.join(WEIGHTING_CATALOGUE)}")
    taken = set(DEFAULT_HPARAMS) | set(weighting_hparams()) | {"weighting"}
    for other in _FAMILIES.values():      # another family's: taken unless declared identically (shared)
        taken |= {k for k, h in other.hparams.items() if spec.hparams.get(k, h) != h}
    clash = sorted(set(spec.hparams) & taken)
    if clash:
        raise ValueError(f"family {spec.name!r}: hyper-parameter name(s) {clash} are taken (the network's common "
                         "ones, a weighting's or another family's with another default, help or parser)")
    if spec.inputs not in INPUT_KINDS:
        raise ValueError(f"family {spec.name!r}: inputs must be one of {INPUT_KINDS}, got {spec.inputs!r}")
    unknown = sorted(set(spec.defaults) - set(DEFAULT_HPARAMS) - set(spec.hparams))
    if unknown:
        raise ValueError(f"family {spec.name!r}: defaults for unknown hyper-parameter(s) {unknown}")
    _FAMILIES[spec.name] = spec
    return spec


def _load_package_families() -> None:
    for name in PACKAGE_FAMILIES:
        if name not in _FAMILIES:
            mod = importlib.import_module(f"{__name__}.{name}")
            register_family(mod.SPEC, module=mod.__name__)


def _load_entry_points() -> None:
    """Register every family of the ``tf_mtvib.families`` entry-point group (once)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if isinstance(obj, FamilySpec):
            register_family(obj)
        elif hasattr(obj, "SPEC"):
            register_family(obj.SPEC, module=obj.__name__)
        else:
            raise TypeError(f"entry point {ep.name} = {ep.value} of {ENTRY_POINT_GROUP!r} is neither a FamilySpec "
                            "nor a module with a SPEC")


def refresh_entry_points() -> None:
    """Look the entry points up again (a distribution installed in this process)."""
    global _ENTRY_POINTS_LOADED
    _ENTRY_POINTS_LOADED = False
    _load_entry_points()


def families() -> Dict[str, FamilySpec]:
    """name -> spec of every family: the package's, then the registered and entry-point ones."""
    _load_package_families()
    _load_entry_points()
    return dict(_FAMILIES)


def family_names() -> Tuple[str, ...]:
    return tuple(families())


def get_family(name: str) -> FamilySpec:
    """The spec of family ``name`` (ValueError listing the choices otherwise)."""
    _load_package_families()
    if name not in _FAMILIES:
        _load_entry_points()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(family_names())}") from None


def _resolve(path: str) -> Callable:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def builder_of(spec: FamilySpec) -> Callable:
    """The builder of ``spec``: ``(dataset_spec, hp) -> (inputs, outputs)`` (imports its module)."""
    return _resolve(spec.builder or f"{spec.module}:build")


def weighting_overrides(spec: FamilySpec, dataset_spec) -> Dict[str, Any]:
    """The family's overrides of its default weighting's hyper-parameters for ``dataset_spec``."""
    return dict(_resolve(spec.weighting_defaults)(dataset_spec)) if spec.weighting_defaults else {}


def terms_of(spec: FamilySpec, dataset_spec, hp: Mapping[str, Any]) -> list:
    """The family's loss terms for ``dataset_spec`` and the resolved hyper-parameters ``hp``."""
    return list(_resolve(spec.terms)(dataset_spec, hp)) if spec.terms else []


def risk_environments_of(spec: FamilySpec, hp: Mapping[str, Any]) -> Tuple[int, ...]:
    """The environments the family's task losses read in training, for the hyper-parameters ``hp`` (() : all)."""
    return tuple(_resolve(spec.risk_environments)(hp)) if spec.risk_environments else ()


def prepare_family(spec: FamilySpec, data_dir=None) -> None:
    """Run the family's ``prepare`` hook with ``data_dir`` (None: the data directory's default); nothing
    for a family without one."""
    if spec.prepare:
        _resolve(spec.prepare)(data_dir)


def with_derived_extras(spec: FamilySpec, splits: Sequence, pool, data_dir=None) -> List:
    """Each split of ``splits`` with the extras of the family's ``derive_extras`` hook, computed from the
    training split ``pool`` in one call (the splits themselves when the family has none). The family's
    ``prepare`` hook runs first, with ``data_dir``: the derivation may read what it caches (VMTL: the frozen
    extractor)."""
    splits = list(splits)
    if not spec.derive_extras:
        return splits
    prepare_family(spec, data_dir)
    derived = list(_resolve(spec.derive_extras)(splits, pool))
    if len(derived) != len(splits):
        raise ValueError(f"family {spec.name!r}: derive_extras gave extras for {len(derived)} splits, "
                         f"not the {len(splits)} it was given")
    stray = sorted({name for extras in derived for name in extras} - set(spec.needs))
    if stray:
        raise ValueError(f"family {spec.name!r}: derive_extras gave {stray}, which are not among its needs {spec.needs}")
    return [dataclasses.replace(split, extras={**split.extras, **extras}) for split, extras in zip(splits, derived)]


def import_family(name: str) -> None:
    """Import the module of family ``name`` (its custom Keras layers register for ``.keras``
    loading); nothing for an unknown name."""
    try:
        spec = get_family(name)
    except ValueError:
        return
    importlib.import_module((spec.builder or f"{spec.module}:build").partition(":")[0])
