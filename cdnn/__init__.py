"""cdnn: dense deep neural networks trained on the CPU by a fused C core, behind Keras' API.

A Keras script ports by changing its import: ``import cdnn as keras`` or
``from cdnn import keras`` (``cdnn.keras`` is this same namespace).
"""

from __future__ import annotations

import sys as _sys
import types as _types

from cdnn._version import __version__

try:
    from cdnn import _core
except ImportError as _exc:
    from cdnn._import_error import explain as _explain

    raise ImportError(_explain(_exc)) from _exc
from cdnn import (
    activations,
    backend,
    callbacks,
    constraints,
    datasets,
    initializers,
    layers,
    losses,
    metrics,
    models,
    optimizers,
    regularizers,
    saving,
    utils,
)
from cdnn._config import build_info, get_num_threads, set_num_threads, show_config
from cdnn.layers import Input
from cdnn.models import Model, Sequential, load_model


def _lazy_submodule(name: str) -> _types.ModuleType:
    """``cdnn.<name>``, executed on first attribute access (``wrappers`` imports scikit-learn: ~1 s)."""
    import importlib.util

    spec = importlib.util.find_spec(f"{__name__}.{name}")
    if spec is None or spec.loader is None:
        raise ImportError(f"cdnn.{name} is missing from this installation")
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    _sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


wrappers = _lazy_submodule("wrappers")

#: ``from cdnn import keras`` and ``import cdnn as tf; tf.keras.layers...`` both see this package
keras = _sys.modules[__name__]
_sys.modules[__name__ + ".keras"] = keras
# ``from cdnn.keras.layers import Dense`` must find the same modules, not import second copies of them
for _name, _module in list(_sys.modules.items()):
    if _name.startswith(__name__ + ".") and not _name.startswith(__name__ + ".keras") and "._" not in _name:
        _sys.modules[__name__ + ".keras." + _name[len(__name__) + 1 :]] = _module
del _name, _module

__all__ = [
    "Model",
    "Sequential",
    "Input",
    "load_model",
    "layers",
    "models",
    "optimizers",
    "losses",
    "metrics",
    "callbacks",
    "datasets",
    "utils",
    "saving",
    "activations",
    "initializers",
    "build_info",
    "show_config",
    "get_num_threads",
    "set_num_threads",
    "keras",
    "wrappers",
    "backend",
]
