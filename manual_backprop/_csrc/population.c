/* A population of small networks trained in lockstep, E epochs of online learning per call: a declared derivative of
 * network.py's functions as the population applies them (forward_phase, output_delta, hidden_delta, weight_gradient,
 * bias_gradient, update on stacked (K, ...) tensors, population/epoch.py's EpochFunction around them), otherwise
 * identical to them; tests/population/test_population_c_engine.py proves it update by update.
 *
 * Layout: members innermost. Members are taken in blocks of LANES = 32; every quantity (a weight W[k][j][i], an
 * activity x^k_i, a delta) of a block is a row of 32 values, one per member, so one AVX-512 register holds that
 * quantity of 8 members and a row is four registers in flight. Each member has its own sample: the rows of x^0 are
 * gathered from the training set by each member's own order.
 *
 * What one call does, for each block, epoch after epoch (population/c_engine.py binds it):
 *   the order   each active member's torch.randperm(n), replayed from its own generator's mt19937 state (torch's
 *               CPU randperm: for i < n - 1, swap r[i] and r[i + random() % (n - i)], random() one 32-bit draw),
 *               the state advanced in place exactly as torch would advance it;
 *   n updates   forward phase, loss, output delta, hidden deltas, W <- W - lr * dE/dW, b <- b - lr * dE/db, with
 *               the per-element formulas of the activation and loss classes (f' read off the output);
 *   evaluation  every member's loss (and accuracy) on the training split, and on the test split if it differs;
 *   the rules   a member with a non-finite update loss or figure goes back to its parameters at the end of the
 *               previous epoch and stops (diverged); one whose training loss is at most the target stops there;
 *               a stopped member keeps its figures in later rows; the call ends early once no member is active.
 * A dot product is summed in index order and the bias added last, where torch's (batched) products pick their own
 * order: a few units in the last place per update, the bound the proof states (POPULATION_C_ULPS). tanh is
 * vecmath.h's, and so is exp in float; exp in double is pop_exp_f64 below, without a division (each within one ulp
 * of torch's, which is itself a vectorised exp on a population's tensors).
 *
 * population_body.c holds the kernel, included twice, for double (_f64) and float (_f32); population_fused.c the
 * lecture's 2-2-1 XOR network in double, the same operations fused into single passes over the lanes.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vecmath.h"

#define LANES 32
/* a loop over the lanes of a row: independent iterations, no aliasing between the rows it touches */
#define LANES_LOOP(l) _Pragma("GCC ivdep") for (int l = 0; l < LANES; l++)
#define POP_INLINE static inline __attribute__((always_inline))

/* Activation codes: the order of activations.ACTIVATIONS (fast/csource.py's ACT_CODES). Softmax (5) is refused. */
enum { ACT_SIGMOID = 0, ACT_TANH = 1, ACT_RELU = 2, ACT_LEAKY_RELU = 3, ACT_IDENTITY = 4 };
/* Loss codes of this kernel (population/c_engine.py's POP_LOSS_CODES). */
enum { POP_SQUARED_ERROR = 0, POP_BINARY_CROSS_ENTROPY = 1 };
/* stop_kind values. */
enum { POP_RUNNING = 0, POP_REACHED = 1, POP_DIVERGED = 2 };

/* Version of the calling convention; c_engine.py refuses a library that reports another. */
int mbp_pop_abi_version(void) { return 2; }

/* What one call needs. c_engine.py fills it (ctypes.Structure _PopPlan); REAL is the population's dtype. */
typedef struct {
    int64_t n_layers;          /* L */
    const int64_t *sizes;      /* L + 1 widths */
    const int32_t *acts;       /* L activation codes */
    const double *slopes;      /* L leaky_relu slopes */
    int32_t loss_kind, bias;   /* POP_*; whether the layers have biases */
    double c_update;           /* the loss's scale c of one update (B = 1): E = c * sum of the row's terms */
    double c_eval[2];          /* the scale on the training split and on the test split */
    int64_t K;                 /* members */
    void *const *weights;      /* L pointers to W[k], (K, n_{k+1}, n_k), updated in place */
    void *const *biases;       /* L pointers to b[k], (K, n_{k+1}), or NULL */
    const void *lr;            /* (K,) REAL */
    uint8_t *active;           /* (K,) bool, updated */
    uint8_t *rng;              /* (K, rng_stride) bytes: each member's torch CPU generator state, advanced */
    int64_t rng_stride;
    const void *x_train;       /* (n, sizes[0]) REAL */
    const void *y_train;       /* (n, sizes[L]) REAL, the targets as the loss prepared them */
    int64_t n_train;
    const void *eval_x[2];     /* the training and the test split; eval_x[1] == NULL: the same split twice */
    const void *eval_y[2];
    const int64_t *labels[2];  /* class labels (N,), or NULL: no accuracy (0) */
    int64_t eval_n[2];
    int32_t has_target;
    double target;
    double *last;              /* (4, K) each member's figures in the last row, updated */
    int32_t general;           /* 1: the general kernel even where population_fused.c's applies (the proof) */
} pop_plan;

/* torch's mt19937 (aten/src/ATen/core/MT19937RNGEngine.h) on the state words of a CPUGeneratorImpl state:
 * bytes 8..11 hold `left`, 16..23 `next`, 24.. the 624 words as uint64 (tests/population/test_population_c_engine.py
 * checks the layout against torch.randperm and get_state). */
#define MT_N 624
#define MT_M 397
#define MT_TWIST(u, v) (((((u) & 0x80000000u) | ((v) & 0x7fffffffu)) >> 1) ^ (((v) & 1u) ? 0x9908b0dfu : 0u))

static void mt_next_state(uint64_t *s)
{
    int j;
    for (j = 0; j < MT_N - MT_M; j++) s[j] = s[j + MT_M] ^ MT_TWIST((uint32_t)s[j], (uint32_t)s[j + 1]);
    for (; j < MT_N - 1; j++) s[j] = s[j + MT_M - MT_N] ^ MT_TWIST((uint32_t)s[j], (uint32_t)s[j + 1]);
    s[MT_N - 1] = s[MT_M - 1] ^ MT_TWIST((uint32_t)s[MT_N - 1], (uint32_t)s[0]);
}

typedef struct { int32_t left; uint64_t next; uint64_t *words; } mt_view;

static inline uint32_t mt_random(mt_view *g)
{
    if (--g->left == 0) {
        mt_next_state(g->words);
        g->left = MT_N;
        g->next = 0;
    }
    uint32_t y = (uint32_t)g->words[g->next++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

/* a % d for 32-bit a and 0 < d < 2^32 by one multiplication (Lemire, Kaser, Kurz 2019), exact; m = fastmod_m(d). */
static inline uint64_t fastmod_m(uint32_t d) { return UINT64_C(0xFFFFFFFFFFFFFFFF) / d + 1; }
static inline uint32_t fastmod(uint32_t a, uint64_t m, uint32_t d)
{
    return (uint32_t)(((__uint128_t)(m * a) * d) >> 64);
}

/* torch.randperm(n, generator=g) on the CPU for n < 2^32 / 20: Fisher-Yates over 32-bit draws; writes r[0..n). */
static void randperm(uint8_t *state, int64_t n, const uint64_t *mods, int32_t *r)
{
    mt_view g;
    memcpy(&g.left, state + 8, sizeof g.left);
    memcpy(&g.next, state + 16, sizeof g.next);
    g.words = (uint64_t *)(void *)(state + 24);
    for (int64_t i = 0; i < n; i++) r[i] = (int32_t)i;
    for (int64_t i = 0; i + 1 < n; i++) {
        const int64_t z = fastmod(mt_random(&g), mods[i], (uint32_t)(n - i));
        const int32_t sav = r[i];
        r[i] = r[z + i];
        r[z + i] = sav;
    }
    memcpy(state + 8, &g.left, sizeof g.left);
    memcpy(state + 16, &g.next, sizeof g.next);
}

/* torch.Generator().manual_seed(seeds[m]) for each member, as state bytes: rng holds K copies of a freshly seeded
 * generator's state (the fields mt19937 does not own: the caches of normal samples, none after manual_seed); this
 * writes each one's seed, `left` = 1, `seeded`, `next` = 0 and mt19937's initial words (MT19937RNGEngine.h's
 * init_with_uint32). The proof checks the bytes against get_state(). */
/* mt19937's initial words 0 .. n_words-1 (init_with_uint32) of SEED_LANES members at once, member l's from seeds[l]
 * into out[l] (stride words apart): each chain is sequential, so the members are the vector lanes. */
#define SEED_LANES 16
static void mt_seed_lanes(const uint64_t *seeds, int64_t lanes, uint64_t *const *out, int64_t n_words)
{
    uint32_t w[SEED_LANES];
    for (int l = 0; l < SEED_LANES; l++)
        w[l] = (uint32_t)(seeds[l < lanes ? l : 0] & 0xffffffffu);
    for (int64_t l = 0; l < lanes; l++) out[l][0] = w[l];
    for (uint32_t j = 1; j < (uint32_t)n_words; j++) {
        for (int l = 0; l < SEED_LANES; l++)
            w[l] = 1812433253u * (w[l] ^ (w[l] >> 30)) + j;
        for (int64_t l = 0; l < lanes; l++) out[l][j] = w[l];
    }
}

void mbp_pop_seed(uint8_t *rng, int64_t stride, const uint64_t *seeds, int64_t K)
{
    for (int64_t m0 = 0; m0 < K; m0 += SEED_LANES) {
        const int64_t lanes = K - m0 < SEED_LANES ? K - m0 : SEED_LANES;
        uint64_t *words[SEED_LANES];
        for (int64_t l = 0; l < lanes; l++) {
            uint8_t *state = rng + (m0 + l) * stride;
            const uint64_t seed = seeds[m0 + l];
            const int32_t left = 1, seeded = 1;
            const uint64_t next = 0;
            memcpy(state, &seed, sizeof seed);
            memcpy(state + 8, &left, sizeof left);
            memcpy(state + 12, &seeded, sizeof seeded);
            memcpy(state + 16, &next, sizeof next);
            words[l] = (uint64_t *)(void *)(state + 24);
        }
        mt_seed_lanes(seeds + m0, lanes, words, MT_N);
    }
}

/* torch.rand(count, generator=torch.Generator().manual_seed(seeds[m]), dtype=torch.float64) for each member m, into
 * out[m * count ..]: a fresh generator's mt19937 (as mbp_pop_seed), each value from one random64() (two 32-bit
 * draws, the first in the high half) as ATen's uniform_real_distribution<double> takes it: its low 53 bits times
 * 2^-53 (init.py's draws on the CPU; the proof compares them with torch's). Where the 2 count draws fit in the
 * first MT_N - MT_M words of the first twist (a small network's weights), only those words are twisted, from the
 * initial words they read (0 .. 2 count and MT_M .. MT_M + 2 count - 1): mt_next_state's first loop, the same
 * values, without the rest of the state. */
void mbp_pop_uniform(const uint64_t *seeds, int64_t K, int64_t count, double *out)
{
    uint64_t words[SEED_LANES][MT_N];
    uint64_t *rows[SEED_LANES];
    for (int l = 0; l < SEED_LANES; l++) rows[l] = words[l];
    const int64_t draws = 2 * count, partial = draws <= MT_N - MT_M;
    const int64_t needed = partial ? MT_M + draws : MT_N; /* initial words the draws read */
    for (int64_t m0 = 0; m0 < K; m0 += SEED_LANES) {
        const int64_t lanes = K - m0 < SEED_LANES ? K - m0 : SEED_LANES;
        mt_seed_lanes(seeds + m0, lanes, rows, needed);
        for (int64_t l = 0; l < lanes; l++) {
            uint64_t *w = words[l];
            if (partial)
                for (int64_t j = 0; j < draws; j++)
                    w[j] = w[j + MT_M] ^ MT_TWIST((uint32_t)w[j], (uint32_t)w[j + 1]);
            else
                mt_next_state(w);
            mt_view g = {MT_N + 1, 0, w}; /* the state just twisted: the next draws are words 0, 1, ... */
            for (int64_t c = 0; c < count; c++) {
                const uint64_t hi = mt_random(&g), lo = mt_random(&g);
                out[(m0 + l) * count + c] = (double)(((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1)) * 0x1p-53;
            }
        }
    }
}

/* The replay alone, for the proof: `count` permutations of n drawn one after another from one generator state. */
void mbp_pop_randperm(uint8_t *state, int64_t n, int64_t count, int32_t *out)
{
    uint64_t *mods = (uint64_t *)malloc((size_t)(n > 1 ? n : 1) * sizeof(uint64_t));
    if (!mods) return;
    for (int64_t i = 0; i + 1 < n; i++) mods[i] = fastmod_m((uint32_t)(n - i));
    for (int64_t c = 0; c < count; c++) randperm(state, n, mods, out + c * n);
    free(mods);
}


/* exp in double without a division, for the double kernel (vecmath.h's exp has one, and a division costs this
 * kernel more than the polynomial that replaces it). The reduction of vecmath.h (x = k ln2 + r, ln2 in two parts,
 * k by the 1.5 * 2^52 shifter), then exp(r) by its Taylor polynomial of degree 13 in Horner's form with fused
 * multiply-adds (|r| <= ln2 / 2: the first term left out is below 5e-18 of the sum). Each fma rounds once, as
 * written; without FMA hardware fma() is libm's, slower and the same bits. pop_exp_reduced returns exp(r) and k;
 * pop_exp_f64 and pop_sigmoid_f64 apply 2^k each its own way. Within 1 ulp of torch.exp, sigmoid within 4 ulps of
 * torch.sigmoid, the bounds of vecmath.h's (VECMATH_ULPS), checked by tests/population/test_population_c_engine.py. */
static inline double pop_exp_reduced(double x, int64_t *k)
{
    const double shifter = 0x1.8p52, log2e = 0x1.71547652b82fep0;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double kd_shifted = x * log2e + shifter;
    *k = (int64_t)(mbp_bits_f64(kd_shifted) - mbp_bits_f64(shifter));
    const double kd = kd_shifted - shifter;
    const double r = __builtin_fma(-kd, ln2_lo, __builtin_fma(-kd, ln2_hi, x)); /* the inner fma is exact */
    double q = 1.0 / 6227020800.0;                                               /* 1 / 13! */
    q = __builtin_fma(q, r, 1.0 / 479001600.0);
    q = __builtin_fma(q, r, 1.0 / 39916800.0);
    q = __builtin_fma(q, r, 1.0 / 3628800.0);
    q = __builtin_fma(q, r, 1.0 / 362880.0);
    q = __builtin_fma(q, r, 1.0 / 40320.0);
    q = __builtin_fma(q, r, 1.0 / 5040.0);
    q = __builtin_fma(q, r, 1.0 / 720.0);
    q = __builtin_fma(q, r, 1.0 / 120.0);
    q = __builtin_fma(q, r, 1.0 / 24.0);
    q = __builtin_fma(q, r, 1.0 / 6.0);
    q = __builtin_fma(q, r, 0.5);
    q = __builtin_fma(q, r, 1.0);
    return __builtin_fma(q, r, 1.0); /* exp(r), in [0.7, 1.42] */
}

/* exp(x): 2^k as two powers of two (vecmath.h's), so that results in the subnormal range round once and large k
 * overflow to inf. */
static inline double pop_exp_f64(double x)
{
    x = x < -1000.0 ? -1000.0 : x; /* exp is 0 below -745.2 and inf above 709.8; NaN passes both (max, min) */
    x = x > 1000.0 ? 1000.0 : x;
    int64_t k; /* |k| <= 1443 */
    const double y = pop_exp_reduced(x, &k);
    const int64_t k1 = k >> 1, k2 = k - k1;
    const double s1 = mbp_from_bits_f64((uint64_t)(k1 + 1023) << 52);
    const double s2 = mbp_from_bits_f64((uint64_t)(k2 + 1023) << 52);
    return (y * s1) * s2;
}

/* Sigmoid's formula 1 / (1 + exp(-x)). Its exp is needed only down to 2^-54 (1 + e rounds to 1 below), so the
 * argument is clamped to [-708, 710]: k - 1 lies in [-1022, 1023], 2^(k - 1) is a normal number, and
 * (exp(r) 2^(k - 1)) 2 is exp correctly scaled, inf where it overflows. */
static inline double pop_sigmoid_f64(double x)
{
    double t = -x;
    t = t < -708.0 ? -708.0 : t; /* NaN passes both */
    t = t > 710.0 ? 710.0 : t;
    int64_t k;
    const double y = pop_exp_reduced(t, &k);
    const double e = (y * mbp_from_bits_f64((uint64_t)(k + 1022) << 52)) * 2.0;
    return 1.0 / (1.0 + e);
}

/* The two over arrays, for the proof of their bounds. */
void mbp_pop_vexp_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = pop_exp_f64(x[i]);
}
void mbp_pop_vsigmoid_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = pop_sigmoid_f64(x[i]);
}

#define REAL double
#define SUFFIX(name) name##_f64
#define R_EXP mbp_exp_f64
#define R_TANH mbp_tanh_f64
#define R_SIGMOID pop_sigmoid_f64
#define R_LOG1P log1p
#include "population_body.c"
#undef REAL
#undef SUFFIX
#undef R_EXP
#undef R_TANH
#undef R_SIGMOID
#undef R_LOG1P

#include "population_fused.c"

#define REAL float
#define SUFFIX(name) name##_f32
#define R_EXP mbp_exp_f32
#define R_TANH mbp_tanh_f32
#define R_SIGMOID mbp_sigmoid_f32
#define R_LOG1P log1pf
#include "population_body.c"
#undef REAL
#undef SUFFIX
#undef R_EXP
#undef R_TANH
#undef R_SIGMOID
#undef R_LOG1P

/* The entry points: population_fused.c's kernel for the network it is written for (unless the plan asks for the
 * general one, as the proof does), the general kernel otherwise. */
/* Whether mbp_pop_train_f64 runs population_fused.c's kernel on this plan. */
int mbp_pop_fused(const pop_plan *p) { return !p->general && xor_applies(p); }

int64_t mbp_pop_train_f64(const pop_plan *p, int64_t E, double *rows, int32_t *stop_epoch, int8_t *stop_kind,
                          double *bad_losses)
{
    if (mbp_pop_fused(p))
        return (p->acts[0] == ACT_TANH ? xor_train_tanh : xor_train_sigmoid)(p, E, rows, stop_epoch, stop_kind,
                                                                            bad_losses);
    return pop_train_entry_f64(p, E, rows, stop_epoch, stop_kind, bad_losses);
}

int64_t mbp_pop_train_f32(const pop_plan *p, int64_t E, double *rows, int32_t *stop_epoch, int8_t *stop_kind,
                          double *bad_losses)
{
    return pop_train_entry_f32(p, E, rows, stop_epoch, stop_kind, bad_losses);
}
