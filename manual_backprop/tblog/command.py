"""``tensorboard_command``: the shell command that opens TensorBoard on a run folder (or an experiment folder)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import Optional

from ..checks import check_int
from ..checkpoint import PathLike


def tensorboard_command(logdir: PathLike, *, port: Optional[int] = None, host: Optional[str] = None) -> str:
    """The shell command that opens TensorBoard on ``logdir``, e.g. ``tensorboard --logdir runs/learning_modes/run1``.

    Uses the ``tensorboard`` script when it is on PATH, else ``<this python> -m tensorboard.main``, which works
    wherever tensorboard is importable (also when pip put its scripts outside PATH).
    """
    if shutil.which("tensorboard"):
        prefix = ["tensorboard"]
    else:
        prefix = [sys.executable, "-m", "tensorboard.main"]
    args = prefix + ["--logdir", str(logdir)]
    if host is not None:
        args += ["--host", str(host)]
    if port is not None:
        args += ["--port", str(check_int("port", port, minimum=0))]
    if os.name == "nt":
        return subprocess.list2cmdline(args)
    return " ".join(shlex.quote(a) for a in args)
