"""vLLM's own view of a run: scrape `/metrics`, read it, and sample it while load runs.

The client measures what users feel (TTFT, TPOT); the server's Prometheus endpoint says why:
how many sequences run or wait, how full the KV pool is, how often the scheduler preempts.
One scrape becomes a typed `Snapshot`, and `MetricsSampler` scrapes in a thread during a
load run so that each request can be joined to the server state at the moment it was sent
(`join_to_requests`).

    snapshot  the wire names, one scrape (`scrape`, `metrics_url`) parsed into a `Snapshot`
    views     what a snapshot hands out: a `Histogram` (quantiles, deltas), the `CacheConfig`
    sampler   `MetricsSampler` (scrapes in a background thread), `join_to_requests`
"""

from .sampler import SAMPLE_COLUMNS, MetricsSampler, join_to_requests
from .snapshot import (
    ADMISSION_REJECTIONS,
    CACHE_CONFIG,
    E2E,
    ITL,
    KV_CACHE_USAGE,
    PREEMPTIONS,
    QUEUE_TIME,
    RUNNING,
    TPOT,
    TTFT,
    WAITING,
    Sample,
    Snapshot,
    metrics_url,
    scrape,
)
from .views import CacheConfig, Histogram

__all__ = [
    "RUNNING", "WAITING", "KV_CACHE_USAGE", "PREEMPTIONS", "ADMISSION_REJECTIONS",
    "CACHE_CONFIG", "TTFT", "ITL", "TPOT", "E2E", "QUEUE_TIME", "SAMPLE_COLUMNS",
    "Sample", "Histogram", "CacheConfig", "Snapshot", "metrics_url", "scrape",
    "MetricsSampler", "join_to_requests",
]
