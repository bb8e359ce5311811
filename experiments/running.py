"""How a script runs: bad flags, files and settings as one line and exit 2, Ctrl-C as exit 130 with the command
that resumes the run, and the progress bars only on a terminal (re-exported by experiments/common.py)."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import warnings
from typing import Any, Callable, Optional, Sequence

__all__ = ["USER_ERRORS", "progress_bars", "resume_command", "run_main"]

# What run_main turns into one line and exit status 2: bad flags, files and settings, however deep they surface.
# RuntimeError: what torch raises for a tensor that does not fit (a damaged checkpoint's state, a wrong dtype).
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)


def progress_bars(quiet: bool = False) -> bool:
    """Whether a script draws progress bars: not with --quiet, and not when stderr (where tqdm draws) is not a
    terminal, where every redraw would be one more line of a log file."""
    return not quiet and sys.stderr.isatty()


def resume_command(name: str, argv: Sequence[str], run_name: str) -> str:
    """The command that continues run ``run_name``: the same flags, ``--run NAME --resume`` in place of any
    ``--run`` / ``--resume`` given (under torchrun, the same launcher line)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--run", "--run-name"):
            skip = True
            continue
        if arg.startswith(("--run=", "--run-name=")) or arg in ("--resume", "--no-resume"):
            continue
        kept.append(arg)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    launcher = (f"torchrun --standalone --nproc_per_node={world} -m" if world > 1 else "python -m")
    run_flag = "--run-name" if world > 1 else "--run"  # torchrun takes --run for an abbreviation of its --run-path
    return f"{launcher} experiments.{name} " + shlex.join([*kept, run_flag, run_name, "--resume"])


def run_main(name: str, parse: Callable, run: Callable, argv=None, *, errors: tuple = (),
             status: Optional[Callable[[Any], int]] = None) -> int:
    """Parse, run, and turn a bad flag, file or setting into one line and exit status 2; Ctrl-C into exit 130.

    ``errors``: further exception types this script reports the same way. ``status(result)``: the exit status of a
    run that finished (default 0), from what ``run`` returned. On Ctrl-C (KeyboardInterrupt, no traceback) it
    prints what was saved and the command that resumes the run (session.py), exactly as it must be typed.
    """
    from experiments import _interrupted_while_starting
    from experiments.session import Interrupted, current_session

    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # from here on, Ctrl-C is handled below
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = None
    shown = warnings.formatwarning  # a warning reads as one line of this script, not as a source line of the library
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"{name}: warning: {message}\n"
    try:
        cfg = parse(argv)
        result = run(cfg)
    except (*USER_ERRORS, *errors) as err:
        if not getattr(err, "reported_by_rank0", False):  # under torchrun, one line for the job, not one per rank
            print(f"{name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if int(os.environ.get("RANK", "0") or 0) != 0:  # under torchrun rank 0 says it, once for the job
            return 130
        session = interrupt.session if isinstance(interrupt, Interrupted) else current_session()
        run_name = session.name if session is not None else getattr(cfg, "_run_name", None)
        if run_name is None:
            print(f"\n{name}: interrupted before a run folder was opened; nothing was written", file=sys.stderr)
        else:
            saved = session.saved() if session is not None else getattr(cfg, "_saved", "the checkpoints are saved")
            print(f"\n{name}: interrupted; {saved}. Continue with:\n  {resume_command(name, argv, run_name)}",
                  file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown
    return status(result) if status is not None else 0


