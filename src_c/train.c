/* train.c - the mini-batch training loop and batched inference.
 *
 * One OpenMP parallel region spans a whole run of mini-batches; inside it
 * every step is: gather the batch -> forward (fused GEMM + bias +
 * activation per layer) -> loss and dL/dz -> backward, layer by layer from
 * the top: dX = dZ W^T with the lower layer's activation derivative folded
 * in, then dW = X^T dZ with the optimizer update applied to each finished
 * tile, then db = sum(dZ) and its update. All buffers live in the
 * workspace, allocated once: a step allocates nothing.
 */
#include "cdnn.h"

#include <stdlib.h>
#include <string.h>

/* Below this many flops per step a run stays on one thread: a step this
 * small takes a few microseconds, about what the barriers would cost. */
#define TRAIN_SERIAL_FLOPS 400000L

typedef struct {
    float *din;   /* this layer's input after dropout [B, in] (layer 0: the gathered batch) */
    float *act;   /* output a [B, units] */
    float *z;     /* pre-activation [B, units] where needed (gelu, last layer), else NULL */
    float *dz;    /* dL/dz [B, units] */
    float *dw;    /* dL/dW tile buffer [in, units] */
    float *db;    /* dL/db [units] */
} layer_buf;

struct cdnn_workspace {
    int max_batch, threads, n_layers;
    layer_buf *lb;
    int32_t *rows;      /* dataset row of each batch row (dropout keys) */
    int32_t *ys;        /* gathered sparse labels */
    float *yd;          /* gathered dense labels */
    double *row_loss, *row_correct;
    float *pack;        /* threads x cdnn_gemm_pack_floats() */
    size_t pack_per;
    void *block;        /* the one allocation the pointers above point into */
};

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

cdnn_workspace *cdnn_workspace_new(const cdnn_net *net, int max_batch, int threads)
{
    int L = net->n_layers, B = max_batch;
    int out_units = net->layers[L - 1].units;
    size_t floats = 0;
    size_t pack_per = cdnn_gemm_pack_floats();
    if (threads < 1) threads = 1;
    for (int l = 0; l < L; l++) {
        const cdnn_layer *ly = &net->layers[l];
        if (l == 0 || ly->in_drop > 0.0f) floats += round16((size_t)B * ly->in);
        floats += 2 * round16((size_t)B * ly->units);
        if (ly->act == CDNN_GELU || l == L - 1) floats += round16((size_t)B * ly->units);
        floats += round16((size_t)ly->in * ly->units) + round16(ly->units);
    }
    floats += round16((size_t)B * out_units) + round16(B) * 2; /* yd, rows, ys */
    floats += pack_per * threads;
    size_t bytes = floats * sizeof(float) + 2 * round16(B) * sizeof(double) + (size_t)L * sizeof(layer_buf) + 64;

    cdnn_workspace *ws = (cdnn_workspace *)calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->block = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ws->block) {
        free(ws);
        return NULL;
    }
    memset(ws->block, 0, (bytes + 63) / 64 * 64);
    ws->max_batch = B;
    ws->threads = threads;
    ws->n_layers = L;
    ws->pack_per = pack_per;

    /* carve: doubles first (8-byte aligned), then 64-byte aligned float arrays */
    char *p = (char *)ws->block;
    ws->row_loss = (double *)p; p += round16(B) * sizeof(double);
    ws->row_correct = (double *)p; p += round16(B) * sizeof(double);
    ws->lb = (layer_buf *)p; p += (size_t)L * sizeof(layer_buf);
    p = (char *)(((uintptr_t)p + 63) & ~(uintptr_t)63);
    float *f = (float *)p;
#define TAKE(n) (f += round16(n), f - round16(n))
    ws->pack = TAKE(pack_per * threads);
    for (int l = 0; l < L; l++) {
        const cdnn_layer *ly = &net->layers[l];
        layer_buf *b = &ws->lb[l];
        b->din = (l == 0 || ly->in_drop > 0.0f) ? TAKE((size_t)B * ly->in) : ws->lb[l - 1].act;
        b->act = TAKE((size_t)B * ly->units);
        b->dz = TAKE((size_t)B * ly->units);
        b->z = (ly->act == CDNN_GELU || l == L - 1) ? TAKE((size_t)B * ly->units) : NULL;
        b->dw = TAKE((size_t)ly->in * ly->units);
        b->db = TAKE(ly->units);
    }
    ws->yd = TAKE((size_t)B * out_units);
    ws->rows = (int32_t *)TAKE(B);
    ws->ys = (int32_t *)TAKE(B);
#undef TAKE
    return ws;
}

void cdnn_workspace_free(cdnn_workspace *ws)
{
    if (!ws) return;
    free(ws->block);
    free(ws);
}

static long step_flops(const cdnn_net *net, int batch)
{
    long f = 0;
    for (int l = 0; l < net->n_layers; l++) f += 6L * batch * net->layers[l].in * net->layers[l].units;
    return f;
}

static uint64_t dropout_key(uint64_t seed, int64_t step, int layer)
{
    uint64_t k = seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(step + 1));
    return k ^ (0xD1B54A32D192ED03ULL * (uint64_t)(layer + 1));
}

/* Forward pass of `rows` rows whose input is in lb[0].din (or X directly for
 * inference); the last layer's output goes to `out` (row stride units). */
static void forward_team(const cdnn_net *net, cdnn_workspace *ws, const float *x, int rows,
                         float *out, int training, uint64_t seed, int64_t step)
{
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    const float *in = x;
    for (int l = 0; l < net->n_layers; l++) {
        const cdnn_layer *ly = &net->layers[l];
        layer_buf *b = &ws->lb[l];
        if (training && l > 0 && ly->in_drop > 0.0f) {
            /* dropout on the previous layer's output, into this layer's input buffer */
            long lo, hi;
            uint64_t key = dropout_key(seed, step, l);
            cdnn_team_range(rows, &lo, &hi);
            for (long i = lo; i < hi; i++)
                for (int j = 0; j < ly->in; j++)
                    b->din[i * ly->in + j] = in[i * ly->in + j] * cdnn_dropout_factor(key, ws->rows[i], j, ly->in_drop);
            cdnn_team_barrier();
            in = b->din;
        }
        float *y = l == net->n_layers - 1 && out ? out : b->act;
        cdnn_dense_forward_team(ly, rows, in, y, b->z, pack);
        in = y;
    }
}

static void train_step_team(const cdnn_net *net, cdnn_workspace *ws, int rows, int64_t t,
                            uint64_t seed)
{
    const int L = net->n_layers;
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    const cdnn_layer *top = &net->layers[L - 1];
    const int ldy = top->units;
    cdnn_opt_step st = cdnn_opt_prepare(&net->opt, t);

    forward_team(net, ws, ws->lb[0].din, rows, NULL, 1, seed, t);
    cdnn_loss_team(net->loss, net->metric, top->act, top->alpha, net->from_logits, rows, top->units,
                   ws->lb[L - 1].act, ws->lb[L - 1].z, net->loss == CDNN_SPARSE_CCE ? ws->ys : NULL,
                   net->loss == CDNN_SPARSE_CCE ? NULL : ws->yd, ldy, rows, ws->lb[L - 1].dz,
                   ws->row_loss, ws->row_correct);

    for (int l = L - 1; l >= 0; l--) {
        const cdnn_layer *ly = &net->layers[l];
        layer_buf *b = &ws->lb[l];
        /* below the first layer nothing needs dX */
        float *dx = l > 0 ? ws->lb[l - 1].dz : NULL;
        cdnn_epilogue e = {0};
        if (l > 0) {
            /* fold the dropout mask and the lower activation's derivative into dX */
            const cdnn_layer *lower = &net->layers[l - 1];
            e.kind = CDNN_EPI_DACT;
            e.act = lower->act == CDNN_SOFTMAX ? CDNN_LINEAR : lower->act;
            e.alpha = lower->alpha;
            e.aux = lower->act == CDNN_GELU ? ws->lb[l - 1].z : ws->lb[l - 1].act;
            e.ldaux = lower->units;
            e.drop_rate = ly->in_drop;
            e.drop_seed = dropout_key(seed, t, l);
            e.drop_rows = ws->rows;
        }
        cdnn_dense_backward_team(ly, rows, b->din, b->dz, dx, &e, b->dw, ly->b ? b->db : NULL, &net->opt, st, pack);
        if (l > 0 && net->layers[l - 1].act == CDNN_SOFTMAX) {
            /* softmax's derivative needs whole rows: after the product */
            long lo, hi;
            cdnn_team_range(rows, &lo, &hi);
            cdnn_softmax_backward_rows(dx + lo * ly->in, ly->in, ws->lb[l - 1].act + lo * ly->in, ly->in,
                                       (int)(hi - lo), ly->in);
            cdnn_team_barrier();
        }
    }
}

int cdnn_train_run(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n,
                   const int32_t *ysparse, const float *ydense, int ldy,
                   const int32_t *perm, int64_t first, int n_batches, int bs,
                   int64_t step0, uint64_t seed, double *batch_loss, double *batch_correct, int threads)
{
    const int in = net->layers[0].in;
    const float drop0 = net->layers[0].in_drop;
    int nt = threads > 0 ? threads : cdnn_get_num_threads();
    if (nt > ws->threads) nt = ws->threads;
    if (step_flops(net, bs) < TRAIN_SERIAL_FLOPS) nt = 1;
    (void)n;

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
    unsigned fp_state = cdnn_flush_denormals_begin();
    for (int j = 0; j < n_batches; j++) {
        int64_t start = (first + j) * (int64_t)bs;
        int rows = (int)(n - start < bs ? n - start : bs);
        int64_t t = step0 + j + 1;
        long lo, hi;
        /* gather the batch (and its labels), with input dropout if any */
        cdnn_team_range(rows, &lo, &hi);
        uint64_t key = dropout_key(seed, t, 0);
        for (long i = lo; i < hi; i++) {
            int32_t r = perm[start + i];
            const float *src = X + (size_t)r * in;
            float *dst = ws->lb[0].din + (size_t)i * in;
            if (drop0 > 0.0f)
                for (int k = 0; k < in; k++) dst[k] = src[k] * cdnn_dropout_factor(key, r, k, drop0);
            else
                memcpy(dst, src, (size_t)in * sizeof(float));
            ws->rows[i] = r;
            if (ysparse)
                ws->ys[i] = ysparse[r];
            else
                memcpy(ws->yd + (size_t)i * ldy, ydense + (size_t)r * ldy, (size_t)ldy * sizeof(float));
        }
        cdnn_team_barrier();
        train_step_team(net, ws, rows, t, seed);
        if (cdnn_team_rank() == 0) {
            double l = 0.0, c = 0.0;
            for (int i = 0; i < rows; i++) {
                l += ws->row_loss[i];
                c += ws->row_correct[i];
            }
            batch_loss[j] = l;
            batch_correct[j] = c;
        }
        cdnn_team_barrier();
    }
    cdnn_flush_denormals_end(fp_state);
    }
    return 0;
}

void cdnn_predict(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n,
                  float *out, const int32_t *ysparse, const float *ydense, int ldy,
                  double *loss_sum, double *correct_sum)
{
    const int L = net->n_layers, in = net->layers[0].in, units = net->layers[L - 1].units;
    const int bs = ws->max_batch;
    int nt = cdnn_get_num_threads();
    if (nt > ws->threads) nt = ws->threads;
    if (step_flops(net, bs) < 3 * TRAIN_SERIAL_FLOPS) nt = 1;
    double ls = 0.0, cs = 0.0;

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
    unsigned fp_state = cdnn_flush_denormals_begin();
    for (int64_t start = 0; start < n; start += bs) {
        int rows = (int)(n - start < bs ? n - start : bs);
        float *o = out + (size_t)start * units;
        forward_team(net, ws, X + (size_t)start * in, rows, o, 0, 0, 0);
        if (loss_sum) {
            const cdnn_layer *top = &net->layers[L - 1];
            cdnn_loss_team(net->loss, net->metric, top->act, top->alpha, net->from_logits, rows, units, o,
                           ws->lb[L - 1].z, ysparse ? ysparse + start : NULL,
                           ydense ? ydense + (size_t)start * ldy : NULL, ldy, rows, NULL,
                           ws->row_loss, ws->row_correct);
            if (cdnn_team_rank() == 0)
                for (int i = 0; i < rows; i++) {
                    ls += ws->row_loss[i];
                    cs += ws->row_correct[i];
                }
            cdnn_team_barrier();
        }
    }
    cdnn_flush_denormals_end(fp_state);
    }
    if (loss_sum) {
        *loss_sum = ls;
        *correct_sum = cs;
    }
}
