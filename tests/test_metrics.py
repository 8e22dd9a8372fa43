"""Reading vLLM's /metrics: a real scrape, hand-made histograms, and the background sampler."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from labs.errors import ConfigError, ServerError, ServerNotRunning
from labs.observe import metrics as m
from labs.serving.server import free_port

FIXTURE = Path(__file__).parent / "fixtures" / "metrics_idle_cpu.txt"
IDLE = FIXTURE.read_text()

LABELS = 'engine="0",model_name="m"'


def hist_text(name: str, bounds: list[str], counts: list[float], total: float,
              labels: str = LABELS) -> str:
    lines = [f"# TYPE {name} histogram"]
    for le, c in zip(bounds, counts):
        lines.append(f'{name}_bucket{{{labels},le="{le}"}} {c}')
    lines.append(f"{name}_sum{{{labels}}} {total}")
    lines.append(f"{name}_count{{{labels}}} {counts[-1]}")
    return "\n".join(lines) + "\n"


def state_text(running: int, waiting: int, usage: float, preemptions: int,
               ttft_counts: list[float], ttft_sum: float, created: float = 100.0) -> str:
    return (
        f"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{{LABELS}}} {running}\n"
        f"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{{LABELS}}} {waiting}\n"
        f"# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{{{LABELS}}} {usage}\n"
        f"# TYPE vllm:num_preemptions_total counter\n"
        f"vllm:num_preemptions_total{{{LABELS}}} {preemptions}\n"
        f"# TYPE vllm:num_preemptions_created gauge\n"
        f"vllm:num_preemptions_created{{{LABELS}}} {created}\n"
        + hist_text(m.TTFT, ["0.1", "0.5", "1.0", "+Inf"], ttft_counts, ttft_sum)
    )


# --- the real scrape ------------------------------------------------------------------------

def test_idle_fixture_parses():
    snap = m.Snapshot.parse(IDLE)
    assert (snap.running, snap.waiting, snap.kv_cache_usage) == (0, 0, 0.0)
    assert snap.preemptions_total == 0
    assert snap.admission_rejections == {"max_num_queued_reqs": 0, "max_num_queued_tokens": 0}
    assert snap.admission_rejections_total == 0
    cache = snap.cache_config()
    assert cache is not None
    assert (cache.num_gpu_blocks, cache.block_size, cache.kv_cache_size_tokens) == (364, 128, 46592)
    assert cache.kv_cache_memory_bytes == 2**31
    assert cache.pool_tokens == 46592 == cache.kv_cache_size_tokens
    assert cache.labels["enable_prefix_caching"] == "True"


def test_idle_fixture_histograms():
    snap = m.Snapshot.parse(IDLE)
    for name in (m.TTFT, m.ITL, m.TPOT, m.E2E, m.QUEUE_TIME):
        h = snap.histogram(name)
        assert h.count >= 1 and h.upper_bounds[-1] == float("inf")
        assert list(h.cumulative_counts) == sorted(h.cumulative_counts)
    ttft = snap.histogram(m.TTFT)
    assert ttft.count == 1 and ttft.mean == pytest.approx(0.1469, abs=1e-4)
    assert 0.1 < ttft.quantile(0.5) <= 0.25  # the one observation is in the (0.1, 0.25] bucket
    assert snap.histogram(m.ITL).count == 7


def test_generic_value_getter():
    snap = m.Snapshot.parse(IDLE)
    assert snap.value("vllm:num_preemptions") == 0.0  # `_total` is optional for counters
    assert snap.value("vllm:request_success_total", finished_reason="stop") == 1.0
    assert snap.value("vllm:no_such_metric") is None
    assert snap.value(m.RUNNING, engine=0) == 0.0 and snap.value(m.RUNNING, engine=1) is None


def test_absent_metrics_are_none_but_absent_rejections_are_zero():
    snap = m.Snapshot.parse("# TYPE foo gauge\nfoo 1\n")
    assert snap.running is None and snap.kv_cache_usage is None and snap.cache_config() is None
    assert snap.admission_rejections == {} and snap.admission_rejections_total == 0


def test_unknown_histogram_lists_the_ones_there():
    with pytest.raises(ConfigError, match="time_to_first_token"):
        m.Snapshot.parse(IDLE).histogram("vllm:time_to_first_tokn_seconds")


def test_not_prometheus_text():
    with pytest.raises(ServerError):
        m.Snapshot.parse("<html>502 Bad Gateway</html>")


def test_engines_are_summed_and_usage_averaged():
    text = ("# TYPE vllm:num_requests_running gauge\n"
            'vllm:num_requests_running{engine="0",model_name="m"} 3\n'
            'vllm:num_requests_running{engine="1",model_name="m"} 4\n'
            "# TYPE vllm:kv_cache_usage_perc gauge\n"
            'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2\n'
            'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6\n'
            + hist_text(m.TTFT, ["1", "+Inf"], [1, 2], 3, 'engine="0",model_name="m"')
            + hist_text(m.TTFT, ["1", "+Inf"], [3, 3], 1, 'engine="1",model_name="m"')
            .replace(f"# TYPE {m.TTFT} histogram\n", ""))
    snap = m.Snapshot.parse(text)
    assert snap.running == 7 and snap.kv_cache_usage == pytest.approx(0.4)
    h = snap.histogram(m.TTFT)
    assert h.cumulative_counts == (4, 5) and h.count == 5 and h.sum == 4
    assert snap.histogram(m.TTFT, engine="1").count == 3


# --- histogram arithmetic ---------------------------------------------------------------

def test_quantile_interpolates_like_prometheus():
    # 10 observations: 2 in [0, 1], 6 in (1, 2], 2 in (2, 4]
    h = m.Histogram("x", (1.0, 2.0, 4.0, float("inf")), (2, 8, 10, 10), 15.0, 10)
    assert h.quantile(0.5) == pytest.approx(1.5)  # rank 5: 3 of the 6 in (1, 2]
    assert h.quantile(0.1) == pytest.approx(0.5)  # rank 1: half of the first bucket from 0
    assert h.quantile(0.9) == pytest.approx(3.0)  # rank 9: half of (2, 4]
    assert h.quantile(1.0) == pytest.approx(4.0)
    assert h.mean == 1.5
    with pytest.raises(ConfigError):
        h.quantile(95)


def test_quantile_in_the_inf_bucket_is_the_largest_finite_bound():
    h = m.Histogram("x", (1.0, 2.0, float("inf")), (1, 1, 4), 20.0, 4)
    assert h.quantile(0.99) == 2.0


def test_empty_histogram_has_no_quantile_or_mean():
    h = m.Histogram("x", (1.0, float("inf")), (0, 0), 0.0, 0)
    assert h.quantile(0.5) is None and h.mean is None
    assert m.Snapshot.parse(hist_text("h", ["1", "+Inf"], [0, 0], 0)).histogram("h").quantile(
        0.95) is None


def test_histogram_delta():
    before = m.Histogram("x", (1.0, 2.0, float("inf")), (5, 5, 5), 2.0, 5)
    after = m.Histogram("x", (1.0, 2.0, float("inf")), (5, 9, 9), 8.0, 9)
    d = after.delta(before)
    assert d.cumulative_counts == (0, 4, 4) and d.count == 4 and d.sum == 6.0
    assert d.quantile(0.5) == pytest.approx(1.5)  # only the run's 4 observations, all in (1, 2]
    assert after.quantile(0.5) == pytest.approx(1.0 * 4.5 / 5)  # the whole history disagrees
    other = m.Histogram("x", (1.0, float("inf")), (1, 1), 1.0, 1)
    with pytest.raises(ConfigError):
        after.delta(other)
    assert before.delta(after) is before  # counts went down: a restart, keep the new history


# --- snapshot deltas --------------------------------------------------------------------

def test_snapshot_delta_subtracts_counters_keeps_gauges():
    before = m.Snapshot.parse(state_text(1, 0, 0.1, 2, [3, 3, 3, 3], 0.2), taken_at=10.0)
    after = m.Snapshot.parse(state_text(4, 5, 0.9, 7, [3, 5, 8, 9], 7.2), taken_at=12.5)
    d = after.delta(before)
    assert d.duration_s == 2.5 and before.duration_s is None
    assert (d.running, d.waiting, d.kv_cache_usage) == (4, 5, 0.9)  # gauges: the end state
    assert d.preemptions_total == 5
    h = d.histogram(m.TTFT)
    assert h.cumulative_counts == (0, 2, 5, 6) and h.count == 6 and h.sum == pytest.approx(7.0)
    assert h.quantile(0.5) == pytest.approx(0.5 + 0.5 * (3 - 2) / 3)


def test_snapshot_delta_after_a_restart_counts_from_zero():
    before = m.Snapshot.parse(state_text(0, 0, 0, 9, [3, 3, 3, 3], 0.2, created=100.0))
    after = m.Snapshot.parse(state_text(0, 0, 0, 9, [0, 1, 1, 1], 0.3, created=200.0))
    d = after.delta(before)
    assert d.preemptions_total == 9  # same value, but a new series: 9 since the restart
    assert d.histogram(m.TTFT).count == 1


# --- scraping -------------------------------------------------------------------------------

def test_metrics_url():
    assert m.metrics_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert m.metrics_url("http://h:8000") == "http://h:8000/metrics"
    assert m.metrics_url("http://h:8000/metrics") == "http://h:8000/metrics"


def test_scrape_of_a_dead_port_raises_server_not_running():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ServerNotRunning, match=r"python -m labs serve"):
        m.scrape(url, timeout_s=2)
    with pytest.raises(ServerNotRunning, match="/metrics"):
        m.scrape(url, timeout_s=2)


def _serving(text: str):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/metrics"
        assert "authorization" not in request.headers
        return httpx.Response(200, text=text)
    return handler


def test_scrape_with_an_injected_client():
    with httpx.Client(transport=httpx.MockTransport(_serving(IDLE))) as client:
        snap = m.scrape("http://vllm.test:8000/v1", client)
    assert snap.url == "http://vllm.test:8000/metrics" and snap.cache_config().num_gpu_blocks == 364


def test_scrape_of_something_else_is_a_server_error():
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(404)))
    with pytest.raises(ServerError, match="HTTP 404"):
        m.scrape("http://vllm.test", client)


# --- the sampler ------------------------------------------------------------------------

class FlakyServer:
    """Answers the idle scrape, with running = the call number, failing on calls in `fail`."""

    def __init__(self, fail: set[int] = frozenset()) -> None:
        self.calls = 0
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.calls += 1
            n = self.calls
        if n in self.fail:
            raise httpx.ConnectError("connection refused", request=request)
        series = 'vllm:num_requests_running{engine="0",model_name="SmolLM2-135M-Instruct"}'
        text = IDLE.replace(f"{series} 0.0", f"{series} {n}")
        return httpx.Response(200, text=text)


def test_sampler_collects_rows_and_survives_a_failing_scrape():
    server = FlakyServer(fail={2, 3})
    client = httpx.Client(transport=httpx.MockTransport(server))
    t0 = time.perf_counter()
    with m.MetricsSampler("http://vllm.test:8000", interval_s=0.02, t0=t0, client=client) as s:
        deadline = time.perf_counter() + 5
        while server.calls < 6 and time.perf_counter() < deadline:
            time.sleep(0.01)
    df = s.to_frame()
    assert list(df.columns) == list(m.SAMPLE_COLUMNS)
    assert len(df) >= 6
    failed = df[df["error"].notna()]
    assert len(failed) == 2 and failed["error"].str.contains("ConnectError").all()
    assert failed["running"].isna().all()
    good = df[df["error"].isna()]
    assert good["running"].iloc[0] == 1 and good["running"].iloc[-1] == server.calls
    assert (good["kv_cache_usage"] == 0).all() and (good["preemptions_total"] == 0).all()
    assert df["t_s"].is_monotonic_increasing and (df["t_s"] >= 0).all()
    rebased = s.to_frame(t0=t0 + 1.0)["t_s"]
    assert (rebased - (df["t_s"] - 1.0)).abs().max() < 1e-9
    assert s.first is not None and s.last is not None and s.last.running == server.calls
    assert s.delta().histogram(m.TTFT).count == 0  # nothing happened between first and last
    calls = server.calls
    s.stop()  # stopping twice is fine, and scrapes nothing more
    assert server.calls == calls and not client.is_closed  # an injected client stays open
    client.close()


def test_sampler_start_fails_fast_without_a_server():
    sampler = m.MetricsSampler(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(ServerNotRunning):
        sampler.start()
    sampler.stop()


def test_sampler_works_inside_a_running_event_loop():
    server = FlakyServer()

    async def run() -> pd.DataFrame:
        client = httpx.Client(transport=httpx.MockTransport(server))
        with m.MetricsSampler("http://vllm.test", interval_s=0.02, client=client) as s:
            await asyncio.sleep(0.15)  # the loop stays free; the thread samples meanwhile
        return s.to_frame()

    assert len(asyncio.run(run())) >= 3


def test_sampler_refuses_a_bad_interval():
    with pytest.raises(ConfigError):
        m.MetricsSampler("http://vllm.test", interval_s=0)


# --- joining to requests ------------------------------------------------------------------

def test_join_to_requests_uses_the_last_sample_before_each_send():
    samples = pd.DataFrame({
        "t_s": [0.0, 1.0, 2.0, 3.0],
        "perf_counter_s": [100.0, 101.0, 102.0, 103.0],
        "wall_time": [0.0] * 4,
        "running": [0, 4, None, 8],
        "waiting": [0, 0, None, 3],
        "kv_cache_usage": [0.0, 0.5, None, 0.9],
        "preemptions_total": [0, 0, None, 2],
        "admission_rejections_total": [0, 0, None, 0],
        "scrape_s": [0.01] * 4,
        "error": [None, None, "ConnectError: refused", None],
    })
    requests = pd.DataFrame({"index": [10, 11, 12, 13, 14],
                             "sent_s": [2.5, 0.5, -0.1, 3.2, None]},
                            index=["a", "b", "c", "d", "e"])
    out = m.join_to_requests(samples, requests)
    assert list(out.index) == ["a", "b", "c", "d", "e"]  # original order and index
    assert list(out["index"]) == [10, 11, 12, 13, 14]
    # 2.5 s falls after a failed scrape: the last good one (1.0 s) is used
    assert out.loc["a", "sample_t_s"] == 1.0 and out.loc["a", "running"] == 4
    assert out.loc["b", "running"] == 0
    assert pd.isna(out.loc["c", "running"])  # sent before the first sample
    assert out.loc["d", "kv_cache_usage"] == 0.9
    assert pd.isna(out.loc["e", "running"])  # never sent
    with pytest.raises(ConfigError, match="sent_s"):
        m.join_to_requests(samples, requests.rename(columns={"sent_s": "t"}))
    late = m.join_to_requests(samples, requests, tolerance_s=0.1)
    assert pd.isna(late.loc["d", "running"])  # 0.2 s after the last sample: too old
