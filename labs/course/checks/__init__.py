"""Check cells: tell the learner, in words, whether an exercise answer is right.

A check never crashes the notebook for a learner: an answer still set to `...` reads
"not answered yet", a wrong one reads what was expected and why, and the notebook goes on.
Under `make test` (LABS_STRICT_CHECKS=1, set by conftest.py) a wrong answer in a *solution*
raises, so a broken solution fails CI instead of printing a polite cross.

One module per chapter (as `labs.lessons`); the verdict and the number parsing every
check shares live here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: not answered yet
    message: str

    def __str__(self) -> str:
        mark = {True: "✅", False: "❌", None: "⏳"}[self.ok]
        return f"{mark} {self.message}"


def _strict() -> bool:
    return os.environ.get("LABS_STRICT_CHECKS") == "1"


def report(verdict: Verdict) -> Verdict:
    print(verdict)
    if _strict() and verdict.ok is not True:
        raise AssertionError(verdict.message)
    return verdict


def missing(name: str, value: object) -> Verdict | None:
    if value is ... or value is None:
        return Verdict(None, f"`{name}` is not answered yet: replace the `...` with your answer.")
    return None


def _number(name: str, value: object) -> float | Verdict:
    """The answer as a finite float, or the Verdict that says why it is not one."""
    if (v := missing(name, value)) is not None:
        return v
    try:
        number = float(value)  # type: ignore[arg-type]  # any learner input: the except below says why it is no number
    except (TypeError, ValueError):
        return Verdict(False, f"`{name}` should be a number, got {value!r}.")
    if not math.isfinite(number):
        return Verdict(False, f"`{name}` is {number}; it should be a finite number.")
    return number


def close_to(name: str, value: object, expected: float, *, rel: float = 0.05,
             why: str = "") -> Verdict:
    """`value` within `rel` (relative) of `expected`."""
    number = _number(name, value)
    if isinstance(number, Verdict):
        return report(number)
    if math.isclose(number, expected, rel_tol=rel):
        return report(Verdict(True, f"`{name}` = {number:,.4g}: right (expected {expected:,.4g})."))
    hint = f" {why}" if why else ""
    return report(Verdict(False, f"`{name}` = {number:,.4g}, but it should be about "
                                 f"{expected:,.4g} (within {rel:.0%}).{hint}"))


def within_factor(name: str, value: object, measured: float, *, factor: float = 2.0,
                  what: str = "the measurement") -> Verdict:
    """A prediction is good when it lands within `factor` of what was measured."""
    number = _number(name, value)
    if isinstance(number, Verdict):
        return report(number)
    if number > 0 and measured / factor <= number <= measured * factor:
        return report(Verdict(True, f"your prediction {number:,.4g} is within {factor:g}x of "
                                    f"{what} ({measured:,.4g})."))
    return report(Verdict(False, f"your prediction {number:,.4g} is more than {factor:g}x away "
                                 f"from {what} ({measured:,.4g}); revisit the reasoning."))


def _whole_number(name: str, value: object) -> int | Verdict:
    if (v := missing(name, value)) is not None:
        return v
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return Verdict(False, f"`{name}` should be a whole number, got {value!r}.")
    return value



from . import admission, batching, capacity, decode, kvcache, prefix, provision  # noqa: E402,F401  (they import the verdict above)
