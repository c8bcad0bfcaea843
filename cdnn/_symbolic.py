"""Symbolic tensors and the nodes that record the layer graph (Keras' ``KerasTensor`` and ``Node``).

Calling a layer on a :class:`KerasTensor` computes no numbers: it checks
shapes, builds the layer and records a :class:`Node` (the layer, the tensors it
consumed, the tensors it made). A functional model is the set of nodes between
its inputs and its outputs; cdnn lowers that graph to the C core's flat node
list. A symbolic tensor refuses everything that would need its values (NumPy,
``if tensor:``), with a message that says where in the user's code that happened.
"""

from __future__ import annotations

import sys
from typing import Optional

__all__ = ["KerasTensor", "Node", "is_symbolic", "flatten", "TracingError"]


class TracingError(TypeError):
    """A model's ``call`` did something on a symbolic tensor that a graph of layers cannot express."""


def _user_frame() -> str:
    """``file:line in function`` of the nearest caller outside cdnn (where the user's code did it)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "cdnn" and not module.startswith("cdnn.") and not module.startswith("numpy"):
            return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}()"
        frame = frame.f_back
    return "an unknown place"


class KerasTensor:
    """A symbolic tensor: a shape (batch first, ``None``), a dtype and the layer call that made it."""

    # NumPy must not turn a KerasTensor into an object array: its functions defer to us and we refuse
    __array_priority__ = 1000

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise self._refuse(f"The NumPy function np.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        raise self._refuse(f"The NumPy function np.{func.__name__}")

    def __init__(self, shape: tuple, name: str, dtype: str = "float32") -> None:
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        #: (layer, node_index, tensor_index): Keras' ``_keras_history``
        self._keras_history: Optional[tuple] = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    # ---- what a graph of layers cannot express --------------------------------------
    def _refuse(self, what: str) -> TracingError:
        return TracingError(
            f"{what} on the symbolic tensor {self.name!r} of shape {self.shape}, at {_user_frame()}. "
            f"A model's call() is traced once on symbolic inputs to record a graph of layers: it can only pass "
            f"tensors through cdnn layers (Dense, Concatenate, Activation, ...). Data-dependent Python control "
            f"flow and NumPy functions have no values to work on here; use layers instead."
        )

    def __bool__(self):
        raise self._refuse("Data-dependent Python control flow (`if`/`while`/`and`/`or` on a tensor's value)")

    def __array__(self, *args, **kwargs):
        raise self._refuse("A NumPy operation (np.asarray or a NumPy function)")

    def __float__(self):
        raise self._refuse("float()")

    def __int__(self):
        raise self._refuse("int()")

    def __index__(self):
        raise self._refuse("Using a tensor as an index")

    def __len__(self):
        raise self._refuse("len()")

    def __iter__(self):
        raise self._refuse("Iterating")

    def __getitem__(self, key):
        raise self._refuse("Indexing or slicing")

    # ---- arithmetic between tensors: Keras records these as merge layers -------------
    def _merge(self, other, cls_name: str, swap: bool = False):
        from cdnn.layers import merging

        if not isinstance(other, KerasTensor):
            raise self._refuse(
                f"Arithmetic with {type(other).__name__} {other!r} (only tensor-with-tensor "
                f"operations have a layer: Add, Subtract, Multiply)"
            )
        layer = getattr(merging, cls_name)()
        return layer([other, self] if swap else [self, other])

    def __add__(self, other):
        return self._merge(other, "Add")

    def __radd__(self, other):
        return self._merge(other, "Add", swap=True)

    def __sub__(self, other):
        return self._merge(other, "Subtract")

    def __rsub__(self, other):
        return self._merge(other, "Subtract", swap=True)

    def __mul__(self, other):
        return self._merge(other, "Multiply")

    def __rmul__(self, other):
        return self._merge(other, "Multiply", swap=True)

    def __neg__(self):
        raise self._refuse("Negation")

    def __truediv__(self, other):
        raise self._refuse("Division")

    def __rtruediv__(self, other):
        raise self._refuse("Division")

    def __matmul__(self, other):
        raise self._refuse("Matrix multiplication (use a Dense layer)")

    def __pow__(self, other):
        raise self._refuse("Exponentiation")

    def __lt__(self, other):
        raise self._refuse("A comparison (`<`, `>`: data-dependent control flow)")

    __le__ = __gt__ = __ge__ = __lt__

    def __eq__(self, other):
        return self is other

    def __hash__(self) -> int:
        return id(self)


class Node:
    """One call of a layer in the graph: its input tensors, its output tensors, its ``training`` argument.

    ``input_tensors`` is flat; ``nested`` says whether the layer received a list
    (merge layers, models with several inputs) or one tensor.
    """

    def __init__(
        self, layer, input_tensors: list, output_tensors: list, nested: bool = False, training: Optional[bool] = None
    ) -> None:
        self.layer = layer
        self.input_tensors = list(input_tensors)
        self.output_tensors = list(output_tensors)
        self.nested = nested
        self.training = training
        self.index = len(layer._inbound_nodes)
        layer._inbound_nodes.append(self)
        for i, t in enumerate(self.output_tensors):
            t._keras_history = (layer, self.index, i)

    @property
    def parent_nodes(self) -> list:
        """The nodes that made this node's inputs."""
        return [t._keras_history[0]._inbound_nodes[t._keras_history[1]] for t in self.input_tensors]

    def __repr__(self) -> str:
        return f"<Node {self.layer.name}[{self.index}]>"


def flatten(x) -> list:
    """The tensors (or arrays) in ``x``: one, or a list/tuple/dict of them (dicts in insertion order)."""
    if isinstance(x, dict):
        return [v for item in x.values() for v in flatten(item)]
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in flatten(item)]
    return [x]


def is_symbolic(x) -> bool:
    """Whether ``x`` holds a KerasTensor (then it must hold only KerasTensors)."""
    items = flatten(x)
    symbolic = [isinstance(t, KerasTensor) for t in items]
    if any(symbolic) and not all(symbolic):
        odd = next(t for t, s in zip(items, symbolic) if not s)
        raise TypeError(
            f"A layer received a mix of symbolic tensors (keras.Input, layer outputs) and "
            f"{type(odd).__name__}: all inputs of a layer call must be of one kind"
        )
    return bool(items) and all(symbolic)
