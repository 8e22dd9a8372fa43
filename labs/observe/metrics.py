"""vLLM's own view of a run: scrape `/metrics`, read it, and sample it while load runs.

The client measures what users feel (TTFT, TPOT); the server's Prometheus endpoint says why:
how many sequences run or wait, how full the KV pool is, how often the scheduler preempts.
This module turns one scrape into a typed `Snapshot`, and `MetricsSampler` scrapes in a
thread during a load run so that each request can be joined to the server state at the
moment it was sent (`join_to_requests`).

Names are vLLM 0.32's (`vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, ...). Every
series carries `engine` and `model_name` labels; counters and gauges are summed over engines
(one engine per server in this course), except KV usage, which is averaged because each
engine has its own pool. A metric missing from a scrape reads as None ("no data"), except
admission rejections: vLLM creates that counter lazily on some versions, and an absent
counter means no rejection happened, so it reads as 0.

`/metrics` needs no API key, so nothing here sends one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..errors import ConfigError, ServerError, ServerNotRunning

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = "vllm:kv_cache_usage_perc"
PREEMPTIONS = "vllm:num_preemptions_total"
ADMISSION_REJECTIONS = "vllm:admission_rejections_total"
CACHE_CONFIG = "vllm:cache_config_info"

TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
TPOT = "vllm:request_time_per_output_token_seconds"
E2E = "vllm:e2e_request_latency_seconds"
QUEUE_TIME = "vllm:request_queue_time_seconds"

_START_HINT = "start one with `python -m labs serve`"


class Sample(NamedTuple):
    """One line of the exposition: wire name (`..._total`, `..._bucket`), labels, value."""
    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


# --- histograms ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound (the last bound is +inf).

    Bounds are in the metric's unit (seconds for `*_seconds`). The buckets are vLLM's, so a
    quantile is only as sharp as they are: a p95 between 0.25 s and 0.5 s is interpolated.
    """
    name: str
    upper_bounds: tuple[float, ...]
    cumulative_counts: tuple[float, ...]
    sum: float
    count: float

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) as Prometheus' histogram_quantile computes it; None if empty.

        Linear interpolation inside the bucket holding rank q x count, the first bucket
        starting at 0; a rank in the +Inf bucket returns the largest finite bound, because
        nothing is known above it.
        """
        if not 0 <= q <= 1:  # also refuses NaN
            raise ConfigError(f"quantile q must be between 0 and 1, got {q!r}.")
        if not self.cumulative_counts or self.cumulative_counts[-1] <= 0:
            return None
        total = self.cumulative_counts[-1]
        rank = q * total
        prev_count, prev_bound = 0.0, 0.0
        for bound, count in zip(self.upper_bounds, self.cumulative_counts):
            if count >= rank and count > prev_count:
                if math.isinf(bound):
                    finite = [b for b in self.upper_bounds if not math.isinf(b)]
                    return finite[-1] if finite else None
                if bound <= 0 and prev_count == 0:
                    return bound
                share = (rank - prev_count) / (count - prev_count)
                return prev_bound + (bound - prev_bound) * share
            prev_count, prev_bound = count, bound
        return None  # unreachable for a well-formed histogram

    def delta(self, earlier: Histogram) -> Histogram:
        """What was observed between `earlier` and this one (same buckets, same series).

        If the counts went down the server restarted in between; everything since the
        restart is this histogram itself, so it is returned unchanged.
        """
        if earlier.upper_bounds != self.upper_bounds:
            raise ConfigError(f"cannot subtract histograms of {self.name} with different buckets.")
        if self.count < earlier.count:
            return self
        return Histogram(
            self.name, self.upper_bounds,
            tuple(a - b for a, b in zip(self.cumulative_counts, earlier.cumulative_counts)),
            self.sum - earlier.sum, self.count - earlier.count,
        )

    def to_dict(self) -> dict[str, float | None]:
        """Count, mean and the usual quantiles, JSON-able (None where empty)."""
        return {"count": self.count, "mean": self.mean, "p50": self.quantile(0.5),
                "p90": self.quantile(0.9), "p95": self.quantile(0.95), "p99": self.quantile(0.99)}


# --- cache config -------------------------------------------------------------------------

def _int_label(value: str | None) -> int | None:
    if value is None or value in ("None", ""):
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class CacheConfig:
    """The KV pool the engine built, from the labels of `vllm:cache_config_info`.

    `num_gpu_blocks` is the number the article multiplies by `block_size`; it is called GPU
    blocks on the CPU backend too. `labels` keeps everything else vLLM reports there.
    """
    num_gpu_blocks: int | None
    block_size: int | None
    kv_cache_size_tokens: int | None
    kv_cache_memory_bytes: int | None
    labels: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pool_tokens(self) -> int | None:
        """Tokens the pool holds: num_gpu_blocks x block_size (None if either is unknown)."""
        if self.num_gpu_blocks is None or self.block_size is None:
            return None
        return self.num_gpu_blocks * self.block_size

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> CacheConfig:
        return cls(
            num_gpu_blocks=_int_label(labels.get("num_gpu_blocks")),
            block_size=_int_label(labels.get("block_size")),
            kv_cache_size_tokens=_int_label(labels.get("kv_cache_size_tokens")),
            kv_cache_memory_bytes=_int_label(labels.get("kv_cache_memory_bytes")),
            labels=dict(labels),
        )


# --- snapshots ----------------------------------------------------------------------------

def _parse(text: str) -> tuple[tuple[Sample, ...], dict[str, str], dict[str, str]]:
    """Samples, sample name -> family name, family name -> type."""
    samples: list[Sample] = []
    family_of: dict[str, str] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.append(Sample(s.name, tuple(sorted(s.labels.items())), float(s.value)))
            family_of[s.name] = family.name
    return tuple(samples), family_of, types


_MONOTONIC_SUFFIXES = ("_total", "_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Snapshot:
    """One scrape of `/metrics`, parsed, with when it was taken.

    `taken_at` is `time.perf_counter()` (for durations and joins with client timings) and
    `wall_time` is `time.time()` (for logs). A snapshot made by `delta` holds what the
    counters and histograms gained since `since` (the earlier snapshot's `taken_at`), and
    the gauges as they were at the end.
    """
    samples: tuple[Sample, ...] = field(repr=False)
    family_of: Mapping[str, str] = field(repr=False, compare=False)
    types: Mapping[str, str] = field(repr=False, compare=False)
    taken_at: float = 0.0
    wall_time: float = 0.0
    url: str | None = None
    since: float | None = None

    @classmethod
    def parse(cls, text: str, taken_at: float | None = None, wall_time: float | None = None,
              url: str | None = None) -> Snapshot:
        """A snapshot from exposition text (a scrape, a fixture file, a hand-written string)."""
        try:
            samples, family_of, types = _parse(text)
        except ValueError as err:
            where = f" from {url}" if url else ""
            raise ServerError(f"the text{where} is not Prometheus metrics ({err}).") from None
        return cls(samples, family_of, types,
                   time.perf_counter() if taken_at is None else taken_at,
                   time.time() if wall_time is None else wall_time, url)

    @cached_property
    def _by_name(self) -> dict[str, list[Sample]]:
        index: dict[str, list[Sample]] = {}
        for s in self.samples:
            index.setdefault(s.name, []).append(s)
        return index

    @property
    def duration_s(self) -> float | None:
        """Seconds a delta snapshot covers; None for a plain scrape."""
        return None if self.since is None else self.taken_at - self.since

    def names(self) -> list[str]:
        """Every sample name in the scrape, as on the wire."""
        return sorted(self._by_name)

    def select(self, name: str, **labels: object) -> list[Sample]:
        """The samples called `name` whose labels include `labels`."""
        want = {k: str(v) for k, v in labels.items()}
        return [s for s in self._by_name.get(name, ())
                if all(dict(s.labels).get(k) == v for k, v in want.items())]

    def value(self, name: str, **labels: object) -> float | None:
        """Sum of the samples called `name` (over engines) matching `labels`; None if none.

        A counter may be named with or without `_total`: `value("vllm:num_preemptions")`
        reads `vllm:num_preemptions_total`.
        """
        found = self.select(name, **labels)
        if not found and not name.endswith("_total"):
            found = self.select(name + "_total", **labels)
        return sum(s.value for s in found) if found else None

    def _int(self, name: str) -> int | None:
        value = self.value(name)
        return None if value is None else round(value)

    @property
    def running(self) -> int | None:
        """Sequences in the running batch (summed over engines)."""
        return self._int(RUNNING)

    @property
    def waiting(self) -> int | None:
        """Requests queued in the engine, not yet scheduled (summed over engines)."""
        return self._int(WAITING)

    @property
    def kv_cache_usage(self) -> float | None:
        """Fraction of the KV pool in use, 0..1 (averaged over engines: one pool each)."""
        found = self.select(KV_CACHE_USAGE)
        return sum(s.value for s in found) / len(found) if found else None

    @property
    def preemptions_total(self) -> int | None:
        """Sequences evicted from the KV pool to make room, since the server started."""
        return self._int(PREEMPTIONS)

    @property
    def admission_rejections(self) -> dict[str, int]:
        """Requests refused by vLLM's queue limits, by reason ({} when the counter is absent)."""
        out: dict[str, int] = {}
        for s in self.select(ADMISSION_REJECTIONS):
            reason = s.label("reason") or "unknown"
            out[reason] = out.get(reason, 0) + round(s.value)
        return out

    @property
    def admission_rejections_total(self) -> int:
        """All admission rejections; 0 when the counter is absent (absent means none yet)."""
        return sum(self.admission_rejections.values())

    def cache_config(self, engine: str | int | None = None) -> CacheConfig | None:
        """The KV pool of `engine` (default: the first one); None if the scrape has none."""
        found = self.select(CACHE_CONFIG) if engine is None else self.select(
            CACHE_CONFIG, engine=engine)
        if not found:
            return None
        first = min(found, key=lambda s: s.label("engine") or "")
        return CacheConfig.from_labels(dict(first.labels))

    def histogram_names(self) -> list[str]:
        return sorted(n for n, t in self.types.items() if t == "histogram")

    def histogram(self, name: str, **labels: object) -> Histogram:
        """The histogram `name`, summed over engines (and over any label not given).

        An unknown name raises ConfigError listing the histograms this scrape has.
        """
        name = name.removesuffix("_bucket")
        buckets = self.select(name + "_bucket", **labels)
        if self.types.get(name) != "histogram" and not buckets:
            valid = ", ".join(self.histogram_names())
            raise ConfigError(f"no histogram {name!r} in this scrape; histograms: {valid}.")
        per_bound: dict[float, float] = {}
        for s in buckets:
            bound = float(s.label("le") or "inf")
            per_bound[bound] = per_bound.get(bound, 0.0) + s.value
        bounds = tuple(sorted(per_bound))
        return Histogram(
            name, bounds, tuple(per_bound[b] for b in bounds),
            sum(s.value for s in self.select(name + "_sum", **labels)),
            sum(s.value for s in self.select(name + "_count", **labels)),
        )

    def _monotonic(self, sample_name: str) -> bool:
        family = self.family_of.get(sample_name, "")
        kind = self.types.get(family)
        if sample_name.endswith("_created"):
            return False
        if kind in ("counter", "histogram", "summary"):
            return sample_name.endswith(_MONOTONIC_SUFFIXES)
        return False

    def _created(self, sample: Sample) -> float | None:
        """The `_created` timestamp of the series a counter/histogram sample belongs to."""
        family = self.family_of.get(sample.name, "")
        labels = {k: v for k, v in sample.labels if k not in ("le", "quantile")}
        found = self.select(family + "_created", **labels)
        return found[0].value if len(found) == 1 else None

    def delta(self, earlier: Snapshot) -> Snapshot:
        """What the counters and histograms gained since `earlier`; gauges as of now.

        This is how a notebook gets the p95 TTFT of just one run:
        `after.delta(before).histogram(TTFT).quantile(0.95)`. A series that restarted in
        between (its `_created` time changed, or its value went down) counts from zero.
        """
        before = {(s.name, s.labels): s for s in earlier.samples}
        out: list[Sample] = []
        for s in self.samples:
            old = before.get((s.name, s.labels))
            if old is None or not self._monotonic(s.name):
                out.append(s)
                continue
            created_now, created_then = self._created(s), earlier._created(old)
            restarted = (created_now is not None and created_then is not None
                         and created_now != created_then) or s.value < old.value
            out.append(s if restarted else s._replace(value=s.value - old.value))
        return Snapshot(tuple(out), self.family_of, self.types, self.taken_at,
                        self.wall_time, self.url, earlier.taken_at)

    def summary(self) -> dict[str, Any]:
        """The headline gauges and counters as one JSON-able dict."""
        cache = self.cache_config()
        return {
            "running": self.running, "waiting": self.waiting,
            "kv_cache_usage": self.kv_cache_usage, "preemptions_total": self.preemptions_total,
            "admission_rejections_total": self.admission_rejections_total,
            "pool_tokens": cache.pool_tokens if cache else None,
        }


# --- scraping -----------------------------------------------------------------------------

def metrics_url(base_url: object) -> str:
    """`.../metrics` for a base URL (with or without /v1) or anything with `.base_url`."""
    root = str(getattr(base_url, "base_url", base_url)).rstrip("/")
    if root.endswith("/metrics"):
        return root
    return root.removesuffix("/v1").rstrip("/") + "/metrics"


def _not_running(url: str, exc: Exception) -> ServerNotRunning:
    return ServerNotRunning(
        f"no vLLM server answers at {url} ({type(exc).__name__}); {_START_HINT}.")


def _snapshot(response: httpx.Response, url: str, sent: float) -> Snapshot:
    if response.status_code != 200:
        raise ServerError(f"{url} answered HTTP {response.status_code}; is a vLLM server "
                          "listening there?")
    # The midpoint of request and response is the best guess of when vLLM rendered it.
    taken_at = (sent + time.perf_counter()) / 2
    return Snapshot.parse(response.text, taken_at=taken_at, url=url)


def scrape(base_url: object, client: httpx.Client | None = None,
           timeout_s: float = 5.0) -> Snapshot:
    """Scrape `base_url`/metrics once. No server there raises ServerNotRunning."""
    url = metrics_url(base_url)
    sent = time.perf_counter()
    try:
        if client is None:
            with httpx.Client(timeout=timeout_s) as own:
                response = own.get(url)
        else:
            response = client.get(url, timeout=timeout_s)
    except httpx.TransportError as exc:
        raise _not_running(url, exc) from None
    return _snapshot(response, url, sent)


# --- sampling during a run ----------------------------------------------------------------

SAMPLE_COLUMNS = ("t_s", "perf_counter_s", "wall_time", "running", "waiting",
                  "kv_cache_usage", "preemptions_total", "admission_rejections_total",
                  "scrape_s", "error")


class MetricsSampler:
    """Scrape `/metrics` every `interval_s` in a background thread while a run goes on.

    A thread with a blocking httpx.Client, not a task, so that it works the same in a script,
    beside an asyncio load run, and in Jupyter (whose event loop is already running), and so
    a load generator that hogs the loop cannot delay the samples.

        with MetricsSampler(conn.base_url, t0=run_start) as sampler:
            ...run the load...
        df = sampler.to_frame()

    `t_s` of each row is `taken_at - t0`: pass the `time.perf_counter()` the load run uses
    as its origin (labs.results.records keeps request times as seconds from that origin), and the
    rows line up with the requests (see `join_to_requests`). Without `t0`, the origin is
    the moment `start()` was called; `to_frame(t0=...)` can re-base it afterwards.

    `start()` scrapes once in the caller's thread, so a missing server fails at once with
    ServerNotRunning. After that, a failed scrape is a row with `error` set (the server may
    be restarting, or too busy to answer in `timeout_s`), never the end of the thread.
    `stop()` scrapes a last time, so `last` is the state at the end of the run.
    """

    def __init__(self, base_url: object, interval_s: float = 0.5, *, t0: float | None = None,
                 client: httpx.Client | None = None, timeout_s: float = 2.0) -> None:
        if not interval_s > 0:
            raise ConfigError(f"interval_s must be > 0, got {interval_s!r}.")
        self.url = metrics_url(base_url)
        self.interval_s = float(interval_s)
        self.t0 = t0
        self.timeout_s = timeout_s
        self._client = client
        self._own_client = client is None
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.first: Snapshot | None = None
        self.last: Snapshot | None = None

    # lifecycle

    def start(self) -> MetricsSampler:
        if self._stopped:
            raise ConfigError("this MetricsSampler has been stopped; create a new one.")
        if self._thread is not None:
            return self
        if self.t0 is None:
            self.t0 = time.perf_counter()
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout_s)
        sent = time.perf_counter()
        try:
            self._record(scrape(self.url, self._client, self.timeout_s), sent)
        except BaseException:
            self._close_client()
            raise
        self._thread = threading.Thread(target=self._loop, name="labs-metrics-sampler",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (joins the thread, scrapes once more); calling it again is harmless."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + self.interval_s + 5)
            self.sample_once()
        self._close_client()

    def __enter__(self) -> MetricsSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_client(self) -> None:
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    # sampling

    def _loop(self) -> None:
        start = time.perf_counter()
        ticks = 0
        while True:
            ticks += 1
            next_at = start + ticks * self.interval_s
            now = time.perf_counter()
            if next_at < now:  # a slow scrape: skip the ticks it overran, keep the grid
                ticks += int((now - next_at) // self.interval_s) + 1
                next_at = start + ticks * self.interval_s
            if self._stop.wait(next_at - now):
                return
            self.sample_once()

    def sample_once(self) -> dict[str, Any]:
        """Scrape now and append the row (also an error row); returns the row."""
        sent = time.perf_counter()
        try:
            assert self._client is not None
            snap = scrape(self.url, self._client, self.timeout_s)
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any failed scrape
            row = self._row(None, sent, time.perf_counter() - sent, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self._rows.append(row)
            return row
        return self._record(snap, sent)

    def _record(self, snap: Snapshot, sent: float) -> dict[str, Any]:
        row = self._row(snap, snap.taken_at, time.perf_counter() - sent, None)
        with self._lock:
            self._rows.append(row)
            if self.first is None:
                self.first = snap
            self.last = snap
        return row

    def _row(self, snap: Snapshot | None, at: float, scrape_s: float,
             error: str | None) -> dict[str, Any]:
        assert self.t0 is not None
        row: dict[str, Any] = {"t_s": at - self.t0, "perf_counter_s": at,
                               "wall_time": snap.wall_time if snap else time.time()}
        if snap is None:
            row.update(running=None, waiting=None, kv_cache_usage=None, preemptions_total=None,
                       admission_rejections_total=None)
        else:
            row.update(running=snap.running, waiting=snap.waiting,
                       kv_cache_usage=snap.kv_cache_usage,
                       preemptions_total=snap.preemptions_total,
                       admission_rejections_total=snap.admission_rejections_total)
        row.update(scrape_s=scrape_s, error=error)
        return row

    # results

    @property
    def rows(self) -> list[dict[str, Any]]:
        """A copy of the rows so far (safe to read while sampling)."""
        with self._lock:
            return [dict(r) for r in self._rows]

    def delta(self) -> Snapshot | None:
        """Counters and histograms gained between the first and the last good scrape."""
        with self._lock:
            first, last = self.first, self.last
        return None if first is None or last is None else last.delta(first)

    def to_frame(self, t0: float | None = None) -> Any:
        """The rows as a pandas DataFrame, one per scrape, columns SAMPLE_COLUMNS.

        `t0` re-bases `t_s` on another `time.perf_counter()` origin, for when the load run
        fixed its start only after the sampler started (`perf_counter_s` is absolute).
        """
        import pandas as pd  # heavy: pandas only when a frame is asked for

        frame = pd.DataFrame(self.rows, columns=list(SAMPLE_COLUMNS))
        if t0 is not None:
            frame["t_s"] = frame["perf_counter_s"] - t0
        return frame


def join_to_requests(samples: Any, requests: Any, time_col: str = "sent_s", *,
                     columns: Iterable[str] = ("running", "waiting", "kv_cache_usage",
                                               "preemptions_total",
                                               "admission_rejections_total"),
                     tolerance_s: float | None = None) -> Any:
    """Each request row with the server state last sampled at or before its `time_col`.

    Both clocks must be seconds from the same `time.perf_counter()` origin: the sampler's
    `t_s` counts from its `t0`, so give it the load run's start (labs.results.records records
    `sent_s` from that start), or re-base afterwards with `sampler.to_frame(t0=run_t0)`.
    Failed scrapes are skipped; a request sent before the first sample (or more than
    `tolerance_s` after the last one) gets NaN. The sample time comes along as
    `sample_t_s`; the rows keep their original order and index.
    """
    import pandas as pd  # heavy: pandas only when a frame is asked for

    if time_col not in requests.columns:
        raise ConfigError(f"requests have no column {time_col!r}; columns: "
                          f"{', '.join(map(str, requests.columns))}.")
    columns = list(columns)
    good = samples
    if "error" in samples.columns:
        good = samples[samples["error"].isna()]
    right = (good[["t_s", *columns]].rename(columns={"t_s": "sample_t_s"})
             .astype({"sample_t_s": float}).sort_values("sample_t_s"))
    left = requests.assign(_order=range(len(requests)),
                           _t=pd.to_numeric(requests[time_col], errors="coerce").astype(float))
    timed = left[left["_t"].notna()].sort_values("_t")
    merged = pd.merge_asof(timed, right, left_on="_t", right_on="sample_t_s",
                           direction="backward", tolerance=tolerance_s)
    merged.index = timed.index
    untimed = left[left["_t"].isna()]  # never sent: no server state to attach
    if len(untimed):
        merged = pd.concat([merged, untimed.reindex(columns=merged.columns)])
    return merged.sort_values("_order").drop(columns=["_order", "_t"])


__all__ = [
    "RUNNING", "WAITING", "KV_CACHE_USAGE", "PREEMPTIONS", "ADMISSION_REJECTIONS",
    "CACHE_CONFIG", "TTFT", "ITL", "TPOT", "E2E", "QUEUE_TIME", "SAMPLE_COLUMNS",
    "Sample", "Histogram", "CacheConfig", "Snapshot", "metrics_url", "scrape",
    "MetricsSampler", "join_to_requests",
]
