"""``BackupAndRestore`` (Keras 3's ``keras/src/callbacks/backup_and_restore.py``): an interrupted
``fit`` resumes, on the next call, from the end of the last epoch it finished."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np

from cdnn.callbacks.callback import Callback

__all__ = ["BackupAndRestore"]


class BackupAndRestore(Callback):
    """Save the weights, the optimizer's state and the epoch reached in ``backup_dir`` after
    every epoch (or every ``save_freq`` batches); at the start of ``fit``, restore them and start from
    that epoch. A ``fit`` that ends normally deletes the backup (``delete_checkpoint``).

    Parameters
    ----------
    backup_dir : str or path
        Where the backup lives (made if missing).
    save_freq : "epoch" or int
        Back up at the end of each epoch, or every this many batches (which makes ``fit`` stop
        after every batch, as any batch callback).
    double_checkpoint : bool
        Keep the previous backup too, used if the latest cannot be read.
    delete_checkpoint : bool
        Delete the backup when training ends normally.
    """

    def __init__(
        self, backup_dir, save_freq="epoch", double_checkpoint: bool = False, delete_checkpoint: bool = True
    ) -> None:
        super().__init__()
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(
                f"Invalid value for argument `save_freq`. Received: save_freq={save_freq!r}. Expected "
                f"either 'epoch' or a positive integer value."
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = save_freq
        self.double_checkpoint = double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._model_path = os.path.join(self.backup_dir, "latest.npz")
        self._metadata_path = os.path.join(self.backup_dir, "training_metadata.json")
        self._prev_model_path = self._model_path + ".bkp"
        self._prev_metadata_path = self._metadata_path + ".bkp"
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = 0
        self._current_epoch = 0

    @property
    def _needs_batches(self) -> bool:
        """Only a backup every N batches needs the batch hook (fit then stops after every batch)."""
        return self.save_freq != "epoch"

    def on_train_begin(self, logs=None) -> None:
        try:
            self._load()
        except (OSError, ValueError):
            if not os.path.exists(self._prev_model_path):
                raise
            shutil.copyfile(self._prev_model_path, self._model_path)
            if os.path.exists(self._prev_metadata_path):
                shutil.copyfile(self._prev_metadata_path, self._metadata_path)
            elif os.path.exists(self._metadata_path):
                os.remove(self._metadata_path)
            self._load()

    def _load(self) -> None:
        if not self.model.built:
            raise ValueError(
                f"To use the BackupAndRestore callback, your model must be built before you call "
                f"`fit()`. Model {self.model.name!r} is unbuilt: give it an Input or an input_shape."
            )
        if os.path.exists(self._model_path):
            with np.load(self._model_path, allow_pickle=False) as saved:
                weights = [saved[f"weight_{i}"] for i in range(int(saved["n_weights"]))]
                slots = [saved[f"slot_{i}"] for i in range(int(saved["n_slots"]))]
                iterations, lr = int(saved["iterations"]), float(saved["learning_rate"])
            self.model.set_weights(weights)
            optimizer = self.model.optimizer
            # in place: fit's C network already holds the slot arrays (a rebuild would leave it training
            # fresh ones while the restored state sat unused in the new); the slots are the trainable
            # weights' (a frozen layer's or BatchNormalization's moving statistics have none)
            if not optimizer._slots_fit(self.model.trainable_weights):
                optimizer.build(self.model.trainable_weights)
            own = optimizer.variables
            if len(own) != len(slots) or any(a.shape != b.shape for a, b in zip(own, slots)):
                raise ValueError(
                    f"{self._model_path}: the backed-up optimizer state does not match "
                    f"{type(optimizer).__name__} for this model"
                )
            for a, b in zip(own, slots):
                a[...] = b
            optimizer.iterations = iterations
            if not math.isnan(lr):  # a changed learning rate (ReduceLROnPlateau, a scheduler) is part of the state
                optimizer.learning_rate = lr
        if os.path.exists(self._metadata_path):
            with open(self._metadata_path, encoding="utf-8") as f:
                self.model._initial_epoch = int(json.load(f)["epoch"])

    def on_epoch_end(self, epoch, logs=None) -> None:
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        if self.save_freq == "epoch":
            self._save()

    def on_train_batch_end(self, batch, logs=None) -> None:
        if batch <= self._last_batch_seen:  # a new epoch
            add = batch + 1
        else:
            add = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += add
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            self._save()

    def _save(self) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._model_path):
            shutil.copyfile(self._model_path, self._prev_model_path)
        if self.double_checkpoint and os.path.exists(self._metadata_path):
            shutil.copyfile(self._metadata_path, self._prev_metadata_path)
        optimizer = self.model.optimizer
        if not isinstance(optimizer._learning_rate, (int, float)):
            lr = math.nan  # a schedule (or a function): recomputed from the iterations, not assignable
        else:
            lr = float(optimizer.learning_rate)
        arrays = {f"weight_{i}": w for i, w in enumerate(self.model.get_weights())}
        arrays.update({f"slot_{i}": v for i, v in enumerate(optimizer.variables)})
        tmp = self._model_path + ".tmp.npz"
        np.savez(
            tmp,
            n_weights=len(self.model.weights),
            n_slots=len(optimizer.variables),
            iterations=int(optimizer.iterations),
            learning_rate=lr,
            **arrays,
        )
        os.replace(tmp, self._model_path)
        tmp = self._metadata_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"epoch": self._current_epoch, "batch": self._last_batch_seen}, f)
        os.replace(tmp, self._metadata_path)

    def on_train_end(self, logs=None) -> None:
        if self.delete_checkpoint and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)
