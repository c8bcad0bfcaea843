"""Datasets, loaded as Keras loads them.

>>> from cdnn.datasets import fashion_mnist
>>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()

Files are looked for in ``$CDNN_DATA``, the user cache and the system copy,
then downloaded; see `cdnn.datasets._fetch` for the details. Only the
standard library and NumPy are used.
"""

from . import fashion_mnist, mnist
from ._fetch import CorruptDatasetError, DatasetError, DatasetNotFoundError

__all__ = [
    "CorruptDatasetError",
    "DatasetError",
    "DatasetNotFoundError",
    "fashion_mnist",
    "mnist",
]
