"""The results card: what notebooks 01-07 measured on one machine, on one page, beside the article.

    python -m labs card [--results DIR] [--out PATH]     this machine (default results/card.html)
    python -m labs card --compare A B [--out PATH]       two machines in adjacent columns

(The first line is the verb's --help description.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings
from .data import _labels, has_data, load_summary, summarize
from .render import write_card


def _cmd_card(args: argparse.Namespace) -> int:
    if args.compare:
        summaries = [load_summary(p) for p in args.compare]
        out = args.out or Settings.from_env().results_dir / "card-compare.html"
    else:
        results = args.results or Settings.from_env().results_dir
        summaries = [summarize(results)]
        out = args.out or Path(results) / "card.html"
    path = write_card(summaries, out)
    for label, s in zip(_labels(summaries), summaries, strict=True):
        todo = [v["notebook"][:2] for v in s["sections"].values() if not has_data(v)]
        if todo:
            print(f"card: {label}: no results yet from notebook {', '.join(todo)}",
                  file=sys.stderr)
    print(path)
    return 0


def add_cli(verbs: Any) -> None:
    """Register `card` on the `python -m labs` subparsers."""
    p = verbs.add_parser("card", help="one HTML page of what notebooks 01-07 measured, beside "
                                      "the article (and a card.json)",
                         description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--results", type=Path, default=None, metavar="DIR",
                       help="results folder (default: LABS_RESULTS or ./results)")
    which.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                       help="two results folders or card.json files, side by side")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="where to write the page (default: card.html in the results folder, "
                        "card-compare.html with --compare); the summary goes beside it as .json")
    p.set_defaults(func=_cmd_card)

