"""Small predicts (``predict_on_batch``) of cdnn forced onto 1 thread, forced onto 2, and the run-time
choice, against ONNX Runtime on 2 threads, interleaved in one process.

Prints per network and batch each contender's median (and minimum) microseconds per call over the rounds.
Each contender is timed after a 20 ms pause (the order rotating from round to round), so that the previous one's spinning threads (OpenMP's,
ONNX Runtime's) have gone idle. With ``--busy``, a ``while True: pass`` process occupies a core meanwhile.
Run from the repository root: ``python tools/bench_small_predict.py [W2,BIG,BN] [1,2,3,8,32] [rounds] [--busy]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.environ.get("CDNN_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the cdnn of this checkout, not an installed one
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def main(argv: list[str]) -> None:
    import onnxruntime as ort
    from test_bench_inference import _model

    import cdnn
    from cdnn import _core

    busy = "--busy" in argv
    argv = [a for a in argv if a != "--busy"]
    nets = argv[0].split(",") if argv else ["W2", "BIG", "BN"]
    batches = [int(b) for b in argv[1].split(",")] if len(argv) > 1 else [1, 2, 3, 8, 32]
    rounds = int(argv[2]) if len(argv) > 2 else 21
    iters = 200
    cdnn.set_num_threads(2)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    print(f"load average {os.getloadavg()[0]:.2f}, busy loop: {busy}")
    try:
        for net in nets:
            model = _model(net)
            path = os.path.join(tempfile.mkdtemp(), net + ".onnx")
            model.export(path, format="onnx", verbose=False)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 2
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            for b in batches:
                x = np.random.default_rng(0).random((b, 784), dtype=np.float32)

                def cdnn_mode(mode, x=x, model=model):
                    _core.row_split(mode)
                    for _ in range(iters):
                        model.predict_on_batch(x)
                    _core.row_split(0)

                def onnx(x=x, sess=sess, name=name):
                    for _ in range(iters):
                        sess.run(None, {name: x})

                fns = {
                    "cdnn-1": lambda: cdnn_mode(1),
                    "cdnn-2": lambda: cdnn_mode(2),
                    "cdnn-auto": lambda: cdnn_mode(0),
                    "ort-2": onnx,
                }
                for f in fns.values():
                    f()
                times: dict[str, list[float]] = {k: [] for k in fns}
                names = list(fns)
                for r in range(rounds):  # the order rotates: no contender always follows the same one
                    for k in names[r % 4 :] + names[: r % 4]:
                        f = fns[k]
                        time.sleep(0.02)
                        t = time.perf_counter()
                        f()
                        times[k].append((time.perf_counter() - t) / iters * 1e6)
                med = {k: float(np.median(v)) for k, v in times.items()}
                print(
                    f"{net:4s} b{b:<3d} "
                    + "  ".join(f"{k} {med[k]:7.1f} ({min(v):6.1f})" for k, v in times.items())
                    + f"   ort/auto {med['ort-2'] / med['cdnn-auto']:.2f}x",
                    flush=True,
                )
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
