"""The numbers the README and the two guides quote, generated from one run, so they agree.

Hand-copied numbers drift: the README and the guides once quoted three different runs (04's
first TTFT 0.9 s in one place and 1.8 s in another, 07's cold start 22.6 and 20.7 s, the total
compute 11, 13 and 16 minutes). This module makes one run the only source:

    python -m labs.course.coursedocs run [--scale full|ci] [--only NB ...]
        execute the solution notebooks in order (nbclient), timing each one's wall time, into
        <results>/course_run.json; stop on the first failure, naming the notebook and cell.
    python -m labs.course.coursedocs write [--results DIR] [--root DIR] [--no-plots]
        read <results>/*.json and course_run.json; rewrite only the regions between
        `<!-- coursedocs:NAME -->` and `<!-- /coursedocs:NAME -->` in README.md and the two
        guides, and redraw each notebook's key plots into docs/reference/<notebook>/.

Writing is idempotent (a second run changes no byte), a key that a run did not save is
written "not measured" (never a crash, never a zero), and a missing marker is an error that
names the file and the marker. The reading and exercise time of each notebook is estimated by
a stated rule (`ReadingRule`), and the instructor's 3-hour plan is built from the measured
compute plus that estimate (`build_plan`), naming what is demoed or cut to fit.

The package, one job per module:
    runresults     Results: one results folder read; the numbers written from it (num, secs, ...)
    notebookfacts  what each notebook is about (prose) and its key numbers, one line (`facts`)
    timing         ReadingRule and NotebookTime: each notebook's reading, exercises and compute
    plan           build_plan: the instructor's 3-hour plan, and what is demoed or cut to fit
    regions        the docs' generated regions, `fill` and `write`
    references     the reference plots in docs/reference/ and their index
    runner         `run`: the solution notebooks executed in order, each one timed
    cli            `python -m labs.course.coursedocs run|write`
"""

from .cli import main
from .notebookfacts import ASK, FACTS, FOCUS, QUESTION, SHOULD_SEE, facts
from .plan import (
    BREAKS,
    CUT_LADDER,
    MODES,
    NEVER_BELOW_LIVE,
    SESSION_MIN,
    SHOWN_MIN,
    SLACK_MIN,
    WELCOME_MIN,
    WRAP_UP_MIN,
    Plan,
    block_min,
    build_plan,
)
from .references import REFERENCES, Reference, write_references
from .regions import (
    DOC_REGIONS,
    INLINE,
    REGIONS,
    fill,
    region_course_map,
    region_notebook_times,
    region_plan,
    region_predict,
    region_self_paced,
    region_self_paced_total,
    region_server_ready,
    region_total_compute,
    write,
)
from .runner import cpu_description, execute_notebook, run
from .runresults import (
    LEGACY_SOURCE,
    NOT_MEASURED,
    NOTEBOOKS,
    ROOT,
    RUN_FILE,
    Results,
    at,
    minutes,
    num,
    pct,
    row,
    secs,
)
from .timing import (
    DEFAULT_UNMEASURED_COMPUTE_S,
    RULE,
    Counts,
    NotebookTime,
    ReadingRule,
    count,
    notebook_times,
    notebooks,
    title,
)

__all__ = [
    # runresults
    "ROOT", "NOT_MEASURED", "RUN_FILE", "NOTEBOOKS", "LEGACY_SOURCE", "Results", "at", "row",
    "num", "secs", "pct", "minutes",
    # notebookfacts
    "QUESTION", "SHOULD_SEE", "ASK", "FOCUS", "FACTS", "facts",
    # timing
    "ReadingRule", "RULE", "Counts", "count", "title", "DEFAULT_UNMEASURED_COMPUTE_S",
    "NotebookTime", "notebooks", "notebook_times",
    # plan
    "SESSION_MIN", "SLACK_MIN", "WELCOME_MIN", "WRAP_UP_MIN", "BREAKS", "SHOWN_MIN", "MODES",
    "NEVER_BELOW_LIVE", "CUT_LADDER", "block_min", "Plan", "build_plan",
    # regions
    "region_notebook_times", "region_plan", "region_self_paced", "region_course_map",
    "region_predict", "region_total_compute", "region_self_paced_total", "region_server_ready",
    "REGIONS", "INLINE", "DOC_REGIONS", "fill", "write",
    # references
    "Reference", "REFERENCES", "write_references",
    # runner
    "cpu_description", "run", "execute_notebook",
    # cli
    "main",
]
