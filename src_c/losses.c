/* losses.c - per-sample losses, accuracy counts and the gradient of the
 * batch-mean loss with respect to the last layer's pre-activation z.
 *
 * Cross-entropy on a softmax output (and binary cross-entropy on a sigmoid
 * output) is computed from the logits z in one step: loss by a stable
 * log-sum-exp, gradient softmax - one-hot. This is what Keras 3 does on its
 * TensorFlow backend, which reads the logits behind a softmax output.
 * from_logits=True reads the output as logits. Other combinations follow
 * Keras' formulas on probabilities (normalised and clipped to [1e-7, 1-1e-7])
 * and then apply the activation's derivative. Losses are means over the batch (BCE and MSE: first over the
 * last axis), as Keras' default "sum_over_batch_size" reduction.
 */
#include "cdnn.h"

#include <math.h>

/* Keras' epsilon: probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] before the log. */
#define PROB_EPS 1e-7

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

/* Binary cross-entropy of logit x against target y, stable for any x. */
static double bce_logit(float x, float y)
{
    return (x > 0.0f ? x : 0.0f) - (double)x * y + log1p(exp(-fabs((double)x)));
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

void cdnn_loss_rows(int loss, int metric, int act, float alpha, int from_logits,
                    int lo, int hi, int cols, const float *out, const float *z,
                    const int32_t *ysparse, const float *ydense, int ldy,
                    int grad_batch, float *dz, double *row_loss, double *row_correct)
{
    const int categorical = loss == CDNN_SPARSE_CCE || loss == CDNN_CCE;
    const int fused = !from_logits && ((categorical && act == CDNN_SOFTMAX) || (loss == CDNN_BCE && act == CDNN_SIGMOID));
    /* the tensor the loss formula reads: logits for fused/from_logits, else the output */
    const float *logits = fused ? z : out;
    const float inv_b = 1.0f / (float)grad_batch;

    for (long i = lo; i < hi; i++) {
        const float *o = out + (size_t)i * cols, *x = logits + (size_t)i * cols;
        const float *yd = ydense ? ydense + (size_t)i * ldy : NULL;
        int ys = ysparse ? ysparse[i] : 0;
        float *g = dz ? dz + (size_t)i * cols : NULL;
        double l = 0.0;

        if (categorical && (fused || from_logits)) {
            double lse = log_sum_exp(x, cols);
            if (loss == CDNN_SPARSE_CCE) {
                l = lse - x[ys];
            } else {
                for (int j = 0; j < cols; j++) l += yd[j] * (lse - x[j]);
            }
            if (g) {
                double ysum = 1.0;
                if (loss == CDNN_CCE) {
                    ysum = 0.0;
                    for (int j = 0; j < cols; j++) ysum += yd[j];
                }
                for (int j = 0; j < cols; j++) {
                    float p = fused ? o[j] : (float)exp((double)x[j] - lse);
                    float t = loss == CDNN_SPARSE_CCE ? (float)(j == ys) : yd[j];
                    g[j] = ((float)ysum * p - t) * inv_b;
                }
            }
        } else if (categorical) {
            /* Keras on probabilities: p = out / sum(out), clipped to [eps, 1-eps], -sum(y log p) */
            double s = 0.0, gp = 0.0;
            for (int j = 0; j < cols; j++) s += o[j];
            for (int j = 0; j < cols; j++) {
                double p = o[j] / s, t = loss == CDNN_SPARSE_CCE ? (double)(j == ys) : yd[j];
                double pc = p < PROB_EPS ? PROB_EPS : (p > 1.0 - PROB_EPS ? 1.0 - PROB_EPS : p);
                l -= t * log(pc);
                /* dL/dp, zero where the clip is active */
                double dp = (p > PROB_EPS && p < 1.0 - PROB_EPS) ? -t / p : 0.0;
                if (g) g[j] = (float)dp;
                gp += dp * p;
            }
            if (g) /* through the normalisation: dL/dout_j = (dL/dp_j - sum_k dL/dp_k p_k) / s */
                for (int j = 0; j < cols; j++) g[j] = (float)((g[j] - gp) / s) * inv_b;
        } else if (loss == CDNN_BCE && (fused || from_logits)) {
            for (int j = 0; j < cols; j++) l += bce_logit(x[j], yd[j]);
            l /= cols;
            if (g) {
                float scale = inv_b / (float)cols;
                for (int j = 0; j < cols; j++) {
                    float p = fused ? o[j] : 1.0f / (1.0f + expf(-x[j]));
                    g[j] = (p - yd[j]) * scale;
                }
            }
        } else if (loss == CDNN_BCE) {
            /* Keras on probabilities: clip to [eps, 1-eps], -mean(y log p + (1-y) log(1-p)) */
            for (int j = 0; j < cols; j++) {
                double p = o[j], t = yd[j];
                double pc = p < PROB_EPS ? PROB_EPS : (p > 1.0 - PROB_EPS ? 1.0 - PROB_EPS : p);
                l -= t * log(pc) + (1.0 - t) * log(1.0 - pc);
                if (g)
                    g[j] = (p > PROB_EPS && p < 1.0 - PROB_EPS)
                               ? (float)((-t / p + (1.0 - t) / (1.0 - p)) / cols) * inv_b
                               : 0.0f;
            }
            l /= cols;
        } else { /* MSE */
            for (int j = 0; j < cols; j++) {
                double d = (double)o[j] - yd[j];
                l += d * d;
            }
            l /= cols;
            if (g) {
                float scale = 2.0f * inv_b / (float)cols;
                for (int j = 0; j < cols; j++) g[j] = (o[j] - yd[j]) * scale;
            }
        }
        if (g && !fused) {
            /* g is dL/d(output): fold in the activation's derivative */
            if (act == CDNN_SOFTMAX)
                cdnn_softmax_backward_rows(g, cols, o, cols, 1, cols);
            else
                cdnn_dact_tile(act, alpha, g, cols, act == CDNN_GELU ? z + (size_t)i * cols : o, cols, 1, cols);
        }
        row_loss[i] = l;
        row_correct[i] = row_accuracy(metric, o, cols, ys, yd);
    }
}
