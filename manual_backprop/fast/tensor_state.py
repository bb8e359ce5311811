"""The one-update C calls' checks in C++, inside the calls (``_csrc/tensor_state.cpp``, for fast/one_update.py).

MLP.loss_and_grads' C call writes a set of output tensors it made earlier, and it and MLP.step's C call read and
write the parameters through addresses kept from when the plan was made. Before each call, what they rely on must
still hold: nothing reached or changed a tensor of the set since it was made (its counts, version, requires_grad,
address, layout, dtype), and the parameters still have the addresses, layouts and dtypes the plan kept. Asked of
torch from Python that is some 80 questions an update at 40 to 200 ns each, several times the C call itself on a
small network; tensor_state.cpp reads the same facts from torch's own TensorImpl, and its entry points
(``mbp_checked_loss_and_grads``, ``mbp_checked_step``) check them and make the C call in one call. The Python
objects' own counts (sys.getrefcount, weak references) stay in Python.

Built like the C kernels (c_loop.build_library, cached on disk), with a C++ compiler against the installed torch's
c10 headers and libc10. Where that fails, ``checker()`` returns None and one_update.py asks torch from Python, the
same questions (tests/proof/test_tensor_state.py holds the two to the same answers).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Optional

from torch import Tensor

from .common import FastPathUnavailable

__all__ = ["STATE_WORDS", "LAYOUT_FROM", "Checked", "OutputsRef", "checker", "impls", "states", "unavailable"]

STATE_WORDS = 16  # words of one tensor's state (tensor_state.cpp says which)
LAYOUT_FROM = 4  # the first word of its address, layout and dtype; before it its counts, version, requires_grad
SET_FROM = 1  # what an output set compares: all but the version (its values are the call's to write)

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
unavailable: Optional[str] = None  # why the C++ checks could not be built here (None: not tried, or built)


class Checked(ctypes.Structure):
    """tensor_state.cpp's mbp_checked: one plan's C calls and its parameters' recorded states."""
    _fields_ = [("plan", ctypes.c_void_p), ("loss_and_grads", ctypes.c_void_p), ("step", ctypes.c_void_p),
                ("is_f32", ctypes.c_int64), ("params", ctypes.c_void_p), ("n_params", ctypes.c_int64),
                ("params_state", ctypes.c_void_p)]


class OutputsRef(ctypes.Structure):
    """tensor_state.cpp's mbp_outputs: one output set, its tensors and their recorded states."""
    _fields_ = [("out", ctypes.c_void_p), ("impls", ctypes.c_void_p), ("n", ctypes.c_int64),
                ("state", ctypes.c_void_p), ("n_step", ctypes.c_int64)]


def checker() -> Optional[ctypes.CDLL]:
    """The built library, or None where it cannot be built (``unavailable`` says why)."""
    global _lib, unavailable
    if _lib is not None or unavailable is not None:
        return _lib
    with _lock:
        if _lib is None and unavailable is None:
            from . import c_loop

            try:
                lib, target = c_loop.build_library("tensor_state.cpp", ["tensor_state.cpp"], "",
                                                   "one-update checks", cxx=True)
                if lib.mbp_tensor_state_words() != STATE_WORDS:
                    raise FastPathUnavailable(f"{target} reports {lib.mbp_tensor_state_words()} state words, "
                                              f"expected {STATE_WORDS}")
            except (FastPathUnavailable, OSError, AttributeError) as err:
                unavailable = str(err)
                return None
            # called with the GIL held: a check and its C call are one step for the other Python threads
            lib = ctypes.PyDLL(lib._name, handle=lib._handle)
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            lib.mbp_tensor_states.restype, lib.mbp_tensor_states.argtypes = None, [p, i64, p]
            lib.mbp_tensors_match.restype, lib.mbp_tensors_match.argtypes = i64, [p, i64, p, i64]
            lib.mbp_checked_loss_and_grads.restype = i64
            lib.mbp_checked_loss_and_grads.argtypes = [p, p, p, p, i64]
            lib.mbp_checked_step.restype, lib.mbp_checked_step.argtypes = i64, [p, p, ctypes.c_double]
            lib.mbp_tensor_hold.restype, lib.mbp_tensor_hold.argtypes = None, [p, i64, i64]
            _lib = lib
    return _lib


def impls(tensors) -> ctypes.Array:
    """The tensors' TensorImpl addresses (``Tensor._cdata``): what the C++ reads. The caller holds the tensors."""
    return (ctypes.c_void_p * max(1, len(tensors)))(*[t._cdata for t in tensors])


def states(lib: ctypes.CDLL, impl_array: ctypes.Array, n: int, out: Optional[ctypes.Array] = None) -> ctypes.Array:
    """The n tensors' states (n * STATE_WORDS int64 words), into out or a new array."""
    if out is None:
        out = (ctypes.c_int64 * max(1, n * STATE_WORDS))()
    lib.mbp_tensor_states(impl_array, n, out)
    return out


def state_of(t: Tensor) -> list:
    """One tensor's state as a list (the proof compares it with what torch says from Python); None without the
    library."""
    lib = checker()
    if lib is None:
        return None
    return list(states(lib, impls([t]), 1))
