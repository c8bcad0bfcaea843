"""The metrics of ``compile(metrics=...)``, resolved against the loss and the output (Keras 3's
``keras/src/trainers/compile_utils.py``), and how the training loop feeds them.

The C core counts one accuracy (binary, categorical or sparse, the kind its
loss's labels allow) in the training step itself, at no cost. Any other
metric needs the step's outputs: the core then copies each batch's forward
outputs into a buffer for the run, and the metrics are updated from it in
NumPy between runs (built-in metrics, whose state is sums, once per run;
a user's ``Metric`` subclass once per batch, as Keras calls it).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn import metrics as metrics_module
from cdnn.metrics import accuracy_metrics as acc
from cdnn.metrics import hinge_metrics as hin
from cdnn.metrics import probabilistic_metrics as prob
from cdnn.metrics import regression_metrics as reg
from cdnn.metrics.confusion_metrics import (
    AUC,
    Precision,
    Recall,
    _ConfusionMatrixConditionCount,
    _SensitivitySpecificityBase,
)
from cdnn.metrics.f_score_metrics import FBetaScore
from cdnn.metrics.metric import Metric
from cdnn.metrics.reduction_metrics import Mean

__all__ = ["CompileMetrics", "get_metric", "keras_results", "metrics_logs", "flatten_metrics_in_order"]

SPARSE_LOSS = "sparse_categorical_crossentropy"


def get_metric(identifier, sparse_labels: bool, units: int) -> Metric:
    """One entry of ``metrics=[...]`` as a Metric object with Keras' name for it."""
    if identifier is None:
        raise ValueError("Expected metric, received `None`")
    if str(identifier).lower() in ("accuracy", "acc"):
        if units == 1:
            obj = acc.BinaryAccuracy(name=str(identifier))
        elif sparse_labels:
            obj = acc.SparseCategoricalAccuracy(name=str(identifier))
        else:
            obj = acc.CategoricalAccuracy(name=str(identifier))
    else:
        obj = metrics_module.get(identifier)
    if isinstance(identifier, str):
        name = identifier
    else:
        name = getattr(obj, "name", None) or getattr(obj, "__name__", None) or type(obj).__name__
    if not isinstance(obj, Metric):
        if not callable(obj):
            raise ValueError(f"Could not interpret metric identifier: {identifier!r}")
        obj = metrics_module.MeanMetricWrapper(obj)
    obj.name = name
    return obj


def _core_kind(m: Metric) -> Optional[str]:
    """The C core's accuracy that computes ``m`` exactly, if any."""
    t = type(m)
    if t is acc.SparseCategoricalAccuracy:
        return "sparse"
    if t is acc.CategoricalAccuracy:
        return "categorical"
    if t is acc.BinaryAccuracy and m.threshold == 0.5:
        return "binary"
    return None


#: metrics that compare labels and outputs element by element: Keras fails on integer class labels
#: of shape (n,) for a k-way output (and broadcasts (n, 1) ones into meaningless values)
_ELEMENTWISE = (
    AUC,
    Precision,
    Recall,
    _ConfusionMatrixConditionCount,
    _SensitivitySpecificityBase,
    acc.BinaryAccuracy,
    reg.MeanSquaredError,
    reg.MeanAbsoluteError,
    reg.MeanAbsolutePercentageError,
    reg.MeanSquaredLogarithmicError,
    reg.CosineSimilarity,
    reg.LogCoshError,
    reg.RootMeanSquaredError,
    reg.R2Score,
    prob.BinaryCrossentropy,
    prob.KLDivergence,
    prob.Poisson,
    hin.Hinge,
    hin.SquaredHinge,
)


def _check_fits(m: Metric, sparse_labels: bool, units: int, loss_name: str, activation: str = "") -> None:
    """Refuse, before training, a metric that cannot read these labels and outputs."""
    label_text = "integer class labels of shape (n,)" if sparse_labels else f"labels of shape (n, {units})"

    def refuse(why: str):
        raise ValueError(
            f"Invalid metric {m.name!r} ({type(m).__name__}) for loss {loss_name!r} and an output of "
            f"{units} unit(s): {why}"
        )

    k = getattr(m, "k", None)
    if (
        isinstance(m, (acc.TopKCategoricalAccuracy, acc.SparseTopKCategoricalAccuracy))
        and not getattr(m, "from_sorted_ids", False)
        and k > units
    ):
        # Keras computes 1.0 whatever the outputs (every label is in the top k): refused as a mistake
        refuse(f"k={k} is more than the {units} classes of the output (every label would be in the top k)")
    sparse_kinds = (
        acc.SparseCategoricalAccuracy,
        acc.SparseTopKCategoricalAccuracy,
        prob.SparseCategoricalCrossentropy,
    )
    if isinstance(m, sparse_kinds) and not sparse_labels:
        refuse(
            f"it reads integer class labels, but {loss_name} takes {label_text} "
            f"(use the categorical metric, or sparse_categorical_crossentropy)"
        )
    one_hot_kinds = (
        acc.CategoricalAccuracy,
        acc.TopKCategoricalAccuracy,
        FBetaScore,
        prob.CategoricalCrossentropy,
        hin.CategoricalHinge,
    )
    if sparse_labels and isinstance(m, one_hot_kinds):
        refuse(
            "it reads one-hot labels, but sparse_categorical_crossentropy takes integer class labels (use the "
            "sparse_ metric, or one-hot labels with categorical_crossentropy)"
        )
    if sparse_labels and units > 1 and isinstance(m, _ELEMENTWISE):
        hint = " (or AUC(multi_label=True) with one-hot labels)" if isinstance(m, AUC) else ""
        refuse(
            f"it compares labels and outputs element by element, and {units}-way outputs do not match "
            f"{label_text}: use one-hot labels with categorical_crossentropy{hint}"
        )
    if isinstance(m, AUC) and not m.multi_label and units > 1 and activation == "softmax":
        refuse(
            "on a softmax the classes are one prediction, not separate binary ones: the flattened AUC mixes "
            "them; use AUC(multi_label=True) with one-hot labels (one AUC per class, averaged)"
        )
    if isinstance(m, AUC) and m.multi_label and m._num_labels not in (None, units):
        refuse(f"num_labels={m._num_labels} does not match the output's {units} units")
    if isinstance(m, (Precision, Recall, _SensitivitySpecificityBase)):
        if m.class_id is not None and m.class_id >= units:
            refuse(f"class_id={m.class_id} is not a class of the {units}-unit output")
        if getattr(m, "top_k", None) is not None and m.top_k > units:
            refuse(f"top_k={m.top_k} is more than the {units} units of the output")


class CompileMetrics(Metric):
    """The compiled metrics (of one output) as one metric whose result is a dict (Keras' ``compile_metrics``).

    ``weighted``: the metrics of ``compile(weighted_metrics=...)``, which read the sample weights
    (and class weights), never counted by the core; ``output_name``: the output they belong to in a
    model of several outputs (their logs are then ``<output>_<name>``).
    """

    def __init__(self, metrics, weighted: bool = False, output_name: Optional[str] = None) -> None:
        super().__init__(name="compile_metrics")
        self.weighted = weighted
        self.output_name = output_name
        argument = "weighted_metrics" if weighted else "metrics"
        if isinstance(metrics, dict):
            raise ValueError(
                f"Invalid value for argument `{argument}`: a dict of metrics per output needs a model with "
                f"several outputs; this model has one (pass a list)"
            )
        self._user_metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        for m in self._user_metrics:  # unknown names fail at compile, as in Keras
            if m is None or isinstance(m, (dict, Metric)):
                continue
            if not (isinstance(m, str) or callable(m)):
                raise ValueError(f"Could not interpret metric identifier: {m!r}")
            if isinstance(m, str) and m.lower() not in ("accuracy", "acc"):
                metrics_module.get(m)
        self._metrics: list[Metric] = []
        self.built = False
        self.core_index: Optional[int] = None
        self._key: Optional[tuple] = None

    @property
    def metrics(self) -> list[Metric]:
        return list(self._metrics)

    def build(self, loss_name: str, units: int, activation: str = "") -> None:
        """Make (once per loss and output) the metric objects, check they fit, choose the core's one."""
        if self.built and self._key == (loss_name, units, activation):
            return
        sparse = loss_name == SPARSE_LOSS
        made = [get_metric(m, sparse, units) for m in self._user_metrics]
        for m in made:
            _check_fits(m, sparse, units, loss_name, activation)
        self.core_index = None
        for i, m in enumerate(made if not self.weighted else ()):
            kind = _core_kind(m)
            if kind is not None and (kind == "sparse") == sparse:
                self.core_index = i
                break
        self._metrics, self.built, self._key = made, True, (loss_name, units, activation)

    @property
    def core_kind(self) -> Optional[str]:
        return _core_kind(self._metrics[self.core_index]) if self.core_index is not None else None

    @property
    def needs_outputs(self) -> bool:
        """Whether a metric needs the outputs (all but the one the core counts)."""
        return len(self._metrics) > (1 if self.core_index is not None else 0)

    def reset_state(self) -> None:
        for m in self._metrics:
            m.reset_state()

    def add_core_counts(self, correct: float, count: float) -> None:
        """The core's accuracy sums (of rows correct, of rows seen) into its metric."""
        if self.core_index is not None:
            self._metrics[self.core_index]._add_sums(correct, count)

    def update_outputs(
        self,
        y_true: np.ndarray,
        y_pred: np.ndarray,
        batch_size: Optional[int] = None,
        sample_weight: Optional[np.ndarray] = None,
    ) -> None:
        """Every metric the core does not count, from labels and outputs (of a run of batches of ``batch_size``);
        the sample weights are read by weighted metrics only, as in Keras."""
        sw = sample_weight if self.weighted else None
        for i, m in enumerate(self._metrics):
            if i == self.core_index:
                continue
            if batch_size is None or type(m).__module__.startswith("cdnn."):
                m.update_state(y_true, y_pred, sample_weight=sw)  # built-in state is sums: one update per run
            else:
                for s in range(0, len(y_pred), batch_size):
                    part = None if sw is None else sw[s : s + batch_size]
                    m.update_state(y_true[s : s + batch_size], y_pred[s : s + batch_size], sample_weight=part)

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        for m in self._metrics:
            m.update_state(y_true, y_pred, sample_weight=sample_weight)

    def result(self) -> dict:
        """Each metric's result under its name; a repeated name gets ``_1``, ``_2``... as in Keras."""
        results, seen = {}, {}
        for m in self._metrics:
            name = m.name
            if name in seen:
                seen[name] += 1
                name = f"{name}_{seen[name] - 1}"
            else:
                seen[name] = 1
            results[name] = m.result()
        return results

    def get_config(self) -> dict:
        raise NotImplementedError


def pythonify_logs(logs: dict) -> dict:
    """Logs as Keras gives them: sorted by name, results as Python floats (arrays stay arrays)."""
    out = {}
    for key, value in sorted(logs.items()):
        if isinstance(value, dict):
            out.update(pythonify_logs(value))
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = np.asarray(value)
        out[key] = value
    return out


def keras_results(groups: list) -> dict:
    """The results of every output's metrics under Keras 3's names (``CompileMetrics.result``).

    ``groups``: the built :class:`CompileMetrics` (or None) of every output, those of ``metrics``
    first, then those of ``weighted_metrics``. A name is prefixed by its output's name in a model
    of several outputs; a repeated name gets ``_1``, ``_2``..., but a weighted metric whose name is
    taken gets ``weighted_`` before its name (then ``_1``... if that is taken too).
    """
    results: dict = {}
    counters: dict = {}
    for cm in groups:
        if cm is None or not cm.built:
            continue
        prefix = f"{cm.output_name}_" if cm.output_name else ""
        for m in cm.metrics:
            name = prefix + m.name
            if name not in counters:
                counters[name] = 1
            elif not cm.weighted:
                counters[name] += 1
                name = f"{name}_{counters[name] - 1}"
            else:
                name = f"{prefix}weighted_{m.name}"
                if name not in counters:
                    counters[name] = 1
                else:
                    counters[name] += 1
                    name = f"{name}_{counters[name] - 1}"
            results[name] = m.result()
    return results


def _groups(compile_metrics) -> list:
    if compile_metrics is None:
        return []
    return list(compile_metrics) if isinstance(compile_metrics, (list, tuple)) else [compile_metrics]


def metrics_logs(loss_tracker: Mean, compile_metrics, prefix: str = "", extra: Optional[dict] = None) -> dict:
    """``{"loss": ..., "mae": ...}`` sorted, as Keras' ``get_metrics_result``; ``prefix`` e.g. ``"val_"``.

    ``compile_metrics``: one :class:`CompileMetrics` or a list of them (see :func:`keras_results`);
    ``extra``: other logs (each output's loss).
    """
    logs = {loss_tracker.name: loss_tracker.result()}
    logs.update(extra or {})
    logs.update(keras_results(_groups(compile_metrics)))
    return {prefix + k: v for k, v in pythonify_logs(logs).items()}


def flatten_metrics_in_order(logs: dict, compile_metrics, output_losses: tuple = ()):
    """``evaluate``'s list as Keras 3 orders it: the loss, the metrics by their own names in compile order,
    the outputs' losses, then any other log in name order; a single value alone."""
    names = ["loss"]
    for cm in _groups(compile_metrics):
        if cm is not None and cm.built:
            names += [m.name for m in cm.metrics]
    names += list(output_losses)
    results = [logs[n] for n in names if n in logs]  # as Keras: a name given twice is listed twice
    results += [logs[k] for k in sorted(logs) if k not in names]
    return results[0] if len(results) == 1 else results


def serialize_metrics(compile_metrics: Optional[CompileMetrics]) -> Optional[list]:
    """``compile(metrics=...)`` as plain data: names stay names, objects become configs."""
    if compile_metrics is None:
        return None
    return [m if isinstance(m, str) else metrics_module.serialize(m) for m in compile_metrics._user_metrics]


def deserialize_metrics(comp: dict) -> Optional[list]:
    """The ``metrics`` argument that :func:`serialize_metrics` (or an older file's single ``metric``) saved."""
    if comp.get("metrics") is not None:
        return [m if isinstance(m, str) else metrics_module.deserialize(m) for m in comp["metrics"]]
    legacy = comp.get("metric")
    if not legacy:
        return None
    if legacy.get("class_name") == "Accuracy":  # older files: the accuracy resolved by the loss
        return [legacy.get("name", "accuracy")]
    return [metrics_module.deserialize({"class_name": legacy["class_name"], "config": {"name": legacy["name"]}})]
