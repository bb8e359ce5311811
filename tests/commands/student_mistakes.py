"""Backward phases as students write them, for tests/commands/test_grade.py: one correct, one per classic mistake, and a few
that the grader cannot use at all. Plain torch, no library calls, so the grader's mistakes (computed with the
library's functions) are checked against independent code.

Each function has the grader's signature: backward(net, cache, y, loss_fn) -> (grad_weights, grad_biases).
"""

import torch


def fprime(f, x):
    """f'(net) read off the activity x = f(net), by the activation's name."""
    if f.name == "sigmoid":
        return x * (1 - x)
    if f.name == "tanh":
        return 1 - x ** 2  # not the library's (1 - x)(1 + x): must pass on the saturated networks too
    if f.name == "relu":
        return (x > 0).to(x.dtype)
    if f.name == "leaky_relu":
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, f.negative_slope))
    return torch.ones_like(x)  # identity


def fprime_formula_at(f, v):
    """The f'(x)-formula applied to whatever v is (a student passing net where x belongs)."""
    return fprime(f, v)


def fprime_true_at(f, v):
    """f' evaluated at the point v: sigmoid'(v) = sigmoid(v)(1 - sigmoid(v)) and so on."""
    if f.name == "sigmoid":
        s = torch.sigmoid(v)
        return s * (1 - s)
    if f.name == "tanh":
        return 1 - torch.tanh(v) ** 2
    return fprime(f, v)


def _nets(net, cache):
    """net^k of every layer, recomputed: x^{k-1} W^T + b."""
    x = cache.activations
    return [x[k] @ net.weights[k].T + net.biases[k] for k in range(net.num_layers - 1)] + [cache.logits]


def backprop(net, cache, y, loss_fn, *, output_fp=None, hidden_fp=None, scale=None, sign=1, w_t=False,
             dw_t=False, bias="sum"):
    """The backward phase with hooks for each slip; all defaults give the right answer."""
    x, L = cache.activations, net.num_layers
    B, n = y.shape
    nets = _nets(net, cache)
    c = loss_fn.scale(B, n) if scale is None else scale(loss_fn, B, n)
    f_out = net.activation_functions[-1]
    if loss_fn.name == "squared_error":
        fp = fprime(f_out, x[L]) if output_fp is None else output_fp(f_out, x[L], nets[L - 1])
        delta = c * 2 * (x[L] - y) * fp
    else:
        delta = c * (x[L] - y)
    delta = sign * delta
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = x[k].T @ delta if dw_t else delta.T @ x[k]
        grad_b[k] = {"sum": lambda d: d.sum(0), "none": lambda d: d, "first": lambda d: d[0]}[bias](delta)
        if k > 0:
            W = net.weights[k]
            back = delta @ W.T if w_t else delta @ W
            f = net.activation_functions[k - 1]
            fp = fprime(f, x[k]) if hidden_fp is None else hidden_fp(f, x[k], nets[k - 1])
            delta = back * fp
    return grad_w, grad_b


def correct(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn)


def correct_gradients(net, cache, y, loss_fn):
    """The same answer, returned as a Gradients."""
    from manual_backprop.network import Gradients

    w, b = backprop(net, cache, y, loss_fn)
    return Gradients(weights=w, biases=b)


def no_fprime(net, cache, y, loss_fn):
    one = lambda f, x, v: torch.ones_like(x)  # noqa: E731
    return backprop(net, cache, y, loss_fn, output_fp=one, hidden_fp=one)


def no_fprime_hidden(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, hidden_fp=lambda f, x, v: torch.ones_like(x))


def wrong_sign(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, sign=-1)


def w_not_transposed(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, w_t=True)


def dw_transposed(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, dw_t=True)


def missing_mean(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, scale=lambda loss, B, n: 0.5 if getattr(loss, "half", False) else 1.0)


def bias_not_summed(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, bias="none")


def bias_first_sample(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, bias="first")


def fprime_of_net(net, cache, y, loss_fn):
    wrong = lambda f, x, v: fprime_formula_at(f, v)  # noqa: E731
    return backprop(net, cache, y, loss_fn, output_fp=wrong, hidden_fp=wrong)


def fprime_at_activity(net, cache, y, loss_fn):
    wrong = lambda f, x, v: fprime_true_at(f, x)  # noqa: E731
    return backprop(net, cache, y, loss_fn, output_fp=wrong, hidden_fp=wrong)


def dropped_two(net, cache, y, loss_fn):
    return backprop(net, cache, y, loss_fn, scale=lambda loss, B, n: loss.scale(B, n) / 2)


def no_fprime_and_wrong_sign(net, cache, y, loss_fn):
    one = lambda f, x, v: torch.ones_like(x)  # noqa: E731
    return backprop(net, cache, y, loss_fn, output_fp=one, hidden_fp=one, sign=-1)


def off_by_a_little(net, cache, y, loss_fn):
    """No classic mistake: a 1e-6 relative error in every gradient."""
    w, b = backprop(net, cache, y, loss_fn)
    return [g * (1 + 1e-6) for g in w], b


# ---- the slips of issue 21, each written out whole as a student would, its wrong line marked "# the slip"
def _output_delta(net, cache, y, loss_fn):
    """dE/dnet^L, (B, n_L), right."""
    x, L = cache.activations, net.num_layers
    c = loss_fn.scale(*y.shape)
    if loss_fn.name == "squared_error":
        return c * 2 * (x[L] - y) * fprime(net.activation_functions[-1], x[L])
    return c * (x[L] - y)


def dw_without_transpose(net, cache, y, loss_fn):
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta @ x[k]  # the slip: (B, n_{k+1}) @ (B, n_k), where delta.T @ x[k] belongs
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def deltas_summed_first(net, cache, y, loss_fn):
    """The batch collapsed before back-propagating: the summed delta and the mean sample's activities."""
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)  # (B, n_L)
    delta = delta.sum(0, keepdim=True)  # the slip: (1, n_L), the samples summed before back-propagating
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        x_mean = x[k].mean(0, keepdim=True)  # (1, n_k)
        grad_w[k] = delta.T @ x_mean
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k].mean(0, keepdim=True))
    return grad_w, grad_b


def deltas_summed_flat(net, cache, y, loss_fn):
    """The batch collapsed another way: one (n,) delta, outer products with the summed activities."""
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn).sum(0)  # the slip: (n_L,), the samples summed first
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = torch.outer(delta, x[k].sum(0))
        grad_b[k] = delta
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k]).mean(0)
    return grad_w, grad_b


def mean_taken_twice(net, cache, y, loss_fn):
    x, L = cache.activations, net.num_layers
    B = y.shape[0]
    delta = _output_delta(net, cache, y, loss_fn) / B  # the slip: loss_fn.scale holds the 1/m already
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def dw_divided_by_m(net, cache, y, loss_fn):
    x, L = cache.activations, net.num_layers
    B = y.shape[0]
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k] / B  # the slip: the 1/m is in delta already
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def bias_summed_over_units(net, cache, y, loss_fn):
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(1)  # the slip: (B,), summed over the units where the samples belong
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def wrong_sign_written_out(net, cache, y, loss_fn):
    x, L = cache.activations, net.num_layers
    c = loss_fn.scale(*y.shape)
    if loss_fn.name == "squared_error":
        delta = c * 2 * (y - x[L]) * fprime(net.activation_functions[-1], x[L])  # the slip: the lecture's sign
    else:
        delta = c * (y - x[L])  # the slip: the lecture's sign
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def hidden_deltas_summed(net, cache, y, loss_fn):
    """The output delta right, but summed over the samples each time it is back-propagated to the layer below."""
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(0)
        if k > 0:
            back = delta.sum(0, keepdim=True) @ net.weights[k]  # the slip: one summed delta for every sample
            delta = back * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def hidden_deltas_summed_flat(net, cache, y, loss_fn):
    """The same slip in one line: delta.sum(0) @ W, (n_k,), broadcast against f' of every sample."""
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta.sum(0) @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])  # the slip
    return grad_w, grad_b


def hidden_deltas_summed_once(net, cache, y, loss_fn):
    """The layer below the output written apart, its delta from the summed output delta; the rest right."""
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    grad_w[L - 1], grad_b[L - 1] = delta.T @ x[L - 1], delta.sum(0)
    if L > 1:
        summed = delta.sum(0)  # the output deltas of all samples summed into one: dE/db's, not to back-propagate
        delta = (summed @ net.weights[L - 1]) * fprime(net.activation_functions[L - 2], x[L - 1])  # the slip
    for k in range(L - 2, -1, -1):
        grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def dw_and_db_divided_by_m(net, cache, y, loss_fn):
    """The 1/m twice: loss_fn.scale holds it already, and each gradient is divided by m once more."""
    x, L = cache.activations, net.num_layers
    B = y.shape[0]
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k] / B  # the slip: the 1/m is in delta already
        grad_b[k] = delta.sum(0) / B  # the slip (the second): so is it here
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def nan_in_first_dw(net, cache, y, loss_fn):
    """dE/dW of the first layer taken of the inputs' logs: NaN wherever an input is negative."""
    x, L = cache.activations, net.num_layers
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        if k == 0:
            grad_w[k] = delta.T @ torch.log(x[k])  # the slip: the log of a negative input is NaN
        else:
            grad_w[k] = delta.T @ x[k]
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def inf_in_dw(net, cache, y, loss_fn):
    """An unbiased 1/(B - 1) where no factor belongs: a division by zero at B = 1 (inf, and NaN where 0/0)."""
    x, L = cache.activations, net.num_layers
    B = y.shape[0]
    delta = _output_delta(net, cache, y, loss_fn)
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k] / x[k].new_tensor(B - 1.0)  # the slip: B - 1 is 0 at B = 1
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


# ---- unusable answers
def raises(net, cache, y, loss_fn):
    return 1 / 0


def returns_none(net, cache, y, loss_fn):
    return None


def returns_three(net, cache, y, loss_fn):
    w, b = backprop(net, cache, y, loss_fn)
    return w, b, []


def too_few_layers(net, cache, y, loss_fn):
    w, b = backprop(net, cache, y, loss_fn)
    return w[1:], b[1:]


def returns_numpy(net, cache, y, loss_fn):
    w, b = backprop(net, cache, y, loss_fn)
    return [g.numpy() for g in w], b


def wrong_dtype(net, cache, y, loss_fn):
    w, b = backprop(net, cache, y, loss_fn)
    return [g.float() for g in w], b


def flattened(net, cache, y, loss_fn):
    w, b = backprop(net, cache, y, loss_fn)
    return [g.reshape(-1) for g in w], b


def takes_three_arguments(net, cache, y):
    return backprop(net, cache, y, None)


def uses_autograd(net, cache, y, loss_fn):
    """Not hand-written: asks autograd, which the grader (like the library) has switched off."""
    loss = ((cache.activations[-1] - y) ** 2).sum()
    loss.backward()
    return [w.grad for w in net.weights], [b.grad for b in net.biases]


def updates_in_place(net, cache, y, loss_fn):
    """Right gradients, but it also takes the step itself."""
    w, b = backprop(net, cache, y, loss_fn)
    for p, g in zip(net.weights, w):
        p.sub_(0.1 * g)
    return w, b


NOT_A_FUNCTION = 42


def off_in_one_network(net, cache, y, loss_fn):
    """Right everywhere but in one tensor: dE/dW of layer 1 of the one depth-4 tanh network at B = 5, 1e-6 off."""
    w, b = backprop(net, cache, y, loss_fn)
    if net.num_layers == 4 and y.shape[0] == 5 and net.activation_functions[0].name == "tanh":
        w[0] = w[0] * (1 + 1e-6)
    return w, b
