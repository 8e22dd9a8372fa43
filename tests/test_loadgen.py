"""The load generator: SSE parsing, error records, statistics and shapes, without a server.

Requests go to `httpx.MockTransport` handlers that stream hand-made bytes, so each test
controls exactly how the server misbehaves; one test uses a real refused port on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable

import httpx
import numpy as np
import pytest

from labs.errors import ConfigError
from labs.load import loadgen
from labs.load.loadgen import SSEDecoder, parse_levels, parse_retry_after, run, run_sync
from labs.results.records import (
    SLO,
    RequestRecord,
    load,
    load_sweep,
    percentile,
    save_sweep,
    summarize,
)
from labs.serving.server import free_port
from labs.workload import Burst, Closed, Poisson, PromptFactory, Workload, shape_from_dict

BASE = "http://stub"


# --------------------------------------------------------------------------------------------
# Fakes


class ChunkStream(httpx.AsyncByteStream):
    """A response body delivered in exactly these pieces (as if from separate reads)."""

    def __init__(self, pieces: Iterable[bytes]) -> None:
        self.pieces = list(pieces)

    async def __aiter__(self):
        for piece in self.pieces:
            yield piece


def chat_chunk(text: str | None = None, finish: str | None = None) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text} if text is not None else {},
                         "finish_reason": finish}]}


def usage_chunk(prompt: int, completion: int) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def sse(*events: dict | str) -> bytes:
    out = []
    for e in events:
        payload = e if isinstance(e, str) else json.dumps(e, ensure_ascii=False)
        out.append(f"data: {payload}\n\n")
    return "".join(out).encode("utf-8")


def answer(texts: list[str], completion: int | None = None, done: bool = True) -> bytes:
    events: list[dict | str] = [chat_chunk(t) for t in texts]
    events.append(chat_chunk(finish="length"))
    events.append(usage_chunk(10, len(texts) if completion is None else completion))
    if done:
        events.append("[DONE]")
    return sse(*events)


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i:i + n] for i in range(0, len(data), n)]


def mock_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    def route(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/version":
            return httpx.Response(200, json={"version": "test"})
        return handler(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(route))


def streaming(body: bytes | list[bytes], status: int = 200, headers: dict | None = None):
    pieces = body if isinstance(body, list) else [body]
    return lambda request: httpx.Response(status, headers={
        "content-type": "text/event-stream", **(headers or {})}, stream=ChunkStream(pieces))


def one(handler, workload: Workload | None = None, shape=None, **kw):
    """Run a small load against a mock and return the result."""
    async def go():
        async with mock_client(handler) as client:
            return await run(shape or Burst(1), workload or Workload(max_tokens=4),
                             base_url=BASE, model="m", api_key="k", client=client,
                             progress=False, **kw)
    return asyncio.run(go())


def rec(**kw) -> RequestRecord:
    base = dict(index=0, scheduled_s=0.0, sent_s=0.0, end_s=1.0,
                token_times_s=(0.2, 0.4), completion_tokens=5)
    base.update(kw)
    return RequestRecord(**base)


# --------------------------------------------------------------------------------------------
# SSE parsing


def test_chunks_split_mid_line_and_mid_utf8_character() -> None:
    texts = ["héllo", " wörld", " 日本語", " 🙂"]
    data = answer(texts)
    for size in (1, 2, 3, 7, 50):
        decoder = SSEDecoder()
        events = [e for piece in split_every(data, size) for e in decoder.feed(piece)]
        events += decoder.finish()
        assert events[-1] == "[DONE]"
        got = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:len(texts)]]
        assert got == texts, size


def test_unicode_line_separators_inside_content_do_not_split_events() -> None:
    texts = ["a\u2028b", "c\u0085d", "e\u2029f\x1cg\x0bh\x0ci", "j\rk"]
    data = answer(texts)
    assert "\u2028".encode() in data  # written raw, as vLLM does, not as \\u2028
    result = one(streaming(split_every(data, 5)))
    (r,) = result.records
    assert r.ok, r.error
    assert len(r.token_times_s) == len(texts)
    assert r.completion_tokens == len(texts)


def test_crlf_comments_and_multiline_data() -> None:
    decoder = SSEDecoder()
    events = decoder.feed(b": keep-alive\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\ndata:[DONE]\n\n")
    assert events == ['{"a":\n1}', "[DONE]"]


def test_missing_done_is_truncated_and_keeps_tokens() -> None:
    result = one(streaming(answer(["a", "b", "c"], done=False)))
    (r,) = result.records
    assert r.error_kind == "truncated"
    assert len(r.token_times_s) == 3 and r.ttft_s is not None
    assert result.summary()["errors"] == {"truncated": 1}


def test_usage_counts_tokens_not_chunks() -> None:
    # Three chunks carrying seven tokens (as a speculative or batched stream does).
    (r,) = one(streaming(answer(["ab", "cde", "fg"], completion=7))).records
    assert r.ok
    assert r.completion_tokens == 7 and r.prompt_tokens == 10
    assert len(r.token_times_s) == 3


def test_no_usage_in_stream_is_a_protocol_error() -> None:
    data = sse(chat_chunk("a"), chat_chunk(finish="stop"), "[DONE]")
    (r,) = one(streaming(data)).records
    assert r.error_kind == "protocol" and "usage" in r.error


def test_completions_api_reads_text() -> None:
    chunk = lambda t: {"object": "text_completion", "choices": [{"index": 0, "text": t,
                                                                  "finish_reason": None}]}
    data = sse(chunk("x"), chunk(""), chunk("y"), usage_chunk(3, 2), "[DONE]")
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content)))
        return streaming(data)(request)

    (r,) = one(handler, Workload(api="completions", max_tokens=2)).records
    assert r.ok and len(r.token_times_s) == 2 and r.completion_tokens == 2
    path, body = seen[0]
    assert path == "/v1/completions" and "prompt" in body
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["temperature"] == 0.0 and body["max_tokens"] == 2


def test_a_salted_workload_gives_every_request_a_cache_of_its_own() -> None:
    """06's control: a `cache_salt` per request, different every time, and none by default."""
    salted = Workload(shared_prefix_tokens=100, salt_each_request=True)
    salts = {salted.body("m", "p", 4)["cache_salt"] for _ in range(50)}
    assert len(salts) == 50 and all(isinstance(s, str) and s for s in salts)
    assert "cache_salt" not in Workload().body("m", "p", 4)
    assert "salted" in salted.label and "salted" not in Workload().label
    assert Workload.from_dict(salted.to_dict()) == salted  # a result file says it was salted


def test_error_event_after_200_is_recorded() -> None:
    data = sse(chat_chunk("a"), {"error": {"message": "engine dead", "code": 500}}, "[DONE]")
    (r,) = one(streaming(data)).records
    assert r.error_kind == "http_5xx" and "engine dead" in r.error


def test_bad_json_is_protocol_error() -> None:
    (r,) = one(streaming(b"data: {not json\n\n")).records
    assert r.error_kind == "protocol"


# --------------------------------------------------------------------------------------------
# Errors become records


def test_503_with_retry_after_is_shed() -> None:
    handler = lambda request: httpx.Response(503, headers={"Retry-After": "7"},
                                             json={"error": "busy"})
    result = one(handler, shape=Burst(3))
    assert all(r.error_kind == "shed" and r.retry_after_s == 7.0 and r.status == 503
               for r in result.records)
    s = result.summary()
    assert s["shed"] == 3 and s["ok"] == 0 and s["errors"] == {"shed": 3}
    assert s["time_to_shed_s_p50"] is not None and s["time_to_shed_s_max"] is not None
    assert s["agg_tok_s"] is None and s["ttft_s_p50"] is None


def test_429_is_shed_and_other_statuses_are_classified() -> None:
    for status, kind in ((429, "shed"), (400, "http_4xx"), (401, "http_4xx"), (500, "http_5xx")):
        (r,) = one(lambda request, s=status: httpx.Response(s, text="no")).records
        assert r.error_kind == kind and r.status == status and r.retry_after_s is None


def test_retry_after_parsing() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past


def test_connection_refused_is_recorded_not_raised() -> None:
    result = run_sync(Closed(2, requests=4), Workload(max_tokens=4),
                      base_url=f"http://127.0.0.1:{free_port()}", model="m", progress=False)
    assert [r.error_kind for r in result.records] == ["connection"] * 4
    s = result.summary()
    assert s["ok"] == 0 and s["errors"] == {"connection": 4}
    assert result.metadata["vllm_version"] is None


def test_connect_error_from_transport_is_recorded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    (r,) = one(handler).records
    assert r.error_kind == "connection" and "refused" in r.error


def test_timeout_is_recorded() -> None:
    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield sse(chat_chunk("a"))
            await asyncio.sleep(5)
            yield b""

    handler = lambda request: httpx.Response(200, stream=Slow())
    (r,) = one(handler, timeout_s=0.2).records
    assert r.error_kind == "timeout" and len(r.token_times_s) == 1


# --------------------------------------------------------------------------------------------
# Derived figures


def test_tpot_excludes_the_first_token() -> None:
    r = rec(sent_s=1.0, token_times_s=(1.5, 1.6), end_s=2.5, completion_tokens=11)
    assert r.ttft_s == pytest.approx(0.5)
    assert r.e2e_s == pytest.approx(1.5)
    assert r.tpot_s == pytest.approx(1.0 / 10)
    assert rec(completion_tokens=1).tpot_s is None
    assert rec(completion_tokens=None).tpot_s is None
    assert rec(token_times_s=()).ttft_s is None


def test_percentiles_on_known_data_and_none_on_empty() -> None:
    data = list(range(1, 101))
    assert percentile(data, 50) == pytest.approx(50.5)
    assert percentile(data, 95) == pytest.approx(95.05)
    assert percentile(data, 99) == pytest.approx(99.01)
    assert percentile([], 50) is None
    s = summarize([])
    assert s["requests"] == 0 and s["ttft_s_p50"] is None and s["duration_s"] is None


def test_summary_from_hand_made_records() -> None:
    records = [
        rec(index=0, sent_s=0.0, token_times_s=(0.1, 0.2, 0.3), end_s=1.0, completion_tokens=10),
        rec(index=1, sent_s=0.0, token_times_s=(0.5, 0.7), end_s=2.0, completion_tokens=30),
        rec(index=2, sent_s=1.0, end_s=1.1, token_times_s=(), completion_tokens=None,
            error_kind="shed", status=503, retry_after_s=1.0),
    ]
    s = summarize(records)
    assert s["requests"] == 3 and s["ok"] == 2 and s["errors"] == {"shed": 1}
    assert s["duration_s"] == pytest.approx(2.0)
    assert s["agg_tok_s"] == pytest.approx(40 / 2.0)
    assert s["per_user_tok_s"] == pytest.approx((10 / 1.0 + 30 / 2.0) / 2)
    assert s["ttft_s_p50"] == pytest.approx(0.3)
    assert s["itl_s_p50"] == pytest.approx(0.1)  # gaps 0.1, 0.1, 0.2
    assert s["shed"] == 1 and s["time_to_shed_s_max"] == pytest.approx(0.1)
    assert s["goodput_rps"] is None


def test_goodput_counts_requests_meeting_every_slo() -> None:
    records = [
        rec(index=0, token_times_s=(0.1,), end_s=1.0, completion_tokens=10),   # tpot 0.1
        rec(index=1, token_times_s=(0.5,), end_s=1.0, completion_tokens=10),   # ttft too slow
        rec(index=2, token_times_s=(0.1,), end_s=4.0, completion_tokens=10),   # tpot too slow
        rec(index=3, token_times_s=(0.1,), end_s=0.2, completion_tokens=1),    # tpot None: ok
        rec(index=4, token_times_s=(), end_s=0.1, error_kind="connection"),   # failed
    ]
    s = summarize(records, SLO(ttft_s=0.2, tpot_s=0.2))
    assert s["duration_s"] == pytest.approx(4.0)
    assert s["goodput_rps"] == pytest.approx(2 / 4.0)
    assert summarize(records, SLO(e2e_s=1.5))["goodput_rps"] == pytest.approx(3 / 4.0)
    with pytest.raises(ConfigError):
        SLO(ttft_s=-1)


# --------------------------------------------------------------------------------------------
# Shapes and workloads


def test_poisson_arrivals_are_seeded_and_have_the_right_rate() -> None:
    a = Poisson(20.0, requests=20_000, seed=3).arrival_times_s()
    b = Poisson(20.0, requests=20_000, seed=3).arrival_times_s()
    c = Poisson(20.0, requests=20_000, seed=4).arrival_times_s()
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a[0] == 0.0 and np.all(np.diff(a) >= 0) and len(a) == 20_000
    assert np.diff(a).mean() == pytest.approx(1 / 20.0, rel=0.03)
    d = Poisson(50.0, duration_s=10.0).arrival_times_s()
    assert d.max() < 10.0 and abs(len(d) - 500) < 100


@pytest.mark.parametrize("make", [
    lambda: Closed(0, requests=4), lambda: Closed(-2, requests=4), lambda: Closed(4),
    lambda: Closed(4, requests=0), lambda: Burst(0), lambda: Poisson(0, requests=4),
    lambda: Poisson(-1.0, requests=4), lambda: Poisson(1.0), lambda: Poisson(float("nan"), 3),
    lambda: Poisson(1.0, requests=4, max_concurrency=0), lambda: Closed(2.5, requests=4),
    lambda: Workload(api="embeddings"), lambda: Workload(max_tokens=0),
    lambda: Workload(max_tokens=()), lambda: Workload(prompt_tokens=-5),
])
def test_bad_shapes_and_workloads_are_refused(make) -> None:
    with pytest.raises(ConfigError):
        make()


def test_cli_levels() -> None:
    assert parse_levels("1,8, 32") == [1, 8, 32]
    for bad in ("0,4", "-1", "a", "1,,2"):
        with pytest.raises(ConfigError):
            parse_levels(bad)


def test_bench_and_its_prediction_send_the_same_default_requests() -> None:
    from cpu_calibrations import AVX512, NAIVE

    from labs.model.simulate import predict_closed
    from labs.workload import bench_requests

    assert [bench_requests(c) for c in (1, 2, 4, 32)] == [8, 8, 16, 128]
    rows = predict_closed(AVX512, NAIVE, [1, 4], prompt_tokens=16, max_tokens=4)
    assert [r["requests"] for r in rows] == [bench_requests(1), bench_requests(4)]


def test_shapes_round_trip_and_read_well() -> None:
    for shape in (Burst(8), Closed(4, requests=16), Poisson(2.5, duration_s=30,
                                                             max_concurrency=8)):
        assert shape_from_dict(shape.to_dict()) == shape
    assert Closed(4, requests=16).label == "closed c=4"
    assert Burst(32).label == "burst 32"
    assert Poisson(2.5, requests=3).label == "poisson 2.5 rps"


def test_mixed_output_lengths_are_seeded() -> None:
    w = Workload(max_tokens=[16, 64, 256], seed=1)
    take = lambda it: [next(it) for _ in range(50)]
    a, b = take(w.output_lengths()), take(w.output_lengths())
    assert a == b and set(a) == {16, 64, 256}
    assert take(Workload(max_tokens=32).output_lengths()) == [32] * 50


def test_prompts_hit_the_token_target_and_are_unique() -> None:
    async def count(api: str, text: str) -> int:  # a tokenizer with 1.5 tokens a word + 20
        return 20 + round(len(text.split()) * 1.5)

    async def go() -> list[str]:
        factory = PromptFactory(Workload(prompt_tokens=300, prefix_seed=5), count)
        await factory.prepare()
        stream = factory.prompts()
        return [stream.next() for _ in range(200)]

    prompts = asyncio.run(go())
    assert len(set(prompts)) == 200
    counts = [asyncio.run(count("chat", p)) for p in prompts[:5]]
    assert all(abs(c - 300) <= 2 for c in counts), counts
    assert asyncio.run(go()) == prompts  # prefix_seed makes them reproducible


# --------------------------------------------------------------------------------------------
# Whole runs


def test_closed_loop_run_sends_each_prompt_once_and_summarizes() -> None:
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        assert request.headers["authorization"] == "Bearer k"
        return streaming(split_every(answer(["x"] * 8), 64))(request)

    result = one(handler, Workload(max_tokens=8), shape=Closed(3, requests=10), warmup=2)
    assert len(bodies) == 12  # 2 warm-up + 10 measured
    # The random prefix opens the system message, so no two requests share a first KV block
    # (a template's default system prompt would otherwise be the same for all of them).
    assert all(b["messages"][0]["role"] == "system" for b in bodies)
    assert len({b["messages"][0]["content"] for b in bodies}) == 12
    assert [r.index for r in result.records] == list(range(10))
    assert result.metadata["warmup"]["requests"] == 2
    assert result.metadata["vllm_version"] == "test"
    s = result.summary()
    assert s["ok"] == 10 and s["output_tokens"] == 80 and s["tpot_s_p50"] is not None
    assert s["concurrency"] == 3
    frame = result.to_frame()
    assert len(frame) == 10 and frame["completion_tokens"].sum() == 80


def test_poisson_run_records_scheduled_and_sent_times() -> None:
    result = one(streaming(answer(["x"])), shape=Poisson(200.0, requests=20, seed=1,
                                                         max_concurrency=4))
    sched = [r.scheduled_s for r in result.records]
    assert sched == pytest.approx(Poisson(200.0, requests=20, seed=1).arrival_times_s().tolist())
    assert all(r.lag_s >= 0 for r in result.records)
    assert result.summary()["send_lag_s_max"] is not None


def test_run_sync_inside_a_running_loop() -> None:
    async def notebook_cell():  # as in Jupyter: a loop is already running
        return run_sync(Burst(2), Workload(max_tokens=1), base_url=f"http://127.0.0.1:{free_port()}",
                        model="m", progress=False, metadata={"note": "jupyter"})

    # No server there: every request fails, but the call itself completes.
    result = asyncio.run(notebook_cell())
    assert len(result.records) == 2 and result.metadata["note"] == "jupyter"


def test_save_and_load_round_trip(tmp_path) -> None:
    result = one(streaming(answer(["a", "b", "c"])), shape=Closed(2, requests=4))
    path = result.save(tmp_path / "run.json", slo=SLO(ttft_s=1.0))
    assert (tmp_path / "run.csv").exists()
    again = load(path)
    assert again.records == result.records and again.shape == result.shape
    assert again.workload == result.workload
    assert again.summary() == result.summary()
    assert json.loads(path.read_text())["summary"]["goodput_rps"] is not None
    sweep_path = save_sweep([result, result], tmp_path / "sweep.json")
    assert [r.records for r in load_sweep(sweep_path)] == [result.records] * 2
    with pytest.raises(ConfigError):
        load(sweep_path)


def test_sweep_frame_has_one_row_per_shape() -> None:
    async def go():
        async with mock_client(streaming(answer(["a", "b"]))) as client:
            return await loadgen.sweep_async([Closed(c, requests=c * 2) for c in (1, 2, 4)],
                                             Workload(max_tokens=2), base_url=BASE, model="m",
                                             client=client, progress=False)

    from labs.results.records import sweep_frame
    table = sweep_frame(asyncio.run(go()))
    assert table["concurrency"].tolist() == [1, 2, 4]
    assert table["ok"].tolist() == [2, 4, 8]
    assert table["agg_tok_s"].notna().all()


def test_closed_loop_stops_starting_requests_after_duration() -> None:
    class Slowish(httpx.AsyncByteStream):
        async def __aiter__(self):
            await asyncio.sleep(0.03)
            yield answer(["a", "b"])

    result = one(lambda request: httpx.Response(200, stream=Slowish()),
                 shape=Closed(2, duration_s=0.2))
    assert 4 <= len(result.records) <= 16
    assert all(r.ok for r in result.records)
    # Every start was decided before the limit (the send itself may land just after it).
    assert max(r.scheduled_s for r in result.records) < 0.2


# --------------------------------------------------------------------------------------------
# The live server (started by conftest.py for `make test`; LABS_BASE_URL reuses a running one)


@pytest.mark.server
def test_small_real_run(live) -> None:
    result = run_sync(Closed(2, requests=4), Workload(prompt_tokens=64, max_tokens=8),
                      conn=live, progress=False)
    s = result.summary()
    assert s["ok"] == 4, [r.error for r in result.records]
    assert all(r.completion_tokens == 8 for r in result.records)  # ignore_eos
    assert all(abs(r.prompt_tokens - 64) <= 3 for r in result.records)
    assert s["ttft_s_p50"] > 0 and s["tpot_s_p50"] > 0
    assert result.metadata["vllm_version"] and result.metadata["model"] == live.model
