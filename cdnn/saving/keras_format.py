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
import zipfile
from typing import Optional

import numpy as np

from cdnn import _loading
from cdnn._saving import MAX_ITERATIONS, ModelFileError, _assign_weights, _write_atomically
from cdnn.saving._keras_layers import (
    NO_BUILD_CONFIG,
    TAKES_MASK,
    build_layer,
    camel_case,
    dtype_policy,
    keras_object,
    layer_config,
    snake_case,
)

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


__all__ = ["camel_case", "snake_case", "model_config", "model_from_config", "save_keras", "load_keras"]


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
    return keras_object("keras.optimizers", class_name, out)


def _loss_config(loss):
    """The loss as Keras' compile_config holds it: the name given to compile when it has Keras' defaults
    (``"mse"``), else the serialized class (``Huber`` with its ``delta``)."""
    from cdnn import losses

    if loss is None:
        return None
    registered = _registered_record(loss)
    if registered is not None:
        return registered
    named = losses.get(loss.name) if loss.name in losses._NAMES else None
    if named is not None and not isinstance(named, losses.Loss):
        named = losses.resolve(loss.name)
    if named is not None and type(named) is type(loss) and named.get_config() == loss.get_config():
        return loss.name
    return keras_object("keras.losses", type(loss).__name__, loss.get_config())


def _loss_struct(loss):
    """A loss, or a list/dict of them (one per output), as Keras' compile_config holds it."""
    if isinstance(loss, dict):
        return {k: _loss_struct(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_loss_struct(v) for v in loss]
    if loss is None or isinstance(loss, str):
        return loss
    if callable(loss) and not hasattr(loss, "get_config"):
        raise ValueError(f"Loss {loss!r} is a Python function: a .keras file can name only built-in losses")
    return _loss_config(loss)


def _metrics_struct(metrics):
    from cdnn import metrics as metrics_module

    if isinstance(metrics, dict):
        return {k: _metrics_struct(v) for k, v in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [_metrics_struct(v) for v in metrics]
    if metrics is None or isinstance(metrics, str):
        return metrics
    return _registered_record(metrics) or metrics_module.serialize(metrics)


def _registered_record(obj) -> Optional[dict]:
    """A user object of a class registered with ``register_keras_serializable``, as Keras writes it."""
    from cdnn.saving.object_registration import _NAMES

    name = _NAMES.get(type(obj))
    if name is None:
        return None
    return {
        "module": type(obj).__module__,
        "class_name": type(obj).__name__,
        "config": obj.get_config(),
        "registered_name": name,
    }


def _compile_config(model) -> Optional[dict]:
    if not model.compiled:
        return None
    from cdnn.models import Sequential

    args = getattr(model, "_compile_args", None) or {}
    if isinstance(model, Sequential):
        from cdnn.trainers.compile_utils import serialize_metrics

        loss, metrics = _loss_config(model.loss), serialize_metrics(model._compile_metrics)
        users = model._compile_metrics._user_metrics if model._compile_metrics is not None else []
        metrics = [_registered_record(m) or s for m, s in zip(users, metrics or [])] or metrics
    else:
        loss, metrics = _loss_struct(args.get("loss")), _metrics_struct(args.get("metrics"))
    weights = args.get("loss_weights")
    return {
        "optimizer": _optimizer_config(model.optimizer),
        "loss": loss,
        "loss_weights": weights if not isinstance(weights, tuple) else list(weights),
        "metrics": metrics,
        "weighted_metrics": _metrics_struct(args.get("weighted_metrics")),
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


def _sequential_record(model) -> dict:
    from cdnn.layers import InputLayer

    shape = [None, *model.input_shape[1:]] if model.input_shape is not None else None
    layers = [layer_config(InputLayer(shape=tuple(shape[1:]), name="input_layer"))] if shape else []
    current = list(shape[1:]) if model.built else None
    for layer in model.layers:
        entry = _layer_record(layer)
        if current is not None:
            if type(layer).__name__ not in NO_BUILD_CONFIG:
                entry.setdefault("build_config", {"input_shape": [None, *current]})
            current = (
                list(layer.output_shape[1:]) if _is_model(layer) else list(layer.compute_output_shape(tuple(current)))
            )
        layers.append(entry)
    config = {"name": model.name, "trainable": bool(model.trainable), "dtype": dtype_policy(), "layers": layers}
    if shape:
        config["build_input_shape"] = shape
    out = keras_object("keras", "Sequential", config)
    if shape:
        out["build_config"] = {"input_shape": shape}
    return out


def _is_model(layer) -> bool:
    from cdnn.models import Model

    return isinstance(layer, Model)


def _layer_record(layer) -> dict:
    """A layer, or a model used as a layer, as Keras serializes it (without its nodes)."""
    if _is_model(layer):
        return _model_record(layer)
    return layer_config(layer)


def _functional_record(model) -> dict:
    own = {id(n) for n in model._nodes}
    functional_layers = {id(l) for l in model.layers if type(l).__name__ == "Functional"}

    def history(t, top: bool) -> list:
        layer, node_index, tensor_index = t._keras_history
        rank = model._node_rank(layer, node_index)
        # the model's inputs and outputs count a nested functional model's own (first) node, its calls do not
        return [layer.name, rank + 1 if top and id(layer) in functional_layers else rank, tensor_index]

    def tensor(t) -> dict:
        return {
            "class_name": "__keras_tensor__",
            "config": {"shape": list(t.shape), "dtype": "float32", "keras_history": history(t, False)},
        }

    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        entry = _layer_record(layer)
        nodes = []
        for node in layer._inbound_nodes:
            if id(node) not in own or not node.input_tensors:
                continue
            kwargs: dict = {}
            if node.training is not None:
                kwargs["training"] = bool(node.training)
            if kind in TAKES_MASK:
                kwargs["mask"] = None
            args = [tensor(t) for t in node.input_tensors]
            nodes.append({"args": [args] if node.nested else args, "kwargs": kwargs})
            if "build_config" not in entry and kind not in NO_BUILD_CONFIG and kind != "InputLayer":
                shapes = [list(t.shape) for t in node.input_tensors]
                entry["build_config"] = {"input_shape": shapes if node.nested else shapes[0]}
        entry["name"] = layer.name
        entry["inbound_nodes"] = nodes
        layers.append(entry)

    def struct(s):
        if isinstance(s, dict):
            return {k: history(v, True) for k, v in s.items()}
        if isinstance(s, (list, tuple)):
            return [history(v, True) for v in s]
        return history(s, True)

    config = {
        "name": model.name,
        "trainable": bool(model.trainable),
        "layers": layers,
        "input_layers": struct(model._inputs_struct),
        "output_layers": struct(model._outputs_struct),
    }
    out = keras_object("keras.src.models.functional", "Functional", config)
    out["registered_name"] = "Functional"
    out["build_config"] = {"input_shape": None}
    return out


def _model_record(model) -> dict:
    from cdnn.models import Functional, Sequential

    if isinstance(model, Sequential):
        return _sequential_record(model)
    if type(model) is Functional:
        return _functional_record(model)
    raise ValueError(
        f"Model {model.name!r} ({type(model).__name__}) cannot be written to a .keras file: cdnn writes "
        f"Sequential and functional models (keras.Model(inputs, outputs)) there; a subclassed model's call() "
        f"is Python code. Save it with a .cdnn file name instead."
    )


def model_config(model) -> dict:
    """The model as Keras' ``serialize_keras_object`` writes it (``config.json``)."""
    out = _model_record(model)
    comp = _compile_config(model)
    if comp is not None:
        out["compile_config"] = comp
    return out


# ---- the optimizer's variables in Keras' order -----------------------------------------
#: an Adafactor placeholder: Keras keeps an int32 0 for the factored moments of a variable under 2-D
_DUMMY = (-1, -1)


def _slot_order(optimizer, n_params: int) -> list[tuple[int, int]]:
    """(parameter, slot) of each optimizer variable after ``iterations`` and ``learning_rate``.

    Keras creates them in ``build``: the base optimizer's moving averages
    (``use_ema``) and gradient accumulators first, one per variable; then
    Adam, AdamW, Adamax, Adadelta, Ftrl, Lion and Nadam interleave their
    slots per variable (m0, v0, m1, v1, ...; amsgrad's v_hat after all of
    them); Adafactor keeps r, c, v per variable (int32 placeholders for r and
    c of a variable under 2-D: ``_DUMMY`` here); RMSprop makes all
    velocities, then all momentums; SGD with momentum and Adagrad make one
    per variable. (cdnn's slot row: 0-2 the optimizer's, 3 the average, 4 the
    accumulator.) Nadam's ``u_product`` comes last; see :func:`_tail_scalars`.
    """
    kind = type(optimizer).__name__
    rows = optimizer._slots
    used = [i for i in range(2) if rows and rows[0][i] is not None]
    head = [(p, s) for s in (3, 4) if rows and rows[0][s] is not None for p in range(n_params)]
    if kind in ("Adam", "AdamW", "Adamax", "Adadelta", "Ftrl", "Lion", "Nadam"):
        tail = [(p, 2) for p in range(n_params)] if rows and rows[0][2] is not None else []
        return head + [(p, s) for p in range(n_params) for s in used] + tail
    if kind in ("SGD", "Adagrad", "RMSprop"):
        return head + [(p, s) for s in used for p in range(n_params)]
    if kind == "Adafactor":
        return head + [
            (p, s) if s == 2 or rows[p][s] is not None else _DUMMY for p in range(n_params) for s in range(3)
        ]
    raise ValueError(f"cdnn cannot write the state of optimizer {kind} to a .keras file yet")


def _tail_scalars(optimizer) -> list:
    """The optimizer's scalar variables after its slots: Nadam's ``u_product`` (the product of its
    momentum schedule over the steps taken)."""
    if type(optimizer).__name__ != "Nadam":
        return []
    it = int(optimizer.iterations)
    return [np.float32(optimizer._u_products(0, it)[-1]) if it else np.float32(1.0)]


# ---- writing -------------------------------------------------------------------------
def _unique(name: str, used: dict) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _container_layers(model) -> list:
    """The layers Keras saves under a model's ``layers/`` (a Sequential's without its input)."""
    return list(model.layers)


def _layer_paths(layers, prefix: str = "layers") -> list[str]:
    used: dict = {}
    return [f"{prefix}/{_unique(snake_case(type(l).__name__), used)}" for l in layers]


def _h5_value(layer, index: int, w: np.ndarray) -> np.ndarray:
    if type(layer).__name__ == "Normalization" and index == 2:
        return np.int32(w)  # Keras' adapt count is an int32
    return np.asarray(w, np.float32)


def _write_layers(h5, layers, prefix: str) -> None:
    for path, layer in zip(_layer_paths(layers, prefix), layers):
        group = h5.create_group(path)
        if _is_model(layer):
            group.create_group("layers")
            _write_layers(h5, _container_layers(layer), f"{path}/layers")
            group.create_group("vars").attrs["name"] = layer.name
            continue
        group = group.create_group("vars")
        group.attrs["name"] = layer.name
        for i, w in enumerate(layer.weights):
            group.create_dataset(str(i), data=_h5_value(layer, i, w))


def _write_h5(model, f, with_optimizer: bool) -> None:
    module = h5py()
    with module.File(f, "w") as h5:
        h5.create_group("layers")
        _write_layers(h5, _container_layers(model), "layers")
        opt = model.optimizer if with_optimizer and model.compiled else None
        if opt is not None:
            group = h5.create_group("optimizer").create_group("vars")
            group.attrs["name"] = opt.name
            group.create_dataset("0", data=np.int64(opt.iterations))
            group.create_dataset("1", data=np.float32(opt.learning_rate))
            if opt._slots:
                order = _slot_order(opt, len(opt._slots)) if opt._slots else []
                for k, (p, s) in enumerate(order):
                    group.create_dataset(str(k + 2), data=np.int32(0) if p < 0 else opt._slots[p][s])
                for k, value in enumerate(_tail_scalars(opt)):
                    group.create_dataset(str(k + 2 + len(order)), data=value)
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


_BAD = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)
_MODEL_CLASSES = ("Sequential", "Functional", "Model")


def _layer_from_record(path: str, entry, orders: dict):
    if isinstance(entry, dict) and entry.get("class_name") in _MODEL_CLASSES:
        return _model_from_record(path, entry, orders)
    return build_layer(path, entry)


def _sequential_from_keras(path: str, config: dict, orders: dict):
    from cdnn.layers import InputLayer
    from cdnn.models import Sequential

    cfg = config["config"]
    layers = [_layer_from_record(path, entry, orders) for entry in cfg["layers"]]
    model = Sequential(layers, name=cfg.get("name"))
    shape = cfg.get("build_input_shape") or (config.get("build_config") or {}).get("input_shape")
    if not model.built and isinstance(shape, list) and len(shape) >= 2:
        model.build(tuple(shape))
    orders[id(model)] = [l for l in layers if not isinstance(l, InputLayer)]
    return model


def _ref(path: str, value) -> tuple:
    """(layer name, node index, tensor index) of a tensor in a functional config."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        value = (value.get("config") or {}).get("keras_history")
    if (
        isinstance(value, list)
        and len(value) in (3, 4)
        and isinstance(value[0], str)
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[1:3])
    ):
        return value[0], value[1], value[2]
    raise ModelFileError(f"{path}: invalid tensor reference {str(value)[:120]!r} in a functional model")


def _node_inputs(path: str, node, where: str) -> tuple[list, bool, Optional[bool]]:
    """The tensor references a node's call takes, whether it took a list, and its ``training`` argument."""
    if isinstance(node, list):  # Keras 2's form: [[name, node, tensor, kwargs], ...]
        return [_ref(path, r) for r in node], len(node) > 1, None
    if not isinstance(node, dict) or not isinstance(node.get("args"), list) or len(node["args"]) != 1:
        raise ModelFileError(f"{path}: {where}: invalid inbound node {str(node)[:120]!r}")
    kwargs = node.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise ModelFileError(f"{path}: {where}: invalid call arguments {str(kwargs)[:80]!r}")
    for key, value in kwargs.items():
        if not ((key == "mask" and value is None) or (key == "training" and value in (True, False, None))):
            raise ModelFileError(f"{path}: {where}: call argument {key}={str(value)[:80]!r} is not supported by cdnn")
    arg = node["args"][0]
    if isinstance(arg, list) and arg and not isinstance(arg[0], str):
        return [_ref(path, r) for r in arg], True, kwargs.get("training")
    return [_ref(path, arg)], False, kwargs.get("training")


def _functional_from_keras(path: str, config: dict, orders: dict):
    from cdnn._symbolic import flatten
    from cdnn.layers import InputLayer
    from cdnn.models import Functional

    cfg = config["config"]
    made: dict = {}
    order = []
    pending: dict = {}
    outputs: dict = {}
    functional = set()
    for entry in cfg["layers"]:
        layer = _layer_from_record(path, entry, orders)
        name = entry.get("name", layer.name)
        if not isinstance(name, str) or name in made:
            raise ModelFileError(f"{path}: layer name {str(name)[:80]!r} is missing or used twice in the model")
        if entry.get("class_name") == "Functional":
            functional.add(name)
        made[name] = layer
        order.append(layer)
        nodes = entry.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise ModelFileError(f"{path}: layer {name!r}: invalid inbound_nodes")
        if isinstance(layer, InputLayer):
            outputs[name] = [[layer._output_tensor]]
        else:
            outputs[name] = []
            pending[name] = [_node_inputs(path, n, f"layer {name!r}") for n in nodes]

    def tensor(ref, top: bool = False):
        name, node, index = ref
        if name not in outputs:
            raise ModelFileError(f"{path}: a tensor reference names layer {name!r}, which the model does not have")
        if top and name in functional:
            node -= 1
        calls = outputs[name]
        return calls[node][index] if 0 <= node < len(calls) and index < len(calls[node]) else None

    while pending:  # Keras' order: the layers in turn, each as far as its inputs exist
        progress = False
        for name in list(pending):
            while pending[name]:
                refs, nested, training = pending[name][0]
                args = [tensor(r) for r in refs]
                if any(a is None for a in args):
                    break
                outputs[name].append(flatten(made[name](args if nested else args[0], training=training)))
                pending[name].pop(0)
                progress = True
            if not pending[name]:
                del pending[name]
        if not progress:
            raise ModelFileError(
                f"{path}: invalid functional model: the inputs of layer(s) {sorted(pending)[:10]} are never "
                f"made (a loop or a disconnected node)"
            )

    def struct(s):
        if isinstance(s, list) and len(s) in (3, 4) and isinstance(s[0], str):
            t = tensor(_ref(path, s), top=True)
            if t is None:
                raise ModelFileError(f"{path}: the model's inputs or outputs name a tensor no layer makes: {s!r}")
            return t
        if isinstance(s, dict):
            return {k: struct(v) for k, v in s.items()}
        if isinstance(s, list):
            return [struct(v) for v in s]
        raise ModelFileError(f"{path}: invalid model inputs or outputs {str(s)[:120]!r}")

    trainable = cfg.get("trainable")
    if trainable is not None and not isinstance(trainable, bool):
        raise ModelFileError(f"{path}: model {cfg.get('name')!r}: trainable={trainable!r} is not true or false")
    # as Keras: the model's own flag (its layers keep the flags they were saved with)
    model = Functional(
        struct(cfg.get("input_layers")), struct(cfg.get("output_layers")), name=cfg.get("name"), trainable=trainable
    )
    orders[id(model)] = order
    return model


def _model_from_record(path: str, config, orders: dict):
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: config.json is not a Keras model record")
    kind, cfg = config.get("class_name"), config.get("config")
    if (
        kind not in _MODEL_CLASSES
        or config.get("module")
        not in (None, "keras", "keras.models", "keras.src.models.functional", "keras.src.models")
        or config.get("registered_name") not in (None, kind, "Functional")
    ):
        name = config.get("registered_name") or kind
        raise ModelFileError(
            f"{path}: the model is a {str(name)[:80]!r}: cdnn reads Sequential and functional models from "
            f"Keras files, not subclassed or custom model classes"
        )
    if not isinstance(cfg, dict) or not isinstance(cfg.get("layers"), list):
        raise ModelFileError(
            f"{path}: model {str(cfg.get('name') if isinstance(cfg, dict) else cfg)[:80]!r} has no layers"
        )
    trainable = cfg.get("trainable", True)
    if trainable not in (True, False):
        raise ModelFileError(f"{path}: model {cfg.get('name')!r}: trainable={trainable!r} is not true or false")
    model = (
        _sequential_from_keras(path, config, orders)
        if kind == "Sequential"
        else _functional_from_keras(path, config, orders)
    )
    if not trainable:
        model.trainable = False
    return model


def _model_from_keras_config(path: str, config, orders: Optional[dict] = None):
    try:
        return _model_from_record(path, config, {} if orders is None else orders)
    except ModelFileError:
        raise
    except _BAD as exc:
        raise ModelFileError(f"{path}: invalid architecture: {type(exc).__name__}: {str(exc)[:300]}") from None


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


def _read_h5_into(path: str, model, source, with_optimizer: bool, orders: Optional[dict] = None) -> None:
    module = h5py()
    try:
        h5 = module.File(source, "r")
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: the weights are not a readable HDF5 file: {exc}") from None
    try:
        with h5:
            _read_open_h5(path, model, h5, with_optimizer, orders)
    except ModelFileError:
        raise
    except _H5_ERRORS as exc:
        raise ModelFileError(f"{path}: damaged HDF5 weights: {type(exc).__name__}: {exc}") from None


def _read_layers(path: str, h5, layers: list, prefix: str, orders: dict, out: dict) -> None:
    module = h5py()
    for lpath, layer in zip(_layer_paths(layers, prefix), layers):
        if _is_model(layer):
            _read_layers(path, h5, orders.get(id(layer)) or _container_layers(layer), f"{lpath}/layers", orders, out)
            continue
        expected = [w.shape for w in layer.weights]
        group = _child(path, h5, f"{lpath}/vars", "")
        if group is None:
            if expected:
                raise ModelFileError(f"{path}: no weights for layer {layer.name!r} (looked for {lpath}/vars)")
            continue
        if not isinstance(group, module.Group) or len(group) != len(expected):
            raise ModelFileError(f"{path}: {lpath} does not hold the {len(expected)} variables of layer {layer.name!r}")
        kinds = (np.float32, np.float64, np.float16)
        if type(layer).__name__ == "Normalization":
            kinds += (np.int32, np.int64)  # the adapt count
        out[id(layer)] = [_dataset(path, group, str(i), s, kinds, lpath) for i, s in enumerate(expected)]


def _leaf_layers(model) -> list:
    out = []
    for layer in model._all_layers():
        out += _leaf_layers(layer) if _is_model(layer) else [layer]
    return out


def _read_open_h5(path: str, model, h5, with_optimizer: bool, orders: Optional[dict] = None) -> None:
    orders = orders or {}
    found: dict = {}
    _read_layers(path, h5, orders.get(id(model)) or _container_layers(model), "layers", orders, found)
    weights = [w for layer in _leaf_layers(model) for w in found.get(id(layer), [])]
    _assign_weights(path, model, weights)  # NaN and infinity load, with a warning, as in Keras
    group = _child(path, h5, "optimizer/vars", "")
    if with_optimizer and group is not None and model.compiled:
        _read_optimizer(path, model, group)


def _read_optimizer(path: str, model, group) -> None:
    opt = model.optimizer
    params = model.trainable_weights
    it = _dataset(path, group, "0", (), (np.int64, np.int32), "optimizer/vars")
    iterations = int(it)
    if not 0 <= iterations < MAX_ITERATIONS:
        raise ModelFileError(f"{path}: invalid optimizer iteration count {iterations}")
    opt.build(params)
    order = _slot_order(opt, len(params))
    tail = _tail_scalars(opt)
    if len(group) == 2 and iterations == 0:  # compiled, never trained: Keras had not built its slots
        return
    if len(group) != 2 + len(order) + len(tail):
        raise ModelFileError(
            f"{path}: the optimizer state holds {len(group) - 2} slot variables; "
            f"{type(opt).__name__} with these settings has {len(order) + len(tail)} for this model"
        )
    for k, (p, s) in enumerate(order):
        if p < 0:  # Adafactor's placeholder
            _dataset(path, group, str(k + 2), (), (np.int32, np.int64, np.float32), "optimizer/vars")
            continue
        opt._slots[p][s][...] = _dataset(
            path, group, str(k + 2), opt._slots[p][s].shape, (np.float32, np.float64), "optimizer/vars"
        )
    for k in range(len(tail)):  # Nadam's u_product: cdnn derives it from the step count
        _dataset(path, group, str(k + 2 + len(order)), (), (np.float32, np.float64), "optimizer/vars")
    opt.iterations = iterations


def _loss_from(path: str, loss):
    """Keras' compile_config loss (a name, a serialized Loss, or a list/dict of them per output)."""
    from cdnn import losses

    if isinstance(loss, dict) and "class_name" in loss:
        registered = loss.get("registered_name")
        if (
            loss.get("class_name") in losses._CLASSES
            and isinstance(loss.get("config"), dict)
            and registered in (None, loss.get("class_name"))
        ):
            return losses.deserialize({"class_name": loss["class_name"], "config": loss["config"]})
        name = (loss.get("config") or {}).get("name") if isinstance(loss.get("config"), dict) else None
        return _registered_or_refuse(path, "loss", loss, name or snake_case(str(loss.get("class_name", ""))))
    if isinstance(loss, dict):
        return {k: _loss_from(path, v) for k, v in loss.items()}
    if isinstance(loss, list):
        return [_loss_from(path, v) for v in loss]
    if not isinstance(loss, (str, type(None))):
        raise ModelFileError(f"{path}: loss {str(loss)[:80]!r} is not a built-in loss")
    return loss


def _registered_or_refuse(path: str, what: str, record: dict, fallback):
    """A user class registered with ``keras.saving.register_keras_serializable`` (or given in
    ``custom_objects``) that ``record`` names, else ``fallback`` for a built-in one."""
    from cdnn import losses
    from cdnn.saving import object_registration

    name, kind = record.get("registered_name"), record.get("class_name")
    if (isinstance(name, str) and name != kind) or kind not in losses._CLASSES:
        return object_registration._deserialize_registered(path, what, record)
    return fallback


def _metrics_from(path: str, mets, top: bool = True):
    from cdnn import metrics as metrics_module

    if isinstance(mets, dict) and "class_name" in mets:
        name, kind = mets.get("registered_name"), mets.get("class_name")
        if (isinstance(name, str) and name != kind) or kind not in metrics_module.ALL_OBJECTS_DICT:
            from cdnn.saving import object_registration

            return object_registration._deserialize_registered(path, "metric", mets)
        return metrics_module.deserialize(mets)
    if isinstance(mets, dict):
        return {k: _metrics_from(path, v, False) for k, v in mets.items()}
    if isinstance(mets, list):
        return [_metrics_from(path, v, False) for v in mets]
    if not isinstance(mets, (str, type(None))):
        raise ModelFileError(
            f"{path}: metrics {str(mets)[:80]!r}: cdnn reads metrics given by name or by their Keras config"
        )
    return mets


def _compile_from_config(path: str, model, comp) -> None:
    from cdnn import optimizers
    from cdnn.models import Sequential

    if not isinstance(comp, dict):
        return
    try:
        opt = comp.get("optimizer")
        if isinstance(opt, dict):
            # every option of Keras 3's optimizers and their schedules (loss_scale_factor and RMSprop's
            # centered are refused by the optimizer's own checks, named in the error)
            opt = {"class_name": opt.get("class_name"), "config": dict(opt.get("config") or {})}
        loss = _loss_from(path, comp.get("loss"))
        mets = comp.get("metrics")
        if isinstance(model, Sequential):
            mets = [m for m in mets] if isinstance(mets, list) else ([mets] if mets else None)
        mets = _metrics_from(path, mets) if mets else None
        weighted = comp.get("weighted_metrics")
        weights = comp.get("loss_weights")
        kwargs = {"loss_weights": weights} if weights is not None else {}
        if weighted:
            kwargs["weighted_metrics"] = _metrics_from(path, weighted)
        model.compile(
            optimizer=optimizers.get(opt) if opt is not None else "rmsprop", loss=loss or None, metrics=mets, **kwargs
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
        orders: dict = {}
        with _loading.weight_budget(budget):
            model = _model_from_keras_config(path, config, orders)
        if compile:
            _compile_from_config(path, model, config.get("compile_config"))
        if model.built:
            data = _read_member(path, zf, _WEIGHTS, _weights_limit(model))
            _read_h5_into(path, model, io.BytesIO(data), with_optimizer=compile, orders=orders)
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
