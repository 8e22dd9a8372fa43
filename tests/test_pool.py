"""labs.load.pool: every request in flight has a connection (a client) of its own."""

from __future__ import annotations

import asyncio

import httpx

from labs.load.pool import ONE_CONNECTION, ConnectionLeases


def test_requests_in_flight_together_never_share_a_client() -> None:
    async def go() -> tuple[list[int], int]:
        leases = ConnectionLeases(timeout=httpx.Timeout(5))
        held: list[int] = []
        in_flight = asyncio.Event()

        async def one() -> None:
            async with leases.lease() as client:
                held.append(id(client))
                if len(held) == 5:
                    in_flight.set()
                await in_flight.wait()  # all five hold their lease at this point

        await asyncio.gather(*(one() for _ in range(5)))
        made = leases.connections
        await leases.aclose()
        return held, made

    held, made = asyncio.run(go())
    assert len(set(held)) == 5 and made == 5


def test_a_returned_client_is_lent_again_most_recent_first() -> None:
    async def go() -> list[httpx.AsyncClient]:
        leases = ConnectionLeases(timeout=httpx.Timeout(5))
        async with leases.lease() as a, leases.lease() as b:
            pass  # b goes back first, a last
        async with leases.lease() as again:
            pass
        await leases.aclose()
        assert leases.connections == 0
        return [a, b, again]

    a, b, again = asyncio.run(go())
    assert again is a and a is not b
    assert a.is_closed and b.is_closed, "aclose() closes every client it made"


def test_a_client_goes_back_after_an_error_too() -> None:
    async def go() -> int:
        leases = ConnectionLeases(timeout=httpx.Timeout(5))
        for _ in range(3):
            try:
                async with leases.lease():
                    raise httpx.ReadError("cut")
            except httpx.ReadError:
                pass
        made = leases.connections
        await leases.aclose()
        return made

    assert asyncio.run(go()) == 1


def test_each_client_keeps_one_connection_for_as_long_as_the_server_does() -> None:
    assert ONE_CONNECTION.max_connections == 1
    assert ONE_CONNECTION.keepalive_expiry is None, "the client must never close an idle one"
    client = ConnectionLeases(timeout=httpx.Timeout(5))._new_client()
    pool = client._transport._pool  # type: ignore[attr-defined]  # httpx's private pool: the test counts its connections
    assert pool._max_connections == 1 and pool._keepalive_expiry is None


def test_sharing_lends_the_given_client_and_leaves_it_open() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200)

    shared = httpx.AsyncClient(transport=httpx.MockTransport(answer))

    async def go() -> None:
        leases = ConnectionLeases.sharing(shared)
        async with leases.lease() as a, leases.lease() as b:
            assert a is shared and b is shared
            await a.get("http://up/x")
        await leases.aclose()
        assert not shared.is_closed
        await shared.aclose()

    asyncio.run(go())
    assert seen == ["/x"]
