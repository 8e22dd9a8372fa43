"""A bounded-admission gateway in front of vLLM's OpenAI API: the article's queue, outside it.

The article's fix is "cap what the engine accepts and queue everything else outside it". This
is that queue. At most `max_in_flight` requests are forwarded to the engine at once; up to
`max_queue` more wait here, strictly first come first served; everything beyond that is
refused at once with `503` and `Retry-After`, so an overloaded server answers "come back in
2 s" in microseconds instead of holding every caller in an ever longer engine queue.

    client ──► gateway :8001 ──(≤ N at once)──► vLLM :8000
                  │ queue ≤ M, each waits ≤ max_queue_wait_s
                  └─► 503 + Retry-After (queue_full | queue_timeout)

Every request ends in exactly one of: the proxied upstream response; 401 (no or wrong key,
when the gateway holds one), 400 (not a request the engine could run, or one that asks for
several sequences), 408 (body too slow), 413 (body or prompt too large), 502 (no upstream) or
503 (shed), each with a JSON body `{"error": {"message", "type", "reason"}}` that says what
to do.

The package, one job per module:
    config     GatewayConfig: the limits, validated
    admission  the FIFO of at most N running and M waiting
    intake     what a request must be before it may wait (key, body, shape, prompt length)
    proxy      one admitted exchange: queue, forward, relay, notice a client gone or stalled
    answers    the errors the gateway writes itself
    metrics    its Prometheus metrics (shed for load, rejected for input)
    app        the Starlette app and its routes (livez, readyz, health, metrics, ...)
    cli        `python -m labs.gateway`;  process: the gateway as a supervised subprocess

    python -m labs.gateway --upstream http://127.0.0.1:8000 --port 8001 \\
        --max-in-flight 4 --max-queue 8 --max-queue-wait-s 10 --retry-after-s 2

`create_app(config, client=...)` takes any `httpx.AsyncClient` for the upstream, so tests run
the gateway in-process against a stub. Importing it loads neither vLLM nor pandas: the gateway
image ships httpx, starlette, uvicorn and prometheus_client only.
"""

from .admission import SHED_REASONS, Admission, Shed
from .answers import error_body
from .app import ADMITTED_PATHS, Gateway, create_app
from .cli import _parser, main, serve
from .config import API_KEY_ENV, DEFAULT_PORT, GatewayConfig
from .metrics import DISCONNECT_STAGES, REJECT_REASONS, GatewayMetrics
from .process import start_gateway_process, stop_gateway_process, wait_gateway_healthy

__all__ = [
    "ADMITTED_PATHS", "API_KEY_ENV", "Admission", "DEFAULT_PORT", "DISCONNECT_STAGES",
    "Gateway", "GatewayConfig", "GatewayMetrics", "REJECT_REASONS", "SHED_REASONS", "Shed",
    "create_app", "error_body", "main", "serve", "start_gateway_process",
    "stop_gateway_process", "wait_gateway_healthy", "_parser",
]
