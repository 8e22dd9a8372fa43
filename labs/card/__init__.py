"""The results card: what notebooks 01-07 measured on one machine, on one page, beside the article.

    python -m labs card [--results DIR] [--out PATH]     this machine (default results/card.html)
    python -m labs card --compare A B [--out PATH]       two machines in adjacent columns

A and B are results folders or the card.json of a card made elsewhere. Every card writes a JSON
summary beside its HTML (card.json), so a comparison never re-parses HTML. The card reads only
what the notebooks saved with `labs.experiments.save` (the article's figures come from
`labs.article`). A notebook not run yet, a half-written file or a file from another schema
version becomes a sentence on the page, never a crash.

Three layers, each calling only the one below (one module each, plus the table they share):
    data.summarize(results_dir) -> summary (a JSON-ready dict: values and series per section)
                                   read by extract.py's extractors, one per sections.py Section
    plots                          summaries -> PNG (matplotlib's object API, no pyplot state)
    render.render_html / write_card summaries -> one self-contained HTML page (+ its JSON)
cli.py registers the `card` verb on `python -m labs` (`add_cli`, imported by labs.__main__).
"""

from __future__ import annotations

from .cli import add_cli
from .data import load_summary, machine_label, summarize
from .render import fmt, render_html, write_card
from .sections import SECTIONS

__all__ = ["SECTIONS", "summarize", "load_summary", "machine_label", "render_html", "write_card",
           "fmt", "add_cli"]
