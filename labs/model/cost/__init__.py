"""Capacity and cost arithmetic: from a throughput curve to replicas, dollars and break-even.

A sweep (measured by `labs.loadgen`, or predicted by `labs.simulate` /
`labs.model.predict`) says, for each number of concurrent users, how many output tokens per second
one server makes and how long users wait. Everything a capacity plan needs follows from three steps:

1. the **operating point**: the most users one replica takes while every user still gets the
   service promised (a p95 TTFT limit and a per-user stream at least as fast as people read).
   Past it the tokens are cheaper, but the users they were made for are not served;
2. **replicas** for N users: the requests they keep in flight / users per replica, in whole
   replicas. "N users" are not N requests in flight: a chat user reads an answer and types the
   next question, so by Little's law (requests in flight L = arrival rate x time in system W)
   N users who think Z seconds between requests keep N x W / (W + Z) in flight; N only when
   Z = 0 (an agent, a batch job, a load test);
3. **cost per million output tokens** at that point: price per hour / (3600 x tok/s) x 1e6,
   and the **break-even utilisation** against an API priced per token: a server costs the
   same whether it is busy or idle, so at a fraction u of the hour busy each token costs 1/u
   times more; u = (cost per million when always busy) / (API price per million).

Every number the plan takes from outside the measurement (a price, a reading speed, an SLO
multiple, a number of users) is an `Input` with its unit and its source, so a notebook can
print where each one came from. The defaults below quote the course's seed documents
(shared/seeds); where no seed gives a figure, the source says it is an assumption.

Pure functions of their arguments, nothing printed or plotted; one exception talks to the
server, `measure_cold_start`, the timing 07 starts from. `SweepSize` and `sweep_seconds` size
07's measured sweep to its time budget (`labs.timebudget`) from the calibrated replay.

Its modules: `plan` (the service promised, the operating point, replicas and dollars),
`inputs` (each outside number with its unit and source, and the machine's price),
`coldstart` (scaling on demand: what arrives while a replica starts, and timing a start),
`sweepsize` (07's sweep sized to its time budget).
"""

from __future__ import annotations

from .coldstart import (
    arrivals_during,
    download_s,
    measure_cold_start,
)
from .inputs import (
    API_USD_PER_MILLION,
    ARTICLE_CARD_USD_PER_HOUR,
    CPU_USD_PER_HOUR,
    LINK_GBIT_S,
    READING_WORDS_PER_S,
    SEED_GPU_USD_PER_HOUR,
    THINK_S,
    TOKENS_PER_WORD,
    TTFT_MULTIPLE,
    USERS,
    Input,
    gpu_price,
    inputs_table,
    this_machine_price,
)
from .plan import (
    HOURS_PER_MONTH,
    SECONDS_PER_HOUR,
    Target,
    arrival_rate_rps,
    break_even_utilisation,
    cost_per_million_tokens,
    in_flight,
    judged,
    monthly_cost,
    operating_point,
    priced,
    reading_speed_tok_s,
    replicas_by_arrival,
    replicas_needed,
    replicas_table,
    summary_row,
    time_in_system_s,
)
from .sweepsize import (
    SweepSize,
    sweep_seconds,
    sweep_sizes,
)

__all__ = [
    "Input", "inputs_table", "Target", "judged", "operating_point", "priced",
    "reading_speed_tok_s", "replicas_needed", "cost_per_million_tokens",
    "time_in_system_s", "arrival_rate_rps", "in_flight", "replicas_by_arrival", "replicas_table",
    "break_even_utilisation", "monthly_cost", "arrivals_during", "download_s",
    "gpu_price", "this_machine_price", "summary_row", "measure_cold_start",
    "SweepSize", "sweep_sizes", "sweep_seconds",
    "TTFT_MULTIPLE", "READING_WORDS_PER_S", "TOKENS_PER_WORD", "USERS", "THINK_S",
    "ARTICLE_CARD_USD_PER_HOUR", "API_USD_PER_MILLION", "CPU_USD_PER_HOUR", "LINK_GBIT_S",
    "SEED_GPU_USD_PER_HOUR", "SECONDS_PER_HOUR", "HOURS_PER_MONTH",
]
