/* One dtype's population kernel. Included by population.c with REAL, SUFFIX(name) and R_* defined; not compiled on
 * its own. A row is LANES values of one quantity, one per member of the block (member m0 + l in lane l). */

/* Activation.forward on one row: v <- f(v) (activations.py: torch.sigmoid, torch.tanh, relu, leaky_relu, identity). */
POP_INLINE void SUFFIX(pop_forward)(int32_t act, REAL slope, REAL *restrict v)
{
    switch (act) {
    case ACT_SIGMOID: LANES_LOOP(l) v[l] = R_SIGMOID(v[l]); break;
    case ACT_TANH: LANES_LOOP(l) v[l] = R_TANH(v[l]); break;
    case ACT_RELU: LANES_LOOP(l) v[l] = v[l] > 0 ? v[l] : (v[l] != v[l] ? v[l] : (REAL)0); break;
    case ACT_LEAKY_RELU: LANES_LOOP(l) v[l] = v[l] > 0 ? v[l] : v[l] * slope; break;
    default: break; /* identity */
    }
}

/* Activation.backward on one row: g <- f'(net) * g, f' read off the output x with the class's formula. */
POP_INLINE void SUFFIX(pop_backward)(int32_t act, REAL slope, const REAL *restrict x, REAL *restrict g)
{
    switch (act) {
    case ACT_SIGMOID: LANES_LOOP(l) g[l] = g[l] * (x[l] * ((REAL)1 - x[l])); break;
    case ACT_TANH: LANES_LOOP(l) g[l] = g[l] * (((REAL)1 - x[l]) * ((REAL)1 + x[l])); break;
    case ACT_RELU: LANES_LOOP(l) g[l] = x[l] <= 0 ? (REAL)0 : g[l]; break; /* masked_fill */
    case ACT_LEAKY_RELU: LANES_LOOP(l) g[l] = g[l] * (x[l] > 0 ? (REAL)1 : slope); break;
    default: break; /* identity */
    }
}

/* One block's state and workspace: parameters and their last good copies as rows, activities, deltas. */
typedef struct {
    int64_t L, n_par;
    const int64_t *sizes;
    REAL *W[64], *B[64];       /* W[k] row (j * n_k + i), B[k] row j */
    REAL *par, *good;          /* n_par rows each: all W then all B, the parameters and the last good ones */
    REAL *x[65];               /* activities x^0 .. x^L, sizes[k] rows */
    REAL *logits;              /* net^L, sizes[L] rows */
    REAL *da, *db;             /* deltas, max width rows each */
} SUFFIX(pop_block);

/* network.forward_phase for a block: x^{k+1} = f(W x^k + b), the dot product in index order, then the bias. */
POP_INLINE void SUFFIX(pop_forward_phase)(const pop_plan *p, SUFFIX(pop_block) *b)
{
    for (int64_t k = 0; k < b->L; k++) {
        const int64_t n_in = b->sizes[k], n_out = b->sizes[k + 1];
        const REAL slope = (REAL)p->slopes[k];
        for (int64_t j = 0; j < n_out; j++) {
            REAL *restrict z = b->x[k + 1] + j * LANES;
            REAL s[LANES];
            LANES_LOOP(l) s[l] = 0;
            for (int64_t i = 0; i < n_in; i++) {
                const REAL *restrict w = b->W[k] + (j * n_in + i) * LANES, *restrict a = b->x[k] + i * LANES;
                LANES_LOOP(l) s[l] += w[l] * a[l];
            }
            if (p->bias) {
                const REAL *restrict bias = b->B[k] + j * LANES;
                LANES_LOOP(l) z[l] = bias[l] + s[l];
            } else {
                LANES_LOOP(l) z[l] = s[l];
            }
            if (k == b->L - 1) memcpy(b->logits + j * LANES, z, sizeof(REAL) * LANES);
            SUFFIX(pop_forward)(p->acts[k], slope, z);
        }
    }
}

/* Loss.value's terms of the output layer: acc += the row's terms (E = c * acc); y: n_L target rows. */
POP_INLINE void SUFFIX(pop_loss_terms)(const pop_plan *p, const SUFFIX(pop_block) *b, const REAL *y, REAL *restrict acc)
{
    const int64_t n = b->sizes[b->L];
    for (int64_t j = 0; j < n; j++) {
        const REAL *restrict x = b->x[b->L] + j * LANES, *restrict z = b->logits + j * LANES;
        const REAL *restrict t = y + j * LANES;
        if (p->loss_kind == POP_SQUARED_ERROR) {
            LANES_LOOP(l) { const REAL e = x[l] - t[l]; acc[l] += e * e; }
        } else { /* max(z, 0) - y z + log(1 + exp(-|z|)) */
            LANES_LOOP(l) {
                const REAL zl = z[l], relu = zl < 0 ? (REAL)0 : zl;
                acc[l] += (relu - t[l] * zl) + R_LOG1P(R_EXP(-(zl < 0 ? -zl : zl)));
            }
        }
    }
}

/* One online update of every member of the block on its own sample (x^0 and y rows gathered): network.py's
 * loss_and_gradients and update. loss: the update's E per member; on: 1 for an active member (a frozen one keeps
 * its parameters, as lr * active = 0 leaves them in the reference). */
POP_INLINE void SUFFIX(pop_update)(const pop_plan *p, SUFFIX(pop_block) *b, const REAL *y, const REAL *neg_lr,
                               const REAL *on, REAL *restrict loss)
{
    const int64_t L = b->L;
    const REAL c = (REAL)p->c_update;
    SUFFIX(pop_forward_phase)(p, b);
    LANES_LOOP(l) loss[l] = 0;
    SUFFIX(pop_loss_terms)(p, b, y, loss);
    LANES_LOOP(l) loss[l] = loss[l] * c;
    /* output_delta: squared error 2c (x - y) f'(net); binary cross-entropy on sigmoid c (x - y) */
    REAL *d = b->da, *d_next = b->db;
    const int64_t nL = b->sizes[L];
    for (int64_t j = 0; j < nL; j++) {
        const REAL *restrict x = b->x[L] + j * LANES, *restrict t = y + j * LANES;
        REAL *restrict dj = d + j * LANES;
        if (p->loss_kind == POP_SQUARED_ERROR) {
            const REAL c2 = (REAL)(2.0 * p->c_update);
            LANES_LOOP(l) dj[l] = (x[l] - t[l]) * c2;
            SUFFIX(pop_backward)(p->acts[L - 1], (REAL)p->slopes[L - 1], x, dj);
        } else {
            LANES_LOOP(l) dj[l] = (x[l] - t[l]) * c;
        }
    }
    for (int64_t k = L - 1; k >= 0; k--) {
        const int64_t n_in = b->sizes[k], n_out = b->sizes[k + 1];
        if (k > 0) { /* hidden_delta: f'(net_i) * sum_c delta_c w_ci, with W[k] before its update */
            for (int64_t i = 0; i < n_in; i++) {
                REAL *restrict back = d_next + i * LANES;
                LANES_LOOP(l) back[l] = 0;
                for (int64_t cc = 0; cc < n_out; cc++) {
                    const REAL *restrict w = b->W[k] + (cc * n_in + i) * LANES, *restrict dc = d + cc * LANES;
                    LANES_LOOP(l) back[l] += dc[l] * w[l];
                }
                SUFFIX(pop_backward)(p->acts[k - 1], (REAL)p->slopes[k - 1], b->x[k] + i * LANES, back);
            }
        }
        /* weight_gradient delta_j x_i (one sample), bias_gradient delta_j, update p + g * (-lr) */
        for (int64_t j = 0; j < n_out; j++) {
            const REAL *restrict dj = d + j * LANES;
            for (int64_t i = 0; i < n_in; i++) {
                REAL *restrict w = b->W[k] + (j * n_in + i) * LANES;
                const REAL *restrict a = b->x[k] + i * LANES;
                LANES_LOOP(l) {
                    const REAL moved = w[l] + (dj[l] * a[l]) * neg_lr[l];
                    w[l] = on[l] != 0 ? moved : w[l];
                }
            }
            if (p->bias) {
                REAL *restrict bias = b->B[k] + j * LANES;
                LANES_LOOP(l) {
                    const REAL moved = bias[l] + dj[l] * neg_lr[l];
                    bias[l] = on[l] != 0 ? moved : bias[l];
                }
            }
        }
        REAL *swap = d; d = d_next; d_next = swap;
    }
}

/* evaluate_members on one split for the block: loss (c * the sum over samples and outputs) and accuracy (output
 * >= 0.5 for one output, else the first largest output, against the labels; 0 without labels). */
POP_INLINE void SUFFIX(pop_evaluate)(const pop_plan *p, SUFFIX(pop_block) *b, int split, REAL *restrict loss,
                                 REAL *restrict accuracy, REAL *ybuf)
{
    const REAL *X = (const REAL *)p->eval_x[split], *Y = (const REAL *)p->eval_y[split];
    const int64_t *labels = p->labels[split];
    const int64_t N = p->eval_n[split], n0 = b->sizes[0], nL = b->sizes[b->L];
    int64_t correct[LANES];
    LANES_LOOP(l) { loss[l] = 0; correct[l] = 0; }
    for (int64_t s = 0; s < N; s++) {
        for (int64_t i = 0; i < n0; i++) {
            const REAL v = X[s * n0 + i];
            LANES_LOOP(l) b->x[0][i * LANES + l] = v;
        }
        for (int64_t j = 0; j < nL; j++) {
            const REAL v = Y[s * nL + j];
            LANES_LOOP(l) ybuf[j * LANES + l] = v;
        }
        SUFFIX(pop_forward_phase)(p, b);
        SUFFIX(pop_loss_terms)(p, b, ybuf, loss);
        if (labels) {
            const REAL *out = b->x[b->L];
            const int64_t label = labels[s];
            if (nL == 1) {
                LANES_LOOP(l) correct[l] += (int64_t)(out[l] >= (REAL)0.5) == label;
            } else {
                LANES_LOOP(l) {
                    int64_t best = 0;
                    for (int64_t j = 1; j < nL; j++) if (out[j * LANES + l] > out[best * LANES + l]) best = j;
                    correct[l] += best == label;
                }
            }
        }
    }
    const REAL c = (REAL)p->c_eval[split];
    LANES_LOOP(l) {
        loss[l] = loss[l] * c;
        accuracy[l] = labels ? (REAL)correct[l] / (REAL)N : (REAL)0;
    }
}

/* Run up to E epochs of every member (see population.c). rows: (E, 4, K) figures of each epoch's row (train loss,
 * train accuracy, test loss, test accuracy); stop_epoch (K,): the epoch of this call (0-based) in which a member
 * stopped, else -1, and stop_kind (K,) POP_*; bad_losses (K, n): the update losses of the epoch a member diverged
 * in. Returns the epochs run (E, or fewer once no member is active), or -1 when the workspace cannot be allocated;
 * nothing is changed then. */
POP_INLINE int64_t SUFFIX(pop_train)(const pop_plan *p, const int64_t *sizes, int64_t L, int64_t E, double *rows,
                                     int32_t *stop_epoch, int8_t *stop_kind, double *bad_losses)
{
    const int64_t K = p->K, n = p->n_train;
    int64_t n_par = 0, widths = 0, max_w = 0;
    for (int64_t k = 0; k < L; k++) n_par += sizes[k + 1] * sizes[k] + (p->bias ? sizes[k + 1] : 0);
    for (int64_t k = 0; k <= L; k++) { widths += sizes[k]; if (sizes[k] > max_w) max_w = sizes[k]; }
    /* rows: par, good, activities, logits, two deltas, targets; then the epoch's losses and order */
    const int64_t n_rows = 2 * n_par + widths + sizes[L] + 2 * max_w + sizes[L];
    REAL *work = (REAL *)malloc((size_t)(n_rows + n) * LANES * sizeof(REAL));
    int32_t *order = (int32_t *)malloc((size_t)n * LANES * sizeof(int32_t));
    int32_t *perm = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    uint64_t *mods = (uint64_t *)malloc((size_t)n * sizeof(uint64_t));
    if (!work || !order || !perm || !mods) {
        free(work); free(order); free(perm); free(mods);
        return -1;
    }
    for (int64_t i = 0; i + 1 < n; i++) mods[i] = fastmod_m((uint32_t)(n - i));
    SUFFIX(pop_block) b;
    b.L = L; b.n_par = n_par; b.sizes = sizes;
    b.par = work; b.good = work + n_par * LANES;
    REAL *q = b.par;
    for (int64_t k = 0; k < L; k++) { b.W[k] = q; q += sizes[k + 1] * sizes[k] * LANES; }
    for (int64_t k = 0; k < L; k++) { b.B[k] = q; if (p->bias) q += sizes[k + 1] * LANES; }
    q = b.good + n_par * LANES;
    for (int64_t k = 0; k <= L; k++) { b.x[k] = q; q += sizes[k] * LANES; }
    b.logits = q; q += sizes[L] * LANES;
    b.da = q; q += max_w * LANES;
    b.db = q; q += max_w * LANES;
    REAL *ybuf = q; q += sizes[L] * LANES;
    REAL *upd_loss = q; /* n rows: the epoch's update losses */
    const REAL *X = (const REAL *)p->x_train, *Y = (const REAL *)p->y_train;
    const REAL *lr = (const REAL *)p->lr;
    const int64_t n0 = sizes[0], nL = sizes[L];
    int64_t epochs_run = 0;

    for (int64_t m = 0; m < K; m++) { stop_epoch[m] = -1; stop_kind[m] = POP_RUNNING; }
    for (int64_t m0 = 0; m0 < K; m0 += LANES) {
        const int nl = (int)(K - m0 < LANES ? K - m0 : LANES);
        uint8_t on[LANES];
        REAL neg_lr[LANES];
        int any = 0;
        LANES_LOOP(l) {
            on[l] = l < nl ? p->active[m0 + l] != 0 : 0;
            neg_lr[l] = l < nl ? -lr[m0 + l] : 0;
            any |= on[l];
        }
        /* the block's parameters as rows (a padding lane copies member m0's, and never moves) */
        int64_t r = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t k = 0; k < L; k++) {
                if (pass == 1 && !p->bias) break;
                const int64_t count = pass == 0 ? sizes[k + 1] * sizes[k] : sizes[k + 1];
                const REAL *src = (const REAL *)(pass == 0 ? p->weights[k] : p->biases[k]);
                for (int64_t e = 0; e < count; e++, r++)
                    LANES_LOOP(l) b.par[r * LANES + l] = src[(m0 + (l < nl ? l : 0)) * count + e];
            }
        }
        memcpy(b.good, b.par, (size_t)n_par * LANES * sizeof(REAL));

        REAL keep[LANES]; /* 1 for an active member, as a row the update can blend with */
        int64_t e = 0;
        for (; e < E && any; e++) {
            for (int l = 0; l < LANES; l++) keep[l] = on[l] ? (REAL)1 : (REAL)0;
            /* each active member's order of this epoch, from its own generator */
            LANES_LOOP(l) {
                if (on[l]) randperm(p->rng + (m0 + l) * p->rng_stride, n, mods, perm);
                for (int64_t t = 0; t < n; t++) order[t * LANES + l] = on[l] ? perm[t] : 0;
            }
            for (int64_t t = 0; t < n; t++) {
                const int32_t *idx = order + t * LANES;
                for (int64_t i = 0; i < n0; i++)
                    LANES_LOOP(l) b.x[0][i * LANES + l] = X[idx[l] * n0 + i];
                for (int64_t j = 0; j < nL; j++)
                    LANES_LOOP(l) ybuf[j * LANES + l] = Y[idx[l] * nL + j];
                SUFFIX(pop_update)(p, &b, ybuf, neg_lr, keep, upd_loss + t * LANES);
            }
            REAL fig[4][LANES];
            SUFFIX(pop_evaluate)(p, &b, 0, fig[0], fig[1], ybuf);
            if (p->eval_x[1]) {
                SUFFIX(pop_evaluate)(p, &b, 1, fig[2], fig[3], ybuf);
            } else {
                memcpy(fig[2], fig[0], sizeof fig[0]);
                memcpy(fig[3], fig[1], sizeof fig[1]);
            }
            /* the rules: finite or back to the last good state; the target; the rows */
            any = 0;
            for (int l = 0; l < nl; l++) {
                const int64_t m = m0 + l;
                if (on[l]) {
                    int ok = 1;
                    for (int64_t t = 0; t < n; t++) ok &= isfinite(upd_loss[t * LANES + l]) != 0;
                    for (int f = 0; f < 4; f++) ok &= isfinite(fig[f][l]) != 0;
                    if (!ok) {
                        for (int64_t rr = 0; rr < n_par; rr++) b.par[rr * LANES + l] = b.good[rr * LANES + l];
                        for (int64_t t = 0; t < n; t++) bad_losses[m * n + t] = (double)upd_loss[t * LANES + l];
                        stop_epoch[m] = (int32_t)e; stop_kind[m] = POP_DIVERGED; on[l] = 0;
                    } else {
                        for (int64_t rr = 0; rr < n_par; rr++) b.good[rr * LANES + l] = b.par[rr * LANES + l];
                        for (int f = 0; f < 4; f++) p->last[f * K + m] = (double)fig[f][l];
                        if (p->has_target && (double)fig[0][l] <= p->target) {
                            stop_epoch[m] = (int32_t)e; stop_kind[m] = POP_REACHED; on[l] = 0;
                        }
                    }
                }
                for (int f = 0; f < 4; f++) rows[(e * 4 + f) * K + m] = p->last[f * K + m];
                any |= on[l];
            }
        }
        if (e > epochs_run) epochs_run = e;
        for (; e < E; e++) /* every member of the block stopped: its figures stay */
            for (int l = 0; l < nl; l++)
                for (int f = 0; f < 4; f++) rows[(e * 4 + f) * K + m0 + l] = p->last[f * K + m0 + l];
        /* back to the (K, ...) tensors */
        r = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t k = 0; k < L; k++) {
                if (pass == 1 && !p->bias) break;
                const int64_t count = pass == 0 ? sizes[k + 1] * sizes[k] : sizes[k + 1];
                REAL *dst = (REAL *)(pass == 0 ? p->weights[k] : p->biases[k]);
                for (int64_t e2 = 0; e2 < count; e2++, r++)
                    for (int l = 0; l < nl; l++) dst[(m0 + l) * count + e2] = b.par[r * LANES + l];
            }
        }
        for (int l = 0; l < nl; l++) p->active[m0 + l] = on[l];
    }
    free(work); free(order); free(perm); free(mods);
    return epochs_run;
}

/* The entry point: the lecture's XOR network 2-2-1 with its sizes as constants (the loops over units unrolled, the
 * rows kept in registers), any other network with the sizes read from the plan. The same code either way. */
static int64_t SUFFIX(pop_train_entry)(const pop_plan *p, int64_t E, double *rows, int32_t *stop_epoch,
                                      int8_t *stop_kind, double *bad_losses)
{
    static const int64_t xor_sizes[3] = {2, 2, 1};
    if (p->n_layers == 2 && p->sizes[0] == 2 && p->sizes[1] == 2 && p->sizes[2] == 1)
        return SUFFIX(pop_train)(p, xor_sizes, 2, E, rows, stop_epoch, stop_kind, bad_losses);
    return SUFFIX(pop_train)(p, p->sizes, p->n_layers, E, rows, stop_epoch, stop_kind, bad_losses);
}
