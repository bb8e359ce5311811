"""The `manual-backprop` command (console script ``manual-backprop = reference.cli:main``).

    manual-backprop check --sizes 64 128 128 10 --activation tanh --output-activation softmax \\
        --loss cross_entropy --batch 32 --dtype float32 --device cuda

builds a network from the flags, runs the manual network, its autograd twin and float64 finite differences on
seeded random data, prints the per-layer table, and exits 1 if any layer disagrees beyond its dtype's tolerance
(1e-10 norm-relative in float64, 1e-5 in float32; 1e-6 against finite differences).

It lives in reference/, beside the comparison it runs: the library (manual_backprop) never imports reference/.
"""

from __future__ import annotations

import argparse
import sys

import torch

from manual_backprop.activations import ACTIVATIONS
from manual_backprop.init import BIAS_INITS, INITS
from manual_backprop.losses import LOSSES, REDUCTIONS, get_loss
from manual_backprop.network import MLP

from .compare import compare

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="prove manual gradients equal autograd and finite differences, layer by layer",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[4, 8, 3], help="layer widths n_0 ... n_L (default 4 8 3)")
    p.add_argument("--activation", nargs="+", default=["tanh"],
                   help=f"hidden activation, one for all or one per hidden layer: "
                        f"{sorted(set(ACTIVATIONS) - {'softmax'})}")
    p.add_argument("--output-activation", default="softmax", help=f"output activation: {sorted(ACTIVATIONS)}")
    p.add_argument("--loss", default=None,
                   help=f"{sorted(LOSSES)} (default: cross_entropy on softmax, else squared_error)")
    p.add_argument("--reduction", default=None, choices=REDUCTIONS, help="loss reduction (default mean)")
    p.add_argument("--half", action="store_true", help="squared error with the 1/2 factor")
    p.add_argument("--no-bias", action="store_true", help="layers without biases")
    p.add_argument("--init", default="xavier_uniform", choices=INITS)
    p.add_argument("--bias-init", default="uniform", choices=BIAS_INITS,
                   help="non-zero by default, so that zero biases cannot hide a bug")
    p.add_argument("--batch", type=int, default=16, help="samples in the batch (default 16)")
    p.add_argument("--dtype", default="float64", choices=sorted(_DTYPES))
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (CUDA when present)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fd-samples", type=int, default=200,
                   help="finite differences on at most this many entries per tensor (0: every entry)")
    p.add_argument("--no-fd", action="store_true", help="skip the finite-difference oracle")
    p.set_defaults(func=run_check)


def run_check(args) -> int:
    if args.batch <= 0:
        raise ValueError(f"--batch must be a positive number of samples, but got {args.batch}")
    activation = args.activation[0] if len(args.activation) == 1 else args.activation
    net = MLP(args.sizes, activation=activation, output_activation=args.output_activation, bias=not args.no_bias,
              init=args.init, bias_init=args.bias_init, init_scale=0.5, dtype=_DTYPES[args.dtype],
              device=args.device, seed=args.seed)
    loss_name = args.loss or ("cross_entropy" if args.output_activation == "softmax" else "squared_error")
    loss_fn = get_loss(loss_name, reduction=args.reduction, half=True if args.half else None)
    loss_fn.check_output_activation(net.output_activation)
    x, y = random_problem(net, loss_fn, args.batch, seed=args.seed)
    print(f"{net}\nloss {loss_fn!r}, batch {args.batch}, device {net.device}, seed {args.seed}")
    report = compare(net, x, y, loss_fn, finite_diff=not args.no_fd,
                     fd_max_per_tensor=args.fd_samples or None, seed=args.seed)
    print(report.table())
    return 0 if report.passed else 1


def random_problem(net, loss_fn, batch: int, seed: int = 0):
    """Seeded inputs (B, n_0) ~ N(0, 1) and targets that suit the loss, drawn on the CPU then moved to the net."""
    g = torch.Generator().manual_seed(seed + 1)
    n_out = net.sizes[-1]
    x = torch.randn(batch, net.sizes[0], generator=g, dtype=torch.float64)
    if loss_fn.name == "cross_entropy":
        y = torch.randint(0, n_out, (batch,), generator=g)
    elif loss_fn.name == "binary_cross_entropy" or net.output_activation.name in ("sigmoid", "softmax"):
        y = torch.rand(batch, n_out, generator=g, dtype=torch.float64)
    else:
        y = torch.randn(batch, n_out, generator=g, dtype=torch.float64)
    y = y.to(net.dtype) if y.is_floating_point() else y
    return x.to(dtype=net.dtype, device=net.device), y.to(net.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manual-backprop", description="Backprop written by hand, checked.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_check(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as err:
        print(f"manual-backprop {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
