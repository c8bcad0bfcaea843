"""One layer as Keras 3 serializes it in ``config.json``, both directions.

Writing: :func:`layer_config` gives ``module``/``class_name``/``config``
with the keys and defaults Keras' ``get_config`` writes. Reading:
:func:`build_layer` makes the cdnn layer of a Keras record after checking
every key: a setting cdnn does not implement, unless it has Keras' default,
is refused with the layer and the setting named (nothing is imported, no
code in the file runs).
"""

from __future__ import annotations

from cdnn import constraints, regularizers
from cdnn._saving import ModelFileError

#: layers whose Keras ``build`` is the base one: Keras writes no ``build_config`` for them
NO_BUILD_CONFIG = {"Dropout", "GaussianNoise", "Activation", "ReLU", "LeakyReLU", "Identity", "Reshape", "Softmax"}
NO_BUILD_CONFIG |= {"UnitNormalization", "ELU", "GaussianDropout", "AlphaDropout", "ActivityRegularization"}
#: layers whose Keras ``call`` takes a ``mask`` (Keras records ``"mask": null`` in their nodes)
TAKES_MASK = {"BatchNormalization", "Softmax", "Sequential", "Functional"}
#: the layers cdnn reads from and writes to Keras files
SUPPORTED = (
    "InputLayer, Dense, Flatten, Reshape, Dropout, GaussianNoise, BatchNormalization, LayerNormalization, "
    "UnitNormalization, RMSNormalization, Concatenate, Add, Subtract, Multiply, Average, Maximum, Minimum, Dot, "
    "Rescaling, Normalization, Identity, Activation, ReLU, LeakyReLU, Softmax, ELU, PReLU, GaussianDropout, "
    "AlphaDropout, ActivityRegularization, and Sequential or functional models as layers"
)


def snake_case(name: str) -> str:
    """Keras' ``to_snake_case``: ``GlorotUniform`` -> ``glorot_uniform``, ``Dense`` -> ``dense``."""
    import re

    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def camel_case(name: str) -> str:
    """``glorot_uniform`` -> ``GlorotUniform`` (the class Keras serializes a string identifier as)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def keras_object(module: str, class_name: str, config: dict) -> dict:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None}


def dtype_policy() -> dict:
    return keras_object("keras", "DTypePolicy", {"name": "float32"})


#: initializers whose Keras config is empty (no seed)
_UNSEEDED = {"zeros", "ones"}


def initializer_config(name):
    from cdnn import initializers

    if not isinstance(name, str) or name in ("constant", "identity", "variance_scaling"):
        # an object (or a name whose class takes other arguments than a seed): its own config
        return initializers.serialize(initializers.get(name))
    return keras_object("keras.initializers", camel_case(name), {} if name in _UNSEEDED else {"seed": None})


def _serialized(module, obj):
    """A regularizer or constraint as Keras serializes it, or None."""
    return None if obj is None else module.serialize(obj)


# ---- writing ---------------------------------------------------------------------------------
def layer_config(layer) -> dict:
    """Keras' serialization of one cdnn layer (without ``build_config``)."""
    from cdnn import activations

    kind = type(layer).__name__
    if kind == "InputLayer":
        return keras_object(
            "keras.layers",
            "InputLayer",
            {
                "batch_shape": [None, *layer._input_shape],
                "dtype": "float32",
                "sparse": False,
                "ragged": False,
                "name": layer.name,
            },
        )
    base = {"name": layer.name, "trainable": bool(getattr(layer, "trainable", True)), "dtype": dtype_policy()}
    inits = getattr(layer, "initializers", {})
    rules4 = {
        "beta_regularizer": _serialized(regularizers, getattr(layer, "beta_regularizer", None)),
        "gamma_regularizer": _serialized(regularizers, getattr(layer, "gamma_regularizer", None)),
        "beta_constraint": _serialized(constraints, getattr(layer, "beta_constraint", None)),
        "gamma_constraint": _serialized(constraints, getattr(layer, "gamma_constraint", None)),
    }
    extra: dict
    if kind == "Dense":
        extra = {
            "units": layer.units,
            "activation": activations.serialize(layer.activation) or "linear",
            "use_bias": layer.use_bias,
            "kernel_initializer": initializer_config(layer.kernel_initializer),
            "bias_initializer": initializer_config(layer.bias_initializer),
            "kernel_regularizer": _serialized(regularizers, layer.kernel_regularizer),
            "bias_regularizer": _serialized(regularizers, layer.bias_regularizer),
            "activity_regularizer": None,
            "kernel_constraint": _serialized(constraints, layer.kernel_constraint),
            "bias_constraint": _serialized(constraints, layer.bias_constraint),
        }
        if getattr(layer, "activity_regularizer", None) is not None:
            extra["activity_regularizer"] = regularizers.serialize(layer.activity_regularizer)
    elif kind == "Flatten":
        extra = {"data_format": "channels_last"}
    elif kind == "Reshape":
        extra = {"target_shape": list(layer.target_shape)}
    elif kind == "Dropout":
        extra = {"rate": layer.rate, "seed": layer.seed, "noise_shape": None}
    elif kind == "GaussianNoise":
        extra = {"stddev": layer.stddev, "seed": layer.seed}
    elif kind == "BatchNormalization":
        extra = {
            "axis": -1,
            "momentum": layer.momentum,
            "epsilon": layer.epsilon,
            "center": layer.center,
            "scale": layer.scale,
            **{k: initializer_config(inits[k]) for k in ("beta_initializer", "gamma_initializer")},
            **{k: initializer_config(inits[k]) for k in ("moving_mean_initializer", "moving_variance_initializer")},
            **rules4,
            "synchronized": False,
        }
    elif kind == "LayerNormalization":
        extra = {
            "axis": [-1],
            "epsilon": layer.epsilon,
            "center": layer.center,
            "scale": layer.scale,
            "rms_scaling": False,
            **{k: initializer_config(inits[k]) for k in ("beta_initializer", "gamma_initializer")},
            **rules4,
        }
    elif kind == "Concatenate":
        extra = {"axis": -1}
    elif kind == "UnitNormalization":
        extra = {"axis": layer.axis}
    elif kind == "RMSNormalization":
        extra = {"axis": layer.axis, "epsilon": layer.epsilon}
    elif kind == "Dot":
        extra = {"axes": layer.axes, "normalize": layer.normalize}
    elif kind in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Identity"):
        extra = {}
    elif kind == "Rescaling":
        extra = {"scale": layer.scale, "offset": layer.offset}
    elif kind == "Normalization":
        extra = {
            "axis": [-1],
            "invert": layer.invert,
            "mean": None if layer.input_mean is None else layer.input_mean.tolist(),
            "variance": None if layer.input_variance is None else layer.input_variance.tolist(),
        }
    elif kind == "Activation":
        extra = {"activation": activations.serialize(layer.activation) or "linear"}
    elif kind == "ReLU":
        cfg = layer.get_config()
        extra = {k: cfg.get(k, d) for k, d in (("max_value", None), ("negative_slope", 0.0), ("threshold", 0.0))}
    elif kind == "LeakyReLU":
        extra = {"negative_slope": layer.negative_slope}
    elif kind == "Softmax":
        extra = {"axis": -1}
    elif kind in ("ELU", "GaussianDropout", "AlphaDropout", "ActivityRegularization"):
        extra = {
            k: v for k, v in layer.get_config().items() if k in ("alpha", "rate", "seed", "noise_shape", "l1", "l2")
        }
    elif kind == "PReLU":
        extra = {
            "alpha_initializer": initializer_config(layer.alpha_initializer),
            "alpha_regularizer": _serialized(regularizers, layer.alpha_regularizer),
            "alpha_constraint": _serialized(constraints, layer.alpha_constraint),
            "shared_axes": layer.shared_axes,
        }
    else:
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) cannot be written to a .keras file: cdnn writes {SUPPORTED} "
            f"there. Save it with a .cdnn file name instead."
        )
    return keras_object("keras.layers", kind, {**base, **extra})


# ---- reading ---------------------------------------------------------------------------------
_USE = object()  # the value is passed to the layer
_IGNORE = object()  # the value has no effect given the other (checked) settings
_COMMON = {"name": _USE, "trainable": _USE, "dtype": _USE, "quantization_config": (None,)}
_RULES4 = {k: _USE for k in ("beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")}
_AXIS = {"axis": (-1, [-1])}

#: per Keras class: the config keys cdnn knows (_USE: passed on; a tuple: the values cdnn supports)
_ALLOWED: dict = {
    "Flatten": {"data_format": ("channels_last", None)},
    "Reshape": {"target_shape": _USE},
    "Dropout": {"rate": _USE, "seed": _USE, "noise_shape": (None,)},
    "GaussianNoise": {"stddev": _USE, "seed": _USE},
    "BatchNormalization": {
        **_AXIS,
        "momentum": _USE,
        "epsilon": _USE,
        "center": _USE,
        "scale": _USE,
        "beta_initializer": _USE,
        "gamma_initializer": _USE,
        "moving_mean_initializer": _USE,
        "moving_variance_initializer": _USE,
        **_RULES4,
        "synchronized": (False,),
        "renorm": (False,),
        "renorm_clipping": (None,),
        "renorm_momentum": _IGNORE,
    },
    "LayerNormalization": {
        **_AXIS,
        "epsilon": _USE,
        "center": _USE,
        "scale": _USE,
        "rms_scaling": (False,),
        "beta_initializer": _USE,
        "gamma_initializer": _USE,
        **_RULES4,
    },
    "Concatenate": {"axis": _USE},
    "UnitNormalization": {"axis": _USE},
    "RMSNormalization": {"axis": _USE, "epsilon": _USE},
    "Dot": {"axes": _USE, "normalize": _USE},
    "Add": {},
    "Subtract": {},
    "Multiply": {},
    "Average": {},
    "Maximum": {},
    "Minimum": {},
    "Identity": {},
    "Rescaling": {"scale": _USE, "offset": _USE},
    "Normalization": {**_AXIS, "invert": _USE, "mean": _USE, "variance": _USE},
    "Activation": {"activation": _USE},
    "ReLU": {"max_value": _USE, "negative_slope": _USE, "threshold": _USE},
    "LeakyReLU": {"negative_slope": _USE},
    "Softmax": {"axis": _USE},
    "ELU": {"alpha": _USE},
    "PReLU": {k: _USE for k in ("alpha_initializer", "alpha_regularizer", "alpha_constraint", "shared_axes")},
    "GaussianDropout": {"rate": _USE, "seed": _USE},
    "AlphaDropout": {"rate": _USE, "seed": _USE, "noise_shape": (None,)},
    "ActivityRegularization": {"l1": _USE, "l2": _USE},
    "Dense": {
        "units": _USE,
        "activation": _USE,
        "use_bias": _USE,
        "kernel_initializer": _USE,
        "bias_initializer": _USE,
        "kernel_regularizer": _USE,
        "bias_regularizer": _USE,
        "activity_regularizer": _USE,
        "kernel_constraint": _USE,
        "bias_constraint": _USE,
        "lora_rank": (None,),
        "lora_alpha": _IGNORE,
    },
}
_INITIALIZER_KEYS = (
    "kernel_initializer",
    "bias_initializer",
    "beta_initializer",
    "gamma_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
    "alpha_initializer",
)


def check_keys(path: str, where: str, config: dict, allowed: dict) -> dict:
    """The keys of a Keras config that cdnn uses; the others must have Keras' default value."""
    out = {}
    for key, value in config.items():
        if key not in allowed:
            raise ModelFileError(f"{path}: {where}: unknown or unsupported setting {key!r}={str(value)[:80]!r}")
        rule = allowed[key]
        if rule is _USE:
            out[key] = value
        elif rule is not _IGNORE and value not in rule:
            raise ModelFileError(
                f"{path}: {where}: {key}={str(value)[:80]!r} is not supported by cdnn (supported: {list(rule)})"
            )
    return out


def dtype_ok(path: str, where: str, dtype) -> None:
    name = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if name not in (None, "float32"):
        raise ModelFileError(f"{path}: {where}: dtype {name!r} is not supported (cdnn computes in float32)")


def initializer_name(path: str, where: str, value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("class_name"), str):
        from cdnn import initializers

        cfg = value.get("config") or {}
        if not isinstance(cfg, dict):
            raise ModelFileError(f"{path}: {where}: invalid initializer {str(value)[:80]!r}")
        extra = {k: v for k, v in cfg.items() if k not in ("seed", "input_axes", "output_axes") and v is not None}
        if (extra or cfg.get("seed") is not None) and value["class_name"] in set(initializers._CLASSES):
            # an initializer with arguments (RandomNormal(stddev=...), Constant(value), ...) as an object
            kept = {k: v for k, v in cfg.items() if k not in ("input_axes", "output_axes")}
            return initializers.deserialize({"class_name": value["class_name"], "config": kept})
        if extra:
            raise ModelFileError(
                f"{path}: {where}: initializer {value['class_name']} with {extra} is not supported by cdnn"
            )
        return snake_case(value["class_name"])
    raise ModelFileError(f"{path}: {where}: invalid initializer {str(value)[:80]!r}")


def _custom_name(entry: dict):
    """The registered name of a custom class the record names, or None for Keras' own layers."""
    kind = entry.get("class_name")
    if entry.get("module") not in (None, "keras.layers", "keras.src.layers") or entry.get("registered_name") not in (
        None,
        kind,
    ):
        return entry.get("registered_name") or f"{entry.get('module')}>{kind}"
    return None


def build_layer(path: str, entry: dict):
    """The cdnn layer of one Keras layer record (a model as a layer is made by the caller)."""
    from cdnn import layers as layers_module

    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ModelFileError(f"{path}: invalid layer record {str(entry)[:120]!r}")
    kind, cfg = entry.get("class_name"), entry["config"]
    where = f"layer {cfg.get('name')!r} ({kind})"
    custom = _custom_name(entry)
    if custom is not None:
        raise ModelFileError(
            f"{path}: {where}: custom layer class {custom!r} is not loaded: cdnn builds only the Keras "
            f"layers it implements ({SUPPORTED})"
        )
    if kind == "InputLayer":
        shape = cfg.get("batch_shape") or ([None, *cfg["shape"]] if "shape" in cfg else None)
        if not isinstance(shape, list) or len(shape) < 2:
            raise ModelFileError(f"{path}: {where}: invalid batch_shape {shape!r}")
        dtype_ok(path, where, cfg.get("dtype"))
        if cfg.get("sparse") or cfg.get("ragged") or cfg.get("optional"):
            raise ModelFileError(f"{path}: {where}: sparse, ragged or optional inputs are not supported by cdnn")
        return layers_module.InputLayer(shape=tuple(shape[1:]), name=cfg.get("name"))
    if kind not in _ALLOWED or not isinstance(kind, str):
        raise ModelFileError(
            f"{path}: layer {cfg.get('name')!r} is a {str(kind)[:60]}, which cdnn does not implement yet "
            f"(it reads {SUPPORTED} from Keras files)"
        )
    kw = check_keys(path, where, cfg, {**_COMMON, **_ALLOWED[kind]})
    dtype_ok(path, where, kw.pop("dtype", None))
    trainable = kw.pop("trainable", True)
    if not isinstance(trainable, bool):
        raise ModelFileError(f"{path}: {where}: trainable={trainable!r} is not true or false")
    for key in _INITIALIZER_KEYS:
        if key in kw:
            kw[key] = initializer_name(path, where, kw[key])
    if "activation" in kw and not isinstance(kw["activation"], (str, type(None))):
        raise ModelFileError(f"{path}: {where}: activation {str(kw['activation'])[:80]!r} is not a built-in activation")
    if kind == "Dense" and kw.get("activity_regularizer") is None:
        kw.pop("activity_regularizer", None)
    if kind == "Normalization":
        kw.pop("axis", None)
    layer = getattr(layers_module, kind)(**kw)
    layer.trainable = trainable
    return layer
