"""The proof, update by update: every fast path and every population engine makes the reference's update.

network.py's loss_and_gradients + update is the reference (the slide, proven against autograd and finite
differences by test_agreement.py). Here one update goes through each derivative of it and through the reference,
from the same parameters on the same samples, for every hidden activation x output activation and loss, on
ordinary inputs and on saturated ones (large weights: sigmoid and tanh units at 1 - x of 1e-4 .. 1e-12, where a
careless f' such as tanh' = 1 - x*x loses digits). Compared in float64:

    bit-equal (0 ulps)       where the same operations run: the fused step keeping its gradients, and the
                             CUDA-graph runner keeping them;
    within the stated bound  where the order of a sum or a fused multiply-add differs: the fused step with the
                             step fused into the product (FUSED_ULPS), the C loop and the Trainer's several-epochs
                             C call (C_ULPS), the population engines, whose batched kernels are not the single
                             network's (POPULATION_ULPS), and the population's C engine (POPULATION_C_ULPS).

A bound of u ulps is measured against the absolute-value network's magnitudes (reference/update_proof.py says
how, and why that is the honest yardstick near saturation). The per-kernel proof below checks, on the reference's
own inputs, that each C kernel gives the reference's outputs bit for bit: that is what catches a drifted formula
such as tanh' = 1 - x*x. Whole-run comparisons (test_fast.py, test_population.py) are smoke tests; this file is the
contract.
"""

import pytest
import torch

from manual_backprop import MLP, fast
from manual_backprop.datasets import Dataset
from manual_backprop.losses import SquaredError, get_loss
from manual_backprop.population import POPULATION_ULPS, Population, PopulationTrainer
from manual_backprop.population.c_engine import POPULATION_C_ULPS, population_c_unsupported
from reference.proof_cases import CASE_IDS, CASES, HIDDEN, OUTPUTS, REGIMES, SIZES, case_id
from reference.update_proof import path_update, prove_population, reference_update, update_misses
from helpers import GraphWatcher, draw_targets, target_kind
from helpers import c_loop_reason

F64 = torch.float64
HAS_CUDA = torch.cuda.is_available()
LR = 0.3

def _targets(loss_fn, B: int, gen: torch.Generator) -> torch.Tensor:
    """B rows of this file's output width: one-hot classes, 0/1 for binary cross-entropy, [0, 1) otherwise."""
    return draw_targets(target_kind(loss_fn, classes="onehot", other="unit"), (B,), SIZES[-1], gen)


def _problem(hidden, output, loss_fn, regime, B, seed=0):
    """(net, x, y): a network at the regime's scale and one batch of B samples with prepared targets."""
    net = MLP(SIZES, activation=hidden, output_activation=output, bias_init="uniform", dtype=F64, seed=seed)
    for w in net.weights:
        w.mul_(REGIMES[regime])
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(B, SIZES[0], generator=gen, dtype=F64) * 2.0
    return net, x, _targets(loss_fn, B, gen)


def _reference_update(net, x, y, loss_fn):
    return reference_update(net, x, y, loss_fn, LR)


def assert_same_update(path, got: dict, ref: dict, ulps: int, scales: dict):
    """got/ref: {name: tensor}; ulps == 0 asks for bit-equality (see reference/update_proof.py for the scale)."""
    for name, miss, ok in update_misses(got, ref, scales, ulps):
        g, r = got[name], ref[name]
        assert g.shape == r.shape and g.dtype == r.dtype, f"{path}: {name} is {g.shape}/{g.dtype}, not {r.shape}/{r.dtype}"
        assert ok, (f"{path}: {name} is not bit-equal to the reference ({miss:.2f} ulps)" if ulps == 0 else
                    f"{path}: {name} differs from the reference by {miss:.1f} ulps > the bound {ulps}")


needs_c = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")


# ---------------------------------------------------------------------------------------------------- one network
@pytest.mark.parametrize("B", [1, 6])
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("path", ["fused-exact", "fused", pytest.param("c", marks=needs_c),
                                  pytest.param("epochs", marks=needs_c), pytest.param("one-update", marks=needs_c)])
def test_one_fast_update_is_the_reference_update(path, hidden, output, loss_fn, regime, B):
    """epochs: one batch-mode epoch of a Trainer through the several-epochs C call (fast/epochs.py), its kept
    gradients and its parameters; one-update: MLP.loss_and_grads' one C call (fast/one_update.py), then the step."""
    net, x, y = _problem(hidden, output, loss_fn, regime, B)
    ref, scales = _reference_update(net, x, y, loss_fn)
    got, ulps = path_update(path, net, x, y, loss_fn, LR)  # fused-exact: 0; fused: FUSED_ULPS; else C_ULPS
    assert ulps == {"fused-exact": 0, "fused": fast.FUSED_ULPS}.get(path, fast.C_ULPS)
    unseen = ({"loss"} if path == "epochs" else set()) | ({n for n in ref if n[0] == "d"} if path == "fused" else set())
    assert set(got) == set(ref) - unseen, f"{path}: compared only {sorted(got)}"  # epochs: no loss; fused: no grads
    assert_same_update(f"{path} {hidden}/{output}/{loss_fn!r} {regime} B={B}", got, ref, ulps, scales)


def test_the_saturated_regime_saturates():
    """The saturated cases really sit where f' loses digits: many sigmoid and tanh units within 1e-2 of their
    bound, some within 1e-4, and few rounded to the bound itself (where f' = 0 would prove nothing)."""
    for hidden in ("sigmoid", "tanh"):
        net, x, _ = _problem(hidden, "sigmoid", SquaredError(), "saturated", 6)
        hidden_x = torch.cat([a.flatten() for a in net.forward_cache(x).activations[1:-1]])
        distance = (1 - hidden_x.abs()) if hidden == "tanh" else torch.minimum(hidden_x, 1 - hidden_x)
        assert (distance < 1e-2).double().mean() > 0.4, f"{hidden}: too few units near saturation"
        assert (distance < 1e-4).double().mean() > 0.1, f"{hidden}: too few deeply saturated units"
        assert (distance == 0).double().mean() < 0.1, f"{hidden}: too many units rounded to the bound"


# ---------------------------------------------------------------------------------------------------- C kernels
def _rows(t: torch.Tensor):
    return [t[i] for i in range(t.shape[0])]


def _ptr(t: torch.Tensor) -> int:
    assert t.is_contiguous()
    return t.data_ptr()


ACTIVATIONS = ["sigmoid", "tanh", "relu", "leaky_relu:0.1", "identity", "softmax"]


@needs_c
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_each_c_activation_kernel_is_its_class_formula(name, dtype):
    """On the reference's own inputs: C's activation_backward is Activation.backward bit for bit (this is where a
    drifted f' such as tanh' = 1 - x*x shows, at saturation above all; softmax within the rounding of its row sum);
    activation_forward agrees with torch's f within 2 ulps of each output (libm and torch's vectorised exp and tanh
    are each correct to about an ulp)."""
    from manual_backprop.activations import get_activation
    from manual_backprop.fast.c_loop import c_function
    from manual_backprop.fast.csource import ACT_CODES

    f = get_activation(name)
    code, slope = ACT_CODES[type(f)], getattr(f, "negative_slope", 0.0)
    gen = torch.Generator().manual_seed(1)
    z = torch.cat([torch.randn(40, 5, generator=gen, dtype=F64), 12 * torch.randn(40, 5, generator=gen, dtype=F64),
                   torch.tensor([[0.0, -0.0, 30.0, -30.0, 1e-300]], dtype=F64)]).to(dtype)  # ordinary, saturated
    x = f.forward(z)
    g = torch.randn(z.shape, generator=gen, dtype=F64).to(dtype)
    expected = f.backward(x, g)
    got = g.clone()
    for xr, gr in zip(_rows(x), _rows(got)):
        c_function("activation_backward", dtype)(code, slope, _ptr(xr), _ptr(gr), xr.numel())
    if name == "softmax":  # x (g - sum g x): the row's sum is the one place where the order of a sum enters
        bound = 4 * torch.finfo(dtype).eps * x * (g * x).abs().sum(dim=-1, keepdim=True)
        assert ((got - expected).abs() <= bound).all(), "softmax backward differs beyond its row sum's rounding"
    else:
        assert torch.equal(got, expected), \
            f"{name} backward: {int((got != expected).sum())} of {got.numel()} entries differ from Activation.backward"
    got = z.clone()
    for zr in _rows(got):
        c_function("activation_forward", dtype)(code, slope, _ptr(zr), zr.numel())
    spacing = torch.finfo(dtype).eps * x.abs().clamp_min(torch.finfo(dtype).tiny)
    worst = ((got - x).abs() / spacing).max().item()
    if name in ("relu", "leaky_relu:0.1", "identity"):
        assert torch.equal(got, x), f"{name} forward differs from Activation.forward"
    else:
        assert worst <= 2, f"{name} forward differs from Activation.forward by {worst:.1f} ulps > 2"


@needs_c
@pytest.mark.parametrize("output,loss_fn", OUTPUTS, ids=[f"{o}-{l.name}-{l.reduction}" for o, l in OUTPUTS])
def test_each_c_output_delta_kernel_is_its_class_formula(output, loss_fn):
    """On the reference's own z, x and y, C's output_delta writes Loss.output_delta bit for bit; its loss agrees
    within 4 ulps (the C loop sums the row's terms in its own order)."""
    from manual_backprop.activations import get_activation
    from manual_backprop.fast.c_loop import c_function
    from manual_backprop.fast.csource import ACT_CODES, LOSS_CODES

    f = get_activation(output)
    gen = torch.Generator().manual_seed(2)
    B = 8
    z = torch.cat([torch.randn(B // 2, 3, generator=gen, dtype=F64), 12 * torch.randn(B // 2, 3, generator=gen,
                                                                                      dtype=F64)])
    x, y = f.forward(z), _targets(loss_fn, B, gen)
    expected_delta = loss_fn.output_delta(z, x, y, f)
    expected_loss = loss_fn.value(z, x, y)
    c = loss_fn.scale(B, 3)
    d = torch.empty_like(z)
    acc = sum(c_function("output_delta", F64)(LOSS_CODES[type(loss_fn)], ACT_CODES[type(f)], 0.0, _ptr(zr),
                                              _ptr(xr), _ptr(yr), _ptr(dr), 3, c)
              for zr, xr, yr, dr in zip(_rows(z), _rows(x), _rows(y), _rows(d)))
    assert torch.equal(d, expected_delta), f"{output}/{loss_fn!r}: the output delta differs from Loss.output_delta"
    miss = abs(acc * c - expected_loss.item()) / (torch.finfo(F64).eps * abs(expected_loss.item()))
    assert miss <= 4, f"{output}/{loss_fn!r}: loss {acc * c} vs {expected_loss.item()}, {miss:.1f} ulps"


@needs_c
@pytest.mark.parametrize("name", HIDDEN)
def test_c_hidden_delta_kernel_is_network_hidden_delta(name):
    """With one unit above (no sum to reorder), C's hidden_delta is network.hidden_delta bit for bit."""
    from manual_backprop.activations import get_activation
    from manual_backprop.fast.c_loop import c_function
    from manual_backprop.fast.csource import ACT_CODES
    from manual_backprop.network import hidden_delta

    f = get_activation(name)
    gen = torch.Generator().manual_seed(3)
    x = f.forward(8 * torch.randn(6, 5, generator=gen, dtype=F64))
    above, W = torch.randn(6, 1, generator=gen, dtype=F64), torch.randn(1, 5, generator=gen, dtype=F64)
    expected = hidden_delta(f, x, above, W)
    got = torch.empty_like(x)
    for xr, ar, dr in zip(_rows(x), _rows(above), _rows(got)):
        c_function("hidden_delta", F64)(ACT_CODES[type(f)], getattr(f, "negative_slope", 0.0), _ptr(W), _ptr(ar),
                                       _ptr(xr), _ptr(dr), 5, 1)
    assert torch.equal(got, expected), f"{name}: C hidden_delta differs from network.hidden_delta"


# ---------------------------------------------------------------------------------------------------- populations
def _population(hidden, output, regime, K=3):
    pop = Population(SIZES, activation=hidden, output_activation=output, bias_init="uniform", dtype=F64,
                     seeds=list(range(K)))
    for w in pop.weights:
        w.mul_(REGIMES[regime])
    return pop


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("engine", ["api", "eager"])
def test_one_population_update_is_each_members_reference_update(engine, hidden, output, loss_fn, regime):
    _check_population_engine(engine, hidden, output, loss_fn, regime)


# torch.compile takes seconds per graph: the compiled engine is proven on one case per output and loss (every loss,
# every output activation, each hidden activation at least once), not on the whole product.
COMPILED_CASES = [(HIDDEN[i % len(HIDDEN)], o, l) for i, (o, l) in enumerate(OUTPUTS)]


@pytest.mark.parametrize("hidden,output,loss_fn", COMPILED_CASES,
                         ids=[case_id(*c) for c in COMPILED_CASES])
def test_one_compiled_population_update_is_each_members_reference_update(hidden, output, loss_fn):
    _check_population_engine("compiled", hidden, output, loss_fn, "saturated", ordinary_members=True)


def _check_population_engine(engine, hidden, output, loss_fn, regime, ordinary_members=False, device="cpu", B=6,
                             K=3):
    pop = _population(hidden, output, regime, K)
    if ordinary_members:  # member 0 at the ordinary scale beside saturated ones: both regimes in one compile
        for w in pop.weights:
            w[0].div_(REGIMES[regime])
    pop = pop if device == "cpu" else _to(pop, device)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(B, SIZES[0], generator=gen, dtype=F64) * 2.0
    y = _targets(loss_fn, B, gen)
    xd, yd = x.to(pop.device), y.to(pop.device)
    # The reference runs on the population's own device: a CUDA engine is held to network.py on CUDA, since the
    # devices' f and products round differently (the cross-device bound is tests/proof/test_cuda_paths.py's).
    bound, members = prove_population(engine, pop, xd, yd, loss_fn, LR)
    assert bound == (POPULATION_C_ULPS if engine == "c" else POPULATION_ULPS) and len(members) == pop.size
    for i, rows in enumerate(members):
        names = {name for name, _, _ in rows}
        assert {"loss", "param[0]"} <= names and (engine != "api" or "dW[0]" in names), f"member {i}: {names}"
        bad = [(name, round(miss, 2)) for name, miss, ok in rows if not ok]
        assert not bad, f"population {engine} member {i} {hidden}/{output}/{loss_fn!r} {regime}: beyond {bound} " \
                        f"ulps of the reference: {bad}"


def _pop_c_reason():
    return population_c_unsupported(Population([2, 2, 1], seeds=[0], dtype=F64), SquaredError(), "online", False,
                                    None, 1)


# The population's C engine takes element-wise outputs under squared error and binary cross-entropy: this file's
# outputs that it takes, and two more (a leaky output, binary cross-entropy summed).
POP_C_OUTPUTS = [(o, lf) for o, lf in OUTPUTS if o != "softmax"] + [
    ("leaky_relu:0.2", SquaredError()), ("sigmoid", get_loss("binary_cross_entropy", reduction="sum"))]
POP_C_CASES = [(h, o, lf) for h in HIDDEN for o, lf in POP_C_OUTPUTS]


@pytest.mark.skipif(_pop_c_reason() is not None, reason=f"the population C engine cannot run here: {_pop_c_reason()}")
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", POP_C_CASES,
                         ids=[case_id(*c) for c in POP_C_CASES])
def test_one_population_c_engine_update_is_each_members_reference_update(hidden, output, loss_fn, regime):
    """Online learning on one sample: one epoch is one update; five members with their own parameters."""
    _check_population_engine("c", hidden, output, loss_fn, regime, B=1, K=5)


def _to(pop, device):
    pop.weights = [w.to(device) for w in pop.weights]
    pop.biases = [b.to(device) for b in pop.biases]
    pop.device = torch.device(device)
    return pop


# ---------------------------------------------------------------------------------------------------- CUDA
cuda = pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("hidden,output,loss_fn", CASES, ids=CASE_IDS)
def test_one_cuda_graph_update_is_the_reference_update(hidden, output, loss_fn, regime):
    torch.backends.cuda.matmul.allow_tf32 = False
    net, x, y = _problem(hidden, output, loss_fn, regime, 2)
    net.to("cuda")
    xd, yd = x.to("cuda"), y.to("cuda")
    ref, scales = _reference_update(net, xd, yd, loss_fn)
    got, bound = path_update("cuda_graph", net, xd, yd, loss_fn, LR)  # raises unless through one captured graph
    assert bound == 0 and set(got) == set(ref)
    assert_same_update(f"cuda_graph {hidden}/{output}/{loss_fn!r} {regime}", got, ref, 0, scales)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("engine", ["eager", "cuda_graph", "compiled"])
def test_one_cuda_population_update_is_each_members_reference_update(engine):
    torch.backends.cuda.matmul.allow_tf32 = False
    for hidden, output, loss_fn in (CASES[1], CASES[13]):
        _check_population_engine(engine, hidden, output, loss_fn, "saturated", ordinary_members=True, device="cuda")


# ---------------------------------------------------------------------------------------------------- autograd off
@pytest.mark.parametrize("path", ["fused", pytest.param("c", marks=needs_c), "population-eager",
                                  "population-compiled"])
def test_fast_paths_build_no_autograd_graph(path):
    """Grad mode on, inputs that require grad: no op of a fast update or a population epoch builds a graph."""
    hidden, output, loss_fn = "tanh", "softmax", get_loss("cross_entropy")
    net, x, y = _problem(hidden, output, loss_fn, "ordinary", 6)
    x.requires_grad_(True)
    y.requires_grad_(True)
    watcher, saved = GraphWatcher(), []
    with torch.enable_grad(), watcher, \
            torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        if path in ("fused", "c"):  # ctypes needs plain storage: the C loop gets detached data
            got, _ = path_update("fused-exact" if path == "fused" else "c", net,
                                 x if path == "fused" else x.detach(), y if path == "fused" else y.detach(),
                                 loss_fn, LR)
            params = [v for k, v in got.items() if k != "loss"]
        else:
            pop = _population(hidden, output, "ordinary")
            labels = y.argmax(dim=1)
            data = Dataset("one-batch", x, labels, x, labels, SIZES[-1])
            PopulationTrainer(pop, data, mode="batch", lr=LR, epochs=1, loss_fn=loss_fn,
                              engine=path.split("-")[1]).run()
            params = pop.parameters()
    assert watcher.graph_ops == [], f"{path}: ops that built autograd graph nodes: {sorted(set(watcher.graph_ops))}"
    assert saved == [], f"{path}: autograd saved tensors for a backward pass"
    assert all(not p.requires_grad and p.grad_fn is None for p in params)


def test_prove_paths_reports_every_path_that_runs_here_and_each_passes():
    """What `manual-backprop check --paths all` runs on the user's machine: every path of this device, each ok."""
    from reference.update_proof import paths_for, prove_paths

    loss_fn = get_loss("cross_entropy")
    net, x, y = _problem("tanh", "softmax", loss_fn, "saturated", 6)
    paths = paths_for(torch.device("cpu"), compiled=False)
    assert {"fused-exact", "fused", "population-api", "population-eager"} <= set(paths)
    if c_loop_reason() is None:
        assert {"c", "epochs"} <= set(paths)
    if _pop_c_reason() is None:
        assert "population-c" in paths
    results = prove_paths(net, x, y, loss_fn, LR, paths)
    assert [r[0] for r in results] == paths
    for path, bound, rows in results:
        if path == "population-c":  # softmax outputs are not the C engine's: said, with the reason
            assert bound is None and "softmax" in rows
            continue
        assert rows and all(ok for _, _, ok in rows), f"{path}: {[(n, u) for n, u, ok in rows if not ok]}"
    if _pop_c_reason() is None:  # the C engine on a case it takes: its one update is the batch's first sample's
        net, x, y = _problem("tanh", "sigmoid", SquaredError(), "saturated", 6)
        [(path, bound, rows)] = prove_paths(net, x, y, SquaredError(), LR, ["population-c"])
        assert bound == POPULATION_C_ULPS and rows and all(ok for _, _, ok in rows), rows
