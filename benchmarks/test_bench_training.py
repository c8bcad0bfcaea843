"""One training epoch on Fashion-MNIST: cdnn against NumPy, scikit-learn, PyTorch, JAX and Keras on JAX.

Every contender trains the same network (Glorot-uniform kernels, zero biases,
ReLU hidden layers, softmax + sparse categorical cross-entropy, Adam with
learning rate 1e-3 and epsilon 1e-7) on the same images, shuffled every epoch,
on the same number of threads. One round = one epoch over the group's slice.
cdnn also runs at 1, 2 and all cores' threads (thread scaling, same group).
JAX (the whole epoch one jit-compiled ``lax.scan``: what an expert writes) and
Keras 3 on the JAX backend run where installed, on all cores only (XLA's CPU
thread pool is fixed when JAX starts).

FLOPs (``extra_info["flops"]``) count the useful matrix-product work of the
epoch, one definition for every contender: per sample ``2·Σ in·out`` for the
forward pass, ``2·Σ in·out`` for the weight gradients and ``2·Σ in·out`` for
the input gradients of every layer but the first (nobody needs ``dL/dx`` of
the images; cdnn, the NumPy baseline, scikit-learn and PyTorch all skip it),
i.e. ``6·Σ in·out − 2·in₀·out₀``. Bias, activations, loss and the optimizer
update are not counted. 784-100-10: 319,600 FLOPs per sample;
784-512-256-10: 2,407,424.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

SEED = 0
CLASSES = 10

#: name: (layer sizes input to output, batch size, images in a full-run epoch: None for all
#: 48,000). The big network's epoch is a 12k-image slice so the full suite stays within minutes.
WORKLOADS = {
    "W2-b32": ([784, 100, 10], 32, None),
    "W2-b256": ([784, 100, 10], 256, None),
    "BIG-b128": ([784, 512, 256, 10], 128, 12_000),
}


def train_flops_per_sample(sizes):
    """Useful FLOPs of one training sample through layers ``sizes`` (e.g. [784, 100, 10])."""
    macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 6 * macs - 2 * sizes[0] * sizes[1]


def _layers(sizes):
    """``(units, activation)`` per Dense layer: ReLU hidden layers, softmax output."""
    return [(u, "relu") for u in sizes[1:-1]] + [(sizes[-1], "softmax")]


# ---- contenders: each returns a function that trains one epoch ------------------------


def make_cdnn(sizes, batch, x, y):
    """cdnn as a Keras user drives it; the raw core while the Keras API is not there yet."""
    import cdnn as keras

    if not hasattr(keras, "Sequential"):
        return _make_cdnn_core(sizes, batch, x, y)
    if hasattr(keras, "utils") and hasattr(keras.utils, "set_random_seed"):
        keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [keras.layers.Input(shape=(sizes[0],))] + [keras.layers.Dense(u, activation=a) for u, a in _layers(sizes)]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:batch], y[:batch], batch_size=batch, epochs=1, verbose=0)  # build, allocate

    def epoch():
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)

    epoch.path = "Sequential.fit"
    return epoch


def _make_cdnn_core(sizes, batch, x, y):
    import reference

    from cdnn import _core

    rng = np.random.default_rng(SEED)
    specs = []
    for fan_in, (units, act) in zip(sizes[:-1], _layers(sizes)):
        W = reference.glorot_uniform(fan_in, units, rng, np.float32)
        b = np.zeros(units, np.float32)
        slots = [np.zeros_like(W), np.zeros_like(W), np.zeros_like(b), np.zeros_like(b)]
        specs.append(dict(W=W, b=b, activation=act, slots=slots))
    net = _core.Network(
        specs, "sparse_categorical_crossentropy", False, "sparse", dict(name="adam", learning_rate=1e-3, epsilon=1e-7)
    )
    y32 = y.astype(np.int32)
    n = x.shape[0]
    n_batches = math.ceil(n / batch)
    batch_loss = np.zeros(n_batches)
    batch_correct = np.zeros(n_batches)
    step = [0]

    def epoch():
        perm = rng.permutation(n).astype(np.int32)
        net.train_run(x, y32, perm, 0, n_batches, batch, step[0], SEED, batch_loss, batch_correct)
        step[0] += n_batches

    epoch.path = "_core.Network.train_run (Keras API not available yet)"
    return epoch


def make_numpy(sizes, batch, x, y):
    """The float32 NumPy MLP of `tests/reference.py`: ``@``, vectorised Adam."""
    import reference

    mlp = reference.MLP(_layers(sizes), input_dim=sizes[0], rng=SEED, dtype=np.float32)
    opt = reference.Adam(learning_rate=1e-3, epsilon=1e-7)
    rng = np.random.default_rng(SEED)
    loss = "sparse_categorical_crossentropy"
    mlp.train_step(x[:batch], y[:batch], loss, opt)

    def epoch():
        mlp.fit_epoch(x, y, batch, opt, loss, perm=rng.permutation(x.shape[0]))

    return epoch


def make_sklearn(sizes, batch, x, y):
    """scikit-learn's MLPClassifier: one ``partial_fit`` is one epoch of Adam."""
    neural_network = pytest.importorskip("sklearn.neural_network", reason="scikit-learn is not installed")
    clf = neural_network.MLPClassifier(
        hidden_layer_sizes=tuple(sizes[1:-1]),
        activation="relu",
        solver="adam",
        alpha=0.0,
        batch_size=batch,
        learning_rate_init=1e-3,
        epsilon=1e-7,
        shuffle=True,
        random_state=SEED,
    )
    classes = np.arange(CLASSES)
    clf.partial_fit(x[:batch], y[:batch], classes=classes)

    def epoch():
        clf.partial_fit(x, y)

    return epoch


def make_torch(sizes, batch, x, y):
    """PyTorch on the CPU, written the usual way: nn.Sequential, Adam, an index permutation."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    nn = torch.nn
    torch.manual_seed(SEED)
    mods = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(fan_in, fan_out)
        nn.init.xavier_uniform_(lin.weight)  # Keras' glorot_uniform
        nn.init.zeros_(lin.bias)
        mods += [lin, nn.ReLU()]
    model = nn.Sequential(*mods[:-1])  # logits out: softmax is inside the loss
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.int64))
    n = x.shape[0]

    def step(idx):
        xb, yb = xt[idx], yt[idx]
        opt.zero_grad(set_to_none=True)
        out = model(xb)
        loss = loss_fn(out, yb)
        loss.backward()
        opt.step()
        return out, loss

    step(torch.arange(batch))

    def epoch():
        perm = torch.randperm(n)
        correct = 0
        for start in range(0, n, batch):
            idx = perm[start : start + batch]
            out, _ = step(idx)
            correct += (out.argmax(1) == yt[idx]).sum()  # the accuracy Keras reports
        return int(correct)

    return epoch


def _jax_on_all_cores(threads):
    """JAX, imported here (XLA's CPU client uses every core: it runs only where that is the budget)."""
    import os

    from conftest import default_threads

    if threads != default_threads():
        pytest.skip("JAX's CPU threads are fixed when it starts: it runs only on all cores")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("jax", reason="JAX is not installed (pip install 'jax[cpu]')")


def make_jax(sizes, batch, x, y, threads=None):
    """JAX as an expert writes it: the whole epoch one jit-compiled ``lax.scan`` over the batches.

    The data lives on the device; each epoch draws a permutation, gathers the batches and runs
    the scan (plus one step for a last partial batch, as Keras trains it). Adam as Keras'.
    """
    jax = _jax_on_all_cores(threads)
    jnp = jax.numpy
    key = jax.random.PRNGKey(SEED)
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        params.append(
            (jax.random.uniform(sub, (fan_in, fan_out), jnp.float32, -limit, limit), jnp.zeros(fan_out, jnp.float32))
        )
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, jnp.zeros((), jnp.int32))

    def loss_fn(p, xb, yb):
        h = xb
        for W, b in p[:-1]:
            h = jax.nn.relu(h @ W + b)
        logits = h @ p[-1][0] + p[-1][1]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1)), logits

    def step(st, batch_xy):
        p, m, v, t = st
        xb, yb = batch_xy
        (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(p, xb, yb)
        t = t + 1
        lr = 1e-3 * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        m = jax.tree_util.tree_map(lambda m_, g_: m_ + (g_ - m_) * 0.1, m, g)
        v = jax.tree_util.tree_map(lambda v_, g_: v_ + (g_ * g_ - v_) * 0.001, v, g)
        p = jax.tree_util.tree_map(lambda p_, m_, v_: p_ - lr * m_ / (jnp.sqrt(v_) + 1e-7), p, m, v)
        return (p, m, v, t), (loss, jnp.sum(jnp.argmax(logits, 1) == yb))

    n = x.shape[0]
    full = n // batch
    xd, yd = jnp.asarray(x), jnp.asarray(y.astype(np.int32))

    @jax.jit
    def epoch_fn(st, k):
        perm = jax.random.permutation(k, n)
        idx = perm[: full * batch].reshape(full, batch)
        st, (losses, correct) = jax.lax.scan(step, st, (xd[idx], yd[idx]))
        if n % batch:
            rest = perm[full * batch :]
            st, (loss, c) = step(st, (xd[rest], yd[rest]))
            correct = jnp.sum(correct) + c
        return st, jnp.sum(correct)

    holder = [state, key]

    def epoch():
        holder[1], sub = jax.random.split(holder[1])
        holder[0], correct = epoch_fn(holder[0], sub)
        return int(correct)  # waits for the result

    epoch()  # compile
    epoch.path = "jax.jit(lax.scan) over the epoch"
    return epoch


def make_keras_jax(sizes, batch, x, y, threads=None):
    """Keras 3 on the JAX backend, as a Keras user switches to it: ``model.fit``."""
    _jax_on_all_cores(threads)
    keras = pytest.importorskip("keras", reason="Keras is not installed")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs on its {keras.backend.backend()} backend here, not JAX")
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [keras.Input(shape=(sizes[0],))] + [keras.layers.Dense(u, activation=a) for u, a in _layers(sizes)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3, epsilon=1e-7),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compiles the step for both batch shapes

    def epoch():
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)

    epoch.path = "keras (JAX backend) Sequential.fit"
    return epoch


CONTENDERS = {
    "cdnn": make_cdnn,
    "numpy": make_numpy,
    "sklearn": make_sklearn,
    "torch": make_torch,
    "jax": make_jax,
    "keras-jax": make_keras_jax,
}
#: contenders that need the thread count to decide whether they can run
_NEED_THREADS = {"jax", "keras-jax"}


def _bench_epoch(run, settings, fashion, workload, contender, threads):
    sizes, batch, full = WORKLOADS[workload]
    x, y = fashion
    n = settings.epoch_images(full or len(x))
    x, y = x[:n], y[:n]
    with settings.thread_limit(threads):
        make = CONTENDERS[contender]
        epoch = make(sizes, batch, x, y, threads=threads) if contender in _NEED_THREADS else make(sizes, batch, x, y)
    run(
        epoch,
        group=f"{workload} ({n / 1000:g}k-image epoch)",
        contender=contender,
        threads=threads,
        reference=(contender == "cdnn" and threads == settings.threads),
        flops=n * train_flops_per_sample(sizes),
        samples=n,
        workload=workload,
        describe=f"{'-'.join(map(str, sizes))}, Adam, batch {batch}, {n / 1000:g}k images",
        batch_size=batch,
        unit="epoch",
        path=getattr(epoch, "path", None),
    )


@pytest.mark.parametrize("contender", list(CONTENDERS))
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_train_epoch(run, settings, fashion, workload, contender):
    """Every contender on every workload, all on the same number of threads."""
    _bench_epoch(run, settings, fashion, workload, contender, settings.threads)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_cdnn_thread_scaling(run, settings, fashion, workload, scaling_threads):
    """cdnn on the other thread counts (1, 2, all cores), in the workload's group."""
    _bench_epoch(run, settings, fashion, workload, "cdnn", scaling_threads)
