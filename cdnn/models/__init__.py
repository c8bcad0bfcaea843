"""Models: ``Model`` (functional and subclassed), ``Sequential``, Keras' ``keras.models`` functions, and
loading models from their configs."""

from cdnn.layers import core as _layers_core
from cdnn.models.cloning import clone_model
from cdnn.models.functional import Functional
from cdnn.models.model import Model
from cdnn.models.sequential import Sequential, load_model
from cdnn.saving import model_from_json, save_model

_layers_core.register(Sequential, Functional)


def deserialize_layer(config: dict):
    """A layer (or a model used as a layer) from ``{"class_name": ..., "config": {...}}``."""
    return _layers_core.deserialize(config)


def model_from_config(config: dict):
    """A model from its :meth:`get_config`: Functional when it says so, else Sequential (cdnn's first format)."""
    if isinstance(config, dict) and config.get("class_name") == "Functional":
        return Functional.from_config(config)
    return Sequential.from_config(config)


__all__ = [
    "Model",
    "Functional",
    "Sequential",
    "load_model",
    "save_model",
    "model_from_json",
    "clone_model",
    "model_from_config",
]
