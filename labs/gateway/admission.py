"""Admission: at most N requests in the engine, up to M waiting here, strictly in order.

A deque of futures, not `asyncio.Semaphore`: a released slot is handed straight to the oldest
waiter, so order is FIFO by construction and a newcomer cannot overtake.

A request whose prompt is being counted (labs.gateway.budget) holds a *place* first: places
are the N + M requests the gateway holds at once, running, waiting or being counted, so the
requests waiting on the tokenizer are inside the same bound as the queue (each keeps its body
and an upstream connection while it waits). A request that arrives when all N + M places are
taken is refused at once; a counted request then takes its slot or its queue place without a
second check, because the place it held is the one it uses.

On a drain (SIGTERM) nothing more is admitted: every waiter is refused at once (`draining`),
and so is every request that asks for a place or a slot from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

# The refusals that mean "come back later" (503 + Retry-After): load (queue_full,
# queue_timeout, intake_full: too many bodies being read at once) and a drain.
SHED_REASONS = ("queue_full", "queue_timeout", "intake_full", "draining")


class Shed(Exception):
    """Admission refused a request; `reason` is one of SHED_REASONS."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Admission:
    """At most `max_in_flight` holders; up to `max_queue` waiters, served strictly FIFO; and
    at most max_in_flight + max_queue requests in all, counting the `reserved` places.

    `release()` hands the slot straight to the oldest waiter (in_flight does not drop in
    between), so a request arriving at that instant cannot overtake the queue. Single event
    loop only; no locks needed because nothing here awaits between check and update.
    """

    def __init__(self, max_in_flight: int, max_queue: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.in_flight = 0
        self.reserved = 0  # places held by requests not yet queued (their prompt is counted)
        self.draining = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queue_depth(self) -> int:
        return len(self._waiters)

    @property
    def held(self) -> int:
        """Requests the admission holds: running, waiting and reserved (<= N + M)."""
        return self.in_flight + len(self._waiters) + self.reserved

    def full(self) -> bool:
        """Would a request arriving now be refused with queue_full?"""
        return self.held >= self.max_in_flight + self.max_queue

    def reserve(self) -> None:
        """Take a place (before counting a prompt), or raise Shed("draining"|"queue_full")."""
        if self.draining:
            raise Shed("draining")
        if self.full():
            raise Shed("queue_full")
        self.reserved += 1

    def unreserve(self) -> None:
        self.reserved -= 1

    async def acquire(self, timeout_s: float, *, reserved: bool = False) -> None:
        """Take a slot, waiting up to `timeout_s`; raise Shed("queue_full"|"queue_timeout"|
        "draining"). `reserved`: the caller holds a place (reserve()), which this uses.

        Cancelled while waiting (the client went away): leaves the queue, and if a slot was
        handed over in that same instant, passes it on, so no slot is ever lost.
        """
        if reserved:
            self.reserved -= 1  # the place becomes the slot or the queue place below
        if self.draining:
            raise Shed("draining")
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            return
        if not reserved and self.full():
            raise Shed("queue_full")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            if _granted(waiter):
                return  # the slot came as the clock ran out: keep it
            self._forget(waiter)
            raise Shed("queue_timeout") from None
        except asyncio.CancelledError:
            if _granted(waiter):
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

    def drain(self) -> None:
        """Admit nothing more: every waiter is refused now with Shed("draining")."""
        self.draining = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(Shed("draining"))

    def _forget(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)


def _granted(waiter: asyncio.Future[None]) -> bool:
    """Was this waiter handed a slot (not refused by a drain, not cancelled)?"""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None
