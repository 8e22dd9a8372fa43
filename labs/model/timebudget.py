"""Runs sized to a time budget, from the calibrated model's predicted duration.

Sizing a run by request counts alone makes a slow machine pay in time: the same 256 requests
take 46 s on one CPU and 120 s on another. Each notebook instead states how long it may
compute (`BUDGETS`, at CI size and at full size) and gives each run a share of that. A run
picks the *largest* candidate size whose duration, replayed on this server's calibration,
fits its share, so a slow CPU runs a smaller experiment that still shows the effect, and a
fast one a larger, smoother one. Every run prints its predicted and its actual duration, and
the notebook saves both (`NotebookBudget.records`), so a plan that does not fit is visible.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Generic, TypeVar

from ..errors import ConfigError
from ..settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """Seconds of compute a notebook may spend at each scale (not counting engine restarts,
    which the notebook does not choose)."""

    ci_s: float
    full_s: float

    def seconds(self, settings: Settings) -> float:
        return self.ci_s if settings.is_ci_scale else self.full_s


# The plan of the course, in seconds of compute per notebook. The instructor guide's plan is
# built from these and from a measured full-size run (python -m labs.course.coursedocs).
BUDGETS: dict[str, Budget] = {
    "01_provision": Budget(ci_s=50, full_s=180),
    "02_bandwidth_ceiling": Budget(ci_s=45, full_s=150),
    "03_continuous_batching": Budget(ci_s=180, full_s=420),
    "03b_arrivals_and_goodput": Budget(ci_s=130, full_s=420),
    "04_kv_cache_exhaustion": Budget(ci_s=90, full_s=150),
    "05_bounded_admission": Budget(ci_s=140, full_s=420),
    "06_prefix_caching": Budget(ci_s=45, full_s=150),
    "07_capacity_and_cost": Budget(ci_s=50, full_s=240),
}


@dataclass(frozen=True)
class Plan(Generic[T]):
    """A run's chosen size and why: `choice` is the largest candidate predicted to fit."""

    run: str
    choice: T
    predicted_s: float
    budget_s: float
    candidates: int

    @property
    def fits(self) -> bool:
        return self.predicted_s <= self.budget_s

    def describe(self) -> str:
        verdict = "fits" if self.fits else "the smallest of the candidates, still OVER"
        return (f"{self.run}: {self.choice!r}, predicted {self.predicted_s:.0f} s of a "
                f"{self.budget_s:.0f} s budget ({verdict})")


def largest_within(run: str, candidates: Sequence[T], predict_s: Callable[[T], float],
                   budget_s: float) -> Plan[T]:
    """The last of `candidates` (ordered smallest to largest) whose predicted duration fits
    `budget_s`; the first when none fits (`Plan.fits` is then False and says so): the lesson
    needs at least the smallest run, and a slow machine pays for it in time, visibly."""
    if not candidates:
        raise ConfigError(f"{run}: no candidate sizes to choose from.")
    if budget_s <= 0:
        raise ConfigError(f"{run}: a time budget must be positive, not {budget_s}.")
    chosen, chosen_s = candidates[0], predict_s(candidates[0])
    for candidate in candidates[1:]:
        seconds = predict_s(candidate)
        if seconds > budget_s:
            break
        chosen, chosen_s = candidate, seconds
    return Plan(run, chosen, chosen_s, budget_s, len(candidates))


@dataclass
class Timing:
    run: str
    predicted_s: float
    budget_s: float
    actual_s: float | None = None

    @property
    def error_pct(self) -> float | None:
        if self.actual_s is None or not self.actual_s:
            return None
        return 100 * (self.predicted_s - self.actual_s) / self.actual_s


@dataclass
class NotebookBudget:
    """One notebook's compute budget, shared out among its runs, and the record of each."""

    notebook: str
    total_s: float
    records: list[Timing] = field(default_factory=list)

    reserved_s: float = 0.0

    def reserve(self, run: str, seconds: float) -> None:
        """Take `seconds` out of the budget for work the notebook does not size (01's
        calibration, 07's cold start): the runs it does size then share what is left, so a
        notebook that spent its budget on fixed work says so instead of printing "fits"."""
        self.reserved_s += max(0.0, seconds)
        self.records.append(Timing(run, seconds, seconds, seconds))

    @contextmanager
    def fixed(self, run: str) -> Iterator[None]:
        """Time work the notebook does not size, and `reserve` what it took."""
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.reserve(run, took)
            print(f"{run}: took {took:.0f} s (fixed work; the sized runs share the rest)")

    def share(self, fraction: float) -> float:
        """Seconds for one run: `fraction` of what is left of the budget after `reserve`
        (never less than a tenth of the whole: the smallest run still runs and says OVER)."""
        if not 0 < fraction <= 1:
            raise ConfigError(f"a run's share of the budget is in (0, 1], not {fraction}.")
        return fraction * max(self.total_s - self.reserved_s, 0.1 * self.total_s)

    def plan(self, run: str, candidates: Sequence[T], predict_s: Callable[[T], float],
             fraction: float) -> Plan[T]:
        """`largest_within` on this notebook's `share(fraction)`, printed."""
        chosen = largest_within(run, candidates, predict_s, self.share(fraction))
        print(chosen.describe())
        return chosen

    @contextmanager
    def timed(self, run: str, predicted_s: float,
              budget_s: float | None = None) -> Iterator[Timing]:
        """Time a run against its prediction; prints both when it ends (also on error)."""
        timing = Timing(run, predicted_s, budget_s if budget_s is not None else self.total_s)
        self.records.append(timing)
        start = time.perf_counter()
        try:
            yield timing
        finally:
            timing.actual_s = time.perf_counter() - start
            print(f"{run}: took {timing.actual_s:.0f} s, predicted {predicted_s:.0f} s "
                  f"({timing.error_pct:+.0f} %)")

    def run(self, chosen: Plan[object]) -> AbstractContextManager[Timing]:
        """`timed` for a `Plan`."""
        return self.timed(chosen.run, chosen.predicted_s, chosen.budget_s)

    def to_records(self) -> list[dict[str, object]]:
        """What a notebook saves: each run's predicted and actual seconds."""
        return [{**asdict(t), "error_pct": t.error_pct} for t in self.records]

    def summary(self) -> str:
        spent = sum(t.actual_s or 0 for t in self.records)
        predicted = sum(t.predicted_s for t in self.records)
        return (f"{self.notebook}: {spent:.0f} s of runs (predicted {predicted:.0f} s) "
                f"against a budget of {self.total_s:.0f} s")


def for_notebook(notebook: str, settings: Settings | None = None) -> NotebookBudget:
    """The budget of `notebook` (a key of `BUDGETS`) at this run's scale, printed."""
    if notebook not in BUDGETS:
        raise ConfigError(f"no time budget for {notebook!r}; add it to "
                          "labs.timebudget.BUDGETS.")
    settings = settings or Settings.from_env()
    budget = BUDGETS[notebook]
    nb = NotebookBudget(notebook, budget.seconds(settings))
    scale = "CI" if settings.is_ci_scale else "full"
    print(f"compute budget: {nb.total_s:.0f} s at {scale} size "
          f"(CI {budget.ci_s:.0f} s, full {budget.full_s:.0f} s)")
    return nb


# --------------------------------------------------------------------------------------------
# make test, planned

# The course's goal for `make test`'s pytest time on the slowest CPU it has met (15 min better).
MAKE_TEST_GOAL_S = 20 * 60
# The engine starts of one `make test` that no notebook times, in the order its tests and
# notebooks need them (conftest.py orders 06 and the browser tests onto 04's server): naive
# (the tests, 00-04), kv-pressure (04, the browser tests, 06, 05's a), engine-queue, bounded
# with 05's token cap, gateway (05's b, d and closing runs). The sixth, 07's cold start, is
# its lesson and timed inside its budget.
MAKE_TEST_ENGINE_STARTS = 5


@dataclass(frozen=True)
class MakeTestPlan:
    """`make test`'s pytest time on one machine, planned. Only the notebooks' sized runs
    have a calibrated prediction (`runs_s`: each notebook's planned seconds on the machine's
    calibration). Engine starts and the rest (unit tests, notebook kernels, imports and
    plots, the live gateway and browser tests) no calibration predicts: they are taken from
    a measured run (`start_s`, `rest_s`) and multiplied by how much slower the machine is at
    plain Python work (`slowdown`)."""

    runs_s: dict[str, float]
    start_s: float
    rest_s: float
    slowdown: float = 1.0
    engine_starts: int = MAKE_TEST_ENGINE_STARTS

    @property
    def fixed_s(self) -> float:
        return self.slowdown * (self.engine_starts * self.start_s + self.rest_s)

    @property
    def total_s(self) -> float:
        return sum(self.runs_s.values()) + self.fixed_s

    def describe(self) -> str:
        runs = ", ".join(f"{name.split('_')[0]} {s:.0f}" for name, s in self.runs_s.items())
        return (f"make test planned {self.total_s / 60:.1f} min: runs "
                f"{sum(self.runs_s.values()):.0f} s ({runs}) + {self.engine_starts} starts x "
                f"{self.start_s:.0f} s + rest {self.rest_s:.0f} s, x {self.slowdown:g}")
