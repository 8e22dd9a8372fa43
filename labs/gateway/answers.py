"""Every answer the gateway writes itself, in OpenAI's error shape plus a `reason`.

Public answers name what happened and what to do, never the upstream's internal address or an
exception's text: those go to the gateway's log, where the operator looks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import httpx
from starlette.types import Send

from .config import GatewayConfig

logger = logging.getLogger("labs.gateway")

Answer = tuple[int, dict[str, Any], dict[str, str]]  # (status, JSON body, extra headers)


def error_body(message: str, type_: str, reason: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, plus `reason` so a client (and loadgen) can tell why."""
    error: dict[str, Any] = {"message": message, "type": type_}
    if reason is not None:
        error["reason"] = reason
    return {"error": error}


async def send_json(send: Send, status: int, payload: Mapping[str, Any],
                    headers: Mapping[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def shed(config: GatewayConfig, reason: str) -> Answer:
    """503 + Retry-After for a request refused for load."""
    retry = config.retry_after_s
    if reason == "queue_full":
        message = (f"the server is at capacity: {config.max_in_flight} requests are running and "
                   f"{config.max_queue} are waiting, so the gateway's queue is full. Retry after "
                   f"{retry} s, or send requests at a lower rate.")
    else:
        message = (f"no engine slot came free within {config.max_queue_wait_s:g} s of waiting "
                   f"(the server is overloaded: {config.max_in_flight} running). Retry after "
                   f"{retry} s, or send requests at a lower rate.")
    return 503, error_body(message, "overloaded", reason), {"Retry-After": str(retry)}


class Rejected(Exception):
    """A request refused for its input: status, reason (REJECT_REASONS) and what to do."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message

    def answer(self) -> Answer:
        kind = "authentication_error" if self.status == 401 else "invalid_request_error"
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.status in (408, 413):
            headers["Connection"] = "close"  # the rest of the body is not read
        return self.status, error_body(self.message, kind, self.reason), headers


def upstream_unreachable(config: GatewayConfig, exc: Exception) -> Answer:
    """502 for an upstream that cannot be reached; its address and the error go to the log."""
    if isinstance(exc, httpx.TimeoutException):
        what = (f"the vLLM server behind this gateway did not answer within "
                f"{config.request_timeout_s:g} s")
    else:
        what = "the gateway could not reach the vLLM server behind it"
    logger.warning("upstream %s failed: %s: %s", config.upstream, type(exc).__name__, exc)
    message = (f"{what}. Is vLLM running? Check with `python -m labs status`, start it with "
               "`python -m labs serve`, or point the gateway's --upstream at it.")
    return 502, error_body(message, "upstream_unavailable", "upstream"), {}
