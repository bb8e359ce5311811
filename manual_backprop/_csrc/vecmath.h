/* Vectorisable exp, tanh and sigmoid for the C kernels (the C loop, the batch kernel): branch-free scalar cores,
 * written so that gcc and clang vectorise a loop over them at -O3 without -ffast-math (no libm call, no branch, no
 * reassociation: every operation rounds as written, -ffp-contract=off included), and array versions over them.
 *
 * Accuracy, per element, against torch.exp and torch.tanh on the same inputs (tests/proof/test_vecmath.py states and
 * checks the bounds, VECMATH_ULPS in fast/c_loop.py):
 *   double  exp: fdlibm's reduction x = k ln2 + r (ln2 in two parts) and its rational form of exp(r), < 1 ulp.
 *           tanh: Cephes' rational form x + x^3 P(x^2)/Q(x^2) below |x| = 0.625, 1 - 2 / (exp(2|x|) + 1) above.
 *   float   exp and sigmoid: the double cores above rounded once to float (correctly rounded but for ties within
 *           about 2^-50 of a float midpoint).
 *           tanh: float-native (mbp_tanh_f32 below: float operations with explicit fmaf, one division), within 1 ulp
 *           of the double core rounded once, (float)mbp_tanh_f64(x), on every float: proven exhaustively over all
 *           2^32 bit patterns (tests/proof/test_vecmath.py), and within 1 ulp of torch.tanh. The double core stays
 *           as mbp_tanh_f32_double, the reference of that proof.
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

/* tanh(x) in float, float-native: 16 lanes a 64-byte vector and one division, where the double core rounded once
 * takes 8 lanes and two. Both forms are computed and one kept (no branch), for a = |x| clamped to 9.5 (tanh rounds
 * to 1 in float from 9.01 on):
 *   small, a < 0.9:  a + a^3 R(a^2), R a degree-6 near-minimax fit of (tanh(a) - a) / a^3 (relative error of the
 *                    correction below 0.08 * 2^-24 of tanh; the leading a is exact, and the correction is at most
 *                    26% of tanh, so its roundings move the result by at most about 0.6 ulp before the last one);
 *   large, a >= 0.9: 1 - 2 / d, d = e^2a + 1 = 2^k (1 + p) + 1 rounded once (fmaf), p = e^r - 1 on
 *                    r = 2a - k ln2 in [-ln2/2, ln2/2] (one fmaf with ln2 in float: its 2e-9 error, times k, moves
 *                    d's relative value by k 2e-9 where 2 / d < 2^(1-k), under 0.03 * 2^-24 of tanh), p a degree-6
 *                    near-minimax polynomial (error below 0.08 * 2^-24); 2 / d is at most 0.29 here, so the
 *                    roundings of d and of the quotient move the result by at most about 0.75 ulp.
 * Before its last rounding the result is therefore within 1 ulp of tanh, and after it within 1 ulp of the correctly
 * rounded value; the proof is exhaustive (every float, test_vecmath.py), against the double core rounded once.
 * NaN: the clamp maps it to 9.5, so its bits are put back by an OR of quiet-NaN bits into the result (an integer
 * select, which keeps the loop free of branches; a float select on NaN would let gcc skip the division on one side
 * and branch). tanh(+-inf) = +-1, tanh(-0) = -0 (copysign). The explicit fmaf is one instruction where the target
 * has FMA (-march=native on x86-64 since Haswell, all of aarch64); elsewhere libm's fmaf, exact but slow. */
static inline float mbp_tanh_f32(float x)
{
    const uint32_t ux = mbp_bits_f32(x) & 0x7fffffffu;
    const uint32_t nan_bits = ux > 0x7f800000u ? 0x7fc00000u : 0u;
    const float a = mbp_from_bits_f32(ux < 0x41180000u ? ux : 0x41180000u); /* min(|x|, 9.5) on the bits */
    /* small: a + a^3 R(a^2) */
    const float z = a * a;
    float R = -4.554584448e-04f;
    R = __builtin_fmaf(R, z, 2.582663437e-03f);
    R = __builtin_fmaf(R, z, -8.264538832e-03f);
    R = __builtin_fmaf(R, z, 2.166353911e-02f);
    R = __builtin_fmaf(R, z, -5.392929912e-02f);
    R = __builtin_fmaf(R, z, 1.333297789e-01f);
    R = __builtin_fmaf(R, z, -3.333332241e-01f);
    const float small = __builtin_fmaf(a * z, R, a);
    /* large: 1 - 2 / (2^k (1 + p) + 1), k = round(2a / ln2) by the 1.5 * 2^23 shifter */
    const float u = a + a, shifter = 0x1.8p23f;
    const float ks = __builtin_fmaf(u, 0x1.715476p0f, shifter);
    const float kf = ks - shifter;
    const float r = __builtin_fmaf(-kf, 0x1.62e430p-1f, u);
    float Q = 1.395049039e-03f; /* p = r + r^2 Q(r) */
    Q = __builtin_fmaf(Q, r, 8.368889801e-03f);
    Q = __builtin_fmaf(Q, r, 4.166620597e-02f);
    Q = __builtin_fmaf(Q, r, 1.666651815e-01f);
    Q = __builtin_fmaf(Q, r, 0.5f);
    const float p = __builtin_fmaf(r * r, Q, r);
    const float scale = mbp_from_bits_f32((mbp_bits_f32(ks) - mbp_bits_f32(shifter) + 127u) << 23); /* 2^k */
    const float d = __builtin_fmaf(scale, p, scale + 1.0f); /* scale + 1 exact for k <= 23; above, 2 / d < 2^-23 */
    const float large = 1.0f - 2.0f / d;
    const float t = mbp_from_bits_f32(mbp_bits_f32(a < 0.9f ? small : large) | nan_bits);
    return __builtin_copysignf(t, x);
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
static inline void mbp_vtanh_f32(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_tanh_f32(x[i]);
}
static inline void mbp_vsigmoid_f32(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = mbp_sigmoid_f32(x[i]);
}

#endif /* MBP_VECMATH_H */
