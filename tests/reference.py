"""Plain NumPy implementation of cdnn's math: the test oracle and the benchmark baseline.

Everything a dense network needs — activations and their gradients, the Dense
layer's forward and backward pass, the four losses, accuracy, the four
optimizers and Glorot initialisation — written the way a NumPy user would
write it, following Keras 3's formulas and defaults.

This module imports nothing but NumPy and the standard library, and nothing in
cdnn imports it: an oracle that shares code with what it checks proves nothing.

Arrays are float64 unless said otherwise; every function keeps the floating
dtype of its inputs, so ``MLP(..., dtype=np.float32)`` is a float32 NumPy
baseline for the benchmarks.

Keras 3 source this follows (keras-team/keras, ``keras/src/``):

- ``activations/activations.py``: ``leaky_relu`` negative_slope=0.2,
  ``gelu`` approximate=False, i.e. ``0.5 * x * (1 + erf(x / sqrt(2)))``.
- ``backend/numpy/nn.py``: softmax subtracts the row max; categorical
  cross-entropy on probabilities divides by the row sum, clips to
  ``[1e-7, 1 - 1e-7]`` then takes the log; binary cross-entropy on
  probabilities clips the same way.
- ``losses/losses.py``: BCE and MSE are averaged over the last axis, then every
  loss over the batch (reduction ``"sum_over_batch_size"``).
- ``optimizers/sgd.py``, ``adagrad.py``, ``rmsprop.py``, ``adam.py``: the
  update rules written out in each class below.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "EPSILON",
    "activation",
    "activation_grad",
    "dense_forward",
    "dense_backward",
    "loss",
    "loss_grad",
    "softmax_cross_entropy_grad",
    "sigmoid_bce_grad",
    "accuracy",
    "keras_loss",
    "keras_loss_grad",
    "keras_reduced_loss",
    "relu_with_options",
    "relu_with_options_grad",
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adam",
    "glorot_uniform",
    "MLP",
    "batch_moments",
    "normalize",
    "moving_update",
    "batchnorm_backward",
    "layernorm_forward",
    "layernorm_backward",
    "merge_forward",
    "merge_backward",
    "l2_normalize",
    "l2_normalize_backward",
    "dot_forward",
    "dot_backward",
    "rmsnorm_forward",
    "rmsnorm_backward",
    "Graph",
]

#: Keras' ``backend.epsilon()``: the clipping bound for probabilities in losses.
EPSILON = 1e-7

ACTIVATIONS = (
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "leaky_relu",
    "gelu",
    "elu",
    "selu",
    "silu",
    "softplus",
    "softsign",
    "hard_sigmoid",
    "hard_silu",
    "mish",
    "relu6",
    "exponential",
    "log_softmax",
)
#: keras.activations.selu's constants (activations.py docstring: Klambauer et al., 2017)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
ELU_ALPHA = 1.0  # keras.activations.elu(x, alpha=1.0)
LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mse",
)
_LOSS_ALIASES = {"mean_squared_error": "mse"}

LEAKY_RELU_SLOPE = 0.2  # keras.activations.leaky_relu(x, negative_slope=0.2)

_erf = np.vectorize(math.erf, otypes=[np.float64])


# ----------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------


def _check_activation(name: str | None) -> str:
    name = "linear" if name is None else name
    if name not in ACTIVATIONS:
        raise ValueError(
            f"Invalid value for argument `activation`: expected one of "
            f"{ACTIVATIONS} or None, received activation={name!r}"
        )
    return name


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # 1 / (1 + exp(-z)) without overflow: exp only ever sees -|z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _std_normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


def activation(name: str | None, z: np.ndarray) -> np.ndarray:
    """Apply a Keras 3 activation.

    Parameters
    ----------
    name : str or None
        One of ``"linear"`` (or None), ``"relu"``, ``"sigmoid"``, ``"tanh"``,
        ``"softmax"`` (over the last axis), ``"leaky_relu"`` (slope 0.2) or
        ``"gelu"`` (exact, erf-based).
    z : ndarray
        Pre-activations.

    Returns
    -------
    ndarray
        ``act(z)``, same shape and floating dtype as ``z``.
    """
    name = _check_activation(name)
    z = np.asarray(z)
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0)
    if name == "sigmoid":
        return _sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softmax":
        return _softmax(z)
    if name == "leaky_relu":
        return np.maximum(z, LEAKY_RELU_SLOPE * z)
    if name == "gelu":
        return (z * _std_normal_cdf(z)).astype(z.dtype, copy=False)
    return _more_activation(name, z)


def _softplus(z: np.ndarray) -> np.ndarray:
    # log(1 + e^z) = log(e^0 + e^z): NumPy's logaddexp, which never overflows
    return np.logaddexp(0.0, z)


def _more_activation(name: str, z: np.ndarray) -> np.ndarray:
    """Keras 3's other activations (activations.py), straight from their docstrings' formulas."""
    if name == "elu":
        return np.where(z > 0, z, ELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if name == "selu":
        return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))
    if name == "silu":
        return z * _sigmoid(z)
    if name == "softplus":
        return _softplus(z)
    if name == "softsign":
        return z / (np.abs(z) + 1)
    if name == "hard_sigmoid":
        # Keras 3: 0 if x <= -3, 1 if x >= 3, x/6 + 0.5 in between
        return np.clip(z / 6 + 0.5, 0, 1)
    if name == "hard_silu":
        return z * np.clip(z / 6 + 0.5, 0, 1)
    if name == "mish":
        return z * np.tanh(_softplus(z))
    if name == "relu6":
        return np.clip(z, 0, 6)
    if name == "exponential":
        return np.exp(z)
    # log_softmax over the last axis
    return _log_softmax(z)


def relu_with_options(
    z: np.ndarray, negative_slope: float = 0.0, max_value: float | None = None, threshold: float = 0.0
) -> np.ndarray:
    """keras.activations.relu with its options: ``z`` where ``z > threshold`` (at most ``max_value``),
    else ``negative_slope * (z - threshold)``."""
    z = np.asarray(z, dtype=np.float64)
    above = z if max_value is None else np.minimum(z, max_value)
    return np.where(z > threshold, above, negative_slope * (z - threshold))


def relu_with_options_grad(
    z: np.ndarray,
    upstream: np.ndarray,
    negative_slope: float = 0.0,
    max_value: float | None = None,
    threshold: float = 0.0,
) -> np.ndarray:
    """Back-propagate through :func:`relu_with_options`: ``upstream`` times 1 where
    ``threshold < z < max_value``, ``negative_slope`` where ``z < threshold``, else 0 (at the
    kinks ``z == threshold`` and ``z == max_value`` the derivative is taken as 0)."""
    z = np.asarray(z, dtype=np.float64)
    inside = (z > threshold) & (True if max_value is None else z < max_value)
    return np.asarray(upstream, np.float64) * np.where(inside, 1.0, np.where(z < threshold, negative_slope, 0.0))


def activation_grad(name: str | None, z: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    """Back-propagate through an activation.

    Parameters
    ----------
    name : str or None
        Activation name, as for :func:`activation`.
    z : ndarray
        The pre-activations the forward pass saw.
    upstream : ndarray
        ``dL/da``, same shape as ``z``.

    Returns
    -------
    ndarray
        ``dL/dz``. Element-wise activations multiply by ``act'(z)`` (relu and
        leaky_relu take the derivative at 0 from the left: 0 and 0.2); softmax
        applies its Jacobian row by row: ``s * (u - sum(u * s))``.
    """
    name = _check_activation(name)
    z = np.asarray(z)
    u = np.asarray(upstream)
    if name == "linear":
        return u
    if name == "relu":
        return u * (z > 0)
    if name == "sigmoid":
        s = _sigmoid(z)
        return u * s * (1 - s)
    if name == "tanh":
        t = np.tanh(z)
        return u * (1 - t * t)
    if name == "softmax":
        s = _softmax(z)
        return s * (u - (u * s).sum(axis=-1, keepdims=True))
    if name == "leaky_relu":
        return u * np.where(z > 0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype, copy=False)
    if name == "gelu":
        # d/dz [z * Phi(z)] = Phi(z) + z * phi(z)
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return (u * (_std_normal_cdf(z) + z * pdf)).astype(z.dtype, copy=False)
    if name == "log_softmax":
        # d/dz [z - logsumexp(z)]: u - softmax(z) * sum(u)
        return u - _softmax(z) * u.sum(axis=-1, keepdims=True)
    return u * _more_derivative(name, z)


def _more_derivative(name: str, z: np.ndarray) -> np.ndarray:
    """The derivatives of the element-wise activations of :func:`_more_activation` (0 at kinks' left side)."""
    s = _sigmoid(z)
    if name == "elu":
        return np.where(z > 0, 1.0, ELU_ALPHA * np.exp(np.minimum(z, 0)))
    if name == "selu":
        return SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0)))
    if name == "silu":
        return s + z * s * (1 - s)
    if name == "softplus":
        return s
    if name == "softsign":
        return 1 / (1 + np.abs(z)) ** 2
    if name == "hard_sigmoid":
        return np.where((z > -3) & (z < 3), 1 / 6, 0.0)
    if name == "hard_silu":
        return np.clip(z / 6 + 0.5, 0, 1) + np.where((z > -3) & (z < 3), z / 6, 0.0)
    if name == "mish":
        t = np.tanh(_softplus(z))
        return t + z * (1 - t * t) * s
    if name == "relu6":
        return ((z > 0) & (z < 6)).astype(np.float64)
    # exponential
    return np.exp(z)


# ----------------------------------------------------------------------------
# Dense layer
# ----------------------------------------------------------------------------


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray | None, act: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Forward pass of a Dense layer: ``z = x @ W + b``, ``a = act(z)``.

    Parameters
    ----------
    x : ndarray, shape (batch, in)
    W : ndarray, shape (in, units)
        The kernel, laid out as Keras stores it.
    b : ndarray, shape (units,), or None
        The bias; None for ``use_bias=False``.
    act : str or None
        Activation name.

    Returns
    -------
    z, a : ndarray, shape (batch, units)
        Pre-activations and activations.
    """
    z = x @ W
    if b is not None:
        z = z + b
    return z, activation(act, z)


def dense_backward(
    x: np.ndarray,
    W: np.ndarray,
    z: np.ndarray,
    upstream_da: np.ndarray,
    act: str | None,
    need_dx: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Backward pass of a Dense layer.

    Parameters
    ----------
    x : ndarray, shape (batch, in)
        The layer's input in the forward pass.
    W : ndarray, shape (in, units)
    z : ndarray, shape (batch, units)
        The pre-activations from :func:`dense_forward`.
    upstream_da : ndarray, shape (batch, units)
        ``dL/da``.
    act : str or None
        Activation name.
    need_dx : bool
        Whether to compute ``dL/dx`` (the first layer does not need it).

    Returns
    -------
    dW : ndarray, shape (in, units)
        ``x.T @ dz``.
    db : ndarray, shape (units,)
        ``dz.sum(axis=0)`` (returned even when the layer has no bias).
    dx : ndarray, shape (batch, in), or None
        ``dz @ W.T`` if ``need_dx``, else None.
    """
    dz = activation_grad(act, z, upstream_da)
    dW = x.T @ dz
    db = dz.sum(axis=0)
    dx = dz @ W.T if need_dx else None
    return dW, db, dx


def shared_dense_backward(
    xs: list[np.ndarray], W: np.ndarray, zs: list[np.ndarray], upstreams: list[np.ndarray], act: str | None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Backward pass of one Dense layer called on each of ``xs`` (one set of weights).

    The loss depends on W through every call, so its gradient is the sum of the
    calls' gradients (each call's :func:`dense_backward`), taken in call order.

    Returns
    -------
    dW, db : the summed gradients
    dxs : each call's ``dL/dx``
    """
    dW = np.zeros_like(W)
    db = np.zeros(W.shape[1], dtype=W.dtype)
    dxs = []
    for x, z, up in zip(xs, zs, upstreams):
        gW, gb, dx = dense_backward(x, W, z, up, act)
        dW = dW + gW
        db = db + gb
        dxs.append(dx)
    return dW, db, dxs


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------


def _check_loss(name: str) -> str:
    name = _LOSS_ALIASES.get(name, name)
    if name not in LOSSES:
        raise ValueError(
            f"Invalid value for argument `loss`: expected one of {LOSSES} "
            f"(or 'mean_squared_error'), received loss={name!r}"
        )
    return name


def _sparse_labels(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    # Labels of shape (batch,) or (batch, 1) -> integer vector of length batch.
    labels = np.asarray(y_true).reshape(-1).astype(np.int64)
    if labels.shape[0] != y_pred.shape[0]:
        raise ValueError(
            f"Expected one integer label per row of y_pred ({y_pred.shape[0]}), "
            f"received y_true.shape={np.shape(y_true)}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= y_pred.shape[-1]):
        raise ValueError(
            f"Expected integer labels in [0, {y_pred.shape[-1]}), received labels from {labels.min()} to {labels.max()}"
        )
    return labels


def _one_hot(labels: np.ndarray, n: int, dtype: np.dtype) -> np.ndarray:
    out = np.zeros((labels.shape[0], n), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def _same_shape(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    # Keras squeezes/expands y_true to y_pred's rank, e.g. (batch,) vs (batch, 1).
    y = np.asarray(y_true, dtype=y_pred.dtype)
    if y.shape != y_pred.shape:
        if y.size != y_pred.size:
            raise ValueError(
                f"y_true and y_pred must have the same shape, received "
                f"y_true.shape={y.shape}, y_pred.shape={y_pred.shape}"
            )
        y = y.reshape(y_pred.shape)
    return y


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _per_sample_loss(name: str, y_true, y_pred: np.ndarray, from_logits: bool) -> np.ndarray:
    """Keras' loss function before the batch reduction: one value per sample."""
    eps = EPSILON
    if name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        if name == "sparse_categorical_crossentropy":
            t = _one_hot(_sparse_labels(y_true, y_pred), y_pred.shape[-1], y_pred.dtype)
        else:
            t = _same_shape(y_true, y_pred)
        if from_logits:
            log_p = _log_softmax(y_pred)
        else:
            p = y_pred / y_pred.sum(axis=-1, keepdims=True)
            log_p = np.log(np.clip(p, eps, 1 - eps))
        return -(t * log_p).sum(axis=-1)
    t = _same_shape(y_true, y_pred)
    if name == "binary_crossentropy":
        if from_logits:
            # log(1 + exp(x)) - x*t, written stably (as Keras' JAX/TF backends do)
            per_elem = np.maximum(y_pred, 0) - y_pred * t + np.log1p(np.exp(-np.abs(y_pred)))
        else:
            p = np.clip(y_pred, eps, 1 - eps)
            per_elem = -(t * np.log(p) + (1 - t) * np.log(1 - p))
        return per_elem.mean(axis=-1)
    # mse
    return ((y_pred - t) ** 2).mean(axis=-1)


def loss(name: str, y_true: np.ndarray, y_pred: np.ndarray, from_logits: bool = False) -> float:
    """Mean loss over the batch, with Keras 3's formulas.

    Parameters
    ----------
    name : str
        ``"sparse_categorical_crossentropy"`` (``y_true`` integer labels of
        shape (batch,) or (batch, 1)), ``"categorical_crossentropy"``
        (one-hot ``y_true``), ``"binary_crossentropy"`` or ``"mse"``
        (alias ``"mean_squared_error"``).
    y_true : ndarray
        Targets.
    y_pred : ndarray, shape (batch, units)
        Predictions: probabilities, or logits when ``from_logits``.
    from_logits : bool
        Whether ``y_pred`` holds logits (cross-entropies only; ignored by mse).

    Returns
    -------
    float
        The loss averaged over the batch (BCE and MSE first over the last axis).

    Notes
    -----
    On probabilities, the categorical losses divide each row by its sum and
    clip to ``[1e-7, 1 - 1e-7]`` before the log; BCE clips likewise. On logits,
    they use log-softmax and ``max(x, 0) - x*t + log1p(exp(-|x|))``.
    """
    name = _check_loss(name)
    y_pred = np.asarray(y_pred)
    return float(_per_sample_loss(name, y_true, y_pred, from_logits).mean())


def loss_grad(name: str, y_true: np.ndarray, y_pred: np.ndarray, from_logits: bool = False) -> np.ndarray:
    """Gradient of :func:`loss` (the batch mean) with respect to ``y_pred``.

    Parameters
    ----------
    name, y_true, y_pred, from_logits
        As for :func:`loss`.

    Returns
    -------
    ndarray
        ``d loss / d y_pred``, same shape as ``y_pred``. Where Keras clips a
        probability the gradient through that entry is zero, as the clip's is.
    """
    name = _check_loss(name)
    y_pred = np.asarray(y_pred)
    batch = y_pred.shape[0]
    eps = EPSILON
    if name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        if name == "sparse_categorical_crossentropy":
            t = _one_hot(_sparse_labels(y_true, y_pred), y_pred.shape[-1], y_pred.dtype)
        else:
            t = _same_shape(y_true, y_pred)
        if from_logits:
            # d/dz [-sum_k t_k log_softmax(z)_k] = softmax(z) * sum(t) - t
            return (_softmax(y_pred) * t.sum(axis=-1, keepdims=True) - t) / batch
        # loss = -sum_k t_k log(clip(q_k)), q = p / sum(p)
        s = y_pred.sum(axis=-1, keepdims=True)
        q = y_pred / s
        inside = (q > eps) & (q < 1 - eps)
        dq = np.where(inside, -t / np.where(inside, q, 1), 0)
        # dq_k/dp_j = (delta_kj - q_k) / s
        dp = (dq - (dq * q).sum(axis=-1, keepdims=True)) / s
        return dp / batch
    t = _same_shape(y_true, y_pred)
    n = batch * y_pred.shape[-1]  # mean over the last axis, then over the batch
    if name == "binary_crossentropy":
        if from_logits:
            return (_sigmoid(y_pred) - t) / n
        inside = (y_pred > eps) & (y_pred < 1 - eps)
        p = np.where(inside, y_pred, 0.5)
        return np.where(inside, (p - t) / (p * (1 - p)), 0) / n
    # mse
    return 2 * (y_pred - t) / n


def softmax_cross_entropy_grad(logits: np.ndarray, labels_sparse: np.ndarray) -> tuple[float, np.ndarray]:
    """Softmax followed by cross-entropy, fused and numerically stable.

    Parameters
    ----------
    logits : ndarray, shape (batch, classes)
    labels_sparse : ndarray of int, shape (batch,) or (batch, 1)
        Class indices. A float array of the same shape as ``logits`` is taken
        as one-hot (or soft) targets instead.

    Returns
    -------
    mean_loss : float
        ``mean(logsumexp(z) - z[label])``.
    dlogits : ndarray, shape (batch, classes)
        ``(softmax(z) - onehot) / batch``.
    """
    z = np.asarray(logits)
    labels = np.asarray(labels_sparse)
    if labels.shape == z.shape and z.shape[-1] > 1:
        t = labels.astype(z.dtype, copy=False)
    else:
        t = _one_hot(_sparse_labels(labels, z), z.shape[-1], z.dtype)
    batch = z.shape[0]
    m = z.max(axis=-1, keepdims=True)
    e = np.exp(z - m)
    sum_e = e.sum(axis=-1, keepdims=True)
    log_p = (z - m) - np.log(sum_e)
    mean_loss = float(-(t * log_p).sum() / batch)
    dlogits = (e / sum_e * t.sum(axis=-1, keepdims=True) - t) / batch
    return mean_loss, dlogits


def sigmoid_bce_grad(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Sigmoid followed by binary cross-entropy, fused and numerically stable.

    Parameters
    ----------
    logits : ndarray, shape (batch, units)
    y : ndarray
        Targets in [0, 1], shape (batch, units) or (batch,) when units == 1.

    Returns
    -------
    mean_loss : float
        Mean over all elements of ``max(x, 0) - x*y + log1p(exp(-|x|))``.
    dlogits : ndarray, shape (batch, units)
        ``(sigmoid(x) - y) / (batch * units)``.
    """
    x = np.asarray(logits)
    t = _same_shape(y, x)
    per_elem = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
    return float(per_elem.mean()), (_sigmoid(x) - t) / x.size


# ----------------------------------------------------------------------------
# Keras 3's other losses, with their options, sample weights and gradients
# (keras/src/losses/losses.py and loss.py; backend/numpy/nn.py)
# ----------------------------------------------------------------------------

KERAS_LOSSES = (
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
    "kl_divergence",
    "poisson",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
    "cosine_similarity",
)


def _targets(name: str, y_true, p: np.ndarray, label_smoothing: float, ignore_class) -> np.ndarray:
    """Dense float64 targets of p's shape (one-hot for sparse labels; ignored rows all zero)."""
    if name == "sparse_categorical_crossentropy":
        labels = np.asarray(y_true).reshape(-1).astype(np.int64)
        keep = labels != ignore_class if ignore_class is not None else np.ones(labels.shape, bool)
        t = np.zeros(p.shape)
        t[np.flatnonzero(keep), labels[keep]] = 1.0
        return t
    t = np.asarray(y_true, dtype=np.float64).reshape(p.shape)
    if label_smoothing and name == "categorical_crossentropy":
        t = t * (1 - label_smoothing) + label_smoothing / p.shape[-1]
    elif label_smoothing and name in ("binary_crossentropy", "binary_focal_crossentropy"):
        t = t * (1 - label_smoothing) + 0.5 * label_smoothing
    if name in ("hinge", "squared_hinge") and np.isin(t, (0.0, 1.0)).all():
        t = 2 * t - 1  # Keras' convert_binary_labels_to_hinge
    return t


def keras_loss(
    name: str,
    y_true,
    y_pred,
    from_logits: bool = False,
    *,
    label_smoothing: float = 0.0,
    delta: float = 1.0,
    gamma: float = 2.0,
    alpha: float = 0.25,
    apply_class_balancing: bool = False,
    ignore_class=None,
) -> np.ndarray:
    """One value per row of ``y_pred`` [batch, d] (float64), as Keras 3's loss function of that name.

    Rows whose sparse label is ``ignore_class`` give 0 (Keras masks them out of the mean).
    """
    if name not in KERAS_LOSSES:
        raise ValueError(f"Invalid value for argument `name`: expected one of {KERAS_LOSSES}, received {name!r}")
    p = np.asarray(y_pred, dtype=np.float64)
    t = _targets(name, y_true, p, label_smoothing, ignore_class)
    eps = EPSILON
    e = p - t
    if name == "mean_squared_error":
        return (e**2).mean(-1)
    if name == "mean_absolute_error":
        return np.abs(e).mean(-1)
    if name == "mean_absolute_percentage_error":
        return 100 * (np.abs(e) / np.maximum(np.abs(t), eps)).mean(-1)
    if name == "mean_squared_logarithmic_error":
        return ((np.log1p(np.maximum(p, eps)) - np.log1p(np.maximum(t, eps))) ** 2).mean(-1)
    if name == "huber":
        a = np.abs(e)
        return np.where(a <= delta, 0.5 * e * e, delta * a - 0.5 * delta * delta).mean(-1)
    if name == "log_cosh":
        # log(cosh(x)) = |x| + log1p(e^-2|x|) - log 2, the stable form of the definition
        a = np.abs(e)
        return (a + np.log1p(np.exp(-2 * a)) - math.log(2)).mean(-1)
    if name in ("binary_crossentropy", "binary_focal_crossentropy"):
        if name == "binary_crossentropy" and from_logits:
            return (np.logaddexp(0.0, p) - p * t).mean(-1)
        q = _sigmoid(p) if from_logits else p
        qc = np.clip(q, eps, 1 - eps)
        bce = -(t * np.log(qc) + (1 - t) * np.log(1 - qc))
        if name == "binary_crossentropy":
            return bce.mean(-1)
        p_t = t * q + (1 - t) * (1 - q)
        focal = (1 - p_t) ** gamma * bce
        if apply_class_balancing:
            focal = (t * alpha + (1 - t) * (1 - alpha)) * focal
        return focal.mean(-1)
    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        if from_logits:
            log_q = _log_softmax(p)
        else:
            log_q = np.log(np.clip(p / p.sum(-1, keepdims=True), eps, 1 - eps))
        return -(t * log_q).sum(-1)
    if name == "kl_divergence":
        tc, pc = np.clip(t, eps, 1), np.clip(p, eps, 1)
        return (tc * np.log(tc / pc)).sum(-1)
    if name == "poisson":
        return (p - t * np.log(p + eps)).mean(-1)
    if name == "hinge":
        return np.maximum(1 - t * p, 0).mean(-1)
    if name == "squared_hinge":
        return (np.maximum(1 - t * p, 0) ** 2).mean(-1)
    if name == "categorical_hinge":
        pos = (t * p).sum(-1)
        neg = ((1 - t) * p).max(-1)
        return np.maximum(neg - pos + 1, 0)
    # cosine_similarity: x / sqrt(max(sum x^2, eps^2)) (ops.normalize with epsilon 1e-7)
    nt = t / np.sqrt(np.maximum((t * t).sum(-1, keepdims=True), eps * eps))
    npred = p / np.sqrt(np.maximum((p * p).sum(-1, keepdims=True), eps * eps))
    return -(nt * npred).sum(-1)


def keras_loss_grad(name: str, y_true, y_pred, from_logits: bool = False, **options) -> np.ndarray:
    """``d keras_loss_i / d y_pred_i`` for each row (float64), written out by hand.

    Where Keras clips a value the derivative through it is 0; at kinks (|x| at 0, hinge at the
    margin) the one-sided value the C core takes: 0 for sign(0) and for a zero margin.
    """
    p = np.asarray(y_pred, dtype=np.float64)
    ls = options.get("label_smoothing", 0.0)
    t = _targets(name, y_true, p, ls, options.get("ignore_class"))
    eps = EPSILON
    d = p.shape[-1]
    e = p - t
    if name == "mean_squared_error":
        return 2 * e / d
    if name == "mean_absolute_error":
        return np.sign(e) / d
    if name == "mean_absolute_percentage_error":
        return 100 * np.sign(e) / np.maximum(np.abs(t), eps) / d
    if name == "mean_squared_logarithmic_error":
        diff = np.log1p(np.maximum(p, eps)) - np.log1p(np.maximum(t, eps))
        return np.where(p > eps, 2 * diff / (1 + p), 0.0) / d
    if name == "huber":
        delta = options.get("delta", 1.0)
        return np.where(np.abs(e) <= delta, e, delta * np.sign(e)) / d
    if name == "log_cosh":
        return np.tanh(e) / d
    if name in ("binary_crossentropy", "binary_focal_crossentropy"):
        if name == "binary_crossentropy" and from_logits:
            return (_sigmoid(p) - t) / d
        q = _sigmoid(p) if from_logits else p
        inside = (q > eps) & (q < 1 - eps)
        qs = np.where(inside, q, 0.5)
        dbce = np.where(inside, (qs - t) / (qs * (1 - qs)), 0.0)
        if name == "binary_crossentropy":
            g = dbce
        else:
            gamma, alpha = options.get("gamma", 2.0), options.get("alpha", 0.25)
            qc = np.clip(q, eps, 1 - eps)
            bce = -(t * np.log(qc) + (1 - t) * np.log(1 - qc))
            m = 1 - (t * q + (1 - t) * (1 - q))  # 1 - p_t, d m / d q = 1 - 2t
            dm = gamma * m ** (gamma - 1) * (1 - 2 * t) if gamma else 0.0
            g = dm * bce + m**gamma * dbce
            if options.get("apply_class_balancing", False):
                g = (t * alpha + (1 - t) * (1 - alpha)) * g
        if from_logits:
            g = g * q * (1 - q)
        return g / d
    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        if from_logits:
            return _softmax(p) * t.sum(-1, keepdims=True) - t
        s = p.sum(-1, keepdims=True)
        q = p / s
        inside = (q > eps) & (q < 1 - eps)
        dq = np.where(inside, -t / np.where(inside, q, 1), 0.0)
        return (dq - (dq * q).sum(-1, keepdims=True)) / s
    if name == "kl_divergence":
        tc = np.clip(t, eps, 1)
        return np.where((p > eps) & (p < 1), -tc / np.where((p > eps) & (p < 1), p, 1), 0.0)
    if name == "poisson":
        return (1 - t / (p + eps)) / d
    if name == "hinge":
        return np.where(1 - t * p > 0, -t, 0.0) / d
    if name == "squared_hinge":
        return -2 * t * np.maximum(1 - t * p, 0) / d
    if name == "categorical_hinge":
        pos = (t * p).sum(-1, keepdims=True)
        masked = (1 - t) * p
        k = masked.argmax(-1)
        neg = masked.max(-1, keepdims=True)
        g = -t.copy()
        g[np.arange(p.shape[0]), k] += (1 - t)[np.arange(p.shape[0]), k]
        return np.where(neg - pos + 1 > 0, g, 0.0)
    # cosine similarity: l = -(t^ . p) / |p|
    nt = t / np.sqrt(np.maximum((t * t).sum(-1, keepdims=True), eps * eps))
    sq = (p * p).sum(-1, keepdims=True)
    norm = np.sqrt(np.maximum(sq, eps * eps))
    dot = (nt * p).sum(-1, keepdims=True)
    return np.where(sq > eps * eps, -nt / norm + dot * p / norm**3, -nt / norm)


def keras_reduced_loss(
    name: str, y_true, y_pred, from_logits: bool = False, sample_weight=None, **options
) -> tuple[float, np.ndarray]:
    """Keras' default reduction (loss.py, reduce_weighted_values with "sum_over_batch_size") and its gradient.

    Returns ``(sum_i w_i l_i / N, d/d y_pred)``, ``N`` the rows (only those not of ``ignore_class``:
    Keras' mask weighs the valid rows total / valid).
    """
    p = np.asarray(y_pred, dtype=np.float64)
    rows = p.shape[0]
    w = np.ones(rows) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(rows)
    valid = np.ones(rows, bool)
    if options.get("ignore_class") is not None:
        valid = np.asarray(y_true).reshape(-1) != options["ignore_class"]
    n = int(valid.sum())
    if n == 0:
        return 0.0, np.zeros_like(p)
    w = np.where(valid, w, 0.0)
    per = keras_loss(name, y_true, p, from_logits, **options)
    grad = keras_loss_grad(name, y_true, p, from_logits, **options)
    return float((w * np.where(valid, per, 0.0)).sum() / n), grad * (w / n)[:, None]


# ----------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of correct predictions, with Keras 3's choice of accuracy.

    Parameters
    ----------
    y_true : ndarray
        Integer labels (batch,) or (batch, 1); one-hot (batch, classes); or
        0/1 targets when ``y_pred`` has one column.
    y_pred : ndarray, shape (batch, units)
        Model outputs.

    Returns
    -------
    float
        - ``y_pred.shape[-1] == 1``: binary accuracy, ``(y_pred > 0.5) == y_true``;
        - labels of lower rank, or a last dim of 1: ``argmax(y_pred) == y_true``;
        - otherwise categorical: ``argmax(y_pred) == argmax(y_true)``.

        ``argmax`` takes the first maximum on ties.
    """
    y_pred = np.asarray(y_pred)
    y_true = np.asarray(y_true)
    if y_pred.shape[-1] == 1:
        pred = (y_pred > 0.5).reshape(-1)
        return float(np.mean(pred == (y_true.reshape(-1) > 0.5)))
    if y_true.ndim < y_pred.ndim or y_true.shape[-1] == 1:
        return float(np.mean(y_pred.argmax(axis=-1) == y_true.reshape(-1)))
    return float(np.mean(y_pred.argmax(axis=-1) == y_true.argmax(axis=-1)))


# ----------------------------------------------------------------------------
# Optimizers
# ----------------------------------------------------------------------------


class _Optimizer:
    """Shared bookkeeping: the step counter, per-parameter slots and the
    options of Keras 3's base optimizer (``keras/src/optimizers/base_optimizer.py``).

    Slots are created on the first :meth:`step`, one per parameter, in the
    order of the ``params`` list; every later call must pass the same list.
    ``iterations`` counts applied steps, so inside an update ``t =
    iterations + 1`` (Keras' ``local_step``). ``learning_rate`` may be a
    function of ``iterations`` (a schedule): ``step`` then sets
    ``self.learning_rate`` to its value before updating.

    ``rules`` (optional, one dict per parameter): ``l1``/``l2`` penalty
    strengths (their gradient joins the loss's; ``last_penalty`` is the
    penalty before the step, which Keras adds to the reported loss) and
    ``constraint``, a function of the updated weights (applied after the
    update, as Keras' ``apply``).
    """

    def __init__(
        self,
        learning_rate,
        *,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        gradient_accumulation_steps=None,
    ) -> None:
        self._schedule = learning_rate if callable(learning_rate) else None
        self.learning_rate = 0.0 if callable(learning_rate) else float(learning_rate)
        self.iterations = 0
        self._slots: list[dict[str, np.ndarray]] | None = None
        self.weight_decay = weight_decay
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm
        self.use_ema, self.ema_momentum, self.ema_overwrite_frequency = use_ema, ema_momentum, ema_overwrite_frequency
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.rules: list[dict] | None = None
        self.last_penalty = 0.0
        self.averages: list[np.ndarray] | None = None
        self._accumulators: list[np.ndarray] | None = None

    def _new_slots(self, w: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def _update(self, w: np.ndarray, g: np.ndarray, slots: dict[str, np.ndarray], t: int) -> None:
        raise NotImplementedError

    def _before_updates(self, t: int) -> None:
        """Once per applied update, before the parameters' updates (Nadam's u_product)."""

    def _clip(self, grads: list[np.ndarray]) -> list[np.ndarray]:
        # base_optimizer._clip_gradients: one of the three, in this order
        if self.clipnorm:
            out = []
            for g in grads:
                norm = np.sqrt(np.sum(g * g))
                out.append(g * self.clipnorm / max(norm, self.clipnorm) if norm > 0 else g)
            return out
        if self.global_clipnorm:
            norm = np.sqrt(sum(np.sum(g * g) for g in grads))
            scale = self.global_clipnorm * min(1.0 / norm, 1.0 / self.global_clipnorm)
            return [g * scale for g in grads]
        if self.clipvalue:
            return [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        return grads

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Apply one update to every parameter, in place.

        Parameters
        ----------
        params : list of ndarray
            The parameters (e.g. ``[W0, b0, W1, b1, ...]``), modified in place.
        grads : list of ndarray
            Their gradients, same order and shapes.
        """
        if len(params) != len(grads):
            raise ValueError(
                f"Expected one gradient per parameter, received {len(grads)} gradients for {len(params)} parameters"
            )
        if self._slots is None:
            self._slots = [self._new_slots(w) for w in params]
            self.averages = [np.zeros_like(w) for w in params] if self.use_ema else None
            self._accumulators = [np.zeros_like(w) for w in params] if self.gradient_accumulation_steps else None
        if self._schedule is not None:
            self.learning_rate = float(self._schedule(self.iterations))
        t = self.iterations + 1
        grads = [np.asarray(g, dtype=w.dtype) for w, g in zip(params, grads)]
        self.last_penalty = 0.0
        for i, (w, g) in enumerate(zip(params, grads)):
            r = self.rules[i] if self.rules else None
            if r and (r.get("l1") or r.get("l2")):
                l1, l2 = r.get("l1", 0.0), r.get("l2", 0.0)
                self.last_penalty += l1 * np.abs(w).sum() + l2 * np.square(w).sum()
                g = grads[i] = g + l1 * np.sign(w) + 2 * l2 * w
            if r and r.get("orthogonal"):
                value, grad = orthogonal_regularizer(w, *r["orthogonal"])
                self.last_penalty += value
                g = grads[i] = g + grad
        update = True
        steps = self.gradient_accumulation_steps
        if steps:
            # base_optimizer._backend_apply_gradients: accumulate, or update with the mean
            if t % steps != 0:
                for acc, g in zip(self._accumulators, grads):
                    acc += g
                update = False
            else:
                grads = [(g + acc) / steps for g, acc in zip(grads, self._accumulators)]
                for acc in self._accumulators:
                    acc[...] = 0
        if update:
            grads = self._clip(grads)
            if self.weight_decay:
                for w in params:
                    w -= w * self.weight_decay * self.learning_rate
            self._before_updates(t)
            for w, g, slots in zip(params, grads, self._slots):
                self._update(w, g, slots, t)
        if self.use_ema:
            momentum = self.ema_momentum if self.iterations != 0 else 0.0
            for w, avg in zip(params, self.averages):
                avg[...] = momentum * avg + (1 - momentum) * w
            if self.ema_overwrite_frequency and t % self.ema_overwrite_frequency == 0:
                for w, avg in zip(params, self.averages):
                    w[...] = avg
        if self.rules:
            for w, r in zip(params, self.rules):
                if r and r.get("constraint") is not None:
                    w[...] = r["constraint"](w)
        self.iterations += 1


class SGD(_Optimizer):
    """Gradient descent, optionally with (Nesterov) momentum — ``keras/src/optimizers/sgd.py``.

    ``momentum == 0``: ``w -= lr * g``. Otherwise ``m = momentum * m - lr * g``
    and ``w += m``, or with ``nesterov`` ``w += momentum * m - lr * g``.

    Keras 3 raises unless ``momentum`` is a Python float in [0, 1] (so
    ``momentum=0`` as an int is refused there); this oracle accepts any real
    number in [0, 1].
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **options) -> None:
        super().__init__(learning_rate, **options)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"Invalid value for argument `momentum`: expected a float in [0, 1], received momentum={momentum!r}"
            )
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _new_slots(self, w: np.ndarray) -> dict[str, np.ndarray]:
        return {"momentum": np.zeros_like(w)} if self.momentum != 0 else {}

    def _update(self, w, g, slots, t):
        lr = self.learning_rate
        if self.momentum == 0:
            w -= lr * g
            return
        m = slots["momentum"]
        m *= self.momentum
        m -= lr * g
        if self.nesterov:
            w += self.momentum * m - lr * g
        else:
            w += m


class Adagrad(_Optimizer):
    """Adagrad — ``keras/src/optimizers/adagrad.py``.

    ``a += g**2``; ``w -= lr * g / sqrt(a + epsilon)``, with the accumulator
    starting at ``initial_accumulator_value`` (epsilon inside the root).
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        initial_accumulator_value: float = 0.1,
        epsilon: float = 1e-7,
        **options,
    ) -> None:
        super().__init__(learning_rate, **options)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def _new_slots(self, w: np.ndarray) -> dict[str, np.ndarray]:
        return {"accumulator": np.full_like(w, self.initial_accumulator_value)}

    def _update(self, w, g, slots, t):
        a = slots["accumulator"]
        a += g * g
        w -= self.learning_rate * g / np.sqrt(a + self.epsilon)


class RMSprop(_Optimizer):
    """RMSprop (uncentered) — ``keras/src/optimizers/rmsprop.py``.

    ``v = rho * v + (1 - rho) * g**2``; ``inc = lr * g / sqrt(v + epsilon)``;
    with momentum ``m = momentum * m + inc`` and ``w -= m``, else ``w -= inc``.
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        rho: float = 0.9,
        momentum: float = 0.0,
        epsilon: float = 1e-7,
        **options,
    ) -> None:
        super().__init__(learning_rate, **options)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def _new_slots(self, w: np.ndarray) -> dict[str, np.ndarray]:
        slots = {"velocity": np.zeros_like(w)}
        if self.momentum > 0:
            slots["momentum"] = np.zeros_like(w)
        return slots

    def _update(self, w, g, slots, t):
        v = slots["velocity"]
        v *= self.rho
        v += (1 - self.rho) * g * g
        inc = self.learning_rate * g / np.sqrt(v + self.epsilon)
        if self.momentum > 0:
            m = slots["momentum"]
            m *= self.momentum
            m += inc
            w -= m
        else:
            w -= inc


class Adam(_Optimizer):
    """Adam — ``keras/src/optimizers/adam.py`` (``amsgrad``: ``v_hat = max(v_hat, v)`` replaces v).

    ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``;
    ``m += (g - m) * (1 - beta_1)``; ``v += (g**2 - v) * (1 - beta_2)``;
    ``w -= alpha * m / (sqrt(v) + epsilon)`` (epsilon outside the root).
    Like Keras, the scalar ``alpha`` is computed in the parameter's dtype.
    """

    def __init__(
        self,
        learning_rate: float = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        **options,
    ) -> None:
        super().__init__(learning_rate, **options)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = amsgrad

    def _new_slots(self, w: np.ndarray) -> dict[str, np.ndarray]:
        slots = {"momentum": np.zeros_like(w), "velocity": np.zeros_like(w)}
        if self.amsgrad:
            slots["velocity_hat"] = np.zeros_like(w)
        return slots

    def _update(self, w, g, slots, t):
        f = w.dtype.type
        beta_1_power = f(self.beta_1) ** f(t)
        beta_2_power = f(self.beta_2) ** f(t)
        alpha = f(self.learning_rate) * np.sqrt(f(1) - beta_2_power) / (f(1) - beta_1_power)
        m, v = slots["momentum"], slots["velocity"]
        m += (g - m) * (1 - self.beta_1)
        v += (g * g - v) * (1 - self.beta_2)
        if self.amsgrad:
            np.maximum(slots["velocity_hat"], v, out=slots["velocity_hat"])
            v = slots["velocity_hat"]
        w -= alpha * m / (np.sqrt(v) + self.epsilon)


def AdamW(learning_rate=0.001, weight_decay=0.004, **kwargs) -> Adam:
    """AdamW — ``keras/src/optimizers/adamw.py``: Adam with weight decay (default 0.004)."""
    return Adam(learning_rate, weight_decay=weight_decay, **kwargs)


class Nadam(_Optimizer):
    """Nadam — ``keras/src/optimizers/nadam.py``.

    ``u_t = beta_1 (1 - 0.5 * 0.96**t)``; ``u_product`` is multiplied by
    ``u_t`` once per applied update; ``m_hat = u_{t+1} m / (1 - u_product
    u_{t+1}) + (1 - u_t) g / (1 - u_product)``, ``v_hat = v / (1 -
    beta_2**t)``; ``w -= lr m_hat / (sqrt(v_hat) + epsilon)``.
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options) -> None:
        super().__init__(learning_rate, **options)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.u_product = 1.0

    def _new_slots(self, w):
        return {"momentum": np.zeros_like(w), "velocity": np.zeros_like(w)}

    def _before_updates(self, t):
        self.u_product *= self.beta_1 * (1.0 - 0.5 * 0.96**t)

    def _update(self, w, g, slots, t):
        b1, b2 = self.beta_1, self.beta_2
        u_t = b1 * (1.0 - 0.5 * 0.96**t)
        u_t1 = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        m, v = slots["momentum"], slots["velocity"]
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        m_hat = u_t1 * m / (1 - self.u_product * u_t1) + (1 - u_t) * g / (1 - self.u_product)
        v_hat = v / (1 - b2**t)
        w -= self.learning_rate * m_hat / (np.sqrt(v_hat) + self.epsilon)


class Adamax(_Optimizer):
    """Adamax — ``keras/src/optimizers/adamax.py``: ``u = max(beta_2 u, |g|)``;
    ``w -= lr m / ((1 - beta_1**t)(u + epsilon))``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options) -> None:
        super().__init__(learning_rate, **options)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def _new_slots(self, w):
        return {"m": np.zeros_like(w), "u": np.zeros_like(w)}

    def _update(self, w, g, slots, t):
        m, u = slots["m"], slots["u"]
        m += (g - m) * (1 - self.beta_1)
        u[...] = np.maximum(self.beta_2 * u, np.abs(g))
        w -= self.learning_rate * m / ((1 - self.beta_1**t) * (u + self.epsilon))


class Adadelta(_Optimizer):
    """Adadelta — ``keras/src/optimizers/adadelta.py``."""

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **options) -> None:
        super().__init__(learning_rate, **options)
        self.rho, self.epsilon = rho, epsilon

    def _new_slots(self, w):
        return {"grad": np.zeros_like(w), "delta": np.zeros_like(w)}

    def _update(self, w, g, slots, t):
        a, d = slots["grad"], slots["delta"]
        a[...] = self.rho * a + (1 - self.rho) * g * g
        delta = -np.sqrt(d + self.epsilon) * g / np.sqrt(a + self.epsilon)
        d[...] = self.rho * d + (1 - self.rho) * delta * delta
        w += self.learning_rate * delta


class Lion(_Optimizer):
    """Lion — ``keras/src/optimizers/lion.py``: ``w -= lr sign(beta_1 m + (1 - beta_1) g)``, then
    ``m = beta_2 m + (1 - beta_2) g``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **options) -> None:
        super().__init__(learning_rate, **options)
        self.beta_1, self.beta_2 = beta_1, beta_2

    def _new_slots(self, w):
        return {"m": np.zeros_like(w)}

    def _update(self, w, g, slots, t):
        m = slots["m"]
        w -= self.learning_rate * np.sign(m * self.beta_1 + g * (1 - self.beta_1))
        m[...] = m * self.beta_2 + g * (1 - self.beta_2)


class Ftrl(_Optimizer):
    """Ftrl — ``keras/src/optimizers/ftrl.py``."""

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
        **options,
    ) -> None:
        super().__init__(learning_rate, **options)
        self.power, self.init = learning_rate_power, initial_accumulator_value
        self.l1, self.l2 = l1_regularization_strength, l2_regularization_strength
        self.shrink, self.beta = l2_shrinkage_regularization_strength, beta

    def _new_slots(self, w):
        return {"accum": np.full_like(w, self.init), "linear": np.zeros_like(w)}

    def _update(self, w, g, slots, t):
        lr = self.learning_rate
        accum, linear = slots["accum"], slots["linear"]
        l2 = self.l2 + self.beta / (2.0 * lr)
        g_shrunk = g + 2 * self.shrink * w
        new_accum = accum + g * g
        linear += g_shrunk - (new_accum**-self.power - accum**-self.power) / lr * w
        quadratic = new_accum**-self.power / lr + 2 * l2
        w[...] = (np.clip(linear, -self.l1, self.l1) - linear) / quadratic
        accum[...] = new_accum


class Adafactor(_Optimizer):
    """Adafactor — ``keras/src/optimizers/adafactor.py``: a 2-D parameter keeps row and column
    means of ``g**2 + epsilon_1``, a 1-D one the full average."""

    def __init__(
        self,
        learning_rate=0.001,
        beta_2_decay=-0.8,
        epsilon_1=1e-30,
        epsilon_2=1e-3,
        clip_threshold=1.0,
        relative_step=True,
        **options,
    ) -> None:
        super().__init__(learning_rate, **options)
        self.beta_2_decay, self.epsilon_1, self.epsilon_2 = beta_2_decay, epsilon_1, epsilon_2
        self.clip_threshold, self.relative_step = clip_threshold, relative_step

    def _new_slots(self, w):
        if w.ndim >= 2:
            return {"r": np.zeros(w.shape[:-1], w.dtype), "c": np.zeros(w.shape[-1:], w.dtype), "v": np.zeros_like(w)}
        return {"v": np.zeros_like(w)}

    def _update(self, w, g, slots, t):
        lr = self.learning_rate
        if self._schedule is None and self.relative_step:
            lr = min(lr, 1 / np.sqrt(t))
        rho_t = min(lr, 1 / np.sqrt(t))
        alpha_t = max(self.epsilon_2, np.sqrt(np.mean(w * w))) * rho_t
        sq = g * g + self.epsilon_1
        b2t = 1 - t**self.beta_2_decay
        if w.ndim >= 2:
            r, c = slots["r"], slots["c"]
            r[...] = b2t * r + (1 - b2t) * sq.mean(axis=-1)
            c[...] = b2t * c + (1 - b2t) * sq.mean(axis=-2)
            slots["v"][...] = (r / r.mean(axis=-1, keepdims=True))[..., None] * c[None, :]
        else:
            slots["v"][...] = b2t * slots["v"] + (1 - b2t) * sq
        u = g / np.sqrt(slots["v"])
        u_hat = u / max(1.0, np.sqrt(np.mean(u * u)) / self.clip_threshold)
        w -= alpha_t * u_hat


# ----------------------------------------------------------------------------
# Constraints (keras/src/constraints/constraints.py) and schedules
# (keras/src/optimizers/schedules/learning_rate_schedule.py)
# ----------------------------------------------------------------------------


def orthogonal_regularizer(w: np.ndarray, factor: float, mode: str = "rows") -> tuple[float, np.ndarray]:
    """Keras' OrthogonalRegularizer (``keras/src/regularizers/regularizers.py``) and its gradient.

    ``N`` holds the rows (or columns) of ``w`` scaled by ``1/sqrt(max(|x|^2, 1e-14))``
    (``keras.ops.normalize``); the penalty is ``factor/2 * sum(|N N^T| off the diagonal) / (s(s-1)/2)``.
    With ``S = sign(N N^T)`` (zero diagonal), ``dP/dN = factor/pairs * S N`` and, where the norm is not
    clamped, ``dP/dx = (dP/dn - (n . dP/dn) n) / |x|``.
    """
    a = w if mode == "rows" else w.T
    sq = (a * a).sum(axis=1, keepdims=True)
    inv = 1 / np.sqrt(np.maximum(sq, 1e-14))
    n = a * inv
    m = n @ n.T
    s = a.shape[0]
    pairs = s * (s - 1) / 2
    off = 1 - np.eye(s)
    value = factor * 0.5 * np.abs(m * off).sum() / pairs
    dn = factor / pairs * (np.sign(m) * off) @ n
    radial = np.where(sq > 1e-14, (n * dn).sum(axis=1, keepdims=True), 0.0)
    grad = (dn - radial * n) * inv
    return float(value), grad if mode == "rows" else grad.T


def l1l2_penalty(w: np.ndarray, l1: float, l2: float) -> tuple[float, np.ndarray]:
    """Keras' L1L2 regularizer (``l1 * sum|w| + l2 * sum w^2``) and its gradient ``l1 sign(w) + 2 l2 w``."""
    return float(l1 * np.abs(w).sum() + l2 * np.square(w).sum()), l1 * np.sign(w) + 2 * l2 * w


def _column_norms(w: np.ndarray, axis: int) -> np.ndarray:
    return np.sqrt(np.sum(w * w, axis=axis if w.ndim > 1 else 0, keepdims=True))


def max_norm(w: np.ndarray, max_value: float = 2.0, axis: int = 0) -> np.ndarray:
    """``w * clip(norms, 0, max_value) / (1e-7 + norms)``."""
    n = _column_norms(w, axis)
    return w * (np.clip(n, 0, max_value) / (1e-7 + n))


def non_neg(w: np.ndarray) -> np.ndarray:
    """``max(w, 0)``."""
    return np.maximum(w, 0)


def unit_norm(w: np.ndarray, axis: int = 0) -> np.ndarray:
    """``w / (1e-7 + norms)``."""
    return w / (1e-7 + _column_norms(w, axis))


def min_max_norm(w: np.ndarray, min_value=0.0, max_value=1.0, rate=1.0, axis=0) -> np.ndarray:
    """``w * (rate * clip(norms, min, max) + (1 - rate) * norms) / (1e-7 + norms)``."""
    n = _column_norms(w, axis)
    return w * ((rate * np.clip(n, min_value, max_value) + (1 - rate) * n) / (1e-7 + n))


def exponential_decay(step, initial, decay_steps, rate, staircase=False):
    p = step / decay_steps
    return initial * rate ** (np.floor(p) if staircase else p)


def piecewise_constant_decay(step, boundaries, values):
    for b, v in zip(boundaries, values):
        if step <= b:
            return v
    return values[-1]


def polynomial_decay(step, initial, decay_steps, end=0.0001, power=1.0, cycle=False):
    if cycle:
        decay_steps = decay_steps * (1.0 if step == 0 else np.ceil(step / decay_steps))
    else:
        step = min(step, decay_steps)
    return (initial - end) * (1 - step / decay_steps) ** power + end


def inverse_time_decay(step, initial, decay_steps, rate, staircase=False):
    p = step / decay_steps
    return initial / (1 + rate * (np.floor(p) if staircase else p))


def cosine_decay(step, initial, decay_steps, alpha=0.0, warmup_target=None, warmup_steps=0):
    def decay(s, lr0):
        return lr0 * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)) + alpha)

    if warmup_target is None:
        return decay(min(step, decay_steps), initial)
    step = min(step, decay_steps + warmup_steps)
    if step < warmup_steps:
        return (warmup_target - initial) * step / warmup_steps + initial
    return decay(step - warmup_steps, warmup_target)


def cosine_decay_restarts(step, initial, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0):
    frac = step / first_decay_steps
    if t_mul == 1.0:
        i = np.floor(frac)
        frac -= i
    else:
        i = np.floor(np.log(1 - frac * (1 - t_mul)) / np.log(t_mul))
        frac = (frac - (1 - t_mul**i) / (1 - t_mul)) / t_mul**i
    return initial * ((1 - alpha) * 0.5 * m_mul**i * (1 + np.cos(np.pi * frac)) + alpha)


# ----------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------


def glorot_uniform(
    fan_in: int, fan_out: int, rng: np.random.Generator, dtype: np.dtype | type = np.float64
) -> np.ndarray:
    """Glorot (Xavier) uniform kernel, Keras' default for Dense.

    Parameters
    ----------
    fan_in, fan_out : int
        Input and output sizes.
    rng : numpy.random.Generator
        Source of randomness.
    dtype : dtype
        Dtype of the result.

    Returns
    -------
    ndarray, shape (fan_in, fan_out)
        Uniform on ``[-limit, limit]`` with ``limit = sqrt(6 / (fan_in + fan_out))``.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(dtype)


# ----------------------------------------------------------------------------
# A whole network
# ----------------------------------------------------------------------------


class MLP:
    """A stack of Dense layers trained by mini-batch gradient descent.

    Parameters
    ----------
    layers : list of (int, str or None)
        ``(units, activation)`` for each Dense layer, input to output.
    input_dim : int
        Number of input features.
    rng : numpy.random.Generator or int or None
        Randomness for the Glorot-uniform kernels (biases start at zero).
    dtype : dtype
        Dtype of the parameters and the computation (float64 by default;
        float32 for the benchmark baseline).
    fused : bool
        When the network ends in softmax with a categorical cross-entropy, or
        sigmoid with binary cross-entropy, compute loss and gradient from the
        logits in one stable step (as a NumPy user and cdnn's core do). With
        ``fused=False`` the generic path is used: loss on probabilities
        (Keras' clipping), then back through the activation's Jacobian.

    Attributes
    ----------
    params : list of ndarray
        ``[W0, b0, W1, b1, ...]``, kernels shaped (in, units).
    """

    def __init__(
        self,
        layers: list[tuple[int, str | None]],
        input_dim: int,
        rng: np.random.Generator | int | None = 0,
        dtype: np.dtype | type = np.float64,
        fused: bool = True,
    ) -> None:
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self.dtype = np.dtype(dtype)
        self.activations = [_check_activation(act) for _, act in layers]
        self.fused = fused
        self.params: list[np.ndarray] = []
        fan_in = int(input_dim)
        for units, _ in layers:
            self.params.append(glorot_uniform(fan_in, int(units), rng, self.dtype))
            self.params.append(np.zeros(int(units), dtype=self.dtype))
            fan_in = int(units)

    def _forward_saved(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
        inputs, zs = [], []
        a = x
        for i, act in enumerate(self.activations):
            inputs.append(a)
            z, a = dense_forward(a, self.params[2 * i], self.params[2 * i + 1], act)
            zs.append(z)
        return inputs, zs, a

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Network output (after the last activation) for a batch ``x`` (batch, input_dim)."""
        return self._forward_saved(np.asarray(x, dtype=self.dtype))[2]

    def _loss_and_grads(
        self, x: np.ndarray, y: np.ndarray, loss_name: str
    ) -> tuple[float, list[np.ndarray], np.ndarray]:
        loss_name = _check_loss(loss_name)
        inputs, zs, out = self._forward_saved(x)
        last = self.activations[-1]
        fused_ce = last == "softmax" and loss_name.endswith("categorical_crossentropy")
        fused_bce = last == "sigmoid" and loss_name == "binary_crossentropy"
        if self.fused and fused_ce:
            value, dz = softmax_cross_entropy_grad(zs[-1], y)
        elif self.fused and fused_bce:
            value, dz = sigmoid_bce_grad(zs[-1], y)
        else:
            value = loss(loss_name, y, out)
            dz = activation_grad(last, zs[-1], loss_grad(loss_name, y, out))
        grads: list[np.ndarray] = [None] * len(self.params)  # type: ignore[list-item]
        # The last layer's upstream is already dL/dz, so it goes back through
        # "linear"; every other layer receives dL/da from the layer above.
        upstream, act = dz, "linear"
        for i in reversed(range(len(self.activations))):
            dW, db, upstream = dense_backward(inputs[i], self.params[2 * i], zs[i], upstream, act, need_dx=i > 0)
            grads[2 * i], grads[2 * i + 1] = dW, db
            act = self.activations[i - 1] if i > 0 else act
        return value, grads, out

    def gradients(self, x: np.ndarray, y: np.ndarray, loss_name: str) -> tuple[float, list[np.ndarray]]:
        """Mean loss on the batch and its gradient for every parameter.

        Parameters
        ----------
        x : ndarray, shape (batch, input_dim)
        y : ndarray
            Targets in the form the loss expects.
        loss_name : str
            A loss name accepted by :func:`loss`.

        Returns
        -------
        loss : float
        grads : list of ndarray
            Same order and shapes as :attr:`params`.
        """
        value, grads, _ = self._loss_and_grads(np.asarray(x, dtype=self.dtype), y, loss_name)
        return value, grads

    def train_step(self, x: np.ndarray, y: np.ndarray, loss_name: str, optimizer: _Optimizer) -> float:
        """One gradient step on one batch; returns the batch's mean loss before the update."""
        value, grads = self.gradients(x, y, loss_name)
        optimizer.step(self.params, grads)
        return value

    def fit_epoch(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        optimizer: _Optimizer,
        loss_name: str,
        perm: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """One epoch of mini-batch descent, as Keras' ``fit`` runs it.

        Parameters
        ----------
        x : ndarray, shape (n, input_dim)
        y : ndarray
            Targets for all ``n`` samples.
        batch_size : int
        optimizer : SGD, Adagrad, RMSprop or Adam
        loss_name : str
        perm : ndarray of int, optional
            Order in which to visit the samples (default: ``0 .. n-1``).
            Batches are consecutive slices of it; the last may be smaller.

        Returns
        -------
        mean_loss : float
            Mean of the batch losses weighted by batch size (Keras 3's epoch
            ``loss``).
        accuracy : float
            Fraction correct over the epoch, each batch judged on the
            predictions of its own forward pass, before its update.
        """
        x = np.asarray(x, dtype=self.dtype)
        y = np.asarray(y)
        n = x.shape[0]
        perm = np.arange(n) if perm is None else np.asarray(perm)
        total_loss = 0.0
        total_correct = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            xb, yb = x[idx], y[idx]
            value, grads, out = self._loss_and_grads(xb, yb, loss_name)
            optimizer.step(self.params, grads)
            # Keras adds the regularization penalties (before the update) to the batch's loss
            total_loss += (value + getattr(optimizer, "last_penalty", 0.0)) * len(idx)
            total_correct += accuracy(yb, out) * len(idx)
        return total_loss / n, total_correct / n


# ----------------------------------------------------------------------------
# metrics (keras/src/metrics/*.py formulas, written with plain loops)
# ----------------------------------------------------------------------------


def confusion_at_thresholds(y_true, y_pred, thresholds, sample_weight=None) -> dict:
    """Weighted tp, fp, tn, fn of ``y_pred > t`` against 0/1 labels, for each t (loops, no sorting)."""
    yt = np.asarray(y_true, np.float64).reshape(len(y_true), -1)
    yp = np.asarray(y_pred, np.float64).reshape(yt.shape)
    w = np.ones(len(yt)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    out = {k: np.zeros(len(thresholds)) for k in ("tp", "fp", "tn", "fn")}
    for i, t in enumerate(thresholds):
        for r in range(yt.shape[0]):
            for c in range(yt.shape[1]):
                key = ("t" if (yp[r, c] > t) == (yt[r, c] == 1) else "f") + ("p" if yp[r, c] > t else "n")
                out[key][i] += w[r]
    return out


def auc(y_true, y_pred, num_thresholds: int = 200, curve: str = "ROC", sample_weight=None) -> float:
    """Keras' AUC: a trapezoid Riemann sum over evenly spaced thresholds (PR: Davis & Goadrich interpolation)."""
    ts = [-1e-7] + [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)] + [1 + 1e-7]
    c = confusion_at_thresholds(y_true, y_pred, ts, sample_weight)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    total = 0.0
    for i in range(len(ts) - 1):
        if curve == "ROC":

            def rate(a, b, j):
                return a[j] / (a[j] + b[j]) if a[j] + b[j] else 0.0

            total += (rate(fp, tn, i) - rate(fp, tn, i + 1)) * (rate(tp, fn, i) + rate(tp, fn, i + 1)) / 2
        else:
            p_a, p_b = tp[i] + fp[i], tp[i + 1] + fp[i + 1]
            dtp = tp[i] - tp[i + 1]
            slope = dtp / (p_a - p_b) if p_a - p_b > 0 else 0.0
            intercept = tp[i + 1] - slope * p_b
            log_ratio = math.log(p_a / p_b) if p_a > 0 and p_b > 0 else 0.0
            pos = tp[i + 1] + fn[i + 1]
            total += slope * (dtp + intercept * log_ratio) / pos if pos > 0 else 0.0
    return total


def r2_score(y_true, y_pred) -> float:
    """Mean over outputs of ``1 - sum((y - p)^2) / sum((y - mean(y))^2)``."""
    yt, yp = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    scores = [
        1 - ((yt[:, j] - yp[:, j]) ** 2).sum() / ((yt[:, j] - yt[:, j].mean()) ** 2).sum() for j in range(yt.shape[1])
    ]
    return float(np.mean(scores))


def f_beta(y_true, y_pred, beta: float = 1.0, threshold: float = 0.5) -> np.ndarray:
    """Per-class F-beta of ``y_pred > threshold`` (Keras' epsilon-guarded divisions)."""
    yt, pred = np.asarray(y_true, np.float64), (np.asarray(y_pred) > threshold).astype(np.float64)
    out = []
    for j in range(yt.shape[1]):
        tp = (pred[:, j] * yt[:, j]).sum()
        fp = (pred[:, j] * (1 - yt[:, j])).sum()
        fn = ((1 - pred[:, j]) * yt[:, j]).sum()
        p, r = tp / (tp + fp + 1e-7), tp / (tp + fn + 1e-7)
        out.append((1 + beta**2) * p * r / (beta**2 * p + r + 1e-7))
    return np.array(out)


# ----------------------------------------------------------------------------
# Graph layers: normalization, merging, rescaling (forward and backward)
# ----------------------------------------------------------------------------
#
# Keras 3 source these follow (keras/src/layers/):
# - normalization/batch_normalization.py: in training the batch mean and the
#   biased batch variance over every axis but the last; moving statistics
#   ``moving = moving * momentum + batch * (1 - momentum)`` (momentum 0.99,
#   epsilon 1e-3); in inference, and with ``trainable=False``, the moving
#   ones; ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``.
# - normalization/layer_normalization.py: the same over the last axis of
#   each row (epsilon 1e-3), gamma and beta per feature.
# - merging/{add,subtract,multiply,average,maximum,minimum,concatenate}.py:
#   elementwise folds of the inputs in order; concatenation on the last axis.
# - preprocessing/rescaling.py: ``x * scale + offset``.


def batch_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and biased variance over every axis but the last (BatchNormalization in training)."""
    axes = tuple(range(x.ndim - 1))
    mean = x.mean(axis=axes)
    return mean, ((x - mean) ** 2).mean(axis=axes)


def normalize(x, mean, var, gamma, beta, epsilon: float) -> np.ndarray:
    """``(x - mean) / sqrt(var + epsilon) * gamma + beta`` (gamma/beta may be None)."""
    y = (x - mean) / np.sqrt(var + epsilon)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def moving_update(moving: np.ndarray, batch: np.ndarray, momentum: float) -> np.ndarray:
    """Keras' moving statistic after one training step."""
    return moving * momentum + batch * (1 - momentum)


def batchnorm_backward(x, gamma, epsilon: float, g) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training-mode BatchNormalization backward: ``(dx, dgamma, dbeta)`` from ``g = dL/dy``.

    Written from the chain rule through the batch mean and variance (every row
    of every sample counts): with ``n`` rows, ``xhat`` the normalized input,
    ``dxhat = g * gamma``, ``dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / std``.
    """
    w = x.shape[-1]
    x2, g2 = x.reshape(-1, w), g.reshape(-1, w)
    mean, var = x2.mean(axis=0), x2.var(axis=0)
    std = np.sqrt(var + epsilon)
    xhat = (x2 - mean) / std
    dxhat = g2 * (gamma if gamma is not None else 1.0)
    dx = (dxhat - dxhat.mean(axis=0) - xhat * (dxhat * xhat).mean(axis=0)) / std
    return dx.reshape(x.shape), (g2 * xhat).sum(axis=0), g2.sum(axis=0)


def layernorm_forward(x, gamma, beta, epsilon: float) -> np.ndarray:
    """LayerNormalization over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return normalize(x, mean, var, gamma, beta, epsilon)


def layernorm_backward(x, gamma, epsilon: float, g) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LayerNormalization backward: ``(dx, dgamma, dbeta)`` (the sums over every row)."""
    w = x.shape[-1]
    mean = x.mean(axis=-1, keepdims=True)
    std = np.sqrt(x.var(axis=-1, keepdims=True) + epsilon)
    xhat = (x - mean) / std
    dxhat = g * (gamma if gamma is not None else 1.0)
    dx = (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True)) / std
    return dx, (g * xhat).reshape(-1, w).sum(axis=0), g.reshape(-1, w).sum(axis=0)


def l2_normalize(x, epsilon: float) -> np.ndarray:
    """Keras' ``ops.normalize(x, axis=-1, order=2, epsilon)``: ``x * minimum(rsqrt(sum(x**2)), 1 / epsilon)``."""
    inv = np.minimum(1.0 / np.sqrt(np.square(x).sum(axis=-1, keepdims=True)), 1.0 / epsilon)
    return x * inv


def l2_normalize_backward(x, epsilon: float, g) -> np.ndarray:
    """Gradient of :func:`l2_normalize` through each row's Jacobian ``inv * I - inv**3 * x x^T`` (where
    the inverse norm is capped at ``1 / epsilon`` it is a constant: ``inv * I``)."""
    w = x.shape[-1]
    out = np.empty(x.shape).reshape(-1, w)
    for r, (xr, gr) in enumerate(zip(x.reshape(-1, w), g.reshape(-1, w))):
        raw = 1.0 / np.sqrt(xr @ xr)
        if raw >= 1.0 / epsilon:
            jac = np.eye(w) / epsilon
        else:
            jac = raw * np.eye(w) - raw**3 * np.outer(xr, xr)
        out[r] = gr @ jac
    return out.reshape(x.shape)


def dot_forward(a, b, normalize: bool) -> np.ndarray:
    """Keras' ``Dot(axes=-1, normalize)`` on ``(batch, n)`` inputs: ``(batch, 1)`` (``normalize``: epsilon 1e-7)."""
    if normalize:
        a, b = l2_normalize(a, EPSILON), l2_normalize(b, EPSILON)
    return (a * b).sum(axis=-1, keepdims=True)


def dot_backward(a, b, normalize: bool, g) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of :func:`dot_forward` with respect to ``a`` and ``b``, by the chain rule through the
    normalization."""
    if not normalize:
        return g * b, g * a
    an, bn = l2_normalize(a, EPSILON), l2_normalize(b, EPSILON)
    return l2_normalize_backward(a, EPSILON, g * bn), l2_normalize_backward(b, EPSILON, g * an)


def rmsnorm_forward(x, scale, epsilon: float) -> np.ndarray:
    """Keras' ``ops.rms_normalization`` over the last axis: ``x * rsqrt(mean(x**2) + epsilon) * scale``."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + epsilon) * (1.0 if scale is None else scale)


def rmsnorm_backward(x, scale, epsilon: float, g) -> tuple[np.ndarray, np.ndarray]:
    """``(dx, dscale)`` of :func:`rmsnorm_forward`, from each row's Jacobian
    ``dy_j/dx_k = scale_j * (r * I - r**3 * x_j * x_k / n)``, ``r = rsqrt(mean(x**2) + epsilon)``."""
    n = x.shape[-1]
    sc = np.ones(n) if scale is None else np.asarray(scale, np.float64)
    dx = np.empty(x.shape).reshape(-1, n)
    dscale = np.zeros(n)
    for k, (xr, gr) in enumerate(zip(x.reshape(-1, n), g.reshape(-1, n))):
        r = 1.0 / np.sqrt(xr @ xr / n + epsilon)
        jac = sc[:, None] * (r * np.eye(n) - r**3 * np.outer(xr, xr) / n)
        dx[k] = gr @ jac
        dscale += gr * xr * r
    return dx.reshape(x.shape), dscale


MERGES = ("add", "subtract", "multiply", "average", "maximum", "minimum")


def merge_forward(op: str, xs: list[np.ndarray]) -> np.ndarray:
    """Keras' merge layers: the inputs folded in order."""
    if op == "add":
        return sum(xs[1:], xs[0])
    if op == "subtract":
        return xs[0] - xs[1]
    if op == "multiply":
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out
    if op == "average":
        return sum(xs[1:], xs[0]) / len(xs)
    fold = np.maximum if op == "maximum" else np.minimum
    out = xs[0]
    for x in xs[1:]:
        out = fold(out, x)
    return out


def merge_backward(op: str, xs: list[np.ndarray], g: np.ndarray) -> list[np.ndarray]:
    """Gradients of a merge for each input. Maximum/minimum: to the first input attaining the extreme
    (TensorFlow's ``maximum`` gives ``x >= y`` the gradient, folded in order)."""
    if op == "add":
        return [g.copy() for _ in xs]
    if op == "subtract":
        return [g.copy(), -g]
    if op == "average":
        return [g / len(xs) for _ in xs]
    if op == "multiply":
        out = []
        for k in range(len(xs)):
            p = g.copy()
            for q, x in enumerate(xs):
                if q != k:
                    p = p * x
            out.append(p)
        return out
    y = merge_forward(op, xs)
    taken = np.zeros(y.shape, bool)
    out = []
    for x in xs:
        hit = (x == y) & ~taken
        taken |= hit
        out.append(np.where(hit, g, 0.0))
    return out


class Graph:
    """A graph of layers in NumPy (float64): the oracle of ``cdnn._core.Graph``.

    Takes the same description as the core (``nodes`` in topological order,
    ``inputs``, ``outputs``; see docs/design.md, "The graph executor") but
    copies every parameter to float64 and computes with whole arrays of shape
    ``(batch, *shape)``. Dropout and Gaussian noise are the identity unless
    ``masks`` (node -> multiplier array; for alpha dropout the kept array)
    / ``noise`` (node -> added array) are given for a training step. A
    PReLU node's alpha is its ``gamma``, in Keras' shape.
    """

    def __init__(self, nodes: list[dict], inputs: list[int], outputs: list[dict]) -> None:
        self.nodes = nodes
        self.inputs = list(inputs)
        self.outputs = outputs
        keys = ("W", "b", "gamma", "beta", "moving_mean", "moving_variance", "scale", "offset")
        self.p = [{k: np.array(d[k], np.float64) for k in keys if d.get(k) is not None} for d in nodes]

    def params(self) -> list[tuple[int, str]]:
        """The trainable parameters as ``(node, name)`` pairs, in node order."""
        out = []
        for i, d in enumerate(self.nodes):
            if d["op"] in ("dense", "batchnorm", "layernorm", "rmsnorm", "prelu") and d.get("trainable", True):
                out += [(i, k) for k in ("W", "b", "gamma", "beta") if k in self.p[i]]
        return out

    def forward(self, xs, training: bool, masks=None, noise=None) -> tuple[list, list]:
        """Values of every node (``(batch, *shape)``) and the pre-activations of dense nodes."""
        masks, noise = masks or {}, noise or {}
        vals: list = [None] * len(self.nodes)
        pre: list = [None] * len(self.nodes)
        for k, i in enumerate(self.inputs):
            vals[i] = np.asarray(xs[k], np.float64).reshape((-1,) + tuple(self.nodes[i]["shape"]))
        for i, d in enumerate(self.nodes):
            op, p = d["op"], self.p[i]
            ins = [vals[k] for k in d.get("inputs", [])]
            x = ins[0] if ins else None
            if op == "input":
                continue
            if op == "dense":
                z = x @ p["W"] + (p["b"] if "b" in p else 0.0)
                pre[i] = z
                vals[i] = _node_act(d, z)
            elif op == "batchnorm":
                eps = d.get("epsilon", 1e-3)
                if training and d.get("trainable", True):
                    mean, var = batch_moments(x)
                else:
                    mean, var = p["moving_mean"], p["moving_variance"]
                vals[i] = normalize(x, mean, var, p.get("gamma"), p.get("beta"), eps)
            elif op == "layernorm":
                vals[i] = layernorm_forward(x, p.get("gamma"), p.get("beta"), d.get("epsilon", 1e-3))
            elif op == "rmsnorm":
                vals[i] = rmsnorm_forward(x, p.get("gamma"), d.get("epsilon", 1e-3))
            elif op == "unitnorm":
                vals[i] = l2_normalize(x, d.get("epsilon", 1e-3))
            elif op == "dot":
                vals[i] = dot_forward(ins[0], ins[1], d.get("epsilon", 0.0) > 0)
            elif op == "activation":
                pre[i] = x
                vals[i] = _node_act(d, x)
            elif op == "affine":
                vals[i] = x * p["scale"] + p["offset"]
            elif op in ("dropout", "gaussian_dropout"):
                vals[i] = x * masks[i] if (training and i in masks) else x
            elif op == "alpha_dropout":
                vals[i] = alpha_dropout(x, masks[i], d["rate"]) if (training and i in masks) else x
            elif op == "prelu":
                vals[i] = prelu(x, p["gamma"])
            elif op == "gaussian_noise":
                vals[i] = x + noise[i] if (training and i in noise) else x
            elif op in MERGES:
                vals[i] = merge_forward(op, ins)
            elif op == "concatenate":
                vals[i] = np.concatenate(ins, axis=-1)
            elif op == "reshape":
                vals[i] = x.reshape((x.shape[0],) + tuple(d["shape"]))
        return vals, pre

    def _logits_loss(self, o: dict) -> bool:
        d = self.nodes[o["node"]]
        act = d.get("activation", "linear") if d["op"] in ("dense", "activation") else "linear"
        categorical = o["loss"] in ("sparse_categorical_crossentropy", "categorical_crossentropy")
        return not o.get("from_logits") and (
            (categorical and act == "softmax") or (o["loss"] == "binary_crossentropy" and act == "sigmoid")
        )

    def losses(self, xs, ys, training: bool = False, masks=None, noise=None, sample_weight=None) -> list[float | None]:
        """Each output's mean loss on the batch (None for an output without a loss); ``sample_weight``: per
        output None or the samples' weights (Keras' sum_over_batch_size: the weighted sum over the rows)."""
        vals, pre = self.forward(xs, training, masks, noise)
        sws = sample_weight or [None] * len(self.outputs)
        return [
            self._output_loss(o, vals, pre, y, w)[0] if o.get("loss") else None
            for o, y, w in zip(self.outputs, ys, sws)
        ]

    def _output_loss(self, o, vals, pre, y, sample_weight=None):
        """Mean loss of one output and its gradient with respect to the value (or the logits); with
        ``sample_weight`` (one weight per sample), each row's loss and gradient times its sample's weight."""
        v = vals[o["node"]]
        w = v.shape[-1]
        logits = self._logits_loss(o)
        src = pre[o["node"]] if logits else v
        flat = src.reshape(-1, w)
        yy = (
            np.asarray(y).reshape(-1)
            if o["loss"] == "sparse_categorical_crossentropy"
            else np.asarray(y, np.float64).reshape(-1, w)
        )
        fl = logits or bool(o.get("from_logits"))
        ignore = (o.get("loss_options") or {}).get("ignore_class")
        if ignore is not None:  # Keras' mean over the rows not of ignore_class, weighted
            rw = None if sample_weight is None else np.repeat(sample_weight, len(flat) // len(sample_weight))
            value, grad = keras_reduced_loss(o["loss"], yy, flat, fl, sample_weight=rw, ignore_class=ignore)
            return value, grad.reshape(v.shape), logits
        value = loss(o["loss"], yy, flat, from_logits=fl)
        grad = loss_grad(o["loss"], yy, flat, from_logits=fl)
        if sample_weight is not None:
            per_sample = len(flat) // len(sample_weight)
            rw = np.repeat(np.asarray(sample_weight, np.float64), per_sample)
            rows = [loss(o["loss"], yy[r : r + 1], flat[r : r + 1], from_logits=fl) for r in range(len(flat))]
            value = float(np.dot(rw, rows)) / len(flat)
            grad = grad * rw[:, None]
        return value, grad.reshape(v.shape), logits

    def gradients(self, xs, ys, training: bool = True, masks=None, noise=None, sample_weight=None):
        """Weighted total loss (with the nodes' ``activity`` penalties, ``{"l1", "l2"}``), per-output
        losses and ``{(node, name): gradient}`` (``sample_weight`` as in :meth:`losses`)."""
        vals, pre = self.forward(xs, training, masks, noise)
        gv: list = [None] * len(self.nodes)  # dL/d(value)
        gz: list = [None] * len(self.nodes)  # dL/d(pre-activation) from logits losses

        def add(store, i, g):
            store[i] = g if store[i] is None else store[i] + g

        total, per = 0.0, []
        for o, y, sw in zip(self.outputs, ys, sample_weight or [None] * len(self.outputs)):
            if not o.get("loss"):
                per.append(None)
                continue
            value, grad, logits = self._output_loss(o, vals, pre, y, sw)
            wt = o.get("weight", 1.0)
            total += wt * value
            per.append(value)
            add(gz if logits else gv, o["node"], wt * grad)
        for i, d in enumerate(self.nodes):
            # an activity regularizer: its penalty on the node's value over the batch size (Keras 3's Layer)
            if d.get("activity"):
                a, r = vals[i], d["activity"]
                total += (r.get("l1", 0.0) * np.abs(a).sum() + r.get("l2", 0.0) * np.square(a).sum()) / a.shape[0]
                add(gv, i, (r.get("l1", 0.0) * np.sign(a) + 2 * r.get("l2", 0.0) * a) / a.shape[0])
        grads = {}
        for i in reversed(range(len(self.nodes))):
            d, p = self.nodes[i], self.p[i]
            op = d["op"]
            ins = d.get("inputs", [])
            if op in ("dense", "activation"):
                g = _node_act_grad(d, pre[i], gv[i]) if gv[i] is not None else None
                if gz[i] is not None:
                    g = gz[i] if g is None else g + gz[i]
            else:
                g = gv[i]
            if g is None or op == "input":
                continue
            x = vals[ins[0]] if ins else None
            if op == "dense":
                w_in = p["W"].shape[0]
                grads[(i, "W")] = x.reshape(-1, w_in).T @ g.reshape(-1, g.shape[-1])
                if "b" in p:
                    grads[(i, "b")] = g.reshape(-1, g.shape[-1]).sum(axis=0)
                add(gv, ins[0], g @ p["W"].T)
            elif op == "activation" or op == "gaussian_noise":
                add(gv, ins[0], g)
            elif op in ("dropout", "gaussian_dropout"):
                add(gv, ins[0], g * masks[i] if (masks and i in masks) else g)
            elif op == "alpha_dropout":
                add(gv, ins[0], g * alpha_dropout_scale(d["rate"]) * masks[i] if (masks and i in masks) else g)
            elif op == "prelu":
                dx, dalpha = prelu_backward(x, p["gamma"], g)
                if d.get("trainable", True):
                    grads[(i, "gamma")] = dalpha
                add(gv, ins[0], dx)
            elif op == "affine":
                add(gv, ins[0], g * p["scale"])
            elif op == "batchnorm":
                eps = d.get("epsilon", 1e-3)
                if d.get("trainable", True):
                    dx, dgamma, dbeta = batchnorm_backward(x, p.get("gamma"), eps, g)
                    if "gamma" in p:
                        grads[(i, "gamma")] = dgamma
                    if "beta" in p:
                        grads[(i, "beta")] = dbeta
                else:
                    dx = g * (p["gamma"] if "gamma" in p else 1.0) / np.sqrt(p["moving_variance"] + eps)
                add(gv, ins[0], dx)
            elif op == "layernorm":
                dx, dgamma, dbeta = layernorm_backward(x, p.get("gamma"), d.get("epsilon", 1e-3), g)
                if "gamma" in p:
                    grads[(i, "gamma")] = dgamma
                if "beta" in p:
                    grads[(i, "beta")] = dbeta
                add(gv, ins[0], dx)
            elif op == "rmsnorm":
                dx, dscale = rmsnorm_backward(x, p.get("gamma"), d.get("epsilon", 1e-3), g)
                if "gamma" in p:
                    grads[(i, "gamma")] = dscale
                add(gv, ins[0], dx)
            elif op == "unitnorm":
                add(gv, ins[0], l2_normalize_backward(x, d.get("epsilon", 1e-3), g))
            elif op == "dot":
                for k, dx in zip(ins, dot_backward(vals[ins[0]], vals[ins[1]], d.get("epsilon", 0.0) > 0, g)):
                    add(gv, k, dx)
            elif op in MERGES:
                for k, dx in zip(ins, merge_backward(op, [vals[k] for k in ins], g)):
                    add(gv, k, dx)
            elif op == "concatenate":
                c0 = 0
                for k in ins:
                    wk = vals[k].shape[-1]
                    add(gv, k, g[..., c0 : c0 + wk])
                    c0 += wk
            elif op == "reshape":
                add(gv, ins[0], g.reshape(vals[ins[0]].shape))
        return total, per, grads, vals

    def train_step(self, xs, ys, optimizer: _Optimizer, masks=None, noise=None, sample_weight=None) -> float:
        """One training step: gradients, the optimizer on every trainable parameter, the moving statistics."""
        total, _, grads, vals = self.gradients(xs, ys, True, masks, noise, sample_weight)
        keys = self.params()
        optimizer.step(
            [self.p[i][k] for i, k in keys], [grads.get((i, k), np.zeros_like(self.p[i][k])) for i, k in keys]
        )
        for i, d in enumerate(self.nodes):
            if d["op"] == "batchnorm" and d.get("trainable", True):
                mean, var = batch_moments(vals[d["inputs"][0]])
                m = d.get("momentum", 0.99)
                self.p[i]["moving_mean"] = moving_update(self.p[i]["moving_mean"], mean, m)
                self.p[i]["moving_variance"] = moving_update(self.p[i]["moving_variance"], var, m)
        return total


def _relu_options(d: dict) -> dict:
    """A ``relu_args`` node's options (Keras' relu with negative_slope, max_value, threshold)."""
    return {
        "negative_slope": d.get("alpha", 0.0),
        "max_value": d.get("max_value"),
        "threshold": d.get("threshold", 0.0),
    }


def _node_act(d: dict, z: np.ndarray) -> np.ndarray:
    """A dense or activation node's activation, with its options."""
    if d.get("activation") == "elu":
        return elu(z, d.get("alpha", ELU_ALPHA))
    if d.get("activation") == "relu_args":
        return relu_with_options(z, **_relu_options(d))
    return _act_nd(d.get("activation", "linear"), z)


def _node_act_grad(d: dict, z: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    if d.get("activation") == "elu":
        return upstream * elu_derivative(z, d.get("alpha", ELU_ALPHA))
    if d.get("activation") == "relu_args":
        return relu_with_options_grad(z, upstream, **_relu_options(d))
    return _act_grad_nd(d.get("activation", "linear"), z, upstream)


def _act_nd(name: str, z: np.ndarray) -> np.ndarray:
    """An activation on the last axis of an array of any rank."""
    return activation(name, z.reshape(-1, z.shape[-1])).reshape(z.shape)


def _act_grad_nd(name: str, z: np.ndarray, upstream: np.ndarray) -> np.ndarray:
    return activation_grad(name, z.reshape(-1, z.shape[-1]), upstream.reshape(-1, z.shape[-1])).reshape(z.shape)


# ----------------------------------------------------------------------------
# ELU, PReLU, GaussianDropout, AlphaDropout (keras/src/layers/activations/elu.py,
# prelu.py; keras/src/layers/regularization/gaussian_dropout.py, alpha_dropout.py)
# ----------------------------------------------------------------------------


def elu(z: np.ndarray, alpha: float = ELU_ALPHA) -> np.ndarray:
    """z above 0, alpha (e^z - 1) at or below."""
    z = np.asarray(z, np.float64)
    return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))


def elu_derivative(z: np.ndarray, alpha: float = ELU_ALPHA) -> np.ndarray:
    z = np.asarray(z, np.float64)
    return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))


def prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Keras' PReLU: relu(x) - alpha * relu(-x), alpha broadcast over the batch (and shared axes)."""
    return np.maximum(x, 0.0) - alpha * np.maximum(-x, 0.0)


def prelu_backward(x: np.ndarray, alpha: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx and dL/dalpha (summed over the batch and the axes alpha is shared over); relu's slope at 0 is 0."""
    dx = g * (x > 0) + g * alpha * (x < 0)
    da = (-g * np.maximum(-x, 0.0)).sum(axis=0)
    axes = tuple(k for k, n in enumerate(np.shape(alpha)) if n == 1 and da.shape[k] != 1)
    return dx, da.sum(axis=axes, keepdims=True).reshape(np.shape(alpha))


def gaussian_dropout_stddev(rate: float) -> float:
    """The multiplicative noise's standard deviation: sqrt(rate / (1 - rate)), mean 1."""
    return math.sqrt(rate / (1.0 - rate))


def _alpha_dropout_ab(rate: float) -> tuple[float, float, float]:
    alpha_p = -SELU_ALPHA * SELU_SCALE
    a = ((1.0 - rate) * (1.0 + rate * alpha_p**2)) ** -0.5
    return a, -a * alpha_p * rate, alpha_p


def alpha_dropout(x: np.ndarray, kept: np.ndarray, rate: float) -> np.ndarray:
    """a * (x where kept, else alpha') + b (alpha' = -selu_alpha * selu_scale)."""
    a, b, alpha_p = _alpha_dropout_ab(rate)
    return a * np.where(kept, x, alpha_p) + b


def alpha_dropout_scale(rate: float) -> float:
    """The slope a of a kept value (the gradient of a dropped one is 0)."""
    return _alpha_dropout_ab(rate)[0]
