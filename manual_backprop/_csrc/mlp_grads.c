/* MLP.loss_and_grads' one C call (fast/one_update.py): the loss, every gradient and every delta of one update,
 * the parameters untouched, with the C loop's own functions and its sums' order. Included by mlp_body.c (once per
 * dtype, with its REAL and SUFFIX), not compiled on its own. */

/* dot() of four rows a[0..3] with n_b (1 to DOT4_SAMPLES) vectors b[q] at once, out[q][r] = dot(a[r], b[q]): each
 * sum in dot()'s own order (sixteen running sums folded into eight, one block of eight, paired as dot() pairs them,
 * then the tail), so every result is dot()'s bit for bit; 4 n_b independent chains instead of one keep the vector
 * units busy where a wide layer makes the forward phase long dot products, and each row's vector is loaded once
 * for the n_b samples. Several samples at once only where 32 vector registers hold the running sums (AVX-512: four
 * in float, two in double); the order of each sum, and so every result, is the same either way. */
#if defined(__AVX512F__) || !defined(__GNUC__)
#define DOT4_SAMPLES (sizeof(REAL) == 4 ? 4 : 2)
#define GRAD_ROWS 2 /* gradients(): rows of dE/dW per pass, the same rule */
#else
#define DOT4_SAMPLES 1
#define GRAD_ROWS 1
#endif

#if defined(__GNUC__)
/* dot4 for Q samples, Q a constant where it is called (so the sums stay in registers) */
static inline __attribute__((always_inline)) void SUFFIX(dot4_q)(const REAL *const *a, const REAL *const *b,
                                                                 const int Q, int64_t n, REAL *const *out)
{
    int64_t i = 0;
    SUFFIX(vec16) v16[4][4] = {{{0}}};
    for (; i + 16 <= n; i += 16) {
        SUFFIX(vec16) bq[4];
        for (int q = 0; q < Q; q++) bq[q] = SUFFIX(load16)(b[q] + i);
        for (int r = 0; r < 4; r++) {
            const SUFFIX(vec16) ar = SUFFIX(load16)(a[r] + i);
            for (int q = 0; q < Q; q++) v16[q][r] = SUFFIX(fma16)(ar, bq[q], v16[q][r]);
        }
    }
    SUFFIX(vec8) v[4][4];
    for (int q = 0; q < Q; q++)
        for (int r = 0; r < 4; r++) {
            SUFFIX(vec8) lo, hi;
            memcpy(&lo, &v16[q][r], sizeof lo);
            memcpy(&hi, (REAL *)&v16[q][r] + 8, sizeof hi);
            v[q][r] = lo + hi;
        }
    for (; i + 8 <= n; i += 8)
        for (int q = 0; q < Q; q++) {
            const SUFFIX(vec8) bq = SUFFIX(load8)(b[q] + i);
            for (int r = 0; r < 4; r++)
                v[q][r] = SUFFIX(fma8)(SUFFIX(load8)(a[r] + i), bq, v[q][r]);
        }
    for (int q = 0; q < Q; q++)
        for (int r = 0; r < 4; r++) {
            REAL t8[8];
            memcpy(t8, &v[q][r], sizeof t8);
            REAL total = ((t8[0] + t8[4]) + (t8[1] + t8[5])) + ((t8[2] + t8[6]) + (t8[3] + t8[7]));
            for (int64_t t = i; t < n; t++)
                total = R_FMA(a[r][t], b[q][t], total);
            out[q][r] = total;
        }
}
#endif

static void SUFFIX(dot4)(const REAL *const *a, const REAL *const *b, int64_t n_b, int64_t n, REAL *const *out)
{
#if defined(__GNUC__)
    switch (n_b) {
    case 4: SUFFIX(dot4_q)(a, b, 4, n, out); break;
    case 3: SUFFIX(dot4_q)(a, b, 3, n, out); break;
    case 2: SUFFIX(dot4_q)(a, b, 2, n, out); break;
    default: SUFFIX(dot4_q)(a, b, 1, n, out);
    }
#else
    REAL s[4][4][8], s16[4][4][16];
    int64_t i = 0;
    memset(s16, 0, sizeof s16);
    for (; i + 16 <= n; i += 16)
        for (int q = 0; q < n_b; q++)
            for (int r = 0; r < 4; r++)
                for (int l = 0; l < 16; l++)
                    s16[q][r][l] = R_FMA(a[r][i + l], b[q][i + l], s16[q][r][l]);
    for (int q = 0; q < n_b; q++)
        for (int r = 0; r < 4; r++)
            for (int l = 0; l < 8; l++)
                s[q][r][l] = s16[q][r][l] + s16[q][r][l + 8];
    for (; i + 8 <= n; i += 8)
        for (int q = 0; q < n_b; q++)
            for (int r = 0; r < 4; r++)
                for (int l = 0; l < 8; l++)
                    s[q][r][l] = R_FMA(a[r][i + l], b[q][i + l], s[q][r][l]);
    for (int q = 0; q < n_b; q++)
        for (int r = 0; r < 4; r++) {
            const REAL *t8 = s[q][r];
            REAL total = ((t8[0] + t8[4]) + (t8[1] + t8[5])) + ((t8[2] + t8[6]) + (t8[3] + t8[7]));
            for (int64_t t = i; t < n; t++)
                total = R_FMA(a[r][t], b[q][t], total);
            out[q][r] = total;
        }
#endif
}

/* forward_phase on B rows of x_data (idx NULL: the first B; else rows idx[0..B-1], as forward_phase gathers them),
 * the same values bit for bit: net_input's dot products through dot4, four
 * units at a time, each block of W over all the samples, then the same bias add and f (on all rows at once where f
 * is element-wise, as forward_phase applies it). */
static void SUFFIX(forward_rows)(const mbp_plan *plan, SUFFIX(workspace) *w, const REAL *x_data, const int64_t *idx,
                                 int64_t B)
{
    const int64_t L = plan->n_layers, *sizes = plan->sizes;
    REAL *const *weights = (REAL *const *)plan->weights;
    REAL *const *biases = (REAL *const *)plan->biases;
    for (int64_t k = 0; k < L; k++) {
        const int64_t n_in = sizes[k], n_o = sizes[k + 1];
        const REAL *W = weights[k], *bias = biases ? biases[k] : NULL;
        REAL *out = (k == L - 1) ? w->logits : w->act[k + 1];
        const REAL *in0 = (k == 0) ? x_data : w->act[k];
        int64_t j;
        for (j = 0; j < n_o; j += 4) { /* four rows of W stay in L1 across the samples */
            const int64_t m = n_o - j < 4 ? n_o - j : 4; /* the last block repeats its last row: results unused */
            const REAL *rows[4];
            for (int r = 0; r < 4; r++) rows[r] = W + (j + (r < m ? r : m - 1)) * n_in;
            for (int64_t b = 0; b < B; b += DOT4_SAMPLES) {
                const int64_t n_b = B - b < (int64_t)DOT4_SAMPLES ? B - b : (int64_t)DOT4_SAMPLES;
                const REAL *ins[4];
                REAL got[4][4];
                REAL *outs[4] = {got[0], got[1], got[2], got[3]};
                for (int q = 0; q < 4; q++) {
                    const int64_t row = b + (q < n_b ? q : n_b - 1);
                    ins[q] = in0 + ((k == 0 && idx) ? idx[row] : row) * n_in;
                }
                SUFFIX(dot4)(rows, ins, n_b, n_in, outs);
                for (int64_t q = 0; q < n_b; q++)
                    memcpy(out + (b + q) * n_o + j, got[q], (size_t)m * sizeof(REAL));
            }
        }
        if (bias)
            for (int64_t b = 0; b < B; b++)
                for (j = 0; j < n_o; j++) out[b * n_o + j] = bias[j] + out[b * n_o + j];
        SUFFIX(layer_output)(plan, w, k, out, B);
    }
}

/* network.weight_gradient and bias_gradient for one layer, without the update: update()'s sums in its order (each
 * element summed over the samples b = 0 .. B-1, from 0), so the entry point below writes the C loop's own gradients
 * bit for bit, whatever the blocking: GRAD_ROWS rows j of 64 elements in vector registers across the samples, then
 * the columns left (fewer than 64) eight rows at a time in blocks of eight (eight independent sums, not one), then
 * one by one. grad_w (n_out, n_in), grad_b (n_out) or NULL. */
static void SUFFIX(gradients)(const REAL *delta, const REAL *const *inputs, int64_t B, int64_t n_in, int64_t n_out,
                              REAL *grad_w, REAL *grad_b)
{
    if (B == 1) {
        for (int64_t j = 0; j < n_out; j++) {
            const REAL dj = delta[j], *in = inputs[0];
            REAL *gw = grad_w + j * n_in;
            for (int64_t i = 0; i < n_in; i++) gw[i] = dj * in[i];
        }
    } else {
        int64_t i0 = 0; /* the first column that the 64-wide blocks leave */
#if defined(__GNUC__)
        i0 = n_in - n_in % 64;
        for (int64_t j = 0; j < n_out; j += GRAD_ROWS) {
            const int64_t m = n_out - j < GRAD_ROWS ? n_out - j : GRAD_ROWS; /* rows j .. j + m - 1 */
            REAL *rows[GRAD_ROWS]; /* past the last row: the last row again, written twice with the same values */
            for (int r = 0; r < GRAD_ROWS; r++) rows[r] = grad_w + (j + (r < m ? r : m - 1)) * n_in;
            for (int64_t i = 0; i < i0; i += 64) { /* each input vector loaded once for the rows */
                SUFFIX(vec16) g[GRAD_ROWS][4] = {{{0}}};
                for (int64_t b = 0; b < B; b++) {
                    const REAL *in = inputs[b] + i;
                    SUFFIX(vec16) d[GRAD_ROWS];
                    for (int r = 0; r < GRAD_ROWS; r++)
                        d[r] = SUFFIX(splat16)(delta[b * n_out + j + (r < m ? r : m - 1)]);
                    for (int t = 0; t < 4; t++) {
                        const SUFFIX(vec16) v = SUFFIX(load16)(in + 16 * t);
                        for (int r = 0; r < GRAD_ROWS; r++)
                            g[r][t] = SUFFIX(fma16)(v, d[r], g[r][t]);
                    }
                }
                for (int r = 0; r < GRAD_ROWS; r++)
                    for (int t = 0; t < 4; t++)
                        SUFFIX(store16)(rows[r] + i + 16 * t, g[r][t]);
            }
        }
        for (int64_t j = 0; j < n_out; j += 8) { /* the columns left, in blocks of eight: eight rows at once */
            const int64_t m = n_out - j < 8 ? n_out - j : 8;
            const REAL *dj[8];
            REAL *rows[8];
            for (int r = 0; r < 8; r++) {
                dj[r] = delta + j + (r < m ? r : m - 1);
                rows[r] = grad_w + (j + (r < m ? r : m - 1)) * n_in;
            }
            for (int64_t i = i0; i + 8 <= n_in; i += 8) {
                SUFFIX(vec8) g[8] = {{0}};
                for (int64_t b = 0; b < B; b++) {
                    const SUFFIX(vec8) v = SUFFIX(load8)(inputs[b] + i);
                    for (int r = 0; r < 8; r++)
                        g[r] = SUFFIX(fma8)(v, SUFFIX(splat8)(dj[r][b * n_out]), g[r]);
                }
                for (int r = 0; r < 8; r++)
                    SUFFIX(store8)(rows[r] + i, g[r]);
            }
        }
        i0 = n_in - n_in % 8 < i0 ? i0 : n_in - n_in % 8;
#endif
        for (int64_t j = 0; j < n_out; j++)
            for (int64_t i = i0; i < n_in; i++) {
                REAL g = 0;
                for (int64_t b = 0; b < B; b++) g = R_FMA(inputs[b][i], delta[b * n_out + j], g);
                grad_w[j * n_in + i] = g;
            }
    }
    if (grad_b)
        for (int64_t j = 0; j < n_out; j++) {
            REAL gb = B == 1 ? delta[j] : 0;
            if (B > 1)
                for (int64_t b = 0; b < B; b++) gb += delta[b * n_out + j];
            grad_b[j] = gb;
        }
}

/* One call of MLP.loss_and_grads (fast/one_update.py): network.loss_and_gradients on the B rows of x (B, sizes[0])
 * and y (B, sizes[L]), the parameters of plan read and never written (plan's x_data, y_data are not used).
 * out: 3L + 1 pointers, where the results are written: dE/dW[0..L-1] (n_{k+1}, n_k), dE/db[0..L-1] (n_{k+1}; NULL
 * pointers without biases), deltas[0..L-1] (B, n_{k+1}), and E (one value). The forward phase, the output delta and
 * the hidden deltas are the C loop's own functions and the gradients its update's sums, so every value is what
 * SUFFIX(train_update) computes before its step. Returns 0, 1 when the workspace cannot be allocated, 2 for an
 * invalid L or B. */
int SUFFIX(mbp_loss_and_grads)(const mbp_plan *plan, const REAL *x, const REAL *y, int64_t B, void *const *out)
{
    const int64_t L = plan->n_layers, *sizes = plan->sizes, n_out = sizes[L];
    if (L < 1 || L > 64 || B < 1)
        return 2;
    REAL *const *grad_w = (REAL *const *)out, *const *grad_b = (REAL *const *)out + L;
    REAL *const *deltas = (REAL *const *)out + 2 * L;
    REAL *loss = (REAL *)out[3 * L];
    SUFFIX(workspace) w;
    if (SUFFIX(workspace_alloc)(&w, sizes, L, B, 0)) /* the gradients are written into out */
        return 1;
    SUFFIX(forward_rows)(plan, &w, x, NULL, B);
    const double c = SUFFIX(loss_scale)(plan, B);
    REAL acc = 0;
    for (int64_t b = 0; b < B; b++)
        acc = SUFFIX(output_delta)(plan->loss_kind, plan->acts[L - 1], (REAL)plan->slopes[L - 1],
                                   w.logits + b * n_out, w.act[L] + b * n_out, y + b * n_out,
                                   deltas[L - 1] + b * n_out, n_out, c, acc);
    for (int64_t k = L - 1; k >= 0; k--) {
        const int64_t n_in = sizes[k], n_o = sizes[k + 1];
        if (k > 0)
            for (int64_t b = 0; b < B; b++)
                SUFFIX(hidden_delta)(plan->acts[k - 1], (REAL)plan->slopes[k - 1],
                                     ((REAL *const *)plan->weights)[k], deltas[k] + b * n_o, w.act[k] + b * n_in,
                                     deltas[k - 1] + b * n_in, n_in, n_o);
        for (int64_t b = 0; b < B; b++)
            w.inputs[b] = (k == 0) ? x + b * sizes[0] : w.act[k] + b * n_in;
        SUFFIX(gradients)(deltas[k], w.inputs, B, n_in, n_o, grad_w[k], plan->biases ? grad_b[k] : NULL);
    }
    *loss = acc * (REAL)c;
    SUFFIX(workspace_free)(&w);
    return 0;
}

/* MLP.step after MLP.loss_and_grads' call (fast/one_update.py): network.update, W[k] <- W[k] + alpha dE/dW[k] and
 * b[k] <- b[k] + alpha dE/db[k] with alpha = -lr, in place in the plan's parameters, each element rounded once as
 * torch's add_(g, alpha) rounds it where it fuses the multiply-add (one_update.py checks that it does before it
 * uses this). grads: the out pointers of the call (dE/dW[0..L-1], then dE/db[0..L-1]). Returns 0, or 2 for an
 * invalid L. */
int SUFFIX(mbp_step)(const mbp_plan *plan, void *const *grads, REAL alpha)
{
    const int64_t L = plan->n_layers, *sizes = plan->sizes;
    if (L < 1 || L > 64)
        return 2;
    for (int64_t k = 0; k < L; k++) {
        REAL *W = ((REAL *const *)plan->weights)[k];
        const REAL *g = (const REAL *)grads[k];
        for (int64_t i = 0, n = sizes[k] * sizes[k + 1]; i < n; i++) W[i] = R_FMA(alpha, g[i], W[i]);
        if (plan->biases) {
            REAL *b = ((REAL *const *)plan->biases)[k];
            const REAL *gb = (const REAL *)grads[L + k];
            for (int64_t i = 0; i < sizes[k + 1]; i++) b[i] = R_FMA(alpha, gb[i], b[i]);
        }
    }
    return 0;
}
