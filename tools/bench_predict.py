"""Batch-1 and 10k-row predict of cdnn against ONNX Runtime (and JAX), interleaved in one process.

Prints, per case, each contender's median and quartiles per call and the ratio of medians to
ONNX Runtime; with other work on the machine only the ratios mean anything (the load is printed).
Run from the repository root: ``python tools/bench_predict.py [--rounds N] [--jax]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

# the cdnn of this checkout (or of CDNN_ROOT), not an installed one
sys.path.insert(0, os.environ.get("CDNN_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NETWORKS = {"W2": [784, 100, 10], "BIG": [784, 512, 256, 10]}


def _model(sizes):
    import cdnn as keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.layers.Input(shape=(sizes[0],))]
        + [keras.layers.Dense(u, activation="relu") for u in sizes[1:-1]]
        + [keras.layers.Dense(sizes[-1], activation="softmax")]
    )


def _ort(model, threads):
    import onnxruntime as ort

    path = os.path.join(tempfile.mkdtemp(), "m.onnx")
    model.export(path, format="onnx", verbose=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    s = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def _jax(model):
    import jax

    ws = model.get_weights()
    params = [(jax.numpy.asarray(W), jax.numpy.asarray(b)) for W, b in zip(ws[0::2], ws[1::2])]

    @jax.jit
    def forward(p, x):
        h = x
        for W, b in p[:-1]:
            h = jax.nn.relu(h @ W + b)
        return jax.nn.softmax(h @ p[-1][0] + p[-1][1])

    return lambda x: forward(params, x).block_until_ready()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--jax", action="store_true")
    ap.add_argument("--nets", default="W2,BIG")
    ap.add_argument("--rows", default="1,10000")
    a = ap.parse_args()
    threads = os.cpu_count() or 1
    for net, sizes in NETWORKS.items():
        if net not in a.nets.split(","):
            continue
        model = _model(sizes)
        contenders = {
            "predict": lambda x, m=model: m.predict(x, verbose=0),
            "on_batch": model.predict_on_batch,
            "call": model,
            "ort": _ort(model, threads),
            "ort-1thr": _ort(model, 1),
        }
        if a.jax:
            contenders["jax"] = _jax(model)
        for n in [int(r) for r in a.rows.split(",")]:
            x = np.random.default_rng(1).random((n, sizes[0]), dtype=np.float32)
            ref = contenders["ort"](x)
            for name, fn in contenders.items():
                np.testing.assert_allclose(np.asarray(fn(x)), ref, rtol=1e-4, atol=1e-5)
            number = 2000 if n == 1 else 3
            times = {k: [] for k in contenders}
            load0 = open("/proc/loadavg").read().split()[:3]
            for _ in range(a.rounds):
                for name, fn in contenders.items():
                    t = time.perf_counter()
                    for _ in range(number):
                        fn(x)
                    times[name].append((time.perf_counter() - t) / number)
            load1 = open("/proc/loadavg").read().split()[:3]
            unit, scale = ("us", 1e6) if n == 1 else ("ms", 1e3)
            ort_med = np.median(times["ort"])
            print(f"{net} n={n}  cdnn {sys.modules['cdnn'].__file__}  load {' '.join(load0)} -> {' '.join(load1)}")
            for name, ts in times.items():
                q1, med, q3 = np.percentile(ts, [25, 50, 75])
                print(
                    f"  {name:9s} median {med * scale:8.2f} {unit}  [{q1 * scale:8.2f}, {q3 * scale:8.2f}]"
                    f"  ratio to ort {med / ort_med:5.3f}"
                )


if __name__ == "__main__":
    main()
