/* graph.c - the graph executor: the training run and inference of a
 * network of nodes (graph.h) in topological order.
 *
 * One OpenMP parallel region spans a whole run of mini-batches, as in the
 * chain (train.c). A step: each thread gathers its own samples of every
 * input (and their labels), carries them forward node by node, computes
 * each output's loss and gradient, and carries the gradients back node by
 * node, all row-local, except BatchNormalization in training, whose batch
 * statistics (forward) and gradient sums (backward) need every row: a
 * barrier, the team's column reduction, a barrier. Then the middle barrier
 * (where a batch holding a NaN or an infinity stops the run, nothing
 * updated), the team phase (each Dense's dW = X^T dZ with the optimizer
 * applied to each finished row panel, db, BatchNormalization's moving
 * statistics and gamma/beta, LayerNormalization's gamma/beta), and the
 * barrier that ends the step (a layer called more than once: each call's
 * gradient, a barrier, their sum in node order and one update, in
 * shared_updates_team). Every reduction splits columns over the team
 * and sums rows in order, so results do not depend on the thread count.
 *
 * Gradients: node i's buffer g receives dL/d(value) from its consumers (and
 * from a loss on it that reads its value); the first contribution in a
 * fixed order (losses in output order, then consumers from the last node
 * down, inputs in order) writes, the others add. A Dense or Activation
 * node's own loss, when it reads the logits (fused softmax or sigmoid
 * cross-entropy), is dL/dz and is added after the activation's derivative.
 * Reshape nodes share their input's buffers (value and gradient): they cost
 * nothing. All buffers are laid out when the workspace is made: a step
 * allocates nothing.
 */
#include "graph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Below this many flops per step a run stays on one thread (as the chain's TRAIN_SERIAL_FLOPS). */
#define GRAPH_SERIAL_FLOPS 400000L
/* Dense nodes with at least this many weights keep packed copies of W (when its rows are a multiple of
 * 256 bytes apart) and of W^T during a run, as the chain does (train.c's PACKED_MIN_WEIGHTS): else every
 * thread packs them again at every step. */
#define GRAPH_PACKED_MIN_WEIGHTS 16384L
/* The gather asks for a row's first lines this many rows before copying it. */
#define GATHER_AHEAD 4

typedef struct {
    int canon;         /* the node whose buffers this one uses (itself, but for reshapes) */
    int needs;         /* a trainable parameter at or below this node: its gradient is wanted */
    int affects;       /* some loss depends on its value */
    int run_bwd;       /* its backward pass runs */
    int n_contrib;     /* contributions its g receives in a step */
    int zloss;         /* outputs whose loss gives dL/dz of this Dense/Activation node */
    int first_zloss;   /* the first of them (index into outputs), or -1 */
    int *acc;          /* per input: 1 add into that input's g, 0 write it, -1 nothing */
    const float **xin; /* the inputs' values */
    int *widths;       /* concatenate: the inputs' widths */
    float *val;        /* value [B*rows, width] */
    float *z; /* dense: pre-activation (gelu, or a loss reading logits); gaussian dropout: its multipliers; else NULL */
    float *g; /* dL/d(value), or NULL if nothing contributes */
    float *dz;                   /* what the backward pass reads: dense/activation dL/dz, others dL/d(value) */
    float *mean, *var, *inv_std; /* batchnorm: [width] (training); layernorm: mean, inv_std [B*rows] */
    float *fixed_inv;            /* batchnorm: 1/sqrt(moving_var + eps), set at the start of a run or a predict */
    float *sum_g, *sum_gx;       /* batchnorm, layernorm: column sums of g and g*xhat [width] */
    float *dw, *db;              /* dense: gradients, when it trains */
    float *pw, *pwt;             /* dense: W and W^T packed as the forward and dX products' B during a run (or NULL);
                            while the node trains, W's values live in pw and are written back at the run's end */
    float *pwi;                  /* dense: W packed as the forward product's B for inference only, where no run keeps pw
                                    (its rows, units floats apart, straddle cache lines; or NULL) */
    int activity_acc;            /* activity regularizer's gradient: 1 add into the canon's g, 0 write it, -1 none */
    int shared;                  /* a call of a layer called more than once: shared_updates_team updates it */
    int next_share;              /* the next call of the same layer (a later node), or -1 */
    double *activity;            /* activity regularizer: each sample's penalty [B] (training), or NULL */
    int consumers, consumer;     /* the nodes that read its value (an input read twice counts twice), the last one */
    int fuse_bn, fuse_end;       /* predict, a Dense: the BatchNormalization its epilogue runs (or -1), the node whose
                                    value the epilogue writes (-1: no fusion) */
    int fused;                   /* predict: computed in an earlier Dense's epilogue */
    int split, barrier,
        written;  /* a predict of at most CDNN_SPLIT_MAX_ROWS samples (split_plan): a Dense's columns split over the
                                    team (2: then a barrier and its row-wise activation on rank 0), a barrier
                                    before it; the plan's barriers before its value was written, times 2, + split */
    double *dacc; /* prelu: the sums of alpha's gradient */
} node_buf;

typedef struct {
    int canon;                      /* the node whose g a value loss feeds */
    int zkind;                      /* 1: dL/dz of a Dense/Activation node (logits), 0: dL/d(value) */
    int acc;                        /* value loss: 1 add into g, 0 write it, -1 no gradient wanted */
    float *dzl;                     /* the loss gradient when it cannot go straight into g */
    int32_t *ys;                    /* gathered sparse labels [B*rows] */
    float *yd;                      /* gathered dense labels [B*rows, width] */
    float *w;                       /* gathered row weights [B*rows] (read when sample weights are given) */
    double *row_loss, *row_correct; /* [B*rows] */
} out_buf;

/* A trainable variable on the whole-gradient path: its values, gradient buffer, state and rules, as a
 * rows x cols matrix (a kernel [in, units]; a bias, gamma or beta [n] is n x 1, one vector for a norm). */
typedef struct {
    float *w, *g;
    cdnn_var_slots sl;
    const cdnn_param_rules *r;
    long rows, cols;
} graph_var;

struct cdnn_graph_ws {
    int max_batch, threads, n_nodes, n_outputs;
    int any_shared; /* some layer with weights is called more than once */
    long flops;     /* matrix-product flops of a full step */
    node_buf *nb;
    out_buf *ob;
    int32_t *rows; /* dataset row of each batch sample (mask keys) */
    int packed_nr; /* micro-kernel width the packed copies are laid out for */
    float *pack;
    size_t pack_per;
    /* the whole-gradient path: every variable that trains, in Keras' order (nodes in order, kernel before
     * bias, gamma before beta), each one's gradient sum of squares and penalty of the step */
    int n_vars;
    graph_var *vars;
    double *var_sumsq, *var_penalty;
    int has_rules; /* a variable that trains has a regularizer or a constraint */
    /* without labels and live nodes, the choice of predicts of at most CDNN_SPLIT_MAX_ROWS samples between
     * 1 thread and the column split, and of small predicts (below CDNN_PREDICT_SERIAL_FLOPS) between 1 thread
     * and 2 sharing the samples */
    cdnn_chooser one_row, small;
    int end_barrier; /* the split plan's barrier before the wanted values are copied out */
    void **allocs;   /* every block allocated for this workspace */
    int n_allocs, cap_allocs;
};

/* ---- layout --------------------------------------------------------------- */

/* A zeroed, 64-byte aligned block owned by ws (freed with it); NULL on OOM. */
static void *ws_take(cdnn_graph_ws *ws, size_t bytes)
{
    if (ws->n_allocs == ws->cap_allocs) {
        int cap = ws->cap_allocs ? 2 * ws->cap_allocs : 64;
        void **a = (void **)realloc(ws->allocs, (size_t)cap * sizeof(void *));
        if (!a) return NULL;
        ws->allocs = a;
        ws->cap_allocs = cap;
    }
    size_t sz = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, sz ? sz : 64);
    if (!p) return NULL;
    memset(p, 0, sz ? sz : 64);
    ws->allocs[ws->n_allocs++] = p;
    return p;
}

static int has_act(const cdnn_node *nd)
{
    return nd->op == CDNN_OP_DENSE || nd->op == CDNN_OP_ACTIVATION;
}

/* Whether the node's layer has an activity regularizer (a penalty on its value). */
static int has_activity(const cdnn_node *nd)
{
    return nd->activity_l1 != 0.0f || nd->activity_l2 != 0.0f;
}

/* Whether the op normalizes each row with saved per-row statistics and trains gamma/beta from row sums. */
static int row_norm(int op)
{
    return op == CDNN_OP_LAYERNORM || op == CDNN_OP_RMSNORM;
}

/* Whether node i holds weights that training updates. */
static int trains(const cdnn_node *nd)
{
    if (nd->frozen) return 0;
    if (nd->op == CDNN_OP_DENSE) return 1;
    if (nd->op == CDNN_OP_BATCHNORM || row_norm(nd->op)) return nd->gamma || nd->beta;
    return nd->op == CDNN_OP_PRELU;
}

/* The number of values of a norm's gamma/beta or PReLU's alpha. */
static long vec_len(const cdnn_node *nd)
{
    return nd->op == CDNN_OP_PRELU ? (long)nd->alpha_r * nd->alpha_c : nd->width;
}

static size_t node_size(const cdnn_node *nd)
{
    return (size_t)nd->rows * nd->width;
}

void cdnn_graph_ws_free(cdnn_graph_ws *ws)
{
    if (!ws) return;
    for (int k = 0; k < ws->n_allocs; k++) free(ws->allocs[k]);
    free(ws->allocs);
    free(ws);
}

#define TAKE(type, count) ((type *)ws_take(ws, (size_t)(count) * sizeof(type)))
#define TAKE_OR_FAIL(dst, type, count)                                                                                 \
    do {                                                                                                               \
        if (!((dst) = TAKE(type, count))) goto oom;                                                                    \
    } while (0)

/* Chain the calls of each shared layer (nodes whose share names the first call) in node order. */
static void link_shared(const cdnn_graph *g, cdnn_graph_ws *ws)
{
    for (int i = 0; i < g->n_nodes; i++) ws->nb[i].next_share = -1;
    for (int i = 0; i < g->n_nodes; i++) {
        const int j = g->nodes[i].share;
        if (j < 0) continue;
        int last = j;
        while (ws->nb[last].next_share >= 0) last = ws->nb[last].next_share;
        ws->nb[last].next_share = i;
        ws->nb[i].shared = ws->nb[j].shared = 1;
        ws->any_shared = 1;
    }
}

cdnn_graph_ws *cdnn_graph_ws_new(const cdnn_graph *g, int max_batch, int threads)
{
    const int N = g->n_nodes, O = g->n_outputs, B = max_batch;
    if (threads < 1) threads = 1;
    cdnn_graph_ws *ws = (cdnn_graph_ws *)calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->max_batch = B;
    ws->threads = threads;
    ws->n_nodes = N;
    ws->n_outputs = O;
    ws->pack_per = cdnn_gemm_pack_floats();
    ws->packed_nr = cdnn_simd_current()->nr;
    TAKE_OR_FAIL(ws->nb, node_buf, N);
    TAKE_OR_FAIL(ws->ob, out_buf, O > 0 ? O : 1);
    TAKE_OR_FAIL(ws->rows, int32_t, B);
    TAKE_OR_FAIL(ws->pack, float, ws->pack_per *threads);
    node_buf *nb = ws->nb;

    link_shared(g, ws);
    /* the plan: canonical buffers, which gradients are wanted, and by whom */
    for (int i = 0; i < N; i++) {
        const cdnn_node *nd = &g->nodes[i];
        nb[i].canon = nd->op == CDNN_OP_RESHAPE ? nb[nd->in[0]].canon : i;
        nb[i].needs = trains(nd);
        for (int k = 0; k < nd->n_in; k++) nb[i].needs |= nb[nd->in[k]].needs;
        nb[i].first_zloss = -1;
        if (nd->op == CDNN_OP_DENSE) ws->flops += 6L * B * nd->rows * nd->dense.in * nd->dense.units;
    }
    for (int o = 0; o < O; o++) {
        const cdnn_output *out = &g->outputs[o];
        if (out->loss < 0) continue;
        nb[out->node].affects = 1;
        const cdnn_node *nd = &g->nodes[out->node];
        ws->ob[o].canon = nb[out->node].canon;
        ws->ob[o].zkind = has_act(nd) && nd->act != CDNN_LINEAR;
        if (ws->ob[o].zkind) {
            nb[out->node].zloss++;
            if (nb[out->node].first_zloss < 0) nb[out->node].first_zloss = o;
        }
    }
    for (int i = 0; i < N; i++)
        if (has_activity(&g->nodes[i])) nb[i].affects = 1; /* its penalty is part of the loss */
    for (int i = N - 1; i >= 0; i--)
        if (nb[i].affects)
            for (int k = 0; k < g->nodes[i].n_in; k++) nb[g->nodes[i].in[k]].affects = 1;
    for (int i = 0; i < N; i++) {
        const int op = g->nodes[i].op;
        nb[i].run_bwd = nb[i].affects && nb[i].needs && op != CDNN_OP_INPUT && op != CDNN_OP_RESHAPE;
    }
    for (int i = 0; i < N; i++)
        for (int k = 0; k < g->nodes[i].n_in; k++) {
            nb[g->nodes[i].in[k]].consumers++;
            nb[g->nodes[i].in[k]].consumer = i;
        }
    /* contributions in their fixed order: value losses, then consumers from the last node down */
    for (int o = 0; o < O; o++) {
        out_buf *ob = &ws->ob[o];
        ob->acc = -1;
        if (g->outputs[o].loss < 0 || ob->zkind) continue;
        if (nb[ob->canon].needs && g->nodes[ob->canon].op != CDNN_OP_INPUT) ob->acc = nb[ob->canon].n_contrib++ > 0;
    }
    for (int i = N - 1; i >= 0; i--) {
        const cdnn_node *nd = &g->nodes[i];
        const int ci = nb[i].canon;
        /* the penalty's gradient is added just before the node's backward pass (after its consumers') */
        nb[i].activity_acc = -1;
        if (has_activity(nd) && nb[ci].needs && g->nodes[ci].op != CDNN_OP_INPUT)
            nb[i].activity_acc = nb[ci].n_contrib++ > 0;
        if (nd->n_in) TAKE_OR_FAIL(nb[i].acc, int, nd->n_in);
        for (int k = 0; k < nd->n_in; k++) {
            const int c = nb[nd->in[k]].canon;
            nb[i].acc[k] = -1;
            if (nb[i].run_bwd && nb[c].needs && g->nodes[c].op != CDNN_OP_INPUT) nb[i].acc[k] = nb[c].n_contrib++ > 0;
        }
    }

    /* buffers */
    for (int i = 0; i < N; i++) {
        const cdnn_node *nd = &g->nodes[i];
        node_buf *b = &nb[i];
        const size_t rows = (size_t)B * nd->rows, w = nd->width;
        if (b->canon != i) {
            b->val = nb[b->canon].val;
        } else {
            TAKE_OR_FAIL(b->val, float, rows *w);
        }
        if (nd->op == CDNN_OP_DENSE && (cdnn_act_grad_from_z(nd->act) || b->zloss)) TAKE_OR_FAIL(b->z, float, rows *w);
        if (b->canon == i && b->n_contrib) TAKE_OR_FAIL(b->g, float, rows *w);
        if (has_activity(nd)) TAKE_OR_FAIL(b->activity, double, (size_t)B);
        if (nd->op == CDNN_OP_BATCHNORM) {
            TAKE_OR_FAIL(b->mean, float, w);
            TAKE_OR_FAIL(b->var, float, w);
            TAKE_OR_FAIL(b->inv_std, float, w);
            TAKE_OR_FAIL(b->fixed_inv, float, w);
        }
        if (row_norm(nd->op) || nd->op == CDNN_OP_UNITNORM || nd->op == CDNN_OP_DOT) {
            /* rmsnorm's mean stays 0: the row sums read xhat = (x - 0) * inv_std */
            TAKE_OR_FAIL(b->mean, float, rows);
            TAKE_OR_FAIL(b->inv_std, float, rows);
        }
        if (nd->op == CDNN_OP_BATCHNORM || row_norm(nd->op)) {
            TAKE_OR_FAIL(b->sum_g, float, w);
            TAKE_OR_FAIL(b->sum_gx, float, w);
        }
        if (nd->op == CDNN_OP_PRELU) {
            TAKE_OR_FAIL(b->sum_gx, float, vec_len(nd));
            TAKE_OR_FAIL(b->dacc, double, vec_len(nd));
        }
        if (nd->op == CDNN_OP_GAUSSIAN_DROPOUT) TAKE_OR_FAIL(b->z, float, rows *w);
        if (nd->op == CDNN_OP_DENSE && (b->run_bwd || b->shared) && !nd->frozen) {
            TAKE_OR_FAIL(b->dw, float, (size_t)nd->dense.in * nd->dense.units);
            TAKE_OR_FAIL(b->db, float, w);
        }
        if (nd->op == CDNN_OP_DENSE && !b->shared && (long)nd->dense.in * nd->dense.units >= GRAPH_PACKED_MIN_WEIGHTS) {
            if (nd->dense.units % 64 == 0)
                TAKE_OR_FAIL(b->pw, float, cdnn_packed_floats(nd->dense.in, nd->dense.units));
            else if (nd->dense.units % 16 != 0)
                TAKE_OR_FAIL(b->pwi, float, cdnn_packed_floats(nd->dense.in, nd->dense.units));
            if (b->acc[0] >= 0) TAKE_OR_FAIL(b->pwt, float, cdnn_packed_floats(nd->dense.units, nd->dense.in));
        }
        if (nd->n_in) {
            TAKE_OR_FAIL(b->xin, const float *, nd->n_in);
            TAKE_OR_FAIL(b->widths, int, nd->n_in);
            for (int k = 0; k < nd->n_in; k++) {
                b->xin[k] = nb[nd->in[k]].val;
                b->widths[k] = g->nodes[nd->in[k]].width;
            }
        }
    }
    for (int o = 0; o < O; o++) {
        const cdnn_output *out = &g->outputs[o];
        const cdnn_node *nd = &g->nodes[out->node];
        out_buf *ob = &ws->ob[o];
        const size_t rows = (size_t)B * nd->rows;
        if (out->loss < 0) continue;
        TAKE_OR_FAIL(ob->row_loss, double, rows);
        TAKE_OR_FAIL(ob->row_correct, double, rows);
        TAKE_OR_FAIL(ob->w, float, rows);
        if (out->loss == CDNN_SPARSE_CCE)
            TAKE_OR_FAIL(ob->ys, int32_t, rows);
        else
            TAKE_OR_FAIL(ob->yd, float, rows * nd->width);
        if (ob->zkind || ob->acc == 1) TAKE_OR_FAIL(ob->dzl, float, rows * nd->width);
    }
    /* the variables of the whole-gradient path */
    TAKE_OR_FAIL(ws->vars, graph_var, 2 * (size_t)N);
    for (int i = 0; i < N; i++) {
        const cdnn_node *nd = &g->nodes[i];
        node_buf *b = &nb[i];
        if (!trains(nd) || nd->share >= 0) continue; /* a shared layer's variables once, at its first call */
        int runs = b->run_bwd;
        for (int c = b->next_share; c >= 0 && b->shared; c = nb[c].next_share) runs |= nb[c].run_bwd;
        if (!runs) continue;
        const long w = vec_len(nd);
        if (nd->op == CDNN_OP_DENSE) {
            const cdnn_layer *ly = &nd->dense;
            ws->vars[ws->n_vars++] = (graph_var){
                ly->W, b->dw, {ly->W1, ly->W2, ly->W3, ly->Wema, ly->Wacc}, &ly->kernel_rules, ly->in, ly->units};
            if (ly->b)
                ws->vars[ws->n_vars++] =
                    (graph_var){ly->b, b->db, {ly->b1, ly->b2, ly->b3, ly->bema, ly->bacc}, &ly->bias_rules, w, 1};
        } else {
            const long rows = nd->op == CDNN_OP_PRELU && nd->alpha_mat ? nd->alpha_r : w;
            if (nd->gamma)
                ws->vars[ws->n_vars++] = (graph_var){
                    nd->gamma,        b->sum_gx, {nd->gamma1, nd->gamma2, nd->gamma3, nd->gamma_ema, nd->gamma_acc},
                    &nd->gamma_rules, rows,      w / rows};
            if (nd->beta)
                ws->vars[ws->n_vars++] = (graph_var){
                    nd->beta,        b->sum_g, {nd->beta1, nd->beta2, nd->beta3, nd->beta_ema, nd->beta_acc},
                    &nd->beta_rules, w,        1};
        }
    }
    for (int v = 0; v < ws->n_vars; v++) {
        const cdnn_param_rules *r = ws->vars[v].r;
        if (r->l1 != 0.0f || r->l2 != 0.0f || r->orth_factor != 0.0f || r->constraint != CDNN_CONSTRAINT_NONE)
            ws->has_rules = 1;
    }
    TAKE_OR_FAIL(ws->var_sumsq, double, ws->n_vars + 1);
    TAKE_OR_FAIL(ws->var_penalty, double, ws->n_vars + 1);
    /* where each backward pass reads its gradient: its g, or a node trained only through logits losses
     * reads the first one's gradient in place (and adds the others to it) */
    for (int i = 0; i < N; i++) {
        node_buf *b = &nb[i];
        if (b->run_bwd) b->dz = b->n_contrib ? b->g : ws->ob[b->first_zloss].dzl;
    }
    return ws;
oom:
    cdnn_graph_ws_free(ws);
    return NULL;
}
#undef TAKE
#undef TAKE_OR_FAIL

/* ---- helpers ---------------------------------------------------------------- */

static uint64_t node_key(uint64_t seed, int64_t step, int node, uint64_t seed_offset)
{
    uint64_t k = seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(step + 1));
    k ^= 0xD1B54A32D192ED03ULL * (uint64_t)(node + 1);
    return k ^ (0xA24BAED4963EE407ULL * (seed_offset + 1));
}

static void mark_bad(int *flag, int j)
{
#ifdef _OPENMP
#pragma omp atomic write
#endif
    *flag = j;
}

static int read_flag(const int *flag)
{
    int j;
#ifdef _OPENMP
#pragma omp atomic read
#endif
    j = *flag;
    return j;
}

/* Ask for the first few cache lines of a row of n floats. */
static void prefetch_head(const float *row, size_t n)
{
    const char *p = (const char *)row;
    for (size_t o = 0; o < n * sizeof(float) && o < 4 * 64; o += 64) __builtin_prefetch(p + o, 0, 3);
}

/* Samples [lo, hi) of the batch whose dataset rows are rows_of[]: every input's rows, every output's
 * labels and (sw not NULL) its weights, a sample's weight on each of its rows. Returns 0 if an input value
 * is NaN or infinite. */
static int gather(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, const int32_t *const *ysparse,
                  const float *const *ydense, const float *const *sw, const int32_t *rows_of, long lo, long hi)
{
    int ok = 1;
    for (long s = lo; s < hi; s++) ws->rows[s] = rows_of[s];
    for (int k = 0; k < g->n_inputs; k++) {
        const cdnn_node *nd = &g->nodes[g->inputs[k]];
        const size_t n = node_size(nd);
        float *dst = ws->nb[g->inputs[k]].val;
        /* the rows are scattered over the dataset: ask for each row's first lines a few rows ahead, so
         * that they are not a memory latency each (as the chain's gather) */
        for (long s = lo; s < hi && s < lo + GATHER_AHEAD; s++) prefetch_head(xs[k] + (size_t)rows_of[s] * n, n);
        for (long s = lo; s < hi; s++) {
            if (s + GATHER_AHEAD < hi) prefetch_head(xs[k] + (size_t)rows_of[s + GATHER_AHEAD] * n, n);
            ok &= cdnn_copy_finite((uint32_t *)(dst + s * n), (const uint32_t *)(xs[k] + (size_t)rows_of[s] * n), n);
        }
    }
    for (int o = 0; o < g->n_outputs; o++) {
        const cdnn_output *out = &g->outputs[o];
        if (out->loss < 0) continue;
        const cdnn_node *nd = &g->nodes[out->node];
        out_buf *ob = &ws->ob[o];
        for (long s = lo; s < hi; s++) {
            const size_t r = (size_t)rows_of[s];
            if (ob->ys)
                memcpy(ob->ys + s * nd->rows, ysparse[o] + r * nd->rows, (size_t)nd->rows * sizeof(int32_t));
            else
                memcpy(ob->yd + s * node_size(nd), ydense[o] + r * node_size(nd), node_size(nd) * sizeof(float));
            if (sw && sw[o])
                for (int k = 0; k < nd->rows; k++) ob->w[s * nd->rows + k] = sw[o][r];
        }
    }
    return ok;
}

/* The activation's derivative folded into g (rows [r0, r1)): a is the node's output, z its pre-activation. */
static void dact_rows(const cdnn_node *nd, float *g, const float *a, const float *z, long r0, long r1)
{
    const int w = nd->width;
    if (r1 <= r0) return;
    if (cdnn_act_rowwise(nd->act))
        cdnn_rowwise_backward_rows(nd->act, g + r0 * w, w, a + r0 * w, w, (int)(r1 - r0), w);
    else
        cdnn_dact_tile(nd->act, nd->act_args, g + r0 * w, w, (cdnn_act_grad_from_z(nd->act) ? z : a) + r0 * w, w,
                       (int)(r1 - r0), w);
}

/* The pre-activation of a Dense/Activation node (what its derivative and a logits loss read). */
static const float *pre_activation(const cdnn_graph_ws *ws, const cdnn_node *nd, int i)
{
    return nd->op == CDNN_OP_DENSE ? ws->nb[i].z : ws->nb[i].xin[0];
}

/* ---- forward ---------------------------------------------------------------- */

/* The packed copy of W the forward product reads, by `packed`: none (0), the one a training run keeps (1: a
 * run, or a predict of enough samples), or that one or else the predict's own (2; packed at the predict's start). */
static const float *forward_pw(const node_buf *b, int packed)
{
    return !packed ? NULL : b->pw ? b->pw : packed > 1 ? b->pwi : NULL;
}

/* Node i's forward pass for samples [lo, hi) of a batch of `batch`; training: batch statistics and masks;
 * packed: read W from its packed copy (during a training run; in a predict, see forward_pw). With training and a batchnorm node in training mode, every thread of the team must make the call. */
static void forward_node(const cdnn_graph *g, cdnn_graph_ws *ws, int i, long lo, long hi, int batch, int training,
                         uint64_t seed, int64_t t, int packed, float *pack)
{
    const cdnn_node *nd = &g->nodes[i];
    node_buf *b = &ws->nb[i];
    const int R = nd->rows, w = nd->width;
    const int r0 = (int)(lo * R), r1 = (int)(hi * R);
    const float *x = nd->n_in ? b->xin[0] : NULL;
    switch (nd->op) {
    case CDNN_OP_DENSE:
        cdnn_dense_forward_rows(&nd->dense, r0, r1, x, b->val, b->z, forward_pw(b, packed), pack);
        break;
    case CDNN_OP_BATCHNORM:
        if ((training || nd->live) && !nd->frozen && !nd->inference) {
            cdnn_team_barrier(); /* every row of the input */
            cdnn_col_moments_team(x, batch * R, w, nd->epsilon, b->mean, b->var, b->inv_std);
            cdnn_team_barrier(); /* every column's statistics */
            if (!training) {     /* an inference call in training mode updates the moving statistics, as Keras */
                long c0, c1;
                cdnn_team_range(w, &c0, &c1);
                for (long j = c0; j < c1; j++) {
                    nd->moving_mean[j] = nd->moving_mean[j] * nd->momentum + b->mean[j] * (1.0f - nd->momentum);
                    nd->moving_var[j] = nd->moving_var[j] * nd->momentum + b->var[j] * (1.0f - nd->momentum);
                }
            }
        }
        if (r1 > r0) {
            const int batch_stats = (training || nd->live) && !nd->frozen && !nd->inference;
            cdnn_batchnorm_tile(x + (size_t)r0 * w, w, b->val + (size_t)r0 * w, w, r1 - r0, w,
                                batch_stats ? b->mean : nd->moving_mean, batch_stats ? b->inv_std : b->fixed_inv,
                                nd->gamma, nd->beta);
        }
        break;
    case CDNN_OP_LAYERNORM:
        cdnn_layernorm_rows(r0, r1, w, nd->epsilon, x, nd->gamma, nd->beta, b->mean, b->inv_std, b->val);
        break;
    case CDNN_OP_RMSNORM:
        cdnn_rownorm_rows(r0, r1, w, nd->epsilon, 1, x, nd->gamma, b->inv_std, b->val);
        break;
    case CDNN_OP_UNITNORM:
        cdnn_rownorm_rows(r0, r1, w, nd->epsilon, 0, x, NULL, b->inv_std, b->val);
        break;
    case CDNN_OP_DOT:
        cdnn_dot_rows(r0, r1, b->widths[0], nd->epsilon, x, b->xin[1], b->mean, b->inv_std, b->val);
        break;
    case CDNN_OP_ACTIVATION:
        if (r1 > r0) {
            memcpy(b->val + (size_t)r0 * w, x + (size_t)r0 * w, (size_t)(r1 - r0) * w * sizeof(float));
            if (cdnn_act_rowwise(nd->act))
                cdnn_rowwise_act_rows(nd->act, b->val + (size_t)r0 * w, w, r1 - r0, w);
            else
                cdnn_bias_act_tile(nd->act, nd->act_args, b->val + (size_t)r0 * w, w, r1 - r0, w, NULL, NULL, 0);
        }
        break;
    case CDNN_OP_AFFINE:
        cdnn_affine_rows(nd, r0, r1, x, b->val);
        break;
    case CDNN_OP_PRELU:
        cdnn_prelu_rows(nd, r0, r1, x, b->val);
        break;
    case CDNN_OP_DROPOUT:
    case CDNN_OP_GAUSSIAN_NOISE:
    case CDNN_OP_GAUSSIAN_DROPOUT:
    case CDNN_OP_ALPHA_DROPOUT:
        if (!training && !nd->live) {
            if (r1 > r0) memcpy(b->val + (size_t)r0 * w, x + (size_t)r0 * w, (size_t)(r1 - r0) * w * sizeof(float));
        } else if (nd->op == CDNN_OP_DROPOUT) {
            cdnn_dropout_samples(x, b->val, (int)lo, (int)hi, R * w, ws->rows, node_key(seed, t, i, nd->seed_offset),
                                 nd->rate);
        } else if (nd->op == CDNN_OP_GAUSSIAN_DROPOUT) { /* the multipliers kept for the backward pass */
            cdnn_noise_samples(b->z, b->z, (int)lo, (int)hi, R * w, ws->rows, node_key(seed, t, i, nd->seed_offset),
                               CDNN_NOISE_FACTOR, nd->rate);
            for (size_t e = (size_t)r0 * w; e < (size_t)r1 * w; e++) b->val[e] = x[e] * b->z[e];
        } else {
            const int kind = nd->op == CDNN_OP_ALPHA_DROPOUT ? CDNN_NOISE_ALPHA : CDNN_NOISE_ADD;
            cdnn_noise_samples(x, b->val, (int)lo, (int)hi, R * w, ws->rows, node_key(seed, t, i, nd->seed_offset),
                               kind, nd->rate);
        }
        break;
    case CDNN_OP_CONCATENATE:
        cdnn_concat_rows(nd->n_in, b->widths, r0, r1, b->xin, b->val, w);
        break;
    case CDNN_OP_ADD:
    case CDNN_OP_SUBTRACT:
    case CDNN_OP_MULTIPLY:
    case CDNN_OP_AVERAGE:
    case CDNN_OP_MAXIMUM:
    case CDNN_OP_MINIMUM:
        cdnn_merge_rows(nd, r0, r1, b->xin, b->val);
        break;
    default: /* input (gathered), reshape (its input's buffer) */
        break;
    }
}

/* ---- losses ----------------------------------------------------------------- */

/* Samples [lo, hi) of every output's loss (batch of `batch`): per-row loss and correctness (rows weighted by
 * the gathered weights of the outputs o with sw[o] not NULL), and with grads the weighted loss gradient
 * into the g or dzl it feeds. */
/* Output o's valid label rows in a batch (those not of ignore_class: all batch * rows without one), read
 * after the barrier that ends the forward pass (every thread's labels gathered). */
static int valid_rows(const cdnn_graph *g, const cdnn_graph_ws *ws, int o, int batch)
{
    const cdnn_output *out = &g->outputs[o];
    return cdnn_loss_valid_rows(out->loss, &out->opts, ws->ob[o].ys, NULL, batch * g->nodes[out->node].rows);
}

/* Output o's batch loss from its summed row losses l: the mean over its rows (over its valid rows with
 * ignore_class, 0 if none: Keras' divide_no_nan) times the batch's samples. */
static double output_batch_loss(const cdnn_graph *g, const cdnn_graph_ws *ws, int o, int batch, double l)
{
    const int R = g->nodes[g->outputs[o].node].rows;
    if (!g->outputs[o].opts.has_ignore) return l / R;
    const int valid = valid_rows(g, ws, o, batch);
    return valid ? l * batch / valid : 0.0;
}

static void losses_rows(const cdnn_graph *g, cdnn_graph_ws *ws, long lo, long hi, int batch, int grads,
                        const float *const *sw)
{
    for (int o = 0; o < g->n_outputs; o++) {
        const cdnn_output *out = &g->outputs[o];
        if (out->loss < 0) continue;
        const cdnn_node *nd = &g->nodes[out->node];
        const node_buf *b = &ws->nb[out->node];
        out_buf *ob = &ws->ob[o];
        const int R = nd->rows, w = nd->width, r0 = (int)(lo * R), r1 = (int)(hi * R);
        int act = CDNN_LINEAR;
        const float *z = b->val;
        float *dst = NULL;
        if (ob->zkind) {
            act = nd->act;
            z = pre_activation(ws, nd, out->node);
            if (grads && ws->nb[out->node].run_bwd) dst = ob->dzl;
        } else if (grads && ob->acc >= 0) {
            dst = ob->acc ? ob->dzl : ws->nb[ob->canon].g;
        }
        cdnn_loss_rows(out->loss, out->metric, act, nd->act_args, out->from_logits, r0, r1, w, b->val, z, ob->ys,
                       ob->yd, w, out->opts.has_ignore ? valid_rows(g, ws, o, batch) : batch * R, dst, ob->row_loss,
                       ob->row_correct, &out->opts, sw && sw[o] ? ob->w : NULL);
        if (!dst || r1 <= r0) continue;
        const size_t e0 = (size_t)r0 * w, n = (size_t)(r1 - r0) * w;
        if (!ob->zkind && ob->acc == 1)
            cdnn_axpy_rows(ws->nb[ob->canon].g + e0, dst + e0, (long)n, out->weight, 1);
        else if (out->weight != 1.0f)
            cdnn_axpy_rows(dst + e0, dst + e0, (long)n, out->weight, 0);
    }
}

/* ---- activity regularizers ------------------------------------------------------ */

/* Samples [lo, hi) of node i's activity penalty, l1 sum|a| + l2 sum a^2 over each sample's values (in
 * double, in a fixed order), into the node's per-sample buffer. */
static void activity_penalty_rows(const cdnn_node *nd, const node_buf *b, long lo, long hi)
{
    const size_t per = (size_t)nd->rows * nd->width;
    for (long s = lo; s < hi; s++) {
        const float *a = b->val + (size_t)s * per;
        double l1 = 0.0, l2 = 0.0;
        for (size_t k = 0; k < per; k++) {
            l1 += fabs((double)a[k]);
            l2 += (double)a[k] * a[k];
        }
        b->activity[s] = nd->activity_l1 * l1 + nd->activity_l2 * l2;
    }
}

/* Samples [lo, hi) of the penalty's gradient divided by the batch size (Keras divides the penalty by it),
 * (l1 sign(a) + 2 l2 a) / batch, written or added (acc) into dst, the gradient of the node's value. */
static void activity_grad_rows(const cdnn_node *nd, const float *val, float *dst, int acc, long lo, long hi, int batch)
{
    const size_t per = (size_t)nd->rows * nd->width, e0 = (size_t)lo * per, e1 = (size_t)hi * per;
    const float l1 = nd->activity_l1 / (float)batch, l2 = 2.0f * nd->activity_l2 / (float)batch;
    for (size_t k = e0; k < e1; k++) {
        const float a = val[k], sign = a > 0.0f ? 1.0f : (a < 0.0f ? -1.0f : 0.0f), d = l1 * sign + l2 * a;
        dst[k] = acc ? dst[k] + d : d;
    }
}

/* ---- backward --------------------------------------------------------------- */

/* Node i's backward pass for samples [lo, hi) of a batch of `batch` (row-local, but for batchnorm in
 * training: every thread of the team makes the call). */
static void backward_node(const cdnn_graph *g, cdnn_graph_ws *ws, int i, long lo, long hi, int batch, uint64_t seed,
                          int64_t t, int packed, float *pack)
{
    const cdnn_node *nd = &g->nodes[i];
    node_buf *b = &ws->nb[i];
    const int R = nd->rows, w = nd->width;
    const int r0 = (int)(lo * R), r1 = (int)(hi * R);
    const size_t e0 = (size_t)r0 * w, n = (size_t)(r1 - r0) * w;
    float *dz = b->dz;
    const float *x = nd->n_in ? b->xin[0] : NULL;
    float *dx0 = nd->n_in ? ws->nb[ws->nb[nd->in[0]].canon].g : NULL;
    const int acc0 = nd->n_in ? b->acc[0] : -1;

    if (has_act(nd)) {
        /* dL/dz: the consumers' dL/da times the derivative, plus the losses that read the logits */
        if (b->n_contrib) dact_rows(nd, dz, b->val, pre_activation(ws, nd, i), r0, r1);
        for (int o = 0; o < g->n_outputs && r1 > r0; o++) {
            const out_buf *ob = &ws->ob[o];
            if (g->outputs[o].node != i || g->outputs[o].loss < 0 || !ob->zkind || ob->dzl == dz) continue;
            cdnn_axpy_rows(dz + e0, ob->dzl + e0, (long)n, 1.0f, 1);
        }
    }
    switch (nd->op) {
    case CDNN_OP_DENSE:
        if (acc0 >= 0)
            cdnn_gemm_rows(0, 1, r0, r1, nd->dense.in, nd->dense.units, dz, nd->dense.units, nd->dense.W,
                           nd->dense.units, packed ? b->pwt : NULL, dx0, nd->dense.in, acc0, NULL, pack);
        break;
    case CDNN_OP_ACTIVATION:
    case CDNN_OP_GAUSSIAN_NOISE:
        if (acc0 >= 0 && r1 > r0) cdnn_axpy_rows(dx0 + e0, dz + e0, (long)n, 1.0f, acc0);
        break;
    case CDNN_OP_GAUSSIAN_DROPOUT:
        for (size_t e = e0; e < e0 + n && acc0 >= 0; e++) dx0[e] = acc0 ? dx0[e] + dz[e] * b->z[e] : dz[e] * b->z[e];
        break;
    case CDNN_OP_DROPOUT:
    case CDNN_OP_ALPHA_DROPOUT:
        if (acc0 >= 0) {
            const uint64_t key = node_key(seed, t, i, nd->seed_offset);
            /* acc: the mask on the gradient in place (read by nothing else), then added */
            float *dst = acc0 ? dz : dx0;
            if (nd->op == CDNN_OP_DROPOUT)
                cdnn_dropout_samples(dz, dst, (int)lo, (int)hi, R * w, ws->rows, key, nd->rate);
            else
                cdnn_noise_samples(dz, dst, (int)lo, (int)hi, R * w, ws->rows, key, CDNN_NOISE_ALPHA_GRAD, nd->rate);
            if (acc0 && r1 > r0) cdnn_axpy_rows(dx0 + e0, dz + e0, (long)n, 1.0f, 1);
        }
        break;
    case CDNN_OP_PRELU:
        if (acc0 >= 0) cdnn_prelu_backward_rows(nd, r0, r1, x, dz, dx0, acc0);
        break;
    case CDNN_OP_AFFINE:
        if (acc0 >= 0)
            for (long r = r0; r < r1; r++)
                for (int j = 0; j < w; j++) {
                    const float d = dz[(size_t)r * w + j] * (nd->scale_n == 1 ? nd->scale[0] : nd->scale[j]);
                    dx0[(size_t)r * w + j] = acc0 ? dx0[(size_t)r * w + j] + d : d;
                }
        break;
    case CDNN_OP_BATCHNORM:
        if (!nd->frozen && !nd->inference) {
            cdnn_team_barrier(); /* every row of the gradient */
            cdnn_norm_sums_team(x, dz, batch * R, w, b->mean, b->inv_std, 0, b->sum_g, b->sum_gx);
            cdnn_team_barrier(); /* every column's sums */
            if (acc0 >= 0)
                cdnn_batchnorm_backward_rows(r0, r1, batch * R, w, x, dz, b->mean, b->inv_std, nd->gamma, b->sum_g,
                                             b->sum_gx, dx0, acc0);
        } else if (acc0 >= 0) {
            cdnn_batchnorm_backward_fixed_rows(r0, r1, w, dz, b->fixed_inv, nd->gamma, dx0, acc0);
        }
        break;
    case CDNN_OP_LAYERNORM:
        if (acc0 >= 0) cdnn_layernorm_backward_rows(r0, r1, w, x, dz, b->mean, b->inv_std, nd->gamma, dx0, acc0);
        break;
    case CDNN_OP_RMSNORM:
        if (acc0 >= 0) cdnn_rownorm_backward_rows(r0, r1, w, nd->epsilon, 1, x, dz, b->inv_std, nd->gamma, dx0, acc0);
        break;
    case CDNN_OP_UNITNORM:
        if (acc0 >= 0) cdnn_rownorm_backward_rows(r0, r1, w, nd->epsilon, 0, x, dz, b->inv_std, NULL, dx0, acc0);
        break;
    case CDNN_OP_DOT:
        for (int k = 0; k < 2; k++)
            if (b->acc[k] >= 0)
                cdnn_dot_backward_rows(k, r0, r1, b->widths[0], nd->epsilon, x, b->xin[1], b->mean, b->inv_std, b->val,
                                       dz, ws->nb[ws->nb[nd->in[k]].canon].g, b->acc[k]);
        break;
    case CDNN_OP_CONCATENATE: {
        int c0 = 0;
        for (int k = 0; k < nd->n_in; k++) {
            if (b->acc[k] >= 0)
                cdnn_concat_backward_rows(b->widths[k], c0, r0, r1, dz, w, ws->nb[ws->nb[nd->in[k]].canon].g,
                                          b->acc[k]);
            c0 += b->widths[k];
        }
        break;
    }
    case CDNN_OP_ADD:
    case CDNN_OP_SUBTRACT:
    case CDNN_OP_MULTIPLY:
    case CDNN_OP_AVERAGE:
    case CDNN_OP_MAXIMUM:
    case CDNN_OP_MINIMUM:
        for (int k = 0; k < nd->n_in; k++)
            if (b->acc[k] >= 0)
                cdnn_merge_backward_rows(nd, k, r0, r1, b->xin, b->val, dz, ws->nb[ws->nb[nd->in[k]].canon].g,
                                         b->acc[k]);
        break;
    default:
        break;
    }
}

/* ---- the team phase: parameter updates ---------------------------------------- */

/* Team, no barrier: every update of the step, once every row's gradients are complete; with whole, only
 * the gradients (and the moving statistics): apply_whole_team updates. */
static void update_team(const cdnn_graph *g, cdnn_graph_ws *ws, int batch, cdnn_opt_step st, int packed, float *pack,
                        int whole)
{
    cdnn_opt_params none = {0};
    none.kind = CDNN_OPT_NONE;
    const cdnn_opt_params *opt = whole ? &none : &g->opt;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        const cdnn_node *nd = &g->nodes[i];
        node_buf *b = &ws->nb[i];
        const int rows = batch * nd->rows, w = nd->width;
        long lo, hi;
        if (b->shared) continue; /* shared_updates_team */
        if (nd->op == CDNN_OP_DENSE && b->run_bwd && !nd->frozen) {
            cdnn_dense_grads_team(&nd->dense, rows, b->xin[0], b->dz, b->dw, nd->dense.b ? b->db : NULL, opt, st,
                                  packed ? b->pw : NULL, packed ? b->pwt : NULL, NULL, pack);
        } else if (nd->op == CDNN_OP_BATCHNORM && !nd->frozen) {
            if (nd->inference && b->run_bwd) /* gamma's and beta's gradients, from the moving statistics */
                cdnn_norm_sums_team(b->xin[0], b->dz, rows, w, nd->moving_mean, b->fixed_inv, 0, b->sum_g, b->sum_gx);
            cdnn_team_range(w, &lo, &hi);
            const float m = nd->momentum, m1 = 1.0f - nd->momentum;
            for (long j = lo; j < hi && !nd->inference; j++) {
                nd->moving_mean[j] = nd->moving_mean[j] * m + b->mean[j] * m1;
                nd->moving_var[j] = nd->moving_var[j] * m + b->var[j] * m1;
            }
            if (b->run_bwd && hi > lo && !whole) {
                if (nd->gamma)
                    cdnn_opt_update(&g->opt, st, nd->gamma + lo, nd->gamma1 ? nd->gamma1 + lo : NULL,
                                    nd->gamma2 ? nd->gamma2 + lo : NULL, b->sum_gx + lo, hi - lo);
                if (nd->beta)
                    cdnn_opt_update(&g->opt, st, nd->beta + lo, nd->beta1 ? nd->beta1 + lo : NULL,
                                    nd->beta2 ? nd->beta2 + lo : NULL, b->sum_g + lo, hi - lo);
            }
        } else if (nd->op == CDNN_OP_PRELU && b->run_bwd && !nd->frozen) {
            cdnn_prelu_alpha_grad_team(nd, rows, b->xin[0], b->dz, b->dacc, b->sum_gx);
            cdnn_team_range(vec_len(nd), &lo, &hi); /* the values this thread summed */
            if (hi > lo && !whole)
                cdnn_opt_update(&g->opt, st, nd->gamma + lo, nd->gamma1 ? nd->gamma1 + lo : NULL,
                                nd->gamma2 ? nd->gamma2 + lo : NULL, b->sum_gx + lo, hi - lo);
        } else if (row_norm(nd->op) && b->run_bwd && !nd->frozen && (nd->gamma || nd->beta)) {
            cdnn_norm_sums_team(b->xin[0], b->dz, rows, w, b->mean, b->inv_std, 1, b->sum_g, b->sum_gx);
            cdnn_team_range(w, &lo, &hi); /* the columns this thread summed */
            if (hi > lo && !whole) {
                if (nd->gamma)
                    cdnn_opt_update(&g->opt, st, nd->gamma + lo, nd->gamma1 ? nd->gamma1 + lo : NULL,
                                    nd->gamma2 ? nd->gamma2 + lo : NULL, b->sum_gx + lo, hi - lo);
                if (nd->beta)
                    cdnn_opt_update(&g->opt, st, nd->beta + lo, nd->beta1 ? nd->beta1 + lo : NULL,
                                    nd->beta2 ? nd->beta2 + lo : NULL, b->sum_g + lo, hi - lo);
            }
        }
    }
}

/* Team, once every gradient of the step is complete (after a barrier): the optimizer step of every
 * variable by the chain's whole-gradient functions (regularizers, accumulation, clipping, the update,
 * the moving average, the constraint), each variable by one thread alone and the global norm summed over
 * the variables in their order, so that any number of threads gives the same bits; no barrier at the end. */
static void apply_whole_team(const cdnn_graph *g, cdnn_graph_ws *ws, cdnn_opt_step st)
{
    const int V = ws->n_vars;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int v = 0; v < V; v++) {
        const graph_var *x = &ws->vars[v];
        ws->var_sumsq[v] =
            cdnn_opt_prepare_grad(&g->opt, st, x->r, x->w, x->g, x->sl, x->rows, x->cols, &ws->var_penalty[v]);
    }
    cdnn_team_barrier();
    double global = 0.0;
    for (int v = 0; v < V; v++) global += ws->var_sumsq[v];
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1) nowait
#endif
    for (int v = 0; v < V; v++) {
        const graph_var *x = &ws->vars[v];
        cdnn_opt_apply_var(&g->opt, st, x->r, x->w, x->g, x->sl, x->rows, x->cols, ws->var_sumsq[v], global);
    }
}

/* Gradient k (0: dW or gamma's, 1: db or beta's) of shared-layer call node i, or NULL if it has none. */
static float *call_grad(const cdnn_graph *g, cdnn_graph_ws *ws, int i, int k)
{
    const cdnn_node *nd = &g->nodes[i];
    node_buf *b = &ws->nb[i];
    if (nd->op == CDNN_OP_DENSE) return k ? (nd->dense.b ? b->db : NULL) : b->dw;
    return k ? (nd->beta ? b->sum_g : NULL) : (nd->gamma ? b->sum_gx : NULL);
}

/* Team, with one barrier: the updates of every layer called more than once. Each call's gradient (no update),
 * then per layer, over the team's ranges of its values: the calls' gradients summed in node order into the
 * first call's buffer, one optimizer update (none with whole: apply_whole_team updates the first call's
 * variables), and for BatchNormalization the moving statistics updated once per call in training mode, in
 * node order (as Keras updates them call after call). */
static void shared_updates_team(const cdnn_graph *g, cdnn_graph_ws *ws, int batch, cdnn_opt_step st, float *pack,
                                int whole)
{
    const cdnn_opt_step none = {0};
    for (int i = 0; i < g->n_nodes; i++) {
        const cdnn_node *nd = &g->nodes[i];
        node_buf *b = &ws->nb[i];
        const int rows = batch * nd->rows, w = nd->width;
        if (!b->shared || nd->frozen || !b->run_bwd) continue;
        if (nd->op == CDNN_OP_DENSE)
            cdnn_dense_grads_team(&nd->dense, rows, b->xin[0], b->dz, b->dw, nd->dense.b ? b->db : NULL, NULL, none,
                                  NULL, NULL, NULL, pack);
        else if (row_norm(nd->op) && (nd->gamma || nd->beta))
            cdnn_norm_sums_team(b->xin[0], b->dz, rows, w, b->mean, b->inv_std, 1, b->sum_g, b->sum_gx);
        else if (nd->op == CDNN_OP_PRELU)
            cdnn_prelu_alpha_grad_team(nd, rows, b->xin[0], b->dz, b->dacc, b->sum_gx);
        else if (nd->op == CDNN_OP_BATCHNORM && nd->inference) /* in training mode its backward pass summed them */
            cdnn_norm_sums_team(b->xin[0], b->dz, rows, w, nd->moving_mean, b->fixed_inv, 0, b->sum_g, b->sum_gx);
    }
    cdnn_team_barrier(); /* every call's gradient */
    for (int i = 0; i < g->n_nodes; i++) {
        const cdnn_node *nd = &g->nodes[i];
        if (nd->share >= 0 || !ws->nb[i].shared || nd->frozen) continue;
        for (int k = 0; k < 2; k++) {
            float *dst = call_grad(g, ws, i, k);
            if (!dst) continue;
            const long n = nd->op == CDNN_OP_DENSE && k == 0 ? (long)nd->dense.in * nd->dense.units : vec_len(nd);
            long lo, hi;
            cdnn_team_range(n, &lo, &hi);
            int any = 0;
            for (int c = i; c >= 0; c = ws->nb[c].next_share) {
                if (!ws->nb[c].run_bwd) continue;
                const float *src = call_grad(g, ws, c, k);
                for (long e = lo; e < hi && src != dst; e++) dst[e] = any ? dst[e] + src[e] : src[e];
                any = 1;
            }
            if (!any || hi <= lo || whole) continue;
            float *v, *s1, *s2;
            if (nd->op == CDNN_OP_DENSE) {
                v = k ? nd->dense.b : nd->dense.W;
                s1 = k ? nd->dense.b1 : nd->dense.W1;
                s2 = k ? nd->dense.b2 : nd->dense.W2;
            } else {
                v = k ? nd->beta : nd->gamma;
                s1 = k ? nd->beta1 : nd->gamma1;
                s2 = k ? nd->beta2 : nd->gamma2;
            }
            cdnn_opt_update(&g->opt, st, v + lo, s1 ? s1 + lo : NULL, s2 ? s2 + lo : NULL, dst + lo, hi - lo);
        }
        if (nd->op == CDNN_OP_BATCHNORM) {
            long lo, hi;
            cdnn_team_range(nd->width, &lo, &hi);
            const float m = nd->momentum, m1 = 1.0f - nd->momentum;
            for (int c = i; c >= 0; c = ws->nb[c].next_share) {
                if (g->nodes[c].inference) continue;
                const node_buf *cb = &ws->nb[c];
                for (long j = lo; j < hi; j++) {
                    nd->moving_mean[j] = nd->moving_mean[j] * m + cb->mean[j] * m1;
                    nd->moving_var[j] = nd->moving_var[j] * m + cb->var[j] * m1;
                }
            }
        }
    }
}

/* Team, W's rows split, then a barrier: pack every Dense's W into its copies (pack), or write the W of those
 * that train back from its packed copy (!pack), at the end of a run that kept its values there. */
static void packed_copies_team(const cdnn_graph *g, cdnn_graph_ws *ws, int pack)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const cdnn_node *nd = &g->nodes[i];
        const node_buf *b = &ws->nb[i];
        long lo, hi;
        if (nd->op != CDNN_OP_DENSE || (!b->pw && !b->pwt)) continue;
        cdnn_team_range(nd->dense.in, &lo, &hi);
        if (pack)
            cdnn_pack_rows(nd->dense.W, nd->dense.in, nd->dense.units, (int)lo, (int)hi, 0, nd->dense.units, b->pw,
                           b->pwt);
        else if (b->pw && b->dw) /* it trained (a frozen W is left alone) */
            cdnn_unpack_rows(b->pw, nd->dense.in, nd->dense.units, (int)lo, (int)hi, nd->dense.W);
    }
    cdnn_team_barrier();
}

/* Team, W's rows split, then a barrier: W packed into the copy a predict reads (forward_pw) for `packed`. */
static void inference_copies_team(const cdnn_graph *g, cdnn_graph_ws *ws, int packed)
{
    for (int i = 0; i < g->n_nodes; i++) {
        const cdnn_node *nd = &g->nodes[i];
        float *pw = nd->op == CDNN_OP_DENSE ? (float *)forward_pw(&ws->nb[i], packed) : NULL;
        long lo, hi;
        if (!pw) continue;
        cdnn_team_range(nd->dense.in, &lo, &hi);
        cdnn_pack_rows(nd->dense.W, nd->dense.in, nd->dense.units, (int)lo, (int)hi, 0, nd->dense.units, pw, NULL);
    }
    cdnn_team_barrier();
}

/* Team: the inference statistics of every batchnorm node, from its moving variance; ends with a barrier. */
static void fixed_stats_team(const cdnn_graph *g, cdnn_graph_ws *ws)
{
    if (cdnn_team_rank() == 0)
        for (int i = 0; i < g->n_nodes; i++) {
            const cdnn_node *nd = &g->nodes[i];
            if (nd->op == CDNN_OP_BATCHNORM)
                cdnn_batchnorm_fixed_stats(nd->width, nd->moving_var, nd->epsilon, ws->nb[i].fixed_inv);
        }
    cdnn_team_barrier();
}

/* ---- inference fusion ----------------------------------------------------------- */

/* Whether a predict must hold node i's value: a model output, or a node of want. */
static int value_wanted(const cdnn_graph *g, int i, int n_want, const int *want)
{
    for (int o = 0; o < g->n_outputs; o++)
        if (g->outputs[o].node == i) return 1;
    for (int k = 0; k < n_want; k++)
        if (want[k] == i) return 1;
    return 0;
}

/* The sole reader of node i's value if it is an op node and i's value is not wanted, else -1. */
static int sole_reader(const cdnn_graph *g, const cdnn_graph_ws *ws, int i, int op, int n_want, const int *want)
{
    const node_buf *b = &ws->nb[i];
    if (b->consumers != 1 || g->nodes[b->consumer].op != op || value_wanted(g, i, n_want, want)) return -1;
    return b->consumer;
}

/* The fusions of a predict (g->fuse): a Dense without activation runs in its GEMM's epilogue the
 * BatchNormalization that alone reads its value, then the Activation that alone reads the result, with the
 * same operations in the same order as the separate passes (bit-identical values), skipping their memory
 * passes. A value the call wants, or a logits loss reads (labelled), is always computed. */
static void fuse_plan(const cdnn_graph *g, cdnn_graph_ws *ws, int n_want, const int *want, int labelled)
{
    for (int i = 0; i < g->n_nodes; i++) {
        ws->nb[i].fuse_bn = ws->nb[i].fuse_end = -1;
        ws->nb[i].fused = 0;
    }
    for (int i = 0; i < g->n_nodes && g->fuse; i++) {
        const cdnn_node *nd = &g->nodes[i];
        if (nd->op != CDNN_OP_DENSE || nd->act != CDNN_LINEAR) continue;
        int end = i;
        int bn = sole_reader(g, ws, i, CDNN_OP_BATCHNORM, n_want, want);
        if (bn >= 0 && g->nodes[bn].live) bn = -1; /* batch statistics: not an epilogue's */
        if (bn < 0 && sole_reader(g, ws, i, CDNN_OP_BATCHNORM, n_want, want) >= 0) continue;
        if (bn >= 0) end = bn;
        const int act = sole_reader(g, ws, end, CDNN_OP_ACTIVATION, n_want, want);
        if (act >= 0 && !(labelled && ws->nb[act].zloss)) end = act;
        if (end == i) continue;
        ws->nb[i].fuse_bn = bn;
        ws->nb[i].fuse_end = end;
        if (bn >= 0) ws->nb[bn].fused = 1;
        if (end != bn) ws->nb[end].fused = 1;
    }
}

void cdnn_graph_fusions(const cdnn_graph *g, cdnn_graph_ws *ws, int n_want, const int *want, int labelled, int *end)
{
    fuse_plan(g, ws, n_want, want, labelled);
    for (int i = 0; i < g->n_nodes; i++) end[i] = ws->nb[i].fuse_end;
}

/* Rows [r0, r1) and columns [j0, j1) of Dense node i's value, or of the last node its epilogue runs
 * (fuse_plan): product (from W's packed copy where `packed`), bias, BatchNormalization and activation, a
 * row-wise one only if `rowwise` (it needs every column). */
static void dense_block(const cdnn_graph *g, cdnn_graph_ws *ws, int i, int r0, int r1, int j0, int j1, int rowwise,
                        int packed, float *pack)
{
    const cdnn_node *nd = &g->nodes[i];
    const node_buf *b = &ws->nb[i];
    const int end = b->fuse_end >= 0 ? b->fuse_end : i, units = nd->dense.units;
    const cdnn_node *last = &g->nodes[end];
    const int act = last->op == CDNN_OP_BATCHNORM ? CDNN_LINEAR : last->act;
    float *y = ws->nb[end].val;
    cdnn_epilogue e = {0};
    e.kind = CDNN_EPI_BIAS_ACT;
    e.act = cdnn_act_rowwise(act) ? CDNN_LINEAR : act;
    e.act_args = last->act_args;
    e.bias = nd->dense.b;
    if (end == i) {
        e.aux = b->z;
        e.ldaux = units;
    }
    if (b->fuse_bn >= 0) {
        const cdnn_node *bn = &g->nodes[b->fuse_bn];
        e.bn_mean = bn->moving_mean;
        e.bn_inv_std = ws->nb[b->fuse_bn].fixed_inv;
        e.bn_gamma = bn->gamma;
        e.bn_beta = bn->beta;
    }
    cdnn_gemm_rows_cols(0, 0, r0, r1, j0, j1, units, nd->dense.in, b->xin[0], nd->dense.in, nd->dense.W, units,
                        forward_pw(b, packed), y, units, 0, &e, pack);
    if (rowwise && cdnn_act_rowwise(act) && r1 > r0)
        cdnn_rowwise_act_rows(act, y + (size_t)r0 * units, units, r1 - r0, units);
}

/* Samples [lo, hi) of every output node's value into outputs[o] (if not NULL), from sample row0 on. */
static void copy_outputs(const cdnn_graph *g, const cdnn_graph_ws *ws, float *const *outputs, size_t row0, long lo,
                         long hi)
{
    for (int o = 0; o < g->n_outputs && hi > lo; o++) {
        if (!outputs[o]) continue;
        const int node = g->outputs[o].node;
        const size_t sz = node_size(&g->nodes[node]);
        memcpy(outputs[o] + (row0 + (size_t)lo) * sz, ws->nb[node].val + (size_t)lo * sz,
               (size_t)(hi - lo) * sz * sizeof(float));
    }
}

/* Thread 0, after the middle barrier: batch j's losses and correctness per output, and the weighted total. */
static double sum_losses(const cdnn_graph *g, cdnn_graph_ws *ws, int batch, double *out_loss, double *out_correct,
                         int whole)
{
    double total = 0.0;
    for (int o = 0; o < g->n_outputs; o++) {
        const cdnn_output *out = &g->outputs[o];
        double l = 0.0, c = 0.0;
        if (out->loss >= 0) {
            const int R = g->nodes[out->node].rows;
            for (long r = 0; r < (long)batch * R; r++) {
                l += ws->ob[o].row_loss[r];
                c += ws->ob[o].row_correct[r];
            }
            /* a sample's loss is the mean over its rows (Keras' mean over every axis but the last) */
            l = output_batch_loss(g, ws, o, batch, l);
            c /= R;
            total += out->weight * l;
        }
        out_loss[o] = l;
        out_correct[o] = c;
    }
    /* the activity penalties: Keras adds each divided by the batch size to the batch's mean loss, so
     * the batch's summed loss gets them whole */
    for (int i = 0; i < g->n_nodes; i++)
        if (ws->nb[i].activity)
            for (int s = 0; s < batch; s++) total += ws->nb[i].activity[s];
    /* Keras adds the weight penalties (at the weights before the update) to the batch's mean loss */
    if (whole)
        for (int v = 0; v < ws->n_vars; v++) total += ws->var_penalty[v] * batch;
    return total;
}

int cdnn_graph_train_run(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n,
                         const int32_t *const *ysparse, const float *const *ydense, const int32_t *perm, int64_t first,
                         int n_batches, int bs, int64_t step0, uint64_t seed, double *batch_loss, double *out_loss,
                         double *out_correct, int threads, int stop_nonfinite_loss, const float *const *sample_weight,
                         float *const *outputs)
{
    int nt = threads > 0 ? threads : cdnn_get_num_threads();
    if (nt > ws->threads) nt = ws->threads;
    if (ws->flops / (ws->max_batch > 0 ? ws->max_batch : 1) * bs < GRAPH_SERIAL_FLOPS) nt = 1;
    int bad_batch = -1, bad_loss = -1;
    const int O = g->n_outputs;
    /* the whole-gradient path (an optimizer option reading whole variables, a regularizer or constraint):
     * gradients kept, then every variable updated in place (no packed copies to keep current) */
    const int whole = ws->has_rules || (ws->n_vars > 0 && cdnn_opt_needs_whole(&g->opt));
    /* copies laid out for another micro-kernel width (a SIMD path chosen since) are not used */
    const int packed = !whole && ws->packed_nr == cdnn_simd_current()->nr;

#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
    {
        unsigned fp_state = cdnn_flush_denormals_begin();
        float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
        fixed_stats_team(g, ws);
        /* W may have been set from Python since the last run: pack afresh */
        if (packed) packed_copies_team(g, ws, 1);
        for (int j = 0; j < n_batches; j++) {
            const int64_t start = (first + j) * (int64_t)bs;
            const int batch = (int)(n - start < bs ? n - start : bs);
            const int64_t t = step0 + j + 1;
            long lo, hi;
            cdnn_team_range(batch, &lo, &hi);
            if (!gather(g, ws, xs, ysparse, ydense, sample_weight, perm + start, lo, hi)) mark_bad(&bad_batch, j);
            for (int i = 0; i < g->n_nodes; i++) {
                forward_node(g, ws, i, lo, hi, batch, 1, seed, t, packed, pack);
                if (ws->nb[i].activity) activity_penalty_rows(&g->nodes[i], &ws->nb[i], lo, hi);
            }
            if (outputs) copy_outputs(g, ws, outputs, (size_t)j * bs, lo, hi);
            losses_rows(g, ws, lo, hi, batch, 1, sample_weight);
            for (int i = g->n_nodes - 1; i >= 0; i--) {
                const node_buf *b = &ws->nb[i];
                if (b->activity_acc >= 0)
                    activity_grad_rows(&g->nodes[i], b->val, ws->nb[b->canon].g, b->activity_acc, lo, hi, batch);
                if (b->run_bwd) backward_node(g, ws, i, lo, hi, batch, seed, t, packed, pack);
            }
            cdnn_team_barrier();
            if (read_flag(&bad_batch) == j) break; /* the same flag on every thread after the barrier */
            const cdnn_opt_step st = cdnn_opt_prepare(&g->opt, t);
            update_team(g, ws, batch, st, packed, pack, whole);
            if (ws->any_shared) shared_updates_team(g, ws, batch, st, pack, whole);
            if (whole) {
                cdnn_team_barrier(); /* every gradient complete */
                apply_whole_team(g, ws, st);
            }
            if (cdnn_team_rank() == 0) {
                batch_loss[j] = sum_losses(g, ws, batch, out_loss + (size_t)j * O, out_correct + (size_t)j * O, whole);
                if (stop_nonfinite_loss && !isfinite(batch_loss[j])) mark_bad(&bad_loss, j);
            }
            cdnn_team_barrier(); /* the next step reads the updated weights */
            if (read_flag(&bad_loss) == j) break;
        }
        /* every update is done (the step's last barrier, or the middle one of a step stopped before its update) */
        if (packed) packed_copies_team(g, ws, 0);
        cdnn_flush_denormals_end(fp_state);
    }
    return bad_loss >= 0 ? bad_loss + 1 : bad_batch >= 0 ? bad_batch : n_batches;
}

/* One thread's share of a predict (team or alone): every chunk of ws->max_batch samples, this thread's
 * samples of each, in pieces of at most CDNN_PREDICT_PIECE_ROWS samples without labels or live nodes (every node
 * for a piece, whose values stay in cache from one node to the next); with `packed`, Dense products from
 * W's packed copies, packed first; with labels, the sums per output into loss_sum/correct_sum (by rank 0,
 * between barriers). With `check` (only where nothing waits at a barrier after the first: no labels, no
 * live nodes), a piece's inputs are checked for NaN and infinity as they are copied in: the first thread
 * that finds one sets *bad, and every thread stops at its next piece. */
static void predict_team(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n, int bs,
                         uint64_t seed, int n_want, const int *want, float *const *outs, const int32_t *const *ysparse,
                         const float *const *ydense, const float *const *sample_weight, double *loss_sum,
                         double *correct_sum, int packed, int piece, int check, int *bad)
{
    const int O = g->n_outputs;
    unsigned fp_state = cdnn_flush_denormals_begin();
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    if (packed) inference_copies_team(g, ws, packed);
    fixed_stats_team(g, ws);
    /* each thread owns the same workspace samples in every chunk: without labels, no barrier between chunks */
    long own_lo, own_hi;
    cdnn_team_range(bs, &own_lo, &own_hi);
    for (int64_t start = 0; start < n; start += bs) {
        const int batch = (int)(n - start < bs ? n - start : bs);
        const long lo = own_lo < batch ? own_lo : batch, hi = own_hi < batch ? own_hi : batch;
        if (loss_sum)
            for (int o = 0; o < O; o++) {
                const cdnn_output *out = &g->outputs[o];
                if (out->loss < 0) continue;
                const cdnn_node *nd = &g->nodes[out->node];
                const size_t R = nd->rows, sz = node_size(nd);
                if (hi <= lo) continue;
                if (ws->ob[o].ys)
                    memcpy(ws->ob[o].ys + lo * R, ysparse[o] + ((size_t)start + lo) * R,
                           (size_t)(hi - lo) * R * sizeof(int32_t));
                else
                    memcpy(ws->ob[o].yd + lo * sz, ydense[o] + ((size_t)start + lo) * sz,
                           (size_t)(hi - lo) * sz * sizeof(float));
                if (sample_weight && sample_weight[o])
                    for (long r = lo; r < hi; r++)
                        for (size_t k = 0; k < R; k++) ws->ob[o].w[r * R + k] = sample_weight[o][start + r];
            }
        for (long p0 = lo;; p0 += piece) { /* at least once: a live BatchNormalization's barriers */
            const long p1 = hi - p0 < piece ? hi : p0 + piece;
            int ok = !check || read_flag(bad) < 0;
            for (int k = 0; k < g->n_inputs && ok; k++) {
                const size_t sz = node_size(&g->nodes[g->inputs[k]]);
                float *dst = ws->nb[g->inputs[k]].val + p0 * sz;
                const float *src = xs[k] + ((size_t)start + p0) * sz;
                if (p1 <= p0)
                    continue;
                else if (check)
                    ok = cdnn_copy_finite((uint32_t *)dst, (const uint32_t *)src, (size_t)(p1 - p0) * sz);
                else
                    memcpy(dst, src, (size_t)(p1 - p0) * sz * sizeof(float));
            }
            if (!ok) {
                mark_bad(bad, 0);
                goto done;
            }
            for (long s = p0; s < p1; s++) ws->rows[s] = (int32_t)s; /* live masks: keyed by the chunk and sample */
            for (int i = 0; i < g->n_nodes; i++) {
                if (ws->nb[i].fuse_end >= 0)
                    dense_block(g, ws, i, (int)p0 * g->nodes[i].rows, (int)p1 * g->nodes[i].rows, 0,
                                g->nodes[i].dense.units, 1, packed, pack);
                else if (!ws->nb[i].fused)
                    forward_node(g, ws, i, p0, p1, batch, 0, seed, start / bs, packed, pack);
            }
            for (int k = 0; k < n_want; k++) {
                const size_t sz = node_size(&g->nodes[want[k]]);
                if (p1 > p0)
                    memcpy(outs[k] + ((size_t)start + p0) * sz, ws->nb[want[k]].val + p0 * sz,
                           (size_t)(p1 - p0) * sz * sizeof(float));
            }
            if (p1 >= hi) break;
        }
        if (loss_sum) {
            losses_rows(g, ws, lo, hi, batch, 0, sample_weight);
            cdnn_team_barrier();
            if (cdnn_team_rank() == 0)
                for (int o = 0; o < O; o++) {
                    if (g->outputs[o].loss < 0) continue;
                    const int R = g->nodes[g->outputs[o].node].rows;
                    double l = 0.0, c = 0.0;
                    for (long r = 0; r < (long)batch * R; r++) {
                        l += ws->ob[o].row_loss[r];
                        c += ws->ob[o].row_correct[r];
                    }
                    loss_sum[o] += output_batch_loss(g, ws, o, batch, l);
                    correct_sum[o] += c / R;
                }
            cdnn_team_barrier();
        }
    }
done:
    cdnn_flush_denormals_end(fp_state);
}

/* Whether Dense node i of a predict of few samples is split in columns over the team. */
static int split_dense(const cdnn_graph *g, int i)
{
    const cdnn_node *nd = &g->nodes[i];
    return nd->op == CDNN_OP_DENSE &&
           (cdnn_row_split_mode() == 2 || (long)nd->dense.in * nd->dense.units >= CDNN_ROW_SPLIT_MIN_WEIGHTS);
}

/* The plan of a predict of <= CDNN_SPLIT_MAX_ROWS samples wanting nodes want (after fuse_plan): which Dense nodes split
 * their columns, and the barriers, before a node only where it reads a value written since the last one
 * by the other thread (a split node: by any thread). Returns whether any node splits. */
static int split_plan(const cdnn_graph *g, cdnn_graph_ws *ws, int n_want, const int *want)
{
    int any = 0, bars = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const cdnn_node *nd = &g->nodes[i];
        node_buf *b = &ws->nb[i];
        b->split = b->barrier = 0;
        if (b->fused) continue; /* written by its Dense; read by no other node than the Dense's fused ones */
        b->written = -1;
        const int end = b->fuse_end >= 0 ? b->fuse_end : i;
        if (split_dense(g, i)) {
            const int act = g->nodes[end].op == CDNN_OP_BATCHNORM ? CDNN_LINEAR : g->nodes[end].act;
            b->split = cdnn_act_rowwise(act) ? 2 : 1;
            any = 1;
        }
        for (int k = 0; k < nd->n_in && !b->barrier; k++) {
            const int w = ws->nb[ws->nb[nd->in[k]].canon].written;
            b->barrier = w >= 2 * bars && (b->split || w % 2);
        }
        bars += b->barrier;
        if (nd->op != CDNN_OP_INPUT) /* (inputs: written before the barrier of fixed_stats_team) */
            ws->nb[end].written = b->split == 1 ? 2 * bars + 1 : 2 * (bars + (b->split == 2));
        bars += b->split == 2;
    }
    ws->end_barrier = 0;
    for (int k = 0; k < n_want && !ws->end_barrier; k++)
        ws->end_barrier = ws->nb[ws->nb[want[k]].canon].written == 2 * bars + 1;
    return any;
}

/* One thread's share of a predict of <= CDNN_SPLIT_MAX_ROWS samples without labels (split_plan): the split Dense nodes'
 * columns, the other nodes on rank 0. The sums are predict_team's on one thread. */
static void predict_split_team(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int n, int n_want,
                               const int *want, float *const *outs)
{
    unsigned fp_state = cdnn_flush_denormals_begin();
    float *pack = ws->pack + ws->pack_per * cdnn_team_rank();
    const int rank = cdnn_team_rank(), nr = cdnn_simd_current()->nr;
    if (rank == 0)
        for (int k = 0; k < g->n_inputs; k++)
            memcpy(ws->nb[g->inputs[k]].val, xs[k], (size_t)n * node_size(&g->nodes[g->inputs[k]]) * sizeof(float));
    fixed_stats_team(g, ws); /* (its barrier: the inputs too) */
    for (int i = 0; i < g->n_nodes; i++) {
        const node_buf *b = &ws->nb[i];
        if (b->fused) continue;
        if (b->barrier) cdnn_team_barrier();
        const int rows = n * g->nodes[i].rows;
        if (b->split) {
            int j0, j1;
            cdnn_team_columns(g->nodes[i].dense.units, nr, &j0, &j1);
            if (j0 < j1) dense_block(g, ws, i, 0, rows, j0, j1, 0, 0, pack);
            if (b->split == 2) {
                cdnn_team_barrier();
                if (rank == 0) dense_block(g, ws, i, 0, rows, 0, 0, 1, 0, pack);
            }
        } else if (rank == 0) {
            if (b->fuse_end >= 0)
                dense_block(g, ws, i, 0, rows, 0, g->nodes[i].dense.units, 1, 0, pack);
            else
                forward_node(g, ws, i, 0, n, n, 0, 0, 0, 0, pack);
        }
    }
    if (ws->end_barrier) cdnn_team_barrier();
    if (rank == 0)
        for (int k = 0; k < n_want; k++)
            memcpy(outs[k], ws->nb[want[k]].val, (size_t)n * node_size(&g->nodes[want[k]]) * sizeof(float));
    cdnn_flush_denormals_end(fp_state);
}

int cdnn_graph_predict(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n, int bs, uint64_t seed,
                       int n_want, const int *want, float *const *outs, const int32_t *const *ysparse,
                       const float *const *ydense, const float *const *sample_weight, double *loss_sum,
                       double *correct_sum, int check_finite)
{
    const int O = g->n_outputs;
    int nt = cdnn_get_num_threads();
    if (nt > ws->threads) nt = ws->threads;
    /* a chunk's forward flops (a third of a training step's): below CDNN_PREDICT_SERIAL_FLOPS, one thread
     * unless timing chooses 2 */
    const int64_t chunk = n < bs ? n : bs;
    if (loss_sum)
        for (int o = 0; o < O; o++) loss_sum[o] = correct_sum[o] = 0.0;
    fuse_plan(g, ws, n_want, want, loss_sum != NULL);
    int live = 0; /* batch statistics, masks: the whole chunk at once, on the threads the flops ask for */
    for (int i = 0; i < g->n_nodes; i++) live |= g->nodes[i].live;
    const int free_choice = !loss_sum && !live && nt > 1; /* 1 or 2 threads by timing */
    cdnn_chooser *ch = NULL;
    int split = 0;
    const double t0 = cdnn_wtime();
    if (free_choice && n <= CDNN_SPLIT_MAX_ROWS && n <= bs && cdnn_row_split_mode() != 1 &&
        split_plan(g, ws, n_want, want)) {
        ch = &ws->one_row;
        split = cdnn_choose(ch);
        nt = 1;
    } else if (ws->flops / 3 / (ws->max_batch > 0 ? ws->max_batch : 1) * chunk < CDNN_PREDICT_SERIAL_FLOPS) {
        nt = 1;
        if (free_choice && n > 1) {
            ch = &ws->small;
            nt = cdnn_choose(ch) ? 2 : 1;
        }
    }
    /* W packed once for the call where every thread has enough samples (see forward_pw; copies laid out for
     * another micro-kernel width, a SIMD path chosen since, are not used) */
    int packed = 0;
    if (ws->packed_nr == cdnn_simd_current()->nr) {
        packed = chunk / nt >= CDNN_PREDICT_PACK_MIN_ROWS;
        for (int i = 0; i < g->n_nodes; i++)
            if (ws->nb[i].pwi && n / nt >= CDNN_PREDICT_PACK_OWN_MIN_ROWS) packed = 2;
    }
    const int piece = loss_sum || live ? bs : CDNN_PREDICT_PIECE_ROWS;
    /* the column split's few samples, or barriers after every chunk (labels, live nodes): the inputs
     * checked whole before */
    if (check_finite && (split || loss_sum || live)) {
        for (int k = 0; k < g->n_inputs; k++)
            if (!cdnn_all_finite(xs[k], n * (int64_t)node_size(&g->nodes[g->inputs[k]]))) return 0;
        check_finite = 0;
    }
    int bad = -1; /* set (to 0) by the thread that finds an input value not finite */
#ifdef _OPENMP
    if (split) {
#pragma omp parallel num_threads(2)
        predict_split_team(g, ws, xs, (int)n, n_want, want, outs);
    } else if (nt > 1) {
#pragma omp parallel num_threads(nt)
        predict_team(g, ws, xs, n, bs, seed, n_want, want, outs, ysparse, ydense, sample_weight, loss_sum, correct_sum,
                     packed, piece, check_finite, &bad);
    } else
#endif
        /* alone: no parallel region, so OpenMP's threads are neither woken nor waited for */
        predict_team(g, ws, xs, n, bs, seed, n_want, want, outs, ysparse, ydense, sample_weight, loss_sum, correct_sum,
                     packed, piece, check_finite, &bad);
    if (bad >= 0) return 0;
    if (ch) cdnn_chooser_record(ch, split || nt > 1, (cdnn_wtime() - t0) / (double)n);
    return 1;
}
