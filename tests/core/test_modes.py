"""Each learning mode's sample order is defined once (manual_backprop.modes); these tests pin what it means and
that every user of it (Trainer, the population's K generators) draws exactly that order."""

import pytest
import torch

from manual_backprop.modes import EpochOrders, Generators, batch_order, epoch_order, minibatch_order, online_order, \
    samples_per_update


def _batches(order, offsets):
    return [order[a:b].tolist() for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def test_batch_mode_is_one_update_on_all_samples_in_their_stored_order():
    order, offsets = batch_order(7)
    assert _batches(order, offsets) == [list(range(7))]


def test_online_mode_is_one_sample_per_update_in_randperm_order():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    order, offsets = online_order(9, g1)
    assert _batches(order, offsets) == [[i] for i in torch.randperm(9, generator=g2).tolist()]
    order, _ = online_order(9, None)  # no generator: the stored order (the single-layer rules' shuffle=False)
    assert order.tolist() == list(range(9))


@pytest.mark.parametrize("replacement", [False, True])
def test_minibatches_are_sorted_sets_of_b_with_a_partial_last_one(replacement):
    order, offsets = minibatch_order(23, 5, torch.Generator().manual_seed(1), replacement=replacement)
    batches = _batches(order, offsets)
    assert all(b == sorted(b) for b in batches)
    assert [len(b) for b in batches] == ([5] * 5 if replacement else [5, 5, 5, 5, 3])
    if not replacement:
        assert sorted(i for b in batches for i in b) == list(range(23)), "without replacement: a permutation"


def test_minibatch_with_b_equal_n_is_batch_mode_and_b_one_is_online_mode():
    n = 11
    order, offsets = minibatch_order(n, n, torch.Generator().manual_seed(0))
    assert _batches(order, offsets) == _batches(*batch_order(n))
    a = minibatch_order(n, 1, torch.Generator().manual_seed(5))
    b = online_order(n, torch.Generator().manual_seed(5))
    assert _batches(*a) == _batches(*b)


@pytest.mark.parametrize("mode,b,replacement", [("online", 1, False), ("minibatch", 3, False),
                                                ("minibatch", 3, True), ("online", 1, True)])
@pytest.mark.parametrize("n", [5, 600])  # 600 > 512: drawn by torch.randperm instead of the bulk replay
def test_population_orders_are_each_members_own_epoch_order(mode, b, replacement, n):
    seeds = [0, 7, 123]
    orders = EpochOrders(seeds, n, b, replacement=replacement, block_draws=64)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    for epoch in range(3):
        got = orders.epoch()  # (K, S)
        for i, g in enumerate(generators):
            expected, _ = epoch_order(mode, n, b, g, replacement=replacement)
            assert torch.equal(got[i], expected), f"member {i}, epoch {epoch}"


def test_samples_per_update_names_the_argument_and_the_bounds():
    assert samples_per_update("batch", None, 10) == 10 and samples_per_update("online", None, 10) == 1
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 10\]"):
        samples_per_update("minibatch", 11, 10)
    with pytest.raises(ValueError, match="mode must be one of"):
        samples_per_update("stochastic", None, 10)


def test_generators_made_at_first_use_are_the_seeded_generators_and_take_states_in_bulk():
    """Generators: each member's generator is torch.Generator().manual_seed(seed) when first used; set_states sets
    the ones made and makes the others from their rows; states() reads every member as it stands."""
    seeds = [3, 0, 2 ** 40 + 1]
    gens = Generators(seeds)
    assert gens.untouched() and len(gens) == 3
    for g, s in zip(gens, seeds):
        assert torch.equal(g.get_state(), torch.Generator().manual_seed(s).get_state())
    first = gens[0]
    torch.randperm(5, generator=first)  # a made generator is the state from now on
    expected = [torch.Generator().manual_seed(s) for s in seeds]
    torch.randperm(5, generator=expected[0])
    assert torch.equal(gens.states(), torch.stack([g.get_state() for g in expected]))
    lazy = Generators(seeds)
    held = lazy[1]  # one made before the bulk set: it is the same object afterwards, in the new state
    lazy.set_states(torch.stack([g.get_state() for g in expected]))
    assert lazy[1] is held and not lazy.untouched()
    for g, e in zip(lazy, expected):
        assert torch.equal(g.get_state(), e.get_state())
        assert torch.equal(torch.randperm(7, generator=g), torch.randperm(7, generator=e))
