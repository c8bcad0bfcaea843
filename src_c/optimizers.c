/* optimizers.c - one pass over a parameter buffer per update, with Keras 3's
 * formulas (keras/src/optimizers/{sgd,adagrad,rmsprop,adam}.py), in float32.
 *
 * Slots: SGD momentum m (slot1); Adagrad accumulator (slot1, starts at
 * initial_accumulator_value); RMSprop velocity (slot1) and momentum (slot2);
 * Adam m (slot1) and v (slot2).
 */
#include "cdnn.h"

#include <math.h>

cdnn_opt_step cdnn_opt_prepare(const cdnn_opt_params *p, long t)
{
    cdnn_opt_step s;
    s.lr = p->lr;
    if (p->kind == CDNN_ADAM) {
        /* Keras: alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), t = iterations + 1 */
        float b1p = powf(p->beta_1, (float)t), b2p = powf(p->beta_2, (float)t);
        s.lr = p->lr * sqrtf(1.0f - b2p) / (1.0f - b1p);
    }
    return s;
}

/* The update of n contiguous parameters (inlined into each vector clone of its callers). */
__attribute__((always_inline))
static inline void update_run(const cdnn_opt_params *p, cdnn_opt_step s, float *restrict w, float *restrict slot1,
                              float *restrict slot2, const float *restrict g, long n)
{
    const float lr = s.lr, eps = p->epsilon;
    switch (p->kind) {
    case CDNN_SGD:
        if (p->momentum == 0.0f) {
            for (long i = 0; i < n; i++) w[i] -= g[i] * lr;
        } else if (p->nesterov) {
            const float mu = p->momentum;
            for (long i = 0; i < n; i++) {
                float m = -g[i] * lr + slot1[i] * mu;
                slot1[i] = m;
                w[i] += -g[i] * lr + m * mu;
            }
        } else {
            const float mu = p->momentum;
            for (long i = 0; i < n; i++) {
                float m = -g[i] * lr + slot1[i] * mu;
                slot1[i] = m;
                w[i] += m;
            }
        }
        break;
    case CDNN_ADAGRAD:
        for (long i = 0; i < n; i++) {
            float a = slot1[i] + g[i] * g[i];
            slot1[i] = a;
            w[i] -= (lr * g[i]) / sqrtf(a + eps);
        }
        break;
    case CDNN_RMSPROP: {
        const float rho = p->rho, mu = p->momentum;
        for (long i = 0; i < n; i++) {
            float v = rho * slot1[i] + (1.0f - rho) * (g[i] * g[i]);
            slot1[i] = v;
            float inc = (lr * g[i]) / sqrtf(v + eps);
            if (mu > 0.0f) {
                inc = mu * slot2[i] + inc;
                slot2[i] = inc;
            }
            w[i] -= inc;
        }
        break;
    }
    case CDNN_ADAM: {
        const float c1 = 1.0f - p->beta_1, c2 = 1.0f - p->beta_2;
        for (long i = 0; i < n; i++) {
            float m = slot1[i] + (g[i] - slot1[i]) * c1;
            float v = slot2[i] + (g[i] * g[i] - slot2[i]) * c2;
            slot1[i] = m;
            slot2[i] = v;
            w[i] -= (m * lr) / (sqrtf(v) + eps);
        }
        break;
    }
    default:
        break;
    }
}

CDNN_VECTOR_CLONES
static void cdnn_opt_update_cloned(const cdnn_opt_params *p, cdnn_opt_step s, float *restrict w, float *restrict slot1,
                     float *restrict slot2, const float *restrict g, long n)
{
    update_run(p, s, w, slot1, slot2, g, n);
}

void cdnn_opt_update(const cdnn_opt_params *p, cdnn_opt_step s, float *restrict w, float *restrict slot1,
                     float *restrict slot2, const float *restrict g, long n)
{
    cdnn_opt_update_cloned(p, s, w, slot1, slot2, g, n);
}

CDNN_VECTOR_CLONES
static void cdnn_opt_update_panels_cloned(const cdnn_opt_params *p, cdnn_opt_step s, float *w, int off0, int chunk, long wstride,
                            float *slot1, float *slot2, const float *g, long n)
{
    for (long done = 0; done < n; w += wstride) {
        long len = chunk - off0 < n - done ? chunk - off0 : n - done;
        update_run(p, s, w + off0, slot1 ? slot1 + done : NULL, slot2 ? slot2 + done : NULL, g + done, len);
        done += len;
        off0 = 0;
    }
}

void cdnn_opt_update_panels(const cdnn_opt_params *p, cdnn_opt_step s, float *w, int off0, int chunk, long wstride,
                            float *slot1, float *slot2, const float *g, long n)
{
    cdnn_opt_update_panels_cloned(p, s, w, off0, chunk, wstride, slot1, slot2, g, n);
}
