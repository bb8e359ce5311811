"""The one-update C calls' checks in C++ (manual_backprop/fast/tensor_state.py, _csrc/tensor_state.cpp).

What the C++ reads of a tensor is what torch says of it from Python, word by word (its version, its TensorImpl's
and its storage's use counts, requires_grad (and autograd metadata), address, offset, dtype, device, neg and conj bits, dim, sizes and
strides), before and after every change the output sets and the plans must see; so the calls' checks ask the same
questions as the Python checks they replace (which still run where no C++ compiler is found: test_one_update_outputs
and test_layout_changes run every case both ways). Where the C++ cannot be built, the one-update API runs as before.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from manual_backprop import MLP
from manual_backprop.fast import one_update, tensor_state
from helpers import c_loop_reason, move_memory

pytestmark = pytest.mark.skipif(c_loop_reason() is not None or tensor_state.checker() is None,
                                reason=f"no C++ checks here: {c_loop_reason() or tensor_state.unavailable}")

W = tensor_state.STATE_WORDS


def _python_words(t: torch.Tensor, storage) -> list:
    """What torch says from Python, in tensor_state.cpp's words (dtype and device compared apart: enum values)."""
    sizes, strides = (list(t.shape) + [-1] * 3)[:3], (list(t.stride()) + [-1] * 3)[:3]
    if t.dim() > 3:
        sizes = strides = [-1] * 3
    return [t._version, t._use_count(), torch._C._storage_Use_Count(storage._cdata),
            int(t.requires_grad) | 2 * int(t.requires_grad or t.grad is not None),  # autograd metadata: either made it
            t.data_ptr(), t.storage_offset(), None, None, int(t.is_neg()) | 2 * int(t.is_conj()), t.dim(), *sizes,
            *strides]


def _assert_same_words(t, storage, what):
    got, expected = tensor_state.state_of(t), _python_words(t, storage)
    for k, (a, b) in enumerate(zip(got, expected)):
        if b is not None:
            assert a == b, f"{what}: word {k} is {a} in C++, {b} from Python ({got} against {expected})"


CHANGES = {
    "made": lambda t: t,
    "scaled in place": lambda t: t.mul_(2.0),
    "a view held": lambda t: t.view(-1),
    "transposed in place": lambda t: t.t_(),
    "resized": lambda t: t.resize_(t.numel() + 7),
    "given other memory": lambda t: t.set_(torch.zeros(3, 5, dtype=t.dtype)),
    "data made its transpose": lambda t: setattr(t, "data", t.t()),
    "data made a 4-D view": lambda t: setattr(t, "data", t.view(1, 1, *t.shape)),
    "data made its bits as integers": lambda t: setattr(t, "data", t.view(torch.int64)),
    "data given the neg bit": lambda t: setattr(t, "data", torch._neg_view(t)),
    "given new memory under its storage": move_memory,
    "made to require grad": lambda t: t.requires_grad_(),
    "given a .grad": lambda t: setattr(t, "grad", torch.zeros_like(t)),
    "a DLPack capsule held": lambda t: torch.utils.dlpack.to_dlpack(t),
    "a numpy array held": lambda t: t.numpy(),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_the_cpp_reads_what_torch_says(change):
    t = torch.randn(4, 3, dtype=torch.float64)
    storage = t.untyped_storage()  # held, as the output sets hold theirs
    before = tensor_state.state_of(t)
    kept = CHANGES[change](t)
    storage = t.untyped_storage()
    _assert_same_words(t, storage, change)
    if change != "made":
        assert tensor_state.state_of(t) != before, f"{change}: the state did not change"
    del kept


def test_dtype_and_device_words_tell_dtypes_apart():
    words = {dt: tensor_state.state_of(torch.zeros(2, dtype=dt))[6] for dt in
             (torch.float32, torch.float64, torch.int32, torch.int64, torch.complex64)}
    assert len(set(words.values())) == len(words)
    assert tensor_state.state_of(torch.zeros(2))[7] == tensor_state.state_of(torch.ones(3))[7]


def test_the_one_update_plans_check_in_cpp_where_it_builds():
    net = MLP([3, 4, 2], activation="tanh", dtype=torch.float64, seed=0)
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)
    loss, grads = net.loss_and_grads(x, y, "squared_error")
    plan = one_update.plan_of(net)
    assert plan is not None and plan.lib is not None and plan.checked is not None


def test_without_a_cpp_compiler_the_checks_run_in_python():
    code = ("import torch; from manual_backprop import MLP; from manual_backprop.fast import one_update, tensor_state\n"
            "net = MLP([3, 4, 2], activation='tanh', dtype=torch.float64, seed=0)\n"
            "x, y = torch.randn(5, 3, dtype=torch.float64), torch.rand(5, 2, dtype=torch.float64)\n"
            "for _ in range(3):\n"
            "    loss, g = net.loss_and_grads(x, y, 'squared_error'); net.step(g, 0.1)\n"
            "plan = one_update.plan_of(net)\n"
            "assert plan.fn is not None and plan.lib is None, 'the C call did not run, or ran with C++ checks'\n"
            "print(tensor_state.unavailable)\n")
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "MANUAL_BACKPROP_CXX": "/nonexistent/c++",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "/nonexistent/c++" in done.stdout
