"""Validation of the descriptions handed to the C core, run before the C structures are built.

``cdnn._core.Network`` calls :func:`check_network` first and ``cdnn._core.Graph`` calls
:func:`check_graph`: every array's dtype, rank, contiguity and shape, every option, op, loss and
metric is checked here, in plain Python (compiled by Cython this code was a fifth of the
extension), so that building the C description can trust them and the C core can trust its
inputs. ``Network``'s and ``Graph``'s docstrings give the descriptions' formats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cdnn._core import _MERGES, ACTIVATIONS, LOSSES, MAX_NODE_INPUTS, METRICS, OPS, OPTIMIZERS, _check, _code, _shape

#: the most values one array dimension, or one sample of a node, may hold (C's int)
INT_LIMIT = 2**31 - 1


def _graph_error(i: int, d: Any, what: str) -> ValueError:
    name = d.get("name") if isinstance(d, dict) else None
    return ValueError(f"Invalid graph node {i}" + (f" ({name!r})" if name else "") + f": {what}")


def _param(d: dict, key: str, i: int, shape: tuple, writable: bool = True, optional: bool = False) -> Any:
    a = d.get(key)
    if a is None:
        if optional:
            return None
        raise _graph_error(i, d, f"`{key}` is missing (expected a float32 array of shape {shape})")
    _check(a, f"nodes[{i}].{key}", len(shape), writable=writable)
    _shape(a, f"nodes[{i}].{key}", shape)
    return a


def check_network(layers: list, optimizer: dict) -> None:
    """Validate a chain's layer dicts (see ``Network.__init__``); raises ``TypeError``/``ValueError``."""
    prev = None
    factored = optimizer.get("name") == "adafactor"  # Adafactor: r per kernel row, c per column, v for a bias
    for i, d in enumerate(layers):
        W = _check(d["W"], f"layers[{i}].W", 2, writable=True)
        b = d.get("b")
        if b is not None:
            _check(b, f"layers[{i}].b", 1, writable=True)
            _shape(b, f"layers[{i}].b", (W.shape[1],))
        if prev is not None and W.shape[0] != prev:
            raise ValueError(f"Invalid shape for `layers[{i}].W`: expected ({prev}, units), received {W.shape}")
        if W.shape[0] < 1 or W.shape[1] < 1:
            raise ValueError(f"Invalid shape for `layers[{i}].W`: expected positive sizes, received {W.shape}")
        prev = W.shape[1]
        rate = float(d.get("dropout", 0.0))
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Invalid value for `layers[{i}].dropout`: expected a rate in [0, 1), received {rate}")
        slots = list(d.get("slots", [None] * 4)) + [None] * 4
        for k, (s, ref) in enumerate(zip(slots[:4], (W, W, b, b))):
            if s is None:
                continue
            if ref is None:
                raise ValueError(f"Invalid slots for `layers[{i}]`: a bias slot without a bias")
            if factored and k >= 2:
                raise ValueError(f"Invalid slots for `layers[{i}]`: Adafactor keeps a bias's state in slot 3")
            _check(s, f"layers[{i}].slots[{k}]", 1 if factored else ref.ndim, writable=True)
            _shape(s, f"layers[{i}].slots[{k}]", (W.shape[k],) if factored else ref.shape)
        for key, s in dict(d.get("extra_slots") or {}).items():
            if key not in ("W3", "b3", "Wema", "bema", "Wacc", "bacc"):
                raise ValueError(f"Invalid extra slot {key!r} for `layers[{i}]`")
            ref = W if key[0] == "W" else b
            if s is not None:
                if ref is None:
                    raise ValueError(f"Invalid slots for `layers[{i}]`: a bias slot without a bias")
                _check(s, f"layers[{i}].{key}", ref.ndim, writable=True)
                if s.shape != ref.shape:
                    raise ValueError(f"Invalid shape for `layers[{i}].{key}`: expected {ref.shape}, received {s.shape}")


def _check_node_slots(i: int, d: dict, factored: bool) -> None:
    """A trainable node's optimizer state: ``slots`` (1 and 2 of each parameter) and ``extra_slots`` (slot 3,
    the moving average, the accumulator), each shaped as its parameter (Adafactor: a kernel's r per row and
    c per column, a 1-D parameter's state in slot 3 only)."""
    names = ("W", "b") if d["op"] == "dense" else ("gamma", "beta")
    refs = [d.get(names[0]), d.get(names[1])]
    slots = list(d.get("slots") or []) + [None] * 4
    for k, s in enumerate(slots[:4]):
        if s is None:
            continue
        ref = refs[k // 2]
        if ref is None:
            raise _graph_error(i, d, f"slot {k} given for a parameter the node does not have")
        if factored and ref.ndim == 1:
            raise _graph_error(i, d, "Adafactor keeps a 1-D parameter's state in slot 3")
        if factored and ref.ndim > 2:
            raise _graph_error(i, d, f"Adafactor on a parameter of shape {ref.shape}: cdnn factors 2-D ones only")
        _check(s, f"nodes[{i}].slots[{k}]", 1 if factored else ref.ndim, writable=True)
        _shape(s, f"nodes[{i}].slots[{k}]", (ref.shape[k % 2],) if factored else ref.shape)
    keys = {f"{n}{suffix}": ref for n, ref in zip(names, refs) for suffix in ("3", "ema", "acc")}
    if d["op"] != "dense":
        keys = {(k if k[-1] == "3" else k[:-3] + "_" + k[-3:]): v for k, v in keys.items()}
    for key, s in dict(d.get("extra_slots") or {}).items():
        if key not in keys:
            raise _graph_error(i, d, f"unknown extra slot {key!r} (expected one of {sorted(keys)})")
        if s is None:
            continue
        ref = keys[key]
        if ref is None:
            raise _graph_error(i, d, f"extra slot {key!r} given for a parameter the node does not have")
        _check(s, f"nodes[{i}].{key}", ref.ndim, writable=True)
        _shape(s, f"nodes[{i}].{key}", ref.shape)


_KEEPS_SHAPE = ("batchnorm", "layernorm", "rmsnorm", "unitnorm", "activation", "affine", "dropout", "gaussian_noise")
#: ops of this module's later layers that keep their input's shape
_OWN = ("prelu", "gaussian_dropout", "alpha_dropout")


def check_graph(nodes: list, inputs: list, outputs: list, optimizer: Any = None) -> tuple[list, int, list]:
    """Validate a graph description; return each node's shape, the count of node inputs, the input nodes.

    Raises ``TypeError`` or ``ValueError`` naming the node or output and what is wrong.
    """
    factored = isinstance(optimizer, dict) and optimizer.get("name") == "adafactor"
    N = len(nodes)
    shapes: list[tuple[int, ...]] = []
    n_in_total = 0
    # ---- validate everything in Python first
    for i, d in enumerate(nodes):
        if not isinstance(d, dict):
            raise TypeError(f"Invalid graph node {i}: expected a dict, received {type(d).__name__}")
        op = d.get("op")
        if op not in OPS:
            raise _graph_error(i, d, f"unknown op {op!r}, expected one of {sorted(OPS)}")
        ins = d.get("inputs", [])
        if not isinstance(ins, (list, tuple)) or not all(isinstance(k, (int, np.integer)) for k in ins):
            raise _graph_error(i, d, f"`inputs` must be a list of node indices, received {ins!r}")
        ins = [int(k) for k in ins]
        for k in ins:
            if not 0 <= k < i:
                raise _graph_error(
                    i,
                    d,
                    f"input {k} is not an earlier node (nodes must be in topological "
                    f"order: a node's inputs have smaller indices)",
                )
        want = (
            0 if op == "input" else 2 if op in ("subtract", "dot") else None if op in _MERGES + ("concatenate",) else 1
        )
        if want is not None and len(ins) != want:
            raise _graph_error(i, d, f"op {op!r} takes exactly {want} input(s), received {len(ins)}")
        if want is None and not 2 <= len(ins) <= MAX_NODE_INPUTS:
            raise _graph_error(i, d, f"op {op!r} takes 2 to {MAX_NODE_INPUTS} inputs, received {len(ins)}")
        given: Any = d.get("shape")
        try:
            shape = tuple(int(s) for s in given)
        except (TypeError, ValueError):
            raise _graph_error(i, d, f"`shape` must be a tuple of ints, received {given!r}") from None
        if not shape or any(s < 1 for s in shape):
            raise _graph_error(i, d, f"`shape` must have positive dimensions (batch excluded), received {shape}")
        size = int(np.prod(shape, dtype=np.int64))
        if size > INT_LIMIT:
            raise _graph_error(i, d, f"shape {shape} holds more than 2**31 - 1 values per sample")
        in_shapes = [shapes[k] for k in ins]
        x: Any = in_shapes[0] if in_shapes else None
        if op == "dense":
            _param(d, "W", i, (x[-1], shape[-1]))
            if shape != x[:-1] + (shape[-1],):
                raise _graph_error(
                    i, d, f"a Dense on input shape {x} gives shape {x[:-1] + (shape[-1],)}, received shape {shape}"
                )
            _param(d, "b", i, (shape[-1],), optional=True)
            _code(ACTIVATIONS, d.get("activation", "linear"), "activation")
        elif op in _KEEPS_SHAPE + _OWN:
            if shape != x:
                raise _graph_error(i, d, f"op {op!r} keeps its input's shape {x}, received shape {shape}")
        elif op in _MERGES:
            if any(s != x for s in in_shapes) or shape != x:
                raise _graph_error(
                    i,
                    d,
                    f"a {op} merge needs inputs of one shape and gives it, received "
                    f"input shapes {in_shapes} and shape {shape}",
                )
        elif op == "dot":
            if in_shapes[1] != x or shape != x[:-1] + (1,):
                raise _graph_error(i, d, f"a dot needs two inputs of one shape, received {in_shapes} and shape {shape}")
        elif op == "concatenate":
            if any(len(s) != len(x) or s[:-1] != x[:-1] for s in in_shapes):
                raise _graph_error(
                    i,
                    d,
                    f"concatenate (last axis) needs inputs whose shapes differ only in "
                    f"the last axis, received {in_shapes}",
                )
            joined = x[:-1] + (sum(s[-1] for s in in_shapes),)
            if shape != joined:
                raise _graph_error(i, d, f"concatenating {in_shapes} gives shape {joined}, received {shape}")
        elif op == "reshape":
            if size != int(np.prod(x, dtype=np.int64)):
                raise _graph_error(i, d, f"cannot reshape {x} ({int(np.prod(x))} values) into {shape} ({size} values)")
        w = shape[-1]
        if op in ("batchnorm", "layernorm", "rmsnorm"):
            _param(d, "gamma", i, (w,), optional=True)
            _param(d, "beta", i, (w,), optional=True)
        if op == "rmsnorm" and d.get("beta") is not None:
            raise _graph_error(i, d, "an rmsnorm node has a scale (`gamma`) and no `beta`")
        if op in ("batchnorm", "layernorm", "rmsnorm", "unitnorm", "dot"):
            eps = float(d.get("epsilon", 0.0 if op == "dot" else 1e-3))
            if not (np.isfinite(eps) and (eps > 0 or (op == "dot" and eps == 0))):
                raise _graph_error(i, d, f"`epsilon` must be a positive number, received {eps}")
        if op == "batchnorm":
            _param(d, "moving_mean", i, (w,))
            _param(d, "moving_variance", i, (w,))
            mom = float(d.get("momentum", 0.99))
            if not 0.0 <= mom <= 1.0:
                raise _graph_error(i, d, f"`momentum` must be in [0, 1], received {mom}")
        if op == "activation":
            _code(ACTIVATIONS, d.get("activation", "linear"), "activation")
        if op == "affine":
            for key in ("scale", "offset"):
                a = _check(d.get(key), f"nodes[{i}].{key}", 1)
                if a.shape[0] not in (1, w):
                    raise _graph_error(i, d, f"`{key}` must hold 1 or {w} values, received shape {a.shape}")
        if op == "prelu":
            ar, ac = d.get("alpha_shape", (0, 0))
            a = _param(d, "gamma", i, tuple(getattr(d.get("gamma"), "shape", (ar * ac,))))
            bad = a.size != ar * ac or (a.ndim == 2 and a.shape != (ar, ac))
            if ar not in (1, size // w) or ac not in (1, w) or bad or d.get("beta") is not None:
                raise _graph_error(i, d, f"alpha of shape {a.shape} as {(ar, ac)} does not fit shape {shape}")
        if op in ("dropout", "alpha_dropout"):
            rate = float(d.get("rate", 0.0))
            if not 0.0 <= rate < 1.0:
                raise _graph_error(i, d, f"`rate` must be in [0, 1), received {rate}")
        if op in ("gaussian_noise", "gaussian_dropout"):
            sd = float(d.get("stddev", 0.0))
            if not (sd >= 0 and np.isfinite(sd)):
                raise _graph_error(i, d, f"`stddev` must be a finite number >= 0, received {sd}")
        if (
            op in ("dropout", "gaussian_noise", "gaussian_dropout", "alpha_dropout")
            and not 0 <= int(d.get("seed_offset", 0)) < 2**63
        ):
            raise _graph_error(i, d, f"`seed_offset` must be an integer in [0, 2**63), received {d.get('seed_offset')}")
        if op in ("dense", "batchnorm", "layernorm", "rmsnorm", "prelu"):
            _check_node_slots(i, d, factored)
        activity = d.get("activity") or {}
        try:
            l1, l2 = float(activity.get("l1", 0.0)), float(activity.get("l2", 0.0))
        except (AttributeError, TypeError, ValueError):
            l1 = l2 = float("nan")
        if not (np.isfinite(l1) and np.isfinite(l2) and l1 >= 0 and l2 >= 0):
            raise _graph_error(i, d, f"`activity` needs finite l1, l2 >= 0, received {activity}")
        shapes.append(shape)
        n_in_total += len(ins)
    in_list = [int(k) for k in inputs]
    input_ops = [i for i, d in enumerate(nodes) if d["op"] == "input"]
    if not input_ops:
        raise ValueError("Invalid argument `nodes`: a graph needs at least one node of op 'input'")
    if sorted(in_list) != input_ops:
        raise ValueError(f"Invalid argument `inputs`: expected each input node once ({input_ops}), received {in_list}")
    if not outputs:
        raise ValueError("Invalid argument `outputs`: a graph needs at least one output")
    for o, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("node"), (int, np.integer)) or not 0 <= out["node"] < N:
            raise ValueError(
                f"Invalid output {o}: expected a dict whose `node` is a node index in [0, {N}), received {out!r}"
            )
        loss = out.get("loss")
        if loss is not None:
            _code(LOSSES, loss, "loss")
            _check_metric(out.get("metric"), loss)
        elif out.get("metric") is not None:
            raise ValueError(f"Invalid output {o}: a metric ({out.get('metric')!r}) needs a loss (and labels)")
        _code(METRICS, out.get("metric"), "metric")
        wt = float(out.get("weight", 1.0))
        if not np.isfinite(wt):
            raise ValueError(f"Invalid output {o}: `weight` must be a finite number, received {wt}")
    # a later call of a shared layer (`share`: its first call's node) holds the first call's very arrays;
    # any other trainable parameters shared by two nodes would get two updates a step
    seen: list[tuple[int, str, Any]] = []
    for i, d in enumerate(nodes):
        if d["op"] not in ("dense", "batchnorm", "layernorm", "rmsnorm", "prelu"):
            continue
        j = d.get("share", -1)
        if not isinstance(j, (int, np.integer)) or not -1 <= j < i:
            raise _graph_error(i, d, f"`share` must be an earlier node's index or -1, received {j!r}")
        if j >= 0:
            owner = nodes[j]
            if owner["op"] != d["op"] or owner.get("share", -1) != -1:
                raise _graph_error(i, d, f"`share` names node {j}, which is not the first call of a {d['op']} layer")
            for key in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance"):
                if d.get(key) is not owner.get(key):
                    raise _graph_error(i, d, f"its `{key}` is not node {j}'s, whose weights it shares")
            if bool(d.get("trainable", True)) != bool(owner.get("trainable", True)):
                raise _graph_error(i, d, f"`trainable` differs from node {j}'s, whose weights it shares")
            continue
        if d.get("trainable", True):
            for key in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance"):
                a = d.get(key)
                if a is None:
                    continue
                for j, jkey, other in seen:
                    if np.shares_memory(a, other):
                        raise _graph_error(
                            i,
                            d,
                            f"its `{key}` shares memory with node {j}'s `{jkey}`: a trainable layer used "
                            f"twice must name its first call's node in `share`",
                        )
                seen.append((i, key, a))
    return shapes, n_in_total, in_list


def check_batches(perm: Any, n: int, first: int, n_batches: int, batch_size: int) -> None:
    """Check a run's batches: ``perm`` an int32 ``[n]`` permutation of the rows it reads, the batch range."""
    _check(perm, "perm", 1, dtype=np.int32)
    _shape(perm, "perm", (n,))
    if batch_size < 1:
        raise ValueError(f"Invalid value for argument `batch_size`: expected a positive integer, received {batch_size}")
    n_total = (n + batch_size - 1) // batch_size
    if n_batches < 0 or first < 0 or first + n_batches > n_total:
        raise ValueError(f"Invalid batch range: first={first}, n_batches={n_batches} for {n_total} batches")
    seg = perm[first * batch_size : min(n, (first + n_batches) * batch_size)]
    if seg.size and (seg.min() < 0 or seg.max() >= n):
        raise ValueError(f"Invalid argument `perm`: expected indices in [0, {n}), received [{seg.min()}, {seg.max()}]")


def check_sums(a: Any, name: str, n_batches: int, columns: int | None = None) -> None:
    """Check a run's float64 per-batch sums: ``[>= n_batches]``, or ``[>= n_batches, columns]``."""
    _check(a, name, 1 if columns is None else 2, writable=True, dtype=np.float64)
    if a.shape[0] < n_batches or (columns is not None and a.shape[1] != columns):
        want = f"at least {n_batches} entries" if columns is None else f"(>= {n_batches}, {columns})"
        raise ValueError(f"Invalid shape for argument `{name}`: expected {want}, received {a.shape}")


def check_outputs(a: Any, name: str, rows: int, width: int) -> None:
    """Check a run's optional float32 output buffer: C-contiguous, at least ``rows`` rows of ``width``."""
    if a is None:
        return
    _check(a, name, 2, writable=True)
    if a.shape[0] < rows or a.shape[1] != width:
        raise ValueError(
            f"Invalid shape for argument `{name}`: expected at least ({rows}, {width}), received {a.shape}"
        )


# ---- the wrapper's own argument checks (cdnn._core imports them back) ----------


def _slots_needed(h: dict) -> set:
    """Slots each optimizer's update reads (1, 2, 3 = slot1..slot3), beyond the options' ema/accumulator."""
    kind = h.get("name")
    if kind == "sgd":
        return {1} if (h.get("momentum") or 0.0) != 0 else set()
    if kind == "adagrad" or kind == "lion":
        return {1}
    if kind == "rmsprop":
        return {1, 2} if (h.get("momentum") or 0.0) > 0 else {1}
    if kind == "adam":
        return {1, 2, 3} if h.get("amsgrad") else {1, 2}
    if kind == "adafactor":
        return {1, 2, 3}
    return {1, 2}


def hparams_name(kind: int) -> str:
    """The optimizer name of the core's code ``kind``."""
    return {v: k for k, v in OPTIMIZERS.items()}[kind]


def _check_rules(r: Any, name: str, shape: tuple) -> dict:
    """Validate a variable's rules dict; an orthogonal regularizer needs a kernel and its scratch array."""
    r = r or {}
    if r.get("orth_factor"):
        if len(shape) != 2:
            raise ValueError(
                f"Inputs to OrthogonalRegularizer must have rank 2. Received: inputs.shape={shape} ({name})"
            )
        scratch = r.get("orth_scratch")
        _check(scratch, f"{name}.orth_scratch", 1, writable=True)
        need = 2 * shape[0] * shape[1] + max(shape)
        if scratch.shape[0] < need:
            raise ValueError(
                f"Invalid `{name}.orth_scratch`: expected at least {need} floats, received {scratch.shape[0]}"
            )
    return r


def _check_metric(metric: Any, loss_name: str) -> None:
    """The accuracy kind must read the kind of labels the loss takes (sparse or dense)."""
    sparse = loss_name == "sparse_categorical_crossentropy"
    if metric is not None and (metric == "sparse") != sparse:
        raise ValueError(
            f"Invalid value for argument `metric`: {metric!r} accuracy cannot read the "
            f"{'integer' if sparse else 'dense'} labels of {loss_name}"
        )


def _hinge_binary(loss_name: str, yd: Any) -> bool:
    """Whether hinge labels are all 0 or 1, which Keras reads as -1 and 1."""
    if loss_name not in ("hinge", "squared_hinge") or yd is None:
        return False
    return bool(((yd == 0) | (yd == 1)).all())


def _check_label_range(y: np.ndarray, name: str, units: int, ignore_class: Any) -> None:
    """Class indices ``y`` in [0, units), ``ignore_class`` (if not None) not counted."""
    counted = y[y != ignore_class] if ignore_class is not None else y
    if counted.size and (counted.min() < 0 or counted.max() >= units):
        also = f" (or ignore_class={ignore_class})" if ignore_class is not None else ""
        raise ValueError(
            f"Invalid labels in `{name}`: expected class indices in [0, {units}){also} for an "
            f"output of {units} units, received values in [{counted.min()}, {counted.max()}]"
        )


def _check_labels(y: Any, name: str, rows: int, units: int, loss_name: str, ignore_class: Any = None) -> tuple:
    """Validate labels for a loss; returns (sparse int32 or None, dense float32 or None)."""
    if loss_name == "sparse_categorical_crossentropy":
        _check(y, name, 1, dtype=np.int32)
        _shape(y, name, (rows,))
        _check_label_range(y, name, units, ignore_class)
        return y, None
    _check(y, name, 2)
    _shape(y, name, (rows, units))
    return None, y


def _check_step_arrays(h: dict, first_step: int, n_steps: int) -> None:
    """The per-step arrays must cover steps first_step .. first_step + n_steps - 1 (1-based)."""
    for key in ("step_lr", "step_aux"):
        a = h.get(key)
        if a is not None:
            lo = first_step - 1 - h["step_base"]
            if lo < 0 or lo + n_steps > a.shape[0]:
                raise ValueError(
                    f"Invalid `{key}`: it covers steps {h['step_base'] + 1}..{h['step_base'] + a.shape[0]}, "
                    f"the run needs {first_step}..{first_step + n_steps - 1}"
                )


def check_apply(
    hparams: dict,
    kind: int,
    use_ema: int,
    accumulation_steps: int,
    variables: list,
    grads: list,
    slots: list,
    step: int,
    rules: Any,
) -> list:
    """Validate ``optimizer_apply``'s arguments (``kind`` and the next two: the parsed ``hparams``); returns per
    variable ``(w, g, slots padded to 5, rules, rows, cols)``."""
    if step < 1:
        raise ValueError(f"Invalid value for argument `step`: expected >= 1, received {step}")
    _check_step_arrays(hparams, step, 1)
    if len(grads) != len(variables) or len(slots) != len(variables):
        raise ValueError("optimizer_apply: variables, grads and slots must have the same length")
    rules = rules or [None] * len(variables)
    need = _slots_needed(hparams)
    views = []
    for i, (w, g, sl) in enumerate(zip(variables, grads, slots)):
        _check(w, "w", w.ndim if isinstance(w, np.ndarray) else 1, writable=True)
        if w.ndim not in (1, 2):
            raise ValueError(f"Invalid shape for `variables[{i}]`: expected 1 or 2 dimensions, received {w.shape}")
        _check(g, "g", w.ndim, writable=True)
        _shape(g, "g", w.shape)
        sl = list(sl) + [None] * (5 - len(sl))
        for k in need:
            if sl[k - 1] is None and not (kind == 9 and k < 3 and w.ndim < 2):
                raise ValueError(
                    f"Invalid arguments for optimizer {hparams.get('name')!r}: missing slot {k} of variable {i}"
                )
        if (use_ema and sl[3] is None) or (accumulation_steps > 1 and sl[4] is None):
            raise ValueError(f"Invalid arguments: variable {i} lacks its ema/accumulator slot")
        for k, s in enumerate(sl):
            if s is None:
                continue
            if kind == 9 and k < 2 and w.ndim == 2:
                _check(s, f"slots[{i}][{k}]", 1, writable=True)
                _shape(s, f"slots[{i}][{k}]", (w.shape[k],))
            else:
                _check(s, f"slots[{i}][{k}]", w.ndim, writable=True)
                _shape(s, f"slots[{i}][{k}]", w.shape)
        if kind == 9 and w.ndim < 2:
            sl[0] = sl[1] = None
        rows, cols = (w.shape[0], w.shape[1]) if w.ndim == 2 else (w.shape[0], 1)
        _check_rules(rules[i], f"rules[{i}]", w.shape)
        views.append((w, g, sl, rules[i], rows, cols))
    return views


def check_ys(ys: Any, n: int, shapes: tuple, output_nodes: tuple, loss_names: tuple, ignored: list) -> None:
    """Validate a graph's labels: one array per output (None for an output without a loss), ``n`` rows;
    ``ignored[o]``: output o's ignore_class (or None), a label not counted."""
    if not isinstance(ys, (list, tuple)) or len(ys) != len(output_nodes):
        raise ValueError(
            f"Invalid argument `ys`: expected a list of {len(output_nodes)} label array(s) "
            f"(None for an output without a loss)"
        )
    for o, y in enumerate(ys):
        loss = loss_names[o]
        if loss is None:
            if y is not None:
                raise ValueError(f"Invalid argument `ys[{o}]`: output {o} has no loss, expected None")
            continue
        shape = shapes[output_nodes[o]]
        rows, width = int(np.prod(shape[:-1])), shape[-1]
        if loss == "sparse_categorical_crossentropy":
            _check(y, f"ys[{o}]", 1 if rows == 1 else 2, dtype=np.int32)
            _shape(y, f"ys[{o}]", (n,) if rows == 1 else (n, rows))
            _check_label_range(y, f"ys[{o}]", width, ignored[o])
        else:
            _check(y, f"ys[{o}]", 2)
            _shape(y, f"ys[{o}]", (n, rows * width))
