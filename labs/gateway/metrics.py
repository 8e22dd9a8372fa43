"""The gateway's own Prometheus metrics, in a registry of its own (not the global one):
several gateways in one process (tests, notebooks) must not share counters.

Refusals are counted in two families that mean different things on a dashboard:
`gateway_shed_total` is load (queue full, waited too long: add capacity or slow down), and
`gateway_rejected_total` is input (malformed, too large, unauthorised: fix the client).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .admission import SHED_REASONS, Admission

REJECT_REASONS = ("invalid", "unsupported", "body_too_large", "body_timeout",
                  "prompt_too_long", "unauthorized")
DISCONNECT_STAGES = ("queued", "streaming", "stalled")
QUEUE_OUTCOMES = ("admitted", "timeout", "gone")
_QUEUE_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                         30.0, 60.0)


class GatewayMetrics:
    """Every counter, gauge and histogram the gateway exposes on /metrics."""

    def __init__(self, admission: Admission) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge("gateway_queue_depth", "Requests waiting in the gateway for an engine slot",
              registry=r).set_function(lambda: admission.queue_depth)
        Gauge("gateway_in_flight", "Requests forwarded to the engine and not finished",
              registry=r).set_function(lambda: admission.in_flight)
        Gauge("gateway_max_in_flight", "Configured cap on requests forwarded at once",
              registry=r).set(admission.max_in_flight)
        Gauge("gateway_max_queue", "Configured cap on waiting requests",
              registry=r).set(admission.max_queue)
        self.admitted = Counter("gateway_admitted", "Requests that got an engine slot",
                                registry=r)
        self.shed = Counter("gateway_shed", "Requests refused for load (503), by reason",
                            ["reason"], registry=r)
        self.rejected = Counter("gateway_rejected",
                                "Requests refused for their input (400, 401, 408, 413), by "
                                "reason", ["reason"], registry=r)
        self.completed = Counter("gateway_completed", "Upstream responses relayed to the end",
                                 registry=r)
        self.disconnects = Counter("gateway_client_disconnects",
                                   "Clients that went away: queued (waiting for a slot), "
                                   "streaming (admitted: waiting for or receiving the answer) "
                                   "or stalled (took no bytes for send_timeout_s)",
                                   ["stage"], registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors",
                                       "Upstream failures (connect: 502; stream: cut short)",
                                       ["stage"], registry=r)
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
        for stage in ("connect", "stream"):
            self.upstream_errors.labels(stage=stage)
        for outcome in QUEUE_OUTCOMES:
            self.queue_wait.labels(outcome=outcome)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent), e.g. value("gateway_shed_total", reason=...)."""
        return self.registry.get_sample_value(name, labels) or 0.0
