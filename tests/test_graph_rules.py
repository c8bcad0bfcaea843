"""Regularizers, constraints and whole-gradient optimizer options on graphs (functional models).

Oracles: the Dense chain (a Sequential of Dense layers, which applies them in C already) must give the
same bits as the equivalent functional model; the NumPy oracle tests/reference.py for a graph with
BatchNormalization; real Keras 3 (JAX backend) for a few steps. Also: 1 and 2 threads give the same
bits, frozen layers stay bit for bit, and a layer frozen before ``keras.Model(...)`` stays frozen.
"""

import os

import numpy as np
import pytest
import reference as ref

import cdnn
import cdnn as keras


def _real_keras():
    """Real Keras 3 on JAX, the oracle; the test is skipped where it is not installed (CI's wheel stage)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    pytest.importorskip("jax")
    return pytest.importorskip("keras")


RNG = np.random.default_rng(7)
X = RNG.normal(size=(64, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 64)

RULES = {
    "l1l2": dict(kernel_regularizer=keras.regularizers.L1L2(0.01, 0.02), bias_regularizer="l2"),
    "orthogonal": dict(kernel_regularizer=keras.regularizers.OrthogonalRegularizer(0.1, mode="columns")),
    "maxnorm_nonneg": dict(kernel_constraint=keras.constraints.MaxNorm(0.5), bias_constraint="non_neg"),
    "unit_minmax": dict(
        kernel_constraint=keras.constraints.UnitNorm(), bias_constraint=keras.constraints.MinMaxNorm(0.1, 0.3, 0.5)
    ),
}
OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.1, momentum=0.5),
    "amsgrad": lambda: keras.optimizers.Adam(0.01, amsgrad=True),
    "adamw_amsgrad": lambda: keras.optimizers.AdamW(0.01, amsgrad=True),
    "adafactor": lambda: keras.optimizers.Adafactor(0.05),
    "clipnorm": lambda: keras.optimizers.RMSprop(0.01, clipnorm=0.05),
    "clipvalue": lambda: keras.optimizers.SGD(0.1, clipvalue=0.01),
    "global_clipnorm": lambda: keras.optimizers.Adam(0.01, global_clipnorm=0.05),
    "ema": lambda: keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3),
    "accumulation": lambda: keras.optimizers.Adam(0.01, gradient_accumulation_steps=2),
}


def _model(functional, frozen_first=False, **rules):
    keras.utils.set_random_seed(1)
    d1 = keras.layers.Dense(8, activation="relu", trainable=not frozen_first, **rules)
    d2 = keras.layers.Dense(3, activation="softmax", **rules)
    if functional:
        inp = keras.Input((6,))
        return keras.Model(inp, d2(d1(inp)))
    return keras.Sequential([keras.Input((6,)), d1, d2])


def _fit(model, optimizer, epochs=2):
    model.compile(optimizer, "sparse_categorical_crossentropy")
    h = model.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return [w.copy() for w in model.get_weights()], h.history["loss"]


@pytest.mark.parametrize("rules", sorted(RULES))
@pytest.mark.parametrize("opt", ["sgd", "amsgrad", "global_clipnorm"])
def test_graph_rules_match_the_chain(session, rules, opt):
    chain = _model(False, **RULES[rules])
    assert not chain._route_to_graph(X)  # it runs as the chain
    w_chain, l_chain = _fit(chain, OPTIMIZERS[opt]())
    w_graph, l_graph = _fit(_model(True, **RULES[rules]), OPTIMIZERS[opt]())
    for a, b in zip(w_chain, w_graph):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(l_chain, l_graph, rtol=1e-6)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_graph_optimizer_options_match_the_chain(session, opt):
    w_chain, l_chain = _fit(_model(False, **RULES["l1l2"]), OPTIMIZERS[opt](), epochs=3)
    w_graph, l_graph = _fit(_model(True, **RULES["l1l2"]), OPTIMIZERS[opt](), epochs=3)
    for a, b in zip(w_chain, w_graph):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(l_chain, l_graph, rtol=1e-6)


def _bn_model(cdnn_or_keras):
    k = cdnn_or_keras
    inp = k.Input((6,))
    h = k.layers.Dense(
        8,
        activation="relu",
        kernel_regularizer=k.regularizers.L1L2(0.01, 0.02),
        bias_constraint=k.constraints.NonNeg(),
        name="d1",
    )(inp)
    h = k.layers.BatchNormalization(
        gamma_regularizer=k.regularizers.L2(0.05),
        beta_regularizer=k.regularizers.L1(0.02),
        gamma_constraint=k.constraints.MaxNorm(2.5),
        beta_constraint=k.constraints.NonNeg(),
        name="bn",
    )(h)
    out = k.layers.Dense(3, activation="softmax", kernel_constraint=k.constraints.UnitNorm(), name="d2")(h)
    return k.Model(inp, out)


def _oracle_bn_steps(weights, steps, lr):
    """SGD on the BatchNormalization graph above, in float64 NumPy (reference.py), one batch of 16 a step."""
    W1, b1, gamma, beta, mm, mv, W2, b2 = [w.astype(np.float64) for w in weights]
    losses = []
    for s in range(steps):
        x, y = X[16 * s : 16 * (s + 1)].astype(np.float64), Y[16 * s : 16 * (s + 1)]
        z1, a1 = ref.dense_forward(x, W1, b1, "relu")
        mean, var = ref.batch_moments(a1)
        h = ref.normalize(a1, mean, var, gamma, beta, 1e-3)
        z2, _ = ref.dense_forward(h, W2, b2, None)
        loss, dz2 = ref.softmax_cross_entropy_grad(z2, y)
        pen = [ref.l1l2_penalty(W1, 0.01, 0.02), ref.l1l2_penalty(gamma, 0.0, 0.05), ref.l1l2_penalty(beta, 0.02, 0.0)]
        losses.append(loss + sum(p for p, _ in pen))
        dW2, db2, dh = ref.dense_backward(h, W2, z2, dz2, None)
        dh = dh if dh is not None else dz2 @ W2.T
        da1, dgamma, dbeta = ref.batchnorm_backward(a1, gamma, 1e-3, dh)
        dW1, db1, _ = ref.dense_backward(x, W1, z1, da1, "relu", need_dx=False)
        mm, mv = ref.moving_update(mm, mean, 0.99), ref.moving_update(mv, var, 0.99)
        W1 = W1 - lr * (dW1 + pen[0][1])
        b1 = ref.non_neg(b1 - lr * db1)
        gamma = ref.max_norm(gamma - lr * (dgamma + pen[1][1]), 2.5)
        beta = ref.non_neg(beta - lr * (dbeta + pen[2][1]))
        W2 = ref.unit_norm(W2 - lr * dW2)
        b2 = b2 - lr * db2
    return [W1, b1, gamma, beta, mm, mv, W2, b2], losses


def test_batchnorm_rules_match_the_numpy_oracle_and_keras(session):
    real = _real_keras()

    model = _bn_model(keras)
    model.get_layer("bn").gamma[:] = RNG.uniform(0.5, 1.5, 8)
    model.get_layer("bn").beta[:] = RNG.uniform(-0.2, 0.2, 8)
    start = [w.copy() for w in model.get_weights()]
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    losses = [model.train_on_batch(X[16 * s : 16 * (s + 1)], Y[16 * s : 16 * (s + 1)]) for s in range(4)]
    want, want_losses = _oracle_bn_steps(start, 4, 0.1)
    for a, b in zip(model.get_weights(), want):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    # train_on_batch's loss is that batch's alone (Keras 3 resets the metrics at each call)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-4)

    if os.environ.get("KERAS_BACKEND", "jax") != "jax":
        return
    km = _bn_model(real)
    km.set_weights(start)
    km.compile(real.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    k_losses = [float(km.train_on_batch(X[16 * s : 16 * (s + 1)], Y[16 * s : 16 * (s + 1)])) for s in range(4)]
    # Keras computes in float32 with its own sum orders: the units that ReLU nearly kills (their batch
    # statistics from a few rows) drift by a few 1e-3 in 4 steps; the float64 oracle above is the tight check
    for a, b in zip(model.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-2, atol=3e-3)
    np.testing.assert_allclose(losses, k_losses, rtol=5e-4)
    # evaluate adds the penalties of the trainable weights, as Keras
    np.testing.assert_allclose(model.evaluate(X, Y, verbose=0), float(km.evaluate(X, Y, verbose=0)), rtol=1e-4)


def test_layernorm_rules_match_keras(session):
    real = _real_keras()

    def build(k):
        inp = k.Input((6,))
        h = k.layers.LayerNormalization(
            gamma_regularizer=k.regularizers.L2(0.1), beta_constraint=k.constraints.MaxNorm(0.05), name="ln"
        )(inp)
        return k.Model(inp, k.layers.Dense(3, name="d")(h))

    model, km = build(keras), build(real)
    km.set_weights(model.get_weights())
    for m, k in ((model, keras), (km, real)):
        m.compile(k.optimizers.Adam(0.05, global_clipnorm=0.5), "mse")
    yd = np.eye(3, dtype=np.float32)[Y]
    h1 = model.fit(X, yd, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]
    h2 = km.fit(X, yd, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]
    for a, b in zip(model.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h1, h2, rtol=1e-4)


def test_one_and_two_threads_give_the_same_bits(session):
    def run(threads):
        cdnn.set_num_threads(threads)
        keras.utils.set_random_seed(3)
        inp = keras.Input((64,))
        h = keras.layers.Dense(128, activation="relu", kernel_regularizer="l1_l2", bias_constraint="non_neg")(inp)
        h = keras.layers.BatchNormalization(gamma_regularizer="l2", beta_constraint="max_norm")(h)
        out = keras.layers.Dense(10, activation="softmax", kernel_constraint="unit_norm")(h)
        m = keras.Model(inp, out)
        m.compile(keras.optimizers.Adam(0.01, global_clipnorm=1.0, use_ema=True), "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).normal(size=(256, 64)).astype(np.float32)
        y = np.random.default_rng(1).integers(0, 10, 256)
        h = m.fit(x, y, batch_size=128, epochs=2, shuffle=False, verbose=0).history["loss"]
        return m.get_weights(), h

    (w1, l1), (w2, l2) = run(1), run(2)
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)


def test_a_layer_frozen_before_the_model_is_made_stays_frozen(session):
    # keras.Model(inputs, outputs) used to set every layer trainable again
    inp = keras.Input((6,))
    d1 = keras.layers.Dense(8, activation="relu", trainable=False, kernel_regularizer="l2")
    d2 = keras.layers.Dense(3, activation="softmax")
    d3 = keras.layers.Dense(3)
    d3.trainable = False
    model = keras.Model(inp, d3(d2(d1(inp))))
    assert not d1.trainable and not d3.trainable and model.trainable
    before = [w.copy() for w in d1.weights + d3.weights]
    model.compile(keras.optimizers.Adam(0.01, clipnorm=1.0), "mse")
    hist = model.fit(X, np.eye(3, dtype=np.float32)[Y], batch_size=16, epochs=2, verbose=0).history["loss"]
    for a, b in zip(before, d1.weights + d3.weights):
        np.testing.assert_array_equal(a, b)
    # a frozen layer's penalty is not part of the loss (Keras counts the trainable weights' only)
    assert d1.losses == [] and model._penalty() == 0.0
    assert np.isfinite(hist).all()


def test_model_trainable_argument_sets_the_models_flag_only(session):
    real = _real_keras()

    for k in (keras, real):
        inp = k.Input((3,))
        d = k.layers.Dense(2, trainable=False)
        k.Model(inp, d(inp), trainable=True)
        assert d.trainable is False
        e = k.layers.Dense(2)
        m = k.Model(inp, e(inp), trainable=False)
        assert e.trainable is True and m.trainable is False and m.trainable_weights == []
        m.trainable = True
        assert m.trainable_weights != []


def test_frozen_model_trains_nothing(session):
    inp = keras.Input((6,))
    d = keras.layers.Dense(3)
    model = keras.Model(inp, d(inp), trainable=False)  # the layer's own flag stays True, as Keras
    before = d.kernel.copy()
    model.compile("sgd", "mse")
    model.fit(X, np.zeros((64, 3), np.float32), verbose=0)
    np.testing.assert_array_equal(before, d.kernel)


@pytest.mark.parametrize("opt", ["amsgrad", "adafactor", "ema", "accumulation", "global_clipnorm"])
def test_keras_file_round_trip_keeps_the_optimizer_state(session, tmp_path, opt):
    def build():
        keras.utils.set_random_seed(5)
        inp = keras.Input((6,))
        h = keras.layers.Dense(8, activation="relu", kernel_regularizer="l2")(inp)
        h = keras.layers.LayerNormalization(gamma_constraint="non_neg")(h)
        m = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
        m.compile(OPTIMIZERS[opt](), "sparse_categorical_crossentropy")
        return m

    a = build()
    a.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    a.save(tmp_path / "m.keras")
    b = keras.saving.load_model(tmp_path / "m.keras")
    a.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    b.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


def test_norm_layer_rules_serialize_and_refuse_what_c_cannot_apply():
    bn = keras.layers.BatchNormalization(gamma_regularizer="l2", beta_constraint="non_neg")
    cfg = bn.get_config()
    assert cfg["gamma_regularizer"]["class_name"] == "L2" and cfg["beta_constraint"]["class_name"] == "NonNeg"
    again = keras.layers.BatchNormalization.from_config(cfg)
    assert again.gamma_regularizer.l2 == pytest.approx(0.01)
    with pytest.raises(ValueError, match="OrthogonalRegularizer"):
        keras.layers.LayerNormalization(gamma_regularizer=keras.regularizers.OrthogonalRegularizer())


def test_lower_case_regularizer_aliases_are_keras_classes():
    real = _real_keras()

    for name in ("l1", "l2", "l1_l2", "orthogonal_regularizer"):
        assert hasattr(real.regularizers, name)
        ours = getattr(keras.regularizers, name)
        assert ours.__name__ == getattr(real.regularizers, name).__name__
    r = keras.regularizers.l1_l2(l1=0.1, l2=0.2)
    assert keras.regularizers.serialize(r) == real.regularizers.serialize(real.regularizers.l1_l2(l1=0.1, l2=0.2))
    assert isinstance(keras.regularizers.get("l1_l2"), keras.regularizers.L1L2)
    back = keras.regularizers.deserialize(keras.regularizers.serialize(keras.regularizers.l2(0.3)))
    assert isinstance(back, keras.regularizers.L2) and back.l2 == pytest.approx(0.3)


def test_norm_layer_rules_in_keras_files_both_ways(session, tmp_path):
    real = _real_keras()

    def build(k):
        inp = k.Input((6,))
        h = k.layers.BatchNormalization(gamma_regularizer=k.regularizers.L2(0.03), beta_constraint="non_neg")(inp)
        h = k.layers.LayerNormalization(beta_regularizer=k.regularizers.L1(0.02), gamma_constraint="max_norm")(h)
        return k.Model(inp, k.layers.Dense(3)(h))

    build(keras).save(tmp_path / "ours.keras")
    theirs = real.saving.load_model(tmp_path / "ours.keras")
    bn, ln = theirs.layers[1], theirs.layers[2]
    assert bn.gamma_regularizer.l2 == pytest.approx(0.03) and type(bn.beta_constraint).__name__ == "NonNeg"
    assert ln.beta_regularizer.l1 == pytest.approx(0.02) and type(ln.gamma_constraint).__name__ == "MaxNorm"
    build(real).save(tmp_path / "theirs.keras")
    ours = keras.saving.load_model(tmp_path / "theirs.keras")
    bn, ln = ours.layers[1], ours.layers[2]
    assert bn.gamma_regularizer.l2 == pytest.approx(0.03) and isinstance(bn.beta_constraint, keras.constraints.NonNeg)
    assert ln.beta_regularizer.l1 == pytest.approx(0.02) and isinstance(ln.gamma_constraint, keras.constraints.MaxNorm)


def test_frozen_layer_penalty_is_not_in_the_loss_as_keras(session):
    real = _real_keras()

    def build(k):
        inp = k.Input((6,))
        d1 = k.layers.Dense(8, activation="tanh", kernel_regularizer=k.regularizers.L2(0.5), name="d1")
        d1.trainable = False
        out = k.layers.Dense(3, kernel_regularizer=k.regularizers.L1(0.01), name="d2")(d1(inp))
        return k.Model(inp, out)

    model, km = build(keras), build(real)
    km.set_weights(model.get_weights())
    yd = np.eye(3, dtype=np.float32)[Y]
    for m, k in ((model, keras), (km, real)):
        m.compile(k.optimizers.SGD(0.05), "mse")
    h1 = model.fit(X, yd, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]
    h2 = km.fit(X, yd, batch_size=16, epochs=2, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(h1, h2, rtol=1e-5)
    np.testing.assert_allclose(model.evaluate(X, yd, verbose=0), km.evaluate(X, yd, verbose=0), rtol=1e-5)
    for a, b in zip(model.get_weights(), km.get_weights()):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-5, atol=1e-6)


def test_sequential_chain_evaluate_leaves_out_a_frozen_layers_penalty(session):
    # the chain's evaluate used to add every Dense layer's penalty, frozen or not
    real = _real_keras()

    def build(k):
        d1 = k.layers.Dense(8, activation="tanh", kernel_regularizer=k.regularizers.L2(0.5))
        d1.trainable = False
        return k.Sequential([k.Input((6,)), d1, k.layers.Dense(3, bias_regularizer=k.regularizers.L2(0.1))])

    model, km = build(keras), build(real)
    model.layers[1].bias[:] = 0.5
    km.set_weights(model.get_weights())
    yd = np.eye(3, dtype=np.float32)[Y]
    model.compile("sgd", "mse")
    km.compile("sgd", "mse")
    assert not model._route_to_graph(X)
    np.testing.assert_allclose(model.evaluate(X, yd, verbose=0), km.evaluate(X, yd, verbose=0), rtol=1e-5)


def test_a_frozen_layer_stays_frozen_through_a_keras_file(session, tmp_path):
    # loading a functional .keras file used to set every layer trainable again
    real = _real_keras()

    inp = keras.Input((6,))
    d1 = keras.layers.Dense(4, trainable=False, name="frozen")
    model = keras.Model(inp, keras.layers.Dense(3, name="free")(d1(inp)))
    model.save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras")
    assert [l.trainable for l in back.layers[1:]] == [False, True]
    theirs = real.saving.load_model(tmp_path / "m.keras")
    assert [l.trainable for l in theirs.layers[1:]] == [False, True]
    inner = keras.Model(inp, d1(inp), trainable=False)
    inner.save(tmp_path / "inner.keras")
    assert keras.saving.load_model(tmp_path / "inner.keras").trainable is False
