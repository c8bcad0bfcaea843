/* graph_ops.c - the graph's elementwise and copying ops, forward and
 * backward: affine (Rescaling, folded Normalization), the merges (Add,
 * Subtract, Multiply, Average, Maximum, Minimum), Concatenate on the last
 * axis, Dot on the last axis, Dropout, GaussianNoise, GaussianDropout, AlphaDropout and PReLU. All row-local: a
 * thread passes its own
 * rows, so the results do not depend on how rows are shared out.
 */
#include "graph.h"

#include <math.h>
#include <string.h>

void cdnn_affine_rows(const cdnn_node *nd, int r0, int r1, const float *x, float *y)
{
    const int w = nd->width;
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * w;
        float *yi = y + (size_t)i * w;
        for (int j = 0; j < w; j++) {
            const float s = nd->scale_n == 1 ? nd->scale[0] : nd->scale[j];
            const float o = nd->offset_n == 1 ? nd->offset[0] : nd->offset[j];
            yi[j] = xi[j] * s + o;
        }
    }
}

void cdnn_merge_rows(const cdnn_node *nd, int r0, int r1, const float *const *xs, float *y)
{
    const int w = nd->width, k = nd->n_in;
    const size_t lo = (size_t)r0 * w, hi = (size_t)r1 * w;
    if (r1 <= r0) return;
    memcpy(y + lo, xs[0] + lo, (hi - lo) * sizeof(float));
    /* inputs folded in order, as Keras' merge layers fold them */
    for (int q = 1; q < k; q++) {
        const float *x = xs[q];
        switch (nd->op) {
        case CDNN_OP_ADD:
        case CDNN_OP_AVERAGE:
            for (size_t e = lo; e < hi; e++) y[e] += x[e];
            break;
        case CDNN_OP_SUBTRACT:
            for (size_t e = lo; e < hi; e++) y[e] -= x[e];
            break;
        case CDNN_OP_MULTIPLY:
            for (size_t e = lo; e < hi; e++) y[e] *= x[e];
            break;
        case CDNN_OP_MAXIMUM: /* NaN wins, as NumPy's and TensorFlow's maximum */
            for (size_t e = lo; e < hi; e++) y[e] = (y[e] >= x[e] || y[e] != y[e]) ? y[e] : x[e];
            break;
        case CDNN_OP_MINIMUM:
            for (size_t e = lo; e < hi; e++) y[e] = (y[e] <= x[e] || y[e] != y[e]) ? y[e] : x[e];
            break;
        default:
            break;
        }
    }
    if (nd->op == CDNN_OP_AVERAGE) {
        const float inv = 1.0f / (float)k;
        for (size_t e = lo; e < hi; e++) y[e] *= inv;
    }
}

/* Whether input k attains the extreme y at element e first: the gradient
 * of a maximum (minimum) goes to the first input equal to it, as folding
 * TensorFlow's maximum, whose gradient goes to x where x >= y, gives. */
static int first_extreme(const float *const *xs, int k, size_t e, float ye)
{
    if (xs[k][e] != ye) return 0;
    for (int q = 0; q < k; q++)
        if (xs[q][e] == ye) return 0;
    return 1;
}

void cdnn_merge_backward_rows(const cdnn_node *nd, int k, int r0, int r1, const float *const *xs, const float *y,
                              const float *g, float *dx, int acc)
{
    const int w = nd->width, n = nd->n_in;
    const size_t lo = (size_t)r0 * w, hi = (size_t)r1 * w;
    for (size_t e = lo; e < hi; e++) {
        float d;
        switch (nd->op) {
        case CDNN_OP_ADD:
            d = g[e];
            break;
        case CDNN_OP_AVERAGE:
            d = g[e] * (1.0f / (float)n);
            break;
        case CDNN_OP_SUBTRACT:
            d = k == 0 ? g[e] : -g[e];
            break;
        case CDNN_OP_MULTIPLY: {
            float p = g[e];
            for (int q = 0; q < n; q++)
                if (q != k) p *= xs[q][e];
            d = p;
            break;
        }
        case CDNN_OP_MAXIMUM:
        case CDNN_OP_MINIMUM:
            d = first_extreme(xs, k, e, y[e]) ? g[e] : 0.0f;
            break;
        default:
            d = 0.0f;
            break;
        }
        dx[e] = acc ? dx[e] + d : d;
    }
}

void cdnn_concat_rows(int n_in, const int *widths, int r0, int r1, const float *const *xs, float *y, int width)
{
    for (long i = r0; i < r1; i++) {
        float *yi = y + (size_t)i * width;
        for (int k = 0; k < n_in; k++) {
            memcpy(yi, xs[k] + (size_t)i * widths[k], (size_t)widths[k] * sizeof(float));
            yi += widths[k];
        }
    }
}

void cdnn_concat_backward_rows(int w_k, int c0, int r0, int r1, const float *g, int width, float *dx, int acc)
{
    for (long i = r0; i < r1; i++) {
        const float *gi = g + (size_t)i * width + c0;
        float *di = dx + (size_t)i * w_k;
        if (acc)
            for (int j = 0; j < w_k; j++) di[j] += gi[j];
        else
            memcpy(di, gi, (size_t)w_k * sizeof(float));
    }
}

void cdnn_dropout_samples(const float *x, float *y, int s0, int s1, int n, const int32_t *rows, uint64_t key,
                          float rate)
{
    /* keyed by the sample's dataset row and the column within the sample, as the chain's dropout */
    for (long s = s0; s < s1; s++) cdnn_dropout_row(y + (size_t)s * n, x + (size_t)s * n, n, key, rows[s], 0, rate);
}

/* splitmix64's finaliser: a 64-bit hash of a counter. */
static inline uint64_t hash64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void cdnn_noise_samples(const float *x, float *y, int s0, int s1, int n, const int32_t *rows, uint64_t key, int kind,
                        float p)
{
    const double two_pi = 6.283185307179586;
    /* Keras' alpha dropout: alpha' = -alpha * scale (SELU's constants), a and b keep mean and variance */
    const double ap = -1.6732632423543772848 * 1.0507009873554804934;
    const double a = 1.0 / sqrt((1.0 - p) * (1.0 + p * ap * ap));
    const float af = (float)a, bf = (float)(-a * ap * p), dropped = (float)a * (float)ap + bf;
    for (long s = s0; s < s1; s++) {
        const float *xs = x + (size_t)s * n;
        float *ys = y + (size_t)s * n;
        const uint64_t rk = hash64(key ^ hash64((uint64_t)(uint32_t)rows[s] << 32));
        for (int j = 0; j < n; j++) {
            const uint64_t h = hash64(rk ^ (uint64_t)(uint32_t)j);
            if (kind >= CDNN_NOISE_ALPHA) { /* a 24-bit uniform in [0, 1) */
                const int keep = (float)(h >> 40) * (1.0f / 16777216.0f) >= p;
                ys[j] = keep ? af * xs[j] + (kind == CDNN_NOISE_ALPHA ? bf : 0.0f)
                             : (kind == CDNN_NOISE_ALPHA ? dropped : 0.0f);
                continue;
            }
            /* Box-Muller from two 26-bit uniforms of one hash: u1 in (0, 1], u2 in [0, 1) */
            const double u1 = ((double)(h >> 38) + 1.0) * (1.0 / 67108864.0);
            const double u2 = (double)(h & 0x3ffffffULL) * (1.0 / 67108864.0);
            const float z = (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
            ys[j] = kind == CDNN_NOISE_FACTOR ? 1.0f + p * z : xs[j] + p * z;
        }
    }
}

/* Alpha of PReLU node nd for row r (of [batch*rows, width]): its [alpha_c] row. */
static const float *prelu_alpha(const cdnn_node *nd, long r)
{
    return nd->gamma + (nd->alpha_r == 1 ? 0 : (size_t)(r % nd->rows) * nd->alpha_c);
}

void cdnn_prelu_rows(const cdnn_node *nd, int r0, int r1, const float *x, float *y)
{
    const int w = nd->width, step = nd->alpha_c > 1;
    for (long r = r0; r < r1; r++) {
        const float *xr = x + (size_t)r * w, *al = prelu_alpha(nd, r);
        float *yr = y + (size_t)r * w;
        for (int j = 0; j < w; j++) yr[j] = xr[j] > 0.0f ? xr[j] : al[j * step] * xr[j];
    }
}

void cdnn_prelu_backward_rows(const cdnn_node *nd, int r0, int r1, const float *x, const float *g, float *dx, int acc)
{
    const int w = nd->width, step = nd->alpha_c > 1;
    for (long r = r0; r < r1; r++) {
        const size_t e = (size_t)r * w;
        const float *al = prelu_alpha(nd, r);
        for (int j = 0; j < w; j++) {
            const float xv = x[e + j], d = xv > 0.0f ? g[e + j] : (xv < 0.0f ? al[j * step] * g[e + j] : 0.0f);
            dx[e + j] = acc ? dx[e + j] + d : d;
        }
    }
}

void cdnn_prelu_alpha_grad_team(const cdnn_node *nd, int rows, const float *x, const float *g, double *acc,
                                float *dalpha)
{
    const int w = nd->width, ac = nd->alpha_c;
    long lo, hi;
    cdnn_team_range((long)nd->alpha_r * ac, &lo, &hi);
    for (long k = lo; k < hi; k++) acc[k] = 0.0;
    /* rows in order, each row's values in order, into the alpha values [lo, hi) this thread owns */
    for (long r = 0; r < rows && hi > lo; r++) {
        const long a0 = (nd->alpha_r > 1 ? r % nd->rows : 0) * ac;
        const float *xr = x + (size_t)r * w, *gr = g + (size_t)r * w;
        if (ac == 1) {
            if (a0 < lo || a0 >= hi) continue;
            for (int j = 0; j < w; j++)
                if (xr[j] < 0.0f) acc[a0] += (double)gr[j] * xr[j];
        } else {
            const long j0 = lo > a0 ? lo - a0 : 0, j1 = hi - a0 < ac ? hi - a0 : ac;
            for (long j = j0; j < j1; j++)
                if (xr[j] < 0.0f) acc[a0 + j] += (double)gr[j] * xr[j];
        }
    }
    for (long k = lo; k < hi; k++) dalpha[k] = (float)acc[k];
}

void cdnn_axpy_rows(float *dst, const float *src, long n, float scale, int acc)
{
    if (scale == 1.0f) {
        if (acc)
            for (long i = 0; i < n; i++) dst[i] += src[i];
        else if (dst != src)
            memcpy(dst, src, (size_t)n * sizeof(float));
    } else {
        if (acc)
            for (long i = 0; i < n; i++) dst[i] += src[i] * scale;
        else
            for (long i = 0; i < n; i++) dst[i] = src[i] * scale;
    }
}

void cdnn_dot_rows(int r0, int r1, int n, float eps, const float *a, const float *b, float *ia, float *ib, float *y)
{
    if (eps > 0.0f) {
        cdnn_rownorm_rows(r0, r1, n, eps, 0, a, NULL, ia, NULL);
        cdnn_rownorm_rows(r0, r1, n, eps, 0, b, NULL, ib, NULL);
    }
    for (long i = r0; i < r1; i++) {
        const float *ai = a + (size_t)i * n, *bi = b + (size_t)i * n;
        double s = 0.0;
        for (int j = 0; j < n; j++) s += (double)ai[j] * bi[j];
        y[i] = eps > 0.0f ? (float)s * ia[i] * ib[i] : (float)s;
    }
}

void cdnn_dot_backward_rows(int k, int r0, int r1, int n, float eps, const float *a, const float *b, const float *ia,
                            const float *ib, const float *y, const float *g, float *dx, int acc)
{
    /* d(a . b)/da = b; normalized (y = ia ib a . b): dy/da = ia ib b - ia^2 y a, no second term where ia is
     * capped at 1 / eps */
    const float *x = k ? b : a, *o = k ? a : b, *ix = k ? ib : ia, *io = k ? ia : ib;
    const float cap = (float)(1.0 / eps);
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * n, *oi = o + (size_t)i * n;
        float *di = dx + (size_t)i * n;
        const float p = eps > 0.0f ? g[i] * ix[i] * io[i] : g[i];
        const float q = eps > 0.0f && ix[i] < cap ? g[i] * ix[i] * ix[i] * y[i] : 0.0f;
        for (int j = 0; j < n; j++) {
            const float d = p * oi[j] - q * xi[j];
            di[j] = acc ? di[j] + d : d;
        }
    }
}
