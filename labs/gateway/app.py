"""The gateway as a Starlette app: its routes, and the state they share.

    POST /v1/chat/completions, /v1/completions   admitted: key, body, shape, count, queue, engine
    GET  /v1/models, POST /tokenize               proxied outside admission, behind the key
    GET  /version                                 proxied once and remembered, open (as vLLM has it)
    GET  /livez     200 while the process serves (never asks the engine: a liveness probe)
    GET  /readyz    200 when the engine answers its /health within READY_TIMEOUT_S, else 503
    GET  /health    200 while it runs, with the queue and the engine's readiness, for people
    GET  /metrics   the gateway's own Prometheus metrics

Only the keyed routes read a body (max_body_reads full-size ones at once, labs.gateway.bound);
the others refuse one (413), so that nobody can make the gateway hold bytes without the key.
Probes of the engine are shared: however many /readyz and /health requests arrive at once,
one request at a time goes to the engine's /health, on one connection of its own. Answers
never carry an exception's text, the upstream's address or the model's path on disk (`root`
in /v1/models), and no URL is built from the client's Host header (no trailing-slash
redirects: a 404 says which route was meant).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..connections import ONE_CONNECTION, ConnectionLeases
from . import answers, intake, retry
from .admission import Admission, Shed
from .answers import Rejected, error_body
from .bound import memory_bound
from .config import GatewayConfig
from .metrics import GatewayMetrics
from .proxy import ClientStalled, Exchange, relayed_headers, run_until_disconnect

logger = logging.getLogger("labs.gateway")

ADMITTED_PATHS = ("/v1/chat/completions", "/v1/completions")
PUBLIC_ROUTES = ("POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
                 "GET /version", "POST /tokenize", "GET /livez", "GET /readyz",
                 "GET /health", "GET /metrics")
READY_TIMEOUT_S = 0.5  # under the probes' 1 s, so a slow engine fails readiness, not the probe
VERSION_TIMEOUT_S = 5.0
SMALL_ANSWER_BYTES = 64 * 1024  # /version's answer, read at most this far
_FORWARDED_REQUEST_HEADERS = (b"accept", b"x-request-id", b"user-agent")
_MODEL_CARD_PRIVATE = ("root",)
# The limits /health shows, so that clients (and benchmarks/hostile_clients.py) can size to them.
_PUBLIC_LIMITS = ("max_prompt_tokens", "max_body_bytes", "body_timeout_s", "max_body_reads",
                  "max_connections", "max_header_bytes", "header_timeout_s", "send_timeout_s",
                  "shutdown_timeout_s")  # vLLM's model card: `root` is the model's path on disk
_DRAIN_MESSAGES = {
    "draining": "the gateway is shutting down and admits nothing more. Retry after {retry} s "
                "(another replica, or this one once it is back).",
    "intake_full": "the gateway is reading as many request bodies as it holds at once "
                   "(max_body_reads={limit} bodies of max_body_bytes). Retry after {retry} s, "
                   "or send requests at a lower rate.",
}


class _Cut:
    """A scope the drain can end: at once (`at_once`: not admitted yet) or at the shutdown
    deadline (in flight). Outside a drain it never ends on its own."""

    def __init__(self, gateway: Gateway, at_once: bool) -> None:
        self.gateway, self.at_once = gateway, at_once

    async def __aenter__(self) -> asyncio.Timeout:
        self.timeout = asyncio.timeout_at(self.gateway.cut_when(self.at_once))
        await self.timeout.__aenter__()
        self.gateway._cuts.add(self)
        return self.timeout

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.gateway._cuts.discard(self)
        await self.timeout.__aexit__(exc_type, exc, tb)


class Gateway:
    """The state one app serves from: config, upstream client, admission, metrics."""

    def __init__(self, config: GatewayConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        # A connection of its own for each upstream request (labs.connections says why):
        # admission bounds the generation requests, body reads the /tokenize counts.
        self.upstream = (ConnectionLeases.sharing(client) if client is not None else
                         ConnectionLeases(timeout=httpx.Timeout(config.request_timeout_s)))
        self._probe_client = client or httpx.AsyncClient(
            limits=ONE_CONNECTION, timeout=httpx.Timeout(VERSION_TIMEOUT_S))
        self.admission = Admission(config.max_in_flight, config.max_queue)
        self.reads = intake.BodyReads(config.max_body_reads * config.max_body_bytes)
        self.metrics = GatewayMetrics(self.admission, memory_bound=memory_bound(config),
                                      body_reads=lambda: self.reads.active)
        self.draining = False
        self._cut_at: float | None = None
        self._cuts: set[_Cut] = set()
        self._probe: asyncio.Task[str | None] | None = None
        self._version: tuple[int, bytes, str] | None = None
        self._version_probe: asyncio.Task[tuple[int, bytes, str]] | None = None

    def upstream_headers(self, raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The request headers that go upstream, as the bytes that came (never re-encoded:
        a header that is not ASCII must not fail the forward)."""
        out = [(b"content-type", b"application/json")]
        for name, value in raw:
            if name in _FORWARDED_REQUEST_HEADERS or (
                    name == b"authorization" and self.config.forward_authorization):
                out.append((name, value))
        return out

    async def reject(self, send: Send, rejected: Rejected, *,
                     close: bool | None = None) -> None:
        """Answer a request refused for its input (4xx), and count it. `close`: end the
        connection after (intake.too_long_to_discard); None: as the refusal has it."""
        self.metrics.rejected.labels(reason=rejected.reason).inc()
        status, body, headers = rejected.answer()
        if close:
            headers["Connection"] = "close"
        elif close is False:
            headers.pop("Connection", None)
        await answers.send_json(send, status, body, headers)

    async def shed(self, send: Send, reason: str, *, count: bool = True,
                   close: bool = False) -> None:
        """Answer a request refused for load or a drain (503 + Retry-After), and count it
        (`count`: an admitted request cut by the drain is counted as failed instead)."""
        if count:
            self.metrics.shed.labels(reason=reason).inc()
        status, body, headers = retry.shed(self, reason)  # hint from the queue
        if reason in _DRAIN_MESSAGES:
            body["error"]["message"] = _DRAIN_MESSAGES[reason].format(
                retry=headers.get("Retry-After"), limit=self.config.max_body_reads)
        if close:
            headers = {**headers, "Connection": "close"}
        await answers.send_json(send, status, body, headers)

    def until_cut(self, *, at_once: bool = False) -> _Cut:
        """`async with gateway.until_cut() as cut:` ends in TimeoutError (cut.expired()) when
        a drain ends it: at once, or at the shutdown deadline."""
        return _Cut(self, at_once)

    def cut_when(self, at_once: bool) -> float | None:
        if not self.draining:
            return None
        return asyncio.get_running_loop().time() if at_once else self._cut_at

    def drain(self) -> None:
        """Stop admitting (labs.gateway.server calls this on SIGTERM, before uvicorn stops):
        waiters and requests not yet admitted are refused at once, those in flight are cut
        at shutdown_timeout_s from now."""
        if self.draining:
            return
        loop = asyncio.get_running_loop()
        self.draining = True
        self._cut_at = loop.time() + self.config.shutdown_timeout_s
        self.admission.drain()
        for cut in list(self._cuts):
            with contextlib.suppress(RuntimeError):  # already ending
                cut.timeout.reschedule(loop.time() if cut.at_once else self._cut_at)
        logger.warning("draining: admitting nothing more; %d in flight get %g s to finish",
                       self.admission.in_flight, self.config.shutdown_timeout_s)

    async def upstream_ready(self) -> str | None:
        """None when the engine's /health says 200 within READY_TIMEOUT_S, else why not.
        One probe at a time, shared by everyone asking meanwhile."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_health())
        return await asyncio.shield(self._probe)

    async def _probe_health(self) -> str | None:
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                resp = await self._probe_client.get(self.config.upstream + "/health",
                                                    timeout=READY_TIMEOUT_S)
        except (TimeoutError, httpx.TimeoutException):
            return f"the engine did not answer its health check within {READY_TIMEOUT_S:g} s"
        except httpx.HTTPError as exc:
            logger.debug("upstream health check failed: %s: %s", type(exc).__name__, exc)
            return "the engine cannot be reached"
        return None if resp.status_code == 200 else f"the engine is unhealthy ({resp.status_code})"

    async def version(self) -> tuple[int, bytes, str]:
        """The engine's /version answer (status, body, content type), asked once and kept;
        one request at a time until it answers."""
        if self._version is not None:
            return self._version
        if self._version_probe is None or self._version_probe.done():
            self._version_probe = asyncio.create_task(self._fetch_version())
        return await asyncio.shield(self._version_probe)

    async def _fetch_version(self) -> tuple[int, bytes, str]:
        try:
            async with self._probe_client.stream("GET", self.config.upstream + "/version",
                                                 timeout=VERSION_TIMEOUT_S) as resp:
                body = await _read_at_most(resp, SMALL_ANSWER_BYTES)
        except (httpx.HTTPError, ValueError) as exc:
            self.metrics.upstream_errors.labels(stage="passthrough").inc()
            status, payload, _ = answers.upstream_unreachable(self.config, exc)
            return status, json.dumps(payload).encode(), "application/json"
        answer = (resp.status_code, body, resp.headers.get("content-type", "application/json"))
        if resp.status_code == 200:
            self._version = answer
        return answer

    async def key_ok(self, headers: Headers, send: Send, *, close: bool) -> bool:
        """The key checked before anything is read or reserved; a wrong or missing one is
        answered (401) here. The one check both kinds of keyed route make first."""
        try:
            intake.check_key(self.config, headers)
        except Rejected as rejected:
            await self.reject(send, rejected, close=close)
            return False
        return True

    async def close(self) -> None:
        await self.upstream.aclose()
        await self._probe_client.aclose()


class _AdmittedRoute:
    """The ASGI endpoint of the two generation routes (a raw ASGI app rather than a Starlette
    request/response function, because it must keep listening to `receive` for a
    disconnect while the request waits and streams)."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway, self.path = gateway, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        headers = Headers(scope=scope)
        close = intake.too_long_to_discard(gw.config, headers)
        if not await gw.key_ok(headers, send, close=close):
            return
        size = intake.reservation(gw.config, headers)
        if gw.draining or not gw.reads.enter(size):
            await gw.shed(send, "draining" if gw.draining else "intake_full", close=close)
            return
        try:
            async with gw.until_cut(at_once=True):
                raw = await intake.read_body(gw.config, headers, receive)
            prompt = intake.parse(self.path, raw, gw.config)
            # Before counting tokens: a full queue must answer in microseconds, not after a
            # tokenizer round trip; the place taken here is the one the request keeps.
            gw.admission.reserve()
        except Rejected as rejected:
            await gw.reject(send, rejected)
            return
        except Shed as shed:
            await gw.shed(send, shed.reason)
            return
        except TimeoutError:  # the drain began while the body was arriving
            await gw.shed(send, "draining", close=True)
            return
        except ConnectionError:
            return  # gone before its request was even complete: nothing to answer
        finally:
            gw.reads.leave(size)
        exchange = Exchange(gw, self.path, raw, gw.upstream_headers(scope["headers"]), send,
                            prompt)
        await run_until_disconnect(exchange, receive)


class _PassthroughRoute:
    """Proxied outside admission: listing models and counting tokens cost the engine no KV
    cache (the load generator counts prompt tokens here). Behind the key, like vLLM's /v1
    routes; each holds a body-read place while it is proxied, so a flood of them is bounded
    too. `/v1/models` is read whole (at most max_body_bytes) to drop the model's path."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway, self.path = gateway, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        headers = Headers(scope=scope)
        unread = intake.declares_body(headers)
        close = intake.too_long_to_discard(gw.config, headers)
        if not await gw.key_ok(headers, send, close=close):
            return
        # /v1/models' answer is read whole (at most max_body_bytes); /tokenize's is relayed
        size = (gw.config.max_body_bytes if self.path == "/v1/models"
                else intake.reservation(gw.config, headers))
        if not gw.reads.enter(size):
            await gw.shed(send, "intake_full", close=close)
            return
        relay = _Relay(send, gw.config.send_timeout_s)
        try:
            async with gw.until_cut() as cut:
                raw = await intake.read_body(gw.config, headers, receive) if unread else b""
                await self._proxy(scope["method"], raw, gw.upstream_headers(scope["headers"]),
                                  relay)
        except Rejected as rejected:
            await gw.reject(send, rejected)
        except (ConnectionError, ClientStalled):
            pass
        except TimeoutError:
            if not cut.expired():
                raise
            if not relay.started:
                await gw.shed(send, "draining", close=True)
        finally:
            gw.reads.leave(size)

    async def _proxy(self, method: str, raw: bytes, headers: list[tuple[bytes, bytes]],
                     relay: _Relay) -> None:
        gw = self.gateway
        if method == "GET":
            headers = [(k, v) for k, v in headers if k != b"content-type"]
        try:
            async with gw.upstream.lease() as client:
                request = client.build_request(method, gw.config.upstream + self.path,
                                               headers=headers, content=raw)
                resp = await client.send(request, stream=True)
                try:
                    if self.path == "/v1/models":
                        body = _public_models(await _read_at_most(resp,
                                                                  gw.config.max_body_bytes))
                        await relay.whole(resp.status_code, body, resp.headers)
                    else:
                        await relay.stream(resp)
                finally:
                    await asyncio.shield(resp.aclose())
        except (httpx.HTTPError, ValueError) as exc:
            gw.metrics.upstream_errors.labels(stage="passthrough").inc()
            if not relay.started:
                await answers.send_json(relay.send, *answers.upstream_unreachable(gw.config,
                                                                                   exc))


class _Relay:
    """A passthrough answer on its way to the client: has it started? A client that takes
    nothing for send_timeout_s is dropped (ClientStalled), as in an admitted exchange."""

    def __init__(self, send: Send, send_timeout_s: float) -> None:
        self._send, self.timeout_s, self.started = send, send_timeout_s, False

    async def send(self, message: Message) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._send(message)
        except TimeoutError:
            raise ClientStalled() from None

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.started = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def whole(self, status: int, body: bytes, upstream: httpx.Headers) -> None:
        kind = upstream.get("content-type", "application/json").encode("latin-1")
        await self.start(status, [(b"content-type", kind),
                                  (b"content-length", str(len(body)).encode())])
        await self.send({"type": "http.response.body", "body": body, "more_body": False})

    async def stream(self, resp: httpx.Response) -> None:
        await self.start(resp.status_code, relayed_headers(resp.headers))
        async for chunk in resp.aiter_raw():
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def _read_at_most(resp: httpx.Response, limit: int) -> bytes:
    """The answer's body, or ValueError if it is longer than `limit` bytes."""
    data = bytearray()
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise ValueError(f"the upstream's answer is longer than {limit:,} bytes")
    return bytes(data)


def _public_models(body: bytes) -> bytes:
    """/v1/models without what only the server's own disk knows (each card's `root`)."""
    try:
        listing = json.loads(body)
        for card in listing.get("data", []):
            for key in _MODEL_CARD_PRIVATE:
                card.pop(key, None)
    except (ValueError, AttributeError, TypeError):
        return body  # not vLLM's shape: an error answer, passed on as it is
    return json.dumps(listing).encode()


class _NoBody:
    """A route that takes no request body refuses one (413) before anything else, so the
    routes anyone may call hold no bytes of a client's but its headers."""

    def __init__(self, gateway: Gateway, app: ASGIApp) -> None:
        self.gateway, self.app = gateway, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if intake.declares_body(headers):
            await self.gateway.reject(send, Rejected(
                413, "body_not_allowed", f"{scope['method']} {scope['path']} takes no request "
                "body; send it without one."),
                close=intake.too_long_to_discard(self.gateway.config, headers))
            return
        await self.app(scope, receive, send)


def create_app(config: GatewayConfig, client: httpx.AsyncClient | None = None) -> Starlette:
    """The gateway as a Starlette app; `app.state.gateway` is its `Gateway`.

    `client` is the upstream client (a test passes one with a MockTransport or an
    ASGITransport to a stub); without it one is made and closed at shutdown.
    """
    gw = Gateway(config, client)

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        if gw.draining:
            return JSONResponse({"status": "not ready", "reason": "the gateway is draining"},
                                status_code=503)
        problem = await gw.upstream_ready()
        if problem is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": problem}, status_code=503)

    async def health(request: Request) -> Response:
        problem = await gw.upstream_ready()
        a = gw.admission
        return JSONResponse({
            "status": "draining" if gw.draining else "ok", "queue_depth": a.queue_depth,
            "in_flight": a.in_flight, "counting": a.reserved, "body_reads": gw.reads.active,
            "max_in_flight": a.max_in_flight, "max_queue": a.max_queue,
            "upstream": {"healthy": problem is None, **({"reason": problem} if problem else {})},
            "limits": {name: getattr(config, name) for name in _PUBLIC_LIMITS},
        })

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def version(request: Request) -> Response:
        status, body, kind = await gw.version()
        return Response(body, status_code=status, media_type=kind)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.scope["path"]  # never request.url: that is built from the Host header
        if exc.status_code == 404:
            meant = path.rstrip("/")
            hint = (f" (did you mean {meant}, without the trailing slash?)"
                    if meant != path and any(r.endswith(" " + meant) for r in PUBLIC_ROUTES)
                    else "")
            message = (f"no route {path}{hint}; this gateway serves "
                       f"{', '.join(PUBLIC_ROUTES[:-1])} and {PUBLIC_ROUTES[-1]}.")
            kind = "not_found"
        else:
            message = f"{request.method} {path}: {exc.detail}"
            kind = "invalid_request_error"
        headers = dict(exc.headers or {})
        if intake.too_long_to_discard(gw.config, request.headers):
            headers["Connection"] = "close"
        return JSONResponse(error_body(message, kind), status_code=exc.status_code,
                            headers=headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("gateway bug while serving %s", request.scope["path"], exc_info=exc)
        return JSONResponse(error_body("the gateway failed unexpectedly; see the gateway log.",
                                       "gateway_error"), status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gw.close()

    def open_(endpoint: Callable[[Request], Awaitable[Response]]) -> _NoBody:
        return _NoBody(gw, request_response(endpoint))

    routes = [Route(p, _AdmittedRoute(gw, p), methods=["POST"]) for p in ADMITTED_PATHS]
    routes += [Route("/v1/models", _NoBody(gw, _PassthroughRoute(gw, "/v1/models")),
                     methods=["GET"]),
               Route("/tokenize", _PassthroughRoute(gw, "/tokenize"), methods=["POST"]),
               Route("/version", open_(version), methods=["GET"]),
               Route("/livez", open_(livez), methods=["GET"]),
               Route("/readyz", open_(readyz), methods=["GET"]),
               Route("/health", open_(health), methods=["GET"]),
               Route("/metrics", open_(metrics), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.router.redirect_slashes = False  # a redirect would be built from the Host header
    app.state.gateway = gw
    return app
