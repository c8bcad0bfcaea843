"""Callbacks with Keras 3's hooks and semantics, one module per callback (as ``keras/src/callbacks/``).

Epoch hooks run between epochs. Batch hooks are honoured only for callbacks
that define them: such a callback makes ``fit`` return to Python after every
batch (slower); without one, runs of batches stay in C.
"""

from __future__ import annotations

from cdnn.callbacks.backup_and_restore import BackupAndRestore
from cdnn.callbacks.callback import Callback
from cdnn.callbacks.csv_logger import CSVLogger
from cdnn.callbacks.early_stopping import EarlyStopping
from cdnn.callbacks.history import History
from cdnn.callbacks.lambda_callback import LambdaCallback
from cdnn.callbacks.learning_rate_scheduler import LearningRateScheduler
from cdnn.callbacks.model_checkpoint import ModelCheckpoint
from cdnn.callbacks.monitor_callback import MonitorCallback
from cdnn.callbacks.progbar_logger import ProgbarLogger
from cdnn.callbacks.reduce_lr_on_plateau import ReduceLROnPlateau
from cdnn.callbacks.tensorboard import TensorBoard
from cdnn.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "Callback",
    "History",
    "EarlyStopping",
    "ModelCheckpoint",
    "TerminateOnNaN",
    "LearningRateScheduler",
    "LambdaCallback",
    "MonitorCallback",
    "ReduceLROnPlateau",
    "CSVLogger",
    "TensorBoard",
    "BackupAndRestore",
    "ProgbarLogger",
]
