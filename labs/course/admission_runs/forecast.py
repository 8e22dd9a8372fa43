"""A gateway predicted step by step: the overload's arrivals through N slots and a FIFO of M
waiters in front of `labs.simulate.replay`'s engine, with the run's summary keyed as
`RunResult.summary()`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...model.simulate import Engine, SimRequest, check_request, take_step
from ...model.steps import ServerLimits
from ...results.records import percentile


@dataclass(frozen=True)
class GatewayForecast:
    """A gateway run, predicted: the TTFT and end-to-end time of each request it served, how
    many it refused, and the run's length (first arrival to last answer or refusal), so its
    summary has the same keys and meaning as `RunResult.summary()`."""

    offered: int
    ttft_s: tuple[float, ...]
    e2e_s: tuple[float, ...]
    duration_s: float

    def summary(self, slo_ttft_s: float | None = None) -> dict[str, Any]:
        good = sum(t <= slo_ttft_s for t in self.ttft_s) if slo_ttft_s else None
        rate = (lambda n: n / self.duration_s if self.duration_s else None)
        return {"requests": self.offered, "ok": len(self.ttft_s),
                "shed": self.offered - len(self.ttft_s), "duration_s": self.duration_s,
                "ttft_s_p50": percentile(list(self.ttft_s), 50),
                "ttft_s_p95": percentile(list(self.ttft_s), 95),
                "e2e_s_p50": percentile(list(self.e2e_s), 50),
                "request_rate_rps": rate(len(self.ttft_s)),
                "within_slo": good, "goodput_rps": rate(good) if good is not None else None}


def predict_gateway(cost: Any, limits: ServerLimits, shape: Any, prompt_tokens: int,
                    max_tokens: int, max_in_flight: int, max_queue: int, *,
                    max_queue_wait_s: float = 30.0) -> GatewayForecast:
    """`shape`'s arrivals (a Poisson list) through a gateway with N = `max_in_flight` slots and
    a FIFO of `max_queue` waiters, each refused once it has waited `max_queue_wait_s`, in front
    of an engine with `limits`: `labs.simulate.replay`'s engine, step by step, with the
    gateway deciding who reaches it (admitted while fewer than N are in the engine, else queued
    while fewer than M wait, else refused at once; a slot that frees goes to the head of the queue).
    N over max_num_seqs puts the rest in the engine's own queue, as on a real server."""
    if max_in_flight < 1 or max_queue < 0:
        raise ConfigError("a gateway needs N >= 1 slots and a queue of M >= 0.")
    check_request(limits, prompt_tokens, max_tokens)
    half = getattr(cost, "request_overhead_s", 0.0) / 2
    arrivals = deque(float(t) for t in shape.arrival_times_s())
    offered, first = len(arrivals), (arrivals[0] if arrivals else 0.0)
    engine, waiting = Engine(limits), deque[SimRequest]()
    served: list[SimRequest] = []
    refused: list[float] = []  # when each refusal was sent
    in_flight, now = 0, 0.0

    def admit(req: SimRequest) -> None:
        nonlocal in_flight
        in_flight += 1
        engine.waiting.append(req)
        served.append(req)

    while True:
        while arrivals and arrivals[0] + half <= now + 1e-12:
            req = SimRequest(offered - len(arrivals), arrivals.popleft(), prompt_tokens, max_tokens)
            if in_flight < max_in_flight and not waiting:
                admit(req)
            elif len(waiting) < max_queue:
                waiting.append(req)
            else:
                refused.append(req.arrival_s)
        while waiting and waiting[0].arrival_s + max_queue_wait_s <= now:
            refused.append(waiting.popleft().arrival_s + max_queue_wait_s)
        taken = take_step(engine, cost, now, half)  # the same step as every replay's
        if taken is None:
            pending = ([arrivals[0] + half] if arrivals else []) + \
                ([waiting[0].arrival_s + max_queue_wait_s] if waiting else [])
            if not pending:
                break
            now = max(now, min(pending))
            continue
        trace, finished = taken
        now = trace.start_s + trace.duration_s
        for _ in finished:  # each slot that frees goes to the head of the gateway's queue
            in_flight -= 1
            if waiting:
                admit(waiting.popleft())
    ends = [r.end_s for r in served if r.end_s is not None] + refused
    return GatewayForecast(offered, tuple(r.ttft_s for r in served if r.ttft_s is not None),
                           tuple(r.e2e_s for r in served if r.e2e_s is not None),
                           max(ends) - first if ends else 0.0)
