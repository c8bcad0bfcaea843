/* activations.c - activations applied to output tiles, their derivatives
 * folded into gradient tiles, row-wise softmax, and dropout masks.
 * Formulas follow Keras 3 (keras/src/activations/activations.py).
 */
#include "cdnn.h"

#include <math.h>

/* The activations below are branch-free, so that the loops over a tile
 * vectorize: with calls to expf and tanhf, sigmoid cost 9 ns and tanh 14 ns
 * per element, as much as the 784-input product that they follow. */

/* 1 / (1 + e^-x), from e^-|x| so that exp never overflows; within 4 ulp of the exact value (tested). */
static inline float sigmoidf(float x)
{
    const float e = cdnn_exp_nonpositive(-fabsf(x)), s = 1.0f / (1.0f + e), neg = e * s;
    return x >= 0.0f ? s : neg;
}

/* tanh x: Cephes' tanhf (its odd polynomial below |x| = 0.625, where 1 - e^-2|x| would cancel,
 * else (1 - e^-2|x|) / (1 + e^-2|x|) with x's sign); within 4 ulp of the exact value (tested). */
static inline float tanh_f(float x)
{
    const float ax = fabsf(x), z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = p * z * x + x;
    const float e = cdnn_exp_nonpositive(-2.0f * ax);
    const float big = copysignf((1.0f - e) / (1.0f + e), x);
    return ax < 0.625f ? small : big;
}

/* erfc t, branch-free: Cephes' erfcf (1 - erf t by erf's odd polynomial
 * below |t| = 1; above, e^-t^2 P(1/t^2) / |t| with one polynomial below
 * |t| = 2 and another beyond, and 2 minus that for t < 0). */
static inline float erfc_f(float t)
{
    const float a = fabsf(t), z = t * t;
    float e = 7.853861353153693e-5f;
    e = e * z - 8.010193625184903e-4f;
    e = e * z + 5.188327685732524e-3f;
    e = e * z - 2.685381193529856e-2f;
    e = e * z + 1.128358514861418e-1f;
    e = e * z - 3.761262582423300e-1f;
    e = e * z + 1.128379165726710f;
    const float near = 1.0f - t * e;
    const float q = 1.0f / a, y = q * q;
    float p = 2.326819970068386e-2f; /* 1 <= |t| < 2 */
    p = p * y - 1.387039388740657e-1f;
    p = p * y + 3.687424674597105e-1f;
    p = p * y - 5.824733027278666e-1f;
    p = p * y + 6.210004621745983e-1f;
    p = p * y - 4.944515323274145e-1f;
    p = p * y + 3.404879937665872e-1f;
    p = p * y - 2.741127028184656e-1f;
    p = p * y + 5.638259427386472e-1f;
    float r = -1.047766399936249e+1f; /* |t| >= 2 */
    r = r * y + 1.297719955372516e+1f;
    r = r * y - 7.495518717768503e+0f;
    r = r * y + 2.921019019210786e+0f;
    r = r * y - 1.015265279202700e+0f;
    r = r * y + 4.218463358204948e-1f;
    r = r * y - 2.820767439740514e-1f;
    r = r * y + 5.641895067754075e-1f;
    const float tail = cdnn_exp_nonpositive(-z) * q * (a < 2.0f ? p : r);
    const float far = t < 0.0f ? 2.0f - tail : tail;
    return a < 1.0f ? near : far;
}

/* 1 + erf(x/sqrt 2) written as erfc(-x/sqrt 2): no cancellation for x << 0 */
static inline float geluf(float x)
{
    return 0.5f * x * erfc_f(-x * 0.70710678118654752f);
}

static inline float gelu_gradf(float x)
{
    return 0.5f * erfc_f(-x * 0.70710678118654752f) + x * 0.39894228040143268f * cdnn_exp_nonpositive(-0.5f * x * x);
}

/* e^x - 1 for x <= 0: Taylor's series to x^9 above -0.7 (where e^x - 1 would lose bits to
 * cancellation), else e^x - 1; within 3 ulp of the exact value (tested). */
static inline float expm1_nonpositive(float x)
{
    float p = 2.7557319e-6f;   /* 1/9! */
    p = p * x + 2.4801587e-5f; /* 1/8! */
    p = p * x + 1.9841270e-4f;
    p = p * x + 1.3888889e-3f;
    p = p * x + 8.3333333e-3f;
    p = p * x + 4.1666667e-2f;
    p = p * x + 1.6666667e-1f;
    p = p * x + 0.5f;
    p = p * x * x + x;
    const float big = cdnn_exp_nonpositive(x) - 1.0f;
    return x > -0.7f ? p : big;
}

/* e^x for any x, branch-free: e^-|x| inverted for x > 0 (squared from e^(-x/2) above 87, where e^-x
 * is below float32's normal range); within 3 ulp (5 above 87) of the exact value (tested). */
static inline float exp_f(float x)
{
    const float e = cdnn_exp_nonpositive(-fabsf(x)), h = 1.0f / cdnn_exp_nonpositive(-0.5f * fabsf(x));
    const float pos = x > 87.0f ? h * h : 1.0f / e;
    return x > 0.0f ? pos : e;
}

/* log x for finite x > 0 (normal or not flushed), branch-free: Cephes' logf (x = m 2^e with m in
 * [sqrt(1/2), sqrt 2), log(m) by a polynomial in m - 1). */
static inline float log_f(float x)
{
    union {
        float f;
        int32_t i;
    } u = {x};
    float e = (float)(((u.i >> 23) & 0xff) - 126);
    u.i = (u.i & 0x007fffff) | 0x3f000000; /* mantissa in [0.5, 1) */
    const int small = u.f < 0.70710678f;
    const float m = small ? u.f + u.f - 1.0f : u.f - 1.0f;
    e = small ? e - 1.0f : e;
    const float z = m * m;
    float p = 7.0376836292e-2f;
    p = p * m - 1.1514610310e-1f;
    p = p * m + 1.1676998740e-1f;
    p = p * m - 1.2420140846e-1f;
    p = p * m + 1.4249322787e-1f;
    p = p * m - 1.6668057665e-1f;
    p = p * m + 2.0000714765e-1f;
    p = p * m - 2.4999993993e-1f;
    p = p * m + 3.3333331174e-1f;
    float y = p * m * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return (m + y) + 0.693359375f * e;
}

/* log(1 + v) for v in [0, 1]: log of w = 1 + v, corrected by the rounding of w (exact for tiny v). */
static inline float log1p_unit(float v)
{
    const float w = 1.0f + v;
    return log_f(w) + (v - (w - 1.0f)) / w;
}

/* log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): never overflows; within 2 ulp (tested). */
static inline float softplusf(float x)
{
    return (x > 0.0f ? x : 0.0f) + log1p_unit(cdnn_exp_nonpositive(-fabsf(x)));
}

/* Keras' SELU constants (Klambauer et al.). */
#define SELU_SCALE 1.05070098735548049342f
#define SELU_ALPHA 1.67326324235437728482f

static inline float hard_sigmoidf(float x)
{
    /* Keras 3: relu6(x + 3) / 6 */
    const float t = x + 3.0f, c = t < 0.0f ? 0.0f : (t > 6.0f ? 6.0f : t);
    return c / 6.0f;
}

/* tanh(softplus(x)) = n / (n + 2) with n = e^x (e^x + 2), written in v = e^-|x| for x > 0 (no
 * overflow): (1 + 2v) / (1 + 2v + 2v^2); *one_minus gets 1 - tanh(softplus(x)) without cancellation. */
static inline float tanh_softplus2(float x, float *one_minus)
{
    const float v = cdnn_exp_nonpositive(-fabsf(x));
    const float n = v * (v + 2.0f), dneg = n + 2.0f;
    const float dpos = 1.0f + 2.0f * v + 2.0f * v * v;
    *one_minus = x > 0.0f ? 2.0f * v * v / dpos : 2.0f / dneg;
    return x > 0.0f ? (1.0f + 2.0f * v) / dpos : n / dneg;
}

static inline float tanh_softplusf(float x)
{
    float unused;
    return tanh_softplus2(x, &unused);
}

/* Keras' relu(x, negative_slope, max_value, threshold) in its order of operations: x where x > threshold
 * (threshold 0: max(x, 0), which keeps NaN), clipped to [lower, upper], minus negative_slope times
 * max(threshold - x, 0) when the slope is not 0. */
static inline void relu_args_row(float *r, int cols, cdnn_act_args p)
{
    if (p.threshold != 0.0f)
        for (int j = 0; j < cols; j++) {
            const float v = r[j], kept = v > p.threshold ? v : 0.0f, lo = kept < p.lower ? p.lower : kept;
            const float c = lo > p.upper ? p.upper : lo, n = p.threshold - v, below = n < 0.0f ? 0.0f : n;
            r[j] = p.alpha != 0.0f ? c - p.alpha * below : c;
        }
    else
        for (int j = 0; j < cols; j++) {
            const float v = r[j], kept = v < 0.0f ? 0.0f : v, lo = kept < p.lower ? p.lower : kept;
            const float c = lo > p.upper ? p.upper : lo, n = -v, below = n < 0.0f ? 0.0f : n;
            r[j] = p.alpha != 0.0f ? c - p.alpha * below : c;
        }
}

CDNN_VECTOR_CLONES
static void cdnn_bias_act_tile_cloned(int act, cdnn_act_args args, float *x, int ld, int rows, int cols,
                                      const float *bias, float *z, int ldz)
{
    for (int i = 0; i < rows; i++) {
        float *r = x + (size_t)i * ld;
        if (bias)
            for (int j = 0; j < cols; j++) r[j] += bias[j];
        if (z)
            for (int j = 0; j < cols; j++) z[(size_t)i * ldz + j] = r[j];
        switch (act) {
        case CDNN_RELU:
            /* max(z, 0) as NumPy and TensorFlow take it: NaN stays NaN */
            for (int j = 0; j < cols; j++) r[j] = r[j] < 0.0f ? 0.0f : r[j];
            break;
        case CDNN_LEAKY_RELU:
            for (int j = 0; j < cols; j++) {
                const float v = r[j], neg = args.alpha * v;
                r[j] = v >= 0.0f ? v : neg;
            }
            break;
        case CDNN_SIGMOID:
            for (int j = 0; j < cols; j++) r[j] = sigmoidf(r[j]);
            break;
        case CDNN_TANH:
            for (int j = 0; j < cols; j++) r[j] = tanh_f(r[j]);
            break;
        case CDNN_GELU:
            for (int j = 0; j < cols; j++) r[j] = geluf(r[j]);
            break;
        case CDNN_ELU:
            for (int j = 0; j < cols; j++) {
                const float v = r[j], neg = args.alpha * expm1_nonpositive(v < 0.0f ? v : 0.0f);
                r[j] = v > 0.0f ? v : neg;
            }
            break;
        case CDNN_SELU:
            for (int j = 0; j < cols; j++) {
                const float v = r[j], neg = SELU_ALPHA * expm1_nonpositive(v < 0.0f ? v : 0.0f);
                r[j] = SELU_SCALE * (v > 0.0f ? v : neg);
            }
            break;
        case CDNN_SWISH:
            for (int j = 0; j < cols; j++) r[j] *= sigmoidf(r[j]);
            break;
        case CDNN_SOFTPLUS:
            for (int j = 0; j < cols; j++) r[j] = softplusf(r[j]);
            break;
        case CDNN_SOFTSIGN:
            for (int j = 0; j < cols; j++) r[j] /= 1.0f + fabsf(r[j]);
            break;
        case CDNN_HARD_SIGMOID:
            for (int j = 0; j < cols; j++) r[j] = hard_sigmoidf(r[j]);
            break;
        case CDNN_HARD_SWISH:
            for (int j = 0; j < cols; j++) r[j] *= hard_sigmoidf(r[j]);
            break;
        case CDNN_MISH:
            for (int j = 0; j < cols; j++) r[j] *= tanh_softplusf(r[j]);
            break;
        case CDNN_RELU6:
            for (int j = 0; j < cols; j++) r[j] = r[j] < 0.0f ? 0.0f : (r[j] > 6.0f ? 6.0f : r[j]);
            break;
        case CDNN_EXPONENTIAL:
            for (int j = 0; j < cols; j++) r[j] = exp_f(r[j]);
            break;
        case CDNN_RELU_ARGS:
            relu_args_row(r, cols, args);
            break;
        default: /* linear; softmax and log_softmax are applied row-wise by the caller */
            break;
        }
    }
}

void cdnn_bias_act_tile(int act, cdnn_act_args args, float *x, int ld, int rows, int cols, const float *bias, float *z,
                        int ldz)
{
    cdnn_bias_act_tile_cloned(act, args, x, ld, rows, cols, bias, z, ldz);
}

CDNN_VECTOR_CLONES
static void cdnn_dact_tile_cloned(int act, cdnn_act_args args, float *g, int ldg, const float *a, int lda, int rows,
                                  int cols)
{
    for (int i = 0; i < rows; i++) {
        float *r = g + (size_t)i * ldg;
        const float *y = a + (size_t)i * lda;
        switch (act) {
        case CDNN_RELU:
            for (int j = 0; j < cols; j++) r[j] = y[j] > 0.0f ? r[j] : 0.0f;
            break;
        case CDNN_LEAKY_RELU:
            for (int j = 0; j < cols; j++) r[j] = y[j] > 0.0f ? r[j] : args.alpha * r[j];
            break;
        case CDNN_SIGMOID:
            for (int j = 0; j < cols; j++) r[j] *= y[j] * (1.0f - y[j]);
            break;
        case CDNN_TANH:
            for (int j = 0; j < cols; j++) r[j] *= 1.0f - y[j] * y[j];
            break;
        case CDNN_GELU: /* y holds the pre-activation z */
            for (int j = 0; j < cols; j++) r[j] *= gelu_gradf(y[j]);
            break;
        case CDNN_ELU: /* a + alpha below 0 */
            for (int j = 0; j < cols; j++) r[j] *= y[j] > 0.0f ? 1.0f : y[j] + args.alpha;
            break;
        case CDNN_SELU:
            for (int j = 0; j < cols; j++) r[j] *= y[j] > 0.0f ? SELU_SCALE : y[j] + SELU_SCALE * SELU_ALPHA;
            break;
        case CDNN_SWISH: /* z: s (1 + z (1 - s)), 1 - s = sigmoid(-z) without cancellation */
            for (int j = 0; j < cols; j++) r[j] *= sigmoidf(y[j]) * (1.0f + y[j] * sigmoidf(-y[j]));
            break;
        case CDNN_SOFTPLUS: /* z: sigmoid(z) */
            for (int j = 0; j < cols; j++) r[j] *= sigmoidf(y[j]);
            break;
        case CDNN_SOFTSIGN: /* z: 1 / (1 + |z|)^2 */
            for (int j = 0; j < cols; j++) {
                const float d = 1.0f + fabsf(y[j]);
                r[j] /= d * d;
            }
            break;
        case CDNN_HARD_SIGMOID:
            for (int j = 0; j < cols; j++) r[j] = y[j] > 0.0f && y[j] < 1.0f ? r[j] * (1.0f / 6.0f) : 0.0f;
            break;
        case CDNN_HARD_SWISH: /* z: hard_sigmoid(z) + z / 6 inside (-3, 3) */
            for (int j = 0; j < cols; j++) {
                const float v = y[j], in = v > -3.0f && v < 3.0f ? v / 6.0f : 0.0f;
                r[j] *= hard_sigmoidf(v) + in;
            }
            break;
        case CDNN_MISH: /* z: t + z (1 - t^2) sigmoid(z), t = tanh(softplus(z)), 1 - t^2 = (1 - t)(1 + t) */
            for (int j = 0; j < cols; j++) {
                float omt;
                const float v = y[j], t = tanh_softplus2(v, &omt);
                r[j] *= t + v * (omt * (1.0f + t)) * sigmoidf(v);
            }
            break;
        case CDNN_RELU6:
            for (int j = 0; j < cols; j++) r[j] = y[j] > 0.0f && y[j] < 6.0f ? r[j] : 0.0f;
            break;
        case CDNN_EXPONENTIAL:
            for (int j = 0; j < cols; j++) r[j] *= y[j];
            break;
        case CDNN_RELU_ARGS: { /* z: 1 above threshold and lower, below upper (no upper: up to +inf), else
                                  the slope below threshold: 0 at the kinks, as relu and relu6 */
            const int unbounded = args.upper == INFINITY;
            for (int j = 0; j < cols; j++) {
                const float v = y[j], slope = v < args.threshold ? args.alpha * r[j] : 0.0f;
                r[j] = v > args.threshold && v > args.lower && (v < args.upper || unbounded) ? r[j] : slope;
            }
            break;
        }
        default:
            break;
        }
    }
}

void cdnn_dact_tile(int act, cdnn_act_args args, float *g, int ldg, const float *a, int lda, int rows, int cols)
{
    cdnn_dact_tile_cloned(act, args, g, ldg, a, lda, rows, cols);
}

void cdnn_softmax_rows(float *x, int ld, int rows, int cols)
{
    for (int i = 0; i < rows; i++) {
        float *r = x + (size_t)i * ld;
        float m = r[0], s = 0.0f;
        for (int j = 1; j < cols; j++) m = r[j] > m ? r[j] : m;
        for (int j = 0; j < cols; j++) r[j] = cdnn_exp_nonpositive(r[j] - m); /* vectorized */
        for (int j = 0; j < cols; j++) s += r[j];
        float inv = 1.0f / s;
        for (int j = 0; j < cols; j++) r[j] *= inv;
    }
}

void cdnn_softmax_backward_rows(float *g, int ldg, const float *a, int lda, int rows, int cols)
{
    for (int i = 0; i < rows; i++) {
        float *r = g + (size_t)i * ldg;
        const float *y = a + (size_t)i * lda;
        float dot = 0.0f;
        for (int j = 0; j < cols; j++) dot += r[j] * y[j];
        for (int j = 0; j < cols; j++) r[j] = y[j] * (r[j] - dot);
    }
}

/* log_softmax: (x - max) - log(sum e^(x - max)), the sum in float as softmax's. */
static void log_softmax_rows(float *x, int ld, int rows, int cols)
{
    float e[64];
    for (int i = 0; i < rows; i++) {
        float *r = x + (size_t)i * ld;
        float m = r[0], s = 0.0f;
        for (int j = 1; j < cols; j++) m = r[j] > m ? r[j] : m;
        for (int j0 = 0; j0 < cols; j0 += 64) {
            const int len = cols - j0 < 64 ? cols - j0 : 64;
            for (int j = 0; j < len; j++) e[j] = cdnn_exp_nonpositive(r[j0 + j] - m);
            for (int j = 0; j < len; j++) s += e[j];
        }
        const float lse = logf(s);
        for (int j = 0; j < cols; j++) r[j] = (r[j] - m) - lse;
    }
}

void cdnn_rowwise_act_rows(int act, float *x, int ld, int rows, int cols)
{
    if (act == CDNN_LOG_SOFTMAX)
        log_softmax_rows(x, ld, rows, cols);
    else
        cdnn_softmax_rows(x, ld, rows, cols);
}

void cdnn_rowwise_backward_rows(int act, float *g, int ldg, const float *a, int lda, int rows, int cols)
{
    if (act != CDNN_LOG_SOFTMAX) {
        cdnn_softmax_backward_rows(g, ldg, a, lda, rows, cols);
        return;
    }
    for (int i = 0; i < rows; i++) { /* g - softmax * sum(g), softmax = e^a */
        float *r = g + (size_t)i * ldg;
        const float *y = a + (size_t)i * lda;
        float s = 0.0f;
        for (int j = 0; j < cols; j++) s += r[j];
        for (int j = 0; j < cols; j++) r[j] -= cdnn_exp_nonpositive(y[j]) * s;
    }
}

static inline uint64_t mix64(uint64_t x)
{
    /* splitmix64 finaliser: a good 64-bit hash of a counter. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* Whether element (row, col) under key is kept: its hash, uniform in [0, 1), is at least rate. */
static inline int dropout_keeps(uint64_t key, int32_t row, int col, float rate)
{
    uint64_t h = mix64(key ^ mix64(((uint64_t)(uint32_t)row << 32) | (uint32_t)col));
    return (float)(uint32_t)(h >> 40) * (1.0f / 16777216.0f) >= rate;
}

__attribute__((always_inline)) static inline void dropout_row(float *dst, const float *src, int n, uint64_t key,
                                                              int32_t row, int col0, float rate)
{
    const float scale = 1.0f / (1.0f - rate);
    for (int j = 0; j < n; j++) dst[j] = src[j] * (dropout_keeps(key, row, col0 + j, rate) ? scale : 0.0f);
}

#ifdef CDNN_CLONES
/* AVX-512DQ multiplies 64-bit integers (vpmullq), which AVX2 emulates with three 32-bit products. */
__attribute__((target("avx512f,avx512dq"))) static void
dropout_row_avx512(float *dst, const float *src, int n, uint64_t key, int32_t row, int col0, float rate)
{
    dropout_row(dst, src, n, key, row, col0, rate);
}
#endif

/* Inlined and vectorized: called for each element, the hash cost 4 ns an
 * element, and `python -m cdnn`'s epochs (dropout 0.2 on two hidden layers)
 * took 60% longer than without dropout. */
CDNN_VECTOR_CLONES
static void cdnn_dropout_row_cloned(float *dst, const float *src, int n, uint64_t key, int32_t row, int col0,
                                    float rate)
{
#ifdef CDNN_CLONES
    if (__builtin_cpu_supports("avx512dq")) {
        dropout_row_avx512(dst, src, n, key, row, col0, rate);
        return;
    }
#endif
    dropout_row(dst, src, n, key, row, col0, rate);
}

void cdnn_dropout_row(float *dst, const float *src, int n, uint64_t key, int32_t row, int col0, float rate)
{
    cdnn_dropout_row_cloned(dst, src, n, key, row, col0, rate);
}

/* Without the hash: where ReLU's derivative is 1 its output is positive,
 * so after dropout it is nonzero exactly where kept (and where the
 * derivative is 0, g is 0 either way). Hashing the mask again in the
 * backward pass was half of dropout's cost. */
CDNN_VECTOR_CLONES
static void cdnn_dropout_row_kept_cloned(float *g, const float *din, int n, float rate)
{
    const float scale = 1.0f / (1.0f - rate);
    for (int j = 0; j < n; j++) g[j] *= din[j] != 0.0f ? scale : 0.0f;
}

void cdnn_dropout_row_kept(float *g, const float *din, int n, float rate)
{
    cdnn_dropout_row_kept_cloned(g, din, n, rate);
}
