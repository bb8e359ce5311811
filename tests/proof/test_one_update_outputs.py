"""The output tensors of MLP.loss_and_grads' one C call (manual_backprop/fast/one_update.py, _Outputs).

The call keeps two sets of output tensors per batch size and writes a tensor of a set again only where nothing but
the set reaches it. The claims: whatever a caller keeps (a name, a Gradients, a list, a view, a numpy array, a
detached tensor, a DLPack capsule, a weak reference) is never overwritten by a later call; a tensor changed in
place, made to require grad, given a .grad or an attribute, and then dropped is never handed out again; every call's values are those of a
fresh call on a copy of the network, bit for bit; and a loop that rebinds its names each update makes no tensor
(the results cycle through the two sets), which is what the sets are for.
"""

import threading
import weakref

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.network import ONE_UPDATE
from helpers import c_loop_reason, move_memory

pytestmark = [pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}"),
              pytest.mark.usefixtures("both_checks")]

SIZES = [5, 4, 3]
B = 3


def _net_and_batches(n=8, seed=0, dtype=torch.float64):
    net = MLP(SIZES, activation="tanh", output_activation="sigmoid", dtype=dtype, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    return net, [(torch.randn(B, SIZES[0], generator=gen, dtype=dtype),
                  torch.rand(B, SIZES[-1], generator=gen, dtype=dtype)) for _ in range(n)]


def _all(loss, grads):
    return [loss, *grads.weights, *grads.biases, *grads.deltas]


def _fresh(net, x, y):
    """The same call on a copy of net: a new plan, so new tensors."""
    return _all(*net.copy().loss_and_grads(x, y))


def _assert_same(got, expected, what):
    for k, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype, \
            f"{what}: result {k} is {a.dtype} of shape {tuple(a.shape)}"
        assert torch.equal(a, b), f"{what}: result {k} differs from a fresh call's"


def _uses_the_c_call(net, x, y):
    from manual_backprop.fast import one_update
    net.loss_and_grads(x, y)
    plan = one_update.plan_of(net)
    assert ONE_UPDATE.enabled and plan is not None and plan.fn is not None, "the C call did not run"
    assert (plan.lib is not None) == one_update.CHECKS_IN_CPP, "the checks ran where the test did not ask"


def test_a_loop_that_rebinds_its_names_makes_no_tensor_and_each_call_is_a_fresh_calls():
    net, batches = _net_and_batches(12)
    _uses_the_c_call(net, *batches[0])
    addresses = []
    for x, y in batches:
        loss, grads = net.loss_and_grads(x, y)
        got = _all(loss, grads)
        _assert_same(got, _fresh(net, x, y), "a reused set")
        addresses.append(tuple(t.data_ptr() for t in got))
        net.step(grads, 0.1)
        del got
    assert len(set(addresses[2:])) == 2, "the results did not cycle through two sets of tensors"


# how a caller keeps part of a call's results: (keep it, read its values back as tensors, their places in _all)
KEEPS = {
    "E by name": (lambda loss, grads: loss, lambda kept: [kept], [0]),
    "the Gradients": (lambda loss, grads: grads, lambda kept: _all(None, kept)[1:], [1, 2, 3, 4, 5, 6]),
    "a list of one gradient": (lambda loss, grads: [grads.weights[1]], lambda kept: kept, [2]),
    "a view": (lambda loss, grads: grads.weights[0].view(-1), lambda kept: [kept.view(SIZES[1], SIZES[0])], [1]),
    "a numpy array": (lambda loss, grads: grads.deltas[0].numpy(), lambda kept: [torch.from_numpy(kept)], [5]),
    "a detached tensor": (lambda loss, grads: grads.biases[0].detach(), lambda kept: [kept], [3]),
    "a DLPack capsule": (lambda loss, grads: torch.utils.dlpack.to_dlpack(grads.deltas[1]),
                         lambda kept: [torch.utils.dlpack.from_dlpack(kept)], [6]),
    "the memory": (lambda loss, grads: grads.weights[1].untyped_storage(),
                   lambda kept: [torch.tensor([], dtype=torch.float64).set_(kept).view(SIZES[2], SIZES[1])], [2]),
}


@pytest.mark.parametrize("keep", list(KEEPS), ids=list(KEEPS))
def test_what_a_caller_keeps_is_never_overwritten(keep):
    hold, read, places = KEEPS[keep]
    net, batches = _net_and_batches()
    _uses_the_c_call(net, *batches[0])
    loss, grads = net.loss_and_grads(*batches[1])
    before = [t.clone() for t in _all(loss, grads)]
    kept, addresses = hold(loss, grads), [t.data_ptr() for t in _all(loss, grads)]
    del loss, grads
    for x, y in batches[2:]:
        got = _all(*net.loss_and_grads(x, y))
        _assert_same(got, _fresh(net, x, y), f"with {keep} kept")
        del got
    values = read(kept)
    assert len(values) == len(places)
    for a, k in zip(values, places):
        assert torch.equal(a, before[k]), f"{keep}: later calls overwrote it"
    if keep == "the Gradients":
        assert [t.data_ptr() for t in _all(None, kept)[1:]] == addresses[1:], "its tensors were replaced"


def test_a_weak_reference_sees_its_tensor_unchanged():
    net, batches = _net_and_batches()
    _uses_the_c_call(net, *batches[0])
    loss, grads = net.loss_and_grads(*batches[1])
    ref, before = weakref.ref(grads.weights[0]), grads.weights[0].clone()
    del loss, grads
    for x, y in batches[2:]:
        _assert_same(_all(*net.loss_and_grads(x, y)), _fresh(net, x, y), "with a weak reference")
    assert ref() is None or torch.equal(ref(), before), "a weakly referenced tensor was written again"


CHANGES = {
    "transposed in place": lambda t: t.t_(),
    "resized": lambda t: t.resize_(t.numel() + 7),
    "given other memory": lambda t: t.set_(torch.zeros(2, 2, dtype=t.dtype)),
    "data replaced": lambda t: setattr(t, "data", torch.zeros(t.shape[::-1], dtype=t.dtype)),
    "data made a view of itself": lambda t: setattr(t, "data", t.view(-1)),
    "data made its transpose": lambda t: setattr(t, "data", t.t()),
    "data made its bits as integers": lambda t: setattr(t, "data", t.view(torch.int64 if t.dtype == torch.float64
                                                                          else torch.int32)),
    "given new memory under its storage": move_memory,
    "made to require grad": lambda t: t.requires_grad_(),
    "scaled in place": lambda t: t.mul_(2.0),
    "given a .grad": lambda t: setattr(t, "grad", torch.full_like(t, 7.0)),
    "given an attribute": lambda t: setattr(t, "note", "mine"),  # what a caller gave a result stays with it
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_a_tensor_changed_and_dropped_is_never_handed_out_again(change):
    net, batches = _net_and_batches()
    _uses_the_c_call(net, *batches[0])
    loss, grads = net.loss_and_grads(*batches[1])
    changed = grads.weights[0]
    CHANGES[change](changed)
    del loss, grads, changed
    for x, y in batches[2:]:
        got = _all(*net.loss_and_grads(x, y))
        _assert_same(got, _fresh(net, x, y), f"after a result was {change}")
        assert not any(t.requires_grad or t.grad is not None or hasattr(t, "note") for t in got), \
            f"a later result is still {change}"
        del got


def test_calls_from_two_threads_never_share_tensors():
    net, batches = _net_and_batches(40)
    _uses_the_c_call(net, *batches[0])
    expected = [_fresh(net, x, y) for x, y in batches]
    results = {0: [], 1: []}

    def work(who):
        for x, y in batches:
            results[who].append(_all(*net.loss_and_grads(x, y)))

    threads = [threading.Thread(target=work, args=(who,)) for who in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for who, got in results.items():
        for k, (a, b) in enumerate(zip(got, expected)):
            _assert_same(a, b, f"thread {who}, call {k}")


def test_sets_are_kept_for_a_few_batch_sizes_only():
    from manual_backprop.fast import one_update
    net, _ = _net_and_batches()
    gen = torch.Generator().manual_seed(1)
    for b in range(1, 30):
        x, y = torch.randn(b, SIZES[0], generator=gen, dtype=net.dtype), torch.rand(b, SIZES[-1], dtype=net.dtype)
        _assert_same(_all(*net.loss_and_grads(x, y)), _fresh(net, x, y), f"batch size {b}")
    plan = one_update.plan_of(net)
    assert len(plan.pools) == one_update._BATCH_SIZES and max(plan.pools) == 29


def test_a_result_cannot_be_swapped_from_under_the_set():
    """torch.utils.swap_tensors puts another tensor's memory under a Python object: the set holds its tensors'
    TensorImpls, so the swap is refused (with the checks in Python the next call sees the new one)."""
    net, batches = _net_and_batches()
    _uses_the_c_call(net, *batches[0])
    loss, grads = net.loss_and_grads(*batches[1])
    mine = torch.zeros_like(grads.weights[0])
    try:
        torch.utils.swap_tensors(grads.weights[0], mine)
    except RuntimeError:
        pass
    kept = mine.clone()
    del loss, grads
    for x, y in batches[2:]:
        _assert_same(_all(*net.loss_and_grads(x, y)), _fresh(net, x, y), "after a swap")
    assert torch.equal(mine, kept), "a later call wrote into the caller's tensor"


def test_calls_inside_inference_mode_give_a_fresh_calls_results():
    net, batches = _net_and_batches()
    for k, (x, y) in enumerate(batches):
        if k == 3:
            _uses_the_c_call(net, x, y)
        with torch.inference_mode():
            got = _all(*net.loss_and_grads(x, y))
        _assert_same(got, _fresh(net, x, y), "inside inference_mode")
