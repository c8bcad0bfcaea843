"""User classes that saved files may name: ``keras.saving.register_keras_serializable`` and its lookups.

A class registered as ``package>name`` is written under that
``registered_name`` (with its ``get_config``), and a loaded file naming it
gets the class back through ``from_config``. A file naming a class that is
neither registered nor given in ``custom_objects`` is refused (cdnn never
imports a module a file names). cdnn runs only its own layers, so custom
layers cannot be loaded even when registered; metrics and losses can.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

from cdnn._saving import ModelFileError

__all__ = [
    "register_keras_serializable",
    "get_registered_name",
    "get_registered_object",
    "CustomObjectScope",
    "custom_object_scope",
    "get_custom_objects",
]

#: ``package>name`` -> class or function (Keras' GLOBAL_CUSTOM_OBJECTS)
_OBJECTS: dict[str, Any] = {}
#: class or function -> ``package>name``
_NAMES: dict[Any, str] = {}
#: the ``custom_object_scope`` blocks in force, innermost last
_SCOPES: list[dict] = []


def register_keras_serializable(package: str = "Custom", name: Optional[str] = None) -> Callable:
    """Register a class (or function) under ``package>name`` (``name`` defaults to its ``__name__``).

    Parameters
    ----------
    package : str
        The first part of the key.
    name : str, optional
        The second part; the object's ``__name__`` by default.

    Returns
    -------
    callable
        A decorator that registers its argument and returns it unchanged.
    """

    def decorator(arg):
        class_name = name if name is not None else arg.__name__
        registered_name = f"{package}>{class_name}"
        if inspect.isclass(arg) and not hasattr(arg, "get_config"):
            raise ValueError("Cannot register a class that does not have a get_config() method.")
        _OBJECTS[registered_name] = arg
        _NAMES[arg] = registered_name
        return arg

    return decorator


def get_registered_name(obj) -> Optional[str]:
    """The name ``obj`` is registered under (``package>name``), else its ``__name__``."""
    return _NAMES.get(obj, getattr(obj, "__name__", None))


def get_registered_object(name: str, custom_objects: Optional[dict] = None, module_objects: Optional[dict] = None):
    """The object registered as ``name``: from a ``custom_object_scope``, the registry,
    ``custom_objects`` or ``module_objects`` in that order; None when none has it."""
    for scope in reversed(_SCOPES):
        if name in scope:
            return scope[name]
    if name in _OBJECTS:
        return _OBJECTS[name]
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if module_objects and name in module_objects:
        return module_objects[name]
    return None


def get_custom_objects() -> dict:
    """The registry itself (``package>name`` -> object), as Keras' ``get_custom_objects``."""
    return _OBJECTS


class CustomObjectScope:
    """``with custom_object_scope({"name": obj}):``: the names resolve to these objects while loading."""

    def __init__(self, custom_objects: Optional[dict] = None) -> None:
        if custom_objects is not None and not isinstance(custom_objects, dict):
            raise TypeError(f"custom_objects must be a dict, received {type(custom_objects).__name__}")
        self.custom_objects = dict(custom_objects or {})

    def __enter__(self) -> CustomObjectScope:
        _SCOPES.append(self.custom_objects)
        return self

    def __exit__(self, *exc) -> None:
        _SCOPES.remove(self.custom_objects)


custom_object_scope = CustomObjectScope


def _deserialize_registered(path: str, what: str, record: dict):
    """The user object a saved record names by ``registered_name`` (or class name), via its ``from_config``."""
    name = record.get("registered_name") or record.get("class_name")
    obj = get_registered_object(name) if isinstance(name, str) else None
    if obj is None and isinstance(name, str) and ">" in name:
        obj = get_registered_object(name.split(">", 1)[1])  # custom_objects given by class name
    if obj is None:
        raise ModelFileError(
            f"{path}: Could not locate {what} '{str(name)[:80]}'. Make sure custom classes and functions are "
            f"decorated with `@keras.saving.register_keras_serializable()`, or pass them to load_model's "
            f"`custom_objects`. (cdnn never imports the module a file names.)"
        )
    config = record.get("config") or {}
    if not inspect.isclass(obj):
        return obj  # a function is saved by name
    if not isinstance(config, dict):
        raise ModelFileError(f"{path}: {what} {name!r}: invalid config {str(config)[:80]!r}")
    try:
        cls: Any = obj
        return cls.from_config(dict(config))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path}: {what} {name!r}: from_config failed: {type(exc).__name__}: {exc}") from None
