"""Keras 3's own files: the ``.keras`` archive and the ``.weights.h5`` layout.

A ``.keras`` file is a zip of ``metadata.json`` (Keras version, date),
``config.json`` (the model serialized as Keras does: ``module``,
``class_name``, ``config``, ``build_config``, ``compile_config``) and
``model.weights.h5``. In that HDF5 file each object's variables sit in a
``vars`` group under a path made of the attribute that holds it and its
class name in snake case, numbered when repeated: ``layers/dense/vars/0``
(the kernel), ``layers/dense_1/vars/1`` (the second Dense layer's bias),
``optimizer/vars/0`` (the step count), ``optimizer/vars/1`` (the learning
rate), then the optimizer's slots in Keras' order.

Loading is safe: only the layer, initializer and optimizer classes cdnn
knows are built (nothing is imported or executed), the archive's members are
size-checked before they are read, and every dataset's shape and dtype is
checked against the architecture before its data is read.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import zipfile
from typing import Optional

import numpy as np

from cdnn import _loading, constraints, regularizers
from cdnn._saving import MAX_ITERATIONS, ModelFileError, _assign_weights, _write_atomically

#: the Keras release whose format cdnn writes (the layout is the same across Keras 3 releases)
KERAS_VERSION = "3.15.1"
H5_MISSING = (
    "Keras' .keras and .weights.h5 files are HDF5 inside: reading or writing them needs h5py. "
    "Install it with `pip install h5py` (or `pip install 'cdnn[h5]'`), or save in cdnn's own format "
    "with a `.cdnn` file name, which needs nothing but NumPy."
)
#: config.json of any dense model is far smaller than this
MAX_CONFIG_BYTES = 16 << 20
#: HDF5's own bookkeeping per dataset and group is well under this
H5_OVERHEAD_PER_ARRAY = 8 << 10
H5_OVERHEAD = 1 << 20

_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"


def h5py():
    """The ``h5py`` module, or an ImportError that says how to get it."""
    try:
        import h5py as module
    except ImportError:
        raise ImportError(H5_MISSING) from None
    return module


def snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: ``GlorotUniform`` -> ``glorot_uniform``, ``Dense`` -> ``dense``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def camel_case(name: str) -> str:
    """``glorot_uniform`` -> ``GlorotUniform`` (the class Keras serializes a string identifier as)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _object(module: str, class_name: str, config: dict) -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def _dtype_policy() -> dict:
    return _object("keras", "DTypePolicy", {"name": "float32"})


#: initializers whose Keras config is empty (no seed)
_UNSEEDED = {"zeros", "ones"}


def _initializer(name) -> dict:
    from cdnn import initializers

    if not isinstance(name, str) or name in ("constant", "identity", "variance_scaling"):
        # an object (or a name whose class takes other arguments than a seed): its own config
        return initializers.serialize(initializers.get(name))
    return _object("keras.initializers", camel_case(name), {} if name in _UNSEEDED else {"seed": None})


def _serialized(module, obj):
    """A regularizer or constraint as Keras serializes it, or None."""
    return None if obj is None else module.serialize(obj)


# ---- the architecture: cdnn layer -> Keras config ------------------------------------
def _layer_config(layer) -> dict:
    """Keras' serialization of one cdnn layer (without build_config)."""
    kind = type(layer).__name__
    cfg = layer.get_config()
    if kind == "InputLayer":
        return _object(
            "keras.layers",
            "InputLayer",
            {
                "batch_shape": [None, *cfg["shape"]],
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": layer.name,
            },
        )
    base = {"name": layer.name, "trainable": bool(getattr(layer, "trainable", True)), "dtype": _dtype_policy()}
    if kind == "Flatten":
        return _object("keras.layers", kind, {**base, "data_format": "channels_last"})
    if kind == "Dropout":
        return _object("keras.layers", kind, {**base, "rate": layer.rate, "seed": layer.seed, "noise_shape": None})
    if kind == "Dense":
        return _object(
            "keras.layers",
            kind,
            {
                **base,
                "units": layer.units,
                "activation": cfg["activation"] or "linear",
                "use_bias": layer.use_bias,
                "kernel_initializer": _initializer(layer.kernel_initializer),
                "bias_initializer": _initializer(layer.bias_initializer),
                "kernel_regularizer": _serialized(regularizers, layer.kernel_regularizer),
                "bias_regularizer": _serialized(regularizers, layer.bias_regularizer),
                "activity_regularizer": None,
                "kernel_constraint": _serialized(constraints, layer.kernel_constraint),
                "bias_constraint": _serialized(constraints, layer.bias_constraint),
            },
        )
    raise ValueError(
        f"Layer {layer.name!r} ({kind}) cannot be written to a .keras file yet: cdnn writes "
        f"InputLayer, Flatten, Dense and Dropout there. Save it with a .cdnn file name instead."
    )


def _optimizer_config(optimizer) -> dict:
    cfg = optimizer.get_config()
    out = {
        "name": cfg.pop("name"),
        "learning_rate": cfg.pop("learning_rate"),
        "weight_decay": None,
        "clipnorm": None,
        "global_clipnorm": None,
        "clipvalue": None,
        "use_ema": False,
        "ema_momentum": 0.99,
        "ema_overwrite_frequency": None,
        "loss_scale_factor": None,
        "gradient_accumulation_steps": None,
    }
    class_name = type(optimizer).__name__
    out.update(cfg)
    return _object("keras.optimizers", class_name, out)


def _loss_config(loss):
    """The loss as Keras' compile_config holds it: the name given to compile when it has Keras' defaults
    (``"mse"``), else the serialized class (``Huber`` with its ``delta``)."""
    from cdnn import losses

    if loss is None:
        return None
    named = losses.get(loss.name) if loss.name in losses._NAMES else None
    if named is not None and not isinstance(named, losses.Loss):
        named = losses.resolve(loss.name)
    if named is not None and type(named) is type(loss) and named.get_config() == loss.get_config():
        return loss.name
    return _object("keras.losses", type(loss).__name__, loss.get_config())


def _compile_config(model) -> Optional[dict]:
    if not model.compiled:
        return None
    from cdnn.trainers.compile_utils import serialize_metrics

    return {
        "optimizer": _optimizer_config(model.optimizer),
        "loss": _loss_config(model.loss),
        "loss_weights": None,
        "metrics": serialize_metrics(model._compile_metrics),
        "weighted_metrics": None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


def model_config(model) -> dict:
    """The model as Keras' ``serialize_keras_object`` writes it (``config.json``)."""
    from cdnn.layers import InputLayer
    from cdnn.models import Sequential

    if not isinstance(model, Sequential):
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) cannot be written to a .keras file yet: "
            f"cdnn writes Sequential models there. Save it with a .cdnn file name instead."
        )

    shape = [None, *model.input_shape[1:]] if model.input_shape is not None else None
    layers = [_layer_config(InputLayer(shape=tuple(shape[1:]), name="input_layer"))] if shape else []
    current = list(shape[1:]) if model.built else None
    for layer in model.layers:
        entry = _layer_config(layer)
        if current is not None:
            entry["build_config"] = {"input_shape": [None, *current]}
            current = list(layer.compute_output_shape(tuple(current)))
        layers.append(entry)
    config = {"name": model.name, "trainable": True, "dtype": _dtype_policy(), "layers": layers}
    if shape:
        config["build_input_shape"] = shape
    out = _object("keras", "Sequential", config)
    if shape:
        out["build_config"] = {"input_shape": shape}
    comp = _compile_config(model)
    if comp is not None:
        out["compile_config"] = comp
    return out


# ---- the optimizer's variables in Keras' order -----------------------------------------
def _slot_order(optimizer, n_params: int) -> list[tuple[int, int]]:
    """(parameter, slot) of each optimizer variable after ``iterations`` and ``learning_rate``.

    Keras creates them in ``build``: the base optimizer's moving averages
    (``use_ema``) and gradient accumulators first, one per variable; then
    Adam, AdamW, Adamax, Adadelta, Ftrl and Lion interleave their slots per
    variable (m0, v0, m1, v1, ...; amsgrad's v_hat after all of them);
    RMSprop makes all velocities, then all momentums; SGD with momentum and
    Adagrad make one per variable. (cdnn's slot row: 0-2 the optimizer's,
    3 the average, 4 the accumulator.)
    """
    kind = type(optimizer).__name__
    rows = optimizer._slots
    used = [i for i in range(2) if rows and rows[0][i] is not None]
    head = [(p, s) for s in (3, 4) if rows and rows[0][s] is not None for p in range(n_params)]
    if kind in ("Adam", "AdamW", "Adamax", "Adadelta", "Ftrl", "Lion"):
        tail = [(p, 2) for p in range(n_params)] if rows and rows[0][2] is not None else []
        return head + [(p, s) for p in range(n_params) for s in used] + tail
    if kind in ("SGD", "Adagrad", "RMSprop"):
        return head + [(p, s) for s in used for p in range(n_params)]
    raise ValueError(f"cdnn cannot write the state of optimizer {kind} to a .keras file yet")


# ---- writing -------------------------------------------------------------------------
def _unique(name: str, used: dict) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _layer_paths(layers) -> list[str]:
    used: dict = {}
    return [f"layers/{_unique(snake_case(type(l).__name__), used)}" for l in layers]


def _write_h5(model, f, with_optimizer: bool) -> None:
    module = h5py()
    with module.File(f, "w") as h5:
        for path, layer in zip(_layer_paths(model.layers), model.layers):
            group = h5.create_group(path).create_group("vars")
            group.attrs["name"] = layer.name
            for i, w in enumerate(layer.weights):
                group.create_dataset(str(i), data=np.asarray(w, np.float32))
        opt = model.optimizer if with_optimizer and model.compiled else None
        if opt is not None:
            group = h5.create_group("optimizer").create_group("vars")
            group.attrs["name"] = opt.name
            group.create_dataset("0", data=np.int64(opt.iterations))
            group.create_dataset("1", data=np.float32(opt.learning_rate))
            if opt._slots:
                for k, (p, s) in enumerate(_slot_order(opt, len(opt._slots))):
                    group.create_dataset(str(k + 2), data=opt._slots[p][s])
        h5.create_group("vars").attrs["name"] = model.name


def _h5_bytes(model, with_optimizer: bool) -> bytes:
    buf = io.BytesIO()
    _write_h5(model, buf, with_optimizer)
    return buf.getvalue()


def save_keras(model, path: str, overwrite: bool = True) -> None:
    """Write ``model`` as a Keras 3 ``.keras`` archive (atomically)."""
    h5py()
    config = json.dumps(model_config(model))
    weights = _h5_bytes(model, with_optimizer=True) if model.built else _empty_h5(model)
    metadata = json.dumps(
        {"keras_version": KERAS_VERSION, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    )

    def write(f) -> None:
        with zipfile.ZipFile(f, "w") as zf:
            zf.writestr(_METADATA, metadata)
            zf.writestr(_CONFIG, config)
            zf.writestr(_WEIGHTS, weights)

    _write_atomically(path, write, overwrite)


def _empty_h5(model) -> bytes:
    buf = io.BytesIO()
    with h5py().File(buf, "w") as h5:
        h5.create_group("vars").attrs["name"] = model.name
    return buf.getvalue()


def save_weights_h5(model, path: str, overwrite: bool = True) -> None:
    """Write the weights (and the optimizer's state, as Keras does) in Keras 3's ``.weights.h5`` layout."""
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} has no weights yet: build it (or call fit or predict) before save_weights"
        )
    data = _h5_bytes(model, with_optimizer=True)
    _write_atomically(path, lambda f: f.write(data), overwrite)


# ---- reading -------------------------------------------------------------------------
def is_keras_archive(path: str) -> bool:
    """Whether ``path`` is a zip holding Keras' ``config.json`` (else it may be cdnn's own format)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except Exception:  # any damage: not ours to report; the loader of cdnn's format says what is wrong
        return False
    return _CONFIG in names and "__cdnn__.npy" not in names


def is_hdf5(path: str) -> bool:
    """Whether ``path`` starts with HDF5's signature."""
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _read_member(path: str, zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{path}: the archive has no {name}") from None
    if info.file_size > limit:
        raise ModelFileError(
            f"{path}: {name} declares {info.file_size} bytes, more than the {limit} its architecture can need"
        )
    try:
        with zf.open(info) as member:
            data = member.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: {name} cannot be read: {exc}") from None
    if len(data) > limit:
        raise ModelFileError(f"{path}: {name} holds more than the {limit} bytes its architecture can need")
    return data


def _check_keys(path: str, where: str, config: dict, allowed: dict) -> dict:
    """The keys of a Keras layer config that cdnn uses; the others must have Keras' default value."""
    out = {}
    for key, value in config.items():
        if key in allowed:
            if allowed[key] is _USE:
                out[key] = value
            elif value not in allowed[key]:
                raise ModelFileError(
                    f"{path}: {where}: {key}={value!r} is not supported by cdnn (supported: {allowed[key]})"
                )
        else:
            raise ModelFileError(f"{path}: {where}: unknown or unsupported setting {key!r}={str(value)[:80]!r}")
    return out


_USE = object()
_COMMON = {"name": _USE, "trainable": (True,), "dtype": _USE, "quantization_config": (None,)}


def _dtype_ok(path: str, where: str, dtype) -> None:
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name not in (None, "float32"):
        raise ModelFileError(f"{path}: {where}: dtype {name!r} is not supported (cdnn computes in float32)")


def _initializer_name(path: str, where: str, value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        cfg = value.get("config") or {}
        extra = {k: v for k, v in cfg.items() if k not in ("seed", "input_axes", "output_axes") and v is not None}
        if (extra or cfg.get("seed") is not None) and value["class_name"] in _initializer_classes():
            # an initializer with arguments (RandomNormal(stddev=...), Constant(value), ...) as an object
            from cdnn import initializers

            kept = {k: v for k, v in cfg.items() if k not in ("input_axes", "output_axes")}
            return initializers.deserialize({"class_name": value["class_name"], "config": kept})
        if extra:
            raise ModelFileError(
                f"{path}: {where}: initializer {value['class_name']} with {extra} is not supported by cdnn"
            )
        return snake_case(value["class_name"])
    raise ModelFileError(f"{path}: {where}: invalid initializer {str(value)[:80]!r}")


def _initializer_classes() -> set:
    from cdnn import initializers

    return set(initializers._CLASSES)


def _build_layer(path: str, entry: dict):
    from cdnn import layers as layers_module

    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ModelFileError(f"{path}: invalid layer record {str(entry)[:120]!r}")
    kind, cfg = entry.get("class_name"), entry["config"]
    where = f"layer {cfg.get('name')!r} ({kind})"
    if entry.get("module") not in (None, "keras.layers", "keras.src.layers") or entry.get("registered_name") not in (
        None,
        kind,
    ):
        raise ModelFileError(
            f"{path}: {where}: custom layer classes ({entry.get('registered_name')!r}) are not "
            f"loaded: cdnn builds only the Keras layers it implements"
        )
    if kind == "InputLayer":
        shape = cfg.get("batch_shape") or ([None, *cfg["shape"]] if "shape" in cfg else None)
        if not isinstance(shape, list) or len(shape) < 2:
            raise ModelFileError(f"{path}: {where}: invalid batch_shape {shape!r}")
        return layers_module.InputLayer(shape=tuple(shape[1:]), name=cfg.get("name"))
    if kind == "Flatten":
        kw = _check_keys(path, where, cfg, {**_COMMON, "data_format": ("channels_last", None)})
        _dtype_ok(path, where, kw.pop("dtype", None))
        return layers_module.Flatten(**kw)
    if kind == "Dropout":
        kw = _check_keys(path, where, cfg, {**_COMMON, "rate": _USE, "seed": _USE, "noise_shape": (None,)})
        _dtype_ok(path, where, kw.pop("dtype", None))
        return layers_module.Dropout(**kw)
    if kind == "Dense":
        kw = _check_keys(
            path,
            where,
            cfg,
            {
                **_COMMON,
                "units": _USE,
                "activation": _USE,
                "use_bias": _USE,
                "kernel_initializer": _USE,
                "bias_initializer": _USE,
                "kernel_regularizer": _USE,
                "bias_regularizer": _USE,
                "activity_regularizer": (None,),
                "kernel_constraint": _USE,
                "bias_constraint": _USE,
                "lora_rank": (None,),
                "lora_alpha": (None,),
            },
        )
        _dtype_ok(path, where, kw.pop("dtype", None))
        if not isinstance(kw.get("activation", "linear"), (str, type(None))):
            raise ModelFileError(f"{path}: {where}: activation {kw['activation']!r} is not a built-in activation")
        for key in ("kernel_initializer", "bias_initializer"):
            if key in kw:
                kw[key] = _initializer_name(path, where, kw[key])
        return layers_module.Dense(**kw)
    raise ModelFileError(
        f"{path}: layer {cfg.get('name')!r} is a {kind}, which cdnn does not implement yet "
        f"(it reads InputLayer, Flatten, Dense and Dropout from .keras files)"
    )


_BAD = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


def _model_from_keras_config(path: str, config):
    from cdnn.models import Sequential

    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: config.json is not a Keras model record")
    kind, cfg = config.get("class_name"), config.get("config")
    if kind != "Sequential" or not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ModelFileError(
            f"{path}: the model is a {kind!r}: cdnn reads Sequential models from .keras files "
            f"(functional models come with the layer graph)"
        )
    try:
        layers = [_build_layer(path, entry) for entry in cfg["layers"]]
        model = Sequential(layers, name=cfg.get("name"))
        shape = cfg.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
        if not model.built and isinstance(shape, list) and len(shape) >= 2:
            model.build(tuple(shape))
    except ModelFileError:
        raise
    except _BAD as exc:
        raise ModelFileError(f"{path}: invalid architecture: {type(exc).__name__}: {exc}") from None
    return model


def model_from_config(config: dict, path: str = "<config>"):
    """A new model (fresh weights, not compiled) from Keras' serialized form."""
    return _model_from_keras_config(path, config)


def _weights_limit(model) -> int:
    """The largest HDF5 member a file of this architecture can need: weights and up to three slots each."""
    arrays = len(model.weights) * 4 + len(model.layers) + 8
    floats = sum(w.size for w in model.weights) * 4
    return floats * 4 + arrays * H5_OVERHEAD_PER_ARRAY + H5_OVERHEAD


def _child(path: str, group, name: str, where: str):
    """``group[name]`` through hard links only: a soft or external link (which would make HDF5 open
    another file) is refused, as is anything missing (None)."""
    module = h5py()
    node = group
    for part in name.split("/"):
        if not part:
            continue
        if not isinstance(node, module.Group) or part not in node:
            return None
        if not isinstance(node.get(part, getlink=True), module.HardLink):
            raise ModelFileError(f"{path}: {where}/{name} is a link to elsewhere; cdnn reads only what the file holds")
        node = node[part]
    return node


def _dataset(path: str, group, key: str, shape: tuple, dtypes: tuple, where: str) -> np.ndarray:
    module = h5py()
    ds = _child(path, group, key, where)
    if ds is None:
        raise ModelFileError(f"{path}: {where} has no variable {key}")
    if not isinstance(ds, module.Dataset):
        raise ModelFileError(f"{path}: {where}/{key} is not a dataset")
    if ds.is_virtual or ds.external:
        raise ModelFileError(
            f"{path}: {where}/{key} keeps its data in other files; cdnn reads only what the file holds"
        )
    if tuple(ds.shape) != tuple(shape) or np.dtype(ds.dtype).newbyteorder("=") not in [np.dtype(d) for d in dtypes]:
        raise ModelFileError(
            f"{path}: {where}/{key} has dtype {ds.dtype} and shape {ds.shape}, expected "
            f"{np.dtype(dtypes[0]).name} {tuple(shape)}"
        )
    return np.asarray(ds[()], dtype=dtypes[0])


#: what h5py raises on a damaged HDF5 file
_H5_ERRORS = (OSError, RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError)


def _read_h5_into(path: str, model, source, with_optimizer: bool) -> None:
    module = h5py()
    try:
        h5 = module.File(source, "r")
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: the weights are not a readable HDF5 file: {exc}") from None
    try:
        with h5:
            _read_open_h5(path, model, h5, with_optimizer)
    except ModelFileError:
        raise
    except _H5_ERRORS as exc:
        raise ModelFileError(f"{path}: damaged HDF5 weights: {type(exc).__name__}: {exc}") from None


def _read_open_h5(path: str, model, h5, with_optimizer: bool) -> None:
    module = h5py()
    weights = []
    for lpath, layer in zip(_layer_paths(model.layers), model.layers):
        expected = [w.shape for w in layer.weights]
        group = _child(path, h5, f"{lpath}/vars", "")
        if group is None:
            if expected:
                raise ModelFileError(f"{path}: no weights for layer {layer.name!r} (looked for {lpath}/vars)")
            continue
        if not isinstance(group, module.Group) or len(group) != len(expected):
            raise ModelFileError(f"{path}: {lpath} does not hold the {len(expected)} variables of layer {layer.name!r}")
        weights += [
            _dataset(path, group, str(i), s, (np.float32, np.float64, np.float16), lpath)
            for i, s in enumerate(expected)
        ]
    _assign_weights(path, model, weights)  # NaN and infinity load, with a warning, as in Keras
    group = _child(path, h5, "optimizer/vars", "")
    if with_optimizer and group is not None and model.compiled:
        _read_optimizer(path, model, group)


def _read_optimizer(path: str, model, group) -> None:
    opt = model.optimizer
    params = model.weights
    it = _dataset(path, group, "0", (), (np.int64, np.int32), "optimizer/vars")
    iterations = int(it)
    if not 0 <= iterations < MAX_ITERATIONS:
        raise ModelFileError(f"{path}: invalid optimizer iteration count {iterations}")
    opt.build(params)
    order = _slot_order(opt, len(params))
    if len(group) == 2 and iterations == 0:  # compiled, never trained: Keras had not built its slots
        return
    if len(group) != 2 + len(order):
        raise ModelFileError(
            f"{path}: the optimizer state holds {len(group) - 2} slot variables; "
            f"{type(opt).__name__} with these settings has {len(order)} for this model"
        )
    for k, (p, s) in enumerate(order):
        opt._slots[p][s][...] = _dataset(
            path, group, str(k + 2), params[p].shape, (np.float32, np.float64), "optimizer/vars"
        )
    opt.iterations = iterations


def _compile_from_config(path: str, model, comp) -> None:
    from cdnn import losses, optimizers

    if not isinstance(comp, dict):
        return
    try:
        opt = comp.get("optimizer")
        if isinstance(opt, dict):
            # every option of Keras 3's optimizers and their schedules (loss_scale_factor and RMSprop's
            # centered are refused by the optimizer's own checks, named in the error)
            opt = {"class_name": opt.get("class_name"), "config": dict(opt.get("config") or {})}
        loss = comp.get("loss")
        if (
            isinstance(loss, dict)
            and loss.get("class_name") in losses._CLASSES
            and isinstance(loss.get("config"), dict)
        ):
            loss = losses.deserialize({"class_name": loss["class_name"], "config": loss["config"]})
        elif isinstance(loss, dict):
            loss = loss.get("config", {}).get("name") or snake_case(loss.get("class_name", ""))
        if not isinstance(loss, (str, type(None), losses.Loss)):
            raise ModelFileError(f"{path}: loss {str(loss)[:80]!r} is not a built-in loss")
        mets = comp.get("metrics")
        mets = [m for m in mets] if isinstance(mets, list) else ([mets] if mets else None)
        if mets and not all(isinstance(m, (str, dict)) for m in mets):
            raise ModelFileError(
                f"{path}: metrics {str(mets)[:80]!r}: cdnn reads metrics given by name or by their Keras config"
            )
        from cdnn.trainers.compile_utils import deserialize_metrics

        model.compile(
            optimizer=optimizers.get(opt) if opt is not None else "rmsprop",
            loss=loss or None,
            metrics=deserialize_metrics({"metrics": mets}) if mets else None,
        )
    except ModelFileError:
        raise
    except _BAD as exc:
        raise ModelFileError(f"{path}: invalid compile settings: {type(exc).__name__}: {exc}") from None


def load_keras(path: str, compile: bool = True):
    """Rebuild a model from a Keras 3 ``.keras`` archive (written by Keras or by cdnn)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: not a .keras archive: {exc}") from None
    with zf:
        try:
            config = json.loads(_read_member(path, zf, _CONFIG, MAX_CONFIG_BYTES).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ModelFileError(f"{path}: config.json is not valid JSON: {exc}") from None
        # the layers may create at most as many float32 values as the weights member can hold:
        # config.json's Dense(10**8) is refused before it allocates (see cdnn/_loading.py)
        weights_info = zf.NameToInfo.get(_WEIGHTS)
        budget = weights_info.file_size // 2 if weights_info is not None else 0  # float16 at least
        with _loading.weight_budget(budget):
            model = _model_from_keras_config(path, config)
        if compile:
            _compile_from_config(path, model, config.get("compile_config"))
        if model.built:
            data = _read_member(path, zf, _WEIGHTS, _weights_limit(model))
            _read_h5_into(path, model, io.BytesIO(data), with_optimizer=compile)
    return model


def _attr_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_legacy_h5(path: str, compile: bool = True):
    """Rebuild a model from a legacy HDF5 model file (Keras 2, or Keras 3's ``model.save("m.h5")``).

    As Keras 3's own reader: the architecture from the ``model_config`` attribute, the weights
    from ``model_weights/<layer>`` in the order of its ``weight_names``, and with ``compile`` the
    ``training_config`` and the optimizer's weights by position (a warning, and a fresh
    optimizer state, when they do not fit).
    """
    module = h5py()
    try:
        h5 = module.File(path, "r")
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable HDF5 file: {exc}") from None
    try:
        with h5:
            return _read_legacy(path, h5, compile)
    except ModelFileError:
        raise
    except _H5_ERRORS as exc:
        raise ModelFileError(f"{path}: damaged HDF5 model file: {type(exc).__name__}: {exc}") from None


def _read_legacy(path: str, h5, compile: bool):
    import warnings

    text = h5.attrs.get("model_config")
    if text is None:
        raise ModelFileError(
            f"{path}: an HDF5 file without a model_config: a weights file? Load it with model.load_weights"
        )
    try:
        config = json.loads(_attr_text(text))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"{path}: model_config is not valid JSON: {exc}") from None
    if isinstance(config, dict) and isinstance(config.get("config"), dict):
        for entry in config["config"].get("layers") or []:  # Keras 2 names the input shape otherwise
            cfg = entry.get("config") if isinstance(entry, dict) else None
            if isinstance(cfg, dict) and "batch_input_shape" in cfg:
                shape = cfg.pop("batch_input_shape")
                if entry.get("class_name") == "InputLayer":
                    cfg["batch_shape"] = shape
                elif not config["config"].get("build_input_shape"):
                    config["config"]["build_input_shape"] = shape
    model = _model_from_keras_config(path, config)
    if not model.built:
        raise ModelFileError(f"{path}: the architecture has no input shape")
    group = _child(path, h5, "model_weights", "") or h5
    weights = []
    for layer in model.layers:
        expected = [w.shape for w in layer.weights]
        lg = _child(path, group, layer.name, "model_weights")
        names = [_attr_text(n) for n in lg.attrs.get("weight_names", [])] if lg is not None else []
        if len(names) != len(expected):
            raise ModelFileError(f"{path}: layer {layer.name!r} has {len(expected)} weights, the file {len(names)}")
        for name, shape in zip(names, expected):
            weights.append(
                _dataset(path, lg, name, shape, (np.float32, np.float64, np.float16), f"model_weights/{layer.name}")
            )
    model.set_weights(weights)
    training = h5.attrs.get("training_config")
    if compile and training is not None:
        try:
            training = json.loads(_attr_text(training))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ModelFileError(f"{path}: training_config is not valid JSON: {exc}") from None
        if isinstance(training, dict):
            _compile_from_config(path, model, {**training, "optimizer": training.get("optimizer_config")})
        og = _child(path, h5, "optimizer_weights", "")
        if og is not None and model.compiled:
            names = [_attr_text(n) for n in og.attrs.get("weight_names", [])]
            try:
                _legacy_optimizer_state(path, model, og, names)
            except ModelFileError as exc:
                warnings.warn(
                    f"Error in loading the saved optimizer state ({exc}). As a result, your model "
                    f"is starting with a freshly initialized optimizer.",
                    stacklevel=3,
                )
                model.optimizer.build(model.weights)
    return model


def _legacy_optimizer_state(path: str, model, group, names: list) -> None:
    opt = model.optimizer
    params = model.weights
    opt.build(params)
    order = _slot_order(opt, len(params))
    if len(names) != 2 + len(order):
        raise ModelFileError(f"{len(names)} optimizer weights, {type(opt).__name__} has {2 + len(order)}")
    it = _dataset(path, group, names[0], (), (np.int64, np.int32, np.float32), "optimizer_weights")
    for name, (p, s) in zip(names[2:], order):
        opt._slots[p][s][...] = _dataset(
            path, group, name, params[p].shape, (np.float32, np.float64), "optimizer_weights"
        )
    opt.iterations = int(it)


def load_weights_h5(model, path: str) -> None:
    """Load Keras 3 ``.weights.h5`` weights (and optimizer state, when compiled) into a built ``model``."""
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: build it (or call it on data) before load_weights "
            f"from a .weights.h5 file, which holds no architecture"
        )
    size = os.path.getsize(path)
    if size > _weights_limit(model):
        raise ModelFileError(f"{path}: {size} bytes, more than the weights of model {model.name!r} can need")
    with open(path, "rb") as f:
        data = f.read(size + 1)
    _read_h5_into(path, model, io.BytesIO(data), with_optimizer=True)
