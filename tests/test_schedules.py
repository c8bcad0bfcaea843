"""Learning-rate schedules against Keras 3's formulas (keras/src/optimizers/schedules/learning_rate_schedule.py),
written independently in tests/reference.py, and Keras' documented values."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

import cdnn as keras

S = keras.optimizers.schedules
STEPS = [0, 1, 2, 3, 7, 10, 11, 99, 100, 101, 999, 5000]

CASES = {
    "exponential": (lambda: S.ExponentialDecay(0.1, 10, 0.5), lambda s: ref.exponential_decay(s, 0.1, 10, 0.5)),
    "exponential_staircase": (
        lambda: S.ExponentialDecay(0.1, 7, 0.9, staircase=True),
        lambda s: ref.exponential_decay(s, 0.1, 7, 0.9, staircase=True),
    ),
    "piecewise": (
        lambda: S.PiecewiseConstantDecay([10, 100], [1.0, 0.5, 0.1]),
        lambda s: ref.piecewise_constant_decay(s, [10, 100], [1.0, 0.5, 0.1]),
    ),
    "polynomial": (
        lambda: S.PolynomialDecay(0.1, 100, 0.01, power=0.5),
        lambda s: ref.polynomial_decay(s, 0.1, 100, 0.01, power=0.5),
    ),
    "polynomial_cycle": (
        lambda: S.PolynomialDecay(0.1, 100, 0.01, power=2.0, cycle=True),
        lambda s: ref.polynomial_decay(s, 0.1, 100, 0.01, power=2.0, cycle=True),
    ),
    "inverse_time": (lambda: S.InverseTimeDecay(0.1, 10, 0.5), lambda s: ref.inverse_time_decay(s, 0.1, 10, 0.5)),
    "inverse_time_staircase": (
        lambda: S.InverseTimeDecay(0.1, 10, 0.5, staircase=True),
        lambda s: ref.inverse_time_decay(s, 0.1, 10, 0.5, staircase=True),
    ),
    "cosine": (lambda: S.CosineDecay(0.1, 100, alpha=0.1), lambda s: ref.cosine_decay(s, 0.1, 100, alpha=0.1)),
    "cosine_warmup": (
        lambda: S.CosineDecay(0.0, 100, warmup_target=0.1, warmup_steps=10),
        lambda s: ref.cosine_decay(s, 0.0, 100, warmup_target=0.1, warmup_steps=10),
    ),
    "cosine_restarts": (lambda: S.CosineDecayRestarts(0.1, 10), lambda s: ref.cosine_decay_restarts(s, 0.1, 10)),
    "cosine_restarts_t1": (
        lambda: S.CosineDecayRestarts(0.1, 10, t_mul=1.0, m_mul=0.5, alpha=0.1),
        lambda s: ref.cosine_decay_restarts(s, 0.1, 10, t_mul=1.0, m_mul=0.5, alpha=0.1),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_match_the_formulas(name):
    make, formula = CASES[name]
    sched = make()
    expected = np.array([formula(s) for s in STEPS])
    got_one = np.array([float(sched(s)) for s in STEPS])
    # float32, as Keras computes them (the schedule's dtype is its initial rate's)
    np.testing.assert_allclose(got_one, expected, rtol=2e-6, atol=1e-9)
    run = sched._rates(95, 10)
    np.testing.assert_allclose(run, [formula(s) for s in range(95, 105)], rtol=2e-6, atol=1e-9)
    assert run.dtype == np.float32


def test_keras_documented_values():
    # the docstrings' examples
    pw = S.PiecewiseConstantDecay([100000, 110000], [1.0, 0.5, 0.1])
    assert [float(pw(s)) for s in (0, 100000, 100001, 110000, 110001)] == [1.0, 1.0, 0.5, 0.5, pytest.approx(0.1)]
    assert float(S.ExponentialDecay(0.1, 100000, 0.96, staircase=True)(250000)) == pytest.approx(0.1 * 0.96**2)
    poly = S.PolynomialDecay(0.1, 10000, 0.01, power=0.5)
    assert float(poly(0)) == pytest.approx(0.1) and float(poly(20000)) == pytest.approx(0.01)
    cos = S.CosineDecay(0.0, 1000, warmup_target=0.1, warmup_steps=1000)
    assert float(cos(0)) == 0.0 and float(cos(500)) == pytest.approx(0.05) and float(cos(1000)) == pytest.approx(0.1)
    assert float(cos(2000)) == pytest.approx(0.0, abs=1e-9)
    # restarts: t_mul=2 restarts at 10, 30, 70
    r = S.CosineDecayRestarts(1.0, 10)
    assert [float(r(s)) for s in (0, 10, 30, 70)] == [pytest.approx(1.0)] * 4
    assert float(r(20)) == pytest.approx(0.5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_round_trips(name):
    sched = CASES[name][0]()
    again = type(sched).from_config(sched.get_config())
    assert again.get_config() == sched.get_config()
    back = S.deserialize(S.serialize(sched))
    assert type(back) is type(sched) and back.get_config() == sched.get_config()
    assert S.serialize(sched)["class_name"] == type(sched).__name__


def test_an_optimizer_with_a_schedule_round_trips_through_its_config():
    opt = keras.optimizers.Adam(S.CosineDecay(0.01, 50, warmup_target=0.1, warmup_steps=5))
    again = keras.optimizers.Adam.from_config(opt.get_config())
    assert again.get_config() == opt.get_config()
    opt.iterations = 7
    again.iterations = 7
    assert (
        float(again.learning_rate)
        == float(opt.learning_rate)
        == pytest.approx(ref.cosine_decay(7, 0.01, 50, warmup_target=0.1, warmup_steps=5), rel=1e-6)
    )


def test_a_saved_model_keeps_its_schedule(tmp_path):
    x = np.random.default_rng(0).random((32, 5)).astype(np.float32)
    y = np.arange(32) % 3
    model = keras.Sequential([keras.layers.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.SGD(S.ExponentialDecay(0.1, 2, 0.5)), loss="sparse_categorical_crossentropy"
    )
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "m.npz")
    loaded = keras.models.load_model(tmp_path / "m.npz")
    assert isinstance(loaded.optimizer._learning_rate, S.ExponentialDecay)
    assert (
        float(loaded.optimizer.learning_rate) == float(model.optimizer.learning_rate) == pytest.approx(0.1 * 0.5**0.5)
    )


class Custom(S.LearningRateSchedule):
    def __init__(self, rate):
        self.rate = rate

    def __call__(self, step):
        return self.rate / (step + 1)

    def get_config(self):
        return {"rate": self.rate}


def test_a_subclass_is_evaluated_per_step_and_deserialized_with_custom_objects():
    sched = Custom(0.5)
    np.testing.assert_allclose(sched._rates(3, 3), [0.5 / 4, 0.5 / 5, 0.5 / 6], rtol=1e-7)
    cfg = S.serialize(sched)
    with pytest.raises(ValueError, match="Custom"):
        S.deserialize(cfg)
    assert S.deserialize(cfg, custom_objects={"Custom": Custom}).rate == 0.5


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: S.ExponentialDecay(0.1, -5, 0.5), "decay_steps"),
        (lambda: S.PolynomialDecay(0.1, 0), "decay_steps"),
        (lambda: S.InverseTimeDecay(0.1, 0, 0.5), "decay_steps"),
        (lambda: S.CosineDecay(0.1, 0), "decay_steps"),
        (lambda: S.CosineDecayRestarts(0.1, 0), "first_decay_steps"),
        (lambda: S.PiecewiseConstantDecay([2, 1], [0.1, 0.2, 0.3]), "boundaries"),
        (lambda: S.ExponentialDecay(float("nan"), 5, 0.5), "initial_learning_rate"),
    ],
)
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_negative_or_nan_rates_are_refused_naming_the_step():
    neg = S.PolynomialDecay(0.1, 10, end_learning_rate=-0.5)
    with pytest.raises(ValueError, match=r"PolynomialDecay returned -.* at step \d+"):
        neg._rates(0, 20)

    class Bad(S.LearningRateSchedule):
        def __call__(self, step):
            return "fast"

    with pytest.raises(TypeError, match="Bad returned 'fast' at step 0"):
        Bad()._rates(0, 1)


@pytest.mark.parametrize("lr", [0.01, S.ExponentialDecay(0.01, 4, 0.5)], ids=["constant", "schedule"])
def test_backup_and_restore_resumes_a_scheduled_optimizer(tmp_path, lr):
    # the backup must not assign a float to an optimizer whose rate is a schedule (Keras' TypeError), and
    # the restored slots must be the ones the C core trains
    x = np.random.default_rng(0).random((64, 5)).astype(np.float32)
    y = np.arange(64) % 3

    def make():
        keras.utils.set_random_seed(1)
        m = keras.Sequential([keras.layers.Input((5,)), keras.layers.Dense(3, activation="softmax")])
        m.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy")
        return m

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    model = make()
    with pytest.raises(KeyboardInterrupt):
        model.fit(
            x,
            y,
            epochs=4,
            batch_size=16,
            shuffle=False,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "b")), Stop()],
        )
    resumed = make()
    resumed.fit(
        x,
        y,
        epochs=4,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "b"))],
    )
    assert int(resumed.optimizer.iterations) == 16
    straight = make()
    straight.fit(x, y, epochs=4, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(
        resumed.get_weights() + resumed.optimizer.variables, straight.get_weights() + straight.optimizer.variables
    ):
        np.testing.assert_array_equal(a, b)
