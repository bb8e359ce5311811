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
 * dot products as pop_forward_phase sums them (0, then each term in index order, then the bias in front). */
POP_INLINE void xor_update(int hidden_tanh, double *restrict par, const double *restrict xs,
                           const double *restrict ys, const double *restrict neg_lr, const double *restrict keep,
                           double c, double *restrict loss)
{
    const double c2 = 2.0 * c;
    LANES_LOOP(l) {
        const double a0 = xs[l], a1 = xs[LANES + l], t = ys[l], nlr = neg_lr[l], on = keep[l];
        const double w00 = par[XW00 * LANES + l], w01 = par[XW01 * LANES + l], w10 = par[XW10 * LANES + l],
                     w11 = par[XW11 * LANES + l], v0 = par[XV0 * LANES + l], v1 = par[XV1 * LANES + l],
                     b0 = par[XB0 * LANES + l], b1 = par[XB1 * LANES + l], bo = par[XBO * LANES + l];
        double s0 = 0, s1 = 0, so = 0;
        s0 += w00 * a0; s0 += w01 * a1;
        s1 += w10 * a0; s1 += w11 * a1;
        const double h0 = xor_hidden(hidden_tanh, b0 + s0), h1 = xor_hidden(hidden_tanh, b1 + s1);
        so += v0 * h0; so += v1 * h1;
        const double o = pop_sigmoid_f64(bo + so);
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
                             double *restrict loss, double *restrict accuracy)
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

/* pop_train for this network (the same arguments, the same results). */
POP_INLINE int64_t xor_train(int hidden_tanh, const pop_plan *p, int64_t E, double *rows, int32_t *stop_epoch,
                             int8_t *stop_kind, double *bad_losses)
{
    const int64_t K = p->K, n = p->n_train;
    /* rows: parameters, last good ones, the epoch's samples (2 + 1 rows each) and update losses */
    double *work = (double *)malloc((size_t)(2 * X_PAR + 4 * n) * LANES * sizeof(double));
    int32_t *perm = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    uint64_t *mods = (uint64_t *)malloc((size_t)n * sizeof(uint64_t));
    if (!work || !perm || !mods) {
        free(work); free(perm); free(mods);
        return -1;
    }
    for (int64_t i = 0; i + 1 < n; i++) mods[i] = fastmod_m((uint32_t)(n - i));
    double *par = work, *good = work + X_PAR * LANES, *xs = good + X_PAR * LANES, *ys = xs + 2 * n * LANES;
    double *upd_loss = ys + n * LANES;
    const double *X = (const double *)p->x_train, *Y = (const double *)p->y_train, *lr = (const double *)p->lr;
    const double *const src[X_PAR] = {
        (const double *)p->weights[0], (const double *)p->weights[0] + 1, (const double *)p->weights[0] + 2,
        (const double *)p->weights[0] + 3, (const double *)p->weights[1], (const double *)p->weights[1] + 1,
        (const double *)p->biases[0], (const double *)p->biases[0] + 1, (const double *)p->biases[1]};
    static const int64_t count[X_PAR] = {4, 4, 4, 4, 2, 2, 2, 2, 1}; /* each tensor's entries per member */
    int64_t epochs_run = 0;

    for (int64_t m = 0; m < K; m++) { stop_epoch[m] = -1; stop_kind[m] = POP_RUNNING; }
    for (int64_t m0 = 0; m0 < K; m0 += LANES) {
        const int nl = (int)(K - m0 < LANES ? K - m0 : LANES);
        uint8_t on[LANES];
        double neg_lr[LANES], keep[LANES], last[4][LANES];
        int any = 0;
        for (int l = 0; l < LANES; l++) {
            const int64_t m = m0 + (l < nl ? l : 0); /* a padding lane copies member m0, and never moves */
            on[l] = l < nl ? p->active[m] != 0 : 0;
            neg_lr[l] = l < nl ? -lr[m] : 0;
            for (int f = 0; f < 4; f++) last[f][l] = p->last[f * K + m];
            for (int r = 0; r < X_PAR; r++) par[r * LANES + l] = src[r][m * count[r]];
            any |= on[l];
        }
        memcpy(good, par, sizeof(double) * X_PAR * LANES);
        int64_t e = 0;
        for (; e < E && any; e++) {
            /* each active member's order of this epoch, from its own generator, and its samples in that order */
            for (int l = 0; l < LANES; l++) {
                keep[l] = on[l] ? 1.0 : 0.0;
                if (on[l]) {
                    randperm(p->rng + (m0 + l) * p->rng_stride, n, mods, perm);
                    for (int64_t t = 0; t < n; t++) {
                        xs[(2 * t) * LANES + l] = X[2 * perm[t]];
                        xs[(2 * t + 1) * LANES + l] = X[2 * perm[t] + 1];
                        ys[t * LANES + l] = Y[perm[t]];
                    }
                } else {
                    for (int64_t t = 0; t < n; t++) xs[(2 * t) * LANES + l] = xs[(2 * t + 1) * LANES + l] =
                        ys[t * LANES + l] = 0;
                }
            }
            for (int64_t t = 0; t < n; t++)
                xor_update(hidden_tanh, par, xs + 2 * t * LANES, ys + t * LANES, neg_lr, keep, p->c_update,
                           upd_loss + t * LANES);
            double fig[4][LANES];
            xor_evaluate(hidden_tanh, p, 0, par, fig[0], fig[1]);
            if (p->eval_x[1]) {
                xor_evaluate(hidden_tanh, p, 1, par, fig[2], fig[3]);
            } else {
                memcpy(fig[2], fig[0], sizeof fig[0]);
                memcpy(fig[3], fig[1], sizeof fig[1]);
            }
            /* the rules, lane-wise: finite (x - x is 0 only for a finite x) or back to the last good state */
            double ok[LANES], bad[LANES], hit[LANES];
            LANES_LOOP(l) ok[l] = (fig[0][l] - fig[0][l]) + (fig[1][l] - fig[1][l]) + (fig[2][l] - fig[2][l]) +
                                  (fig[3][l] - fig[3][l]);
            for (int64_t t = 0; t < n; t++) LANES_LOOP(l) ok[l] += upd_loss[t * LANES + l] - upd_loss[t * LANES + l];
            int events = 0;
            LANES_LOOP(l) {
                const int finite = ok[l] == 0, active = keep[l] != 0;
                bad[l] = active && !finite ? 1.0 : 0.0;
                hit[l] = active && finite && p->has_target && fig[0][l] <= p->target ? 1.0 : 0.0;
                events |= (bad[l] != 0) | (hit[l] != 0);
            }
            for (int r = 0; r < X_PAR; r++) {
                double *restrict pr = par + r * LANES, *restrict gr = good + r * LANES;
                LANES_LOOP(l) { pr[l] = bad[l] != 0 ? gr[l] : pr[l]; gr[l] = pr[l]; }
            }
            for (int f = 0; f < 4; f++)
                LANES_LOOP(l) last[f][l] = keep[l] != 0 && bad[l] == 0 ? fig[f][l] : last[f][l];
            if (events) {
                for (int l = 0; l < nl; l++) {
                    const int64_t m = m0 + l;
                    if (bad[l] != 0) {
                        for (int64_t t = 0; t < n; t++) bad_losses[m * n + t] = upd_loss[t * LANES + l];
                        stop_epoch[m] = (int32_t)e; stop_kind[m] = POP_DIVERGED; on[l] = 0;
                    } else if (hit[l] != 0) {
                        stop_epoch[m] = (int32_t)e; stop_kind[m] = POP_REACHED; on[l] = 0;
                    }
                }
                any = 0;
                for (int l = 0; l < LANES; l++) any |= on[l];
            }
            for (int f = 0; f < 4; f++) memcpy(rows + (e * 4 + f) * K + m0, last[f], sizeof(double) * (size_t)nl);
        }
        if (e > epochs_run) epochs_run = e;
        for (; e < E; e++) /* every member of the block stopped: its figures stay */
            for (int f = 0; f < 4; f++) memcpy(rows + (e * 4 + f) * K + m0, last[f], sizeof(double) * (size_t)nl);
        /* back to the (K, ...) tensors */
        for (int l = 0; l < nl; l++) {
            const int64_t m = m0 + l;
            for (int r = 0; r < X_PAR; r++) ((double *)src[r])[m * count[r]] = par[r * LANES + l];
            for (int f = 0; f < 4; f++) p->last[f * K + m] = last[f][l];
            p->active[m] = on[l];
        }
    }
    free(work); free(perm); free(mods);
    return epochs_run;
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
