"""Notebook 05's closing runs: 04's KV-exhausting burst under the article's two engine flags
(the bounded engine behind the running `gateway` profile, reached directly) and under the
gateway, plus one prompt longer than max_model_len; the overload's setups, their runs and
predictions, sized to the notebook's time budget; and the tables the notebook shows.
No server is started: the `gateway` profile's engine *is* the `bounded` profile, so both
setups are one server.
"""

from __future__ import annotations

from .overload import (
    OVERLOAD_SHARE as OVERLOAD_SHARE,
)
from .overload import (
    RUN_ORDER,
    SETUPS,
    TOO_LONG,
    GatewayForecast,
    Setup,
    burst_forecast,
    burst_table,
    capacity_seconds,
    caps_against_pool,
    caps_findings,
    closing_burst,
    engine_connection,
    gateway_slots,
    goodput_by_slo,
    in_table_order,
    model_check,
    overload_candidates,
    overload_findings,
    overload_seconds,
    overload_table,
    plan_overload,
    predict_gateway,
    predict_setups,
    predicted_table,
    profile_limits,
    profiles_table,
    queue_findings,
    run_burst,
    run_overload,
    too_long,
    too_long_table,
)

__all__ = ["closing_burst", "caps_against_pool", "engine_connection", "run_burst", "too_long",
           "burst_table", "TOO_LONG", "Setup", "SETUPS", "RUN_ORDER", "in_table_order",
           "GatewayForecast", "predict_gateway",
           "predict_setups", "overload_seconds", "overload_candidates", "plan_overload",
           "capacity_seconds", "run_overload", "gateway_slots", "profile_limits",
           "profiles_table", "overload_table", "predicted_table", "model_check",
           "goodput_by_slo", "overload_findings", "queue_findings", "burst_forecast",
           "caps_findings", "too_long_table"]
