"""Multi-Task Variational Information Bottleneck (MTVIB) in TensorFlow 2 / Keras 3 / TFP.

Importing the package registers its Keras classes (``tf_mtvib>MultiTaskModel``,
the layers of :mod:`tf_mtvib.layers` and the weightings of
:mod:`tf_mtvib.weightings`), so that a saved run loads with
plain Keras::

    import tf_mtvib, keras
    model = keras.saving.load_model("runs/RUN/model.keras")

``import tf_mtvib`` itself stays cheap (it does not import TensorFlow, so the
command lines answer ``--help`` at once): when Keras is already imported the
classes are registered right away, otherwise as soon as Keras is imported (by
the user, or by TensorFlow, which imports it). :func:`register_keras_objects`
does it explicitly.
"""
import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

__all__ = ["register_keras_objects", "KERAS_MODULES"]

#: The modules whose import registers the package's Keras classes (models imports layers).
KERAS_MODULES = (__name__ + ".models",)
#: Modules that must be fully imported before KERAS_MODULES can be: registration waits until
#: none of them is half-way through its import (TensorFlow, for one, imports Keras part-way).
_PREREQUISITES = frozenset({"tensorflow", "keras", "tensorflow_probability", "tf_keras",
                            __name__ + ".layers", __name__ + ".weightings", __name__ + ".models"})


def register_keras_objects() -> None:
    """Register the package's Keras classes for ``keras.saving.load_model``
    (imports TensorFlow, Keras and TFP); calling it again does nothing."""
    for name in KERAS_MODULES:
        importlib.import_module(name)


class _RegisterAfterKeras(importlib.abc.MetaPathFinder):
    """A post-import hook: once ``keras`` is imported and none of the prerequisites is
    half-imported, :func:`register_keras_objects` runs and the hook removes itself.

    It finds nothing itself; for a prerequisite it asks the other finders for the
    module's spec and wraps the loader, to know when that module's import ends.
    """

    def __init__(self):
        self.importing: set = set()   # prerequisites whose code is running now
        self._finding = False
        self._done = False

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PREREQUISITES or self._finding:
            return None
        self._finding = True          # importlib.util.find_spec asks the meta path again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _NotifyingLoader(spec.loader, fullname, self)
        return spec

    def imported(self) -> None:
        if self._done or self.importing or "keras" not in sys.modules:
            return
        self._done = True
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        try:
            register_keras_objects()
        except Exception as e:  # never break the user's own `import keras`
            warnings.warn(f"tf_mtvib could not register its Keras classes ({type(e).__name__}: {e}); "
                          f"call tf_mtvib.register_keras_objects() to see why", RuntimeWarning, stacklevel=2)


class _NotifyingLoader(importlib.abc.Loader):
    """Runs the wrapped loader and tells the hook when the module's code has finished."""

    def __init__(self, loader, name: str, hook: _RegisterAfterKeras):
        self._loader, self._name, self._hook = loader, name, hook

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._hook.importing.add(self._name)
        try:
            self._loader.exec_module(module)
        finally:
            self._hook.importing.discard(self._name)
        self._hook.imported()

    def __getattr__(self, name):      # get_source, get_resource_reader, ...: the wrapped loader's
        return getattr(self._loader, name)


if "keras" in sys.modules:
    register_keras_objects()
else:
    sys.meta_path.insert(0, _RegisterAfterKeras())
