"""Bad input raises ValueError or TypeError naming what was expected and what was received."""

import numpy as np
import pytest
import torch

from manual_backprop import MLP, SquaredError, get_activation, get_loss

F64 = torch.float64


@pytest.fixture
def net():
    return MLP([4, 8, 3], activation="tanh", output_activation="softmax", dtype=F64, seed=0)


def test_wrong_feature_count(net):
    with pytest.raises(ValueError, match=r"x must have shape \(B, 4\) or \(4,\) for sizes \[4, 8, 3\], but got \(16, 5\)"):
        net(torch.zeros(16, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"but got \(2, 3, 4\)"):
        net.loss_and_grads(torch.zeros(2, 3, 4, dtype=F64), torch.zeros(2, dtype=torch.long))


def test_target_shape_that_does_not_fit(net):
    x = torch.zeros(5, 4, dtype=F64)
    with pytest.raises(ValueError, match=r"class-index targets y for cross_entropy must have shape \(5,\), but got \(4,\)"):
        net.loss_and_grads(x, torch.zeros(4, dtype=torch.long), "cross_entropy")
    with pytest.raises(ValueError, match=r"shape \(5,\) or one-hot rows of shape \(5, 3\), but got \(5, 2\)"):
        net.loss_and_grads(x, torch.zeros(5, 2, dtype=F64), "cross_entropy")
    with pytest.raises(ValueError, match=r"class indices in y must lie in \[0, 2\] for 3 outputs, but got values in \[0, 3\]"):
        net.loss_and_grads(x, torch.tensor([0, 1, 2, 3, 0]), "cross_entropy")
    with pytest.raises(ValueError, match=r"y must have shape \(5, 3\) to match the output for squared_error, but got \(5, 1\)"):
        net.loss_and_grads(x, torch.zeros(5, 1, dtype=F64), "squared_error")


def test_mixed_dtypes(net):
    with pytest.raises(TypeError, match="x has dtype torch.float32, but the network has dtype torch.float64"):
        net(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="y has dtype torch.float32, but the network has dtype torch.float64"):
        net.loss_and_grads(torch.zeros(2, 4, dtype=F64), torch.zeros(2, 3), "squared_error")
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        net(torch.zeros(2, 4, dtype=torch.long))


def test_numpy_input_is_refused_with_a_hint(net):
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, but got ndarray \(convert it with torch.as_tensor\)"):
        net(np.zeros((2, 4)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
@pytest.mark.cuda
def test_mixed_devices(net):
    with pytest.raises(ValueError, match="x is on device cuda:0, but the network is on cpu"):
        net(torch.zeros(2, 4, dtype=F64, device="cuda"))


def test_mixed_devices_without_cuda(net):
    with pytest.raises(ValueError, match="x is on device meta, but the network is on cpu"):
        net(torch.zeros(2, 4, dtype=F64, device="meta"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_in_inputs_or_targets(net, bad):
    """Refused where data enters (the checks the Trainer makes once, finite=True); the one-update API does not read
    every value on every call (on CUDA that would synchronise), and a non-finite input gives a non-finite loss."""
    x = torch.zeros(3, 4, dtype=F64)
    x[1, 2] = bad
    with pytest.raises(ValueError, match=rf"x must be finite, but x\[1, 2\] = {bad}"):
        net.check_x(x, finite=True)
    y = torch.full((3, 3), 1 / 3, dtype=F64)
    y[2, 0] = bad
    with pytest.raises(ValueError, match=rf"y must be finite, but y\[2, 0\] = {bad}"):
        net.check_y(y, (3, 3), net.check_loss("squared_error"), finite=True)
    loss, _ = net.loss_and_grads(torch.zeros(3, 4, dtype=F64), y, "squared_error")
    assert not torch.isfinite(loss)


@pytest.mark.parametrize("sizes,message", [
    ([4, 0, 3], r"sizes\[1\] must be a positive width, but got 0"),
    ([4, -2, 3], r"sizes\[1\] must be a positive width, but got -2"),
    ([4], r"sizes must list at least an input and an output width"),
])
def test_zero_or_negative_widths(sizes, message):
    with pytest.raises(ValueError, match=message):
        MLP(sizes)


def test_non_integer_width():
    with pytest.raises(TypeError, match=r"sizes\[1\] must be an int, but got float: 2.5"):
        MLP([2, 2.5, 1])


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match=r"activation must be one of \['identity', 'leaky_relu', 'relu', 'sigmoid', "
                                         r"'softmax', 'tanh'\], but got 'swish'"):
        MLP([2, 3, 1], activation="swish")
    with pytest.raises(ValueError, match=r"output_activation must be one of .* but got 'gelu'"):
        MLP([2, 3, 1], output_activation="gelu")
    with pytest.raises(ValueError, match=r"activation\[1\] must be one of"):
        MLP([2, 3, 3, 1], activation=["tanh", "nope"])
    with pytest.raises(ValueError, match="one per hidden layer \\(2 for sizes \\[2, 3, 3, 1\\]\\), but got a list of 3"):
        MLP([2, 3, 3, 1], activation=["tanh", "tanh", "tanh"])
    with pytest.raises(ValueError, match="softmax is only allowed as output_activation"):
        MLP([2, 3, 1], activation="softmax")
    with pytest.raises(ValueError, match=r"negative_slope of leaky_relu must be a number in \[0, 1\)"):
        get_activation("leaky_relu:-0.5")


def test_unknown_loss_lists_valid_names(net):
    with pytest.raises(ValueError, match=r"loss must be one of \['bce', 'binary_cross_entropy', 'ce', 'cross_entropy', "
                                         r"'mse', 'squared_error', 'sse'\], but got 'hinge'"):
        net.loss_and_grads(torch.zeros(1, 4, dtype=F64), torch.zeros(1, dtype=torch.long), "hinge")
    with pytest.raises(ValueError, match=r"reduction of squared_error must be one of \['mean', 'sum', 'elementwise_mean'\]"):
        SquaredError(reduction="avg")
    with pytest.raises(ValueError, match=r"reduction of cross_entropy must be one of \['mean', 'sum'\]"):
        get_loss("cross_entropy", reduction="elementwise_mean")


@pytest.mark.parametrize("output,loss,hint", [
    ("sigmoid", "cross_entropy", "needs output_activation='softmax', but got 'sigmoid'; use 'binary_cross_entropy'"),
    ("softmax", "binary_cross_entropy", "needs output_activation='sigmoid', but got 'softmax'; use 'cross_entropy'"),
    ("identity", "cross_entropy", "needs output_activation='softmax', but got 'identity'"),
])
def test_combinations_that_make_no_sense_are_refused(output, loss, hint):
    net = MLP([2, 3, 2], output_activation=output, dtype=F64, seed=0)
    y = torch.zeros(1, dtype=torch.long) if loss == "cross_entropy" else torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError, match=hint):
        net.loss_and_grads(torch.zeros(1, 2, dtype=F64), y, loss)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"init must be one of \['normal', 'uniform', 'xavier_uniform'"):
        MLP([2, 1], init="orthogonal")
    with pytest.raises(ValueError, match="dtype must be a floating-point torch dtype"):
        MLP([2, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63 - 1\] or None, but got -1"):
        MLP([2, 1], seed=-1)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63 - 1\] or None, but got 1180591620717411303424"):
        MLP([2, 1], seed=2**70)  # torch's generator takes 64 bits; it would say "Overflow when unpacking long"
    with pytest.raises(ValueError, match="init_scale must be a finite number > 0, but got 0.0"):
        MLP([2, 1], init_scale=0)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda' was asked for, but CUDA is not available"):
            MLP([2, 1], device="cuda")


def test_bad_step_and_state_dict(net):
    _, grads = net.loss_and_grads(torch.zeros(2, 4, dtype=F64), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, but got -0.1"):
        net.step(grads, -0.1)
    state = dict(net.state_dict())
    state["2.weight"] = torch.zeros(3, 7, dtype=F64)
    with pytest.raises(ValueError, match=r"state_dict\['2.weight'\] must have shape \(3, 8\), but got \(3, 7\)"):
        net.load_state_dict(state)
    del state["2.weight"]
    with pytest.raises(ValueError, match=r"missing \['2.weight'\], unexpected \[\]"):
        net.load_state_dict(state)


# ---------------------------------------------------------------------------------------------- issue 12
def test_load_state_dict_is_all_or_nothing(net):
    """A shape error on a later key leaves every parameter as it was (no half-loaded network)."""
    before = [p.clone() for p in net.parameters()]
    state = {k: torch.full_like(v, 7.0) for k, v in net.state_dict().items()}
    state["2.weight"] = torch.zeros(3, 7, dtype=F64)
    with pytest.raises(ValueError, match=r"state_dict\['2.weight'\] must have shape \(3, 8\)"):
        net.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before)), "0.weight was overwritten"
    state["2.weight"] = torch.zeros(3, 8, dtype=torch.complex128)
    with pytest.raises(TypeError, match=r"state_dict\['2.weight'\] must hold real numbers"):
        net.load_state_dict(state)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))
    with pytest.raises(TypeError, match="state_dict must be a mapping of parameter names to tensors, but got NoneType"):
        net.load_state_dict(None)


def test_step_checks_the_shape_of_every_bias_gradient(net):
    _, grads = net.loss_and_grads(torch.zeros(2, 4, dtype=F64), torch.zeros(2, dtype=torch.long))
    before = [p.clone() for p in net.parameters()]
    grads.biases[1] = torch.ones(1, dtype=F64)  # would broadcast into all 3 biases of layer 2
    with pytest.raises(ValueError, match=r"grads.biases\[1\] must have shape \(3,\), but got \(1,\)"):
        net.step(grads, 0.1)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before))


@pytest.mark.parametrize("rows,what", [
    ([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]], "sum to 1"),                    # one-hot x 2
    ([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]], "sum to 1"),                    # an all-zero row
    ([[1.5, -0.5, 0.0], [0.0, 1.0, 0.0]], "must not be negative"),       # sums to 1, with a negative entry
])
def test_cross_entropy_refuses_target_rows_that_are_not_distributions(net, rows, what):
    """The fused delta c (p - y) is dE/dnet only for rows of y that are probability distributions."""
    with pytest.raises(ValueError, match=rf"y for cross_entropy .*{what}.* row 0"):
        net.loss_and_grads(torch.zeros(2, 4, dtype=F64), torch.tensor(rows, dtype=F64), "cross_entropy")


def test_cross_entropy_takes_probability_rows_and_matches_autograd(net):
    from reference import TorchMLP

    x = torch.randn(3, 4, dtype=F64, generator=torch.Generator().manual_seed(0))
    y = torch.softmax(torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(1)), dim=1)
    _, grads = net.loss_and_grads(x, y, "cross_entropy")
    _, expected = TorchMLP.from_manual(net).loss_and_grads(x, y, "cross_entropy")
    for k in range(net.num_layers):
        torch.testing.assert_close(grads.weights[k], expected.weights[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bool, torch.complex128])
def test_cross_entropy_refuses_bool_or_complex_targets(net, dtype):
    y = torch.eye(3, dtype=dtype)[[0, 1]]
    with pytest.raises(TypeError, match=rf"y for cross_entropy must be class indices .* or probability rows .* "
                                        rf"but got dtype {dtype}"):
        net.loss_and_grads(torch.zeros(2, 4, dtype=F64), y, "cross_entropy")


@pytest.mark.parametrize("loss,y", [
    ("cross_entropy", torch.zeros(0, dtype=torch.long)),
    ("squared_error", torch.zeros(0, 3, dtype=F64)),
])
def test_an_empty_batch_is_refused_naming_it(net, loss, y):
    with pytest.raises(ValueError, match=r"empty batch: x and y hold 0 samples"):
        net.loss_and_grads(torch.zeros(0, 4, dtype=F64), y, loss)
