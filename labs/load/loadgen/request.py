"""One request: send it, stream its answer, timestamp every token; its status kinds and the
error events a stream can carry. Server trouble becomes a record's `error_kind`, never a raise.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from ...results.records import RequestRecord
from .sse import SSEDecoder, parse_retry_after

DEFAULT_TIMEOUT_S = 600.0
_ERROR_TEXT_CHARS = 500


def _status_kind(status: int) -> str:
    if status in (429, 503):
        return "shed"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_5xx" if status >= 500 else "protocol"


async def stream_request(client: httpx.AsyncClient, url: str, body: Mapping[str, Any], *,
                         headers: Mapping[str, str], t0: float, index: int = 0,
                         scheduled_s: float | None = None,
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> RequestRecord:
    """Send one streaming request and return its record; never raises for server trouble."""
    clock = time.perf_counter
    chat = "messages" in body
    arrivals: list[float] = []
    prompt_tokens = completion_tokens = status = None
    finish_reason = error_kind = error = retry_after = None
    done = started = False
    sent = clock() - t0
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", url, json=body, headers=headers,
                                     timeout=httpx.Timeout(timeout_s, connect=10.0)) as resp:
                started, status = True, resp.status_code
                if status != 200:
                    text = (await resp.aread())[:_ERROR_TEXT_CHARS]
                    error_kind = _status_kind(status)
                    error = f"HTTP {status}: {text.decode('utf-8', 'replace')}"
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                else:
                    decoder = SSEDecoder()
                    loads = json.loads
                    # aiter_raw skips httpx's decoder layer; a compressed stream needs it
                    encoded = "content-encoding" in resp.headers
                    async for raw in (resp.aiter_bytes() if encoded else resp.aiter_raw()):
                        now = clock() - t0
                        for payload in decoder.feed(raw):
                            if done:
                                continue
                            if payload == "[DONE]":
                                done = True
                                continue
                            chunk = loads(payload)
                            if chunk.get("error"):
                                error_kind, error = _error_event(chunk["error"])
                                done = True  # what follows is not the answer
                                continue
                            usage = chunk.get("usage")
                            if usage:
                                prompt_tokens = usage.get("prompt_tokens")
                                completion_tokens = usage.get("completion_tokens")
                            has_text = False
                            for choice in chunk.get("choices") or ():
                                if chat:
                                    delta = choice.get("delta") or {}
                                    has_text = has_text or bool(
                                        delta.get("content") or delta.get("reasoning_content")
                                        or delta.get("reasoning"))
                                else:
                                    has_text = has_text or bool(choice.get("text"))
                                if choice.get("finish_reason"):
                                    finish_reason = choice["finish_reason"]
                            if has_text:  # one arrival per chunk, however many tokens
                                arrivals.append(now)
                    for payload in decoder.finish():
                        done = done or payload == "[DONE]"
                    if error_kind is None and not done:
                        error_kind, error = "truncated", "stream ended without `data: [DONE]`"
                    elif error_kind is None and completion_tokens is None:
                        error_kind = "protocol"
                        error = "no usage in the stream (was stream_options.include_usage dropped?)"
    except (TimeoutError, httpx.TimeoutException) as exc:
        if isinstance(exc, httpx.ConnectTimeout):
            error_kind, error = "connection", f"connect timeout: {exc}"
        else:
            error_kind, error = "timeout", f"no complete answer within {timeout_s:g} s"
    except httpx.TransportError as exc:
        # Before the response: no server (or it hung up). After: the stream was cut.
        error_kind = "truncated" if started and status == 200 else "connection"
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # bad JSON or UTF-8
        error_kind, error = "protocol", f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_CHARS]
    return RequestRecord(
        index=index, scheduled_s=sent if scheduled_s is None else scheduled_s, sent_s=sent,
        end_s=clock() - t0, token_times_s=tuple(arrivals), max_tokens=body.get("max_tokens"),
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, status=status,
        finish_reason=finish_reason, error_kind=error_kind, error=error,
        retry_after_s=retry_after,
    )


def _error_event(err: Any) -> tuple[str, str]:
    """vLLM reports a failure after the 200 as a `data: {"error": ...}` event."""
    message = err.get("message", err) if isinstance(err, dict) else err
    code = err.get("code") if isinstance(err, dict) else None
    kind = _status_kind(code) if isinstance(code, int) and code >= 400 else "protocol"
    return kind, f"error event in stream: {message}"[:_ERROR_TEXT_CHARS]
