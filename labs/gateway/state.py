"""The gateway's state, one `Gateway` per app: what its routes and exchanges share.

    config      the limits (GatewayConfig)
    admission   the FIFO of N running and M waiting (labs.gateway.admission)
    reads       the bytes of the bodies being read at once (labs.gateway.intake.BodyReads)
    metrics     its Prometheus metrics (labs.gateway.metrics)
    upstream    a connection of its own for each upstream request (labs.load.pool)
    probes      the engine's /health, one at a time on one connection of its own, shared by
                however many /readyz and /health requests arrive meanwhile; /version asked
                the same way and remembered once it answered 200
    the drain   draining, and the scopes (`until_cut`) it ends: at once for a request not yet
                admitted, at shutdown_timeout_s for one in flight (labs.gateway.server calls
                `drain` on SIGTERM)

and the answers it writes for all of them: `reject` (4xx, for the input), `shed` (503 +
Retry-After, for load or the drain, labs.gateway.retry), `key_ok` (401). The routes that use
it are labs.gateway.app; one admitted exchange is labs.gateway.proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from types import TracebackType

import httpx
from starlette.datastructures import Headers
from starlette.types import Send

from ..load.pool import ONE_CONNECTION, ConnectionLeases
from . import answers, intake, retry
from .admission import Admission
from .answers import Rejected
from .bound import memory_bound
from .config import GatewayConfig
from .metrics import GatewayMetrics

logger = logging.getLogger("labs.gateway")

READY_TIMEOUT_S = 0.5  # under the probes' 1 s, so a slow engine fails readiness, not the probe
VERSION_TIMEOUT_S = 5.0
SMALL_ANSWER_BYTES = 64 * 1024  # /version's answer, read at most this far
_FORWARDED_REQUEST_HEADERS = (b"accept", b"x-request-id", b"user-agent")
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

    def __init__(self, gateway: Gateway, cuts: set[_Cut], at_once: bool) -> None:
        self.gateway, self.cuts, self.at_once = gateway, cuts, at_once

    async def __aenter__(self) -> asyncio.Timeout:
        self.timeout = asyncio.timeout_at(self.gateway.cut_when(self.at_once))
        await self.timeout.__aenter__()
        self.cuts.add(self)
        return self.timeout

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.cuts.discard(self)
        await self.timeout.__aexit__(exc_type, exc, tb)


class Gateway:
    """The state one app serves from: config, upstream clients, admission, metrics, probes,
    the drain.

    What the routes (labs.gateway.app), the exchange (labs.gateway.proxy), the drain
    (labs.gateway.server) and the Retry-After (labs.gateway.retry) use of it, all public:
        config, admission, reads, metrics, upstream (leases, one connection each)
        draining, drain(), until_cut(at_once=), cut_when(at_once)
        reject(send, rejected), shed(send, reason), key_ok(headers, send), upstream_headers(raw)
        upstream_ready(), version(), close()
    The rest (the probe client, the probes in progress, /version once it answered, the
    drain's deadline and the scopes it will cut) is its own."""

    def __init__(self, config: GatewayConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        # A connection of its own for each upstream request (labs.load.pool says why):
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
        return _Cut(self, self._cuts, at_once)

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
                body = await read_at_most(resp, SMALL_ANSWER_BYTES)
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


async def read_at_most(resp: httpx.Response, limit: int) -> bytes:
    """The answer's body, or ValueError if it is longer than `limit` bytes."""
    data = bytearray()
    async for chunk in resp.aiter_bytes():
        data += chunk
        if len(data) > limit:
            raise ValueError(f"the upstream's answer is longer than {limit:,} bytes")
    return bytes(data)
