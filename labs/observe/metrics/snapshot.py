"""Scrape vLLM's `/metrics` once and parse it into a typed `Snapshot`.

Names are vLLM 0.32's (`vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, ...). Every
series carries `engine` and `model_name` labels; counters and gauges are summed over engines
(one engine per server in this course), except KV usage, which is averaged because each
engine has its own pool. A metric missing from a scrape reads as None ("no data"), except
admission rejections: vLLM creates that counter lazily on some versions, and an absent
counter means no rejection happened, so it reads as 0.

`/metrics` needs no API key, so nothing here sends one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ...errors import ConfigError, ServerError, ServerNotRunning
from .views import CacheConfig, Histogram

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
