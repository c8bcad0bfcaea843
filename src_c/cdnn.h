/* cdnn.h - the C core of cdnn: fused dense layers, losses, optimizers and
 * the mini-batch training loop, in float32 on row-major arrays.
 *
 * The core trusts its inputs: shapes, strides and sizes are validated by
 * cdnn/_core.pyx before the GIL is released. Parallel work runs as a "team":
 * every kernel whose name ends in _team is called by all threads of an
 * OpenMP parallel region (or by one thread without OpenMP), splits its work
 * by thread number, and ends with a barrier. Each output element is computed
 * by exactly one thread in a fixed order, so results do not depend on the
 * number of threads.
 */
#ifndef CDNN_H
#define CDNN_H

#include <stddef.h>
#include <stdint.h>

/* Loops worth an AVX2 copy chosen at load time (GCC/clang ifunc on Linux). CDNN_CLONES: such copies
 * are built (code that picks a wider copy itself checks it too). Only on static functions: GCC names
 * the resolver of `f` `f`, clang 14 `f.ifunc`, so a cloned function called from another file links
 * with one compiler and not the other; an exported function calls a static cloned one instead. */
#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) && !defined(CDNN_NO_CLONES)
#define CDNN_CLONES        1
#define CDNN_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CDNN_VECTOR_CLONES
#endif

/* ---- activations ------------------------------------------------------ */
/* e^x for x <= 0 or NaN, branch-free so that loops over it vectorize (a call to expf does not): Cephes'
 * expf polynomial, within 2 ulp of expf down to -87.3, and 0 below (where expf is denormal or 0). */
static inline float cdnn_exp_nonpositive(float x)
{
    const float lo = -87.33654f;
    const float xc = x < lo ? lo : x; /* NaN stays NaN */
    float n = xc * 1.44269504088896341f;
    n = (n - 12582912.0f) + 12582912.0f; /* rounded to an integer: 1.5 * 2^23 */
    n = n == n ? n : 0.0f;               /* in [-126, 0] */
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {((int32_t)n + 127) * (1 << 23)}; /* 2^n */
    return x < lo ? 0.0f : p * scale.f;
}

enum cdnn_act {
    CDNN_LINEAR = 0,
    CDNN_RELU,
    CDNN_SIGMOID,
    CDNN_TANH,
    CDNN_SOFTMAX,
    CDNN_LEAKY_RELU,
    CDNN_GELU,
    CDNN_ELU,
    CDNN_SELU,
    CDNN_SWISH,
    CDNN_SOFTPLUS,
    CDNN_SOFTSIGN,
    CDNN_HARD_SIGMOID,
    CDNN_HARD_SWISH,
    CDNN_MISH,
    CDNN_RELU6,
    CDNN_EXPONENTIAL,
    CDNN_LOG_SOFTMAX,
    CDNN_RELU_ARGS
};

/* An activation's parameters: alpha is leaky_relu's slope, elu's alpha and relu's negative_slope;
 * CDNN_RELU_ARGS (Keras' relu with negative_slope, max_value, threshold) also takes the threshold and
 * clips to [lower, upper] (max_value given: [0, max_value]; else (-inf, inf)). */
typedef struct {
    float alpha, threshold, lower, upper;
} cdnn_act_args;

/* Whether act's derivative is computed from the pre-activation z (else from the output a): the
 * activations that are not invertible from their output, or lose precision doing so. */
static inline int cdnn_act_grad_from_z(int act)
{
    return act == CDNN_GELU || act == CDNN_SWISH || act == CDNN_SOFTPLUS || act == CDNN_SOFTSIGN ||
           act == CDNN_HARD_SWISH || act == CDNN_MISH || act == CDNN_RELU_ARGS;
}

/* Whether act works on whole rows (softmax, log_softmax): applied and differentiated row by row. */
static inline int cdnn_act_rowwise(int act)
{
    return act == CDNN_SOFTMAX || act == CDNN_LOG_SOFTMAX;
}

/* ---- losses and accuracy modes ---------------------------------------- */
enum cdnn_loss {
    CDNN_SPARSE_CCE = 0,
    CDNN_CCE,
    CDNN_BCE,
    CDNN_MSE,
    CDNN_MAE,
    CDNN_MAPE,
    CDNN_MSLE,
    CDNN_HUBER,
    CDNN_LOG_COSH,
    CDNN_BFCE,
    CDNN_KLD,
    CDNN_POISSON,
    CDNN_HINGE,
    CDNN_SQUARED_HINGE,
    CDNN_CATEGORICAL_HINGE,
    CDNN_COSINE
};

/* A loss's options beyond its kind and from_logits (Keras 3's names and defaults; see cdnn_loss_opts_default). */
typedef struct {
    float label_smoothing; /* CCE, BCE, BFCE: labels pulled towards uniform (CCE) or 0.5 (BCE, BFCE) */
    float delta;           /* Huber: where the loss turns from quadratic to linear (1.0) */
    float gamma, alpha;    /* BFCE: focusing exponent (2.0), weight of class 1 (0.25) */
    int class_balancing;   /* BFCE: apply_class_balancing (weights alpha and 1 - alpha) */
    int has_ignore;        /* sparse CCE: rows whose label is ignore_class count for nothing */
    int ignore_class;
    int hinge_binary; /* hinge, squared hinge: labels are 0/1, read as -1/1 (Keras decides on the labels) */
} cdnn_loss_opts;
enum cdnn_metric { CDNN_METRIC_NONE = 0, CDNN_METRIC_SPARSE, CDNN_METRIC_CATEGORICAL, CDNN_METRIC_BINARY };

/* ---- optimizers -------------------------------------------------------- */
/* CDNN_OPT_NONE updates nothing: the gradients stay in the buffers for cdnn_opt_apply_var (see train.c). */
enum cdnn_opt {
    CDNN_SGD = 0,
    CDNN_ADAGRAD,
    CDNN_RMSPROP,
    CDNN_ADAM,
    CDNN_NADAM,
    CDNN_ADAMAX,
    CDNN_ADADELTA,
    CDNN_LION,
    CDNN_FTRL,
    CDNN_ADAFACTOR,
    CDNN_OPT_NONE
};

/* Optimizer hyper-parameters (Keras 3 names and meaning; 0 means "not set" for the options). */
typedef struct {
    int kind;             /* enum cdnn_opt */
    float lr;             /* learning_rate (when step_lr is NULL) */
    float momentum;       /* SGD, RMSprop */
    int nesterov;         /* SGD */
    float rho;            /* RMSprop, Adadelta */
    float beta_1, beta_2; /* Adam, Nadam, Adamax, Lion */
    float epsilon;        /* Adagrad, RMSprop, Adam, Nadam, Adamax, Adadelta */
    int amsgrad;          /* Adam: v_hat in slot 3 */
    float weight_decay;   /* decoupled: w -= w * weight_decay * lr before the update */
    float clipvalue, clipnorm, global_clipnorm;
    int use_ema; /* exponential moving average of the weights in the ema slot */
    float ema_momentum;
    int ema_overwrite_frequency;
    int accumulation_steps;                                   /* gradient_accumulation_steps (0: none) */
    float lr_power, l1, l2, l2_shrinkage, beta;               /* Ftrl */
    float beta_2_decay, epsilon_1, epsilon_2, clip_threshold; /* Adafactor */
    int relative_step;                                        /* Adafactor */
    /* Per-step values of a run (or NULL): step t (t >= 1) reads index t - 1 - step_base. step_lr: the
     * learning rate (a schedule's); step_aux: Nadam's u_product after step t's own factor. */
    const float *step_lr, *step_aux;
    int64_t step_base;
} cdnn_opt_params;

/* Per-step optimizer scalars derived from the hyper-parameters and step t. */
typedef struct {
    float lr;         /* effective step size (Adam: lr*sqrt(1-b2^t)/(1-b1^t)) */
    float base_lr;    /* the learning rate of step t (weight decay, Ftrl, Adafactor) */
    float a, b, c, d; /* kind-specific: Nadam u_t, u_t1, u_product_t, beta_2^t; Adamax 1-beta_1^t;
                             Adafactor rho_t, beta_2_t */
    int64_t t;        /* the step (iterations + 1) */
} cdnn_opt_step;

/* Whether an optimizer needs the whole gradient of every variable before any update (clipnorm,
 * global_clipnorm, EMA, accumulation, amsgrad's third slot, Adafactor): no fused epilogue then. */
int cdnn_opt_needs_whole(const cdnn_opt_params *p);

/* Per-variable rules beyond the optimizer: L1/L2 penalties and a constraint (Keras' regularizers and
 * constraints; constraint axis 0 = norms over rows, i.e. per column, as Keras' default for kernels). */
enum cdnn_constraint { CDNN_CONSTRAINT_NONE = 0, CDNN_MAX_NORM, CDNN_NON_NEG, CDNN_UNIT_NORM, CDNN_MIN_MAX_NORM };
typedef struct {
    float l1, l2;               /* penalty l1*sum|w| + l2*sum w^2 */
    int constraint;             /* enum cdnn_constraint */
    float c_min, c_max, c_rate; /* MaxNorm: c_max; MinMaxNorm: all three */
    int c_axis;                 /* 0 or 1 for a kernel (1-D: ignored) */
    float orth_factor;          /* OrthogonalRegularizer's factor (0: none), kernels only */
    int orth_mode;              /* its vectors: 0 the kernel's rows, 1 its columns */
    float *orth_scratch;        /* with orth_factor: 2 * rows * cols + max(rows, cols) floats of scratch */
} cdnn_param_rules;

/* The optimizer state of one variable for cdnn_opt_apply_var (NULL where unused). */
typedef struct {
    float *s1, *s2, *s3; /* the optimizer's slots (Adafactor: r [rows], c [cols], v) */
    float *ema;          /* use_ema: the moving average */
    float *acc;          /* accumulation_steps: the accumulated gradient */
} cdnn_var_slots;

/* ---- GEMM -------------------------------------------------------------- */
/* What to do with each finished output tile of a GEMM (while it is hot). */
enum cdnn_epi_kind {
    CDNN_EPI_STORE = 0, /* C = op(A)op(B) (+C) */
    CDNN_EPI_BIAS_ACT,  /* Z = AB + bias; C = act(Z); Z kept in aux if given */
    CDNN_EPI_DACT,      /* C = AB * act'(at aux) * dropout scale */
    CDNN_EPI_OPTIMIZE   /* C = AB is a gradient: update param at aux with it */
};

typedef struct {
    int kind;                   /* enum cdnn_epi_kind */
    int act;                    /* enum cdnn_act (BIAS_ACT, DACT) */
    cdnn_act_args act_args;     /* the activation's parameters */
    const float *bias;          /* BIAS_ACT: length N, or NULL */
    float *aux;                 /* BIAS_ACT: pre-activation out (or NULL);
                                    DACT: layer output a (or z for gelu);
                                    OPTIMIZE: parameter w */
    int ldaux;                  /* row stride of aux */
    float *slot1, *slot2;       /* OPTIMIZE: optimizer slots, same layout as aux */
    const cdnn_opt_params *opt; /* OPTIMIZE */
    cdnn_opt_step step;         /* OPTIMIZE */
    /* DACT with dropout on this tensor: keep-mask from a counter hash */
    float *packed_w, *packed_wt; /* OPTIMIZE: packed copies of W and W^T to keep current (or NULL) */
    int packed_k;                /* OPTIMIZE: rows of W the copies hold (its columns are the product's N) */
    int packed_row0;             /* OPTIMIZE: the first of them (a copy may hold a block of W's rows) */
    int w_in_packed;             /* OPTIMIZE: W's values live in packed_w during a training run (W itself is
                                    not written: cdnn_unpack_rows writes it back at the run's end) */
    const float *share;          /* OPTIMIZE: thread t takes the fraction [share[t], share[t+1]) of the
                                    row panels, or NULL: handed out dynamically */
    float drop_rate;             /* 0: no dropout */
    uint64_t drop_seed;          /* hash key for this layer and step */
    const int32_t *drop_rows;    /* dataset row index of each batch row */
    int drop_col0;               /* the layer input's column of C's first column (dropout keys) */
    const float *drop_din;       /* or NULL: with act ReLU, the layer input after dropout, laid out as aux, whose
                                    nonzeros are the kept elements wherever ReLU's derivative is not 0 */
    /* BIAS_ACT: with bn_inv_std, BatchNormalization's inference transform between the bias and the
       activation (cdnn_batchnorm_tile; gamma, beta may be NULL), on length-N vectors */
    const float *bn_mean, *bn_inv_std, *bn_gamma, *bn_beta;
} cdnn_epilogue;

/* A SIMD code path: micro-kernel shape and function. */
typedef struct {
    const char *name; /* "avx512", "avx2", "generic" */
    int mr, nr;       /* micro-tile rows and columns */
    int kc;           /* depth of a slice of the product (<= KC_MAX in gemm.c) */
    /* c[mr x nr] (+)= sum over k < kc of a[i*si + k*sk] * b[k*ldb + j] */
    void (*kernel)(int kc, const float *a, long si, long sk, const float *b, long ldb, float *c, int ldc,
                   int accumulate);
    /* Optional (else NULL): a rows x cols part of a tile straight into c; a's rows beyond `rows` are never read */
    void (*edge)(int kc, const float *a, long si, long sk, const float *b, long ldb, float *c, int ldc, int accumulate,
                 int rows, int cols);
    int edge_reads_b_in_place; /* 1: the edge kernel reads only B's first `cols` columns (else nr, zero-padded) */
} cdnn_simd;

/* Floats of packing buffer one thread needs for any GEMM. */
size_t cdnn_gemm_pack_floats(void);
/* Team GEMM: C[M,N] = op(A)[M,K] op(B)[K,N] (+C), then the epilogue on each tile; no barrier at the end. */
void cdnn_gemm_team(int transa, int transb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                    float *C, int ldc, int accumulate, const cdnn_epilogue *epi, float *pack);
/* Rows [i0, i1) of the same product on the calling thread alone (row-local work needs no barrier);
 * bpacked, if not NULL, is the whole of op(B) packed by cdnn_pack_rows, used instead of B. */
void cdnn_gemm_rows(int transa, int transb, int i0, int i1, int N, int K, const float *A, int lda, const float *B,
                    int ldb, const float *bpacked, float *C, int ldc, int accumulate, const cdnn_epilogue *epi,
                    float *pack);
/* The same for columns [j0, j1) of C only (C[i][j] at C + i * ldc + j; with bpacked, j0 a multiple of nr). */
void cdnn_gemm_rows_cols(int transa, int transb, int i0, int i1, int j0, int j1, int N, int K, const float *A, int lda,
                         const float *B, int ldb, const float *bpacked, float *C, int ldc, int accumulate,
                         const cdnn_epilogue *epi, float *pack);
/* Rows [i0, i1) of a gradient C[M,N] = op(A) op(B), with the optimizer epilogue (epi->kind ==
 * CDNN_EPI_OPTIMIZE) applied to each finished row panel and its packed copies: on the calling thread, or,
 * with next (a counter shared by the threads that make the same call, 0 before the first), in row panels
 * handed out from *next to each of them in turn (each panel computed the same way whoever takes it). */
void cdnn_gemm_optimize_rows(int transa, int transb, int i0, int i1, int N, int K, const float *A, int lda,
                             const float *B, int ldb, float *C, int ldc, const cdnn_epilogue *epi, float *pack,
                             int *next);
/* Floats of a packed copy of an operand [K, N] (N rounded up to the micro-kernel's width). */
size_t cdnn_packed_floats(int K, int N);
/* Copy rows [r0, r1) x columns [j0, j1) of W [K, N] into its packed copies as op(B) = W (pw, [K, N])
 * and op(B) = W^T (pwt, [N, K]); either may be NULL. Padding columns must be zeroed beforehand. */
void cdnn_pack_rows(const float *W, int K, int N, int r0, int r1, int j0, int j1, float *pw, float *pwt);
/* Rows [r0, r1) of W[K, N] (all columns) from its packed copy pw (the inverse of cdnn_pack_rows' pw). */
void cdnn_unpack_rows(const float *pw, int K, int N, int r0, int r1, float *W);
/* Standalone GEMM in its own parallel region of up to max_threads threads, each using
 * cdnn_gemm_pack_floats() floats of pack (64-byte aligned). */
void cdnn_gemm(int transa, int transb, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float *C,
               int ldc, int accumulate, float *pack, int max_threads);

/* ---- SIMD dispatch and threads ---------------------------------------- */
/* The SIMD path selected for this CPU (or forced by cdnn_simd_select). */
const cdnn_simd *cdnn_simd_current(void);
/* Names of the compiled SIMD paths, comma separated. */
const char *cdnn_simd_compiled(void);
/* Whether this CPU can run the named path (1/0). */
int cdnn_simd_supported(const char *name);
/* Force a SIMD path by name ("auto" = best for this CPU); returns 0, or -1 if unavailable. */
int cdnn_simd_select(const char *name);
/* The most threads any parallel region uses (OMP_NUM_THREADS or set_num_threads beyond it is capped). */
#define CDNN_MAX_THREADS 256
/* Threads used by the core's parallel regions: the setting, capped at CDNN_MAX_THREADS; 1 after fork. */
int cdnn_get_num_threads(void);
/* The thread setting without marking OpenMP's pool as started (for queries: get_num_threads, build_info). */
int cdnn_threads_setting(void);
/* Called in a forked child: run serially from now on if the parent may have started OpenMP's threads
 * (which do not exist in the child); returns 1 if so. */
int cdnn_serial_after_fork(void);
/* Set the thread count (n <= 0: back to the OpenMP default, i.e. OMP_NUM_THREADS). */
void cdnn_set_num_threads(int n);
/* 1 if built with OpenMP, else 0. */
int cdnn_openmp_enabled(void);
/* The OpenMP version macro (_OPENMP, yyyymm) or 0. */
int cdnn_openmp_version(void);
/* Number of threads in the current team (1 outside a parallel region). */
int cdnn_team_size(void);
/* This thread's number in the current team. */
int cdnn_team_rank(void);
/* Split [0, n) evenly among the team: this thread gets [*lo, *hi). */
void cdnn_team_range(long n, long *lo, long *hi);
/* This thread's columns [*j0, *j1) of `units`: whole micro-kernel panels of nr columns, as evenly as they go,
 * the last thread's ending with the tail (every column's sums are those of the 1-thread product). */
void cdnn_team_columns(int units, int nr, int *j0, int *j1);
/* Enter flush-to-zero mode on this thread; returns the state to restore. */
unsigned cdnn_flush_denormals_begin(void);
/* Restore the floating-point state saved by cdnn_flush_denormals_begin. */
void cdnn_flush_denormals_end(unsigned saved);
/* Barrier for the team (no-op without OpenMP or outside a parallel region). */
void cdnn_team_barrier(void);
/* Wall-clock seconds (OpenMP's clock; 0 in a serial build, which never needs it). */
double cdnn_wtime(void);

/* Below this many flops per chunk, inference (chain and graph) stays on one thread unless timing chooses
 * 2 (about 0.3 ms of one core's work): a parallel region costs microseconds on an idle machine, but when
 * the other cores are busy every barrier waits for a descheduled thread's time slice (milliseconds: 34 ms
 * for a 32-row predict of 784-100-10 measured on a loaded 2-core machine, against 0.05 ms on one thread). */
#define CDNN_PREDICT_SERIAL_FLOPS (1L << 24)
/* From this many rows per thread in a chunk of a predict on, the layers (Dense nodes) that keep a packed
 * copy of W have it packed once at the start of the call (where the GEMM would otherwise pack W again for
 * every chunk, on every thread: from 48 rows, PACK_B_MIN_ROWS in gemm.c, when W's rows alias in L1). */
#define CDNN_PREDICT_PACK_MIN_ROWS 48
/* From this many rows per thread in the call on, a predict also packs (once, at its start) the W of a layer that
 * keeps no packed copy for training into a copy of its own: 784x100 on one AVX2 core, 1.16x faster from 256
 * rows, 0.91-0.97x at 48. */
#define CDNN_PREDICT_PACK_OWN_MIN_ROWS 256
/* Rows (samples) a thread takes through every layer at a time in a predict without labels or live nodes:
 * 784-512-256-10 over 10,000 rows on one thread ran 6% faster in pieces of 48-64 rows than in chunks of
 * 504 (whose 1 MB of first-layer activations spill from L2 before the next layer reads them). */
#define CDNN_PREDICT_PIECE_ROWS 64
/* A predict of at most CDNN_SPLIT_MAX_ROWS rows whose Dense layers have at least CDNN_ROW_SPLIT_MIN_WEIGHTS
 * weights may split their columns over 2 threads (each thread reads half of W; sharing the rows, both
 * would read all of it), a barrier after each: 784x100 (78,400 weights) takes 5.5 us on one AVX-512 core,
 * and splitting it saves about 2 us, a barrier and the other thread's start costing about 1 us. */
#define CDNN_ROW_SPLIT_MIN_WEIGHTS 65536L
#define CDNN_SPLIT_MAX_ROWS        16
/* A run-time choice between 1 thread (option 0) and 2 (option 1) for one kind of small predict, from the
 * seconds (per row) of each option's last 5 calls (ring; n[o]: calls recorded), the calls since the last
 * probe of the option not in use, and the calls between probes. Zeroed: nothing measured yet. */
typedef struct {
    double sec[2][5];
    int n[2], since, gap;
} cdnn_chooser;
/* The option of the next call: forced by cdnn_set_row_split's mode, else each option measured twice first
 * (2 threads first), then the faster by the median of its last 5 calls, the other once every gap calls
 * (64 at first and after each change of option, doubling while the choice holds, up to 4096; at once
 * again after a probe faster than the option in use). */
int cdnn_choose(const cdnn_chooser *c);
/* Record a call of option o that took sec seconds (per row); nothing while a mode forces the option. */
void cdnn_chooser_record(cdnn_chooser *c, int o, double sec);
/* Small predicts without labels (<= CDNN_SPLIT_MAX_ROWS rows, or below the serial flops): 0 chooses 1 or 2 threads by
 * timing, 1 always 1, 2 always 2 (a predict of at most CDNN_SPLIT_MAX_ROWS rows splitting every Dense). */
void cdnn_set_row_split(int mode);
/* The mode cdnn_set_row_split set. */
int cdnn_row_split_mode(void);

/* ---- activations (activations.c) -------------------------------------- */
/* In place: x[rows, cols] (row stride ld) = act(x + bias). bias may be NULL; z (ld ldz) gets x+bias if not NULL. */
void cdnn_bias_act_tile(int act, cdnn_act_args args, float *x, int ld, int rows, int cols, const float *bias, float *z,
                        int ldz);
/* y = (x - mean) * inv_std * gamma + beta per column of x[rows, cols] (ldx) into y (ldy, may be x); gamma/beta may be NULL. */
void cdnn_batchnorm_tile(const float *x, int ldx, float *y, int ldy, int rows, int cols, const float *mean,
                         const float *inv_std, const float *gamma, const float *beta);
/* In place: g[rows, cols] *= act'(a) where a is the activation output (z where cdnn_act_grad_from_z). Not row-wise acts. */
void cdnn_dact_tile(int act, cdnn_act_args args, float *g, int ldg, const float *a, int lda, int rows, int cols);
/* Row-wise softmax in place over x[rows, cols] (ld), stable. */
void cdnn_softmax_rows(float *x, int ld, int rows, int cols);
/* Softmax backward in place: g = a * (g - sum(g*a)) row-wise. */
void cdnn_softmax_backward_rows(float *g, int ldg, const float *a, int lda, int rows, int cols);
/* A row-wise activation (softmax or log_softmax, see cdnn_act_rowwise) in place over x[rows, cols] (ld). */
void cdnn_rowwise_act_rows(int act, float *x, int ld, int rows, int cols);
/* Its backward in place from its output a: softmax as above, log_softmax g = g - exp(a) * sum(g). */
void cdnn_rowwise_backward_rows(int act, float *g, int ldg, const float *a, int lda, int rows, int cols);
/* dst[j] = src[j] times element (row, col0 + j)'s dropout factor under key (0 or 1/(1-rate)), j < n; dst may be src. */
void cdnn_dropout_row(float *dst, const float *src, int n, uint64_t key, int32_t row, int col0, float rate);
/* g[j] *= (din[j] != 0 ? 1/(1-rate) : 0) for j < n: the dropout factors of a ReLU layer's kept outputs, read back. */
void cdnn_dropout_row_kept(float *g, const float *din, int n, float rate);

/* ---- losses (losses.c) ------------------------------------------------ */
/* Keras 3's defaults: no smoothing, delta 1, gamma 2, alpha 0.25, no class balancing, no ignored class. */
cdnn_loss_opts cdnn_loss_opts_default(void);
/* For output rows [lo, hi) of a batch (calling thread only), write per-row loss
 * (times the row's weight) and correctness (unweighted) to row_loss/row_correct
 * and dL/dz (times the row's weight, divided by grad_batch) into dz if not NULL.
 * out holds the layer output (probabilities/activations), z the pre-activation.
 * ysparse (int32) or ydense (float, row stride ldy) hold the labels. opts: the
 * loss's options (NULL: defaults); row_weight[i]: row i's weight (NULL: all 1).
 * Rows whose label is opts' ignore_class get loss 0 and dz 0; the caller divides
 * by the valid rows (grad_batch, and see cdnn_loss_valid_rows). */
void cdnn_loss_rows(int loss, int metric, int act, cdnn_act_args args, int from_logits, int lo, int hi, int cols,
                    const float *out, const float *z, const int32_t *ysparse, const float *ydense, int ldy,
                    int grad_batch, float *dz, double *row_loss, double *row_correct, const cdnn_loss_opts *opts,
                    const float *row_weight);
/* How many of n rows count for a loss: those whose label ysparse[rows[i]] (ysparse[i] if rows is NULL) is
 * not opts' ignore_class (n without one). Keras' mean is over them: sum / valid. */
int cdnn_loss_valid_rows(int loss, const cdnn_loss_opts *opts, const int32_t *ysparse, const int32_t *rows, int n);

/* ---- optimizers (optimizers.c) ---------------------------------------- */
/* Per-step scalars for step t (t >= 1). */
cdnn_opt_step cdnn_opt_prepare(const cdnn_opt_params *p, long t);
/* One update pass: w, slot1, slot2 of length n with gradient g. */
void cdnn_opt_update(const cdnn_opt_params *p, cdnn_opt_step s, float *restrict w, float *restrict slot1,
                     float *restrict slot2, const float *restrict g, long n);
/* The same update of n parameters whose values w lie in runs of `chunk` floats wstride apart (the
 * first run starts off0 floats into its chunk), their slots and gradients contiguous: W packed. */
void cdnn_opt_update_panels(const cdnn_opt_params *p, cdnn_opt_step s, float *w, int off0, int chunk, long wstride,
                            float *slot1, float *slot2, const float *g, long n);
/* Sum of squares (double, in index order) of the effective gradient of one rows x cols variable for the
 * whole-gradient path, after folding in its regularizers' gradient (of w) and, if accumulating, the
 * accumulator (g is rewritten in place: g + reg'(w), then on an update step (g + acc) / steps); *penalty
 * gets the variable's penalty at w. Returns the sum of squares, or 0 on a step that only accumulates. */
double cdnn_opt_prepare_grad(const cdnn_opt_params *p, cdnn_opt_step s, const cdnn_param_rules *r, const float *w,
                             float *g, cdnn_var_slots sl, long rows, long cols, double *penalty);
/* The rest of one variable's step on the whole-gradient path, on the calling thread: clipping (sumsq:
 * this variable's, global_sumsq: all of them), weight decay, the update, the moving average and the
 * constraint, as Keras' base optimizer orders them. The variable is rows x cols (a bias: 1 x n). */
void cdnn_opt_apply_var(const cdnn_opt_params *p, cdnn_opt_step s, const cdnn_param_rules *r, float *w, float *g,
                        cdnn_var_slots sl, long rows, long cols, double sumsq, double global_sumsq);

/* ---- network ---------------------------------------------------------- */
typedef struct {
    int in, units;            /* kernel is [in, units], row-major */
    int act;                  /* enum cdnn_act */
    cdnn_act_args act_args;   /* the activation's parameters */
    float in_drop;            /* dropout rate on this layer's input during training */
    int frozen;               /* 1: trainable=False, training leaves W and b (and their slots) as they are */
    float *W, *b;             /* parameters; b may be NULL (use_bias=False) */
    float *W1, *W2, *b1, *b2; /* optimizer slots (may be NULL if unused) */
    float *W3, *b3;           /* third slot (amsgrad's v_hat, Adafactor's v), or NULL */
    float *Wema, *bema;       /* use_ema's averages, or NULL */
    float *Wacc, *bacc;       /* gradient accumulators, or NULL */
    cdnn_param_rules kernel_rules, bias_rules; /* regularizers and constraints (zero: none) */
} cdnn_layer;

typedef struct {
    int n_layers;
    cdnn_layer *layers;
    int loss; /* enum cdnn_loss */
    int from_logits;
    int metric; /* enum cdnn_metric */
    cdnn_opt_params opt;
    cdnn_loss_opts loss_opts;
} cdnn_net;

/* Preallocated buffers for batches of up to max_batch rows. */
typedef struct cdnn_workspace cdnn_workspace;
/* Allocate a workspace for net and batches of up to max_batch rows; NULL on OOM. */
cdnn_workspace *cdnn_workspace_new(const cdnn_net *net, int max_batch, int threads);
/* Free a workspace (NULL is fine). */
void cdnn_workspace_free(cdnn_workspace *ws);

/* ---- fused dense layer (dense.c) -------------------------------------- */
/* Rows [r0, r1) of the forward pass on the calling thread: y = act(x W + b); z gets x W + b if not NULL;
 * packed_w (or NULL) is W packed by cdnn_pack_rows. */
void cdnn_dense_forward_rows(const cdnn_layer *ly, int r0, int r1, const float *x, float *y, float *z,
                             const float *packed_w, float *pack);
/* Rows [r0, r1) of dx = dz W^T on the calling thread, with dx_epi (the layer below's derivative) if not NULL;
 * packed_wt (or NULL) is W^T packed by cdnn_pack_rows. */
void cdnn_dense_dx_rows(const cdnn_layer *ly, int r0, int r1, const float *dz, float *dx, const cdnn_epilogue *dx_epi,
                        const float *packed_wt, float *pack);
/* Rows [i0, i1) of dW = x^T dz over all batch rows (x's row stride ldx; its column i multiplies W's row i) on
 * the calling thread (or shared through next, as cdnn_gemm_optimize_rows), with the optimizer opt applied to
 * them and to their part of the packed copies (packed_w/packed_wt, where not NULL), which hold W's rows
 * [pk0, pk1) packed as a matrix of their own; with packed_w, W's values are updated there, not in W. */
void cdnn_dense_grads_rows(const cdnn_layer *ly, int rows, const float *x, int ldx, const float *dz, float *dw,
                           const cdnn_opt_params *opt, cdnn_opt_step st, float *packed_w, float *packed_wt, int pk0,
                           int pk1, int i0, int i1, float *pack, int *next);
/* Columns [j0, j1) of db = column sums of dz[rows, units], in row order, then their update by opt (if not NULL). */
void cdnn_dense_bias_grads(const cdnn_layer *ly, int rows, const float *dz, float *db, const cdnn_opt_params *opt,
                           cdnn_opt_step st, long j0, long j1);
/* Team: dW = x^T dz and db = column sums of dz over all rows, with the optimizer applied if opt (to W's
 * values in packed_w if not NULL, else to W; packed_wt, where not NULL, kept equal to W^T; share: see
 * cdnn_epilogue); no barrier. */
void cdnn_dense_grads_team(const cdnn_layer *ly, int rows, const float *x, const float *dz, float *dw, float *db,
                           const cdnn_opt_params *opt, cdnn_opt_step st, float *packed_w, float *packed_wt,
                           const float *share, float *pack);
/* Standalone forward (own parallel region, at most max_threads threads; pack: max_threads x cdnn_gemm_pack_floats()). */
void cdnn_dense_forward(const cdnn_layer *ly, int rows, const float *x, float *y, float *z, float *pack,
                        int max_threads);
/* Standalone backward from dy = dL/da (a = output, or z for gelu): dz, dw, db, dx (dx may be NULL); pack as above. */
void cdnn_dense_backward(const cdnn_layer *ly, int rows, const float *x, const float *a, const float *dy, float *dz,
                         float *dw, float *db, float *dx, float *pack, int max_threads);

/* ---- training loop (train.c) ------------------------------------------ */
/* Train n_batches mini-batches. Batch j takes the rows perm[(first+j)*bs ..] of
 * X[n, in] (the last batch of the permutation may be shorter). step0 is the
 * optimizer's iteration count before the run; seed keys dropout. Writes each
 * batch's summed loss and summed correctness to batch_loss/batch_correct.
 * threads > 0 caps the threads of this run (results do not depend on it).
 * Returns the batches trained: n_batches, or the index of the first batch
 * holding a NaN or an infinity, which stops the run before its update, or
 * with stop_nonfinite_loss, one past the first batch whose loss is NaN or
 * infinite, which stops the run after its update. sample_weight[r] (NULL: all 1) weighs dataset
 * row r's loss and gradient: a batch's loss is the weighted sum over its rows divided by its rows
 * (Keras' sum_over_batch_size), and batch_loss gets that times its rows. outputs (or NULL): each
 * trained batch's forward outputs [n_batches * bs, units_last], batch j from row j * bs. */
int cdnn_train_run(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n, const int32_t *ysparse,
                   const float *ydense, int ldy, const int32_t *perm, int64_t first, int n_batches, int bs,
                   int64_t step0, uint64_t seed, double *batch_loss, double *batch_correct, int threads,
                   int stop_nonfinite_loss, const float *sample_weight, float *outputs);

/* n floats from src to dst, bit for bit (the gather of a batch); 1 if all of them are finite, else 0. */
int cdnn_copy_finite(uint32_t *restrict dst, const uint32_t *restrict src, size_t n);

/* 1 if none of x[0..n) is NaN or infinite (a parallel scan of inputs before inference), else 0. */
int cdnn_all_finite(const float *x, int64_t n);

/* Inference over X[n, in] in batches of the workspace's max_batch rows: write outputs [n, units_last]
 * to out; if labels are given also sum loss (each batch's as in cdnn_train_run, rows weighted by
 * sample_weight[i] if not NULL) and correctness into loss_sum and correct_sum. With check_finite,
 * returns 0 (out and the sums unspecified) if some value of X is NaN or infinite; else 1. */
int cdnn_predict(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n, float *out, const int32_t *ysparse,
                 const float *ydense, int ldy, double *loss_sum, double *correct_sum, const float *sample_weight,
                 int check_finite);

#endif
