/* optimizers.c - one pass over a parameter buffer per update, with Keras 3's
 * formulas (keras/src/optimizers/{sgd,adagrad,rmsprop,adam,nadam,adamax,
 * adadelta,lion,ftrl,adafactor}.py and base_optimizer.py), in float32.
 *
 * Slots: SGD momentum m (slot1); Adagrad accumulator (slot1, starts at
 * initial_accumulator_value); RMSprop velocity (slot1) and momentum (slot2);
 * Adam/Nadam m (slot1) and v (slot2), amsgrad's v_hat (slot3); Adamax m and
 * u; Adadelta accumulated grad and accumulated delta; Lion m; Ftrl
 * accumulator (starts at initial_accumulator_value) and linear; Adafactor
 * r [rows], c [cols] (kernels only) and v (slot3).
 *
 * Two paths. Fused: the update of each finished gradient tile inside the
 * dW product (cdnn_opt_update, elementwise options only: weight decay,
 * clipvalue). Whole-gradient: after every gradient of the step is complete,
 * cdnn_opt_prepare_grad then cdnn_opt_apply_var per variable, for options
 * that read a whole variable (norms, Adafactor's means, constraints).
 */
#include "cdnn.h"

#include <math.h>

int cdnn_opt_needs_whole(const cdnn_opt_params *p)
{
    return p->clipnorm > 0.0f || p->global_clipnorm > 0.0f || p->use_ema || p->accumulation_steps > 1 ||
           (p->kind == CDNN_ADAM && p->amsgrad) || p->kind == CDNN_ADAFACTOR;
}

cdnn_opt_step cdnn_opt_prepare(const cdnn_opt_params *p, long t)
{
    cdnn_opt_step s = {0};
    const long idx = (long)(t - 1 - p->step_base);
    s.t = t;
    s.base_lr = p->step_lr ? p->step_lr[idx] : p->lr;
    s.lr = s.base_lr;
    const float tf = (float)t;
    switch (p->kind) {
    case CDNN_ADAM: {
        /* Keras: alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), t = iterations + 1 */
        float b1p = powf(p->beta_1, tf), b2p = powf(p->beta_2, tf);
        s.lr = s.base_lr * sqrtf(1.0f - b2p) / (1.0f - b1p);
        break;
    }
    case CDNN_NADAM: {
        s.a = p->beta_1 * (1.0f - 0.5f * powf(0.96f, tf));        /* u_t */
        s.b = p->beta_1 * (1.0f - 0.5f * powf(0.96f, tf + 1.0f)); /* u_{t+1} */
        if (p->step_aux) {
            s.c = p->step_aux[idx]; /* u_product_t (includes u_t) */
        } else {                    /* without the run's products: the product of every step's factor */
            float u = 1.0f;
            for (long k = 1; k <= t; k++) u *= p->beta_1 * (1.0f - 0.5f * powf(0.96f, (float)k));
            s.c = u;
        }
        s.d = powf(p->beta_2, tf);
        break;
    }
    case CDNN_ADAMAX:
        s.a = 1.0f - powf(p->beta_1, tf);
        break;
    case CDNN_ADAFACTOR: {
        float lr = s.base_lr, inv = 1.0f / sqrtf(tf);
        if (p->relative_step && inv < lr) lr = inv;
        s.a = lr < inv ? lr : inv;              /* rho_t */
        s.b = 1.0f - powf(tf, p->beta_2_decay); /* beta_2_t */
        s.lr = lr;
        break;
    }
    default:
        break;
    }
    return s;
}

/* The update of n contiguous parameters for the original four optimizers without options (inlined
 * into each vector clone of its callers: the plain path stays as fast as it was). */
__attribute__((always_inline)) static inline void update_run(const cdnn_opt_params *p, cdnn_opt_step s,
                                                             float *restrict w, float *restrict slot1,
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

static inline float clip_value(float g, float v)
{
    return v > 0.0f ? (g < -v ? -v : (g > v ? v : g)) : g;
}

static inline float signf(float x)
{
    return (float)((x > 0.0f) - (x < 0.0f));
}

/* One parameter's update for any elementwise optimizer, with clipvalue and decoupled weight decay
 * applied first (Keras' base optimizer: clip the gradient, w -= w*wd*lr, then update_step). */
__attribute__((always_inline)) static inline void update_one(const int kind, const cdnn_opt_params *p,
                                                             const cdnn_opt_step *s, float *restrict w,
                                                             float *restrict s1, float *restrict s2, float *restrict s3,
                                                             const float *restrict gp, long i)
{
    const float g = clip_value(gp[i], p->clipvalue), lr = s->lr, eps = p->epsilon;
    float wi = w[i];
    if (p->weight_decay != 0.0f) wi = wi - wi * p->weight_decay * s->base_lr;
    switch (kind) {
    case CDNN_SGD:
        if (p->momentum == 0.0f) {
            wi -= g * lr;
        } else {
            float m = -g * lr + s1[i] * p->momentum;
            s1[i] = m;
            wi += p->nesterov ? -g * lr + m * p->momentum : m;
        }
        break;
    case CDNN_ADAGRAD: {
        float a = s1[i] + g * g;
        s1[i] = a;
        wi -= (lr * g) / sqrtf(a + eps);
        break;
    }
    case CDNN_RMSPROP: {
        float v = p->rho * s1[i] + (1.0f - p->rho) * (g * g);
        s1[i] = v;
        float inc = (lr * g) / sqrtf(v + eps);
        if (p->momentum > 0.0f) {
            inc = p->momentum * s2[i] + inc;
            s2[i] = inc;
        }
        wi -= inc;
        break;
    }
    case CDNN_ADAM: {
        float m = s1[i] + (g - s1[i]) * (1.0f - p->beta_1);
        float v = s2[i] + (g * g - s2[i]) * (1.0f - p->beta_2);
        s1[i] = m;
        s2[i] = v;
        if (p->amsgrad) {
            v = s3[i] > v ? s3[i] : v;
            s3[i] = v;
        }
        wi -= (m * lr) / (sqrtf(v) + eps);
        break;
    }
    case CDNN_NADAM: {
        const float u_t = s->a, u_t1 = s->b, up_t = s->c, up_t1 = s->c * s->b;
        float m = s1[i] + (g - s1[i]) * (1.0f - p->beta_1);
        float v = s2[i] + (g * g - s2[i]) * (1.0f - p->beta_2);
        s1[i] = m;
        s2[i] = v;
        float m_hat = (u_t1 * m) / (1.0f - up_t1) + ((1.0f - u_t) * g) / (1.0f - up_t);
        float v_hat = v / (1.0f - s->d);
        wi -= (m_hat * lr) / (sqrtf(v_hat) + eps);
        break;
    }
    case CDNN_ADAMAX: {
        float m = s1[i] + (g - s1[i]) * (1.0f - p->beta_1);
        float u = p->beta_2 * s2[i], ag = fabsf(g);
        u = u > ag ? u : ag;
        s1[i] = m;
        s2[i] = u;
        wi -= (lr * m) / (s->a * (u + eps));
        break;
    }
    case CDNN_ADADELTA: {
        const float rho = p->rho;
        float ag = rho * s1[i] + (1.0f - rho) * (g * g);
        s1[i] = ag;
        float delta = -((sqrtf(s2[i] + eps) * g) / sqrtf(ag + eps));
        s2[i] = rho * s2[i] + (1.0f - rho) * (delta * delta);
        wi += lr * delta;
        break;
    }
    case CDNN_LION: {
        wi -= lr * signf(s1[i] * p->beta_1 + g * (1.0f - p->beta_1));
        s1[i] = s1[i] * p->beta_2 + g * (1.0f - p->beta_2);
        break;
    }
    case CDNN_FTRL: {
        const float l2_reg = p->l2 + p->beta / (2.0f * lr);
        const float gtu = g + 2.0f * p->l2_shrinkage * wi;
        const float acc = s1[i], new_acc = acc + g * g;
        const float pn = powf(new_acc, -p->lr_power), po = powf(acc, -p->lr_power);
        float lin = s2[i] + (gtu - ((pn - po) / lr) * wi);
        s2[i] = lin;
        float quad = pn / lr + 2.0f * l2_reg;
        float lc = lin < -p->l1 ? -p->l1 : (lin > p->l1 ? p->l1 : lin);
        wi = (lc - lin) / quad;
        s1[i] = new_acc;
        break;
    }
    default:
        break;
    }
    w[i] = wi;
}

/* Any optimizer with options, n contiguous parameters (slot pointers may be NULL where the kind does not
 * read them): one loop per kind, so that each is compiled for its own kind. */
static void update_general(const cdnn_opt_params *p, cdnn_opt_step s, float *w, float *s1, float *s2, float *s3,
                           const float *g, long n)
{
#define CDNN_UPDATE_LOOP(K)                                                                                            \
    for (long i = 0; i < n; i++) update_one(K, p, &s, w, s1, s2, s3, g, i)
    switch (p->kind) {
    case CDNN_SGD:
        CDNN_UPDATE_LOOP(CDNN_SGD);
        break;
    case CDNN_ADAGRAD:
        CDNN_UPDATE_LOOP(CDNN_ADAGRAD);
        break;
    case CDNN_RMSPROP:
        CDNN_UPDATE_LOOP(CDNN_RMSPROP);
        break;
    case CDNN_ADAM:
        CDNN_UPDATE_LOOP(CDNN_ADAM);
        break;
    case CDNN_NADAM:
        CDNN_UPDATE_LOOP(CDNN_NADAM);
        break;
    case CDNN_ADAMAX:
        CDNN_UPDATE_LOOP(CDNN_ADAMAX);
        break;
    case CDNN_ADADELTA:
        CDNN_UPDATE_LOOP(CDNN_ADADELTA);
        break;
    case CDNN_LION:
        CDNN_UPDATE_LOOP(CDNN_LION);
        break;
    case CDNN_FTRL:
        CDNN_UPDATE_LOOP(CDNN_FTRL);
        break;
    default:
        break;
    }
#undef CDNN_UPDATE_LOOP
}

static int plain(const cdnn_opt_params *p)
{
    return p->kind <= CDNN_ADAM && !p->amsgrad && p->weight_decay == 0.0f && p->clipvalue == 0.0f;
}

CDNN_VECTOR_CLONES
static void cdnn_opt_update_cloned(const cdnn_opt_params *p, cdnn_opt_step s, float *restrict w, float *restrict slot1,
                                   float *restrict slot2, const float *restrict g, long n)
{
    if (p->kind == CDNN_OPT_NONE) return;
    if (plain(p))
        update_run(p, s, w, slot1, slot2, g, n);
    else
        update_general(p, s, w, slot1, slot2, NULL, g, n);
}

void cdnn_opt_update(const cdnn_opt_params *p, cdnn_opt_step s, float *restrict w, float *restrict slot1,
                     float *restrict slot2, const float *restrict g, long n)
{
    cdnn_opt_update_cloned(p, s, w, slot1, slot2, g, n);
}

CDNN_VECTOR_CLONES
static void cdnn_opt_update_panels_cloned(const cdnn_opt_params *p, cdnn_opt_step s, float *w, int off0, int chunk,
                                          long wstride, float *slot1, float *slot2, const float *g, long n)
{
    if (p->kind == CDNN_OPT_NONE) return;
    const int fast = plain(p);
    for (long done = 0; done < n; w += wstride) {
        long len = chunk - off0 < n - done ? chunk - off0 : n - done;
        if (fast)
            update_run(p, s, w + off0, slot1 ? slot1 + done : NULL, slot2 ? slot2 + done : NULL, g + done, len);
        else
            update_general(p, s, w + off0, slot1 ? slot1 + done : NULL, slot2 ? slot2 + done : NULL, NULL, g + done,
                           len);
        done += len;
        off0 = 0;
    }
}

void cdnn_opt_update_panels(const cdnn_opt_params *p, cdnn_opt_step s, float *w, int off0, int chunk, long wstride,
                            float *slot1, float *slot2, const float *g, long n)
{
    cdnn_opt_update_panels_cloned(p, s, w, off0, chunk, wstride, slot1, slot2, g, n);
}

/* ---- the whole-gradient path ------------------------------------------- */

static int update_step_of(const cdnn_opt_params *p, int64_t t)
{
    return p->accumulation_steps <= 1 || t % p->accumulation_steps == 0;
}

/* Keras' OrthogonalRegularizer (keras/src/regularizers/regularizers.py) of a rows x cols kernel: its penalty
 * factor * 0.5 * sum over i != j of |n_i . n_j| / (s (s - 1) / 2), the n_i its rows (or columns) normalized as
 * keras.ops.normalize does (x * rsqrt(max(|x|^2, 1e-14))), and its gradient added to g. Serial, in a fixed
 * order: d(penalty)/dn_i = 2c sum_j sign(n_i . n_j) n_j (c = factor * 0.5 / pairs), then through the
 * normalization, dn/dw = (I - n n^T) / |w| (1/|w| alone where the norm is clamped). */
static double orthogonal(const cdnn_param_rules *r, const float *w, float *g, long rows, long cols)
{
    const int by_rows = r->orth_mode == 0;
    const long s = by_rows ? rows : cols, d = by_rows ? cols : rows;
    const long vstride = by_rows ? cols : 1, estride = by_rows ? 1 : cols; /* element e of vector i */
    float *N = r->orth_scratch, *G = N + s * d, *inv = G + s * d;
    for (long i = 0; i < s; i++) {
        double q = 0.0;
        for (long e = 0; e < d; e++) q += (double)w[i * vstride + e * estride] * w[i * vstride + e * estride];
        const float qf = (float)q;
        inv[i] = 1.0f / sqrtf(qf > 1e-14f ? qf : 1e-14f);
        for (long e = 0; e < d; e++) {
            N[i * d + e] = w[i * vstride + e * estride] * inv[i];
            G[i * d + e] = 0.0f;
        }
        if (!(qf > 1e-14f)) inv[i] = -inv[i]; /* marks a clamped norm */
    }
    double total = 0.0;
    for (long i = 0; i < s; i++)
        for (long j = i + 1; j < s; j++) {
            double m = 0.0;
            for (long e = 0; e < d; e++) m += (double)N[i * d + e] * N[j * d + e];
            total += fabs(m);
            const float sg = (float)((m > 0.0) - (m < 0.0));
            if (sg == 0.0f) continue;
            for (long e = 0; e < d; e++) {
                G[i * d + e] += sg * N[j * d + e];
                G[j * d + e] += sg * N[i * d + e];
            }
        }
    const double pairs = (double)s * (s - 1.0) / 2.0;
    const float two_c = (float)(r->orth_factor / pairs); /* 2 * factor * 0.5 / pairs */
    for (long i = 0; i < s; i++) {
        const int clamped = inv[i] < 0.0f;
        const float iv = clamped ? -inv[i] : inv[i];
        double dot = 0.0;
        if (!clamped)
            for (long e = 0; e < d; e++) dot += (double)N[i * d + e] * G[i * d + e];
        for (long e = 0; e < d; e++)
            g[i * vstride + e * estride] += two_c * iv * (G[i * d + e] - (float)dot * N[i * d + e]);
    }
    /* each unordered pair counted once above: the sum over i != j is twice it */
    return r->orth_factor * 0.5 * (2.0 * total) / pairs;
}

double cdnn_opt_prepare_grad(const cdnn_opt_params *p, cdnn_opt_step s, const cdnn_param_rules *r, const float *w,
                             float *g, cdnn_var_slots sl, long rows, long cols, double *penalty)
{
    const long n = rows * cols;
    double pen = 0.0;
    if (r && r->orth_factor != 0.0f) pen += orthogonal(r, w, g, rows, cols);
    if (r && (r->l1 != 0.0f || r->l2 != 0.0f)) {
        /* Keras adds the penalty to the loss: its gradient l1*sign(w) + 2*l2*w joins the loss's */
        double a = 0.0, q = 0.0;
        for (long i = 0; i < n; i++) {
            a += fabs((double)w[i]);
            q += (double)w[i] * w[i];
            g[i] += r->l1 * signf(w[i]) + 2.0f * r->l2 * w[i];
        }
        pen += (double)r->l1 * a + (double)r->l2 * q;
    }
    *penalty = pen;
    if (p->accumulation_steps > 1) {
        if (!update_step_of(p, s.t)) {
            for (long i = 0; i < n; i++) sl.acc[i] += g[i];
            return 0.0;
        }
        const float steps = (float)p->accumulation_steps;
        for (long i = 0; i < n; i++) {
            g[i] = (g[i] + sl.acc[i]) / steps;
            sl.acc[i] = 0.0f;
        }
    }
    double ss = 0.0;
    if (p->clipnorm > 0.0f || p->global_clipnorm > 0.0f)
        for (long i = 0; i < n; i++) ss += (double)g[i] * g[i];
    return ss;
}

static double mean_sq(const float *x, long n)
{
    double q = 0.0;
    for (long i = 0; i < n; i++) q += (double)x[i] * x[i];
    return n ? q / n : 0.0;
}

/* Adafactor's update_step (keras/src/optimizers/adafactor.py) for a rows x cols variable: factored
 * second moments r (per row) and c (per column) for a kernel, a full v for a bias (sl.s1 == NULL). */
static void adafactor_var(const cdnn_opt_params *p, cdnn_opt_step s, float *w, const float *g, cdnn_var_slots sl,
                          long rows, long cols)
{
    const long n = rows * cols;
    const float rho_t = s.a, b2t = s.b, eps1 = p->epsilon_1;
    float rms_w = (float)sqrt(mean_sq(w, n));
    const float alpha_t = (p->epsilon_2 > rms_w ? p->epsilon_2 : rms_w) * rho_t;
    float *v = sl.s3;
    float rmean = 1.0f;
    if (sl.s1) {
        double rsum = 0.0;
        for (long i = 0; i < rows; i++) {
            double m = 0.0;
            for (long j = 0; j < cols; j++) m += (double)(g[i * cols + j] * g[i * cols + j] + eps1);
            sl.s1[i] = b2t * sl.s1[i] + (1.0f - b2t) * (float)(m / cols);
            rsum += sl.s1[i];
        }
        rmean = (float)(rsum / rows);
        for (long j = 0; j < cols; j++) {
            double m = 0.0;
            for (long i = 0; i < rows; i++) m += (double)(g[i * cols + j] * g[i * cols + j] + eps1);
            sl.s2[j] = b2t * sl.s2[j] + (1.0f - b2t) * (float)(m / rows);
        }
    } else {
        for (long i = 0; i < n; i++) v[i] = b2t * v[i] + (1.0f - b2t) * (g[i] * g[i] + eps1);
    }
    /* u = g / sqrt(v), v = (r_i / mean r) c_j for a kernel: taken as g / (sqrt(r_i / mean r) sqrt(c_j)), the
     * same number without the product's underflow (a ReLU net's dead row and dead column give 1e-26 * 1e-30,
     * 0 in float32, and 0/0 for their zero gradient, where Keras' float32 gets NaN) */
    float *u = sl.s3; /* v is not read again this step: u takes its place, and v is rewritten below */
    double q = 0.0;
    if (sl.s1) {
        for (long i = 0; i < rows; i++) {
            const float ri = sqrtf(sl.s1[i] / rmean);
            for (long j = 0; j < cols; j++) {
                float x = g[i * cols + j] / (ri * sqrtf(sl.s2[j]));
                u[i * cols + j] = x;
                q += (double)x * x;
            }
        }
    } else {
        for (long i = 0; i < n; i++) {
            float x = g[i] / sqrtf(v[i]);
            q += (double)x * x;
        }
    }
    const float rms_u = (float)sqrt(n ? q / n : 0.0);
    const float denom = 1.0f > rms_u / p->clip_threshold ? 1.0f : rms_u / p->clip_threshold;
    if (sl.s1) {
        for (long i = 0; i < n; i++) w[i] -= alpha_t * (u[i] / denom);
        for (long i = 0; i < rows; i++)
            for (long j = 0; j < cols; j++) v[i * cols + j] = (sl.s1[i] / rmean) * sl.s2[j];
    } else {
        for (long i = 0; i < n; i++) w[i] -= alpha_t * ((g[i] / sqrtf(v[i])) / denom);
    }
}

/* Keras' constraints (keras/src/constraints/constraints.py) on a rows x cols variable, norms over
 * axis 0 (per column) or axis 1 (per row), epsilon 1e-7 as Keras' backend.epsilon(). */
static void constrain(const cdnn_param_rules *r, float *w, long rows, long cols)
{
    if (r->constraint == CDNN_NON_NEG) {
        for (long i = 0; i < rows * cols; i++) w[i] = w[i] > 0.0f ? w[i] : 0.0f;
        return;
    }
    const long groups = r->c_axis == 0 ? cols : rows, len = r->c_axis == 0 ? rows : cols;
    const long gstride = r->c_axis == 0 ? 1 : cols, estride = r->c_axis == 0 ? cols : 1;
    for (long k = 0; k < groups; k++) {
        float *base = w + k * gstride;
        double q = 0.0;
        for (long e = 0; e < len; e++) q += (double)base[e * estride] * base[e * estride];
        const float norm = (float)sqrt(q);
        float f;
        if (r->constraint == CDNN_UNIT_NORM) {
            for (long e = 0; e < len; e++) base[e * estride] = base[e * estride] / (1e-7f + norm);
            continue;
        } else if (r->constraint == CDNN_MAX_NORM) {
            float desired = norm < 0.0f ? 0.0f : (norm > r->c_max ? r->c_max : norm);
            f = desired / (1e-7f + norm);
        } else { /* MinMaxNorm */
            float cl = norm < r->c_min ? r->c_min : (norm > r->c_max ? r->c_max : norm);
            float desired = r->c_rate * cl + (1.0f - r->c_rate) * norm;
            f = desired / (1e-7f + norm);
        }
        for (long e = 0; e < len; e++) base[e * estride] = base[e * estride] * f;
    }
}

void cdnn_opt_apply_var(const cdnn_opt_params *p, cdnn_opt_step s, const cdnn_param_rules *r, float *w, float *g,
                        cdnn_var_slots sl, long rows, long cols, double sumsq, double global_sumsq)
{
    const long n = rows * cols;
    if (update_step_of(p, s.t)) {
        if (p->clipnorm > 0.0f) {
            if (sumsq > 0.0) {
                const float norm = (float)sqrt(sumsq), den = norm > p->clipnorm ? norm : p->clipnorm;
                for (long i = 0; i < n; i++) g[i] = (g[i] * p->clipnorm) / den;
            }
        } else if (p->global_clipnorm > 0.0f) {
            const float gn = (float)sqrt(global_sumsq), c = p->global_clipnorm;
            const float inv = 1.0f / gn < 1.0f / c ? 1.0f / gn : 1.0f / c;
            const float scale = c * inv + (gn - gn); /* NaN for a non-finite norm, as Keras */
            for (long i = 0; i < n; i++) g[i] = g[i] * scale;
        }
        if (p->kind == CDNN_ADAFACTOR) {
            for (long i = 0; i < n; i++) g[i] = clip_value(g[i], p->clipvalue);
            if (p->weight_decay != 0.0f)
                for (long i = 0; i < n; i++) w[i] = w[i] - w[i] * p->weight_decay * s.base_lr;
            adafactor_var(p, s, w, g, sl, rows, cols);
        } else {
            update_general(p, s, w, sl.s1, sl.s2, sl.s3, g, n);
        }
    }
    if (p->use_ema) {
        /* the first step copies w; Keras: momentum = (iterations != 0) * ema_momentum */
        const float mom = s.t > 1 ? p->ema_momentum : 0.0f;
        for (long i = 0; i < n; i++) sl.ema[i] = mom * sl.ema[i] + (1.0f - mom) * w[i];
        if (p->ema_overwrite_frequency > 0 && s.t % p->ema_overwrite_frequency == 0)
            for (long i = 0; i < n; i++) w[i] = sl.ema[i];
    }
    if (r && r->constraint != CDNN_CONSTRAINT_NONE) constrain(r, w, rows, cols);
}
