"""Offer load to an OpenAI-compatible server and record what every request saw.

An async `httpx` client streams each answer and timestamps it (`time.perf_counter()`, seconds
from the run start): scheduled send, actual send, every token arrival, end. Nothing in a run
raises because of the server: a refused connection, a 503, a stream cut short or a timeout
become a record with an `error_kind`, so a run against a melting server still gives a result.

    result = labs.loadgen.run_sync(Closed(8, requests=32), Workload(max_tokens=64),
                                   conn=labs.connect())
    result.summary()

Each request in flight has a connection of its own, with no cap on how many
(`labs.load.pool` says why one shared httpx pool is not enough under overload).
`client=` takes any `httpx.AsyncClient` instead, shared by every request, so tests drive a
`MockTransport` and the gateway lab drives an ASGI app; it keeps its own `limits`.

The package, one job per module:
    sse      server-sent events, decoded by hand (it says why), and `Retry-After`
    request  one request: stream it, timestamp it, its status kinds and error events
    tokens   connection details, token counting (/tokenize or an estimate), the server's version
    runner   driving a shape, the session a sweep shares, the entry points run/sweep(_async)/
             run_sync/run_blocking
    cli      `python -m labs bench`
"""

from __future__ import annotations

from ...hardware import describe_hardware  # importable from here as before
from .cli import add_cli, parse_levels
from .request import DEFAULT_TIMEOUT_S, stream_request
from .runner import run, run_blocking, run_sync, sweep, sweep_async
from .sse import SSEDecoder, parse_retry_after
from .tokens import server_token_counter, tokenize_payload

__all__ = [
    "run", "run_sync", "sweep_async", "sweep", "run_blocking", "DEFAULT_TIMEOUT_S",
    "stream_request", "SSEDecoder", "parse_retry_after", "server_token_counter",
    "tokenize_payload", "describe_hardware", "parse_levels", "add_cli",
]
