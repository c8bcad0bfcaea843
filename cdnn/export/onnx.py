"""``model.export("m.onnx", format="onnx")``: the inference graph as ONNX, for ONNX Runtime and others.

The graph is built with the ``onnx`` package (an optional dependency) from
the model's layers: each Dense layer becomes ``MatMul`` + ``Add`` and its
activation's ONNX operators; ``Flatten`` becomes ``Flatten``; ``Dropout``
is left out (inference). The batch dimension is dynamic (``batch``); the
weights are float32 initializers.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

#: the opset written when none is asked for: what ONNX Runtime 1.14 (2023) and later run
DEFAULT_OPSET = 17
#: the oldest opset whose operators (Softmax over the last axis alone) the exporter relies on
MIN_OPSET = 13
ONNX_MISSING = "Exporting to ONNX needs the onnx package: pip install onnx (or pip install 'cdnn[onnx]')"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(ONNX_MISSING) from None
    return onnx


class _Graph:
    """Nodes and initializers of the graph being written, with fresh tensor names."""

    def __init__(self, onnx) -> None:
        self.onnx, self.nodes, self.initializers, self.count = onnx, [], [], 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        name = self.name(stem)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list, stem: str, **attrs) -> str:
        out = self.name(stem)
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _activation(g: _Graph, name: str, x: str, layer, opset: int) -> str:
    """The ONNX operators of activation ``name`` applied to tensor ``x``."""
    f32 = lambda v: g.const("c", np.array(v, np.float32))  # noqa: E731
    if name in ("linear", None):
        return x
    simple = {
        "relu": "Relu",
        "sigmoid": "Sigmoid",
        "tanh": "Tanh",
        "elu": "Elu",
        "selu": "Selu",
        "softplus": "Softplus",
        "softsign": "Softsign",
        "exponential": "Exp",
    }
    if name in simple:
        return g.op(simple[name], [x], name)
    if name == "softmax":
        return g.op("Softmax", [x], name, axis=-1)
    if name == "log_softmax":
        return g.op("LogSoftmax", [x], name, axis=-1)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], name, alpha=float(getattr(layer, "negative_slope", 0.2)))
    if name == "gelu":  # exact: x * (1 + erf(x / sqrt 2)) / 2
        e = g.op("Erf", [g.op("Mul", [x, f32(1 / math.sqrt(2.0))], "gelu")], "gelu")
        return g.op("Mul", [g.op("Mul", [x, f32(0.5)], "gelu"), g.op("Add", [e, f32(1.0)], "gelu")], "gelu")
    if name in ("swish", "silu"):
        return g.op("Mul", [x, g.op("Sigmoid", [x], name)], name)
    if name == "relu6":
        return g.op("Clip", [x, f32(0.0), f32(6.0)], name)
    if name == "hard_sigmoid":  # Keras 3: relu6(x + 3) / 6
        return g.op("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)
    if name in ("hard_swish", "hard_silu"):
        return g.op("Mul", [x, g.op("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)], name)
    if name == "mish":
        return g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x], name)], name)], name)
    raise ValueError(f"Layer {layer.name!r}: activation {name!r} has no ONNX export in cdnn yet")


def _layer(g: _Graph, layer, x: str, opset: int) -> str:
    from cdnn import activations

    kind = type(layer).__name__
    if kind in ("Dropout", "InputLayer"):
        return x
    if kind == "Flatten":
        return g.op("Flatten", [x], "flatten", axis=1)
    if kind == "Dense":
        y = g.op("MatMul", [x, g.const(f"{layer.name}_kernel", layer.kernel)], layer.name)
        if layer.use_bias:
            y = g.op("Add", [y, g.const(f"{layer.name}_bias", layer.bias)], layer.name)
        return _activation(g, activations.serialize(layer.activation), y, layer, opset)
    raise ValueError(
        f"Layer {layer.name!r} ({kind}) has no ONNX export in cdnn yet: it exports Dense, "
        f"Flatten and Dropout (left out at inference)"
    )


def export_onnx(
    model, filepath, verbose: Optional[bool] = None, input_signature=None, opset_version: Optional[int] = None
) -> None:
    """Write ``model``'s inference graph to ``filepath`` as an ONNX model."""
    onnx = _onnx()
    if input_signature is not None:
        raise ValueError(
            "export: input_signature is not supported: cdnn exports the model's own input shape "
            "with a dynamic batch dimension"
        )
    opset = DEFAULT_OPSET if opset_version is None else opset_version
    if (
        isinstance(opset, bool)
        or not isinstance(opset, (int, np.integer))
        or not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version()
    ):
        raise ValueError(
            f"Invalid value for argument `opset_version`: expected an integer from {MIN_OPSET} to "
            f"{onnx.defs.onnx_opset_version()} (this onnx package's newest), received {opset!r}"
        )
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built: build it (or call fit or predict) before export")
    g = _Graph(onnx)
    x = "input_layer"
    shape = list(model.input_shape[1:])
    out = x
    for layer in model.layers:
        out = _layer(g, layer, out, opset)
    if out == x:
        out = g.op("Identity", [x], "output")
    units = list(model.output_shape[1:])
    graph = onnx.helper.make_graph(
        g.nodes,
        model.name,
        [onnx.helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, ["batch", *shape])],
        [onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, ["batch", *units])],
        initializer=g.initializers,
    )
    proto = onnx.helper.make_model(graph, producer_name="cdnn", opset_imports=[onnx.helper.make_opsetid("", opset)])
    if opset <= 17:
        proto.ir_version = 8  # what ONNX Runtime releases of opset 17's time read
    onnx.checker.check_model(proto)
    from cdnn._saving import _write_atomically

    data = proto.SerializeToString()
    path = os.fspath(filepath)
    _write_atomically(path, lambda f: f.write(data), True)
    if verbose or verbose is None:
        print(f"Saved artifact at '{path}'.")
