"""The gateway's own Prometheus metrics, in a registry of its own (not the global one):
several gateways in one process (tests, notebooks) must not share counters.

Refusals are counted in two families that mean different things on a dashboard:
`gateway_shed_total` is load (queue full, waited too long, too many bodies at once, or a
drain: add capacity or slow down), and `gateway_rejected_total` is input (malformed, too
large, too slow, unauthorised: fix the client).

Every admitted request ends in exactly one outcome, so that

    admitted = completed + client_disconnects{streaming, stalled}
               + upstream_errors{connect, stream} + failed{drain, error}

always holds (`GatewayMetrics.unaccounted()` is the difference, 0 unless the gateway has a
bug): `failed` is a stream cut at the shutdown deadline (`drain`) or an exception after
admission (`error`, logged with its traceback). The registry also carries the process's
own `process_resident_memory_bytes` beside `gateway_memory_bound_bytes`
(labs.gateway.bound), so the bound can be checked where it is scraped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from .admission import SHED_REASONS, Admission

if TYPE_CHECKING:
    from .bound import MemoryBound

REJECT_REASONS = ("invalid", "unsupported", "body_too_large", "body_timeout",
                  "prompt_too_long", "unauthorized", "body_not_allowed", "bad_request",
                  "header_too_large", "header_timeout")
DISCONNECT_STAGES = ("queued", "streaming", "stalled")
UPSTREAM_STAGES = ("connect", "stream", "passthrough")  # passthrough: /tokenize, /v1/models
FAILED_REASONS = ("drain", "error")
QUEUE_OUTCOMES = ("admitted", "timeout", "gone")
_QUEUE_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                         30.0, 60.0)


class GatewayMetrics:
    """Every counter, gauge and histogram the gateway exposes on /metrics."""

    def __init__(self, admission: Admission, *, memory_bound: MemoryBound | None = None,
                 body_reads: Callable[[], float] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("gateway_queue_depth", "Requests waiting in the gateway for an engine slot",
              registry=r).set_function(lambda: admission.queue_depth)
        Gauge("gateway_in_flight", "Requests forwarded to the engine and not finished",
              registry=r).set_function(lambda: admission.in_flight)
        Gauge("gateway_counting", "Requests holding a place while their prompt is counted",
              registry=r).set_function(lambda: admission.reserved)
        Gauge("gateway_max_in_flight", "Configured cap on requests forwarded at once",
              registry=r).set(admission.max_in_flight)
        Gauge("gateway_max_queue", "Configured cap on waiting requests",
              registry=r).set(admission.max_queue)
        Gauge("gateway_body_reads", "Requests reading a body, or proxied outside admission",
              registry=r).set_function(body_reads or (lambda: 0))
        self.connections = Gauge("gateway_connections", "Client connections open",
                                 registry=r)
        self.connections_refused = Counter(
            "gateway_connections_refused",
            "Connections closed unanswered because max_connections were open", registry=r)
        bound = Gauge("gateway_memory_bound_bytes",
                      "The memory bound of these settings, and each of its terms "
                      "(labs.gateway.bound)", ["term"], registry=r)
        if memory_bound is not None:
            for term, value in {"total": memory_bound.total, **memory_bound.terms()}.items():
                bound.labels(term=term).set(value)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, on Linux
        self.admitted = Counter("gateway_admitted", "Requests that got an engine slot",
                                registry=r)
        self.shed = Counter("gateway_shed", "Requests refused for load (503), by reason",
                            ["reason"], registry=r)
        self.rejected = Counter("gateway_rejected",
                                "Requests refused for their input (400, 401, 408, 413, 431), "
                                "by reason", ["reason"], registry=r)
        self.completed = Counter("gateway_completed", "Upstream responses relayed to the end",
                                 registry=r)
        self.disconnects = Counter("gateway_client_disconnects",
                                   "Clients that went away: queued (waiting for a slot), "
                                   "streaming (admitted: waiting for or receiving the answer) "
                                   "or stalled (took no bytes for send_timeout_s)",
                                   ["stage"], registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors",
                                       "Upstream failures (connect: 502; stream: cut short; "
                                       "passthrough: /tokenize or /v1/models, not admitted)",
                                       ["stage"], registry=r)
        self.failed = Counter("gateway_failed",
                              "Admitted requests that ended otherwise: cut at the shutdown "
                              "deadline (drain) or by a gateway error (error)",
                              ["reason"], registry=r)
        self.queue_wait = Histogram("gateway_queue_wait_seconds",
                                    "Time requests waited for a slot, however the wait ended "
                                    "(admitted, timed out, or the client left)",
                                    ["outcome"], buckets=_QUEUE_WAIT_BUCKETS_S, registry=r)
        for reason in SHED_REASONS:
            self.shed.labels(reason=reason)
        for reason in REJECT_REASONS:
            self.rejected.labels(reason=reason)
        for stage in DISCONNECT_STAGES:
            self.disconnects.labels(stage=stage)
        for stage in UPSTREAM_STAGES:
            self.upstream_errors.labels(stage=stage)
        for reason in FAILED_REASONS:
            self.failed.labels(reason=reason)
        for outcome in QUEUE_OUTCOMES:
            self.queue_wait.labels(outcome=outcome)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent), e.g. value("gateway_shed_total", reason=...)."""
        return self.registry.get_sample_value(name, labels) or 0.0

    def outcome(self, kind: str, label: str | None = None) -> None:
        """Count an admitted request's one outcome: ("completed"), ("disconnected", stage),
        ("upstream", stage) or ("failed", reason)."""
        if kind == "completed":
            self.completed.inc()
        elif kind == "disconnected":
            self.disconnects.labels(stage=label).inc()
        elif kind == "upstream":
            self.upstream_errors.labels(stage=label).inc()
        else:
            self.failed.labels(reason=label).inc()

    def unaccounted(self) -> float:
        """Admitted requests with no outcome yet: those in flight now, else 0."""
        v = self.value
        ended = (v("gateway_completed_total")
                 + sum(v("gateway_client_disconnects_total", stage=s)
                       for s in ("streaming", "stalled"))
                 + sum(v("gateway_upstream_errors_total", stage=s)
                       for s in ("connect", "stream"))
                 + sum(v("gateway_failed_total", reason=r) for r in FAILED_REASONS))
        return v("gateway_admitted_total") - ended
