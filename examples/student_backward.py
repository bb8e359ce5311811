"""Your own backward phase, graded by `manual-backprop grade`.

Copy this file, fill in the four lines marked TODO, and run

    manual-backprop grade my_backward.py:backward

The grader calls backward(net, cache, y, loss_fn) on networks of depth 1 to 4 with every hidden activation,
batch sizes 1 and 5 and saturated units, compares every layer's dE/dW and dE/db with autograd and with finite
differences, and, where a layer disagrees, names the classic mistake that gives your numbers and the line of
this file that makes it; its "yours / autograd" columns say what factor your numbers are off by (0.2 = 1/B).

What you get (B samples as rows, L = net.num_layers layers of weights, layer 0 the input):
    net.weights[k]                W^{k->k+1}, shape (n_{k+1}, n_k), k = 0 .. L-1 (the layout of nn.Linear.weight)
    net.biases[k]                 b^{k+1}, shape (n_{k+1},)
    net.activation_functions[k]   f of layer k+1; f.name is "sigmoid", "tanh", "relu", "leaky_relu" or
                                  "identity" (softmax only at the output, with cross_entropy)
    cache.activations[k]          the activity x^k, shape (B, n_k): x^0 is the input, x^L the output
    cache.logits                  net^L, the output layer's weighted input, shape (B, n_L)
    y                             the targets, shape (B, n_L) (one-hot rows for cross_entropy)
    loss_fn                       the loss: loss_fn.name, and loss_fn.scale(B, n_L), the factor c in
                                  E = c * sum over samples and outputs (1/B for the default "mean", times 1/2
                                  with half=True)

What you return: (grad_weights, grad_biases), two lists of L tensors shaped like net.weights and net.biases,
holding dE/dW[k] and dE/db[k].

Sign: return the gradient, as autograd does. The lecture's delta_j = 2 (y_j - x_j) f'(net_j) is MINUS dE/dnet_j,
so in the gradient's sign the output delta is 2c (x - y) f'(net), and the update W <- W - lr * dE/dW is the
lecture's Delta w = +eta * delta * x.

f'(net) can be read off the activity x = f(net): sigmoid x (1 - x), tanh 1 - x^2, relu 1 where x > 0 else 0,
leaky_relu 1 where x > 0 else f.negative_slope, identity 1 (or call f.derivative(x), the library's).
"""

import torch


def derivative(f, x):
    """f'(net) of the activation f, read off the activity x = f(net); shape of x."""
    if f.name == "sigmoid":
        return x * (1 - x)
    if f.name == "tanh":
        return 1 - x * x
    if f.name == "relu":
        return (x > 0).to(x.dtype)
    if f.name == "leaky_relu":
        return torch.where(x > 0, torch.ones_like(x), torch.full_like(x, f.negative_slope))
    return torch.ones_like(x)  # identity


def backward(net, cache, y, loss_fn):
    """dE/dW and dE/db of every layer: the output delta, then each earlier delta from the one above."""
    x = cache.activations  # x[k]: (B, n_k)
    L = net.num_layers
    B, n_out = y.shape
    c = loss_fn.scale(B, n_out)  # E = c * sum over samples and outputs
    grad_weights, grad_biases = [None] * L, [None] * L

    if loss_fn.name == "squared_error":
        delta = ...  # TODO dE/dnet^L = c * 2 (x^L - y) * f'(net^L), (B, n_L); f: net.activation_functions[-1]
    else:  # cross_entropy on softmax, binary_cross_entropy on sigmoid: f' cancels against the loss
        delta = c * (x[L] - y)  # (B, n_L)

    for k in range(L - 1, -1, -1):  # layer k+1, whose weights are net.weights[k]
        grad_weights[k] = ...  # TODO dE/dW[k]: delta_j times the input activity x_i, summed over samples
        grad_biases[k] = ...  # TODO dE/db[k]: a bias is a weight whose input activity is 1, (n_{k+1},)
        if k > 0:
            delta = ...  # TODO delta of layer k: f'(net_j) * sum_c delta_c w_cj, (B, n_k)  # noqa: F841
    return grad_weights, grad_biases
