/* One dtype's training loop. Included by mlp.c with REAL, SUFFIX(name) and the libm functions R_* defined;
 * not compiled on its own. Layout: rows are samples, W[k] is (n_{k+1}, n_k) row-major, as in network.py. */

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

/* x = f(net) in place on one row of n values (activations.py: forward). */
static void SUFFIX(activate)(int32_t act, REAL slope, REAL *z, int64_t n)
{
    int64_t i;
    switch (act) {
    case ACT_SIGMOID:
        for (i = 0; i < n; i++) z[i] = (REAL)1 / ((REAL)1 + R_EXP(-z[i]));
        break;
    case ACT_TANH:
        for (i = 0; i < n; i++) z[i] = R_TANH(z[i]);
        break;
    case ACT_RELU:
        for (i = 0; i < n; i++) z[i] = z[i] > 0 ? z[i] : (z[i] != z[i] ? z[i] : (REAL)0);
        break;
    case ACT_LEAKY_RELU:
        for (i = 0; i < n; i++) z[i] = z[i] > 0 ? z[i] : z[i] * slope;
        break;
    case ACT_SOFTMAX: {
        /* exp(net - max) * (1 / sum), as torch's softmax kernel does */
        REAL m = z[0], sum = 0;
        for (i = 1; i < n; i++) m = z[i] > m ? z[i] : m;
        for (i = 0; i < n; i++) { z[i] = R_EXP(z[i] - m); sum += z[i]; }
        REAL inv = (REAL)1 / sum;
        for (i = 0; i < n; i++) z[i] = z[i] * inv;
        break;
    }
    default: /* ACT_IDENTITY */
        break;
    }
}

/* dE/dnet = f'(net) * dE/dx in place on one row g, with f' read off the output x (activations.py: backward). */
static void SUFFIX(act_backward)(int32_t act, REAL slope, const REAL *x, REAL *g, int64_t n)
{
    int64_t i;
    switch (act) {
    case ACT_SIGMOID:
        for (i = 0; i < n; i++) g[i] = g[i] * (x[i] * ((REAL)1 - x[i]));
        break;
    case ACT_TANH:
        for (i = 0; i < n; i++) g[i] = g[i] * ((REAL)1 - x[i] * x[i]);
        break;
    case ACT_RELU:
        for (i = 0; i < n; i++) if (x[i] <= 0) g[i] = 0;
        break;
    case ACT_LEAKY_RELU:
        for (i = 0; i < n; i++) g[i] = g[i] * (x[i] > 0 ? (REAL)1 : slope);
        break;
    case ACT_SOFTMAX: {
        /* J^T g = x * (g - sum(g * x)) */
        REAL s = 0;
        for (i = 0; i < n; i++) s += g[i] * x[i];
        for (i = 0; i < n; i++) g[i] = x[i] * (g[i] - s);
        break;
    }
    default:
        break;
    }
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
    const int64_t n_layers = plan->n_layers, n_samples = plan->n_samples;
    const int64_t *sizes = plan->sizes;
    const int32_t *acts = plan->acts;
    const double *slopes = plan->slopes;
    const int32_t loss_kind = plan->loss_kind, reduction = plan->reduction, half = plan->half;
    REAL *const *weights = (REAL *const *)plan->weights;
    REAL *const *biases = (REAL *const *)plan->biases;
    const REAL *x_data = (const REAL *)plan->x_data, *y_data = (const REAL *)plan->y_data;
    const int64_t L = n_layers;
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

    /* workspace: activities x^1..x^L, the output logits, two delta buffers (ping-pong), one gradient row */
    int64_t total = 0;
    for (int64_t k = 1; k <= L; k++) total += max_batch * sizes[k];
    total += max_batch * sizes[L] + 2 * max_batch * max_width + max_width;
    REAL *work = (REAL *)malloc((size_t)total * sizeof(REAL));
    if (!work)
        return 1;
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

        /* ---- forward phase: x^{k+1} = f(x^k W[k]^T + b[k]) */
        for (int64_t k = 0; k < L; k++) {
            const int64_t n_in = sizes[k], n_o = sizes[k + 1];
            const REAL *W = weights[k];
            const REAL *bias = biases ? biases[k] : NULL;
            REAL *out = (k == L - 1) ? logits : act_buf[k + 1];
            for (int64_t b = 0; b < B; b++) {
                const REAL *in = (k == 0) ? x_data + idx[b] * n_in0 : act_buf[k] + b * n_in;
                REAL *z = out + b * n_o;
                for (int64_t j = 0; j < n_o; j++) {
                    REAL s = SUFFIX(dot)(W + j * n_in, in, n_in);
                    z[j] = bias ? bias[j] + s : s;
                }
                if (k == L - 1)
                    memcpy(act_buf[L] + b * n_o, z, (size_t)n_o * sizeof(REAL));
                SUFFIX(activate)(acts[k], (REAL)slopes[k], (k == L - 1) ? act_buf[L] + b * n_o : z, n_o);
            }
        }

        /* ---- the loss E and the output-layer delta dE/dnet^L (losses.py) */
        double c = reduction == RED_MEAN ? 1.0 / (double)B
                 : reduction == RED_ELEMENTWISE_MEAN ? 1.0 / (double)(B * n_out) : 1.0;
        if (loss_kind == LOSS_SQUARED_ERROR && half)
            c = c * 0.5;
        REAL acc = 0;
        REAL *delta = delta_a, *spare = delta_b;
        for (int64_t b = 0; b < B; b++) {
            const REAL *x = act_buf[L] + b * n_out, *z = logits + b * n_out, *y = y_data + idx[b] * n_out;
            REAL *d = delta + b * n_out;
            if (loss_kind == LOSS_SQUARED_ERROR) {
                const REAL c2 = (REAL)(2.0 * c);
                for (int64_t j = 0; j < n_out; j++) {
                    REAL e = x[j] - y[j];
                    acc += e * e;
                    d[j] = e * c2;
                }
                SUFFIX(act_backward)(acts[L - 1], (REAL)slopes[L - 1], x, d, n_out);
            } else if (loss_kind == LOSS_CROSS_ENTROPY) {
                REAL m = z[0], s = 0;
                for (int64_t j = 1; j < n_out; j++) m = z[j] > m ? z[j] : m;
                for (int64_t j = 0; j < n_out; j++) s += R_EXP(z[j] - m);
                const REAL lse = m + R_LOG(s);
                for (int64_t j = 0; j < n_out; j++) {
                    acc += y[j] * (z[j] - lse);
                    d[j] = (x[j] - y[j]) * (REAL)c;
                }
            } else { /* LOSS_BINARY_CROSS_ENTROPY */
                for (int64_t j = 0; j < n_out; j++) {
                    REAL zj = z[j];
                    REAL relu = zj < 0 ? (REAL)0 : zj;
                    acc += (relu - y[j] * zj) + R_LOG1P(R_EXP(-(zj < 0 ? -zj : zj)));
                    d[j] = (x[j] - y[j]) * (REAL)c;
                }
            }
        }
        losses[u] = loss_kind == LOSS_CROSS_ENTROPY ? (-acc) * (REAL)c : acc * (REAL)c;

        /* ---- backward phase and step, from the output layer back to the first */
        for (int64_t k = L - 1; k >= 0; k--) {
            const int64_t n_in = sizes[k], n_o = sizes[k + 1];
            REAL *W = weights[k];
            REAL *bias = biases ? biases[k] : NULL;
            if (k > 0) {
                /* sum_c delta_c w_cj through the weights before their step, then times f'(net_j) */
                for (int64_t b = 0; b < B; b++) {
                    REAL *back = spare + b * n_in;
                    const REAL *d = delta + b * n_o;
                    for (int64_t i = 0; i < n_in; i++) back[i] = 0;
                    for (int64_t j = 0; j < n_o; j++) {
                        const REAL dj = d[j];
                        const REAL *Wj = W + j * n_in;
                        for (int64_t i = 0; i < n_in; i++) back[i] += dj * Wj[i];
                    }
                    SUFFIX(act_backward)(acts[k - 1], (REAL)slopes[k - 1], act_buf[k] + b * n_in, back, n_in);
                }
            }
            /* dE/dW[j, i] = sum_b delta[b, j] x[b, i];  W <- W - lr dE/dW;  b <- b - lr sum_b delta[b, j] */
            for (int64_t j = 0; j < n_o; j++) {
                REAL *Wj = W + j * n_in;
                REAL gb;
                if (B == 1) {
                    const REAL dj = delta[j];
                    const REAL *in = (k == 0) ? x_data + idx[0] * n_in0 : act_buf[k];
                    if (last && grad_w_out)
                        for (int64_t i = 0; i < n_in; i++) grad_w_out[k][j * n_in + i] = dj * in[i];
                    for (int64_t i = 0; i < n_in; i++) {
                        const REAL g = dj * in[i];
                        Wj[i] = Wj[i] + alpha * g;
                    }
                    gb = dj;
                } else {
                    for (int64_t i = 0; i < n_in; i++) grad_row[i] = 0;
                    gb = 0;
                    for (int64_t b = 0; b < B; b++) {
                        const REAL dbj = delta[b * n_o + j];
                        const REAL *in = (k == 0) ? x_data + idx[b] * n_in0 : act_buf[k] + b * n_in;
                        for (int64_t i = 0; i < n_in; i++) grad_row[i] += dbj * in[i];
                        gb += dbj;
                    }
                    if (last && grad_w_out)
                        memcpy(grad_w_out[k] + j * n_in, grad_row, (size_t)n_in * sizeof(REAL));
                    for (int64_t i = 0; i < n_in; i++) Wj[i] = Wj[i] + alpha * grad_row[i];
                }
                if (bias) {
                    if (last && grad_b_out) grad_b_out[k][j] = gb;
                    bias[j] = bias[j] + alpha * gb;
                }
            }
            REAL *t = delta; delta = spare; spare = t;
        }
    }
    free(work);
    return 0;
}
