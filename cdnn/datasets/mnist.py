"""MNIST: 28x28 grayscale images of handwritten digits 0 to 9.

60,000 training and 10,000 test images (LeCun, Cortes and Burges).
"""

from __future__ import annotations

import numpy as np

from . import fashion_mnist
from ._fetch import Dataset, FileSpec, load

# What is and is not verified for MNIST.
#
# The SHA-256 of the *decompressed* MNIST files could not be established from
# a public, documented source here (and, with no network, not by downloading
# them), so `sha256` is None. What is pinned is the SHA-256 of the original
# .gz files, which many independent projects document for the mirrors below
# (e.g. TensorFlow's cvdf-datasets mirror and the torchvision/ossci mirror).
# torchvision also pins their MD5s: f68b3c2dcbeaaa9fbdd348bbdeb94873,
# d53e105ee54ea40749a09fcbcd1e9432, 9fb629c4189551a2d022fa330f9573f3,
# ec29112dd5afa0611ce80d1b7f02629c (same order as below).
#
# So:
# - a download is checked by the SHA-256 of the .gz as fetched, plus the IDX
#   structure and shape: it is fully verified;
# - a local .gz copy is checked by gzip's own CRC-32 and length trailer, the
#   IDX structure and the shape (a recompressed copy has a different .gz
#   hash, so that hash cannot be required of local files);
# - a local uncompressed copy is checked by its IDX structure and shape only.
# Any copy that is byte-for-byte a Fashion-MNIST file is rejected, so a
# CDNN_DATA directory holding Fashion-MNIST is not mistaken for MNIST.
# Once the decompressed hashes are known, put them in `sha256` and every
# copy is verified as Fashion-MNIST's are.
DATASET = Dataset(
    title="MNIST",
    dirname="mnist",
    files=(
        FileSpec(
            "train-images-idx3-ubyte",
            (60000, 28, 28),
            sha256=None,
            gz_sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        FileSpec(
            "train-labels-idx1-ubyte",
            (60000,),
            sha256=None,
            gz_sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        FileSpec(
            "t10k-images-idx3-ubyte",
            (10000, 28, 28),
            sha256=None,
            gz_sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        FileSpec(
            "t10k-labels-idx1-ubyte",
            (10000,),
            sha256=None,
            gz_sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    # Keras serves MNIST only as mnist.npz, so the IDX mirrors are TensorFlow's
    # and PyTorch's.
    mirrors=(
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
    ),
    # By analogy with Fashion-MNIST's; no Debian package installs it today.
    system_dir="/usr/share/datasets/mnist",
    system_package=None,
    foreign_sha256={spec.sha256: f"the Fashion-MNIST file {spec.name}" for spec in fashion_mnist.DATASET.files},
)


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load MNIST, as ``keras.datasets.mnist.load_data()`` does.

    The four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each ``.gz`` or
    uncompressed) are looked for, in order, in

    1. ``$CDNN_DATA/mnist/``, then ``$CDNN_DATA/`` itself;
    2. the cache, ``$XDG_CACHE_HOME/cdnn/mnist/`` (default
       ``~/.cache/cdnn/mnist/``);
    3. ``/usr/share/datasets/mnist/``;

    and the missing ones are downloaded into the cache. See the comment on
    `DATASET` for what is verified.

    Returns
    -------
    (x_train, y_train), (x_test, y_test) : tuple of tuple of numpy.ndarray
        Writable ``uint8`` arrays of shapes ``(60000, 28, 28)``, ``(60000,)``,
        ``(10000, 28, 28)`` and ``(10000,)``; labels are 0 to 9.

    Raises
    ------
    CorruptDatasetError
        A file found is malformed or is a Fashion-MNIST file (a `DatasetError`
        and a `ValueError`). The message names the file and the fix.
    DatasetNotFoundError
        A file is on this machine nowhere and could not be downloaded (a
        `DatasetError` and a `FileNotFoundError`). The message says why and
        the three ways to provide it.
    """
    return load(DATASET)
