"""The GPU path, proven without a GPU (issue 19, item 6).

For the article's card (RTX 4000 Ada), an L40S and an H200 serving Qwen2.5-7B, this feeds the
notebooks' own sizing with the datasheet step and the pool vLLM would pick
(`labs.model.predict.datasheet_steps` / `datasheet_limits`), replays what the notebook would send,
and hands the replayed numbers to the notebook's lesson checks: 04 (`labs.lessons.kvcache`,
its control included), 03 (`labs.lessons.batching`) and 07 (`labs.lessons.capacity`).
A lesson that would not hold on one of these cards fails here, on a CPU, before anyone rents the
card.

The replay is the model, not a measurement: these tests show that the notebooks' sizing and
their asserts agree with each other on a GPU, not what a GPU measures.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

import pandas as pd
import pytest

from labs.course import experiments
from labs.course.lessons import batching, capacity, kvcache
from labs.model import article, cost, kvwait, predict, simulate, sizing
from labs.model.simulate import Replay
from labs.model.steps import RooflineSteps, ServerLimits, with_flags

GPUS = ("rtx-4000-ada", "l40s", "h200")
CARD_PROMPT, CARD_OUTPUT = 32, 64  # what 03 and 07 send on any backend (32-token prompts, 64 out)


class Card(NamedTuple):
    steps: RooflineSteps
    limits: ServerLimits


class Burst04(NamedTuple):
    burst: kvwait.PoolBurst
    wait: kvwait.WaitSplit
    small: Replay
    large: Replay


@cache
def card(gpu: str) -> Card:
    return Card(predict.datasheet_steps(gpu, article.MODEL),
                predict.datasheet_limits(gpu, article.MODEL))


@cache
def burst_04(gpu: str) -> Burst04:
    """04's sizing under `make test` (ci=True), replayed on both pools as 04 does."""
    steps, limits = card(gpu)
    burst = kvwait.plan(steps, limits, "gpu", ci=True)
    wait, small, large = kvwait.split(steps, burst.pressure, limits, burst.users,
                                      burst.prompt_tokens, burst.output_tokens)
    return Burst04(burst, wait, small, large)


@cache
def sweep(gpu: str) -> tuple[pd.DataFrame, list[int], int | None]:
    """03's and 07's predicted closed-loop sweep on the card: the levels the notebooks choose
    (`labs.sizing.concurrency_levels`), predicted at each."""
    steps, limits = card(gpu)
    levels, knee = sizing.concurrency_levels(steps, limits, prompt_tokens=CARD_PROMPT,
                                             max_tokens=CARD_OUTPUT)
    table = predict.prediction_table(steps, limits, levels, prompt_tokens=CARD_PROMPT,
                                     max_tokens=CARD_OUTPUT)
    return table, levels, knee


def peak_kv(run: Replay, limits: ServerLimits) -> float:
    return max(s.blocks_used for s in run.steps) / limits.num_blocks


def answered(run: Replay) -> int:
    return sum(r.end_s is not None for r in run.requests)


# 04 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu", GPUS)
def test_04_shrinks_the_pressure_pool_never_the_prompts(gpu: str) -> None:
    limits = card(gpu).limits
    burst = burst_04(gpu).burst
    small, total = burst.pressure, burst.prompt_tokens + burst.output_tokens
    # the control is the card's whole pool, the identical burst; the pressure pool is smaller
    assert burst.control == limits and not burst.pinned
    assert burst.users >= article.KV_USERS and small.num_blocks < limits.num_blocks
    assert burst.users * small.blocks_for(burst.prompt_tokens) > small.num_blocks
    assert burst.users * limits.blocks_for(total) <= kvwait.CONTROL_HEADROOM * limits.num_blocks
    # the flags give the server that pool, and a max-model-len it holds (vLLM starts)
    override, length = burst.pressure_flags
    assert override == f"--num-gpu-blocks-override={small.num_blocks}"
    assert length == f"--max-model-len={small.max_model_len}"
    served = with_flags(limits, burst.pressure_flags)
    assert (served.num_blocks, served.max_model_len) == (small.num_blocks, small.max_model_len)
    assert served.blocks_for(served.max_model_len) <= served.num_blocks
    assert total <= served.max_model_len
    # within the CI budget, at the target
    assert "(meets the 65% target)" in burst.why
    assert f"(within the {kvwait.CI_BUDGET_S:.0f} s budget)" in burst.why
    assert burst.predicted_duration_s <= kvwait.CI_BUDGET_S
    assert burst_04(gpu).wait == burst.predicted


@pytest.mark.parametrize("gpu", GPUS)
def test_04_every_lesson_holds_on_the_replayed_burst(gpu: str) -> None:
    burst, wait, small, large = burst_04(gpu)
    pool = burst.pressure
    prompt_blocks = pool.blocks_for(burst.prompt_tokens)
    admit_at_once = pool.num_blocks // prompt_blocks
    for run in (small, large):
        kvcache.nothing_failed(len(run.requests), answered(run))
    kvcache.pool_caps_running(small.summary()["max_running"], admit_at_once, burst.users)
    # the replay is both sides of control_held_everyone here, so hold it to the users instead:
    # on the card the control runs every user at once, far more than the small pool admits
    assert large.summary()["max_running"] == burst.users > admit_at_once + 1
    shown = kvcache.pool_makes_the_wait(wait.pressure_last_ttft_s, wait.control_last_ttft_s)
    assert shown["pool's share"] >= kvwait.TARGET_POOL_SHARE - 0.001
    full = min(1.0, admit_at_once * prompt_blocks / (pool.num_blocks - 1))  # as 04 computes it
    kvcache.kv_full_only_under_pressure(peak_kv(small, pool), peak_kv(large, burst.control), full)
    # the small pool really is what holds them back: KV pinned there, low on the control
    assert peak_kv(small, pool) >= 0.9 and peak_kv(large, burst.control) < kvwait.CONTROL_HEADROOM


@pytest.mark.parametrize("gpu", GPUS)
def test_04_the_control_alone_is_compute_a_fraction_of_the_pressure_wait(gpu: str) -> None:
    """On a card the control's last TTFT is prefill of the burst at the datasheet rate (and
    the decode steps in between), not the ~100x collapse the old prose claimed."""
    steps = card(gpu).steps
    burst, wait = burst_04(gpu).burst, burst_04(gpu).wait
    prefill_s = burst.users * burst.prompt_tokens / steps.prefill_tok_s
    assert wait.control_last_ttft_s >= prefill_s
    assert wait.control_last_ttft_s < wait.pressure_last_ttft_s


# 03 ---------------------------------------------------------------------------------------------

def ci_levels(levels: list[int], knee: int | None) -> list[int]:
    """03's CI-scale levels: the low ones sparsely, every doubling from half the knee on."""
    knee = knee or levels[-1]
    return [c for c in levels if c in (1, 4, 16) or c >= knee // 2]


@pytest.mark.parametrize("scale", ["full", "ci"])
@pytest.mark.parametrize("gpu", GPUS)
def test_03_batching_gain_and_the_flat_cliff_hold_on_the_predicted_sweep(gpu: str,
                                                                         scale: str) -> None:
    table, levels, knee = sweep(gpu)
    assert knee is not None and max(levels) > knee
    if scale == "ci":
        table = table[table.concurrency.isin(ci_levels(levels, knee))]
    # No measurement exists on a card: only the floor of gain_within_prediction is tested here
    # (the band compares a measurement with this very prediction, which would be 1.0).
    top = table.concurrency.max()
    gain = table.set_index("concurrency").agg_tok_s
    assert gain[top] / gain[1] >= batching.MIN_GAIN
    cliff = experiments.find_cliff(table, min_gain=0.15)
    batching.flat_past_cliff(table, cliff)


@pytest.mark.parametrize("gpu", GPUS)
def test_03_continuous_beats_static_on_the_card(gpu: str) -> None:
    steps, limits = card(gpu)
    slots, lengths = 4, experiments.draw_lengths([8, 16, 32, 64], requests=16 * 4)  # 03's CI
    modelled = simulate.static_vs_continuous(steps, limits, lengths, slots, prompt_tokens=64)
    bound = experiments.expected_static_penalty(lengths, slots)
    batching.continuous_faster_than_static(modelled["continuous_over_static"],
                                           modelled["continuous_over_static"], bound)


# 07 ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpu", GPUS)
def test_07_operating_point_at_or_below_the_throughput_maximum(gpu: str) -> None:
    table = sweep(gpu)[0]
    reading = cost.reading_speed_tok_s(cost.READING_WORDS_PER_S.value, cost.TOKENS_PER_WORD.value)
    alone = float(table.loc[table.concurrency == 1, "ttft_s_p50"].iloc[0])
    target = cost.Target.relative(alone, cost.TTFT_MULTIPLE.value, reading)
    point: dict[str, Any] = cost.operating_point(table, target)
    priced = cost.priced(table, target, 1.0)
    shown = capacity.operating_point_within_max(priced, point)
    assert shown["operating point (users)"] >= 1
