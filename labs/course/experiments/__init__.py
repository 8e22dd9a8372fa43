"""The measurements the notebooks make, as functions: one call, one DataFrame.

Each function composes `labs.loadgen` runs into one experiment of the course, returns data
(never prints or plots), and keeps the raw runs so the notebook can save them. Sizes are
arguments; notebooks pick CI-sized or full-sized values with `labs.Settings.is_ci_scale`.

The package, one job per module:
    recipes      measuring: the notebooks' runs (prefill, decode, the concurrency and rate
                 sweeps, static against continuous batching, 05's capacity), one Experiment each
    predicted    the same tables and their durations predicted from the calibration, `beside`
                 the measured ones, and the candidate sizes for the time budget
    saved        a notebook's findings and runs saved to the results folder, and runs read back
    admission    05's comparison of setups: its table and its plot
    gateway_run  05's gateway, started with given limits for one run
"""

from __future__ import annotations

# Pure analysis lives in labs.results.analysis; notebooks 03 and 03b call these two from here.
from ...results.analysis import find_cliff as find_cliff
from ...results.analysis import rate_knee as rate_knee
from .admission import admission_table, plot_admission
from .gateway_run import run_through_gateway
from .predicted import (
    arrival_candidates,
    beside,
    expected_static_penalty,
    predicted_rate_sweep,
    predicted_rate_sweep_s,
    predicted_schedulers_s,
    predicted_single_stream,
    predicted_sweep,
    predicted_sweep_s,
    predicted_ttft_alone,
    scheduler_candidates,
    sweep_candidates,
    two_doublings,
)
from .recipes import (
    Experiment,
    concurrency_sweep,
    draw_lengths,
    events_per_s,
    measure_capacity,
    rate_sweep,
    single_stream_decode,
    static_vs_continuous,
    sweep_requests,
    ttft_by_prompt_length,
)
from .saved import load_runs, save

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
