"""Keras layers (``cdnn.layers.Dense``...), one module per family."""

from cdnn.layers.activations import ELU, Activation, LeakyReLU, PReLU, ReLU, Softmax
from cdnn.layers.core import Dense, Identity, Input, InputLayer, Layer, deserialize
from cdnn.layers.merging import (
    Add,
    Average,
    Concatenate,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    maximum,
    minimum,
    multiply,
    subtract,
)
from cdnn.layers.normalization import BatchNormalization, LayerNormalization
from cdnn.layers.preprocessing import Normalization, Rescaling
from cdnn.layers.regularization import ActivityRegularization, AlphaDropout, Dropout, GaussianDropout, GaussianNoise
from cdnn.layers.reshaping import Flatten, Reshape

__all__ = [
    "Layer",
    "InputLayer",
    "Input",
    "Dense",
    "Identity",
    "Flatten",
    "Reshape",
    "Dropout",
    "GaussianNoise",
    "BatchNormalization",
    "LayerNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "ELU",
    "PReLU",
    "GaussianDropout",
    "ActivityRegularization",
    "AlphaDropout",
    "Rescaling",
    "Normalization",
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "concatenate",
    "add",
    "subtract",
    "multiply",
    "average",
    "maximum",
    "minimum",
    "deserialize",
]
