"""Admission: at most N requests in the engine, up to M waiting here, strictly in order.

A deque of futures, not `asyncio.Semaphore`: a released slot is handed straight to the oldest
waiter, so order is FIFO by construction and a newcomer cannot overtake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

SHED_REASONS = ("queue_full", "queue_timeout")  # load: the only refusals that mean "overloaded"


class Shed(Exception):
    """Admission refused a request; `reason` is one of SHED_REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Admission:
    """At most `max_in_flight` holders; up to `max_queue` waiters, served strictly FIFO.

    `release()` hands the slot straight to the oldest waiter (in_flight does not drop in
    between), so a request arriving at that instant cannot overtake the queue. Single event
    loop only; no locks needed because nothing here awaits between check and update.
    """

    def __init__(self, max_in_flight: int, max_queue: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queue_depth(self) -> int:
        return len(self._waiters)

    def full(self) -> bool:
        """Would a request arriving now be refused with queue_full?"""
        return self.in_flight >= self.max_in_flight and len(self._waiters) >= self.max_queue

    async def acquire(self, timeout_s: float) -> None:
        """Take a slot, waiting up to `timeout_s`; raise Shed("queue_full"|"queue_timeout").

        Cancelled while waiting (the client went away): leaves the queue, and if a slot was
        handed over in that same instant, passes it on, so no slot is ever lost.
        """
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise Shed("queue_full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot came as the clock ran out: keep it
            self._forget(waiter)
            raise Shed("queue_timeout") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                self._forget(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; in_flight stays
                return
        self.in_flight -= 1

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
