"""The fast paths (manual_backprop.fast) are switches on the same network and trainer: same parameters as the plain
path after whole runs, float64 to a norm-relative 1e-12 and float32 with assert_close; clean fallback with a clear
message where a path cannot apply. No test here times anything."""

import warnings
from dataclasses import dataclass

import pytest
import torch

from manual_backprop import MLP
from manual_backprop import fast
from manual_backprop.datasets import load_dataset
from manual_backprop.fast.runner import kept_bytes
from manual_backprop.losses import get_loss
from manual_backprop.network import Gradients, loss_and_gradients, update
from manual_backprop.training import Trainer
from reference.compare import norm_relative_error
from helpers import c_loop_reason

F64, F32 = torch.float64, torch.float32
HAS_CUDA = torch.cuda.is_available()


C_REASON = c_loop_reason()  # compiled once per session (cached on disk across sessions)
needs_c = pytest.mark.skipif(C_REASON is not None, reason=f"no working C compiler: {C_REASON}")


@dataclass
class Scenario:
    name: str
    data: str
    sizes: list
    activation: str
    output_activation: str
    loss: object
    mode: str
    lr: float
    epochs: int
    batch_size: int = None
    replacement: bool = False
    bias: bool = True
    data_kwargs: dict = None


SCENARIOS = [
    # the lecture's XOR net, online
    Scenario("xor_online", "xor", [2, 2, 1], "sigmoid", "sigmoid", "squared_error", "online", 0.5, 60),
    # minibatches drawn with replacement, binary cross-entropy on a sigmoid output
    Scenario("xor_bce_replacement", "xor", [2, 3, 1], "tanh", "sigmoid", "binary_cross_entropy", "minibatch", 0.5,
             40, batch_size=2, replacement=True),
    # a partial last minibatch (45 samples, b = 8), softmax + cross-entropy, relu
    Scenario("moons_ce_minibatch", "moons", [2, 8, 2], "relu", "softmax", "cross_entropy", "minibatch", 0.3, 6,
             batch_size=8, data_kwargs={"n_samples": 60}),
    # batch mode, squared error through the softmax Jacobian, leaky relu, sum reduction with the 1/2 factor
    Scenario("blobs_batch_softmax_se", "blobs", [2, 6, 5, 3], "leaky_relu:0.1", "softmax",
             get_loss("squared_error", reduction="sum", half=True), "batch", 0.05, 25, data_kwargs={"n_samples": 90}),
    # real data, online, identity output with torch's element-wise mean
    Scenario("digits_online_identity", "digits", [64, 16, 10], "tanh", "identity",
             get_loss("squared_error", reduction="elementwise_mean"), "online", 0.05, 1),
    # no biases
    Scenario("xor_online_no_bias", "xor", [2, 4, 1], "tanh", "sigmoid", "squared_error", "online", 0.3, 30,
             bias=False),
]

_DATA = {}


def data_for(s: Scenario, dtype):
    key = (s.data, dtype, tuple(sorted((s.data_kwargs or {}).items())))
    if key not in _DATA:
        if s.data == "digits":
            pytest.importorskip("sklearn")
        _DATA[key] = load_dataset(s.data, seed=0, dtype=dtype, **(s.data_kwargs or {}))
    return _DATA[key]


def net_for(s: Scenario, dtype, device="cpu"):
    # non-zero biases, so a missing bias term cannot hide
    return MLP(s.sizes, activation=s.activation, output_activation=s.output_activation, bias=s.bias,
               bias_init="uniform" if s.bias else "zeros", init_scale=0.3, dtype=dtype, device=device, seed=1)


def train_with(s: Scenario, dtype, fast_switch, device="cpu", logger=None):
    net = net_for(s, dtype, device)
    trainer = Trainer(net, data_for(s, dtype), mode=s.mode, lr=s.lr, epochs=s.epochs, batch_size=s.batch_size,
                      loss_fn=s.loss, replacement=s.replacement, seed=5, fast=fast_switch, logger=logger)
    history = trainer.run()
    return net, history, trainer


_PLAIN = {}


def plain_run_of(s: Scenario, dtype):
    """The plain path's run of a scenario (computed once; callers only read it)."""
    if (s.name, dtype) not in _PLAIN:
        _PLAIN[s.name, dtype] = train_with(s, dtype, False)
    return _PLAIN[s.name, dtype]


def assert_same_run(name, fast_run, plain_run, dtype):
    (net_f, hist_f, _), (net_p, hist_p, _) = fast_run, plain_run
    assert hist_f.updates == hist_p.updates, f"{name}: update counts {hist_f.updates} != {hist_p.updates}"
    keys = list(net_p.state_dict())
    for key, a, b in zip(keys, net_f.parameters(), net_p.parameters()):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{name} {key}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        if dtype == F64:
            err = norm_relative_error(a, b)
            assert err <= 1e-12, f"{name} {key}: norm-relative error {err:.3e} > 1e-12 after {hist_p.updates[-1]} updates"
        else:
            torch.testing.assert_close(a, b, msg=lambda m: f"{name} {key} after {hist_p.updates[-1]} updates: {m}")
    losses_f, losses_p = torch.tensor(hist_f.train_loss, dtype=F64), torch.tensor(hist_p.train_loss, dtype=F64)
    if dtype == F64:
        assert norm_relative_error(losses_f, losses_p) <= 1e-12, f"{name}: per-epoch training losses differ"
    else:
        torch.testing.assert_close(losses_f, losses_p, rtol=1.3e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
@pytest.mark.parametrize("path", [pytest.param("c", marks=needs_c), "fused"])
def test_fast_path_gives_the_plain_paths_parameters(path, scenario, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error", fast.FastPathWarning)  # the path asked for is the path that runs
        fast_run = train_with(scenario, dtype, path)
    assert fast_run[2]._fast_runner.path == path
    assert_same_run(f"{path}/{scenario.name}", fast_run, plain_run_of(scenario, dtype), dtype)


@needs_c
def test_auto_picks_the_c_loop_for_small_networks_and_fused_for_large_ones():
    small = MLP([64, 30, 10], seed=0)
    large = MLP([784, 256, 256, 10], seed=0)
    loss = get_loss("squared_error")
    assert fast.resolve_fast(True, small, loss, 10) == "c"
    assert fast.resolve_fast("auto", large, loss, 128) == "fused"
    assert fast.resolve_fast(False, small, loss, 10) == ""


@needs_c
def test_c_loop_per_update_losses_and_last_gradients_match_the_plain_updates():
    s = SCENARIOS[4]  # digits, online
    data = data_for(s, F64)
    loss_fn = s.loss
    x, y = data.x_train.contiguous(), torch.nn.functional.one_hot(data.y_train, 10).to(F64)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:300]
    fast_net, plain_net = net_for(s, F64), net_for(s, F64)
    kernel = fast.CKernel(fast_net, loss_fn)
    grads = Gradients(weights=[torch.zeros_like(w) for w in fast_net.weights],
                           biases=[torch.zeros_like(b) for b in fast_net.biases])
    losses = kernel.run(x, y, order, torch.arange(order.numel() + 1), s.lr, grads=grads)
    plain_losses = []
    with torch.no_grad():
        for i in order.tolist():
            loss, plain_grads = loss_and_gradients(plain_net, x[i:i + 1], y[i:i + 1], loss_fn)
            update(plain_net.weights, plain_net.biases, plain_grads, s.lr)
            plain_losses.append(loss)
    plain_losses = torch.stack(plain_losses)
    assert norm_relative_error(losses, plain_losses) <= 1e-12, "per-update losses differ"
    for k in range(fast_net.num_layers):
        assert norm_relative_error(grads.weights[k], plain_grads.weights[k]) <= 1e-12, f"layer {k + 1} dE/dW"
        assert norm_relative_error(grads.biases[k], plain_grads.biases[k]) <= 1e-12, f"layer {k + 1} dE/db"


class _SilentLogger:
    """Stands in for tblog.RunLogger: the Trainer then keeps the last update's gradients for histograms."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("path", [pytest.param("c", marks=needs_c), "fused"])
def test_fast_path_keeps_the_last_updates_gradients_for_the_histograms(path):
    s = SCENARIOS[2]  # minibatches with a partial last one
    _, _, fast_trainer = train_with(s, F64, path, logger=_SilentLogger())
    _, _, plain_trainer = train_with(s, F64, False, logger=_SilentLogger())
    for k in range(len(plain_trainer.last_grads.weights)):
        for kind in ("weights", "biases"):
            a, b = getattr(fast_trainer.last_grads, kind)[k], getattr(plain_trainer.last_grads, kind)[k]
            assert norm_relative_error(a, b) <= 1e-12, f"layer {k + 1} {kind} gradient of the last update"


def test_fast_path_builds_no_autograd_graph():
    s = SCENARIOS[2]
    data = data_for(s, F64)
    data.x_train.requires_grad_(True)
    try:
        with torch.enable_grad():
            net, _, _ = train_with(s, F64, "fused")
    finally:
        data.x_train.requires_grad_(False)
    assert all(not p.requires_grad and p.grad_fn is None for p in net.parameters())


# ---------------------------------------------------------------------------------------------------- fallback
def test_no_compiler_falls_back_to_fused_with_a_clear_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("MANUAL_BACKPROP_CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setattr(fast.c_loop, "_lib_cache", {})
    s = SCENARIOS[0]
    with pytest.warns(fast.FastPathWarning, match=r"fast='c' cannot run here: the C compiler .*no-such-cc.*"
                                                  r"using the 'fused' fast path"):
        fast_run = train_with(s, F64, "c")
    assert fast_run[2]._fast_runner.path == "fused"
    assert_same_run("fallback", fast_run, plain_run_of(s, F64), F64)
    with pytest.warns(fast.FastPathWarning, match="compiler"):
        assert fast.resolve_fast(True, net_for(s, F64), get_loss("squared_error"), 1) == "fused"
    with pytest.raises(fast.FastPathUnavailable, match="no-such-cc"):
        fast.load_kernel()


def test_cuda_graph_without_cuda_falls_back_with_a_clear_warning():
    with pytest.warns(fast.FastPathWarning, match=r"CUDA graphs need a CUDA device, but the network is on cpu"):
        run = train_with(SCENARIOS[0], F64, "cuda_graph")
    assert run[2]._fast_runner.path == "fused"
    with pytest.raises(fast.FastPathUnavailable, match="CUDA"):
        fast.CudaGraphRunner(net_for(SCENARIOS[0], F64), get_loss("squared_error"), 1)


def test_unsupported_dtype_falls_back_from_c():
    net = MLP([2, 3, 1], dtype=torch.bfloat16, seed=0)
    with pytest.warns(fast.FastPathWarning, match="float32 and float64"):
        assert fast.resolve_fast("c", net, get_loss("squared_error"), 1) == "fused"


def test_unknown_fast_switch_is_refused():
    with pytest.raises(ValueError, match=r"fast must be False, True, 'auto' or one of \['c', 'fused', 'cuda_graph'\]"):
        train_with(SCENARIOS[0], F64, "turbo")


@needs_c
def test_c_loop_refuses_bad_indices_and_leaves_the_network_unchanged():
    net = net_for(SCENARIOS[0], F64)
    before = [p.clone() for p in net.parameters()]
    kernel = fast.CKernel(net, get_loss("squared_error"))
    x, y = torch.zeros(4, 2, dtype=F64), torch.zeros(4, 1, dtype=F64)
    with pytest.raises(ValueError, match=r"sample indices in \[0, 3\]"):
        kernel.run(x, y, torch.tensor([0, 4]), torch.tensor([0, 1, 2]), 0.1)
    with pytest.raises(ValueError, match="offsets"):
        kernel.run(x, y, torch.tensor([0, 1]), torch.tensor([0, 2, 1]), 0.1)
    with pytest.raises(ValueError, match="contiguous CPU torch.float64"):
        kernel.run(x.float(), y, torch.tensor([0]), torch.tensor([0, 1]), 0.1)
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), before))


def test_kept_bytes_of_the_fast_paths_are_no_more_than_the_plain_cache():
    s = SCENARIOS[2]
    net = net_for(s, F64)
    x = data_for(s, F64).x_train[:8]
    with torch.no_grad():
        plain = kept_bytes(net.forward_cache(x))
    assert fast.FusedStep(net, get_loss(s.loss), 8).kept_bytes(8) <= plain
    if C_REASON is None:
        assert fast.CKernel(net, get_loss(s.loss)).kept_bytes(8) <= plain


# ---------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("path", ["fused", "cuda_graph"])
@pytest.mark.parametrize("scenario", [SCENARIOS[2], SCENARIOS[4]], ids=[SCENARIOS[2].name, SCENARIOS[4].name])
def test_cuda_fast_paths_give_the_plain_paths_parameters(path, scenario, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error", fast.FastPathWarning)
        fast_run = train_with(scenario, dtype, path, device="cuda")
    assert fast_run[2]._fast_runner.path == path
    assert_same_run(f"cuda {path}/{scenario.name}", fast_run, train_with(scenario, dtype, False, device="cuda"), dtype)
