"""The measurements the notebooks make, as functions: one call, one DataFrame.

Each function composes `labs.loadgen` runs into one experiment of the course, returns data
(never prints or plots), and keeps the raw runs so the notebook can save them. Sizes are
arguments; notebooks pick CI-sized or full-sized values with `labs.Settings.is_ci_scale`.
"""

from __future__ import annotations

from .recipes import (
    Experiment,
    admission_table,
    arrival_candidates,
    beside,
    concurrency_sweep,
    draw_lengths,
    events_per_s,
    expected_static_penalty,
    find_cliff,
    load_runs,
    measure_capacity,
    plot_admission,
    predicted_rate_sweep,
    predicted_rate_sweep_s,
    predicted_schedulers_s,
    predicted_single_stream,
    predicted_sweep,
    predicted_sweep_s,
    predicted_ttft_alone,
    rate_knee,
    rate_sweep,
    run_through_gateway,
    save,
    scheduler_candidates,
    single_stream_decode,
    static_vs_continuous,
    sweep_candidates,
    sweep_requests,
    ttft_by_prompt_length,
    two_doublings,
)

__all__ = [
    "Experiment", "ttft_by_prompt_length", "single_stream_decode", "sweep_requests",
    "concurrency_sweep", "events_per_s", "rate_sweep", "draw_lengths", "static_vs_continuous",
    "measure_capacity", "find_cliff", "rate_knee",
    "beside", "predicted_ttft_alone", "predicted_single_stream", "predicted_sweep",
    "predicted_sweep_s", "predicted_rate_sweep", "predicted_rate_sweep_s",
    "predicted_schedulers_s", "expected_static_penalty", "sweep_candidates",
    "arrival_candidates", "scheduler_candidates", "two_doublings",
    "save", "load_runs", "admission_table", "plot_admission", "run_through_gateway",
]
