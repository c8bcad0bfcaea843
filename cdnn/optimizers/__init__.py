"""``keras.optimizers``: Keras 3's optimizers with their defaults and update formulas, run in C.

One module per optimizer, as Keras' ``keras/src/optimizers/``; the base
class and its shared options in :mod:`cdnn.optimizers.base_optimizer`, the
learning-rate schedules in :mod:`cdnn.optimizers.schedules`.
"""

from __future__ import annotations

from typing import Union

from cdnn._errors import unknown
from cdnn.optimizers import schedules
from cdnn.optimizers.adadelta import Adadelta
from cdnn.optimizers.adafactor import Adafactor
from cdnn.optimizers.adagrad import Adagrad
from cdnn.optimizers.adam import Adam
from cdnn.optimizers.adamax import Adamax
from cdnn.optimizers.adamw import AdamW
from cdnn.optimizers.base_optimizer import _FLOAT32_MAX, Optimizer, _fraction, _positive
from cdnn.optimizers.ftrl import Ftrl
from cdnn.optimizers.lion import Lion
from cdnn.optimizers.nadam import Nadam
from cdnn.optimizers.rmsprop import RMSprop
from cdnn.optimizers.sgd import SGD

__all__ = [
    "Optimizer",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "AdamW",
    "Nadam",
    "Adamax",
    "Adadelta",
    "Adafactor",
    "Lion",
    "Ftrl",
    "schedules",
    "get",
    "serialize",
    "deserialize",
]

_NAMES = {
    "sgd": SGD,
    "adagrad": Adagrad,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
    "nadam": Nadam,
    "adamax": Adamax,
    "adadelta": Adadelta,
    "adafactor": Adafactor,
    "lion": Lion,
    "ftrl": Ftrl,
}
_CLASSES = {c.__name__: c for c in _NAMES.values()}


def serialize(optimizer: Optimizer) -> dict:
    """A JSON-able dict as Keras writes it: ``{"module", "class_name", "config", "registered_name"}``."""
    return {
        "module": "keras.optimizers",
        "class_name": type(optimizer).__name__,
        "config": optimizer.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict, custom_objects: dict | None = None) -> Optimizer:
    """An optimizer from :func:`serialize`'s dict (or the flat ``{"class_name", ...}`` of older cdnn files)."""
    if not isinstance(config, dict) or config.get("class_name") not in _CLASSES:
        name = config.get("class_name") if isinstance(config, dict) else config
        raise unknown("optimizer", name, _NAMES)
    cls = _CLASSES[config["class_name"]]
    inner = config.get("config")
    if isinstance(inner, dict):
        return cls.from_config(inner, custom_objects)
    flat = {k: v for k, v in config.items() if k != "class_name"}
    return cls.from_config(flat, custom_objects)


def get(identifier: Union[str, Optimizer, dict]) -> Optimizer:
    """An optimizer from a name (any case), an instance, or a config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier.lower() in _NAMES:
        return _NAMES[identifier.lower()]()
    raise unknown("optimizer", identifier, _NAMES)
