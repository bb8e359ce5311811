/* What the one-update C calls rely on of their tensors, read from torch's own TensorImpl in one call
 * (fast/tensor_state.py; compiled against the installed torch's c10 headers and linked to its libc10).
 *
 * MLP.loss_and_grads' C call reuses its output tensors only where nothing has reached or changed them since they
 * were made, and MLP.step's C call and the next loss_and_grads read the parameters through addresses kept from an
 * earlier call (fast/one_update.py). Asking torch for each tensor's counts, version, address, layout and dtype
 * from Python costs 40 to 200 ns a question, some 80 questions an update; this reads them in one call.
 *
 * A tensor's state is STATE_WORDS int64 words, the counters first and the layout after (LAYOUT_FROM):
 *   0 version          (every in-place change bumps it)
 *   1 TensorImpl uses  (the Python object's and any C++ reference: autograd's saved tensors, a DLPack capsule)
 *   2 storage uses     (every tensor, view or Python storage object over the memory)
 *   3 requires_grad, or-ed with 2 where the tensor has autograd metadata (a .grad set, a hook, retain_grad)
 *   4 address          (``untyped_storage().resize_()`` moves it under the same storage)
 *   5 storage offset, 6 dtype, 7 device type, 8 neg and conj bits (``t.data = ...`` changes these without a bump)
 *   9 dim, 10..12 sizes, 13..15 strides (dims past three: only dim is kept, and such a tensor is never one of ours)
 * A tensor whose state cannot be read (sizes torch computes in Python, a tensor without storage) gets -1 in every
 * word, which matches no tensor the calls made. The Python-side counts (sys.getrefcount, weak references) stay in
 * Python, where they cost 25 ns each. */
#include <c10/core/TensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdint>

namespace {
constexpr int64_t STATE_WORDS = 16;

void state_of(const c10::TensorImpl *t, int64_t *w)
{
    for (int64_t k = 0; k < STATE_WORDS; k++) w[k] = -1;
    if (t == nullptr || t->has_symbolic_sizes_strides() || !t->has_storage())
        return;
    const int64_t dim = t->dim();
    w[0] = (int64_t)t->version_counter().current_version();
    w[1] = (int64_t)c10::raw::intrusive_ptr::use_count(const_cast<c10::TensorImpl *>(t));
    w[2] = (int64_t)t->storage().use_count();
    w[3] = (t->requires_grad() ? 1 : 0) | (t->autograd_meta() != nullptr ? 2 : 0);
    w[4] = (int64_t)(intptr_t)t->storage().data() + t->storage_offset() * (int64_t)t->dtype().itemsize();
    w[5] = t->storage_offset();
    w[6] = (int64_t)t->dtype().toScalarType();
    w[7] = (int64_t)t->device_type();
    w[8] = (t->is_neg() ? 1 : 0) | (t->is_conj() ? 2 : 0);
    w[9] = dim;
    if (dim <= 3)
        for (int64_t d = 0; d < dim; d++) {
            w[10 + d] = t->sizes()[d];
            w[13 + d] = t->strides()[d];
        }
}
} // namespace

extern "C" {

int64_t mbp_tensor_state_words(void) { return STATE_WORDS; }

/* The states of n tensors (their TensorImpl addresses, Tensor._cdata) into out, n * STATE_WORDS words. */
void mbp_tensor_states(const void *const *impls, int64_t n, int64_t *out)
{
    for (int64_t i = 0; i < n; i++) {
        try {
            state_of(static_cast<const c10::TensorImpl *>(impls[i]), out + i * STATE_WORDS);
        } catch (...) { /* torch refused a question: a state no tensor of ours has */
            for (int64_t k = 0; k < STATE_WORDS; k++) out[i * STATE_WORDS + k] = -1;
        }
    }
}

/* Whether each of n tensors still has words first .. STATE_WORDS - 1 of its state in baseline (0: the whole
 * state; LAYOUT_FROM = 4: its address, layout and dtype alone). Returns the first that differs, or n. */
int64_t mbp_tensors_match(const void *const *impls, int64_t n, const int64_t *baseline, int64_t first)
{
    int64_t w[STATE_WORDS];
    for (int64_t i = 0; i < n; i++) {
        try {
            state_of(static_cast<const c10::TensorImpl *>(impls[i]), w);
        } catch (...) {
            return i;
        }
        for (int64_t k = first; k < STATE_WORDS; k++)
            if (w[k] != baseline[i * STATE_WORDS + k])
                return i;
    }
    return n;
}

} // extern "C"

/* MLP.loss_and_grads' and MLP.step's C calls with their checks in the same call (fast/one_update.py): the
 * parameters' addresses, layouts and dtypes (words LAYOUT_FROM on) as the plan's pointers assume them, and for the
 * call the output set's whole states (nothing has reached or changed a tensor it writes), for the step the
 * gradients' layouts (the tensors it reads). */
namespace {
constexpr int64_t LAYOUT_FROM = 4;
typedef int (*loss_and_grads_fn)(const void *plan, const void *x, const void *y, int64_t B, void *const *out);
typedef int (*step_f64_fn)(const void *plan, void *const *grads, double alpha);
typedef int (*step_f32_fn)(const void *plan, void *const *grads, float alpha);
} // namespace

extern "C" {

typedef struct {
    const void *plan;                 /* the C loop's plan (fast/c_loop.py's _Plan) */
    void *loss_and_grads;             /* mbp_loss_and_grads_f64 or _f32 */
    void *step;                       /* mbp_step_f64 or _f32, or NULL */
    int64_t is_f32;                   /* which of the two the step is (its alpha's type) */
    const void *const *params;        /* the parameters' TensorImpls, and their states when the plan was made */
    int64_t n_params;
    const int64_t *params_state;
} mbp_checked;

typedef struct {
    void *const *out;                 /* the C call's array of output addresses */
    const void *const *impls;         /* the set's tensors' TensorImpls, and their states as the set made them */
    int64_t n;
    const int64_t *state;
    int64_t n_step;                   /* the first n_step tensors: the gradients MLP.step reads */
} mbp_outputs;

/* mbp_loss_and_grads where the parameters and the set are as recorded (all but its tensors' versions: an in-place
 * change by a caller who then dropped the tensor leaves nothing the call does not overwrite): its status (0, or 1 and 2 as it returns
 * them); -1 where a parameter changed; -2 - i where the set's tensor i did. */
int64_t mbp_checked_loss_and_grads(const mbp_checked *c, const mbp_outputs *o, const void *x, const void *y,
                                   int64_t B)
{
    if (mbp_tensors_match(c->params, c->n_params, c->params_state, LAYOUT_FROM) != c->n_params)
        return -1;
    const int64_t i = mbp_tensors_match(o->impls, o->n, o->state, 1); /* not the version: the values are ours */
    if (i != o->n)
        return -2 - i;
    return ((loss_and_grads_fn)c->loss_and_grads)(c->plan, x, y, B, o->out);
}

/* mbp_step on the set's gradients where the parameters and the gradients' layouts are as recorded: its status;
 * -1 where a parameter changed; -2 - i where gradient i did; 3 without a step function. */
int64_t mbp_checked_step(const mbp_checked *c, const mbp_outputs *o, double alpha)
{
    if (c->step == nullptr)
        return 3;
    if (mbp_tensors_match(c->params, c->n_params, c->params_state, LAYOUT_FROM) != c->n_params)
        return -1;
    const int64_t i = mbp_tensors_match(o->impls, o->n_step, o->state, LAYOUT_FROM);
    if (i != o->n_step)
        return -2 - i;
    return c->is_f32 ? ((step_f32_fn)c->step)(c->plan, o->out, (float)alpha)
                     : ((step_f64_fn)c->step)(c->plan, o->out, alpha);
}

} // extern "C"

extern "C" {
/* One strong reference more (delta 1) or less (-1) on each of n TensorImpls: an output set holds the TensorImpls it
 * records, so that none is freed under it, and torch.utils.swap_tensors, which needs a tensor held by its Python
 * object alone, refuses to put another TensorImpl under a tensor of the set. */
void mbp_tensor_hold(void *const *impls, int64_t n, int64_t delta)
{
    for (int64_t i = 0; i < n; i++) {
        auto *t = static_cast<c10::TensorImpl *>(impls[i]);
        if (t == nullptr)
            continue;
        if (delta > 0)
            c10::raw::intrusive_ptr::incref(t);
        else
            c10::raw::intrusive_ptr::decref(t);
    }
}
} // extern "C"
