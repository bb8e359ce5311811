/* One dtype's narrow pass. Included by narrow.c with REAL, SUFFIX(name) and the libm functions R_* defined; not
 * compiled on its own. Layout: a tile's rows are features, its TILE columns samples (lanes); W[k] is
 * (n_{k+1}, n_k) row-major, as in network.py. Each function is named after the function of network.py it derives
 * from. */

/* TILE lanes of REAL as NV vectors of 64 bytes (AVX-512 registers where the CPU has them; the compiler splits them
 * elsewhere). may_alias: tile rows are REAL arrays read through this type. */
typedef REAL SUFFIX(vec) __attribute__((vector_size(64), may_alias));
#define VEC SUFFIX(vec)
#define VL ((int)(64 / sizeof(REAL)))
#define NV (TILE / VL)

#include "kernels.h"

/* c + a * b lane by lane, rounded once, and x in every lane (vecfma.h) */
MBP_VFMA_DEFINE(SUFFIX(narrow_fma), VEC, REAL, R_FMA)
MBP_VSPLAT_DEFINE(SUFFIX(narrow_splat), VEC, REAL)

#define NARROW_INLINE static inline __attribute__((always_inline))
#if defined(__GNUC__) && defined(__AVX512F__)
/* x loaded into a register once (an empty asm the compiler cannot see through), where the compiler would fold the
 * load into every multiply-add that reads it: one load of a vector where there were four. On a CPU with two 64-byte
 * loads a cycle (AMD Zen 5) the folded loads, not the FMA units, set the pace: S's training pass 338 -> 294 us.
 * The same value, so the same bits. */
#define NARROW_LOADED(x) ({ VEC t_ = (x); __asm__("" : "+v"(t_)); t_; })
#else
#define NARROW_LOADED(x) (x)
#endif

/* network.net_input for a tile: z = W a + b, a (n_in, TILE), z (n_out, TILE); the products summed in the
 * order i = 0 .. n_in - 1 after the bias. Several rows j at once (JB: four where a tile is at most four vectors, as
 * in float, then two, then one): their JB NV sums are independent, so the vector units are not kept waiting on one
 * sum's additions, and each sum's order is the same either way. */
NARROW_INLINE void SUFFIX(narrow_net_input_rows)(const REAL *W, const REAL *bias, const REAL *a, REAL *z,
                                                 int64_t n_in, int64_t j, const int JB)
{
    VEC acc[4][NV];
    for (int r = 0; r < JB; r++) {
        const REAL bj = bias ? bias[j + r] : (REAL)0;
        for (int v = 0; v < NV; v++) acc[r][v] = (VEC){0} + bj;
    }
    for (int64_t i = 0; i < n_in; i++) {
        VEC ai[NV];
        for (int v = 0; v < NV; v++) ai[v] = NARROW_LOADED(((const VEC *)(a + i * TILE))[v]);
        for (int r = 0; r < JB; r++) {
            const VEC w = SUFFIX(narrow_splat)(W[(j + r) * n_in + i]);
            for (int v = 0; v < NV; v++) acc[r][v] = SUFFIX(narrow_fma)(ai[v], w, acc[r][v]);
        }
    }
    for (int r = 0; r < JB; r++) {
        VEC *zj = (VEC *)(z + (j + r) * TILE);
        for (int v = 0; v < NV; v++) zj[v] = acc[r][v];
    }
}

static void SUFFIX(narrow_net_input)(const REAL *W, const REAL *bias, const REAL *a, REAL *z, int64_t n_in,
                                     int64_t n_out)
{
    int64_t j = 0;
    if (NV <= 4)
        for (; j + 4 <= n_out; j += 4) SUFFIX(narrow_net_input_rows)(W, bias, a, z, n_in, j, 4);
    for (; j + 2 <= n_out; j += 2) SUFFIX(narrow_net_input_rows)(W, bias, a, z, n_in, j, 2);
    if (j < n_out) SUFFIX(narrow_net_input_rows)(W, bias, a, z, n_in, j, 1);
}

/* network.hidden_delta for a tile, before f': back = W^T delta, i.e. back_i = sum_c delta_c w_ci, delta (n_out, TILE),
 * back (n_in, TILE), summed in the order c = 0 .. n_out - 1; several rows i at once, as above. */
NARROW_INLINE void SUFFIX(narrow_back_rows)(const REAL *W, const REAL *delta, REAL *back, int64_t n_in,
                                            int64_t n_out, int64_t i, const int IB)
{
    VEC acc[4][NV];
    for (int r = 0; r < IB; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = (VEC){0};
    for (int64_t c = 0; c < n_out; c++) {
        VEC dc[NV];
        for (int v = 0; v < NV; v++) dc[v] = NARROW_LOADED(((const VEC *)(delta + c * TILE))[v]);
        for (int r = 0; r < IB; r++) {
            const VEC w = SUFFIX(narrow_splat)(W[c * n_in + i + r]);
            for (int v = 0; v < NV; v++) acc[r][v] = SUFFIX(narrow_fma)(dc[v], w, acc[r][v]);
        }
    }
    for (int r = 0; r < IB; r++) {
        VEC *bi = (VEC *)(back + (i + r) * TILE);
        for (int v = 0; v < NV; v++) bi[v] = acc[r][v];
    }
}

static void SUFFIX(narrow_back)(const REAL *W, const REAL *delta, REAL *back, int64_t n_in, int64_t n_out)
{
    int64_t i = 0;
    if (NV <= 4)
        for (; i + 4 <= n_in; i += 4) SUFFIX(narrow_back_rows)(W, delta, back, n_in, n_out, i, 4);
    for (; i + 2 <= n_in; i += 2) SUFFIX(narrow_back_rows)(W, delta, back, n_in, n_out, i, 2);
    if (i < n_in) SUFFIX(narrow_back_rows)(W, delta, back, n_in, n_out, i, 1);
}

/* network.weight_gradient and bias_gradient for a tile, lane-wise: gw[j, i] += sum_v delta_j[v] a_i[v] (v = 0 ..
 * NV - 1 in order) and gb[j] += sum_v delta_j[v], each a vector of VL partial sums. JB rows j and IB columns i at
 * once: JB IB independent sums, each in the same order. */
NARROW_INLINE void SUFFIX(narrow_gradient_block)(const REAL *delta, const REAL *a, VEC *gw, int64_t n_in,
                                                 int64_t j, int64_t i, const int JB, const int IB)
{
    VEC s[4][4];
    for (int r = 0; r < JB; r++)
        for (int q = 0; q < IB; q++) s[r][q] = gw[(j + r) * n_in + i + q];
    for (int v = 0; v < NV; v++) {
        VEC d[4];
        for (int r = 0; r < JB; r++) d[r] = NARROW_LOADED(((const VEC *)(delta + (j + r) * TILE))[v]);
        for (int q = 0; q < IB; q++) {
            const VEC aiv = NARROW_LOADED(((const VEC *)(a + (i + q) * TILE))[v]);
            for (int r = 0; r < JB; r++) s[r][q] = SUFFIX(narrow_fma)(d[r], aiv, s[r][q]);
        }
    }
    for (int r = 0; r < JB; r++)
        for (int q = 0; q < IB; q++) gw[(j + r) * n_in + i + q] = s[r][q];
}

/* network.bias_gradient for a tile, lane-wise: gb[j] += sum_v delta_j[v] (v = 0 .. NV - 1 in order). */
static void SUFFIX(narrow_bias_gradient)(const REAL *delta, VEC *gb, int64_t n_out)
{
    for (int64_t j = 0; j < n_out; j++) {
        const VEC *dj = (const VEC *)(delta + j * TILE);
        VEC s = gb[j];
        for (int v = 0; v < NV; v++) s = s + dj[v];
        gb[j] = s;
    }
}

static void SUFFIX(narrow_gradient)(const REAL *delta, const REAL *a, VEC *gw, VEC *gb, int64_t n_in, int64_t n_out)
{
    int64_t j = 0;
    for (; j + 4 <= n_out; j += 4) {
        int64_t i = 0;
        for (; i + 4 <= n_in; i += 4) SUFFIX(narrow_gradient_block)(delta, a, gw, n_in, j, i, 4, 4);
        for (; i < n_in; i++) SUFFIX(narrow_gradient_block)(delta, a, gw, n_in, j, i, 4, 1);
    }
    for (; j + 2 <= n_out; j += 2) {
        int64_t i = 0;
        for (; i + 4 <= n_in; i += 4) SUFFIX(narrow_gradient_block)(delta, a, gw, n_in, j, i, 2, 4);
        for (; i < n_in; i++) SUFFIX(narrow_gradient_block)(delta, a, gw, n_in, j, i, 2, 1);
    }
    for (; j < n_out; j++) {
        int64_t i = 0;
        for (; i + 4 <= n_in; i += 4) SUFFIX(narrow_gradient_block)(delta, a, gw, n_in, j, i, 1, 4);
        for (; i < n_in; i++) SUFFIX(narrow_gradient_block)(delta, a, gw, n_in, j, i, 1, 1);
    }
    if (gb)
        SUFFIX(narrow_bias_gradient)(delta, gb, n_out);
}

/* Adds the lanes of each of n partial-sum vectors to total[] in double, and clears them: each vector's lanes summed in
 * order from 0, then added to its total. Eight vectors at a time, their eight sums interleaved (independent chains,
 * each in that order: the same bits), where one sum at a time waited on each addition. */
static void SUFFIX(narrow_flush)(VEC *lanes, double *total, int64_t n)
{
    int64_t q = 0;
#if defined(__GNUC__) && defined(__AVX512F__)
    if (VL == 16) /* float: sixteen vectors at a time, lane l of each gathered into one register */
        for (; q + 16 <= n; q += 16) {
            const __m512i idx = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240);
            __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
            for (int l = 0; l < 16; l++) {
                const __m512 g = _mm512_i32gather_ps(idx, (const float *)(lanes + q) + l, 4);
                lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(g)));
                hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(g), 1))));
            }
            _mm512_storeu_pd(total + q, _mm512_add_pd(_mm512_loadu_pd(total + q), lo));
            _mm512_storeu_pd(total + q + 8, _mm512_add_pd(_mm512_loadu_pd(total + q + 8), hi));
            for (int r = 0; r < 16; r++) lanes[q + r] = (VEC){0};
        }
#endif
    for (; q + 8 <= n; q += 8) {
        double s[8] = {0};
        for (int l = 0; l < VL; l++)
            for (int r = 0; r < 8; r++) s[r] += (double)lanes[q + r][l];
        for (int r = 0; r < 8; r++) {
            total[q + r] += s[r];
            lanes[q + r] = (VEC){0};
        }
    }
    for (; q < n; q++) {
        double s = 0;
        for (int l = 0; l < VL; l++) s += (double)lanes[q][l];
        total[q] += s;
        lanes[q] = (VEC){0};
    }
}

#include "narrow_wide.c" /* the weight gradient of a wide layer, its delta transposed */

/* The loss and the output delta of a tile, sample by sample through the loss's own C row (kernels.h): the
 * logits z (n, TILE) are transposed to rows, f applied per row (softmax), and the delta transposed back into d.
 * x_out (n, TILE) receives the output x^L. Returns acc plus the tile's terms of E / c. */
static double SUFFIX(narrow_output_rows)(const narrow_plan *p, const REAL *z, REAL *x_out, REAL *d, REAL *zs,
                                         REAL *xs, REAL *ds, int64_t s0, int64_t nt, double c)
{
    const int64_t L = p->n_layers, n = p->sizes[L];
    const int32_t out_act = p->acts[L - 1];
    const REAL slope = (REAL)p->slopes[L - 1];
    const REAL *y = (const REAL *)p->y;
    REAL acc = 0;
    for (int64_t s = 0; s < nt; s++) {
        for (int64_t j = 0; j < n; j++) zs[s * n + j] = xs[s * n + j] = z[j * TILE + s];
        SUFFIX(activation_forward)(out_act, slope, xs + s * n, n);
        acc = SUFFIX(output_delta)(p->loss_kind, out_act, slope, zs + s * n, xs + s * n, y + (s0 + s) * n,
                                   ds + s * n, n, c, acc);
    }
    for (int64_t j = 0; j < n; j++) {
        for (int64_t s = 0; s < nt; s++) {
            d[j * TILE + s] = ds[s * n + j];
            x_out[j * TILE + s] = xs[s * n + j];
        }
        for (int64_t s = nt; s < TILE; s++) d[j * TILE + s] = 0;  /* padding: no delta, no gradient */
    }
    return (double)acc;
}

/* The squared error and its output delta of a tile, lane by lane, as SquaredError.c_output_row computes them:
 * e = x - y, E / c += e^2, d = e * 2c, then d <- f'(net) d. Padded lanes are masked to e = 0. */
static double SUFFIX(narrow_output_lanes)(const narrow_plan *p, const REAL *x, const REAL *yt, REAL *d,
                                          const VEC *mask, double c)
{
    const int64_t L = p->n_layers, n = p->sizes[L];
    const REAL c2 = (REAL)(2.0 * c);
    VEC acc = (VEC){0};
    for (int64_t j = 0; j < n; j++) {
        const VEC *xj = (const VEC *)(x + j * TILE), *yj = (const VEC *)(yt + j * TILE);
        VEC *dj = (VEC *)(d + j * TILE);
        for (int v = 0; v < NV; v++) {
            const VEC e = (xj[v] - yj[v]) * mask[v];
            acc = acc + e * e;
            dj[v] = e * c2;
        }
    }
    SUFFIX(activation_backward)(p->acts[L - 1], (REAL)p->slopes[L - 1], x, d, n * TILE);
    double s = 0;
    for (int l = 0; l < VL; l++) s += (double)acc[l];
    return s;
}

/* One pass of network.loss_and_gradients over all N samples at the current parameters (which it never changes):
 * *loss = E, grad_w[k] = dE/dW[k], grad_b[k] = dE/db[k] (NULL without biases), and, if out_t is not NULL, the
 * output x^L as (n_L, N). grad_w NULL: the forward phase and the loss alone (an evaluation). Returns 0, or 1 when
 * the workspace cannot be allocated, 2 for an invalid plan. */
int SUFFIX(narrow_pass)(const narrow_plan *p, REAL *loss, REAL *const *grad_w, REAL *const *grad_b, REAL *out_t)
{
    const int64_t L = p->n_layers, N = p->n_samples;
    const int64_t *sizes = p->sizes;
    const REAL *const *W = (const REAL *const *)p->weights;
    const REAL *const *bias = (const REAL *const *)p->biases;
    const REAL *x_t = (const REAL *)p->x_t, *y_t = (const REAL *)p->y_t;
    if (L < 1 || L > 64 || N < 1)
        return 2;
    const int64_t n_out = sizes[L];
    int64_t max_width = 0, n_act = 0, n_grad = 0, offs_act[66], offs_grad[66];
    for (int64_t k = 0; k <= L; k++) {
        if (sizes[k] < 1) return 2;
        if (sizes[k] > max_width) max_width = sizes[k];
        offs_act[k] = n_act;
        n_act += sizes[k] * TILE;
    }
    /* a wide layer's weight gradient is summed transposed (narrow_wide.c): gt (n_in, n_pad), from offs_wide[k] */
    int64_t n_wide = 0, offs_wide[64], max_pad = 0;
    int wide[64];
    for (int64_t k = 0; k < L; k++) {
        wide[k] = grad_w && SUFFIX(narrow_wide_layer)(sizes[k], sizes[k + 1]);
        const int64_t n_pad = (sizes[k + 1] + VL - 1) / VL * VL;
        offs_wide[k] = n_wide;
        if (wide[k]) {
            n_wide += sizes[k] * n_pad;
            if (n_pad > max_pad) max_pad = n_pad;
        }
        offs_grad[k] = n_grad;
        n_grad += sizes[k + 1] * sizes[k] + (bias ? sizes[k + 1] : 0);
    }
    offs_grad[L] = n_grad;
    /* workspace (64-byte aligned): activities x^0..x^L and the logits, two deltas (ping-pong), the target tile, the
     * transposed rows of the sample-by-sample loss, a transposed delta, the transposed sums of the wide layers; then
     * the lane-wise partial sums, their double totals and the wide layers' */
    const int64_t n_real = n_act + n_out * TILE + 2 * max_width * TILE + n_out * TILE + 3 * TILE * n_out
                           + TILE * max_pad + n_wide;
    const size_t real_bytes = ((size_t)n_real * sizeof(REAL) + 63) / 64 * 64;
    const size_t bytes = real_bytes + (size_t)n_grad * 64 + (size_t)(n_grad + n_wide) * sizeof(double) + 64;
    char *block = (char *)malloc(bytes + 64);
    if (!block)
        return 1;
    char *work = block + (64 - (uintptr_t)block % 64);  /* 64-byte aligned, for the vector loads */
    memset(work, 0, bytes);
    REAL *act = (REAL *)work;
    REAL *logits = act + n_act;
    REAL *delta_a = logits + n_out * TILE, *delta_b = delta_a + max_width * TILE;
    REAL *ytile = delta_b + max_width * TILE;
    REAL *zs = ytile + n_out * TILE, *xs = zs + TILE * n_out, *ds = xs + TILE * n_out;
    REAL *dT = ds + TILE * n_out, *gt = dT + TILE * max_pad;
    VEC *lanes = (VEC *)(work + real_bytes);
    double *total = (double *)(lanes + n_grad), *wide_total = total + n_grad;

    const double c = (p->reduction == RED_MEAN ? 1.0 / (double)N
                      : p->reduction == RED_ELEMENTWISE_MEAN ? 1.0 / (double)(N * n_out) : 1.0) * p->factor;
    double loss_acc = 0;
    const int64_t n_tiles = (N + TILE - 1) / TILE;
    for (int64_t t = 0; t < n_tiles; t++) {
        const int64_t s0 = t * TILE, nt = N - s0 < TILE ? N - s0 : TILE;
        VEC mask[NV];
        for (int v = 0; v < NV; v++)
            for (int l = 0; l < VL; l++) mask[v][l] = (v * VL + l < nt) ? (REAL)1 : (REAL)0;
        /* x^0 and the targets of this tile, zero-padded */
        for (int64_t i = 0; i < sizes[0]; i++) {
            memcpy(act + i * TILE, x_t + i * N + s0, (size_t)nt * sizeof(REAL));
            for (int64_t s = nt; s < TILE; s++) act[i * TILE + s] = 0;
        }
        if (p->lanewise_loss)
            for (int64_t j = 0; j < n_out; j++) {
                memcpy(ytile + j * TILE, y_t + j * N + s0, (size_t)nt * sizeof(REAL));
                for (int64_t s = nt; s < TILE; s++) ytile[j * TILE + s] = 0;
            }
        /* ---- forward phase (network.forward_phase): x^{k+1} = f(W[k] x^k + b[k]) */
        for (int64_t k = 0; k < L; k++) {
            REAL *z = (k == L - 1 && !p->lanewise_loss) ? logits : act + offs_act[k + 1];
            SUFFIX(narrow_net_input)(W[k], bias ? bias[k] : NULL, act + offs_act[k], z, sizes[k], sizes[k + 1]);
            if (k < L - 1 || p->lanewise_loss)
                SUFFIX(activation_forward)(p->acts[k], (REAL)p->slopes[k], z, sizes[k + 1] * TILE);
        }
        /* ---- the loss and the output delta (network.output_delta) */
        REAL *xL = act + offs_act[L];
        REAL *delta = delta_a, *spare = delta_b;
        if (p->lanewise_loss)
            loss_acc += SUFFIX(narrow_output_lanes)(p, xL, ytile, delta, mask, c);
        else
            loss_acc += SUFFIX(narrow_output_rows)(p, logits, xL, delta, zs, xs, ds, s0, nt, c);
        if (out_t)
            for (int64_t j = 0; j < n_out; j++) memcpy(out_t + j * N + s0, xL + j * TILE, (size_t)nt * sizeof(REAL));
        /* ---- backward phase (network.backward_phase), output layer first */
        for (int64_t k = L - 1; grad_w && k >= 0; k--) {
            const int64_t n_in = sizes[k], n_o = sizes[k + 1];
            VEC *gw = lanes + offs_grad[k];
            if (wide[k]) {
                SUFFIX(narrow_wide_gradient)(delta, act + offs_act[k], dT, gt + offs_wide[k], n_in, n_o, nt);
                if (bias) SUFFIX(narrow_bias_gradient)(delta, gw + n_o * n_in, n_o);
            } else
                SUFFIX(narrow_gradient)(delta, act + offs_act[k], gw, bias ? gw + n_o * n_in : NULL, n_in, n_o);
            if (k > 0) {
                SUFFIX(narrow_back)(W[k], delta, spare, n_in, n_o);
                SUFFIX(activation_backward)(p->acts[k - 1], (REAL)p->slopes[k - 1], act + offs_act[k], spare,
                                            n_in * TILE);
                REAL *tmp = delta; delta = spare; spare = tmp;
            }
        }
        if (grad_w && ((t + 1) % BLOCK == 0 || t == n_tiles - 1))
            for (int64_t k = 0; k < L; k++) { /* a wide layer's lane-wise sums are its bias's alone */
                const int64_t skip = wide[k] ? sizes[k + 1] * sizes[k] : 0;
                SUFFIX(narrow_flush)(lanes + offs_grad[k] + skip, total + offs_grad[k] + skip,
                                     offs_grad[k + 1] - offs_grad[k] - skip);
            }
        if (n_wide && ((t + 1) % WIDE_BLOCK == 0 || t == n_tiles - 1))
            SUFFIX(narrow_wide_flush)(gt, wide_total, n_wide);
    }
    for (int64_t k = 0; grad_w && k < L; k++) {
        const int64_t nw = sizes[k + 1] * sizes[k], n_in = sizes[k], n_pad = (sizes[k + 1] + VL - 1) / VL * VL;
        for (int64_t q = 0; q < nw; q++) /* a wide layer's totals are transposed: (n_in, n_pad) */
            grad_w[k][q] = (REAL)(wide[k] ? wide_total[offs_wide[k] + (q % n_in) * n_pad + q / n_in]
                                          : total[offs_grad[k] + q]);
        if (bias && grad_b)
            for (int64_t q = 0; q < sizes[k + 1]; q++) grad_b[k][q] = (REAL)total[offs_grad[k] + nw + q];
    }
    *loss = (REAL)loss_acc * (REAL)c;
    free(block);
    return 0;
}

#include "narrow_epochs.c" /* several epochs a call */

/* For the benchmark's FMA peak (benchmarks/flops.py fma_peak): n rounds of 12 independent multiply-adds on this
 * build's vectors (VL lanes each, the kernel's own narrow_fma), enough chains to keep every FMA unit busy; the
 * lanes' sum goes to *out so that nothing is left out. The most multiply-adds a second the kernel's code could make. */
void SUFFIX(narrow_fma_rounds)(int64_t n, REAL *out)
{
    enum { CHAINS = 12 };
    VEC acc[CHAINS];
    const VEC m = SUFFIX(narrow_splat)((REAL)0.999), c = SUFFIX(narrow_splat)((REAL)0.001);
    for (int q = 0; q < CHAINS; q++) acc[q] = SUFFIX(narrow_splat)((REAL)q);
    for (int64_t r = 0; r < n; r++)
        for (int q = 0; q < CHAINS; q++) acc[q] = SUFFIX(narrow_fma)(acc[q], m, c);
    REAL s = 0;
    for (int q = 0; q < CHAINS; q++)
        for (int l = 0; l < VL; l++) s += acc[q][l];
    *out = s;
}

#undef VEC
#undef VL
#undef NV
#undef NARROW_INLINE
#undef NARROW_LOADED
