"""Not a test module: `mypy` (CI, CONTRIBUTING.md) checks that this user code type-checks against cdnn's hints.

It uses the public API the way the README and Keras users do; a hint that rejects ordinary use
(or a public name without one) shows up here as a mypy error.
"""

from __future__ import annotations

import numpy as np

import cdnn
import cdnn as keras
from cdnn import Sequential
from cdnn.callbacks import EarlyStopping, LearningRateScheduler, ModelCheckpoint
from cdnn.layers import Dense, Dropout, Flatten, Input
from cdnn.optimizers import SGD, Adam


def train(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    model = Sequential(
        [
            Input(shape=(28, 28)),
            Flatten(),
            Dense(100, activation="relu"),
            Dropout(0.2),
            Dense(10, activation="softmax"),
        ],
        name="fashion",
    )
    model.summary()
    model.compile(optimizer=Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [
        EarlyStopping(patience=2),
        ModelCheckpoint("best.keras", save_best_only=True),
        LearningRateScheduler(lambda epoch: 1e-3 * 0.9**epoch),
    ]
    history = model.fit(
        x_train / 255.0, y_train, epochs=5, batch_size=128, validation_split=0.2, callbacks=callbacks, verbose=0
    )
    print(history.history["loss"])
    loss, accuracy = model.evaluate(x_test / 255.0, y_test, verbose=0)
    probabilities: np.ndarray = model.predict(x_test[:5] / 255.0, verbose=0)
    print(probabilities.argmax(axis=1))
    model.save("fashion.keras")
    again = keras.models.load_model("fashion.keras")
    again.compile(optimizer=SGD(learning_rate=0.01, momentum=0.9), loss="sparse_categorical_crossentropy")
    return float(accuracy)


def main() -> None:
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    cdnn.set_num_threads(2)
    threads: int = cdnn.get_num_threads()
    info = cdnn.build_info()
    print(threads, info["openmp"], cdnn.__version__)
    cdnn.show_config()
    keras.utils.set_random_seed(42)
    print(train(x_train, y_train, x_test, y_test))
