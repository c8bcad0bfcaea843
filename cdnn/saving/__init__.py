"""Saving and loading models: ``keras.saving.save_model`` / ``load_model`` and the file kinds.

The file name says what is written, as in Keras 3:

- ``*.keras``: Keras 3's archive (``config.json`` + ``model.weights.h5``), which real
  Keras loads; needs ``h5py``.
- ``*.weights.h5`` (or ``*.h5`` with ``save_weights``): Keras 3's weights layout; needs ``h5py``.
- any other name (``*.cdnn`` by convention): cdnn's own format, a zip of ``.npy`` arrays
  and a JSON record, which needs nothing but NumPy.

Loading looks at the content, not the name, so files written by earlier cdnn
versions under a ``.keras`` name still load.
"""

from __future__ import annotations

import json
import os

from cdnn import _files, _saving
from cdnn._saving import ModelFileError
from cdnn.saving import keras_format
from cdnn.saving.object_registration import (
    CustomObjectScope,
    custom_object_scope,
    get_custom_objects,
    get_registered_name,
    get_registered_object,
    register_keras_serializable,
)

__all__ = [
    "save_model",
    "load_model",
    "save_weights",
    "load_weights",
    "ModelFileError",
    "register_keras_serializable",
    "get_registered_name",
    "get_registered_object",
    "get_custom_objects",
    "CustomObjectScope",
    "custom_object_scope",
]


def _path(filepath) -> str:
    return _files.filename(filepath)


def _readable(filepath) -> str:
    """The path of a regular file to read: a device or a pipe is refused before a byte is read."""
    path = _path(filepath)
    with _saving._open(path, None):
        pass
    return path


def _kind(path: str, weights: bool) -> str:
    lower = path.lower()
    if lower.endswith(".keras"):
        return "keras"
    if lower.endswith(".weights.h5") or (weights and lower.endswith((".h5", ".hdf5"))):
        return "h5"
    if lower.endswith((".h5", ".hdf5")):
        raise ValueError(
            f"Invalid filepath {path!r}: cdnn does not write Keras 2's legacy HDF5 model format. "
            f"Use a `.keras` name for Keras 3's format (which Keras loads), or `.cdnn` for cdnn's own."
        )
    return "cdnn"


def save_model(model, filepath, overwrite: bool = True, **kwargs) -> None:
    """Save ``model`` to ``filepath``; the name's extension chooses the format (see the module docs)."""
    if kwargs:
        raise TypeError(f"save_model: unsupported argument(s) {sorted(kwargs)}")
    path = _path(filepath)
    if _kind(path, weights=False) == "keras":
        keras_format.save_keras(model, path, overwrite=overwrite)
    else:
        _saving.save_model(model, path, overwrite=overwrite)


def save_weights(model, filepath, overwrite: bool = True) -> None:
    """Save the weights: Keras' ``.weights.h5`` layout for such names, else cdnn's own format."""
    path = _path(filepath)
    kind = _kind(path, weights=True)
    if kind == "keras":
        raise ValueError(
            f"Invalid filepath {path!r} for save_weights: a `.keras` file holds a whole model "
            f"(use model.save); weights go to a `.weights.h5` file"
        )
    if kind == "h5":
        keras_format.save_weights_h5(model, path, overwrite=overwrite)
    else:
        _saving.save_weights(model, path, overwrite=overwrite)


def load_model(filepath, custom_objects=None, compile: bool = True, safe_mode: bool = True):
    """Load a model saved by cdnn (either format) or by Keras 3 (``.keras``).

    ``custom_objects`` (``{"package>Name" or "Name": class}``) names user classes a file's
    compile settings use (metrics, losses), as those registered with
    :func:`register_keras_serializable`; cdnn builds only the layers it implements and never
    imports or runs code a file names, so ``safe_mode`` cannot be turned off.
    """
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"load_model: custom_objects must be a dict, received {type(custom_objects).__name__}")
    if safe_mode is not True:
        raise ValueError("load_model: safe_mode=False is not supported: cdnn never runs code from a file")
    path = _readable(filepath)
    with custom_object_scope(custom_objects):
        if keras_format.is_keras_archive(path):
            return keras_format.load_keras(path, compile=compile)
        if keras_format.is_hdf5(path):
            return keras_format.load_legacy_h5(path, compile=compile)
        return _saving.load_model(path, _from_config, compile=compile)


def _from_config(config: dict):
    """A model from cdnn's architecture record (the models package knows the classes; _saving does not)."""
    from cdnn.models import model_from_config

    return model_from_config(config)


def load_weights(model, filepath) -> None:
    """Load weights written by ``save_weights`` or ``save`` (cdnn's or Keras' formats)."""
    path = _readable(filepath)
    if keras_format.is_hdf5(path):
        keras_format.load_weights_h5(model, path)
    elif keras_format.is_keras_archive(path):
        loaded = keras_format.load_keras(path, compile=False)
        if [w.shape for w in loaded.weights] != [w.shape for w in model.weights]:
            raise ModelFileError(
                f"{path}: its weights have shapes {[w.shape for w in loaded.weights]}, model "
                f"{model.name!r} has {[w.shape for w in model.weights]}"
            )
        _saving._assign_weights(path, model, loaded.get_weights())
    else:
        _saving.load_weights(model, path)


def model_to_json(model, **kwargs) -> str:
    """Keras' ``model.to_json()``: the architecture as Keras serializes it."""
    return json.dumps(keras_format.model_config(model), **kwargs)


def model_from_json(json_string: str, custom_objects=None):
    """Keras' ``keras.models.model_from_json``: a new model (fresh weights) from ``to_json``'s text.

    cdnn builds only the layers it implements: a custom layer is refused, registered or not."""
    if custom_objects is not None and not isinstance(custom_objects, dict):
        raise TypeError(f"model_from_json: custom_objects must be a dict, received {type(custom_objects).__name__}")
    with custom_object_scope(custom_objects):
        return keras_format.model_from_config(json.loads(json_string))
