"""The arrival shape: when a run's requests go out.

Each is a small frozen value with a readable `label`, so a result file says exactly what was
measured and a sweep is just a list of shapes; `to_dict` and `shape_from_dict` save and load one.

Shapes:
    Burst(n)                      n requests sent at the same instant (the article's test)
    Closed(concurrency, ...)      a fixed number of users, each sending the next request as
                                  soon as the last one finished (a closed loop)
    Poisson(rate_rps, ...)        open loop: arrivals at random times on an absolute clock, so
                                  a slow server cannot slow the arrivals down (it can in a
                                  closed loop, which is why closed loops hide queueing)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .values import positive_float, positive_int


def _check_stop(requests: int | None, duration_s: float | None, shape: str) -> None:
    if requests is None and duration_s is None:
        raise ConfigError(f"{shape} needs requests=N or duration_s=SECONDS (or both) "
                          "to know when to stop.")
    if requests is not None:
        positive_int(requests, f"{shape} requests")
    if duration_s is not None:
        positive_float(duration_s, f"{shape} duration_s")


@dataclass(frozen=True)
class Burst:
    """`n` requests at the same instant: the shape of the article's "32 users" test."""

    n: int

    def __post_init__(self) -> None:
        positive_int(self.n, "Burst n")

    @property
    def label(self) -> str:
        return f"burst {self.n}"

    @property
    def concurrency(self) -> int:
        return self.n

    @property
    def requests(self) -> int:
        return self.n

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "burst", **asdict(self)}


@dataclass(frozen=True)
class Closed:
    """`concurrency` users in a closed loop: each sends again the moment its answer is done.

    Stops after `requests` in total or `duration_s` seconds (no new request starts after
    that; the ones in flight finish), whichever comes first.
    """

    concurrency: int
    requests: int | None = None
    duration_s: float | None = None

    def __post_init__(self) -> None:
        positive_int(self.concurrency, "Closed concurrency")
        _check_stop(self.requests, self.duration_s, "Closed")

    @property
    def label(self) -> str:
        return f"closed c={self.concurrency}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "closed", **asdict(self)}


# `labs bench`'s requests per level when --requests-per-level is not given; `labs predict` and
# `labs.simulate.predict_closed` replay the same count, so a prediction and a bench compare.
BENCH_REQUESTS_PER_USER = 4
BENCH_MIN_REQUESTS = 8
BENCH_REQUESTS_RULE = f"{BENCH_REQUESTS_PER_USER} x concurrency, at least {BENCH_MIN_REQUESTS}"


def bench_requests(concurrency: int) -> int:
    """Requests `labs bench` sends at a level of `concurrency` users by default (the rule in
    BENCH_REQUESTS_RULE): 8 at 1 user, 128 at 32."""
    return max(BENCH_MIN_REQUESTS, BENCH_REQUESTS_PER_USER * concurrency)


@dataclass(frozen=True)
class Poisson:
    """Open-loop arrivals at `rate_rps` on average, exponential gaps from a seeded generator.

    Send times are fixed in advance on an absolute clock; each record keeps the scheduled and
    the actual send time, so a client that falls behind shows up as lag, not as a quietly
    lower rate. `max_concurrency` caps requests in flight (arrivals wait for a slot, which
    also shows up as lag), as `vllm bench serve --max-concurrency` does.
    """

    rate_rps: float
    requests: int | None = None
    duration_s: float | None = None
    seed: int = 0
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        positive_float(self.rate_rps, "Poisson rate_rps")
        _check_stop(self.requests, self.duration_s, "Poisson")
        if self.max_concurrency is not None:
            positive_int(self.max_concurrency, "Poisson max_concurrency")

    @property
    def label(self) -> str:
        cap = f" max {self.max_concurrency}" if self.max_concurrency else ""
        return f"poisson {self.rate_rps:g} rps{cap}"

    @property
    def concurrency(self) -> int | None:
        return self.max_concurrency

    def arrival_times_s(self) -> np.ndarray:
        """Send times in seconds from the run start; the first request goes at 0."""
        rng = np.random.default_rng(self.seed)
        limit = self.requests if self.requests is not None else math.inf
        horizon = self.duration_s if self.duration_s is not None else math.inf
        times: list[np.ndarray] = []
        last, count = 0.0, 0
        while count < limit:
            batch = int(min(limit - count, 4096))
            gaps = rng.exponential(1.0 / self.rate_rps, size=batch)
            if not count:
                gaps[0] = 0.0  # the first request goes at t=0
            chunk = last + np.cumsum(gaps)
            if math.isfinite(horizon):
                chunk = chunk[chunk < horizon]
            times.append(chunk)
            count += len(chunk)
            if len(chunk) < batch:
                break
            last = float(chunk[-1])
        return np.concatenate(times) if times else np.zeros(0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "poisson", **asdict(self)}


Shape = Burst | Closed | Poisson
_SHAPES: dict[str, type] = {"burst": Burst, "closed": Closed, "poisson": Poisson}


def shape_from_dict(data: Mapping[str, Any]) -> Shape:
    """Rebuild a shape from `shape.to_dict()` (used when loading a result file)."""
    fields = dict(data)
    kind = fields.pop("kind", None)
    if kind not in _SHAPES:
        raise ConfigError(f"unknown load shape {kind!r}; use one of: {', '.join(_SHAPES)}.")
    return _SHAPES[kind](**fields)
