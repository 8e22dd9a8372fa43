"""The instructor's 3-hour plan, built from each notebook's measured compute plus the reading
estimate (`build_plan`): every notebook live, then the `CUT_LADDER`'s steps (demoed, shown,
homework) one by one until the session fits, naming what is demoed or cut."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .notebookfacts import FOCUS
from .runresults import NOTEBOOKS
from .timing import RULE, NotebookTime, ReadingRule

SESSION_MIN = 180
SLACK_MIN = 5  # a plan that ends on the minute has no room for one question: keep five
WELCOME_MIN, WRAP_UP_MIN = 10, 5
BREAKS = ((50, 10), (115, 5))  # (after the notebook that ends at or past this minute, length)
SHOWN_MIN = 5                  # walk through the reference plots instead of running it
MODES = ("live", "demo", "shown", "homework")
NEVER_BELOW_LIVE = ("00_smoke", "01_provision", "04_kv_cache_exhaustion")
# What gives way first when the notebooks do not fit, one step at a time. 04 never does: it
# is the centre of the story, and 06's payoff needs it.
CUT_LADDER: tuple[tuple[str, str], ...] = (
    ("06_prefix_caching", "demo"), ("03b_arrivals_and_goodput", "demo"),
    ("07_capacity_and_cost", "demo"), ("02_bandwidth_ceiling", "demo"),
    ("06_prefix_caching", "shown"), ("03b_arrivals_and_goodput", "shown"),
    ("07_capacity_and_cost", "shown"), ("03_continuous_batching", "demo"),
    ("05_bounded_admission", "demo"), ("06_prefix_caching", "homework"),
    ("03b_arrivals_and_goodput", "homework"), ("07_capacity_and_cost", "homework"),
    ("02_bandwidth_ceiling", "shown"),
)


def block_min(t: NotebookTime, mode: str, rule: ReadingRule = RULE) -> int:
    """Whole minutes a notebook takes in the session in `mode` (see `ReadingRule`)."""
    running = max(t.compute_s / 60, t.talk_min(rule))
    if mode == "live":
        minutes_ = running + t.counts.doing_min(rule)
    elif mode == "demo":
        minutes_ = running + t.counts.predictions * rule.prediction_min
    elif mode == "shown":
        minutes_ = min(SHOWN_MIN, running)
    else:
        minutes_ = 0
    return math.ceil(minutes_)


@dataclass
class Plan:
    modes: dict[str, str]
    minutes: dict[str, int]
    rows: list[tuple[int, int, str, str, str]] = field(default_factory=list)

    @property
    def total_min(self) -> int:
        return sum(m for _, m, _, _, _ in self.rows)

    @property
    def fits(self) -> bool:
        return self.total_min <= SESSION_MIN - SLACK_MIN


def build_plan(times: Sequence[NotebookTime], rule: ReadingRule = RULE) -> Plan:
    """Every notebook live, then the `CUT_LADDER`'s steps one by one until the session fits
    `SESSION_MIN` with the welcome, the breaks and the wrap-up."""
    by_name = {t.notebook: t for t in times}
    modes = {t.notebook: "live" for t in times}
    fixed = WELCOME_MIN + WRAP_UP_MIN + sum(m for _, m in BREAKS)
    ladder = [(nb, "demo") for nb in modes if nb not in NOTEBOOKS] + list(CUT_LADDER)

    def total() -> int:
        return fixed + sum(block_min(by_name[nb], mode, rule) for nb, mode in modes.items())

    for nb, mode in ladder:
        if total() <= SESSION_MIN - SLACK_MIN:
            break
        if nb in modes and nb not in NEVER_BELOW_LIVE and MODES.index(mode) > MODES.index(modes[nb]):
            modes[nb] = mode
    minutes_ = {nb: block_min(by_name[nb], mode, rule) for nb, mode in modes.items()}
    plan = Plan(modes, minutes_)
    clock, breaks = 0, list(BREAKS)
    plan.rows.append((clock, WELCOME_MIN, "Welcome and the story", "all",
                      "The article's claim in one slide: the deployment works, then fails quietly "
                      "under load. Everyone runs `.venv/bin/python -m labs status`."))
    clock += WELCOME_MIN
    for nb, mode in modes.items():
        if mode == "homework":
            continue
        t = by_name[nb]
        plan.rows.append((clock, minutes_[nb], f"`{nb}`", mode, _plan_note(t, mode)))
        clock += minutes_[nb]
        if breaks and clock >= breaks[0][0]:
            plan.rows.append((clock, breaks[0][1], "Break", "", ""))
            clock += breaks.pop(0)[1]
    for _, length in breaks:
        plan.rows.append((clock, length, "Break", "", ""))
        clock += length
    homework = [nb for nb, mode in modes.items() if mode == "homework"]
    plan.rows.append((clock, WRAP_UP_MIN, "The results card", "all",
                      "`.venv/bin/python -m labs card`, compare with a neighbour (`--compare`)."
                      + (f" Homework: {', '.join(f'`{nb}`' for nb in homework)}." if homework else "")))
    return plan


def _plan_note(t: NotebookTime, mode: str) -> str:
    focus = FOCUS.get(t.notebook, "")
    compute = f"compute ~{max(1, round(t.compute_s / 60))} min"
    if mode == "live":
        return (f"Attendees run it ({compute}; {t.counts.predictions} prediction(s), "
                f"{t.counts.exercises} exercise(s)). {focus}")
    if mode == "demo":
        ask = "ask for the prediction first; " if t.counts.predictions else ""
        return f"Run it on the projector ({compute}); {ask}exercises are homework. {focus}"
    return (f"Show its reference plots (docs/reference/{t.notebook}/) and its row in the table; "
            f"attendees run it after the session.")
