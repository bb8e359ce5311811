"""The lecture's experiments, one script each: ``python -m experiments.<name> --help``."""

import signal as _signal
import sys as _sys


def _interrupted_while_starting(signum, frame):
    """Ctrl-C while ``python -m experiments.<name>`` still imports torch: nothing was written, and no traceback."""
    print("\ninterrupted while starting; nothing was written", file=_sys.stderr)
    raise SystemExit(130)


# Only when run as ``python -m experiments.<name>`` (sys.argv[0] is "-m" while the package loads); run_main puts
# Python's own handler back before it parses a flag, so Ctrl-C during a run is a KeyboardInterrupt it handles.
if _sys.argv[:1] == ["-m"] and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _interrupted_while_starting)
