/* dense.c - the fused Dense layer: forward and backward passes.
 *
 * forward:  Y = act(X W + b)  - one GEMM whose epilogue adds the bias and
 *           applies the activation on each output tile (softmax and log_softmax,
 *           which need whole rows, run row-wise right after). Row-local: a thread
 *           computes its own rows of Y from its own rows of X.
 * backward: given dZ = dL/d(XW + b):
 *           dX = dZ W^T   (only where a layer below needs it; its epilogue
 *                          folds in that layer's activation derivative;
 *                          row-local, like the forward pass),
 *           dW = X^T dZ   (needs every row: split over the team; its epilogue
 *                          may apply the optimizer at once),
 *           db = sum of dZ over rows, in row order.
 */
#include "cdnn.h"

void cdnn_dense_forward_rows(const cdnn_layer *ly, int r0, int r1, const float *x, float *y, float *z,
                             const float *packed_w, float *pack)
{
    cdnn_epilogue e = {0};
    e.kind = CDNN_EPI_BIAS_ACT;
    e.act = cdnn_act_rowwise(ly->act) ? CDNN_LINEAR : ly->act;
    e.act_args = ly->act_args;
    e.bias = ly->b;
    e.aux = z;
    e.ldaux = ly->units;
    cdnn_gemm_rows(0, 0, r0, r1, ly->units, ly->in, x, ly->in, ly->W, ly->units, packed_w, y, ly->units, 0, &e, pack);
    if (cdnn_act_rowwise(ly->act) && r1 > r0)
        cdnn_rowwise_act_rows(ly->act, y + (size_t)r0 * ly->units, ly->units, r1 - r0, ly->units);
}

void cdnn_dense_dx_rows(const cdnn_layer *ly, int r0, int r1, const float *dz, float *dx, const cdnn_epilogue *dx_epi,
                        const float *packed_wt, float *pack)
{
    cdnn_gemm_rows(0, 1, r0, r1, ly->in, ly->units, dz, ly->units, ly->W, ly->units, packed_wt, dx, ly->in, 0, dx_epi,
                   pack);
}

/* The optimizer epilogue of dW: update W and its slots, and the packed copies
 * packed_w/packed_wt (or NULL) holding W's rows [pk0, pk1); with packed_w,
 * W's values are read and written there, and W itself is left as it was. */
static cdnn_epilogue optimize_epilogue(const cdnn_layer *ly, const cdnn_opt_params *opt, cdnn_opt_step st,
                                       float *packed_w, float *packed_wt, int pk0, int pk1)
{
    cdnn_epilogue e = {0};
    e.kind = CDNN_EPI_OPTIMIZE;
    e.aux = ly->W;
    e.ldaux = ly->units;
    e.slot1 = ly->W1;
    e.slot2 = ly->W2;
    e.opt = opt;
    e.step = st;
    e.packed_w = packed_w;
    e.packed_wt = packed_wt;
    e.packed_k = pk1 - pk0;
    e.packed_row0 = pk0;
    e.w_in_packed = packed_w != NULL;
    return e;
}

void cdnn_dense_grads_team(const cdnn_layer *ly, int rows, const float *x, const float *dz, float *dw, float *db,
                           const cdnn_opt_params *opt, cdnn_opt_step st, float *packed_w, float *packed_wt,
                           const float *share, float *pack)
{
    cdnn_epilogue e = {0};
    if (opt) {
        e = optimize_epilogue(ly, opt, st, packed_w, packed_wt, 0, ly->in);
        e.share = share;
    }
    cdnn_gemm_team(1, 0, ly->in, ly->units, rows, x, ly->in, dz, ly->units, dw, ly->units, 0, &e, pack);

    if (db) {
        long lo, hi;
        cdnn_team_range(ly->units, &lo, &hi);
        cdnn_dense_bias_grads(ly, rows, dz, db, opt, st, lo, hi);
    }
}

void cdnn_dense_bias_grads(const cdnn_layer *ly, int rows, const float *dz, float *db, const cdnn_opt_params *opt,
                           cdnn_opt_step st, long j0, long j1)
{
    for (long j = j0; j < j1; j++) db[j] = 0.0f;
    for (int i = 0; i < rows; i++) {
        const float *r = dz + (size_t)i * ly->units;
        for (long j = j0; j < j1; j++) db[j] += r[j];
    }
    if (opt && ly->b)
        cdnn_opt_update(opt, st, ly->b + j0, ly->b1 ? ly->b1 + j0 : NULL, ly->b2 ? ly->b2 + j0 : NULL, db + j0,
                        j1 - j0);
}

void cdnn_dense_grads_rows(const cdnn_layer *ly, int rows, const float *x, int ldx, const float *dz, float *dw,
                           const cdnn_opt_params *opt, cdnn_opt_step st, float *packed_w, float *packed_wt, int pk0,
                           int pk1, int i0, int i1, float *pack, int *next)
{
    const cdnn_epilogue e = optimize_epilogue(ly, opt, st, packed_w, packed_wt, pk0, pk1);
    cdnn_gemm_optimize_rows(1, 0, i0, i1, ly->units, rows, x, ldx, dz, ly->units, dw, ly->units, &e, pack, next);
}

void cdnn_dense_forward(const cdnn_layer *ly, int rows, const float *x, float *y, float *z, float *pack,
                        int max_threads)
{
    int nt = cdnn_get_num_threads();
    if (nt > max_threads) nt = max_threads;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        long lo, hi;
        cdnn_team_range(rows, &lo, &hi);
        cdnn_dense_forward_rows(ly, (int)lo, (int)hi, x, y, z, NULL, pack + cdnn_gemm_pack_floats() * cdnn_team_rank());
    }
}

void cdnn_dense_backward(const cdnn_layer *ly, int rows, const float *x, const float *a, const float *dy, float *dz,
                         float *dw, float *db, float *dx, float *pack, int max_threads)
{
    int nt = cdnn_get_num_threads();
    if (nt > max_threads) nt = max_threads;
    cdnn_opt_step none = {0};
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        long lo, hi;
        cdnn_team_range(rows, &lo, &hi);
        for (long i = lo * ly->units; i < hi * ly->units; i++) dz[i] = dy[i];
        if (cdnn_act_rowwise(ly->act))
            cdnn_rowwise_backward_rows(ly->act, dz + lo * ly->units, ly->units, a + lo * ly->units, ly->units,
                                       (int)(hi - lo), ly->units);
        else
            cdnn_dact_tile(ly->act, ly->act_args, dz + lo * ly->units, ly->units, a + lo * ly->units, ly->units,
                           (int)(hi - lo), ly->units);
        float *my_pack = pack + cdnn_gemm_pack_floats() * cdnn_team_rank();
        if (dx) cdnn_dense_dx_rows(ly, (int)lo, (int)hi, dz, dx, NULL, NULL, my_pack); /* needs only these rows of dz */
        cdnn_team_barrier();
        cdnn_dense_grads_team(ly, rows, x, dz, dw, db, NULL, none, NULL, NULL, NULL, my_pack);
    }
}
