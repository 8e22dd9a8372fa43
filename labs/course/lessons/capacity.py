"""07's lesson: plan with the operating point, which is at or below the throughput maximum.

The operating point is the most users a replica serves while every user gets the promised
service (p95 TTFT within the SLO, a stream at least as fast as reading): the goodput's best
level. The benchmark's best is the level of the highest aggregate tok/s. The lesson is that
the first is never past the second: a capacity plan priced at the maximum counts tokens made
for users who were not served as promised.

The margin. Past the cliff a sweep is flat: its levels differ by the noise of a level of one
or two rounds of requests (the course's sweeps land within -9 ... +5 % of the calibrated model
at every level, DESIGN 2026-12-01), so which level of the plateau holds the very highest
tok/s is chance. An operating point at more users than that level is still *at* the maximum
while its tok/s is within `TOLERANCE` (15 %, above that noise) of it; the lesson fails only
where the target accepts a level past the maximum whose throughput has clearly fallen (the
target then protects nobody: tighten it), or where the point claims more tok/s than the sweep
ever made (a point from another table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from ...errors import ConfigError
from . import require

TOLERANCE = 0.15
LESSON = "the operating point is at or below the throughput maximum"


def operating_point_within_max(sweep: Any, point: Mapping[str, Any], *,
                               tolerance: float = TOLERANCE) -> dict[str, float | int | str]:
    """`point` (concurrency, agg_tok_s: `labs.cost.operating_point`) against the sweep it
    was found in (a table or records with concurrency and agg_tok_s): its users at most the
    users of the sweep's highest tok/s, or its tok/s within `tolerance` of that highest (the
    plateau); and its tok/s never above the highest by more than `tolerance`."""
    table = pd.DataFrame(sweep)
    missing = [c for c in ("concurrency", "agg_tok_s") if c not in table.columns]
    if missing:
        raise ConfigError(f"the sweep has no column {', '.join(missing)}.")
    tok_s = pd.to_numeric(table["agg_tok_s"], errors="coerce")
    if tok_s.notna().sum() == 0:
        raise ConfigError("the sweep has no level with a throughput.")
    best = table.loc[tok_s.idxmax()]
    max_users, max_tok_s = int(best["concurrency"]), float(tok_s.max())
    users, at = int(point["concurrency"]), float(point["agg_tok_s"])
    share = at / max_tok_s
    held = (share <= 1 + tolerance) and (users <= max_users or share >= 1 - tolerance)
    return require(LESSON, held, {
        "operating point (users)": users, "operating point (tok/s)": at,
        "throughput maximum (users)": max_users, "throughput maximum (tok/s)": max_tok_s,
        "point / maximum tok/s": share, "tolerance": tolerance,
    }, hint="The target accepted a level past the maximum whose throughput had fallen: "
            "tighten it (a smaller TTFT multiple), or re-measure the sweep."
    if share <= 1 + tolerance else "The point claims more tok/s than the sweep measured: "
                                    "give the point and the sweep it came from.")


__all__ = ["operating_point_within_max", "TOLERANCE", "LESSON"]
