"""labs.load.clientretries against a fake OpenAI server on a real socket (uvicorn in a thread): it
serves `slots` streams at once and answers the rest 503 + Retry-After, like the gateway with
M = 0. The attempts the helper counts are the requests the server saw."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from labs.load import clientretries


class FakeOpenAI:
    """POST /v1/chat/completions: a stream of `service_s` for `slots` requests at once; 503
    with retry-after-ms (and Retry-After) for the rest. Records (request name, status)."""

    def __init__(self, slots: int, service_s: float, retry_after_ms: int) -> None:
        self.slots, self.service_s, self.retry_after_ms = slots, service_s, retry_after_ms
        self.busy = 0
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        headers = dict(scope["headers"])
        name = headers.get(clientretries.REQUEST_HEADER.encode(), b"?").decode()
        if self.busy >= self.slots:
            self.seen.append((name, 503))
            body = json.dumps({"error": {"message": "full", "type": "overloaded"}}).encode()
            await send({"type": "http.response.start", "status": 503, "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", str(-(-self.retry_after_ms // 1000)).encode()),
                (b"retry-after-ms", str(self.retry_after_ms).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        self.seen.append((name, 200))
        self.busy += 1
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for i in range(4):
                await asyncio.sleep(self.service_s / 4)
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0,
                         "model": "stub", "choices": [{"index": 0, "delta": {"content": f"t{i}"},
                                                       "finish_reason": None}]}
                await send({"type": "http.response.body", "more_body": True,
                            "body": f"data: {json.dumps(chunk)}\n\n".encode()})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        finally:
            self.busy -= 1


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: FakeOpenAI) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        servers.append((server, thread, sock))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"

    yield start
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _attempts_seen(fake: FakeOpenAI) -> dict[int, int]:
    counts: dict[int, int] = {}
    for name, _ in fake.seen:
        counts[int(name)] = counts.get(int(name), 0) + 1
    return counts


def test_default_retries_send_each_refusal_three_times_and_none_sends_it_once(serve) -> None:
    fake = FakeOpenAI(slots=2, service_s=1.5, retry_after_ms=100)
    url = serve(fake)
    summary, tables = clientretries.compare(url, "key", "stub", 6, max_tokens=4)
    retried, once = tables["max_retries=2 (default)"], tables["max_retries=0"]

    assert list(retried["outcome"].value_counts().sort_index().items()) == [
        ("refused", 4), ("served", 2)]
    assert set(retried.loc[retried["outcome"] == "refused", "attempts"]) == {3}
    assert set(retried.loc[retried["outcome"] == "served", "attempts"]) == {1}
    assert set(retried.loc[retried["outcome"] == "refused", "statuses"]) == {(503, 503, 503)}
    for times in retried.loc[retried["outcome"] == "refused", "came_back_s"]:
        assert len(times) == 3
        assert all(b - a >= 0.09 for a, b in itertools.pairwise(times))  # slept retry-after-ms
    assert (once["attempts"] == 1).all()
    assert list(once["outcome"].value_counts().sort_index().items()) == [
        ("refused", 4), ("served", 2)]
    refused_once = once.loc[once["outcome"] == "refused"]
    assert (refused_once["done_s"] < 1.0).all()  # told at once, not after the streams
    assert (refused_once["status"] == 503).all()

    # what the helper counted is what the server saw
    assert sum(_attempts_seen(fake).values()) == 14 + 6  # both runs
    assert summary.loc["max_retries=2 (default)", ["served", "refused", "attempts", "retries"]
                       ].tolist() == [2, 4, 14, 8]
    assert summary.loc["max_retries=0", ["served", "refused", "attempts", "retries"]
                       ].tolist() == [2, 4, 6, 0]


def test_a_retry_after_the_slots_free_is_served_on_its_second_attempt(serve) -> None:
    fake = FakeOpenAI(slots=2, service_s=0.2, retry_after_ms=600)
    url = serve(fake)
    table = clientretries.burst(url, "key", "stub", 4, max_tokens=4)
    assert (table["outcome"] == "served").all()
    assert sorted(table["attempts"]) == [1, 1, 2, 2]
    second = table.loc[table["attempts"] == 2, "came_back_s"]
    assert all(t[1] - t[0] >= 0.55 for t in second)  # came back when told
    assert sorted(_attempts_seen(fake).values()) == [1, 1, 2, 2]
