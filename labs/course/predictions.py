"""The learner's own prediction, scored beside the model's and the measurement.

A notebook asks for a number before it reveals anything (a cell tagged `exercise`, like
`my_gain = ...`), then, once the measurement exists, calls

    labs.predictions.score("aggregate gain at the top level", mine=my_gain,
                           model=gain["predicted_gain"], measured=gain["gain"],
                           high="what a guess too high points to", low="... too low")

which prints a compact table (the three numbers) and a short verdict: how far off the guess is,
as a factor, and which assumption that points to (the caller's `high` or `low` hint).

A prediction is scored, never checked: a wrong one, a missing one (`...`) or one that is not a
number prints what it is and the notebook goes on, also under LABS_STRICT_CHECKS=1. Only the
learner's reasoning can be wrong here; labs.checks is where answers are right or wrong.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Literal

# Within this factor of the measurement a prediction is "right on": no hint is needed.
RIGHT_ON = 1.25
# Beyond RIGHT_ON, how far off in words, by the factor it is off.
GRADES = ((2.0, "close"), (4.0, "off"), (math.inf, "far off"))

WIDTH = 96  # the verdict's lines, so that it reads without scrolling in a notebook

Direction = Literal["high", "low", "right"]
Status = Literal["scored", "not predicted yet", "not a number", "not measured"]


@dataclass(frozen=True)
class Scored:
    """One prediction, scored. `status` says whether it could be; `factor` is how many times
    the guess is off the measurement (>= 1, either way), None where no ratio applies (not
    scored, or zero or negative numbers); `direction` is None only when not scored."""

    what: str
    mine: float | None
    model: float | None
    measured: float | None
    factor: float | None
    direction: Direction | None
    verdict: str
    status: Status = "scored"

    @property
    def answered(self) -> bool:
        return self.status != "not predicted yet"

    def table(self) -> str:
        mine_note = self.status if self.status in ("not predicted yet", "not a number") else ""
        rows = [("you", self.mine, mine_note),
                ("model", self.model, _relative(self.model, self.measured)),
                ("measured", self.measured, "" if self.measured is not None else "not measured")]
        width = max(len(format_number(v)) for _, v, _ in rows)
        lines = [f"Prediction: {self.what}"]
        lines += [f"  {label:<9}{format_number(value):>{width}}   {note}".rstrip()
                  for label, value, note in rows]
        lines += textwrap.wrap(self.verdict, WIDTH, initial_indent="  ", subsequent_indent="    ")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def score(what: str, *, mine: object, model: object, measured: object, high: str,
          low: str) -> Scored:
    """Score the learner's `mine` against `measured`, show `model` beside it, print the table.
    `high` says what a guess too high points to, `low` one too low. Never raises."""
    model_n, measured_n = _number(model), _number(measured)
    scored = _judge(what, mine, model_n, measured_n, high=high, low=low)
    print(scored.table())
    return scored


def _judge(what: str, mine: object, model: float | None, measured: float | None, *,
           high: str, low: str) -> Scored:
    def done(verdict: str, number: float | None = None, factor: float | None = None,
             direction: Direction | None = None, status: Status = "scored") -> Scored:
        return Scored(what, number, model, measured, factor, direction, verdict, status)

    if mine is ... or mine is None:
        return done("⏳ not predicted yet: replace the `...` with your number and run the cell "
                    "again; the model's and the measured number are shown anyway.",
                    status="not predicted yet")
    number = _number(mine)
    if number is None:
        return done(f"⏳ your prediction should be a finite number, got {mine!r}: write one "
                    "(e.g. 12, or 0.5) and run the cell again.", status="not a number")
    if measured is None:
        return done("⏳ nothing measured to score it against.", number, status="not measured")
    if number == measured:
        return done("✅ exactly the measurement.", number, 1.0, "right")
    side: Direction = "high" if number > measured else "low"
    hint = high if side == "high" else low
    if number <= 0 or measured <= 0:  # a ratio of these says nothing: give the difference
        return done(f"❌ {format_number(abs(number - measured))} too {side} (zero or negative "
                    f"numbers have no factor). You guessed {side}: {hint}", number, None, side)
    factor = max(number / measured, measured / number)
    closer = _closer(factor, model, measured)
    if factor <= RIGHT_ON:
        return done(f"✅ right on: within {_times(factor)} of the measurement{closer}.",
                    number, factor, "right")
    grade = next(word for limit, word in GRADES if factor <= limit)
    return done(f"{'🟡' if grade == 'close' else '❌'} {grade}: {_times(factor)} too "
                f"{side}{closer}. You guessed {side}: {hint}", number, factor, side)


def _closer(factor: float, model: float | None, measured: float) -> str:
    if model is None or model <= 0:
        return ""
    model_factor = max(model / measured, measured / model)
    if math.isclose(factor, model_factor, rel_tol=0.02):
        return "; as close as the model"
    return "; closer than the model" if factor < model_factor else "; the model was closer"


def _number(value: object) -> float | None:
    """A finite float, or None for `...`, None, NaN, infinities and anything not a number."""
    if value is ... or value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]  # any learner input, checked by the except
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _relative(model: float | None, measured: float | None) -> str:
    if model is None:
        return "no model prediction"
    if measured is None or measured <= 0 or model <= 0:
        return ""
    if math.isclose(model, measured, rel_tol=0.005):
        return "(= the measurement)"
    side = "high" if model > measured else "low"
    return f"({_times(max(model / measured, measured / model))} {side})"


def _times(factor: float) -> str:
    return f"{factor:.2f}x" if factor < 10 else f"{factor:,.0f}x"


def format_number(value: float | None) -> str:
    """A number as the score table shows it: a count with thousands separators, a measurement
    to about three significant digits, a missing one as a dash."""
    if value is None:
        return "—"
    size = abs(value)
    if value == int(value) and size < 1e15:  # a count stays a count
        return f"{int(value):,}"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:#.3g}"
