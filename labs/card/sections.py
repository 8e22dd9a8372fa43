"""The sections: what each notebook saved, which rows the card shows, and the article beside them.

One `Section` per notebook 01-07, in page order. A `Row`'s key names a value its section's
extractor (`labs.card.extract`) returns; its `article` is the figure from `labs.article` the
card prints beside the measured one (None where the article published none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model import article
from .extract import _admission, _batching, _capacity, _ceiling, _kv, _prefix, _provision

ArticleValue = float | tuple[float, float] | str | None


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    fmt: str                   # format spec for the number, e.g. ",.1f", ".0%"
    article: ArticleValue = None


@dataclass(frozen=True)
class Section:
    key: str
    notebook: str
    title: str
    what: str
    needs: tuple[str, ...]     # findings keys without which the section is incomplete
    extract: Callable[[Mapping[str, Any], Path], tuple[dict, dict]]
    rows: tuple[Row, ...]

    @property
    def number(self) -> str:
        return self.notebook[:2]


_A = article
_A_BEST = max(_A.BATCHING.items(), key=lambda kv: kv[1][0])  # (users, (aggregate, per user))
SECTIONS: tuple[Section, ...] = (
    Section("provision", "01_provision", "01 · The first request",
            "One request's TTFT is small and grows with the prompt; it hides how the server "
            "behaves under load.",
            ("first_request_ttft_s", "ttft_by_prompt_length"), _provision, (
                Row("first request TTFT (s)", "first_request_ttft_s", ".2f",
                    _A.FIRST_REQUEST_TTFT_S),
                Row("short prompt (tokens)", "short_prompt_tokens", ",.0f"),
                Row("  its TTFT, median (s)", "short_prompt_ttft_s", ".2f"),
                Row("long prompt (tokens)", "long_prompt_tokens", ",.0f"),
                Row("  its TTFT, median (s)", "long_prompt_ttft_s", ".2f"),
                Row("prefill rate (prompt tok/s)", "prefill_tok_s", ",.0f"),
                Row("KV pool of the naive profile (tokens)", "kv_pool_tokens", ",.0f"),
            )),
    Section("ceiling", "02_bandwidth_ceiling", "02 · Bandwidth ceiling and one stream",
            "Decode reads every weight once per token, so one stream cannot beat "
            "bandwidth / weight bytes.",
            ("bandwidth_read_gbs", "weight_bytes", "ceiling_tok_s", "single_stream"), _ceiling, (
                Row("memory bandwidth, read (GB/s)", "bandwidth_read_gbs", ",.1f",
                    _A.BANDWIDTH_GBS),
                Row("weight bytes (GB)", "weight_gb", ",.2f", _A.WEIGHTS_GB),
                Row("ceiling = bandwidth / weights (tok/s)", "ceiling_tok_s", ",.1f",
                    _A.CEILING_TOK_S),
                Row("single stream, measured (tok/s)", "single_stream_tok_s", ",.1f",
                    _A.MEASURED_SINGLE_STREAM_TOK_S),
                Row("fraction of the ceiling", "fraction_of_ceiling", ".0%",
                    (_A.MEASURED_SINGLE_STREAM_TOK_S[0] / _A.CEILING_TOK_S,
                     _A.MEASURED_SINGLE_STREAM_TOK_S[1] / _A.CEILING_TOK_S)),
            )),
    Section("batching", "03_continuous_batching", "03 · Continuous batching and its cliff",
            "A step's shared part (the weight read on a GPU, mostly fixed per-step cost on this "
            "CPU) serves every request in flight: aggregate throughput multiplies, each user "
            "slows down, and past the cliff extra users only wait.",
            ("sweep",), _batching, (
                Row("1 user (tok/s)", "single_user_tok_s", ",.1f", _A.BATCHING[1][0]),
                Row("best aggregate (tok/s)", "best_agg_tok_s", ",.0f", _A_BEST[1][0]),
                Row("  at users", "best_at_users", ",.0f", float(_A_BEST[0])),
                Row("batching gain (best / 1 user)", "batching_gain", ",.1f",
                    _A_BEST[1][0] / _A.BATCHING[1][0]),
                Row("cliff: throughput flattens after (users)", "cliff_users", ",.0f",
                    f"not reached by {max(_A.BATCHING)} users"),
                Row("continuous / static batching", "continuous_over_static", ",.2f"),
                Row("HTTP errors in the sweep", "errors", ",.0f"),
            )),
    Section("kv", "04_kv_cache_exhaustion", "04 · The KV pool and the staircase",
            "Ask for more KV cache than the pool holds and nothing fails: requests wait their turn "
            "and TTFT climbs in steps, every response 200 OK.",
            ("pool_tokens", "users", "prompt_tokens", "ttft_by_request"), _kv, (
                Row("KV blocks", "num_gpu_blocks", ",.0f", float(_A.NUM_GPU_BLOCKS)),
                Row("block size (tokens)", "block_size", ",.0f", float(_A.BLOCK_SIZE)),
                Row("pool = blocks x block size (tokens)", "pool_tokens", ",.0f",
                    float(_A.POOL_TOKENS)),
                Row("users", "users", ",.0f", float(_A.KV_USERS)),
                Row("prompt per user (tokens)", "prompt_tokens", ",.0f",
                    float(_A.KV_PROMPT_TOKENS)),
                Row("demand = users x prompt (tokens)", "demand_tokens", ",.0f",
                    float(_A.KV_DEMAND_TOKENS)),
                Row("demand / pool", "demand_over_pool", ",.1f",
                    _A.KV_DEMAND_TOKENS / _A.POOL_TOKENS),
                Row("requests that fit at once, predicted", "fit_at_once_predicted", ",.0f",
                    f"~{_A.KV_FAST_REQUESTS} fast"),
                Row("most requests running at once", "max_running", ",.0f"),
                Row("TTFT, first request (s)", "ttft_first_s", ",.1f", "a few"),
                Row("TTFT, last request (s)", "ttft_last_s", ",.1f", _A.KV_TTFT_PLATEAU_S),
                Row("HTTP errors", "http_errors", ",.0f", 0.0),
            )),
    Section("admission", "05_bounded_admission", "05 · Naive, bounded, gateway",
            "One overload, four setups: where the backlog waits decides who gets a fast answer "
            "and who gets an honest 503.",
            ("baseline_ttft_s", "comparison"), _admission, (
                Row("unloaded p95 TTFT, baseline (s)", "baseline_ttft_s", ".2f"),
                Row("SLO: p95 TTFT within (s)", "slo_ttft_s", ".2f"),
                Row("naive: p95 TTFT (s)", "naive_ttft_p95_s", ".2f"),
                Row("  x baseline", "naive_p95_over_baseline", ",.1f"),
                Row("gateway: p95 TTFT of served requests (s)", "gateway_ttft_p95_s", ".2f",
                    _A.BOUNDED_ADMITTED_TTFT_S),
                Row("  x baseline", "gateway_p95_over_baseline", ",.1f", "near baseline"),
                Row("gateway: shed with 503", "gateway_shed", ",.0f"),
                Row("goodput, naive (req/s)", "naive_goodput_rps", ".2f"),
                Row("goodput, gateway (req/s)", "gateway_goodput_rps", ".2f"),
            )),
    Section("prefix", "06_prefix_caching", "06 · Prefix caching",
            "A shared system prompt is computed once and its full KV blocks are stored once: "
            "the users that exhausted 04's pool fit in it.",
            ("users", "prediction", "check"), _prefix, (
                Row("users", "users", ",.0f"),
                Row("prompt per user (tokens)", "prompt_tokens", ",.0f"),
                Row("  of which shared (tokens)", "shared_tokens", ",.0f"),
                Row("  full blocks shared", "shared_blocks", ",.0f"),
                Row("prefix cache hit rate", "hit_rate", ".0%"),
                Row("prefill tokens computed, cache on", "prefill_on", ",.0f"),
                Row("prefill tokens computed, cache off", "prefill_off", ",.0f"),
                Row("most running at once, cache on", "running_on", ",.0f"),
                Row("most running at once, cache off", "running_off", ",.0f"),
                Row("p95 TTFT, cache on (s)", "ttft_p95_on_s", ".2f", "near zero"),
                Row("p95 TTFT, cache off (s)", "ttft_p95_off_s", ".2f"),
                Row("  off / on", "ttft_off_over_on", ",.1f"),
            )),
    Section("capacity", "07_capacity_and_cost", "07 · Capacity and cost",
            "Plan with the tok/s at the operating point (every user within the SLO and at reading "
            "speed), not the benchmark's best; a token costs price / (3,600 x tok/s). Users are "
            "not requests: by Little's law N users who think between requests keep only "
            "N x W / (W + think) in flight.",
            ("plan", "sweep"), _capacity, (
                Row("cold start to the first token (s)", "cold_start_s", ",.1f", "30-90 (repo)"),
                Row("users a replica, measured", "users_per_replica", ",.0f"),
                Row("  predicted", "users_predicted", ",.0f"),
                Row("tok/s at the operating point", "agg_tok_s", ",.0f"),
                Row("USD per million output tokens (assumed price)", "usd_per_million", ",.3f"),
                Row("users to serve", "users", ",.0f"),
                Row("  replicas, every user always in flight", "replicas", ",.0f"),
                Row("  think time between requests (s)", "think_s", ",.0f"),
                Row("  replicas by arrival rate (Little's law)", "replicas_by_arrival", ",.0f"),
                # the card's rows are the article's own measurement, so no article column
                Row("article's card, at its measured tok/s: users a replica", "card_users", ",.0f"),
                Row("  tok/s (the article's)", "card_tok_s", ",.0f"),
                Row("  USD per million output tokens", "card_usd_per_million", ",.3f"),
                Row("  break-even utilisation against the API", "card_break_even", ".0%"),
                Row("  replicas by arrival rate", "card_replicas_by_arrival", ",.0f"),
                Row("  roofline, an upper bound: tok/s", "roofline_tok_s", ",.0f"),
                Row("  roofline: USD per million output tokens", "roofline_usd_per_million",
                    ",.3f"),
            )),
)
