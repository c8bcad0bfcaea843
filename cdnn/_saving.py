"""cdnn's model file: a NumPy ``.npz`` (a zip of ``.npy`` arrays) holding the
weights, the optimizer state and a JSON description of the architecture.

Loading opens only regular files (a device or a pipe is refused before a
byte is read), reads the architecture record first and then only the
members it names; their places in the archive must not overlap, and each
``.npy`` header is read and checked against the bytes the archive holds for
it and against the architecture's list of shapes before anything is inflated
or built. Layers are built under a budget of the values those arrays hold
(:mod:`cdnn._loading`), so memory while loading stays a small multiple of the
file's real content. Object arrays (pickles) are refused and layers are
rebuilt only from the known classes, so a file can never execute code.
Arrays of either byte order load (converted to this machine's). Weights
that are NaN or infinite (a diverged run's checkpoint) load, with a warning:
a file cdnn writes always loads. Any damage raises :class:`ModelFileError`.

Saving writes a temporary file in the target directory and renames it over
the old one, so an interrupted save leaves the previous file intact; a file
that is replaced keeps its permission bits. A symbolic link is written
through (the file it points to is replaced, the link stays); a folder, a
device, a pipe or a socket is refused. A save that is killed (SIGKILL, power
cut) leaves its temporary file (``.NAME.HOST-PID.*.tmp``); the next save to
the same path deletes it once its process is gone.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import struct
import warnings
import zipfile
from typing import BinaryIO, Callable

import numpy as np

from cdnn import _files, _loading
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
    """Prefix of the temporary files of saves to ``path``: ``.NAME.HOST-PID.``, hidden, in its directory.

    NAME is the file's name, shortened with a hash when long (see :func:`cdnn._files.temp_stem`).
    """
    return f".{_files.temp_stem(os.path.basename(path))}.{_host()}-{os.getpid()}."


def _remove_stale_temporaries(path: str) -> None:
    """Delete temporary files that saves to ``path`` killed on this host left behind.

    Only files whose writer process no longer exists are removed, so a save
    running at the same time in another process keeps its file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    head, host = f".{_files.temp_stem(os.path.basename(path))}.", _host()
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        owner = name[len(head) : -len(".tmp")].rsplit(".", 1)[0]  # HOST-PID (then the random part)
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _process_exists(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def _write_atomically(path, arrays: dict | Callable[[BinaryIO], object], overwrite: bool) -> None:
    path = _files.filename(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path} exists and overwrite=False")
    try:
        target, mode = _files.save_target(path)  # through a symlink; never over a device or a pipe
    except _files.NotRegularFileError as exc:
        raise ValueError(
            f"Invalid value for argument `filepath`: expected the path of a regular file (or of "
            f"a new one), received {path!r}, which is {exc.kind}"
        ) from None
    directory = os.path.dirname(os.path.abspath(target))
    _remove_stale_temporaries(target)
    try:
        fd, tmp = _create_temporary(directory, _temp_prefix(target), ".tmp")
    except OSError as exc:  # name the user's path, not the hidden temporary's
        why = (
            f"folder {directory} does not exist"
            if not os.path.isdir(directory)
            else f"cannot create a file in folder {directory} ({exc.strerror})"
        )
        raise type(exc)(exc.errno, why, path) from None
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # a replaced file keeps its permissions (0600 stays 0600)
        with os.fdopen(fd, "wb") as f:
            arrays(f) if callable(arrays) else np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
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
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.get_config(),
        "weights": [list(w.shape) for w in weights],
    }
    if with_optimizer and model.compiled:
        from cdnn import optimizers
        from cdnn.trainers.compile_utils import serialize_metrics

        if hasattr(model, "_compile_metrics"):  # Sequential: one loss, its metrics
            meta["compile"] = {
                "optimizer": optimizers.serialize(model.optimizer),
                "loss": _serialize_loss(model.loss) if model.loss is not None else None,
                "metrics": serialize_metrics(model._compile_metrics),
                "weighted_metrics": serialize_metrics(model._weighted_metrics),
                "loss_weights": _plain((model._compile_args or {}).get("loss_weights")),
                "iterations": int(model.optimizer.iterations),
            }
        else:  # graph models: per-output losses, metrics and loss weights as given to compile
            meta["compile"] = {
                "optimizer": optimizers.serialize(model.optimizer),
                "iterations": int(model.optimizer.iterations),
                "args": {k: _plain(v) for k, v in (model._compile_args or {}).items()},
            }
        # every parameter's five slot positions (optimizer slots 1-3, moving average, accumulator)
        slots = [s for row in model.optimizer._slots for s in row]
        if model.optimizer._slots_fit(model.trainable_weights):
            meta["compile"]["slots"] = [list(s.shape) if s is not None else None for s in slots]
            arrays.update({f"slot_{i}": s for i, s in enumerate(slots) if s is not None})
    return arrays, meta


def _plain(value):
    """A compile argument (names, Loss/Metric objects, per-output lists and dicts) as JSON data."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "get_config"):
        return {"__object__": {"class_name": type(value).__name__, "config": value.get_config()}}
    raise ValueError(
        f"Cannot save the compile argument {value!r}: expected names, cdnn losses/metrics, or lists and dicts of them"
    )


def _unplain(value, get):
    """The inverse of :func:`_plain`; ``get`` makes a loss or metric from its config."""
    if isinstance(value, list):
        return [_unplain(v, get) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__object__"}:
            return get(value["__object__"])
        return {k: _unplain(v, get) for k, v in value.items()}
    return value


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


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip member's local header (APPNOTE 4.3.7)


def _member_header(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int):
    """A ``.npy`` member's ``(shape, fortran, dtype, header bytes, data bytes)``, checked against the
    bytes the archive declares for it before any of its data is read."""
    name = info.filename
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ModelFileError(
                f"{path}: member {name!r} is a .npy array of format version {version}, which cdnn does not write"
            )
        header = f.tell()
    if dtype.hasobject:
        raise ModelFileError(
            f"{path}: the file contains pickled Python objects, which cdnn never loads "
            f"(they could run code). It was not written by cdnn."
        )
    nbytes = math.prod(shape) * dtype.itemsize
    if header + nbytes != info.file_size or nbytes > limit:
        raise ModelFileError(
            f"{path}: member {name!r} declares an array of shape {shape} ({nbytes} bytes) "
            f"but holds {info.file_size - header} bytes: the file is corrupted"
        )
    return shape, fortran, dtype, header, nbytes


def _read_member(path: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> np.ndarray:
    """One ``.npy`` member (header checked first), in this machine's byte order."""
    name = info.filename
    shape, fortran, dtype, header, nbytes = _member_header(path, zf, info, limit)
    out = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    with zf.open(info) as f:
        f.seek(header)
        view = memoryview(out.reshape(-1, order="A")).cast("B") if out.size else memoryview(b"")
        got = 0
        while got < nbytes:
            chunk = f.read(min(nbytes - got, 1 << 20))
            if not chunk:
                break
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
    if got != nbytes:
        raise ModelFileError(f"{path}: member {name!r} is truncated ({got} of {nbytes} bytes)")
    if not dtype.isnative:  # written on a machine of the other byte order: the .npy header says which
        out = out.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return out


def _check_spans(path: str, fh, infos: list, end: int) -> None:
    """The members to be read lie inside the archive's data and do not overlap one another.

    Overlapping members make a small file inflate to many times its size (one
    compressed blob named by hundreds of entries); Python 3.11's zipfile does
    not check this itself (CVE-2024-0450 was fixed in 3.12).
    """
    spans = []
    for info in infos:
        fh.seek(info.header_offset)
        raw = fh.read(_LOCAL_HEADER.size)
        if len(raw) != _LOCAL_HEADER.size or raw[:4] != b"PK\x03\x04":
            raise ModelFileError(
                f"{path}: member {info.filename!r} has no valid local header: the file is truncated or corrupted"
            )
        fields = _LOCAL_HEADER.unpack(raw)
        start = info.header_offset
        stop = start + _LOCAL_HEADER.size + fields[10] + fields[11] + info.compress_size
        if stop > end:
            raise ModelFileError(
                f"{path}: member {info.filename!r} extends beyond the archive's data: the file "
                f"is truncated or corrupted"
            )
        spans.append((start, stop, info.filename))
    spans.sort()
    for (_, stop, name), (start, _, other) in zip(spans, spans[1:]):
        if start < stop:
            raise ModelFileError(
                f"{path}: members {name!r} and {other!r} overlap in the archive: the file is corrupted or crafted"
            )


def _named_members(meta: dict, with_slots: bool) -> list[str]:
    """The members the architecture record names: its weights (and the optimizer's slots)."""
    shapes = meta.get("weights")
    names = [f"weight_{i}" for i in range(len(shapes))] if isinstance(shapes, list) else []
    comp = meta.get("compile")
    if with_slots and isinstance(comp, dict) and isinstance(comp.get("slots"), list):
        names += [f"slot_{i}" for i, shape in enumerate(comp["slots"]) if shape is not None]
    return names


def _open(path: str, data: bytes | None):
    if data is not None:
        return io.BytesIO(data)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"No model file at {path}")
    try:
        return _files.open_regular(path)
    except _files.NotRegularFileError as exc:
        raise ModelFileError(f"{path} is not a cdnn model file: it is {exc.kind}, not a regular file") from None


def _read(path, data: bytes | None = None, with_slots: bool = True) -> tuple[dict, dict]:
    """The architecture record and the arrays it names, from the file ``path`` (or from ``data``)."""
    path = _files.filename(path) if data is None else path
    with _open(path, data) as fh:
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        if not zipfile.is_zipfile(fh):
            # np.load would read a bare .npy array, or call anything else a pickle
            raise ModelFileError(
                f"{path} is not a cdnn model file (a zip archive of NumPy arrays), or it is truncated or corrupted"
            )
        try:
            return _read_archive(path, fh, size, with_slots)
        except ModelFileError:
            raise
        except Exception as exc:  # anything zipfile, zlib or numpy raise on malformed bytes: the file is damaged
            raise ModelFileError(
                f"{path} is not a cdnn model file, or it is truncated or corrupted ({type(exc).__name__}: {exc})"
            ) from None


def _read_archive(path: str, fh, size: int, with_slots: bool) -> tuple[dict, dict]:
    with zipfile.ZipFile(fh) as zf:
        members = {}
        for info in zf.infolist():
            key = info.filename[:-4] if info.filename.endswith(".npy") else None
            if key is None or info.is_dir() or key in members:
                raise ModelFileError(
                    f"{path}: member {info.filename!r} is not a NumPy array; the file was not written by cdnn"
                )
            members[key] = info

        def limit(info):
            # stored members (what cdnn writes) hold their bytes in the file; a compressed one may hold
            # at most what deflate can expand (about 1032:1)
            return size if info.compress_type == zipfile.ZIP_STORED else 1100 * max(info.compress_size, 1)

        if _META not in members:
            raise ModelFileError(f"{path} is a NumPy archive but not a cdnn model file (no architecture record)")
        end = getattr(zf, "start_dir", size)
        _check_spans(path, fh, [members[_META]], end)
        meta_arr = _read_member(path, zf, members[_META], min(MAX_META_BYTES, limit(members[_META])))
        meta = _parse_meta(path, meta_arr)
        named = [k for k in _named_members(meta, with_slots) if k in members]
        missing = [k for k in _named_members(meta, False) if k not in members]
        if missing:
            raise ModelFileError(f"{path}: weight array {missing[0].split('_')[1]} is missing")
        _check_spans(path, fh, [members[_META]] + [members[k] for k in named], end)
        headers = {k: _member_header(path, zf, members[k], limit(members[k])) for k in named}
        declared = meta.get("weights")
        for k, (shape, _, dtype, *_rest) in headers.items():
            i = int(k.split("_")[1])
            if k.startswith("weight_") and (not isinstance(declared[i], list) or list(shape) != declared[i]):
                want = tuple(declared[i]) if isinstance(declared[i], list) else declared[i]
                raise ModelFileError(
                    f"{path}: weight array {i} has dtype {dtype} and shape {shape}, expected "
                    f"float32 {want} (the shape its architecture record lists)"
                )
        arrays = {k: _read_member(path, zf, members[k], limit(members[k])) for k in named}
    return meta, arrays


def _parse_meta(path: str, meta_arr: np.ndarray) -> dict:
    if meta_arr.dtype != np.uint8 or meta_arr.ndim != 1:
        raise ModelFileError(f"{path} is a NumPy archive but not a cdnn model file (no architecture record)")
    try:
        meta = json.loads(meta_arr.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: the architecture record is corrupted ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not a cdnn model file (format {meta.get('format') if isinstance(meta, dict) else None!r})"
        )
    if meta.get("version") != VERSION:
        raise ModelFileError(
            f"{path}: written by a cdnn file format version {meta.get('version')!r}; this cdnn reads version {VERSION}"
        )
    return meta


def _weight_values(arrays: dict) -> int:
    """How many values the file's weight arrays hold: the most an architecture loaded from it may create."""
    return sum(a.size for k, a in arrays.items() if k.startswith("weight_"))


def _checked_weights(path: str, meta: dict, arrays: dict, expected_shapes: list) -> list:
    shapes = meta.get("weights")
    if not isinstance(shapes, list) or len(shapes) != len(expected_shapes):
        raise ModelFileError(
            f"{path}: holds {len(shapes) if isinstance(shapes, list) else 'no'} weight arrays, "
            f"the architecture needs {len(expected_shapes)}"
        )
    out = []
    for i, shape in enumerate(expected_shapes):
        a = arrays.get(f"weight_{i}")
        if a is None:
            raise ModelFileError(f"{path}: weight array {i} is missing")
        if a.dtype != np.float32 or a.shape != tuple(shape):
            raise ModelFileError(
                f"{path}: weight array {i} has dtype {a.dtype} and shape {a.shape}, expected float32 {tuple(shape)}"
            )
        out.append(a)
    return out


def _assign_weights(path: str, model, weights: list) -> None:
    """Copy checked arrays into the model's weights; NaN and infinity load (as in Keras), with a warning.

    ``set_weights`` refuses them from a user; a file cdnn wrote (a checkpoint
    of a run that diverged) must still load, so that it can be inspected.
    """
    bad = [i for i, a in enumerate(weights) if not np.isfinite(a).all()]
    if bad:
        warnings.warn(
            f"{path}: weight array(s) {bad} contain NaN or infinity (saved from a run that diverged?): "
            f"the model's outputs will be NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    for a, own in zip(weights, model.weights):
        np.copyto(own, a)


#: what interpreting a hand-edited or corrupted JSON record can raise (wrong types, sizes, nesting)
_BAD_RECORD = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, MemoryError, RecursionError)


def _model_from_config(path: str, config, from_config, budget: int | None = None) -> object:
    """The model ``config`` describes, made by ``from_config`` (the models package passes it, so that this
    module never imports the models); with ``budget``, its layers may create at most that many values."""
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise ModelFileError(f"{path}: the architecture record has no layer list")
    try:
        if config.get("class_name") != "Functional" and not isinstance(config.get("input_shape"), list):
            raise ModelFileError(f"{path}: the architecture has no input shape")
        with _loading.weight_budget(budget) if budget is not None else contextlib.nullcontext():
            model = from_config(config)
        if not model.built:
            raise ModelFileError(f"{path}: the architecture has no input shape")
    except ModelFileError:
        raise
    except _BAD_RECORD as exc:
        raise ModelFileError(f"{path}: invalid architecture: {type(exc).__name__}: {exc}") from None
    return model


def load_model(path, from_config, compile: bool = True):
    """Rebuild a model saved by :func:`save_model`; ``from_config`` makes the model from its architecture."""
    path = _files.filename(path)
    return _load_model(path, _read(path, with_slots=compile), from_config, compile)


def load_model_from_bytes(data: bytes, from_config, compile: bool = True):
    """:func:`load_model` from a file's bytes in memory (unpickling: no temporary file is written)."""
    name = "<in-memory model>"
    return _load_model(name, _read(name, data=bytes(data), with_slots=compile), from_config, compile)


def _load_model(path: str, read: tuple, from_config, compile: bool):
    from cdnn import losses, metrics, optimizers
    from cdnn.trainers.compile_utils import deserialize_metrics

    meta, arrays = read
    model = _model_from_config(path, meta.get("config"), from_config, _weight_values(arrays))
    weights = _checked_weights(path, meta, arrays, [w.shape for w in model.weights])
    _assign_weights(path, model, weights)
    comp = meta.get("compile")
    if compile and isinstance(comp, dict):
        try:
            if isinstance(comp.get("args"), dict):
                args = comp["args"]
                model.compile(
                    optimizer=optimizers.get(comp["optimizer"]),
                    loss=_unplain(args.get("loss"), losses.resolve),
                    metrics=_unplain(args.get("metrics"), metrics.get),
                    loss_weights=_unplain(args.get("loss_weights"), float),
                    weighted_metrics=_unplain(args.get("weighted_metrics"), metrics.get),
                )
            else:  # Sequential: one loss, its metrics
                model.compile(
                    optimizer=optimizers.get(comp["optimizer"]),
                    loss=losses.resolve(comp["loss"]) if comp.get("loss") else None,
                    metrics=deserialize_metrics(comp),
                    weighted_metrics=deserialize_metrics({"metrics": comp.get("weighted_metrics")}),
                    loss_weights=_unplain(comp.get("loss_weights"), float),
                )
        except _BAD_RECORD as exc:
            raise ModelFileError(f"{path}: invalid compile settings: {type(exc).__name__}: {exc}") from None
        slots = comp.get("slots")
        if isinstance(slots, list):
            params = model.trainable_weights
            model.optimizer.build(params)
            width = len(model.optimizer._slots[0]) if model.optimizer._slots else 5
            entries = [(shape, f"slot_{i}") for i, shape in enumerate(slots)]
            if len(slots) == 2 * len(params):  # files of the two-slot layout (SGD, Adagrad, RMSprop, Adam)
                entries = [
                    e for i in range(len(params)) for e in entries[2 * i : 2 * i + 2] + [(None, None)] * (width - 2)
                ]
            if len(entries) != width * len(params):
                raise ModelFileError(f"{path}: optimizer state does not match the weights")
            for i, (shape, name) in enumerate(entries):
                own = model.optimizer._slots[i // width][i % width]
                a = arrays.get(name) if name else None
                if (shape is None) != (own is None) or (a is None) != (shape is None):
                    raise ModelFileError(f"{path}: optimizer slot {i} does not match {type(model.optimizer).__name__}")
                if a is not None:
                    if a.dtype != np.float32 or a.shape != own.shape:
                        raise ModelFileError(
                            f"{path}: optimizer slot {i} has dtype {a.dtype} and shape {a.shape}, "
                            f"expected float32 {own.shape}"
                        )
                    own[...] = a
        iterations = comp.get("iterations", 0)
        if isinstance(iterations, bool) or not isinstance(iterations, int) or not 0 <= iterations < MAX_ITERATIONS:
            raise ModelFileError(
                f"{path}: invalid optimizer iteration count {iterations!r}, expected an integer in [0, 2**62)"
            )
        model.optimizer.iterations = iterations
    return model


def load_weights(model, path) -> None:
    """Load weights into ``model``, whose architecture must match the file's."""
    path = _files.filename(path)
    meta, arrays = _read(path, with_slots=False)
    if not model.built:
        config = meta.get("config")
        shape = config.get("input_shape") if isinstance(config, dict) else None
        if not isinstance(shape, list):
            raise ValueError(f"Model {model.name!r} is not built and {path} has no input shape to build it from")
        try:
            with _loading.weight_budget(_weight_values(arrays)):
                model.build((None, *shape))
        except _BAD_RECORD as exc:
            raise ModelFileError(f"{path}: invalid input shape {shape!r}: {type(exc).__name__}: {exc}") from None
    weights = _checked_weights(path, meta, arrays, [w.shape for w in model.weights])
    _assign_weights(path, model, weights)


def _serialize_loss(loss):
    """The loss as Keras serializes it (the losses module imports the core: imported when saving)."""
    from cdnn import losses

    return losses.serialize(loss)
