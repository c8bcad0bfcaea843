"""Optimizers and their options against the NumPy oracle (`tests/reference.py`), written from Keras 3's
sources: keras/src/optimizers/{sgd,adagrad,rmsprop,adam,adamw,nadam,adamax,adadelta,lion,ftrl,adafactor}.py
and base_optimizer.py (weight decay, clipping, EMA, gradient accumulation)."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

import cdnn as keras
from cdnn import _core

SCCE = "sparse_categorical_crossentropy"
K = keras.optimizers

# name: (cdnn optimizer, reference optimizer)
CASES = {
    "sgd": (lambda: K.SGD(0.1), lambda: ref.SGD(0.1)),
    "sgd_nesterov_wd": (
        lambda: K.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
        lambda: ref.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "adagrad_clipvalue": (lambda: K.Adagrad(0.05, clipvalue=0.05), lambda: ref.Adagrad(0.05, clipvalue=0.05)),
    "rmsprop_momentum_wd": (
        lambda: K.RMSprop(momentum=0.5, weight_decay=0.1),
        lambda: ref.RMSprop(momentum=0.5, weight_decay=0.1),
    ),
    "adam_amsgrad": (lambda: K.Adam(0.01, amsgrad=True), lambda: ref.Adam(0.01, amsgrad=True)),
    "adam_clipnorm": (lambda: K.Adam(0.01, clipnorm=0.05), lambda: ref.Adam(0.01, clipnorm=0.05)),
    "adam_global_clipnorm": (lambda: K.Adam(0.01, global_clipnorm=0.1), lambda: ref.Adam(0.01, global_clipnorm=0.1)),
    "adam_ema": (
        lambda: K.Adam(0.01, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3),
        lambda: ref.Adam(0.01, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3),
    ),
    "adam_accumulate": (
        lambda: K.Adam(0.01, gradient_accumulation_steps=3),
        lambda: ref.Adam(0.01, gradient_accumulation_steps=3),
    ),
    "adamw": (lambda: K.AdamW(0.01), lambda: ref.AdamW(0.01)),
    "adamw_amsgrad_clipvalue": (
        lambda: K.AdamW(0.01, weight_decay=0.1, amsgrad=True, clipvalue=0.1),
        lambda: ref.AdamW(0.01, weight_decay=0.1, amsgrad=True, clipvalue=0.1),
    ),
    "nadam": (lambda: K.Nadam(0.01), lambda: ref.Nadam(0.01)),
    "nadam_accumulate": (
        lambda: K.Nadam(0.01, gradient_accumulation_steps=2),
        lambda: ref.Nadam(0.01, gradient_accumulation_steps=2),
    ),
    "adamax": (lambda: K.Adamax(0.01), lambda: ref.Adamax(0.01)),
    "adadelta": (lambda: K.Adadelta(1.0), lambda: ref.Adadelta(1.0)),
    "lion": (lambda: K.Lion(0.001, weight_decay=0.5), lambda: ref.Lion(0.001, weight_decay=0.5)),
    "ftrl": (
        lambda: K.Ftrl(
            0.05,
            l1_regularization_strength=0.001,
            l2_regularization_strength=0.01,
            l2_shrinkage_regularization_strength=0.01,
            beta=0.1,
        ),
        lambda: ref.Ftrl(
            0.05,
            l1_regularization_strength=0.001,
            l2_regularization_strength=0.01,
            l2_shrinkage_regularization_strength=0.01,
            beta=0.1,
        ),
    ),
    "adafactor": (lambda: K.Adafactor(0.01), lambda: ref.Adafactor(0.01)),
    "adafactor_ema_clipnorm": (
        lambda: K.Adafactor(0.05, relative_step=False, use_ema=True, clipnorm=0.1),
        lambda: ref.Adafactor(0.05, relative_step=False, use_ema=True, clipnorm=0.1),
    ),
    "sgd_schedule": (
        lambda: K.SGD(K.schedules.ExponentialDecay(0.1, 3, 0.5)),
        lambda: ref.SGD(lambda s: ref.exponential_decay(s, 0.1, 3, 0.5)),
    ),
    "adam_cosine_warmup": (
        lambda: K.Adam(K.schedules.CosineDecay(0.0, 10, warmup_target=0.01, warmup_steps=4)),
        lambda: ref.Adam(lambda s: ref.cosine_decay(s, 0.0, 10, warmup_target=0.01, warmup_steps=4)),
    ),
}


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


@pytest.mark.parametrize("name", sorted(CASES))
def test_apply_gradients_matches_the_oracle_over_steps(name):
    make, make_ref = CASES[name]
    rng = np.random.default_rng(7)
    shapes = [(7, 33), (33,), (1, 3), (784, 3)]
    params = [f32(rng.normal(0, 0.5, s)) for s in shapes]
    oracle = [p.astype(np.float64) for p in params]
    initial = [p.copy() for p in params]
    opt, ropt = make(), make_ref()
    for step in range(7):
        grads = [f32(rng.normal(0, 0.1, s)) for s in shapes]
        opt.apply_gradients(zip(grads, params))
        ropt.step(oracle, [g.astype(np.float64) for g in grads])
        for p, r in zip(params, oracle):
            np.testing.assert_allclose(p, r, rtol=2e-5, atol=2e-6, err_msg=f"step {step + 1}")
    assert opt.iterations == 7
    # and the steps moved the weights well beyond the tolerance
    assert max(np.abs(p - p0).max() for p, p0 in zip(params, initial)) > 1e-3


# ---------------------------------------------------------------- whole training runs in C


def blobs(n=120, features=20, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, (classes, features))
    y = rng.integers(0, classes, n)
    return f32(centers[y] + rng.normal(0, 1, (n, features))), y


def model_of(sizes, acts, optimizer, **dense_kw):
    keras.utils.set_random_seed(5)
    layers = [keras.layers.Input((sizes[0],))]
    layers += [keras.layers.Dense(u, activation=a, **dense_kw) for u, a in zip(sizes[1:-1], acts[:-1])]
    layers += [keras.layers.Dense(sizes[-1], activation=acts[-1])]
    model = keras.Sequential(layers)
    model.compile(optimizer=optimizer, loss=SCCE, metrics=["accuracy"])
    return model


def fit_both(model, ropt, x, y, acts, rules=None, epochs=2, batch_size=16):
    mlp = ref.MLP([(w.shape[0], a) for w, a in zip(model.get_weights()[1::2], acts)], x.shape[1])
    mlp.params = [w.astype(np.float64) for w in model.get_weights()]
    ropt.rules = rules
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    oracle = [mlp.fit_epoch(x, y, batch_size, ropt, SCCE) for _ in range(epochs)]
    return history.history, mlp, oracle


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("sizes", [(20, 16, 4), (200, 96, 4)], ids=["small", "depth-split"])
def test_fit_matches_the_oracle(name, sizes):
    make, make_ref = CASES[name]
    x, y = blobs(features=sizes[0])
    # tanh: no dead units, whose tiny gradients Adam-like optimizers would scale up to rounding noise
    model = model_of(sizes, ["tanh", "softmax"], make())
    initial = model.get_weights()
    ropt = make_ref()
    history, mlp, oracle = fit_both(model, ropt, x, y, ["tanh", "softmax"])
    if ropt.use_ema:  # Keras' finalize_variable_values: the averages become the weights at the end of fit
        for p, avg in zip(mlp.params, ropt.averages):
            p[...] = avg
    # Adam-like steps divide each weight's gradient by its own scale: a weight whose gradient is near 0
    # turns float32's rounding into 1e-5-size differences (plain Adam's too) on the wider layer
    atol = 2e-5 if sizes[0] < 100 else 1e-4
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=atol)
    assert history["loss"] == pytest.approx([l for l, _ in oracle], rel=2e-5, abs=1e-8)
    assert model.optimizer.iterations == 2 * 8
    assert max(np.abs(w - w0).max() for w, w0 in zip(model.get_weights(), initial)) > 1e-3


REGULARIZED = {
    "l2": (dict(kernel_regularizer="l2"), lambda: dict(l2=0.01)),
    "l1l2_bias": (
        dict(
            kernel_regularizer=keras.regularizers.L1L2(l1=0.001, l2=0.01), bias_regularizer=keras.regularizers.L1(0.01)
        ),
        None,
    ),
    "max_norm": (dict(kernel_constraint=keras.constraints.MaxNorm(0.5)), None),
    "unit_norm_axis1": (dict(kernel_constraint=keras.constraints.UnitNorm(axis=1)), None),
    "non_neg_bias": (dict(bias_constraint="non_neg", kernel_regularizer="l1"), None),
    "min_max_norm": (dict(kernel_constraint=keras.constraints.MinMaxNorm(0.2, 0.6, rate=0.5)), None),
    "orthogonal_rows": (dict(kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.1)), None),
    "orthogonal_columns_l2_bias": (
        dict(kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.2, "columns"), bias_regularizer="l2"),
        None,
    ),
}


def _ref_rules(layer):
    """The oracle's rules of a Dense layer, read from its regularizer and constraint objects."""
    out = []
    for reg, con in (
        (layer.kernel_regularizer, layer.kernel_constraint),
        (layer.bias_regularizer, layer.bias_constraint),
    ):
        r = {}
        if isinstance(reg, keras.regularizers.OrthogonalRegularizer):
            r["orthogonal"] = (reg.factor, reg.mode)
        elif reg is not None:
            r.update(l1=getattr(reg, "l1", 0.0), l2=getattr(reg, "l2", 0.0))
        if isinstance(con, keras.constraints.MaxNorm):
            r["constraint"] = lambda w, c=con: ref.max_norm(w, c.max_value, c.axis if w.ndim > 1 else 0)
        elif isinstance(con, keras.constraints.UnitNorm):
            r["constraint"] = lambda w, c=con: ref.unit_norm(w, c.axis if w.ndim > 1 else 0)
        elif isinstance(con, keras.constraints.MinMaxNorm):
            r["constraint"] = lambda w, c=con: ref.min_max_norm(
                w, c.min_value, c.max_value, c.rate, c.axis if w.ndim > 1 else 0
            )
        elif isinstance(con, keras.constraints.NonNeg):
            r["constraint"] = ref.non_neg
        out.append(r)
    return out


@pytest.mark.parametrize("name", sorted(REGULARIZED))
@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_regularizers_and_constraints_train_as_the_oracle(name, opt):
    kw, _ = REGULARIZED[name]
    x, y = blobs()
    model = model_of((20, 16, 8, 4), ["relu", "tanh", "softmax"], opt, **kw)
    rules = [r for layer in model.layers for r in _ref_rules(layer)]
    ropt = ref.Adam() if opt == "adam" else ref.SGD()
    history, mlp, oracle = fit_both(model, ropt, x, y, ["relu", "tanh", "softmax"], rules=rules)
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=2e-5)
    # the penalty (before each step) is in the reported loss, as Keras adds model.losses
    assert history["loss"] == pytest.approx([l for l, _ in oracle], rel=2e-5, abs=1e-8)
    # evaluate adds the penalty at the final weights
    penalty = sum(
        f(w)
        for layer in model.layers
        for f, w in ((layer.kernel_regularizer, layer.kernel), (layer.bias_regularizer, layer.bias))
        if f is not None
    )
    loss, _ = model.evaluate(x, y, verbose=0)
    assert loss == pytest.approx(ref.loss(SCCE, y, model.predict(x, verbose=0).astype(np.float64)) + penalty, rel=1e-5)


def test_constraints_hold_after_training():
    x, y = blobs()
    model = model_of(
        (20, 16, 4),
        ["relu", "softmax"],
        keras.optimizers.SGD(1.0),
        kernel_constraint=keras.constraints.MaxNorm(0.3),
        bias_constraint="non_neg",
    )
    model.fit(x, y, epochs=2, verbose=0)
    dense = model.layers[0]
    assert np.sqrt((dense.kernel**2).sum(axis=0)).max() <= 0.3 * (1 + 1e-5)
    assert (dense.bias >= 0).all()


def test_ema_weights_are_copied_into_the_model_at_the_end_of_fit():
    x, y = blobs()
    model = model_of((20, 16, 4), ["relu", "softmax"], keras.optimizers.Adam(0.01, use_ema=True))
    model.fit(x, y, epochs=1, verbose=0)
    averages = [row[3] for row in model.optimizer._slots]
    for w, a in zip(model.get_weights(), averages):
        np.testing.assert_array_equal(w, a)


# ---------------------------------------------------------------- threads


def train_threads(make, threads, dense_kw=None):
    """Two runs of a 784-128-256-10 net (depth-split, packed layers) on `threads` threads."""
    prev = _core.get_num_threads()
    _core.set_num_threads(threads)
    try:
        model = model_of((784, 128, 256, 10), ["relu", "relu", "softmax"], make(), **(dense_kw or {}))
        rng = np.random.default_rng(3)
        x = f32(rng.random((640, 784)))
        y = rng.integers(0, 10, 640).astype(np.int32)
        net = model._core_network()
        opt = model.optimizer
        losses = []
        for epoch in range(2):
            perm = rng.permutation(640).astype(np.int32)
            bl, bc = np.zeros(10), np.zeros(10)
            net.set_optimizer(opt._run_hyperparameters(int(opt.iterations), 10))
            net.train_run(x, y, perm, 0, 10, 64, int(opt.iterations), 11, bl, bc, threads)
            opt.iterations += 10
            losses.append(bl)
        return model.get_weights() + opt.variables, np.concatenate(losses)
    finally:
        _core.set_num_threads(prev)


THREAD_CASES = {
    "adamw_clipvalue": (lambda: K.AdamW(0.001, clipvalue=0.01), None),
    "nadam_schedule": (lambda: K.Nadam(K.schedules.InverseTimeDecay(0.001, 2, 0.5)), None),
    "lion": (lambda: K.Lion(), None),
    "ftrl": (lambda: K.Ftrl(0.01), None),
    "adam_global_clipnorm_ema_accumulate": (
        lambda: K.Adam(global_clipnorm=0.5, use_ema=True, gradient_accumulation_steps=2),
        None,
    ),
    "adafactor": (lambda: K.Adafactor(), None),
    "sgd_l2_maxnorm": (lambda: K.SGD(0.1), dict(kernel_regularizer="l2", kernel_constraint="max_norm")),
    "sgd_orthogonal": (lambda: K.SGD(0.1), dict(kernel_regularizer=keras.regularizers.OrthogonalRegularizer())),
}


@pytest.mark.parametrize("name", sorted(THREAD_CASES))
def test_one_and_two_threads_train_bit_identically(name):
    make, kw = THREAD_CASES[name]
    w1, l1 = train_threads(make, 1, kw)
    w2, l2 = train_threads(make, 2, kw)
    assert np.isfinite(l1).all()
    np.testing.assert_array_equal(l1, l2)
    for a, b in zip(w1, w2):
        assert np.array_equal(a, b)


# ---------------------------------------------------------------- the API


ALL = ["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "adamax", "adadelta", "adafactor", "lion", "ftrl"]


@pytest.mark.parametrize("name", ALL)
def test_strings_name_every_optimizer(name):
    opt = K.get(name)
    assert type(opt).__name__.lower() == name
    assert K.get(name.upper()).__class__ is opt.__class__


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trips(name):
    opt = CASES[name][0]()
    cfg = opt.get_config()
    again = type(opt).from_config(cfg)
    assert again.get_config() == cfg
    assert K.deserialize(K.serialize(opt)).get_config() == cfg
    assert "class_name" not in cfg and cfg["name"]


def test_keras_defaults_in_the_config():
    cfg = K.AdamW().get_config()
    assert cfg["weight_decay"] == 0.004 and cfg["learning_rate"] == 0.001 and cfg["amsgrad"] is False
    assert cfg["ema_momentum"] == 0.99 and cfg["use_ema"] is False and cfg["clipnorm"] is None
    assert K.Lion().get_config()["beta_2"] == 0.99
    assert K.Adadelta().get_config()["rho"] == 0.95
    assert K.Ftrl().get_config()["learning_rate_power"] == -0.5
    assert K.Adafactor().get_config()["beta_2_decay"] == -0.8


def test_learning_rate_reads_and_assigns_as_keras():
    opt = K.Adam(0.01)
    assert float(opt.learning_rate) == 0.01 and opt.learning_rate == 0.01
    opt.learning_rate.assign(0.5)
    assert opt.learning_rate == 0.5 and opt.learning_rate.numpy() == np.float32(0.5)
    opt.learning_rate = 0.25
    assert float(opt.learning_rate) == 0.25
    assert opt.learning_rate * 2 == 0.5
    assert opt.iterations == 0 and opt.iterations.numpy() == 0
    opt.iterations.assign(3)
    assert int(opt.iterations) == 3


def test_a_schedule_sets_the_learning_rate_per_step_and_is_not_assignable():
    sched = K.schedules.PiecewiseConstantDecay([2, 4], [0.1, 0.01, 0.001])
    opt = K.SGD(sched)
    assert opt.learning_rate == pytest.approx(0.1)
    opt.iterations = 3
    assert opt.learning_rate == pytest.approx(0.01)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5
    # schedules are assignable in place of a float, as Keras
    opt2 = K.SGD(0.1)
    opt2.learning_rate = sched
    assert opt2.get_config()["learning_rate"]["class_name"] == "PiecewiseConstantDecay"


def test_fit_reads_a_schedule_at_every_step_of_a_run():
    # SGD with a schedule that is 0 after step 3: the weights stop moving after 4 steps
    x, y = blobs(64)
    sched = K.schedules.PiecewiseConstantDecay([3], [0.1, 0.0])
    model = model_of((20, 16, 4), ["relu", "softmax"], K.SGD(sched))
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    after_one_epoch = model.get_weights()
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(after_one_epoch, model.get_weights()):
        np.testing.assert_array_equal(a, b)


class Halving(K.schedules.LearningRateSchedule):
    def __call__(self, step):
        return 0.1 / 2**step

    def get_config(self):
        return {}


def test_a_user_schedule_trains_as_the_oracle():
    x, y = blobs()
    model = model_of((20, 16, 4), ["relu", "softmax"], K.SGD(Halving()))
    history, mlp, oracle = fit_both(model, ref.SGD(lambda s: 0.1 / 2**s), x, y, ["relu", "softmax"])
    for w, r in zip(model.get_weights(), mlp.params):
        np.testing.assert_allclose(w, r, rtol=1e-4, atol=2e-5)


class Broken(K.schedules.LearningRateSchedule):
    def __call__(self, step):
        return float("nan") if step >= 2 else 0.1

    def get_config(self):
        return {}


def test_a_schedule_returning_nan_stops_fit_with_a_clear_error_before_the_run():
    x, y = blobs(64)
    model = model_of((20, 16, 4), ["relu", "softmax"], K.SGD(Broken()))
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"learning rate.*Broken.*nan.*step 2"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.optimizer.iterations <= 2
    del before


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: K.Adam(learning_rate=-1.0), "learning_rate"),
        (lambda: K.SGD(weight_decay=-0.1), "weight_decay"),
        (lambda: K.Adam(clipnorm=1.0, clipvalue=1.0), "Only one of"),
        (lambda: K.Adam(clipnorm=0.0), "clipnorm"),
        (lambda: K.Adam(use_ema=True, ema_momentum=1.5), "ema_momentum"),
        (lambda: K.Adam(ema_overwrite_frequency=0), "ema_overwrite_frequency"),
        (lambda: K.Adam(gradient_accumulation_steps=1), "gradient_accumulation_steps"),
        (lambda: K.Adam(loss_scale_factor=128.0), "loss_scale_factor"),
        (lambda: K.AdamW(weight_decay=None), "weight_decay"),
        (lambda: K.Lion(beta_1=0.0), "beta_1"),
        (lambda: K.Ftrl(learning_rate_power=0.5), "learning_rate_power"),
        (lambda: K.Ftrl(l1_regularization_strength=-1.0), "l1_regularization_strength"),
        (lambda: K.RMSprop(centered=True), "centered"),
        (lambda: K.Adam(foo=1), "not recognized"),
        (lambda: K.schedules.ExponentialDecay(0.1, 0, 0.5), "decay_steps"),
        (lambda: K.schedules.PiecewiseConstantDecay([1, 2], [0.1]), "length of boundaries"),
        (lambda: K.get("adamm"), "adamw"),
    ],
)
def test_bad_values_are_refused_with_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_negative_assigned_learning_rate_is_refused():
    opt = K.Adam()
    with pytest.raises(ValueError, match="learning_rate"):
        opt.learning_rate.assign(-0.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: K.SGD(0.05, momentum=0.9),
        lambda: K.Adam(amsgrad=True),
        lambda: K.Nadam(),
        lambda: K.Adafactor(),
        lambda: K.Ftrl(),
        lambda: K.AdamW(use_ema=True, gradient_accumulation_steps=2),
        lambda: K.Lion(K.schedules.CosineDecayRestarts(0.001, 3)),
    ],
    ids=["sgd", "amsgrad", "nadam", "adafactor", "ftrl", "adamw-ema-acc", "lion-schedule"],
)
def test_saved_model_with_options_resumes_training_identically(tmp_path, make):
    _resumes_identically(tmp_path, make)


@pytest.mark.parametrize("name", ALL)
def test_saved_model_resumes_training_identically(tmp_path, name):
    _resumes_identically(tmp_path, lambda: K.get(name))


def _resumes_identically(tmp_path, make):
    x, y = blobs(96)
    model = model_of((20, 16, 4), ["relu", "softmax"], make())
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_files_of_the_earlier_layout_still_load(tmp_path):
    # cdnn's files before these optimizers: a flat optimizer config and two slots per weight
    import json

    from cdnn import _saving

    x, y = blobs(48)
    model = model_of((20, 16, 4), ["relu", "softmax"], K.Adam(0.01))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "new.npz"
    model.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop(_saving._META).tobytes())
    comp = meta["compile"]
    comp["optimizer"] = {"class_name": "Adam", **comp["optimizer"]["config"]}
    old_slots, renamed = [], {}
    for i, shape in enumerate(comp["slots"]):
        if i % 5 < 2:
            renamed[f"slot_{len(old_slots)}"] = arrays.pop(f"slot_{i}")
            old_slots.append(shape)
        else:
            arrays.pop(f"slot_{i}", None)
    comp["slots"] = old_slots
    arrays.update(renamed)
    old = tmp_path / "old.npz"
    np.savez(old, **{_saving._META: _saving._meta_array(meta), **arrays})
    loaded = keras.models.load_model(old)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a, b)


def test_batch_methods_read_the_schedule_and_report_the_penalty():
    x, y = blobs(16)
    sched = K.schedules.PiecewiseConstantDecay([1], [0.1, 0.0])  # steps 0 and 1 move the weights, then none
    model = model_of((20, 16, 4), ["relu", "softmax"], K.SGD(sched), kernel_regularizer="l2")
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    after_two = model.get_weights()
    model.train_on_batch(x, y)
    for a, b in zip(after_two, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.reset_metrics()
    loss = model.test_on_batch(x, y)
    loss = loss[0] if isinstance(loss, list) else loss
    penalty = sum(layer.kernel_regularizer(layer.kernel) for layer in model.layers if layer.kernel_regularizer)
    assert penalty > 0
    assert loss == pytest.approx(ref.loss(SCCE, y, model.predict(x, verbose=0).astype(np.float64)) + penalty, rel=1e-5)


@pytest.mark.parametrize("hp", [dict(name="adam", amsgrad=True), dict(name="sgd", global_clipnorm=0.1)])
def test_a_frozen_layer_keeps_its_bits_on_the_whole_gradient_path(hp):
    rng = np.random.default_rng(0)
    shapes = [(20, 16), (16, 4)]
    layers = []
    for i, (a, b) in enumerate(shapes):
        W, bias = f32(rng.normal(0, 0.3, (a, b))), f32(np.zeros(b))
        z = lambda s: np.zeros(s, np.float32)  # noqa: E731
        layers.append(
            dict(
                W=W,
                b=bias,
                activation="relu" if i == 0 else "softmax",
                slots=[z(W.shape), z(W.shape), z(b), z(b)],
                extra_slots={"W3": z(W.shape), "b3": z(b)},
                kernel_rules={"l2": 0.01, "constraint": "max_norm", "max_value": 0.5},
                trainable=i != 0,
            )
        )
    net = _core.Network(layers, SCCE, False, None, dict(hp, learning_rate=0.1))
    before = [d["W"].copy() for d in layers] + [d["b"].copy() for d in layers]
    x, y = blobs(64)
    bl, bc = np.zeros(4), np.zeros(4)
    net.train_run(x, y.astype(np.int32), np.arange(64, dtype=np.int32), 0, 4, 16, 0, 1, bl, bc)
    np.testing.assert_array_equal(layers[0]["W"], before[0])
    np.testing.assert_array_equal(layers[0]["b"], before[2])
    assert not np.array_equal(layers[1]["W"], before[1])
    assert np.sqrt((layers[1]["W"] ** 2).sum(axis=0)).max() <= 0.5 * (1 + 1e-5)


def test_the_graph_executor_refuses_missing_slots():
    # an optimizer whose state arrays were not given is refused (C would write through NULL)
    import test_graph_core as tg

    g = tg.G()
    x = g.input(5)
    g.out(g.dense(x, 3, "softmax"), "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="slot"):
        tg.core_graph(g, {"name": "adam", "learning_rate": 0.01, "amsgrad": True})
    graph, _ = tg.core_graph(g, {"name": "sgd", "learning_rate": 0.01})
    with pytest.raises(ValueError, match="slot"):
        graph.set_optimizer({"name": "nadam", "learning_rate": 0.01})
    with pytest.raises(ValueError, match="slot"):
        graph.set_optimizer({"name": "sgd", "learning_rate": 0.01, "use_ema": True})
    graph.set_optimizer({"name": "sgd", "learning_rate": 0.01, "clipnorm": 1.0})  # needs no state
