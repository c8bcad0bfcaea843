"""Metrics from confusion-matrix counts at thresholds (Keras 3's
``keras/src/metrics/confusion_metrics.py``): TruePositives..., Precision, Recall, AUC,
PrecisionAtRecall, RecallAtPrecision, SensitivityAtSpecificity, SpecificityAtSensitivity.

A prediction is positive at threshold t when ``y_pred > t``. Counts at many
thresholds come from one sort: a prediction's count of thresholds below it
(``searchsorted``) says at which thresholds it is positive, and cumulative
sums of the weights give every threshold's counts at once.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from cdnn.metrics.metric import EPSILON, Metric, as_result, squeeze_or_expand_to_same_rank

__all__ = [
    "TruePositives",
    "FalsePositives",
    "TrueNegatives",
    "FalseNegatives",
    "Precision",
    "Recall",
    "AUC",
    "PrecisionAtRecall",
    "RecallAtPrecision",
    "SensitivityAtSpecificity",
    "SpecificityAtSensitivity",
]

#: the score top-k filtering gives the predictions outside the top k (Keras' NEG_INF)
NEG_INF = -1e10


def _thresholds(thresholds, default: float) -> list[float]:
    if thresholds is None:
        return [default]
    items = list(thresholds) if isinstance(thresholds, (list, tuple, np.ndarray)) else [thresholds]
    bad = [t for t in items if t is None or not 0 <= t <= 1]
    if bad or not items:
        raise ValueError(
            f"Invalid value for argument `thresholds`: expected values in [0, 1], received thresholds={thresholds!r}"
        )
    return [float(t) for t in items]


def _filter_top_k(y_pred: np.ndarray, k: int) -> np.ndarray:
    """Scores outside each row's top ``k`` become NEG_INF (the first k of equal scores kept, as top_k)."""
    idx = np.argsort(-y_pred, axis=-1, kind="stable")[..., :k]
    keep = np.zeros(y_pred.shape, bool)
    np.put_along_axis(keep, idx, True, axis=-1)
    return np.where(keep, y_pred, NEG_INF)


def confusion_counts(
    y_true,
    y_pred,
    thresholds: np.ndarray,
    sample_weight=None,
    top_k: Optional[int] = None,
    class_id: Optional[int] = None,
    multi_label: bool = False,
    label_weights=None,
) -> dict:
    """Weighted tp, fp, tn, fn at each threshold (shape (T,), or (T, labels) with ``multi_label``)."""
    y_pred = np.asarray(y_pred, np.float64)
    y_true = np.asarray(y_true, np.float64)
    y_pred, y_true = squeeze_or_expand_to_same_rank(y_pred, y_true)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"Invalid shapes: y_true of shape {y_true.shape} does not match y_pred of shape "
            f"{y_pred.shape} (confusion-matrix metrics compare them element by element)"
        )
    w = None
    if sample_weight is not None:
        w = np.asarray(sample_weight, np.float64)[..., None]
        _, w = squeeze_or_expand_to_same_rank(y_true, w, expand_rank_1=False)
    if top_k is not None:
        y_pred = _filter_top_k(y_pred, top_k)
    if class_id is not None:
        if y_pred.ndim == 1:
            raise ValueError(
                f"When class_id is provided, y_pred must be a 2D array with shape (num_samples, "
                f"num_classes), found shape: {y_pred.shape}"
            )
        if not 0 <= class_id < y_pred.shape[-1]:
            raise ValueError(
                f"Invalid value for argument `class_id`: expected a class in [0, {y_pred.shape[-1]}), "
                f"received class_id={class_id}"
            )
        y_true, y_pred = y_true[..., class_id, None], y_pred[..., class_id, None]
    w = np.ones(y_pred.shape) if w is None else np.broadcast_to(w, y_pred.shape)
    if label_weights is not None and not multi_label:
        w = w * np.broadcast_to(np.asarray(label_weights, np.float64), y_pred.shape)
    pos = y_true != 0
    if multi_label:
        labels = y_pred.shape[-1]
        return _counts(y_pred.reshape(-1, labels), pos.reshape(-1, labels), w.reshape(-1, labels), thresholds)
    counts = _counts(y_pred.reshape(-1, 1), pos.reshape(-1, 1), w.reshape(-1, 1), thresholds)
    return {k: v[:, 0] for k, v in counts.items()}


def _counts(pred: np.ndarray, pos: np.ndarray, w: np.ndarray, thresholds: np.ndarray) -> dict:
    """Counts (T, labels) at every threshold for each column, from one searchsorted: a prediction is
    positive at the thresholds strictly below it, the sorted indices < searchsorted(..., 'left');
    one bincount per outcome histograms (column, thresholds below) and reversed cumulative sums
    give every threshold's counts."""
    T, labels = len(thresholds), pred.shape[1]
    order = np.argsort(thresholds, kind="stable")
    above = _count_below(thresholds[order], pred)  # (n, labels): thresholds t < pred
    cells = (above + (T + 1) * np.arange(labels)).ravel()
    w_pos = np.where(pos, w, 0.0).ravel()
    pos_hist = np.bincount(cells, weights=w_pos, minlength=(T + 1) * labels).reshape(labels, T + 1)
    neg_hist = np.bincount(cells, weights=w.ravel() - w_pos, minlength=(T + 1) * labels).reshape(labels, T + 1)
    # weight positive at sorted threshold i: the predictions with above > i
    tp_sorted = np.cumsum(pos_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    fp_sorted = np.cumsum(neg_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    total_pos, total_neg = pos_hist.sum(axis=1, keepdims=True), neg_hist.sum(axis=1, keepdims=True)
    out = {}
    for key, sorted_vals in (
        ("tp", tp_sorted),
        ("fp", fp_sorted),
        ("fn", total_pos - tp_sorted),
        ("tn", total_neg - fp_sorted),
    ):
        vals = np.empty((T, labels))
        vals[order] = sorted_vals.T
        out[key] = vals
    return out


def _count_below(st: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """For each prediction, how many of the sorted thresholds ``st`` are strictly below it.

    AUC's default thresholds are an even grid (i + 1) / (T - 1) between two end points: the count
    is then ``ceil(p * (T - 1)) - 1``, corrected by one comparison each way against the grid itself
    for rounding (4x faster than a binary search per value, which dominated a 10-label AUC's update).
    """
    T = len(st)
    m = T - 2
    grid = st[1:-1]
    if m < 16 or not np.array_equal(grid, np.arange(1, m + 1) / (T - 1)):
        return np.searchsorted(st, pred, side="left")
    with np.errstate(invalid="ignore"):  # a NaN prediction is above no threshold, as `pred > t` says
        est = np.nan_to_num(np.clip(np.ceil(pred * (T - 1)) - 1, 0, m), nan=0.0).astype(np.intp)
    est += (est < m) & (grid[np.minimum(est, m - 1)] < pred)
    est -= (est > 0) & (grid[np.maximum(est - 1, 0)] >= pred)
    return est + (st[0] < pred) + (st[-1] < pred)


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), 0.0)


class _ConfusionMatrixConditionCount(Metric):
    _key = ""

    def __init__(self, thresholds=None, name: Optional[str] = None, dtype: Optional[str] = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.init_thresholds = thresholds
        self.thresholds = _thresholds(thresholds, 0.5)
        self.accumulator = self.add_variable(shape=(len(self.thresholds),), name="accumulator", dtype="float64")

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        counts = confusion_counts(y_true, y_pred, np.asarray(self.thresholds), sample_weight)
        self.accumulator.assign_add(counts[self._key])

    def result(self):
        v = self.accumulator.value
        return as_result(v[0] if len(self.thresholds) == 1 else v)

    def get_config(self) -> dict:
        return {**super().get_config(), "thresholds": self.init_thresholds}


class TruePositives(_ConfusionMatrixConditionCount):
    """The (weighted) number of true positives: label 1, ``y_pred > threshold``."""

    _direction = "up"
    _key = "tp"


class FalsePositives(_ConfusionMatrixConditionCount):
    """The (weighted) number of false positives: label 0, ``y_pred > threshold``."""

    _direction = "down"
    _key = "fp"


class TrueNegatives(_ConfusionMatrixConditionCount):
    """The (weighted) number of true negatives: label 0, ``y_pred <= threshold``."""

    _direction = "up"
    _key = "tn"


class FalseNegatives(_ConfusionMatrixConditionCount):
    """The (weighted) number of false negatives: label 1, ``y_pred <= threshold``."""

    _direction = "down"
    _key = "fn"


class _PrecisionRecall(Metric):
    _other, _count = "", ""

    def __init__(
        self,
        thresholds: Union[float, Sequence[float], None] = None,
        top_k: Optional[int] = None,
        class_id: Optional[int] = None,
        name: Optional[str] = None,
        dtype: Optional[str] = None,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
            raise ValueError(
                f"Invalid value for argument `top_k`: expected a positive integer, received top_k={top_k!r}"
            )
        if class_id is not None and (
            isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or class_id < 0
        ):
            raise ValueError(
                f"Invalid value for argument `class_id`: expected a non-negative integer, received "
                f"class_id={class_id!r}"
            )
        self.init_thresholds = thresholds
        self.top_k = top_k
        self.class_id = class_id
        self.thresholds = _thresholds(thresholds, 0.5 if top_k is None else NEG_INF)
        self.true_positives = self.add_variable(shape=(len(self.thresholds),), name="true_positives", dtype="float64")
        setattr(self, self._other, self.add_variable(shape=(len(self.thresholds),), name=self._other, dtype="float64"))

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        c = confusion_counts(
            y_true, y_pred, np.asarray(self.thresholds), sample_weight, top_k=self.top_k, class_id=self.class_id
        )
        self.true_positives.assign_add(c["tp"])
        getattr(self, self._other).assign_add(c[self._count])

    def result(self):
        tp = self.true_positives.value
        r = _div(tp, tp + getattr(self, self._other).value)
        return as_result(r[0] if len(self.thresholds) == 1 else r)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "thresholds": self.init_thresholds,
            "top_k": self.top_k,
            "class_id": self.class_id,
        }


class Precision(_PrecisionRecall):
    """``tp / (tp + fp)``: of the predictions above the threshold (or in the top ``k``), how many are right.

    Parameters
    ----------
    thresholds : float or list of float, optional
        In [0, 1]; 0.5 by default (a list gives one precision per threshold).
    top_k : int, optional
        Only each row's ``k`` highest scores count as positive predictions.
    class_id : int, optional
        The binary precision of this class (a column of the outputs).
    """

    _direction = "up"
    _other, _count = "false_positives", "fp"


class Recall(_PrecisionRecall):
    """``tp / (tp + fn)``: of the positive labels, how many get a prediction above the threshold
    (parameters as :class:`Precision`)."""

    _direction = "up"
    _other, _count = "false_negatives", "fn"


class AUC(Metric):
    """The area under the ROC or the precision-recall curve, by a Riemann sum over ``num_thresholds``.

    Parameters
    ----------
    num_thresholds : int
        Thresholds evenly spaced in [0, 1] (200 by default; the ends are 0 - epsilon and 1 + epsilon).
    curve : {"ROC", "PR"}
        The curve.
    summation_method : {"interpolation", "minoring", "majoring"}
        How each interval's height is taken (PR with interpolation: Davis & Goadrich's formula).
    thresholds : list of float, optional
        Explicit thresholds in [0, 1] instead of ``num_thresholds``.
    multi_label : bool
        Each output column is a label of its own, and the AUCs are averaged (else every
        element is one binary prediction).
    num_labels : int, optional
        With ``multi_label``, the number of columns (otherwise learnt from the first batch).
    label_weights : list of float, optional
        Weights of the columns in the average (or of the elements, without ``multi_label``).
    from_logits : bool
        Predictions are logits: a sigmoid is applied first.
    """

    _direction = "up"

    def __init__(
        self,
        num_thresholds: int = 200,
        curve: str = "ROC",
        summation_method: str = "interpolation",
        name: Optional[str] = None,
        dtype: Optional[str] = None,
        thresholds=None,
        multi_label: bool = False,
        num_labels: Optional[int] = None,
        label_weights=None,
        from_logits: bool = False,
    ) -> None:
        super().__init__(name=name, dtype=dtype)
        curve_name = str(curve).upper()
        if curve_name not in ("ROC", "PR"):
            raise ValueError(f"Invalid value for argument `curve`: expected 'ROC' or 'PR', received curve={curve!r}")
        method = str(summation_method).lower()
        if method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(
                f"Invalid value for argument `summation_method`: expected 'interpolation', 'minoring' "
                f"or 'majoring', received summation_method={summation_method!r}"
            )
        self._init_from_thresholds = thresholds is not None
        if thresholds is not None:
            inner = sorted(_thresholds(thresholds, 0.5))
            self.num_thresholds = len(inner) + 2
        else:
            if (
                isinstance(num_thresholds, bool)
                or not isinstance(num_thresholds, (int, np.integer))
                or num_thresholds <= 1
            ):
                raise ValueError(
                    f"Argument `num_thresholds` must be an integer > 1. Received: num_thresholds={num_thresholds!r}"
                )
            self.num_thresholds = int(num_thresholds)
            inner = [(i + 1) * 1.0 / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
        self._thresholds = np.array([0.0 - EPSILON] + inner + [1.0 + EPSILON])
        self.curve, self.summation_method = curve_name, method
        self.multi_label = bool(multi_label)
        self.num_labels = num_labels
        self.label_weights = None if label_weights is None else np.asarray(label_weights, np.float64)
        self._from_logits = bool(from_logits)
        self._built = False
        self._num_labels = num_labels
        if not self.multi_label and num_labels:
            raise ValueError("`num_labels` is needed only when `multi_label` is True.")
        if not self.multi_label or num_labels:
            self._build(num_labels)

    @property
    def thresholds(self) -> list[float]:
        return list(self._thresholds)

    def _build(self, num_labels: Optional[int]) -> None:
        shape = (self.num_thresholds, num_labels) if self.multi_label else (self.num_thresholds,)
        self._num_labels = num_labels
        for attr in ("true_positives", "false_positives", "true_negatives", "false_negatives"):
            setattr(self, attr, self.add_variable(shape=shape, name=attr, dtype="float64"))
        self._built = True

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_pred = np.asarray(y_pred, np.float64)
        if self.multi_label and y_pred.ndim != 2:
            raise ValueError(
                f"AUC(multi_label=True) expects predictions of shape (batch_size, num_labels), "
                f"received shape {y_pred.shape}"
            )
        if not self._built:
            self._build(y_pred.shape[-1])
        if self.multi_label and y_pred.shape[-1] != self._num_labels:
            raise ValueError(
                f"AUC was built for {self._num_labels} labels, received predictions of shape {y_pred.shape}"
            )
        if self._from_logits:
            y_pred = 1.0 / (1.0 + np.exp(-y_pred))
        c = confusion_counts(
            y_true,
            y_pred,
            self._thresholds,
            sample_weight,
            multi_label=self.multi_label,
            label_weights=None if self.multi_label else self.label_weights,
        )
        self.true_positives.assign_add(c["tp"])
        self.false_positives.assign_add(c["fp"])
        self.true_negatives.assign_add(c["tn"])
        self.false_negatives.assign_add(c["fn"])

    def _average(self, by_label):
        if not self.multi_label:
            return np.sum(by_label)
        per_label = np.sum(by_label, axis=0)
        if self.label_weights is None:
            return np.mean(per_label)
        return _div(np.sum(per_label * self.label_weights), np.sum(self.label_weights))

    def _interpolate_pr_auc(self):
        """Davis & Goadrich's interpolation of precision between thresholds (as Keras' closed form)."""
        tp, fp, fn = self.true_positives.value, self.false_positives.value, self.false_negatives.value
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _div(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _div(p[:-1], np.maximum(p[1:], 0)), 1.0)
        with np.errstate(divide="ignore"):
            log_ratio = np.log(np.where(ratio > 0, ratio, 1.0))
        increments = _div(slope * (dtp + intercept * log_ratio), np.maximum(tp[1:] + fn[1:], 0))
        return self._average(increments)

    def result(self):
        if not self._built:
            return as_result(0.0)
        if self.curve == "PR" and self.summation_method == "interpolation":
            return as_result(self._interpolate_pr_auc())
        tp, fp = self.true_positives.value, self.false_positives.value
        tn, fn = self.true_negatives.value, self.false_negatives.value
        recall = _div(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _div(fp, fp + tn), recall
        else:
            x, y = recall, _div(tp, tp + fp)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return as_result(self._average((x[:-1] - x[1:]) * heights))

    def reset_state(self) -> None:
        super().reset_state()

    def get_config(self) -> dict:
        config = {
            **super().get_config(),
            "num_thresholds": self.num_thresholds,
            "curve": self.curve,
            "summation_method": self.summation_method,
            "multi_label": self.multi_label,
            "num_labels": self.num_labels,
            "label_weights": None if self.label_weights is None else self.label_weights.tolist(),
            "from_logits": self._from_logits,
        }
        if self._init_from_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config


class _SensitivitySpecificityBase(Metric):
    """Counts at ``num_thresholds`` thresholds ``0, 1/(n-1), ..., 1``, and the best of one rate where
    another reaches ``value`` (Keras 3's ``SensitivitySpecificityBase``).

    A prediction is positive at threshold t when ``y_pred > t``, after clipping it to [0, 1] as Keras'
    bucketed counts on these even thresholds do (one threshold: 0.5, unclipped).
    """

    _direction = "up"
    #: the argument naming ``value`` in the config
    _value_name = ""

    def __init__(
        self,
        value: float,
        num_thresholds: int = 200,
        class_id: Optional[int] = None,
        name: Optional[str] = None,
        dtype: Optional[str] = None,
    ) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, np.integer, np.floating))
            or not 0 <= value <= 1
        ):
            raise ValueError(
                f"Argument `{self._value_name}` must be in the range [0, 1]. Received: {self._value_name}={value!r}"
            )
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or num_thresholds <= 0:
            raise ValueError(
                f"Argument `num_thresholds` must be an integer > 0. Received: num_thresholds={num_thresholds!r}"
            )
        if class_id is not None and (
            isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or class_id < 0
        ):
            raise ValueError(
                f"Invalid value for argument `class_id`: expected a non-negative integer, received "
                f"class_id={class_id!r}"
            )
        super().__init__(name=name, dtype=dtype)
        self.value = value
        setattr(self, self._value_name, value)
        self.num_thresholds = int(num_thresholds)
        self.class_id = class_id
        if self.num_thresholds == 1:
            self.thresholds = [0.5]
        else:
            inner = [(i + 1) * 1.0 / (self.num_thresholds - 1) for i in range(self.num_thresholds - 2)]
            self.thresholds = [0.0, *inner, 1.0]
        for attr in ("true_positives", "false_positives", "true_negatives", "false_negatives"):
            setattr(self, attr, self.add_variable(shape=(len(self.thresholds),), name=attr, dtype="float64"))

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        y_pred = np.asarray(y_pred, np.float64)
        if self.num_thresholds > 1:
            y_pred = np.clip(y_pred, 0.0, 1.0)
        c = confusion_counts(y_true, y_pred, np.asarray(self.thresholds), sample_weight, class_id=self.class_id)
        self.true_positives.assign_add(c["tp"])
        self.false_positives.assign_add(c["fp"])
        self.true_negatives.assign_add(c["tn"])
        self.false_negatives.assign_add(c["fn"])

    def _rates(self) -> dict:
        tp, fp = self.true_positives.value, self.false_positives.value
        tn, fn = self.true_negatives.value, self.false_negatives.value
        return {
            "sensitivity": _div(tp, tp + fn),
            "specificity": _div(tn, tn + fp),
            "precision": _div(tp, tp + fp),
        }

    def _best(self, constrained: str, dependent: str):
        """The largest ``dependent`` rate among the thresholds where ``constrained`` >= value (else 0)."""
        r = self._rates()
        feasible = r[constrained] >= self.value
        return as_result(max(0.0, float(np.max(np.where(feasible, r[dependent], 0.0)))))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "class_id": self.class_id,
            "num_thresholds": self.num_thresholds,
            self._value_name: self.value,
        }


class SensitivityAtSpecificity(_SensitivitySpecificityBase):
    """The best sensitivity ``tp / (tp + fn)`` among the thresholds where the specificity
    ``tn / (tn + fp)`` is at least ``specificity``.

    Parameters
    ----------
    specificity : float
        In [0, 1].
    num_thresholds : int
        Thresholds evenly spaced in [0, 1] (200 by default).
    class_id : int, optional
        The binary metric of this class (a column of the outputs).
    """

    _value_name = "specificity"

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None, dtype=None) -> None:
        super().__init__(specificity, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._best("specificity", "sensitivity")


class SpecificityAtSensitivity(_SensitivitySpecificityBase):
    """The best specificity among the thresholds where the sensitivity is at least ``sensitivity``
    (parameters as :class:`SensitivityAtSpecificity`)."""

    _value_name = "sensitivity"

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None, dtype=None) -> None:
        super().__init__(sensitivity, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._best("sensitivity", "specificity")


class PrecisionAtRecall(_SensitivitySpecificityBase):
    """The best precision ``tp / (tp + fp)`` among the thresholds where the recall is at least
    ``recall`` (parameters as :class:`SensitivityAtSpecificity`)."""

    _value_name = "recall"

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None, dtype=None) -> None:
        super().__init__(recall, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._best("sensitivity", "precision")


class RecallAtPrecision(_SensitivitySpecificityBase):
    """The best recall among the thresholds where the precision is at least ``precision``
    (0 when no threshold reaches it; parameters as :class:`SensitivityAtSpecificity`)."""

    _value_name = "precision"

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None, dtype=None) -> None:
        super().__init__(precision, num_thresholds=num_thresholds, class_id=class_id, name=name, dtype=dtype)

    def result(self):
        return self._best("precision", "sensitivity")
