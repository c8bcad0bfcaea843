"""Normalization layers: ``BatchNormalization``, ``LayerNormalization``, ``UnitNormalization``,
``RMSNormalization`` (last axis, as Keras' default)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cdnn import constraints, initializers, regularizers
from cdnn._errors import invalid
from cdnn.layers.core import Layer, Shape, _float_arg, _refuse_unsupported, register

__all__ = ["BatchNormalization", "LayerNormalization", "UnitNormalization", "RMSNormalization"]


def _axis(axis) -> int:
    if axis not in (-1, [-1], (-1,)):
        raise invalid("axis", axis, "-1 (cdnn normalizes the last axis)")
    return -1


class _NormRules:
    """gamma/beta regularizers and constraints (Keras' arguments), applied in C by the graph's training step."""

    gamma: Optional[np.ndarray]
    beta: Optional[np.ndarray]
    trainable: bool
    built: bool

    def _set_rules(self, gamma_regularizer, beta_regularizer, gamma_constraint, beta_constraint) -> None:
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.beta_constraint = constraints.get(beta_constraint)
        self._core_rules()  # refuse what the C core cannot apply, now

    def _core_rules(self) -> dict:
        """The rules as the C core reads them (``gamma_rules``/``beta_rules``)."""
        rules = {}
        for key, arg, reg, con in (
            ("gamma_rules", "gamma_regularizer", self.gamma_regularizer, self.gamma_constraint),
            ("beta_rules", "beta_regularizer", self.beta_regularizer, self.beta_constraint),
        ):
            r: dict = {}
            if reg is not None:
                r.update(reg._core())
                if r.get("orth_factor"):
                    raise ValueError(
                        f"Invalid value for argument `{arg}`: OrthogonalRegularizer needs a 2-D kernel "
                        f"(Keras: inputs must have rank 2), {key[:-6]} is 1-D"
                    )
            if con is not None:
                r.update(con._core())
                r["axis"] = 0  # one vector: its norm is over all of it
            rules[key] = r
        return rules

    @property
    def losses(self) -> list[float]:
        """The regularization penalties at the current weights (Keras' ``layer.losses``)."""
        out = []
        if self.built and self.trainable:
            for reg, w in ((self.gamma_regularizer, self.gamma), (self.beta_regularizer, self.beta)):
                if reg is not None and w is not None:
                    out.append(reg(w))
        return out

    def _penalty(self) -> float:
        return float(sum(self.losses))

    def _rules_config(self) -> dict:
        return {
            "beta_regularizer": regularizers.serialize(self.beta_regularizer) if self.beta_regularizer else None,
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer) if self.gamma_regularizer else None,
            "beta_constraint": constraints.serialize(self.beta_constraint) if self.beta_constraint else None,
            "gamma_constraint": constraints.serialize(self.gamma_constraint) if self.gamma_constraint else None,
        }


class BatchNormalization(_NormRules, Layer):
    """Normalize each feature by the batch's mean and variance in training, by moving ones in inference.

    Keras 3's formulas and defaults: ``momentum=0.99``, ``epsilon=1e-3``;
    in training ``y = gamma * (x - mean_b) / sqrt(var_b + epsilon) + beta`` with
    the biased batch variance, and ``moving = moving * momentum + batch * (1 - momentum)``;
    in inference the moving statistics replace the batch ones. A frozen layer
    (``trainable = False``) runs in inference mode during training too, as in Keras 3.
    Weights, in Keras' order: gamma, beta, moving_mean, moving_variance.
    """

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        name: Optional[str] = None,
        **kwargs,
    ) -> None:
        _refuse_unsupported(
            "BatchNormalization",
            kwargs,
            {
                "synchronized": False,
                "renorm": False,
                "virtual_batch_size": None,
                "fused": None,
                "adjustment": None,
                "renorm_clipping": None,
                "renorm_momentum": 0.99,
            },
        )
        super().__init__(name=name, **kwargs)
        self.axis = _axis(axis)
        self.momentum = _float_arg(momentum, "momentum", 0.0, 1.0, "a number in [0, 1]")
        self.epsilon = _float_arg(epsilon, "epsilon", 0.0, np.inf, "a positive number")
        if self.epsilon <= 0:
            raise invalid("epsilon", epsilon, "a positive number")
        self.center, self.scale = bool(center), bool(scale)
        self.initializers = {
            "beta_initializer": beta_initializer,
            "gamma_initializer": gamma_initializer,
            "moving_mean_initializer": moving_mean_initializer,
            "moving_variance_initializer": moving_variance_initializer,
        }
        for v in self.initializers.values():
            initializers.get(v)
        self.gamma = self.beta = self.moving_mean = self.moving_variance = None
        self._set_rules(gamma_regularizer, beta_regularizer, gamma_constraint, beta_constraint)

    def build(self, input_shape: Shape) -> None:
        width = (int(input_shape[-1]),)
        init = {k: initializers.get(v) for k, v in self.initializers.items()}
        self.gamma = init["gamma_initializer"](width) if self.scale else None
        self.beta = init["beta_initializer"](width) if self.center else None
        self.moving_mean = init["moving_mean_initializer"](width)
        self.moving_variance = init["moving_variance_initializer"](width)
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        if input_shape[-1] != self.moving_mean.shape[0]:
            raise self._incompatible(input_shape, f"axis -1 of input shape to have value {self.moving_mean.shape[0]}")

    @property
    def weights(self) -> list[np.ndarray]:
        if not self.built:
            return []
        return self._trainable_weight_list() + self._non_trainable_weight_list()

    def _trainable_weight_list(self) -> list[np.ndarray]:
        return [w for w in (self.gamma, self.beta) if w is not None] if self.built else []

    def _non_trainable_weight_list(self) -> list[np.ndarray]:
        return [self.moving_mean, self.moving_variance] if self.built else []

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            **self.initializers,
            **self._rules_config(),
            "synchronized": False,
        }

    def _lower(self, input_shapes: list, training) -> dict:
        return {
            "op": "batchnorm",
            "gamma": self.gamma,
            "beta": self.beta,
            "moving_mean": self.moving_mean,
            "moving_variance": self.moving_variance,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "trainable": self.trainable,
            **self._core_rules(),
            "inference": not training,
        }


class LayerNormalization(_NormRules, Layer):
    """Normalize each sample over its last axis: ``gamma * (x - mean) / sqrt(var + epsilon) + beta``."""

    def __init__(
        self,
        axis: int = -1,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        name: Optional[str] = None,
        **kwargs,
    ) -> None:
        _refuse_unsupported(
            "LayerNormalization",
            kwargs,
            {"rms_scaling": False},
        )
        super().__init__(name=name, **kwargs)
        self.axis = _axis(axis)
        self.epsilon = _float_arg(epsilon, "epsilon", 0.0, np.inf, "a positive number")
        if self.epsilon <= 0:
            raise invalid("epsilon", epsilon, "a positive number")
        self.center, self.scale = bool(center), bool(scale)
        self.initializers = {"beta_initializer": beta_initializer, "gamma_initializer": gamma_initializer}
        for v in self.initializers.values():
            initializers.get(v)
        self.gamma = self.beta = None
        self._set_rules(gamma_regularizer, beta_regularizer, gamma_constraint, beta_constraint)

    def build(self, input_shape: Shape) -> None:
        width = (int(input_shape[-1]),)
        self.gamma = initializers.get(self.initializers["gamma_initializer"])(width) if self.scale else None
        self.beta = initializers.get(self.initializers["beta_initializer"])(width) if self.center else None
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        width = self._build_input_shape[-1]
        if input_shape[-1] != width:
            raise self._incompatible(input_shape, f"axis -1 of input shape to have value {width}")

    @property
    def weights(self) -> list[np.ndarray]:
        return [w for w in (self.gamma, self.beta) if w is not None] if self.built else []

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "axis": self.axis,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "rms_scaling": False,
            **self.initializers,
            **self._rules_config(),
        }

    def _lower(self, input_shapes: list, training) -> dict:
        return {
            "op": "layernorm",
            "gamma": self.gamma,
            "beta": self.beta,
            "epsilon": self.epsilon,
            "trainable": self.trainable,
            **self._core_rules(),
        }


class _RowNorm(Layer):
    """Normalizes each sample over Keras' ``axis`` (an int or a list of one), which must be the last."""

    def __init__(self, axis=-1, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        listed = isinstance(axis, (list, tuple))
        if type(axis[0] if listed and len(axis) == 1 else axis) is not int:
            raise invalid("axis", axis, "an int or a list of one int (cdnn normalizes the last axis)")
        self.axis = list(axis) if listed else axis

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        rank, shape = len(input_shape) + 1, (None, *input_shape)
        a = self.axis[0] if isinstance(self.axis, list) else self.axis
        if not -rank <= a < rank:
            raise ValueError(f"Axis {self.axis} is out of bounds for input shape {shape}.")
        if a % rank != rank - 1:
            raise ValueError(f"{self.name!r}: axis={self.axis} is not the last axis of {shape}, which cdnn normalizes")
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "axis": self.axis}


class UnitNormalization(_RowNorm):
    """``x * min(1 / ||x||, 1e12)`` over the last axis (Keras' epsilon 1e-12)."""

    def _lower(self, input_shapes: list, training) -> dict:
        return {"op": "unitnorm", "epsilon": 1e-12}


class RMSNormalization(_RowNorm):
    """``x / sqrt(mean(x**2) + epsilon) * scale`` over the last axis; ``scale`` (ones) trains."""

    def __init__(self, axis=-1, epsilon: float = 1e-6, name: Optional[str] = None, **kwargs) -> None:
        super().__init__(axis, name=name, **kwargs)
        self.epsilon = _float_arg(epsilon, "epsilon", 0.0, np.inf, "a positive number")
        if self.epsilon <= 0:
            raise invalid("epsilon", epsilon, "a positive number")
        self.scale: Optional[np.ndarray] = None

    def build(self, input_shape: Shape) -> None:
        self.compute_output_shape(input_shape)
        self.scale = np.ones(int(input_shape[-1]), np.float32)
        if not isinstance(self.axis, list):
            self.axis = [self.axis]  # as Keras' build
        super().build(input_shape)

    def _check_call_shape(self, input_shape) -> None:
        if input_shape[-1] != self.scale.shape[0]:
            raise self._incompatible(input_shape, f"axis -1 of input shape to have value {self.scale.shape[0]}")

    @property
    def weights(self) -> list[np.ndarray]:
        return [self.scale] if self.built else []

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}

    def _lower(self, input_shapes: list, training) -> dict:
        return {
            "op": "rmsnorm",
            "gamma": self.scale,
            "beta": None,
            "epsilon": self.epsilon,
            "trainable": self.trainable,
        }


register(BatchNormalization, LayerNormalization, UnitNormalization, RMSNormalization)
