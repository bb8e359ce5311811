"""reference: the manual network's twin on torch.nn + torch.autograd, finite differences, and the comparison.

This is the only package in the project that uses autograd. It works on detached copies under
torch.enable_grad(), so it never touches the manual network's tensors.
"""

from .compare import FD_TOLERANCE, Report, Row, compare, norm_relative_error, tolerance_for
from .finite_diff import FiniteDifferences, finite_differences
from .torch_mlp import TorchMLP, torch_loss

__all__ = ["TorchMLP", "torch_loss", "finite_differences", "FiniteDifferences", "compare", "Report", "Row",
           "norm_relative_error", "tolerance_for", "FD_TOLERANCE"]
