"""Retry-After from the queue (labs.gateway.retry): it moves with load, it is bounded, and
clients refused together are told different times.

The formula is checked with a stub admission and a fake clock; the gateway's 503s are
checked in-process (httpx.ASGITransport in front of a MockTransport upstream), with slot
times measured from real requests."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
from dataclasses import dataclass

import httpx
import pytest

from labs.gateway import GatewayConfig, create_app, retry

UP = "http://upstream"


@dataclass
class Queue:
    queue_depth: int = 0
    in_flight: int = 4  # all N = 4 slots taken
    reserved: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def advisor(holds_s: list[float], depth: int = 0, *, seed: int = 0,
            **config: object) -> retry.RetryAdvisor:
    """An advisor whose slots were held `holds_s` long, with `depth` waiting now."""
    clock = Clock()
    times = retry.SlotTimes(clock=clock)
    for i, hold in enumerate(holds_s):
        holder = type(f"Holder{i}", (), {})()
        times.started(holder)
        clock.now += hold
        times.finished(holder)
    cfg = GatewayConfig(UP, **{"max_in_flight": 4, "max_queue": 8, **config})
    return retry.RetryAdvisor(cfg, Queue(depth), times=times,
                              rng=random.Random(seed))


def hints(a: retry.RetryAdvisor, reason: str = "queue_full", n: int = 200) -> list[float]:
    return [a.hint_s(reason) for _ in range(n)]


def test_the_hint_grows_with_service_time_and_queue_depth() -> None:
    fast, slow = advisor([2.0] * 8, depth=8), advisor([8.0] * 8, depth=8)
    shallow = advisor([8.0] * 8, depth=0)
    # W = (q + 1) x S / N: 9 x 2 / 4, 9 x 8 / 4 (bounded to 30 before the spread), 1 x 8 / 4
    assert fast.expected_wait_s("queue_full") == pytest.approx(4.5)
    assert slow.expected_wait_s("queue_full") == pytest.approx(18.0)
    assert shallow.expected_wait_s("queue_full") == pytest.approx(2.0)
    assert statistics.mean(hints(fast)) < statistics.mean(hints(slow))
    assert statistics.mean(hints(shallow)) < statistics.mean(hints(slow))
    # never told to come back before a slot is expected, never more than twice that
    for a in (fast, slow, shallow):
        w = a.expected_wait_s("queue_full")
        assert all(w <= h < 2 * w for h in hints(a))


def test_places_reserved_for_requests_being_counted_are_ahead_too() -> None:
    a = advisor([4.0] * 8, depth=2)
    before = a.expected_wait_s("queue_full")
    a.admission.reserved = 3
    assert a.slots_to_free() == 2 + 3 + 1
    assert a.expected_wait_s("queue_full") == pytest.approx(before * 6 / 3)
    a.admission.in_flight, a.admission.queue_depth = 1, 0
    assert a.slots_to_free() == 1  # places held, but a slot free: the next release is ours


def test_recent_holds_are_what_counts() -> None:
    a = advisor([1.0] * retry.WINDOW + [10.0] * retry.WINDOW)
    assert a.slot_s() == pytest.approx(10.0)  # the older, faster holds have left the window


def test_before_any_slot_was_timed_the_configured_value_stands_in() -> None:
    a = advisor([], depth=3, retry_after_s=2)
    assert a.slot_s() == 2.0
    assert a.expected_wait_s("queue_full") == pytest.approx(4 * 2 / 4)


def test_a_queue_timeout_is_told_at_least_what_the_waiter_just_saw() -> None:
    # It waited T = 30 s with at most M - 1 = 7 ahead: slots free slower than one per 30 / 8 s,
    # whatever the (fast) recent holds say.
    a = advisor([0.5] * 8, depth=2, max_queue_wait_s=30.0)
    assert a.expected_wait_s("queue_timeout") == pytest.approx(3 * 30 / 8)
    assert a.expected_wait_s("queue_timeout") > a.expected_wait_s("queue_full")
    assert min(hints(a, "queue_timeout")) >= 3 * 30 / 8


def test_other_reasons_get_the_configured_value_spread() -> None:
    a = advisor([50.0] * 8, depth=8, retry_after_s=3)
    assert a.expected_wait_s("draining") == 3.0
    assert all(3.0 <= h < 6.0 for h in hints(a, "draining"))


def test_the_hint_is_bounded() -> None:
    idle = advisor([0.01] * 8)
    jammed = advisor([600.0] * 8, depth=8)
    assert min(hints(idle)) >= retry.MIN_S and max(hints(idle)) < 2 * retry.MIN_S
    assert max(hints(jammed)) <= retry.MAX_S
    assert min(hints(jammed)) >= retry.MAX_S / (1 + retry.SPREAD)


def test_clients_refused_together_are_spread_over_the_interval() -> None:
    a = advisor([4.0] * 8, depth=8)  # W = 9 s
    told = hints(a, n=100)
    assert len({round(h, 3) for h in told}) > 90
    assert max(told) - min(told) > 0.8 * 9.0  # the spread covers most of [W, 2W)
    # whole seconds too (the header's only form): several distinct values, not one
    assert len({math.ceil(h) for h in told}) >= 8


# --------------------------------------------------------------------------------------------
# In the gateway's answers


def _upstream(service_s: float, gate: asyncio.Event | None = None) -> httpx.AsyncClient:
    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(service_s)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=b"data: [DONE]\n\n")
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def _chat(user: str) -> dict:
    return {"model": "stub", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "user": user}


async def _shed_after(service_s: float, served: int) -> list[httpx.Response]:
    """A gateway N=1, M=3 whose slot was held `service_s` by `served` requests; then the slot
    and the queue are filled and 6 more requests are refused at once."""
    gate = asyncio.Event()
    gate.set()
    app = create_app(GatewayConfig(UP, max_in_flight=1, max_queue=3),
                     client=_upstream(service_s, gate))
    gw = app.state.gateway
    retry.observe(gw)  # time from the first request
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gateway", timeout=30) as client:
        for i in range(served):
            assert (await client.post("/v1/chat/completions", json=_chat(f"s{i}"))).is_success
        gate.clear()
        held = [asyncio.create_task(client.post("/v1/chat/completions", json=_chat(f"h{i}")))
                for i in range(4)]
        while gw.admission.queue_depth < 3:
            await asyncio.sleep(0.005)
        refused = await asyncio.gather(*(client.post("/v1/chat/completions", json=_chat(f"r{i}"))
                                         for i in range(6)))
        gate.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*held))
    return list(refused)


def test_the_gateways_503_carries_the_hint_in_both_headers_and_its_message() -> None:
    refused = asyncio.run(_shed_after(0.0, served=0))
    for resp in refused:
        assert resp.status_code == 503
        whole, ms = int(resp.headers["retry-after"]), int(resp.headers["retry-after-ms"])
        assert whole == math.ceil(ms / 1000) >= 1
        error = json.loads(resp.content)["error"]
        assert error["reason"] == "queue_full" and f"Retry after {whole} s" in error["message"]
    # no hold timed yet: S = retry_after_s (2): W = (3 + 1) x 2 / 1 = 8 s, told 8-16 s
    assert all(8000 <= int(r.headers["retry-after-ms"]) < 16000 for r in refused)
    assert len({r.headers["retry-after-ms"] for r in refused}) == len(refused)  # spread


def test_the_gateways_hint_moves_with_the_service_time_it_measured() -> None:
    def told_ms(service_s: float) -> list[int]:
        return [int(r.headers["retry-after-ms"])
                for r in asyncio.run(_shed_after(service_s, served=3))]

    fast, slow = told_ms(0.01), told_ms(0.4)
    # fast: W = 4 x 0.01 s, bounded to 1 s: told 1-2 s; slow: W = 4 x ~0.4 s = ~1.6 s
    assert all(1000 <= ms < 2000 for ms in fast)
    assert all(1600 <= ms < 4000 for ms in slow)
    assert statistics.mean(slow) > statistics.mean(fast)


def test_watching_is_idempotent_and_keeps_admission_whole() -> None:
    app = create_app(GatewayConfig(UP, max_in_flight=1, max_queue=1), client=_upstream(0.0))
    gw = app.state.gateway
    assert retry.observe(gw) is retry.observe(gw)

    async def go() -> None:
        a = gw.admission
        await a.acquire(1.0)
        waiter = asyncio.create_task(a.acquire(1.0))
        await asyncio.sleep(0.01)
        waiter.cancel()  # leaves the queue: nothing timed, nothing lost
        with pytest.raises(asyncio.CancelledError):
            await waiter
        a.release()
        assert (a.in_flight, a.queue_depth) == (0, 0)
        assert len(retry.observe(gw).times.recent) == 1

    asyncio.run(go())
