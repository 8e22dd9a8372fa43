"""Workloads sized from the server in front of you, never from a constant tuned on one box.

Each function takes what was measured (`ServerLimits`, a `StepCost`) and returns a workload
that shows the course's effect on *this* server: an overload that is a stated multiple of
what the uncapped engine can serve, concurrency levels that reach past the predicted knee.
(04's KV burst is designed in `labs.kvwait`, which replays it on two pools.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..results.analysis import find_cliff
from .simulate import predict_closed
from .steps import ServerLimits, StepCost


def fit_at_once(limits: ServerLimits, prompt_tokens: int, output_tokens: int) -> int:
    """How many such requests hold their whole KV at the same time (whole blocks each):
    `ServerLimits.fit_at_once` of prompt + output, the one place it is computed."""
    return limits.fit_at_once(prompt_tokens + output_tokens)


@dataclass(frozen=True)
class Overload:
    rate_rps: float
    capacity_rps: float
    multiple: float
    requests: int
    capacity_source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overload(capacity_rps: float, slots: int, *, multiple: float = 2.0, requests: int = 60,
             capacity_source: str = "") -> Overload:
    """Arrivals at `multiple` x what the *uncapped* engine completes per second
    (`capacity_rps`, measured by `labs.experiments.measure_capacity` or predicted by
    `labs.simulate.capacity_rps`): beyond what the whole engine can serve, so its backlog
    grows for as long as the run lasts.

    At least 3 x as many requests as the engine runs at once (`slots`): at 2x, half of what
    arrives is still waiting when the last one arrives, and a backlog smaller than the
    engine's slots would all be running, not waiting."""
    if multiple < 1.5:
        raise ConfigError(f"an overload of {multiple}x is not one; use 1.5 or more.")
    if not capacity_rps > 0:
        raise ConfigError(f"capacity must be a positive rate, not {capacity_rps!r}.")
    return Overload(multiple * capacity_rps, capacity_rps, multiple,
                    max(requests, 3 * slots), capacity_source)


def concurrency_levels(cost: StepCost, limits: ServerLimits, *, prompt_tokens: int,
                       max_tokens: int, min_gain: float = 0.15,
                       beyond_knee: int = 2) -> tuple[list[int], int | None]:
    """Doubling levels from 1 to `beyond_knee` doublings past the predicted knee, capped at
    twice max_num_seqs. The knee is `labs.results.analysis.find_cliff` of the predicted sweep, the
    same rule notebook 03 applies to the measured one, so the two can be compared.
    Returns (levels, predicted knee or None)."""
    cap = 2 * limits.max_num_seqs
    levels = [1]
    while levels[-1] * 2 <= cap:
        levels.append(levels[-1] * 2)
    rows = predict_closed(cost, limits, levels, prompt_tokens=prompt_tokens,
                          max_tokens=max_tokens, requests_per_level=None)
    knee = find_cliff(pd.DataFrame(rows), min_gain=min_gain)
    if knee is None:
        return levels, None
    last = min(cap, knee * 2 ** beyond_knee)
    return [c for c in levels if c <= last], knee
