/* The hand-written backprop of manual_backprop.network.MLP, as one compiled loop over many updates.
 *
 * manual_backprop/fast.py compiles this file with the system C compiler at first use and calls it through ctypes.
 * It runs a chunk of updates (an epoch of online learning, or of minibatches) without returning to Python: for
 * every update, the forward phase over the update's samples, the loss, the output-layer delta, the backward phase
 * (deltas[k-1] = f'(net^k) * (deltas[k] @ W[k])) and the step W <- W - lr * dE/dW, b <- b - lr * dE/db, in that
 * order and with the same per-element arithmetic as network.py, activations.py and losses.py. Only summation order
 * inside a dot product differs from torch's matrix products (a few units in the last place per update).
 *
 * mlp_body.c holds the loop; it is included twice, once for double (suffix _f64) and once for float (_f32), so
 * each dtype computes in its own precision as torch does. Parameters are updated in place in the caller's buffers.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Codes shared with fast.py (_ACT_CODES, _LOSS_CODES). */
enum { ACT_IDENTITY = 0, ACT_SIGMOID = 1, ACT_TANH = 2, ACT_RELU = 3, ACT_LEAKY_RELU = 4, ACT_SOFTMAX = 5 };
enum { LOSS_SQUARED_ERROR = 0, LOSS_CROSS_ENTROPY = 1, LOSS_BINARY_CROSS_ENTROPY = 2 };
enum { RED_MEAN = 0, RED_SUM = 1, RED_ELEMENTWISE_MEAN = 2 };

/* Version of the calling convention; fast.py refuses a library that reports another. */
int mbp_abi_version(void) { return 3; }

/* What stays fixed between calls: the architecture, the loss, the parameters and the training set. fast.py fills
 * it once (ctypes.Structure _Plan) so that a call passes only what changes: the sample order and the updates. */
typedef struct {
    int64_t n_layers;       /* L */
    const int64_t *sizes;   /* L + 1 widths */
    const int32_t *acts;    /* L activation codes, the output's last */
    const double *slopes;   /* L leaky_relu slopes */
    int32_t loss_kind, reduction, half, unused;
    void *const *weights;   /* L pointers to W[k], (n_{k+1}, n_k) row-major, updated in place */
    void *const *biases;    /* L pointers to b[k], or NULL without biases */
    const void *x_data;     /* (n_samples, sizes[0]) */
    const void *y_data;     /* (n_samples, sizes[L]) */
    int64_t n_samples;
} mbp_plan;

#define REAL double
#define SUFFIX(name) name##_f64
#define R_EXP exp
#define R_TANH tanh
#define R_LOG log
#define R_LOG1P log1p
#include "mlp_body.c"
#undef REAL
#undef SUFFIX
#undef R_EXP
#undef R_TANH
#undef R_LOG
#undef R_LOG1P

#define REAL float
#define SUFFIX(name) name##_f32
#define R_EXP expf
#define R_TANH tanhf
#define R_LOG logf
#define R_LOG1P log1pf
#include "mlp_body.c"
