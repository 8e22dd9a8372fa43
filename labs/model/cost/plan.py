"""A capacity plan's arithmetic: the service promised to every user, the operating point
that meets it, and the replicas, dollars and break-even it implies (Little's law for users
who think between requests). Pure functions of their arguments; the package docstring
(`labs.model.cost`) walks through the three steps."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ...errors import ConfigError

SECONDS_PER_HOUR = 3600
HOURS_PER_MONTH = 730  # 8,760 hours a year / 12: what cloud price sheets bill a month as
TOKENS_PER_MILLION = 1_000_000


# --------------------------------------------------------------------------------------------
# The service promised to every user


def reading_speed_tok_s(words_per_s: float, tokens_per_word: float) -> float:
    """Tokens per second a stream must deliver to keep up with a reader: a stream slower
    than that makes the reader wait between words; one much faster buys them nothing."""
    _positive("words_per_s", words_per_s)
    _positive("tokens_per_word", tokens_per_word)
    return words_per_s * tokens_per_word


@dataclass(frozen=True)
class Target:
    """What every user of a replica must get: p95 TTFT at most `ttft_p95_s` seconds, and a
    per-user stream of at least `per_user_tok_s` output tokens per second."""

    ttft_p95_s: float
    per_user_tok_s: float

    def __post_init__(self) -> None:
        _positive("ttft_p95_s", self.ttft_p95_s)
        _positive("per_user_tok_s", self.per_user_tok_s)

    @classmethod
    def relative(cls, single_user_ttft_s: float, multiple: float,
                 per_user_tok_s: float) -> Target:
        """The TTFT limit as a multiple of what one user alone waits on the same server:
        an absolute limit tuned on a GPU is unreachable on a laptop, and one tuned on a
        laptop says nothing on a GPU; the multiple keeps the rule the same everywhere."""
        _positive("single_user_ttft_s", single_user_ttft_s)
        _positive("multiple", multiple)
        return cls(single_user_ttft_s * multiple, per_user_tok_s)

    def describe(self) -> str:
        return (f"p95 TTFT <= {self.ttft_p95_s:.3g} s and >= {self.per_user_tok_s:.3g} "
                "tok/s per user")


def judged(table: pd.DataFrame, target: Target) -> pd.DataFrame:
    """The sweep (columns concurrency, agg_tok_s, per_user_tok_s, ttft_s_p95) with a column
    per half of the target and `meets_target`, both halves at once."""
    numbers = ("concurrency", "agg_tok_s", "per_user_tok_s", "ttft_s_p95")
    _columns(table, numbers)
    out = table.sort_values("concurrency").reset_index(drop=True).copy()
    for name in numbers:  # a level with no answer has None: it meets nothing
        out[name] = pd.to_numeric(out[name], errors="coerce")
    out["ttft_ok"] = out["ttft_s_p95"] <= target.ttft_p95_s
    out["reading_ok"] = out["per_user_tok_s"] >= target.per_user_tok_s
    out["meets_target"] = out["ttft_ok"] & out["reading_ok"]
    return out


def operating_point(table: pd.DataFrame, target: Target) -> dict[str, Any]:
    """The row of the highest concurrency that meets the target: the most users one replica
    serves as promised (on a curve that still climbs, also its cheapest token). It is a
    lower bound when it is the sweep's highest level: a higher one was not measured.

    Raises ConfigError when no level meets it, since a plan then has no replica size."""
    rows = judged(table, target)
    good = rows[rows["meets_target"]]
    if good.empty:
        raise ConfigError(f"no level of the sweep meets the target ({target.describe()}): "
                          "relax it (a larger TTFT multiple, a lower reading speed) or "
                          "sweep lower concurrencies.")
    row = good.iloc[-1]
    point = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    point["concurrency"] = int(point["concurrency"])
    point["top_of_sweep"] = bool(point["concurrency"] == int(rows["concurrency"].max()))
    return point


# --------------------------------------------------------------------------------------------
# Replicas and dollars


def replicas_needed(users: int, users_per_replica: int) -> int:
    """Whole replicas for `users` concurrent users, each replica taking `users_per_replica`
    (its operating point): a fraction of a replica cannot be rented, so round up."""
    for name, value in (("users", users), ("users_per_replica", users_per_replica)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name} must be a whole number >= 1, not {value!r}.")
    return math.ceil(int(users) / int(users_per_replica))


def time_in_system_s(output_tokens: float, per_user_tok_s: float) -> float:
    """W, the seconds one request spends in the system at a level of the sweep: its output
    tokens over the per-user speed there (`per_user_tok_s` counts the request's whole time,
    TTFT included, so this is its end-to-end time)."""
    _positive("output_tokens", output_tokens)
    _positive("per_user_tok_s", per_user_tok_s)
    return output_tokens / per_user_tok_s


def arrival_rate_rps(users: float, time_in_system_s: float, think_s: float) -> float:
    """Requests per second that `users` send when each waits `time_in_system_s` (W) for an
    answer, then thinks `think_s` (Z) before the next request: one request every W + Z
    seconds per user, lambda = N / (W + Z) (the interactive response-time law)."""
    _positive("users", users)
    _positive("time_in_system_s", time_in_system_s)
    if isinstance(think_s, bool) or not isinstance(think_s, numbers.Real) \
            or not math.isfinite(think_s) or think_s < 0:
        raise ConfigError(f"think_s must be a number >= 0, not {think_s!r}.")
    return users / (time_in_system_s + think_s)


def in_flight(rate_rps: float, time_in_system_s: float) -> float:
    """Little's law: requests in the system L = arrival rate lambda x time in system W. It
    holds for any queue in a steady state, whatever the order or the distribution."""
    _positive("rate_rps", rate_rps)
    _positive("time_in_system_s", time_in_system_s)
    return rate_rps * time_in_system_s


def replicas_by_arrival(users: int, users_per_replica: int, *, time_in_system_s: float,
                        think_s: float) -> int:
    """Whole replicas for `users` who think `think_s` between requests: the requests they keep
    in flight (lambda x W, lambda = N / (W + Z)) over what one replica holds at its operating
    point (`users_per_replica` requests in flight, each in the system `time_in_system_s`).
    With `think_s` = 0 every user always has a request in flight: `replicas_needed`."""
    replicas_needed(users, users_per_replica)  # the same checks on the counts
    load = in_flight(arrival_rate_rps(users, time_in_system_s, think_s), time_in_system_s)
    return max(1, math.ceil(round(load / int(users_per_replica), 9)))  # 2.0000000001 is 2


def replicas_table(users: int, users_per_replica: int, *, time_in_system_s: float,
                   think_s: float) -> pd.DataFrame:
    """Two ways to size for `users`: as if each always had a request in flight (think time 0,
    replicas = N / users per replica), and by arrival rate with `think_s` (Little's law)."""
    rows = []
    for label, think in (("N always in flight", 0.0), ("by arrival rate", float(think_s))):
        rate = arrival_rate_rps(users, time_in_system_s, think)
        rows.append({
            "sizing": label, "users": int(users), "think time Z (s)": think,
            "time in system W (s)": float(time_in_system_s),
            "arrival rate = N / (W + Z) (req/s)": rate,
            "in flight = rate x W": in_flight(rate, time_in_system_s),
            "in flight a replica holds": int(users_per_replica),
            "replicas": replicas_by_arrival(users, users_per_replica,
                                            time_in_system_s=time_in_system_s, think_s=think),
        })
    return pd.DataFrame(rows).set_index("sizing")


def cost_per_million_tokens(usd_per_hour: float, tok_s: float) -> float:
    """USD per million output tokens for a server kept busy at `tok_s` (aggregate, all its
    users together): the hour's price over the tokens made in that hour."""
    _positive("usd_per_hour", usd_per_hour, allow_nan=True)
    _positive("tok_s", tok_s)
    return usd_per_hour / (SECONDS_PER_HOUR * tok_s) * TOKENS_PER_MILLION


def break_even_utilisation(usd_per_hour: float, tok_s: float,
                           api_usd_per_million: float) -> float:
    """The fraction of the hour the server must be busy at `tok_s` for its tokens to cost
    what the API charges. The hour is paid whether the server works or idles, so at a
    fraction u busy a token costs cost_per_million / u; u = cost_per_million / API price.
    Above 1 the API is cheaper even with the server busy around the clock."""
    _positive("api_usd_per_million", api_usd_per_million)
    return cost_per_million_tokens(usd_per_hour, tok_s) / api_usd_per_million


def monthly_cost(replicas: int, usd_per_hour: float, hours: float = HOURS_PER_MONTH) -> float:
    """USD a month for `replicas` servers kept running (`hours` a month, 730 by default)."""
    return replicas * usd_per_hour * hours


def priced(table: pd.DataFrame, target: Target, usd_per_hour: float) -> pd.DataFrame:
    """`judged(table, target)` with the cost of a million output tokens at every level: it
    falls as users are added, until the target says no more."""
    out = judged(table, target)
    out["usd_per_million"] = [cost_per_million_tokens(usd_per_hour, t) if t and t > 0
                              else math.nan for t in out["agg_tok_s"]]
    return out


def summary_row(label: str, point: Mapping[str, Any], *, users: int, usd_per_hour: float,
                api_usd_per_million: float, source: str, output_tokens: float,
                think_s: float) -> dict[str, Any]:
    """One line of a capacity plan: the operating point, replicas and dollars it implies.

    Replicas both ways (`replicas_table`): with every user's request always in flight, and by
    arrival rate for users who think `think_s` between requests, each request in the system
    `output_tokens` / the point's per-user tok/s. The keys do not name the number of users
    (it is a value of its own), so a results file reads the same whatever N was."""
    per_million = cost_per_million_tokens(usd_per_hour, point["agg_tok_s"])
    per_replica = int(point["concurrency"])
    w = time_in_system_s(output_tokens, point["per_user_tok_s"])
    replicas = replicas_needed(users, per_replica)
    by_arrival = replicas_by_arrival(users, per_replica, time_in_system_s=w, think_s=think_s)
    return {
        "setup": label, "numbers": source,
        "users per replica": per_replica,
        "aggregate tok/s": point["agg_tok_s"], "per-user tok/s": point["per_user_tok_s"],
        "p95 TTFT (s)": point["ttft_s_p95"], "USD/hour": usd_per_hour,
        "USD per million output tokens": per_million,
        "users to serve": int(users), "think time (s)": float(think_s),
        "time in system (s)": w,
        "in flight, by arrival rate": in_flight(arrival_rate_rps(users, w, think_s), w),
        "replicas, all in flight": replicas,
        "replicas, by arrival rate": by_arrival,
        "USD a month, all in flight": monthly_cost(replicas, usd_per_hour),
        "USD a month, by arrival rate": monthly_cost(by_arrival, usd_per_hour),
        "break-even utilisation": break_even_utilisation(usd_per_hour, point["agg_tok_s"],
                                                         api_usd_per_million),
    }


# --------------------------------------------------------------------------------------------


def _positive(name: str, value: float, *, allow_nan: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number > 0, not {value!r}.") from None
    if allow_nan and math.isnan(number):
        return number
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a number > 0, not {value!r}.")
    return number


def _columns(table: pd.DataFrame, names: Sequence[str]) -> None:
    missing = [n for n in names if n not in table.columns]
    if missing:
        raise ConfigError(f"the sweep table has no column {', '.join(missing)}; give a table "
                          "from labs.results.records.sweep_frame or "
                          "labs.simulate.predict_closed.")
