/* The vector types of mlp_body.c and dot(), its one order of a sum of products. Included by mlp_body.c (once per
 * dtype, with its REAL and SUFFIX), not compiled on its own. */

/* With GCC or Clang, eight running sums are one vector of eight lanes (vector_size), each lane rounded exactly as
 * the scalar code rounds its own sum: the same values, in registers. */
#if defined(__GNUC__)
typedef REAL SUFFIX(vec8) __attribute__((vector_size(8 * sizeof(REAL))));
static inline SUFFIX(vec8) SUFFIX(load8)(const REAL *p)
{
    SUFFIX(vec8) v;
    memcpy(&v, p, sizeof v);
    return v;
}
/* a vector written to memory that need not be aligned (the compiler keeps the vector in its register) */
typedef REAL SUFFIX(vec16u) __attribute__((vector_size(16 * sizeof(REAL)), aligned(sizeof(REAL)), may_alias));
typedef REAL SUFFIX(vec8u) __attribute__((vector_size(8 * sizeof(REAL)), aligned(sizeof(REAL)), may_alias));
/* sixteen lanes, for sums whose order does not depend on the width (each lane its own element's sum) */
typedef REAL SUFFIX(vec16) __attribute__((vector_size(16 * sizeof(REAL))));
static inline SUFFIX(vec16) SUFFIX(load16)(const REAL *p)
{
    SUFFIX(vec16) v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void SUFFIX(store16)(REAL *p, SUFFIX(vec16) v) { *(SUFFIX(vec16u) *)p = v; }
static inline void SUFFIX(store8)(REAL *p, SUFFIX(vec8) v) { *(SUFFIX(vec8u) *)p = v; }
#endif

/* c + a * b lane by lane, rounded once, and x in every lane (vecfma.h) */
#if defined(__GNUC__)
MBP_VFMA_DEFINE(SUFFIX(fma16), SUFFIX(vec16), REAL, R_FMA)
MBP_VFMA_DEFINE(SUFFIX(fma8), SUFFIX(vec8), REAL, R_FMA)
MBP_VSPLAT_DEFINE(SUFFIX(splat16), SUFFIX(vec16), REAL)
MBP_VSPLAT_DEFINE(SUFFIX(splat8), SUFFIX(vec8), REAL)
#endif

/* sum_i a[i] b[i] in a fixed order the compiler may keep in vector registers without being allowed to reassociate
 * (no -ffast-math): sixteen running sums over the blocks of sixteen, folded into eight (s[l] + s[l + 8]), eight
 * running sums over one more block of eight, the eight paired as a tree, then the tail one by one; each product is
 * added to its running sum with one rounding (fma). Below sixteen elements the first stage adds nothing. torch's
 * matrix products use their own (blocked) order as well. */
static REAL SUFFIX(dot)(const REAL *a, const REAL *b, int64_t n)
{
    REAL s[8];
    int64_t i = 0;
#if defined(__GNUC__)
    SUFFIX(vec16) v16 = {0};
    for (; i + 16 <= n; i += 16)
        v16 = SUFFIX(fma16)(SUFFIX(load16)(a + i), SUFFIX(load16)(b + i), v16);
    SUFFIX(vec8) lo, hi;
    memcpy(&lo, &v16, sizeof lo);
    memcpy(&hi, (REAL *)&v16 + 8, sizeof hi);
    SUFFIX(vec8) v = lo + hi;
    for (; i + 8 <= n; i += 8)
        v = SUFFIX(fma8)(SUFFIX(load8)(a + i), SUFFIX(load8)(b + i), v);
    memcpy(s, &v, sizeof s);
#else
    REAL s16[16] = {0};
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++)
            s16[l] = R_FMA(a[i + l], b[i + l], s16[l]);
    for (int l = 0; l < 8; l++)
        s[l] = s16[l] + s16[l + 8];
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            s[l] = R_FMA(a[i + l], b[i + l], s[l]);
#endif
    REAL total = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
    for (; i < n; i++)
        total = R_FMA(a[i], b[i], total);
    return total;
}
