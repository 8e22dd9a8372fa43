"""`python -m labs.course.coursedocs run|write`: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ...errors import LabsError
from ...settings import Settings
from . import __doc__ as PACKAGE_DOC
from .regions import write
from .runner import run
from .runresults import ROOT


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.course.coursedocs", description=PACKAGE_DOC.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p_run = verbs.add_parser("run", help="execute the solution notebooks, timing each")
    p_run.add_argument("--scale", choices=("full", "ci"), default="full")
    p_run.add_argument("--only", nargs="+", default=(), metavar="NB", help="notebook stems")
    p_run.add_argument("--cell-timeout", type=float, default=1800, help="seconds per cell")
    p_write = verbs.add_parser("write", help="fill the docs' regions and the reference plots")
    p_write.add_argument("--results", type=Path, default=None, help="default <results>")
    p_write.add_argument("--root", type=Path, default=ROOT, help="the repository to write into")
    p_write.add_argument("--no-plots", action="store_true", help="leave docs/reference/ alone")
    args = parser.parse_args(argv)
    try:
        if args.verb == "run":
            return run(args.scale, args.only, args.cell_timeout)

        results = args.results or Settings.from_env().results_dir
        changed = write(results, args.root, plots=not args.no_plots)
        for path in changed:
            print(f"wrote {path}")
        print("nothing changed" if not changed else f"{len(changed)} file(s) changed")
        return 0
    except LabsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
