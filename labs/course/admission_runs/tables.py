"""Tables notebook 05 shows (formatting lives here, so its cells stay short)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ...model.steps import ServerLimits
from ...results.records import SLO
from ...serving import profiles
from ..tables import show
from .burst import TOO_LONG


def profiles_table(names: tuple[str, ...], backend: str) -> Any:
    """Each profile's engine flags and, where it has one, its gateway's flags."""
    rows = {name: {"engine flags": " ".join(profiles.get_profile(name).flags(backend)),
                   "gateway flags": " ".join(profiles.get_profile(name).gateway(backend) or ())}
            for name in names}
    return pd.DataFrame.from_dict(rows, orient="index")


def overload_table(capacity_rps: float, predicted_capacity_rps: float, slots: int,
                   sized: Any) -> Any:
    """The overload as sized: the capacity it is a multiple of, measured and predicted."""
    return show({"uncapped engine, measured (req/s)": capacity_rps,
                 "uncapped engine, predicted (req/s)": predicted_capacity_rps,
                 "prediction error (%)": 100 * (predicted_capacity_rps / capacity_rps - 1),
                 "requests it runs at once": slots,
                 "offered (req/s)": sized.rate_rps, "x capacity": sized.multiple,
                 "requests": sized.requests})


def predicted_table(predicted: dict[str, dict[str, Any]]) -> Any:
    """`predict_setups`' summaries, one row per setup: served, shed, p95 TTFT, duration."""
    rows = {label: {"served": s.get("ok", s["requests"]), "shed": s.get("shed", 0),
                    "ttft_p95_s": s["ttft_s_p95"], "duration_s": s["duration_s"]}
            for label, s in predicted.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def model_check(predicted: dict[str, dict[str, Any]], comparison: Any) -> Any:
    """The prediction against the measurement, for the numbers the decision rests on."""
    rows = [("a) naive: p95 TTFT (s)", predicted["a) naive"]["ttft_s_p95"],
             comparison.loc["a) naive", "ttft_p95_s"]),
            ("b) engine caps: p95 TTFT (s)", predicted["b) engine caps"]["ttft_s_p95"],
             comparison.loc["b) engine caps", "ttft_p95_s"]),
            ("d) gateway: served", predicted["d) gateway"]["ok"],
             comparison.loc["d) gateway", "served"])]
    table = pd.DataFrame(rows, columns=["", "predicted", "measured"]).set_index("")
    table["error %"] = 100 * (table["predicted"] - table["measured"]) / table["measured"]
    return table


def goodput_by_slo(results: dict[str, Any], baseline_ttft_s: float,
                   factors: Sequence[float]) -> Any:
    """Goodput (req/s within the SLO) of each setup, for SLOs of `factors` x the baseline."""
    return pd.DataFrame({
        f"{f:g}x baseline": {label: run.summary(SLO(ttft_s=f * baseline_ttft_s))["goodput_rps"]
                             for label, run in results.items()}
        for f in factors})


def overload_findings(comparison: Any, shed: Sequence[Any], baseline_ttft_s: float) -> Any:
    """What the overload showed, against the baseline: the two p95s and the gateway's 503s."""
    naive = comparison.loc["a) naive", "ttft_p95_s"]
    gateway = comparison.loc["d) gateway", "ttft_p95_s"]
    return show({"baseline TTFT (s)": baseline_ttft_s,
                 "naive p95 TTFT (s)": naive, "naive p95 / baseline": naive / baseline_ttft_s,
                 "gateway p95 TTFT (s)": gateway,
                 "gateway p95 / baseline": gateway / baseline_ttft_s,
                 "gateway shed": len(shed),
                 "slowest 503 (ms)": max((r.e2e_s for r in shed), default=0.0) * 1000,
                 "every 503 has Retry-After": all(r.retry_after_s for r in shed)})


def queue_findings(queued: Any, at_once_s: float, max_wait_s: float) -> Any:
    """The run with a queue: how many served requests waited (TTFT over `at_once_s`, the
    p95 of the same gateway without a queue), and the longest TTFT against the wait allowed."""
    served = [r.ttft_s for r in queued.records if r.ok and r.ttft_s is not None]
    refused = [r for r in queued.records if not r.ok]
    return show({"served": len(served),
                 "served after a wait (TTFT over M=0's p95)": sum(t > at_once_s for t in served),
                 "longest TTFT (s)": max(served, default=0.0),
                 "refused": len(refused),
                 "refused after waiting": sum(r.e2e_s >= 0.5 * max_wait_s for r in refused),
                 "max wait in the queue (s)": max_wait_s})


def burst_forecast(burst: Any, bounded_limits: ServerLimits, flags: dict[str, Any],
                   admitted: dict[str, Any], lone_s: float, gateway_n: int) -> Any:
    """04's burst against this pool, and what the replay predicts under each setup."""
    return show({"users": burst.users, "prompt + answer (tokens)":
                 f"{burst.prompt_tokens:,} + {burst.output_tokens}",
                 "demand / pool": burst.demand_tokens / bounded_limits.pool_tokens,
                 "why this burst": burst.why, "one alone, TTFT (s)": lone_s,
                 "two flags: at once": flags["max_running"],
                 "two flags: last TTFT (s)": flags["ttft_s_max"],
                 "two flags: preemptions": flags["preemptions"],
                 "gateway: admitted": gateway_n,
                 "gateway: p95 TTFT (s)": admitted["ttft_s_p95"]})


def caps_findings(caps: Any) -> Any:
    """`caps_against_pool` with its verdict: do max_num_seqs full-length requests fit?"""
    table = caps.copy()
    table["fits the pool"] = table["seqs x len"] <= table["pool_tokens"]
    return table.round(2)


def too_long_table(records: dict[str, Any], limits: ServerLimits,
                   uncapped: ServerLimits) -> Any:
    """How each setup answered the too-long prompt, and what it would hold uncapped."""
    held = uncapped.blocks_for(int(TOO_LONG * limits.max_model_len) + 16)
    rows = {label: {"status": r.status, "answered in (ms)": r.e2e_s * 1000,
                    "error": (r.error or "")[:100]} for label, r in records.items()}
    rows[f"04's engine (max_model_len {uncapped.max_model_len:,})"] = {
        "status": "admitted", "answered in (ms)": None,
        "error": f"would hold {held} of {uncapped.num_blocks} blocks for its whole answer"}
    return pd.DataFrame.from_dict(rows, orient="index")
