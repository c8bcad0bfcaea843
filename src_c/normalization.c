/* normalization.c - BatchNormalization and LayerNormalization on the last
 * axis, forward and backward, with Keras 3's formulas
 * (keras/src/layers/normalization/batch_normalization.py,
 * layer_normalization.py): xhat = (x - mean) / sqrt(var + epsilon) with the
 * biased variance, y = xhat * gamma + beta.
 *
 * BatchNormalization's statistics in training are column reductions over
 * every row of the batch: the team splits the columns, and each column is
 * summed by one thread in row order (in double), so they do not depend on
 * the number of threads. LayerNormalization's are per row: row-local.
 * RMSNormalization (x / sqrt(mean(x^2) + epsilon) * scale) and
 * UnitNormalization (x * min(1 / ||x||, 1 / epsilon), Keras' ops.normalize)
 * are per row too.
 */
#include "graph.h"

#include <math.h>

void cdnn_col_moments_team(const float *x, int rows, int width, float eps, float *mean, float *var, float *inv_std)
{
    long lo, hi;
    cdnn_team_range(width, &lo, &hi);
    /* double sums of a block of columns at a time, on the stack: the workspace holds float statistics */
    enum { BLK = 256 };
    double s[BLK];
    for (long c0 = lo; c0 < hi; c0 += BLK) {
        const int nc = (int)(hi - c0 < BLK ? hi - c0 : BLK);
        for (int j = 0; j < nc; j++) s[j] = 0.0;
        for (long i = 0; i < rows; i++) {
            const float *xi = x + (size_t)i * width + c0;
            for (int j = 0; j < nc; j++) s[j] += xi[j];
        }
        for (int j = 0; j < nc; j++) mean[c0 + j] = (float)(s[j] / rows);
        for (int j = 0; j < nc; j++) s[j] = 0.0;
        for (long i = 0; i < rows; i++) {
            const float *xi = x + (size_t)i * width + c0;
            for (int j = 0; j < nc; j++) {
                const double d = (double)xi[j] - mean[c0 + j];
                s[j] += d * d;
            }
        }
        for (int j = 0; j < nc; j++) {
            var[c0 + j] = (float)(s[j] / rows);
            inv_std[c0 + j] = (float)(1.0 / sqrt(s[j] / rows + eps));
        }
    }
}

void cdnn_batchnorm_fixed_stats(int width, const float *moving_var, float eps, float *inv_std)
{
    for (int j = 0; j < width; j++) inv_std[j] = (float)(1.0 / sqrt((double)moving_var[j] + eps));
}

void cdnn_batchnorm_tile(const float *x, int ldx, float *y, int ldy, int rows, int cols, const float *mean,
                         const float *inv_std, const float *gamma, const float *beta)
{
    for (long i = 0; i < rows; i++) {
        const float *xi = x + (size_t)i * ldx;
        float *yi = y + (size_t)i * ldy;
        for (int j = 0; j < cols; j++) {
            float v = (xi[j] - mean[j]) * inv_std[j];
            if (gamma) v *= gamma[j];
            if (beta) v += beta[j];
            yi[j] = v;
        }
    }
}

void cdnn_norm_sums_team(const float *x, const float *g, int rows, int width, const float *mean, const float *inv_std,
                         int row_stats, float *sum_g, float *sum_gx)
{
    long lo, hi;
    cdnn_team_range(width, &lo, &hi);
    enum { BLK = 256 };
    double sg[BLK], sx[BLK];
    for (long c0 = lo; c0 < hi; c0 += BLK) {
        const int nc = (int)(hi - c0 < BLK ? hi - c0 : BLK);
        for (int j = 0; j < nc; j++) sg[j] = sx[j] = 0.0;
        for (long i = 0; i < rows; i++) {
            const float *xi = x + (size_t)i * width + c0, *gi = g + (size_t)i * width + c0;
            if (row_stats) {
                const float m = mean[i], s = inv_std[i];
                for (int j = 0; j < nc; j++) {
                    sg[j] += gi[j];
                    sx[j] += (double)gi[j] * ((xi[j] - m) * s);
                }
            } else {
                for (int j = 0; j < nc; j++) {
                    sg[j] += gi[j];
                    sx[j] += (double)gi[j] * ((xi[j] - mean[c0 + j]) * inv_std[c0 + j]);
                }
            }
        }
        for (int j = 0; j < nc; j++) {
            sum_g[c0 + j] = (float)sg[j];
            sum_gx[c0 + j] = (float)sx[j];
        }
    }
}

void cdnn_batchnorm_backward_rows(int r0, int r1, int rows, int width, const float *x, const float *g,
                                  const float *mean, const float *inv_std, const float *gamma, const float *sum_g,
                                  const float *sum_gx, float *dx, int acc)
{
    /* dx = gamma * inv_std * (g - mean(g) - xhat * mean(g * xhat)) */
    const float inv_n = 1.0f / (float)rows;
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * width, *gi = g + (size_t)i * width;
        float *di = dx + (size_t)i * width;
        for (int j = 0; j < width; j++) {
            const float xh = (xi[j] - mean[j]) * inv_std[j];
            const float k = (gamma ? gamma[j] : 1.0f) * inv_std[j];
            const float d = k * (gi[j] - sum_g[j] * inv_n - xh * (sum_gx[j] * inv_n));
            di[j] = acc ? di[j] + d : d;
        }
    }
}

void cdnn_batchnorm_backward_fixed_rows(int r0, int r1, int width, const float *g, const float *inv_std,
                                        const float *gamma, float *dx, int acc)
{
    for (long i = r0; i < r1; i++) {
        const float *gi = g + (size_t)i * width;
        float *di = dx + (size_t)i * width;
        for (int j = 0; j < width; j++) {
            const float d = gi[j] * inv_std[j] * (gamma ? gamma[j] : 1.0f);
            di[j] = acc ? di[j] + d : d;
        }
    }
}

void cdnn_layernorm_rows(int r0, int r1, int width, float eps, const float *x, const float *gamma, const float *beta,
                         float *mean, float *inv_std, float *y)
{
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * width;
        float *yi = y + (size_t)i * width;
        double s = 0.0, v = 0.0;
        for (int j = 0; j < width; j++) s += xi[j];
        const double m = s / width;
        for (int j = 0; j < width; j++) v += ((double)xi[j] - m) * ((double)xi[j] - m);
        const float mf = (float)m, is = (float)(1.0 / sqrt(v / width + eps));
        mean[i] = mf;
        inv_std[i] = is;
        for (int j = 0; j < width; j++) {
            float o = (xi[j] - mf) * is;
            if (gamma) o *= gamma[j];
            if (beta) o += beta[j];
            yi[j] = o;
        }
    }
}

void cdnn_layernorm_backward_rows(int r0, int r1, int width, const float *x, const float *g, const float *mean,
                                  const float *inv_std, const float *gamma, float *dx, int acc)
{
    /* with gh = g * gamma: dx = inv_std * (gh - mean(gh) - xhat * mean(gh * xhat)) over the row */
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * width, *gi = g + (size_t)i * width;
        float *di = dx + (size_t)i * width;
        const float m = mean[i], s = inv_std[i];
        double a = 0.0, b = 0.0;
        for (int j = 0; j < width; j++) {
            const float gh = gamma ? gi[j] * gamma[j] : gi[j];
            a += gh;
            b += (double)gh * ((xi[j] - m) * s);
        }
        const float ma = (float)(a / width), mb = (float)(b / width);
        for (int j = 0; j < width; j++) {
            const float gh = gamma ? gi[j] * gamma[j] : gi[j];
            const float d = s * (gh - ma - (xi[j] - m) * s * mb);
            di[j] = acc ? di[j] + d : d;
        }
    }
}

void cdnn_rownorm_rows(int r0, int r1, int width, float eps, int rms, const float *x, const float *gamma, float *inv,
                       float *y)
{
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * width;
        double s = 0.0;
        for (int j = 0; j < width; j++) s += (double)xi[j] * xi[j];
        const float r = (float)(rms ? 1.0 / sqrt(s / width + eps) : fmin(1.0 / sqrt(s), 1.0 / eps));
        inv[i] = r;
        if (!y) continue;
        float *yi = y + (size_t)i * width;
        for (int j = 0; j < width; j++) yi[j] = gamma ? xi[j] * r * gamma[j] : xi[j] * r;
    }
}

void cdnn_rownorm_backward_rows(int r0, int r1, int width, float eps, int rms, const float *x, const float *g,
                                const float *inv, const float *gamma, float *dx, int acc)
{
    /* y = x * r * gamma, r a function of sum(x^2): with gh = g * gamma, dx = r * (gh - x * k * sum(gh * x)),
     * k = r^2 / width (rms) or r^2 (L2; 0 where r is capped at 1 / eps: a constant there) */
    const float cap = (float)(1.0 / eps);
    for (long i = r0; i < r1; i++) {
        const float *xi = x + (size_t)i * width, *gi = g + (size_t)i * width;
        float *di = dx + (size_t)i * width;
        const float r = inv[i], k = rms ? r * r / width : (r < cap ? r * r : 0.0f);
        double b = 0.0;
        for (int j = 0; j < width; j++) b += (double)(gamma ? gi[j] * gamma[j] : gi[j]) * xi[j];
        const float kb = k * (float)b;
        for (int j = 0; j < width; j++) {
            const float d = r * ((gamma ? gi[j] * gamma[j] : gi[j]) - xi[j] * kb);
            di[j] = acc ? di[j] + d : d;
        }
    }
}
