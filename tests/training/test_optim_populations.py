"""The manual optimizers per member of a population: per-member settings follow each member's own run, shared
settings are torch.optim's per member bit for bit, frozen members stay where they are, and a PopulationTrainer with
an optimizer follows each member's Trainer."""

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.parameter_state import in_layer_order
from manual_backprop.optim import SGD, Adam, AdamW
from manual_backprop.population import Population
from reference import TorchMLP, norm_relative_error
from optim_cases import F64, SIZES, make_net, make_problem, torch_optimizer


# ---------------------------------------------------------------------------------------------------- populations
PER_MEMBER = {
    "sgd-lr-momentum": (SGD, {"lr": [0.05, 0.1, 0.2], "momentum": [0.0, 0.5, 0.9]}),
    "sgd-nesterov-l2": (SGD, {"lr": 0.05, "momentum": [0.3, 0.6, 0.9], "nesterov": True,
                              "weight_decay": [0.0, 1e-3, 1e-2]}),
    "sgd-dampening": (SGD, {"lr": [0.05, 0.1, 0.2], "momentum": [0.0, 0.5, 0.9], "dampening": [0.5, 0.0, 0.3]}),
    "adam-lr-betas": (Adam, {"lr": [1e-3, 1e-2, 3e-2], "betas": ([0.8, 0.9, 0.95], 0.999)}),
    "adam-l2-amsgrad": (Adam, {"lr": 1e-2, "betas": (0.9, [0.99, 0.999, 0.9]), "eps": [1e-8, 1e-6, 1e-4],
                               "weight_decay": [0.0, 0.1, 0.01], "amsgrad": True}),
    "adamw": (AdamW, {"lr": [1e-3, 1e-2, 3e-2], "weight_decay": [0.0, 0.1, 0.5]}),
}


def member_settings(settings: dict, i: int) -> dict:
    def pick(v):
        return v[i] if isinstance(v, list) else v
    return {k: tuple(pick(b) for b in v) if k == "betas" else pick(v) for k, v in settings.items()}


@pytest.mark.parametrize("setting", PER_MEMBER.values(), ids=PER_MEMBER.keys())
def test_per_member_settings_follow_each_members_own_run(setting, device):
    """K members with their own numbers in one optimizer; member i ends where a single run with its numbers ends."""
    cls, settings = setting
    seeds = [1, 2, 3]
    pop = Population(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform", seeds=seeds,
                     dtype=F64, device=device)
    as_tensors = {k: (tuple(torch.tensor(b, dtype=F64) if isinstance(b, list) else b for b in v) if k == "betas"
                      else torch.tensor(v, dtype=F64) if isinstance(v, list) else v) for k, v in settings.items()}
    opt = cls(pop, **as_tensors)
    singles = [make_net(device, seed=s) for s in seeds]
    single_opts = [cls(net, **member_settings(settings, i)) for i, net in enumerate(singles)]
    x, y = make_problem(device)
    for step in range(50):
        opt.step(pop.loss_and_grads(x, y, "cross_entropy")[1])
        for net, o in zip(singles, single_opts):
            o.step(net.loss_and_grads(x, y, "cross_entropy")[1])
    for i, net in enumerate(singles):
        for j, (p, q) in enumerate(zip(pop.parameters(), net.parameters())):
            err = norm_relative_error(p[i], q)
            assert err <= 1e-12, f"member {i} parameter {j}: {err:.2e} from its own run"


def test_population_with_shared_settings_is_bit_equal_to_torch_optim_per_member():
    pop = Population(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform", seeds=[1, 2],
                     dtype=F64)
    opt = Adam(pop, lr=1e-2, weight_decay=0.01)
    x, y = make_problem("cpu")
    twins = [TorchMLP.from_manual(pop.member(i)) for i in range(2)]
    refs = [torch_optimizer(Adam, t.parameters(), {"lr": 1e-2, "weight_decay": 0.01}) for t in twins]
    for _ in range(30):
        _, grads = pop.loss_and_grads(x, y, "cross_entropy")
        opt.step(grads)
        for i, (twin, ref) in enumerate(zip(twins, refs)):
            for p, g in zip(twin.parameters(), in_layer_order(grads.weights, grads.biases)):
                p.grad = g[i].clone()
            ref.step()
    for i, twin in enumerate(twins):
        assert all(torch.equal(p[i], q.detach()) for p, q in zip(pop.parameters(), twin.parameters()))


def test_per_member_settings_need_one_number_per_member():
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=F64)
    with pytest.raises(ValueError, match=r"lr must be one number or 3 \(one per member\), but got shape \(2,\)"):
        SGD(pop, lr=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"momentum\[1\] must be >= 0"):
        SGD(pop, lr=0.1, momentum=torch.tensor([0.5, -0.5, 0.9]))
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        SGD(pop, lr=0.1, momentum=[0.5, 0.0, 0.9], nesterov=True)
    opt = SGD(pop, lr=torch.tensor([0.1, 0.2, 0.3]))
    assert opt.settings()["lr"] == pytest.approx([0.1, 0.2, 0.3])
    state = opt.state_dict()
    assert torch.equal(state["param_groups"][0]["lr"], torch.tensor([0.1, 0.2, 0.3]).double())  # as given


def test_members_mask_leaves_frozen_members_where_they_are():
    """PopulationTrainer freezes members (target reached, diverged): a masked member keeps its parameters, even where
    its gradient is NaN, and the others make the update they make without the mask."""
    def pop():
        return Population(SIZES, activation="tanh", output_activation="softmax", bias_init="uniform",
                          seeds=[1, 2, 3], dtype=F64)

    masked, free = pop(), pop()
    opt_masked, opt_free = Adam(masked, lr=[1e-2, 2e-2, 3e-2]), Adam(free, lr=[1e-2, 2e-2, 3e-2])
    x, y = make_problem("cpu")
    frozen = [p[1].clone() for p in masked.parameters()]
    active = torch.tensor([True, False, True])
    for _ in range(5):
        _, grads = masked.loss_and_grads(x, y, "cross_entropy")
        for g in grads.weights:
            g[1] = float("nan")  # a diverged member's gradient
        opt_masked.update(masked.weights, masked.biases, grads, None, members=active)
        opt_free.step(free.loss_and_grads(x, y, "cross_entropy")[1])
    for j, (p, q, f) in enumerate(zip(masked.parameters(), free.parameters(), frozen)):
        assert torch.equal(p[1], f), f"parameter {j}: the frozen member moved"
        assert torch.equal(p[0], q[0]) and torch.equal(p[2], q[2]), f"parameter {j}: an active member differs"
    with pytest.raises(ValueError, match=r"members must be a \(3,\) bool tensor"):
        opt_free.step(free.loss_and_grads(x, y, "cross_entropy")[1], members=torch.tensor([True, False]))


def test_attach_optimizer_to_a_population_trainer():
    from manual_backprop.optim.hooks import attach_optimizer

    pop = Population([2, 2, 1], seeds=[0, 1], dtype=torch.float32)
    opt = SGD(pop, lr=[0.1, 0.5], momentum=0.9)
    lr = torch.tensor([0.1, 0.5], dtype=torch.float32)  # as PopulationTrainer keeps it: the population's dtype
    assert attach_optimizer(opt, pop, lr, "eager", switch="engine")[2] == "eager"
    assert attach_optimizer(SGD(pop, lr=0.1), pop, torch.tensor([0.1, 0.1]), "eager", switch="engine")
    with pytest.raises(ValueError, match="differs from the optimizer's lr"):
        attach_optimizer(opt, pop, torch.tensor([0.1, 0.1]), "eager", switch="engine")
    with pytest.raises(ValueError, match="engine='compiled' runs plain SGD; with an optimizer use engine='eager'"):
        attach_optimizer(opt, pop, lr, "compiled", switch="engine")


def _population_trainer_takes_an_optimizer() -> bool:
    import inspect

    from manual_backprop.population import PopulationTrainer

    return "optimizer" in inspect.signature(PopulationTrainer).parameters


@pytest.mark.skipif(not _population_trainer_takes_an_optimizer(), reason="PopulationTrainer has no optimizer hook yet")
def test_population_trainer_with_per_member_adam_follows_each_members_trainer():
    from manual_backprop.datasets import load_dataset
    from manual_backprop.population import PopulationTrainer
    from manual_backprop.training import Trainer

    data = load_dataset("xor", dtype=F64)
    lrs, beta1s = [0.01, 0.05, 0.1], [0.9, 0.8, 0.5]
    pop = Population([2, 3, 1], seeds=[0, 1, 2], dtype=F64)
    PopulationTrainer(pop, data, mode="minibatch", batch_size=2, lr=lrs, epochs=40, loss_fn="squared_error",
                      optimizer=Adam(pop, lr=lrs, betas=(beta1s, 0.999))).run()
    for i, (lr, beta1) in enumerate(zip(lrs, beta1s)):
        net = MLP([2, 3, 1], dtype=F64, seed=i)
        Trainer(net, data, mode="minibatch", batch_size=2, lr=lr, epochs=40, seed=i, loss_fn="squared_error",
                optimizer=Adam(net, lr=lr, betas=(beta1, 0.999))).run()
        for j, (p, q) in enumerate(zip(pop.parameters(), net.parameters())):
            assert norm_relative_error(p[i], q) <= 1e-12, f"member {i} parameter {j}"
    plain, with_sgd = (Population([2, 2, 1], seeds=list(range(4)), dtype=F64) for _ in range(2))
    # One engine for both (the C engine, the default without an optimizer, takes none), so the claim is the update's.
    PopulationTrainer(plain, data, mode="online", lr=2.0, epochs=30, loss_fn="squared_error", engine="eager").run()
    PopulationTrainer(with_sgd, data, mode="online", lr=2.0, epochs=30, loss_fn="squared_error", engine="eager",
                      optimizer=SGD(with_sgd, lr=2.0)).run()
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), with_sgd.parameters()))
