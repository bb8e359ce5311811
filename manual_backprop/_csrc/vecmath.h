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
 *   segments 2 .. 31, c the midpoint:   t = hi + (lo + C1 u + ... + C6 u^6), hi + lo = tanh(c) in two floats.
 * Every c is a multiple of 2^-3 and |u| <= 0.875, so u is exact. Horner's rule with fmaf; the last step adds hi.
 * Bound: within 1 ulp of the double core rounded once, (float)mbp_tanh_f64(x), on every float (proven over all 2^32
 * bit patterns, tests/proof/test_vecmath.py), and within 0.76 ulp of tanh in double on every positive float (the
 * float-native form it replaced, with one division: 0.98), and within 1 ulp of torch.tanh (checked there on whole
 * binades and a large sample). tanh(+-inf) = +-1, tanh(-0) = -0; NaN in, NaN out (the clamp keeps it: a > 9.5 is
 * false for NaN, and every operation after it propagates it).
 * mbp_vtanh_f32 (below) computes the same bits 16 lanes at a time with AVX-512, where each table is two registers and
 * a lane's coefficient one permute (no gather); elsewhere, and for a tail, it calls this function. */
#define MBP_TANH_F32_DEGREE 6
static const float mbp_tanh_f32_center[32] = {
    0x0.0p+0f, 0x0.0p+0f, 0x1.4p-1f, 0x1.cp-1f, 0x1.2p+0f, 0x1.6p+0f,
    0x1.ap+0f, 0x1.ep+0f, 0x1.1p+1f, 0x1.3p+1f, 0x1.5p+1f, 0x1.7p+1f,
    0x1.9p+1f, 0x1.bp+1f, 0x1.dp+1f, 0x1.fp+1f, 0x1.08p+2f, 0x1.18p+2f,
    0x1.28p+2f, 0x1.38p+2f, 0x1.48p+2f, 0x1.58p+2f, 0x1.68p+2f, 0x1.78p+2f,
    0x1.88p+2f, 0x1.98p+2f, 0x1.a8p+2f, 0x1.b8p+2f, 0x1.c8p+2f, 0x1.d8p+2f,
    0x1.e8p+2f, 0x1.14p+3f};
static const float mbp_tanh_f32_table[8][32] = { /* hi, lo, C1 .. C6 */
  { /* hi */
    0x0.0p+0f, 0x0.0p+0f, 0x1.1bf47ep-1f, 0x1.68665p-1f, 0x1.9e5cb6p-1f, 0x1.c278a6p-1f,
    0x1.d9c6fap-1f, 0x1.e8789ep-1f, 0x1.f1994ep-1f, 0x1.f73776p-1f, 0x1.faa794p-1f, 0x1.fcc04cp-1f,
    0x1.fe06ecp-1f, 0x1.fecd6cp-1f, 0x1.ff45f6p-1f, 0x1.ff8f22p-1f, 0x1.ffbb88p-1f, 0x1.ffd678p-1f,
    0x1.ffe6cep-1f, 0x1.fff0b8p-1f, 0x1.fff6bcp-1f, 0x1.fffa6p-1f, 0x1.fffc98p-1f, 0x1.fffdeep-1f,
    0x1.fffebep-1f, 0x1.ffff3ep-1f, 0x1.ffff8ap-1f, 0x1.ffffb8p-1f, 0x1.ffffd4p-1f, 0x1.ffffe6p-1f,
    0x1.fffffp-1f, 0x1.fffffep-1f},
  { /* lo */
    0x0.0p+0f, 0x0.0p+0f, 0x1.5771f2p-26f, 0x1.718402p-26f, -0x1.16eca6p-27f, -0x1.ab637p-26f,
    0x1.fcc39p-26f, 0x1.9d81bcp-26f, -0x1.1b607p-30f, 0x1.65545cp-26f, -0x1.691428p-26f, 0x1.b79b8ap-26f,
    -0x1.f2efbep-26f, -0x1.02b9dcp-26f, 0x1.a6c268p-26f, -0x1.92aacep-28f, -0x1.7c1d1p-28f, -0x1.e612ap-27f,
    0x1.5a259cp-26f, 0x1.1d7374p-28f, -0x1.6f867p-26f, 0x1.b52ed6p-26f, -0x1.c987f2p-26f, 0x1.1f006ap-26f,
    0x1.c167b4p-26f, -0x1.8aae34p-26f, -0x1.13baap-28f, 0x1.640478p-27f, 0x1.14cfeap-26f, -0x1.700fe8p-27f,
    0x1.8f7eap-32f, -0x1.4f49d2p-28f},
  { /* C1 */
    0x0.0p+0f, 0x0.0p+0f, 0x1.6284c4p-1f, 0x1.02500ap-1f, 0x1.615002p-2f, 0x1.cea744p-3f,
    0x1.265e34p-3f, 0x1.6fcfa6p-4f, 0x1.c65b1cp-5f, 0x1.16a7fcp-5f, 0x1.5452p-6f, 0x1.9e87dp-7f,
    0x1.f81bd8p-8f, 0x1.3238b8p-8f, 0x1.73cecp-9f, 0x1.c34706p-10f, 0x1.11ce6ep-10f, 0x1.4c3652p-11f,
    0x1.930b44p-12f, 0x1.e8f43ep-13f, 0x1.28944ap-13f, 0x1.67c76p-14f, 0x1.b470eep-15f, 0x1.08b7b8p-15f,
    0x1.411ee8p-16f, 0x1.858a64p-17f, 0x1.d889a6p-18f, 0x1.1e9be8p-18f, 0x1.5bacb2p-19f, 0x1.a5c034p-20f,
    0x1.ff9c18p-21f, 0x1.152492p-23f},
  { /* C2 */
    -0x1.327484p-20f, -0x1.f04228p-14f, -0x1.893b5ap-2f, -0x1.6ba7ccp-2f, -0x1.1defacp-2f, -0x1.970e08p-3f,
    -0x1.10646ep-3f, -0x1.5ee892p-4f, -0x1.b9937cp-5f, -0x1.11e038p-5f, -0x1.50c46ep-6f, -0x1.9be672p-7f,
    -0x1.f62a8cp-8f, -0x1.31815ap-8f, -0x1.7347a8p-9f, -0x1.c2e38ap-10f, -0x1.11a9dp-10f, -0x1.4c1b6p-11f,
    -0x1.92f77p-12f, -0x1.e8e5a6p-13f, -0x1.288eeap-13f, -0x1.67c36ep-14f, -0x1.b46e06p-15f, -0x1.08b6a6p-15f,
    -0x1.411e1ep-16f, -0x1.8589dp-17f, -0x1.d8893ap-18f, -0x1.1e9bcp-18f, -0x1.5bac94p-19f, -0x1.a5c024p-20f,
    -0x1.ff9c08p-21f, -0x1.1508ecp-23f},
  { /* C3 */
    -0x1.554464p-2f, -0x1.537198p-2f, -0x1.244acp-6f, 0x1.4f13eep-4f, 0x1.c68f5ep-4f, 0x1.97d92cp-4f,
    0x1.33de5ap-4f, 0x1.a85d42p-5f, 0x1.15b41p-5f, 0x1.60960ap-6f, 0x1.b7a012p-7f, 0x1.0f1c66p-7f,
    0x1.4c3226p-8f, 0x1.956e0ep-9f, 0x1.eda2f8p-10f, 0x1.2c1316p-10f, 0x1.6c8092p-11f, 0x1.ba8748p-12f,
    0x1.0c8a78p-12f, 0x1.45daeep-13f, 0x1.8b5956p-14f, 0x1.dfa532p-15f, 0x1.22efeap-15f, 0x1.60eee6p-16f,
    0x1.ac24e8p-17f, 0x1.03b05cp-17f, 0x1.3b0606p-18f, 0x1.7e238p-19f, 0x1.cf8f84p-20f, 0x1.192b16p-20f,
    0x1.5512aep-21f, 0x1.6d64c6p-24f},
  { /* C4 */
    -0x1.3aa1f2p-10f, -0x1.7ffbc2p-7f, 0x1.1a691ep-3f, 0x1.f209e2p-5f, 0x1.ac40bap-9f, -0x1.5dd624p-6f,
    -0x1.9d2736p-6f, -0x1.55d584p-6f, -0x1.eacd76p-7f, -0x1.47e774p-7f, -0x1.a5087ap-8f, -0x1.082dcep-8f,
    -0x1.470ddap-9f, -0x1.91a396p-10f, -0x1.ead308p-11f, -0x1.2b0b4cp-11f, -0x1.6bbe74p-12f, -0x1.b9f56p-13f,
    -0x1.0c5484p-13f, -0x1.45b49p-14f, -0x1.8b405cp-15f, -0x1.df8d5p-16f, -0x1.22e80ap-16f, -0x1.60e8ccp-17f,
    -0x1.ac21dap-18f, -0x1.03ae7ep-18f, -0x1.3b03d6p-19f, -0x1.7e217ap-20f, -0x1.cf8fa4p-21f, -0x1.192532p-21f,
    -0x1.5512fep-22f, -0x1.6ece2ap-25f},
  { /* C5 */
    0x1.25302ep-3f, 0x1.5fedcep-3f, -0x1.bc4508p-5f, -0x1.e01074p-5f, -0x1.071e76p-5f, -0x1.395ac8p-7f,
    0x1.768ed4p-10f, 0x1.2be216p-8f, 0x1.26094ep-8f, 0x1.bf5718p-9f, 0x1.335becp-9f, 0x1.90be72p-10f,
    0x1.fb3ecep-11f, 0x1.3c6844p-11f, 0x1.84552p-12f, 0x1.dbfee4p-13f, 0x1.226c5p-13f, 0x1.6148ap-14f,
    0x1.ad7456p-15f, 0x1.04c9f4p-15f, 0x1.3daa5ap-16f, 0x1.7fce64p-17f, 0x1.d274bap-18f, 0x1.1c0abep-18f,
    0x1.57e01cp-19f, 0x1.a047d4p-20f, 0x1.f83a3ap-21f, 0x1.32fd4p-21f, 0x1.7424b4p-22f, 0x1.c1f8f6p-23f,
    0x1.114294p-23f, 0x1.4f3e6cp-26f},
  { /* C6 */
    -0x1.2fde7ep-5f, -0x1.1487bap-4f, -0x1.8a1d56p-6f, 0x1.a8a55cp-7f, 0x1.2edb5ap-6f, 0x1.678c94p-7f,
    0x1.0b737p-8f, 0x1.4f6208p-11f, -0x1.27a8fcp-11f, -0x1.909db6p-11f, -0x1.516fbap-11f, -0x1.dcc4e2p-12f,
    -0x1.3beb8ep-12f, -0x1.91bb2ap-13f, -0x1.fb2cccp-14f, -0x1.376568p-14f, -0x1.7e9faep-15f, -0x1.d78162p-16f,
    -0x1.1ec8fap-16f, -0x1.5a3c3ap-17f, -0x1.a2a158p-18f, -0x1.015e4ep-18f, -0x1.3701f4p-19f, -0x1.7bb76cp-20f,
    -0x1.c92cd2p-21f, -0x1.15f192p-21f, -0x1.5152ap-22f, -0x1.9b4c56p-23f, -0x1.ef7e9p-24f, -0x1.326516p-24f,
    -0x1.6b7d86p-25f, -0x1.b56ef6p-28f},
};

static inline float mbp_tanh_f32(float x)
{
    const uint32_t sign = mbp_bits_f32(x) & 0x80000000u;
    float a = mbp_from_bits_f32(mbp_bits_f32(x) & 0x7fffffffu);
    a = a > 9.5f ? 9.5f : a;                    /* NaN stays NaN */
    const float s = a * 4.0f;                   /* exact */
    const int i = s < 31.0f ? (int)s : 31;      /* floor(4a), at most 31 (NaN: 31) */
    const float u = a - mbp_tanh_f32_center[i]; /* exact */
    float S = mbp_tanh_f32_table[MBP_TANH_F32_DEGREE + 1][i];
    for (int k = MBP_TANH_F32_DEGREE; k >= 2; k--) S = __builtin_fmaf(S, u, mbp_tanh_f32_table[k][i]);
    const float P = __builtin_fmaf(S, u, i <= 1 ? u : mbp_tanh_f32_table[1][i]); /* lo + u S, or u + u S */
    const float t = mbp_tanh_f32_table[0][i] + P;
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
        __m256 S = _mm256_i32gather_ps(mbp_tanh_f32_table[D + 1], i, 4);
        for (int k = D; k >= 2; k--)
            S = _mm256_fmadd_ps(S, u, _mm256_i32gather_ps(mbp_tanh_f32_table[k], i, 4));
        const __m256 lo = _mm256_i32gather_ps(mbp_tanh_f32_table[1], i, 4); /* 0 on segments 0 and 1: lo + u = u */
        const __m256 first = _mm256_castsi256_ps(_mm256_cmpgt_epi32(two, i)); /* segments 0 and 1 */
        S = _mm256_fmadd_ps(S, u, _mm256_add_ps(lo, _mm256_and_ps(first, u))); /* lo + u, or lo + 0 = lo */
        const __m256 t = _mm256_add_ps(_mm256_i32gather_ps(mbp_tanh_f32_table[0], i, 4), S);
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
    __m512 T[D + 2][2], C[2];
    for (int k = 0; k < D + 2; k++) {
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
        __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(xv), magnitude));
        a = _mm512_min_ps(clamp, a); /* the second operand where either is NaN: a stays NaN */
        /* The segment, floor(4 min(a, 7.875)) = floor(4a) or 31, with one addition rounded down: 2^21 + a has an ulp
         * of 1/4, so its bits are those of 2^21 plus the segment, and a permute reads only the low five bits of its
         * index. NaN: min gives 7.875 (its second operand), segment 31, as the scalar function; u is NaN anyway. */
        const __m512i i = _mm512_castps_si512(
            _mm512_add_round_ps(_mm512_min_ps(a, top), shift, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
        const __m512 u = _mm512_sub_ps(a, _mm512_permutex2var_ps(C[0], i, C[1]));
        __m512 S = _mm512_permutex2var_ps(T[D + 1][0], i, T[D + 1][1]);
        for (int k = D; k >= 2; k--)
            S = _mm512_fmadd_ps(S, u, _mm512_permutex2var_ps(T[k][0], i, T[k][1]));
        const __m512 lo = _mm512_permutex2var_ps(T[1][0], i, T[1][1]); /* 0 on segments 0 and 1: lo + u = u */
        S = _mm512_fmadd_ps(S, u, _mm512_mask_add_ps(lo, _mm512_cmple_epi32_mask(i, seg1), lo, u));
        const __m512 t = _mm512_add_ps(_mm512_permutex2var_ps(T[0][0], i, T[0][1]), S);
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
