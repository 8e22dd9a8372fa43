"""The gateway's HTTP server: uvicorn on h11, plus the two connection limits uvicorn lacks,
and a drain on SIGTERM.

uvicorn bounds a request's header bytes (h11's max_incomplete_event_size, here
`max_header_bytes`), but not the time they take: its keep-alive timer starts only after a
response and stops at a request's first byte, so a connection that sends nothing, or half its
headers, stays open for ever. Nor does it bound connections: `limit_concurrency` answers 503
to a request only after its connection and headers were taken. `guarded_protocol` adds both,
per connection, in uvicorn's own h11 protocol (an ASGI middleware cannot: the app is called
only once the headers are in):

- at most `max_connections` open; one more is closed at once, unanswered (the cheapest thing
  to do with it: an answer would need its request first), and counted;
- a request's line and headers must arrive within `header_timeout_s` of its first byte (or
  of the connection opening): else 408 if it had sent something, or a silent close;
- a body the gateway refused without reading (401, 503, 413 on a route that takes none) is
  read and dropped by uvicorn, so the client still gets the answer (closing on a client
  still sending resets the connection, and the answer can be lost with it), but for at most
  `body_timeout_s`; then the connection is closed;
- headers beyond `max_header_bytes`: 431, and malformed HTTP: 400, both in the gateway's JSON
  error shape (uvicorn's own are plain text);
- every socket reads at most READ_BYTES at a time (labs.gateway.bound counts two per
  connection: one in h11's buffer, one being parsed).

h11, not httptools: httptools (uvloop's companion, what uvicorn picks when installed) has no
header limit that uvicorn exposes. The gateway image installs plain uvicorn, which is h11.

It also raises the process's soft limit on open files to max_connections + SPARE_FDS where
the hard limit allows (else it warns), so the limit that refuses a connection is this one.

The drain. On SIGTERM or SIGINT uvicorn stops accepting, closes idle connections, waits for
the open ones up to its graceful timeout and then cancels what is left. `GatewayServer`
first tells the gateway to drain (labs.gateway.state: refuse waiters at once, cut streams at
shutdown_timeout_s with an error event) and gives uvicorn CUT_GRACE_S more than that, so the
cut is written before anything is cancelled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..serving.commands import SERVER_KEEP_ALIVE_S
from .answers import error_body
from .bound import READ_BYTES
from .config import GatewayConfig
from .metrics import GatewayMetrics

logger = logging.getLogger("labs.gateway")

CUT_GRACE_S = 2.0  # after the gateway's own cut, before uvicorn cancels what is left
SPARE_FDS = 256    # file descriptors beyond max_connections: upstream connections, logs
_TOO_LARGE = ("the request line and headers are longer than this gateway accepts ({:,} bytes, "
              "max_header_bytes).")


def guarded_protocol(config: GatewayConfig, metrics: GatewayMetrics) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the connection limits of `config` (module docstring)."""

    class GuardedH11Protocol(H11Protocol):
        _refused = False
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's protocol types it as a BaseTransport; it is always a Transport
            if len(self.connections) >= config.max_connections:
                self._refused = True
                metrics.connections_refused.inc()
                transport.abort()
                return
            if hasattr(transport, "max_size"):  # asyncio's selector transport: bytes per recv
                transport.max_size = READ_BYTES
            super().connection_made(transport)
            metrics.connections.inc()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm()
            metrics.connections.dec()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            cycle, discarding = self.cycle, self._discarding()
            if self._between_requests() and not discarding:
                if self._header_timer is None:
                    self._arm()  # the first byte of a request: its headers' clock starts
                if self._headers_too_large(self.conn.trailing_data[0] + data):
                    return
            super().data_received(data)
            if self.cycle is not cycle:
                self._disarm()  # a request's headers are in
            elif discarding and not self._discarding():  # the unread body has ended
                self._disarm()
                if self.conn.trailing_data[0]:
                    self._arm()  # and the next request has begun
                elif not self.transport.is_closing():  # idle: uvicorn's keep-alive again
                    self._unset_keepalive_if_required()
                    self.timeout_keep_alive_task = self.loop.call_later(
                        self.timeout_keep_alive, self.timeout_keep_alive_handler)

        def on_response_complete(self) -> None:
            cycle = self.cycle
            if (self.conn.their_state is h11.DONE
                    and self._headers_too_large(self.conn.trailing_data[0])):
                return  # a pipelined request's headers are too long
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if self.cycle is not cycle:
                self._disarm()  # a pipelined request's headers were in already
            elif self._discarding():
                self._arm(config.body_timeout_s)  # the rest of a body refused unread
            elif self.conn.trailing_data[0]:
                self._arm()  # part of the next request is in: its clock starts now

        def _headers_too_large(self, buffered: bytes) -> bool:
            """h11 limits only an incomplete head, so one that arrives whole in a read is
            measured here: over max_header_bytes, 431 and close (True)."""
            end = buffered.find(b"\r\n\r\n")
            if (end + 4 if end >= 0 else len(buffered)) <= config.max_header_bytes:
                return False
            metrics.rejected.labels(reason="header_too_large").inc()
            self._write_error(431, error_body(_TOO_LARGE.format(config.max_header_bytes),
                                              "invalid_request_error", "header_too_large"),
                              h11_connection=False)
            self.transport.close()
            return True

        def send_400_response(self, msg: str) -> None:
            """h11 could not parse the request: 431 if its headers outgrew the limit, else
            400, in the gateway's JSON error shape."""
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()  # mid-answer: nothing more can be said
                return
            too_large = len(self.conn.trailing_data[0]) > config.max_header_bytes
            if too_large:
                status, reason = 431, "header_too_large"
                message = _TOO_LARGE.format(config.max_header_bytes)
            else:
                status, reason = 400, "bad_request"
                message = ("the request is not valid HTTP/1.1 (its request line, a header "
                           "name or value, or its framing); send a well-formed request.")
            metrics.rejected.labels(reason=reason).inc()
            try:
                self._write_error(status, error_body(message, "invalid_request_error", reason),
                                  h11_connection=True)
            except h11.LocalProtocolError:
                pass
            self.transport.close()

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _discarding(self) -> bool:
            """Answered before its body was read (a refusal): uvicorn reads the rest and
            drops it, and this connection gets body_timeout_s for that."""
            return (self.cycle is not None and self.cycle.response_complete
                    and self.conn.their_state is h11.SEND_BODY)

        def _arm(self, after_s: float | None = None) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(
                config.header_timeout_s if after_s is None else after_s, self._timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _timed_out(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or not self._between_requests():
                return
            if self._discarding():  # the refused body is still coming: enough
                self.transport.close()
                return
            if self.conn.trailing_data[0]:  # it sent part of a request: tell it why
                metrics.rejected.labels(reason="header_timeout").inc()
                message = (f"the request line and headers did not arrive within "
                           f"{config.header_timeout_s:g} s (header_timeout_s); send them "
                           "whole and promptly.")
                self._write_error(408, error_body(message, "invalid_request_error",
                                                  "header_timeout"), h11_connection=False)
            self.transport.close()

        def _write_error(self, status: int, payload: dict[str, Any], *,
                         h11_connection: bool) -> None:
            body = json.dumps(payload).encode()
            headers = [(b"content-type", b"application/json"),
                       (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            if h11_connection:  # h11 is in its error state, which lets a server answer
                self.transport.write(self.conn.send(h11.Response(status_code=status,
                                                                 headers=headers)) or b"")
                self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
                return
            # No request was read, so h11 has nothing to answer: the bytes by hand.
            phrase = {408: b"Request Timeout",
                      431: b"Request Header Fields Too Large"}.get(status, b"Error")
            head = b"HTTP/1.1 %d %s\r\n" % (status, phrase)
            head += b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            self.transport.write(head + b"\r\n" + body)

    return GuardedH11Protocol


class GatewayServer(uvicorn.Server):
    """uvicorn serving a gateway app (`create_app`), with its connection limits and drain."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        gateway = app.state.gateway
        config: GatewayConfig = gateway.config
        super().__init__(uvicorn.Config(
            app, host=host, port=port, log_level=log_level, loop="asyncio",
            http=guarded_protocol(config, gateway.metrics),
            h11_max_incomplete_event_size=config.max_header_bytes,
            timeout_keep_alive=SERVER_KEEP_ALIVE_S,
            timeout_graceful_shutdown=config.shutdown_timeout_s + CUT_GRACE_S,  # type: ignore  # uvicorn says int | None; a float works, and a drain is measured in fractions of a second
        ))
        self.gateway = gateway
        ensure_descriptors(config.max_connections + SPARE_FDS)

    async def shutdown(self, sockets: Any = None) -> None:
        self.gateway.drain()
        await super().shutdown(sockets)


def ensure_descriptors(needed: int) -> int:
    """Raise the soft limit on open files towards `needed` (up to the hard limit), so that
    max_connections is the limit that refuses connections, not a failing accept(); warn if
    it cannot be. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        logger.warning("only %d open files allowed (max_connections + %d needs %d): lower "
                       "--max-connections or raise the limit (ulimit -n)", soft, SPARE_FDS,
                       needed)
    return soft
