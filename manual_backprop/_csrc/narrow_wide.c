/* network.weight_gradient for a wide layer of the narrow pass, with the tile's delta transposed. Included by
 * narrow_body.c (REAL, SUFFIX, VEC, VL, NV, TILE defined there); not compiled on its own.
 *
 * Why: summed lane-wise (narrow_gradient), a layer's gradient needs a vector of partial sums per weight, n_out n_in
 * of them, read and written back every tile; for a 32 x 16 layer that is 32 KB, which does not stay in L1 beside the
 * tile, and the multiply-adds wait on L2. Here the tile's delta (n_out, TILE) is transposed to dT (TILE, n_pad),
 * one row of n_out deltas (zero-padded to whole vectors) per sample, and
 *     gt[i, j] += sum_s a_i[s] dT[s, j]    (s = 0 .. nt - 1 in order; gt is dE/dW[k] transposed)
 * keeps IB x JB vectors of sums in registers across the tile's samples: one broadcast a_i[s] and one row of dT per
 * multiply-add, n_in n_pad / VL vectors of sums per layer. The sums are in REAL within a few tiles (WIDE_BLOCK),
 * then added to double totals, as the lane-wise ones are within BLOCK tiles. Each product is added to its sum with
 * one rounding (fma); only the summation order differs from network.py's, within NARROW_ULPS.
 *
 * Taken where it pays (narrow_wide_layer): with AVX-512 (the transpose is VL x VL blocks of shuffles), at least 16
 * inputs (the transpose costs about 4 / n_in of the multiply-adds) and an output at least one vector wide. */

#ifndef MBP_NARROW_TRANSPOSE
#define MBP_NARROW_TRANSPOSE
#if defined(__GNUC__) && defined(__AVX512F__)
#define NARROW_HAS_TRANSPOSE 1
/* out[c os + r] = in[r is + c] for r, c < 16, rows r >= nr read as 0; every row 64-byte aligned. Four rounds of
 * 16 shuffles: pairs of rows interleaved, then pairs of pairs, then 128-bit quarters twice. */
static inline void narrow_transpose_f32(const float *in, int64_t is, int nr, float *out, int64_t os)
{
    __m512 r[16], t[16];
    for (int q = 0; q < 16; q++) r[q] = q < nr ? _mm512_load_ps(in + q * is) : _mm512_setzero_ps();
    for (int q = 0; q < 16; q += 2) {
        t[q] = _mm512_unpacklo_ps(r[q], r[q + 1]);     /* quarter b: r_q[4b], r_q+1[4b], r_q[4b+1], r_q+1[4b+1] */
        t[q + 1] = _mm512_unpackhi_ps(r[q], r[q + 1]); /* the same for columns 4b+2, 4b+3 */
    }
    for (int g = 0; g < 16; g += 4) { /* r[g + c], quarter b: rows g .. g+3 of column 4b + c */
        const __m512d a = _mm512_castps_pd(t[g]), b = _mm512_castps_pd(t[g + 2]);
        const __m512d c = _mm512_castps_pd(t[g + 1]), d = _mm512_castps_pd(t[g + 3]);
        r[g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int c = 0; c < 4; c++) { /* columns c, 4 + c, 8 + c, 12 + c */
        const __m512 x = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88), xx = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        const __m512 y = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        const __m512 yy = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        _mm512_store_ps(out + c * os, _mm512_shuffle_f32x4(x, y, 0x88));
        _mm512_store_ps(out + (8 + c) * os, _mm512_shuffle_f32x4(x, y, 0xdd));
        _mm512_store_ps(out + (4 + c) * os, _mm512_shuffle_f32x4(xx, yy, 0x88));
        _mm512_store_ps(out + (12 + c) * os, _mm512_shuffle_f32x4(xx, yy, 0xdd));
    }
}

/* The same for 8 x 8 doubles: pairs of rows interleaved, then 128-bit quarters twice. */
static inline void narrow_transpose_f64(const double *in, int64_t is, int nr, double *out, int64_t os)
{
    __m512d r[8], t[8];
    for (int q = 0; q < 8; q++) r[q] = q < nr ? _mm512_load_pd(in + q * is) : _mm512_setzero_pd();
    for (int q = 0; q < 8; q += 2) {
        t[q] = _mm512_unpacklo_pd(r[q], r[q + 1]);     /* r_q[2b], r_q+1[2b] in quarter b */
        t[q + 1] = _mm512_unpackhi_pd(r[q], r[q + 1]); /* r_q[2b+1], r_q+1[2b+1] */
    }
    for (int g = 0; g < 8; g += 4) { /* r[g + c]: quarters of rows g .. g+3, columns c + 4h and c + 2 + 4h */
        r[g] = _mm512_shuffle_f64x2(t[g], t[g + 2], 0x88);     /* columns 0, 4 */
        r[g + 1] = _mm512_shuffle_f64x2(t[g + 1], t[g + 3], 0x88); /* columns 1, 5 */
        r[g + 2] = _mm512_shuffle_f64x2(t[g], t[g + 2], 0xdd); /* columns 2, 6 */
        r[g + 3] = _mm512_shuffle_f64x2(t[g + 1], t[g + 3], 0xdd); /* columns 3, 7 */
    }
    for (int c = 0; c < 4; c++) {
        _mm512_store_pd(out + c * os, _mm512_shuffle_f64x2(r[c], r[4 + c], 0x88));
        _mm512_store_pd(out + (4 + c) * os, _mm512_shuffle_f64x2(r[c], r[4 + c], 0xdd));
    }
}
#endif
#endif

#define WIDE_BLOCK 4 /* tiles summed in REAL before the transposed sums go to double: 256 samples */

/* Whether layer (n_in -> n_out) takes this path (see the top of this file). */
static int SUFFIX(narrow_wide_layer)(int64_t n_in, int64_t n_out)
{
#ifdef NARROW_HAS_TRANSPOSE
    return n_in >= 16 && n_out >= VL;
#else
    (void)n_in; (void)n_out;
    return 0;
#endif
}

/* IB inputs i and JB vectors of outputs j at once: IB JB sums in registers across the tile's nt samples. */
NARROW_INLINE void SUFFIX(narrow_wide_block)(const REAL *dT, int64_t n_pad, const REAL *a, REAL *gt, int64_t nt,
                                             int64_t i, int64_t jv, const int IB, const int JB)
{
    VEC acc[16][2];
    for (int r = 0; r < IB; r++)
        for (int q = 0; q < JB; q++) acc[r][q] = *(const VEC *)(gt + (i + r) * n_pad + (jv + q) * VL);
    const REAL *as = a + i * TILE, *ds = dT + jv * VL; /* a_i[s] at as[r TILE + s]: constant offsets */
    for (int64_t s = 0; s < nt; s++, ds += n_pad) {
        VEC d[2];
        for (int q = 0; q < JB; q++) d[q] = ((const VEC *)ds)[q];
        for (int r = 0; r < IB; r++) {
            const VEC w = SUFFIX(narrow_splat)(as[r * TILE + s]);
            for (int q = 0; q < JB; q++) acc[r][q] = SUFFIX(narrow_fma)(w, d[q], acc[r][q]);
        }
    }
    for (int r = 0; r < IB; r++)
        for (int q = 0; q < JB; q++) *(VEC *)(gt + (i + r) * n_pad + (jv + q) * VL) = acc[r][q];
}

/* gt (n_in, n_pad) += a delta^T over the tile's first nt samples: delta (n_out, TILE), a (n_in, TILE), dT a
 * (TILE, n_pad) workspace. */
static void SUFFIX(narrow_wide_gradient)(const REAL *delta, const REAL *a, REAL *dT, REAL *gt, int64_t n_in,
                                         int64_t n_out, int64_t nt)
{
    const int64_t nvec = (n_out + VL - 1) / VL, n_pad = nvec * VL;
#ifdef NARROW_HAS_TRANSPOSE
    for (int64_t jv = 0; jv < nvec; jv++) {
        const int nr = (int)(n_out - jv * VL < VL ? n_out - jv * VL : VL);
        for (int v = 0; v < NV; v++) {
            if (VL == 16)
                narrow_transpose_f32((const float *)(delta + jv * VL * TILE + v * VL), TILE, nr,
                                     (float *)(dT + v * VL * n_pad + jv * VL), n_pad);
            else
                narrow_transpose_f64((const double *)(delta + jv * VL * TILE + v * VL), TILE, nr,
                                     (double *)(dT + v * VL * n_pad + jv * VL), n_pad);
        }
    }
#else
    (void)delta; (void)dT; /* never called: narrow_wide_layer takes no layer without the transpose */
#endif
    int64_t jv = 0;
    for (; jv + 2 <= nvec; jv += 2) {
        int64_t i = 0;
        for (; i + 8 <= n_in; i += 8) SUFFIX(narrow_wide_block)(dT, n_pad, a, gt, nt, i, jv, 8, 2);
        for (; i < n_in; i++) SUFFIX(narrow_wide_block)(dT, n_pad, a, gt, nt, i, jv, 1, 2);
    }
    for (; jv < nvec; jv++) {
        int64_t i = 0;
        for (; i + 16 <= n_in; i += 16) SUFFIX(narrow_wide_block)(dT, n_pad, a, gt, nt, i, jv, 16, 1);
        for (; i + 4 <= n_in; i += 4) SUFFIX(narrow_wide_block)(dT, n_pad, a, gt, nt, i, jv, 4, 1);
        for (; i < n_in; i++) SUFFIX(narrow_wide_block)(dT, n_pad, a, gt, nt, i, jv, 1, 1);
    }
}

/* total[q] += gt[q] in double, and gt[q] = 0, for q < n. */
static void SUFFIX(narrow_wide_flush)(REAL *gt, double *total, int64_t n)
{
    for (int64_t q = 0; q < n; q++) {
        total[q] += (double)gt[q];
        gt[q] = 0;
    }
}

/* Whether narrow_pass sums the weight gradient of a layer (n_in -> n_out) this way (tests/proof ask). */
int SUFFIX(narrow_wide)(int64_t n_in, int64_t n_out) { return SUFFIX(narrow_wide_layer)(n_in, n_out); }
