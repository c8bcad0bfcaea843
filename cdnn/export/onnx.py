"""``model.export("m.onnx", format="onnx")``: the inference graph as ONNX, for ONNX Runtime and others.

The graph is built with the ``onnx`` package (an optional dependency) from
the model's inference graph (functional, Sequential, models used as layers
inlined): each Dense layer becomes ``MatMul`` + ``Add`` and its activation's
ONNX operators; a BatchNormalization after a linear Dense used nowhere else
is folded into that Dense's kernel and bias, else it becomes ``x * scale +
offset`` (as do Rescaling and Normalization); LayerNormalization is ONNX's
``LayerNormalization`` from opset 17, primitives below; the merges become
``Sum``/``Sub``/``Mul``/``Mean``/``Max``/``Min``/``Concat``; UnitNormalization,
RMSNormalization and Dot are primitives (row sums as a ``MatMul`` by ones); ELU and PReLU
``Elu`` and ``PRelu``; the dropout and noise layers are left out (inference). The batch dimension is
dynamic (``batch``); the weights are float32 initializers.
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
        self.consts: dict[str, list] = {}  # stem -> [(name, value)]: a shared layer's weights written once

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}/{self.count}"  # a "/" no Keras layer or input name has: no clash with the graph's names

    def const(self, stem: str, value: np.ndarray) -> str:
        """An initializer holding ``value``; the same stem (a layer's name) with equal values reuses it."""
        for name, held in self.consts.get(stem, []):
            if held.dtype == value.dtype and held.shape == value.shape and np.array_equal(held, value):
                return name
        name = self.name(stem)
        value = np.ascontiguousarray(value) if value.ndim else value  # a scalar stays 0-d
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        self.consts.setdefault(stem, []).append((name, value))
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


def _relu_layer(g: _Graph, layer, x: str) -> str:
    """Keras' ``relu(x, negative_slope, max_value, threshold)``."""
    slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
    threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
    max_value = getattr(layer, "max_value", None)
    f32 = lambda v: g.const("c", np.array(v, np.float32))  # noqa: E731
    if threshold == 0.0:
        y = g.op("LeakyRelu", [x], "relu", alpha=slope) if slope else g.op("Relu", [x], "relu")
    else:
        below = g.op("Mul", [g.op("Sub", [x, f32(threshold)], "relu"), f32(slope)], "relu")
        y = g.op("Where", [g.op("Less", [x, f32(threshold)], "relu"), below, x], "relu")
    if max_value is not None:
        y = g.op("Min", [y, f32(float(max_value))], "relu")
    return y


def _affine(g: _Graph, x: str, scale: np.ndarray, offset: np.ndarray, stem: str) -> str:
    y = g.op("Mul", [x, g.const(f"{stem}_scale", np.asarray(scale, np.float32))], stem)
    return g.op("Add", [y, g.const(f"{stem}_offset", np.asarray(offset, np.float32))], stem)


def _batchnorm_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """Inference BatchNormalization as ``x * scale + offset`` (per feature)."""
    width = layer.moving_mean.shape[0]
    gamma = layer.gamma if layer.gamma is not None else np.ones(width, np.float32)
    beta = layer.beta if layer.beta is not None else np.zeros(width, np.float32)
    scale = gamma.astype(np.float64) / np.sqrt(layer.moving_variance.astype(np.float64) + layer.epsilon)
    return scale, beta - layer.moving_mean.astype(np.float64) * scale


def _layernorm(g: _Graph, layer, x: str, opset: int) -> str:
    width = int(layer._build_input_shape[-1])
    gamma = layer.gamma if layer.gamma is not None else np.ones(width, np.float32)
    beta = layer.beta if layer.beta is not None else np.zeros(width, np.float32)
    if opset >= 17:
        return g.op(
            "LayerNormalization",
            [x, g.const(f"{layer.name}_gamma", gamma), g.const(f"{layer.name}_beta", beta)],
            layer.name,
            axis=-1,
            epsilon=float(layer.epsilon),
        )
    mean = g.op("ReduceMean", [x], layer.name, axes=[-1], keepdims=1)
    d = g.op("Sub", [x, mean], layer.name)
    var = g.op("ReduceMean", [g.op("Mul", [d, d], layer.name)], layer.name, axes=[-1], keepdims=1)
    std = g.op(
        "Sqrt", [g.op("Add", [var, g.const("eps", np.array(layer.epsilon, np.float32))], layer.name)], layer.name
    )
    y = g.op("Div", [d, std], layer.name)
    y = g.op("Mul", [y, g.const(f"{layer.name}_gamma", gamma)], layer.name)
    return g.op("Add", [y, g.const(f"{layer.name}_beta", beta)], layer.name)


def _row_sum(g: _Graph, x: str, width: int, stem: str, scale: float = 1.0) -> str:
    """``scale * sum(x, axis=-1, keepdims=True)`` as ``x @ ones`` (any opset: no ReduceSum axes input)."""
    return g.op("MatMul", [x, g.const("ones", np.full((width, 1), scale, np.float32))], stem)


def _l2_normalize(g: _Graph, x: str, width: int, epsilon: float, stem: str) -> str:
    """Keras' ``ops.normalize``: ``x * min(1 / sqrt(sum(x**2)), 1 / epsilon)``."""
    inv = g.op("Reciprocal", [g.op("Sqrt", [_row_sum(g, g.op("Mul", [x, x], stem), width, stem)], stem)], stem)
    return g.op("Mul", [x, g.op("Min", [inv, g.const("c", np.array(1.0 / epsilon, np.float32))], stem)], stem)


_MERGES = {"Add": "Sum", "Average": "Mean", "Maximum": "Max", "Minimum": "Min"}
_NOISE = ("Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization")


def _node(g: _Graph, node, xs: list, opset: int, folded: dict, live: bool = False) -> str:
    """The ONNX operators of one layer call (inference; ``live``: in training mode) on tensors ``xs``; the
    name of its output."""
    from cdnn import activations

    layer = node.layer
    kind = type(layer).__name__
    x = xs[0]
    if live and kind == "Dropout" and layer.rate > 0:
        # a mask of RandomUniformLike >= rate, as ops (ONNX Runtime's optimizer removes Dropout nodes)
        u = g.op("RandomUniformLike", [x], layer.name)
        keep = g.op("GreaterOrEqual", [u, g.const(f"{layer.name}_rate", np.array(layer.rate, np.float32))], layer.name)
        scale = g.const(f"{layer.name}_scale", np.array(1.0 / (1.0 - layer.rate), np.float32))
        kept = g.op("Mul", [x, g.op("Cast", [keep], layer.name, to=1)], layer.name)
        return g.op("Mul", [kept, scale], layer.name)
    if live and kind == "GaussianNoise" and layer.stddev > 0:
        noise = g.op("RandomNormalLike", [x], layer.name, mean=0.0, scale=float(layer.stddev))
        return g.op("Add", [x, noise], layer.name)
    if live and kind in ("GaussianDropout", "AlphaDropout") and layer.rate > 0:
        raise ValueError(
            f"Layer {layer.name!r} ({kind}) is called with training=True in a subclassed model's "
            f"call(): its noise is not exported to ONNX"
        )
    if live and kind == "BatchNormalization" and layer.trainable:
        raise ValueError(
            f"Layer {layer.name!r} (BatchNormalization) is called with training=True in a subclassed model's "
            f"call(): it normalizes by batch statistics and updates its moving statistics, "
            f"a state an ONNX graph cannot keep"
        )
    if kind in _NOISE or kind == "Identity":
        return x
    if kind == "Flatten":
        return g.op("Flatten", [x], "flatten", axis=1)
    if kind == "Reshape":
        shape = np.array([0, *node.output_tensors[0].shape[1:]], np.int64)
        return g.op("Reshape", [x, g.const(f"{layer.name}_shape", shape)], layer.name)
    if kind == "Dense":
        kernel, bias = layer.kernel, layer.bias
        if id(layer) in folded:  # the following BatchNormalization, folded into the kernel and bias
            scale, offset = folded[id(layer)]
            kernel = (kernel.astype(np.float64) * scale).astype(np.float32)
            b = bias.astype(np.float64) if bias is not None else 0.0
            bias = (b * scale + offset).astype(np.float32)
        y = g.op("MatMul", [x, g.const(f"{layer.name}_kernel", kernel)], layer.name)
        if bias is not None:
            y = g.op("Add", [y, g.const(f"{layer.name}_bias", bias)], layer.name)
        return _activation(g, activations.serialize(layer.activation), y, layer, opset)
    if kind == "BatchNormalization":
        if id(layer) in folded:
            return x  # folded into the Dense before it
        scale, offset = _batchnorm_affine(layer)
        return _affine(g, x, scale, offset, layer.name)
    if kind == "LayerNormalization":
        return _layernorm(g, layer, x, opset)
    if kind == "UnitNormalization":
        return _l2_normalize(g, x, int(layer._build_input_shape[-1]), 1e-12, layer.name)
    if kind == "RMSNormalization":
        w = layer.scale.shape[0]
        ms = _row_sum(g, g.op("Mul", [x, x], layer.name), w, layer.name, 1.0 / w)
        ms = g.op("Add", [ms, g.const("eps", np.array(layer.epsilon, np.float32))], layer.name)
        y = g.op("Div", [x, g.op("Sqrt", [ms], layer.name)], layer.name)
        return g.op("Mul", [y, g.const(f"{layer.name}_scale", layer.scale)], layer.name)
    if kind == "Dot":
        w = int(layer._build_input_shape[0][-1])
        if layer.normalize:
            xs = [_l2_normalize(g, t, w, 1e-7, layer.name) for t in xs]
        return _row_sum(g, g.op("Mul", xs, layer.name), w, layer.name)
    if kind in ("Rescaling", "Normalization"):
        op = layer._lower([], False)
        return _affine(g, x, op["scale"], op["offset"], layer.name)
    if kind in _MERGES:
        return g.op(_MERGES[kind], xs, layer.name)
    if kind == "Subtract":
        return g.op("Sub", xs, layer.name)
    if kind == "Multiply":
        y = xs[0]
        for other in xs[1:]:
            y = g.op("Mul", [y, other], layer.name)
        return y
    if kind == "Concatenate":
        return g.op("Concat", xs, layer.name, axis=-1)
    if kind == "Activation":
        return _activation(g, activations.serialize(layer.activation), x, layer, opset)
    if kind == "ReLU":
        return _relu_layer(g, layer, x)
    if kind == "LeakyReLU":
        return g.op("LeakyRelu", [x], layer.name, alpha=float(layer.negative_slope))
    if kind == "Softmax":
        return g.op("Softmax", [x], layer.name, axis=-1)
    if kind == "ELU":
        return g.op("Elu", [x], layer.name, alpha=float(layer.alpha))
    if kind == "PReLU":
        return g.op("PRelu", [x, g.const(f"{layer.name}_alpha", layer.alpha)], layer.name)
    raise ValueError(
        f"Layer {layer.name!r} ({kind}) has no ONNX export in cdnn yet: it exports Dense, Flatten, Reshape, "
        f"BatchNormalization, LayerNormalization, UnitNormalization, RMSNormalization, the merges, Dot, Rescaling, Normalization, the activation layers, "
        f"Identity, and leaves the dropout and noise layers out (inference)"
    )


def _flat_nodes(graph, outer: dict) -> list:
    """``(node, input tensor ids, live)`` of the inference graph with models used as layers inlined. As Keras'
    export (``model(x, training=False)``), a functional graph's recorded ``training`` is overridden; an
    explicit one in a subclassed model's ``call`` stays (``live``)."""
    from cdnn.layers import InputLayer
    from cdnn.models import Model

    explicit = getattr(graph, "_explicit_training", False)
    out = []
    for node in graph._nodes:
        layer = node.layer
        if isinstance(layer, InputLayer):
            continue
        ins = [outer.get(id(t), id(t)) for t in node.input_tensors]
        if isinstance(layer, Model):
            if node.training and explicit:
                raise ValueError(f"Model {layer.name!r} is called with training=True: not an inference graph")
            inner = layer._inference_model()
            inner_map = {id(t): i for t, i in zip(inner.inputs, ins)}
            out += _flat_nodes(inner, inner_map)
            for t, inner_t in zip(node.output_tensors, inner.outputs):
                outer[id(t)] = inner_map.get(id(inner_t), id(inner_t))
            continue
        out.append((node, ins, bool(node.training and explicit)))
    return out


def _folds(nodes: list, output_ids: set) -> dict:
    """Dense layers whose only consumer is an inference BatchNormalization: id -> (scale, offset), and the
    BatchNormalization layers folded (id -> True)."""
    from cdnn import activations

    consumers: dict = {}
    for _, ins, _ in nodes:
        for i in ins:
            consumers[i] = consumers.get(i, 0) + 1
    made = {id(n.output_tensors[0]): n for n, _, _ in nodes}
    folded: dict = {}
    for node, ins, live in nodes:
        if type(node.layer).__name__ != "BatchNormalization" or live:
            continue
        src = made.get(ins[0])
        if (
            src is not None
            and type(src.layer).__name__ == "Dense"
            and activations.serialize(src.layer.activation) in ("linear", None)
            and consumers.get(ins[0]) == 1
            and ins[0] not in output_ids
            and id(src.layer) not in folded
            and sum(1 for n, _, _ in nodes if n.layer is src.layer) == 1
            and sum(1 for n, _, _ in nodes if n.layer is node.layer) == 1
        ):
            folded[id(src.layer)] = _batchnorm_affine(node.layer)
            folded[id(node.layer)] = True
    return folded


def export_onnx(
    model, filepath, verbose: Optional[bool] = None, input_signature=None, opset_version: Optional[int] = None
) -> None:
    """Write ``model``'s inference graph to ``filepath`` as an ONNX model.

    The graph's inputs and outputs carry the Keras names (``model.input_names``/``output_names``;
    a Sequential's input is ``input_layer``); the batch dimension is dynamic.
    """
    from cdnn.models import Sequential

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
    graph = model._inference_model()
    sequential = isinstance(model, Sequential)
    named = graph if getattr(graph, "_explicit_training", False) else model  # a subclassed model: its trace
    in_names = ["input_layer"] if sequential else list(named.input_names)
    out_names = [graph.outputs[0]._keras_history[0].name] if sequential else list(named.output_names)
    g = _Graph(onnx)
    names = {id(t): n for t, n in zip(graph.inputs, in_names)}
    outer: dict = {}  # a nested model's output tensors -> the inner tensors that make them
    nodes = _flat_nodes(graph, outer)
    out_ids = [outer.get(id(t), id(t)) for t in graph.outputs]
    folded = _folds(nodes, set(out_ids))
    for node, ins, live in nodes:
        names[id(node.output_tensors[0])] = _node(g, node, [names[i] for i in ins], opset, folded, live)
    outputs = []
    for name, tid, t in zip(out_names, out_ids, graph.outputs):
        g.nodes.append(onnx.helper.make_node("Identity", [names[tid]], [name], name=f"{name}/output"))
        outputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["batch", *t.shape[1:]]))
    proto_graph = onnx.helper.make_graph(
        g.nodes,
        model.name,
        [
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["batch", *t.shape[1:]])
            for n, t in zip(in_names, graph.inputs)
        ],
        outputs,
        initializer=g.initializers,
    )
    proto = onnx.helper.make_model(
        proto_graph, producer_name="cdnn", opset_imports=[onnx.helper.make_opsetid("", opset)]
    )
    if opset <= 17:
        proto.ir_version = 8  # what ONNX Runtime releases of opset 17's time read
    onnx.checker.check_model(proto)
    from cdnn._saving import _write_atomically

    data = proto.SerializeToString()
    path = os.fspath(filepath)
    _write_atomically(path, lambda f: f.write(data), True)
    if verbose or verbose is None:
        print(f"Saved artifact at '{path}'.")
