"""One admitted exchange: count its prompt, wait for a slot, forward, relay the answer.

- The slot is held until the upstream body has been relayed to the end (or failed), not until
  headers arrive: a streamed answer occupies the engine for its whole length.
- Streams are relayed with `aiter_raw()` chunk by chunk, no re-encoding and no buffering, so
  the gateway adds one hop of latency and nothing else.
- A client that goes away is noticed by listening for `http.disconnect` while it waits and
  while it streams; one that stops reading is noticed by a send that does not complete within
  `send_timeout_s`. Either way: queued, it leaves the queue and never reaches the engine;
  streaming, the upstream response is closed, which closes the upstream connection, and vLLM
  aborts a request whose connection closed, freeing its engine slot.
- On a drain (SIGTERM, labs.gateway.server) a request still being counted or waiting is
  refused at once (503 draining); one in flight may finish until shutdown_timeout_s, and one
  still going then is cut: a 503 if nothing was sent yet, an error event if it streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

import httpx
from starlette.types import Message, Receive, Send

from . import answers, budget
from .admission import Shed
from .answers import error_body
from .state import Gateway

logger = logging.getLogger("labs.gateway")

CONNECT_TIMEOUT_S = 10.0  # an upstream that is down refuses at once; this is for one that hangs
# Per-connection headers (RFC 9110 7.6.1) and those the server writes itself: never relayed.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "date", "server",
})


class ClientStalled(Exception):
    """The client took no bytes for send_timeout_s: treated as gone."""


class Exchange:
    """Count, queue, forward, relay: everything after validation, run as its own task so
    that a client disconnect can cancel it at whichever step it is in.

    The caller has reserved the request's place (Admission.reserve) before making it; the
    exchange uses that place or gives it back. An admitted exchange ends in exactly one
    outcome (labs.gateway.metrics), the first one `settle` is told."""

    def __init__(self, gateway: Gateway, path: str, raw: bytes,
                 headers: list[tuple[bytes, bytes]], send: Send,
                 prompt: budget.Prompt | None = None) -> None:
        self.gateway, self.path, self.raw, self.headers = gateway, path, raw, headers
        self.prompt = prompt
        self._send = send
        self.stage = "queued"
        self.admitted = False
        self.response_started = False
        self.response_complete = False  # the last byte went to the client
        self._event_stream = False       # the answer is SSE: a failure can be an event
        self._at_boundary = True         # between two SSE events
        self._outcome: tuple[str, str | None] | None = None

    def settle(self, kind: str, label: str | None = None) -> None:
        """Count this admitted exchange's outcome, if none was counted yet (only admitted
        exchanges settle: every step that calls this comes after admission)."""
        if self._outcome is None:
            self._outcome = (kind, label)
            self.gateway.metrics.outcome(kind, label)

    async def run(self) -> None:
        gw = self.gateway
        try:
            if not await self._admit():
                return
            self.stage, self.admitted = "streaming", True
            gw.metrics.admitted.inc()
            try:
                async with gw.until_cut() as cut:
                    async with gw.upstream.lease() as client:
                        await self._forward(client)
            except TimeoutError:
                if not cut.expired():
                    raise
                await self._cut()
            except ClientStalled:
                self.settle("disconnected", "stalled")
                logger.info("a client took no bytes for %g s; its request was abandoned",
                            gw.config.send_timeout_s)
            finally:
                gw.admission.release()
        finally:
            if self.admitted:  # ended without an outcome: cut by the shutdown, or a bug
                self.settle("failed", "drain" if gw.draining else "error")

    async def _admit(self) -> bool:
        """Count the prompt (with a budget), then take a slot: True, or answer (413, 503) and
        False. Every wait, however it ends, goes into the queue-wait histogram (a refusal
        for its input never waited and is not one)."""
        gw = self.gateway
        waited_from = time.perf_counter()
        outcome: str | None = "gone"  # unless set below: cancelled, the client left
        reserved = True
        try:
            if self.prompt is not None:
                async with gw.until_cut(at_once=True):
                    counted = await budget.count(gw.config, gw.upstream, self.prompt,
                                                 self.headers)
                rejected = budget.over_budget(gw.config, counted)
                if rejected is not None:
                    outcome = None
                    await gw.reject(self._send, rejected)
                    self.response_complete = True
                    return False
            reserved = False
            await gw.admission.acquire(gw.config.max_queue_wait_s, reserved=True)
            outcome = "admitted"
            return True
        except (Shed, TimeoutError) as refused:
            # TimeoutError: only the drain's cut (budget.count times out on its own terms)
            reason = refused.reason if isinstance(refused, Shed) else "draining"
            outcome = "timeout" if reason == "queue_timeout" else None
            await gw.shed(self._send, reason)
            self.response_complete = True
            return False
        finally:
            if reserved:
                gw.admission.unreserve()
            if outcome is not None:
                gw.metrics.queue_wait.labels(outcome=outcome).observe(
                    time.perf_counter() - waited_from)

    async def _forward(self, client: httpx.AsyncClient) -> None:
        gw = self.gateway
        request = client.build_request(
            "POST", gw.config.upstream + self.path, content=self.raw, headers=self.headers,
            timeout=httpx.Timeout(gw.config.request_timeout_s, connect=CONNECT_TIMEOUT_S))
        try:
            upstream = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.settle("upstream", "connect")
            await self._answer(*answers.upstream_unreachable(gw.config, exc))
            return
        try:
            await self._relay(upstream)
        finally:
            # Shielded: on a client disconnect this task is being cancelled, and the close
            # is what tells vLLM to abort the request.
            await asyncio.shield(upstream.aclose())

    async def _send_within(self, message: Message) -> None:
        """Send, but give up on a client that takes nothing for send_timeout_s: uvicorn's
        send waits while the socket's buffers are full, so a reader that stopped reading
        would otherwise hold its engine slot for the whole answer."""
        try:
            async with asyncio.timeout(self.gateway.config.send_timeout_s):
                await self._send(message)
        except TimeoutError:
            raise ClientStalled() from None
        if message["type"] == "http.response.start":
            self.response_started = True
        elif not message.get("more_body", False):
            self.response_complete = True

    async def _relay(self, upstream: httpx.Response) -> None:
        self._event_stream = "text/event-stream" in upstream.headers.get("content-type", "")
        await self._send_within({"type": "http.response.start", "status": upstream.status_code,
                                 "headers": relayed_headers(upstream.headers)})
        try:
            async for chunk in _raw_chunks(upstream):
                if chunk:
                    await self._send_within({"type": "http.response.body", "body": chunk,
                                             "more_body": True})
                    self._at_boundary = chunk.endswith(b"\n\n")
        except httpx.HTTPError as exc:
            self.settle("upstream", "stream")
            logger.warning("upstream %s cut the response short: %s: %s",
                           self.gateway.config.upstream, type(exc).__name__, exc)
            if not self._event_stream:
                return  # leave the response incomplete: the server closes the connection
            # vLLM's own way to report a failure after the 200: an error event in the stream.
            await self._end_with_error(502, "the vLLM server closed the stream early; the "
                                       "answer is incomplete. Retry the request.")
            return
        self.settle("completed")
        await self._send_within({"type": "http.response.body", "body": b"", "more_body": False})

    async def _end_with_error(self, code: int, message: str) -> None:
        """End a started event stream with an error event (after closing the event a cut
        left half-written, else the two would merge)."""
        event = error_body(message, "upstream_error" if code == 502 else "unavailable")
        event["error"]["code"] = code
        closing = b"" if self._at_boundary else b"\n\n"
        await self._send_within({"type": "http.response.body", "more_body": False,
                                 "body": closing + b"data: " + json.dumps(event).encode()
                                 + b"\n\n"})

    async def _cut(self) -> None:
        """The shutdown deadline came first: say so, never truncate in silence."""
        self.settle("failed", "drain")
        logger.warning("a request was cut at the shutdown deadline (shutdown_timeout_s=%g)",
                       self.gateway.config.shutdown_timeout_s)
        if not self.response_started:
            await self.gateway.shed(self._send, "draining", count=False)
            self.response_complete = True
        elif self._event_stream:
            await self._end_with_error(503, "the gateway is shutting down and its time for "
                                       "open streams ran out; the answer is incomplete. Retry "
                                       "the request.")
        # else a plain body: left incomplete, so the server closes the connection

    async def fail(self) -> None:
        """A gateway bug ended the exchange (logged by the caller): say so to the client if
        it can still be told, never with the exception's text."""
        message = "the gateway failed unexpectedly; see the gateway log. Retry the request."
        try:
            if not self.response_started:
                await self._answer(500, error_body(message, "gateway_error"), {})
            elif self._event_stream and not self.response_complete:
                await self._end_with_error(500, message)
        except (ClientStalled, OSError):
            pass

    async def _answer(self, status: int, body: dict, headers: dict[str, str]) -> None:
        await answers.send_json(self._send, status, body, headers)
        self.response_started = self.response_complete = True


async def run_until_disconnect(exchange: Exchange, receive: Receive) -> None:
    """Run the exchange; if the client disconnects first, cancel it where it stands."""
    metrics = exchange.gateway.metrics
    work = asyncio.create_task(exchange.run())
    watcher = asyncio.create_task(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done() and not exchange.response_complete:
            if exchange.stage == "queued":
                metrics.disconnects.labels(stage="queued").inc()
            else:
                exchange.settle("disconnected", "streaming")
            work.cancel()
    finally:
        watcher.cancel()
        if not work.done() and not work.cancelling():  # this task itself was cancelled
            work.cancel()
        # Wait for the exchange's cleanup (release the slot, close upstream). Shielded: if
        # this task is cancelled again, the cleanup still runs to its end in its own task.
        await asyncio.shield(asyncio.wait({work}))
    if not work.cancelled() and work.exception() is not None:
        logger.error("gateway bug while serving %s", exchange.path, exc_info=work.exception())
        await exchange.fail()


def relayed_headers(headers: httpx.Headers) -> list[tuple[bytes, bytes]]:
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
