"""One training epoch of richer Keras models: cdnn against PyTorch, JAX and Keras 3 on JAX.

Workloads (real Fashion-MNIST, Adam with learning rate 1e-3 and epsilon 1e-7,
one round = one epoch over the slice, every contender on the same threads):

- **BN-b128** (issue 19): 784-256(BatchNormalization, ReLU)-128(BatchNormalization,
  ReLU)-10 softmax, batch 128, 12,000 images. Keras' BatchNormalization
  (momentum 0.99, epsilon 1e-3; PyTorch's ``BatchNorm1d(momentum=0.01, eps=1e-3)``).
- **WD-b128** (issue 19): a two-input wide-and-deep regression, batch 128,
  12,000 images: 8 wide inputs (the means of the image's 8 runs of 98 pixels)
  and the 784 pixels; deep: Dense 256 ReLU, Dense 128 ReLU;
  ``Concatenate([wide, deep])`` → Dense 1; mean squared error against the
  label as a float. cdnn and Keras through the functional API.
- **W2-b32-auc** (issue 20): 784-100-10 at batch 32, 48,000 images, one-hot
  labels, categorical cross-entropy, ``metrics=["accuracy",
  AUC(multi_label=True)]`` (200 thresholds: the per-class ROC AUC averaged;
  cdnn, like Keras' own advice, refuses the flattened ``"AUC"`` on a softmax).
  PyTorch accumulates the same thresholded confusion counts every batch
  (a bucket histogram, as Keras' evenly-spaced-threshold path does) and turns
  them into the AUC at the end of the epoch.
- **W2-b32-class_weight** (issue 20): 784-100-10 at batch 32, 48,000 images,
  sparse labels, ``class_weight`` (0.5 + class/10): the loss weighted per
  sample, summed over the batch and divided by the batch size; the accuracy
  unweighted (as Keras 3 reports it).
- **W2-b32-mae** (issue 20): 784-100-1 at batch 32, 48,000 images, the label as
  a float target, ``loss="mae"``, ``metrics=["RootMeanSquaredError"]``.

Contenders: ``cdnn`` (``Model.fit``, the reference), ``torch`` (written the
usual way, doing the same metric work), ``jax`` (BN-b128 and WD-b128: the whole
epoch one jit-compiled ``lax.scan``) and ``keras-jax`` (the very model cdnn
trains, built by the same code). JAX and Keras run only on all cores (XLA's
thread pool is fixed when JAX starts). Every contender reports the epoch's
loss and metrics, as ``fit`` does.

FLOPs count the Dense layers' matrix products as in ``test_bench_training.py``
(``6·Σ in·out − 2·in₀·out₀`` per sample); normalization, metrics and the
optimizer are not counted. The tests at the end check that the contenders
compute the same thing: two steps from the same weights give the same losses
and metrics.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

SEED = 0
CLASSES = 10
LR, EPS = 1e-3, 1e-7
BN_MOMENTUM, BN_EPSILON = 0.99, 1e-3
AUC_THRESHOLDS = 200
CLASS_WEIGHT = {c: 0.5 + c / 10 for c in range(CLASSES)}
WIDE = 8


@dataclass(frozen=True)
class Workload:
    """A model, its data and how it is trained: everything a contender needs to agree on."""

    name: str
    kind: str  # "bn", "wd", "auc", "class_weight", "mae"
    batch: int
    images: int
    describe: str
    #: (fan_in, fan_out) of each Dense layer, for the FLOPs
    dense: list[tuple[int, int]] = field(default_factory=list)

    def flops_per_sample(self) -> int:
        macs = sum(a * b for a, b in self.dense)
        return 6 * macs - 2 * self.dense[0][0] * self.dense[0][1]


WORKLOADS = {
    w.name: w
    for w in (
        Workload(
            "BN-b128",
            "bn",
            128,
            12_000,
            "784-256(BN)-128(BN)-10, Adam, batch 128",
            [(784, 256), (256, 128), (128, 10)],
        ),
        Workload(
            "WD-b128",
            "wd",
            128,
            12_000,
            "wide-and-deep 8 + 784-256-128 → 1, mse, Adam, batch 128",
            [(784, 256), (256, 128), (WIDE + 128, 1)],
        ),
        Workload(
            "W2-b32-auc",
            "auc",
            32,
            48_000,
            "784-100-10, accuracy + AUC, Adam, batch 32",
            [(784, 100), (100, 10)],
        ),
        Workload(
            "W2-b32-class_weight",
            "class_weight",
            32,
            48_000,
            "784-100-10, class_weight, Adam, batch 32",
            [(784, 100), (100, 10)],
        ),
        Workload(
            "W2-b32-mae",
            "mae",
            32,
            48_000,
            "784-100-1, mae + RMSE, Adam, batch 32",
            [(784, 100), (100, 1)],
        ),
    )
}


def prepare(kind: str, x: np.ndarray, y: np.ndarray):
    """The workload's inputs (an array or a list of arrays) and targets, from images and labels."""
    if kind == "wd":
        wide = np.ascontiguousarray(x.reshape(len(x), WIDE, -1).mean(axis=2), dtype=np.float32)
        return [wide, x], y.astype(np.float32).reshape(-1, 1)
    if kind == "auc":
        return x, np.eye(CLASSES, dtype=np.float32)[y]
    if kind == "mae":
        return x, y.astype(np.float32).reshape(-1, 1)
    return x, y.astype(np.int64)


# ---- cdnn and Keras: one builder, so both train the very same model ------------------------


def build_keras_model(k, kind: str):
    """The workload's compiled model in ``k`` (``cdnn`` or ``keras``); its layers are named so
    other contenders can take its weights."""
    L = k.layers
    if kind == "bn":
        inp = L.Input(shape=(784,))
        h = inp
        for i, units in enumerate((256, 128), 1):
            h = L.Dense(units, name=f"dense{i}")(h)
            h = L.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"bn{i}")(h)
            h = L.Activation("relu")(h)
        out = L.Dense(CLASSES, activation="softmax", name="out")(h)
        model = k.Model(inp, out)
        loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
    elif kind == "wd":
        wide, deep = L.Input(shape=(WIDE,)), L.Input(shape=(784,))
        h = L.Dense(256, activation="relu", name="dense1")(deep)
        h = L.Dense(128, activation="relu", name="dense2")(h)
        out = L.Dense(1, name="out")(L.Concatenate()([wide, h]))
        model = k.Model([wide, deep], out)
        loss, metrics = "mse", []
    else:
        top = {"auc": (CLASSES, "softmax"), "class_weight": (CLASSES, "softmax"), "mae": (1, None)}[kind]
        model = k.Sequential(
            [
                L.Input(shape=(784,)),
                L.Dense(100, activation="relu", name="dense1"),
                L.Dense(top[0], activation=top[1], name="out"),
            ]
        )
        if kind == "auc":
            loss = "categorical_crossentropy"
            metrics = ["accuracy", k.metrics.AUC(num_thresholds=AUC_THRESHOLDS, multi_label=True, name="auc")]
        elif kind == "class_weight":
            loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
        else:
            loss, metrics = "mae", ["RootMeanSquaredError"]
    model.compile(optimizer=k.optimizers.Adam(learning_rate=LR, epsilon=EPS), loss=loss, metrics=metrics)
    return model


def named_weights(model) -> dict[str, list[np.ndarray]]:
    """``{layer name: its weights}`` of the layers that have any (Keras' order within a layer)."""
    return {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers if layer.get_weights()}


def _make_keras_like(k, w: Workload, inputs, targets, weights=None, warm=True):
    model = build_keras_model(k, w.kind)
    if weights is not None:
        for name, ws in weights.items():
            model.get_layer(name).set_weights(ws)
    fit_kw = dict(batch_size=w.batch, epochs=1, verbose=0)
    if w.kind == "class_weight":
        fit_kw["class_weight"] = CLASS_WEIGHT
    if warm:  # build, allocate, compile (both batch shapes for XLA) before the timing
        model.fit(inputs, targets, **fit_kw)

    def epoch():
        history = model.fit(inputs, targets, **fit_kw).history
        return {key: float(v[-1]) for key, v in history.items()}

    epoch.model = model
    return epoch


def make_cdnn(w: Workload, inputs, targets, threads=None, weights=None, warm=True):
    """cdnn as a Keras user drives it: ``Model.fit`` (Sequential or functional)."""
    import cdnn

    cdnn.utils.set_random_seed(SEED)
    epoch = _make_keras_like(cdnn, w, inputs, targets, weights, warm)
    epoch.path = f"{type(epoch.model).__name__}.fit"
    return epoch


def _jax_on_all_cores(threads):
    """JAX, imported here (XLA's CPU client uses every core: it runs only where that is the budget)."""
    import os

    from conftest import default_threads

    if threads is not None and threads != default_threads():
        pytest.skip("JAX's CPU threads are fixed when it starts: it runs only on all cores")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("jax", reason="JAX is not installed (pip install 'jax[cpu]')")


def make_keras_jax(w: Workload, inputs, targets, threads=None, weights=None, warm=True):
    """Keras 3 on the JAX backend: the same model, the same ``fit`` call."""
    _jax_on_all_cores(threads)
    keras = pytest.importorskip("keras", reason="Keras is not installed")
    if keras.backend.backend() != "jax":
        pytest.skip(f"Keras runs on its {keras.backend.backend()} backend here, not JAX")
    keras.utils.set_random_seed(SEED)
    epoch = _make_keras_like(keras, w, inputs, targets, weights, warm)
    epoch.path = "keras (JAX backend) fit"
    return epoch


# ---- PyTorch -----------------------------------------------------------------------------------


def _glorot(rng, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def initial_weights(w: Workload) -> dict[str, list[np.ndarray]]:
    """Glorot-uniform kernels, zero biases, BatchNormalization's ones/zeros: Keras' defaults."""
    rng = np.random.default_rng(SEED)
    names = ["dense1", "dense2", "out"] if len(w.dense) == 3 else ["dense1", "out"]
    weights = {n: [_glorot(rng, a, b), np.zeros(b, np.float32)] for n, (a, b) in zip(names, w.dense)}
    if w.kind == "bn":
        for i, units in ((1, 256), (2, 128)):
            one, zero = np.ones(units, np.float32), np.zeros(units, np.float32)
            weights[f"bn{i}"] = [one, zero, zero.copy(), one.copy()]
    return weights


def _torch_model(torch, w: Workload, weights):
    nn = torch.nn

    def linear(name):
        kernel, bias = weights[name]
        lin = nn.Linear(*kernel.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
            lin.bias.copy_(torch.from_numpy(bias))
        return lin

    def batchnorm(name):
        gamma, beta, mean, var = weights[name]
        bn = nn.BatchNorm1d(len(gamma), eps=BN_EPSILON, momentum=1 - BN_MOMENTUM)
        with torch.no_grad():
            bn.weight.copy_(torch.from_numpy(gamma))
            bn.bias.copy_(torch.from_numpy(beta))
            bn.running_mean.copy_(torch.from_numpy(mean))
            bn.running_var.copy_(torch.from_numpy(var))
        return bn

    if w.kind == "bn":
        seq = nn.Sequential(
            linear("dense1"), batchnorm("bn1"), nn.ReLU(), linear("dense2"), batchnorm("bn2"), nn.ReLU(), linear("out")
        )
        return lambda xs: seq(xs[0]), seq
    if w.kind == "wd":
        deep = nn.Sequential(linear("dense1"), nn.ReLU(), linear("dense2"), nn.ReLU())
        head = linear("out")
        both = nn.ModuleList([deep, head])
        return lambda xs: head(torch.cat([xs[0], deep(xs[1])], dim=1)), both
    seq = nn.Sequential(linear("dense1"), nn.ReLU(), linear("out"))
    return lambda xs: seq(xs[0]), seq


class _TorchAUC:
    """Keras' ``AUC(num_thresholds=200, multi_label=True)`` in torch: per-class confusion counts at
    evenly spaced thresholds, accumulated each batch as a bucket histogram, the ROC's trapezoids
    at the end."""

    def __init__(self, torch, n_thresholds=AUC_THRESHOLDS, classes=CLASSES):
        self.torch, self.n, self.classes = torch, n_thresholds, classes
        self.offsets = torch.arange(classes) * n_thresholds
        self.reset()

    def reset(self):
        size = self.classes * self.n
        self.pos = self.torch.zeros(size, dtype=self.torch.float64)
        self.all = self.torch.zeros(size, dtype=self.torch.float64)

    def update(self, probs, onehot):
        torch, n = self.torch, self.n
        # p > i/(n-1) for thresholds i <= k: the bucket k of p, 0..n-2 (threshold 0 is -eps, n-1 is 1+eps)
        k = (torch.ceil(probs * (n - 1)) - 1).clamp_(0, n - 2).long() + self.offsets
        k = k.flatten()
        self.pos += torch.bincount(k, weights=onehot.flatten().double(), minlength=self.classes * n)
        self.all += torch.bincount(k, minlength=self.classes * n)

    def result(self) -> float:
        torch = self.torch
        pos, every = self.pos.view(self.classes, self.n), self.all.view(self.classes, self.n)
        tp = pos.flip(1).cumsum(1).flip(1)
        fp = (every - pos).flip(1).cumsum(1).flip(1)
        p, neg = tp[:, :1], fp[:, :1]
        recall = torch.where(p > 0, tp / p.clamp(min=1e-30), torch.zeros_like(tp))
        fpr = torch.where(neg > 0, fp / neg.clamp(min=1e-30), torch.zeros_like(fp))
        auc = ((fpr[:, :-1] - fpr[:, 1:]) * (recall[:, :-1] + recall[:, 1:]) / 2).sum(1)
        return float(auc.mean())


def make_torch(w: Workload, inputs, targets, threads=None, weights=None, warm=True):
    """PyTorch on the CPU, written the usual way, computing the same loss and metrics as ``fit``."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")
    torch.manual_seed(SEED)
    forward, module = _torch_model(torch, w, weights or initial_weights(w))
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=LR, eps=EPS)
    xs = [torch.from_numpy(a) for a in (inputs if isinstance(inputs, list) else [inputs])]
    yt = torch.from_numpy(targets)
    n = len(yt)
    cw = torch.tensor([CLASS_WEIGHT[c] for c in range(CLASSES)], dtype=torch.float32)
    auc = _TorchAUC(torch) if w.kind == "auc" else None

    def step(idx, acc):
        xb, yb = [x[idx] for x in xs], yt[idx]
        opt.zero_grad(set_to_none=True)
        out = forward(xb)
        rows = len(idx)
        if w.kind in ("bn", "class_weight"):
            per = torch.nn.functional.cross_entropy(out, yb, reduction="none")
            correct = (out.argmax(1) == yb).float()
            # Keras: the class weights' weighted sum over the batch size; the accuracy unweighted
            loss = (cw[yb] * per).sum() / rows if w.kind == "class_weight" else per.mean()
            acc["metric"] += correct.sum()
            acc["metric_w"] += rows
        elif w.kind == "auc":
            logp = torch.log_softmax(out, 1)
            loss = -(yb * logp).sum(1).mean()
            with torch.no_grad():
                acc["metric"] += (out.argmax(1) == yb.argmax(1)).sum()
                acc["metric_w"] += rows
                auc.update(logp.exp(), yb)
        elif w.kind == "wd":
            loss = torch.nn.functional.mse_loss(out, yb)
        else:  # mae, with RootMeanSquaredError
            loss = torch.nn.functional.l1_loss(out, yb)
            with torch.no_grad():
                acc["metric"] += ((out - yb) ** 2).sum()
                acc["metric_w"] += rows
        loss.backward()
        opt.step()
        acc["loss"] += loss.detach() * rows

    def epoch():
        if auc is not None:
            auc.reset()
        acc = {"loss": torch.zeros(()), "metric": torch.zeros(()), "metric_w": torch.zeros(())}
        perm = torch.randperm(n)
        for start in range(0, n, w.batch):
            step(perm[start : start + w.batch], acc)
        logs = {"loss": float(acc["loss"]) / n}
        if w.kind in ("bn", "class_weight", "auc"):
            logs["accuracy"] = float(acc["metric"] / acc["metric_w"])
        if w.kind == "auc":
            logs["auc"] = auc.result()
        if w.kind == "mae":
            logs["RootMeanSquaredError"] = math.sqrt(float(acc["metric"] / acc["metric_w"]))
        return logs

    if warm:
        epoch_of_one = {"loss": torch.zeros(()), "metric": torch.zeros(()), "metric_w": torch.zeros(())}
        step(torch.arange(min(w.batch, n)), epoch_of_one)
    epoch.path = "torch nn.Module + Adam"
    return epoch


# ---- JAX: the whole epoch one jit-compiled lax.scan ---------------------------------------------


def make_jax(w: Workload, inputs, targets, threads=None, weights=None, warm=True):
    """JAX as an expert writes it (BN-b128 and WD-b128): the data on the device, one ``lax.scan``
    per epoch over the batches plus one step for a last partial batch, Adam as Keras'."""
    if w.kind not in ("bn", "wd"):
        pytest.skip(f"no JAX contender for {w.name} (its metric work is PyTorch's and Keras-on-JAX's)")
    jax = _jax_on_all_cores(threads)
    jnp = jax.numpy
    weights = weights or initial_weights(w)
    params = {name: tuple(jnp.asarray(a) for a in weights[name][:2]) for name in ("dense1", "dense2", "out")}
    stats = {}
    if w.kind == "bn":
        for i in (1, 2):
            gamma, beta, mean, var = weights[f"bn{i}"]
            params[f"bn{i}"] = (jnp.asarray(gamma), jnp.asarray(beta))
            stats[f"bn{i}"] = (jnp.asarray(mean), jnp.asarray(var))

    def forward(p, s, xb):
        if w.kind == "wd":
            wide, deep = xb
            h = jax.nn.relu(deep @ p["dense1"][0] + p["dense1"][1])
            h = jax.nn.relu(h @ p["dense2"][0] + p["dense2"][1])
            return jnp.concatenate([wide, h], axis=1) @ p["out"][0] + p["out"][1], s
        h, new = xb[0], {}
        for i in (1, 2):
            z = h @ p[f"dense{i}"][0] + p[f"dense{i}"][1]
            mean, var = jnp.mean(z, 0), jnp.var(z, 0)
            gamma, beta = p[f"bn{i}"]
            h = jax.nn.relu((z - mean) * jax.lax.rsqrt(var + BN_EPSILON) * gamma + beta)
            mm, mv = s[f"bn{i}"]
            new[f"bn{i}"] = (
                mm * BN_MOMENTUM + jax.lax.stop_gradient(mean) * (1 - BN_MOMENTUM),
                mv * BN_MOMENTUM + jax.lax.stop_gradient(var) * (1 - BN_MOMENTUM),
            )
        return h @ p["out"][0] + p["out"][1], new

    def loss_fn(p, s, xb, yb):
        out, s = forward(p, s, xb)
        if w.kind == "wd":
            return jnp.mean((out - yb) ** 2), (s, jnp.zeros((), jnp.float32))
        logp = jax.nn.log_softmax(out)
        loss = -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
        return loss, (s, jnp.sum(jnp.argmax(out, 1) == yb).astype(jnp.float32))

    def step(state, batch_xy):
        p, s, m, v, t = state
        xb, yb = batch_xy
        (loss, (s, correct)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, s, xb, yb)
        t = t + 1
        lr = LR * jnp.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        m = jax.tree_util.tree_map(lambda m_, g_: m_ + (g_ - m_) * 0.1, m, g)
        v = jax.tree_util.tree_map(lambda v_, g_: v_ + (g_ * g_ - v_) * 0.001, v, g)
        p = jax.tree_util.tree_map(lambda p_, m_, v_: p_ - lr * m_ / (jnp.sqrt(v_) + EPS), p, m, v)
        rows = yb.shape[0]
        return (p, s, m, v, t), (loss * rows, correct)

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    xd = [jnp.asarray(a) for a in (inputs if isinstance(inputs, list) else [inputs])]
    yd = jnp.asarray(targets if w.kind == "wd" else targets.astype(np.int32))
    n, batch = len(targets), w.batch
    full = n // batch

    @jax.jit
    def epoch_fn(state, key):
        perm = jax.random.permutation(key, n)
        idx = perm[: full * batch].reshape(full, batch)
        state, (losses, correct) = jax.lax.scan(step, state, ([x[idx] for x in xd], yd[idx]))
        loss, correct = jnp.sum(losses), jnp.sum(correct)
        if n % batch:
            rest = perm[full * batch :]
            state, (l_, c_) = step(state, ([x[rest] for x in xd], yd[rest]))
            loss, correct = loss + l_, correct + c_
        return state, loss / n, correct / n

    holder = [(params, stats, zeros, zeros, jnp.zeros((), jnp.int32)), jax.random.PRNGKey(SEED)]

    def epoch():
        holder[1], sub = jax.random.split(holder[1])
        holder[0], loss, acc = epoch_fn(holder[0], sub)
        logs = {"loss": float(loss)}  # waits for the result
        if w.kind == "bn":
            logs["accuracy"] = float(acc)
        return logs

    if warm:
        state = holder[0]
        epoch()  # compile
        holder[0] = state
    epoch.path = "jax.jit(lax.scan) over the epoch"
    return epoch


CONTENDERS = {"cdnn": make_cdnn, "torch": make_torch, "jax": make_jax, "keras-jax": make_keras_jax}


def _bench(run, settings, fashion, workload: str, contender: str):
    w = WORKLOADS[workload]
    x, y = fashion
    n = settings.epoch_images(w.images)
    inputs, targets = prepare(w.kind, x[:n], y[:n])
    threads = settings.threads
    with settings.thread_limit(threads):
        epoch = CONTENDERS[contender](w, inputs, targets, threads=threads)
    run(
        epoch,
        group=f"{workload} ({n / 1000:g}k-image epoch)",
        contender=contender,
        threads=threads,
        reference=contender == "cdnn",
        flops=n * w.flops_per_sample(),
        samples=n,
        workload=workload,
        describe=f"{w.describe}, {n / 1000:g}k images",
        batch_size=w.batch,
        unit="epoch",
        path=getattr(epoch, "path", None),
    )


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_bn_mlp_epoch(run, settings, fashion, contender):
    """Issue 19: the BatchNorm MLP."""
    _bench(run, settings, fashion, "BN-b128", contender)


@pytest.mark.parametrize("contender", list(CONTENDERS))
def test_wide_deep_epoch(run, settings, fashion, contender):
    """Issue 19: the two-input wide-and-deep regression (functional API)."""
    _bench(run, settings, fashion, "WD-b128", contender)


@pytest.mark.parametrize("contender", ["cdnn", "torch", "keras-jax"])
@pytest.mark.parametrize("workload", ["W2-b32-auc", "W2-b32-class_weight", "W2-b32-mae"])
def test_w2_variant_epoch(run, settings, fashion, workload, contender):
    """Issue 20: W2 at batch 32 with AUC, with class weights, as a regression."""
    _bench(run, settings, fashion, workload, contender)


# ---- fairness: every contender computes the same thing ---------------------------------------


def _two_steps(make, w: Workload, inputs, targets, weights):
    """The logs of two one-batch epochs from ``weights``: the first step's loss and metrics, then
    the second's, after one update (a wrong gradient or optimizer shows there)."""
    epoch = make(w, inputs, targets, weights=weights, warm=False)
    return [epoch(), epoch()]


def _one_batch(w: Workload):
    rng = np.random.default_rng(3)
    x = rng.random((w.batch, 784), dtype=np.float32)
    return prepare(w.kind, x, np.arange(w.batch) % CLASSES)


@functools.cache
def _cdnn_two_steps(workload: str):
    w = WORKLOADS[workload]
    return _two_steps(make_cdnn, w, *_one_batch(w), initial_weights(w))


#: Relative tolerance of the second step's loss. PyTorch's Adam adds epsilon to ``sqrt(v̂)``,
#: Keras' (and cdnn's, and the JAX contender's) to ``sqrt(v)``: on the first update, where
#: Adam moves each weight by about ``lr·sign(g)``, weights with tiny gradients move
#: differently (measured: 3e-5 to 3e-4 of the loss; cdnn against JAX and Keras: under 6e-6).
SECOND_STEP_RTOL = {"torch": 1e-3, "jax": 3e-5, "keras-jax": 3e-5}


@pytest.mark.parametrize("contender", ["torch", "jax", "keras-jax"])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_contenders_compute_the_same_thing(workload, contender):
    """Two steps on one batch from the same initial weights: cdnn's losses and metrics, within
    float rounding on the first step (the forward pass, the loss and the metric work) and within
    the optimizers' known difference on the second (the gradients and the update)."""
    w = WORKLOADS[workload]
    if contender == "jax" and w.kind not in ("bn", "wd"):
        pytest.skip(f"no JAX contender for {workload}")
    ours = _cdnn_two_steps(workload)
    theirs = _two_steps(CONTENDERS[contender], w, *_one_batch(w), initial_weights(w))
    assert set(theirs[0]) == set(ours[0]), (theirs[0], ours[0])
    for key, value in theirs[0].items():
        np.testing.assert_allclose(value, ours[0][key], rtol=2e-6, atol=1e-7, err_msg=f"{workload} step 1 {key}")
    np.testing.assert_allclose(theirs[1]["loss"], ours[1]["loss"], rtol=SECOND_STEP_RTOL[contender])
    assert ours[1]["loss"] < 0.9 * ours[0]["loss"]  # the update happened
