"""One admitted exchange: wait for a slot, forward, relay the answer as it arrives.

- The slot is held until the upstream body has been relayed to the end (or failed), not until
  headers arrive: a streamed answer occupies the engine for its whole length.
- Streams are relayed with `aiter_raw()` chunk by chunk, no re-encoding and no buffering, so
  the gateway adds one hop of latency and nothing else.
- A client that goes away is noticed by listening for `http.disconnect` while it waits and
  while it streams; one that stops reading is noticed by a send that does not complete within
  `send_timeout_s`. Either way: queued, it leaves the queue and never reaches the engine;
  streaming, the upstream response is closed, which closes the upstream connection, and vLLM
  aborts a request whose connection closed, freeing its engine slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
from starlette.types import Message, Receive, Send

from . import answers
from .admission import Shed
from .answers import error_body

if TYPE_CHECKING:
    from .app import Gateway

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
    """Queue, forward, relay: everything after validation, run as its own task so that a
    client disconnect can cancel it at whichever step it is in."""

    def __init__(self, gateway: Gateway, path: str, raw: bytes, headers: dict[str, str],
                 send: Send) -> None:
        self.gateway, self.path, self.raw, self.headers = gateway, path, raw, headers
        self._send = send
        self.stage = "queued"
        self.response_complete = False  # the last byte went to the client

    async def run(self) -> None:
        gw = self.gateway
        if not await self._wait_for_slot():
            return
        self.stage = "streaming"
        gw.metrics.admitted.inc()
        try:
            async with gw.upstream.lease() as client:
                await self._forward(client)
        except ClientStalled:
            gw.metrics.disconnects.labels(stage="stalled").inc()
            logger.info("a client took no bytes for %g s; its request was abandoned",
                        gw.config.send_timeout_s)
        finally:
            gw.admission.release()

    async def _wait_for_slot(self) -> bool:
        """Take a slot (True) or answer 503 (False); every wait, however it ends, goes into
        the queue-wait histogram (a refusal at the door never waited and is not one)."""
        gw = self.gateway
        waited_from = time.perf_counter()
        outcome: str | None = "gone"  # unless set below: cancelled, the client left
        try:
            await gw.admission.acquire(gw.config.max_queue_wait_s)
            outcome = "admitted"
            return True
        except Shed as shed:
            outcome = "timeout" if shed.reason == "queue_timeout" else None
            await gw.shed(self._send, shed.reason)
            self.response_complete = True
            return False
        finally:
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
            gw.metrics.upstream_errors.labels(stage="connect").inc()
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

    async def _relay(self, upstream: httpx.Response) -> None:
        await self._send_within({"type": "http.response.start", "status": upstream.status_code,
                                 "headers": _relayed_headers(upstream.headers)})
        at_boundary = True  # between two SSE events
        try:
            async for chunk in _raw_chunks(upstream):
                if chunk:
                    await self._send_within({"type": "http.response.body", "body": chunk,
                                             "more_body": True})
                    at_boundary = chunk.endswith(b"\n\n")
        except httpx.HTTPError as exc:
            self.gateway.metrics.upstream_errors.labels(stage="stream").inc()
            logger.warning("upstream %s cut the response short: %s: %s",
                           self.gateway.config.upstream, type(exc).__name__, exc)
            if "text/event-stream" not in upstream.headers.get("content-type", ""):
                return  # leave the response incomplete: the server closes the connection
            # vLLM's own way to report a failure after the 200: an error event in the stream,
            # after closing the event the cut left half-written (else the two would merge).
            event = error_body("the vLLM server closed the stream early; the answer is "
                               "incomplete. Retry the request.", "upstream_error")
            event["error"]["code"] = 502
            closing = b"" if at_boundary else b"\n\n"
            await self._send_within({"type": "http.response.body", "more_body": True,
                                     "body": closing + b"data: " + json.dumps(event).encode()
                                     + b"\n\n"})
        else:
            self.gateway.metrics.completed.inc()
        await self._send_within({"type": "http.response.body", "body": b"", "more_body": False})
        self.response_complete = True

    async def _answer(self, status: int, body: dict, headers: dict[str, str]) -> None:
        await answers.send_json(self._send, status, body, headers)
        self.response_complete = True


async def run_until_disconnect(exchange: Exchange, receive: Receive) -> None:
    """Run the exchange; if the client disconnects first, cancel it where it stands."""
    metrics = exchange.gateway.metrics
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
