"""Notebook 05's runs: 04's KV-exhausting burst under the article's two engine flags (the
bounded engine behind the running `gateway` profile, reached directly) and under the gateway,
plus one prompt longer than max_model_len; the overload's setups, their predictions and runs,
sized to the notebook's time budget; and the tables the notebook shows. No server is started:
the `gateway` profile's engine *is* the `bounded` profile, so both setups are one server.

Its modules: `burst` (the closing burst, the too-long prompt, the engine reached directly),
`forecast` (a gateway predicted step by step), `overload` (the setups, their predictions,
the sizing and the runs) and `tables` (what the notebook shows).
"""

from __future__ import annotations

from .burst import (
    TOO_LONG,
    burst_table,
    caps_against_pool,
    closing_burst,
    engine_connection,
    run_burst,
    too_long,
)
from .forecast import GatewayForecast, predict_gateway
from .overload import (
    OVERLOAD_SHARE as OVERLOAD_SHARE,
)
from .overload import (
    RUN_ORDER,
    SETUPS,
    Setup,
    capacity_seconds,
    gateway_slots,
    in_table_order,
    overload_candidates,
    overload_seconds,
    plan_overload,
    predict_setups,
    profile_limits,
    run_overload,
)
from .tables import (
    burst_forecast,
    caps_findings,
    goodput_by_slo,
    model_check,
    overload_findings,
    overload_table,
    predicted_table,
    profiles_table,
    queue_findings,
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
