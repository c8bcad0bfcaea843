"""Keras layers (``cdnn.layers.Dense``...), one module per family."""

from cdnn.layers.activations import Activation, LeakyReLU, ReLU, Softmax
from cdnn.layers.core import Dense, Identity, Input, InputLayer, Layer, deserialize
from cdnn.layers.merging import (
    Add,
    Average,
    Concatenate,
    Dot,
    Maximum,
    Minimum,
    Multiply,
    Subtract,
    add,
    average,
    concatenate,
    dot,
    maximum,
    minimum,
    multiply,
    subtract,
)
from cdnn.layers.normalization import BatchNormalization, LayerNormalization, RMSNormalization, UnitNormalization
from cdnn.layers.preprocessing import Normalization, Rescaling
from cdnn.layers.regularization import Dropout, GaussianNoise
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
    "UnitNormalization",
    "RMSNormalization",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "Rescaling",
    "Normalization",
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
    "Dot",
    "concatenate",
    "add",
    "subtract",
    "multiply",
    "average",
    "maximum",
    "minimum",
    "dot",
    "deserialize",
]
