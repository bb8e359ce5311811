/* The C loop's kernels one at a time, for their proofs. Included by mlp_body.c (once per dtype, with its REAL and
 * SUFFIX), not compiled on its own. */

/* Each kernel alone, on the caller's rows, for the per-kernel proof in tests/test_update_proof.py: given the
 * reference's own inputs, the C kernel must give the reference's outputs (bit for bit where the classes' C code is
 * their formula, op for op). */
void SUFFIX(mbp_activation_forward)(int32_t act, double slope, REAL *z, int64_t n)
{
    SUFFIX(activation_forward)(act, (REAL)slope, z, n);
}

void SUFFIX(mbp_activation_backward)(int32_t act, double slope, const REAL *x, REAL *g, int64_t n)
{
    SUFFIX(activation_backward)(act, (REAL)slope, x, g, n);
}

double SUFFIX(mbp_output_delta)(int32_t loss, int32_t out_act, double out_slope, const REAL *z, const REAL *x,
                                const REAL *y, REAL *d, int64_t n, double c)
{
    return (double)SUFFIX(output_delta)(loss, out_act, (REAL)out_slope, z, x, y, d, n, c, (REAL)0);
}

void SUFFIX(mbp_hidden_delta)(int32_t act, double slope, const REAL *W, const REAL *above, const REAL *x,
                              REAL *delta, int64_t n_in, int64_t n_out)
{
    SUFFIX(hidden_delta)(act, (REAL)slope, W, above, x, delta, n_in, n_out);
}

/* vecmath.h's array functions on the caller's rows, for their per-element proof (tests/proof/test_vecmath.py):
 * which = 0 exp, 1 tanh, 2 sigmoid; y may be x. */
void SUFFIX(mbp_vecmath)(int32_t which, const REAL *x, REAL *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = which == 0 ? R_EXP(x[i]) : which == 1 ? R_TANH(x[i]) : (REAL)1 / ((REAL)1 + R_EXP(-x[i]));
}
