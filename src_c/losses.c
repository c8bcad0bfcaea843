/* losses.c - per-row loss, accuracy and dL/dz of the output layer.
 *
 * Formulas are Keras 3's (keras/src/losses/losses.py and the backends'
 * nn.binary_crossentropy / categorical_crossentropy). Cross-entropy on a
 * softmax output, or binary cross-entropy on a sigmoid output, is computed
 * from the logits z, as Keras' TensorFlow backend does, so that dL/dz is the
 * one-step p - y; from_logits=True reads the output itself as logits. Other
 * combinations follow Keras' formulas on the outputs (probabilities clipped
 * to [1e-7, 1 - 1e-7] where Keras clips them) and then apply the output
 * activation's derivative. Element-wise losses are means over the last axis,
 * row losses (cross-entropy, KL divergence, categorical hinge, cosine
 * similarity) sums over it, as Keras. The caller divides by the batch's rows
 * (Keras' default "sum_over_batch_size" reduction) through grad_batch.
 * Values are computed in double from the float32 outputs; gradients in float.
 */
#include "cdnn.h"

#include <math.h>
#include <string.h>

/* Keras' epsilon (backend.epsilon()): the clip of probabilities and the floor of divisors. */
#define PROB_EPS 1e-7

cdnn_loss_opts cdnn_loss_opts_default(void)
{
    cdnn_loss_opts o;
    memset(&o, 0, sizeof o);
    o.delta = 1.0f;
    o.gamma = 2.0f;
    o.alpha = 0.25f;
    return o;
}

int cdnn_loss_valid_rows(int loss, const cdnn_loss_opts *opts, const int32_t *ysparse, const int32_t *rows, int n)
{
    if (loss != CDNN_SPARSE_CCE || !opts || !opts->has_ignore) return n;
    int valid = 0;
    for (int i = 0; i < n; i++) valid += ysparse[rows ? rows[i] : i] != opts->ignore_class;
    return valid;
}

static int argmax(const float *x, int n)
{
    int best = 0;
    for (int j = 1; j < n; j++)
        if (x[j] > x[best]) best = j;
    return best;
}

/* The exponentials in float32 (vectorized, 64 at a time), summed in double. */
static double log_sum_exp(const float *x, int n)
{
    float m = x[0], e[64];
    for (int j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    double s = 0.0;
    for (int j0 = 0; j0 < n; j0 += 64) {
        const int len = n - j0 < 64 ? n - j0 : 64;
        for (int j = 0; j < len; j++) e[j] = cdnn_exp_nonpositive(x[j0 + j] - m);
        for (int j = 0; j < len; j++) s += e[j];
    }
    return (double)m + log(s);
}

/* log(1 + e^t) without overflow. */
static double softplus_d(double t)
{
    return (t > 0.0 ? t : 0.0) + log1p(exp(-fabs(t)));
}

/* Binary cross-entropy of logit x against target y, stable for any x. */
static double bce_logit(float x, double y)
{
    return softplus_d(x) - (double)x * y;
}

static double clip_prob(double p)
{
    return p < PROB_EPS ? PROB_EPS : (p > 1.0 - PROB_EPS ? 1.0 - PROB_EPS : p);
}

static double sign_d(double x)
{
    return (double)(x > 0.0) - (double)(x < 0.0);
}

/* Keras' binary cross-entropy on a probability p (clipped) and its derivative in p (0 where the clip holds). */
static double bce_prob(double p, double t, double *dp)
{
    const double pc = clip_prob(p);
    *dp = (p > PROB_EPS && p < 1.0 - PROB_EPS) ? -t / p + (1.0 - t) / (1.0 - p) : 0.0;
    return -(t * log(pc) + (1.0 - t) * log(1.0 - pc));
}

/* One element of an element-wise loss at output o against label y: its value, and dL/do in *d. */
static double elem_loss(int loss, const cdnn_loss_opts *op, double o, double y, double *d)
{
    switch (loss) {
    case CDNN_MSE: {
        const double e = o - y;
        *d = 2.0 * e;
        return e * e;
    }
    case CDNN_MAE:
        *d = sign_d(o - y);
        return fabs(o - y);
    case CDNN_MAPE: {
        const double den = fabs(y) > PROB_EPS ? fabs(y) : PROB_EPS;
        *d = 100.0 * sign_d(o - y) / den;
        return 100.0 * fabs(y - o) / den;
    }
    case CDNN_MSLE: {
        const double a = log1p(o > PROB_EPS ? o : PROB_EPS), b = log1p(y > PROB_EPS ? y : PROB_EPS), e = a - b;
        *d = o > PROB_EPS ? 2.0 * e / (1.0 + o) : 0.0;
        return e * e;
    }
    case CDNN_HUBER: {
        const double e = o - y, ae = fabs(e), delta = op->delta;
        if (ae <= delta) {
            *d = e;
            return 0.5 * e * e;
        }
        *d = delta * sign_d(e);
        return delta * ae - 0.5 * delta * delta;
    }
    case CDNN_LOG_COSH: {
        /* Keras' x + softplus(-2x) - log 2: no overflow of cosh */
        const double e = o - y;
        *d = tanh(e);
        return e + softplus_d(-2.0 * e) - 0.69314718055994531;
    }
    case CDNN_POISSON:
        *d = 1.0 - y / (o + PROB_EPS);
        return o - y * log(o + PROB_EPS);
    case CDNN_HINGE:
    case CDNN_SQUARED_HINGE: {
        const double t = op->hinge_binary ? 2.0 * y - 1.0 : y, m = 1.0 - t * o, h = m > 0.0 ? m : 0.0;
        if (loss == CDNN_HINGE) {
            *d = m > 0.0 ? -t : 0.0;
            return h;
        }
        *d = -2.0 * t * h;
        return h * h;
    }
    case CDNN_BCE:
        return bce_prob(o, y * (1.0 - op->label_smoothing) + 0.5 * op->label_smoothing, d);
    case CDNN_BFCE: {
        /* Keras: focal factor (1 - p_t)^gamma on the clipped binary cross-entropy, p_t = t p + (1-t)(1-p)
         * with p unclipped; times alpha or 1 - alpha by class with class balancing */
        const double t = y * (1.0 - op->label_smoothing) + 0.5 * op->label_smoothing, g = op->gamma;
        double dbce;
        const double bce = bce_prob(o, t, &dbce);
        const double q = 1.0 - (t * o + (1.0 - t) * (1.0 - o)); /* 1 - p_t; dq/do = 1 - 2t */
        const double f = pow(q, g), df = g == 0.0 ? 0.0 : g * pow(q, g - 1.0) * (1.0 - 2.0 * t);
        const double w = op->class_balancing ? t * op->alpha + (1.0 - t) * (1.0 - op->alpha) : 1.0;
        *d = w * (df * bce + f * dbce);
        return w * f * bce;
    }
    default:
        *d = 0.0;
        return 0.0;
    }
}

static double row_accuracy(int metric, const float *out, int cols, int ys, const float *yd)
{
    switch (metric) {
    case CDNN_METRIC_SPARSE:
        return argmax(out, cols) == ys;
    case CDNN_METRIC_CATEGORICAL:
        return argmax(out, cols) == argmax(yd, cols);
    case CDNN_METRIC_BINARY: {
        int hits = 0;
        for (int j = 0; j < cols; j++) hits += yd[j] == (out[j] > 0.5f ? 1.0f : 0.0f);
        return (double)hits / cols;
    }
    default:
        return 0.0;
    }
}

/* Cross-entropy of one row from logits x (p: their softmax, or NULL to compute it), targets t_j =
 * onehot(ys) (sparse) or yd_j smoothed towards 1/cols; g (if not NULL) gets scale * dL/dx. */
static double cce_logits(int sparse, const float *x, const float *p, int cols, int ys, const float *yd, float ls,
                         float scale, float *g)
{
    const double lse = log_sum_exp(x, cols);
    double l = 0.0, tsum = 1.0;
    const float keep = 1.0f - ls, add = ls / (float)cols;
    if (sparse) {
        l = lse - x[ys];
    } else {
        tsum = 0.0;
        for (int j = 0; j < cols; j++) {
            const double t = ls > 0.0f ? (double)(yd[j] * keep + add) : (double)yd[j];
            l += t * (lse - x[j]);
            tsum += t;
        }
    }
    if (g)
        for (int j = 0; j < cols; j++) {
            const float pj = p ? p[j] : (float)exp((double)x[j] - lse);
            const float t = sparse ? (float)(j == ys) : (ls > 0.0f ? yd[j] * keep + add : yd[j]);
            g[j] = ((float)tsum * pj - t) * scale;
        }
    return l;
}

/* Keras' cross-entropy on probabilities o (normalised by their sum, clipped); g gets dL/do (unscaled). */
static double cce_probs(int sparse, const float *o, int cols, int ys, const float *yd, float ls, float *g)
{
    double s = 0.0, gp = 0.0, l = 0.0;
    for (int j = 0; j < cols; j++) s += o[j];
    for (int j = 0; j < cols; j++) {
        const double p = o[j] / s;
        const double t = sparse ? (double)(j == ys) : (ls > 0.0f ? yd[j] * (1.0 - ls) + ls / cols : yd[j]);
        l -= t * log(clip_prob(p));
        /* dL/dp, zero where the clip is active */
        const double dp = (p > PROB_EPS && p < 1.0 - PROB_EPS) ? -t / p : 0.0;
        if (g) g[j] = (float)dp;
        gp += dp * p;
    }
    if (g) /* through the normalisation: dL/do_j = (dL/dp_j - sum_k dL/dp_k p_k) / s */
        for (int j = 0; j < cols; j++) g[j] = (float)((g[j] - gp) / s);
    return l;
}

/* A row loss other than cross-entropy: KL divergence, categorical hinge, cosine similarity; g gets dL/do. */
static double row_loss_other(int loss, const float *o, const float *y, int cols, float *g)
{
    double l = 0.0;
    switch (loss) {
    case CDNN_KLD:
        /* Keras clips both to [eps, 1]: sum(y log(y / o)) */
        for (int j = 0; j < cols; j++) {
            const double yc = y[j] < PROB_EPS ? PROB_EPS : (y[j] > 1.0f ? 1.0 : y[j]);
            const double oc = o[j] < PROB_EPS ? PROB_EPS : (o[j] > 1.0f ? 1.0 : o[j]);
            l += yc * log(yc / oc);
            if (g) g[j] = (o[j] > PROB_EPS && o[j] < 1.0f) ? (float)(-yc / oc) : 0.0f;
        }
        return l;
    case CDNN_CATEGORICAL_HINGE: {
        /* max(neg - pos + 1, 0), pos = sum(y o), neg = max((1 - y) o) */
        double pos = 0.0, neg = -INFINITY;
        int k = 0;
        for (int j = 0; j < cols; j++) {
            const double v = (1.0 - y[j]) * o[j];
            pos += (double)y[j] * o[j];
            if (v > neg) {
                neg = v;
                k = j;
            }
        }
        const double m = neg - pos + 1.0;
        if (g) {
            for (int j = 0; j < cols; j++) g[j] = m > 0.0 ? -y[j] : 0.0f;
            if (m > 0.0) g[k] += 1.0f - y[k];
        }
        return m > 0.0 ? m : 0.0;
    }
    case CDNN_COSINE: {
        /* -sum(y o) / (|y| |o|), each norm at least eps (Keras' normalize: x * rsqrt(max(sum x^2, eps^2))) */
        double sy = 0.0, so = 0.0, dot = 0.0;
        for (int j = 0; j < cols; j++) {
            sy += (double)y[j] * y[j];
            so += (double)o[j] * o[j];
            dot += (double)y[j] * o[j];
        }
        const double floor2 = PROB_EPS * PROB_EPS;
        const double ny = sqrt(sy > floor2 ? sy : floor2), no = sqrt(so > floor2 ? so : floor2);
        const double c = dot / (ny * no);
        if (g)
            for (int j = 0; j < cols; j++) {
                double d = -(double)y[j] / (ny * no);
                if (so > floor2) d += c * o[j] / (no * no);
                g[j] = (float)d;
            }
        return -c;
    }
    default:
        return 0.0;
    }
}

void cdnn_loss_rows(int loss, int metric, int act, cdnn_act_args args, int from_logits, int lo, int hi, int cols,
                    const float *out, const float *z, const int32_t *ysparse, const float *ydense, int ldy,
                    int grad_batch, float *dz, double *row_loss, double *row_correct, const cdnn_loss_opts *opts,
                    const float *row_weight)
{
    const cdnn_loss_opts defaults = cdnn_loss_opts_default();
    const cdnn_loss_opts *op = opts ? opts : &defaults;
    const int categorical = loss == CDNN_SPARSE_CCE || loss == CDNN_CCE;
    const int sparse = loss == CDNN_SPARSE_CCE;
    const int fused =
        !from_logits && ((categorical && act == CDNN_SOFTMAX) || (loss == CDNN_BCE && act == CDNN_SIGMOID));
    /* the tensor the loss formula reads: logits for fused/from_logits, else the output */
    const float *logits = fused ? z : out;
    const float ls = loss == CDNN_SPARSE_CCE ? 0.0f : op->label_smoothing;
    const float inv_b = 1.0f / (float)(grad_batch > 0 ? grad_batch : 1);

    for (long i = lo; i < hi; i++) {
        const float *o = out + (size_t)i * cols, *x = logits + (size_t)i * cols;
        const float *yd = ydense ? ydense + (size_t)i * ldy : NULL;
        const int ys = ysparse ? ysparse[i] : 0;
        const float w = row_weight ? row_weight[i] : 1.0f;
        const float scale = w * inv_b;
        float *g = dz ? dz + (size_t)i * cols : NULL;
        double l = 0.0;
        int done = 0; /* g already holds dL/dz (scaled) */
        row_correct[i] = row_accuracy(metric, o, cols, ys, yd);

        if (sparse && op->has_ignore && ys == op->ignore_class) {
            row_loss[i] = 0.0;
            if (g) memset(g, 0, (size_t)cols * sizeof(float));
            continue;
        }
        if (categorical && (fused || from_logits)) {
            l = cce_logits(sparse, x, fused ? o : NULL, cols, ys, yd, ls, scale, g);
            done = 1;
        } else if (categorical) {
            l = cce_probs(sparse, o, cols, ys, yd, ls, g);
        } else if (loss == CDNN_BCE && (fused || from_logits)) {
            const float keep = 1.0f - ls, add = 0.5f * ls, s = scale / (float)cols;
            for (int j = 0; j < cols; j++) l += bce_logit(x[j], (double)yd[j] * (1.0 - ls) + 0.5 * ls);
            l /= cols;
            if (g)
                for (int j = 0; j < cols; j++) {
                    const float p = fused ? o[j] : 1.0f / (1.0f + expf(-x[j]));
                    g[j] = (p - (ls > 0.0f ? yd[j] * keep + add : yd[j])) * s;
                }
            done = 1;
        } else if (loss == CDNN_KLD || loss == CDNN_CATEGORICAL_HINGE || loss == CDNN_COSINE) {
            l = row_loss_other(loss, o, yd, cols, g);
        } else {                                              /* element-wise: the mean over the row */
            const int sig = loss == CDNN_BFCE && from_logits; /* Keras: sigmoid first, then the formula */
            for (int j = 0; j < cols; j++) {
                double d;
                const double p = sig ? 1.0 / (1.0 + exp(-(double)o[j])) : (double)o[j];
                l += elem_loss(loss, op, p, yd[j], &d);
                if (g) g[j] = (float)(sig ? d * p * (1.0 - p) : d);
            }
            l /= cols;
            if (g)
                for (int j = 0; j < cols; j++) g[j] /= (float)cols;
        }
        if (g) {
            if (!done) /* g is dL/d(output), unscaled */
                for (int j = 0; j < cols; j++) g[j] *= scale;
            if (!fused) { /* fold in the output activation's derivative (with from_logits: the logits') */
                if (cdnn_act_rowwise(act))
                    cdnn_rowwise_backward_rows(act, g, cols, o, cols, 1, cols);
                else
                    cdnn_dact_tile(act, args, g, cols, cdnn_act_grad_from_z(act) ? z + (size_t)i * cols : o, cols, 1,
                                   cols);
            }
        }
        row_loss[i] = w * l;
    }
}
