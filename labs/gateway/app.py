"""The gateway as a Starlette app: its routes (the state they share, `Gateway`, is
labs.gateway.state).

    POST /v1/chat/completions, /v1/completions   admitted: key, body, shape, count, queue, engine
    GET  /v1/models, POST /tokenize               proxied outside admission, behind the key
    GET  /version                                 proxied once and remembered, open (as vLLM has it)
    GET  /livez     200 while the process serves (never asks the engine: a liveness probe)
    GET  /readyz    200 when the engine answers its /health within READY_TIMEOUT_S, else 503
    GET  /health    200 while it runs, with the queue and the engine's readiness, for people
    GET  /metrics   the gateway's own Prometheus metrics

Only the keyed routes read a body (max_body_reads full-size ones at once, labs.gateway.bound);
the others refuse one (413), so that nobody can make the gateway hold bytes without the key.
Probes of the engine are shared (labs.gateway.state): however many /readyz and /health
requests arrive at once, one request at a time goes to the engine's /health. Answers
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

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import answers, intake
from .admission import Shed
from .answers import Rejected, error_body
from .config import GatewayConfig
from .proxy import ClientStalled, Exchange, relayed_headers, run_until_disconnect
from .state import READY_TIMEOUT_S, SMALL_ANSWER_BYTES, VERSION_TIMEOUT_S, Gateway, read_at_most

logger = logging.getLogger("labs.gateway")

ADMITTED_PATHS = ("/v1/chat/completions", "/v1/completions")
PUBLIC_ROUTES = ("POST /v1/chat/completions", "POST /v1/completions", "GET /v1/models",
                 "GET /version", "POST /tokenize", "GET /livez", "GET /readyz",
                 "GET /health", "GET /metrics")
_MODEL_CARD_PRIVATE = ("root",)  # vLLM's model card: `root` is the model's path on disk
# The limits /health shows, so that clients (and benchmarks/hostile_clients.py) can size to them.
_PUBLIC_LIMITS = ("max_prompt_tokens", "max_body_bytes", "body_timeout_s", "max_body_reads",
                  "max_connections", "max_header_bytes", "header_timeout_s", "send_timeout_s",
                  "shutdown_timeout_s")

# Gateway and its timeouts live in labs.gateway.state; importable from here as before.
__all__ = ["ADMITTED_PATHS", "PUBLIC_ROUTES", "READY_TIMEOUT_S", "SMALL_ANSWER_BYTES",
           "VERSION_TIMEOUT_S", "Gateway", "create_app"]


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
                        body = _public_models(await read_at_most(resp,
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
