"""cdnn's model file: a NumPy ``.npz`` (a zip of ``.npy`` arrays) holding the
weights, the optimizer state and a JSON description of the architecture.

Loading reads each ``.npy`` member's header itself, refuses object arrays
(pickles) and rebuilds layers only from the known classes, so a file can
never execute code; each array's declared size is checked against the bytes
the archive holds for it before anything is allocated, so a crafted file
cannot make cdnn allocate more than it holds, and every array's shape and
dtype is checked against the architecture. Any damage raises
:class:`ModelFileError`.

Saving writes a temporary file in the target directory and renames it over
the old one, so an interrupted save leaves the previous file intact. A save
that is killed (SIGKILL, power cut) leaves its temporary file
(``.NAME.HOST-PID.*.tmp``); the next save to the same path deletes it once
its process is gone.
"""
from __future__ import annotations

import errno
import json
import math
import os
import socket
import zipfile
from typing import BinaryIO, Callable

import numpy as np
from cdnn._files import create_temporary as _create_temporary
from cdnn._files import process_exists as _process_exists

FORMAT = "cdnn-model"
VERSION = 1
_META = "__cdnn__"
#: the architecture record is a few kilobytes; far more is not a cdnn file
MAX_META_BYTES = 16 << 20
#: the optimizer's step count must fit the C core's 64-bit counter with room to train
MAX_ITERATIONS = 2**62


class ModelFileError(ValueError):
    """A model file that cannot be read: not ours, truncated, corrupted or inconsistent."""


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def _temp_prefix(path: str) -> str:
    """Prefix of the temporary files of saves to ``path``: ``.NAME.HOST-PID.``, hidden, in its directory."""
    return f".{os.path.basename(path)}.{_host()}-{os.getpid()}."


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files that saves to ``path`` killed on this host left behind.

    Only files whose writer process no longer exists are removed, so a save
    running at the same time in another process keeps its file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    head, host = f".{os.path.basename(path)}.", _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        owner = name[len(head):-len(".tmp")].rsplit(".", 1)[0]   # HOST-PID (then the random part)
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _process_exists(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _write_atomically(path: str, arrays: dict | Callable[[BinaryIO], object], overwrite: bool) -> None:
    path = os.fspath(path)
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "is a folder, expected a file path", path)
    _remove_stale_temporaries(path)
    try:
        fd, tmp = _create_temporary(directory, _temp_prefix(path), ".tmp")
    except OSError as exc:  # name the user's path, not the hidden temporary's
        why = (f"folder {directory} does not exist" if not os.path.isdir(directory)
               else f"cannot create a file in folder {directory} ({exc.strerror})")
        raise type(exc)(exc.errno, why, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            arrays(f) if callable(arrays) else np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (a power cut after it must not bring the old file back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
        from cdnn.trainers.compile_utils import serialize_metrics

        meta["compile"] = {
            "optimizer": model.optimizer.get_config(),
            "loss": model.loss.get_config() if model.loss is not None else None,
            "metrics": serialize_metrics(model._compile_metrics),
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


def _read_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> np.ndarray:
    """One ``.npy`` member, its header checked against the bytes the archive declares for it first."""
    name = info.filename
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ModelFileError(f"{path}: member {name!r} is a .npy array of format version {version}, "
                                 f"which cdnn does not write")
        if dtype.hasobject:
            raise ModelFileError(f"{path}: the file contains pickled Python objects, which cdnn never loads "
                                 f"(they could run code). It was not written by cdnn.")
        nbytes = math.prod(shape) * dtype.itemsize
        header = f.tell()
        if header + nbytes != info.file_size or nbytes > limit:
            raise ModelFileError(f"{path}: member {name!r} declares an array of shape {shape} ({nbytes} bytes) "
                                 f"but holds {info.file_size - header} bytes: the file is corrupted")
        out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
        view = memoryview(out.reshape(-1, order="A")).cast("B") if out.size else memoryview(b"")
        got = 0
        while got < nbytes:
            chunk = f.read(min(nbytes - got, 1 << 20))
            if not chunk:
                break
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
        if got != nbytes:
            raise ModelFileError(f"{path}: member {name!r} is truncated ({got} of {nbytes} bytes)")
    return out


def _read(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No model file at {path}")
    if not zipfile.is_zipfile(path):
        # np.load would read a bare .npy array, or call anything else a pickle
        raise ModelFileError(f"{path} is not a cdnn model file (a zip archive of NumPy arrays), or it is "
                             f"truncated or corrupted")
    arrays = {}
    try:
        size = os.path.getsize(path)
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else None
                if key is None or info.is_dir() or key in arrays:
                    raise ModelFileError(f"{path}: member {info.filename!r} is not a NumPy array; the file was "
                                         f"not written by cdnn")
                # stored members (what cdnn writes) hold their bytes in the file; a compressed one may hold
                # at most what deflate can expand (about 1032:1) - never more than that is allocated
                limit = MAX_META_BYTES if key == _META else (
                    size if info.compress_type == zipfile.ZIP_STORED else 1100 * max(info.compress_size, 1))
                arrays[key] = _read_member(path, zf, info, limit)
    except ModelFileError:
        raise
    except Exception as exc:  # anything zipfile, zlib or numpy raise on malformed bytes: the file is damaged
        raise ModelFileError(f"{path} is not a cdnn model file, or it is truncated or corrupted "
                             f"({type(exc).__name__}: {exc})") from None
    meta_arr = arrays.pop(_META, None)
    if meta_arr is None or meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
        raise ModelFileError(f"{path} is a NumPy archive but not a cdnn model file (no architecture record)")
    try:
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: the architecture record is corrupted ({type(exc).__name__}: {exc})") from None
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


#: what interpreting a hand-edited or corrupted JSON record can raise (wrong types, sizes, nesting)
_BAD_RECORD = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, MemoryError,
               RecursionError)


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
    except _BAD_RECORD as exc:
        raise ModelFileError(f"{path}: invalid architecture: {type(exc).__name__}: {exc}") from None
    return model


def load_model(path, compile: bool = True):
    """Rebuild a model saved by :func:`save_model`."""
    from cdnn import losses, optimizers
    from cdnn.trainers.compile_utils import deserialize_metrics

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
                          metrics=deserialize_metrics(comp))
        except _BAD_RECORD as exc:
            raise ModelFileError(f"{path}: invalid compile settings: {type(exc).__name__}: {exc}") from None
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
                    raise ModelFileError(f"{path}: optimizer slot {i} does not match {type(model.optimizer).__name__}")
                if a is not None:
                    if a.dtype != np.float32 or a.shape != own.shape:
                        raise ModelFileError(f"{path}: optimizer slot {i} has dtype {a.dtype} and shape {a.shape}, "
                                             f"expected float32 {own.shape}")
                    own[...] = a
        iterations = comp.get("iterations", 0)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations < MAX_ITERATIONS:
            raise ModelFileError(f"{path}: invalid optimizer iteration count {iterations!r}, expected an "
                                 f"integer in [0, 2**62)")
        model.optimizer.iterations = iterations
    return model


def load_weights(model, path) -> None:
    """Load weights into ``model``, whose architecture must match the file's."""
    path = os.fspath(path)
    meta, arrays = _read(path)
    if not model.built:
        config = meta.get("config")
        shape = config.get("input_shape") if isinstance(config, dict) else None
        if not isinstance(shape, list):
            raise ValueError(f"Model {model.name!r} is not built and {path} has no input shape to build it from")
        try:
            model.build((None, *shape))
        except _BAD_RECORD as exc:
            raise ModelFileError(f"{path}: invalid input shape {shape!r}: {type(exc).__name__}: {exc}") from None
    weights = _checked_weights(path, meta, arrays, [w.shape for w in model.weights])
    model.set_weights(weights)
