"""labs.sizing: the same code sizes the overload and the concurrency levels on four very
different servers."""

from __future__ import annotations

import pytest
from cpu_calibrations import CPU_KV_PRESSURE, CPU_NAIVE, FAST_CPU, SLOW_CPU

from labs.errors import ConfigError
from labs.model import predict, simulate, sizing
from labs.model.steps import LinearSteps
from labs.workload import Poisson

QWEN = "Qwen/Qwen2.5-7B-Instruct"
H200 = predict.datasheet_limits("h200", QWEN)


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
