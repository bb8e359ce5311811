/* Fused multiply-adds over GCC/Clang vector types for the C kernels (the C loop and its one-update call, the narrow
 * kernel): every lane of c + a * b rounded once, as fma() rounds it, so a sum of products gives the same bits (NaN
 * payloads aside) on every machine and with every build flag (fma is correctly rounded; the compiler is never
 * asked to contract).
 *
 *   MBP_VFMA_DEFINE(name, VT, RT, scalar_fma)   defines  static inline VT name(VT a, VT b, VT c)
 *   MBP_VSPLAT_DEFINE(name, VT, RT)             defines  static inline VT name(RT x), x in every lane
 *
 * for a vector type VT of lanes of RT (float or double), 32 bytes or a multiple of 32. Where the CPU has fused
 * multiply-adds it is one instruction per register of lanes (the intrinsics on 64- or 32-byte parts keep running
 * sums in registers, where a loop over the lanes would not); elsewhere scalar_fma (fmaf or fma) lane by lane, which
 * is exact but slow. tests/proof/test_c_build.py builds without -march=native and checks the bits are the same. */
#ifndef MBP_VECFMA_H
#define MBP_VECFMA_H

#include <string.h>
#if defined(__GNUC__) && (defined(__AVX512F__) || defined(__FMA__))
#include <immintrin.h>
#endif

/* one part of W bytes at offset o through the intrinsic F on registers of type T */
#define MBP_VFMA_PART(W, T, F)                                                                                \
    for (size_t o = 0; o < sizeof r; o += W) {                                                               \
        T x_, y_, z_;                                                                                         \
        memcpy(&x_, (char *)&a + o, W); memcpy(&y_, (char *)&b + o, W); memcpy(&z_, (char *)&c + o, W);     \
        x_ = F(x_, y_, z_);                                                                                   \
        memcpy((char *)&r + o, &x_, W);                                                                       \
    }
#if defined(__GNUC__) && defined(__AVX512F__) && defined(__FMA__)
/* 64-byte parts where the vector holds whole ones, else 32-byte parts */
#define MBP_VFMA_PARTS(VT, RT, SFMA)                                                                          \
    if (sizeof(VT) % 64 == 0 && sizeof(RT) == 4) { MBP_VFMA_PART(64, __m512, _mm512_fmadd_ps) }              \
    else if (sizeof(VT) % 64 == 0) { MBP_VFMA_PART(64, __m512d, _mm512_fmadd_pd) }                           \
    else if (sizeof(RT) == 4) { MBP_VFMA_PART(32, __m256, _mm256_fmadd_ps) }                                 \
    else { MBP_VFMA_PART(32, __m256d, _mm256_fmadd_pd) }
#elif defined(__GNUC__) && defined(__FMA__)
#define MBP_VFMA_PARTS(VT, RT, SFMA)                                                                          \
    if (sizeof(RT) == 4) { MBP_VFMA_PART(32, __m256, _mm256_fmadd_ps) }                                      \
    else { MBP_VFMA_PART(32, __m256d, _mm256_fmadd_pd) }
#else
#define MBP_VFMA_PARTS(VT, RT, SFMA) for (size_t l_ = 0; l_ < sizeof(VT) / sizeof(RT); l_++) r[l_] = SFMA(a[l_], b[l_], c[l_]);
#endif

/* static inline VT name(RT x): x in every lane, as x * 1 (exact; the compiler makes it a broadcast) */
#define MBP_VSPLAT_DEFINE(NAME, VT, RT) static inline VT NAME(RT x) { return x * ((VT){0} + 1); }

#define MBP_VFMA_DEFINE(NAME, VT, RT, SFMA)                                                                   \
    static inline VT NAME(VT a, VT b, VT c)                                                                   \
    {                                                                                                         \
        VT r;                                                                                                 \
        MBP_VFMA_PARTS(VT, RT, SFMA)                                                                          \
        return r;                                                                                             \
    }

#endif
