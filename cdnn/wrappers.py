"""scikit-learn estimators around cdnn models, as Keras 3's ``keras.wrappers``.

``SKLearnClassifier`` and ``SKLearnRegressor`` make a cdnn network an
estimator that ``GridSearchCV``, ``RandomizedSearchCV``, ``cross_val_score``
and ``Pipeline`` run, and that joblib spreads over processes (loky, on one
machine) or machines (Dask's distributed scheduler)::

    from sklearn.model_selection import GridSearchCV
    from cdnn.wrappers import SKLearnClassifier

    search = GridSearchCV(SKLearnClassifier(epochs=5, random_state=0),
                          {"hidden": [(100,), (256, 128)], "learning_rate": [1e-3, 3e-3]}, n_jobs=2)
    search.fit(x_train.reshape(len(x_train), -1) / 255.0, y_train)

The model is Keras' choice (``model=``: a compiled ``Sequential``, cloned
before each fit, or a callable ``model(X=X, y=y, **model_kwargs)`` building
one) or, when ``model`` is None, an MLP built from the direct
hyper-parameters ``hidden``, ``activation``, ``optimizer`` and
``learning_rate``, which a parameter grid can name.

Threads. A fit runs on at most ``cdnn.get_num_threads()`` threads (read as
it starts; it drops to one, run by run, where one measures faster): OpenMP's
default for the calling thread (``OMP_NUM_THREADS``, else all cores),
lowered by ``threadpoolctl.threadpool_limits`` and by joblib, which starts
each loky worker with ``OMP_NUM_THREADS = cores // n_jobs`` (or
``inner_max_num_threads``); Dask's workers start with ``OMP_NUM_THREADS=1``.
``cdnn.set_num_threads(n)`` overrides all of these in its own process (a
worker process does not inherit it). The ``threading`` backend shares one
process, and its fits would each take every core: use processes. A fitted
estimator's ``n_threads_`` is the budget its fit had.

``random_state`` seeds a generator of the fit's own (initial weights,
shuffling, dropout; cdnn's, Python's and NumPy's global generators are left
alone) at the start of each fit, so that a search gives the same scores
whatever ``n_jobs``, the backend (processes or threads) and the thread count.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Callable, Optional, Sequence, Union

import numpy as np

from cdnn import _random
from cdnn import layers as layers_module
from cdnn import optimizers as optimizers_module
from cdnn._config import get_num_threads
from cdnn._errors import invalid
from cdnn.models import Sequential

try:
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError:  # scikit-learn is optional: the classes exist but refuse to be made
    sklearn = None

    class BaseEstimator:  # type: ignore[no-redef]
        pass

    class ClassifierMixin:  # type: ignore[no-redef]
        pass

    class RegressorMixin:  # type: ignore[no-redef]
        pass


__all__ = ["SKLearnClassifier", "SKLearnRegressor"]

ModelSpec = Union[None, Sequential, Callable[..., Sequential]]


def _validate_data(estimator, *args, **kwargs):
    """scikit-learn's ``validate_data`` (>= 1.6) or the older ``BaseEstimator._validate_data``."""
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:
        return estimator._validate_data(*args, **kwargs)
    return validate_data(estimator, *args, **kwargs)


def _seed(random_state):
    """A context in which this thread draws from a generator seeded from an int or a ``RandomState``
    (None: cdnn's generator as it is). Its own generator, so that fits running in other threads
    (joblib's threading backend) draw nothing from it."""
    if random_state is None:
        return contextlib.nullcontext()
    from sklearn.utils import check_random_state

    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        seed = int(random_state)
    else:
        seed = int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    return _random.seeded(seed)


def _clone_model(model: Sequential) -> Sequential:
    """A new model of the same architecture and compile settings, with fresh weights (Keras' ``clone_model``)."""
    from cdnn.models.cloning import clone_model

    return clone_model(model)


def _check_model(model) -> None:
    if not isinstance(model, Sequential):
        raise TypeError(
            f"Invalid model: expected the callable `model` to return a cdnn Sequential, received {type(model).__name__}"
        )
    if not model.compiled or model.loss is None or model.optimizer is None:
        raise RuntimeError("Given model needs to be compiled, and have a loss and an optimizer.")


#: the parameters and attributes both estimators document
_SHARED_DOC = """
    Parameters
    ----------
    model : Sequential or callable, optional
        A compiled ``Sequential`` (cloned with fresh weights before each fit,
        unless ``warm_start``), or a callable ``model(X=X, y=y, **model_kwargs)``
        returning a compiled one (``y`` encoded as it will be trained on:
        one-hot for a classifier, 2-D for a regressor). None: an MLP made of
        ``hidden``, ``activation``, ``optimizer`` and ``learning_rate``.
    warm_start : bool, default False
        Continue training the fitted model on the next ``fit`` (the first fit
        of a given ``Sequential`` then starts from its weights).
    model_kwargs : dict, optional
        Keyword arguments of the callable ``model``.
    fit_kwargs : dict, optional
        Keyword arguments of ``Sequential.fit`` (``validation_split``,
        ``callbacks``, ...); they override ``batch_size``, ``epochs`` and
        ``verbose``, and keyword arguments of :meth:`fit` override them.
    hidden : tuple of int, default (100,)
        Units of the hidden ``Dense`` layers of the default MLP.
    activation : str, default "relu"
        Activation of those layers.
    optimizer : str or Optimizer, default "adam"
        Optimizer of the default MLP (an instance is copied, not trained).
    learning_rate : float or None, default 0.001
        Its learning rate (None: the optimizer's own).
    batch_size : int, default 32
    epochs : int, default 10
    random_state : int, RandomState or None, default None
        Seeds cdnn's generator before each fit (None: not reseeded, so fits
        differ unless ``cdnn.utils.set_random_seed`` was called).
    verbose : int, default 0
        ``Sequential.fit``'s progress display.

    Attributes
    ----------
    model_ : Sequential
        The fitted model.
    history_ : dict
        ``model_.fit(...).history``: the per-epoch ``loss`` (and ``accuracy``, ``val_*``).
    n_threads_ : int
        The fit's thread budget, ``cdnn.get_num_threads()`` as it started
        (see the module docstring).
    n_features_in_ : int
        Number of features seen during ``fit``.
"""


class _SKLBase(BaseEstimator):
    """What the classifier and the regressor share: parameters, building and fitting the model."""

    def __init__(
        self,
        model: ModelSpec = None,
        warm_start: bool = False,
        model_kwargs: Optional[dict] = None,
        fit_kwargs: Optional[dict] = None,
        *,
        hidden: Sequence[int] = (100,),
        activation: str = "relu",
        optimizer: Union[str, optimizers_module.Optimizer] = "adam",
        learning_rate: Optional[float] = 0.001,
        batch_size: int = 32,
        epochs: int = 10,
        random_state: Union[None, int, np.random.RandomState] = None,
        verbose: int = 0,
    ) -> None:
        if sklearn is None:
            raise ImportError(f"{type(self).__name__} needs scikit-learn: pip install scikit-learn")
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs
        self.hidden = hidden
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.random_state = random_state
        self.verbose = verbose

    # ---- what subclasses define --------------------------------------------------
    def _validate_target(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` validated, and ``y`` as the model builder sees it."""
        raise NotImplementedError

    def _output_layer(self, y_built: np.ndarray) -> tuple:
        """``(units, activation, loss, metrics)`` of the default MLP."""
        raise NotImplementedError

    def _fit_target(self, model: Sequential, y_built: np.ndarray) -> np.ndarray:
        """``y`` as ``model.fit`` takes it."""
        return y_built

    # ---- building ------------------------------------------------------------------
    def _default_model(self, X: np.ndarray, y_built: np.ndarray) -> Sequential:
        if isinstance(self.hidden, (str, bytes)) or not (
            isinstance(self.hidden, (int, np.integer)) or hasattr(self.hidden, "__iter__")
        ):
            raise invalid(
                "hidden",
                self.hidden,
                "the hidden layers' sizes, a tuple of positive integers such as (100,) or (256, 128)",
            )
        hidden = (self.hidden,) if isinstance(self.hidden, (int, np.integer)) else tuple(self.hidden)
        units, activation, loss, metrics = self._output_layer(y_built)
        model = Sequential(
            [
                layers_module.Input(shape=(X.shape[1],)),
                *[layers_module.Dense(h, activation=self.activation) for h in hidden],
                layers_module.Dense(units, activation=activation),
            ]
        )
        optimizer = optimizers_module.get(copy.deepcopy(self.optimizer))
        if self.learning_rate is not None:
            optimizer.learning_rate = self.learning_rate
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
        return model

    def _get_model(self, X: np.ndarray, y_built: np.ndarray) -> Sequential:
        if self.model is None:
            if self.model_kwargs:
                raise ValueError(
                    "`model_kwargs` are the arguments of a callable `model`; with model=None, set "
                    "hidden, activation, optimizer and learning_rate instead"
                )
            return self._default_model(X, y_built)
        if isinstance(self.model, Sequential):
            return copy.deepcopy(self.model) if self.warm_start else _clone_model(self.model)
        if callable(self.model):
            return self.model(X=X, y=y_built, **(self.model_kwargs or {}))
        raise invalid("model", self.model, "None, a compiled cdnn Sequential, or a callable returning one")

    # ---- scikit-learn API ----------------------------------------------------------
    def fit(self, X, y, **kwargs) -> _SKLBase:
        """Build (or, with ``warm_start``, reuse) the model and train it on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
        **kwargs
            Passed to ``Sequential.fit``, overriding ``fit_kwargs``.

        Returns
        -------
        self
        """
        warm = bool(self.warm_start) and hasattr(self, "model_")
        X, y_built = self._validate_target(X, y, reset=not warm)
        with _seed(self.random_state):
            model = self.model_ if warm else self._get_model(X, y_built)
            _check_model(model)
            if not model.built:
                model.build((None, X.shape[1]))
            args = {
                "batch_size": self.batch_size,
                "epochs": self.epochs,
                "verbose": self.verbose,
                **(self.fit_kwargs or {}),
                **kwargs,
            }
            self.n_threads_ = get_num_threads()
            history = model.fit(X, self._fit_target(model, y_built), **args)
        self.model_ = model
        self.history_ = {k: list(v) for k, v in history.history.items()}
        return self

    def _raw_predict(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        X = _validate_data(self, X, dtype=np.float32, reset=False)
        return self.model_.predict(X, verbose=0).astype(np.float64)


class SKLearnClassifier(ClassifierMixin, _SKLBase):
    """A cdnn network as a scikit-learn classifier (Keras 3's ``keras.wrappers.SKLearnClassifier``).

    Labels may be any values scikit-learn accepts (``classes_`` keeps them
    sorted). The model is trained on them encoded as its loss expects:
    class indices for ``sparse_categorical_crossentropy`` (the default MLP:
    softmax over ``len(classes_)`` units), 0/1 for a one-unit output of two
    classes, else one-hot (Keras' wrapper). ``classes_`` holds the labels.
    """

    def _validate_target(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.utils.multiclass import check_classification_targets

        X, y = _validate_data(self, X, y, dtype=np.float32, reset=reset)
        check_classification_targets(y)
        if reset:
            self.classes_, codes = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError("Classifier can't train when only one class is present.")
        else:
            unseen = np.setdiff1d(y, self.classes_)
            if unseen.size:
                raise ValueError(
                    f"Invalid labels in `y`: {unseen[:5].tolist()} were not seen by the first fit; "
                    f"warm_start continues training on classes {self.classes_.tolist()}"
                )
            codes = np.searchsorted(self.classes_, y)
        return X, np.eye(len(self.classes_), dtype=np.float32)[codes]  # one-hot, as Keras' wrapper

    def _output_layer(self, y_built: np.ndarray) -> tuple:
        return y_built.shape[1], "softmax", "sparse_categorical_crossentropy", ["accuracy"]

    def _fit_target(self, model: Sequential, y_built: np.ndarray) -> np.ndarray:
        units, classes = model.output_shape[-1], y_built.shape[1]
        if units != classes and not (units == 1 and classes == 2):
            raise ValueError(
                f"Invalid model: its output has {units} units, expected one per class ({classes}, or 1 for two classes)"
            )
        codes = y_built.argmax(axis=1)
        if model.loss.core_name == "sparse_categorical_crossentropy":
            return codes.astype(np.int32)
        if units == 1:
            return codes.astype(np.float32).reshape(-1, 1)
        return y_built

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        p = self._raw_predict(X)
        if p.shape[1] == 1 and len(self.classes_) == 2:
            p = np.hstack([1.0 - p, p])
        elif self.model_._dense_stack()[-1]["layer"].activation.__name__ == "softmax":
            # a float32 softmax sums to 1 within ~3e-7; in float64 scikit-learn wants 1 within 1.5e-8
            # (log_loss, scoring="neg_log_loss" warned at every call)
            p /= p.sum(axis=1, keepdims=True)
        return p

    def predict(self, X) -> np.ndarray:
        """The most probable class of each sample, from ``classes_``."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"poor_score": True, "non_deterministic": self.random_state is None}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True
        tags.non_deterministic = self.random_state is None
        return tags


class SKLearnRegressor(RegressorMixin, _SKLBase):
    """A cdnn network as a scikit-learn regressor (Keras 3's ``keras.wrappers.SKLearnRegressor``).

    ``y`` of shape (n_samples,) or (n_samples, n_outputs); predictions have
    the same number of dimensions. The default MLP ends in a linear
    ``Dense(n_outputs)`` trained on the mean squared error; ``score`` is R².
    Targets are not rescaled: standardise them (e.g. with
    ``sklearn.compose.TransformedTargetRegressor``) when they are large.
    """

    def _validate_target(self, X, y, reset: bool) -> tuple[np.ndarray, np.ndarray]:
        X, y = _validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True, reset=reset)
        if reset:
            self._y_ndim = y.ndim
        y = y.reshape(len(y), -1)
        with np.errstate(over="ignore"):
            y32 = y.astype(np.float32)
        if not np.isfinite(y32).all():
            raise ValueError("Invalid values in `y`: beyond float32's range (3.4e38)")
        return X, y32

    def _output_layer(self, y_built: np.ndarray) -> tuple:
        return y_built.shape[1], None, "mse", None

    def predict(self, X) -> np.ndarray:
        """Predicted targets, shape (n_samples,) or (n_samples, n_outputs) as ``y`` was."""
        p = self._raw_predict(X)
        return p[:, 0] if self._y_ndim == 1 and p.shape[1] == 1 else p

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"poor_score": True, "multioutput": True, "non_deterministic": self.random_state is None}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        tags.target_tags.multi_output = True
        tags.non_deterministic = self.random_state is None
        return tags


SKLearnClassifier.__doc__ += (
    _SHARED_DOC
    + """    classes_ : ndarray of shape (n_classes,)
        The labels seen by ``fit``, sorted.

    Examples
    --------
    >>> from cdnn.wrappers import SKLearnClassifier
    >>> clf = SKLearnClassifier(hidden=(64,), epochs=5, random_state=0).fit(X, y)  # doctest: +SKIP
    >>> clf.predict_proba(X[:2]), clf.score(X, y)  # doctest: +SKIP
"""
)
SKLearnRegressor.__doc__ += _SHARED_DOC
