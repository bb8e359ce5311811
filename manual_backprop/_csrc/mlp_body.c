/* One dtype's training loop. Included by mlp.c with REAL, SUFFIX(name) and the libm functions R_* defined;
 * not compiled on its own. Layout: rows are samples, W[k] is (n_{k+1}, n_k) row-major, as in network.py.
 *
 * Each function is named after the function of manual_backprop/network.py it derives from. activation_forward,
 * activation_backward and output_delta come from kernels.h, which fast/csource.py generates from the C code that
 * each Activation and Loss class carries (so a new activation touches its class, not this file). */

#include "mlp_dot.c" /* the vector types and dot(): the one order every sum of products takes */

/* Batches of at least this many rows take forward_rows and gradients (mlp_grads.c) in place of forward_phase and
 * update: below, forward_rows' repeated units cost more than its parallel sums save (XOR's 4 rows, one sample) */
#ifndef FORWARD_ROWS_MIN
#define FORWARD_ROWS_MIN 8
#endif
#ifndef TRAIN_ROWS_MIN
#define TRAIN_ROWS_MIN 2
#endif

/* network.net_input for one sample: z = W x + b, z (n_out), x (n_in). */
static void SUFFIX(net_input)(const REAL *W, const REAL *bias, const REAL *x, REAL *z, int64_t n_in, int64_t n_out)
{
    for (int64_t j = 0; j < n_out; j++) {
        REAL s = SUFFIX(dot)(W + j * n_in, x, n_in);
        z[j] = bias ? bias[j] + s : s;
    }
}

#include "kernels.h"

/* network.hidden_delta for one sample: delta_j = f'(net_j) * sum_c delta_c w_cj, with W = W[k] (n_out, n_in) the
 * weights from this layer to the one above, above = that layer's delta (n_out), x = this layer's activity (n_in). */
static void SUFFIX(hidden_delta)(int32_t act, REAL slope, const REAL *W, const REAL *above, const REAL *x,
                                 REAL *delta, int64_t n_in, int64_t n_out)
{
    for (int64_t i = 0; i < n_in; i++) delta[i] = 0;
    for (int64_t c = 0; c < n_out; c++) {
        const REAL dc = above[c];
        const REAL *Wc = W + c * n_in;
        for (int64_t i = 0; i < n_in; i++) delta[i] = R_FMA(dc, Wc[i], delta[i]);
    }
    SUFFIX(activation_backward)(act, slope, x, delta, n_in);
}

/* network.weight_gradient, bias_gradient and update for one layer: dE/dW[j, i] = sum_b delta[b, j] x_b[i],
 * W <- W - lr dE/dW, b <- b - lr sum_b delta[b, j]. inputs[b] points at sample b's input activity (n_in).
 * grad_w, grad_b: NULL, or buffers that receive the gradients (the Trainer's histograms). */
static void SUFFIX(update)(REAL *W, REAL *bias, const REAL *delta, const REAL *const *inputs, int64_t B,
                           int64_t n_in, int64_t n_out, REAL alpha, REAL *grad_row, REAL *grad_w, REAL *grad_b)
{
    for (int64_t j = 0; j < n_out; j++) {
        REAL *Wj = W + j * n_in;
        REAL gb;
        if (B == 1) {
            const REAL dj = delta[j];
            const REAL *in = inputs[0];
            if (grad_w)
                for (int64_t i = 0; i < n_in; i++) grad_w[j * n_in + i] = dj * in[i];
            for (int64_t i = 0; i < n_in; i++) Wj[i] = Wj[i] + alpha * (dj * in[i]);
            gb = dj;
        } else {
            for (int64_t i = 0; i < n_in; i++) grad_row[i] = 0;
            gb = 0;
            for (int64_t b = 0; b < B; b++) {
                const REAL dbj = delta[b * n_out + j];
                const REAL *in = inputs[b];
                for (int64_t i = 0; i < n_in; i++) grad_row[i] = R_FMA(dbj, in[i], grad_row[i]);
                gb += dbj;
            }
            if (grad_w)
                memcpy(grad_w + j * n_in, grad_row, (size_t)n_in * sizeof(REAL));
            for (int64_t i = 0; i < n_in; i++) Wj[i] = Wj[i] + alpha * grad_row[i];
        }
        if (bias) {
            if (grad_b) grad_b[j] = gb;
            bias[j] = bias[j] + alpha * gb;
        }
    }
}

/* The workspace of one call: activities x^1..x^L, the output logits, two delta buffers (ping-pong), one gradient
 * row, and pointers to each sample's input activity of a layer, for batches of up to max_batch samples. */
typedef struct {
    REAL *act[65];
    REAL *logits, *delta_a, *delta_b, *grad_row;
    REAL *grad_w, *grad_b; /* one layer's dE/dW and dE/db (train_update on TRAIN_ROWS_MIN samples or more), or NULL */
    const REAL **inputs;
    void *work;
} SUFFIX(workspace);

static int SUFFIX(workspace_alloc)(SUFFIX(workspace) *w, const int64_t *sizes, int64_t L, int64_t max_batch,
                                   int with_grads)
{
    int64_t total = 0, max_width = 0;
    for (int64_t k = 0; k <= L; k++)
        if (sizes[k] > max_width) max_width = sizes[k];
    for (int64_t k = 1; k <= L; k++) total += max_batch * sizes[k];
    int64_t max_layer = 0; /* the largest n_k n_{k+1} */
    for (int64_t k = 0; k < L; k++)
        if (sizes[k] * sizes[k + 1] > max_layer) max_layer = sizes[k] * sizes[k + 1];
    total += max_batch * sizes[L] + 2 * max_batch * max_width + max_width;
    if (with_grads) total += max_layer + max_width;
    REAL *p = (REAL *)malloc((size_t)total * sizeof(REAL));
    w->inputs = (const REAL **)malloc((size_t)max_batch * sizeof(REAL *));
    w->work = p;
    if (!p || !w->inputs) {
        free(p);
        free((void *)w->inputs);
        return 1;
    }
    w->act[0] = NULL; /* x^0 is read from the data row by row, never copied */
    for (int64_t k = 1; k <= L; k++) { w->act[k] = p; p += max_batch * sizes[k]; }
    w->logits = p; p += max_batch * sizes[L];
    w->delta_a = p; p += max_batch * max_width;
    w->delta_b = p; p += max_batch * max_width;
    w->grad_row = p; p += max_width;
    w->grad_w = with_grads ? p : NULL;
    w->grad_b = with_grads ? p + max_layer : NULL;
    return 0;
}

static void SUFFIX(workspace_free)(SUFFIX(workspace) *w)
{
    free(w->work);
    free((void *)w->inputs);
}

/* The end of one layer k of the forward phase, on B rows of its weighted input z (n_{k+1} each): x^{k+1} = f(z), in
 * place in z for a hidden layer; the output layer keeps its logits and writes x^L into w->act[L]. An element-wise f
 * takes all B rows in one call (the same bits as row by row, whole vectors); softmax takes them row by row. */
static void SUFFIX(layer_output)(const mbp_plan *plan, SUFFIX(workspace) *w, int64_t k, REAL *z, int64_t B)
{
    const int64_t L = plan->n_layers, n_o = plan->sizes[k + 1];
    REAL *x_next = (k == L - 1) ? w->act[L] : z;
    if (k == L - 1)
        memcpy(x_next, z, (size_t)(B * n_o) * sizeof(REAL));
    if (SUFFIX(activation_elementwise)(plan->acts[k]))
        SUFFIX(activation_forward)(plan->acts[k], (REAL)plan->slopes[k], x_next, B * n_o);
    else
        for (int64_t b = 0; b < B; b++)
            SUFFIX(activation_forward)(plan->acts[k], (REAL)plan->slopes[k], x_next + b * n_o, n_o);
}

/* network.forward_phase on the B samples idx of x_data (idx NULL: rows first .. first + B): the activities
 * x^1..x^L into w->act, the output layer's weighted input into w->logits. */
static void SUFFIX(forward_phase)(const mbp_plan *plan, SUFFIX(workspace) *w, const REAL *x_data,
                                  const int64_t *idx, int64_t first, int64_t B)
{
    const int64_t L = plan->n_layers, *sizes = plan->sizes, n_in0 = sizes[0];
    REAL *const *weights = (REAL *const *)plan->weights;
    REAL *const *biases = (REAL *const *)plan->biases;
    for (int64_t k = 0; k < L; k++) {
        const int64_t n_in = sizes[k], n_o = sizes[k + 1];
        REAL *out = (k == L - 1) ? w->logits : w->act[k + 1];
        for (int64_t b = 0; b < B; b++) {
            const REAL *in = (k == 0) ? x_data + (idx ? idx[b] : first + b) * n_in0 : w->act[k] + b * n_in;
            SUFFIX(net_input)(weights[k], biases ? biases[k] : NULL, in, out + b * n_o, n_in, n_o);
        }
        SUFFIX(layer_output)(plan, w, k, out, B);
    }
}

static double SUFFIX(loss_scale)(const mbp_plan *plan, int64_t B)
{
    const int64_t n_out = plan->sizes[plan->n_layers];
    double c = plan->reduction == RED_MEAN ? 1.0 / (double)B
             : plan->reduction == RED_ELEMENTWISE_MEAN ? 1.0 / (double)(B * n_out) : 1.0;
    return c * plan->factor;
}

/* forward_phase on B rows of x_data (idx NULL: the first B rows; else rows idx[0..B-1]), four units (and, with
 * AVX-512, four rows in float, two in double) at a time; and update()'s gradient sums without the step, blocked for
 * the vector units (mlp_grads.c). Both give the same bits as forward_phase and update. */
static void SUFFIX(forward_rows)(const mbp_plan *plan, SUFFIX(workspace) *w, const REAL *x_data, const int64_t *idx,
                                 int64_t B);
static void SUFFIX(gradients)(const REAL *delta, const REAL *const *inputs, int64_t B, int64_t n_in, int64_t n_out,
                              REAL *grad_w, REAL *grad_b);

/* One update, network.loss_and_gradients + update: forward phase, E and the output delta, then from the output
 * layer back to the first the hidden delta (through the weights before their update) and the step. Returns E. */
static REAL SUFFIX(train_update)(const mbp_plan *plan, SUFFIX(workspace) *w, const int64_t *idx, int64_t B,
                                 REAL alpha, REAL *const *grad_w_out, REAL *const *grad_b_out)
{
    const int64_t L = plan->n_layers, *sizes = plan->sizes, n_in0 = sizes[0], n_out = sizes[L];
    const int32_t *acts = plan->acts;
    const double *slopes = plan->slopes;
    REAL *const *weights = (REAL *const *)plan->weights;
    REAL *const *biases = (REAL *const *)plan->biases;
    const REAL *x_data = (const REAL *)plan->x_data, *y_data = (const REAL *)plan->y_data;

    if (B >= TRAIN_ROWS_MIN)
        SUFFIX(forward_rows)(plan, w, x_data, idx, B);
    else
        SUFFIX(forward_phase)(plan, w, x_data, idx, 0, B);

    /* ---- the loss E and the output delta dE/dnet^L */
    const double c = SUFFIX(loss_scale)(plan, B);
    REAL acc = 0;
    REAL *delta = w->delta_a, *spare = w->delta_b;
    for (int64_t b = 0; b < B; b++)
        acc = SUFFIX(output_delta)(plan->loss_kind, acts[L - 1], (REAL)slopes[L - 1], w->logits + b * n_out,
                                   w->act[L] + b * n_out, y_data + idx[b] * n_out, delta + b * n_out, n_out, c, acc);

    /* ---- backward phase and update, from the output layer back to the first */
    for (int64_t k = L - 1; k >= 0; k--) {
        const int64_t n_in = sizes[k], n_o = sizes[k + 1];
        if (k > 0) /* the deltas below go through the weights before their update */
            for (int64_t b = 0; b < B; b++)
                SUFFIX(hidden_delta)(acts[k - 1], (REAL)slopes[k - 1], weights[k], delta + b * n_o,
                                     w->act[k] + b * n_in, spare + b * n_in, n_in, n_o);
        for (int64_t b = 0; b < B; b++)
            w->inputs[b] = (k == 0) ? x_data + idx[b] * n_in0 : w->act[k] + b * n_in;
        if (B >= TRAIN_ROWS_MIN) { /* update() as two passes: its sums (gradients), then its step */
            REAL *gw = grad_w_out ? grad_w_out[k] : w->grad_w, *gb = grad_b_out ? grad_b_out[k] : w->grad_b;
            SUFFIX(gradients)(delta, w->inputs, B, n_in, n_o, gw, biases ? gb : NULL);
            REAL *Wk = weights[k];
            for (int64_t i = 0; i < n_o * n_in; i++) Wk[i] = Wk[i] + alpha * gw[i];
            if (biases)
                for (int64_t j = 0; j < n_o; j++) biases[k][j] = biases[k][j] + alpha * gb[j];
        } else
            SUFFIX(update)(weights[k], biases ? biases[k] : NULL, delta, w->inputs, B, n_in, n_o, alpha, w->grad_row,
                           grad_w_out ? grad_w_out[k] : NULL, grad_b_out ? grad_b_out[k] : NULL);
        REAL *t = delta; delta = spare; spare = t;
    }
    return acc * (REAL)c;
}

static int SUFFIX(check_orders)(const int64_t *order, const int64_t *offsets, int64_t n_updates, int64_t n_epochs,
                                int64_t n_samples, int64_t *max_batch)
{
    *max_batch = 1;
    if (n_updates < 0 || offsets[0] != 0)
        return 2;
    for (int64_t u = 0; u < n_updates; u++) {
        int64_t B = offsets[u + 1] - offsets[u];
        if (B < 1)
            return 2;
        if (B > *max_batch) *max_batch = B;
    }
    for (int64_t i = 0; i < offsets[n_updates] * n_epochs; i++)
        if (order[i] < 0 || order[i] >= n_samples)
            return 3;
    return 0;
}

/* Run n_updates gradient-descent updates of the network in plan; update u uses the samples
 * order[offsets[u] : offsets[u+1]] of the training set (targets one-hot or float, as the Trainer keeps them).
 *
 * losses: n_updates values, E of each update before its step; grad_w_out, grad_b_out: NULL, or L buffers that get
 * dE/dW and dE/db of the last update (for the Trainer's gradient histograms).
 * Returns 0, or 1 when the workspace cannot be allocated, 2 for invalid offsets, 3 for a sample index outside
 * [0, n_samples); nothing is changed unless it returns 0. */
int SUFFIX(mbp_train)(const mbp_plan *plan, const int64_t *order, const int64_t *offsets, int64_t n_updates,
                      double lr, REAL *losses, REAL *const *grad_w_out, REAL *const *grad_b_out)
{
    const int64_t L = plan->n_layers;
    int64_t max_batch;
    if (L < 1 || L > 64)
        return 2;
    int status = SUFFIX(check_orders)(order, offsets, n_updates, 1, plan->n_samples, &max_batch);
    if (status || n_updates == 0)
        return status;
    SUFFIX(workspace) w;
    if (SUFFIX(workspace_alloc)(&w, plan->sizes, L, max_batch, max_batch >= TRAIN_ROWS_MIN))
        return 1;
    const REAL alpha = (REAL)(-lr);
    for (int64_t u = 0; u < n_updates; u++) {
        const int last = (u == n_updates - 1);
        losses[u] = SUFFIX(train_update)(plan, &w, order + offsets[u], offsets[u + 1] - offsets[u], alpha,
                                         last ? grad_w_out : NULL, last ? grad_b_out : NULL);
    }
    SUFFIX(workspace_free)(&w);
    return 0;
}


/* The Trainer's evaluation of one split (Trainer.evaluate): E of the network on all n rows of (x, y) with the
 * split's reduction, summed row by row in double, and the accuracy (labels: argmax, first maximum, or output >= 0.5
 * for one output) as count / n in REAL, as accuracy() computes it; NaN without labels. Rows go through the forward
 * phase in blocks of the workspace's batch (forward_rows: four or, with AVX-512, sixteen or eight independent
 * sums at once, where forward_phase's one sample at a time waits on each sum's additions). */
static void SUFFIX(evaluate)(const mbp_plan *plan, SUFFIX(workspace) *w, int64_t block, const REAL *x,
                             const REAL *y, const int64_t *labels, int64_t n, double *loss, double *acc)
{
    const int64_t L = plan->n_layers, n_out = plan->sizes[L];
    double total = 0;
    int64_t correct = 0;
    for (int64_t first = 0; first < n; first += block) {
        const int64_t B = n - first < block ? n - first : block;
        if (B >= FORWARD_ROWS_MIN)
            SUFFIX(forward_rows)(plan, w, x + first * plan->sizes[0], NULL, B);
        else
            SUFFIX(forward_phase)(plan, w, x, NULL, first, B);
        for (int64_t b = 0; b < B; b++) {
            const REAL *out = w->act[L] + b * n_out;
            total += (double)SUFFIX(output_delta)(plan->loss_kind, plan->acts[L - 1], (REAL)plan->slopes[L - 1],
                                                  w->logits + b * n_out, out, y + (first + b) * n_out,
                                                  w->delta_a + b * n_out, n_out, 1.0, (REAL)0);
            if (labels) {
                int64_t predicted = 0;
                if (n_out == 1)
                    predicted = out[0] >= (REAL)0.5;
                else
                    for (int64_t j = 1; j < n_out; j++)
                        if (out[j] > out[predicted] || (out[j] != out[j] && out[predicted] == out[predicted]))
                            predicted = j;
                correct += predicted == labels[first + b];
            }
        }
    }
    *loss = (double)(REAL)(total * SUFFIX(loss_scale)(plan, n));
    *acc = labels ? (double)((REAL)correct / (REAL)n) : NAN;
}

static int SUFFIX(all_finite)(const REAL *v, int64_t n)
{
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= (v[i] - v[i]) == 0;
    return ok;
}

/* The Trainer's epochs, n_epochs of them in one call (fast/epochs.py drives it): for each epoch its updates (the
 * epoch's order, offsets as mbp_train), then the evaluation of the training split (and of the test split unless it
 * is the same), then the Trainer's rules in its order: an epoch with a non-finite loss or figure diverged, and the
 * parameters are put back to the epoch's start (the last good state) and the call stops; else the parameters are
 * the new good state, and the call stops after an epoch whose training loss is at most target_loss. Returns as
 * mbp_train; e->epochs_run rows of losses, figures and seconds are written. */
int SUFFIX(mbp_train_epochs)(const mbp_plan *plan, mbp_epochs *e)
{
    const int64_t L = plan->n_layers, U = e->n_updates;
    int64_t max_batch;
    e->epochs_run = 0;
    e->stop = 0;
    if (L < 1 || L > 64)
        return 2;
    int status = SUFFIX(check_orders)(e->orders, e->offsets, U, e->n_epochs, plan->n_samples, &max_batch);
    if (status)
        return status;
    const int64_t block = 64, S = e->offsets[U];
    SUFFIX(workspace) w;
    if (SUFFIX(workspace_alloc)(&w, plan->sizes, L, max_batch > block ? max_batch : block, max_batch >= TRAIN_ROWS_MIN))
        return 1;
    /* the parameters, in net.parameters() order (W[0], b[0], W[1], ...), and their sizes */
    REAL *params[128];
    int64_t counts[128], n_params = 0;
    for (int64_t k = 0; k < L; k++) {
        params[n_params] = ((REAL *const *)plan->weights)[k];
        counts[n_params++] = plan->sizes[k] * plan->sizes[k + 1];
        if (plan->biases) {
            params[n_params] = ((REAL *const *)plan->biases)[k];
            counts[n_params++] = plan->sizes[k + 1];
        }
    }
    REAL *const *good = (REAL *const *)e->good;
    for (int64_t p = 0; p < n_params; p++)
        memcpy(good[p], ((REAL *const *)e->good_init)[p], (size_t)counts[p] * sizeof(REAL));
    const REAL alpha = (REAL)(-e->lr);
    REAL *losses = (REAL *)e->losses;
    for (int64_t ep = 0; ep < e->n_epochs; ep++) {
        const int64_t *order = e->orders + ep * S;
        REAL *lo = losses + ep * U;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int64_t u = 0; u < U; u++) {
            const int last = u == U - 1; /* each epoch's last update: the call may stop after any epoch */
            lo[u] = SUFFIX(train_update)(plan, &w, order + e->offsets[u], e->offsets[u + 1] - e->offsets[u], alpha,
                                         last ? (REAL *const *)e->grad_w : NULL,
                                         last ? (REAL *const *)e->grad_b : NULL);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        e->seconds[ep] = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double *fig = e->figures + 4 * ep;
        SUFFIX(evaluate)(plan, &w, block, (const REAL *)plan->x_data, (const REAL *)plan->y_data, e->train_labels,
                         plan->n_samples, fig, fig + 1);
        if (e->test_x)
            SUFFIX(evaluate)(plan, &w, block, (const REAL *)e->test_x, (const REAL *)e->test_y, e->test_labels,
                             e->test_n, fig + 2, fig + 3);
        else
            fig[2] = fig[0], fig[3] = fig[1];
        e->epochs_run = ep + 1;
        int finite = SUFFIX(all_finite)(lo, U) && (fig[0] - fig[0]) == 0 && (fig[2] - fig[2]) == 0;
        if (!finite) {
            for (int64_t p = 0; p < n_params; p++)
                memcpy(params[p], good[p], (size_t)counts[p] * sizeof(REAL));
            e->stop = 2;
            break;
        }
        for (int64_t p = 0; p < n_params; p++)
            memcpy(good[p], params[p], (size_t)counts[p] * sizeof(REAL));
        if (e->target_loss == e->target_loss && fig[0] <= e->target_loss) {
            e->stop = 1;
            break;
        }
    }
    SUFFIX(workspace_free)(&w);
    return 0;
}

#include "mlp_grads.c" /* the one-update entry point: dot4, forward_rows, gradients, mbp_loss_and_grads */

#include "mlp_probes.c" /* each kernel alone, and vecmath.h's functions, for their proofs */
