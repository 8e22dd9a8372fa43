"""Sample `/metrics` while a load run goes on: `MetricsSampler` scrapes in a background
thread, and `join_to_requests` joins each request to the server state at the moment it was
sent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

import httpx

from ...errors import ConfigError
from .snapshot import Snapshot, metrics_url, scrape

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
