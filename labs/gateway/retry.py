"""When a refused client should come back: `Retry-After` from what the gateway sees, spread.

A constant `Retry-After` turns a crowd into waves. The `openai` client retries a 503 twice by
default and sleeps exactly what `Retry-After` says, so clients refused together come back
together, are refused together again, and the gateway sees each of them three times. The hint
here is the time a slot is expected to be free for a request arriving now, with a random
spread on top, so a refused group comes back over an interval instead of at one instant:

    S  how long a request held its engine slot, mean of the last WINDOW that finished
       (seconds; until one has finished, the configured `retry_after_s` stands in for it)
    N  slots (max_in_flight);  M  queue places (max_queue)
    r  slots that must free before a request arriving now gets one: everyone the gateway
       holds (running, waiting, and any place reserved for a request whose prompt is being
       counted) beyond the N slots, plus its own: max(held - N, 0) + 1; with the queue full,
       r = q + 1 for q waiting

    expected wait   W = r x S / N              (a slot frees every S / N on average)
    queue_timeout   W >= r x T / M             (T = max_queue_wait_s: the waiter that just
                                                timed out had at most M - 1 ahead and saw
                                                fewer than M slots free in T)
    any other reason (a drain, say): W = retry_after_s
    base            B = W bounded to [MIN_S, MAX_S / (1 + SPREAD)]
    hint            H = B x (1 + SPREAD x u),  u uniform in [0, 1): within [MIN_S, MAX_S]

Nobody is told to come back before a slot is expected (H >= W, unless W is above the bound),
and a group refused at one instant returns spread over the next B x SPREAD seconds. The
bounds: MIN_S = 1 s, the shortest whole-second `Retry-After`, so a client never spins;
MAX_S = 60 s, because `openai` 1.x (the course allows >= 1.40) obeys `Retry-After` only up to
60 s and otherwise falls back to its own 0.5-8 s backoff; later versions refuse to retry past
120 s.

It is sent twice: `Retry-After: ceil(H)` (whole seconds, the only form RFC 9110 allows, never
earlier than H) and `retry-after-ms: round(H x 1000)`, which the `openai` (and `anthropic`)
clients read first, so the spread is not rounded away for them. The 503's message says the
same whole seconds.

`shed(gateway, reason)` builds the 503 answer (labs.gateway.state's `Gateway.shed` calls it).
The slot times are measured by wrapping that gateway's `Admission.acquire` and `release` from
the first call on (`observe(gateway)`, idempotent: call it when the gateway is built to
measure from its first request): a slot is timed from the moment `acquire` returns to the
`release` in the same task, which is how `labs.gateway.proxy.Exchange` holds one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import answers
from .admission import Admission
from .config import GatewayConfig

if TYPE_CHECKING:
    from .answers import Answer

MIN_S = 1.0
MAX_S = 60.0
SPREAD = 1.0     # the hint is B to (1 + SPREAD) x B
WINDOW = 32      # slot holds the mean is taken over


class SlotTimes:
    """How long each slot was held, over the last `window` holds: keyed by whatever holds it
    (the task that acquired it), started when acquire returns, ended by release."""

    def __init__(self, window: int = WINDOW, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.recent: deque[float] = deque(maxlen=window)
        self._since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def started(self, holder: Any) -> None:
        self._since[holder] = self.clock()

    def finished(self, holder: Any) -> None:
        since = self._since.pop(holder, None)
        if since is not None:  # a slot taken before we watched, or passed on when cancelled
            self.recent.append(self.clock() - since)

    def mean_s(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None


class RetryAdvisor:
    """The hint for one gateway: its config, its admission's state, its slot times."""

    def __init__(self, config: GatewayConfig, admission: Admission, *,
                 times: SlotTimes | None = None, rng: random.Random | None = None) -> None:
        self.config, self.admission = config, admission
        self.times = times or SlotTimes()
        self.rng = rng or random.Random()

    def slot_s(self) -> float:
        """S: the recent mean slot hold, or the configured retry_after_s before any."""
        mean = self.times.mean_s()
        return float(self.config.retry_after_s) if mean is None else mean

    def expected_wait_s(self, reason: str) -> float:
        """W: when a slot is expected to be free for a request arriving now."""
        c = self.config
        if reason == "queue_full":
            return self.slots_to_free() * self.slot_s() / c.max_in_flight
        if reason == "queue_timeout":
            per_slot = max(self.slot_s() / c.max_in_flight,
                           c.max_queue_wait_s / max(c.max_queue, 1))
            return self.slots_to_free() * per_slot
        return float(c.retry_after_s)

    def slots_to_free(self) -> int:
        """r: releases a request arriving now waits for (the module docstring)."""
        a = self.admission
        held = a.in_flight + a.queue_depth + getattr(a, "reserved", 0)
        return max(held - self.config.max_in_flight, 0) + 1

    def hint_s(self, reason: str) -> float:
        """H: W bounded, then spread upward at random (the module docstring)."""
        base = min(max(self.expected_wait_s(reason), MIN_S), MAX_S / (1 + SPREAD))
        return base * (1 + SPREAD * self.rng.random())

    def answer(self, reason: str) -> Answer:
        hint = self.hint_s(reason)
        whole = min(math.ceil(hint), int(MAX_S))
        status, body, headers = answers.shed(
            dataclasses.replace(self.config, retry_after_s=whole), reason)
        return status, body, {**headers, "Retry-After": str(whole),
                              "retry-after-ms": str(round(hint * 1000))}


_ADVISORS: weakref.WeakKeyDictionary[Any, RetryAdvisor] = weakref.WeakKeyDictionary()


def observe(gateway: Any) -> RetryAdvisor:
    """The gateway's advisor, made (and its admission watched) on the first call."""
    advisor = _ADVISORS.get(gateway)
    if advisor is None:
        advisor = _ADVISORS[gateway] = RetryAdvisor(gateway.config, gateway.admission)
        _watch(gateway.admission, advisor.times)
    return advisor


def shed(gateway: Any, reason: str) -> Answer:
    """503 + a Retry-After from the queue (and retry-after-ms) for a request refused for load."""
    return observe(gateway).answer(reason)


def _watch(admission: Admission, times: SlotTimes) -> None:
    """Time every slot `admission` hands out from now on (instance attributes over its
    methods, so Admission's own `self.release()` goes through here too)."""
    acquire, release = admission.acquire, admission.release

    async def timed_acquire(*args: Any, **kwargs: Any) -> None:
        await acquire(*args, **kwargs)
        times.started(asyncio.current_task())

    def timed_release(*args: Any, **kwargs: Any) -> None:
        try:
            holder = asyncio.current_task()
        except RuntimeError:
            holder = None
        if holder is not None:
            times.finished(holder)
        release(*args, **kwargs)

    admission.acquire = timed_acquire  # type: ignore[method-assign]  # wraps this one instance's method, on purpose
    admission.release = timed_release  # type: ignore[method-assign]  # as above
