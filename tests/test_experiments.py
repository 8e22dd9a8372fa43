"""labs.experiments on numbers, no server: the rate knee and the replayed rate sweep."""

from __future__ import annotations

from cpu_calibrations import CPU_NAIVE, FAST_CPU


def test_the_rate_knee_is_where_service_falls_behind_arrivals() -> None:
    import pandas as pd

    from labs.course.experiments import events_per_s, rate_knee

    assert events_per_s([0.0, 1.0, 2.0, 3.0]) == 1.0
    assert events_per_s([5.0]) is None
    table = pd.DataFrame({"offered_rps": [2.0, 4.0, 8.0],
                          "served_over_arrived": [1.01, 0.95, 0.6]})
    assert rate_knee(table) == 8.0
    assert rate_knee(table.iloc[:2]) is None  # kept up with every rate offered


def test_replayed_arrivals_past_capacity_are_served_at_capacity() -> None:
    from labs.course.experiments import predicted_rate_sweep

    class Cal:  # what predicted_rate_sweep reads of a Calibration
        steps, limits = FAST_CPU, CPU_NAIVE

    table = predicted_rate_sweep(Cal, [2.0, 200.0], requests=2 * CPU_NAIVE.max_num_seqs,
                                 prompt_tokens=32, max_tokens=64)
    below, above = table.iloc[0], table.iloc[1]
    assert below.served_over_arrived > 0.9
    assert above.served_over_arrived < 0.9 and above.ttft_s_p95 > 5 * below.ttft_s_p95
