"""Population training: member i of a lockstep population is the single network trained alone with member i's seed,
learning rate and sample order, in every mode; its deltas and gradients are the autograd twin's; a diverging member
is frozen without stopping the others. (Its TensorBoard runs, the sweep and the benchmark: test_population_tools.py.)

Tolerances. Against the autograd twin: the project's float64 bound, 1e-10 norm-relative. Against the single manual
network: 1e-12 norm-relative, not bit equality, because ATen picks its kernels by tensor size: on a (K, B, n)
tensor sigmoid's exp runs in the vectorized (SLEEF) loop while a small (B, n) tensor goes through the scalar
std::exp tail, and a (B, n) x (n, m) product goes to the BLAS gemm while the batched one takes bmm's small-matrix
loop. The two roundings differ in the last bit on some entries. Along a calm trajectory that stays tiny (1.4e-14
after 800 online updates), but escaping a plateau amplifies it (4e-11 after 150 batch epochs at lr 8), so whole
runs are compared epoch by epoch from the same state (run_both): each comparison measures one epoch's rounding,
and every stop (target reached, divergence) must fall at the same epoch and update.
"""

import math
import shutil

import pytest
import torch

from conftest import HAS_CUDA, assert_grads_agree, assert_tensors_agree
from helpers import draw_targets, target_kind
from manual_backprop import MLP, Gradients, get_loss
from manual_backprop.datasets import Dataset, load_dataset
from manual_backprop.modes import EpochOrders
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.training import Trainer
from reference import TorchMLP

F64 = torch.float64
SINGLE = 1e-12  # population vs the single manual network (see the module docstring)
CROSS_DEVICE = 1e-10  # a CUDA run vs the same run on the CPU: tanh, exp and products round differently there


def member_grads(grads: Gradients, i: int) -> Gradients:
    return Gradients(weights=[g[i] for g in grads.weights], biases=[g[i] for g in grads.biases],
                     deltas=[d[i] for d in grads.deltas])


def assert_member_is_single(pop: Population, i: int, net: MLP, *, rel: float = SINGLE, what: str = ""):
    for key, value in net.state_dict().items():
        assert_tensors_agree(f"{what}member {i} {key}", pop.member(i).state_dict()[key], value, rel=rel)


# ---------------------------------------------------------------------------------------------------- construction
def test_member_starts_as_the_single_network_with_its_seed():
    seeds = [0, 5, 123, 5]
    kwargs = dict(activation="tanh", output_activation="softmax", init="he_normal", bias_init="uniform",
                  init_scale=0.3)
    for dtype in (F64, torch.float32):
        pop = Population([3, 4, 2], seeds=seeds, dtype=dtype, **kwargs)
        assert [tuple(w.shape) for w in pop.weights] == [(4, 4, 3), (4, 2, 4)]
        assert [tuple(b.shape) for b in pop.biases] == [(4, 4), (4, 2)]
        for i, seed in enumerate(seeds):
            net = MLP([3, 4, 2], seed=seed, dtype=dtype, **kwargs)
            for k in range(2):  # the same draws, stacked: bit for bit
                assert torch.equal(pop.weights[k][i], net.weights[k]), f"member {i} W[{k}] ({dtype})"
                assert torch.equal(pop.biases[k][i], net.biases[k]), f"member {i} b[{k}] ({dtype})"
            member = pop.member(i)
            assert member.spec() == net.spec()
            assert all(torch.equal(member.state_dict()[key], v) for key, v in net.state_dict().items())


def test_member_is_an_independent_copy():
    pop = Population([2, 2, 1], seeds=[1, 2], dtype=F64)
    net = pop.member(1)
    net.weights[0].add_(1.0)
    assert not torch.equal(net.weights[0], pop.weights[0][1])


# ---------------------------------------------------------------------------------------------------- one step
CASES = {
    "xor-sigmoid-se": ([2, 3, 1], "sigmoid", "sigmoid", "squared_error"),
    "tanh-softmax-ce": ([4, 6, 3], "tanh", "softmax", "cross_entropy"),
    "relu-deep-bce": ([3, 5, 4, 2], "relu", "sigmoid", "binary_cross_entropy"),
    "leaky-identity-sse-half": ([3, 4, 2], "leaky_relu:0.1", "identity", get_loss("squared_error", reduction="sum",
                                                                                     half=True)),
}


def make_batch(sizes, loss, K, B, shared, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = (B,) if shared else (K, B)
    x = torch.randn(*lead, sizes[0], generator=g, dtype=F64)
    y = draw_targets(target_kind(get_loss(loss)), lead, sizes[-1], g)
    return x.to(device), y.to(device)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-batch", "own-batch"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_member_deltas_and_grads_match_autograd_twin(case, batch, shared, device):
    sizes, hidden, output, loss = case
    K = 3
    pop = Population(sizes, activation=hidden, output_activation=output, bias_init="uniform", seeds=[3, 1, 4],
                     dtype=F64, device=device)
    x, y = make_batch(sizes, loss, K, batch, shared, device)
    losses, grads = pop.loss_and_grads(x, y, loss)
    assert losses.shape == (K,)
    assert [tuple(d.shape) for d in grads.deltas] == [(K, batch, n) for n in sizes[1:]]
    for i in range(K):
        xi, yi = (x, y) if shared else (x[i], y[i])
        loss_a, grads_a = TorchMLP.from_manual(pop.member(i)).loss_and_grads(xi, yi, loss)
        assert_tensors_agree(f"member {i} loss", losses[i].reshape(1), loss_a.reshape(1))
        assert_grads_agree(member_grads(grads, i), grads_a)
        loss_s, grads_s = pop.member(i).loss_and_grads(xi, yi, loss)
        assert_tensors_agree(f"member {i} loss vs single", losses[i].reshape(1), loss_s.reshape(1), rel=SINGLE)
        assert_grads_agree(member_grads(grads, i), grads_s, rel=SINGLE)


def test_step_moves_each_member_by_its_own_learning_rate():
    pop = Population([2, 3, 1], seeds=[0, 1, 2], bias_init="uniform", dtype=F64)
    singles = pop.members()
    x, y = make_batch([2, 3, 1], "squared_error", 3, 4, False, "cpu")
    _, grads = pop.loss_and_grads(x, y, "squared_error")
    lrs = [0.1, 0.5, 2.0]
    pop.step(grads, torch.tensor(lrs, dtype=F64))
    for i, (net, lr) in enumerate(zip(singles, lrs)):
        net.step(member_grads(grads, i), lr)
        assert_member_is_single(pop, i, net, rel=1e-15)


def test_population_math_builds_no_graph():
    """Autograd stays off: with grad mode on and inputs that require grad, nothing records a graph."""
    pop = Population([2, 3, 1], seeds=[0, 1], dtype=F64)
    x = torch.rand(2, 4, 2, dtype=F64, requires_grad=True)
    y = torch.rand(2, 4, 1, dtype=F64)
    data = load_dataset("xor", dtype=F64)
    with torch.enable_grad():
        losses, grads = pop.loss_and_grads(x, y, "squared_error")
        pop.step(grads, 0.5)
        PopulationTrainer(pop, data, mode="online", lr=0.5, epochs=2).run()
    tensors = [losses, *grads.weights, *grads.biases, *grads.deltas, *pop.weights, *pop.biases]
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)


# ---------------------------------------------------------------------------------------------------- sample orders
def trainer_orders(n, b, replacement, seed, epochs):
    mode = "online" if b == 1 else "minibatch"
    data = Dataset("d", torch.zeros(n, 1), torch.zeros(n, dtype=torch.int64), torch.zeros(1, 1),
                   torch.zeros(1, dtype=torch.int64), num_classes=2)
    trainer = Trainer(MLP([1, 2], seed=0), data, mode=mode, lr=0.1, epochs=1, seed=seed,
                      batch_size=b if mode == "minibatch" else None, replacement=replacement)
    return torch.stack([torch.cat(trainer.batches()) for _ in range(epochs)])


@pytest.mark.parametrize("n,b,replacement", [(4, 1, False), (4, 3, False), (30, 8, False), (30, 8, True),
                                             (7, 7, False), (1, 1, False), (600, 1, False), (600, 64, True)])
def test_sample_orders_are_the_trainers(n, b, replacement):
    """Bulk draws replaying randperm (n <= 512), randperm itself (n > 512), randint rows with replacement."""
    seeds = [0, 7, 12345]
    orders = EpochOrders(seeds, n, b, replacement=replacement, block_draws=64)
    got = torch.cat([orders.epochs(2), orders.epochs(1), orders.epochs(5)])  # refills straddle epochs
    for i, seed in enumerate(seeds):
        assert torch.equal(got[:, i], trainer_orders(n, b, replacement, seed, 8)), f"member {i} (seed {seed})"


# ---------------------------------------------------------------------------------------------------- whole runs
def run_both(data, sizes, hidden, output, loss, mode, lrs, epochs, *, batch_size=None, replacement=False,
             target_loss=None, device="cpu"):
    """Train a population and, beside it, each member alone with a Trainer, one epoch at a time.

    Every epoch both sides are compared (1e-12), then the single network is set to the member's parameters, so
    that each comparison measures one epoch's rounding and not its amplification by the trajectory (escaping a
    plateau amplifies a 1e-16 difference by 1e5 and more: 4e-11 after 150 batch epochs at lr 8, unforced).
    The stop reasons and epochs of the whole runs must agree exactly.
    """
    seeds = [11, 3, 5, 8][:len(lrs)]
    order_seeds = [100, 0, 42, 7][:len(lrs)]
    kwargs = dict(activation=hidden, output_activation=output, bias_init="uniform", dtype=F64, device=device)
    pop = Population(sizes, seeds=seeds, **kwargs)
    trainer = PopulationTrainer(pop, data, mode=mode, lr=lrs, epochs=1, batch_size=batch_size, loss_fn=loss,
                                replacement=replacement, target_loss=target_loss, order_seeds=order_seeds)
    singles = []
    for i in range(len(lrs)):
        net = MLP(sizes, seed=seeds[i], **kwargs)
        singles.append((net, Trainer(net, data, mode=mode, lr=lrs[i], epochs=1, batch_size=batch_size,
                                     loss_fn=loss, replacement=replacement, target_loss=target_loss,
                                     seed=order_seeds[i], fast=False)))  # the plain reference, as the population
    for epoch in range(1, epochs + 1):
        trainer.epochs = epoch
        history = trainer.run()
        for i, (net, single) in enumerate(singles):
            if single.history.stop_reason in ("target_loss", "diverged"):
                continue  # stopped: the member is frozen, and compared below
            single.epochs, single.history.stop_reason = epoch, ""  # continue the single run by one epoch
            single.run()
            assert_member_is_single(pop, i, net, what=f"epoch {epoch}: ")
            net.load_state_dict(pop.member(i).state_dict())
    return pop, history, [(net, single.history) for net, single in singles]


def assert_same_runs(pop, history, singles):
    for i, (net, h) in enumerate(singles):
        m = history.member(i)
        assert (m.stop_reason, m.epoch, m.updates) == (h.stop_reason, h.epoch, h.updates), f"member {i}"
        for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
            a, b = getattr(m, name), getattr(h, name)
            if b[0] is None:
                assert all(v is None for v in a)
            else:
                assert_tensors_agree(f"member {i} {name}", torch.tensor(a, dtype=F64), torch.tensor(b, dtype=F64),
                                     rel=SINGLE)
        assert_member_is_single(pop, i, net, what="final ")


XOR_MODES = {  # each target is reached by some members within the epochs, and not by others
    "batch": dict(mode="batch", target_loss=0.04),
    "online": dict(mode="online", target_loss=0.04),
    "minibatch-partial": dict(mode="minibatch", batch_size=3, target_loss=0.2),  # batches of 3 and 1
    "minibatch-replacement": dict(mode="minibatch", batch_size=2, replacement=True, target_loss=0.2),
}


@pytest.mark.parametrize("setting", XOR_MODES.values(), ids=XOR_MODES.keys())
def test_member_ends_as_the_single_trainer_run_on_xor(setting):
    """Four members with their own seeds, learning rates and orders; some reach the target and freeze there."""
    data = load_dataset("xor", dtype=F64)
    pop, history, singles = run_both(data, [2, 3, 1], "sigmoid", "sigmoid", "squared_error",
                                     lrs=[0.5, 2.0, 4.0, 8.0], epochs=150, **setting)
    assert "target_loss" in history.stop_reason and "max_epochs" in history.stop_reason
    assert_same_runs(pop, history, singles)


@pytest.mark.parametrize("mode,batch_size", [("online", None), ("minibatch", 8), ("batch", None)])
def test_member_ends_as_the_single_trainer_run_on_moons_with_softmax(mode, batch_size):
    data = load_dataset("moons", n_samples=40, seed=1, dtype=F64)  # 30 training samples, a separate test split
    pop, history, singles = run_both(data, [2, 5, 2], "tanh", "softmax", "cross_entropy", mode,
                                     [0.05, 0.2, 0.5], 6, batch_size=batch_size)
    assert_same_runs(pop, history, singles)


def test_diverging_members_are_frozen_and_marked_while_the_others_go_on():
    """tanh / identity output: lr 3 diverges at an end-of-epoch evaluation, lr 10 at an update; the others go on."""
    data = load_dataset("xor", dtype=F64)
    lrs = [0.05, 3.0, 0.1, 10.0]
    pop, history, singles = run_both(data, [2, 3, 1], "tanh", "identity", "squared_error", "online", lrs, 60)
    assert history.diverged() == [False, True, False, True]
    assert history.stop_reason == ["max_epochs", "diverged", "max_epochs", "diverged"]
    for i in (1, 3):
        assert history.message[i] == singles[i][1].message  # the same epoch, update and restored state
    assert history.diverged_update[3] is not None and history.diverged_update[1] is None
    assert_same_runs(pop, history, singles)
    assert all(math.isfinite(v) for v in history.train_loss[-1].tolist())  # restored members carry finite figures


def test_run_continues_when_epochs_are_raised():
    data = load_dataset("xor", dtype=F64)
    pop = Population([2, 2, 1], seeds=[0, 1], dtype=F64)
    trainer = PopulationTrainer(pop, data, mode="online", lr=[1.0, 2.0], epochs=5)
    trainer.run()
    trainer.epochs = 12
    history = trainer.run()
    whole = Population([2, 2, 1], seeds=[0, 1], dtype=F64)
    PopulationTrainer(whole, data, mode="online", lr=[1.0, 2.0], epochs=12).run()
    assert history.epoch == list(range(13)) and history.stop_reason == ["max_epochs"] * 2
    for a, b in zip(pop.parameters(), whole.parameters()):
        assert torch.equal(a, b)


def test_float32_population_follows_float32_single_runs():
    data = load_dataset("xor", dtype=torch.float32)
    pop = Population([2, 3, 1], seeds=[0, 1, 2], dtype=torch.float32)
    PopulationTrainer(pop, data, mode="minibatch", batch_size=2, lr=[0.5, 1.0, 2.0], epochs=20).run()
    for i, lr in enumerate([0.5, 1.0, 2.0]):
        net = MLP([2, 3, 1], seed=pop.seeds[i], dtype=torch.float32)
        Trainer(net, data, mode="minibatch", batch_size=2, lr=lr, epochs=20, seed=pop.seeds[i], fast=False).run()
        for key, value in net.state_dict().items():
            torch.testing.assert_close(pop.member(i).state_dict()[key], value)


# ---------------------------------------------------------------------------------------------------- engines
@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="CUDA is not available")
@pytest.mark.parametrize("engine", ["eager", "cuda_graph"])
def test_cuda_population_matches_cpu_population(engine):
    torch.backends.cuda.matmul.allow_tf32 = False
    data = load_dataset("xor", dtype=F64)
    runs = {}
    for run, device, eng in (("cpu", "cpu", "eager"), ("cuda-eager", "cuda", "eager"), ("cuda", "cuda", engine)):
        pop = Population([2, 3, 1], seeds=[0, 1, 2, 3], dtype=F64, device=device)
        h = PopulationTrainer(pop, data, mode="online", lr=[0.5, 1.0, 2.0, 4.0], epochs=30, target_loss=0.05,
                              engine=eng).run()
        runs[run] = (pop, h)
    (cpu, hc), (ref, hr), (gpu, hg) = runs["cpu"], runs["cuda-eager"], runs["cuda"]
    assert hr.stop_reason == hg.stop_reason and hr.last_epoch == hg.last_epoch
    for k, (a, b) in enumerate(zip(ref.parameters(), gpu.parameters())):  # held to the eager run on its device
        assert_tensors_agree(f"parameter {k}", b.cpu(), a.cpu(), rel=SINGLE)
    # across devices the f and the products round differently: a separate, stated bound (test_cuda_paths.py)
    assert hc.stop_reason == hg.stop_reason and hc.last_epoch == hg.last_epoch
    for k, (a, b) in enumerate(zip(cpu.parameters(), gpu.parameters())):
        assert_tensors_agree(f"parameter {k} (CUDA vs CPU)", b.cpu(), a, rel=CROSS_DEVICE)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
def test_compiled_engine_gives_the_eager_numbers():
    """torch.compile fuses each epoch (members last, broadcast products instead of bmm): every epoch, from the same
    state, it gives the eager engine's parameters, figures and stops (forced epoch by epoch, as in run_both)."""
    data = load_dataset("xor", dtype=F64)
    lrs = [0.5, 2.0, 4.0, 8.0]
    pops = {e: Population([2, 2, 1], seeds=[0, 1, 2, 3], dtype=F64) for e in ("eager", "compiled")}
    trainers = {e: PopulationTrainer(pop, data, mode="online", lr=lrs, epochs=1, target_loss=0.2, engine=e)
                for e, pop in pops.items()}
    for epoch in range(1, 41):
        for trainer in trainers.values():
            trainer.epochs = epoch
            trainer.run()
        (pe, he), (pc, hc) = [(pops[e], trainers[e].history) for e in ("eager", "compiled")]
        assert he.stop_reason == hc.stop_reason and he.last_epoch == hc.last_epoch, f"epoch {epoch}"
        assert_tensors_agree(f"epoch {epoch} train loss", hc.train_loss[-1], he.train_loss[-1], rel=SINGLE)
        for k, (a, b) in enumerate(zip(pe.parameters(), pc.parameters())):
            assert_tensors_agree(f"epoch {epoch} parameter {k}", b, a, rel=SINGLE)
            b.copy_(a)
    assert "target_loss" in hc.stop_reason


# ---------------------------------------------------------------------------------------------------- bad input
def test_bad_arguments_say_what_must_hold():
    data = load_dataset("xor", dtype=F64)
    with pytest.raises(ValueError, match="at least one seed"):
        Population([2, 2, 1], seeds=[])
    with pytest.raises(ValueError, match=r"seeds\[1\] must be an int in \[0, 2\*\*63 - 1\], but got -1"):
        Population([2, 2, 1], seeds=[0, -1])
    with pytest.raises(ValueError, match=r"seeds\[0\] must be an int in \[0, 2\*\*63 - 1\], but got 2361"):
        Population([2, 2, 1], seeds=[2 ** 71])  # torch's generator takes 64 bits
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=F64)
    with pytest.raises(ValueError, match="one per member"):
        PopulationTrainer(pop, data, mode="online", lr=[0.1, 0.2], epochs=1)
    with pytest.raises(ValueError, match=r"lr\[1\] must be a finite number > 0"):
        PopulationTrainer(pop, data, mode="online", lr=[0.1, -1.0, 0.2], epochs=1)
    with pytest.raises(ValueError, match="order_seeds must hold one seed per member"):
        PopulationTrainer(pop, data, mode="online", lr=0.1, epochs=1, order_seeds=[1])
    with pytest.raises(ValueError, match="cuda_graph"):
        PopulationTrainer(pop, data, mode="online", lr=0.1, epochs=1, engine="cuda_graph")
    with pytest.raises(ValueError, match="batch_size must be an int in"):
        PopulationTrainer(pop, data, mode="minibatch", lr=0.1, epochs=1, batch_size=9)
    with pytest.raises(ValueError, match=r"must have shape \(3, B, 2\)"):
        pop.forward(torch.zeros(2, 4, 2, dtype=F64))
    with pytest.raises(IndexError, match="member index"):
        pop.member(3)
