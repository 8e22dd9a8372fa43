"""The model of the server: step costs, the scheduler replay, the fit, and the sizing built on
them. No server: every input is a number a real server gave (or a datasheet states)."""

from __future__ import annotations

import json
import math

import pytest

from labs import calibration, ceiling, predict, simulate, sizing
from labs.__main__ import main
from labs.errors import ConfigError
from labs.servermodel import LinearSteps, ServerLimits, flag_value, limits_from, scheduler_defaults
from labs.workload import Burst, Closed, Poisson

# Two CPUs this project has met: 2026-12-01's calibration of a 2-core AMD EPYC with AVX-512
# (this session), and the 2026-11-22 figures of a 2-core AVX2 EPYC (DESIGN.md: 26 tok/s alone,
# ~400 prompt tok/s).
FAST_CPU = LinearSteps(fixed_s=0.0177, per_seq_s=0.000905, per_context_token_s=1.2e-6,
                       prefill_tok_s=1900, request_overhead_s=0.0002, per_prefill_pair_s=4e-10)
SLOW_CPU = LinearSteps(fixed_s=0.036, per_seq_s=0.003, per_context_token_s=2.3e-6,
                       prefill_tok_s=400, request_overhead_s=0.02)
CPU_NAIVE = ServerLimits(num_blocks=364, block_size=128, max_model_len=8192,
                         max_num_seqs=128, max_num_batched_tokens=2048)
CPU_KV_PRESSURE = ServerLimits(num_blocks=40, block_size=128, max_model_len=2048,
                               max_num_seqs=128, max_num_batched_tokens=2048)
CPU_BOUNDED = ServerLimits(num_blocks=40, block_size=128, max_model_len=1280,
                           max_num_seqs=4, max_num_batched_tokens=2048)
# The article's card: /metrics said 2,426 blocks of 16; Qwen2.5-7B's max_model_len 32,768.
ARTICLE = ServerLimits(num_blocks=2426, block_size=16, max_model_len=32768,
                       max_num_seqs=256, max_num_batched_tokens=2048)
QWEN = "Qwen/Qwen2.5-7B-Instruct"


# --- step costs and limits ------------------------------------------------------------------

def test_linear_step_is_the_sum_of_its_parts():
    s = LinearSteps(0.01, 0.001, 1e-6, 1000, 0.0)
    assert s.step_s(8, 1000, 500) == pytest.approx(0.01 + 0.008 + 0.001 + 0.5)


def test_limits_come_from_flags_or_vllm_defaults():
    assert flag_value(["--max-num-seqs=4", "--x"], "max-num-seqs") == "4"
    assert flag_value(["--max-num-seqs", "8"], "max-num-seqs") == "8"
    assert scheduler_defaults("cpu") == (128, 2048)
    assert scheduler_defaults("gpu", 20) == (256, 2048)
    assert scheduler_defaults("gpu", 80, "NVIDIA H100 80GB HBM3") == (1024, 8192)
    assert scheduler_defaults("gpu", 80, "NVIDIA A100-SXM4-80GB") == (256, 2048)

    class Pool:
        num_gpu_blocks, block_size = 40, 128

    lim = limits_from(Pool(), 1280, ("--max-num-seqs=4",), "cpu")
    assert (lim.max_num_seqs, lim.max_num_batched_tokens, lim.pool_tokens) == (4, 2048, 5120)
    assert "from --max-num-seqs" in lim.source
    with pytest.raises(ConfigError):
        ServerLimits(0, 16, 100, 1, 1)


# --- the replay -----------------------------------------------------------------------------

def test_one_request_alone_costs_its_prefill_then_one_step_per_token():
    r = simulate.replay(FAST_CPU, CPU_NAIVE, Burst(1), 256, 10)
    req = r.requests[0]
    prefill = (FAST_CPU.fixed_s + 256 / FAST_CPU.prefill_tok_s
               + FAST_CPU.per_prefill_pair_s * 256 * 256 / 2)
    assert req.ttft_s == pytest.approx(prefill + FAST_CPU.request_overhead_s)
    assert len(r.steps) == 10  # one prefill step (it makes the first token), 9 decode steps
    decode = sum(s.duration_s for s in r.steps[1:])
    assert decode == pytest.approx(
        9 * (FAST_CPU.fixed_s + FAST_CPU.per_seq_s)
        + FAST_CPU.per_context_token_s * sum(256 + k for k in range(9)))


def test_long_prompts_are_prefilled_in_chunks_of_the_token_budget():
    r = simulate.replay(FAST_CPU, CPU_NAIVE, Burst(1), 5000, 2)
    assert [s.prefill_tokens for s in r.steps[:3]] == [2048, 2048, 904]


def test_max_num_seqs_caps_what_runs_and_the_rest_waits():
    r = simulate.replay(FAST_CPU, CPU_BOUNDED, Burst(12), 100, 16)
    s = r.summary()
    assert s["max_running"] == 4 and s["max_waiting"] == 8
    ttfts = sorted(q.ttft_s for q in r.requests)
    assert ttfts[4] > ttfts[3] + 10 * FAST_CPU.fixed_s  # the fifth waits for a whole answer


def test_the_kv_pool_caps_what_runs_the_articles_staircase():
    from types import SimpleNamespace

    burst = SimpleNamespace(users=16, prompt_tokens=1055, output_tokens=64)  # 3.3x the pool
    r = simulate.replay(SLOW_CPU, CPU_KV_PRESSURE, Burst(burst.users), burst.prompt_tokens,
                        burst.output_tokens)
    s = r.summary()
    fit = sizing.fit_at_once(CPU_KV_PRESSURE, burst.prompt_tokens, burst.output_tokens)
    assert fit == 4 and s["max_running"] == fit
    assert s["peak_blocks"] <= CPU_KV_PRESSURE.num_blocks
    assert all(q.end_s is not None for q in r.requests)  # nothing lost: everyone is served
    # Control: the same burst on a pool that holds it all runs every request at once.
    control = simulate.replay(SLOW_CPU, CPU_NAIVE, Burst(burst.users), burst.prompt_tokens,
                              burst.output_tokens).summary()
    assert control["max_running"] == burst.users
    assert s["ttft_s_max"] > control["ttft_s_max"]


def test_a_pool_too_small_for_growth_preempts_and_still_finishes():
    tight = ServerLimits(num_blocks=6, block_size=16, max_model_len=96, max_num_seqs=8,
                         max_num_batched_tokens=512)
    r = simulate.replay(FAST_CPU, tight, Burst(3), 16, 40)  # 3 x 56 tokens > 96 in the pool
    assert r.preemptions > 0
    assert all(q.end_s is not None for q in r.requests)
    assert r.summary()["peak_blocks"] <= tight.num_blocks


def test_a_closed_loop_at_one_user_is_back_to_back_requests():
    rows = simulate.predict_closed(FAST_CPU, CPU_NAIVE, [1], prompt_tokens=128, max_tokens=64)
    one = simulate.replay(FAST_CPU, CPU_NAIVE, Burst(1), 128, 64).requests[0]
    assert rows[0]["agg_tok_s"] == pytest.approx(64 / one.e2e_s, rel=1e-6)
    assert rows[0]["requests"] == 8  # labs bench's default: 4 x c, at least 8


def test_batching_multiplies_throughput_and_slows_each_user():
    rows = simulate.predict_closed(SLOW_CPU, CPU_NAIVE, [1, 16, 64], prompt_tokens=32,
                                   max_tokens=64)
    agg = [r["agg_tok_s"] for r in rows]
    per_user = [r["per_user_tok_s"] for r in rows]
    assert agg[0] < agg[1] < agg[2] and per_user[0] > per_user[1] > per_user[2]


def test_poisson_arrivals_are_the_load_generators_own_schedule():
    shape = Poisson(rate_rps=2.0, requests=20, seed=3)
    r = simulate.replay(FAST_CPU, CPU_NAIVE, shape, 64, 8)
    assert [q.arrival_s for q in sorted(r.requests, key=lambda q: q.index)] == \
        pytest.approx(list(shape.arrival_times_s()))


def test_a_request_that_cannot_fit_is_refused_before_replaying():
    with pytest.raises(ConfigError, match="max_model_len"):
        simulate.replay(FAST_CPU, CPU_BOUNDED, Closed(1, requests=1), 1250, 64)


# --- the fit --------------------------------------------------------------------------------

def _points(truth: LinearSteps) -> tuple[list, list]:
    steps = [calibration.StepPoint(b, ctx, truth.step_s(b, ctx, 0), f"b{b}")
             for b, ctx in ((1, 48), (8, 384), (32, 1536), (64, 3072), (4, 3136))]
    ttfts = [calibration.TTFTPoint(p, truth.request_overhead_s + truth.fixed_s
                                   + p / truth.prefill_tok_s
                                   + truth.per_prefill_pair_s * p * p / 2)
             for p in (64, 256, 512, 1024)]
    return steps, ttfts


@pytest.mark.parametrize("truth", [FAST_CPU, SLOW_CPU])
def test_the_fit_recovers_the_costs_it_was_made_from(truth):
    steps, ttfts = _points(truth)
    got = calibration.fit(steps, ttfts)
    assert got.fixed_s == pytest.approx(truth.fixed_s, rel=1e-6)
    assert got.per_seq_s == pytest.approx(truth.per_seq_s, rel=1e-6)
    assert got.per_context_token_s == pytest.approx(truth.per_context_token_s, rel=1e-6)
    assert got.prefill_tok_s == pytest.approx(truth.prefill_tok_s, rel=1e-6)
    assert got.request_overhead_s == pytest.approx(truth.request_overhead_s, abs=1e-9)
    assert got.per_prefill_pair_s == pytest.approx(truth.per_prefill_pair_s, abs=1e-15)


def test_ttft_alone_is_what_the_replay_says():
    cal = calibration.Calibration(steps=FAST_CPU, limits=CPU_NAIVE, model="m", hardware="h",
                                  vllm_version=None, backend="cpu", measured_at="", wall_s=0)
    for n in (64, 1024, 5000):  # 5,000 tokens: three chunks, each attending to the last
        replayed = simulate.replay(FAST_CPU, CPU_NAIVE, Burst(1), n, 2).requests[0].ttft_s
        assert cal.predict_ttft_alone_s(n) == pytest.approx(replayed, rel=1e-9)


def test_the_fit_never_returns_a_negative_cost():
    steps = [calibration.StepPoint(b, ctx, t, "") for b, ctx, t in
             ((1, 48, 0.020), (8, 384, 0.026), (32, 1536, 0.048), (4, 3000, 0.021))]
    got = calibration.fit(steps, _points(FAST_CPU)[1])
    assert got.per_context_token_s == 0 and got.per_seq_s > 0 and got.fixed_s > 0
    with pytest.raises(ConfigError, match="3 or more"):
        calibration.fit(steps[:2], _points(FAST_CPU)[1])


def test_calibration_saves_and_loads_with_where_it_was_measured(tmp_path):
    steps, ttfts = _points(FAST_CPU)
    cal = calibration.Calibration(
        steps=calibration.fit(steps, ttfts), limits=CPU_NAIVE, model="m", hardware="h",
        vllm_version="0.32.0", backend="cpu", measured_at="2026-12-01T06:41:44+0000",
        wall_s=14.0, step_points=tuple(steps), ttft_points=tuple(ttfts), cpu_signature="x")
    path = cal.save(tmp_path / "c.json")
    again = calibration.load(path)
    assert again == cal
    doc = json.loads(path.read_text())
    assert doc["steps"]["kind"] == "measured" and max(
        abs(r["error_pct"]) for r in doc["fit_errors"]) < 1e-6
    doc["schema_version"] = 0
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="calibrate"):
        calibration.load(path)
    with pytest.raises(ConfigError, match="python -m labs calibrate"):
        calibration.load(tmp_path / "none.json")


def test_calibration_sizes_fit_every_profile():
    for lim in (CPU_NAIVE, CPU_KV_PRESSURE, CPU_BOUNDED, ARTICLE):
        sizes = calibration.batch_sizes(lim)
        assert len(sizes) >= 3 and max(sizes) <= lim.max_num_seqs
        b, p = calibration.long_context(lim)
        assert b * (p + calibration.DECODE_TOKENS) <= lim.pool_tokens
        assert p + calibration.DECODE_TOKENS <= lim.max_model_len
        assert max(calibration.prompt_lengths(lim)) <= lim.max_num_batched_tokens


# --- datasheets -----------------------------------------------------------------------------

def test_the_article_card_from_its_datasheet():
    steps = predict.datasheet_steps("rtx-4000-ada", QWEN)
    assert steps.step_bytes == pytest.approx(14.14e9, rel=0.002)
    one = steps.step_s(1, 0, 0)
    assert 1 / one == pytest.approx(1 / (14.14e9 / 360e9 + predict.GPU_STEP_OVERHEAD_S),
                                    rel=0.01)
    # The reserve is chosen so that 20 GB less the weights gives the article's pool.
    lim = predict.datasheet_limits("rtx-4000-ada", QWEN)
    assert lim.num_blocks == pytest.approx(2426, rel=0.01) and lim.block_size == 16
    # Decode is memory-bound at 64 users too: the step barely grows from 1 to 64.
    assert steps.step_s(64, 64 * 300, 0) / one < 1.3


def test_a_model_too_big_for_the_card_is_a_clear_error():
    with pytest.raises(ConfigError, match="no room"):
        predict.datasheet_limits("l4", QWEN, dtype="float32")


# --- sizing: the same code on four very different servers ------------------------------------

H200 = predict.datasheet_limits("h200", QWEN)


def test_the_h200_pool_is_fifty_times_the_articles():
    assert H200.pool_tokens > 1.5e6  # ~2 M tokens of Qwen2.5-7B KV


@pytest.mark.parametrize("cost", [FAST_CPU, SLOW_CPU,
                                  predict.datasheet_steps("h200", QWEN)],
                         ids=["fast-cpu", "slow-cpu", "h200"])
def test_the_overload_is_a_multiple_of_what_the_uncapped_engine_serves(cost):
    limits = H200 if not isinstance(cost, LinearSteps) else CPU_KV_PRESSURE
    capacity = simulate.capacity_rps(cost, limits, 128, 32)
    o = sizing.overload(capacity, sizing.fit_at_once(limits, 128, 32))
    assert o.rate_rps >= 2 * o.capacity_rps * 0.999
    # Offered at that rate, the backlog grows: the uncapped engine's last request waits
    # longer than its first by far more than a request takes alone.
    assert o.requests >= 3 * sizing.fit_at_once(limits, 128, 32)
    r = simulate.replay(cost, limits, Poisson(o.rate_rps, requests=o.requests, seed=1),
                        128, 32)
    ttft = [q.ttft_s for q in sorted(r.requests, key=lambda q: q.index)]
    assert ttft[-1] > 5 * ttft[0]
    with pytest.raises(ConfigError):
        sizing.overload(capacity, 4, multiple=1.2)


def test_a_faster_machine_gets_a_heavier_overload():
    fast, slow = (sizing.overload(simulate.capacity_rps(cost, CPU_KV_PRESSURE, 128, 32), 20)
                  for cost in (FAST_CPU, SLOW_CPU))
    assert fast.rate_rps > 2 * slow.rate_rps


@pytest.mark.parametrize("cost,limits", [(FAST_CPU, CPU_NAIVE), (SLOW_CPU, CPU_NAIVE),
                                         (predict.datasheet_steps("h200", QWEN), H200)])
def test_concurrency_levels_reach_past_the_predicted_knee(cost, limits):
    levels, knee = sizing.concurrency_levels(cost, limits, prompt_tokens=32, max_tokens=64)
    assert knee is not None and max(levels) >= 2 * knee
    assert levels[0] == 1 and max(levels) <= 2 * limits.max_num_seqs


# --- the CLI --------------------------------------------------------------------------------

def test_predict_json_rows_use_the_columns_of_labs_bench(capsys):
    assert main(["predict", "--gpu", "rtx-4000-ada", "--model", QWEN, "--concurrency",
                 "1,32,64", "--num-gpu-blocks", "2426", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = doc["rows"]
    assert [r["concurrency"] for r in rows] == [1, 32, 64]
    assert {"concurrency", "agg_tok_s", "per_user_tok_s", "ttft_s_p50"} <= set(rows[0])
    assert rows[2]["agg_tok_s"] > 20 * rows[0]["agg_tok_s"]  # memory-bound: near-linear
    assert doc["limits"]["num_blocks"] == 2426


def test_predict_without_a_calibration_says_how_to_make_one(tmp_path, capsys):
    assert main(["predict", "--calibration", str(tmp_path / "none.json")]) == 1
    assert "python -m labs calibrate" in capsys.readouterr().err
    assert main(["predict", "--gpu", "h200"]) == 1
    assert "--gpu and --model go together" in capsys.readouterr().err


def test_model_size_finds_a_model_in_the_hugging_face_cache(tmp_path, monkeypatch):
    snap = tmp_path / "models--Qwen--Qwen2.5-7B-Instruct" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(ceiling.KNOWN_MODELS[QWEN]))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert ceiling.hf_cache_folder(QWEN) == snap
    size = ceiling.model_size("Qwen/Qwen2.5-7B-Instruct", models_dir=tmp_path / "none")
    assert size.source == "config.json" and math.isclose(size.step_bytes, 14.14e9, rel_tol=2e-3)
    assert ceiling.hf_cache_folder("Org/Missing") is None


def test_gpus_are_read_once_for_the_hardware_line_and_the_limits(monkeypatch):
    import subprocess

    from labs import loadgen, settings

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "NVIDIA H100 80GB HBM3, 81559\n", "")

    monkeypatch.setattr(settings, "gpu_present", lambda: True)
    monkeypatch.setattr(settings.subprocess, "run", fake_run)
    settings.gpus.cache_clear()
    loadgen.describe_hardware.cache_clear()
    try:
        assert settings.gpus() == (("NVIDIA H100 80GB HBM3", 81559.0),)
        assert loadgen.describe_hardware().endswith("; GPU: NVIDIA H100 80GB HBM3, 81559 MiB")
        name, mib = settings.gpus()[0]
        assert scheduler_defaults("gpu", mib / 1024, name) == (1024, 8192)
        assert len([c for c in calls if c[0] == "nvidia-smi"]) == 1, calls
    finally:
        settings.gpus.cache_clear()
        loadgen.describe_hardware.cache_clear()


def test_the_rate_knee_is_where_service_falls_behind_arrivals() -> None:
    import pandas as pd

    from labs.experiments import events_per_s, rate_knee

    assert events_per_s([0.0, 1.0, 2.0, 3.0]) == 1.0
    assert events_per_s([5.0]) is None
    table = pd.DataFrame({"offered_rps": [2.0, 4.0, 8.0],
                          "served_over_arrived": [1.01, 0.95, 0.6]})
    assert rate_knee(table) == 8.0
    assert rate_knee(table.iloc[:2]) is None  # kept up with every rate offered


def test_replayed_arrivals_past_capacity_are_served_at_capacity() -> None:
    from labs.experiments import predicted_rate_sweep

    class Cal:  # what predicted_rate_sweep reads of a Calibration
        steps, limits = FAST_CPU, CPU_NAIVE

    table = predicted_rate_sweep(Cal, [2.0, 200.0], requests=2 * CPU_NAIVE.max_num_seqs,
                                 prompt_tokens=32, max_tokens=64)
    below, above = table.iloc[0], table.iloc[1]
    assert below.served_over_arrived > 0.9
    assert above.served_over_arrived < 0.9 and above.ttft_s_p95 > 5 * below.ttft_s_p95
