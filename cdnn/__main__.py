"""``python -m cdnn``: train and evaluate a Fashion-MNIST classifier, and report.

The protocol keeps the test set for one measurement: the last
``--validation-split`` of the training images is held out, every per-epoch
figure (and anything a schedule or early stopping decides) comes from it, and
the test images are evaluated once, after training. The default network and
schedule were chosen on that validation split only (see docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

from cdnn._core import MAX_THREADS
from cdnn._version import __version__
from cdnn.optimizers import _FLOAT32_MAX

DEFAULTS = {
    "epochs": 20,
    "batch_size": 128,
    "hidden": "512,256",
    "activation": "relu",
    "optimizer": "adam",
    "learning_rate": 0.001,
    "dropout": 0.3,
    "lr_decay": 0.9,
    "seed": 42,
    "validation_split": 0.1,
}


#: the most units a hidden layer may have here: 784 x 2**20 float32 weights are 3 GiB already
MAX_UNITS = 1 << 20


def _hidden(text: str) -> list[int]:
    expected = f"expected comma-separated positive integers up to {MAX_UNITS}, e.g. 256,128; got {text!r}"
    try:
        units = [int(u) for u in text.split(",")]  # an empty field ("256,,128", "") is an error, not skipped
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if any(not 0 < u <= MAX_UNITS for u in units):
        raise argparse.ArgumentTypeError(expected)
    return units


def _path(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file path, got an empty one")
    return text


def _number(cast, accept, expected: str):
    """An argparse type: ``cast`` the text and require ``accept(value)``, else say what was ``expected``."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v > 0, "a positive integer")
_threads = _number(int, lambda v: 0 < v <= MAX_THREADS, f"a number of threads from 1 to {MAX_THREADS}")
_seed = _number(int, lambda v: v >= 0, "a non-negative integer")
_learning_rate = _number(float, lambda v: 0 < v <= _FLOAT32_MAX, "a positive float32 number (at most 3.4e38)")
_decay = _number(float, lambda v: 0 < v <= 1, "a factor in (0, 1] (1 for no decay)")
_rate = _number(float, lambda v: 0 <= v < 1, "a rate in [0, 1)")
_split = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line (``python -m cdnn --help``)."""
    p = argparse.ArgumentParser(
        prog="python -m cdnn",
        description="Train a dense network on Fashion-MNIST (or MNIST) with cdnn, validating on a held-out part of "
        "the training images, then report the test accuracy (measured once) and the training time.",
    )
    d = DEFAULTS
    p.add_argument("--epochs", type=_positive_int, default=d["epochs"], help="epochs (default %(default)s)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=d["batch_size"], help="mini-batch size (default %(default)s)"
    )
    p.add_argument(
        "--hidden",
        type=_hidden,
        default=_hidden(d["hidden"]),
        help=f"hidden layer sizes, comma separated (default {d['hidden']})",
    )
    p.add_argument(
        "--activation",
        default=d["activation"],
        choices=["relu", "sigmoid", "tanh", "leaky_relu", "gelu", "linear"],
        help="hidden activation (default %(default)s)",
    )
    p.add_argument(
        "--optimizer",
        default=d["optimizer"],
        choices=["sgd", "adam", "rmsprop", "adagrad"],
        help="optimizer (default %(default)s)",
    )
    p.add_argument(
        "--learning-rate", type=_learning_rate, default=d["learning_rate"], help="learning rate (default %(default)s)"
    )
    p.add_argument(
        "--dropout",
        type=_rate,
        default=d["dropout"],
        help="dropout rate after each hidden layer, 0 for none (default %(default)s)",
    )
    p.add_argument(
        "--lr-decay",
        type=_decay,
        default=d["lr_decay"],
        help="multiply the learning rate by this after every epoch, 1 for none (default %(default)s)",
    )
    p.add_argument(
        "--validation-split",
        type=_split,
        default=d["validation_split"],
        help="fraction of the training images held out for validation, the last ones "
        "(default %(default)s); the test images are evaluated once, after training",
    )
    p.add_argument("--threads", type=_threads, default=None, help="threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--seed", type=_seed, default=d["seed"], help="random seed (default %(default)s)")
    p.add_argument(
        "--dataset", default="fashion_mnist", choices=["fashion_mnist", "mnist"], help="data set (default %(default)s)"
    )
    p.add_argument("--limit", type=_positive_int, default=None, help="train on the first N images only (quick runs)")
    p.add_argument(
        "--save",
        metavar="PATH",
        type=_path,
        default=None,
        help="save the trained model here (cdnn.load_model reads it)",
    )
    p.add_argument(
        "--plot",
        metavar="PATH",
        type=_path,
        default=None,
        help="write loss/accuracy curves as a PNG (needs matplotlib)",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final result line")
    p.add_argument("--version", action="version", version=f"cdnn {__version__}")
    return p.parse_args(argv)


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib (or pip install cdnn[plot])") from None
    return plt


def _check_output(option: str, path: str) -> None:
    """Refuse before training, not after it, an output path that cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OSError(f"{option} {path}: is a folder, expected a file path")
    if not os.path.isdir(folder):
        raise OSError(f"{option} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OSError(f"{option} {path}: folder {folder} is not writable")


def _plot(history: dict, path: str) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label="train")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


_KIND = {"CDNN_DATA": "$CDNN_DATA", "cache": "the cache", "system": "the system copy"}


def _data_source(dataset) -> str:
    """Where the loaded files are, e.g. ``/usr/share/datasets/fashion-mnist (the system copy)``."""
    from cdnn.datasets import _fetch

    places = []
    for found in _fetch.locate(dataset):
        if found is not None:
            place = f"{found[1].parent} ({_KIND.get(found[0], found[0])})"
            if place not in places:
                places.append(place)
    return ", ".join(places) or "nowhere"


def _hyperparameters(args: argparse.Namespace) -> str:
    """The settings that ran, as one line (the options that change them in brackets)."""
    decay = f", x{args.lr_decay:g} per epoch" if args.lr_decay != 1 else ""
    return (
        f"hidden {','.join(map(str, args.hidden))} {args.activation}, dropout {args.dropout:g}, "
        f"{args.optimizer} learning rate {args.learning_rate:g}{decay}, batch {args.batch_size}, "
        f"{args.epochs} epochs, seed {args.seed}, validation split {args.validation_split:g}"
    )


def run(args: argparse.Namespace) -> dict:
    """Train and evaluate as ``args`` says; returns the results (also printed unless quiet)."""
    import cdnn
    from cdnn import datasets, layers

    if args.save:
        _check_output("--save", args.save)
    if args.plot:
        _check_output("--plot", args.plot)
        _pyplot()
    if args.threads:
        cdnn.set_num_threads(args.threads)
    cdnn.utils.set_random_seed(args.seed)
    loader = getattr(datasets, args.dataset)
    interactive = cdnn.utils.is_interactive_logging_enabled()
    if args.quiet:
        cdnn.utils.disable_interactive_logging()  # no "Downloading ..." lines either
    try:
        (x_train, y_train), (x_test, y_test) = loader.load_data()
    finally:
        if interactive:
            cdnn.utils.enable_interactive_logging()
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    x_train = x_train.reshape(len(x_train), -1).astype("float32") / 255.0
    x_test = x_test.reshape(len(x_test), -1).astype("float32") / 255.0
    # the last images of the training set, as fit's validation_split takes them; never the test set
    (x_fit, y_fit), (x_val, y_val) = cdnn.utils.split_dataset((x_train, y_train), right_size=args.validation_split)

    stack = [layers.Input(shape=(784,))]
    for units in args.hidden:
        stack.append(layers.Dense(units, activation=args.activation))
        if args.dropout:
            stack.append(layers.Dropout(args.dropout))
    stack.append(layers.Dense(10, activation="softmax"))
    model = cdnn.Sequential(stack, name=f"{args.dataset}_mlp")
    optimizer = cdnn.optimizers.get(args.optimizer)
    optimizer.learning_rate = args.learning_rate
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    verbose = 0 if args.quiet else 1
    if not args.quiet:
        info = cdnn.build_info()
        print(
            f"cdnn {cdnn.__version__}: {info['threads']} threads, SIMD {info['simd_selected']}, "
            f"OpenMP {'on' if info['openmp'] else 'off'}, {info['cpu']}"
        )
        print(
            f"data: {args.dataset} from {_data_source(loader.DATASET)}: {len(x_fit)} training images, "
            f"{len(x_val)} held out for validation (the last {args.validation_split:.0%} of the training set), "
            f"{len(x_test)} test images"
        )
        print(f"settings: {_hyperparameters(args)}")
        model.summary()
    start = time.perf_counter()
    decay = cdnn.callbacks.LearningRateScheduler(lambda epoch: args.learning_rate * args.lr_decay**epoch)
    history = model.fit(
        x_fit,
        y_fit,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        verbose=verbose,
        callbacks=[decay],
    )
    train_seconds = time.perf_counter() - start
    # the one look at the test set
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    result = {
        "test_loss": loss,
        "test_accuracy": accuracy,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / args.epochs,
        "history": history.history,
    }
    # the result first: a failure to write the outputs below must not lose it
    print(
        f"test accuracy: {accuracy:.4f}  test loss: {loss:.4f}  training: {train_seconds:.1f} s "
        f"({train_seconds / args.epochs:.2f} s/epoch incl. validation)",
        flush=True,
    )
    if args.save:
        model.save(args.save)
    if args.plot:
        _plot(history.history, args.plot)
    if args.save and not args.quiet:
        print(f"model saved to {args.save}")
    if args.plot and not args.quiet:
        print(f"curves written to {args.plot}")
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: 0 on success, 1 with a one-line message on failure."""
    args = parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except MemoryError as exc:
        print(
            f"python -m cdnn: error: not enough memory ({' '.join(str(exc).split()) or 'MemoryError'}); "
            f"try fewer or smaller --hidden layers, or --limit",
            file=sys.stderr,
        )
        return 1
    except (OSError, ValueError, RuntimeError) as exc:
        message = " ".join(str(exc).split())
        print(f"python -m cdnn: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
