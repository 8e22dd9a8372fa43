"""The admission gateway, against stub upstreams: only the gateway's own logic is under test.

Most tests run the gateway in-process (`httpx.ASGITransport`) in front of an
`httpx.MockTransport` upstream whose handler can hold requests at will. Client disconnects
cannot be modelled that way (ASGITransport never disconnects), so those tests run the gateway
and a slow streaming stub in real uvicorn servers on 127.0.0.1, in threads, and close real
connections.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from labs.errors import ConfigError, PortInUse
from labs.gateway import (
    Admission,
    GatewayConfig,
    Shed,
    create_app,
    main,
    start_gateway_process,
    stop_gateway_process,
    wait_gateway_healthy,
)
from labs.load import loadgen
from labs.serving.server import free_port
from labs.workload import Poisson, Workload

GW = "http://gateway"
UP = "http://upstream"
KEY = "Bearer test-key"


# --------------------------------------------------------------------------------------------
# Fakes


def sse(*payloads: dict | str) -> bytes:
    return "".join(f"data: {p if isinstance(p, str) else json.dumps(p, ensure_ascii=False)}\n\n"
                   for p in payloads).encode()


def answer(n_tokens: int = 3) -> bytes:
    """A vLLM-shaped chat stream loadgen accepts: n tokens, finish, usage, [DONE]."""
    def chunk(**kw: Any) -> dict:
        return {"id": "c", "object": "chat.completion.chunk", "model": "stub", **kw}

    events: list[dict | str] = [chunk(choices=[{"index": 0, "delta": {"content": f" t{i}"},
                                                "finish_reason": None}])
                                for i in range(n_tokens)]
    events.append(chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "length"}]))
    events.append(chunk(choices=[], usage={"prompt_tokens": 5, "completion_tokens": n_tokens,
                                           "total_tokens": 5 + n_tokens}))
    events.append("[DONE]")
    return sse(*events)


class Pieces(httpx.AsyncByteStream):
    """A body in exactly these pieces, optionally pausing before each one."""

    def __init__(self, pieces: Iterable[bytes], pause: Callable[[int], Any] | None = None):
        self.pieces, self.pause = list(pieces), pause

    async def __aiter__(self):
        for i, piece in enumerate(self.pieces):
            if self.pause is not None:
                await self.pause(i)
            yield piece


class Upstream:
    """A MockTransport handler that plays vLLM: records every generation request (by its
    "user" field), can hold them on `gate`, and answers /health, /v1/models, /tokenize."""

    def __init__(self, body: bytes | list[bytes] | None = None, *, service_s: float = 0.0,
                 tokenize: Callable[[dict], httpx.Response] | None = None) -> None:
        self.pieces = body if isinstance(body, list) else [body or answer()]
        self.service_s = service_s
        self.tokenize = tokenize or (lambda payload: httpx.Response(200, json={"count": 5}))
        self.gate: asyncio.Event | None = None
        self.pause: Callable[[int], Any] | None = None
        self.calls: list[Any] = []
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200)
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "stub"}]})
        if path == "/version":
            return httpx.Response(200, json={"version": "stub"})
        if path == "/tokenize":
            self.requests.append(request)
            return self.tokenize(json.loads(request.content))
        self.requests.append(request)
        self.calls.append(json.loads(request.content).get("user"))
        if self.gate is not None:
            await self.gate.wait()
        if self.service_s:
            await asyncio.sleep(self.service_s)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Pieces(self.pieces, self.pause))

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self))


def gateway(upstream: Upstream, **config: Any) -> tuple[Any, httpx.AsyncClient]:
    """(app, a client that talks to it in-process)."""
    app = create_app(GatewayConfig(UP, **config), client=upstream.client())
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=GW,
                               headers={"Authorization": KEY}, timeout=10.0)
    return app, client


def chat(user: str = "a", **extra: Any) -> dict:
    return {"model": "stub", "messages": [{"role": "user", "content": "hello"}],
            "stream": True, "user": user, **extra}


async def until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def metric(app: Any, name: str, **labels: str) -> float:
    return app.state.gateway.metrics.value(name, **labels)


def assert_shed(resp: httpx.Response, reason: str) -> None:
    """A 503 with a whole-second Retry-After (labs.gateway.retry derives it) that the
    message repeats."""
    assert resp.status_code == 503
    retry = resp.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1
    error = resp.json()["error"]
    assert error["type"] == "overloaded" and error["reason"] == reason
    assert f"Retry after {retry} s" in error["message"]


# --------------------------------------------------------------------------------------------
# Proxying


def test_stream_is_relayed_byte_for_byte_and_request_unchanged() -> None:
    texts = ["héllo", " a\u2028b", " 日本語", " 🙂"]
    data = sse(*[{"choices": [{"delta": {"content": t}}]} for t in texts], "[DONE]")
    pieces = [data[i:i + 7] for i in range(0, len(data), 7)]  # cut mid-line and mid-UTF-8
    upstream = Upstream(pieces)

    async def go() -> None:
        app, client = gateway(upstream)
        sent = json.dumps(chat(), separators=(",", ":")).encode() + b"  "
        async with client:
            async with client.stream("POST", "/v1/chat/completions", content=sent) as resp:
                got = b"".join([c async for c in resp.aiter_raw()])
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "text/event-stream"
        assert got == data
        (forwarded,) = upstream.requests
        assert forwarded.content == sent  # the body is forwarded as sent, not re-encoded
        assert forwarded.headers["authorization"] == KEY
        assert metric(app, "gateway_completed_total") == 1
        assert metric(app, "gateway_admitted_total") == 1

    asyncio.run(go())


def test_upstream_error_responses_pass_through() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "model 'x' does not exist"}})

    async def go() -> None:
        app = create_app(GatewayConfig(UP), client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=GW) as client:
            resp = await client.post("/v1/completions", json={"model": "x", "prompt": "hi"})
        assert resp.status_code == 400
        assert resp.json()["error"]["message"] == "model 'x' does not exist"

    asyncio.run(go())


def test_slot_is_held_until_the_body_ends_not_the_headers() -> None:
    upstream = Upstream([b"data: first\n\n", b"data: [DONE]\n\n"])

    async def go() -> None:
        more = asyncio.Event()

        async def pause(i: int) -> None:
            if i == 1:
                await more.wait()

        upstream.pause = pause
        app, client = gateway(upstream, max_in_flight=1)
        admission = app.state.gateway.admission
        async with client:
            task = asyncio.create_task(client.post("/v1/chat/completions", json=chat()))
            await until(lambda: len(upstream.calls) == 1)
            await asyncio.sleep(0.05)  # headers and the first chunk are through by now
            assert admission.in_flight == 1
            more.set()
            resp = await task
        assert resp.status_code == 200 and resp.content.endswith(b"[DONE]\n\n")
        assert admission.in_flight == 0

    asyncio.run(go())


def test_upstream_dying_mid_stream_ends_with_an_error_event_and_frees_the_slot() -> None:
    class Dies(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"data: first\n\n"
            raise httpx.ReadError("connection reset")

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              stream=Dies())

    async def go() -> None:
        app = create_app(GatewayConfig(UP), client=httpx.AsyncClient(
            transport=httpx.MockTransport(handler)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=GW) as client:
            resp = await client.post("/v1/chat/completions", json=chat())
        assert resp.status_code == 200
        first, event = resp.text.split("\n\n")[:2]
        assert first == "data: first"
        error = json.loads(event.removeprefix("data: "))["error"]
        assert error["code"] == 502 and "incomplete" in error["message"]
        assert UP not in resp.text  # the internal address stays in the log
        assert metric(app, "gateway_upstream_errors_total", stage="stream") == 1
        assert metric(app, "gateway_completed_total") == 0
        assert app.state.gateway.admission.in_flight == 0

    asyncio.run(go())


def test_models_is_proxied_without_admission() -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=1, max_queue=0)
        upstream.gate = asyncio.Event()
        async with client:
            held = asyncio.create_task(client.post("/v1/chat/completions", json=chat()))
            await until(lambda: app.state.gateway.admission.in_flight == 1)
            resp = await client.get("/v1/models")
            assert resp.status_code == 200 and resp.json()["data"][0]["id"] == "stub"
            upstream.gate.set()
            assert (await held).status_code == 200

    asyncio.run(go())


# --------------------------------------------------------------------------------------------
# Admission


def test_queue_full_is_refused_at_once_with_retry_after() -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=1, max_queue=1)
        admission = app.state.gateway.admission
        upstream.gate = asyncio.Event()
        async with client:
            first = asyncio.create_task(client.post("/v1/chat/completions", json=chat("a")))
            await until(lambda: admission.in_flight == 1)
            second = asyncio.create_task(client.post("/v1/chat/completions", json=chat("b")))
            await until(lambda: admission.queue_depth == 1)
            resp = await client.post("/v1/chat/completions", json=chat("c"))
            assert_shed(resp, "queue_full")
            upstream.gate.set()
            assert [(await t).status_code for t in (first, second)] == [200, 200]
        assert upstream.calls == ["a", "b"]
        assert metric(app, "gateway_shed_total", reason="queue_full") == 1

    asyncio.run(go())


def test_queue_timeout_is_refused_with_retry_after() -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=1, max_queue=4, max_queue_wait_s=0.1)
        admission = app.state.gateway.admission
        upstream.gate = asyncio.Event()
        async with client:
            held = asyncio.create_task(client.post("/v1/chat/completions", json=chat("a")))
            await until(lambda: admission.in_flight == 1)
            resp = await client.post("/v1/chat/completions", json=chat("b"))
            assert_shed(resp, "queue_timeout")
            assert admission.queue_depth == 0
            upstream.gate.set()
            assert (await held).status_code == 200
        assert upstream.calls == ["a"]
        assert metric(app, "gateway_shed_total", reason="queue_timeout") == 1

    asyncio.run(go())


def test_waiters_are_admitted_first_come_first_served() -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=1, max_queue=8)
        admission = app.state.gateway.admission
        upstream.gate = asyncio.Event()
        async with client:
            tasks = [asyncio.create_task(client.post("/v1/chat/completions", json=chat("0")))]
            await until(lambda: admission.in_flight == 1)
            for i in range(1, 7):
                tasks.append(asyncio.create_task(
                    client.post("/v1/chat/completions", json=chat(str(i)))))
                await until(lambda i=i: admission.queue_depth == i)
            upstream.gate.set()
            statuses = [(await t).status_code for t in tasks]
        assert statuses == [200] * 7
        assert upstream.calls == [str(i) for i in range(7)]

    asyncio.run(go())


def test_admission_hands_a_slot_on_when_its_waiter_is_cancelled_as_it_gets_it() -> None:
    async def go() -> None:
        admission = Admission(max_in_flight=1, max_queue=2)
        await admission.acquire(1.0)
        first = asyncio.create_task(admission.acquire(5.0))
        second = asyncio.create_task(admission.acquire(5.0))
        await until(lambda: admission.queue_depth == 2)
        admission.release()  # the slot goes to `first`...
        first.cancel()       # ...which is cancelled before it runs: it must pass it on
        await asyncio.wait_for(second, 1.0)
        assert admission.in_flight == 1 and admission.queue_depth == 0
        admission.release()
        assert admission.in_flight == 0
        no_queue = Admission(max_in_flight=1, max_queue=0)
        await no_queue.acquire(1.0)
        with pytest.raises(Shed) as shed:
            await no_queue.acquire(1.0)
        assert shed.value.reason == "queue_full"

    asyncio.run(go())


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("path, content, needle", [
    ("/v1/chat/completions", b"{not json", "not valid JSON"),
    ("/v1/chat/completions", b"[1, 2]", "must be a JSON object"),
    ("/v1/chat/completions", b'{"model": "m", "prompt": "hi"}', '"messages"'),
    ("/v1/chat/completions", b'{"model": "m", "messages": []}', '"messages"'),
    ("/v1/completions", b'{"model": "m", "messages": []}', '"prompt"'),
])
def test_invalid_requests_get_400_and_never_reach_the_engine(path: str, content: bytes,
                                                             needle: str) -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream)
        async with client:
            resp = await client.post(path, content=content,
                                     headers={"content-type": "application/json"})
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert needle in error["message"] and error["reason"] == "invalid"
        assert upstream.calls == []
        assert metric(app, "gateway_rejected_total", reason="invalid") == 1
        assert metric(app, "gateway_shed_total", reason="queue_full") == 0  # input, not load

    asyncio.run(go())


def test_oversized_prompt_gets_413_naming_the_limit() -> None:
    upstream = Upstream(tokenize=lambda payload: httpx.Response(200, json={"count": 2000}))

    async def go() -> None:
        app, client = gateway(upstream, max_prompt_tokens=1024)
        async with client:
            resp = await client.post("/v1/chat/completions", json=chat())
        assert resp.status_code == 413
        error = resp.json()["error"]
        assert "2000 tokens" in error["message"] and "at most 1024" in error["message"]
        assert error["reason"] == "prompt_too_long"
        (tokenize,) = upstream.requests
        assert tokenize.url.path == "/tokenize"
        assert tokenize.headers["authorization"] == KEY  # vLLM wants the key there too
        assert json.loads(tokenize.content)["messages"] == chat()["messages"]
        assert upstream.calls == []
        assert metric(app, "gateway_rejected_total", reason="prompt_too_long") == 1

    asyncio.run(go())


def test_prompt_within_budget_goes_through() -> None:
    upstream = Upstream(tokenize=lambda payload: httpx.Response(200, json={"count": 10}))

    async def go() -> None:
        _, client = gateway(upstream, max_prompt_tokens=1024)
        async with client:
            resp = await client.post("/v1/completions", json={"model": "m", "prompt": "hi"})
        assert resp.status_code == 200 and upstream.calls == [None]

    asyncio.run(go())


def test_without_tokenize_the_budget_falls_back_to_characters_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    upstream = Upstream(tokenize=lambda payload: httpx.Response(404))

    async def go() -> None:
        _, client = gateway(upstream, max_prompt_tokens=100)
        async with client:
            long = await client.post("/v1/completions", json={"prompt": "x" * 800})
            short = await client.post("/v1/completions", json={"prompt": "x" * 80})
        assert long.status_code == 413 and "estimate" in long.json()["error"]["message"]
        assert short.status_code == 200

    with caplog.at_level(logging.WARNING, logger="labs.gateway"):
        asyncio.run(go())
    assert "characters / 4" in caplog.text


# --------------------------------------------------------------------------------------------
# Upstream down, health, metrics, routes


def test_upstream_down_gives_502_with_what_to_do() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    async def go() -> None:
        app = create_app(GatewayConfig(url))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=GW) as client:
            resp = await client.post("/v1/chat/completions", json=chat())
            models = await client.get("/v1/models")
            health = await client.get("/health")
        await app.state.gateway.close()
        assert resp.status_code == 502
        message = resp.json()["error"]["message"]
        assert "could not reach" in message and "python -m labs status" in message
        assert url not in resp.text and "Traceback" not in resp.text
        assert "ConnectError" not in resp.text  # exception text goes to the log only
        assert models.status_code == 502
        assert health.status_code == 200 and health.json()["upstream"]["healthy"] is False
        assert app.state.gateway.admission.in_flight == 0

    asyncio.run(go())


def test_health_reports_queue_and_upstream() -> None:
    async def go() -> None:
        _, client = gateway(Upstream(), max_in_flight=3, max_queue=5)
        async with client:
            resp = await client.get("/health")
        assert resp.status_code == 200
        body = resp.json()
        assert body["queue_depth"] == 0 and body["in_flight"] == 0
        assert body["max_in_flight"] == 3 and body["max_queue"] == 5
        assert body["upstream"] == {"healthy": True}
        assert UP not in resp.text

    asyncio.run(go())


def test_metrics_expose_the_named_metrics_and_count_shed_by_reason() -> None:
    upstream = Upstream(tokenize=lambda payload: httpx.Response(200, json={"count": 99}))

    async def go() -> str:
        _, client = gateway(upstream, max_prompt_tokens=50)
        async with client:
            await client.post("/v1/chat/completions", content=b"nope")
            await client.post("/v1/chat/completions", content=b"{}")
            await client.post("/v1/chat/completions", json=chat())
            resp = await client.get("/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        return resp.text

    text = asyncio.run(go())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    names = {name for name, _ in samples}
    for name in ("gateway_queue_depth", "gateway_in_flight", "gateway_admitted_total",
                 "gateway_completed_total", "gateway_queue_wait_seconds_count"):
        assert name in names, name
    assert samples[("gateway_rejected_total", (("reason", "invalid"),))] == 2
    assert samples[("gateway_rejected_total", (("reason", "prompt_too_long"),))] == 1
    assert samples[("gateway_shed_total", (("reason", "queue_full"),))] == 0
    assert samples[("gateway_shed_total", (("reason", "queue_timeout"),))] == 0
    assert ("gateway_shed_total", (("reason", "invalid"),)) not in samples  # load only
    for stage in ("queued", "streaming", "stalled"):
        assert samples[("gateway_client_disconnects_total", (("stage", stage),))] == 0


def test_unknown_routes_and_methods_get_json_errors() -> None:
    async def go() -> None:
        _, client = gateway(Upstream())
        async with client:
            missing = await client.post("/v1/embeddings", json={})
            wrong = await client.get("/v1/chat/completions")
        assert missing.status_code == 404 and "/v1/chat/completions" in missing.json()[
            "error"]["message"]
        assert wrong.status_code == 405 and wrong.json()["error"]

    asyncio.run(go())


# --------------------------------------------------------------------------------------------
# Overload: every request ends in a full answer or a 503 with Retry-After


def test_overload_every_request_answered_or_shed(duration_s: float = 1.0) -> None:
    """20x capacity: N=2 slots x 50 ms is 40 requests/s; offer 800/s, up to 80 at once."""
    upstream = Upstream(answer(4), service_s=0.05)

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=2, max_queue=4, max_queue_wait_s=1.0)
        async with client:
            result = await asyncio.wait_for(loadgen.run(
                Poisson(800, duration_s=duration_s, max_concurrency=80),
                Workload(max_tokens=4), base_url=GW, model="stub", api_key="k",
                client=client, progress=False, timeout_s=10.0), timeout=30)
        records = result.records
        ok = [r for r in records if r.ok]
        shed = [r for r in records if r.error_kind == "shed"]
        assert len(ok) + len(shed) == len(records), {r.error for r in records if not r.ok}
        assert all(r.status == 503 and r.retry_after_s and r.retry_after_s >= 1 for r in shed)
        assert all(r.completion_tokens == 4 for r in ok)
        assert ok and len(shed) > len(ok)
        admitted = metric(app, "gateway_admitted_total")
        refused = sum(metric(app, "gateway_shed_total", reason=r)
                      for r in ("queue_full", "queue_timeout"))
        assert admitted + refused == len(records)
        assert admitted == len(ok) == metric(app, "gateway_completed_total")
        admission = app.state.gateway.admission
        assert admission.in_flight == 0 and admission.queue_depth == 0

    asyncio.run(go())


# --------------------------------------------------------------------------------------------
# Client disconnects, against real servers


class SlowStream:
    """A raw ASGI upstream that streams `max_tokens` SSE chunks `delay_s` apart and notices,
    between chunks, that its client went away (what vLLM does to abort a request)."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.calls: list[Any] = []
        self.gone = threading.Event()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        request = json.loads(body)
        self.calls.append(request.get("user"))
        if not request.get("stream", True):  # whole answer: nothing is sent until it is done
            try:
                message = await asyncio.wait_for(receive(), self.delay_s * 100)
            except TimeoutError:
                message = {"type": "timeout"}
            if message["type"] == "http.disconnect":
                self.gone.set()
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(request.get("max_tokens", 100)):
            await send({"type": "http.response.body", "body": sse({"i": i}), "more_body": True})
            try:
                message = await asyncio.wait_for(receive(), self.delay_s)
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                self.gone.set()
                return
        await send({"type": "http.response.body", "body": sse("[DONE]")})


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1 in a thread, on a port bound up front."""

    def __init__(self, app: Any, lifespan: str = "off") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                                    lifespan=lifespan))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def real() -> Iterable[tuple[SlowStream, Any, str]]:
    """(stub upstream, gateway app, gateway URL): both real servers, gateway N=1, M=2."""
    stub = SlowStream()
    with ServerThread(stub) as upstream:
        app = create_app(GatewayConfig(upstream.url, max_in_flight=1, max_queue=2))
        with ServerThread(app, lifespan="on") as gw:
            yield stub, app, gw.url


async def _health(client: httpx.AsyncClient, url: str) -> dict:
    return (await client.get(url + "/health")).json()


async def _until_health(client: httpx.AsyncClient, url: str,
                        condition: Callable[[dict], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition(await _health(client, url)):
        assert time.monotonic() < deadline, await _health(client, url)
        await asyncio.sleep(0.02)


def test_disconnect_while_streaming_closes_upstream_and_frees_the_slot(real) -> None:
    stub, app, url = real

    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", url + "/v1/chat/completions",
                                     json=chat("s", max_tokens=500)) as resp:
                assert resp.status_code == 200
                chunks = resp.aiter_raw()
                await anext(chunks)
                await anext(chunks)
            # leaving the block early closed the connection mid-stream
            assert await asyncio.to_thread(stub.gone.wait, 5), "upstream never saw it go"
            await _until_health(client, url, lambda h: h["in_flight"] == 0)
            # the slot is free: the next request is admitted and completes
            resp = await client.post(url + "/v1/chat/completions", json=chat("t", max_tokens=3))
            assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
        assert metric(app, "gateway_client_disconnects_total", stage="streaming") == 1
        assert metric(app, "gateway_completed_total") == 1

    asyncio.run(go())


def test_disconnect_while_queued_leaves_the_queue_and_never_reaches_upstream(real) -> None:
    stub, app, url = real

    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            async with client.stream("POST", url + "/v1/chat/completions",
                                     json=chat("holder", max_tokens=500)) as held:
                chunks = held.aiter_raw()
                await anext(chunks)  # the only slot is taken
                async with httpx.AsyncClient(timeout=10) as other:
                    queued = asyncio.create_task(
                        other.post(url + "/v1/chat/completions", json=chat("queued")))
                    await _until_health(client, url, lambda h: h["queue_depth"] == 1)
                    queued.cancel()  # the client gives up: its connection closes
                    with pytest.raises(asyncio.CancelledError):
                        await queued
                await _until_health(client, url, lambda h: h["queue_depth"] == 0)
                assert (await _health(client, url))["in_flight"] == 1
            await _until_health(client, url, lambda h: h["in_flight"] == 0)
            resp = await client.post(url + "/v1/chat/completions", json=chat("next", max_tokens=2))
            assert resp.status_code == 200
        assert stub.calls == ["holder", "next"]
        assert metric(app, "gateway_client_disconnects_total", stage="queued") == 1

    asyncio.run(go())


def test_disconnect_before_a_whole_answer_closes_upstream_too(real) -> None:
    """Not streamed, vLLM sends no header until it is done: the client may leave first."""
    stub, app, url = real

    async def go() -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            waiting = asyncio.create_task(client.post(
                url + "/v1/completions", json={"prompt": "hi", "stream": False, "user": "w"}))
            await _until_health(client, url, lambda h: h["in_flight"] == 1)
            waiting.cancel()
            assert await asyncio.to_thread(stub.gone.wait, 5), "upstream never saw it go"
            await _until_health(client, url, lambda h: h["in_flight"] == 0)
        assert metric(app, "gateway_client_disconnects_total", stage="streaming") == 1

    asyncio.run(go())


# --------------------------------------------------------------------------------------------
# Config, CLI and the supervisor helpers


def test_config_rejects_what_cannot_work() -> None:
    with pytest.raises(ConfigError, match="max_in_flight"):
        GatewayConfig(UP, max_in_flight=0)
    with pytest.raises(ConfigError, match="retry_after_s"):
        GatewayConfig(UP, retry_after_s=0)
    with pytest.raises(ConfigError, match="http"):
        GatewayConfig("localhost:8000")
    assert GatewayConfig("http://h:8000/v1/").upstream == "http://h:8000"


def test_cli_bad_arguments_are_one_line_and_exit_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["--upstream", UP, "--max-queue", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "max_queue" in err
    with pytest.raises(SystemExit) as exit_:
        main(["--max-in-flight", "many"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-in-flight" in err


def test_cli_port_taken_is_one_line_naming_the_port(capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["--upstream", UP, "--port", str(port)]) == 1
        with pytest.raises(PortInUse, match=str(port)):
            start_gateway_process(GatewayConfig(UP), port, "/dev/null")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {port}" in err


def test_gateway_process_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "gateway.log"
    config = GatewayConfig(f"http://127.0.0.1:{free_port()}", max_in_flight=2, max_queue=3)
    proc = start_gateway_process(config, port, log)
    try:
        wait_gateway_healthy(f"http://127.0.0.1:{port}", 30, proc=proc, log_path=log)
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
        assert health["max_in_flight"] == 2 and health["upstream"]["healthy"] is False
    finally:
        stop_gateway_process(proc)
    assert proc.poll() is not None


# --------------------------------------------------------------------------------------------
# Abuse: clients that would bypass the bound, or hold the gateway, get a clear answer


@pytest.mark.parametrize("path, body, needle", [
    ("/v1/chat/completions", chat(n=64), '"n": 64'),
    ("/v1/completions", {"model": "m", "prompt": ["a"] * 32}, "list of 32 prompts"),
    ("/v1/completions", {"model": "m", "prompt": "a", "best_of": 4}, '"best_of": 4'),
    ("/v1/chat/completions", chat(use_beam_search=True), "beam search"),
])
def test_requests_for_several_sequences_get_400_and_never_reach_the_engine(
        path: str, body: dict, needle: str) -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=2)
        async with client:
            resp = await client.post(path, json=body)
        assert resp.status_code == 400
        error = resp.json()["error"]
        assert needle in error["message"] and "separate requests" in error["message"]
        assert error["reason"] == "unsupported" and upstream.calls == []
        assert metric(app, "gateway_rejected_total", reason="unsupported") == 1

    asyncio.run(go())


@pytest.mark.parametrize("body", [
    {"model": "m", "prompt": [1, 2, 3]},           # token ids: one prompt
    {"model": "m", "prompt": ["only one"]},        # a list of one prompt
    {"model": "m", "prompt": "a", "n": 1},
])
def test_one_sequence_requests_go_through(body: dict) -> None:
    upstream = Upstream()

    async def go() -> None:
        _, client = gateway(upstream)
        async with client:
            resp = await client.post("/v1/completions", json=body)
        assert resp.status_code == 200 and upstream.calls == [None]

    asyncio.run(go())


def test_the_key_is_checked_before_a_queue_place_is_taken() -> None:
    upstream = Upstream()
    upstream.gate = asyncio.Event()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=1, max_queue=1, api_key="test-key")
        async with client:
            holder = asyncio.create_task(client.post("/v1/chat/completions", json=chat("h")))
            await until(lambda: app.state.gateway.admission.in_flight == 1)
            anonymous = await client.post("/v1/chat/completions", json=chat("x"),
                                          headers={"Authorization": ""})
            wrong = await client.post("/v1/chat/completions", json=chat("y"),
                                      headers={"Authorization": "Bearer guess"})
            tokenize = await client.post("/tokenize", json={"prompt": "hi"},
                                         headers={"Authorization": ""})
            models = await client.get("/v1/models", headers={"Authorization": ""})
            version = await client.get("/version", headers={"Authorization": ""})
            assert app.state.gateway.admission.queue_depth == 0  # none of them queued
            upstream.gate.set()
            assert (await holder).status_code == 200
        for resp in (anonymous, wrong, tokenize, models):
            assert resp.status_code == 401, resp.text
            assert resp.json()["error"]["reason"] == "unauthorized"
            assert "Authorization: Bearer" in resp.json()["error"]["message"]
        assert version.status_code != 401  # open, as vLLM has it
        assert upstream.calls == ["h"]
        assert metric(app, "gateway_rejected_total", reason="unauthorized") == 4
        assert metric(app, "gateway_shed_total", reason="queue_full") == 0

    asyncio.run(go())


def test_a_body_over_the_cap_is_refused_with_413_without_reading_it() -> None:
    upstream = Upstream()

    async def go() -> None:
        app, client = gateway(upstream, max_body_bytes=4096)
        async with client:
            declared = await client.post("/v1/chat/completions",
                                         json=chat(padding="x" * 10_000))

            async def chunks():  # no Content-Length: counted as it arrives
                for _ in range(10):
                    yield b" " * 1000

            streamed = await client.post("/v1/chat/completions", content=chunks())
        for resp in (declared, streamed):
            assert resp.status_code == 413
            assert resp.json()["error"]["reason"] == "body_too_large"
            assert "4,096 bytes" in resp.json()["error"]["message"]
        assert upstream.calls == []
        assert metric(app, "gateway_rejected_total", reason="body_too_large") == 2

    asyncio.run(go())


def test_a_stream_cut_mid_event_closes_that_event_before_the_error() -> None:
    class Dies(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b'data: {"choices": [{"delta": {"content": "hal'  # half an event
            raise httpx.ReadError("connection reset")

    async def go() -> None:
        app = create_app(GatewayConfig(UP), client=httpx.AsyncClient(
            transport=httpx.MockTransport(lambda r: httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=Dies()))))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=GW) as client:
            resp = await client.post("/v1/chat/completions", json=chat())
        events = resp.text.split("\n\n")
        assert events[0].endswith('"hal')  # the half event, closed by a blank line
        error = json.loads(events[1].removeprefix("data: "))["error"]  # a whole event
        assert error["code"] == 502

    asyncio.run(go())


def test_liveness_never_asks_the_engine_and_readiness_does() -> None:
    calls: list[str] = []

    async def slow_engine(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        await asyncio.sleep(5)
        return httpx.Response(200)

    async def go() -> None:
        app = create_app(GatewayConfig(UP), client=httpx.AsyncClient(
            transport=httpx.MockTransport(slow_engine)))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=GW) as client:
            live = await client.get("/livez")
            assert calls == []
            started = time.monotonic()
            ready = await client.get("/readyz")
            took = time.monotonic() - started
        assert live.status_code == 200
        assert ready.status_code == 503 and "did not answer" in ready.json()["reason"]
        assert calls == ["/health"]
        from labs.gateway.app import READY_TIMEOUT_S
        assert took < 5 / 2, "readiness must give up at its own timeout, not the engine's"
        assert READY_TIMEOUT_S < 1  # under the Kubernetes probes' 1 s timeout

    asyncio.run(go())


def test_the_queue_wait_histogram_counts_the_waits_that_timed_out() -> None:
    upstream = Upstream()
    upstream.gate = asyncio.Event()

    async def go() -> None:
        app, client = gateway(upstream, max_in_flight=1, max_queue=1, max_queue_wait_s=0.1)
        async with client:
            holder = asyncio.create_task(client.post("/v1/chat/completions", json=chat("h")))
            await until(lambda: app.state.gateway.admission.in_flight == 1)
            timed_out = await client.post("/v1/chat/completions", json=chat("t"))
            upstream.gate.set()
            await holder
        assert_shed(timed_out, "queue_timeout")
        assert metric(app, "gateway_queue_wait_seconds_count", outcome="timeout") == 1
        assert metric(app, "gateway_queue_wait_seconds_sum", outcome="timeout") >= 0.1
        assert metric(app, "gateway_queue_wait_seconds_count", outcome="admitted") == 1

    asyncio.run(go())


def _raw_request(url: str, path: str, body: bytes, *, declared: int | None = None) -> socket.socket:
    """A socket that has sent a POST's headers and `body` (maybe less than declared)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    length = len(body) if declared is None else declared
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {length}\r\n\r\n".encode() + body)
    return sock


def test_a_body_that_never_finishes_gets_408_and_the_gateway_moves_on() -> None:
    app = create_app(GatewayConfig(UP, body_timeout_s=0.3))
    with ServerThread(app, lifespan="on") as gw:
        sock = _raw_request(gw.url, "/v1/chat/completions", b'{"model": ', declared=1000)
        sock.settimeout(10)
        reply = sock.recv(65536).decode()
        sock.close()
        assert reply.startswith("HTTP/1.1 408") and "body_timeout" in reply
        assert httpx.get(gw.url + "/livez").status_code == 200
    assert metric(app, "gateway_rejected_total", reason="body_timeout") == 1


class Firehose:
    """A raw ASGI upstream that streams SSE as fast as it can until its client goes."""

    def __init__(self) -> None:
        self.gone = threading.Event()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        event = sse({"choices": [{"delta": {"content": "x" * 4000}}]})
        try:
            for _ in range(100_000):  # ~400 MB: far beyond any socket buffer
                await send({"type": "http.response.body", "body": event, "more_body": True})
        except OSError:
            pass
        self.gone.set()


def test_a_client_that_stops_reading_loses_its_slot_after_the_send_timeout() -> None:
    stub = Firehose()
    with ServerThread(stub) as upstream:
        app = create_app(GatewayConfig(upstream.url, max_in_flight=1, max_queue=0,
                                       send_timeout_s=0.5))
        with ServerThread(app, lifespan="on") as gw:
            body = json.dumps(chat("stalled")).encode()
            sock = _raw_request(gw.url, "/v1/chat/completions", body)  # and never reads
            deadline = time.monotonic() + 30
            while app.state.gateway.metrics.value("gateway_client_disconnects_total",
                                                  stage="stalled") < 1:
                assert time.monotonic() < deadline, "the stalled reader kept its slot"
                time.sleep(0.05)
            deadline = time.monotonic() + 5
            while app.state.gateway.admission.in_flight:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert stub.gone.wait(10), "the upstream request was not closed"
            sock.close()
            # the slot is free again: the next client is admitted
            with httpx.stream("POST", gw.url + "/v1/chat/completions", json=chat("next"),
                              timeout=10) as resp:
                assert resp.status_code == 200
