/* The lecture's XOR network, 2-2-1 with biases, output sigmoid, squared error, hidden sigmoid or tanh, in double:
 * population_body.c's pop_train with the whole update, the evaluation and the rules fused into single passes over
 * the lanes, so that every quantity of a lane stays in a register from the forward phase to the update (the
 * general kernel keeps each quantity as a row in memory between its small loops). The same operations in the same
 * order as the general kernel, so the same bits (tests/population/test_population_c_engine.py compares them).
 * Included once by population.c, after the double body. */

/* the parameters' rows, in the general kernel's order (all W, then all B): W0 (2x2), W1 (1x2), b0 (2), b1 (1) */
enum { XW00, XW01, XW10, XW11, XV0, XV1, XB0, XB1, XBO, X_PAR };

/* one hidden activation: sigmoid or tanh (hidden_tanh is a constant wherever this is inlined) */
POP_INLINE double xor_hidden(int hidden_tanh, double v) { return hidden_tanh ? mbp_tanh_f64(v) : pop_sigmoid_f64(v); }
POP_INLINE double xor_hidden_slope(int hidden_tanh, double x)
{
    return hidden_tanh ? ((1.0 - x) * (1.0 + x)) : (x * (1.0 - x));
}

/* One online update of every lane on its own sample (xs: 2 rows, ys: 1 row): pop_update for this network, the
 * dot products as pop_forward_phase sums them (0, then each term in index order, then the bias in front). reuse
 * (a constant where this is inlined): the forward phase is given (pre: rows h0, h1, o), computed by the same
 * operations on the same parameters and sample (xor_evaluate's, kept for the next epoch's first update). */
POP_INLINE void xor_update(int hidden_tanh, int reuse, double *restrict par, const double *restrict xs,
                           const double *restrict ys, const double *restrict neg_lr, const double *restrict keep,
                           double c, const double *restrict pre, double *restrict loss)
{
    const double c2 = 2.0 * c;
    LANES_LOOP(l) {
        const double a0 = xs[l], a1 = xs[LANES + l], t = ys[l], nlr = neg_lr[l], on = keep[l];
        const double w00 = par[XW00 * LANES + l], w01 = par[XW01 * LANES + l], w10 = par[XW10 * LANES + l],
                     w11 = par[XW11 * LANES + l], v0 = par[XV0 * LANES + l], v1 = par[XV1 * LANES + l],
                     b0 = par[XB0 * LANES + l], b1 = par[XB1 * LANES + l], bo = par[XBO * LANES + l];
        double h0, h1, o;
        if (reuse) {
            h0 = pre[l]; h1 = pre[LANES + l]; o = pre[2 * LANES + l];
        } else {
            double s0 = 0, s1 = 0, so = 0;
            s0 += w00 * a0; s0 += w01 * a1;
            s1 += w10 * a0; s1 += w11 * a1;
            h0 = xor_hidden(hidden_tanh, b0 + s0); h1 = xor_hidden(hidden_tanh, b1 + s1);
            so += v0 * h0; so += v1 * h1;
            o = pop_sigmoid_f64(bo + so);
        }
        double acc = 0;
        const double e = o - t;
        acc += e * e;
        loss[l] = acc * c;
        const double d = ((o - t) * c2) * (o * (1.0 - o));                  /* output_delta */
        double g0 = 0, g1 = 0;                                               /* hidden_delta, W1 before its update */
        g0 += d * v0; g1 += d * v1;
        g0 = g0 * xor_hidden_slope(hidden_tanh, h0);
        g1 = g1 * xor_hidden_slope(hidden_tanh, h1);
        const double nv0 = v0 + (d * h0) * nlr, nv1 = v1 + (d * h1) * nlr, nbo = bo + d * nlr;
        const double nw00 = w00 + (g0 * a0) * nlr, nw01 = w01 + (g0 * a1) * nlr, nb0 = b0 + g0 * nlr;
        const double nw10 = w10 + (g1 * a0) * nlr, nw11 = w11 + (g1 * a1) * nlr, nb1 = b1 + g1 * nlr;
        par[XV0 * LANES + l] = on != 0 ? nv0 : v0;
        par[XV1 * LANES + l] = on != 0 ? nv1 : v1;
        par[XBO * LANES + l] = on != 0 ? nbo : bo;
        par[XW00 * LANES + l] = on != 0 ? nw00 : w00;
        par[XW01 * LANES + l] = on != 0 ? nw01 : w01;
        par[XB0 * LANES + l] = on != 0 ? nb0 : b0;
        par[XW10 * LANES + l] = on != 0 ? nw10 : w10;
        par[XW11 * LANES + l] = on != 0 ? nw11 : w11;
        par[XB1 * LANES + l] = on != 0 ? nb1 : b1;
    }
}

/* pop_evaluate for this network on one split: loss c * sum of e^2, accuracy (output >= 0.5) == label, or 0. */
POP_INLINE void xor_evaluate(int hidden_tanh, const pop_plan *p, int split, const double *restrict par,
                             double *restrict loss, double *restrict accuracy, double *restrict fwd)
{
    const double *X = (const double *)p->eval_x[split], *Y = (const double *)p->eval_y[split];
    const int64_t *labels = p->labels[split];
    const int64_t N = p->eval_n[split];
    double correct[LANES];
    LANES_LOOP(l) { loss[l] = 0; correct[l] = 0; }
    for (int64_t s = 0; s < N; s++) {
        const double a0 = X[2 * s], a1 = X[2 * s + 1], t = Y[s];
        const double label = labels ? (double)labels[s] : 0;
        LANES_LOOP(l) {
            double s0 = 0, s1 = 0, so = 0;
            s0 += par[XW00 * LANES + l] * a0; s0 += par[XW01 * LANES + l] * a1;
            s1 += par[XW10 * LANES + l] * a0; s1 += par[XW11 * LANES + l] * a1;
            const double h0 = xor_hidden(hidden_tanh, par[XB0 * LANES + l] + s0);
            const double h1 = xor_hidden(hidden_tanh, par[XB1 * LANES + l] + s1);
            so += par[XV0 * LANES + l] * h0; so += par[XV1 * LANES + l] * h1;
            const double o = pop_sigmoid_f64(par[XBO * LANES + l] + so);
            if (fwd) { /* sample s's forward phase, rows h0, h1, o */
                fwd[(3 * s) * LANES + l] = h0; fwd[(3 * s + 1) * LANES + l] = h1; fwd[(3 * s + 2) * LANES + l] = o;
            }
            const double e = o - t;
            loss[l] += e * e;
            correct[l] += (o >= 0.5 ? 1.0 : 0.0) == label ? 1.0 : 0.0;
        }
    }
    const double c = p->c_eval[split];
    LANES_LOOP(l) {
        loss[l] = loss[l] * c;
        accuracy[l] = labels ? correct[l] / (double)N : 0;
    }
}

/* One block's state between epochs: its parameters and their last good copies as rows, each lane's -lr, whether
 * it trains, its figures in the last row, and its generator: mt19937's `left` and `next` (written back to the state
 * bytes at the end of the call) and the next words of its 624, copied ahead (a population's states are megabytes:
 * read where they lie, every draw would wait on memory). */
#define XOR_AHEAD 32
#define XOR_LANEWISE_SHUFFLE 8 /* an epoch of at most this many samples is shuffled lane-wise (xor_orders) */
typedef struct {
    double par[X_PAR * LANES], good[X_PAR * LANES], neg_lr[LANES], last[4][LANES];
    int64_t next[LANES];
    int32_t left[LANES], have[LANES], at[LANES];
    uint32_t ahead[XOR_AHEAD][LANES]; /* lane l's words at rows at[l] .. at[l] + have[l] - 1 */
    double fwd[3 * XOR_LANEWISE_SHUFFLE * LANES]; /* the last evaluation's forward phase of each training sample */
    int fwd_kept;
    uint8_t on[LANES];
    int any;
} xor_block;

#include "population_xor_orders.c" /* each lane's torch.randperm of the epoch, from its own mt19937 words */

/* The rules for one block after an epoch (pop_train's, lane-wise): finite (x - x is 0 only for a finite x) or back
 * to the last good state and diverged; the target; the figures of the row. */
POP_INLINE void xor_rules(const pop_plan *p, xor_block *b, int64_t m0, int nl, int64_t e, double fig[4][LANES],
                          const double *upd_loss, int32_t *stop_epoch, int8_t *stop_kind, double *bad_losses)
{
    const int64_t n = p->n_train;
    double ok[LANES], bad[LANES], hit[LANES], keep[LANES];
    LANES_LOOP(l) {
        keep[l] = b->on[l] ? 1.0 : 0.0;
        ok[l] = (fig[0][l] - fig[0][l]) + (fig[1][l] - fig[1][l]) + (fig[2][l] - fig[2][l]) + (fig[3][l] - fig[3][l]);
    }
    for (int64_t t = 0; t < n; t++) LANES_LOOP(l) ok[l] += upd_loss[t * LANES + l] - upd_loss[t * LANES + l];
    int events = 0;
    LANES_LOOP(l) {
        const int finite = ok[l] == 0, active = keep[l] != 0;
        bad[l] = active && !finite ? 1.0 : 0.0;
        hit[l] = active && finite && p->has_target && fig[0][l] <= p->target ? 1.0 : 0.0;
        events |= (bad[l] != 0) | (hit[l] != 0);
    }
    for (int r = 0; r < X_PAR; r++) {
        double *restrict pr = b->par + r * LANES, *restrict gr = b->good + r * LANES;
        LANES_LOOP(l) { pr[l] = bad[l] != 0 ? gr[l] : pr[l]; gr[l] = pr[l]; }
    }
    for (int f = 0; f < 4; f++)
        LANES_LOOP(l) b->last[f][l] = keep[l] != 0 && bad[l] == 0 ? fig[f][l] : b->last[f][l];
    if (events) {
        for (int l = 0; l < nl; l++) {
            const int64_t m = m0 + l;
            if (bad[l] != 0) {
                for (int64_t t = 0; t < n; t++) bad_losses[m * n + t] = upd_loss[t * LANES + l];
                stop_epoch[m] = (int32_t)e; stop_kind[m] = POP_DIVERGED; b->on[l] = 0;
            } else if (hit[l] != 0) {
                stop_epoch[m] = (int32_t)e; stop_kind[m] = POP_REACHED; b->on[l] = 0;
            }
        }
        b->any = 0;
        for (int l = 0; l < LANES; l++) b->any |= b->on[l];
    }
}

/* pop_train for this network (the same arguments, the same results but for the rows of the test split when it is
 * the training split: rows (E, 4, K) gets the training figures alone then, and the caller reads them twice), epoch
 * by epoch over every block, so that each epoch's rows are written in order. */
POP_INLINE int64_t xor_train(int hidden_tanh, const pop_plan *p, int64_t E, double *rows, int32_t *stop_epoch,
                             int8_t *stop_kind, double *bad_losses)
{
    const int64_t K = p->K, n = p->n_train, nb = (K + LANES - 1) / LANES;
    const int row_figures = p->eval_x[1] ? 4 : 2;
    /* the evaluation's forward phase serves the next epoch's first update where the training split is evaluated
     * as it is trained on: the same samples, and the same parameters (a lane put back to its good state stops) */
    const int keep_fwd = p->eval_x[0] == p->x_train && p->eval_n[0] == n && n <= XOR_LANEWISE_SHUFFLE;
    /* per block its state; per epoch the samples (2 + 1 rows each), the update losses and the draws */
    xor_block *blocks = (xor_block *)calloc((size_t)nb, sizeof(xor_block)); /* an idle lane reads zeros */
    double *work = (double *)malloc((size_t)(4 * n) * LANES * sizeof(double));
    uint32_t *raw = (uint32_t *)calloc((size_t)(n > 1 ? n : 1) * LANES, sizeof(uint32_t));
    uint64_t *mods = (uint64_t *)malloc((size_t)n * sizeof(uint64_t));
    if (!blocks || !work || !raw || !mods) {
        free(blocks); free(work); free(raw); free(mods);
        return -1;
    }
    for (int64_t i = 0; i + 1 < n; i++) mods[i] = fastmod_m((uint32_t)(n - i));
    double *xs = work, *ys = xs + 2 * n * LANES, *upd_loss = ys + n * LANES;
    const double *lr = (const double *)p->lr;
    double *const src[X_PAR] = {
        (double *)p->weights[0], (double *)p->weights[0] + 1, (double *)p->weights[0] + 2,
        (double *)p->weights[0] + 3, (double *)p->weights[1], (double *)p->weights[1] + 1,
        (double *)p->biases[0], (double *)p->biases[0] + 1, (double *)p->biases[1]};
    static const int64_t count[X_PAR] = {4, 4, 4, 4, 2, 2, 2, 2, 1}; /* each tensor's entries per member */

    int any = 0;
    for (int64_t m = 0; m < K; m++) { stop_epoch[m] = -1; stop_kind[m] = POP_RUNNING; }
    for (int64_t bi = 0; bi < nb; bi++) {
        xor_block *b = blocks + bi;
        const int64_t m0 = bi * LANES;
        const int nl = (int)(K - m0 < LANES ? K - m0 : LANES);
        b->any = 0;
        for (int l = 0; l < LANES; l++) {
            const int64_t m = m0 + (l < nl ? l : 0); /* a padding lane copies member m0, and never moves */
            b->on[l] = l < nl ? p->active[m] != 0 : 0;
            b->neg_lr[l] = l < nl ? -lr[m] : 0;
            for (int f = 0; f < 4; f++) b->last[f][l] = p->last[f * K + m];
            for (int r = 0; r < X_PAR; r++) b->par[r * LANES + l] = src[r][m * count[r]];
            memcpy(&b->left[l], p->rng + m * p->rng_stride + 8, sizeof b->left[l]);
            memcpy(&b->next[l], p->rng + m * p->rng_stride + 16, sizeof b->next[l]);
            b->have[l] = 0;
            b->any |= b->on[l];
        }
        memcpy(b->good, b->par, sizeof b->par);
        any |= b->any;
    }
    int64_t e = 0;
    for (; e < E && any; e++) {
        any = 0;
        for (int64_t bi = 0; bi < nb; bi++) {
            xor_block *b = blocks + bi;
            const int64_t m0 = bi * LANES;
            const int nl = (int)(K - m0 < LANES ? K - m0 : LANES);
            if (bi + 1 < nb) xor_prefetch(p, b + 1, m0 + LANES);
            if (b->any) {
                double keep[LANES], fig[4][LANES];
                LANES_LOOP(l) keep[l] = b->on[l] ? 1.0 : 0.0;
                int32_t first[LANES]; /* each lane's sample of the epoch's first update (a short epoch) */
                xor_orders(p, b, m0, mods, raw, xs, ys, first);
                int64_t t = 0;
                if (b->fwd_kept) { /* the first update's forward phase is the last evaluation's of its sample */
                    double pre[3 * LANES];
                    for (int64_t s = 0; s < n; s++)
                        for (int j = 0; j < 3; j++)
                            LANES_LOOP(l) pre[j * LANES + l] = first[l] == s ? b->fwd[(3 * s + j) * LANES + l]
                                                                             : (s == 0 ? 0.0 : pre[j * LANES + l]);
                    xor_update(hidden_tanh, 1, b->par, xs, ys, b->neg_lr, keep, p->c_update, pre, upd_loss);
                    t = 1;
                }
                for (; t < n; t++)
                    xor_update(hidden_tanh, 0, b->par, xs + 2 * t * LANES, ys + t * LANES, b->neg_lr, keep,
                               p->c_update, NULL, upd_loss + t * LANES);
                xor_evaluate(hidden_tanh, p, 0, b->par, fig[0], fig[1], keep_fwd ? b->fwd : NULL);
                b->fwd_kept = keep_fwd;
                if (p->eval_x[1]) {
                    xor_evaluate(hidden_tanh, p, 1, b->par, fig[2], fig[3], NULL);
                } else {
                    LANES_LOOP(l) { fig[2][l] = fig[0][l]; fig[3][l] = fig[1][l]; }
                }
                xor_rules(p, b, m0, nl, e, fig, upd_loss, stop_epoch, stop_kind, bad_losses);
                any |= b->any;
            }
            for (int f = 0; f < row_figures; f++) {
                double *restrict row = rows + (e * 4 + f) * K + m0;
                const double *restrict from = b->last[f];
                if (nl == LANES) LANES_LOOP(l) row[l] = from[l];
                else for (int l = 0; l < nl; l++) row[l] = from[l];
            }
        }
    }
    for (int64_t bi = 0; bi < nb; bi++) { /* back to the (K, ...) tensors */
        const xor_block *b = blocks + bi;
        const int64_t m0 = bi * LANES;
        const int nl = (int)(K - m0 < LANES ? K - m0 : LANES);
        for (int l = 0; l < nl; l++) {
            const int64_t m = m0 + l;
            for (int r = 0; r < X_PAR; r++) src[r][m * count[r]] = b->par[r * LANES + l];
            for (int f = 0; f < 4; f++) p->last[f * K + m] = b->last[f][l];
            p->active[m] = b->on[l];
            memcpy(p->rng + m * p->rng_stride + 8, &b->left[l], sizeof b->left[l]);
            memcpy(p->rng + m * p->rng_stride + 16, &b->next[l], sizeof b->next[l]);
        }
    }
    free(blocks); free(work); free(raw); free(mods);
    return e;
}

/* Whether xor_train applies: the plan's network is this one. */
static int xor_applies(const pop_plan *p)
{
    return p->n_layers == 2 && p->sizes[0] == 2 && p->sizes[1] == 2 && p->sizes[2] == 1 && p->bias &&
           (p->acts[0] == ACT_SIGMOID || p->acts[0] == ACT_TANH) && p->acts[1] == ACT_SIGMOID &&
           p->loss_kind == POP_SQUARED_ERROR;
}

static int64_t xor_train_sigmoid(const pop_plan *p, int64_t E, double *rows, int32_t *se, int8_t *sk, double *bl)
{
    return xor_train(0, p, E, rows, se, sk, bl);
}
static int64_t xor_train_tanh(const pop_plan *p, int64_t E, double *rows, int32_t *se, int8_t *sk, double *bl)
{
    return xor_train(1, p, E, rows, se, sk, bl);
}
