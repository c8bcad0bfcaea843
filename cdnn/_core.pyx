# cython: language_level=3
"""The only door to the C core: validate, then call C with the GIL released.

Every Python-visible function checks dtypes, contiguity, shapes and sizes
and raises ``TypeError``/``ValueError`` naming the argument; the C functions
behind it trust their inputs.
"""
import math
import threading

import numpy as np

cimport cython
cimport numpy as cnp
from libc.math cimport INFINITY, isfinite
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

cnp.import_array()

cdef extern from "cdnn.h" nogil:
    ctypedef struct cdnn_opt_params:
        int kind
        float lr, momentum
        int nesterov
        float rho, beta_1, beta_2, epsilon
        int amsgrad
        float weight_decay, clipvalue, clipnorm, global_clipnorm
        int use_ema
        float ema_momentum
        int ema_overwrite_frequency, accumulation_steps
        float lr_power, l1, l2, l2_shrinkage, beta
        float beta_2_decay, epsilon_1, epsilon_2, clip_threshold
        int relative_step
        const float *step_lr
        const float *step_aux
        int64_t step_base
    ctypedef struct cdnn_opt_step:
        float lr
    ctypedef struct cdnn_param_rules:
        float l1, l2
        int constraint
        float c_min, c_max, c_rate
        int c_axis
        float orth_factor
        int orth_mode
        float *orth_scratch
    ctypedef struct cdnn_var_slots:
        float *s1
        float *s2
        float *s3
        float *ema
        float *acc
    ctypedef struct cdnn_simd:
        const char *name
        int mr, nr
    ctypedef struct cdnn_act_args:
        float alpha, threshold, lower, upper
    ctypedef struct cdnn_layer:
        int units "units"
        int in_ "in"
        int act
        cdnn_act_args act_args
        float in_drop
        int frozen
        float *W
        float *b
        float *W1
        float *W2
        float *b1
        float *b2
        float *W3
        float *b3
        float *Wema
        float *bema
        float *Wacc
        float *bacc
        cdnn_param_rules kernel_rules, bias_rules
    ctypedef struct cdnn_loss_opts:
        float label_smoothing, delta, gamma, alpha
        int class_balancing, has_ignore, ignore_class, hinge_binary
    ctypedef struct cdnn_net:
        int n_layers
        cdnn_layer *layers
        int loss, from_logits, metric
        cdnn_opt_params opt
        cdnn_loss_opts loss_opts
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
    int cdnn_threads_setting()
    int cdnn_serial_after_fork()
    int CDNN_MAX_THREADS
    void cdnn_set_num_threads(int n)
    int cdnn_openmp_enabled()
    int cdnn_openmp_version()
    void cdnn_dense_forward(const cdnn_layer *ly, int rows, const float *x, float *y, float *z, float *pack,
                            int max_threads)
    void cdnn_dense_backward(const cdnn_layer *ly, int rows, const float *x, const float *a,
                             const float *dy, float *dz, float *dw, float *db, float *dx, float *pack,
                             int max_threads)
    cdnn_loss_opts cdnn_loss_opts_default()
    void cdnn_loss_rows(int loss, int metric, int act, cdnn_act_args args, int from_logits,
                        int lo, int hi, int cols, const float *out, const float *z,
                        const int32_t *ysparse, const float *ydense, int ldy,
                        int grad_batch, float *dz, double *row_loss, double *row_correct,
                        const cdnn_loss_opts *opts, const float *row_weight)
    int cdnn_loss_valid_rows(int loss, const cdnn_loss_opts *opts, const int32_t *ysparse, const int32_t *rows, int n)
    cdnn_opt_step cdnn_opt_prepare(const cdnn_opt_params *p, long t)
    void cdnn_opt_update(const cdnn_opt_params *p, cdnn_opt_step s, float *w, float *slot1,
                         float *slot2, const float *g, long n)
    double cdnn_opt_prepare_grad(const cdnn_opt_params *p, cdnn_opt_step s, const cdnn_param_rules *r,
                                 const float *w, float *g, cdnn_var_slots sl, long rows, long cols,
                                 double *penalty)
    void cdnn_opt_apply_var(const cdnn_opt_params *p, cdnn_opt_step s, const cdnn_param_rules *r, float *w,
                            float *g, cdnn_var_slots sl, long rows, long cols, double sumsq, double global_sumsq)
    int cdnn_opt_needs_whole(const cdnn_opt_params *p)
    cdnn_workspace *cdnn_workspace_new(const cdnn_net *net, int max_batch, int threads)
    void cdnn_workspace_free(cdnn_workspace *ws)
    int cdnn_train_run(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n,
                       const int32_t *ysparse, const float *ydense, int ldy,
                       const int32_t *perm, int64_t first, int n_batches, int bs,
                       int64_t step0, uint64_t seed, double *batch_loss, double *batch_correct, int threads,
                       int stop_nonfinite_loss, const float *sample_weight, float *outputs)
    int cdnn_predict(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n,
                     float *out, const int32_t *ysparse, const float *ydense, int ldy,
                     double *loss_sum, double *correct_sum, const float *sample_weight, int check_finite)
    void cdnn_set_row_split(int mode)
    ctypedef struct cdnn_chooser:
        int n[2]
    int cdnn_choose(const cdnn_chooser *c)
    void cdnn_chooser_record(cdnn_chooser *c, int o, double sec)
    int cdnn_all_finite(const float *x, int64_t n)
    void cdnn_bias_act_tile(int act, cdnn_act_args args, float *x, int ld, int rows, int cols, const float *bias, float *z,
                            int ldz)
    void cdnn_dact_tile(int act, cdnn_act_args args, float *g, int ldg, const float *a, int lda, int rows, int cols)
    void cdnn_rowwise_act_rows(int act, float *x, int ld, int rows, int cols)
    void cdnn_rowwise_backward_rows(int act, float *g, int ldg, const float *a, int lda, int rows, int cols)

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
ACTIVATIONS = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "softmax": 4, "leaky_relu": 5, "gelu": 6,
               "elu": 7, "selu": 8, "silu": 9, "softplus": 10, "softsign": 11, "hard_sigmoid": 12,
               "hard_silu": 13, "mish": 14, "relu6": 15, "exponential": 16, "log_softmax": 17,
               "relu_args": 18}
#: Activations whose derivative the core computes from the pre-activation z (else from the output).
GRAD_FROM_Z = frozenset({"gelu", "silu", "softplus", "softsign", "hard_silu", "mish", "relu_args"})
#: Loss names and their codes.
LOSSES = {"sparse_categorical_crossentropy": 0, "categorical_crossentropy": 1,
          "binary_crossentropy": 2, "mean_squared_error": 3, "mean_absolute_error": 4,
          "mean_absolute_percentage_error": 5, "mean_squared_logarithmic_error": 6, "huber": 7,
          "log_cosh": 8, "binary_focal_crossentropy": 9, "kl_divergence": 10, "poisson": 11,
          "hinge": 12, "squared_hinge": 13, "categorical_hinge": 14, "cosine_similarity": 15}
#: The loss options the core takes (Keras' argument names) and their defaults.
LOSS_OPTIONS = {"label_smoothing": 0.0, "delta": 1.0, "gamma": 2.0, "alpha": 0.25,
                "apply_class_balancing": False, "ignore_class": None}
#: Accuracy kinds and their codes.
METRICS = {None: 0, "sparse": 1, "categorical": 2, "binary": 3}
#: Optimizer names and their codes.
OPTIMIZERS = {"sgd": 0, "adagrad": 1, "rmsprop": 2, "adam": 3, "nadam": 4, "adamax": 5, "adadelta": 6,
              "lion": 7, "ftrl": 8, "adafactor": 9}
#: Constraint names and their codes.
CONSTRAINTS = {None: 0, "max_norm": 1, "non_neg": 2, "unit_norm": 3, "min_max_norm": 4}

cdef long INT_LIMIT = 2**31 - 1
#: the most threads a region or a workspace uses (OMP_NUM_THREADS beyond it is capped)
MAX_THREADS = CDNN_MAX_THREADS


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
    return cdnn_threads_setting()


def serial_after_fork() -> bool:
    """In a forked child: one thread from now on if the parent may have started OpenMP's (see cdnn/_fork.py)."""
    return cdnn_serial_after_fork() != 0


def set_num_threads(long n) -> None:
    """Set the number of threads (``n <= 0`` returns to OpenMP's default; at most MAX_THREADS)."""
    if n > MAX_THREADS:
        raise ValueError(f"Invalid value for argument `n`: expected at most {MAX_THREADS} threads, received n={n}")
    cdnn_set_num_threads(<int>n)


def row_split(int mode) -> None:
    """Small predicts (one or two rows, or few flops): 0 chooses 1 or 2 threads by timing them, 1 always 1,
    2 always 2, a one- or two-row one splitting every Dense layer's columns (tests)."""
    cdnn_set_row_split(mode)


def chooser_trace(list one, list two) -> list:
    """The options (0: 1 thread, 1: 2 threads) the core's timing chooser takes over a run of calls when call i
    of option 0 takes ``one[i]`` seconds and of option 1 ``two[i]`` (tests)."""
    cdef cdnn_chooser c
    memset(&c, 0, sizeof(c))
    cdef int o
    picks = []
    for a, b in zip(one, two):
        o = cdnn_choose(&c)
        cdnn_chooser_record(&c, o, b if o else a)
        picks.append(o)
    return picks


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
        "threads": cdnn_threads_setting(),
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


cdef cdnn_act_args _act_args(float alpha, max_value=None, threshold=0.0):
    """An activation's parameters: ``alpha`` (leaky_relu's and relu_args' slope, elu's alpha) and, for
    ``relu_args`` (Keras' relu with options), ``max_value`` (None: no clipping) and ``threshold``."""
    cdef cdnn_act_args a
    a.alpha = alpha
    a.threshold = threshold
    a.lower = -INFINITY if max_value is None else 0.0
    a.upper = INFINITY if max_value is None else max_value
    return a


cdef cdnn_layer _layer_view(W, b, str activation, float alpha, max_value=None, threshold=0.0) except *:
    cdef cdnn_layer ly
    ly.in_ = W.shape[0]
    ly.units = W.shape[1]
    ly.act = _code(ACTIVATIONS, activation, "activation")
    ly.act_args = _act_args(alpha, max_value, threshold)
    ly.in_drop = 0
    ly.frozen = 0
    ly.W = fptr(W)
    ly.b = fptr(b)
    ly.W1 = ly.W2 = ly.b1 = ly.b2 = NULL
    ly.W3 = ly.b3 = ly.Wema = ly.bema = ly.Wacc = ly.bacc = NULL
    ly.kernel_rules = _rules(None)
    ly.bias_rules = _rules(None)
    return ly


cdef cdnn_param_rules _rules(r) except *:
    """A variable's regularizer and constraint from a dict (l1, l2, orth_factor, orth_mode, orth_scratch,
    constraint, min_value, max_value, rate, axis), checked by ``_check_rules``."""
    cdef cdnn_param_rules c
    r = r or {}
    c.orth_factor = r.get("orth_factor", 0.0)
    c.orth_mode = 1 if r.get("orth_mode") == "columns" else 0
    c.orth_scratch = fptr(r.get("orth_scratch")) if c.orth_factor else NULL
    c.l1 = r.get("l1", 0.0)
    c.l2 = r.get("l2", 0.0)
    c.constraint = _code(CONSTRAINTS, r.get("constraint"), "constraint")
    c.c_min = r.get("min_value", 0.0)
    c.c_max = r.get("max_value", 0.0)
    c.c_rate = r.get("rate", 1.0)
    c.c_axis = r.get("axis", 0)
    return c


def dense_forward(x, W, b, str activation="linear", float alpha=0.2, max_value=None, float threshold=0.0):
    """Fused ``act(x @ W + b)``; returns ``(output, pre_activation)``. ``max_value``, ``threshold``:
    ``relu_args``' (see activation_forward)."""
    _check(x, "x", 2)
    _check(W, "W", 2)
    if b is not None:
        _check(b, "b", 1)
        _shape(b, "b", (W.shape[1],))
    if x.shape[1] != W.shape[0]:
        raise ValueError(f"Invalid shape for argument `x`: expected (batch, {W.shape[0]}) to match W{W.shape}, "
                         f"received {x.shape}")
    cdef cdnn_layer ly = _layer_view(W, b, activation, alpha, max_value, threshold)
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


def dense_backward(x, W, a, dy, str activation="linear", float alpha=0.2, bint need_dx=True, max_value=None,
                   float threshold=0.0):
    """Backward of the fused layer from ``dy = dL/d(output)``.

    ``a`` is the layer's output (its pre-activation for the activations in GRAD_FROM_Z).
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
    cdef cdnn_layer ly = _layer_view(W, None, activation, alpha, max_value, threshold)
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


def activation_forward(str activation, x, float alpha=0.2, max_value=None, float threshold=0.0):
    """``act(x)`` by the core's vectorized code, as training applies it: a new float32 array.

    ``x`` is a C-contiguous float32 array of any shape; row-wise activations (softmax,
    log_softmax) work on its last axis. ``alpha``: leaky_relu's slope, elu's alpha;
    ``relu_args`` is Keras' ``relu(x, negative_slope=alpha, max_value, threshold)``.
    """
    cdef int act = _code(ACTIVATIONS, activation, "activation")
    cdef cdnn_act_args args = _act_args(alpha, max_value, threshold)
    cdef int rows, cols
    y, rows, cols = _activation_input(x, "x")
    cdef float *py = fptr(y)
    with nogil:
        if act == 4 or act == 17:
            cdnn_rowwise_act_rows(act, py, cols, rows, cols)
        else:
            cdnn_bias_act_tile(act, args, py, cols, rows, cols, NULL, NULL, 0)
    return y.reshape(x.shape)


def activation_backward(str activation, x, g, float alpha=0.2, max_value=None, float threshold=0.0):
    """``g * act'(x)`` (the vector-Jacobian product for row-wise ones) at pre-activation ``x``, as
    training computes it (from the output, or from ``x`` for the activations in GRAD_FROM_Z)."""
    cdef int act = _code(ACTIVATIONS, activation, "activation")
    cdef cdnn_act_args args = _act_args(alpha, max_value, threshold)
    cdef int rows, cols
    _, rows, cols = _activation_input(x, "x")
    if not isinstance(g, np.ndarray) or g.shape != x.shape:
        raise ValueError(f"Invalid shape for argument `g`: expected {x.shape}, received "
                         f"{getattr(g, 'shape', type(g).__name__)}")
    _check(g, "g", g.ndim)
    a = activation_forward(activation, x, alpha, max_value, threshold).reshape(rows, cols) \
        if activation not in GRAD_FROM_Z \
        else np.ascontiguousarray(x.reshape(rows, cols))
    out = np.array(g, dtype=np.float32, order="C").reshape(rows, cols)
    cdef float *po = fptr(out)
    cdef float *pa = fptr(a)
    with nogil:
        if act == 4 or act == 17:
            cdnn_rowwise_backward_rows(act, po, cols, pa, cols, rows, cols)
        else:
            cdnn_dact_tile(act, args, po, cols, pa, cols, rows, cols)
    return out.reshape(x.shape)


def _activation_input(x, str name):
    """A copy of x as [rows, cols] float32 (cols: the last axis), checked."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Invalid argument `{name}`: expected a numpy.ndarray, received {type(x).__name__}")
    _check(x, name, x.ndim)
    if x.ndim == 0:
        raise ValueError(f"Invalid shape for argument `{name}`: expected at least one dimension, received a scalar")
    cols = x.shape[x.ndim - 1]
    rows = x.size // cols if cols else 0
    if x.size > INT_LIMIT:
        raise ValueError(f"Invalid shape for argument `{name}`: more than 2**31 - 1 elements")
    return np.array(x, dtype=np.float32, order="C").reshape(rows, cols), rows, cols


cdef cdnn_loss_opts _loss_opts(options, str loss_name) except *:
    """The core's options of a loss from a dict of Keras' argument names (missing: Keras' defaults)."""
    cdef cdnn_loss_opts o = cdnn_loss_opts_default()
    if not options:
        return o
    unknown_keys = set(options) - set(LOSS_OPTIONS)
    if unknown_keys:
        raise ValueError(f"Invalid loss options: {sorted(unknown_keys)}, expected some of {sorted(LOSS_OPTIONS)}")
    for key in ("label_smoothing", "delta", "gamma", "alpha"):
        v = float(options.get(key, LOSS_OPTIONS[key]))
        if not isfinite(v):
            raise ValueError(f"Invalid value for loss option `{key}`: expected a finite number, received {v}")
    o.label_smoothing = options.get("label_smoothing", 0.0)
    o.delta = options.get("delta", 1.0)
    o.gamma = options.get("gamma", 2.0)
    o.alpha = options.get("alpha", 0.25)
    if not 0.0 <= o.label_smoothing <= 1.0:
        raise ValueError(f"Invalid value for loss option `label_smoothing`: expected a number in [0, 1], "
                         f"received {o.label_smoothing}")
    o.class_balancing = bool(options.get("apply_class_balancing", False))
    ignore = options.get("ignore_class")
    if ignore is not None:
        if loss_name != "sparse_categorical_crossentropy":
            raise ValueError(f"Invalid loss option `ignore_class` for {loss_name}: only "
                             f"sparse_categorical_crossentropy has it")
        if not -2**31 <= int(ignore) < 2**31:
            raise ValueError(f"Invalid value for loss option `ignore_class`: expected a 32-bit integer, received {ignore}")
        o.has_ignore = 1
        o.ignore_class = int(ignore)
    return o


def _check_weights(w, str name, long rows):
    """Validate per-row weights: float32, C-contiguous, one per row, finite and not negative."""
    if w is None:
        return None
    _check(w, name, 1)
    _shape(w, name, (rows,))
    if rows and not cdnn_all_finite(<const float *>cnp.PyArray_DATA(w), rows):
        raise ValueError(f"Invalid values in `{name}`: expected finite weights, received NaN or infinity")
    if rows and w.min() < 0:
        raise ValueError(f"Invalid values in `{name}`: expected weights >= 0, received {w.min()}")
    return w


def loss_forward_backward(str loss, output, z, y, str activation="softmax", float alpha=0.2,
                          bint from_logits=False, metric=None, options=None, sample_weight=None,
                          bint need_grad=True, max_value=None, float threshold=0.0):
    """Per-row loss and correctness, and dL/dz of the batch's loss (Keras' sum_over_batch_size).

    ``output`` is the last layer's output and ``z`` its pre-activation. ``options``: the loss's
    options by Keras' names (see LOSS_OPTIONS); ``sample_weight``: float32 per-row weights.
    Returns ``(row_loss float64, row_correct float64, dz float32 or None)``: row_loss is each
    row's weighted loss (0 for rows of ``ignore_class``), dz is divided by the rows that count.
    """
    _check(output, "output", 2)
    _check(z, "z", 2)
    cdef int rows = output.shape[0], cols = output.shape[1]
    _shape(z, "z", (rows, cols))
    cdef int lc = _code(LOSSES, loss, "loss"), act = _code(ACTIVATIONS, activation, "activation")
    cdef int mc = _code(METRICS, metric, "metric")
    _check_metric(metric, loss)
    cdef cdnn_loss_opts o = _loss_opts(options, loss)
    ys, yd = _check_labels(y, "y", rows, cols, loss, o.ignore_class if o.has_ignore else None)
    o.hinge_binary = _hinge_binary(loss, yd)
    sw = _check_weights(sample_weight, "sample_weight", rows)
    if rows == 0:
        raise ValueError("Invalid argument `output`: expected at least one row, received an empty batch")
    row_loss = np.empty(rows, np.float64)
    row_correct = np.empty(rows, np.float64)
    dz = np.empty((rows, cols), np.float32) if need_grad else None
    cdef float *po = fptr(output)
    cdef float *pz = fptr(z)
    cdef float *pyd = fptr(yd)
    cdef int32_t *pys = iptr(ys)
    cdef float *pdz = fptr(dz)
    cdef float *psw = fptr(sw)
    cdef double *pl = <double *>cnp.PyArray_DATA(row_loss)
    cdef double *pc = <double *>cnp.PyArray_DATA(row_correct)
    cdef int valid
    cdef cdnn_act_args args = _act_args(alpha, max_value, threshold)
    with nogil:
        valid = cdnn_loss_valid_rows(lc, &o, pys, NULL, rows)
        cdnn_loss_rows(lc, mc, act, args, from_logits, 0, rows, cols, po, pz, pys, pyd, cols, valid, pdz, pl, pc,
                       &o, psw)
    return row_loss, row_correct, dz


def _opt(h, str key, default):
    v = h.get(key)
    return default if v is None else v


cdef cdnn_opt_params _opt_params(dict h) except *:
    """The C parameters from Keras' hyper-parameter names (``None`` = option unset). ``step_lr`` /
    ``step_aux`` arrays, if given, must stay alive while C may read them (Network keeps them)."""
    cdef cdnn_opt_params p
    p.kind = _code(OPTIMIZERS, h.get("name"), "optimizer")
    p.lr = _opt(h, "learning_rate", 0.001)
    p.momentum = _opt(h, "momentum", 0.0)
    p.nesterov = bool(h.get("nesterov", False))
    p.rho = _opt(h, "rho", 0.9)
    p.beta_1 = _opt(h, "beta_1", 0.9)
    p.beta_2 = _opt(h, "beta_2", 0.999)
    p.epsilon = _opt(h, "epsilon", 1e-7)
    p.amsgrad = bool(h.get("amsgrad", False))
    p.weight_decay = _opt(h, "weight_decay", 0.0)
    p.clipvalue = _opt(h, "clipvalue", 0.0)
    p.clipnorm = _opt(h, "clipnorm", 0.0)
    p.global_clipnorm = _opt(h, "global_clipnorm", 0.0)
    p.use_ema = bool(h.get("use_ema", False))
    p.ema_momentum = _opt(h, "ema_momentum", 0.99)
    p.ema_overwrite_frequency = _opt(h, "ema_overwrite_frequency", 0)
    p.accumulation_steps = _opt(h, "gradient_accumulation_steps", 0)
    p.lr_power = _opt(h, "learning_rate_power", -0.5)
    p.l1 = _opt(h, "l1_regularization_strength", 0.0)
    p.l2 = _opt(h, "l2_regularization_strength", 0.0)
    p.l2_shrinkage = _opt(h, "l2_shrinkage_regularization_strength", 0.0)
    p.beta = _opt(h, "beta", 0.0)
    p.beta_2_decay = _opt(h, "beta_2_decay", -0.8)
    p.epsilon_1 = _opt(h, "epsilon_1", 1e-30)
    p.epsilon_2 = _opt(h, "epsilon_2", 1e-3)
    p.clip_threshold = _opt(h, "clip_threshold", 1.0)
    p.relative_step = bool(h.get("relative_step", True))
    p.step_lr = NULL
    p.step_aux = NULL
    p.step_base = 0
    step_lr, step_aux = h.get("step_lr"), h.get("step_aux")
    if step_lr is not None:
        _check(step_lr, "step_lr", 1)
        p.step_lr = fptr(step_lr)
        p.step_base = h["step_base"]
    if step_aux is not None:
        _check(step_aux, "step_aux", 1)
        p.step_aux = fptr(step_aux)
        p.step_base = h["step_base"]
    return p


def optimizer_apply(dict hparams, list variables, list grads, list slots, long step, list rules=None):
    """One optimizer step over several variables at once, the way a training step applies it (clipping by
    norms, accumulation, EMA and constraints included); ``slots[i]`` holds variable i's
    ``[s1, s2, s3, ema, acc]`` (None where unused); gradients are modified in place. Returns the
    regularization penalty at the weights before the update."""
    cdef cdnn_opt_params p = _opt_params(hparams)
    views = check_apply(hparams, p.kind, p.use_ema, p.accumulation_steps, variables, grads, slots, step, rules)
    cdef cdnn_opt_step st = cdnn_opt_prepare(&p, step)
    cdef cdnn_var_slots vs
    cdef cdnn_param_rules r
    cdef double penalty = 0.0, pen
    sums = []
    for w, g, sl, rl, rows, cols in views:
        vs.s1, vs.s2, vs.s3, vs.ema, vs.acc = fptr(sl[0]), fptr(sl[1]), fptr(sl[2]), fptr(sl[3]), fptr(sl[4])
        r = _rules(rl)
        sums.append(cdnn_opt_prepare_grad(&p, st, &r, fptr(w), fptr(g), vs, rows, cols, &pen))
        penalty += pen
    cdef double total = 0.0
    for x in sums:
        total += x
    for (w, g, sl, rl, rows, cols), ss in zip(views, sums):
        vs.s1, vs.s2, vs.s3, vs.ema, vs.acc = fptr(sl[0]), fptr(sl[1]), fptr(sl[2]), fptr(sl[3]), fptr(sl[4])
        r = _rules(rl)
        cdnn_opt_apply_var(&p, st, &r, fptr(w), fptr(g), vs, rows, cols, ss, total)
    return penalty


def optimizer_needs_whole(dict hparams) -> bool:
    """Whether these settings take the whole-gradient path (no fused update)."""
    cdef cdnn_opt_params p = _opt_params(hparams)
    return bool(cdnn_opt_needs_whole(&p))


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
    if cdnn_opt_needs_whole(&p):
        raise ValueError(f"optimizer_update: {hparams.get('name')!r} with these options needs the whole "
                         f"gradient: use optimizer_apply")
    need = _slots_needed(hparams)
    if (1 in need and slot1 is None) or (2 in need and slot2 is None):
        raise ValueError(f"Invalid arguments for optimizer {hparams.get('name')!r}: missing slot array(s)")
    _check_step_arrays(hparams, step, 1)
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
    cdef object step_arrays

    def __cinit__(self):
        self.net.layers = NULL
        self.ws = NULL

    def __init__(self, list layers, str loss, bint from_logits, metric, dict optimizer, loss_options=None):
        """``layers``: dicts with W, b (or None), activation, alpha, dropout (input rate),
        slots (list of up to 4 arrays: W1, W2, b1, b2 or None), extra_slots (dict of W3, b3, Wema,
        bema, Wacc, bacc: arrays or None), kernel_rules / bias_rules (see ``_rules``), trainable (default
        True: False leaves the layer's W and b, and their slots, bit for bit as they are while the layers
        around it train). ``loss_options``: the loss's options by Keras' names (see LOSS_OPTIONS)."""
        if not layers:
            raise ValueError("Invalid argument `layers`: a network needs at least one Dense layer")
        check_network(layers, optimizer)
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
        self.net.loss_opts = _loss_opts(loss_options, loss)
        self.loss_name = loss
        cdef cdnn_layer *ly
        for i, d in enumerate(layers):
            W, b = d["W"], d.get("b")
            slots = list(d.get("slots", [None] * 4)) + [None] * 4
            ly = &self.net.layers[i]
            ly[0] = _layer_view(W, b, d.get("activation", "linear"), d.get("alpha", 0.2), d.get("max_value"),
                                d.get("threshold", 0.0))
            ly.in_drop = float(d.get("dropout", 0.0))
            ly.frozen = not d.get("trainable", True)
            ly.W1 = fptr(slots[0]); ly.W2 = fptr(slots[1]); ly.b1 = fptr(slots[2]); ly.b2 = fptr(slots[3])
            extra = dict(d.get("extra_slots") or {})
            ly.W3 = fptr(extra.get("W3")); ly.b3 = fptr(extra.get("b3"))
            ly.Wema = fptr(extra.get("Wema")); ly.bema = fptr(extra.get("bema"))
            ly.Wacc = fptr(extra.get("Wacc")); ly.bacc = fptr(extra.get("bacc"))
            krules = _check_rules(d.get("kernel_rules"), f"layers[{i}].kernel_rules", W.shape)
            brules = _check_rules(d.get("bias_rules"), f"layers[{i}].bias_rules", b.shape) if b is not None else None
            ly.kernel_rules = _rules(krules)
            ly.bias_rules = _rules(brules)
            self.arrays.append((W, b, slots[:4], extra, krules, brules))
        self.n_in = self.net.layers[0].in_
        self.n_out = layers[len(layers) - 1]["W"].shape[1]
        self._check_slots(self.net.opt, optimizer)
        self.step_arrays = optimizer

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
        self._check_slots(p, hparams)
        self.net.opt = p
        self.step_arrays = hparams  # keeps step_lr/step_aux alive while C reads them

    cdef int _check_slots(self, cdnn_opt_params p, dict h) except -1:
        """Refuse optimizer settings whose slots were not allocated (C would dereference NULL)."""
        need = _slots_needed(h)
        need1, need2, need3 = 1 in need, 2 in need, 3 in need
        for i in range(self.net.n_layers):
            ly = &self.net.layers[i]
            hb = ly.b != NULL
            ada = p.kind == 9  # Adafactor: a bias has only v (slot 3)
            if (need1 and (ly.W1 == NULL or (hb and ly.b1 == NULL and not ada))) or \
               (need2 and (ly.W2 == NULL or (hb and ly.b2 == NULL and not ada))) or \
               (need3 and (ly.W3 == NULL or (hb and ly.b3 == NULL))) or \
               (p.use_ema and (ly.Wema == NULL or (hb and ly.bema == NULL))) or \
               (p.accumulation_steps > 1 and (ly.Wacc == NULL or (hb and ly.bacc == NULL))):
                raise ValueError(f"Invalid optimizer settings for layer {i}: {hparams_name(p.kind)} with these "
                                 f"hyper-parameters needs slot arrays that were not provided")
        return 0

    def _labels(self, y, int n):
        """(sparse, dense) labels checked for the loss, and whether hinge labels are 0/1 (Keras then reads
        them as -1/1; decided on the whole array), to set under the lock for the C call."""
        o = self.net.loss_opts
        ys, yd = _check_labels(y, "y", n, self.n_out, self.loss_name, o.ignore_class if o.has_ignore else None)
        return ys, yd, _hinge_binary(self.loss_name, yd)

    def train_run(self, x, y, perm, long first, int n_batches, int batch_size, long step0,
                  unsigned long long seed, batch_loss, batch_correct, int threads=0,
                  bint stop_nonfinite_loss=False, sample_weight=None, outputs=None):
        """Train ``n_batches`` mini-batches of ``batch_size`` rows ``x[perm[...]]``, starting at batch ``first``.

        ``threads > 0`` caps this run's threads (the results do not depend on it).

        Writes per-batch loss and correctness sums into ``batch_loss``/``batch_correct`` (float64)
        and returns the number of batches trained: ``n_batches``, or with ``stop_nonfinite_loss``
        fewer if a batch's loss is NaN or infinite: the run stops after that batch's update (as
        Keras' ``TerminateOnNaN`` stops ``fit``), that batch being the last one written.
        The rows of ``x`` are checked as they are gathered: the first batch with a NaN or an
        infinity raises :class:`NonFiniteInputError` before its update (the batches before it are
        trained and counted in ``steps_done``). ``sample_weight``: float32 weights of the rows of ``x``
        (finite, >= 0); a batch's loss is then its weighted sum over its rows.
        ``outputs`` (float32, C-contiguous, at least ``n_batches * batch_size`` rows of ``n_out``),
        if given, receives each trained batch's forward outputs, batch ``j`` from row ``j * batch_size``
        (for metrics computed outside C).
        """
        _check(x, "x", 2)
        cdef long n = x.shape[0]
        if x.shape[1] != self.n_in:
            raise ValueError(f"Invalid shape for argument `x`: expected (n, {self.n_in}), received {x.shape}")
        ys, yd, hinge01 = self._labels(y, n)
        sw = _check_weights(sample_weight, "sample_weight", n)
        check_batches(perm, n, first, n_batches, batch_size)
        check_sums(batch_loss, "batch_loss", n_batches)
        check_sums(batch_correct, "batch_correct", n_batches)
        check_outputs(outputs, "outputs", n_batches * batch_size, self.n_out)
        if n_batches == 0:
            return 0
        _check_step_arrays(self.step_arrays, step0 + 1, n_batches)
        cdef float *pout = fptr(outputs)
        cdef float *px = fptr(x)
        cdef int32_t *pys = iptr(ys)
        cdef float *pyd = fptr(yd)
        cdef int32_t *pp = iptr(perm)
        cdef double *pl = <double *>cnp.PyArray_DATA(batch_loss)
        cdef double *pc = <double *>cnp.PyArray_DATA(batch_correct)
        cdef float *psw = fptr(sw)
        cdef int done = 0
        with self.lock:
            self._workspace(min(batch_size, n))
            self.net.loss_opts.hinge_binary = hinge01
            with nogil:
                done = cdnn_train_run(&self.net, self.ws, px, n, pys, pyd, self.n_out, pp, first, n_batches,
                                      batch_size, step0, seed, pl, pc, threads, stop_nonfinite_loss, psw, pout)
            self.steps_done += done
        if stop_nonfinite_loss and done > 0 and not isfinite(pl[done - 1]):
            return done  # stopped after the batch whose loss is not finite (the last one, possibly)
        if done < n_batches:
            batch = first + done
            rows = perm[batch * batch_size: min(n, (batch + 1) * batch_size)]
            bad = rows[~np.isfinite(x[rows]).all(axis=1)]  # none if x changed meanwhile
            raise NonFiniteInputError(int(bad.min()) if bad.size else None, batch, done)
        return done

    def predict_lean(self, cnp.ndarray x not None, int batch_size):
        """Outputs for ``x`` if the core reads it as it is (native float32, C-contiguous, shape (n >= 1, n_in),
        every value finite), else None (the caller takes the checked path): one C call, which checks each
        piece of ``x`` for NaN and infinity just before its forward pass reads it."""
        if (cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_ISBEHAVED_RO(x) or not cnp.PyArray_IS_C_CONTIGUOUS(x) or x.ndim != 2
                or x.shape[0] < 1 or x.shape[1] != self.n_in or batch_size < 1):
            return None
        cdef int64_t n = x.shape[0]
        cdef float *px = <float *>cnp.PyArray_DATA(x)
        cdef int ok = 0
        out = np.empty((n, self.n_out), np.float32)
        cdef float *po = <float *>cnp.PyArray_DATA(out)
        with self.lock:
            self._workspace(min(batch_size, n))
            with nogil:
                ok = cdnn_predict(&self.net, self.ws, px, n, po, NULL, NULL, self.n_out, NULL, NULL, NULL, 1)
        return out if ok else None

    def predict(self, x, int batch_size=256, y=None, sample_weight=None):
        """Outputs for every row of ``x``; with labels ``y`` also ``(loss_sum, correct_sum)``.

        The loss sum is over batches of ``batch_size`` rows as in :meth:`train_run` (rows weighted
        by ``sample_weight``, float32, if given).
        """
        _check(x, "x", 2)
        cdef long n = x.shape[0]
        if x.shape[1] != self.n_in:
            raise ValueError(f"Invalid shape for argument `x`: expected (n, {self.n_in}), received {x.shape}")
        if batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`: expected a positive integer, received {batch_size}")
        ys = yd = sw = None
        hinge01 = False
        if y is not None:
            ys, yd, hinge01 = self._labels(y, n)
            sw = _check_weights(sample_weight, "sample_weight", n)
        out = np.empty((n, self.n_out), np.float32)
        if n == 0:
            return (out, 0.0, 0.0) if y is not None else out
        cdef float *px = fptr(x)
        cdef float *po = fptr(out)
        cdef int32_t *pys = iptr(ys)
        cdef float *pyd = fptr(yd)
        cdef double ls = 0, cs = 0
        cdef bint labelled = y is not None
        cdef float *psw = fptr(sw)
        with self.lock:
            # the workspace's batch is the loss's batch (ignore_class's mean is per batch): exactly batch_size
            if self.ws != NULL and self.ws_batch != min(batch_size, n) and labelled and self.net.loss_opts.has_ignore:
                cdnn_workspace_free(self.ws)
                self.ws = NULL
            self._workspace(min(batch_size, n))
            self.net.loss_opts.hinge_binary = hinge01
            with nogil:
                cdnn_predict(&self.net, self.ws, px, n, po, pys, pyd, self.n_out,
                             &ls if labelled else NULL, &cs if labelled else NULL, psw, 0)
        return (out, ls, cs) if labelled else out


# ---- a graph of layers ----------------------------------------------------------

cdef extern from "graph.h" nogil:
    ctypedef struct cdnn_node:
        int op, n_in
        const int *in_ "in"
        int rows, width, frozen, inference, live, share, act
        cdnn_act_args act_args
        cdnn_layer dense
        float *gamma
        float *beta
        float *gamma1
        float *gamma2
        float *beta1
        float *beta2
        float *gamma3
        float *beta3
        float *gamma_ema
        float *beta_ema
        float *gamma_acc
        float *beta_acc
        cdnn_param_rules gamma_rules, beta_rules
        float *moving_mean
        float *moving_var
        float momentum, epsilon
        const float *scale
        const float *offset
        int scale_n, offset_n
        float rate
        int alpha_r, alpha_c, alpha_mat
        uint64_t seed_offset
        float activity_l1, activity_l2
    ctypedef struct cdnn_output:
        int node, loss, from_logits, metric
        float weight
        cdnn_loss_opts opts
    ctypedef struct cdnn_graph:
        int n_nodes
        cdnn_node *nodes
        int n_inputs
        const int *inputs
        int n_outputs
        const cdnn_output *outputs
        cdnn_opt_params opt
        int fuse
    ctypedef struct cdnn_graph_ws:
        pass
    cdnn_graph_ws *cdnn_graph_ws_new(const cdnn_graph *g, int max_batch, int threads)
    void cdnn_graph_ws_free(cdnn_graph_ws *ws)
    int cdnn_graph_train_run(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n,
                             const int32_t *const *ysparse, const float *const *ydense, const int32_t *perm,
                             int64_t first, int n_batches, int bs, int64_t step0, uint64_t seed, double *batch_loss,
                             double *out_loss, double *out_correct, int threads, int stop_nonfinite_loss,
                             const float *const *sample_weight, float *const *outputs)
    void cdnn_graph_fusions(const cdnn_graph *g, cdnn_graph_ws *ws, int n_want, const int *want, int labelled,
                            int *end)
    int cdnn_graph_predict(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n, int bs,
                           uint64_t seed, int n_want,
                           const int *want, float *const *outs, const int32_t *const *ysparse,
                           const float *const *ydense, const float *const *sample_weight, double *loss_sum,
                           double *correct_sum, int check_finite)

#: Graph node ops and their codes in the C core (src_c/graph.h).
OPS = {"input": 0, "dense": 1, "batchnorm": 2, "layernorm": 3, "activation": 4, "affine": 5, "dropout": 6,
       "gaussian_noise": 7, "add": 8, "subtract": 9, "multiply": 10, "average": 11, "maximum": 12, "minimum": 13,
       "concatenate": 14, "reshape": 15, "dot": 16, "unitnorm": 17, "rmsnorm": 18, "prelu": 19,
       "gaussian_dropout": 20, "alpha_dropout": 21}
_MERGES = ("add", "subtract", "multiply", "average", "maximum", "minimum")
#: The most inputs one merge node takes.
MAX_NODE_INPUTS = 64


cdef class Graph:
    """The C view of a graph of layers (see GRAPH_SPEC.md / docs/design.md, "The graph executor").

    ``nodes``: dicts in topological order (``op``, ``inputs``, ``shape``, ``name`` and the op's
    parameters); ``inputs``: the input nodes in the model's input order; ``outputs``: dicts
    ``{"node", "loss", "from_logits", "weight", "metric"}``; ``optimizer``: as :class:`Network`.
    The whole description is validated here, before any C call; the graph keeps a reference to
    every array it hands to C, and the model updates them in place only.
    """
    cdef cdnn_graph g
    cdef cdnn_graph_ws *ws
    cdef int ws_batch, ws_threads
    cdef int *in_idx
    cdef object arrays, lock
    cdef object step_arrays, in_sizes
    cdef readonly long steps_done
    cdef readonly tuple shapes, input_nodes, output_nodes, loss_names
    cdef readonly int n_nodes
    cdef readonly bint live

    def __cinit__(self):
        self.g.nodes = NULL
        self.g.inputs = NULL
        self.g.outputs = NULL
        self.in_idx = NULL
        self.ws = NULL

    def __dealloc__(self):
        cdnn_graph_ws_free(self.ws)
        free(self.g.nodes)
        free(<void *>self.g.inputs)
        free(<void *>self.g.outputs)
        free(self.in_idx)

    @cython.wraparound(True)
    def __init__(self, list nodes, list inputs, list outputs, dict optimizer):
        if not nodes:
            raise ValueError("Invalid argument `nodes`: a graph needs at least one node")
        self.arrays = []
        self.lock = threading.Lock()
        self.steps_done = 0
        cdef int N = len(nodes)
        self.n_nodes = N
        shapes, n_in_total, in_list = check_graph(nodes, inputs, outputs, optimizer)
        cdef cdnn_opt_params opt = _opt_params(optimizer)

        # ---- then build the C description
        self.g.n_nodes = N
        self.g.nodes = <cdnn_node *>malloc(N * sizeof(cdnn_node))
        self.in_idx = <int *>malloc((n_in_total + 1) * sizeof(int))
        self.g.n_inputs = len(in_list)
        cdef int *gin = <int *>malloc((len(in_list) + 1) * sizeof(int))
        self.g.inputs = gin
        self.g.n_outputs = len(outputs)
        cdef cdnn_output *gout = <cdnn_output *>malloc(len(outputs) * sizeof(cdnn_output))
        self.g.outputs = gout
        if self.g.nodes == NULL or self.in_idx == NULL or gin == NULL or gout == NULL:
            raise MemoryError()
        memset_nodes(self.g.nodes, N)
        self.g.opt = opt
        self.g.fuse = 1
        self.step_arrays = optimizer  # keeps step_lr/step_aux alive while C reads them
        cdef int pos = 0
        cdef cdnn_node *nd
        for i, d in enumerate(nodes):
            nd = &self.g.nodes[i]
            op = d["op"]
            ins = [int(k) for k in d.get("inputs", [])]
            shape = shapes[i]
            nd.op = OPS[op]
            nd.n_in = len(ins)
            nd.in_ = self.in_idx + pos
            for k in ins:
                self.in_idx[pos] = k
                pos += 1
            nd.width = shape[-1]
            nd.rows = int(np.prod(shape[:-1], dtype=np.int64))
            nd.frozen = not d.get("trainable", True)
            nd.share = int(d.get("share", -1))
            activity = d.get("activity") or {}
            nd.activity_l1 = activity.get("l1", 0.0)
            nd.activity_l2 = activity.get("l2", 0.0)
            slots = list(d.get("slots") or []) + [None] * 4
            extra = dict(d.get("extra_slots") or {})
            keep = [d.get(k) for k in ("W", "b", "gamma", "beta", "moving_mean", "moving_variance", "scale",
                                       "offset")] + slots[:4] + [extra]
            self.arrays.append(keep)
            if op == "dense":
                W, b = d["W"], d.get("b")
                nd.dense = _layer_view(W, b, d.get("activation", "linear"), d.get("alpha", 0.2),
                                       d.get("max_value"), d.get("threshold", 0.0))
                nd.act = nd.dense.act
                nd.act_args = nd.dense.act_args
                nd.dense.frozen = nd.frozen
                nd.dense.W1 = fptr(slots[0]); nd.dense.W2 = fptr(slots[1])
                nd.dense.b1 = fptr(slots[2]); nd.dense.b2 = fptr(slots[3])
                nd.dense.W3 = fptr(extra.get("W3")); nd.dense.b3 = fptr(extra.get("b3"))
                nd.dense.Wema = fptr(extra.get("Wema")); nd.dense.bema = fptr(extra.get("bema"))
                nd.dense.Wacc = fptr(extra.get("Wacc")); nd.dense.bacc = fptr(extra.get("bacc"))
                krules = _check_rules(d.get("kernel_rules"), f"nodes[{i}].kernel_rules", W.shape)
                brules = _check_rules(d.get("bias_rules"), f"nodes[{i}].bias_rules", b.shape) if b is not None \
                    else None
                nd.dense.kernel_rules = _rules(krules)
                nd.dense.bias_rules = _rules(brules)
                keep.extend([krules, brules])
            elif op == "activation":
                nd.act = _code(ACTIVATIONS, d.get("activation", "linear"), "activation")
                nd.act_args = _act_args(d.get("alpha", 0.2), d.get("max_value"), d.get("threshold", 0.0))
            elif op in ("dot", "unitnorm"):
                nd.epsilon = float(d.get("epsilon", 0.0 if op == "dot" else 1e-3))
            elif op in ("batchnorm", "layernorm", "rmsnorm", "prelu"):
                gm, bt = d.get("gamma"), d.get("beta")
                nd.gamma = fptr(gm)
                nd.beta = fptr(bt)
                nd.gamma1 = fptr(slots[0]); nd.gamma2 = fptr(slots[1])
                nd.beta1 = fptr(slots[2]); nd.beta2 = fptr(slots[3])
                nd.gamma3 = fptr(extra.get("gamma3")); nd.beta3 = fptr(extra.get("beta3"))
                nd.gamma_ema = fptr(extra.get("gamma_ema")); nd.beta_ema = fptr(extra.get("beta_ema"))
                nd.gamma_acc = fptr(extra.get("gamma_acc")); nd.beta_acc = fptr(extra.get("beta_acc"))
                grules = _check_rules(d.get("gamma_rules"), f"nodes[{i}].gamma_rules", (0,))
                brules = _check_rules(d.get("beta_rules"), f"nodes[{i}].beta_rules", (0,))
                nd.gamma_rules = _rules(grules)
                nd.beta_rules = _rules(brules)
                nd.epsilon = float(d.get("epsilon", 1e-3))
                if op == "batchnorm":
                    nd.moving_mean = fptr(d["moving_mean"])
                    nd.moving_var = fptr(d["moving_variance"])
                    nd.momentum = float(d.get("momentum", 0.99))
                    nd.inference = bool(d.get("inference", False))
                if op == "prelu":
                    nd.alpha_r, nd.alpha_c = d["alpha_shape"]
                    nd.alpha_mat = gm.ndim == 2
                nd.live = bool(d.get("live", False))
            elif op == "affine":
                nd.scale = fptr(d["scale"])
                nd.offset = fptr(d["offset"])
                nd.scale_n = d["scale"].shape[0]
                nd.offset_n = d["offset"].shape[0]
            elif op in ("dropout", "alpha_dropout", "gaussian_noise", "gaussian_dropout"):
                nd.rate = float(d.get("stddev" if op in ("gaussian_noise", "gaussian_dropout") else "rate", 0.0))
                nd.seed_offset = int(d.get("seed_offset", 0))
                nd.live = bool(d.get("live", False))
            self.live = self.live or nd.live
        for k, i in enumerate(in_list):
            gin[k] = i
        for o, out in enumerate(outputs):
            gout[o].node = int(out["node"])
            gout[o].loss = -1 if out.get("loss") is None else LOSSES[out["loss"]]
            gout[o].from_logits = bool(out.get("from_logits", False))
            gout[o].metric = METRICS[out.get("metric")]
            gout[o].weight = float(out.get("weight", 1.0))
            options = out.get("loss_options") or {}
            gout[o].opts = _loss_opts(options, out.get("loss") or "")
        self.shapes = tuple(shapes)
        self.input_nodes = tuple(in_list)
        self.output_nodes = tuple(int(out["node"]) for out in outputs)
        self.loss_names = tuple(out.get("loss") for out in outputs)
        self._check_slots(self.g.opt)

    cdef int _check_slots(self, cdnn_opt_params p) except -1:
        """Refuse optimizer settings whose slots were not allocated for a trainable parameter."""
        need = _slots_needed({"name": hparams_name(p.kind), "momentum": p.momentum, "amsgrad": p.amsgrad})
        need1, need2, need3 = 1 in need, 2 in need, 3 in need
        ada = p.kind == 9  # Adafactor: a 1-D variable (bias, gamma, beta) has only v (slot 3)
        cdef cdnn_node *nd
        for i in range(self.g.n_nodes):
            nd = &self.g.nodes[i]
            if nd.frozen:
                continue
            if nd.op == OPS["dense"]:
                rows = ((nd.dense.W != NULL, 2, nd.dense.W1 != NULL, nd.dense.W2 != NULL, nd.dense.W3 != NULL,
                         nd.dense.Wema != NULL, nd.dense.Wacc != NULL),
                        (nd.dense.b != NULL, 1, nd.dense.b1 != NULL, nd.dense.b2 != NULL, nd.dense.b3 != NULL,
                         nd.dense.bema != NULL, nd.dense.bacc != NULL))
            elif nd.op == OPS["batchnorm"] or nd.op == OPS["layernorm"] or nd.op == OPS["rmsnorm"] or nd.op == OPS["prelu"]:
                rows = ((nd.gamma != NULL, 1 + nd.alpha_mat, nd.gamma1 != NULL, nd.gamma2 != NULL, nd.gamma3 != NULL,
                         nd.gamma_ema != NULL, nd.gamma_acc != NULL),
                        (nd.beta != NULL, 1, nd.beta1 != NULL, nd.beta2 != NULL, nd.beta3 != NULL,
                         nd.beta_ema != NULL, nd.beta_acc != NULL))
            else:
                continue
            for has, ndim, s1, s2, s3, ema, acc in rows:
                if not has:
                    continue
                factored_free = ada and ndim == 1
                if (need1 and not s1 and not factored_free) or (need2 and not s2 and not factored_free) or \
                        (need3 and not s3) or (p.use_ema and not ema) or (p.accumulation_steps > 1 and not acc):
                    raise ValueError(f"Invalid optimizer settings for graph node {i}: {hparams_name(p.kind)} "
                                     f"with these hyper-parameters needs slot arrays that were not provided")
        return 0

    @property
    def fuse(self):
        """Whether inference runs a Dense's BatchNormalization/Activation readers in its epilogue (same values)."""
        return bool(self.g.fuse)

    @fuse.setter
    def fuse(self, bint on):
        self.g.fuse = on

    def fusions(self, nodes=(), bint labelled=False):
        """Per node, the last node a Dense's epilogue computes in a predict of ``nodes`` (-1: none)."""
        want = np.asarray(list(nodes) + [0], np.int32)
        if want.min() < 0 or want.max() >= self.n_nodes:
            raise ValueError(f"Invalid argument `nodes`: expected node indices in [0, {self.n_nodes})")
        end = np.empty(self.n_nodes, np.int32)
        with self.lock:
            self._workspace(1)
            cdnn_graph_fusions(&self.g, self.ws, len(want) - 1, <int *>iptr(want), labelled, <int *>iptr(end))
        return end

    def set_optimizer(self, dict hparams):
        """Replace the optimizer hyper-parameters (e.g. a changed learning rate); slots are unchanged."""
        cdef cdnn_opt_params p = _opt_params(hparams)
        self._check_slots(p)
        self.g.opt = p
        self.step_arrays = hparams  # keeps step_lr/step_aux alive while C reads them

    @cython.wraparound(True)
    cdef int _workspace(self, int batch) except -1:
        cdef int threads = min(cdnn_get_num_threads(), MAX_THREADS)
        for s in self.shapes:
            if batch * math.prod(s[:-1]) > INT_LIMIT:
                raise ValueError(f"Invalid batch size {batch}: {batch} x {s[:-1]} rows exceed 2**31 - 1")
        if self.ws == NULL or batch > self.ws_batch or threads > self.ws_threads:
            cdnn_graph_ws_free(self.ws)
            self.ws = NULL
            self.ws = cdnn_graph_ws_new(&self.g, batch, threads)
            if self.ws == NULL:
                raise MemoryError(f"cdnn: could not allocate the graph workspace for batches of {batch}")
            self.ws_batch, self.ws_threads = batch, threads
        return 0

    def _xs(self, xs):
        if not isinstance(xs, (list, tuple)) or len(xs) != len(self.input_nodes):
            raise ValueError(f"Invalid argument `xs`: expected a list of {len(self.input_nodes)} array(s), "
                             f"received {type(xs).__name__}" + (f" of {len(xs)}" if isinstance(xs, (list, tuple))
                                                                 else ""))
        n = None
        for k, x in enumerate(xs):
            _check(x, f"xs[{k}]", 2)
            size = math.prod(self.shapes[self.input_nodes[k]])
            if n is None:
                n = x.shape[0]
            if x.shape != (n, size):
                raise ValueError(f"Invalid shape for argument `xs[{k}]`: expected ({n}, {size}), received {x.shape}")
        return n

    def _ys(self, ys, long n):
        cdef cdnn_output *outs = <cdnn_output *>self.g.outputs
        check_ys(ys, n, self.shapes, self.output_nodes, self.loss_names,
                 [outs[o].opts.ignore_class if outs[o].opts.has_ignore else None for o in range(len(self.output_nodes))])
        for o, y in enumerate(ys):
            if self.loss_names[o] is not None:  # Keras decides on the labels
                (<cdnn_output *>self.g.outputs)[o].opts.hinge_binary = _hinge_binary(self.loss_names[o], y)

    def _sws(self, sample_weight, long n):
        """Per-output sample weights checked: None, or a list with one float32 [n] array (or None) per output."""
        if sample_weight is None:
            return None
        if not isinstance(sample_weight, (list, tuple)) or len(sample_weight) != len(self.output_nodes):
            raise ValueError(f"Invalid argument `sample_weight`: expected a list of {len(self.output_nodes)} "
                             f"weight array(s) (None for an output without weights)")
        return [None if w is None else _check_weights(w, f"sample_weight[{o}]", n)
                for o, w in enumerate(sample_weight)]

    def train_run(self, xs, ys, perm, long first, int n_batches, int batch_size, long step0,
                  unsigned long long seed, batch_loss, batch_correct, int threads=0,
                  bint stop_nonfinite_loss=False, output_loss=None, sample_weight=None, outputs=None):
        """Train ``n_batches`` mini-batches of ``batch_size`` samples ``xs[k][perm[...]]`` from batch ``first``.

        ``xs``: one float32 array ``[n, prod(shape)]`` per input node; ``ys``: one label array per
        output (int32 ``[n]`` or ``[n, rows]`` for sparse categorical cross-entropy, float32
        ``[n, prod(shape)]`` for the others; None for an output without a loss). Writes batch j's
        summed weighted loss to ``batch_loss[j]`` (float64 ``[>= n_batches]``), output o's summed
        correctness to ``batch_correct[j, o]`` and, if given, its summed (unweighted) loss to
        ``output_loss[j, o]`` (both float64 ``[>= n_batches, n_outputs]``). Returns the batches
        trained, stops and raises as :meth:`Network.train_run`. ``sample_weight``: None or one float32
        ``[n]`` array (or None) per output, weighing each sample's loss and gradient as Keras'
        sum_over_batch_size. ``outputs``: None or one float32 array (or None) per output, C-contiguous,
        of at least ``n_batches * batch_size`` rows of ``prod(shape)``: each trained batch's output
        values, batch ``j`` from row ``j * batch_size`` (for metrics computed outside C).
        """
        cdef long n = self._xs(xs)
        self._ys(ys, n)
        sws = self._sws(sample_weight, n)
        if outputs is not None:
            if not isinstance(outputs, (list, tuple)) or len(outputs) != len(self.output_nodes):
                raise ValueError(f"Invalid argument `outputs`: expected a list of {len(self.output_nodes)} "
                                 f"array(s) or None")
            for o, a in enumerate(outputs):
                check_outputs(a, f"outputs[{o}]", n_batches * batch_size,
                              math.prod(self.shapes[self.output_nodes[o]]))
        check_batches(perm, n, first, n_batches, batch_size)
        _check_step_arrays(self.step_arrays, step0 + 1, n_batches)
        cdef int O = len(self.output_nodes)
        check_sums(batch_loss, "batch_loss", n_batches)
        if output_loss is None:
            output_loss = np.empty((max(n_batches, 1), O), np.float64)
        check_sums(batch_correct, "batch_correct", n_batches, O)
        check_sums(output_loss, "output_loss", n_batches, O)
        if n_batches == 0:
            return 0
        cdef int I = len(self.input_nodes)
        cdef const float **px = <const float **>malloc((I + 1) * sizeof(float *))
        cdef const int32_t **pys = <const int32_t **>malloc((O + 1) * sizeof(int32_t *))
        cdef const float **pyd = <const float **>malloc((O + 1) * sizeof(float *))
        cdef const float **psw = <const float **>malloc((O + 1) * sizeof(float *))
        cdef float **pout = <float **>malloc((O + 1) * sizeof(float *))
        cdef int done = 0
        cdef int32_t *pperm
        cdef double *pbl
        cdef double *pol
        cdef double *pbc
        try:
            if px == NULL or pys == NULL or pyd == NULL or psw == NULL or pout == NULL:
                raise MemoryError()
            for k in range(I):
                px[k] = fptr(xs[k])
            for o in range(O):
                y = ys[o]
                sparse = y is not None and y.dtype == np.int32
                pys[o] = iptr(y) if sparse else NULL
                pyd[o] = fptr(y) if (y is not None and not sparse) else NULL
                psw[o] = fptr(sws[o]) if sws is not None else NULL
                pout[o] = fptr(outputs[o]) if outputs is not None else NULL
            pperm = iptr(perm)
            pbl = <double *>cnp.PyArray_DATA(batch_loss)
            pol = <double *>cnp.PyArray_DATA(output_loss)
            pbc = <double *>cnp.PyArray_DATA(batch_correct)
            with self.lock:
                self._workspace(min(batch_size, n))
                with nogil:
                    done = cdnn_graph_train_run(&self.g, self.ws, px, n, pys, pyd, pperm, first, n_batches,
                                                batch_size, step0, seed, pbl, pol, pbc, threads, stop_nonfinite_loss,
                                                psw if sws is not None else NULL,
                                                pout if outputs is not None else NULL)
                self.steps_done += done
        finally:
            free(px)
            free(pys)
            free(pyd)
            free(psw)
            free(pout)
        if stop_nonfinite_loss and done > 0 and not isfinite(batch_loss[done - 1]):
            return done
        if done < n_batches:
            batch = first + done
            rows = perm[batch * batch_size: min(n, (batch + 1) * batch_size)]
            bad_mask = np.zeros(rows.shape[0], bool)
            for x in xs:
                bad_mask |= ~np.isfinite(x[rows]).all(axis=1)
            bad = rows[bad_mask]
            raise NonFiniteInputError(int(bad.min()) if bad.size else None, batch, done)
        return done

    def predict_lean(self, list xs, int batch_size, tuple out_shapes):
        """The outputs (``(n, *out_shapes[o])`` each) for inputs ``xs`` if the core reads them as they are (native
        float32, C-contiguous, ``(n >= 1, width)``, every value finite) and no node is live, else None (the caller
        takes the checked :meth:`predict`): one C call, as :meth:`predict` without labels, which checks each
        piece of the inputs for NaN and infinity as it copies it in."""
        cdef int I = len(self.input_nodes), O = len(self.output_nodes), k
        if self.live or len(xs) != I or len(out_shapes) != O or batch_size < 1 or I > 16 or O > 16:
            return None
        if self.in_sizes is None:
            self.in_sizes = tuple([math.prod(self.shapes[j]) for j in self.input_nodes])
        cdef const float *px[16]
        cdef float *po[16]
        cdef int pw[16]
        cdef const int32_t *pys[16]
        cdef const float *pyd[16]
        cdef int64_t n = -1
        cdef cnp.ndarray x
        cdef int ok = 0
        for k in range(I):
            a = xs[k]
            if type(a) is not np.ndarray:
                return None
            x = a
            if (cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_ISBEHAVED_RO(x)
                    or not cnp.PyArray_IS_C_CONTIGUOUS(x) or x.ndim != 2 or x.shape[1] != self.in_sizes[k]
                    or x.shape[0] < 1 or (n >= 0 and x.shape[0] != n)):
                return None
            n = x.shape[0]
            px[k] = <const float *>cnp.PyArray_DATA(x)
        outs = [np.empty((n,) + s, np.float32) for s in out_shapes]
        for k in range(O):
            x = outs[k]
            if cnp.PyArray_SIZE(x) != n * math.prod(self.shapes[self.output_nodes[k]]):
                return None
            po[k] = <float *>cnp.PyArray_DATA(x)
            pw[k] = self.output_nodes[k]
            pys[k] = NULL
            pyd[k] = NULL
        cdef int bs = min(batch_size, n)
        with self.lock:
            self._workspace(bs)
            with nogil:
                ok = cdnn_graph_predict(&self.g, self.ws, px, n, bs, 0, O, pw, po, pys, pyd, NULL, NULL, NULL, 1)
        return outs if ok else None

    def predict(self, xs, int batch_size=256, ys=None, nodes=None, sample_weight=None):
        """Inference: a list of arrays ``(n, *shape)``, one per output (or per node of ``nodes``), in
        chunks of ``batch_size`` (live nodes: masks from cdnn's random generator, batch statistics per chunk).

        With labels ``ys`` (as in :meth:`train_run`), returns ``(values, loss_sums, correct_sums)``,
        the sums being float64 arrays with one (summed over samples) entry per output, the losses
        weighted by ``sample_weight`` (as in :meth:`train_run`) if given, not by the loss weights.
        """
        cdef long n = self._xs(xs)
        if batch_size < 1:
            raise ValueError(f"Invalid value for argument `batch_size`: expected a positive integer, received {batch_size}")
        sws = None
        if ys is not None:
            self._ys(ys, n)
            sws = self._sws(sample_weight, n)
        want = list(self.output_nodes) if nodes is None else [int(k) for k in nodes]
        for k in want:
            if not 0 <= k < self.n_nodes:
                raise ValueError(f"Invalid argument `nodes`: expected node indices in [0, {self.n_nodes}), "
                                 f"received {k}")
        outs = [np.empty((n,) + self.shapes[k], np.float32) for k in want]
        cdef int O = len(self.output_nodes)
        loss_sums = np.zeros(O, np.float64)
        correct_sums = np.zeros(O, np.float64)
        if n == 0:
            return (outs, loss_sums, correct_sums) if ys is not None else outs
        cdef int I = len(self.input_nodes), W = len(want)
        cdef int bs
        cdef uint64_t seed
        cdef const float **px = <const float **>malloc((I + 1) * sizeof(float *))
        cdef const int32_t **pys = <const int32_t **>malloc((O + 1) * sizeof(int32_t *))
        cdef const float **pyd = <const float **>malloc((O + 1) * sizeof(float *))
        cdef float **po = <float **>malloc((W + 1) * sizeof(float *))
        cdef int *pw = <int *>malloc((W + 1) * sizeof(int))
        cdef const float **psw = <const float **>malloc((O + 1) * sizeof(float *))
        cdef bint labelled = ys is not None
        cdef double *pls
        cdef double *pcs
        try:
            if px == NULL or pys == NULL or pyd == NULL or po == NULL or pw == NULL or psw == NULL:
                raise MemoryError()
            for k in range(I):
                px[k] = fptr(xs[k])
            for o in range(O):
                y = ys[o] if labelled else None
                sparse = y is not None and y.dtype == np.int32
                pys[o] = iptr(y) if sparse else NULL
                pyd[o] = fptr(y) if (y is not None and not sparse) else NULL
                psw[o] = fptr(sws[o]) if sws is not None else NULL
            for k in range(W):
                po[k] = fptr(outs[k])
                pw[k] = want[k]
            pls = <double *>cnp.PyArray_DATA(loss_sums) if labelled else NULL
            pcs = <double *>cnp.PyArray_DATA(correct_sums) if labelled else NULL
            bs = min(batch_size, n)
            seed = int(_random.generator().integers(0, 2**63)) if self.live else 0
            with self.lock:
                self._workspace(bs)
                with nogil:
                    cdnn_graph_predict(&self.g, self.ws, px, n, bs, seed, W, pw, po, pys, pyd,
                                       psw if sws is not None else NULL, pls, pcs, 0)
        finally:
            free(px); free(pys); free(pyd); free(po); free(pw); free(psw)
        return (outs, loss_sums, correct_sums) if labelled else outs


cdef void memset_nodes(cdnn_node *nodes, int n) noexcept:
    memset(nodes, 0, n * sizeof(cdnn_node))


# the descriptions' and runs' checks, in plain Python (they import this module's tables and helpers)
from cdnn import _random  # noqa: E402
from cdnn._core_checks import (  # noqa: E402
    _check_labels, _check_metric, _check_rules, _check_step_arrays, _hinge_binary, _slots_needed,
    check_apply, check_batches, check_graph, check_network, check_outputs, check_sums, check_ys, hparams_name,
)
