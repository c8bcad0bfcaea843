/* graph.h - the graph executor: a network of layers (nodes) in topological
 * order, trained and run by the same team kernels as the Dense chain.
 *
 * A node's value for a batch is [batch * rows, width] floats, row-major:
 * `rows` = the product of its shape but the last axis, `width` = its last
 * axis (Dense, BatchNormalization, LayerNormalization act on that axis;
 * every other op is elementwise or a copy). cdnn/_core.pyx validates the
 * description (shapes, topological order, input counts) before any call:
 * the C code trusts it.
 */
#ifndef CDNN_GRAPH_H
#define CDNN_GRAPH_H

#include "cdnn.h"

enum cdnn_op {
    CDNN_OP_INPUT = 0,
    CDNN_OP_DENSE,
    CDNN_OP_BATCHNORM,
    CDNN_OP_LAYERNORM,
    CDNN_OP_ACTIVATION,
    CDNN_OP_AFFINE,
    CDNN_OP_DROPOUT,
    CDNN_OP_GAUSSIAN_NOISE,
    CDNN_OP_ADD,
    CDNN_OP_SUBTRACT,
    CDNN_OP_MULTIPLY,
    CDNN_OP_AVERAGE,
    CDNN_OP_MAXIMUM,
    CDNN_OP_MINIMUM,
    CDNN_OP_CONCATENATE,
    CDNN_OP_RESHAPE,
    CDNN_OP_DOT,      /* two inputs [rows, n] -> [rows, 1]; epsilon > 0: each L2-normalized first */
    CDNN_OP_UNITNORM, /* x / ||x|| over the last axis */
    CDNN_OP_RMSNORM,  /* x / rms(x) * gamma over the last axis */
    CDNN_OP_PRELU,
    CDNN_OP_GAUSSIAN_DROPOUT,
    CDNN_OP_ALPHA_DROPOUT
};

/* The most inputs a merge node takes. */
#define CDNN_MAX_NODE_INPUTS 64

/* One node of the graph. */
typedef struct {
    int op;          /* enum cdnn_op */
    int n_in;        /* number of inputs (0 for CDNN_OP_INPUT) */
    const int *in;   /* their node indices, all smaller than this node's */
    int rows, width; /* per sample: rows x width floats */
    int frozen;      /* trainable=False: no update (batchnorm: inference mode in training too) */
    int inference; /* batchnorm called with training=False: moving statistics in training too, not updated (gamma, beta train) */
    int live;  /* dropout, gaussian_noise, batchnorm called with training=True in an inference run: masks, batch
                  statistics (moving statistics updated per chunk) in cdnn_graph_predict too */
    int share; /* a later call of a layer with weights: the node of its first call (same arrays and slots), else -1 */
    int act;   /* dense, activation: enum cdnn_act */
    cdnn_act_args act_args; /* dense, activation: its parameters */
    cdnn_layer dense;       /* dense: W [in, units], b, slots (in = the input's width, units = width) */
    float *gamma, *beta;    /* batchnorm, layernorm, rmsnorm: scale, offset [width] or NULL; prelu: alpha */
    float *gamma1, *gamma2, *beta1, *beta2;   /* their optimizer slots (or NULL) */
    float *gamma3, *beta3;                    /* their third slots (amsgrad's v_hat, Adafactor's v), or NULL */
    float *gamma_ema, *beta_ema;              /* their use_ema averages, or NULL */
    float *gamma_acc, *beta_acc;              /* their gradient accumulators, or NULL */
    cdnn_param_rules gamma_rules, beta_rules; /* their regularizers and constraints (zero: none) */
    float *moving_mean, *moving_var;          /* batchnorm [width] */
    float momentum, epsilon;                  /* batchnorm momentum; the norms' and dot's epsilon */
    const float *scale, *offset;              /* affine: length 1 or width */
    int scale_n, offset_n;
    float rate;                     /* dropout rate in [0, 1); gaussian_noise: stddev; gaussian/alpha dropout: rate */
    int alpha_r, alpha_c;           /* prelu: alpha is [alpha_r, alpha_c], alpha_r 1 or rows, alpha_c 1 or width */
    int alpha_mat;                  /* prelu: the optimizer sees that matrix (Keras' alpha is 2-D), else a vector */
    uint64_t seed_offset;           /* dropout, gaussian_noise: mixed into the mask's key */
    float activity_l1, activity_l2; /* activity regularizer on the value, l1 sum|a| + l2 sum a^2 (0, 0: none) */
} cdnn_node;

/* A model output: a node, and the loss trained on it (loss < 0: none). */
typedef struct {
    int node;
    int loss; /* enum cdnn_loss, or -1 */
    int from_logits;
    int metric;          /* enum cdnn_metric */
    float weight;        /* loss_weights */
    cdnn_loss_opts opts; /* the loss's options (ignore_class: the mean over each batch's valid rows) */
} cdnn_output;

typedef struct {
    int n_nodes;
    cdnn_node *nodes;
    int n_inputs;
    const int *inputs; /* the input nodes, in the model's input order */
    int n_outputs;
    const cdnn_output *outputs;
    cdnn_opt_params opt;
    int fuse; /* inference runs a Dense's BatchNormalization and Activation readers in its epilogue (graph.c) */
} cdnn_graph;

/* Buffers and the step plan for batches of up to max_batch samples. */
typedef struct cdnn_graph_ws cdnn_graph_ws;
/* Lay out a workspace for g and batches of up to max_batch samples, threads threads; NULL on OOM. */
cdnn_graph_ws *cdnn_graph_ws_new(const cdnn_graph *g, int max_batch, int threads);
/* Free a workspace (NULL is fine). */
void cdnn_graph_ws_free(cdnn_graph_ws *ws);

/* Train n_batches mini-batches: batch j takes the samples perm[(first+j)*bs ..] of every input xs[k]
 * ([n, rows*width] of input node k). ysparse[o] (int32, [n * rows]) or ydense[o] ([n, rows*width]) hold
 * output o's labels (both NULL for an output without a loss). sample_weight (or NULL) holds per output
 * (or NULL: all 1) the weights [n] of the samples: a sample's weight multiplies the loss and gradient of
 * each of its rows, and the loss stays divided by the batch's rows (Keras' sum_over_batch_size).
 * Writes batch j's summed loss (times the loss weights) to batch_loss[j], output o's summed loss (sample
 * weights in, loss weight not) and correctness (unweighted) to out_loss[j*n_outputs+o] and out_correct[j*n_outputs+o]; outputs (or NULL) gets per
 * output (or NULL) each batch's output values, batch j from sample j*bs. Returns the batches trained, as
 * cdnn_train_run. */
int cdnn_graph_train_run(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n,
                         const int32_t *const *ysparse, const float *const *ydense, const int32_t *perm, int64_t first,
                         int n_batches, int bs, int64_t step0, uint64_t seed, double *batch_loss, double *out_loss,
                         double *out_correct, int threads, int stop_nonfinite_loss, const float *const *sample_weight,
                         float *const *outputs);

/* Inference over n samples in chunks of bs (<= the workspace's batch): node want[k]'s values into outs[k]
 * ([n, rows*width]); with labels (ysparse/ydense/sample_weight as in training, or NULL) also output o's summed
 * (weighted) loss and correctness. Live nodes draw their masks from seed and the chunk's index. With
 * check_finite, returns 0 (outs and the sums unspecified) if some input value is NaN or infinite; else 1. */
int cdnn_graph_predict(const cdnn_graph *g, cdnn_graph_ws *ws, const float *const *xs, int64_t n, int bs, uint64_t seed,
                       int n_want, const int *want, float *const *outs, const int32_t *const *ysparse,
                       const float *const *ydense, const float *const *sample_weight, double *loss_sum,
                       double *correct_sum, int check_finite);

/* The fusions a predict wanting nodes want (labelled: with labels) makes: end[i] the node whose value Dense
 * node i's epilogue writes, or -1. */
void cdnn_graph_fusions(const cdnn_graph *g, cdnn_graph_ws *ws, int n_want, const int *want, int labelled, int *end);

/* ---- per-op passes (graph_ops.c, normalization.c); r0..r1 are rows of [batch*rows, width] ---- */
/* Rows [r0, r1) of y = x * scale + offset (scale/offset of length 1 or width). */
void cdnn_affine_rows(const cdnn_node *nd, int r0, int r1, const float *x, float *y);
/* Rows [r0, r1) of a merge (add ... minimum) of the node's inputs xs into y (all width wide). */
void cdnn_merge_rows(const cdnn_node *nd, int r0, int r1, const float *const *xs, float *y);
/* Rows [r0, r1) of the merge's backward: gradient of input k into dx (accumulated into it if acc). */
void cdnn_merge_backward_rows(const cdnn_node *nd, int k, int r0, int r1, const float *const *xs, const float *y,
                              const float *g, float *dx, int acc);
/* Rows [r0, r1) of y = x_0 | x_1 | ... along the last axis (widths ws[k]). */
void cdnn_concat_rows(int n_in, const int *widths, int r0, int r1, const float *const *xs, float *y, int width);
/* Rows [r0, r1) of input k's slice (columns c0.., widths[k] wide) of g into dx (accumulated if acc). */
void cdnn_concat_backward_rows(int w_k, int c0, int r0, int r1, const float *g, int width, float *dx, int acc);
/* Samples [s0, s1) of y = x * mask (dataset rows rows[s], n floats each) under key, at rate; y may be x. */
void cdnn_dropout_samples(const float *x, float *y, int s0, int s1, int n, const int32_t *rows, uint64_t key,
                          float rate);
/* Kinds of cdnn_noise_samples. */
enum { CDNN_NOISE_ADD, CDNN_NOISE_FACTOR, CDNN_NOISE_ALPHA, CDNN_NOISE_ALPHA_GRAD };
/* Samples [s0, s1) of keyed noise on x into y (y may be x), from a counter hash of (key, dataset row, column):
 * ADD y = x + p z, FACTOR y = 1 + p z (x not read; z ~ N(0, 1)); ALPHA Keras' alpha dropout at rate p (kept
 * where a uniform u >= p: a x + b, else a alpha' + b), ALPHA_GRAD its derivative times x (a x kept, else 0). */
void cdnn_noise_samples(const float *x, float *y, int s0, int s1, int n, const int32_t *rows, uint64_t key, int kind,
                        float p);
/* Rows [r0, r1) of PReLU: y = x above 0, alpha x below (alpha [alpha_r, alpha_c] broadcast on [rows, width]). */
void cdnn_prelu_rows(const cdnn_node *nd, int r0, int r1, const float *x, float *y);
/* Rows [r0, r1) of PReLU's backward: dx = g above 0, alpha g below, 0 at 0 (acc: added). */
void cdnn_prelu_backward_rows(const cdnn_node *nd, int r0, int r1, const float *x, const float *g, float *dx, int acc);
/* Team, alpha's values split, no barrier: dalpha = sum of g * min(x, 0) over `rows` rows (in order, summed in
 * acc, doubles [alpha_r * alpha_c]). */
void cdnn_prelu_alpha_grad_team(const cdnn_node *nd, int rows, const float *x, const float *g, double *acc,
                                float *dalpha);
/* Rows [r0, r1) of y = a . b over n columns (eps > 0: of a * ia and b * ib, the inverse norms saved). */
void cdnn_dot_rows(int r0, int r1, int n, float eps, const float *a, const float *b, float *ia, float *ib, float *y);
/* Rows [r0, r1) of the dot's gradient for input k (0: a, 1: b) into dx (acc: added), from g [rows]. */
void cdnn_dot_backward_rows(int k, int r0, int r1, int n, float eps, const float *a, const float *b, const float *ia,
                            const float *ib, const float *y, const float *g, float *dx, int acc);
/* dst[i] (+)= src[i] for i < n (acc: add, else copy); scale != 1 multiplies src. */
void cdnn_axpy_rows(float *dst, const float *src, long n, float scale, int acc);

/* Team, columns split, no barrier: mean, biased variance and 1/sqrt(var + eps) per column of
 * x[rows, width] (two passes in double, rows in order). */
void cdnn_col_moments_team(const float *x, int rows, int width, float eps, float *mean, float *var, float *inv_std);
/* Team, columns split, no barrier: sum_g[j] = sum of g, sum_gx[j] = sum of g * xhat over all rows
 * (xhat = (x - mean[j]) * inv_std[j] with per-column stats, or per-row ones if row_stats). */
void cdnn_norm_sums_team(const float *x, const float *g, int rows, int width, const float *mean, const float *inv_std,
                         int row_stats, float *sum_g, float *sum_gx);
/* Rows [r0, r1) of batchnorm's training backward into dx (acc: added): from g and the column sums. */
void cdnn_batchnorm_backward_rows(int r0, int r1, int rows, int width, const float *x, const float *g,
                                  const float *mean, const float *inv_std, const float *gamma, const float *sum_g,
                                  const float *sum_gx, float *dx, int acc);
/* Rows [r0, r1) of batchnorm's inference backward (fixed statistics) into dx (acc: added). */
void cdnn_batchnorm_backward_fixed_rows(int r0, int r1, int width, const float *g, const float *inv_std,
                                        const float *gamma, float *dx, int acc);
/* Rows [r0, r1) of layer normalization: per-row mean and inv_std saved, y = xhat * gamma + beta. */
void cdnn_layernorm_rows(int r0, int r1, int width, float eps, const float *x, const float *gamma, const float *beta,
                         float *mean, float *inv_std, float *y);
/* Rows [r0, r1) of layer normalization's backward into dx (acc: added). */
void cdnn_layernorm_backward_rows(int r0, int r1, int width, const float *x, const float *g, const float *mean,
                                  const float *inv_std, const float *gamma, float *dx, int acc);
/* Rows [r0, r1) of y = x * inv * gamma (gamma may be NULL; y NULL: inv only), inv[i] saved: rms,
 * 1/sqrt(mean(x^2) + eps) (Keras' ops.rms_normalization), else min(1/||x||, 1/eps) (Keras' ops.normalize). */
void cdnn_rownorm_rows(int r0, int r1, int width, float eps, int rms, const float *x, const float *gamma, float *inv,
                       float *y);
/* Rows [r0, r1) of cdnn_rownorm_rows's backward into dx (acc: added). */
void cdnn_rownorm_backward_rows(int r0, int r1, int width, float eps, int rms, const float *x, const float *g,
                                const float *inv, const float *gamma, float *dx, int acc);
/* Inference statistics of batchnorm: inv_std[j] = 1 / sqrt(moving_var[j] + eps). */
void cdnn_batchnorm_fixed_stats(int width, const float *moving_var, float eps, float *inv_std);

#endif
