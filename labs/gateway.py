"""A bounded-admission gateway in front of vLLM's OpenAI API: the article's queue, outside it.

The article's fix is "cap what the engine accepts and queue everything else outside it". This
is that queue. At most `max_in_flight` requests are forwarded to the engine at once; up to
`max_queue` more wait here, strictly first come first served; everything beyond that is
refused at once with `503` and `Retry-After`, so an overloaded server answers "come back in
2 s" in microseconds instead of holding every caller in an ever longer engine queue.

    client ──► gateway :8001 ──(≤ N at once)──► vLLM :8000
                  │ queue ≤ M, each waits ≤ max_queue_wait_s
                  └─► 503 + Retry-After (queue_full | queue_timeout)

Every request ends in exactly one of: the proxied upstream response; 400 (not a request the
engine could run), 413 (prompt over the token budget), 502 (no upstream) or 503 (shed), each
with a JSON body `{"error": {"message", "type", "reason"}}` that says what to do.

Why the pieces are the way they are:
- Admission is a deque of futures, not `asyncio.Semaphore`: a released slot is handed straight
  to the oldest waiter, so order is FIFO by construction and a newcomer cannot overtake.
- The slot is held until the upstream body has been relayed to the end (or failed), not until
  headers arrive: a streamed answer occupies the engine for its whole length.
- Streams are relayed with `aiter_raw()` chunk by chunk, no re-encoding and no buffering, so
  the gateway adds one hop of latency and nothing else.
- A client that goes away is noticed by listening for `http.disconnect` while it waits and
  while it streams. Queued: it leaves the queue and never reaches the engine. Streaming: the
  upstream response is closed, which closes the upstream connection, and vLLM aborts a
  request whose connection closed, freeing its engine slot.

    python -m labs.gateway --upstream http://127.0.0.1:8000 --port 8001 \\
        --max-in-flight 4 --max-queue 8 --max-queue-wait-s 10 --retry-after-s 2

`create_app(config, client=...)` takes any `httpx.AsyncClient` for the upstream, so tests run
the gateway in-process against a stub.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from .errors import ConfigError, GatewayError, PortInUse
from .connections import ConnectionLeases
from .server import (SERVER_KEEP_ALIVE_S, check_port_free, log_tail,
                     spawn_logged)

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8001
ADMITTED_PATHS = ("/v1/chat/completions", "/v1/completions")
SHED_REASONS = ("queue_full", "queue_timeout", "invalid", "prompt_too_long")
DISCONNECT_STAGES = ("queued", "streaming")
UPSTREAM_HEALTH_TIMEOUT_S = 2.0
TOKENIZE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0  # an upstream that is down refuses at once; this is for one that hangs
STOP_GRACE_S = 10.0
# Per-connection headers (RFC 9110 7.6.1) and those the server writes itself: never relayed.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "date", "server",
})
_FORWARDED_REQUEST_HEADERS = ("accept", "x-request-id", "user-agent")
_QUEUE_WAIT_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                         30.0, 60.0)


# --------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class GatewayConfig:
    """How much the gateway lets through, and to where.

    upstream              root URL of the vLLM server (a trailing /v1 is dropped)
    max_in_flight         requests forwarded to the engine at once (N); match the engine's
                          --max-num-seqs so the engine never queues on its own
    max_queue             requests waiting here for a slot (M); more are refused at once
    max_queue_wait_s      a waiter still without a slot after this long is refused
    retry_after_s         the `Retry-After` value (whole seconds, >= 1) on every 503
    max_prompt_tokens     refuse longer prompts with 413 before they reach the engine
                          (counted by the upstream's /tokenize); None: no check
    forward_authorization pass the client's Authorization header upstream unchanged (vLLM
                          checks the key); False: send none
    request_timeout_s     httpx timeout for each upstream operation (connect, each read)
    """

    upstream: str
    max_in_flight: int = 4
    max_queue: int = 8
    max_queue_wait_s: float = 30.0
    retry_after_s: int = 2
    max_prompt_tokens: int | None = None
    forward_authorization: bool = True
    request_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        url = str(self.upstream).strip().rstrip("/").removesuffix("/v1")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"upstream {self.upstream!r} is not an http(s) URL; give the vLLM "
                              "server's root, e.g. http://127.0.0.1:8000.")
        object.__setattr__(self, "upstream", url)
        _whole(self.max_in_flight, "max_in_flight", minimum=1)
        _whole(self.max_queue, "max_queue", minimum=0)
        _whole(self.retry_after_s, "retry_after_s", minimum=1)
        if self.max_prompt_tokens is not None:
            _whole(self.max_prompt_tokens, "max_prompt_tokens", minimum=1)
        for name in ("max_queue_wait_s", "request_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, not {value!r}.")

    def to_args(self) -> list[str]:
        """The command-line flags of `python -m labs.gateway` that rebuild this config."""
        args = [f"--upstream={self.upstream}", f"--max-in-flight={self.max_in_flight}",
                f"--max-queue={self.max_queue}", f"--max-queue-wait-s={self.max_queue_wait_s}",
                f"--retry-after-s={self.retry_after_s}",
                f"--request-timeout-s={self.request_timeout_s}"]
        if self.max_prompt_tokens is not None:
            args.append(f"--max-prompt-tokens={self.max_prompt_tokens}")
        if not self.forward_authorization:
            args.append("--no-forward-authorization")
        return args


def _whole(value: object, name: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, not {value!r}.")


# --------------------------------------------------------------------------------------------
# Admission


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


# --------------------------------------------------------------------------------------------
# Metrics


class GatewayMetrics:
    """The gateway's own Prometheus metrics, in a registry of its own (not the global one):
    several gateways in one process (tests, notebooks) must not share counters."""

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
        self.shed = Counter("gateway_shed", "Requests refused before the engine, by reason",
                            ["reason"], registry=r)
        self.completed = Counter("gateway_completed", "Upstream responses relayed to the end",
                                 registry=r)
        self.disconnects = Counter("gateway_client_disconnects",
                                   "Clients that went away: queued (waiting for a slot) or "
                                   "streaming (admitted: waiting for or receiving the answer)",
                                   ["stage"], registry=r)
        self.upstream_errors = Counter("gateway_upstream_errors",
                                       "Upstream failures (connect: 502; stream: cut short)",
                                       ["stage"], registry=r)
        self.queue_wait = Histogram("gateway_queue_wait_seconds",
                                    "Time admitted requests waited for a slot",
                                    buckets=_QUEUE_WAIT_BUCKETS_S, registry=r)
        for reason in SHED_REASONS:
            self.shed.labels(reason=reason)
        for stage in DISCONNECT_STAGES:
            self.disconnects.labels(stage=stage)
        for stage in ("connect", "stream"):
            self.upstream_errors.labels(stage=stage)

    def value(self, name: str, **labels: str) -> float:
        """One sample's value (0 when absent), e.g. value("gateway_shed_total", reason=...)."""
        return self.registry.get_sample_value(name, labels) or 0.0


# --------------------------------------------------------------------------------------------
# Answers the gateway writes itself


def error_body(message: str, type_: str, reason: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, plus `reason` so a client (and loadgen) can tell why."""
    error: dict[str, Any] = {"message": message, "type": type_}
    if reason is not None:
        error["reason"] = reason
    return {"error": error}


async def _send_json(send: Send, status: int, payload: Mapping[str, Any],
                     headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _relayed_headers(headers: httpx.Headers) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers.raw if k.lower().decode("latin-1") not in _HOP_BY_HOP]


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body as it arrives, undecoded (so Content-Encoding/Length stay true). A response
    that was read already (a test's `httpx.Response(content=...)`) has it all at once."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


async def _wait_for_disconnect(receive: Receive) -> None:
    """Return when the client has gone. Only called after the body was read, so every
    message left is `http.disconnect` (sent when the connection closes, or, on some servers,
    when the response is complete: the caller tells the two apart)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


# --------------------------------------------------------------------------------------------
# The gateway


class Gateway:
    """The state one app serves from: config, upstream client, admission, metrics."""

    def __init__(self, config: GatewayConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        # A connection of its own for each upstream request (labs.connections says why):
        # admission bounds the generation requests, not the /tokenize counts of a flood.
        self.upstream = (ConnectionLeases.sharing(client) if client is not None else
                         ConnectionLeases(timeout=httpx.Timeout(config.request_timeout_s)))
        self.admission = Admission(config.max_in_flight, config.max_queue)
        self.metrics = GatewayMetrics(self.admission)
        self._estimate_noted = False

    # -- answers ---------------------------------------------------------------------------
    def shed_answer(self, reason: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, body, headers) of a refused request; counts it."""
        self.metrics.shed.labels(reason=reason).inc()
        c, retry = self.config, self.config.retry_after_s
        if reason == "queue_full":
            message = (f"the server is at capacity: {c.max_in_flight} requests are running and "
                       f"{c.max_queue} are waiting, so the gateway's queue is full. Retry after "
                       f"{retry} s, or send requests at a lower rate.")
        else:
            message = (f"no engine slot came free within {c.max_queue_wait_s:g} s of waiting "
                       f"(the server is overloaded: {c.max_in_flight} running). Retry after "
                       f"{retry} s, or send requests at a lower rate.")
        return 503, error_body(message, "overloaded", reason), {"Retry-After": str(retry)}

    def invalid_answer(self, message: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        self.metrics.shed.labels(reason="invalid").inc()
        return 400, error_body(message, "invalid_request_error", "invalid"), {}

    def upstream_answer(self, exc: Exception) -> tuple[int, dict[str, Any], dict[str, str]]:
        """502 for an upstream that cannot be reached: name it and say what to check."""
        url = self.config.upstream
        if isinstance(exc, httpx.TimeoutException):
            what = (f"the vLLM server at {url} did not answer within "
                    f"{self.config.request_timeout_s:g} s ({type(exc).__name__})")
        else:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            what = f"could not reach the vLLM server at {url} ({detail})"
        message = (f"{what}. Is vLLM running? Check with `python -m labs status`, start it with "
                   "`python -m labs serve`, or point the gateway's --upstream at it.")
        logger.warning("upstream failure: %s", what)
        return 502, error_body(message, "upstream_unavailable", "upstream"), {}

    # -- validation ------------------------------------------------------------------------
    def parse(self, path: str, raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
        """(body, None) or (None, what is wrong with it)."""
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            return None, (f"the request body is not valid JSON ({exc}); send a JSON object "
                          "with Content-Type: application/json.")
        if not isinstance(body, dict):
            return None, (f"the request body must be a JSON object, not "
                          f"{type(body).__name__}.")
        if path == "/v1/chat/completions":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return None, ('a chat request needs a non-empty "messages" list, e.g. '
                              '{"model": "...", "messages": [{"role": "user", "content": '
                              '"Hello"}]}; for a plain prompt use /v1/completions.')
        elif "prompt" not in body or body["prompt"] in (None, "", []):
            return None, ('a completions request needs a "prompt", e.g. {"model": "...", '
                          '"prompt": "Once upon a time"}; for messages use '
                          '/v1/chat/completions.')
        return body, None

    async def prompt_tokens(self, body: Mapping[str, Any],
                            headers: Mapping[str, str]) -> tuple[int, str]:
        """(prompt length in tokens, how it was counted): the upstream's /tokenize (the
        model's own tokenizer, chat template included), else about 4 characters per token."""
        payloads: list[dict[str, Any]] = []
        model = body.get("model")
        if "messages" in body:
            payloads.append({"model": model, "messages": body["messages"]})
        else:
            prompt = body["prompt"]
            if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
                return len(prompt), "token ids"
            prompts = prompt if isinstance(prompt, list) else [prompt]
            payloads += [{"model": model, "prompt": p} for p in prompts]
        try:
            counts = []
            async with self.upstream.lease() as client:
                for payload in payloads:
                    resp = await client.post(self.config.upstream + "/tokenize", json=payload,
                                             headers=headers, timeout=TOKENIZE_TIMEOUT_S)
                    resp.raise_for_status()
                    counts.append(int(resp.json()["count"]))
            return max(counts), "upstream /tokenize"
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            level = logging.DEBUG if self._estimate_noted else logging.WARNING
            self._estimate_noted = True
            logger.log(level, "POST %s/tokenize failed (%s); estimating prompt tokens as "
                       "characters / 4 instead", self.config.upstream,
                       f"{type(exc).__name__}: {exc}"[:200])
            return max(1, round(_text_chars(body) / 4)), "estimate, 4 characters per token"

    def upstream_headers(self, request: Request) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        for name in _FORWARDED_REQUEST_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        if self.config.forward_authorization and "authorization" in request.headers:
            headers["authorization"] = request.headers["authorization"]
        return headers

    async def close(self) -> None:
        await self.upstream.aclose()


def _text_chars(body: Mapping[str, Any]) -> int:
    """Characters of prompt text in a chat or completions body (for the 4-per-token guess)."""
    if "messages" in body:
        total = 0
        for message in body["messages"]:
            content = message.get("content") if isinstance(message, dict) else message
            if isinstance(content, str):
                total += len(content)
            elif isinstance(content, list):
                total += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return max((len(p) for p in prompt if isinstance(p, str)), default=0)
    return len(prompt) if isinstance(prompt, str) else 0


# --------------------------------------------------------------------------------------------
# One admitted exchange


class _Exchange:
    """Queue, forward, relay: everything after validation, run as its own task so that a
    client disconnect can cancel it at whichever step it is in."""

    def __init__(self, gateway: Gateway, path: str, raw: bytes, headers: dict[str, str],
                 send: Send) -> None:
        self.gateway, self.path, self.raw, self.headers = gateway, path, raw, headers
        self.send = send
        self.stage = "queued"
        self.response_complete = False  # the last byte went to the client

    async def run(self) -> None:
        gw = self.gateway
        waited_from = time.perf_counter()
        try:
            await gw.admission.acquire(gw.config.max_queue_wait_s)
        except Shed as shed:
            await self._answer(*gw.shed_answer(shed.reason))
            return
        self.stage = "streaming"
        gw.metrics.admitted.inc()
        gw.metrics.queue_wait.observe(time.perf_counter() - waited_from)
        try:
            async with gw.upstream.lease() as client:
                await self._forward(client)
        finally:
            gw.admission.release()

    async def _forward(self, client: httpx.AsyncClient) -> None:
        gw = self.gateway
        request = client.build_request(
            "POST", gw.config.upstream + self.path, content=self.raw, headers=self.headers,
            timeout=httpx.Timeout(gw.config.request_timeout_s, connect=CONNECT_TIMEOUT_S))
        try:
            upstream = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            gw.metrics.upstream_errors.labels(stage="connect").inc()
            await self._answer(*gw.upstream_answer(exc))
            return
        try:
            await self._relay(upstream)
        finally:
            # Shielded: on a client disconnect this task is being cancelled, and the close
            # is what tells vLLM to abort the request.
            await asyncio.shield(upstream.aclose())

    async def _relay(self, upstream: httpx.Response) -> None:
        send = self.send
        await send({"type": "http.response.start", "status": upstream.status_code,
                    "headers": _relayed_headers(upstream.headers)})
        try:
            async for chunk in _raw_chunks(upstream):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            self.gateway.metrics.upstream_errors.labels(stage="stream").inc()
            logger.warning("upstream %s cut the response short: %s: %s",
                           self.gateway.config.upstream, type(exc).__name__, exc)
            if "text/event-stream" not in upstream.headers.get("content-type", ""):
                return  # leave the response incomplete: the server closes the connection
            # vLLM's own way to report a failure after the 200: an error event in the stream
            event = error_body(f"the vLLM server at {self.gateway.config.upstream} closed the "
                               f"stream early ({type(exc).__name__}); the answer is incomplete.",
                               "upstream_error")
            event["error"]["code"] = 502
            await send({"type": "http.response.body", "more_body": True,
                        "body": b"data: " + json.dumps(event).encode() + b"\n\n"})
        else:
            self.gateway.metrics.completed.inc()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.response_complete = True

    async def _answer(self, status: int, body: Mapping[str, Any],
                      headers: Mapping[str, str]) -> None:
        await _send_json(self.send, status, body, headers)
        self.response_complete = True


class _AdmittedRoute:
    """The ASGI endpoint of the two generation routes (a raw ASGI app rather than a Starlette
    request/response function, because it must keep listening to `receive` for a
    disconnect while the request waits and streams)."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway, self.path = gateway, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        request = Request(scope, receive)
        try:
            raw = await request.body()
        except ClientDisconnect:
            return  # gone before its request was even complete: nothing to answer
        body, problem = gw.parse(self.path, raw)
        if body is None:
            await _send_json(send, *gw.invalid_answer(problem or "invalid request"))
            return
        # Before counting tokens: a full queue must answer in microseconds, not after a
        # tokenizer round trip.
        if gw.admission.full():
            await _send_json(send, *gw.shed_answer("queue_full"))
            return
        headers = gw.upstream_headers(request)
        budget = gw.config.max_prompt_tokens
        if budget is not None:
            tokens, counted_by = await gw.prompt_tokens(body, headers)
            if tokens > budget:
                gw.metrics.shed.labels(reason="prompt_too_long").inc()
                await _send_json(send, 413, error_body(
                    f"the prompt is {tokens} tokens ({counted_by}); this gateway accepts at most "
                    f"{budget} prompt tokens (max_prompt_tokens={budget}). Shorten the prompt "
                    "or the conversation history.", "invalid_request_error", "prompt_too_long"))
                return
        exchange = _Exchange(gw, self.path, raw, headers, send)
        await _run_until_disconnect(exchange, receive, gw.metrics)


async def _run_until_disconnect(exchange: _Exchange, receive: Receive,
                                metrics: GatewayMetrics) -> None:
    """Run the exchange; if the client disconnects first, cancel it where it stands."""
    work = asyncio.create_task(exchange.run())
    watcher = asyncio.create_task(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done() and not exchange.response_complete:
            metrics.disconnects.labels(stage=exchange.stage).inc()
            work.cancel()
    finally:
        watcher.cancel()
        if not work.done() and not work.cancelling():  # this task itself was cancelled
            work.cancel()
        # Wait for the exchange's cleanup (release the slot, close upstream). Shielded: if
        # this task is cancelled again, the cleanup still runs to its end in its own task.
        await asyncio.shield(asyncio.wait({work}))
    if not work.cancelled() and work.exception() is not None:
        raise work.exception()  # type: ignore[misc]  # a bug: let Starlette answer 500


# --------------------------------------------------------------------------------------------
# The app


def create_app(config: GatewayConfig, client: httpx.AsyncClient | None = None) -> Starlette:
    """The gateway as a Starlette app; `app.state.gateway` is its `Gateway`.

    `client` is the upstream client (a test passes one with a MockTransport or an
    ASGITransport to a stub); without it one is made and closed at shutdown.
    """
    gw = Gateway(config, client)

    async def passthrough(request: Request) -> Response:
        """Proxied as they are, outside admission: listing models, the version and counting
        tokens cost the engine no KV cache (the load generator counts prompt tokens here)."""
        headers = gw.upstream_headers(request)
        if request.method == "GET":
            headers.pop("content-type", None)
        try:
            async with gw.upstream.lease() as client:
                resp = await client.request(request.method, config.upstream + request.url.path,
                                            headers=headers, content=await request.body())
        except httpx.HTTPError as exc:
            gw.metrics.upstream_errors.labels(stage="connect").inc()
            status, body, _ = gw.upstream_answer(exc)
            return JSONResponse(body, status_code=status)
        out = Response(resp.content, status_code=resp.status_code)
        out.headers["content-type"] = resp.headers.get("content-type", "application/json")
        return out

    async def health(request: Request) -> Response:
        """The gateway's own health: always 200 while it runs; upstream reported inside."""
        try:
            async with gw.upstream.lease() as client:
                resp = await client.get(config.upstream + "/health",
                                        timeout=UPSTREAM_HEALTH_TIMEOUT_S)
            upstream = {"url": config.upstream, "healthy": resp.status_code == 200,
                        "status": resp.status_code}
        except httpx.HTTPError as exc:
            upstream = {"url": config.upstream, "healthy": False,
                        "error": f"{type(exc).__name__}: {exc}"[:200]}
        a = gw.admission
        return JSONResponse({
            "status": "ok", "queue_depth": a.queue_depth, "in_flight": a.in_flight,
            "max_in_flight": a.max_in_flight, "max_queue": a.max_queue, "upstream": upstream,
        })

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = (f"no route {request.url.path}; this gateway serves POST "
                       "/v1/chat/completions, POST /v1/completions, GET /v1/models, "
                       "GET /version, POST /tokenize, GET /health and GET /metrics.")
            kind = "not_found"
        else:
            message = f"{request.method} {request.url.path}: {exc.detail}"
            kind = "invalid_request_error"
        return JSONResponse(error_body(message, kind), status_code=exc.status_code,
                            headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("gateway bug while serving %s", request.url.path, exc_info=exc)
        return JSONResponse(error_body(
            f"the gateway failed unexpectedly ({type(exc).__name__}); see the gateway log.",
            "gateway_error"), status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gw.close()

    routes = [Route(p, _AdmittedRoute(gw, p), methods=["POST"]) for p in ADMITTED_PATHS]
    routes += [Route("/v1/models", passthrough), Route("/version", passthrough),
               Route("/tokenize", passthrough, methods=["POST"]),
               Route("/health", health), Route("/metrics", metrics)]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.gateway = gw
    return app


# --------------------------------------------------------------------------------------------
# Running it: in this process (main) or as a supervised subprocess


def serve(config: GatewayConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          log_level: str = "warning") -> None:
    """Run the gateway in uvicorn until SIGINT/SIGTERM."""
    import uvicorn

    # A short graceful shutdown: open streams would otherwise hold a stop for minutes.
    uvicorn.Server(uvicorn.Config(create_app(config), host=host, port=port,
                                  log_level=log_level, timeout_graceful_shutdown=5,
                                  timeout_keep_alive=SERVER_KEEP_ALIVE_S)).run()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see `python -m labs.gateway --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m labs.gateway",
                description="Bounded-admission gateway in front of a vLLM server.")
    p.add_argument("--upstream", default=None,
                   help="root URL of the vLLM server (default: the course's, "
                        "LABS_BASE_URL or http://127.0.0.1:LABS_PORT)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--max-in-flight", type=int, default=4,
                   help="requests forwarded to the engine at once (default 4)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="requests waiting in the gateway (default 8)")
    p.add_argument("--max-queue-wait-s", type=float, default=30.0,
                   help="longest wait for a slot before a 503 (default 30)")
    p.add_argument("--retry-after-s", type=int, default=2,
                   help="Retry-After seconds on a 503 (default 2)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="refuse longer prompts with 413 (default: no limit)")
    p.add_argument("--request-timeout-s", type=float, default=600.0,
                   help="upstream timeout per operation (default 600)")
    p.add_argument("--no-forward-authorization", action="store_true",
                   help="do not pass the client's Authorization header upstream")
    p.add_argument("--log-level", default="warning",
                   choices=("critical", "error", "warning", "info", "debug"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        upstream = args.upstream
        if upstream is None:
            from .settings import Settings
            upstream = Settings.from_env().base_url
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port {args.port} is not a port number (1-65535).")
        config = GatewayConfig(
            upstream=upstream, max_in_flight=args.max_in_flight, max_queue=args.max_queue,
            max_queue_wait_s=args.max_queue_wait_s, retry_after_s=args.retry_after_s,
            max_prompt_tokens=args.max_prompt_tokens,
            forward_authorization=not args.no_forward_authorization,
            request_timeout_s=args.request_timeout_s)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        check_port_free(args.host, args.port)
    except PortInUse:
        print(f"error: {_port_taken(args.host, args.port)}", file=sys.stderr)
        return 1
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(config, args.host, args.port, args.log_level)
    return 0


def _port_taken(host: str, port: int) -> str:
    return (f"port {port} on {host} is already in use by another program; stop it or pass "
            f"another --port, e.g. --port {port + 1}.")


def start_gateway_process(config: GatewayConfig, port: int, log_path: str | Path,
                          host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start `python -m labs.gateway` detached, in its own session (so that stopping its
    process group stops exactly it), with stdout and stderr in `log_path`.

    Raises PortInUse at once if the port is taken; then `wait_gateway_healthy`.
    """
    try:
        check_port_free(host, port)
    except PortInUse:
        raise PortInUse(_port_taken(host, port)) from None
    cmd = [sys.executable, "-m", "labs.gateway", *config.to_args(), f"--host={host}",
           f"--port={port}"]
    root = str(Path(__file__).resolve().parent.parent)  # importable from a bare checkout too
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    return spawn_logged(cmd, Path(log_path), env)


def wait_gateway_healthy(url: str, timeout_s: float, *,
                         proc: subprocess.Popen[bytes] | None = None,
                         log_path: str | Path | None = None) -> float:
    """Poll the gateway's GET /health until 200; return the seconds it took.

    Raises GatewayError if `proc` exits first (with its log tail) or after `timeout_s`.
    """
    url = url.rstrip("/")
    start = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while True:
            elapsed = time.monotonic() - start
            try:
                if client.get(url + "/health").status_code == 200:
                    return elapsed
            except httpx.HTTPError:
                pass
            if proc is not None and proc.poll() is not None:
                tail = log_tail(log_path) if log_path else ""
                raise GatewayError(
                    f"the gateway exited with code {proc.returncode} during start-up"
                    + (f"; see {log_path}" if log_path else "")
                    + (f"\n--- last log lines ---\n{tail}" if tail else ""))
            if elapsed > timeout_s:
                raise GatewayError(f"the gateway did not answer {url}/health within "
                                   f"{timeout_s:g} s" + (f"; see {log_path}." if log_path
                                                         else "."))
            time.sleep(0.1)


def stop_gateway_process(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the gateway's process group, SIGKILL it after `grace_s`; safe to call twice."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
