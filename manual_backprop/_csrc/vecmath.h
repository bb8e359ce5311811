/* Vectorisable exp, tanh and sigmoid for the C kernels (the C loop, the batch kernel): branch-free scalar cores,
 * written so that gcc and clang vectorise a loop over them at -O3 without -ffast-math (no libm call, no branch, no
 * reassociation: every operation rounds as written, -ffp-contract=off included), and array versions over them (float
 * tanh's reads tables, so its array version picks their entries with AVX-512 permutes where it can, else with AVX2
 * gathers, which no compiler makes of the scalar loop).
 *
 * Accuracy, per element, against torch.exp and torch.tanh on the same inputs (tests/proof/test_vecmath.py states and
 * checks the bounds, VECMATH_ULPS in fast/c_loop.py):
 *   double  exp: fdlibm's reduction x = k ln2 + r (ln2 in two parts) and its rational form of exp(r), < 1 ulp.
 *           tanh: Cephes' rational form x + x^3 P(x^2)/Q(x^2) below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above.
 *   float   exp and sigmoid: the double cores above rounded once to float (correctly rounded but for ties within
 *           about 2^-50 of a float midpoint).
 *           tanh: float-native (mbp_tanh_f32 below: a degree-6 polynomial on one of 32 segments, from tables, with
 *           explicit fmaf and no division), within 1 ulp of the double core rounded once, (float)mbp_tanh_f64(x),
 *           on every float: proven exhaustively over all 2^32 bit patterns (tests/proof/test_vecmath.py), and
 *           within 1 ulp of torch.tanh. The double core stays as mbp_tanh_f32_double, the reference of that proof.
 * Special values: exp(-inf) = 0, exp(+inf) = inf, overflow to inf and gradual underflow as libm; tanh(+-inf) =
 * +-1, tanh(-0) = -0; NaN in, NaN out.
 *
 * API (stable: the signatures never change; new functions may be added):
 *   double mbp_exp_f64(double x)      float mbp_exp_f32(float x)         one element, static inline
 *   double mbp_tanh_f64(double x)     float mbp_tanh_f32(float x)         float mbp_tanh_f32_double(float x)
 *   double mbp_sigmoid_f64(double x)  float mbp_sigmoid_f32(float x)     1 / (1 + exp(-x)), Sigmoid's formula
 *   void mbp_vexp_f64(const double *x, double *y, int64_t n)   y[i] = exp(x[i]); y may be x (in place)
 *   void mbp_vtanh_f64, mbp_vsigmoid_f64, and the _f32 versions over float, the same way
 */
#ifndef MBP_VECMATH_H
#define MBP_VECMATH_H

#include <stdint.h>
#include <string.h>
#if defined(__GNUC__) && (defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__)))
#include <immintrin.h>
#endif

static inline uint64_t mbp_bits_f64(double x) { uint64_t u; memcpy(&u, &x, sizeof u); return u; }
static inline double mbp_from_bits_f64(uint64_t u) { double x; memcpy(&x, &u, sizeof x); return x; }

/* exp(x) in double. fdlibm's e_exp.c without its branches: k = round(x / ln2) by the 1.5 * 2^52 shifter,
 * r = hi - lo with hi = x - k ln2_hi (exact: ln2_hi has 32 trailing zero bits and |k| < 2^11) and lo = k ln2_lo,
 * exp(r) = 1 - ((lo - r c / (2 - c)) - hi) with c = r - r^2 P(r^2), then 2^k applied as two powers of two, so that
 * results in the subnormal range round once and large k overflow to inf. */
static inline double mbp_exp_f64(double x)
{
    const double shifter = 0x1.8p52, log2e = 0x1.71547652b82fep0;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    const double P1 = 1.66666666666666019037e-01, P2 = -2.77777777770155933842e-03,
                 P3 = 6.61375632143793436117e-05, P4 = -1.65339022054652515390e-06,
                 P5 = 4.13813679705723846039e-08;
    /* exp is 0 below -745.2 and inf above 709.8; NaN passes both. The clamped value is kept a non-constant (copysign)
     * so that the compiler cannot fold exp(1000) into a branch of its own, which would stop vectorisation. */
    x = x < -1000.0 ? __builtin_copysign(1000.0, x) : x;
    x = x > 1000.0 ? __builtin_copysign(1000.0, x) : x;
    const double kd_shifted = x * log2e + shifter;
    const int64_t k = (int64_t)(mbp_bits_f64(kd_shifted) - mbp_bits_f64(shifter)); /* |k| <= 1443 */
    const double kd = kd_shifted - shifter;
    const double hi = x - kd * ln2_hi, lo = kd * ln2_lo;
    const double r = hi - lo;
    const double t = r * r;
    const double c = r - t * (P1 + t * (P2 + t * (P3 + t * (P4 + t * P5))));
    const double y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi); /* exp(r), in [0.7, 1.42] */
    const int64_t k1 = k >> 1, k2 = k - k1; /* each in [-722, 722]: 2^k1, 2^k2 are normal numbers */
    const double s1 = mbp_from_bits_f64((uint64_t)(k1 + 1023) << 52);
    const double s2 = mbp_from_bits_f64((uint64_t)(k2 + 1023) << 52);
    return (y * s1) * s2;
}

/* tanh(x) in double: Cephes' tanh.c without its branches (both forms computed, one kept). */
static inline double mbp_tanh_f64(double x)
{
    const double P0 = -9.64399179425052238628e-1, P1 = -9.92877231001918586564e1,
                 P2 = -1.61468768441708447952e3;
    const double Q0 = 1.12811678491632931402e2, Q1 = 2.23548839060100448583e3, Q2 = 4.84406305325125486048e3;
    const double a = __builtin_fabs(x);
    const double s = mbp_exp_f64(a + a);
    const double large = 1.0 - 2.0 / (s + 1.0); /* 1 for a > 19 (s rounds 1 away), s = inf included */
    const double z = a * a;
    const double ratio = ((P0 * z + P1) * z + P2) / (((z + Q0) * z + Q1) * z + Q2);
    const double small = a + a * z * ratio;
    return __builtin_copysign(a > 0.625 ? large : small, x); /* NaN: a > 0.625 is false, small is NaN */
}

/* Sigmoid's formula 1 / (1 + exp(-x)), as activations.Sigmoid.c_forward and torch.sigmoid compute it. */
static inline double mbp_sigmoid_f64(double x) { return 1.0 / (1.0 + mbp_exp_f64(-x)); }

/* float: the double core, rounded once. */
static inline float mbp_exp_f32(float x) { return (float)mbp_exp_f64((double)x); }
static inline float mbp_tanh_f32_double(float x) { return (float)mbp_tanh_f64((double)x); }

static inline uint32_t mbp_bits_f32(float x) { uint32_t u; memcpy(&u, &x, sizeof u); return u; }
static inline float mbp_from_bits_f32(uint32_t u) { float x; memcpy(&x, &u, sizeof x); return x; }

/* tanh(x) in float, float-native and without a division: a = |x| clamped to 9.5 (tanh rounds to 1 in float from
 * 9.01 on) falls in one of 32 segments, i = floor(4a) below 7.75 and i = 31 on [7.75, 9.5], and a degree-6
 * polynomial in u = a - c_i gives tanh there (the tables below; scripts/fit_tanh_f32.py fits them and says how):
 *   segments 0 and 1 (a < 0.5), c = 0:  t = u + u S(u), S = C2 u + ... + C6 u^5 a fit of tanh(u)/u - 1, so the
 *                                       leading u is exact and the correction is at most 8% of t;
 *   segments 2 .. 31, c near the midpoint: t = hi + (C1 u + ... + C6 u^6), hi the float nearest tanh(c), c picked
 *                                       within 1/64 of the midpoint where tanh(c) is within 0.05 ulp of a float.
 * Every c is a multiple of 2^-14 and |u| < 0.9, so u is exact. Horner's rule with fmaf; the last step, one fmaf,
 * adds hi (or u) and rounds once.
 * Bound: within 1 ulp of the double core rounded once, (float)mbp_tanh_f64(x), on every float (proven over all 2^32
 * bit patterns, tests/proof/test_vecmath.py), and within 0.72 ulp of tanh in double on every 31st positive float
 * from 2^-14 to 9.5 (the tables before, with a second float for tanh(c): 0.76 on every positive float; the
 * float-native form with one division: 0.98), and within 1 ulp of torch.tanh (checked there on whole
 * binades and a large sample). tanh(+-inf) = +-1, tanh(-0) = -0; NaN in, NaN out (the clamp keeps it: a > 9.5 is
 * false for NaN, and every operation after it propagates it).
 * mbp_vtanh_f32 (below) computes the same bits 16 lanes at a time with AVX-512, where each table is two registers and
 * a lane's coefficient one permute (no gather); elsewhere, and for a tail, it calls this function. */
#define MBP_TANH_F32_DEGREE 6
static const float mbp_tanh_f32_center[32] = {
    0x0.0p+0f, 0x0.0p+0f, 0x1.3a5p-1f, 0x1.bb38p-1f, 0x1.2388p+0f, 0x1.622cp+0f,
    0x1.9dep+0f, 0x1.e2b4p+0f, 0x1.0f1ep+1f, 0x1.2e9p+1f, 0x1.4fep+1f, 0x1.6fdcp+1f,
    0x1.8e74p+1f, 0x1.ae5cp+1f, 0x1.d08ap+1f, 0x1.f1cap+1f, 0x1.0754p+2f, 0x1.1886p+2f,
    0x1.2899p+2f, 0x1.3843p+2f, 0x1.48ffp+2f, 0x1.589cp+2f, 0x1.6761p+2f, 0x1.78b3p+2f,
    0x1.885p+2f, 0x1.9727p+2f, 0x1.a809p+2f, 0x1.b8bfp+2f, 0x1.c79bp+2f, 0x1.d87p+2f,
    0x1.e7fap+2f, 0x1.148p+3f};
static const float mbp_tanh_f32_table[7][32] = { /* hi, C1 .. C6 */
  { /* hi */
    0x0.0p+0f, 0x0.0p+0f, 0x1.17fe2p-1f, 0x1.65f8b8p-1f, 0x1.a0c59ap-1f, 0x1.c371fcp-1f,
    0x1.d92964p-1f, 0x1.e8f3a8p-1f, 0x1.f166d4p-1f, 0x1.f704d6p-1f, 0x1.faa4eap-1f, 0x1.fcbe7ap-1f,
    0x1.fdfa96p-1f, 0x1.fec578p-1f, 0x1.ff4786p-1f, 0x1.ff923ep-1f, 0x1.ffba14p-1f, 0x1.ffd724p-1f,
    0x1.ffe746p-1f, 0x1.fff0d8p-1f, 0x1.fff704p-1f, 0x1.fffa7cp-1f, 0x1.fffc86p-1f, 0x1.fffdfap-1f,
    0x1.fffec2p-1f, 0x1.ffff38p-1f, 0x1.ffff8ap-1f, 0x1.ffffbap-1f, 0x1.ffffd4p-1f, 0x1.ffffe6p-1f,
    0x1.fffffp-1f, 0x1.fffffep-1f},
  { /* C1 */
    0x0.0p+0f, 0x0.0p+0f, 0x1.66e20ep-1f, 0x1.05b82ep-1f, 0x1.597d32p-2f, 0x1.c7ca5ep-3f,
    0x1.2aec0cp-3f, 0x1.68789ep-4f, 0x1.cc7c9cp-5f, 0x1.1cdff8p-5f, 0x1.54fa8cp-6f, 0x1.9f6fc2p-7f,
    0x1.023248p-7f, 0x1.3a2764p-8f, 0x1.70b188p-9f, 0x1.b6d8eep-10f, 0x1.179ce8p-10f, 0x1.46d2f8p-11f,
    0x1.8b9672p-12f, 0x1.e4f8dp-13f, 0x1.1f7d78p-13f, 0x1.60fe16p-14f, 0x1.bcfed6p-15f, 0x1.02ffd6p-15f,
    0x1.3dffa6p-16f, 0x1.8ffe5ep-17f, 0x1.d8044cp-18f, 0x1.17ff08p-18f, 0x1.5ff956p-19f, 0x1.9ffe88p-20f,
    0x1.fffbc8p-21f, 0x1.0bdc8cp-23f},
  { /* C2 */
    -0x1.327484p-20f, -0x1.f04228p-14f, -0x1.888498p-2f, -0x1.6df81ap-2f, -0x1.193b14p-2f, -0x1.91e23ap-3f,
    -0x1.143f44p-3f, -0x1.583e78p-4f, -0x1.bf5b6cp-5f, -0x1.17e0b8p-5f, -0x1.5169b2p-6f, -0x1.9ccb24p-7f,
    -0x1.012d48p-7f, -0x1.3966bcp-8f, -0x1.702cd4p-9f, -0x1.b67e62p-10f, -0x1.17773ap-10f, -0x1.46b1cp-11f,
    -0x1.8b85a6p-12f, -0x1.e4e206p-13f, -0x1.1f79f6p-13f, -0x1.610038p-14f, -0x1.bd1b92p-15f, -0x1.029076p-15f,
    -0x1.3e6522p-16f, -0x1.8f94fep-17f, -0x1.dd0d7ap-18f, -0x1.1901b4p-18f, -0x1.5cf04p-19f, -0x1.a60b66p-20f,
    -0x1.fc12acp-21f, -0x1.4d5f3ap-23f},
  { /* C3 */
    -0x1.554464p-2f, -0x1.537198p-2f, -0x1.89cea4p-6f, 0x1.4594c4p-4f, 0x1.c70f3p-4f, 0x1.94d9fep-4f,
    0x1.374d0cp-4f, 0x1.a12f2ep-5f, 0x1.191b96p-5f, 0x1.68048cp-6f, 0x1.b871dap-7f, 0x1.0fb132p-7f,
    0x1.543004p-8f, 0x1.9fdb44p-9f, 0x1.e984c4p-10f, 0x1.23ddc8p-10f, 0x1.74369cp-11f, 0x1.b33fd8p-12f,
    0x1.07977p-12f, 0x1.432b38p-13f, 0x1.7f4766p-14f, 0x1.d6b202p-15f, 0x1.285afp-15f, 0x1.57346ap-16f,
    0x1.a8f706p-17f, 0x1.0bcc9ep-17f, 0x1.3b613cp-18f, 0x1.7a7dap-19f, 0x1.de99ecp-20f, 0x1.1f6c9ap-20f,
    0x1.55b066p-21f, 0x1.6caa2ap-24f},
  { /* C4 */
    -0x1.3aa1f2p-10f, -0x1.7ffbc2p-7f, 0x1.208e54p-3f, 0x1.0438aap-4f, 0x1.285148p-10f, -0x1.642fc6p-6f,
    -0x1.9de76p-6f, -0x1.51e386p-6f, -0x1.efee68p-7f, -0x1.4e3bc2p-7f, -0x1.a548cp-8f, -0x1.0907dcp-8f,
    -0x1.4ee79cp-9f, -0x1.9b42e4p-10f, -0x1.e67952p-11f, -0x1.1f8fd6p-11f, -0x1.727872p-12f, -0x1.c0baccp-13f,
    -0x1.0524fap-13f, -0x1.4b6a84p-14f, -0x1.7c483ap-15f, -0x1.cb069p-16f, -0x1.097a12p-16f, -0x1.166fa4p-16f,
    -0x1.bae5c4p-19f, -0x1.6eba2cp-18f, 0x1.e7272ap-18f, 0x1.e030dcp-22f, -0x1.f79f6ap-19f, 0x1.372ce8p-19f,
    -0x1.4fa708p-20f, 0x1.41fc4cp-25f},
  { /* C5 */
    0x1.25302ep-3f, 0x1.5fedcep-3f, -0x1.adf80ep-5f, -0x1.e7937ep-5f, -0x1.f6e9b6p-6f, -0x1.26bp-7f,
    0x1.44f102p-10f, 0x1.2fb82p-8f, 0x1.26da2cp-8f, 0x1.c7c8dap-9f, 0x1.348c86p-9f, 0x1.916bb2p-10f,
    0x1.04a32ep-10f, 0x1.4487dap-11f, 0x1.813b52p-12f, 0x1.bc8eeap-13f, 0x1.2a496ap-13f, 0x1.773d22p-14f,
    0x1.9cfba2p-15f, 0x1.0b3d24p-15f, 0x1.297b58p-16f, 0x1.5fa63cp-17f, 0x1.35fe86p-17f, 0x1.969a9ap-17f,
    0x1.67a76cp-21f, -0x1.294652p-21f, 0x1.1e9f8p-22f, -0x1.f99864p-20f, -0x1.f3f63ap-20f, -0x1.266616p-19f,
    0x1.675d7cp-24f, 0x1.0dfa5ep-26f},
  { /* C6 */
    -0x1.2fde7ep-5f, -0x1.1487bap-4f, -0x1.a2fbbp-6f, 0x1.cbe802p-7f, 0x1.1b9568p-6f, 0x1.60534ep-7f,
    0x1.e79d1ep-9f, 0x1.7ca54ap-11f, -0x1.060b22p-11f, -0x1.9dcb3ap-11f, -0x1.e35acp-11f, -0x1.2c472ap-12f,
    -0x1.2df73cp-12f, -0x1.1e0baep-12f, -0x1.25c6a2p-13f, -0x1.36fa8ep-12f, -0x1.4a196ep-14f, 0x1.c16772p-13f,
    -0x1.cfbb24p-15f, 0x1.0682d6p-14f, -0x1.333d4ap-16f, -0x1.e0f73ap-16f, -0x1.25316cp-14f, 0x1.dce6fcp-13f,
    -0x1.d25d64p-14f, 0x1.bce008p-15f, -0x1.709b72p-12f, -0x1.17c966p-14f, 0x1.b8ac32p-14f, -0x1.b2acfap-14f,
    0x1.1db9fp-15f, -0x1.1790e8p-24f},
};

static inline float mbp_tanh_f32(float x)
{
    const uint32_t sign = mbp_bits_f32(x) & 0x80000000u;
    float a = mbp_from_bits_f32(mbp_bits_f32(x) & 0x7fffffffu);
    a = a > 9.5f ? 9.5f : a;                    /* NaN stays NaN */
    const float s = a * 4.0f;                   /* exact */
    const int i = s < 31.0f ? (int)s : 31;      /* floor(4a), at most 31 (NaN: 31) */
    const float u = a - mbp_tanh_f32_center[i]; /* exact */
    float S = mbp_tanh_f32_table[MBP_TANH_F32_DEGREE][i];
    for (int k = MBP_TANH_F32_DEGREE - 1; k >= 1; k--) S = __builtin_fmaf(S, u, mbp_tanh_f32_table[k][i]);
    const float t = __builtin_fmaf(S, u, i <= 1 ? u : mbp_tanh_f32_table[0][i]); /* hi + u S, or u + u S */
    return mbp_from_bits_f32(mbp_bits_f32(t) | sign);
}
/* Sigmoid in float as its formula reads in float: exp(-x) rounded to float, then 1 / (1 + e) in float. */
static inline float mbp_sigmoid_f32(float x) { return 1.0f / (1.0f + mbp_exp_f32(-x)); }

static inline void mbp_vexp_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_exp_f64(x[i]);
}
static inline void mbp_vtanh_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_tanh_f64(x[i]);
}
static inline void mbp_vsigmoid_f64(const double *x, double *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_sigmoid_f64(x[i]);
}
static inline void mbp_vexp_f32(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_exp_f32(x[i]);
}
#if defined(__GNUC__) && defined(__AVX2__) && defined(__FMA__)
#define MBP_VTANH_F32_AVX2 1
/* mbp_tanh_f32 over the first n - n % 8 elements, 8 lanes at a time with AVX2: the same operations in the same order,
 * a lane's table entries gathered (a permute picks among 8 entries only); returns how many it did. The array version
 * below uses it where the CPU has no AVX-512; tests/proof/test_vecmath.py compares it with the scalar function on
 * every float wherever it is compiled (a CPU with AVX-512 has AVX2 too). About 2x the scalar loop's speed. */
static inline int64_t mbp_vtanh_f32_avx2(const float *x, float *y, int64_t n)
{
    enum { D = MBP_TANH_F32_DEGREE };
    const __m256 clamp = _mm256_set1_ps(9.5f), four = _mm256_set1_ps(4.0f);
    const __m256i last = _mm256_set1_epi32(31), two = _mm256_set1_epi32(2);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const __m256 xv = _mm256_loadu_ps(x + j);
        __m256 a = _mm256_andnot_ps(sign, xv);
        a = _mm256_min_ps(clamp, a); /* the second operand where either is NaN: a stays NaN */
        /* floor(4a), at most 31; NaN converts to INT_MIN, which the and makes entry 0 (u is NaN anyway): every index
         * a gather reads is in the tables */
        const __m256i i = _mm256_and_si256(_mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(a, four)), last), last);
        const __m256 u = _mm256_sub_ps(a, _mm256_i32gather_ps(mbp_tanh_f32_center, i, 4));
        __m256 S = _mm256_i32gather_ps(mbp_tanh_f32_table[D], i, 4);
        for (int k = D - 1; k >= 1; k--)
            S = _mm256_fmadd_ps(S, u, _mm256_i32gather_ps(mbp_tanh_f32_table[k], i, 4));
        const __m256 hi = _mm256_i32gather_ps(mbp_tanh_f32_table[0], i, 4);
        const __m256 first = _mm256_castsi256_ps(_mm256_cmpgt_epi32(two, i)); /* segments 0 and 1 */
        const __m256 t = _mm256_fmadd_ps(S, u, _mm256_blendv_ps(hi, u, first)); /* hi + u S, or u + u S */
        _mm256_storeu_ps(y + j, _mm256_or_ps(t, _mm256_and_ps(sign, xv))); /* t | (x & sign bit): t >= 0 */
    }
    return j;
}
#endif

/* mbp_tanh_f32 over an array, bit for bit; y may be x. With AVX-512, 16 lanes at a time: the same operations in the
 * same order, each table's 32 entries in two registers and a lane's entry picked by a permute; else with AVX2,
 * mbp_vtanh_f32_avx2; the rest, one by one. */
static inline void mbp_vtanh_f32(const float *x, float *y, int64_t n)
{
    int64_t j = 0;
#if defined(__GNUC__) && defined(__AVX512F__)
    enum { D = MBP_TANH_F32_DEGREE };
    __m512 T[D + 1][2], C[2];
    for (int k = 0; k < D + 1; k++) {
        T[k][0] = _mm512_loadu_ps(mbp_tanh_f32_table[k]);
        T[k][1] = _mm512_loadu_ps(mbp_tanh_f32_table[k] + 16);
    }
    C[0] = _mm512_loadu_ps(mbp_tanh_f32_center);
    C[1] = _mm512_loadu_ps(mbp_tanh_f32_center + 16);
    const __m512 clamp = _mm512_set1_ps(9.5f), top = _mm512_set1_ps(7.875f), shift = _mm512_set1_ps(0x1p21f);
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const __m512i seg1 = _mm512_set1_epi32(0x4a000001); /* the index of segment 1: the bits of 2^21 + 1/4 */
    for (; j + 16 <= n; j += 16) {
        const __m512 xv = _mm512_loadu_ps(x + j);
        /* The segment, floor(4 min(a, 7.875)) = floor(4a) or 31, with one addition rounded down: 2^21 + a has an ulp
         * of 1/4, so its bits are those of 2^21 plus the segment, and a permute reads only the low five bits of its
         * index. NaN: min gives 7.875 (its second operand), segment 31; u is NaN, and so is t. */
        __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(xv), magnitude));
        const __m512 a_top = _mm512_min_ps(a, top);
        a = _mm512_min_ps(clamp, a); /* the second operand where either is NaN: a stays NaN (range_ps would not) */
        const __m512i i = _mm512_castps_si512(
            _mm512_add_round_ps(a_top, shift, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
        const __m512 u = _mm512_sub_ps(a, _mm512_permutex2var_ps(C[0], i, C[1]));
        __m512 S = _mm512_permutex2var_ps(T[D][0], i, T[D][1]);
        for (int k = D - 1; k >= 1; k--)
            S = _mm512_fmadd_ps(S, u, _mm512_permutex2var_ps(T[k][0], i, T[k][1]));
        const __m512 hi = _mm512_permutex2var_ps(T[0][0], i, T[0][1]); /* u instead on segments 0 and 1 */
        const __m512 t = _mm512_fmadd_ps(S, u, _mm512_mask_mov_ps(hi, _mm512_cmple_epi32_mask(i, seg1), u));
        /* t | (x & sign bit): t >= 0 */
        const __m512i r = _mm512_ternarylogic_epi32(_mm512_castps_si512(t), _mm512_castps_si512(xv), magnitude, 0xf4);
        _mm512_storeu_ps(y + j, _mm512_castsi512_ps(r));
    }
#elif defined(MBP_VTANH_F32_AVX2)
    j = mbp_vtanh_f32_avx2(x, y, n);
#endif
    for (; j < n; j++) y[j] = mbp_tanh_f32(x[j]);
}
static inline void mbp_vsigmoid_f32(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_sigmoid_f32(x[i]);
}

#endif /* MBP_VECMATH_H */
