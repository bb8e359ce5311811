/* One dtype's training loop. Included by mlp.c with REAL, SUFFIX(name) and the libm functions R_* defined;
 * not compiled on its own. Layout: rows are samples, W[k] is (n_{k+1}, n_k) row-major, as in network.py.
 *
 * Each function is named after the function of manual_backprop/network.py it derives from. activation_forward,
 * activation_backward and output_delta come from kernels.h, which fast/csource.py generates from the C code that
 * each Activation and Loss class carries (so a new activation touches its class, not this file). */

/* sum_i a[i] b[i] with eight running sums, so the compiler can keep them in vector registers without being
 * allowed to reassociate (no -ffast-math). torch's matrix products use their own (blocked) order as well. */
static REAL SUFFIX(dot)(const REAL *a, const REAL *b, int64_t n)
{
    REAL s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            s[l] += a[i + l] * b[i + l];
    REAL total = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        total += a[i] * b[i];
    return total;
}

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
        for (int64_t i = 0; i < n_in; i++) delta[i] += dc * Wc[i];
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
                for (int64_t i = 0; i < n_in; i++) grad_row[i] += dbj * in[i];
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

/* Run n_updates gradient-descent updates of the network in plan; update u uses the samples
 * order[offsets[u] : offsets[u+1]] of the training set (targets one-hot or float, as the Trainer keeps them):
 * forward phase, output delta, hidden deltas and update, layer by layer, as network.py's loss_and_gradients and
 * update do.
 *
 * losses: n_updates values, E of each update before its step; grad_w_out, grad_b_out: NULL, or L buffers that get
 * dE/dW and dE/db of the last update (for the Trainer's gradient histograms).
 * Returns 0, or 1 when the workspace cannot be allocated, 2 for invalid offsets, 3 for a sample index outside
 * [0, n_samples); nothing is changed unless it returns 0. */
int SUFFIX(mbp_train)(const mbp_plan *plan, const int64_t *order, const int64_t *offsets, int64_t n_updates,
                      double lr, REAL *losses, REAL *const *grad_w_out, REAL *const *grad_b_out)
{
    const int64_t L = plan->n_layers, n_samples = plan->n_samples;
    const int64_t *sizes = plan->sizes;
    const int32_t *acts = plan->acts;
    const double *slopes = plan->slopes;
    REAL *const *weights = (REAL *const *)plan->weights;
    REAL *const *biases = (REAL *const *)plan->biases;
    const REAL *x_data = (const REAL *)plan->x_data, *y_data = (const REAL *)plan->y_data;
    if (L < 1 || L > 64 || n_updates < 0 || offsets[0] != 0)
        return 2;
    int64_t max_batch = 0, max_width = 0;
    for (int64_t u = 0; u < n_updates; u++) {
        int64_t B = offsets[u + 1] - offsets[u];
        if (B < 1)
            return 2;
        if (B > max_batch) max_batch = B;
    }
    for (int64_t i = 0; i < offsets[n_updates]; i++)
        if (order[i] < 0 || order[i] >= n_samples)
            return 3;
    for (int64_t k = 0; k <= L; k++)
        if (sizes[k] > max_width) max_width = sizes[k];
    if (n_updates == 0)
        return 0;

    /* workspace: activities x^1..x^L, the output logits, two delta buffers (ping-pong), one gradient row, and
     * pointers to each sample's input activity of a layer */
    int64_t total = 0;
    for (int64_t k = 1; k <= L; k++) total += max_batch * sizes[k];
    total += max_batch * sizes[L] + 2 * max_batch * max_width + max_width;
    REAL *work = (REAL *)malloc((size_t)total * sizeof(REAL));
    const REAL **inputs = (const REAL **)malloc((size_t)max_batch * sizeof(REAL *));
    if (!work || !inputs) {
        free(work);
        free((void *)inputs);
        return 1;
    }
    REAL *act_buf[65];
    REAL *p = work;
    act_buf[0] = NULL; /* x^0 is read from x_data row by row, never copied */
    for (int64_t k = 1; k <= L; k++) { act_buf[k] = p; p += max_batch * sizes[k]; }
    REAL *logits = p; p += max_batch * sizes[L];
    REAL *delta_a = p; p += max_batch * max_width;
    REAL *delta_b = p; p += max_batch * max_width;
    REAL *grad_row = p;

    const int64_t n_in0 = sizes[0], n_out = sizes[L];
    const REAL alpha = (REAL)(-lr);

    for (int64_t u = 0; u < n_updates; u++) {
        const int64_t *idx = order + offsets[u];
        const int64_t B = offsets[u + 1] - offsets[u];
        const int last = (u == n_updates - 1);

        /* ---- forward phase: x^{k+1} = f(W[k] x^k + b[k]); the output layer keeps its logits */
        for (int64_t k = 0; k < L; k++) {
            const int64_t n_in = sizes[k], n_o = sizes[k + 1];
            REAL *out = (k == L - 1) ? logits : act_buf[k + 1];
            for (int64_t b = 0; b < B; b++) {
                const REAL *in = (k == 0) ? x_data + idx[b] * n_in0 : act_buf[k] + b * n_in;
                REAL *z = out + b * n_o;
                SUFFIX(net_input)(weights[k], biases ? biases[k] : NULL, in, z, n_in, n_o);
                if (k == L - 1)
                    memcpy(act_buf[L] + b * n_o, z, (size_t)n_o * sizeof(REAL));
                SUFFIX(activation_forward)(acts[k], (REAL)slopes[k], (k == L - 1) ? act_buf[L] + b * n_o : z, n_o);
            }
        }

        /* ---- the loss E and the output delta dE/dnet^L */
        double c = plan->reduction == RED_MEAN ? 1.0 / (double)B
                 : plan->reduction == RED_ELEMENTWISE_MEAN ? 1.0 / (double)(B * n_out) : 1.0;
        c = c * plan->factor;
        REAL acc = 0;
        REAL *delta = delta_a, *spare = delta_b;
        for (int64_t b = 0; b < B; b++)
            acc = SUFFIX(output_delta)(plan->loss_kind, acts[L - 1], (REAL)slopes[L - 1], logits + b * n_out,
                                       act_buf[L] + b * n_out, y_data + idx[b] * n_out, delta + b * n_out,
                                       n_out, c, acc);
        losses[u] = acc * (REAL)c;

        /* ---- backward phase and update, from the output layer back to the first */
        for (int64_t k = L - 1; k >= 0; k--) {
            const int64_t n_in = sizes[k], n_o = sizes[k + 1];
            if (k > 0) /* the deltas below go through the weights before their update */
                for (int64_t b = 0; b < B; b++)
                    SUFFIX(hidden_delta)(acts[k - 1], (REAL)slopes[k - 1], weights[k], delta + b * n_o,
                                         act_buf[k] + b * n_in, spare + b * n_in, n_in, n_o);
            for (int64_t b = 0; b < B; b++)
                inputs[b] = (k == 0) ? x_data + idx[b] * n_in0 : act_buf[k] + b * n_in;
            SUFFIX(update)(weights[k], biases ? biases[k] : NULL, delta, inputs, B, n_in, n_o, alpha, grad_row,
                           last && grad_w_out ? grad_w_out[k] : NULL, last && grad_b_out ? grad_b_out[k] : NULL);
            REAL *t = delta; delta = spare; spare = t;
        }
    }
    free(work);
    free((void *)inputs);
    return 0;
}

/* Each kernel alone, on the caller's rows, for the per-kernel proof in tests/test_update_proof.py: given the
 * reference's own inputs, the C kernel must give the reference's outputs (bit for bit where the classes' C code is
 * their formula, op for op). */
void SUFFIX(mbp_activation_forward)(int32_t act, double slope, REAL *z, int64_t n)
{
    SUFFIX(activation_forward)(act, (REAL)slope, z, n);
}

void SUFFIX(mbp_activation_backward)(int32_t act, double slope, const REAL *x, REAL *g, int64_t n)
{
    SUFFIX(activation_backward)(act, (REAL)slope, x, g, n);
}

double SUFFIX(mbp_output_delta)(int32_t loss, int32_t out_act, double out_slope, const REAL *z, const REAL *x,
                                const REAL *y, REAL *d, int64_t n, double c)
{
    return (double)SUFFIX(output_delta)(loss, out_act, (REAL)out_slope, z, x, y, d, n, c, (REAL)0);
}

void SUFFIX(mbp_hidden_delta)(int32_t act, double slope, const REAL *W, const REAL *above, const REAL *x,
                              REAL *delta, int64_t n_in, int64_t n_out)
{
    SUFFIX(hidden_delta)(act, (REAL)slope, W, above, x, delta, n_in, n_out);
}
