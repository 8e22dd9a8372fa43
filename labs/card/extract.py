"""Reading one notebook's saved findings: one extractor per section, returning (values, series).

`values` are the numbers the card's rows show (keys as in `labs.card.sections`), `series` the
columns its plots and detail tables draw. Every extractor tolerates missing or odd entries: a
value it cannot read is None, never a crash, so a half-written file still yields a card.
Nothing here imports matplotlib; pandas only when an older file lacks the saved cliff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..results.analysis import find_cliff
from ..results.records import load_sweep


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _records(findings: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    rows = findings.get(key)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    return [_num(r.get(key)) for r in rows]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _provision(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = sorted(_records(f, "ttft_by_prompt_length"),
                  key=lambda r: _num(r.get("prompt_tokens")) or 0)
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    prefill = [v for v in _column(rows, "prefill_tok_s") if v is not None]
    values = {
        "first_request_ttft_s": _num(f.get("first_request_ttft_s")),
        "short_prompt_tokens": _num(first.get("prompt_tokens")),
        "short_prompt_ttft_s": _num(first.get("ttft_s_p50")),
        "long_prompt_tokens": _num(last.get("prompt_tokens")),
        "long_prompt_ttft_s": _num(last.get("ttft_s_p50")),
        "prefill_tok_s": max(prefill) if prefill else None,
        "kv_pool_tokens": _num(f.get("kv_pool_tokens")),
    }
    return values, {"prompt_tokens": _column(rows, "prompt_tokens"),
                    "ttft_s": _column(rows, "ttft_s_p50")}


def _ceiling(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = _records(f, "single_stream")
    speeds = [v for v in _column(rows, "decode_tok_s") if v is not None]
    ceiling = _num(f.get("ceiling_tok_s"))
    best = max(speeds) if speeds else None
    weight_bytes = _num(f.get("weight_bytes"))
    fraction = _num(f.get("fraction_of_ceiling"))
    values = {
        "bandwidth_read_gbs": _num(f.get("bandwidth_read_gbs")),
        "weight_gb": weight_bytes / 1e9 if weight_bytes else None,
        "ceiling_tok_s": ceiling,
        "single_stream_tok_s": best,
        "fraction_of_ceiling": fraction if fraction is not None else _ratio(best, ceiling),
    }
    return values, {"output_tokens": _column(rows, "output_tokens"),
                    "decode_tok_s": _column(rows, "decode_tok_s")}


def _batching(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = sorted((r for r in _records(f, "sweep") if _num(r.get("concurrency"))),
                  key=lambda r: _num(r.get("concurrency")) or 0)
    series = {k: _column(rows, k) for k in
              ("concurrency", "agg_tok_s", "per_user_tok_s", "ttft_s_p95", "errors")}
    agg = [(a, c) for a, c in zip(series["agg_tok_s"], series["concurrency"], strict=True)
           if a is not None]
    single = next((a for a, c in agg if c == 1), None)
    best, best_at = max(agg) if agg else (None, None)
    cliff = _num(f["cliff_users"]) if "cliff_users" in f else _find_cliff(series)
    errors = [e for e in series["errors"] if e is not None]
    values = {
        "single_user_tok_s": single, "best_agg_tok_s": best, "best_at_users": best_at,
        "batching_gain": _ratio(best, single), "cliff_users": cliff,
        "continuous_over_static": _num(f.get("continuous_over_static")),
        "errors": sum(errors) if errors else None,
    }
    return values, series


def _find_cliff(series: Mapping[str, list]) -> float | None:
    """Locate the cliff with the notebook's own rule when an older file did not save it."""
    table = pd.DataFrame({k: series[k] for k in ("concurrency", "agg_tok_s", "ttft_s_p95")})
    table = table.dropna()
    if len(table) < 2:
        return None
    cliff = find_cliff(table)
    return float(cliff) if cliff is not None else None


def _kv(f: Mapping[str, Any], runs: Path) -> tuple[dict, dict]:
    ttfts = sorted(t for t in _column(_records(f, "ttft_by_request"), "ttft_s") if t is not None)
    if not ttfts and runs.exists():
        # An older or trimmed file without the per-request table: the raw records have it.

        ttfts = sorted(r.ttft_s for run in load_sweep(runs) for r in run.records
                       if r.ttft_s is not None)
    blocks, block_size = _num(f.get("num_gpu_blocks")), _num(f.get("block_size"))
    pool = _num(f.get("pool_tokens")) or (blocks * block_size if blocks and block_size else None)
    users, prompt = _num(f.get("users")), _num(f.get("prompt_tokens"))
    demand = _num(f.get("demand_tokens")) or (users * prompt if users and prompt else None)
    values = {
        "num_gpu_blocks": blocks, "block_size": block_size, "pool_tokens": pool,
        "users": users, "prompt_tokens": prompt, "demand_tokens": demand,
        "demand_over_pool": _num(f.get("demand_over_pool")) or _ratio(demand, pool),
        "fit_at_once_predicted": _num(f.get("fit_at_once_predicted")),
        "max_running": _num(f.get("max_running")),
        "http_errors": _num(f.get("http_errors")),
        "ttft_first_s": _num(f.get("ttft_first_s")) or (ttfts[0] if ttfts else None),
        "ttft_last_s": _num(f.get("ttft_last_s")) or (ttfts[-1] if ttfts else None),
    }
    return values, {"ttft_s": ttfts}


def _setup_label(row: Mapping[str, Any]) -> str:
    return str(row.get("setup") or row.get("index") or row.get("label") or "?")


def _admission(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = _records(f, "comparison")
    series: dict[str, list] = {"setup": [_setup_label(r) for r in rows]}
    for key in ("offered", "served", "shed", "ttft_p95_s", "goodput_rps", "time_to_503_max_ms"):
        series[key] = _column(rows, key)
    series["retry_after_on_every_503"] = [r.get("retry_after_on_every_503") for r in rows]
    by_setup = {_setup_label(r): r for r in rows}

    def pick(word: str, key: str) -> float | None:
        row = next((r for label, r in by_setup.items() if word in label.lower()), {})
        return _num(row.get(key))

    baseline = _num(f.get("baseline_ttft_s"))
    values = {
        "baseline_ttft_s": baseline, "slo_ttft_s": _num(f.get("slo_ttft_s")),
        "naive_ttft_p95_s": pick("naive", "ttft_p95_s"),
        "gateway_ttft_p95_s": pick("gateway", "ttft_p95_s"),
        "gateway_shed": pick("gateway", "shed"),
        "naive_goodput_rps": pick("naive", "goodput_rps"),
        "gateway_goodput_rps": pick("gateway", "goodput_rps"),
    }
    values["naive_p95_over_baseline"] = _ratio(values["naive_ttft_p95_s"], baseline)
    values["gateway_p95_over_baseline"] = _ratio(values["gateway_ttft_p95_s"], baseline)
    return values, series


def _prefix(f: Mapping[str, Any], runs: Path) -> tuple[dict, dict]:
    on, off = f.get("cache_on") or {}, f.get("cache_off") or {}
    shared = f.get("shared") or {}
    values = {
        "users": _num(f.get("users")), "prompt_tokens": _num(shared.get("prompt_tokens")),
        "shared_tokens": _num(shared.get("shared_tokens")),
        "shared_blocks": _num(shared.get("shared_blocks")),
        "hit_rate": _num(on.get("hit rate")),
        "prefill_on": _num(on.get("prefill tokens computed")),
        "prefill_off": _num(off.get("prefill tokens computed")),
        "running_on": _num(on.get("max running")), "running_off": _num(off.get("max running")),
        "ttft_p95_on_s": _num(on.get("TTFT p95 (s)")),
        "ttft_p95_off_s": _num(off.get("TTFT p95 (s)")),
    }
    values["ttft_off_over_on"] = _ratio(values["ttft_p95_off_s"], values["ttft_p95_on_s"])
    series = {"setup": ["cache on", "cache off"],
              "ttft_p95_s": [values["ttft_p95_on_s"], values["ttft_p95_off_s"]],
              "max_running": [values["running_on"], values["running_off"]]}
    return values, series


def _old_replicas(row: Mapping[str, Any]) -> object:
    """Plans saved before 07 sized replicas by arrival rate named the key after the users
    ('replicas for 500 users')."""
    return next((v for k, v in row.items() if k.startswith("replicas for ")), None)


def _capacity(f: Mapping[str, Any], runs: Path) -> tuple[dict, dict]:
    rows = _records(f, "plan")
    here = next((row for row in rows if row.get("setup") == "this machine"), {})
    others = [row for row in rows if row.get("setup") != "this machine"]
    # The article's card at its measured tok/s, and its roofline (an upper bound). Files saved
    # before 07 priced the card at the roofline only: that row is then the roofline's.
    card = next((r for r in others if str(r.get("numbers", "")).startswith("MEASURED")), {})
    roofline = next((r for r in others if str(r.get("numbers", "")).startswith("PREDICTED")), {})
    cold = f.get("cold_start") or {}
    values = {
        "cold_start_s": _num(cold.get("start_to_first_token_s")),
        "users_per_replica": _num(here.get("users per replica")),
        "users_predicted": _num(f.get("operating_point_predicted_users")),
        "agg_tok_s": _num(here.get("aggregate tok/s")),
        "usd_per_million": _num(here.get("USD per million output tokens")),
        "users": _num(here.get("users to serve")),
        "think_s": _num(here.get("think time (s)")),
        "replicas": _num(here.get("replicas, all in flight", _old_replicas(here))),
        "replicas_by_arrival": _num(here.get("replicas, by arrival rate")),
        "card_users": _num(card.get("users per replica")),
        "card_tok_s": _num(card.get("aggregate tok/s")),
        "card_usd_per_million": _num(card.get("USD per million output tokens")),
        "card_break_even": _num(card.get("break-even utilisation")),
        "card_replicas_by_arrival": _num(card.get("replicas, by arrival rate")),
        "roofline_tok_s": _num(roofline.get("aggregate tok/s")),
        "roofline_usd_per_million": _num(roofline.get("USD per million output tokens")),
    }
    sweep = _records(f, "sweep")
    series = {"concurrency": _column(sweep, "concurrency"),
              "usd_per_million": _column(sweep, "usd_per_million")}
    return values, series
