"""labs.simulate, the scheduler replay: chunked prefill, max_num_seqs and the KV pool as caps,
preemption, closed loops and Poisson arrivals. No server: the step costs are numbers a real
server gave."""

from __future__ import annotations

import pytest
from cpu_calibrations import CPU_BOUNDED, CPU_KV_PRESSURE, CPU_NAIVE, FAST_CPU, SLOW_CPU

from labs.errors import ConfigError
from labs.model import simulate, sizing
from labs.model.steps import ServerLimits
from labs.workload import Burst, Closed, Poisson


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


def test_a_gateway_that_admits_everyone_is_the_engine_alone() -> None:
    """One step loop (`simulate.take_step`) under both replays: with N above every request and
    nothing refused, 05's gateway replay is the plain replay, request for request."""
    from labs.course import admission_runs
    from labs.workload import Poisson

    shape = Poisson(4.0, duration_s=10, seed=2)
    alone = simulate.replay(FAST_CPU, CPU_BOUNDED, shape, 128, 32)
    gateway = admission_runs.predict_gateway(FAST_CPU, CPU_BOUNDED, shape, 128, 32,
                                             max_in_flight=10_000, max_queue=0)
    assert gateway.offered == len(alone.requests) > 10
    assert gateway.ttft_s == tuple(r.ttft_s for r in alone.requests)
    assert gateway.e2e_s == tuple(r.e2e_s for r in alone.requests)
    narrow = admission_runs.predict_gateway(FAST_CPU, CPU_BOUNDED, shape, 128, 32,
                                            max_in_flight=1, max_queue=0)
    assert len(narrow.ttft_s) < gateway.offered  # and the gateway does decide: N=1 sheds
