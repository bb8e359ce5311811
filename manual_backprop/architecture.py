"""The checked architecture shared by an MLP and a Population (whose members all have it): widths, activations,
bias, parameter dtype and device, and the initialisation scheme."""

from __future__ import annotations

from .activations import resolve_activations
from .checks import check_bool, check_positive_number, check_sizes, resolve_device, resolve_dtype
from .init import resolve_init

__all__ = ["resolve_architecture"]


def resolve_architecture(sizes, activation, output_activation, bias, init, init_scale, bias_init, dtype,
                         device) -> dict:
    """The checked architecture of an MLP (and of a Population, whose members share it): sizes,
    activation_functions, bias, dtype, device, init, bias_init, init_scale."""
    sizes = check_sizes(sizes)
    check_bool("bias", bias)
    init, bias_init = resolve_init(init, bias_init)
    functions = resolve_activations(sizes, activation, output_activation)
    if functions[-1].name == "softmax" and sizes[-1] == 1:
        raise ValueError("output_activation 'softmax' on a single output is always 1 and learns nothing; use one "
                         "output per class, one 'sigmoid' output for two classes, or an 'identity' output with "
                         "loss 'squared_error' for a regression target")
    return {"sizes": sizes, "activation_functions": functions,
            "bias": bias, "dtype": resolve_dtype(dtype), "device": resolve_device(device), "init": init,
            "bias_init": bias_init, "init_scale": check_positive_number("init_scale", init_scale)}
