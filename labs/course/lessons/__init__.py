"""Lessons asserted: what a notebook teaches, checked against what it just measured.

A notebook's lesson ("batching multiplies throughput", "the pool, not prefill, makes the
wait") is a claim about the live server. If the server did not show it, the notebook must
fail, in words, naming the lesson and the numbers, so CI cannot pass a course that taught
something untrue on the machine it ran on.

Every check takes plain numbers or the tables the notebook already has and either returns
the numbers it judged or raises `LessonNotHeld`. Margins are relative to what this machine
measured or to a band the calibrated model predicts, never an absolute time, and wide enough
that the noise of the sample cannot cross them (each module says how it sized them).

One module per chapter: `decode` (02), `batching` (03), `kvcache` (04), `admission` (05),
`prefix` (06), `capacity` (07).
"""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import LabsError


class LessonNotHeld(LabsError, AssertionError):
    """The server in front of you did not show what the notebook teaches.

    A LabsError, so a notebook shows it as one line and stops (nbmake fails); an
    AssertionError, so it reads as the failed assertion it is in tests."""


def require(lesson: str, held: bool, numbers: Mapping[str, float | int | str],
            hint: str = "") -> dict[str, float | int | str]:
    """Raise `LessonNotHeld` naming `lesson` and `numbers` unless `held`; else return them."""
    if not held:
        shown = ", ".join(f"{k} = {_fmt(v)}" for k, v in numbers.items())
        raise LessonNotHeld(f"lesson not held: {lesson} ({shown}).{' ' + hint if hint else ''}")
    return dict(numbers)


def _fmt(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# Every chapter, so a notebook reaches `labs.lessons.batching` without importing it by path
# (as `labs.checks` does); last, because each imports `held` and `LessonNotHeld` above.
from . import admission, batching, capacity, decode, kvcache, prefix  # noqa: E402,F401
