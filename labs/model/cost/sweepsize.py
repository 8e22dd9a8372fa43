"""Sizing 07's measured sweep to its time budget (`labs.timebudget`): the sweeps worth
measuring around a predicted operating point, each timed by the calibrated replay."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...workload import Burst, Closed
from ..simulate import replay

# --------------------------------------------------------------------------------------------
# Sizing 07's sweep to its time budget


@dataclass(frozen=True)
class SweepSize:
    """Which levels a sweep measures and how many rounds of requests each (a level of c users
    sends max(c x rounds, 4) requests, as `labs.experiments.predicted_sweep` replays it)."""

    levels: tuple[int, ...]
    rounds: int

    def __repr__(self) -> str:
        return f"levels {', '.join(map(str, self.levels))} x {self.rounds} round(s)"


def sweep_sizes(candidates: Sequence[int], operating_point: int,
                rounds: Sequence[int] = (1, 2)) -> list[SweepSize]:
    """Sweeps worth measuring, each with one user alone (the target's reference) and the
    doublings around the predicted `operating_point`, from the narrowest bracket (half to
    twice the point: the least that shows where the target binds) to every candidate level;
    each bracket at every number of `rounds`. Unordered by time: sort by `sweep_seconds`."""
    sizes: list[SweepSize] = []
    for width in range(1, len(candidates) + 1):
        low, high = operating_point / 2 ** width, operating_point * 2 ** width
        levels = tuple(c for c in candidates if c == 1 or low <= c <= high)
        for n in rounds:
            size = SweepSize(levels, n)
            if size not in sizes:
                sizes.append(size)
    return sizes


def sweep_seconds(steps: Any, limits: Any, size: SweepSize, *, prompt_tokens: int,
                  output_tokens: int) -> float:
    """The sweep's duration predicted by the calibrated replay: each level in a closed loop,
    one after the other, and the two warm-up requests sent alone before the first."""
    warm = replay(steps, limits, Burst(1), prompt_tokens, output_tokens).duration_s
    return 2 * warm + sum(replay(steps, limits, Closed(c, requests=max(c * size.rounds, 4)),
                                 prompt_tokens, output_tokens).duration_s for c in size.levels)
