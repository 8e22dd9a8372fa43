"""labs.lessons.batching: notebook 03's lessons, each held and not held, and the solution
values of realistic CPU runs."""

from __future__ import annotations

import pandas as pd
import pytest

from labs.course import experiments
from labs.course.lessons import LessonNotHeld, batching


def sweep(levels, agg, ttft_p95=None) -> pd.DataFrame:
    ttft_p95 = ttft_p95 or [0.05 * c for c in levels]
    return pd.DataFrame({"concurrency": levels, "agg_tok_s": agg, "ttft_s_p95": ttft_p95,
                         "per_user_tok_s": [a / c for a, c in zip(agg, levels)]})


# The AVX-512 CPU (issue 19): 1 -> 16 -> 64 -> 256 users, measured and predicted.
LEVELS = [1, 16, 64, 256]
MEASURED = sweep(LEVELS, [50, 391, 640, 726], [0.08, 0.6, 2.4, 11.0])
PREDICTED = sweep(LEVELS, [44, 417, 737, 845])


# --- the batching gain ------------------------------------------------------------------------

def test_realistic_cpu_gain_holds():
    numbers = batching.gain_within_prediction(MEASURED, PREDICTED)
    assert numbers["gain"] == pytest.approx(726 / 50)
    assert numbers["predicted_gain"] == pytest.approx(845 / 44)
    assert numbers["top_users"] == 256


def test_avx2_gain_holds():
    measured = sweep([1, 256], [20, 257])
    predicted = sweep([1, 256], [20 * 0.91, 257 * 1.02])  # the model's -9 ... +2 %
    assert batching.gain_within_prediction(measured, predicted)["gain"] == pytest.approx(12.85)


def test_no_batching_gain_fails():
    flat = sweep(LEVELS, [50, 52, 55, 54])
    with pytest.raises(LessonNotHeld) as err:
        batching.gain_within_prediction(flat, PREDICTED)
    text = str(err.value)
    assert "batching multiplies throughput" in text
    assert "gain = 1.08" in text and "agg_tok_s_top = 54" in text


def test_a_gain_far_below_the_prediction_fails():
    weak = sweep(LEVELS, [50, 200, 300, 320])  # 6.4x where 19x was predicted
    with pytest.raises(LessonNotHeld, match="about what the calibrated model predicts"):
        batching.gain_within_prediction(weak, PREDICTED)


def test_a_gain_far_above_the_prediction_fails():
    with pytest.raises(LessonNotHeld, match=r"agg_tok_s_top = 2,000, .*gain_over_predicted = 5,"):
        batching.gain_within_prediction(sweep(LEVELS, [50, 1000, 2000, 2000]),
                                        sweep(LEVELS, [50, 300, 400, 400]))


def test_tables_without_the_one_user_level_are_an_error():
    with pytest.raises(ValueError):
        batching.gain_within_prediction(sweep([4, 16], [1, 2]), sweep([4, 16], [1, 2]))


# --- continuous against static ---------------------------------------------------------------

def test_realistic_continuous_over_static_holds():
    numbers = batching.continuous_faster_than_static(1.51, 1.54, 1.73)
    assert numbers["required_above"] == pytest.approx(1.27)


def test_static_as_fast_as_continuous_fails():
    with pytest.raises(LessonNotHeld) as err:
        batching.continuous_faster_than_static(1.02, 1.54, 1.73)
    text = str(err.value)
    assert "continuous batching is faster than static batching" in text
    assert "measured = 1.02" in text and "required_above = 1.27" in text


def test_a_model_with_no_static_penalty_still_needs_continuous_ahead():
    with pytest.raises(LessonNotHeld):
        batching.continuous_faster_than_static(0.98, 0.95, 1.0)


# --- past the cliff -----------------------------------------------------------------------

def test_realistic_cpu_sweep_is_flat_past_its_cliff():
    cliff = experiments.find_cliff(MEASURED)
    assert cliff == 64
    numbers = batching.flat_past_cliff(MEASURED, cliff)
    assert numbers["past_cliff_over_cliff"] == "1.13"


def test_ci_sized_sweep_with_two_levels_past_the_cliff_holds():
    table = sweep([1, 4, 16, 32, 64, 128, 256], [20, 65, 155, 201, 237, 259, 260],
                  [0.1, 0.3, 0.9, 1.7, 3.2, 6.5, 37.8])
    cliff = experiments.find_cliff(table)
    assert cliff == 64
    batching.flat_past_cliff(table, cliff)


def test_throughput_still_growing_past_the_cliff_fails():
    table = sweep([1, 16, 64, 128, 256], [50, 391, 640, 700, 1300], [0.1, 0.6, 2.4, 5, 11])
    with pytest.raises(LessonNotHeld) as err:
        batching.flat_past_cliff(table, 64)
    text = str(err.value)
    assert "throughput stays flat past the cliff" in text
    assert "past_cliff_over_cliff = 1.09, 2.03" in text


def test_throughput_collapsing_past_the_cliff_fails():
    table = sweep([1, 16, 64, 256], [50, 391, 640, 300], [0.1, 0.6, 2.4, 11])
    with pytest.raises(LessonNotHeld, match="flat past the cliff"):
        batching.flat_past_cliff(table, 64)


def test_tail_ttft_that_does_not_rise_fails():
    table = sweep(LEVELS, [50, 391, 640, 726], [0.1, 0.6, 2.4, 2.5])
    with pytest.raises(LessonNotHeld) as err:
        batching.flat_past_cliff(table, 64)
    text = str(err.value)
    assert "tail TTFT keeps rising past the cliff" in text
    assert "ttft_s_p95_at_cliff = 2.4" in text and "ttft_s_p95_at_top = 2.5" in text


def test_no_cliff_fails():
    with pytest.raises(LessonNotHeld, match="a batching cliff exists"):
        batching.flat_past_cliff(MEASURED, None)


def test_a_cliff_at_the_top_level_fails():
    with pytest.raises(LessonNotHeld, match="reaches past the cliff"):
        batching.flat_past_cliff(MEASURED, 256)


def _arrivals(low_ratio: float, high_ratio: float, e2e_low: float, e2e_high: float) -> pd.DataFrame:
    return pd.DataFrame({"offered_rps": [4.8, 9.6], "served_over_arrived": [low_ratio, high_ratio],
                         "e2e_s_p95": [e2e_low, e2e_high], "ttft_s_p95": [0.3, 0.6]})


def test_service_falling_behind_holds_when_the_batch_absorbs_the_backlog():
    # TTFT barely doubles (the batch took the excess), but whole answers take 3x longer
    numbers = batching.service_falls_behind(_arrivals(0.97, 0.72, 4.5, 14.0))
    assert numbers["e2e_s_p95_high"] == 14.0


def test_a_server_that_keeps_up_at_the_top_rate_fails():
    with pytest.raises(LessonNotHeld, match="falls behind"):
        batching.service_falls_behind(_arrivals(0.97, 0.95, 4.5, 14.0))


def test_no_rise_in_latency_fails():
    with pytest.raises(LessonNotHeld, match="end-to-end latency rises"):
        batching.service_falls_behind(_arrivals(0.97, 0.72, 4.5, 6.0))


def test_a_server_behind_at_the_lowest_rate_fails():
    with pytest.raises(LessonNotHeld, match="serves what arrives"):
        batching.service_falls_behind(_arrivals(0.7, 0.6, 4.5, 14.0))
