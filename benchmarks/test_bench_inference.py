"""Inference: one call on a batch of 1, 32 or 10,000 images, cdnn against ONNX Runtime, NumPy and JAX.

The networks are the training workloads' (784-100-10 and 784-512-256-10, ReLU
hidden layers, softmax out; BN: 784-256(BatchNormalization, ReLU)-128(BatchNormalization,
ReLU)-10 softmax, its moving statistics and gamma/beta as after training) with the same weights for every contender: cdnn's
model, exported to ONNX by ``model.export(format="onnx")`` for ONNX Runtime,
and its weights for NumPy (``x @ W + b``) and JAX (``jax.jit``). cdnn runs
three ways a user calls it: ``predict``, ``predict_on_batch`` and ``model(x)``.
A round is ``iterations`` calls; the report's time is per call.
FLOPs: ``2·Σ in·out`` per image.
"""

from __future__ import annotations

import numpy as np
import pytest

NETWORKS = {"W2": [784, 100, 10], "BIG": [784, 512, 256, 10], "BN": [784, 256, 128, 10]}
BATCHES = [1, 32, 10_000]
CONTENDERS = ["cdnn-predict", "cdnn-predict_on_batch", "cdnn-call", "onnxruntime", "numpy", "jax"]


def _model(network):
    import cdnn as keras

    sizes, L = NETWORKS[network], keras.layers
    keras.utils.set_random_seed(0)
    if network != "BN":
        return keras.Sequential(
            [L.Input(shape=(sizes[0],))]
            + [L.Dense(u, activation="relu") for u in sizes[1:-1]]
            + [L.Dense(sizes[-1], activation="softmax")]
        )
    inp = h = L.Input(shape=(sizes[0],))
    for u in sizes[1:-1]:
        h = L.Activation("relu")(L.BatchNormalization()(L.Dense(u)(h)))
    model = keras.Model(inp, L.Dense(sizes[-1], activation="softmax")(h))
    rng = np.random.default_rng(1)
    model.set_weights([w + rng.random(w.shape, np.float32) if w.ndim == 1 else w for w in model.get_weights()])
    return model


def _weights(model):
    """Per Dense: ``[W, b, bn]``, bn its BatchNormalization's ``(gamma, beta, mean, variance)`` or None."""
    out = []
    for layer in model.layers:
        ws = layer.get_weights()
        if len(ws) == 2:
            out.append([ws[0], ws[1], None])
        elif len(ws) == 4:
            out[-1][2] = ws
    return out


def _numpy(weights):
    def call(x):
        h = x
        for W, b, bn in weights[:-1]:
            h = h @ W + b
            if bn is not None:
                h = (h - bn[2]) / np.sqrt(bn[3] + 1e-3) * bn[0] + bn[1]
            h = np.maximum(h, 0)
        z = h @ weights[-1][0] + weights[-1][1]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    return call


def _onnxruntime(model, threads, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX Runtime is not installed")
    pytest.importorskip("onnx", reason="onnx is not installed (cdnn's exporter needs it)")
    path = tmp_path / "m.onnx"
    model.export(path, format="onnx", verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _jax(weights, threads):
    from conftest import default_threads

    if threads != default_threads():
        pytest.skip("JAX's CPU threads are fixed when it starts: it runs only on all cores")
    jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'jax[cpu]')")
    jnp = jax.numpy
    params = [(jnp.asarray(W), jnp.asarray(b), bn and [jnp.asarray(v) for v in bn]) for W, b, bn in weights]

    @jax.jit
    def forward(p, x):
        h = x
        for W, b, bn in p[:-1]:
            h = h @ W + b
            if bn is not None:
                h = (h - bn[2]) / jax.numpy.sqrt(bn[3] + 1e-3) * bn[0] + bn[1]
            h = jax.nn.relu(h)
        return jax.nn.softmax(h @ p[-1][0] + p[-1][1])

    return lambda x: forward(params, x).block_until_ready()


@pytest.mark.parametrize("contender", CONTENDERS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("network", list(NETWORKS))
def test_inference(run, settings, tmp_path, network, batch, contender):
    sizes = NETWORKS[network]
    if settings.quick and batch > 1000:
        batch = 1000
    model = _model(network)
    weights = _weights(model)
    x = np.random.default_rng(1).random((batch, sizes[0]), dtype=np.float32)
    threads = settings.threads
    if contender == "cdnn-predict":
        fn = lambda x: model.predict(x, verbose=0)  # noqa: E731
    elif contender == "cdnn-predict_on_batch":
        if not hasattr(model, "predict_on_batch"):
            pytest.skip("predict_on_batch is not in this cdnn yet")
        fn = model.predict_on_batch
    elif contender == "cdnn-call":
        fn = model
    elif contender == "onnxruntime":
        fn = _onnxruntime(model, threads, tmp_path)
    elif contender == "numpy":
        fn = _numpy(weights)
    else:
        fn = _jax(weights, threads)
    expected = _numpy(weights)(x)
    np.testing.assert_allclose(np.asarray(fn(x)), expected, rtol=1e-4, atol=1e-5)  # the same work
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    iterations = 1 if settings.quick else max(1, int(2e-3 * 40e9 / (2 * macs * batch)))
    run(
        lambda: fn(x),
        group=f"inference {network} batch {batch}",
        contender=contender,
        reference=contender == "cdnn-predict",
        flops=2 * macs * batch,
        samples=batch,
        iterations=iterations,
        unit="call",
    )
