"""Keras layers (``cdnn.layers.Dense``...), one module per family."""
from cdnn.layers.core import Dense, Dropout, Flatten, Input, InputLayer, Layer, deserialize

__all__ = ["Layer", "InputLayer", "Input", "Flatten", "Dense", "Dropout", "deserialize"]
