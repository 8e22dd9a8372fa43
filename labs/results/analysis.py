"""Where a measured (or predicted) table turns: pure analysis of the tables the course makes.

Rules, not measurements: each function reads a table's columns and returns a number, so the
model (`labs.sizing` applies `find_cliff` to a predicted sweep), the course (notebook 03 to the
measured one, through `labs.experiments`) and the results card use the same rule without
importing the load generator. Imports no HTTP client and nothing from `labs.loadgen`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def rate_knee(table: pd.DataFrame, keep_up: float = 0.9) -> float | None:
    """The lowest offered rate the server did not keep up with (served below `keep_up` of
    what arrived); None if it kept up with every rate."""
    for row in table.sort_values("offered_rps").itertuples():
        if not row.served_over_arrived or row.served_over_arrived < keep_up:
            return float(row.offered_rps)
    return None


def find_cliff(table: pd.DataFrame, min_gain: float = 0.15) -> int | None:
    """The batching cliff: the first concurrency level where going up buys less than
    `min_gain` more throughput per doubling of users while p95 TTFT keeps rising.

    Returns the last level *before* the flat step (the best place to operate), or None if
    throughput never flattens within the sweep.
    """
    rows = table.sort_values("concurrency").reset_index(drop=True)
    for i in range(1, len(rows)):
        prev, cur = rows.iloc[i - 1], rows.iloc[i]
        doublings = math.log2(cur["concurrency"] / prev["concurrency"])
        if doublings <= 0 or not prev["agg_tok_s"]:
            continue
        gain_per_doubling = (cur["agg_tok_s"] / prev["agg_tok_s"]) ** (1 / doublings) - 1
        if gain_per_doubling < min_gain and cur["ttft_s_p95"] > prev["ttft_s_p95"]:
            return int(prev["concurrency"])
    return None


__all__ = ["rate_knee", "find_cliff"]
