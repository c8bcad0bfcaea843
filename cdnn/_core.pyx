# cython: language_level=3
"""The only door to the C core: validate, then call C with the GIL released.

Every Python-visible function checks dtypes, contiguity, shapes and sizes
and raises ``TypeError``/``ValueError`` naming the argument; the C functions
behind it trust their inputs.
"""
import threading

import numpy as np

cimport numpy as cnp
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "cdnn.h" nogil:
    ctypedef struct cdnn_opt_params:
        int kind
        float lr, momentum
        int nesterov
        float rho, beta_1, beta_2, epsilon
    ctypedef struct cdnn_opt_step:
        float lr
    ctypedef struct cdnn_simd:
        const char *name
        int mr, nr
    ctypedef struct cdnn_layer:
        int units "units"
        int in_ "in"
        int act
        float alpha, in_drop
        float *W
        float *b
        float *W1
        float *W2
        float *b1
        float *b2
    ctypedef struct cdnn_net:
        int n_layers
        cdnn_layer *layers
        int loss, from_logits, metric
        cdnn_opt_params opt
    ctypedef struct cdnn_workspace:
        pass

    void cdnn_gemm(int transa, int transb, int M, int N, int K, const float *A, int lda,
                   const float *B, int ldb, float *C, int ldc, int accumulate, float *pack, int max_threads)
    size_t cdnn_gemm_pack_floats()
    const cdnn_simd *cdnn_simd_current()
    const char *cdnn_simd_compiled()
    int cdnn_simd_supported(const char *name)
    int cdnn_simd_select(const char *name)
    int cdnn_get_num_threads()
    void cdnn_set_num_threads(int n)
    int cdnn_openmp_enabled()
    int cdnn_openmp_version()
    void cdnn_dense_forward(const cdnn_layer *ly, int rows, const float *x, float *y, float *z, float *pack,
                            int max_threads)
    void cdnn_dense_backward(const cdnn_layer *ly, int rows, const float *x, const float *a,
                             const float *dy, float *dz, float *dw, float *db, float *dx, float *pack,
                             int max_threads)
    void cdnn_loss_rows(int loss, int metric, int act, float alpha, int from_logits,
                        int lo, int hi, int cols, const float *out, const float *z,
                        const int32_t *ysparse, const float *ydense, int ldy,
                        int grad_batch, float *dz, double *row_loss, double *row_correct)
    cdnn_opt_step cdnn_opt_prepare(const cdnn_opt_params *p, long t)
    void cdnn_opt_update(const cdnn_opt_params *p, cdnn_opt_step s, float *w, float *slot1,
                         float *slot2, const float *g, long n)
    cdnn_workspace *cdnn_workspace_new(const cdnn_net *net, int max_batch, int threads)
    void cdnn_workspace_free(cdnn_workspace *ws)
    int cdnn_train_run(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n,
                       const int32_t *ysparse, const float *ydense, int ldy,
                       const int32_t *perm, int64_t first, int n_batches, int bs,
                       int64_t step0, uint64_t seed, double *batch_loss, double *batch_correct, int threads,
                       int stop_nonfinite_loss)
    void cdnn_predict(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n,
                      float *out, const int32_t *ysparse, const float *ydense, int ldy,
                      double *loss_sum, double *correct_sum)
    int cdnn_all_finite(const float *x, int64_t n)

class NonFiniteInputError(ValueError):
    """A training batch holds a NaN or an infinity: found as the batch was gathered, before its update.

    ``row`` is the first such row of ``x`` in the batch, ``batch`` the batch's index in the
    epoch's permutation and ``trained`` how many batches of the run were trained before it.
    """

    def __init__(self, row, batch: int, trained: int):
        super().__init__(f"Invalid values in `x`: row {row} contains NaN or infinity (batch {batch}; the "
                         f"{trained} batch(es) of this run before it were trained)")
        self.row, self.batch, self.trained = row, batch, trained


cdef extern from *:
    """
    #ifndef CDNN_BUILD_COMPILER
    #define CDNN_BUILD_COMPILER "unknown"
    #endif
    #ifndef CDNN_BUILD_FLAGS
    #define CDNN_BUILD_FLAGS ""
    #endif
    #ifndef CDNN_BUILD_OPENMP_NOTE
    #define CDNN_BUILD_OPENMP_NOTE ""
    #endif
    """
    const char *CDNN_BUILD_COMPILER
    const char *CDNN_BUILD_FLAGS
    const char *CDNN_BUILD_OPENMP_NOTE

#: Activation names and their codes in the C core.
ACTIVATIONS = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "softmax": 4, "leaky_relu": 5, "gelu": 6}
#: Loss names and their codes.
LOSSES = {"sparse_categorical_crossentropy": 0, "categorical_crossentropy": 1,
          "binary_crossentropy": 2, "mean_squared_error": 3}
#: Accuracy kinds and their codes.
METRICS = {None: 0, "sparse": 1, "categorical": 2, "binary": 3}
#: Optimizer names and their codes.
OPTIMIZERS = {"sgd": 0, "adagrad": 1, "rmsprop": 2, "adam": 3}

cdef long INT_LIMIT = 2**31 - 1
#: the most threads a workspace is made for (OMP_NUM_THREADS beyond it is capped)
MAX_THREADS = 256


# ---- validation -------------------------------------------------------------

def _check(a, str name, int ndim, bint writable=False, dtype=np.float32):
    """Check that ``a`` is a C-contiguous ndarray of ``dtype`` and rank ``ndim``."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"Invalid argument `{name}`: expected a numpy.ndarray, received {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"Invalid dtype for argument `{name}`: expected {np.dtype(dtype).name}, received {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"Invalid shape for argument `{name}`: expected {ndim} dimensions, received shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"Invalid argument `{name}`: expected a C-contiguous array "
                         f"(use numpy.ascontiguousarray), received strides {a.strides}")
    if writable and not a.flags.writeable:
        raise ValueError(f"Invalid argument `{name}`: the array must be writable")
    for d in a.shape:
        if d > INT_LIMIT:
            raise ValueError(f"Invalid shape for argument `{name}`: dimension {d} exceeds 2**31 - 1")
    return a


def _shape(a, str name, tuple expected):
    if a.shape != expected:
        raise ValueError(f"Invalid shape for argument `{name}`: expected {expected}, received {a.shape}")


def _code(table, name, str what):
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown {what}: received {name!r}, expected one of {sorted(k for k in table if k)}")


cdef inline float *fptr(a):
    return <float *>cnp.PyArray_DATA(a) if a is not None else NULL


cdef inline int32_t *iptr(a):
    return <int32_t *>cnp.PyArray_DATA(a) if a is not None else NULL


# ---- configuration ----------------------------------------------------------

def get_num_threads() -> int:
    """Number of threads the core uses."""
    return cdnn_get_num_threads()


def set_num_threads(long n) -> None:
    """Set the number of threads (``n <= 0`` returns to OpenMP's default; at most MAX_THREADS)."""
    if n > MAX_THREADS:
        raise ValueError(f"Invalid value for argument `n`: expected at most {MAX_THREADS} threads, received n={n}")
    cdnn_set_num_threads(<int>n)


def simd_select(str name) -> None:
    """Force a SIMD code path by name (``"auto"`` picks the best this CPU runs)."""
    if cdnn_simd_select(name.encode()) != 0:
        raise ValueError(f"Invalid SIMD path: {name!r} is not compiled in or not supported by this CPU "
                         f"(compiled: {cdnn_simd_compiled().decode()})")


def build_info() -> dict:
    """How the core was built and what it runs on this machine."""
    compiled = cdnn_simd_compiled().decode().split(",")
    return {
        "compiler": CDNN_BUILD_COMPILER.decode(),
        "flags": CDNN_BUILD_FLAGS.decode(),
        "openmp": bool(cdnn_openmp_enabled()),
        "openmp_version": cdnn_openmp_version(),
        "openmp_note": CDNN_BUILD_OPENMP_NOTE.decode(),
        "simd_compiled": compiled,
        "simd_supported": [p for p in compiled if cdnn_simd_supported(p.encode())],
        "simd_selected": cdnn_simd_current().name.decode(),
        "micro_kernel": f"{cdnn_simd_current().mr}x{cdnn_simd_current().nr}",
        "threads": cdnn_get_num_threads(),
    }


# ---- kernels (tests and benchmarks call these directly) ---------------------

def all_finite(x) -> bool:
    """Whether a C-contiguous float32 array (any shape) holds no NaN and no infinity."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Invalid argument `x`: expected a numpy.ndarray, received {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"Invalid dtype for argument `x`: expected float32, received {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(f"Invalid argument `x`: expected a C-contiguous array "
                         f"(use numpy.ascontiguousarray), received strides {x.strides}")
    cdef const float *p = <const float *>cnp.PyArray_DATA(x)
    cdef int64_t n = x.size
    cdef int ok
    with nogil:
        ok = cdnn_all_finite(p, n)
    return ok != 0


def gemm(a, b, bint transa=False, bint transb=False):
    """Return ``op(a) @ op(b)`` in float32, op being the transpose where asked."""
    _check(a, "a", 2)
    _check(b, "b", 2)
    cdef int M = a.shape[1] if transa else a.shape[0]
    cdef int K = a.shape[0] if transa else a.shape[1]
    cdef int Kb = b.shape[1] if transb else b.shape[0]
    cdef int N = b.shape[0] if transb else b.shape[1]
    if K != Kb:
        raise ValueError(f"Invalid shapes for arguments `a` and `b`: inner dimensions differ ({K} vs {Kb}) "
                         f"for a{a.shape}{'^T' if transa else ''} @ b{b.shape}{'^T' if transb else ''}")
    out = np.empty((M, N), dtype=np.float32)
    cdef int lda = a.shape[1], ldb = b.shape[1]
    cdef float *pa = fptr(a)
    cdef float *pb = fptr(b)
    cdef float *pc = fptr(out)
    if M == 0 or N == 0:
        return out
    pack = _pack_buffer()
    cdef float *pp = fptr(pack)
    cdef int threads = pack.shape[0]
    with nogil:
        cdnn_gemm(transa, transb, M, N, K, pa, lda if lda > 0 else 1, pb, ldb if ldb > 0 else 1, pc, N, 0,
                  pp, threads)
    return out


_local = threading.local()


def _pack_buffer():
    """This Python thread's packing buffer for standalone products, one row per core thread, 64-byte aligned.

    Kept between calls so that a product does not pay for allocating and
    faulting in a megabyte of fresh pages; per Python thread, so that
    concurrent calls never share one.
    """
    cdef size_t per = cdnn_gemm_pack_floats()
    threads = cdnn_get_num_threads()
    buf = getattr(_local, "pack", None)
    if buf is None or buf.shape[0] < threads:
        raw = np.empty(threads * per + 16, np.float32)
        offset = (-raw.ctypes.data % 64) // 4
        buf = raw[offset:offset + threads * per].reshape(threads, per)
        _local.pack = buf
    return buf


cdef cdnn_layer _layer_view(W, b, str activation, float alpha) except *:
    cdef cdnn_layer ly
    ly.in_ = W.shape[0]
    ly.units = W.shape[1]
    ly.act = _code(ACTIVATIONS, activation, "activation")
    ly.alpha = alpha
    ly.in_drop = 0
    ly.W = fptr(W)
    ly.b = fptr(b)
    ly.W1 = ly.W2 = ly.b1 = ly.b2 = NULL
    return ly


def dense_forward(x, W, b, str activation="linear", float alpha=0.2):
    """Fused ``act(x @ W + b)``; returns ``(output, pre_activation)``."""
    _check(x, "x", 2)
    _check(W, "W", 2)
    if b is not None:
        _check(b, "b", 1)
        _shape(b, "b", (W.shape[1],))
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"Invalid shape for argument `x`: expected (batch, {W.shape[0]}) to match W{W.shape}, "
                         f"received {x.shape}")
    cdef cdnn_layer ly = _layer_view(W, b, activation, alpha)
    cdef int rows = x.shape[0]
    y = np.empty((rows, W.shape[1]), np.float32)
    z = np.empty((rows, W.shape[1]), np.float32)
    cdef float *px = fptr(x)
    cdef float *py = fptr(y)
    cdef float *pz = fptr(z)
    pack = _pack_buffer()
    cdef float *pp = fptr(pack)
    cdef int threads = pack.shape[0]
    with nogil:
        cdnn_dense_forward(&ly, rows, px, py, pz, pp, threads)
    return y, z


def dense_backward(x, W, a, dy, str activation="linear", float alpha=0.2, bint need_dx=True):
    """Backward of the fused layer from ``dy = dL/d(output)``.

    ``a`` is the layer's output (its pre-activation for ``"gelu"``).
    Returns ``(dW, db, dx)``; ``dx`` is None unless ``need_dx``.
    """
    _check(x, "x", 2)
    _check(W, "W", 2)
    _check(a, "a", 2)
    _check(dy, "dy", 2)
    cdef int rows = x.shape[0], units = W.shape[1]
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"Invalid shape for argument `x`: expected (batch, {W.shape[0]}), received {x.shape}")
    _shape(a, "a", (rows, units))
    _shape(dy, "dy", (rows, units))
    cdef cdnn_layer ly = _layer_view(W, None, activation, alpha)
    dz = np.empty((rows, units), np.float32)
    dW = np.empty(W.shape, np.float32)
    db = np.empty(units, np.float32)
    dx = np.empty(x.shape, np.float32) if need_dx else None
    cdef float *p[8]
    p[0] = fptr(x); p[1] = fptr(a); p[2] = fptr(dy); p[3] = fptr(dz)
    p[4] = fptr(dW); p[5] = fptr(db); p[6] = fptr(dx)
    pack = _pack_buffer()
    p[7] = fptr(pack)
    cdef int threads = pack.shape[0]
    with nogil:
        cdnn_dense_backward(&ly, rows, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], threads)
    return dW, db, dx


def _check_metric(metric, str loss_name):
    """The accuracy kind must read the kind of labels the loss takes (sparse or dense)."""
    sparse = loss_name == "sparse_categorical_crossentropy"
    if metric is not None and (metric == "sparse") != sparse:
        raise ValueError(f"Invalid value for argument `metric`: {metric!r} accuracy cannot read the "
                         f"{'integer' if sparse else 'dense'} labels of {loss_name}")


def _check_labels(y, str name, int rows, int units, str loss_name):
    """Validate labels for a loss; returns (sparse int32 or None, dense float32 or None)."""
    if loss_name == "sparse_categorical_crossentropy":
        _check(y, name, 1, dtype=np.int32)
        _shape(y, name, (rows,))
        if rows and (y.min() < 0 or y.max() >= units):
            raise ValueError(f"Invalid labels in `{name}`: expected integers in [0, {units}), "
                             f"received values in [{y.min()}, {y.max()}]")
        return y, None
    _check(y, name, 2)
    _shape(y, name, (rows, units))
    return None, y


def loss_forward_backward(str loss, output, z, y, str activation="softmax", float alpha=0.2,
                          bint from_logits=False, metric=None):
    """Per-row loss and correctness, and dL/dz of the batch-mean loss.

    ``output`` is the last layer's output and ``z`` its pre-activation.
    Returns ``(row_loss float64, row_correct float64, dz float32)``.
    """
    _check(output, "output", 2)
    _check(z, "z", 2)
    cdef int rows = output.shape[0], cols = output.shape[1]
    _shape(z, "z", (rows, cols))
    cdef int lc = _code(LOSSES, loss, "loss"), act = _code(ACTIVATIONS, activation, "activation")
    cdef int mc = _code(METRICS, metric, "metric")
    _check_metric(metric, loss)
    ys, yd = _check_labels(y, "y", rows, cols, loss)
    if rows == 0:
        raise ValueError("Invalid argument `output`: expected at least one row, received an empty batch")
    row_loss = np.empty(rows, np.float64)
    row_correct = np.empty(rows, np.float64)
    dz = np.empty((rows, cols), np.float32)
    cdef float *po = fptr(output)
    cdef float *pz = fptr(z)
    cdef float *pyd = fptr(yd)
    cdef int32_t *pys = iptr(ys)
    cdef float *pdz = fptr(dz)
    cdef double *pl = <double *>cnp.PyArray_DATA(row_loss)
    cdef double *pc = <double *>cnp.PyArray_DATA(row_correct)
    with nogil:
        cdnn_loss_rows(lc, mc, act, alpha, from_logits, 0, rows, cols, po, pz, pys, pyd, cols, rows, pdz, pl, pc)
    return row_loss, row_correct, dz


cdef cdnn_opt_params _opt_params(dict h) except *:
    cdef cdnn_opt_params p
    p.kind = _code(OPTIMIZERS, h.get("name"), "optimizer")
    p.lr = h.get("learning_rate", 0.001)
    p.momentum = h.get("momentum", 0.0)
    p.nesterov = bool(h.get("nesterov", False))
    p.rho = h.get("rho", 0.9)
    p.beta_1 = h.get("beta_1", 0.9)
    p.beta_2 = h.get("beta_2", 0.999)
    p.epsilon = h.get("epsilon", 1e-7)
    return p


def optimizer_update(dict hparams, w, g, slot1, slot2, long step):
    """Apply one optimizer update in place: ``w`` (and its slots) from gradient ``g``.

    ``hparams`` holds ``name`` and Keras' hyper-parameters; ``step`` starts at 1.
    """
    cdef cdnn_opt_params p = _opt_params(hparams)
    _check(w, "w", w.ndim if isinstance(w, np.ndarray) else 1, writable=True)
    _check(g, "g", w.ndim)
    _shape(g, "g", w.shape)
    for s, nm in ((slot1, "slot1"), (slot2, "slot2")):
        if s is not None:
            _check(s, nm, w.ndim, writable=True)
            _shape(s, nm, w.shape)
    needs = {0: (p.momentum != 0, False), 1: (True, False), 2: (True, p.momentum > 0), 3: (True, True)}[p.kind]
    if (needs[0] and slot1 is None) or (needs[1] and slot2 is None):
        raise ValueError(f"Invalid arguments for optimizer {hparams.get('name')!r}: missing slot array(s)")
    if step < 1:
        raise ValueError(f"Invalid value for argument `step`: expected >= 1, received {step}")
    cdef cdnn_opt_step st = cdnn_opt_prepare(&p, step)
    cdef float *pw = fptr(w)
    cdef float *pg = fptr(g)
    cdef float *p1 = fptr(slot1)
    cdef float *p2 = fptr(slot2)
    cdef long n = w.size
    with nogil:
        cdnn_opt_update(&p, st, pw, p1, p2, pg, n)


def hparams_name(int kind):
    return {v: k for k, v in OPTIMIZERS.items()}[kind]


# ---- a whole network ----------------------------------------------------------

cdef class Network:
    """The C view of a Sequential model: layers, parameters, loss, optimizer.

    It keeps references to every parameter and slot array, so the pointers it
    hands to C stay valid; the Python model updates them in place only.
    """
    cdef cdnn_net net
    cdef cdnn_workspace *ws
    cdef int ws_batch, ws_threads
    cdef object arrays
    cdef object lock
    cdef readonly int n_in, n_out
    cdef readonly long steps_done
    cdef readonly str loss_name

    def __cinit__(self):
        self.net.layers = NULL
        self.ws = NULL

    def __init__(self, list layers, str loss, bint from_logits, metric, dict optimizer):
        """``layers``: dicts with W, b (or None), activation, alpha, dropout (input rate),
        slots (list of up to 4 arrays: W1, W2, b1, b2 or None)."""
        if not layers:
            raise ValueError("Invalid argument `layers`: a network needs at least one Dense layer")
        self.arrays = []
        # one C call at a time per network: they share the workspace
        self.lock = threading.Lock()
        self.steps_done = 0
        self.net.n_layers = len(layers)
        self.net.layers = <cdnn_layer *>malloc(len(layers) * sizeof(cdnn_layer))
        if self.net.layers == NULL:
            raise MemoryError()
        self.net.loss = _code(LOSSES, loss, "loss")
        self.net.from_logits = from_logits
        self.net.metric = _code(METRICS, metric, "metric")
        _check_metric(metric, loss)
        self.net.opt = _opt_params(optimizer)
        self.loss_name = loss
        cdef cdnn_layer *ly
        prev = None
        for i, d in enumerate(layers):
            W = _check(d["W"], f"layers[{i}].W", 2, writable=True)
            b = d.get("b")
            if b is not None:
                _check(b, f"layers[{i}].b", 1, writable=True)
                _shape(b, f"layers[{i}].b", (W.shape[1],))
            if prev is not None and W.shape[0] != prev:
                raise ValueError(f"Invalid shape for `layers[{i}].W`: expected ({prev}, units), received {W.shape}")
            if W.shape[0] < 1 or W.shape[1] < 1:
                raise ValueError(f"Invalid shape for `layers[{i}].W`: expected positive sizes, received {W.shape}")
            prev = W.shape[1]
            rate = float(d.get("dropout", 0.0))
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"Invalid value for `layers[{i}].dropout`: expected a rate in [0, 1), received {rate}")
            slots = list(d.get("slots", [None] * 4)) + [None] * 4
            ly = &self.net.layers[i]
            ly[0] = _layer_view(W, b, d.get("activation", "linear"), d.get("alpha", 0.2))
            ly.in_drop = rate
            for k, (s, ref) in enumerate(zip(slots[:4], (W, W, b, b))):
                if s is not None:
                    if ref is None:
                        raise ValueError(f"Invalid slots for `layers[{i}]`: a bias slot without a bias")
                    _check(s, f"layers[{i}].slots[{k}]", ref.ndim, writable=True)
                    _shape(s, f"layers[{i}].slots[{k}]", ref.shape)
            ly.W1 = fptr(slots[0]); ly.W2 = fptr(slots[1]); ly.b1 = fptr(slots[2]); ly.b2 = fptr(slots[3])
            self.arrays.append((W, b, slots[:4]))
        self.n_in = self.net.layers[0].in_
        self.n_out = prev
        self._check_slots(self.net.opt)

    def __dealloc__(self):
        cdnn_workspace_free(self.ws)
        free(self.net.layers)

    cdef int _workspace(self, int batch) except -1:
        cdef int threads = min(cdnn_get_num_threads(), MAX_THREADS)
        if self.ws == NULL or batch > self.ws_batch or threads > self.ws_threads:
            cdnn_workspace_free(self.ws)
            self.ws = NULL
            self.ws = cdnn_workspace_new(&self.net, batch, threads)
            if self.ws == NULL:
                raise MemoryError(f"cdnn: could not allocate the workspace for batches of {batch}")
            self.ws_batch, self.ws_threads = batch, threads
        return 0

    def set_optimizer(self, dict hparams):
        """Replace the optimizer hyper-parameters (e.g. a changed learning rate); slots are unchanged."""
        cdef cdnn_opt_params p = _opt_params(hparams)
        self._check_slots(p)
        self.net.opt = p

    cdef int _check_slots(self, cdnn_opt_params p) except -1:
        """Refuse optimizer settings whose slots were not allocated (C would dereference NULL)."""
        need1 = p.kind != 0 or p.momentum != 0
        need2 = p.kind == 3 or (p.kind == 2 and p.momentum > 0)
        for i in range(self.net.n_layers):
            ly = &self.net.layers[i]
            if (need1 and (ly.W1 == NULL or (ly.b != NULL and ly.b1 == NULL))) or \
               (need2 and (ly.W2 == NULL or (ly.b != NULL and ly.b2 == NULL))):
                raise ValueError(f"Invalid optimizer settings for layer {i}: {hparams_name(p.kind)} with these "
                                 f"hyper-parameters needs slot arrays that were not provided")
        return 0

    def _labels(self, y, int n):
        return _check_labels(y, "y", n, self.n_out, self.loss_name)

    def train_run(self, x, y, perm, long first, int n_batches, int batch_size, long step0,
                  unsigned long long seed, batch_loss, batch_correct, int threads=0,
                  bint stop_nonfinite_loss=False):
        """Train ``n_batches`` mini-batches of ``batch_size`` rows ``x[perm[...]]``, starting at batch ``first``.

        ``threads > 0`` caps this run's threads (the results do not depend on it).

        Writes per-batch loss and correctness sums into ``batch_loss``/``batch_correct`` (float64)
        and returns the number of batches trained: ``n_batches``, or with ``stop_nonfinite_loss``
        fewer if a batch's loss is NaN or infinite: the run stops after that batch's update (as
        Keras' ``TerminateOnNaN`` stops ``fit``), that batch being the last one written.
        The rows of ``x`` are checked as they are gathered: the first batch with a NaN or an
        infinity raises :class:`NonFiniteInputError` before its update (the batches before it are
        trained and counted in ``steps_done``).
        """
        _check(x, "x", 2)
        cdef long n = x.shape[0]
        if x.shape[1] != self.n_in:
            raise ValueError(f"Invalid shape for argument `x`: expected (n, {self.n_in}), received {x.shape}")
        ys, yd = self._labels(y, n)
        _check(perm, "perm", 1, dtype=np.int32)
        _shape(perm, "perm", (n,))
        if batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`: expected a positive integer, received {batch_size}")
        n_total = (n + batch_size - 1) // batch_size
        if n_batches < 0 or first < 0 or first + n_batches > n_total:
            raise ValueError(f"Invalid batch range: first={first}, n_batches={n_batches} for {n_total} batches")
        seg = perm[first * batch_size: min(n, (first + n_batches) * batch_size)]
        if seg.size and (seg.min() < 0 or seg.max() >= n):
            raise ValueError(f"Invalid argument `perm`: expected indices in [0, {n}), received [{seg.min()}, {seg.max()}]")
        for arr, nm in ((batch_loss, "batch_loss"), (batch_correct, "batch_correct")):
            _check(arr, nm, 1, writable=True, dtype=np.float64)
            if arr.shape[0] < n_batches:
                raise ValueError(f"Invalid shape for argument `{nm}`: expected at least {n_batches} entries")
        if n_batches == 0:
            return 0
        cdef float *px = fptr(x)
        cdef int32_t *pys = iptr(ys)
        cdef float *pyd = fptr(yd)
        cdef int32_t *pp = iptr(perm)
        cdef double *pl = <double *>cnp.PyArray_DATA(batch_loss)
        cdef double *pc = <double *>cnp.PyArray_DATA(batch_correct)
        cdef int done
        with self.lock:
            self._workspace(min(batch_size, n))
            with nogil:
                done = cdnn_train_run(&self.net, self.ws, px, n, pys, pyd, self.n_out, pp, first, n_batches,
                                      batch_size, step0, seed, pl, pc, threads, stop_nonfinite_loss)
            self.steps_done += done
        if stop_nonfinite_loss and done > 0 and not isfinite(pl[done - 1]):
            return done  # stopped after the batch whose loss is not finite (the last one, possibly)
        if done < n_batches:
            batch = first + done
            rows = perm[batch * batch_size: min(n, (batch + 1) * batch_size)]
            bad = rows[~np.isfinite(x[rows]).all(axis=1)]  # none if x changed meanwhile
            raise NonFiniteInputError(int(bad.min()) if bad.size else None, batch, done)
        return done

    def predict(self, x, int batch_size=256, y=None):
        """Outputs for every row of ``x``; with labels ``y`` also ``(loss_sum, correct_sum)``."""
        _check(x, "x", 2)
        cdef long n = x.shape[0]
        if x.shape[1] != self.n_in:
            raise ValueError(f"Invalid shape for argument `x`: expected (n, {self.n_in}), received {x.shape}")
        if batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`: expected a positive integer, received {batch_size}")
        ys = yd = None
        if y is not None:
            ys, yd = self._labels(y, n)
        out = np.empty((n, self.n_out), np.float32)
        if n == 0:
            return (out, 0.0, 0.0) if y is not None else out
        cdef float *px = fptr(x)
        cdef float *po = fptr(out)
        cdef int32_t *pys = iptr(ys)
        cdef float *pyd = fptr(yd)
        cdef double ls = 0, cs = 0
        cdef bint labelled = y is not None
        with self.lock:
            self._workspace(min(batch_size, n))
            with nogil:
                cdnn_predict(&self.net, self.ws, px, n, po, pys, pyd, self.n_out,
                             &ls if labelled else NULL, &cs if labelled else NULL)
        return (out, ls, cs) if labelled else out
