"""One HTTP connection per request in flight: httpx clients of one connection each, lent to
one request at a time. The load generator and the gateway's upstream side send through it.

Why not one shared httpx pool. httpcore 1.0.9 (the current release) hands an idle connection
to every request that is waiting in the same bookkeeping pass, because handing it over does
not mark it busy. The first request takes it; each of the others fails with
`ConnectionNotAvailable`, goes back in the queue and starts another pass over every request
and connection. While the event loop keeps up, that costs nothing. Once requests pile up
(a server pause, a busy CPU, 80 arrivals a second), the passes grow with the square of the
pile, the client spends its time in them, and the pile grows: requests sit in the pool until
they time out, never sent. This course's 20x overload test met it in CI (2,819 of 4,855
requests timed out after 120 s, sent to nobody), and it reproduces here by pausing the gateway
for 5 s mid-run (`kill -STOP`). Upstream: pydantic/httpx2#1075 fixes it in a fork;
encode/httpcore#1035 is open.

Here a request borrows a whole client, whose pool has exactly one connection and exactly one
user, so no pass ever has two requests to place. Idle clients wait in a list and the most
recent one is lent first (its connection is the warmest). A request finding none makes a
client (0.1 ms with the shared TLS context, against 40 ms for a fresh one), so the number of
connections is the peak number of requests in flight, as with an uncapped pool.

Keep-alive. HTTP/1.1 also has a race no setting removes: if one side closes an idle
connection as the other sends a request on it, that request dies as a bare connection reset,
and a POST may not be retried blindly (RFC 9112 9.3.1). The overload test met that in CI as
well (uvicorn's 5 s idle close: 412 of 4,332 requests lost). So these clients never close an
idle connection themselves (no expiry), and the servers the course starts keep an idle
connection for `labs.server.SERVER_KEEP_ALIVE_S` (75 s): only a connection idle that long is
closed, by the server, and the client sees its end of file before it reuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from functools import cache

import httpx

# One connection, kept as long as the server keeps it.
ONE_CONNECTION = httpx.Limits(max_connections=1, max_keepalive_connections=1,
                              keepalive_expiry=None)


@cache
def _tls_context() -> ssl.SSLContext:
    """Built once: httpx builds one per client otherwise (certifi's bundle, ~40 ms)."""
    return httpx.create_ssl_context()


class ConnectionLeases:
    """Lends each request a client with a connection of its own.

        leases = ConnectionLeases(timeout=httpx.Timeout(600, connect=10))
        async with leases.lease() as client:
            async with client.stream("POST", url, json=body) as resp: ...
        await leases.aclose()

    `ConnectionLeases.sharing(client)` lends one given client to everyone instead (tests pass
    one with a MockTransport or an ASGITransport); closing the leases leaves that client open.
    """

    def __init__(self, *, timeout: httpx.Timeout,
                 shared: httpx.AsyncClient | None = None) -> None:
        self.timeout = timeout
        self._shared = shared
        self._idle: list[httpx.AsyncClient] = []
        self._made: list[httpx.AsyncClient] = []

    @classmethod
    def sharing(cls, client: httpx.AsyncClient) -> ConnectionLeases:
        return cls(timeout=client.timeout, shared=client)

    @property
    def connections(self) -> int:
        """Clients made so far: the peak number of requests in flight at once."""
        return len(self._made)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._shared is not None:
            yield self._shared
            return
        client = self._idle.pop() if self._idle else self._new_client()
        try:
            yield client
        finally:
            # Back in the list even after an error: a broken connection is already closed,
            # and the client opens a fresh one for its next request.
            self._idle.append(client)

    def _new_client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(timeout=self.timeout, limits=ONE_CONNECTION,
                                   verify=_tls_context())
        self._made.append(client)
        return client

    async def aclose(self) -> None:
        made, self._made, self._idle = self._made, [], []
        await asyncio.gather(*(client.aclose() for client in made))
