"""The proof of the population's C engine (population/c_engine.py, _csrc/population.c), a declared derivative of
network.py's functions as the population applies them.

- one update through the general kernel: tests/proof/test_update_proof.py (every activation x output x loss);
- the orders are torch.randperm's, bit for bit, and the generators are left as torch leaves them;
- the freeze and divergence rules, the History rows and the messages are the eager engine's;
- E epochs in one call are bit-equal to the same epochs one call each; a continued run equals a whole one;
- the lecture's 2-2-1 network's fused kernel (population_fused.c) makes the reference's update and is bit-equal to
  the general kernel over whole runs (stops, divergence, a partial block, a separate test split);
- the double kernel's own exp and sigmoid (division-free) keep vecmath.h's bounds against torch;
- the kernel's draws of many members' initial weights are init.py's, bit for bit.
"""

import math

import warnings

import pytest
import torch

from manual_backprop.datasets import Dataset, load_dataset
from manual_backprop.fast.common import FastPathWarning
from manual_backprop.losses import SquaredError
from manual_backprop.network import MLP
from manual_backprop.optim import SGD
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.init import initial_parameters
from manual_backprop.population.c_engine import (POPULATION_C_ULPS, kernel_math, population_c_unsupported,
                                                 replay_randperm, seeded_states)
from manual_backprop.population.c_init import _kernel_draws
from reference.update_proof import named, reference_update, update_misses

F64 = torch.float64
REGIMES = {"ordinary": 1.0, "saturated": 8.0}  # factor on the initial weights


def _c_reason():
    pop = Population([2, 2, 1], seeds=[0], dtype=F64)
    return population_c_unsupported(pop, SquaredError(), "online", False, None, 4)


pytestmark = pytest.mark.skipif(_c_reason() is not None, reason=f"the C engine cannot run here: {_c_reason()}")


# ---------------------------------------------------------------------------------------------------- one update
# Every activation x output x loss the general kernel takes: tests/proof/test_update_proof.py (the harness's
# "population-c" path). Here: the fused kernel's network, which the harness's sizes never reach.
XOR_HIDDEN = ["sigmoid", "tanh"]
XOR_LOSSES = [SquaredError(), SquaredError(reduction="sum"), SquaredError(half=True)]


@pytest.mark.parametrize("regime", list(REGIMES))
@pytest.mark.parametrize("loss_fn", XOR_LOSSES, ids=["mean", "sum", "half"])
@pytest.mark.parametrize("hidden", XOR_HIDDEN)
def test_one_fused_kernel_update_is_each_members_reference_update(hidden, loss_fn, regime):
    """The 2-2-1 network with a sigmoid output under squared error runs population_fused.c's kernel."""
    pop = Population([2, 2, 1], seeds=list(range(37)), activation=hidden, bias_init="uniform", dtype=F64)
    for w in pop.weights:
        w.mul_(REGIMES[regime])
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(1, 2, generator=gen, dtype=F64) * 2.0, torch.rand(1, 1, generator=gen, dtype=F64)
    lrs = [0.1 * (1 + i % 5) for i in range(pop.size)]
    updates = [reference_update(pop.member(i), x, y, loss_fn, lrs[i]) for i in range(pop.size)]
    trainer = PopulationTrainer(pop, Dataset("one-sample", x, y, x, y, None), mode="online", lr=lrs, epochs=1,
                                loss_fn=loss_fn)
    assert trainer.engine == "c" and trainer._c_kernel.fused
    trainer.run()
    for i, (ref, scales) in enumerate(updates):
        got = named(trainer.history.train_loss[0][i], None, [p[i] for p in pop.parameters()])
        for name, miss, ok in update_misses(got, ref, scales, POPULATION_C_ULPS):
            assert ok, f"member {i} {regime}: {name} differs by {miss:.1f} ulps > {POPULATION_C_ULPS}"


def _fused_and_general(hidden, data, K, epochs, lrs, poisoned=(), **kwargs):
    """The same run through both kernels; a poisoned member's first hidden unit has bias -inf and output weight
    inf: inf * 0 is its output's net at once, and it diverges in the first epoch (sigmoid outputs never do)."""
    runs = {}
    for general in (False, True):
        pop = Population([2, 2, 1], seeds=list(range(K)), activation=hidden, dtype=F64)
        for i in poisoned:
            pop.biases[0][i, 0], pop.weights[1][i, 0, 0] = -math.inf, math.inf
        trainer = PopulationTrainer(pop, data, mode="online", lr=lrs, epochs=epochs, loss_fn="squared_error",
                                    order_seeds=[500 + i for i in range(K)], **kwargs)
        trainer._c_kernel.general = general
        assert trainer._c_kernel.fused != general
        runs[general] = (pop, trainer.run(), trainer)
    return runs[False], runs[True]


@pytest.mark.parametrize("hidden", XOR_HIDDEN)
def test_fused_kernel_is_bit_equal_to_the_general_kernel(hidden):
    """XOR, 45 members (a partial block of 13): some reach the target, two diverge, the rest run out; 250 epochs draw
    750 words, past a refill of mt19937's 624."""
    K = 45
    lrs = [[0.5, 2.0, 4.0, 8.0][i % 4] for i in range(K)]
    (pa, ha, ta), (pb, hb, tb) = _fused_and_general(hidden, load_dataset("xor", dtype=F64), K, 250, lrs,
                                                    poisoned=(5, 40), target_loss=0.05, epochs_per_draw=50)
    assert ha.diverged()[5] and ha.diverged()[40] and "target_loss" in ha.stop_reason
    assert "max_epochs" in ha.stop_reason
    _assert_same_histories(ha, hb, rel=0)
    assert all(torch.equal(a, b) for a, b in zip(pa.parameters(), pb.parameters()))
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(ta.orders.generators, tb.orders.generators))


def test_fused_kernel_is_bit_equal_to_the_general_kernel_on_a_separate_test_split():
    """30 training samples (29 draws an epoch, past a refill), a separate test split; 70 samples: the orders
    shuffled as rows."""
    for n_samples, epochs in ((40, 30), (94, 4)):
        data = load_dataset("moons", n_samples=n_samples, seed=1, dtype=F64)
        (pa, ha, ta), (pb, hb, tb) = _fused_and_general("tanh", data, 6, epochs, [0.05, 0.2, 0.5, 1.0, 2.0, 4.0])
        assert ha.train_accuracy[1] is not None and not torch.equal(ha.train_loss[-1], ha.test_loss[-1])
        _assert_same_histories(ha, hb, rel=0)
        assert all(torch.equal(a, b) for a, b in zip(pa.parameters(), pb.parameters()))
        assert all(torch.equal(a.get_state(), b.get_state())
                   for a, b in zip(ta.orders.generators, tb.orders.generators))


# ---------------------------------------------------------------------------------------------------- exp, sigmoid
KERNEL_MATH_ULPS = {"exp": 1, "sigmoid": 4}  # vecmath.h's bounds (tests/proof/test_vecmath.py's VECMATH_ULPS)


def _ulps(got, ref):
    spacing = torch.nextafter(ref.abs(), torch.full_like(ref, math.inf)) - ref.abs()
    same = (got == ref) | (got.isnan() & ref.isnan())
    return torch.where(same, torch.zeros_like(ref), (got - ref).abs() / spacing)


@pytest.mark.parametrize("name,reference", [("exp", torch.exp), ("sigmoid", torch.sigmoid)])
def test_kernel_exp_and_sigmoid_are_within_their_bounds_of_torch(name, reference):
    g = torch.Generator().manual_seed(0)
    spread = torch.cat([torch.randn(200_000, generator=g, dtype=F64) * s for s in (0.05, 1, 4, 30, 300)])
    edges = torch.tensor([0.0, -0.0, 1e-300, -1e-30, 0.3465, -0.3466, 19.0, 36.8, 37.0, -708.3, -708.5, 709.7,
                          709.8, -744.4, -745.1, -745.2, 1e4, -1e4, 1e300, -1e300], dtype=F64)
    x = torch.cat([spread, torch.linspace(-1, 1, 200_001, dtype=F64), torch.linspace(-745.2, -700, 20_001,
                                                                                       dtype=F64), edges])
    worst = _ulps(kernel_math(name, x), reference(x))
    assert not worst.isnan().any() and worst.max().item() <= KERNEL_MATH_ULPS[name], (
        f"{name}: {worst.max().item():.2f} ulps from torch at x = {x[worst.argmax()].item()!r}")
    special = torch.tensor([math.inf, -math.inf, math.nan, -0.0, 1e6, -1e6], dtype=F64)
    torch.testing.assert_close(kernel_math(name, special), reference(special), rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------------- orders
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 17, 100, 1000])
def test_replayed_orders_and_states_are_torch_randperms(n):
    """Enough permutations to cross mt19937's 624-word refills several times, for many seeds."""
    count = max(3, 2000 // n)
    for seed in [0, 1, 2, 41, 12345, 2 ** 31 - 1, 2 ** 40 + 3]:
        g = torch.Generator().manual_seed(seed)
        state = g.get_state().clone()
        expected = torch.stack([torch.randperm(n, generator=g) for _ in range(count)])
        got = replay_randperm(state, n, count)
        assert torch.equal(got.long(), expected), f"seed {seed}, n {n}"
        assert torch.equal(state, g.get_state()), f"seed {seed}, n {n}: the generator state after"


def test_kernel_seeded_states_are_manual_seeds():
    seeds = [0, 1, 7, 2 ** 31 - 1, 2 ** 32, 2 ** 32 + 5, 2 ** 62 + 12345, 2 ** 63 - 1] + list(range(100, 125))
    states = seeded_states(seeds)  # 33 members: two blocks of 16 lanes and one member alone
    for s, state in zip(seeds, states):
        assert torch.equal(state, torch.Generator().manual_seed(s).get_state()), f"seed {s}"


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("init", ["uniform", "xavier_uniform", "he_uniform", "torch_default", "glorot"])
def test_kernel_draws_are_init_pys(init, bias):
    """Every uniform scheme x every bias scheme it takes, seeds up to 2**63 - 1 (four blocks of 16 lanes and 11
    members), a deep network, and one whose draws pass the first twist's MT_N - MT_M words (the full twist)."""
    seeds = list(range(70)) + [2 ** 31 - 1, 2 ** 32, 2 ** 32 + 5, 2 ** 62 + 12345, 2 ** 63 - 1]
    for sizes in ([2, 2, 1], [3, 7, 4, 2], [20, 10, 2]):
        for bias_init in ("zeros", "uniform", "torch_default"):
            weights, biases = _kernel_draws(sizes, init.replace("glorot", "xavier_uniform"), bias_init, 0.7, seeds,
                                            bias)
            each = [initial_parameters(sizes, init=init, bias_init=bias_init, scale=0.7, seed=s, bias=bias)
                    for s in seeds]
            for k in range(len(sizes) - 1):
                assert torch.equal(weights[k], torch.stack([w[k] for w, _ in each])), f"{sizes} W{k} {bias_init}"
                if bias:
                    assert torch.equal(biases[k], torch.stack([b[k] for _, b in each])), f"{sizes} b{k} {bias_init}"
            assert len(biases) == (len(sizes) - 1 if bias else 0)


def test_a_large_population_starts_as_its_members_own_networks():
    """K = 100 takes the kernel's draws: each member is MLP(seed=seeds[i]), in float32 too (cast after the draw)."""
    seeds = [7 * i + 3 for i in range(100)]
    for dtype in (F64, torch.float32):
        pop = Population([2, 3, 1], seeds=seeds, activation="tanh", bias_init="uniform", dtype=dtype)
        for i in (0, 1, 57, 99):
            net = MLP([2, 3, 1], activation="tanh", bias_init="uniform", seed=seeds[i], dtype=dtype)
            assert all(torch.equal(p[i], q) for p, q in zip(pop.parameters(), net.parameters())), f"member {i}"


def _xor_trainer(engine, K=40, epochs=60, **kwargs):
    data = load_dataset("xor", dtype=F64)
    pop = Population([2, 2, 1], seeds=list(range(K)), dtype=F64)
    lrs = [[0.5, 2.0, 4.0, 8.0][i % 4] for i in range(K)]
    return pop, PopulationTrainer(pop, data, mode="online", lr=lrs, epochs=epochs, engine=engine,
                                  order_seeds=[1000 + i for i in range(K)], **kwargs)


def test_generators_are_left_as_each_members_trainer_leaves_them():
    """One randperm per epoch a member trained: reached members stop drawing at their stop."""
    pop, trainer = _xor_trainer("c", target_loss=0.05, epochs=300)
    h = trainer.run()
    assert "target_loss" in h.stop_reason and "max_epochs" in h.stop_reason
    for i, g in enumerate(trainer.orders.generators):
        own = torch.Generator().manual_seed(1000 + i)
        for _ in range(h.last_epoch[i]):
            torch.randperm(4, generator=own)
        assert torch.equal(g.get_state(), own.get_state()), f"member {i} ({h.stop_reason[i]})"


def test_generators_are_written_back_without_numpy(monkeypatch):
    def no_numpy(self, *args, **kwargs):
        raise RuntimeError("Numpy is not available")

    pop, trainer = _xor_trainer("c", K=5, epochs=7)
    monkeypatch.setattr(torch.Tensor, "numpy", no_numpy)
    trainer.run()
    for i, g in enumerate(trainer.orders.generators):
        own = torch.Generator().manual_seed(1000 + i)
        for _ in range(7):
            torch.randperm(4, generator=own)
        assert torch.equal(g.get_state(), own.get_state()), f"member {i}"


# ---------------------------------------------------------------------------------------------------- the rules
def _assert_same_histories(a, b, rel=1e-12):
    assert a.stop_reason == b.stop_reason and a.epochs_to_target == b.epochs_to_target
    assert a.diverged_update == b.diverged_update and a.last_epoch == b.last_epoch and a.message == b.message
    assert a.epoch == b.epoch and a.updates == b.updates
    for name in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        for e, (ra, rb) in enumerate(zip(getattr(a, name), getattr(b, name))):
            if ra is None:
                assert rb is None
                continue
            torch.testing.assert_close(ra, rb, rtol=rel, atol=0, equal_nan=True, msg=f"{name} row {e}")


def test_freeze_and_divergence_rules_are_the_eager_engines():
    """tanh / identity output: some members diverge (at an update, at the evaluation), some reach the target."""
    data = load_dataset("xor", dtype=F64)
    lrs = [0.05, 3.0, 0.1, 10.0, 0.5, 1.0]
    runs = {}
    for engine in ("eager", "c"):
        pop = Population([2, 3, 1], seeds=[11, 3, 5, 8, 1, 2], activation="tanh", output_activation="identity",
                         bias_init="uniform", dtype=F64)
        trainer = PopulationTrainer(pop, data, mode="online", lr=lrs, epochs=60, target_loss=0.2,
                                    order_seeds=[100, 0, 42, 7, 3, 4], engine=engine)
        runs[engine] = (pop, trainer.run())
    (pa, ha), (pb, hb) = runs["eager"], runs["c"]
    assert hb.diverged()[1] and hb.diverged()[3] and "target_loss" in hb.stop_reason
    assert hb.diverged_update[3] is not None and hb.diverged_update[1] is None
    _assert_same_histories(ha, hb)
    for a, b in zip(pa.parameters(), pb.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_separate_test_split_and_accuracies_are_the_eager_engines():
    data = load_dataset("moons", n_samples=40, seed=1, dtype=F64)  # 30 training samples, a separate test split
    runs = {}
    for engine in ("eager", "c"):
        pop = Population([2, 5, 1], seeds=[0, 1, 2], activation="tanh", dtype=F64)
        trainer = PopulationTrainer(pop, data, mode="online", lr=[0.05, 0.2, 0.5], epochs=5,
                                    loss_fn="binary_cross_entropy", engine=engine)
        runs[engine] = trainer.run()
    _assert_same_histories(runs["eager"], runs["c"])


# ---------------------------------------------------------------------------------------------------- calls
@pytest.mark.parametrize("per_call", [1, 7])
def test_epochs_in_one_call_are_bit_equal_to_one_call_each(per_call):
    runs = {}
    for e in (per_call, 64):
        pop, trainer = _xor_trainer("c", target_loss=0.05, epochs=150, epochs_per_draw=e)
        runs[e] = (pop, trainer.run(), trainer)
    (pa, ha, ta), (pb, hb, tb) = runs[per_call], runs[64]
    _assert_same_histories(ha, hb, rel=0)
    assert all(torch.equal(a, b) for a, b in zip(pa.parameters(), pb.parameters()))
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(ta.orders.generators, tb.orders.generators))


def test_a_continued_run_is_the_whole_run():
    pop, trainer = _xor_trainer("c", epochs=9)
    trainer.run()
    trainer.epochs = 25
    h = trainer.run()
    whole, other = _xor_trainer("c", epochs=25)
    hw = other.run()
    _assert_same_histories(h, hw, rel=0)
    assert all(torch.equal(a, b) for a, b in zip(pop.parameters(), whole.parameters()))


# ---------------------------------------------------------------------------------------------------- the switch
def test_auto_picks_the_c_engine_where_it_applies_and_eager_elsewhere():
    data = load_dataset("xor", dtype=F64)
    pop = Population([2, 2, 1], seeds=[0, 1], dtype=F64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PopulationTrainer(pop, data, mode="online", lr=1.0, epochs=1).engine == "c"
        assert PopulationTrainer(pop, data, mode="minibatch", batch_size=2, lr=1.0, epochs=1).engine == "eager"
        assert PopulationTrainer(pop, data, mode="online", lr=1.0, epochs=1,
                                 optimizer=SGD(pop, lr=1.0)).engine == "eager"
    with pytest.warns(FastPathWarning, match="engine='c' cannot run here: the C engine runs online learning"):
        assert PopulationTrainer(pop, data, mode="batch", lr=1.0, epochs=1, engine="c").engine == "eager"
    soft = Population([2, 2, 2], seeds=[0], output_activation="softmax", dtype=F64)
    assert PopulationTrainer(soft, data, mode="online", lr=1.0, epochs=1).engine == "eager"
