"""python -m experiments.plotting RUN_DIR OUT: the figures and report.html of a finished run folder.

RUN_DIR is <logdir>/<experiment>/<run>; the experiment is the name of its parent folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.common import USER_ERRORS
from experiments.plotting import write_plots
from experiments.plotting.figures import FIGURES
from experiments.plotting.report import check_run_dir


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.plotting", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder, <logdir>/<experiment>/<run>")
    parser.add_argument("out", help="folder for the PNG and SVG figures and report.html")
    parser.add_argument("--experiment", choices=sorted(FIGURES), default=None,
                        help="which experiment wrote the run (default: the name of RUN_DIR's parent folder)")
    args = parser.parse_args(argv)
    try:
        check_run_dir(args.run_dir)
        experiment = args.experiment or Path(args.run_dir).resolve().parent.name
        paths = write_plots(experiment, args.run_dir, args.out)
    except USER_ERRORS as err:
        print(f"plotting: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} files to {args.out}, among them {Path(args.out) / 'report.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
