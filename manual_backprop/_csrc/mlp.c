/* The hand-written backprop of manual_backprop.network, as one compiled loop over many updates: a declared
 * derivative of network.py's functions, proven update by update against them (tests/test_update_proof.py).
 *
 * manual_backprop/fast/c_loop.py compiles this file with the system C compiler at first use and calls it through
 * ctypes. It runs a chunk of updates (an epoch of online learning, or of minibatches) without returning to Python:
 * for every update, the forward phase over the update's samples, the loss and the output delta, the hidden deltas
 * (delta_j = f'(net_j) * sum_c delta_c w_cj) and the update W <- W - lr * dE/dW, b <- b - lr * dE/db, in that order
 * and with the same per-element arithmetic as the activation and loss classes (whose C code kernels.h holds).
 * Summation order inside a dot product differs from torch's matrix products (each product is added with one
 * rounding, an explicit fma: vecfma.h), and torch's add(alpha) fuses a multiply-add that this loop's step rounds
 * twice: a few units in the last place per update, the bound the proof states.
 *
 * mlp_body.c holds the loop (and includes mlp_grads.c, MLP.loss_and_grads' one call); it is included twice, once for
 * double (suffix _f64) and once for float (_f32), so each dtype computes in its own precision as torch does.
 * Parameters are updated in place in the caller's buffers.
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */
#include <math.h>
#include <time.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vecfma.h" /* every sum of products: fused multiply-adds, the same bits on every machine */

/* Reduction codes shared with fast/c_loop.py (the order of losses.REDUCTIONS). Activation and loss codes are the
 * order of activations.ACTIVATIONS and losses.LOSSES; kernels.h switches on them. */
enum { RED_MEAN = 0, RED_SUM = 1, RED_ELEMENTWISE_MEAN = 2 };

/* Version of the calling convention; c_loop.py refuses a library that reports another. */
int mbp_abi_version(void) { return 5; }

/* What stays fixed between calls: the architecture, the loss, the parameters and the training set. c_loop.py fills
 * it once (ctypes.Structure _Plan) so that a call passes only what changes: the sample order and the updates. */
typedef struct {
    int64_t n_layers;       /* L */
    const int64_t *sizes;   /* L + 1 widths */
    const int32_t *acts;    /* L activation codes, the output's last */
    const double *slopes;   /* L leaky_relu slopes */
    int32_t loss_kind, reduction;
    double factor;          /* the loss's constant factor (1/2 for half squared error) */
    void *const *weights;   /* L pointers to W[k], (n_{k+1}, n_k) row-major, updated in place */
    void *const *biases;    /* L pointers to b[k], or NULL without biases */
    const void *x_data;     /* (n_samples, sizes[0]) */
    const void *y_data;     /* (n_samples, sizes[L]) */
    int64_t n_samples;
} mbp_plan;

/* One call of mbp_train_epochs: n_epochs epochs of the Trainer, each its updates, its evaluation and its rules
 * (fast/epochs.py fills it, ctypes.Structure _Epochs). Parameters are net.parameters() order: W[0], b[0], W[1], ... */
typedef struct {
    int64_t n_epochs, n_updates;  /* E epochs of U updates */
    const int64_t *offsets;       /* U + 1: update u of every epoch uses that epoch's order[offsets[u]:offsets[u+1]] */
    const int64_t *orders;        /* E * offsets[U] sample indices, epoch after epoch */
    double lr, target_loss;       /* target_loss NaN: no target */
    const int64_t *train_labels;  /* (n_samples,) class indices for the accuracy, or NULL */
    const void *test_x, *test_y;  /* the test split, or NULL when it is the training split */
    const int64_t *test_labels;
    int64_t test_n;
    void *const *good_init;       /* the last good state before the call (the Trainer's), read */
    void *const *good;            /* the last good state during and after the call, written */
    void *losses;                 /* out: E * U update losses */
    double *figures;              /* out: E * 4: train loss, train accuracy, test loss, test accuracy (NaN: none) */
    double *seconds;              /* out: E seconds of each epoch's updates */
    void *const *grad_w, *const *grad_b;  /* NULL or L buffers: dE/dW, dE/db of the last update run */
    int64_t epochs_run;           /* out: epochs whose rows were written (the last may have diverged) */
    int32_t stop;                 /* out: 0 none, 1 the last epoch reached the target, 2 it diverged (rewound) */
} mbp_epochs;

#define REAL double
#define SUFFIX(name) name##_f64
#define R_EXP mbp_exp_f64 /* vecmath.h, inlined in kernels.h: vectorisable, within 1 ulp of torch */
#define R_TANH mbp_tanh_f64
#define R_VTANH mbp_vtanh_f64 /* tanh over an array, bit for bit R_TANH's */
#define R_LOG log
#define R_LOG1P log1p
#define R_FMA fma /* every sum of products (vecfma.h), and MLP.step's C call (torch's add_(alpha) rounds once) */
#include "mlp_body.c"
#undef REAL
#undef SUFFIX
#undef R_EXP
#undef R_TANH
#undef R_VTANH
#undef R_LOG
#undef R_LOG1P
#undef R_FMA

#define REAL float
#define SUFFIX(name) name##_f32
#define R_EXP mbp_exp_f32
#define R_TANH mbp_tanh_f32
#define R_VTANH mbp_vtanh_f32
#define R_LOG logf
#define R_LOG1P log1pf
#define R_FMA fmaf
#include "mlp_body.c"
