"""03's and 03b's exercise checks: each accepts the answer computed the solution's way for the
embedded default (a CPU calibration), the article's card and an H200 (tables predicted by the
course's replay from a datasheet, as a learner's sweep would look there), and rejects the named
wrong answers with a message that says which assumption is off."""

from __future__ import annotations

import pandas as pd
import pytest
from cpu_calibrations import AVX2, NAIVE

from labs.course import checks, experiments
from labs.model import article, predict, simulate

CPU_STEPS, CPU_LIMITS = AVX2, NAIVE  # the slowest CPU kind's calibration
LEVELS = [1, 2, 4, 8, 16, 32, 64, 128, 256]


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong answer returns its verdict here instead of raising (as for a learner)."""
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


def _sweep(machine: str) -> tuple[pd.DataFrame, int]:
    """A sweep table as 03 measures it (32-token prompts, 64-token answers) and max_num_seqs."""
    if machine == "cpu":
        steps, limits = CPU_STEPS, CPU_LIMITS
    else:
        gpu = {"card": "rtx-4000-ada", "h200": "h200"}[machine]
        steps = predict.datasheet_steps(gpu, article.MODEL)
        limits = predict.datasheet_limits(gpu, article.MODEL, num_blocks=article.NUM_GPU_BLOCKS
                                          if machine == "card" else None)
    rows = simulate.predict_closed(steps, limits, LEVELS, prompt_tokens=32, max_tokens=64)
    table = pd.DataFrame(rows)
    table["tpot_s_p95"] = 1 / table["per_user_tok_s"]
    table["request_rate_rps"] = table["agg_tok_s"] / 64
    return table, limits.max_num_seqs


MACHINES = ("cpu", "card", "h200")


def _solution_next_level(table: pd.DataFrame, a: int) -> float:
    at = table.set_index("concurrency")["agg_tok_s"]
    step_a, step_2a = a / at[a], 2 * a / at[2 * a]
    own = (step_2a - step_a) / a
    shared = step_a - a * own
    return 4 * a / (shared + 4 * a * own)


@pytest.mark.parametrize("machine", MACHINES)
def test_next_level_accepts_the_two_point_step_model(machine: str) -> None:
    table, max_num_seqs = _sweep(machine)
    a, _, _ = experiments.two_doublings(LEVELS, max_num_seqs)
    verdict = checks.batching.next_level(_solution_next_level(table, a), table, a)
    assert verdict.ok is True, verdict.message


@pytest.mark.parametrize("machine", ("cpu",))
def test_next_level_rejects_a_straight_line_through_two_levels(machine: str) -> None:
    table, max_num_seqs = _sweep(machine)
    a, two_a, _ = experiments.two_doublings(LEVELS, max_num_seqs)
    at = table.set_index("concurrency")["agg_tok_s"]
    verdict = checks.batching.next_level(at[two_a] + 2 * (at[two_a] - at[a]), table, a)
    assert verdict.ok is False and "did not grow" in verdict.message, verdict.message


def test_next_level_rejects_doubling_and_flat() -> None:
    table, max_num_seqs = _sweep("cpu")
    a, two_a, _ = experiments.two_doublings(LEVELS, max_num_seqs)
    at = table.set_index("concurrency")["agg_tok_s"]
    assert checks.batching.next_level(2 * at[two_a], table, a).ok is False
    flat = checks.batching.next_level(at[two_a], table, a)
    assert flat.ok is False and "stopped growing" in flat.message


def test_two_doublings_keep_the_whole_batch_in_one_step() -> None:
    assert experiments.two_doublings(LEVELS, 128) == (32, 64, 128)
    assert experiments.two_doublings([1, 4, 16, 32, 64, 128], 128) == (32, 64, 128)
    assert experiments.two_doublings([1, 4, 16, 32, 64, 128], 64) == (16, 32, 64)


LENGTHS = experiments.draw_lengths((8, 16, 32, 64), requests=32)


@pytest.mark.parametrize("slots", (4, 8))
def test_static_penalty_accepts_longest_of_each_batch_over_continuous(slots: int) -> None:
    batches = [LENGTHS[i:i + slots] for i in range(0, len(LENGTHS), slots)]
    right = sum(max(b) for b in batches) / (sum(LENGTHS) / slots)
    assert checks.batching.static_penalty(right, LENGTHS, slots).ok is True
    assert right == pytest.approx(experiments.expected_static_penalty(LENGTHS, slots))


def test_static_penalty_rejects_average_length_forgotten_slots_and_inverse() -> None:
    right = experiments.expected_static_penalty(LENGTHS, 4)
    average = checks.batching.static_penalty(1.0, LENGTHS, 4)
    assert average.ok is False and "longest" in average.message
    no_slots = checks.batching.static_penalty(right / 4, LENGTHS, 4)
    assert no_slots.ok is False and "divide the sum of lengths by slots" in no_slots.message
    inverse = checks.batching.static_penalty(1 / right, LENGTHS, 4)
    assert inverse.ok is False and "continuous over static" in inverse.message


@pytest.mark.parametrize("machine", MACHINES)
def test_strict_operating_point_accepts_the_most_users_within_both(machine: str) -> None:
    table, _ = _sweep(machine)
    ttft, tpot = 2 * table.ttft_s_p95.iloc[0], 1 / 6.7
    meets = table[(table.ttft_s_p95 <= ttft) & (table.tpot_s_p95 <= tpot)]
    right = int(meets.concurrency.max()) if len(meets) else 0
    verdict = checks.batching.strict_operating_point(right, table, ttft_p95_s=ttft, tpot_p95_s=tpot)
    assert verdict.ok is True, verdict.message


def test_strict_operating_point_rejects_the_throughput_peak_and_one_half_only() -> None:
    table = pd.DataFrame({"concurrency": [1, 4, 16, 64, 128],
                          "agg_tok_s": [20, 70, 200, 300, 320],
                          "ttft_s_p95": [0.1, 0.15, 0.3, 1.0, 3.0],
                          "tpot_s_p95": [0.05, 0.06, 0.08, 0.2, 0.4]})
    kw = {"ttft_p95_s": 0.5, "tpot_p95_s": 0.15}
    assert checks.batching.strict_operating_point(16, table, **kw).ok is True
    peak = checks.batching.strict_operating_point(128, table, **kw)
    assert peak.ok is False and "throughput peaks" in peak.message
    ttft_only = checks.batching.strict_operating_point(16, table, ttft_p95_s=0.5, tpot_p95_s=0.07)
    assert ttft_only.ok is False and "TPOT" in ttft_only.message
    tpot_only = checks.batching.strict_operating_point(64, table, ttft_p95_s=0.2, tpot_p95_s=0.25)
    assert tpot_only.ok is False and "TTFT" in tpot_only.message


@pytest.mark.parametrize("machine", MACHINES)
def test_request_rate_is_tokens_over_tokens_per_answer(machine: str) -> None:
    table, _ = _sweep(machine)
    top = int(table.concurrency.max())
    agg = float(table.loc[table.concurrency == top, "agg_tok_s"].iloc[0])
    assert checks.batching.request_rate(agg / 64, table, top).ok is True
    assert checks.batching.request_rate(agg, table, top).ok is False  # tokens, not requests
    # divided by users too
    assert checks.batching.request_rate(agg / 64 / top, table, top).ok is False
