"""BatchNormalization's cost in inference: the BN MLP 784-256(BN, ReLU)-128(BN, ReLU)-10 against the same
MLP without its BatchNormalization layers (ReLU in the Dense) and ONNX Runtime on cdnn's own ONNX export,
interleaved in one process, on 1 and 2 threads.

Prints per case each contender's median per call (quartiles) and its ratio to ONNX Runtime; ``bn share``
is 1 - plain/bn of cdnn's predict medians: the part of the BN MLP's time its BN layers cost, with the
fusion of inference (``predict``) and without it (``unfused``: the graph's ``fuse`` off). With
other work on the machine only ratios measured in the same run mean anything (the load is printed);
on one thread the time is the calling thread's CPU time (cdnn and ONNX Runtime run there alone).
Run from the repository root: ``python tools/bench_bn.py [--rounds N] [--rows 1,32,10000]``; set
``CDNN_ROOT`` to time another checkout's cdnn.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.environ.get("CDNN_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_predict import _ort  # noqa: E402  (an ONNX Runtime session on cdnn's own export)


def _model(bn: bool, use_bias: bool, cs: bool):
    import cdnn as keras

    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = L.Input(shape=(784,))
    h = inp
    for units in (256, 128):
        if bn:
            h = L.Dense(units, use_bias=use_bias)(h)
            h = L.BatchNormalization(center=cs, scale=cs)(h)
            h = L.Activation("relu")(h)
        else:
            h = L.Dense(units, activation="relu", use_bias=use_bias)(h)
    model = keras.Model(inp, L.Dense(10, activation="softmax")(h))
    rng = np.random.default_rng(2)
    # moving statistics and gamma/beta away from their initial values, as after training
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(np.float32) ** 2 for w in model.get_weights()])
    return model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--rows", default="1,32,10000")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--variants", default="bias+cs,nobias+cs,bias-cs,nobias-cs")
    a = ap.parse_args()
    import cdnn

    print(f"cdnn {cdnn.__file__}")
    for variant in a.variants.split(","):
        use_bias, cs = not variant.startswith("no"), variant.endswith("+cs")
        bn, unfused, plain = _model(True, use_bias, cs), _model(True, use_bias, cs), _model(False, use_bias, cs)
        unfused._core_graph(training=False).fuse = False  # the separate passes, as before the fusion
        for threads in [int(t) for t in a.threads.split(",")]:
            cdnn.set_num_threads(threads)
            contenders = {
                "predict": lambda x, m=bn: m.predict(x, verbose=0),
                "unfused": lambda x, m=unfused: m.predict(x, verbose=0),
                "on_batch": bn.predict_on_batch,
                "plain": lambda x, m=plain: m.predict(x, verbose=0),
                "ort": _ort(bn, threads),
            }
            for n in [int(r) for r in a.rows.split(",")]:
                x = np.random.default_rng(1).random((n, 784), dtype=np.float32)
                ref = contenders["ort"](x)
                for name in ("predict", "unfused", "on_batch"):
                    np.testing.assert_allclose(np.asarray(contenders[name](x)), ref, rtol=1e-4, atol=1e-5)
                number = 1000 if n == 1 else 200 if n < 1000 else 2
                times: dict = {k: [] for k in contenders}
                load0 = open("/proc/loadavg").read().split()[:3]
                # on one thread the calling thread's CPU time: a loaded machine's descheduling is not counted
                clock = time.thread_time if threads == 1 else time.perf_counter
                order = np.random.default_rng(0)
                for _ in range(a.rounds):
                    # a new order each round: no contender always follows another's idle spinning threads
                    for name in order.permutation(list(contenders)):
                        fn = contenders[name]
                        t = clock()
                        for _ in range(number):
                            fn(x)
                        times[name].append((clock() - t) / number)
                load1 = open("/proc/loadavg").read().split()[:3]
                med = {k: float(np.median(v)) for k, v in times.items()}
                unit, scale = ("us", 1e6) if n < 1000 else ("ms", 1e3)
                print(
                    f"{variant} threads={threads} n={n} ({clock.__name__})  load {' '.join(load0)} -> {' '.join(load1)}"
                    f"  bn share unfused {1 - med['plain'] / med['unfused']:+.3f} fused {1 - med['plain'] / med['predict']:+.3f}"
                )
                for name, ts in times.items():
                    q1, q3 = np.percentile(ts, [25, 75])
                    print(
                        f"  {name:9s} median {med[name] * scale:9.2f} {unit}  [{q1 * scale:9.2f}, {q3 * scale:9.2f}]"
                        f"  ratio to ort {med[name] / med['ort']:5.3f}"
                    )
                sys.stdout.flush()


if __name__ == "__main__":
    main()
