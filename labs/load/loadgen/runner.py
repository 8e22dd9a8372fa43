"""Run a load shape: drive its requests on their schedule, with one session (client, prompt
factory, metadata) per sweep; the public entry points `run`, `sweep_async` and their sync
forms `run_sync` and `sweep` (for scripts and notebooks, also where a loop already runs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import platform
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from tqdm.auto import tqdm

from ...errors import ConfigError
from ...hardware import describe_hardware  # in run metadata
from ...results.records import RequestRecord, RunResult
from ...serving.connect import Connection, connect
from ...workload import (
    Burst,
    Closed,
    Poisson,
    PromptFactory,
    PromptStream,
    Shape,
    TokenCounter,
    Workload,
)
from ..pool import ConnectionLeases
from .request import DEFAULT_TIMEOUT_S, stream_request
from .tokens import (
    _discover_model,
    _estimate_tokens,
    _resolve,
    _vllm_version,
    server_token_counter,
)

# Filler lengths measured with a server's /tokenize, per (base_url, model): a notebook that
# runs many small loads measures each prompt length once.
_FILLER_CACHE: dict[tuple[str, str], dict[tuple[str, int], int]] = {}
_T = TypeVar("_T")


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
