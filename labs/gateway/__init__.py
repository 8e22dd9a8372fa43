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
when the gateway holds one), 400 (not a request the engine could run, one that asks for
several sequences, or not HTTP), 408 (headers or body too slow), 413 (body or prompt too
large, or a body on a route that takes none), 431 (headers too large), 502 (no upstream) or
503 + Retry-After (shed for load, or draining), each with a JSON body
`{"error": {"message", "type", "reason"}}` that says what to do; never a 500 for any input.
Every admitted request is counted under one outcome: admitted = completed + disconnected +
upstream errors + failed (labs.gateway.metrics).

Its memory is bounded too, not only the engine's (labs.gateway.bound has the formula and why
each term holds): with C connections, H header bytes, R bodies read at once, B bytes a body,

    RSS <= base + C x (H + 32 KiB + 16 KiB) + R x (B + 80 KiB) + (N + M) x B
                + [(N + M) x (B + 12 x max_prompt_tokens + 64 KiB)] + (N + R) x 192 KiB + 48 x B

each term held by a limit it enforces (max_connections, max_header_bytes, header_timeout_s,
max_body_reads, max_body_bytes, body_timeout_s, N + M counting the requests whose prompt is
being counted): about 275 MiB with the defaults, inside the pod's 512 MiB. A held request
keeps the bytes it sent, never a parsed tree; routes without a key take no body.

On SIGTERM it drains (labs.gateway.server tells labs.gateway.state's Gateway): nothing more is
admitted (waiters get 503 + Retry-After at once), open streams get shutdown_timeout_s to
finish, and one still going then ends with an SSE error event, never a silent truncation.

The package, one job per module:
    config     GatewayConfig: the limits, validated
    admission  the FIFO of at most N running and M waiting (and the places being counted)
    intake     what a request must be before it may wait (key, body, shape)
    budget     the prompt-token budget: exactly the fields each endpoint renders
    state      Gateway: what one app serves from (admission, upstream, probes, the drain)
    proxy      one admitted exchange: count, queue, forward, relay, notice a client gone
    answers    the errors the gateway writes itself;  retry: the Retry-After it sends
    metrics    its Prometheus metrics (shed for load, rejected for input, outcomes)
    bound      its memory bound, a formula of the settings
    app        create_app: the Starlette app and its routes (livez, readyz, health, metrics, ...)
    server     uvicorn with the connection limits it lacks, and the drain on SIGTERM
    cli        `python -m labs.gateway`;  process: the gateway as a supervised subprocess

    python -m labs.gateway --upstream http://127.0.0.1:8000 --port 8001 \\
        --max-in-flight 4 --max-queue 8 --max-queue-wait-s 10 --retry-after-s 2

`create_app(config, client=...)` takes any `httpx.AsyncClient` for the upstream, so tests run
the gateway in-process against a stub. Importing it loads neither vLLM nor pandas: the gateway
image ships httpx, starlette, uvicorn and prometheus_client only.
"""

from .admission import SHED_REASONS, Admission, Shed
from .answers import error_body
from .app import ADMITTED_PATHS, create_app
from .bound import MemoryBound, memory_bound
from .cli import build_parser, main, serve
from .config import API_KEY_ENV, DEFAULT_PORT, GatewayConfig
from .metrics import DISCONNECT_STAGES, REJECT_REASONS, GatewayMetrics
from .process import start_gateway_process, stop_gateway_process, wait_gateway_healthy
from .server import GatewayServer
from .state import Gateway

__all__ = [
    "ADMITTED_PATHS", "API_KEY_ENV", "Admission", "DEFAULT_PORT", "DISCONNECT_STAGES",
    "Gateway", "GatewayConfig", "GatewayMetrics", "GatewayServer", "MemoryBound",
    "REJECT_REASONS", "SHED_REASONS", "Shed", "create_app", "error_body", "main",
    "memory_bound", "serve", "start_gateway_process", "stop_gateway_process",
    "wait_gateway_healthy", "build_parser",
]
