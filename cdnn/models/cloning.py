"""``keras.models.clone_model``: the same architecture with new weights."""

from __future__ import annotations


def clone_model(model, input_tensors=None, clone_function=None, **kwargs):
    """A new model with ``model``'s architecture and freshly initialized weights; compiled as ``model`` was
    (optimizer, losses, metrics, loss weights and weighted metrics), if it was, as Keras 3 does.

    ``input_tensors`` and ``clone_function`` are not supported (they are refused, not ignored).
    """
    from cdnn import _saving

    if input_tensors is not None or clone_function is not None or kwargs:
        given = [k for k, v in (("input_tensors", input_tensors), ("clone_function", clone_function)) if v is not None]
        raise ValueError(
            f"clone_model: unsupported argument(s) {given + sorted(kwargs)}: cdnn clones the architecture as it is"
        )
    from cdnn.models import Sequential, model_from_config

    config = model.get_config()
    if isinstance(model, Sequential) and not model.built:  # no input shape yet: Keras clones it unbuilt
        clone = Sequential.from_config(config)
    else:
        clone = _saving._model_from_config(f"<clone of {model.name}>", config, model_from_config)
    if model.compiled:
        clone._compile_like(model)
    return clone
