"""``CSVLogger`` (Keras 3's ``keras/src/callbacks/csv_logger.py``): one row of logs per epoch."""

from __future__ import annotations

import collections
import csv
import os

import numpy as np

from cdnn.callbacks.callback import Callback

__all__ = ["CSVLogger"]


class CSVLogger(Callback):
    """Write each epoch's logs to a CSV file: a header ``epoch,<sorted log names>`` then one row per epoch.

    Parameters
    ----------
    filename : str or path
        The file (its folder must exist, as in Keras).
    separator : str
        The column separator (one character).
    append : bool
        Add to an existing file (writing the header only if the file is empty), instead of overwriting it.
    """

    def __init__(self, filename, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.writer = None
        self.keys = None
        self.append_header = True
        self.csv_file = None

    def on_train_begin(self, logs=None) -> None:
        if self.append:
            if os.path.exists(self.filename):
                with open(self.filename, encoding="utf-8") as f:
                    self.append_header = not bool(len(f.readline()))
            mode = "a"
        else:
            mode = "w"
        if self.csv_file and not self.csv_file.closed:
            self.csv_file.close()
        self.csv_file = open(self.filename, mode, newline="", encoding="utf-8")
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None) -> None:
        logs = logs or {}

        def handle_value(v):
            if isinstance(v, str):
                return v
            if isinstance(v, (np.ndarray, list, tuple)) and np.ndim(v) > 0:
                return f'"[{", ".join(map(str, np.asarray(v).ravel()))}]"'
            return v

        if self.keys is None:
            self.keys = sorted(logs.keys())
            # as Keras: an epoch without validation still reserves the val_ columns
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys.extend([f"val_{k}" for k in self.keys])
        if not self.writer:

            class CustomDialect(csv.excel):
                delimiter = self.sep

            self.writer = csv.DictWriter(self.csv_file, fieldnames=["epoch"] + (self.keys or []), dialect=CustomDialect)
            if self.append_header:
                self.writer.writeheader()
        row = collections.OrderedDict({"epoch": epoch})
        row.update((key, handle_value(logs.get(key, "NA"))) for key in self.keys)
        self.writer.writerow(row)
        self.csv_file.flush()

    def on_train_end(self, logs=None) -> None:
        if self.csv_file and not self.csv_file.closed:
            self.csv_file.close()
        self.writer = None
