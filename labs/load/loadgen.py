"""Offer load to an OpenAI-compatible server and record what every request saw.

An async `httpx` client streams each answer and timestamps it (`time.perf_counter()`, seconds
from the run start): scheduled send, actual send, every token arrival, end. Nothing in a run
raises because of the server: a refused connection, a 503, a stream cut short or a timeout
become a record with an `error_kind`, so a run against a melting server still gives a result.

Why the SSE parsing is done by hand: models emit U+2028, U+0085 and friends inside content;
`str.splitlines()` and httpx's `aiter_lines()` treat those as line breaks and cut JSON chunks
in half (seen at 32 users). SSE lines end with `\\n` only, so we decode bytes incrementally
and split on `\\n` alone.

    result = labs.loadgen.run_sync(Closed(8, requests=32), Workload(max_tokens=64),
                                   conn=labs.connect())
    result.summary()

Each request in flight has a connection of its own, with no cap on how many
(`labs.load.pool` says why one shared httpx pool is not enough under overload).
`client=` takes any `httpx.AsyncClient` instead, shared by every request, so tests drive a
`MockTransport` and the gateway lab drives an ASGI app; it keeps its own `limits`.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import concurrent.futures
import email.utils
import json
import platform
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from tqdm.auto import tqdm

from ..errors import ConfigError, ServerNotRunning
from ..hardware import describe_hardware  # in run metadata; importable from here as before
from ..results.records import SLO, RequestRecord, RunResult, save_sweep, sweep_frame
from ..serving.connect import Connection, connect
from ..workload import (
    API_KINDS,
    BENCH_REQUESTS_RULE,
    Burst,
    Closed,
    Poisson,
    PromptFactory,
    PromptStream,
    Shape,
    TokenCounter,
    Workload,
    bench_requests,
    chat_messages,
)
from .pool import ConnectionLeases

DEFAULT_TIMEOUT_S = 600.0
# Filler lengths measured with a server's /tokenize, per (base_url, model): a notebook that
# runs many small loads measures each prompt length once.
_FILLER_CACHE: dict[tuple[str, str], dict[tuple[str, int], int]] = {}
_ERROR_TEXT_CHARS = 500
_T = TypeVar("_T")

# --------------------------------------------------------------------------------------------
# Server-sent events


class SSEDecoder:
    """Bytes in, `data:` payloads out; split on `\\n` only (see the module docstring).

    UTF-8 is decoded incrementally, so a multi-byte character split across two network
    reads is joined, not replaced. `\\r` before `\\n` is dropped (JSON escapes every raw
    `\\r`, so it cannot be content). Comments (`:`) and other fields are ignored.
    """

    __slots__ = ("_data", "_decode", "_tail")

    def __init__(self) -> None:
        self._decode = codecs.getincrementaldecoder("utf-8")().decode
        self._tail = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        lines = (self._tail + self._decode(chunk)).split("\n")
        self._tail = lines.pop()
        events: list[str] = []
        data = self._data
        for line in lines:
            if line[-1:] == "\r":
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else "\n".join(data))
                    data.clear()
            elif line.startswith("data:"):
                data.append(line[6:] if line[5:6] == " " else line[5:])
        return events

    def finish(self) -> list[str]:
        """At end of stream: an event whose blank line never came is still delivered; a
        line cut off before its `\\n` is not (it is incomplete)."""
        try:
            self._decode(b"", True)
        except UnicodeDecodeError:
            pass  # a character cut off by the end of the stream: part of an incomplete line
        events = ["\n".join(self._data)] if self._data else []
        self._data.clear()
        return events


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` in seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --------------------------------------------------------------------------------------------
# One request


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


# --------------------------------------------------------------------------------------------
# Driving a shape


class _Sender:
    """Everything one run needs to send request i: URL, headers, prompts, lengths, clock."""

    def __init__(self, leases: ConnectionLeases, url: str, headers: dict[str, str],
                 workload: Workload, model: str, prompts: PromptStream,
                 lengths: Iterator[int], timeout_s: float,
                 on_done: Callable[[RequestRecord], None]) -> None:
        self.leases, self.url, self.headers = leases, url, headers
        self.workload, self.model, self.prompts, self.lengths = workload, model, prompts, lengths
        self.timeout_s, self.on_done = timeout_s, on_done
        self.t0 = time.perf_counter()
        self.records: list[RequestRecord] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def body(self) -> dict[str, Any]:
        """The next request's body; drawn in index order, so index i always gets draw i."""
        return self.workload.body(self.model, self.prompts.next(), next(self.lengths))

    async def send(self, index: int, scheduled_s: float, body: dict[str, Any],
                   gate: asyncio.Semaphore | None = None) -> None:
        if gate is not None:
            async with gate:
                record = await self._send(index, scheduled_s, body)
        else:
            record = await self._send(index, scheduled_s, body)
        self.records.append(record)
        self.on_done(record)

    async def _send(self, index: int, scheduled_s: float, body: dict[str, Any]) -> RequestRecord:
        async with self.leases.lease() as client:
            return await stream_request(client, self.url, body, headers=self.headers,
                                        t0=self.t0, index=index, scheduled_s=scheduled_s,
                                        timeout_s=self.timeout_s)


async def _drive(shape: Shape, sender: _Sender) -> list[RequestRecord]:
    if isinstance(shape, Burst):
        bodies = [sender.body() for _ in range(shape.n)]
        sender.t0 = time.perf_counter()
        await asyncio.gather(*(sender.send(i, 0.0, b) for i, b in enumerate(bodies)))
    elif isinstance(shape, Closed):
        await _drive_closed(shape, sender)
    elif isinstance(shape, Poisson):
        await _drive_poisson(shape, sender)
    else:
        raise ConfigError(f"unknown load shape {shape!r}; use Burst, Closed or Poisson.")
    return sorted(sender.records, key=lambda r: r.index)


async def _drive_closed(shape: Closed, sender: _Sender) -> None:
    limit = shape.requests if shape.requests is not None else float("inf")
    stop_s = shape.duration_s if shape.duration_s is not None else float("inf")
    issued = 0

    async def user() -> None:
        nonlocal issued
        while issued < limit:
            decided_s = sender.now()  # the decision to start is what the duration limits
            if decided_s >= stop_s:
                break
            index, issued = issued, issued + 1
            await sender.send(index, decided_s, sender.body())

    sender.t0 = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(shape.concurrency)))


async def _drive_poisson(shape: Poisson, sender: _Sender) -> None:
    """Arrivals on an absolute clock: a late wake-up does not push later arrivals back."""
    arrivals = shape.arrival_times_s().tolist()
    gate = asyncio.Semaphore(shape.max_concurrency) if shape.max_concurrency else None
    tasks: list[asyncio.Task[None]] = []
    sender.t0 = time.perf_counter()
    for index, at in enumerate(arrivals):
        delay = at - sender.now()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(sender.send(index, at, sender.body(), gate)))
    await asyncio.gather(*tasks)


def _expected_requests(shape: Shape) -> int | None:
    if isinstance(shape, Poisson):
        return len(shape.arrival_times_s())  # cheap enough to draw twice
    return shape.requests


# --------------------------------------------------------------------------------------------
# Connection details, token counting, metadata


def _resolve(conn: Connection | None, base_url: str | None, api_key: str | None,
             model: str | None) -> tuple[str, str | None, str | None, str | None]:
    """(base_url, api_key, model, profile): explicit arguments win over `conn`."""
    if conn is not None:
        base_url = base_url or conn.base_url
        api_key = api_key if api_key is not None else conn.api_key
        model = model or conn.model
    if base_url is None:
        raise ConfigError("no server given: pass conn=labs.connect() or base_url=...")
    base_url = base_url.rstrip("/").removesuffix("/v1")
    return base_url, api_key, model, conn.profile if conn else None


async def _discover_model(client: httpx.AsyncClient, base_url: str,
                          headers: Mapping[str, str]) -> str:
    try:
        resp = await client.get(base_url + "/v1/models", headers=headers, timeout=10.0)
        resp.raise_for_status()
        return resp.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
        raise ServerNotRunning(f"could not learn the model name from {base_url}/v1/models "
                               f"({exc}); pass model=... or conn=labs.connect().") from None


def tokenize_payload(api: str, model: str, text: str) -> dict[str, Any]:
    """The body of vLLM's `POST /tokenize` for a prompt as the load generator sends it: the
    chat form (template included in the count) or a plain completions prompt."""
    if api == "chat":
        return {"model": model, "messages": chat_messages(text)}
    return {"model": model, "prompt": text}


def server_token_counter(client: httpx.AsyncClient, base_url: str, model: str,
                         headers: Mapping[str, str]) -> TokenCounter:
    """Count with the server's tokenizer (`POST /tokenize`, served at the root by vLLM).

    For chat the count includes the chat template, as the server will apply it.
    """

    async def count(api: str, text: str) -> int:
        resp = await client.post(base_url + "/tokenize", json=tokenize_payload(api, model, text),
                                 headers=headers, timeout=30.0)
        resp.raise_for_status()
        return int(resp.json()["count"])

    return count


async def _estimate_tokens(api: str, text: str) -> int:
    """Fallback when /tokenize is not there: about 4 characters per token."""
    return max(1, round(len(text) / 4))


async def _vllm_version(client: httpx.AsyncClient, base_url: str,
                        headers: Mapping[str, str]) -> str | None:
    try:
        resp = await client.get(base_url + "/version", headers=headers, timeout=5.0)
        return str(resp.json()["version"]) if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------------------------
# Public entry points


class _Session:
    """One client, one prompt factory, one metadata block, shared by the runs of a sweep."""

    def __init__(self, workload: Workload, *, conn: Connection | None, base_url: str | None,
                 api_key: str | None, model: str | None, client: httpx.AsyncClient | None,
                 count_tokens: TokenCounter | None, timeout_s: float) -> None:
        self.base_url, self.api_key, self.model, self.profile = _resolve(
            conn, base_url, api_key, model)
        self.headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.workload, self.timeout_s = workload, timeout_s
        self.leases = (ConnectionLeases.sharing(client) if client is not None else
                       ConnectionLeases(timeout=httpx.Timeout(timeout_s, connect=10.0)))
        self.count_tokens = count_tokens
        self.counter_note = "injected" if count_tokens else None
        self.factory: PromptFactory | None = None
        self.metadata: dict[str, Any] = {}

    async def open(self) -> None:
        # The few set-up requests (model, prompt lengths, version) share one connection.
        async with self.leases.lease() as client:
            await self._prepare(client)

    async def _prepare(self, client: httpx.AsyncClient) -> None:
        if not self.model:
            self.model = await _discover_model(client, self.base_url, self.headers)
        if self.workload.target_tokens is not None and self.count_tokens is None:
            self.count_tokens = server_token_counter(client, self.base_url, self.model,
                                                     self.headers)
            self.counter_note = "server /tokenize"
        cache = (_FILLER_CACHE.setdefault((self.base_url, self.model), {})
                 if self.counter_note == "server /tokenize" else None)
        self.factory = PromptFactory(self.workload, self.count_tokens, cache)
        try:
            await self.factory.prepare()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            self.counter_note = f"estimate, 4 chars/token (/tokenize failed: {exc})"[:300]
            self.factory = PromptFactory(self.workload, _estimate_tokens)
            await self.factory.prepare()
        self.metadata = {
            "model": self.model, "base_url": self.base_url, "api": self.workload.path,
            "profile": self.profile,
            "vllm_version": await _vllm_version(client, self.base_url, self.headers),
            "hardware": describe_hardware(),
            "client": f"labs.loadgen (python {platform.python_version()}, "
                      f"httpx {httpx.__version__})",
            "prompt_tokens_target": self.workload.prompt_tokens,
            "prompt_tokens_counted_by": self.counter_note,
            "timeout_s": self.timeout_s,
        }

    async def close(self) -> None:
        await self.leases.aclose()

    def sender(self, stream: int, on_done: Callable[[RequestRecord], None],
               prefix_stream: int) -> _Sender:
        assert self.factory is not None and self.model is not None
        return _Sender(self.leases, self.base_url + self.workload.path, self.headers,
                       self.workload, self.model, self.factory.prompts(prefix_stream),
                       self.workload.output_lengths(stream), self.timeout_s, on_done)

    async def warm_up(self, n: int, concurrency: int, level: int) -> dict[str, Any]:
        sender = self.sender(1, lambda r: None, prefix_stream=2 * level + 1)
        records = await _drive(Closed(max(1, min(n, concurrency)), requests=n), sender)
        bad = [r for r in records if not r.ok]
        return {"requests": n, "errors": len(bad),
                "first_error": bad[0].error if bad else None}

    async def run(self, shape: Shape, *, level: int, warmup: int, progress: bool,
                  label: str | None, metadata: Mapping[str, Any] | None) -> RunResult:
        warm = (await self.warm_up(warmup, getattr(shape, "concurrency", None) or 1, level)
                if warmup > 0 else None)
        total = _expected_requests(shape)
        label = label or f"{shape.label}, {self.workload.label}"
        with tqdm(total=total, desc=shape.label, unit="req", disable=not progress,
                  leave=True, dynamic_ncols=True) as bar:
            errors = 0

            def on_done(record: RequestRecord) -> None:
                nonlocal errors
                bar.update(1)
                if not record.ok:
                    errors += 1
                    bar.set_postfix_str(f"errors {errors} (last: {record.error_kind})",
                                        refresh=False)

            sender = self.sender(0, on_done, prefix_stream=2 * level)
            started = datetime.now(UTC).isoformat(timespec="seconds")
            records = await _drive(shape, sender)
        meta = {**self.metadata, "timestamp": started, "warmup": warm,
                # the time.perf_counter() every *_s time counts from: give it to
                # labs.metrics.MetricsSampler(t0=...) to line server samples up with
                # requests
                "perf_counter_t0": sender.t0, **(metadata or {})}
        return RunResult(label=label, shape=shape, workload=self.workload, metadata=meta,
                         records=tuple(records))


async def run(shape: Shape, workload: Workload | None = None, *,
              conn: Connection | None = None, base_url: str | None = None,
              api_key: str | None = None, model: str | None = None,
              client: httpx.AsyncClient | None = None,
              count_tokens: TokenCounter | None = None, warmup: int = 0,
              progress: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S,
              label: str | None = None, metadata: Mapping[str, Any] | None = None) -> RunResult:
    """Offer `shape` of `workload` to the server and return every request's record.

    Connection details come from `conn` (e.g. `labs.connect()`), or `base_url`/`api_key`/
    `model`; with neither, `labs.connect()` finds the live server. `warmup` requests go
    first and are left out of the result. `count_tokens(api, text)` measures prompts
    (default: the server's /tokenize). Only bad arguments raise; server trouble is recorded.
    """
    return (await sweep_async([shape], workload, conn=conn, base_url=base_url,
                              api_key=api_key, model=model, client=client,
                              count_tokens=count_tokens, warmup=warmup, progress=progress,
                              timeout_s=timeout_s, labels=[label] if label else None,
                              metadata=metadata))[0]


async def sweep_async(shapes: Sequence[Shape], workload: Workload | None = None, *,
                      conn: Connection | None = None, base_url: str | None = None,
                      api_key: str | None = None, model: str | None = None,
                      client: httpx.AsyncClient | None = None,
                      count_tokens: TokenCounter | None = None, warmup: int = 0,
                      progress: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S,
                      labels: Sequence[str] | None = None,
                      metadata: Mapping[str, Any] | None = None) -> list[RunResult]:
    """Run each shape in turn (warm-up once, before the first) with one client."""
    workload = workload or Workload()
    if not shapes:
        raise ConfigError("sweep needs at least one load shape, e.g. [Closed(c, requests=8) "
                          "for c in (1, 2, 4)].")
    if labels is not None and len(labels) != len(shapes):
        raise ConfigError(f"{len(labels)} labels for {len(shapes)} shapes; give one per shape.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be a number of requests (0 or more), not {warmup!r}.")
    if not timeout_s or timeout_s <= 0:
        raise ConfigError(f"timeout_s must be > 0 seconds, not {timeout_s!r}.")
    if conn is None and base_url is None:
        conn = await asyncio.to_thread(connect)  # don't block a notebook's loop
    session = _Session(workload, conn=conn, base_url=base_url, api_key=api_key, model=model,
                       client=client, count_tokens=count_tokens, timeout_s=timeout_s)
    try:
        await session.open()
        results = []
        for level, shape in enumerate(shapes):
            results.append(await session.run(
                shape, level=level, warmup=warmup if level == 0 else 0, progress=progress,
                label=labels[level] if labels else None, metadata=metadata))
        return results
    finally:
        await session.close()


def run_blocking(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to the end from sync code, also where a loop already runs (Jupyter):
    there, in a fresh thread with its own loop, since a running loop cannot be re-entered."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labs-loadgen") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def run_sync(shape: Shape, workload: Workload | None = None, **kwargs: Any) -> RunResult:
    """`run()` for scripts and notebooks. Takes the same keywords.

    Do not pass a `client` that was already used on another event loop (httpx ties its
    connections to the loop); leave `client` out and one is made for this run.
    """
    return run_blocking(lambda: run(shape, workload, **kwargs))


def sweep(shapes: Sequence[Shape], workload: Workload | None = None,
          **kwargs: Any) -> list[RunResult]:
    """`sweep_async()` for scripts and notebooks; then `labs.results.records.sweep_frame(runs)`."""
    return run_blocking(lambda: sweep_async(shapes, workload, **kwargs))


# --------------------------------------------------------------------------------------------
# CLI: python -m labs bench


def parse_levels(text: str) -> list[int]:
    """"1,8,32" -> [1, 8, 32]; anything but whole numbers >= 1 is a ConfigError."""
    levels = []
    for part in text.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit() or int(part) < 1:
            raise ConfigError(f"--concurrency {text!r}: each level must be a whole number "
                              "of at least 1, e.g. --concurrency 1,8,32.")
        levels.append(int(part))
    return levels


def _cmd_bench(args: argparse.Namespace) -> int:
    levels = parse_levels(args.concurrency)
    if args.requests_per_level is not None and args.requests_per_level < 1:
        raise ConfigError("--requests-per-level must be at least 1, "
                          f"not {args.requests_per_level}.")
    if args.max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, not {args.max_tokens}.")
    if args.prompt_tokens < 0:
        raise ConfigError(f"--prompt-tokens must be 0 (a short prompt) or more, "
                          f"not {args.prompt_tokens}.")
    slo = SLO(ttft_s=args.slo_ttft_s, tpot_s=args.slo_tpot_s, e2e_s=args.slo_e2e_s)
    workload = Workload(api=args.api, prompt_tokens=args.prompt_tokens or None,
                        max_tokens=args.max_tokens)
    shapes = [Closed(c, requests=args.requests_per_level or bench_requests(c)) for c in levels]
    runs = sweep(shapes, workload, conn=connect(), warmup=args.warmup,
                 progress=not args.no_progress, timeout_s=args.timeout)
    table = sweep_frame(runs, slo if slo.given else None)
    if not slo.given:
        table = table.drop(columns=["goodput_rps"])
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    if args.out:
        path = save_sweep(runs, args.out, slo if slo.given else None)
        print(f"saved {path} and {path.with_suffix('.csv')}", file=sys.stderr)
    failed = [r.label for r in runs if not any(rec.ok for rec in r.records)]
    if failed:
        first = next(rec.error for r in runs for rec in r.records if rec.error)
        print(f"error: every request failed at {', '.join(failed)} (first: {first})",
              file=sys.stderr)
        return 1
    return 0


def add_cli(verbs: Any) -> None:
    """Register `bench` on the `python -m labs` subparsers."""
    p = verbs.add_parser("bench", help="closed-loop concurrency sweep against the live server")
    p.add_argument("--concurrency", default="1,2,4,8",
                   help="comma-separated concurrency levels (default 1,2,4,8)")
    p.add_argument("--requests-per-level", type=int, default=None, metavar="N",
                   help=f"requests at each level (default {BENCH_REQUESTS_RULE})")
    p.add_argument("--max-tokens", type=int, default=64, help="output tokens per request "
                   "(ignore_eos, so exactly this many; default 64)")
    p.add_argument("--prompt-tokens", type=int, default=128,
                   help="prompt length in the server's tokens (default 128; 0: a short prompt)")
    p.add_argument("--api", choices=API_KINDS, default="chat", help="endpoint (default chat)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests, not measured "
                   "(default 2)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds per request before it counts as a timeout "
                   f"(default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--slo-ttft-s", type=float, default=None, help="TTFT SLO for goodput")
    p.add_argument("--slo-tpot-s", type=float, default=None, help="TPOT SLO for goodput")
    p.add_argument("--slo-e2e-s", type=float, default=None, help="end-to-end SLO for goodput")
    p.add_argument("--out", type=Path, default=None,
                   help="save results here (JSON, and a CSV beside it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
