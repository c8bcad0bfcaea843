"""Fashion-MNIST: 28x28 grayscale images of clothing in 10 classes.

Zalando's drop-in replacement for MNIST: 60,000 training and 10,000 test
images. The classes are 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress,
4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot.
The copyright is held by Zalando SE; the data is under the MIT license.
"""

from __future__ import annotations

import numpy as np

from ._fetch import Dataset, FileSpec, load

# sha256: of the decompressed IDX file, the same for Debian's recompressed
# .gz files and upstream's (checked here against Debian's copy).
# gz_sha256: of upstream's .gz files, as pinned by Keras
# (keras/src/datasets/fashion_mnist.py); not needed while sha256 is known.
DATASET = Dataset(
    title="Fashion-MNIST",
    dirname="fashion-mnist",
    files=(
        FileSpec(
            "train-images-idx3-ubyte",
            (60000, 28, 28),
            sha256="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            gz_sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        FileSpec(
            "train-labels-idx1-ubyte",
            (60000,),
            sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            gz_sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        FileSpec(
            "t10k-images-idx3-ubyte",
            (10000, 28, 28),
            sha256="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            gz_sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte",
            (10000,),
            sha256="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            gz_sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    ),
    # Keras' mirror, then Zalando's. The latter is an S3 *website* endpoint,
    # which serves plain HTTP only (no https:// form); the SHA-256 check makes
    # that safe.
    mirrors=(
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    system_dir="/usr/share/datasets/fashion-mnist",
    system_package="dataset-fashion-mnist",
)


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST, as ``keras.datasets.fashion_mnist.load_data()`` does.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each ``.gz`` or
    uncompressed) are looked for, in order, in

    1. ``$CDNN_DATA/fashion-mnist/``, then ``$CDNN_DATA/`` itself;
    2. the cache, ``$XDG_CACHE_HOME/cdnn/fashion-mnist/`` (default
       ``~/.cache/cdnn/fashion-mnist/``);
    3. ``/usr/share/datasets/fashion-mnist/``, installed by
       ``apt-get install dataset-fashion-mnist``;

    and the missing ones are downloaded into the cache. Every file is checked
    against the SHA-256 of its decompressed content.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuple of numpy.ndarray
        Writable ``uint8`` arrays of shapes ``(60000, 28, 28)``, ``(60000,)``,
        ``(10000, 28, 28)`` and ``(10000,)``; labels are 0 to 9.

    Raises
    ------
    CorruptDatasetError
        A file found is malformed or has the wrong content (a `DatasetError`
        and a `ValueError`). The message names the file and the fix.
    DatasetNotFoundError
        A file is on this machine nowhere and could not be downloaded (a
        `DatasetError` and a `FileNotFoundError`). The message says why and
        the three ways to provide it.

    Examples
    --------
    >>> (x_train, y_train), (x_test, y_test) = fashion_mnist.load_data()
    >>> x_train.shape, int(y_train[0])
    ((60000, 28, 28), 9)
    """
    return load(DATASET)
