"""Functional models: the graph of layer calls between ``keras.Input`` tensors and outputs.

``Functional(inputs, outputs)`` walks the recorded nodes back from the
outputs, checks the graph (connected, acyclic, unique names), orders the
nodes as Keras does (by depth, inputs first) and lowers them to the C core's
flat node list (``_core.Graph``, see ``docs/design.md``): one node per layer
call, models used as layers inlined. Subclassed models are traced into the
same structure by :func:`trace`.
"""

from __future__ import annotations

import inspect
from typing import Optional

import numpy as np

from cdnn import _core
from cdnn._symbolic import KerasTensor, Node, TracingError, flatten
from cdnn.layers.core import InputLayer, Layer
from cdnn.models.model import Model

__all__ = ["Functional", "lower", "run_layer", "trace"]

#: ops whose call in training mode stays in training mode in an inference run (masks, batch statistics)
_LIVE_OPS = ("dropout", "gaussian_noise", "gaussian_dropout", "alpha_dropout", "batchnorm")


def _walk(inputs: list, outputs: list) -> tuple[list, list]:
    """The nodes between ``inputs`` and ``outputs`` in Keras' order, and the layers in that order.

    Depth: an output's node is 0, a node's parents are deeper; nodes sort by
    decreasing depth, ties in the order a depth-first walk from the outputs
    first meets them (so that inputs come first, as in Keras' ``model.layers``).
    """
    input_ids = {id(t) for t in inputs}
    order: list[Node] = []  # post-order: each node after its parents
    first_seen: dict[int, int] = {}  # layer -> pre-order index (Keras' tie-break)
    seen: set[int] = set()
    on_path: set[int] = set()
    reached_inputs: set[int] = set()

    def visit(tensor: KerasTensor, consumer: Optional[Node]) -> None:
        if tensor._keras_history is None:
            raise ValueError(
                f"Tensor {tensor!r} was not produced by a cdnn layer or keras.Input: a functional model's "
                f"outputs must be computed from its inputs by layers"
            )
        layer, node_index, _ = tensor._keras_history
        node = layer._inbound_nodes[node_index]
        if id(node) in seen:
            return
        if id(tensor) in input_ids:
            reached_inputs.add(id(tensor))
        elif isinstance(layer, InputLayer):
            where = f" at layer '{consumer.layer.name}'" if consumer is not None else ""
            done = [n.layer.name for n in order]
            raise ValueError(
                f"Graph disconnected: cannot find parent for tensor {tensor!r}{where}. The following "
                f"previous layers were accessed without issue: {done}. Is '{layer.name}' among the "
                f"model's `inputs`?"
            )
        if id(node) in on_path:
            raise ValueError(f"Tensor {tensor!r} from layer '{layer.name}' is part of a cycle.")
        first_seen.setdefault(id(layer), len(first_seen))
        on_path.add(id(node))
        for t in node.input_tensors:
            visit(t, node)
        on_path.discard(id(node))
        seen.add(id(node))
        order.append(node)

    for t in outputs:
        visit(t, None)
    unused = [t for t in inputs if id(t) not in reached_inputs]
    if unused:
        names = ", ".join(f"'{t._keras_history[0].name}' {t.shape}" for t in unused)
        raise ValueError(
            f"Input(s) {names} of the model are not connected to any output: every input must be used "
            f"to compute an output"
        )

    node_depth: dict[int, int] = {}
    layer_depth: dict[int, int] = {}
    for node in reversed(order):  # consumers come after their parents in `order`: depths are final here
        d = node_depth.setdefault(id(node), 0)
        d = max(d, layer_depth.get(id(node.layer), 0))  # a shared layer takes its deepest node's depth
        layer_depth[id(node.layer)] = d
        node_depth[id(node)] = d
        for parent in node.parent_nodes:
            node_depth[id(parent)] = max(node_depth.get(id(parent), 0), d + 1)
    # ties run in the order Keras' map_graph first records a node's depth: walking back from the outputs,
    # each node, then its parents (the order its calls execute in, e.g. a shared BatchNormalization's updates)
    in_graph = {id(n) for n in order}
    position: dict[int, int] = {}
    for node in reversed(order):
        position.setdefault(id(node), len(position))
        for parent in node.parent_nodes:
            if id(parent) in in_graph:
                position.setdefault(id(parent), len(position))
    nodes = sorted(order, key=lambda n: (-node_depth[id(n)], position[id(n)]))
    layers: list[Layer] = []
    for node in order:
        if all(node.layer is not l for l in layers):
            layers.append(node.layer)
    layers.sort(key=lambda l: (-layer_depth[id(l)], first_seen[id(l)]))
    names = [l.name for l in layers]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(
                f'The name "{name}" is used {names.count(name)} times in the model. All layer names should be unique.'
            )
    return nodes, layers


class Functional(Model):
    """A model defined by its inputs and outputs: ``keras.Model(inputs=..., outputs=..., name=...)``.

    ``inputs``/``outputs`` may be one tensor, a list, or a dict (then fit,
    evaluate and predict take/return dicts keyed the same way).
    """

    def __init__(
        self, inputs=None, outputs=None, name: Optional[str] = None, trainable: Optional[bool] = None, **kwargs
    ) -> None:
        if inputs is None or outputs is None:
            raise ValueError(
                f"keras.Model(inputs, outputs): both are required, received inputs={inputs!r}, outputs={outputs!r}"
            )
        super().__init__(name=name, trainable=True, **kwargs)
        flat_in, flat_out = flatten(inputs), flatten(outputs)
        if not flat_in:
            raise ValueError(f"`inputs` argument cannot be empty. Received:\ninputs={inputs}\noutputs={outputs}")
        if not flat_out:
            raise ValueError(f"`outputs` argument cannot be empty. Received:\ninputs={inputs}\noutputs={outputs}")
        for what, items in (("inputs", flat_in), ("outputs", flat_out)):
            for t in items:
                if not isinstance(t, KerasTensor):
                    raise TypeError(
                        f"All `{what}` values must be KerasTensors (made by keras.Input or by calling "
                        f"layers on them). Received: {what}={t!r} of type {type(t).__name__}"
                    )
        for t in flat_in:
            if t._keras_history is None or not isinstance(t._keras_history[0], InputLayer):
                layer = t._keras_history[0].name if t._keras_history else "nothing"
                raise ValueError(
                    f"Model inputs must come from `keras.Input`: input tensor {t!r} is the output of layer '{layer}'"
                )
        if len({id(t) for t in flat_in}) != len(flat_in):
            raise ValueError("The same keras.Input appears twice in the model's `inputs`")
        self._inputs_struct = inputs
        self._outputs_struct = outputs
        self.inputs = flat_in
        self.outputs = flat_out
        self._nodes, self._layers = _walk(flat_in, flat_out)
        self.built = True
        if trainable is not None:
            # the model's own flag only, as Keras (which sets it before it tracks its layers): a layer
            # frozen before the model was made stays frozen, and `model.trainable = ...` later sets them all
            Layer.trainable.fset(self, trainable)

    # ---- structure --------------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        """Every layer of the graph, its ``InputLayer``s first (as Keras)."""
        return list(self._layers)

    def _graph_model(self) -> Functional:
        return self

    def _inference_model(self) -> Functional:
        return self

    @property
    def input_names(self) -> list[str]:
        if isinstance(self._inputs_struct, dict):
            return list(self._inputs_struct)
        return [t._keras_history[0].name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        if isinstance(self._outputs_struct, dict):
            return list(self._outputs_struct)
        return [t._keras_history[0].name for t in self.outputs]

    @property
    def input_shape(self):
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def input(self):
        return self._inputs_struct

    @property
    def output(self):
        return self._outputs_struct

    def _summary_sequential_like(self) -> bool:
        """Keras prints the ``Connected to`` column unless every node has one input and each depth one node."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            return False
        for node in self._nodes:
            if len(node.input_tensors) > 1 or len(node.output_tensors) > 1:
                return False
        consumers: dict[int, int] = {}
        for node in self._nodes:
            for t in node.input_tensors:
                consumers[id(t)] = consumers.get(id(t), 0) + 1
        return all(c == 1 for c in consumers.values()) and all(
            sum(1 for n in self._nodes if n.layer is l) == 1 for l in self._layers
        )

    def _connections(self, layer: Layer) -> str:
        own = {id(n) for n in self._nodes}
        parts = []
        for node in layer._inbound_nodes:
            if id(node) not in own:
                continue
            for t in node.input_tensors:
                src, node_index, tensor_index = t._keras_history
                parts.append(f"{src.name}[{node_index}][{tensor_index}]")
        return ", ".join(parts) if parts else "-"

    def _layer_output_shape_text(self, layer: Layer) -> str:
        own = [n for n in self._nodes if n.layer is layer]
        if not own:
            return "?"
        shapes = [t.shape for t in own[-1].output_tensors]
        return str(shapes[0]) if len(shapes) == 1 else str(shapes)

    # ---- configuration (Keras' functional config: layers with their inbound nodes) ----------------
    def get_config(self) -> dict:
        """The architecture as plain data: ``layers`` (each with ``inbound_nodes``), ``input_layers``, ``output_layers``."""
        own = {id(n) for n in self._nodes}

        def ref(t: KerasTensor) -> list:
            layer, node_index, tensor_index = t._keras_history
            return [layer.name, self._node_rank(layer, node_index), tensor_index]

        layers = []
        for layer in self._layers:
            inbound = []
            for node in layer._inbound_nodes:
                if id(node) in own and node.input_tensors:
                    entry = {"args": [ref(t) for t in node.input_tensors], "nested": node.nested}
                    if node.training is not None:
                        entry["training"] = node.training
                    inbound.append(entry)
            layers.append(
                {
                    "class_name": type(layer).__name__,
                    "name": layer.name,
                    "config": layer.get_config(),
                    "inbound_nodes": inbound,
                }
            )

        def struct(s):
            if isinstance(s, dict):
                return {"dict": {k: ref(v) for k, v in s.items()}}
            if isinstance(s, (list, tuple)):
                return {"list": [ref(v) for v in s]}
            return {"single": ref(s)}

        cfg = {
            "class_name": "Functional",
            "name": self.name,
            "layers": layers,
            "input_layers": struct(self._inputs_struct),
            "output_layers": struct(self._outputs_struct),
        }
        if not self.trainable:
            cfg["trainable"] = False
        return cfg

    def _node_rank(self, layer: Layer, node_index: int) -> int:
        """The index of ``layer``'s node among its nodes in this model (what a config refers to)."""
        own = {id(n) for n in self._nodes}
        mine = [n for n in layer._inbound_nodes if id(n) in own or not n.input_tensors]
        node = layer._inbound_nodes[node_index]
        for i, n in enumerate(mine):
            if n is node:
                return i
        return 0

    @classmethod
    def from_config(cls, config: dict) -> Functional:
        """Rebuild from :meth:`get_config`: make each layer, then replay its calls in order."""
        from cdnn.models import deserialize_layer

        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError(f"Invalid functional model config: {str(config)[:200]!r}")
        made: dict[str, Layer] = {}
        outputs: dict[str, list] = {}
        pending = []
        for item in config["layers"]:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise ValueError(f"Invalid layer entry in functional model config: {str(item)[:200]!r}")
            layer = deserialize_layer({"class_name": item.get("class_name"), "config": item.get("config")})
            if layer.name in made:
                raise ValueError(f'The name "{layer.name}" is used 2 times in the model config')
            made[layer.name] = layer
            if isinstance(layer, InputLayer):
                outputs[layer.name] = [[layer._output_tensor]]
            else:
                outputs[layer.name] = []
                nodes = item.get("inbound_nodes")
                if not isinstance(nodes, list) or not nodes:
                    raise ValueError(f"Layer '{layer.name}' of the functional model config has no inbound node")
                pending.extend((layer, i, node) for i, node in enumerate(nodes))

        def resolve(r):
            if not (
                isinstance(r, list)
                and len(r) == 3
                and r[0] in outputs
                and isinstance(r[1], int)
                and isinstance(r[2], int)
            ):
                raise ValueError(f"Invalid tensor reference {r!r} in functional model config")
            calls = outputs[r[0]]
            if r[1] >= len(calls) or not 0 <= r[2] < len(calls[r[1]]):
                return None
            return calls[r[1]][r[2]]

        # replay calls whose inputs exist; a config in any order converges or is refused
        while pending:
            progress = False
            for entry in list(pending):
                layer, index, node = entry
                if index != len(outputs[layer.name]):
                    continue
                if not isinstance(node, dict) or not isinstance(node.get("args"), list):
                    raise ValueError(f"Invalid inbound node of layer '{layer.name}' in functional model config")
                args = [resolve(r) for r in node["args"]]
                if any(a is None for a in args):
                    continue
                x = args if node.get("nested") else args[0]
                out = layer(x, training=node.get("training"))
                outputs[layer.name].append(flatten(out))
                pending.remove(entry)
                progress = True
            if not progress:
                names = sorted({e[0].name for e in pending})
                raise ValueError(
                    f"Functional model config: the inputs of layer(s) {names} are never produced "
                    f"(a cycle or a missing layer)"
                )

        def unstruct(s):
            if isinstance(s, dict) and "dict" in s and isinstance(s["dict"], dict):
                return {k: resolve(v) for k, v in s["dict"].items()}
            if isinstance(s, dict) and "list" in s and isinstance(s["list"], list):
                return [resolve(v) for v in s["list"]]
            if isinstance(s, dict) and "single" in s:
                return resolve(s["single"])
            raise ValueError(f"Invalid input/output description in functional model config: {str(s)[:200]!r}")

        inputs, outs = unstruct(config.get("input_layers")), unstruct(config.get("output_layers"))
        if any(t is None for t in flatten(inputs) + flatten(outs)):
            raise ValueError("Functional model config names an input or output tensor that no layer makes")
        return cls(inputs, outs, name=config.get("name"), trainable=config.get("trainable"))

    def __repr__(self) -> str:
        return f"<Functional name={self.name}, built={self.built}>"


# ---- lowering to the C core ----------------------------------------------------------------------


def lower(model: Functional, training: Optional[bool] = None, infer: bool = False) -> tuple[list, list, list]:
    """``(nodes, input_indices, output_indices)``: the graph as ``_core.Graph`` takes it (GRAPH_SPEC).

    ``training``: the mode the model runs in (True for fit, False for inference); each
    call's own mode is :func:`_call_mode`'s. ``infer``: an inference run (predict, a call),
    where calls in training mode are marked live. A model used as a layer is inlined; its
    input nodes map to the tensors it was called on.
    """
    nodes: list[dict] = []
    index: dict[int, int] = {}
    for t in model.inputs:
        layer = t._keras_history[0]
        index[id(t)] = len(nodes)
        nodes.append({"op": "input", "inputs": [], "shape": tuple(t.shape[1:]), "name": layer.name})
    _emit(model, index, nodes, training, active=set(), frozen=False, owners={}, infer=infer)
    return nodes, [index[id(t)] for t in model.inputs], [index[id(t)] for t in model.outputs]


def _call_mode(model: Functional, node: Node, training: Optional[bool]) -> Optional[bool]:
    """The ``training`` mode a layer call runs in when ``model`` runs in mode ``training``.

    As Keras 3: a functional model passes its own mode (fit's True, predict's False) to every call,
    over the value the call was recorded with (``bn(x, training=False)`` trains in fit); the
    recorded value counts only when the model runs with ``training=None``. In a subclassed
    model's ``call`` (a traced graph) an explicit ``training=`` argument is Python code: it wins.
    """
    if getattr(model, "_explicit_training", False):
        return node.training if node.training is not None else training
    return training if training is not None else node.training


def _emit(
    model: Functional,
    index: dict,
    nodes: list,
    training: Optional[bool],
    active: set,
    frozen: bool,
    owners: dict,
    infer: bool = False,
) -> None:
    """Append ``model``'s calls to ``nodes``; ``frozen``: an enclosing model is frozen; ``owners``: each layer
    with weights -> its first call's node."""
    if id(model) in active:
        raise ValueError(f"Model '{model.name}' contains itself: a model cannot be one of its own layers (a cycle)")
    active.add(id(model))
    # a model whose own flag is False has no trainable weights, whatever its layers' flags say
    frozen = frozen or not model.trainable
    for node in model._nodes:
        layer = node.layer
        if isinstance(layer, InputLayer):
            continue
        ins = [index[id(t)] for t in node.input_tensors]
        mode = _call_mode(model, node, training)
        if isinstance(layer, Model):
            inner = layer._graph_model() if mode else layer._inference_model()
            inner_index = {id(t): i for t, i in zip(inner.inputs, ins)}
            _emit(inner, inner_index, nodes, mode, active, frozen or not layer.trainable, owners, infer)
            for t, inner_t in zip(node.output_tensors, inner.outputs):
                index[id(t)] = inner_index[id(inner_t)]
            continue
        shapes = [tuple(t.shape[1:]) for t in node.input_tensors]
        item = layer._lower(shapes if layer._takes_list else shapes[0], mode)
        item.update({"inputs": ins, "shape": tuple(node.output_tensors[0].shape[1:]), "name": layer.name})
        if frozen and item.get("trainable", False):
            if item["op"] == "batchnorm" and mode is not False and training is not False:
                # Keras: a trainable BatchNormalization inside a model made with trainable=False still
                # trains its moving statistics (no gamma/beta update): the core freezes both together
                raise NotImplementedError(
                    f"BatchNormalization {layer.name!r} is trainable inside model {model.name!r}, which was "
                    f"made with trainable=False: Keras updates its moving statistics but not gamma/beta, which "
                    f"cdnn's graph does not do; set the layer's trainable (or the model's, after building it)"
                )
            item["trainable"] = False
        if layer.activity_regularizer is not None:
            item["activity"] = layer.activity_regularizer._core()
        if item["op"] in ("dropout", "gaussian_noise", "gaussian_dropout", "alpha_dropout"):
            item["seed_offset"] = len(nodes)
        if infer and item["op"] in _LIVE_OPS and not item.get("inference"):
            item["live"] = True  # a call in training mode in an inference run (MC dropout)
        if item["op"] in ("dense", "batchnorm", "layernorm", "rmsnorm", "prelu"):
            if id(layer) in owners:
                item["share"] = owners[id(layer)]
            else:
                owners[id(layer)] = len(nodes)
        index[id(node.output_tensors[0])] = len(nodes)
        nodes.append(item)
    active.discard(id(model))


def has_graph_core() -> bool:
    """Whether this build of the C core runs graphs (``_core.Graph``)."""
    return hasattr(_core, "Graph")


def require_graph_core(what: str) -> None:
    if not has_graph_core():
        raise NotImplementedError(
            f"{what} needs cdnn's graph executor (_core.Graph), which this build of the C core does not have yet: "
            f"only Sequential chains of trainable Dense/Dropout/Flatten layers run here"
        )


def run_layer(layer: Layer, inputs, training: Optional[bool] = None):
    """``layer(x)`` on NumPy arrays: the layer alone as a graph, through the core's predict."""
    arrays = flatten(inputs)
    xs = []
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind not in "biuf" or a.ndim < 2:
            raise ValueError(
                f"Layer {layer.name!r} was called on {type(a).__name__} of shape {a.shape}: expected "
                f"arrays of numbers with a batch dimension, or keras.Input tensors"
            )
        xs.append(np.ascontiguousarray(a, dtype=np.float32))
    if isinstance(layer, InputLayer):
        return inputs
    # a private graph: the symbolic call records a node, which is removed again so that the layer's
    # graph (layer.output, summary connections) is unchanged by an eager call
    count = len(layer._inbound_nodes)
    holders = [InputLayer(shape=a.shape[1:], name=f"eager_input_{i}") for i, a in enumerate(xs)]
    symbolic = [h._output_tensor for h in holders]
    try:
        out = layer(
            symbolic if (isinstance(inputs, (list, tuple, dict)) or len(xs) > 1) else symbolic[0], training=training
        )
        model = Functional.__new__(Functional)
        model._functional_view(symbolic, flatten(out))
        require_graph_core(f"Calling {type(layer).__name__} {layer.name!r} on arrays")
        nodes, ins, outs = lower(model, training=bool(training), infer=True)
        graph = _core.Graph(
            nodes,
            ins,
            [{"node": o, "loss": None, "from_logits": False, "weight": 1.0, "metric": None} for o in outs],
            {"name": "sgd"},
        )
        results = graph.predict([a.reshape(len(a), -1) for a in xs], max(1, len(xs[0])))  # one batch, as Keras
    finally:
        del layer._inbound_nodes[count:]
    results = [r.reshape(len(xs[0]), *t.shape[1:]) for r, t in zip(results, flatten(out))]
    return results[0] if len(results) == 1 else results


def _functional_view(self, inputs: list, outputs: list) -> None:
    """A bare graph view (no name, no counters): what the eager call and tracing lower."""
    Layer.__init__(self, name="eager")
    self._inputs_struct, self._outputs_struct = inputs, outputs
    self.inputs, self.outputs = inputs, outputs
    self._nodes, self._layers = _walk(inputs, outputs)
    self.built = True
    self._init_model_state()


Functional._functional_view = _functional_view


def trace(model: Model, input_struct, training: Optional[bool]) -> Functional:
    """Run a subclassed model's ``call`` once on symbolic inputs and record its graph.

    ``input_struct``: the shapes (without batch) of the model's inputs, as one
    tuple, a list or a dict. A ``call`` that needs values (NumPy, ``if x:``)
    fails here with a :class:`TracingError` saying what and where.
    """

    def make(s, name=None):
        return InputLayer(shape=s, name=name)._output_tensor

    if isinstance(input_struct, dict):
        inputs = {k: make(s, name=k if isinstance(k, str) else None) for k, s in input_struct.items()}
    elif isinstance(input_struct, list):
        inputs = [make(s) for s in input_struct]
    else:
        inputs = make(input_struct)
    params = inspect.signature(model.call).parameters
    kwargs = {"training": training} if "training" in params else {}
    try:
        outputs = model.call(inputs, **kwargs)
    except TracingError:
        raise
    except (TypeError, ValueError, AttributeError, NotImplementedError) as exc:
        shapes = [t.shape for t in flatten(inputs)]
        raise TracingError(
            f"Model '{model.name}' ({type(model).__name__}): its call() could not be traced on "
            f"symbolic inputs of shape {shapes[0] if len(shapes) == 1 else shapes} "
            f"(training={training}): {type(exc).__name__}: {exc}"
        ) from exc
    for t in flatten(outputs):
        if not isinstance(t, KerasTensor):
            raise TracingError(
                f"Model '{model.name}' ({type(model).__name__}): call() returned "
                f"{type(t).__name__}, expected the outputs of cdnn layers"
            )
    graph = Functional.__new__(Functional)
    graph._functional_view(flatten(inputs), flatten(outputs))
    graph._inputs_struct, graph._outputs_struct = inputs, outputs
    graph.name = model.name
    graph._explicit_training = True
    return graph
