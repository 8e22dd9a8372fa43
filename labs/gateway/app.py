"""The gateway as a Starlette app: its routes, and the state they share.

    POST /v1/chat/completions, /v1/completions   admitted: key, body, shape, queue, engine
    GET  /v1/models, POST /tokenize               proxied outside admission, behind the key
    GET  /version                                 proxied, open (as vLLM has it)
    GET  /livez     200 while the process serves (never asks the engine: a liveness probe)
    GET  /readyz    200 when the engine answers its /health within READY_TIMEOUT_S, else 503
    GET  /health    200 while it runs, with the queue and the engine's readiness, for people
    GET  /metrics   the gateway's own Prometheus metrics
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..connections import ConnectionLeases
from . import answers, intake
from .admission import Admission
from .answers import Rejected, error_body
from .config import GatewayConfig
from .metrics import GatewayMetrics
from .proxy import Exchange, run_until_disconnect

logger = logging.getLogger("labs.gateway")

ADMITTED_PATHS = ("/v1/chat/completions", "/v1/completions")
READY_TIMEOUT_S = 0.5  # under the probes' 1 s, so a slow engine fails readiness, not the probe
_FORWARDED_REQUEST_HEADERS = ("accept", "x-request-id", "user-agent")


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

    def upstream_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        out = {"content-type": "application/json"}
        for name in _FORWARDED_REQUEST_HEADERS:
            if name in headers:
                out[name] = headers[name]
        if self.config.forward_authorization and "authorization" in headers:
            out["authorization"] = headers["authorization"]
        return out

    async def reject(self, send: Send, rejected: Rejected) -> None:
        """Answer a request refused for its input (4xx), and count it."""
        self.metrics.rejected.labels(reason=rejected.reason).inc()
        await answers.send_json(send, *rejected.answer())

    async def shed(self, send: Send, reason: str) -> None:
        """Answer a request refused for load (503 + Retry-After), and count it."""
        self.metrics.shed.labels(reason=reason).inc()
        await answers.send_json(send, *answers.shed(self.config, reason))

    async def body(self, headers: Mapping[str, str], receive: Receive, send: Send, *,
                   keyed: bool) -> bytes | None:
        """The request body once the key (if `keyed`) and the body limits pass; None when
        the request was refused (answered here) or its client left before sending it all."""
        try:
            if keyed:
                intake.check_key(self.config, headers)
            return await intake.read_body(self.config, headers, receive)
        except Rejected as rejected:
            await self.reject(send, rejected)
        except ConnectionError:
            pass  # gone before its request was even complete: nothing to answer
        return None

    async def upstream_ready(self) -> str | None:
        """None when the engine's /health says 200 within READY_TIMEOUT_S, else why not."""
        try:
            async with asyncio.timeout(READY_TIMEOUT_S), self.upstream.lease() as client:
                resp = await client.get(self.config.upstream + "/health",
                                        timeout=READY_TIMEOUT_S)
        except (TimeoutError, httpx.TimeoutException):
            return f"the engine did not answer its health check within {READY_TIMEOUT_S:g} s"
        except httpx.HTTPError as exc:
            logger.debug("upstream health check failed: %s: %s", type(exc).__name__, exc)
            return "the engine cannot be reached"
        return None if resp.status_code == 200 else f"the engine is unhealthy ({resp.status_code})"

    async def close(self) -> None:
        await self.upstream.aclose()


class _AdmittedRoute:
    """The ASGI endpoint of the two generation routes (a raw ASGI app rather than a Starlette
    request/response function, because it must keep listening to `receive` for a
    disconnect while the request waits and streams)."""

    def __init__(self, gateway: Gateway, path: str) -> None:
        self.gateway, self.path = gateway, path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        headers = Request(scope).headers
        raw = await gw.body(headers, receive, send, keyed=True)
        if raw is None:
            return
        try:
            body = intake.parse(self.path, raw)
        except Rejected as rejected:
            await gw.reject(send, rejected)
            return
        # Before counting tokens: a full queue must answer in microseconds, not after a
        # tokenizer round trip.
        if gw.admission.full():
            await gw.shed(send, "queue_full")
            return
        upstream_headers = gw.upstream_headers(headers)
        budget = gw.config.max_prompt_tokens
        if budget is not None:
            tokens, counted_by = await intake.prompt_tokens(gw.config, gw.upstream, body,
                                                            upstream_headers)
            if tokens > budget:
                await gw.reject(send, Rejected(
                    413, "prompt_too_long",
                    f"the prompt is {tokens} tokens ({counted_by}); this gateway accepts at "
                    f"most {budget} prompt tokens (max_prompt_tokens={budget}). Shorten the "
                    "prompt or the conversation history."))
                return
        exchange = Exchange(gw, self.path, raw, upstream_headers, send)
        await run_until_disconnect(exchange, receive)


class _PassthroughRoute:
    """Proxied as they are, outside admission: listing models, the version and counting
    tokens cost the engine no KV cache (the load generator counts prompt tokens here).
    All but /version are behind the key, like vLLM's /v1 routes."""

    def __init__(self, gateway: Gateway, path: str, *, keyed: bool) -> None:
        self.gateway, self.path, self.keyed = gateway, path, keyed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        request = Request(scope)
        raw = await gw.body(request.headers, receive, send, keyed=self.keyed)
        if raw is None:
            return
        headers = gw.upstream_headers(request.headers)
        if request.method == "GET":
            headers.pop("content-type", None)
        try:
            async with gw.upstream.lease() as client:
                resp = await client.request(request.method, gw.config.upstream + self.path,
                                            headers=headers, content=raw)
        except httpx.HTTPError as exc:
            gw.metrics.upstream_errors.labels(stage="connect").inc()
            await answers.send_json(send, *answers.upstream_unreachable(gw.config, exc))
            return
        out = Response(resp.content, status_code=resp.status_code,
                       media_type=resp.headers.get("content-type", "application/json"))
        await out(scope, receive, send)


def create_app(config: GatewayConfig, client: httpx.AsyncClient | None = None) -> Starlette:
    """The gateway as a Starlette app; `app.state.gateway` is its `Gateway`.

    `client` is the upstream client (a test passes one with a MockTransport or an
    ASGITransport to a stub); without it one is made and closed at shutdown.
    """
    gw = Gateway(config, client)

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        problem = await gw.upstream_ready()
        if problem is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready", "reason": problem}, status_code=503)

    async def health(request: Request) -> Response:
        problem = await gw.upstream_ready()
        a = gw.admission
        return JSONResponse({
            "status": "ok", "queue_depth": a.queue_depth, "in_flight": a.in_flight,
            "max_in_flight": a.max_in_flight, "max_queue": a.max_queue,
            "upstream": {"healthy": problem is None, **({"reason": problem} if problem else {})},
        })

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = (f"no route {request.url.path}; this gateway serves POST "
                       "/v1/chat/completions, POST /v1/completions, GET /v1/models, "
                       "GET /version, POST /tokenize, GET /livez, GET /readyz, GET /health "
                       "and GET /metrics.")
            kind = "not_found"
        else:
            message = f"{request.method} {request.url.path}: {exc.detail}"
            kind = "invalid_request_error"
        return JSONResponse(error_body(message, kind), status_code=exc.status_code,
                            headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        logger.exception("gateway bug while serving %s", request.url.path, exc_info=exc)
        return JSONResponse(error_body("the gateway failed unexpectedly; see the gateway log.",
                                       "gateway_error"), status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gw.close()

    routes = [Route(p, _AdmittedRoute(gw, p), methods=["POST"]) for p in ADMITTED_PATHS]
    routes += [Route("/v1/models", _PassthroughRoute(gw, "/v1/models", keyed=True),
                     methods=["GET"]),
               Route("/tokenize", _PassthroughRoute(gw, "/tokenize", keyed=True),
                     methods=["POST"]),
               Route("/version", _PassthroughRoute(gw, "/version", keyed=False),
                     methods=["GET"]),
               Route("/livez", livez), Route("/readyz", readyz), Route("/health", health),
               Route("/metrics", metrics)]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.gateway = gw
    return app
