/* population_fused.c's sample orders: each lane's mt19937 words read ahead of its epochs, and its torch.randperm(n)
 * of each epoch drawn from them as randperm() in population.c draws it. Included by population_fused.c (after
 * xor_block), not compiled on its own. */

/* Lane l's next raw (untempered) word: mt_random's bookkeeping, the refill where the 624 words run out. */
POP_INLINE uint32_t xor_word(const pop_plan *p, xor_block *b, int64_t m0, int l)
{
    if (--b->left[l] == 0) {
        mt_next_state((uint64_t *)(void *)(p->rng + (m0 + l) * p->rng_stride + 24));
        b->left[l] = MT_N;
        b->next[l] = 0;
        b->have[l] = 0;
    }
    if (b->have[l] == 0) { /* words next .. next + left - 1 stay as they are until the next refill */
        const uint64_t *words = (const uint64_t *)(const void *)(p->rng + (m0 + l) * p->rng_stride + 24);
        const int32_t count = b->left[l] < XOR_AHEAD ? b->left[l] : XOR_AHEAD;
        for (int32_t i = 0; i < count; i++) b->ahead[i][l] = (uint32_t)words[b->next[l] + i];
        b->have[l] = count;
        b->at[l] = 0;
    }
    b->have[l]--;
    b->next[l]++;
    return b->ahead[b->at[l]++][l];
}

/* raw (n - 1 rows): each active lane's next n - 1 raw words. Where every active lane stands at the same row of its
 * words ahead with enough of them (lanes that trained alike, as a population's members do), the rows are read as
 * they are; otherwise lane by lane. The words left ahead never pass the end of the 624 (have <= left - 1), so no
 * refill of mt19937's state falls inside the rows. */
POP_INLINE void xor_words(const pop_plan *p, xor_block *b, int64_t m0, uint32_t *restrict raw)
{
    const int32_t need = (int32_t)(p->n_train - 1);
    int32_t at = -1, have = 0;
    for (int l = 0; l < LANES && at < 0; l++)
        if (b->on[l]) { at = b->at[l]; have = b->have[l]; }
    int apart = at < 0 || have < need;
    LANES_LOOP(l) apart |= b->on[l] && (b->at[l] != at || b->have[l] != have);
    if (apart) {
        for (int l = 0; l < LANES; l++)
            if (b->on[l])
                for (int32_t i = 0; i < need; i++) raw[i * LANES + l] = xor_word(p, b, m0, l);
        return;
    }
    for (int32_t i = 0; i < need; i++) memcpy(raw + i * LANES, b->ahead[at + i], sizeof b->ahead[0]);
    int32_t step[LANES];
    LANES_LOOP(l) step[l] = b->on[l] ? need : 0;
    LANES_LOOP(l) { b->at[l] += step[l]; b->have[l] -= step[l]; b->left[l] -= step[l]; }
    LANES_LOOP(l) b->next[l] += step[l];
}

/* Ask for the words of the block's lanes that run out of words ahead in their next epoch, one block before: the
 * block in between hides the wait. */
POP_INLINE void xor_prefetch(const pop_plan *p, const xor_block *b, int64_t m0)
{
    const int32_t need = (int32_t)(p->n_train - 1);
    int32_t soon = 0;
    LANES_LOOP(l) soon |= (b->have[l] < need) & (b->on[l] != 0);
    if (!soon) return;
    for (int l = 0; l < LANES; l++) {
        if (b->on[l] && b->have[l] < p->n_train - 1 && b->left[l] > b->have[l] + 1) {
            const char *at = (const char *)(p->rng + (m0 + l) * p->rng_stride + 24 + 8 * (b->next[l] + b->have[l]));
            for (int i = 0; i < XOR_AHEAD * 8; i += 64) __builtin_prefetch(at + i);
        }
    }
}

/* Each active lane's torch.randperm(n) of this epoch, as randperm() in population.c draws it, and its samples in
 * that order (xs: 2 rows per update, ys: 1). The raw words (xor_words) are tempered and reduced lane-wise
 * (fastmod's 128-bit product from 32-bit halves: floor(L d / 2^64) = (hi + lo / 2^32) / 2^32 with hi = (L >> 32) d,
 * lo = (L mod 2^32) d, in integers), then Fisher-Yates swaps the positions: lane-wise for a short epoch (each
 * position a row of sample indices, a swap a select per position; the samples gathered), lane by lane for a long
 * one. An inactive lane's generator is not touched; its samples are any of the training set's. */
POP_INLINE void xor_orders(const pop_plan *p, xor_block *b, int64_t m0, const uint64_t *mods, uint32_t *raw,
                           double *restrict xs, double *restrict ys, int32_t *restrict first)
{
    const int64_t n = p->n_train;
    const double *X = (const double *)p->x_train, *Y = (const double *)p->y_train;
    xor_words(p, b, m0, raw);
    for (int64_t i = 0; i + 1 < n; i++) { /* z_i = random() % (n - i), random() the tempered word */
        uint32_t *restrict w = raw + i * LANES;
        const uint64_t m = mods[i], d = (uint64_t)(n - i);
        LANES_LOOP(l) {
            uint32_t y = w[l];
            y ^= (y >> 11);
            y ^= (y << 7) & 0x9d2c5680u;
            y ^= (y << 15) & 0xefc60000u;
            y ^= (y >> 18);
            const uint64_t L = m * (uint64_t)y, lo = (L & 0xffffffffu) * d, hi = (L >> 32) * d;
            w[l] = (uint32_t)((hi + (lo >> 32)) >> 32);
        }
    }
    if (n <= XOR_LANEWISE_SHUFFLE) {
        int32_t r[XOR_LANEWISE_SHUFFLE][LANES]; /* r[k]: the sample at position k */
        for (int64_t k = 0; k < n; k++) LANES_LOOP(l) r[k][l] = (int32_t)k;
        for (int64_t i = 0; i + 1 < n; i++) { /* swap r[i] and r[i + z_i] */
            int32_t pick[LANES], was[LANES];
            const uint32_t *restrict z = raw + i * LANES;
            LANES_LOOP(l) { pick[l] = r[i][l]; was[l] = r[i][l]; }
            for (int64_t k = i + 1; k < n; k++)
                LANES_LOOP(l) {
                    const int hit = (int64_t)z[l] + i == k;
                    pick[l] = hit ? r[k][l] : pick[l];
                    r[k][l] = hit ? was[l] : r[k][l];
                }
            LANES_LOOP(l) r[i][l] = pick[l];
        }
        LANES_LOOP(l) first[l] = r[0][l];
        for (int64_t t = 0; t < n; t++)
            LANES_LOOP(l) {
                const int32_t s = r[t][l];
                xs[(2 * t) * LANES + l] = X[2 * s];
                xs[(2 * t + 1) * LANES + l] = X[2 * s + 1];
                ys[t * LANES + l] = Y[s];
            }
        return;
    }
    for (int l = 0; l < LANES; l++) { /* a long epoch: the permutation in place of the samples' rows */
        for (int64_t t = 0; t < n; t++) {
            xs[(2 * t) * LANES + l] = X[2 * t];
            xs[(2 * t + 1) * LANES + l] = X[2 * t + 1];
            ys[t * LANES + l] = Y[t];
        }
        if (!b->on[l]) continue;
        for (int64_t i = 0; i + 1 < n; i++) {
            const int64_t z = raw[i * LANES + l] + i;
            double sav = xs[(2 * i) * LANES + l];
            xs[(2 * i) * LANES + l] = xs[(2 * z) * LANES + l]; xs[(2 * z) * LANES + l] = sav;
            sav = xs[(2 * i + 1) * LANES + l];
            xs[(2 * i + 1) * LANES + l] = xs[(2 * z + 1) * LANES + l]; xs[(2 * z + 1) * LANES + l] = sav;
            sav = ys[i * LANES + l];
            ys[i * LANES + l] = ys[z * LANES + l]; ys[z * LANES + l] = sav;
        }
    }
}
