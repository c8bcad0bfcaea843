"""``TensorBoard`` (Keras 3's ``keras/src/callbacks/tensorboard.py``): event files TensorBoard reads.

Written with the ``tensorboard`` package's own event writer and summary
protobufs (``pip install tensorboard``): scalars as TensorFlow 2 writes them
(``epoch_loss`` ... in ``<log_dir>/train`` and ``<log_dir>/validation``,
``batch_loss`` ... every ``update_freq`` batches, ``evaluation_loss_vs_iterations``),
and weight histograms every ``histogram_freq`` epochs.
"""

from __future__ import annotations

import os
import time
from typing import Union

import numpy as np

from cdnn.callbacks.callback import Callback

__all__ = ["TensorBoard"]


def _tensorboard():
    """The tensorboard modules used, or an ImportError that says how to get them."""
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.histogram import summary_v2 as histogram_summary
        from tensorboard.plugins.scalar import summary_v2 as scalar_summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        raise ImportError(
            f"The TensorBoard callback needs the `tensorboard` package to write its event files: "
            f"pip install tensorboard ({exc})"
        ) from None
    return event_pb2, scalar_summary, histogram_summary, EventFileWriter


class _Writer:
    """Events of one run folder (train or validation) through tensorboard's EventFileWriter."""

    def __init__(self, logdir: str) -> None:
        self._event_pb2, self._scalar, self._histogram, writer_cls = _tensorboard()
        os.makedirs(logdir, exist_ok=True)
        self._writer = writer_cls(logdir)

    def _add(self, summary, step: int) -> None:
        self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalar(self, tag: str, value, step: int) -> None:
        self._add(self._scalar.scalar_pb(tag, float(np.mean(value))), step)

    def histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        self._add(self._histogram.histogram_pb(tag, np.asarray(values, np.float64).ravel()), step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TensorBoard(Callback):
    """Log scalars (and weight histograms) for TensorBoard: ``tensorboard --logdir logs``.

    Parameters
    ----------
    log_dir : str or path
        The folder of the event files (``train/`` and ``validation/`` inside).
    histogram_freq : int
        Every this many epochs, a histogram of each weight array (0: none).
    update_freq : "epoch", "batch" or int
        Also log the running batch logs (``batch_loss``...) every this many batches
        ("batch": every batch). Batch logging makes ``fit`` stop after every batch.
    write_steps_per_second : bool
        Also log the training steps per second (``epoch_steps_per_second``).
    write_graph, write_images, profile_batch, embeddings_freq, embeddings_metadata
        Keras' options for graphs, weight images, profiling and embeddings: cdnn has no
        graph or profiler to write, so only their defaults are accepted.
    """

    def __init__(
        self,
        log_dir="logs",
        histogram_freq: int = 0,
        write_graph: bool = True,
        write_images: bool = False,
        write_steps_per_second: bool = False,
        update_freq: Union[str, int] = "epoch",
        profile_batch=0,
        embeddings_freq: int = 0,
        embeddings_metadata=None,
    ) -> None:
        super().__init__()
        _tensorboard()  # fail now, not at the end of the first epoch
        for name, value, default in (
            ("write_images", write_images, False),
            ("profile_batch", profile_batch, 0),
            ("embeddings_freq", embeddings_freq, 0),
            ("embeddings_metadata", embeddings_metadata, None),
        ):
            if value != default:
                raise ValueError(
                    f"Invalid value for argument `{name}` of TensorBoard: cdnn supports only "
                    f"{name}={default!r}, received {name}={value!r}"
                )
        if update_freq not in ("epoch", "batch") and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                f"Invalid value for argument `update_freq`: expected 'epoch', 'batch' or a positive "
                f"integer, received update_freq={update_freq!r}"
            )
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(
                f"Invalid value for argument `histogram_freq`: expected a non-negative integer, "
                f"received histogram_freq={histogram_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.write_graph = write_graph
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._train_dir = os.path.join(self.log_dir, "train")
        self._val_dir = os.path.join(self.log_dir, "validation")
        self._writers: dict[str, _Writer] = {}
        self._global_train_batch = 0
        self._epoch_start_time = 0.0
        self._previous_epoch_iterations = 0

    @property
    def _needs_batches(self) -> bool:
        return self.update_freq != "epoch"

    def _writer(self, which: str) -> _Writer:
        if which not in self._writers:  # made on first use, as Keras: no empty event files
            self._writers[which] = _Writer(self._train_dir if which == "train" else self._val_dir)
        return self._writers[which]

    def on_train_begin(self, logs=None) -> None:
        self._global_train_batch = 0

    def on_train_end(self, logs=None) -> None:
        for w in self._writers.values():
            w.close()
        self._writers = {}

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch_start_time = time.time()
        self._previous_epoch_iterations = int(self.model.optimizer.iterations)

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._global_train_batch += 1
        if self.update_freq == "epoch" or self._global_train_batch % self.update_freq:
            return
        if isinstance(logs, dict):
            for name, value in logs.items():
                self._writer("train").scalar(f"batch_{name}", value, self._global_train_batch)

    def on_test_end(self, logs=None) -> None:
        if self.model is not None and self.model.optimizer is not None and logs:
            for name, value in logs.items():
                self._writer("val").scalar(
                    f"evaluation_{name}_vs_iterations", value, int(self.model.optimizer.iterations)
                )

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}
        train_logs = {k: v for k, v in logs.items() if not k.startswith("val_")}
        val_logs = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
        train_logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        if self.write_steps_per_second:
            elapsed = max(time.time() - self._epoch_start_time, 1e-9)
            train_logs["steps_per_second"] = (
                int(self.model.optimizer.iterations) - self._previous_epoch_iterations
            ) / elapsed
        for name, value in train_logs.items():
            self._writer("train").scalar(f"epoch_{name}", value, epoch)
        for name, value in val_logs.items():
            self._writer("val").scalar(f"epoch_{name}", value, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)
        for w in self._writers.values():
            w.flush()

    def _log_weights(self, epoch: int) -> None:
        """One histogram per weight array, tagged as Keras 3 (``<layer>/<kernel|bias>/histogram``)."""
        for layer in self.model.layers:
            names = ("kernel", "bias")
            for name, weight in zip(names, getattr(layer, "weights", [])):
                self._writer("train").histogram(f"{layer.name}/{name}/histogram", weight, epoch)
