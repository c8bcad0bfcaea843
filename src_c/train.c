/* train.c - the mini-batch training loop and batched inference.
 *
 * One OpenMP parallel region spans a whole run of mini-batches. Each step
 * has two phases and two barriers. Row-local phase, each thread on its own
 * share of the batch rows: gather them -> forward (fused GEMM + bias +
 * activation per layer) -> loss and dL/dz -> dX = dZ W^T layer by layer
 * from the top, the lower layer's activation derivative folded in. Barrier.
 * Team phase: per layer dW = X^T dZ, the optimizer applied to each finished
 * row panel, then db = sum(dZ) and its update. Barrier. Big layers are
 * split in depth instead (see split_at): each half of the team computes one
 * partial product (and one block of dX's columns) for every row of the
 * batch, between barriers; a split first layer's batch is gathered during
 * the previous step's team phase. All buffers live in the workspace,
 * allocated once: a step allocates nothing.
 */
#include "cdnn.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Below this many flops per step a run stays on one thread: a step this
 * small takes a few microseconds, about what the barriers would cost. */
#define TRAIN_SERIAL_FLOPS 400000L
/* Layers with at least this many weights keep packed copies of W^T for dX
 * (and of W for the forward pass when W's rows are a multiple of 256 bytes
 * apart, the strides that packing is for): without them, every thread
 * packed them again at every step, from lines the optimizer had just
 * written on the other core (BIG-b128: 24% of a 2-thread step). */
#define PACKED_MIN_WEIGHTS 16384L
/* The gather prefetches the row this many rows ahead of the one it copies. */
#define GATHER_AHEAD 4
#define GATHER_LINES 4
/* Rows per share of a gather that the team shares out dynamically (25 KB of 784 inputs). */
#define GATHER_CHUNK 8

typedef struct {
    float *din;   /* this layer's input after dropout [B, in] (layer 0: the gathered batch; else, without
                     dropout, the layer below's act, in blocks if that layer's are) */
    float *act;   /* output a [B, units]; with blocks, two blocks [B, mid above] and [B, units - mid above] */
    float *z;     /* pre-activation [B, units] where needed (gelu, last layer), else NULL */
    float *dz;    /* dL/dz [B, units] */
    float *dw;    /* dL/dW tile buffer [in, units] */
    float *db;    /* dL/db [units] */
    float *pw;    /* W packed as the forward product's B, kept current by the optimizer (or NULL) */
    float *pwt;   /* W^T packed as dX's B, likewise (or NULL) */
    float *pwi;   /* W packed as the forward product's B for inference only, where no run keeps pw (or NULL) */
    int mid;      /* > 0: the product is split in depth at this row of W (see split_at) */
    float *part1; /* with mid: the second partial product [B, units] (in blocks as act) */
    int blocks;   /* this training run keeps act and part1 in blocks (see combined_in_blocks); 0 outside runs */
    int next[2];  /* with mid: the next row panel of each part's dW to hand out in a step (team) */
} layer_buf;

struct cdnn_workspace {
    int max_batch, threads, n_layers;
    layer_buf *lb;
    int32_t *rows; /* dataset row of each batch row (dropout keys) */
    int32_t *ys;   /* gathered sparse labels */
    float *yd;     /* gathered dense labels */
    float *rw;     /* gathered sample weights (with sample_weight) */
    double *row_loss, *row_correct;
    float *pack; /* threads x cdnn_gemm_pack_floats() */
    size_t pack_per;
    int packed_nr;  /* micro-kernel width the packed copies were laid out for */
    float *din_odd; /* with a depth-split first layer, odd steps' gathered batch (even steps': lb[0].din) */
    void *block;    /* the one allocation the pointers above point into */
    /* The row-local phase's split of a full batch, learned from how fast
     * each thread went (split_nt = 0: not learned yet): row boundaries
     * split[0..split_nt], each thread's rows per second (smoothed), and the
     * seconds per row each thread took in the last step's row-local phase
     * (0: it had no rows). */
    int split_nt;
    int *split;
    double *speed, *sec_per_row;
    /* The same speeds as cumulative fractions for the dW phase's row panels,
     * double-buffered by step parity: thread 0 writes the next step's while
     * the others may still read this step's. share_nt[b]: thread count
     * buffer b was made for (0: none yet). */
    float *share;
    int share_nt[2];
    /* The whole-gradient path (see apply_whole_team): per variable (layer l's kernel 2l, bias 2l + 1) the
     * gradient's sum of squares and the regularization penalty of the step. */
    double *var_sumsq, *var_penalty;
    /* Without labels, the choice of predicts of at most CDNN_SPLIT_MAX_ROWS rows between 1 thread and the
     * column split, and of small predicts (below CDNN_PREDICT_SERIAL_FLOPS) between 1 thread and 2 sharing the rows */
    cdnn_chooser one_row, small;
};

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static int keeps_packed_w(const cdnn_layer *ly)
{
    return ly->units % 64 == 0 && (long)ly->in * ly->units >= PACKED_MIN_WEIGHTS;
}

/* Whether a predict may pack W into a copy of its own (pwi) for a layer that keeps none for training: read in
 * place, W's rows (units floats apart: not a multiple of 64 bytes) straddle cache lines, and a B panel of the
 * product spans up to twice the lines it would packed. */
static int packs_w_for_inference(const cdnn_layer *ly)
{
    return !keeps_packed_w(ly) && ly->units % 16 != 0 && (long)ly->in * ly->units >= PACKED_MIN_WEIGHTS;
}

static int keeps_packed_wt(const cdnn_layer *ly, int l)
{
    return l > 0 && (long)ly->in * ly->units >= PACKED_MIN_WEIGHTS;
}

/* The packed copy of W the forward product reads, by `packed`: none (0), the one a training run keeps (1: a
 * run, or a predict of enough rows), or that one or else the predict's own (2; a predict packs it at its start). */
static float *forward_pw(const layer_buf *b, int packed)
{
    return !packed ? NULL : b->pw ? b->pw : packed > 1 ? b->pwi : NULL;
}

/* Rows [*k0, *k1) of W in part p of layer l's depth split (the whole of W if it is not split). */
static void part_rows(const cdnn_workspace *ws, const cdnn_layer *ly, int l, int p, int *k0, int *k1)
{
    const int mid = ws->lb[l].mid;
    *k0 = mid && p ? mid : 0;
    *k1 = mid && !p ? mid : ly->in;
}

/* Part p's packed copy of W (its rows of W packed as a matrix of their own), or NULL. */
static float *part_pw(const cdnn_workspace *ws, const cdnn_layer *ly, int l, int p)
{
    int k0, k1;
    part_rows(ws, ly, l, p, &k0, &k1);
    return ws->lb[l].pw ? ws->lb[l].pw + cdnn_packed_floats(k0, ly->units) : NULL;
}

/* Part p's packed copy of W^T (op(B) of dX's columns [k0, k1)), or NULL. */
static float *part_pwt(const cdnn_workspace *ws, const cdnn_layer *ly, int l, int p)
{
    int k0, k1;
    part_rows(ws, ly, l, p, &k0, &k1);
    return ws->lb[l].pwt ? ws->lb[l].pwt + (k0 ? cdnn_packed_floats(ly->units, k0) : 0) : NULL;
}

/* Team, rows of W split over it, no barrier: pack every layer's W into
 * its copies (`pack`), or write W back from its packed copy, where a run
 * kept its values (`!pack`). A depth-split layer's copies are two packed
 * matrices each, one per part. */
static void packed_copies_team(const cdnn_net *net, cdnn_workspace *ws, int pack)
{
    for (int l = 0; l < net->n_layers; l++) {
        const cdnn_layer *ly = &net->layers[l];
        const int N = ly->units;
        if (!ws->lb[l].pw && (!pack || !ws->lb[l].pwt)) continue;
        for (int p = 0; p < (ws->lb[l].mid ? 2 : 1); p++) {
            int k0, k1;
            long lo, hi;
            part_rows(ws, ly, l, p, &k0, &k1);
            cdnn_team_range(k1 - k0, &lo, &hi);
            if (pack)
                cdnn_pack_rows(ly->W + (size_t)k0 * N, k1 - k0, N, (int)lo, (int)hi, 0, N, part_pw(ws, ly, l, p),
                               part_pwt(ws, ly, l, p));
            else
                cdnn_unpack_rows(part_pw(ws, ly, l, p), k1 - k0, N, (int)lo, (int)hi, ly->W + (size_t)k0 * N);
        }
    }
}

/* Where layer l's product is split in depth (0: not split).
 *
 * Split by batch rows, every thread reads all of a layer's W in the
 * forward pass (and in dX), and in the backward pass each thread updates
 * its own rows of it: every cache line updated must first be taken back from the
 * other core (2 threads, Adam, measured alone: 784x96 1.13 ns per element
 * instead of 0.35, 784x512 0.67 instead of 0.44). Split in depth,
 * X W = X[:, :mid] W[:mid] + X[:, mid:] W[mid:], the two partial products
 * (every row of the batch) are computed by two halves of the team, each
 * from the rows of W that it updates itself; their sum, the bias and the
 * activation are row-local. Above the first layer, dX = dZ W^T is split
 * the same way, by its columns (W's rows): each half computes, for every
 * row, the columns of dX that its rows of W give. The split depends only
 * on the layer (one thread computes both parts and adds them the same way),
 * so results stay independent of the number of threads. The first layer
 * costs a barrier per step (the partials must be complete; the gather of
 * the next batch moves into the team phase, before its end barrier), a
 * hidden layer four (its input before and its partials after the forward
 * product, dZ before and dX after its dX; three above a split layer whose
 * output it reads in blocks, see combined_in_blocks), so only big layers are split; a
 * softmax needs whole rows, and the last layer's output feeds the loss. */
static int split_at(const cdnn_net *net, int l)
{
    const cdnn_layer *ly = &net->layers[l];
    if (l == net->n_layers - 1 || cdnn_act_rowwise(ly->act) || (long)ly->in * ly->units < PACKED_MIN_WEIGHTS) return 0;
    if (l > 0 && cdnn_act_rowwise(net->layers[l - 1].act)) return 0;
    /* as near the middle as whole 32-byte runs of X's rows allow (the parts
     * take turns at the barriers: 784 split 400/384 made one thread wait 4%
     * of the split phases); above the first layer whole 64-byte lines, so
     * that the halves of dX's rows do not share a cache line */
    const int unit = l == 0 ? 8 : 16;
    const int mid = (ly->in / 2 + unit / 2) / unit * unit;
    return mid > 0 && mid < ly->in ? mid : 0;
}

/* Whether depth-split layer l's training output can be kept in blocks: the
 * layer above is depth-split too, without dropout on its input, and part p
 * of its product reads, for every row, the columns of l's output that its
 * rows of W multiply: block p, [rows, width p] contiguous. The partial
 * products are written in blocks, and the thread that computes part p of
 * the layer above for some rows first combines exactly those rows of block
 * p. Every later reader of them in the step (that product, the activation
 * derivative in its dX; with 2 threads also its dW, which with more reads
 * the rows of the other threads of its part) is then on the same core: no
 * barrier before the layer above, and those reads stay on the core, where
 * combining by rows made each thread read half of them from the other. (Combining
 * the columns of row-major partials instead ran 2x slower: each core's
 * prefetcher pulled the other half of every row from the other core.) The
 * blocks' boundary must fall on a micro-panel of columns, so that every tile
 * is the same as in one product (the same bits as inference's); not for
 * gelu, whose pre-activation the derivative reads. */
static int combined_in_blocks(const cdnn_net *net, const cdnn_workspace *ws, int l, int nr)
{
    return l + 1 < net->n_layers && ws->lb[l].mid && ws->lb[l + 1].mid && ws->lb[l + 1].mid % nr == 0 &&
           net->layers[l + 1].in_drop == 0.0f && !cdnn_act_grad_from_z(net->layers[l].act);
}

/* This thread's items [*lo, *hi) of n in part p (0 or 1) of a depth-split
 * product: the threads of parity p share it; alone, a thread does both.
 * Returns 0 if the part is not this thread's. */
static int part_range(int p, long n, long *lo, long *hi)
{
    const int nt = cdnn_team_size(), me = cdnn_team_rank();
    if (nt == 1) {
        *lo = 0;
        *hi = n;
        return 1;
    }
    if (me % 2 != p) return 0;
    const int gsize = (nt - p + 1) / 2, grank = me / 2;
    *lo = n * grank / gsize;
    *hi = n * (grank + 1) / gsize;
    return 1;
}

/* Block q of buf, an output of layer l kept in blocks (act or part1): its
 * first float; *width: its columns, also its row stride; *c0: its first column. */
static float *block_of(const cdnn_net *net, const cdnn_workspace *ws, int l, float *buf, int q, int *width, int *c0)
{
    const int mid = ws->lb[l + 1].mid, N = net->layers[l].units;
    *c0 = q ? mid : 0;
    *width = q ? N - mid : mid;
    return buf + (q ? (size_t)ws->max_batch * mid : 0);
}

/* Part p of layer l's depth-split product for rows [r0, r1) of its input x:
 * x[:, k0:k1] W[k0:k1] into the layer's output (p = 0) or part1 (p = 1);
 * with in_blocks, x[:, k0:k1] is block p of the layer below's output; with
 * out_blocks, the output is written in blocks (column block by column block). */
static void depth_part(const cdnn_net *net, cdnn_workspace *ws, int l, int p, const float *x, int in_blocks,
                       int out_blocks, int r0, int r1, int packed, float *pack)
{
    const cdnn_layer *ly = &net->layers[l];
    const int K = ly->in, N = ly->units;
    int k0, k1, ldx = K;
    part_rows(ws, ly, l, p, &k0, &k1);
    const float *xp = x + k0, *wp = ly->W + (size_t)k0 * N, *pw = packed ? part_pw(ws, ly, l, p) : NULL;
    if (in_blocks) {
        int c0;
        xp = block_of(net, ws, l - 1, ws->lb[l - 1].act, p, &ldx, &c0);
    }
    float *out = p ? ws->lb[l].part1 : ws->lb[l].act;
    if (!out_blocks) {
        cdnn_gemm_rows(0, 0, r0, r1, N, k1 - k0, xp, ldx, wp, N, pw, out, N, 0, NULL, pack);
        return;
    }
    for (int q = 0; q < 2; q++) {
        int w, c0;
        float *blk = block_of(net, ws, l, out, q, &w, &c0);
        /* column c of block q is at blk + c - c0 (within the buffer: block 1 starts max_batch * c0 in) */
        cdnn_gemm_rows_cols(0, 0, r0, r1, c0, c0 + w, N, k1 - k0, xp, ldx, wp, N, pw, blk - c0, w, 0, NULL, pack);
    }
}

/* This thread's share of both partial products of layer l for every row of
 * a batch of `rows` (no barrier), in training: its input and output in
 * blocks where the layers keep them so. */
static void depth_parts_team(const cdnn_net *net, cdnn_workspace *ws, int l, const float *x, int rows, int packed,
                             float *pack)
{
    const int in_blocks = l > 0 && ws->lb[l - 1].blocks;
    for (int p = 0; p < 2; p++) {
        long plo, phi;
        if (part_range(p, rows, &plo, &phi))
            depth_part(net, ws, l, p, x, in_blocks, ws->lb[l].blocks, (int)plo, (int)phi, packed, pack);
    }
}

/* y = act(y + q + bias) over `rows` contiguous rows of `cols` (y, q and z
 * all with row stride cols), z = the pre-activation if not NULL: a
 * depth-split layer's output from its two partial products. */
static void combine_partials(const cdnn_layer *ly, float *y, const float *q, int rows, int cols, const float *bias,
                             float *z)
{
    for (size_t i = 0; i < (size_t)rows * cols; i++) y[i] += q[i];
    cdnn_bias_act_tile(ly->act, ly->act_args, y, cols, rows, cols, bias, z, cols);
}

/* Rows [r0, r1) of layer l's output from its two partial products: sum, bias, activation. */
static void depth_combine_rows(const cdnn_net *net, cdnn_workspace *ws, int l, int r0, int r1)
{
    const cdnn_layer *ly = &net->layers[l];
    const size_t off = (size_t)r0 * ly->units;
    if (r1 <= r0) return;
    combine_partials(ly, ws->lb[l].act + off, ws->lb[l].part1 + off, r1 - r0, ly->units, ly->b,
                     ws->lb[l].z ? ws->lb[l].z + off : NULL);
}

/* This thread's rows of layer l's output kept in blocks: for each part p of
 * the layer above that it computes rows of, those rows of block p, from
 * the two partial products' blocks; no barrier. */
static void depth_combine_team(const cdnn_net *net, cdnn_workspace *ws, int l, int rows)
{
    const cdnn_layer *ly = &net->layers[l];
    for (int p = 0; p < 2; p++) {
        long plo, phi;
        int w, c0;
        if (!part_range(p, rows, &plo, &phi)) continue;
        float *y = block_of(net, ws, l, ws->lb[l].act, p, &w, &c0);
        const float *q = block_of(net, ws, l, ws->lb[l].part1, p, &w, &c0);
        combine_partials(ly, y + (size_t)plo * w, q + (size_t)plo * w, (int)(phi - plo), w, ly->b ? ly->b + c0 : NULL,
                         NULL);
    }
}

/* Floats of the packed copy of W^T: one packed matrix per part of a depth split. */
static size_t packed_wt_floats(const cdnn_layer *ly, int mid)
{
    return mid ? cdnn_packed_floats(ly->units, mid) + cdnn_packed_floats(ly->units, ly->in - mid)
               : cdnn_packed_floats(ly->units, ly->in);
}

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
        if (cdnn_act_grad_from_z(ly->act) || l == L - 1) floats += round16((size_t)B * ly->units);
        floats += round16((size_t)ly->in * ly->units) + round16(ly->units);
        const int mid = split_at(net, l);
        if (keeps_packed_w(ly) || packs_w_for_inference(ly)) floats += round16(cdnn_packed_floats(ly->in, ly->units));
        if (keeps_packed_wt(ly, l)) floats += round16(packed_wt_floats(ly, mid));
        if (mid) floats += round16((size_t)B * ly->units);
    }
    if (split_at(net, 0)) floats += round16((size_t)B * net->layers[0].in);
    floats += round16((size_t)B * out_units) + round16(B) * 3; /* yd, rows, ys, rw */
    floats += pack_per * threads;
    size_t bytes = floats * sizeof(float) + 2 * round16(B) * sizeof(double) + (size_t)L * sizeof(layer_buf) + 64;

    cdnn_workspace *ws = (cdnn_workspace *)calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->block = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!ws->block) {
        cdnn_workspace_free(ws);
        return NULL;
    }
    memset(ws->block, 0, (bytes + 63) / 64 * 64);
    ws->split = (int *)calloc((size_t)threads + 1, sizeof(int));
    ws->speed = (double *)calloc((size_t)threads, sizeof(double));
    ws->sec_per_row = (double *)calloc((size_t)threads, sizeof(double));
    ws->share = (float *)calloc(2 * ((size_t)threads + 1), sizeof(float));
    ws->var_sumsq = (double *)calloc(2 * (size_t)L, sizeof(double));
    ws->var_penalty = (double *)calloc(2 * (size_t)L, sizeof(double));
    if (!ws->split || !ws->speed || !ws->sec_per_row || !ws->share || !ws->var_sumsq || !ws->var_penalty) {
        cdnn_workspace_free(ws);
        return NULL;
    }
    ws->max_batch = B;
    ws->threads = threads;
    ws->n_layers = L;
    ws->pack_per = pack_per;
    ws->packed_nr = cdnn_simd_current()->nr;

    /* carve: doubles first (8-byte aligned), then 64-byte aligned float arrays */
    char *p = (char *)ws->block;
    ws->row_loss = (double *)p;
    p += round16(B) * sizeof(double);
    ws->row_correct = (double *)p;
    p += round16(B) * sizeof(double);
    ws->lb = (layer_buf *)p;
    p += (size_t)L * sizeof(layer_buf);
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
        b->z = (cdnn_act_grad_from_z(ly->act) || l == L - 1) ? TAKE((size_t)B * ly->units) : NULL;
        b->dw = TAKE((size_t)ly->in * ly->units);
        b->db = TAKE(ly->units);
        b->pw = keeps_packed_w(ly) ? TAKE(cdnn_packed_floats(ly->in, ly->units)) : NULL;
        b->pwi = packs_w_for_inference(ly) ? TAKE(cdnn_packed_floats(ly->in, ly->units)) : NULL;
        b->mid = split_at(net, l);
        b->pwt = keeps_packed_wt(ly, l) ? TAKE(packed_wt_floats(ly, b->mid)) : NULL;
        b->part1 = b->mid ? TAKE((size_t)B * ly->units) : NULL;
    }
    ws->din_odd = ws->lb[0].mid ? TAKE((size_t)B * net->layers[0].in) : NULL;
    ws->yd = TAKE((size_t)B * out_units);
    ws->rows = (int32_t *)TAKE(B);
    ws->ys = (int32_t *)TAKE(B);
    ws->rw = TAKE(B);
#undef TAKE
    return ws;
}

void cdnn_workspace_free(cdnn_workspace *ws)
{
    if (!ws) return;
    free(ws->split);
    free(ws->speed);
    free(ws->sec_per_row);
    free(ws->share);
    free(ws->var_sumsq);
    free(ws->var_penalty);
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

/* Seconds a thread spends on its own rows in a step, without the team
 * sections (depth-split products) in between: what the row split learns from. */
typedef struct {
    double local, since;
} row_timer;

static void timer_pause(row_timer *tm)
{
    if (tm) tm->local += cdnn_wtime() - tm->since;
}

static void timer_resume(row_timer *tm)
{
    if (tm) tm->since = cdnn_wtime();
}

/* Layer l's output from its two partial products, done by this thread:
 * every row of its parts' blocks (team work, not timed as its rows) if the
 * layer keeps its output in blocks, else its rows [r0, r1). */
static void depth_combine(const cdnn_net *net, cdnn_workspace *ws, int l, int rows, int r0, int r1, row_timer *tm)
{
    if (ws->lb[l].blocks) {
        timer_pause(tm);
        depth_combine_team(net, ws, l, rows);
        timer_resume(tm);
    } else {
        depth_combine_rows(net, ws, l, r0, r1);
    }
}

/* Forward pass of rows [r0, r1) (this thread's share of a batch of `rows`)
 * from layer `first` on, whose input is x (the gathered batch, or X
 * directly for inference) or, from a later layer, the layer below's
 * output; the last layer's output goes to `out` (row stride units) if not
 * NULL. Row-local, except that with `team` (training) a depth-split
 * layer's partial products are computed by the team for every row, between
 * two barriers (the first skipped when its input is in blocks), and summed
 * by blocks if the layer's output is kept so (every thread of the team must
 * make the same call); without it (inference), the whole product of its own rows, from W's
 * whole packed copy where `packed` (see predict_pack_team). */
static void forward_rows(const cdnn_net *net, cdnn_workspace *ws, int first, const float *x, int rows, int r0, int r1,
                         float *out, int training, uint64_t seed, int64_t step, int packed, int team, row_timer *tm,
                         float *pack)
{
    const float *in = first == 0 ? x : ws->lb[first - 1].act;
    for (int l = first; l < net->n_layers; l++) {
        const cdnn_layer *ly = &net->layers[l];
        layer_buf *b = &ws->lb[l];
        if (training && l > 0 && ly->in_drop > 0.0f) {
            /* dropout on the previous layer's output, into this layer's input buffer */
            uint64_t key = dropout_key(seed, step, l);
            for (long i = r0; i < r1; i++)
                cdnn_dropout_row(b->din + i * ly->in, in + i * ly->in, ly->in, key, ws->rows[i], 0, ly->in_drop);
            in = b->din;
        }
        if (b->mid && team) { /* training: the layer below's output may be in blocks, and this one's */
            timer_pause(tm);
            /* every row of the input, unless this thread combined the blocks it reads itself */
            if (!(l > 0 && ws->lb[l - 1].blocks)) cdnn_team_barrier();
            depth_parts_team(net, ws, l, in, rows, packed, pack);
            cdnn_team_barrier(); /* both partials of every row */
            timer_resume(tm);
            depth_combine(net, ws, l, rows, r0, r1, tm);
            in = b->act;
            continue;
        }
        float *y = l == net->n_layers - 1 && out ? out : b->act;
        cdnn_dense_forward_rows(ly, r0, r1, in, y, b->z, forward_pw(b, packed), pack);
        in = y;
    }
}

/* Record in *bad_batch that step j (of this run) found a value that is not
 * finite: in its batch, or (another flag) in its loss. */
static void mark_bad_batch(int *bad_batch, int j)
{
#ifdef _OPENMP
#pragma omp atomic write
#endif
    *bad_batch = j;
}

/* The step whose batch was found not finite (-1: none); read after a barrier. */
static int bad_batch_of(const int *bad_batch)
{
    int j;
#ifdef _OPENMP
#pragma omp atomic read
#endif
    j = *bad_batch;
    return j;
}

static int has_rules(const cdnn_param_rules *r)
{
    return r->l1 != 0.0f || r->l2 != 0.0f || r->orth_factor != 0.0f || r->constraint != CDNN_CONSTRAINT_NONE;
}

/* Whether a run must take the whole-gradient path: an optimizer option that reads whole variables, or a
 * regularizer or constraint on some layer. */
static int needs_whole(const cdnn_net *net)
{
    if (cdnn_opt_needs_whole(&net->opt)) return 1;
    for (int l = 0; l < net->n_layers; l++)
        if (!net->layers[l].frozen &&
            (has_rules(&net->layers[l].kernel_rules) || (net->layers[l].b && has_rules(&net->layers[l].bias_rules))))
            return 1;
    return 0;
}

/* Team, after every gradient of the step is complete (in the layers' dw/db buffers): the optimizer
 * step of every variable, each variable by one thread alone (its sums in index order, the global norm
 * summed over the variables in their order), so that any number of threads gives the same bits. */
static void apply_whole_team(const cdnn_net *net, cdnn_workspace *ws, cdnn_opt_step st)
{
    const int V = 2 * net->n_layers;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int v = 0; v < V; v++) {
        const cdnn_layer *ly = &net->layers[v / 2];
        const int bias = v & 1;
        ws->var_sumsq[v] = ws->var_penalty[v] = 0.0;
        if ((bias && !ly->b) || ly->frozen) continue; /* a frozen layer: not a trainable variable of the step */
        cdnn_var_slots sl = {bias ? ly->b1 : ly->W1, bias ? ly->b2 : ly->W2, bias ? ly->b3 : ly->W3,
                             bias ? ly->bema : ly->Wema, bias ? ly->bacc : ly->Wacc};
        ws->var_sumsq[v] = cdnn_opt_prepare_grad(&net->opt, st, bias ? &ly->bias_rules : &ly->kernel_rules,
                                                 bias ? ly->b : ly->W, bias ? ws->lb[v / 2].db : ws->lb[v / 2].dw, sl,
                                                 bias ? ly->units : ly->in, bias ? 1 : ly->units, &ws->var_penalty[v]);
    }
    cdnn_team_barrier();
    double global = 0.0;
    for (int v = 0; v < V; v++) global += ws->var_sumsq[v];
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int v = 0; v < V; v++) {
        const cdnn_layer *ly = &net->layers[v / 2];
        const int bias = v & 1;
        if ((bias && !ly->b) || ly->frozen) continue;
        cdnn_var_slots sl = {bias ? ly->b1 : ly->W1, bias ? ly->b2 : ly->W2, bias ? ly->b3 : ly->W3,
                             bias ? ly->bema : ly->Wema, bias ? ly->bacc : ly->Wacc};
        /* a bias is a column of units rows: its constraint's norm (axis 0) is over all of it */
        cdnn_opt_apply_var(&net->opt, st, bias ? &ly->bias_rules : &ly->kernel_rules, bias ? ly->b : ly->W,
                           bias ? ws->lb[v / 2].db : ws->lb[v / 2].dw, sl, bias ? ly->units : ly->in,
                           bias ? 1 : ly->units, ws->var_sumsq[v], global);
    }
}

/* One training step on the gathered batch. Each thread carries its own rows
 * through the forward pass (with a depth-split first layer, from the sum of
 * its partial products, which the team computed before; summed by blocks
 * instead when the layer's output is kept in blocks), the loss and
 * every dX (row-local but for the depth-split layers' products), then,
 * after one barrier, the team computes each layer's dW and db (which need
 * every row) and applies the optimizer. The caller ends the step with a
 * barrier: the next step's forward pass reads the updated weights.
 * local_before: seconds this thread already spent on its rows (the labels).
 * Returns 0, having updated nothing, if a thread found step j's batch not
 * finite (*bad_batch == j at the middle barrier), else 1. valid: the batch's rows that count for the
 * loss (its mean divides by them); weighted: the gathered sample weights apply. */
static int train_step_team(const cdnn_net *net, cdnn_workspace *ws, const float *x0, int rows, int r0, int r1,
                           int64_t t, uint64_t seed, double local_before, int packed, const int *bad_batch, int j,
                           int valid, int weighted, int whole)
{
    row_timer tm = {local_before, cdnn_wtime()};
    const int L = net->n_layers;
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    const cdnn_layer *top = &net->layers[L - 1];
    const int ldy = top->units;
    cdnn_opt_step st = cdnn_opt_prepare(&net->opt, t);
    /* the whole-gradient path: the products keep the gradients, apply_whole_team updates */
    cdnn_opt_params none = {0};
    none.kind = CDNN_OPT_NONE;
    const cdnn_opt_params *opt = whole ? &none : &net->opt;

    if (ws->lb[0].mid) depth_combine(net, ws, 0, rows, r0, r1, &tm);
    forward_rows(net, ws, ws->lb[0].mid ? 1 : 0, x0, rows, r0, r1, NULL, 1, seed, t, packed, 1, &tm, pack);
    cdnn_loss_rows(net->loss, net->metric, top->act, top->act_args, net->from_logits, r0, r1, top->units,
                   ws->lb[L - 1].act, ws->lb[L - 1].z, net->loss == CDNN_SPARSE_CCE ? ws->ys : NULL,
                   net->loss == CDNN_SPARSE_CCE ? NULL : ws->yd, ldy, valid, ws->lb[L - 1].dz, ws->row_loss,
                   ws->row_correct, &net->loss_opts, weighted ? ws->rw : NULL);

    /* below the lowest trainable layer nothing needs dX (below the first one, never) */
    int lowest = 0;
    while (lowest < L - 1 && net->layers[lowest].frozen) lowest++;
    for (int l = L - 1; l > lowest; l--) {
        const cdnn_layer *ly = &net->layers[l], *lower = &net->layers[l - 1];
        float *dx = ws->lb[l - 1].dz;
        /* fold the dropout mask and the lower activation's derivative into dX */
        cdnn_epilogue e = {0};
        e.kind = CDNN_EPI_DACT;
        e.act = cdnn_act_rowwise(lower->act) ? CDNN_LINEAR : lower->act;
        e.act_args = lower->act_args;
        e.aux = cdnn_act_grad_from_z(lower->act) ? ws->lb[l - 1].z : ws->lb[l - 1].act;
        e.ldaux = lower->units;
        e.drop_rate = ly->in_drop;
        e.drop_seed = dropout_key(seed, t, l);
        e.drop_rows = ws->rows;
        e.drop_din = lower->act == CDNN_RELU && ly->in_drop > 0.0f ? ws->lb[l].din : NULL;
        if (ws->lb[l].mid) {
            /* each half of the team: for every row, the columns of dX that its rows of W give */
            timer_pause(&tm);
            cdnn_team_barrier(); /* dZ of every row */
            for (int p = 0; p < 2; p++) {
                long plo, phi;
                int k0, k1;
                if (!part_range(p, rows, &plo, &phi)) continue;
                part_rows(ws, ly, l, p, &k0, &k1);
                cdnn_epilogue ep = e;
                ep.aux = e.aux + k0;
                ep.drop_din = e.drop_din ? e.drop_din + k0 : NULL;
                if (ws->lb[l - 1].blocks) { /* the layer below's output, block p: combined by this thread (never
                                             * with dropout on it: see combined_in_blocks) */
                    int c0;
                    ep.aux = block_of(net, ws, l - 1, ws->lb[l - 1].act, p, &ep.ldaux, &c0);
                }
                ep.drop_col0 = k0;
                cdnn_gemm_rows(0, 1, (int)plo, (int)phi, k1 - k0, ly->units, ws->lb[l].dz, ly->units,
                               ly->W + (size_t)k0 * ly->units, ly->units, packed ? part_pwt(ws, ly, l, p) : NULL,
                               dx + k0, ly->in, 0, &ep, pack);
            }
            if (l > 1) cdnn_team_barrier(); /* every column of the rows below (else the middle barrier) */
            timer_resume(&tm);
            continue;
        }
        cdnn_dense_dx_rows(ly, r0, r1, ws->lb[l].dz, dx, &e, packed ? ws->lb[l].pwt : NULL, pack);
        if (cdnn_act_rowwise(lower->act) && r1 > r0)
            /* softmax's (log_softmax's) derivative needs whole rows: after the product */
            cdnn_rowwise_backward_rows(lower->act, dx + (size_t)r0 * ly->in, ly->in,
                                       ws->lb[l - 1].act + (size_t)r0 * ly->in, ly->in, r1 - r0, ly->in);
    }
    timer_pause(&tm);
    ws->sec_per_row[cdnn_team_rank()] = r1 > r0 ? tm.local / (r1 - r0) : 0.0;
    if (cdnn_team_rank() == 0) /* (the last step's handouts ended at its last barrier) */
        for (int l = 0; l < L; l++) ws->lb[l].next[0] = ws->lb[l].next[1] = 0;
    cdnn_team_barrier();
    if (bad_batch_of(bad_batch) == j) return 0; /* every thread sees the same flag after the barrier */

    for (int l = L - 1; l >= 0; l--) {
        const cdnn_layer *ly = &net->layers[l];
        layer_buf *b = &ws->lb[l];
        const float *x = l == 0 ? x0 : b->din;
        if (ly->frozen) continue; /* no dW, no update: its W and b keep their bits */
        if (b->mid) {
            /* Each thread first updates the rows of W whose partial product its half of the team computed,
             * then helps with the other part's: row panels are handed out from a counter per part (reset
             * before the middle barrier), so a thread that the machine slows down takes fewer of them
             * and the other does not wait for it at the end of the step (each panel is computed and
             * updated the same way whichever thread takes it). Alone, a thread does both parts in turn. */
            const int shared = cdnn_team_size() > 1;
            for (int q = 0; q < 2; q++) {
                const int p = shared ? (cdnn_team_rank() + q) % 2 : q;
                int k0, k1;
                part_rows(ws, ly, l, p, &k0, &k1);
                const float *xp = x;
                int ldx = ly->in;
                if (l > 0 && ws->lb[l - 1].blocks) {
                    /* block p of the layer below's output: its column i - k0 is W's row i (block 1
                     * starts max_batch * k0 floats in, so its address minus k0 is in the buffer) */
                    int c0;
                    xp = block_of(net, ws, l - 1, ws->lb[l - 1].act, p, &ldx, &c0) - c0;
                }
                cdnn_dense_grads_rows(ly, rows, xp, ldx, b->dz, b->dw, opt, st, packed ? part_pw(ws, ly, l, p) : NULL,
                                      packed ? part_pwt(ws, ly, l, p) : NULL, k0, k1, k0, k1, pack,
                                      shared ? &b->next[p] : NULL);
            }
            if (ly->b) {
                long lo, hi;
                cdnn_team_range(ly->units, &lo, &hi);
                cdnn_dense_bias_grads(ly, rows, b->dz, b->db, opt, st, lo, hi);
            }
            continue;
        }
        cdnn_dense_grads_team(
            ly, rows, x, b->dz, b->dw, ly->b ? b->db : NULL, opt, st, packed ? b->pw : NULL, packed ? b->pwt : NULL,
            ws->share_nt[t & 1] == cdnn_team_size() ? ws->share + (size_t)(t & 1) * (ws->threads + 1) : NULL, pack);
    }
    if (whole) {
        cdnn_team_barrier(); /* every gradient complete */
        apply_whole_team(net, ws, st);
    }
    return 1;
}

/* n floats from src to dst, bit for bit; whether all of them are finite
 * (a float is NaN or infinite iff its exponent bits are all ones). */
CDNN_VECTOR_CLONES
static int copy_finite(uint32_t *restrict dst, const uint32_t *restrict src, size_t n)
{
    uint32_t bad = 0;
    for (size_t k = 0; k < n; k++) {
        dst[k] = src[k];
        bad |= (src[k] & 0x7f800000u) == 0x7f800000u;
    }
    return !bad;
}

int cdnn_copy_finite(uint32_t *restrict dst, const uint32_t *restrict src, size_t n)
{
    return copy_finite(dst, src, n);
}

/* Ask for the first GATHER_LINES cache lines of a row of `in` floats. */
static void prefetch_row_head(const float *row, int in)
{
    const char *p = (const char *)row;
    for (size_t o = 0; o < (size_t)in * sizeof(float) && o < GATHER_LINES * 64; o += 64)
        __builtin_prefetch(p + o, 0, 3);
}

/* Batch rows [i0, i1) (dataset rows rows[i]) of X [*, in] into dst, with
 * input dropout at rate drop0 if any. Returns 0 if a value copied is NaN or
 * infinite (the copy is complete either way), else 1: the check costs
 * nothing while the rows pass through anyway, where a scan of X before
 * training read all of it once more (5% of a W2-b256 epoch). */
static int gather_x(float *dst, const float *X, int in, const int32_t *rows, long i0, long i1, float drop0,
                    uint64_t key)
{
    int ok = 1;
    /* rows are scattered over the whole dataset: ask for each row's first
     * lines GATHER_AHEAD rows before copying it, so that they are not a
     * memory latency each (the first rows of the range all at once) */
    for (long i = i0; i < i1 && i < i0 + GATHER_AHEAD; i++) prefetch_row_head(X + (size_t)rows[i] * in, in);
    for (long i = i0; i < i1; i++) {
        int32_t r = rows[i];
        const float *src = X + (size_t)r * in;
        if (i + GATHER_AHEAD < i1) prefetch_row_head(X + (size_t)rows[i + GATHER_AHEAD] * in, in);
        float *d = dst + (size_t)i * in;
        ok &= copy_finite((uint32_t *)d, (const uint32_t *)src, (size_t)in);
        if (drop0 > 0.0f) cdnn_dropout_row(d, d, in, key, r, 0, drop0);
    }
    return ok;
}

/* The team gathers a batch of `rows` rows (dataset rows rows[i]) into dst,
 * GATHER_CHUNK rows at a time to whichever thread is free (every thread of
 * the team must call it; no barrier); a NaN or an infinity in it marks step
 * j's batch (see mark_bad_batch). The gather ends a step's team phase,
 * whose even split of the gradients' work leaves the thread on the busier
 * core behind (BIG-b128: 18 us of a 1.3 ms step at the barrier that
 * follows): shared out as threads come free, it absorbs that. */
static void gather_team(float *dst, const float *X, int in, const int32_t *rows_of, int rows, float drop0, uint64_t key,
                        int *bad_batch, int j)
{
    const long chunks = (rows + GATHER_CHUNK - 1) / GATHER_CHUNK;
    int ok = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (long q = 0; q < chunks; q++) {
        const long lo = q * GATHER_CHUNK, hi = lo + GATHER_CHUNK < rows ? lo + GATHER_CHUNK : rows;
        ok &= gather_x(dst, X, in, rows_of, lo, hi, drop0, key);
    }
    if (!ok) mark_bad_batch(bad_batch, j);
}

/* The dataset rows, labels and sample weights (if any) of batch rows [i0, i1). */
static void gather_labels(cdnn_workspace *ws, const int32_t *ysparse, const float *ydense, int ldy,
                          const float *sample_weight, const int32_t *rows, long i0, long i1)
{
    for (long i = i0; i < i1; i++) {
        int32_t r = rows[i];
        ws->rows[i] = r;
        if (sample_weight) ws->rw[i] = sample_weight[r];
        if (ysparse)
            ws->ys[i] = ysparse[r];
        else
            memcpy(ws->yd + (size_t)i * ldy, ydense + (size_t)r * ldy, (size_t)ldy * sizeof(float));
    }
}

/* This thread's rows [lo, hi) of a batch of `rows` rows in the row-local
 * phase: the learned split for full batches, else an even split. Any split
 * gives the same results (every row is computed the same way); only the
 * time the threads wait for each other at the barrier depends on it. */
static void my_rows(const cdnn_workspace *ws, int rows, int bs, long *lo, long *hi)
{
    int me = cdnn_team_rank();
    if (rows == bs && ws->split_nt == cdnn_team_size()) {
        *lo = ws->split[me];
        *hi = ws->split[me + 1];
    } else {
        cdnn_team_range(rows, lo, hi);
    }
}

/* Thread 0, after the middle barrier of a full batch: move rows from the
 * threads that were slow in the row-local phase to those that were fast.
 * On a shared machine one core is often slowed down by another tenant of
 * the same physical core; the even split would make the other thread wait. */
static void learn_split(cdnn_workspace *ws, int bs, int64_t t)
{
    const int nt = cdnn_team_size();
    if (nt < 2) return;
    double total = 0.0;
    if (ws->split_nt != nt) { /* first full batch at this thread count: start from even */
        for (int i = 0; i < nt; i++) ws->speed[i] = 0.0;
    }
    for (int i = 0; i < nt; i++) {
        if (ws->sec_per_row[i] <= 0.0) return; /* a thread with no rows or no time: keep the split */
        double v = 1.0 / ws->sec_per_row[i];
        /* smooth over ~8 steps: the split follows the machine, not one noisy step */
        ws->speed[i] = ws->speed[i] > 0.0 ? 0.875 * ws->speed[i] + 0.125 * v : v;
        total += ws->speed[i];
    }
    double cum = 0.0;
    const int next = (int)((t + 1) & 1); /* read by step t + 1, after the barrier that ends this one */
    float *share = ws->share + (size_t)next * (ws->threads + 1);
    ws->split[0] = 0;
    share[0] = 0.0f;
    for (int i = 0; i < nt; i++) {
        cum += ws->speed[i];
        share[i + 1] = i == nt - 1 ? 1.0f : (float)(cum / total);
        int b = i == nt - 1 ? bs : (int)(bs * cum / total + 0.5);
        if (b < ws->split[i]) b = ws->split[i];
        ws->split[i + 1] = b;
    }
    ws->split_nt = nt;
    ws->share_nt[next] = nt;
}

/* Rows of the batch that starts at row `start` of n (the last one may be shorter). */
static int batch_rows(int64_t n, int64_t start, int bs)
{
    return (int)(n - start < bs ? n - start : bs);
}

int cdnn_train_run(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n, const int32_t *ysparse,
                   const float *ydense, int ldy, const int32_t *perm, int64_t first, int n_batches, int bs,
                   int64_t step0, uint64_t seed, double *batch_loss, double *batch_correct, int threads,
                   int stop_nonfinite_loss, const float *sample_weight, float *outputs)
{
    const int in = net->layers[0].in;
    const int units = net->layers[net->n_layers - 1].units;
    const float drop0 = net->layers[0].in_drop;
    int nt = threads > 0 ? threads : cdnn_get_num_threads();
    if (nt > ws->threads) nt = ws->threads;
    if (step_flops(net, bs) < TRAIN_SERIAL_FLOPS) nt = 1;
    /* copies laid out for another micro-kernel width (a SIMD path chosen since) are not used */
    /* the whole-gradient path updates W in place (no packed copies to keep current) */
    const int whole = needs_whole(net);
    const int packed = !whole && ws->packed_nr == cdnn_simd_current()->nr;
    /* the step of this run whose batch holds a NaN or an infinity (-1: none yet) */
    int bad_batch = -1;
    /* with stop_nonfinite_loss, the step whose loss was NaN or infinite (-1: none yet) */
    int bad_loss = -1;
    for (int l = 0; l < net->n_layers; l++) ws->lb[l].blocks = combined_in_blocks(net, ws, l, cdnn_simd_current()->nr);
    (void)n;

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        unsigned fp_state = cdnn_flush_denormals_begin();
        /* the packed copies follow W only while this run trains it (it may have
     * been set from Python since): pack them afresh once per run. During the
     * run, a layer with a packed copy of W keeps W's values there: the
     * optimizer updates the copy (the forward product's operand) rather than
     * W and a second copy (7% of a BIG-b128 epoch), and W is written back at
     * the end of the run */
        if (packed) {
            packed_copies_team(net, ws, 1);
            cdnn_team_barrier();
        }
        for (int j = 0; j < n_batches; j++) {
            int64_t start = (first + j) * (int64_t)bs;
            int rows = batch_rows(n, start, bs);
            int64_t t = step0 + j + 1;
            long lo, hi;
            my_rows(ws, rows, bs, &lo, &hi);
            /* every thread counts them (the batch's labels, not only its rows'): no barrier */
            const int valid = cdnn_loss_valid_rows(net->loss, &net->loss_opts, ysparse, perm + start, rows);
            if (ws->lb[0].mid) {
                /* Even and odd steps gather into two buffers: each thread joins
             * the gather of the next batch as soon as it is done with this
             * step's gradients (while the others may still read this batch),
             * so the step's last barrier also ends the gather. */
                float *x0 = j & 1 ? ws->din_odd : ws->lb[0].din;
                if (j == 0) {
                    gather_team(x0, X, in, perm + start, rows, drop0, dropout_key(seed, t, 0), &bad_batch, j);
                    cdnn_team_barrier();
                }
                if (bad_batch_of(&bad_batch) == j) break; /* gathered before the barrier that ended the last step */
                /* the partial products of every row; the layers above need both
             * partials of their rows */
                depth_parts_team(net, ws, 0, x0, rows, packed, ws->pack + ws->pack_per * cdnn_team_rank());
                cdnn_team_barrier();
                double t_start = cdnn_wtime();
                gather_labels(ws, ysparse, ydense, ldy, sample_weight, perm + start, lo, hi);
                train_step_team(net, ws, x0, rows, (int)lo, (int)hi, t, seed, cdnn_wtime() - t_start, packed,
                                &bad_batch, j, valid, sample_weight != NULL, whole);
                if (j + 1 < n_batches)
                    gather_team(j & 1 ? ws->lb[0].din : ws->din_odd, X, in, perm + start + bs,
                                batch_rows(n, start + bs, bs), drop0, dropout_key(seed, t + 1, 0), &bad_batch, j + 1);
            } else {
                /* gather this thread's rows of the batch (and their labels), with input dropout if any;
             * no barrier: each thread goes on with the rows it gathered */
                double t_start = cdnn_wtime();
                gather_labels(ws, ysparse, ydense, ldy, sample_weight, perm + start, lo, hi);
                if (!gather_x(ws->lb[0].din, X, in, perm + start, lo, hi, drop0, dropout_key(seed, t, 0)))
                    mark_bad_batch(&bad_batch, j);
                if (!train_step_team(net, ws, ws->lb[0].din, rows, (int)lo, (int)hi, t, seed, cdnn_wtime() - t_start,
                                     packed, &bad_batch, j, valid, sample_weight != NULL, whole))
                    break;
            }
            /* this thread's rows of the step's forward outputs, for metrics computed outside C: the
         * last layer is never split in depth nor kept in blocks, and nothing writes its output
         * between the forward pass and the next step's */
            if (outputs && hi > lo)
                memcpy(outputs + ((size_t)j * bs + lo) * units, ws->lb[net->n_layers - 1].act + (size_t)lo * units,
                       (size_t)(hi - lo) * units * sizeof(float));
            if (cdnn_team_rank() == 0) {
                if (rows == bs) learn_split(ws, bs, t); /* published by the barrier that ends the step */
                /* the per-row losses are complete since the step's middle barrier */
                double l = 0.0, c = 0.0;
                for (int i = 0; i < rows; i++) {
                    l += ws->row_loss[i];
                    c += ws->row_correct[i];
                }
                /* the batch's mean is over its valid rows (0 if none, as Keras' divide_no_nan): as rows' worth */
                if (valid != rows) l = valid ? l * rows / valid : 0.0;
                /* Keras adds the regularization penalties (at the weights before the update) to the batch's mean loss */
                if (whole)
                    for (int v = 0; v < 2 * net->n_layers; v++) l += ws->var_penalty[v] * rows;
                batch_loss[j] = l;
                batch_correct[j] = c;
                if (stop_nonfinite_loss && !isfinite(l)) mark_bad_batch(&bad_loss, j);
            }
            cdnn_team_barrier();
            if (bad_batch_of(&bad_loss) == j) break; /* after this step's update, as Keras' TerminateOnNaN */
        }
        /* every update is done (the step's last barrier, or the middle one of a step stopped before its update) */
        if (packed) packed_copies_team(net, ws, 0);
        cdnn_flush_denormals_end(fp_state);
    }
    /* act is in blocks until the next step overwrites it: nothing outside a run reads it, nor the flags */
    for (int l = 0; l < net->n_layers; l++) ws->lb[l].blocks = 0;
    /* a loss stop ends the run before the next batch's input is checked */
    return bad_loss >= 0 ? bad_loss + 1 : bad_batch >= 0 ? bad_batch : n_batches;
}

/* Finiteness of one block: a float is NaN or infinite iff its exponent bits are all ones. */
CDNN_VECTOR_CLONES
static int block_finite(const uint32_t *u, size_t n)
{
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    return !bad;
}

/* Team, rows of W split over it, no barrier: W packed whole into the copy forward_pw gives for `packed`, in
 * every layer that has one (a depth-split layer too: inference computes its whole product, which costs no partial sum
 * and no short depth slice at the split; a training run packs its copies afresh). */
static void predict_pack_team(const cdnn_net *net, cdnn_workspace *ws, int packed)
{
    for (int l = 0; l < net->n_layers; l++) {
        const cdnn_layer *ly = &net->layers[l];
        float *pw = forward_pw(&ws->lb[l], packed);
        if (!pw) continue;
        long lo, hi;
        cdnn_team_range(ly->in, &lo, &hi);
        cdnn_pack_rows(ly->W, ly->in, ly->units, (int)lo, (int)hi, 0, ly->units, pw, NULL);
    }
}

/* One thread's share of a predict (team or alone): every chunk of `chunk` rows, this thread's rows of
 * each, with W's packed copies (packed first) where `packed`; with labels, the loss and correctness
 * sums into *ls and *cs (by rank 0, between barriers). With `check` (without labels), each piece's rows
 * of X are checked for NaN and infinity right before the forward pass reads them (from cache then): the
 * first that has one sets *bad, and every thread stops at its next piece. */
static void predict_team(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n, int chunk, int packed,
                         float *out, const int32_t *ysparse, const float *ydense, int ldy, int labelled,
                         const float *sample_weight, double *ls, double *cs, int64_t *next, int check, int *bad)
{
    const int L = net->n_layers, in = net->layers[0].in, units = net->layers[L - 1].units;
    unsigned fp_state = cdnn_flush_denormals_begin();
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    if (packed) {
        predict_pack_team(net, ws, packed);
        cdnn_team_barrier();
    }
    if (!labelled) {
        /* Without labels, pieces of at most CDNN_PREDICT_PIECE_ROWS rows of a thread's share of a chunk,
         * taken in turn from the shared counter *next (rows do not depend on each other): a thread
         * that the machine's load deschedules delays the call by its piece at most, not by its half
         * of the rows, and a piece's activations stay in L2 from one layer to the next. Each thread
         * computes its pieces in its own rows of the workspace, [r0, r0 + piece). A chunk of fewer rows than
         * the team's pieces is one piece per thread, however many rows that is: rounded down to whole
         * micro-panels, 32 rows on 2 threads were pieces of 12, 12 and 8, the last one after a first (and
         * on 1 thread 30 and 2, W read twice). */
        const int mr = cdnn_simd_current()->mr, team = cdnn_team_size();
        int piece = (chunk + team - 1) / team;
        if (piece > CDNN_PREDICT_PIECE_ROWS) piece = CDNN_PREDICT_PIECE_ROWS - CDNN_PREDICT_PIECE_ROWS % mr;
        if (piece > ws->max_batch / team) piece = ws->max_batch / team;
        if (piece < 1) piece = 1;
        const int r0 = cdnn_team_rank() * piece;
        for (;;) {
            int64_t start;
#ifdef _OPENMP
#pragma omp atomic capture
#endif
            {
                start = *next;
                *next += piece;
            }
            if (start >= n || (check && bad_batch_of(bad) >= 0)) break;
            const int len = (int)(n - start < piece ? n - start : piece);
            if (check && !block_finite((const uint32_t *)(X + (size_t)start * in), (size_t)len * in)) {
                mark_bad_batch(bad, 0);
                break;
            }
            /* X's and out's rows [start, start + len) where forward_rows reads and writes rows [r0, r0 + len) */
            const float *x = (const float *)((uintptr_t)(X + (size_t)start * in) - (size_t)r0 * in * sizeof(float));
            float *o = (float *)((uintptr_t)(out + (size_t)start * units) - (size_t)r0 * units * sizeof(float));
            forward_rows(net, ws, 0, x, r0 + len, r0, r0 + len, o, 0, 0, 0, packed, 0, NULL, pack);
        }
        cdnn_flush_denormals_end(fp_state);
        return;
    }
    /* Each thread owns the same workspace rows in every chunk (the last,
     * shorter one included): without labels there is no barrier between
     * chunks, and a thread may be one chunk ahead of another. */
    long own_lo, own_hi;
    cdnn_team_range(chunk, &own_lo, &own_hi);
    for (int64_t start = 0; start < n; start += chunk) {
        int rows = batch_rows(n, start, chunk);
        long lo = own_lo < rows ? own_lo : rows, hi = own_hi < rows ? own_hi : rows;
        float *o = out + (size_t)start * units;
        forward_rows(net, ws, 0, X + (size_t)start * in, rows, (int)lo, (int)hi, o, 0, 0, 0, packed, 0, NULL, pack);
        if (labelled) {
            const cdnn_layer *top = &net->layers[L - 1];
            cdnn_loss_rows(net->loss, net->metric, top->act, top->act_args, net->from_logits, (int)lo, (int)hi, units,
                           o, ws->lb[L - 1].z, ysparse ? ysparse + start : NULL,
                           ydense ? ydense + (size_t)start * ldy : NULL, ldy, rows, NULL, ws->row_loss, ws->row_correct,
                           &net->loss_opts, sample_weight ? sample_weight + start : NULL);
            cdnn_team_barrier();
            if (cdnn_team_rank() == 0) {
                double l = 0.0;
                const int valid =
                    cdnn_loss_valid_rows(net->loss, &net->loss_opts, ysparse ? ysparse + start : NULL, NULL, rows);
                for (int i = 0; i < rows; i++) {
                    l += ws->row_loss[i];
                    *cs += ws->row_correct[i];
                }
                *ls += valid == rows ? l : (valid ? l * rows / valid : 0.0);
            }
            cdnn_team_barrier();
        }
    }
    cdnn_flush_denormals_end(fp_state);
}

/* Whether layer l of a predict of few rows is split in columns over the team. */
static int row_split_layer(const cdnn_layer *ly)
{
    if (cdnn_act_rowwise(ly->act)) return 0;
    return cdnn_row_split_mode() == 2 || (long)ly->in * ly->units >= CDNN_ROW_SPLIT_MIN_WEIGHTS;
}

/* One thread's share of a predict of `rows` (<= CDNN_SPLIT_MAX_ROWS) rows: each split layer's columns in
 * turn (the whole product, as forward_rows without a team), the other layers on rank 0; a barrier
 * before each layer that reads another thread's output. The sums are forward_rows' on one thread. */
static void predict_rows_split_team(const cdnn_net *net, cdnn_workspace *ws, const float *x, int rows, float *out)
{
    unsigned fp_state = cdnn_flush_denormals_begin();
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    const int nr = cdnn_simd_current()->nr, rank = cdnn_team_rank();
    const float *in = x;
    for (int l = 0; l < net->n_layers; l++) {
        const cdnn_layer *ly = &net->layers[l];
        layer_buf *b = &ws->lb[l];
        const int K = ly->in, N = ly->units;
        float *y = l == net->n_layers - 1 && out ? out : b->act;
        if (l > 0) cdnn_team_barrier(); /* the layer below's output, whole */
        if (!row_split_layer(ly)) {
            if (rank == 0) cdnn_dense_forward_rows(ly, 0, rows, in, y, b->z, NULL, pack);
        } else {
            int j0, j1;
            cdnn_team_columns(N, nr, &j0, &j1);
            if (j0 < j1) {
                cdnn_epilogue e = {0};
                e.kind = CDNN_EPI_BIAS_ACT;
                e.act = ly->act;
                e.act_args = ly->act_args;
                e.bias = ly->b;
                e.aux = b->z;
                e.ldaux = N;
                cdnn_gemm_rows_cols(0, 0, 0, rows, j0, j1, N, K, in, K, ly->W, N, NULL, y, N, 0, &e, pack);
            }
        }
        in = y;
    }
    cdnn_flush_denormals_end(fp_state);
}

/* Whether a predict of n rows (<= CDNN_SPLIT_MAX_ROWS, one chunk) on up to nt threads splits its layers in columns. */
static int row_split_wanted(const cdnn_net *net, const cdnn_workspace *ws, int64_t n, int nt)
{
    if (n > CDNN_SPLIT_MAX_ROWS || n > ws->max_batch || nt < 2 || cdnn_row_split_mode() == 1) return 0;
    for (int l = 0; l < net->n_layers; l++)
        if (row_split_layer(&net->layers[l])) return 1;
    return 0;
}

int cdnn_predict(const cdnn_net *net, cdnn_workspace *ws, const float *X, int64_t n, float *out, const int32_t *ysparse,
                 const float *ydense, int ldy, double *loss_sum, double *correct_sum, const float *sample_weight,
                 int check_finite)
{
    const int bs = ws->max_batch;
    const int labelled = loss_sum != NULL;
    const size_t in = (size_t)net->layers[0].in;
    /* Chunks of at most bs rows, as even as their count allows (no short last chunk to run at a
     * poorer split), each thread's share of one whole micro-panels of rows where bs allows (one chunk:
     * all n rows, shared as they go); with labels exactly bs, the loss's batch (a mean over each batch's
     * valid rows). */
    const int64_t n_chunks = (n + bs - 1) / bs;
    int chunk = labelled ? bs : (int)((n + n_chunks - 1) / n_chunks);
    int nt = cdnn_get_num_threads();
    if (nt > ws->threads) nt = ws->threads;
    cdnn_chooser *ch = NULL; /* without labels: 1 or 2 threads chosen by timing (seconds per row) */
    int split = 0;
    if (!labelled && row_split_wanted(net, ws, n, nt)) {
        ch = &ws->one_row;
        split = cdnn_choose(ch);
        nt = 1;
    } else if (step_flops(net, n < chunk ? (int)n : chunk) / 3 < CDNN_PREDICT_SERIAL_FLOPS) {
        /* (forward flops of one chunk: a third of a training step's) */
        if (!labelled && nt > 1 && n > 1) {
            ch = &ws->small;
            nt = cdnn_choose(ch) ? 2 : 1;
        } else
            nt = 1;
    }
    if (chunk < bs && n_chunks > 1) {
        const int unit = cdnn_simd_current()->mr * nt;
        chunk = (chunk + unit - 1) / unit * unit < bs ? (chunk + unit - 1) / unit * unit : bs;
    }
    /* see forward_pw; not into copies laid out for another micro-kernel width (a SIMD path chosen since) */
    int packed = 0;
    const int64_t per_thread = (n < chunk ? n : chunk) / nt;
    if (ws->packed_nr == cdnn_simd_current()->nr)
        for (int l = 0; l < net->n_layers; l++) {
            if (ws->lb[l].pw && per_thread >= CDNN_PREDICT_PACK_MIN_ROWS && packed < 1) packed = 1;
            if (ws->lb[l].pwi && n / nt >= CDNN_PREDICT_PACK_OWN_MIN_ROWS) packed = 2; /* (once per call) */
        }
    double ls = 0.0, cs = 0.0;
    int64_t next = 0; /* the next row a thread takes (without labels) */
    int bad = -1;     /* set (to 0) by the thread that finds a value of X not finite */
    const double t0 = cdnn_wtime();
    /* a few rows (the column split) or labels (barriers per chunk): X checked whole before */
    if (check_finite && (split || labelled)) {
        if (!cdnn_all_finite(X, n * (int64_t)in)) return 0;
        check_finite = 0;
    }
#ifdef _OPENMP
    if (split) {
#pragma omp parallel num_threads(2)
        predict_rows_split_team(net, ws, X, (int)n, out);
    } else if (nt > 1) {
#pragma omp parallel num_threads(nt)
        predict_team(net, ws, X, n, chunk, packed, out, ysparse, ydense, ldy, labelled, sample_weight, &ls, &cs, &next,
                     check_finite, &bad);
    } else
#endif
        /* alone: no parallel region, so OpenMP's threads are neither woken nor waited for */
        predict_team(net, ws, X, n, chunk, packed, out, ysparse, ydense, ldy, labelled, sample_weight, &ls, &cs, &next,
                     check_finite, &bad);
    if (bad >= 0) return 0;
    if (ch) cdnn_chooser_record(ch, split || nt > 1, (cdnn_wtime() - t0) / (double)n);
    if (labelled) {
        *loss_sum = ls;
        *correct_sum = cs;
    }
    return 1;
}

/* Blocks of the finiteness scan: large enough to stream, small enough to share. */
#define FINITE_BLOCK (1L << 16)

int cdnn_all_finite(const float *x, int64_t n)
{
    const uint32_t *u = (const uint32_t *)x;
    const long blocks = (long)((n + FINITE_BLOCK - 1) / FINITE_BLOCK);
    const int nt = cdnn_get_num_threads();
    if (blocks < 2 * nt) return block_finite(u, (size_t)n); /* one thread's work: no parallel region */
    int ok = 1;
#ifdef _OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) reduction(&& : ok)
#endif
    for (long b = 0; b < blocks; b++) {
        int64_t lo = (int64_t)b * FINITE_BLOCK, len = n - lo < FINITE_BLOCK ? n - lo : FINITE_BLOCK;
        ok = ok && block_finite(u + lo, (size_t)len);
    }
    return ok;
}
