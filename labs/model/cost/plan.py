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
"""

from __future__ import annotations

import math
import numbers
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from ...errors import ConfigError, ServerError
from ...serving.profiles import get_profile
from ...settings import Settings
from ...workload import Burst, Closed, Workload
from ..simulate import replay

SECONDS_PER_HOUR = 3600
HOURS_PER_MONTH = 730  # 8,760 hours a year / 12: what cloud price sheets bill a month as
TOKENS_PER_MILLION = 1_000_000


# --------------------------------------------------------------------------------------------
# Inputs: a number, its unit, and where it came from


@dataclass(frozen=True)
class Input:
    """One number the plan takes from outside the measurement."""

    name: str
    value: float
    unit: str
    source: str

    def set(self, value: float) -> Input:
        """This input with the value a learner chose: the source then says so, and keeps
        where the default came from."""
        if value == self.value or (math.isnan(value) and math.isnan(self.value)):
            return self
        return replace(self, value=value,
                       source=f"your value (the default {self.value:g} is from: {self.source})")

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.name, "value": self.value, "unit": self.unit,
                "source": self.source}


def inputs_table(inputs: Sequence[Input]) -> pd.DataFrame:
    """One row per input: name, value, unit, source."""
    return pd.DataFrame([i.to_dict() for i in inputs]).set_index("input")


SEED_SERVING = "003_1ee35b452877a9eb.txt"
SEED_DEPLOYMENT = "004_7f1ae39a2077415d.txt"

TTFT_MULTIPLE = Input(
    "p95 TTFT limit", 10.0, "x the median TTFT of one user alone",
    "course choice: a multiple, so one rule fits any machine; one user alone waits ~45-85 ms "
    "on the CPU default and ~50 ms on the article's card (datasheet prediction), so 10x is "
    f"~0.5-0.9 s, about the chat target of seed {SEED_SERVING} (TTFT 'under 500 milliseconds "
    "or the experience feels sluggish')")
READING_WORDS_PER_S = Input(
    "reading speed", 5.0, "words/s",
    "Brysbaert (2019), 'How many words do we read per minute?', Journal of Memory and "
    "Language 109: adults read English silently at ~238 words/min (~4 words/s) on average; "
    "5 words/s (300 words/min) leaves room for a fast reader")
TOKENS_PER_WORD = Input(
    "tokens per word", 4 / 3, "tokens/word",
    "OpenAI's rule of thumb for English text (1 token is about 0.75 words); other languages "
    "and tokenizers take more")
USERS = Input(
    "concurrent users to serve", 500, "users",
    f"the scenario of seed {SEED_SERVING}: '500 concurrent users at 20 tokens per second "
    "each' (its 20 tok/s is a streaming target, three times faster than anyone reads)")
ARTICLE_CARD_USD_PER_HOUR = Input(
    "RTX 4000 Ada (article's card), price", 0.50, "USD/hour",
    f"seed {SEED_DEPLOYMENT} (2025), GPU table: $0.50/hr is its RTX 4090 row, the other "
    "Ada-generation card in it; no seed prices the RTX 4000 Ada itself (the table's '7B "
    "production' card, the A10, is $1.50/hr). Check your provider's price for the "
    "article's node type, g2-gpu-rtx4000a1-m")
API_USD_PER_MILLION = Input(
    "managed API, price", 0.50, "USD per million output tokens",
    f"seed {SEED_DEPLOYMENT}, '2025 (Current)': distilled models at $0.10-0.50/1M, the tier "
    "a 7B model competes in (production models $1-3/1M, frontier $10-15/1M; seed "
    f"{SEED_SERVING}: GPT-4 Turbo $30/1M output tokens in 2024)")
CPU_USD_PER_HOUR = Input(
    "this machine, price", 0.10, "USD/hour",
    "an assumption, not from a seed (none prices a CPU machine): the order of an on-demand "
    "2-vCPU, 8 GiB general-purpose cloud VM in 2025. Put your own")
THINK_S = Input(
    "think time between a user's requests", 30.0, "s",
    "an assumption, not from a seed: a chat user reads the answer while it streams (at reading "
    "speed, so the reading ends about when the answer does), then types the next question; "
    "~20 words at ~40 words/min is ~30 s. An agent or a batch job thinks ~0 s; a user who "
    "reads, leaves and comes back later thinks minutes. Put your users' own figure")
LINK_GBIT_S = Input(
    "download link for the weights", 1.0, "Gbit/s",
    "an assumption: a 1 Gbit/s path from the model hub or an object store to the node")

# Seed 004's GPU table (2025): card -> USD per hour, most specific name first (an A100 80GB
# before an A100; "A10" must not match "A100").
SEED_GPU_USD_PER_HOUR: tuple[tuple[str, str, float], ...] = (
    # (row as the seed writes it, pattern on the nvidia-smi name, USD/hour)
    ("H200 141GB", r"H200", 15.00),
    ("H100 80GB", r"H100", 10.00),
    ("A100 80GB", r"A100.*80", 6.00),
    ("A100 40GB", r"A100", 4.00),
    ("L40S", r"L40S", 2.00),
    ("A10", r"\bA10G?\b", 1.50),
    ("RTX 4090", r"4090", 0.50),
)


def gpu_price(gpu_name: str) -> Input | None:
    """Seed 004's hourly price for the GPU `nvidia-smi` calls `gpu_name` (the article's card
    gets `ARTICLE_CARD_USD_PER_HOUR`), or None when no seed prices it."""
    if re.search(r"RTX 4000 ADA", gpu_name.upper()):
        return replace(ARTICLE_CARD_USD_PER_HOUR, name=f"this machine ({gpu_name}), price")
    for row, pattern, usd in SEED_GPU_USD_PER_HOUR:
        if re.search(pattern, gpu_name.upper()):
            return Input(f"this machine ({gpu_name}), price", usd, "USD/hour",
                         f"seed {SEED_DEPLOYMENT} (2025), GPU table, row '{row}': ${usd:.2f}/hr")
    return None


def this_machine_price(backend: str, gpu_names: Sequence[str] = ()) -> Input:
    """The hourly price to put on the machine the curve was measured on: the CPU assumption
    on the CPU path, the seeds' price of its (first) GPU, which is the one a course server
    runs on, and NaN (with a source that says to set it) for a GPU no seed prices, rather
    than a made-up figure."""
    if backend != "gpu" or not gpu_names:
        return CPU_USD_PER_HOUR
    found = gpu_price(gpu_names[0])
    if found is not None:
        return found
    return Input(f"this machine ({gpu_names[0]}), price", math.nan, "USD/hour",
                 "no seed prices this GPU: set the machine's price yourself")


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
# Scaling on demand


def arrivals_during(seconds: float, rate_rps: float) -> float:
    """Requests that arrive while a new replica starts (`seconds`) at `rate_rps` beyond what
    the running replicas serve: each waits for the start, or is shed (503)."""
    if seconds < 0:
        raise ConfigError(f"seconds must be >= 0, not {seconds!r}.")
    _positive("rate_rps", rate_rps)
    return seconds * rate_rps


def download_s(weight_bytes: float, link_gbit_s: float) -> float:
    """Seconds to copy the weights over a link of `link_gbit_s` (decimal Gbit/s): a lower
    bound for a cold replica without the weights on local disk."""
    _positive("weight_bytes", weight_bytes)
    _positive("link_gbit_s", link_gbit_s)
    return weight_bytes * 8 / (link_gbit_s * 1e9)


def measure_cold_start(profile: str = "naive", settings: Any = None) -> tuple[
        dict[str, Any] | None, list[Any]]:
    """Stop this port's server, start `profile` again and time it: (timings, [the first
    request's run]). Timings: `stop_s` (not counted), `start_to_ready_s` (until /health
    answers), `start_to_first_token_s` (until one request's first token arrives), and
    `enforce_eager` (a start that compiles nothing). (None, []) when LABS_BASE_URL names a
    server this notebook cannot restart."""
    from ...load import loadgen  # heavy: httpx only for the live cold start
    from ...serving.connect import connect  # heavy: httpx only for the live cold start
    from ...serving.server import ensure_server, stop  # heavy: httpx only for the live cold start

    settings = settings or Settings.from_env()
    if settings.base_url_override:
        return None, []
    t0 = time.perf_counter()
    stop(settings)
    t_start = time.perf_counter()
    ensure_server(profile, settings)
    t_ready = time.perf_counter()
    first = loadgen.run_sync(Closed(1, requests=1), Workload(max_tokens=16), conn=connect(),
                             progress=False, label="first request after a cold start")
    record = first.records[0]
    if not record.ok:
        raise ServerError(f"the first request after a cold start failed: {record.error}")
    t_first = first.metadata["perf_counter_t0"] + record.first_token_s
    return {"stop_s": t_start - t0, "start_to_ready_s": t_ready - t_start,
            "start_to_first_token_s": t_first - t_start,
            "enforce_eager": "--enforce-eager" in get_profile(profile).flags(settings.backend)
            }, [first]


# --------------------------------------------------------------------------------------------
# Sizing 07's sweep to its time budget


@dataclass(frozen=True)
class SweepSize:
    """Which levels a sweep measures and how many rounds of requests each (a level of c users
    sends max(c x rounds, 4) requests, as `labs.experiments.predicted_sweep` replays it)."""

    levels: tuple[int, ...]
    rounds: int

    def __repr__(self) -> str:
        return f"levels {', '.join(map(str, self.levels))} x {self.rounds} round(s)"


def sweep_sizes(candidates: Sequence[int], operating_point: int,
                rounds: Sequence[int] = (1, 2)) -> list[SweepSize]:
    """Sweeps worth measuring, each with one user alone (the target's reference) and the
    doublings around the predicted `operating_point`, from the narrowest bracket (half to
    twice the point: the least that shows where the target binds) to every candidate level;
    each bracket at every number of `rounds`. Unordered by time: sort by `sweep_seconds`."""
    sizes: list[SweepSize] = []
    for width in range(1, len(candidates) + 1):
        low, high = operating_point / 2 ** width, operating_point * 2 ** width
        levels = tuple(c for c in candidates if c == 1 or low <= c <= high)
        for n in rounds:
            size = SweepSize(levels, n)
            if size not in sizes:
                sizes.append(size)
    return sizes


def sweep_seconds(steps: Any, limits: Any, size: SweepSize, *, prompt_tokens: int,
                  output_tokens: int) -> float:
    """The sweep's duration predicted by the calibrated replay: each level in a closed loop,
    one after the other, and the two warm-up requests sent alone before the first."""
    warm = replay(steps, limits, Burst(1), prompt_tokens, output_tokens).duration_s
    return 2 * warm + sum(replay(steps, limits, Closed(c, requests=max(c * size.rounds, 4)),
                                 prompt_tokens, output_tokens).duration_s for c in size.levels)


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
