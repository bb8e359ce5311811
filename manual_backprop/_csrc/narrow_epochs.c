/* The Trainer's batch-mode epochs through the narrow kernel, several in one call (fast/narrow_epochs.py). Included
 * by narrow_body.c once per dtype; not compiled on its own.
 *
 * A declared derivative of Trainer._run_epoch on the narrow path (NarrowBatch, fast/narrow.py), otherwise identical
 * to it. Each epoch: the update's loss and gradients are the last pass's, at the epoch's parameters (the pass that
 * NarrowBatch keeps); the step is network.update's W <- W + (-lr) dE/dW with one rounding (torch's add_(g, alpha)
 * where it fuses the multiply-add: fast/narrow_epochs.py checks that it does); then the pass at the new parameters
 * is the evaluation of the training split (its E) and the next update's gradients, and the test split's pass (the
 * forward phase alone) its E, unless the test split is the training split. A non-finite update loss or figure stops
 * the call (stop 2: the caller puts the last good state back, as the Trainer's divergence rule does); else the
 * parameters are copied into the good state, and a training loss at most target_loss stops the call (stop 1).
 * The pass at the call's parameters may come from the caller (kept_in: the one NarrowBatch kept), and the pass at
 * the parameters it leaves goes back (next_out), so that calls of one epoch make one pass an epoch, as NarrowBatch. */
int SUFFIX(narrow_train_epochs)(const narrow_plan *p, const narrow_plan *test, narrow_epochs *e)
{
    const int64_t L = p->n_layers, *sizes = p->sizes;
    if (L < 1 || L > 64 || e->n_epochs < 1)
        return 2;
    const int nb = p->biases != NULL;
    const int64_t n_t = L * (1 + nb); /* tensors: W[0..L-1], then b[0..L-1] */
    REAL *params[128];
    int64_t count[128], at[128], total = 0; /* at[t]: tensor t's place in net.parameters() (W[0], b[0], W[1], ...) */
    for (int64_t t = 0; t < n_t; t++) {
        const int64_t k = t < L ? t : t - L;
        at[t] = nb ? 2 * k + (t >= L) : k;
        params[t] = t < L ? ((REAL *const *)p->weights)[k] : ((REAL *const *)p->biases)[k];
        count[t] = t < L ? sizes[k + 1] * sizes[k] : sizes[k + 1];
        total += count[t];
    }
    REAL *block = (REAL *)malloc((size_t)(2 * total) * sizeof(REAL));
    if (!block)
        return 1;
    REAL *g[2][128]; /* two gradient sets: the update's, and the next pass's */
    int64_t off = 0;
    for (int s = 0; s < 2; s++)
        for (int64_t t = 0; t < n_t; t++) {
            g[s][t] = block + off;
            off += count[t];
        }
    for (int64_t t = 0; t < n_t; t++)
        if (e->good[at[t]] != e->good_init[at[t]])
            memcpy(e->good[at[t]], e->good_init[at[t]], (size_t)count[t] * sizeof(REAL));
    int cur = 0, used = 0, status = 0;
    /* An epoch's training seconds: the pass that gave its update's gradients (the previous epoch's pass at the
     * parameters it left, which is also that epoch's evaluation of the training split), then its step; the test
     * split's pass is evaluation. */
    struct timespec t0, t1;
    double pass_s = 0;
    REAL loss_u, last_train = 0;
    if (e->kept_in) { /* the pass the caller kept at these parameters (NarrowBatch's): the same values */
        for (int64_t t = 0; t < n_t; t++) {
            const REAL *src = t < L ? ((REAL *const *)e->kept_w)[t] : ((REAL *const *)e->kept_b)[t - L];
            memcpy(g[cur][t], src, (size_t)count[t] * sizeof(REAL));
        }
        loss_u = *(const REAL *)e->kept_loss;
        pass_s = e->kept_seconds;
    } else {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        status = SUFFIX(narrow_pass)(p, &loss_u, g[cur], nb ? g[cur] + L : NULL, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        pass_s = narrow_seconds(t0, t1);
    }
    e->next_out = 0;
    const REAL alpha = (REAL)(-e->lr);
    e->epochs_run = 0;
    e->stop = 0;
    for (int64_t ep = 0; !status && ep < e->n_epochs; ep++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ((REAL *)e->losses)[ep] = loss_u;
        for (int64_t t = 0; t < n_t; t++) { /* network.update */
            REAL *w = params[t];
            const REAL *gt = g[cur][t];
            for (int64_t i = 0; i < count[t]; i++) w[i] = R_FMA(alpha, gt[i], w[i]);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        e->seconds[ep] = pass_s + narrow_seconds(t0, t1);
        used = cur;
        cur ^= 1;
        REAL train = 0, held_out = 0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        status = SUFFIX(narrow_pass)(p, &train, g[cur], nb ? g[cur] + L : NULL, NULL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        pass_s = narrow_seconds(t0, t1);
        if (!status && test)
            status = SUFFIX(narrow_pass)(test, &held_out, NULL, NULL, NULL);
        if (status)
            break;
        if (!test)
            held_out = train;
        last_train = train;
        double *f = e->figures + 4 * ep;
        f[0] = (double)train, f[1] = NAN, f[2] = (double)held_out, f[3] = NAN;
        e->epochs_run = ep + 1;
        if (!isfinite(loss_u) || !isfinite(train) || !isfinite(held_out)) {
            e->stop = 2;
            break;
        }
        for (int64_t t = 0; t < n_t; t++)
            memcpy(e->good[at[t]], params[t], (size_t)count[t] * sizeof(REAL));
        if (!isnan(e->target_loss) && (double)train <= e->target_loss) {
            e->stop = 1;
            break;
        }
        loss_u = train;
    }
    if (!status && e->grad_w && e->epochs_run) /* the last update's gradients (Trainer.last_grads) */
        for (int64_t t = 0; t < n_t; t++) {
            REAL *dst = t < L ? ((REAL *const *)e->grad_w)[t] : ((REAL *const *)e->grad_b)[t - L];
            memcpy(dst, g[used][t], (size_t)count[t] * sizeof(REAL));
        }
    if (!status && e->stop != 2 && e->epochs_run && e->next_w) { /* the last pass, for the next update */
        for (int64_t t = 0; t < n_t; t++) {
            REAL *dst = t < L ? ((REAL *const *)e->next_w)[t] : ((REAL *const *)e->next_b)[t - L];
            memcpy(dst, g[cur][t], (size_t)count[t] * sizeof(REAL));
        }
        *(REAL *)e->next_loss = last_train;
        e->next_seconds = pass_s;
        e->next_out = 1;
    }
    free(block);
    return status;
}
