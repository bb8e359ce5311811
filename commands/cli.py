"""The `manual-backprop` command (console script ``manual-backprop = commands.cli:main``).

    manual-backprop check --sizes 64 128 128 10 --activation tanh --output-activation softmax \\
        --loss cross_entropy --batch 32 --dtype float32 --device cuda
    manual-backprop trace --example mazur                   one update, written out in the lecture's notation
    manual-backprop grade my_backward.py:backward           grade a student's backward phase

``check`` builds a network from the flags, runs the manual network, its autograd twin and float64 finite
differences on seeded random data, prints the per-layer table, and exits 1 if any layer disagrees beyond its
dtype's tolerance (1e-10 norm-relative in float64, 1e-5 in float32; 1e-6 against finite differences).
``trace`` takes the same network flags (one helper defines them for both). ``grade`` runs its own battery.

It lives in reference/, beside the comparison it runs: the library (manual_backprop) never imports reference/.
Exit status: 0 agreement, 1 a disagreement (a wrong answer), 2 a bad flag, file or unusable input.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import torch

from manual_backprop.activations import ACTIVATIONS
from manual_backprop.checks import check_memory, check_sizes, network_bytes
from manual_backprop.init import BIAS_INITS, INITS
from manual_backprop.losses import LOSSES, REDUCTIONS, get_loss
from manual_backprop.network import MLP

from reference.compare import compare
from reference.finite_diff import finite_difference_work
from reference.targets import draw_targets, output_target_kind

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DTYPES = DTYPES  # the name earlier versions used

# The network, loss and data flags shared by check and trace; each command passes its own defaults.
CHECK_DEFAULTS = dict(sizes=[4, 8, 3], activation=["tanh"], output_activation="softmax", loss=None, reduction=None,
                      half=False, no_bias=False, init="xavier_uniform", bias_init="uniform", batch=16,
                      dtype="float64", device="auto", seed=0)
_FLAG_OF = {dest: "--" + dest.replace("_", "-") for dest in CHECK_DEFAULTS}


def add_network_flags(p: argparse.ArgumentParser, defaults: dict) -> None:
    """Add the flags that describe a network, its loss and its seeded data (check and trace share them).

    Every flag is registered with default None, so a command can tell the flags a user gave
    (``given_network_flags``) from its defaults, which ``network_from_args`` fills in.
    """
    d = defaults
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help=f"layer widths n_0 ... n_L (default {' '.join(map(str, d['sizes']))})")
    p.add_argument("--activation", nargs="+", default=None,
                   help=f"hidden activation, one for all or one per hidden layer: "
                        f"{sorted(set(ACTIVATIONS) - {'softmax'})} (default {' '.join(d['activation'])})")
    p.add_argument("--output-activation", default=None,
                   help=f"output activation: {sorted(ACTIVATIONS)} (default {d['output_activation']})")
    p.add_argument("--loss", default=None,
                   help=f"{sorted(LOSSES)} (default: cross_entropy on softmax, else squared_error)")
    p.add_argument("--reduction", default=None, choices=REDUCTIONS, help="loss reduction (default mean)")
    p.add_argument("--half", action="store_true", default=None, help="squared error with the 1/2 factor")
    p.add_argument("--no-bias", action="store_true", default=None, help="layers without biases")
    p.add_argument("--init", default=None, choices=INITS, help=f"weight scheme (default {d['init']})")
    p.add_argument("--bias-init", default=None, choices=BIAS_INITS,
                   help=f"default {d['bias_init']}: non-zero, so that zero biases cannot hide a bug")
    p.add_argument("--batch", type=int, default=None, help=f"samples in the seeded batch (default {d['batch']})")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help=f"default {d['dtype']}")
    p.add_argument("--device", default=None,
                   help=f"cpu, cuda, cuda:N, or auto (CUDA when present; default {d['device']})")
    p.add_argument("--seed", type=int, default=None, help=f"seeds the weights and the data (default {d['seed']})")
    p.set_defaults(network_defaults=dict(defaults))


def given_network_flags(args) -> list:
    """The network flags the user gave on the command line, spelled as flags ('--sizes', ...)."""
    return [_FLAG_OF[dest] for dest in CHECK_DEFAULTS if getattr(args, dest, None) is not None]


def network_from_args(args):
    """(net, loss_fn) from the shared flags, after filling in the command's defaults for flags not given."""
    for dest, value in args.network_defaults.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    if args.batch <= 0:
        raise ValueError(f"--batch must be a positive number of samples, but got {args.batch}")
    check_sizes(args.sizes)
    if getattr(args, "max_weights", None) is not None:
        n_weights = sum(a * b for a, b in zip(args.sizes[:-1], args.sizes[1:]))
        if n_weights > args.max_weights:
            raise ValueError(f"trace writes out every weight, and --sizes {' '.join(map(str, args.sizes))} have "
                             f"{n_weights} (at most {args.max_weights}); `manual-backprop check` compares big "
                             "networks")
    # The net, its autograd twin (parameters and gradients) and a float64 copy for finite differences: refuse
    # before building what the machine cannot hold.
    check_memory(f"--sizes {' '.join(map(str, args.sizes))} in {args.dtype}",
                 4 * network_bytes(args.sizes, DTYPES[args.dtype]) + 2 * network_bytes(args.sizes, torch.float64))
    activation = args.activation[0] if len(args.activation) == 1 else args.activation
    net = MLP(args.sizes, activation=activation, output_activation=args.output_activation, bias=not args.no_bias,
              init=args.init, bias_init=args.bias_init, init_scale=0.5, dtype=DTYPES[args.dtype],
              device=args.device, seed=args.seed)
    loss_name = args.loss or ("cross_entropy" if net.output_activation.name == "softmax" else "squared_error")
    loss_fn = get_loss(loss_name, reduction=args.reduction, half=True if args.half else None)
    loss_fn.check_output_activation(net.output_activation)
    return net, loss_fn


def _add_check(sub) -> None:
    p = sub.add_parser("check", help="prove manual gradients equal autograd and finite differences, layer by layer",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_flags(p, CHECK_DEFAULTS)
    p.add_argument("--fd-samples", type=int, default=200,
                   help="finite differences on at most this many entries per tensor (0: every entry)")
    p.add_argument("--no-fd", action="store_true", help="skip the finite-difference oracle")
    p.add_argument("--paths", choices=("plain", "all"), default=None,
                   help="all: also prove, update by update, every fast path and population engine that runs on this "
                        "device (default: all on CUDA, plain on the CPU)")
    p.set_defaults(func=run_check)


# Finite differences beyond this many multiply-adds take minutes on a CPU (2-100000-2 at batch 16: 1.1e10, 20 s
# on this project's 2-core machine; 2-1000000-2: 1.1e11, over 5 minutes).
FD_WORK_LIMIT = 4 * 10**10


def run_check(args) -> int:
    net, loss_fn = network_from_args(args)
    if not args.no_fd:  # the flags are checked and their defaults in force from here on
        passes, work = finite_difference_work(net.sizes, args.batch, bias=net.bias,
                                              max_per_tensor=args.fd_samples or None)
        if work > FD_WORK_LIMIT:
            raise ValueError(f"finite differences on --sizes {' '.join(map(str, args.sizes))} at --batch {args.batch} "
                             f"would make {passes} forward passes, {work:.2g} multiply-adds (at most "
                             f"{FD_WORK_LIMIT:.0e}: minutes on a CPU); pass a smaller --fd-samples or --batch, or "
                             "--no-fd to compare with autograd alone")
    x, y = random_problem(net, loss_fn, args.batch, seed=args.seed)
    print(f"{net}\nloss {loss_fn!r}, batch {args.batch}, device {net.device}, seed {args.seed}")
    report = compare(net, x, y, loss_fn, finite_diff=not args.no_fd,
                     fd_max_per_tensor=args.fd_samples or None, seed=args.seed)
    print(report.table())
    passed = report.passed
    if (args.paths or ("all" if net.device.type == "cuda" else "plain")) == "all":
        passed = run_path_proof(net, loss_fn, x, y) and passed
    return 0 if passed else 1


PATH_PROOF_LR = 0.1


def run_path_proof(net, loss_fn, x, y) -> bool:
    """One update through every fast path and population engine of this device against network.py's update
    (reference/update_proof.py); prints one row per path. True when every path is within its bound."""
    from manual_backprop.fast import FastPathUnavailable
    from reference.update_proof import paths_for, prove_path

    if net.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    y = net.check_y(y, (x.shape[0], net.sizes[-1]), loss_fn)
    paths = paths_for(net.device)
    print(f"\nOne update (lr {PATH_PROOF_LR}) through each path of {net.device} against network.py's update:")
    print(f"{'path':24} {'bound':>10} {'worst tensor':>14} {'ulps':>10}  result")
    ok_all = True
    for path in paths:  # each path its own row: one that fails to run is an error row, never the table's end
        try:
            bound, rows = prove_path(path, net, x, y, loss_fn, PATH_PROOF_LR)
        except FastPathUnavailable as err:  # the path does not take this dtype or network: said, not failed
            print(f"{path:24} {'':>10} {'':>14} {'':>10}  not run: {' '.join(str(err).split())[:160]}", flush=True)
            continue
        except Exception as err:  # noqa: BLE001 - any failure of one path is that path's row
            ok_all = False
            reason = " ".join(str(err).split()) or type(err).__name__
            print(f"{path:24} {'':>10} {'':>14} {'':>10}  error: {type(err).__name__}: {reason[:160]}", flush=True)
            continue
        name, miss, _ = max(rows, key=lambda r: r[1])
        ok = all(r[2] for r in rows)
        ok_all = ok_all and ok
        print(f"{path:24} {'bit-equal' if bound == 0 else f'{bound} ulps':>10} {name:>14} {miss:10.2f}  "
              f"{'agrees' if ok else 'disagrees'}", flush=True)
    return ok_all


TRACE_DEFAULTS = dict(CHECK_DEFAULTS, sizes=[2, 2, 1], activation=["sigmoid"], output_activation="sigmoid", batch=4,
                      device="cpu")
TRACE_MAX_WEIGHTS = 2000  # trace writes out every weight; beyond this, check is the tool


def _add_trace(sub) -> None:
    from .trace_format import FORMATS

    p = sub.add_parser("trace", help="one update written out in the lecture's notation, with autograd beside it",
                       description="Print one update of backprop on one sample, layer by layer in the lecture's "
                                   "notation: the forward phase, each delta with its factors, Delta w = eta delta x "
                                   "for every weight, the new weights, and autograd's number beside each. Exits 1 "
                                   "if manual and autograd disagree beyond the dtype's tolerance.")
    add_network_flags(p, TRACE_DEFAULTS)
    p.add_argument("--example", choices=["mazur"], default=None,
                   help="a published network instead of the flags: mazur = Matt Mazur's 2-2-2 worked example "
                        "(his weights, sample, eta 0.5 and E = 1/2 sum (y - x)^2)")
    p.add_argument("--sample", type=int, default=None, help="which sample of the seeded batch to trace (default 0)")
    p.add_argument("--input", type=float, nargs="+", default=None, help="the sample's input x^0 instead (n_0 numbers)")
    p.add_argument("--target", type=float, nargs="+", default=None,
                   help="its target y (n_L numbers, or one class index for cross_entropy); needs --input")
    p.add_argument("--lr", type=float, default=None, help="the learning rate eta (default 0.5, Mazur's)")
    p.add_argument("--format", choices=FORMATS, default="text", help="text (default), markdown or latex")
    p.set_defaults(func=run_trace)


def run_trace(args) -> int:
    from manual_backprop.checks import check_positive_number

    from .trace import mazur_example, trace_update
    from .trace_format import render

    lr = check_positive_number("--lr", 0.5 if args.lr is None else args.lr)
    if args.example == "mazur":
        fixed = [f for f in given_network_flags(args) if f not in ("--dtype", "--device")]
        fixed += [flag for flag, v in (("--sample", args.sample), ("--input", args.input), ("--target", args.target))
                  if v is not None]
        if fixed:
            raise ValueError(f"--example mazur fixes the network, its sample and its loss, so {', '.join(fixed)} "
                             "cannot be given with it (--lr, --format, --dtype and --device can)")
        ex = mazur_example(dtype=DTYPES[args.dtype or "float64"], device=args.device or "cpu")
        if args.lr is not None and lr > torch.finfo(ex.net.dtype).max:
            raise ValueError(f"--lr {lr:g} does not fit --dtype {args.dtype} (largest finite number "
                             f"{torch.finfo(ex.net.dtype).max:g})")
        trace = trace_update(ex.net, ex.x, ex.y, ex.loss_fn, lr if args.lr is not None else ex.lr, title=ex.title,
                             notes=ex.notes, weight_names=ex.weight_names)
    else:
        args.max_weights = TRACE_MAX_WEIGHTS  # checked from the flags, before the network is built
        net, loss_fn = network_from_args(args)
        if lr > torch.finfo(net.dtype).max:
            raise ValueError(f"--lr {lr:g} does not fit --dtype {args.dtype} (largest finite number "
                             f"{torch.finfo(net.dtype).max:g})")
        x, y = _trace_sample(args, net, loss_fn)
        trace = trace_update(net, x, y, loss_fn, lr, title=f"One update of backprop on sizes {net.sizes}")
    print(render(trace, args.format), end="")
    return 0 if trace.agrees else 1


def _trace_sample(args, net, loss_fn):
    """The one sample to trace: --input/--target, or sample --sample of check's seeded batch."""
    if args.input is None:
        if args.target is not None:
            raise ValueError("--target needs --input (without them, trace takes a sample of the seeded batch)")
        sample = 0 if args.sample is None else args.sample
        if not 0 <= sample < args.batch:
            raise ValueError(f"--sample must be in [0, {args.batch - 1}] for --batch {args.batch}, but got {sample}")
        x, y = random_problem(net, loss_fn, args.batch, seed=args.seed)
        return x[sample:sample + 1], y[sample:sample + 1]
    if args.sample is not None:
        raise ValueError("--sample picks a sample of the seeded batch; it cannot be given with --input")
    if len(args.input) != net.sizes[0]:
        raise ValueError(f"--input must give n_0 = {net.sizes[0]} numbers for sizes {net.sizes}, "
                         f"but got {len(args.input)}")
    if args.target is None:
        raise ValueError("--input needs --target, the desired output of that sample")
    x = torch.tensor([args.input], dtype=net.dtype, device=net.device)
    n_out = net.sizes[-1]
    if loss_fn.name == "cross_entropy" and len(args.target) == 1 and n_out > 1:
        target = args.target[0]
        if target != int(target) or not 0 <= target < n_out:
            raise ValueError(f"--target for cross_entropy is one class index, a whole number in [0, {n_out - 1}] "
                             f"for n_L = {n_out}, but got {target:g} (or give n_L = {n_out} probabilities)")
        return x, torch.tensor([int(target)], device=net.device)
    if len(args.target) != n_out:
        raise ValueError(f"--target must give n_L = {n_out} numbers for sizes {net.sizes}, but got {len(args.target)}")
    return x, torch.tensor([args.target], dtype=net.dtype, device=net.device)


def random_problem(net, loss_fn, batch: int, seed: int = 0):
    """Seeded inputs (B, n_0) ~ N(0, 1) and targets that suit the loss, drawn on the CPU then moved to the net."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, net.sizes[0], generator=g, dtype=torch.float64)
    y = draw_targets(output_target_kind(loss_fn, net.output_activation.name), (batch,), net.sizes[-1], g)
    y = y.to(net.dtype) if y.is_floating_point() else y
    return x.to(dtype=net.dtype, device=net.device), y.to(net.device)


def _add_grade(sub) -> None:
    from . import grade

    p = sub.add_parser("grade", help="grade a student's backward phase against autograd and finite differences",
                       description=grade.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="MODULE:FUNCTION", nargs="+",
                   help="a dotted module importable from here, or a path to a .py file, then :FUNCTION "
                        "(default function: backward); or a class: several .py files or folders of them, each "
                        "graded in its own process, one row each in --csv and --json")
    p.add_argument("--function", default="backward", help="a class's function name (default backward)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="a class's seconds per submission before it is stopped (default 120)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help=f"a class's submissions graded at once, each in its own process (default: the number of "
                        f"CPUs, {os.cpu_count() or 1})")
    p.add_argument("--csv", default=None, help="the per-layer table as CSV; for a class, its rows (default for a "
                                               "class: grades.csv)")
    p.add_argument("--json", default=None, help="the per-layer table as JSON; for a class, its rows with each "
                                                "submission's table (default for a class: grades.json)")
    p.add_argument("--loss", nargs="+", default=["squared_error"],
                   help=f"the losses to grade on, one or several: {sorted(LOSSES)}, each optionally with "
                        ":REDUCTION and :half, e.g. squared_error:sum:half (default squared_error)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"],
                   help="float64 (default: tolerance 1e-10 vs autograd) or float32 (1e-5)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0, help="seeds the battery's networks and data (default 0)")
    p.add_argument("--fd-samples", type=int, default=0,
                   help="finite differences on at most this many entries per tensor (default 0: every entry)")
    p.add_argument("--no-fd", action="store_true", help="skip the finite-difference oracle")
    p.set_defaults(func=run_grade)


def run_grade(args) -> int:
    from .grade_command import run_grade as run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="manual-backprop", description="Backprop written by hand, checked.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_check(sub)
    _add_trace(sub)
    _add_grade(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe (| head -1) shows here, not at exit
        if code == 130 and argv is None:  # the command line's run, stopped by Ctrl-C: the process exits now, and
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # one more press meanwhile is no traceback
        return code
    except (ValueError, TypeError) as err:
        print(f"manual-backprop {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C of one check, trace or grade of one file (a class stops on its own)
        if argv is None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # one more press while the process exits: no traceback
        print(f"manual-backprop {args.command}: stopped by Ctrl-C", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped reading: not an error of ours, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the interpreter's final flush does not fail again
        return 141  # 128 + SIGPIPE, what a shell reports for a command stopped by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
