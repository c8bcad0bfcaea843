"""cdnn's model file: a NumPy ``.npz`` (a zip of ``.npy`` arrays) holding the
weights, the optimizer state and a JSON description of the architecture.

Loading uses ``allow_pickle=False`` and rebuilds layers only from the known
classes, so a file can never execute code; every array's shape and dtype is
checked against the architecture. Saving writes a temporary file in the
target directory and renames it over the old one, so an interrupted save
leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT = "cdnn-model"
VERSION = 1
_META = "__cdnn__"


class ModelFileError(ValueError):
    """A model file that cannot be read: not ours, truncated, corrupted or inconsistent."""


def _write_atomically(path: str, arrays: dict, overwrite: bool) -> None:
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)


def _collect(model, with_optimizer: bool) -> tuple[dict, dict]:
    if not model.built:
        raise ValueError(f"Model {model.name!r} has not been built: it has no weights to save yet")
    weights = model.weights
    arrays = {f"weight_{i}": w for i, w in enumerate(weights)}
    meta = {"format": FORMAT, "version": VERSION, "config": model.get_config(),
            "weights": [list(w.shape) for w in weights]}
    if with_optimizer and model.compiled:
        meta["compile"] = {
            "optimizer": model.optimizer.get_config(),
            "loss": model.loss.get_config() if model.loss is not None else None,
            "metric": model._metric.get_config() if model._metric is not None else None,
            "iterations": int(model.optimizer.iterations),
        }
        slots = [s for pair in model.optimizer._slots for s in pair]
        if len(model.optimizer._slots) == len(weights):
            meta["compile"]["slots"] = [list(s.shape) if s is not None else None for s in slots]
            arrays.update({f"slot_{i}": s for i, s in enumerate(slots) if s is not None})
    return arrays, meta


def save_model(model, path, overwrite: bool = True) -> None:
    """Write the whole model (see the module docstring)."""
    arrays, meta = _collect(model, with_optimizer=True)
    meta["kind"] = "model"
    _write_atomically(path, {_META: _meta_array(meta), **arrays}, overwrite)


def save_weights(model, path, overwrite: bool = True) -> None:
    """Write the weights and the architecture they belong to."""
    arrays, meta = _collect(model, with_optimizer=False)
    meta["kind"] = "weights"
    _write_atomically(path, {_META: _meta_array(meta), **arrays}, overwrite)


def _read(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path}")
    if not zipfile.is_zipfile(path):
        # np.load would read a bare .npy array, or call anything else a pickle
        raise ModelFileError(f"{path} is not a cdnn model file (a zip archive of NumPy arrays), or it is "
                             f"truncated or corrupted")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise ModelFileError(f"{path}: the file contains pickled Python objects, which cdnn never loads "
                                 f"(they could run code). It was not written by cdnn.") from None
        raise ModelFileError(f"{path} is not a readable cdnn model file: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a cdnn model file, or it is truncated or corrupted "
                             f"({type(exc).__name__}: {exc})") from None
    odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if odd:
        raise ModelFileError(f"{path}: member {odd[0]!r} is not a NumPy array; the file was not written by cdnn")
    meta_arr = arrays.pop(_META, None)
    if meta_arr is None or meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
        raise ModelFileError(f"{path} is a NumPy archive but not a cdnn model file (no architecture record)")
    try:
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: the architecture record is corrupted ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a cdnn model file (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ModelFileError(f"{path}: written by a cdnn file format version {meta.get('version')!r}; "
                             f"this cdnn reads version {VERSION}")
    return meta, arrays


def _checked_weights(path: str, meta: dict, arrays: dict, expected_shapes: list) -> list:
    shapes = meta.get("weights")
    if not isinstance(shapes, list) or len(shapes) != len(expected_shapes):
        raise ModelFileError(f"{path}: holds {len(shapes) if isinstance(shapes, list) else 'no'} weight arrays, "
                             f"the architecture needs {len(expected_shapes)}")
    out = []
    for i, shape in enumerate(expected_shapes):
        a = arrays.get(f"weight_{i}")
        if a is None:
            raise ModelFileError(f"{path}: weight array {i} is missing")
        if a.dtype != np.float32 or a.shape != tuple(shape):
            raise ModelFileError(f"{path}: weight array {i} has dtype {a.dtype} and shape {a.shape}, "
                                 f"expected float32 {tuple(shape)}")
        if not np.isfinite(a).all():
            raise ModelFileError(f"{path}: weight array {i} contains NaN or infinity")
        out.append(a)
    return out


def _model_from_config(path: str, config) -> "object":
    from cdnn import layers as layers_module
    from cdnn.models import Sequential

    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ModelFileError(f"{path}: the architecture record has no layer list")
    try:
        layers = [layers_module.deserialize(c) for c in config["layers"]]
        model = Sequential(layers, name=config.get("name"))
        if not model.built:
            shape = config.get("input_shape")
            if not isinstance(shape, list):
                raise ModelFileError(f"{path}: the architecture has no input shape")
            model.build((None, *shape))
    except ModelFileError:
        raise
    except (TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise ModelFileError(f"{path}: invalid architecture: {type(exc).__name__}: {exc}") from None
    return model


def load_model(path, compile: bool = True):
    """Rebuild a model saved by :func:`save_model`."""
    from cdnn import losses, metrics, optimizers

    path = os.fspath(path)
    meta, arrays = _read(path)
    model = _model_from_config(path, meta.get("config"))
    weights = _checked_weights(path, meta, arrays, [w.shape for w in model.weights])
    model.set_weights(weights)
    comp = meta.get("compile")
    if compile and isinstance(comp, dict):
        try:
            model.compile(optimizer=optimizers.get(comp["optimizer"]),
                          loss=losses.get(comp["loss"]) if comp.get("loss") else None,
                          metrics=[metrics.get(comp["metric"])] if comp.get("metric") else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid compile settings: {exc}") from None
        slots = comp.get("slots")
        if isinstance(slots, list):
            params = model.weights
            model.optimizer.build(params)
            if len(slots) != 2 * len(params):
                raise ModelFileError(f"{path}: optimizer state does not match the weights")
            for i, shape in enumerate(slots):
                own = model.optimizer._slots[i // 2][i % 2]
                a = arrays.get(f"slot_{i}")
                if (shape is None) != (own is None) or (a is None) != (shape is None):
                    raise ModelFileError(f"{path}: optimizer slot {i} does not match {comp['optimizer'].get('class_name')}")
                if a is not None:
                    if a.dtype != np.float32 or a.shape != own.shape:
                        raise ModelFileError(f"{path}: optimizer slot {i} has dtype {a.dtype} and shape {a.shape}, "
                                             f"expected float32 {own.shape}")
                    own[...] = a
        iterations = comp.get("iterations", 0)
        if not isinstance(iterations, int) or iterations < 0:
            raise ModelFileError(f"{path}: invalid optimizer iteration count {iterations!r}")
        model.optimizer.iterations = iterations
    return model


def load_weights(model, path) -> None:
    """Load weights into ``model``, whose architecture must match the file's."""
    path = os.fspath(path)
    meta, arrays = _read(path)
    if not model.built:
        shape = (meta.get("config") or {}).get("input_shape")
        if not isinstance(shape, list):
            raise ValueError(f"Model {model.name!r} is not built and {path} has no input shape to build it from")
        model.build((None, *shape))
    weights = _checked_weights(path, meta, arrays, [w.shape for w in model.weights])
    model.set_weights(weights)
