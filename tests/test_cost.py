"""Capacity and cost arithmetic (labs.cost): operating point, replicas, dollars,
break-even."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from labs.errors import ConfigError
from labs.model import cost


def sweep() -> pd.DataFrame:
    """A sweep shaped like notebook 03's on the CPU default (out of order on purpose)."""
    return pd.DataFrame({
        "concurrency": [16, 1, 4, 64, 128],
        "agg_tok_s": [425.0, 44.0, 176.0, 610.0, 738.0],
        "per_user_tok_s": [26.7, 44.3, 44.2, 9.5, 5.8],
        "ttft_s_p50": [0.40, 0.045, 0.126, 1.70, 1.99],
        "ttft_s_p95": [0.41, 0.053, 0.126, 1.70, 2.51],
    })


# --- the arithmetic, against the seeds' own worked examples ----------------------------------

def test_cost_per_million_matches_seed_003s_example() -> None:
    # Seed 003: 2 GPUs x $3/hr = $6/hr, 200,000 tokens/hour -> $0.03 per 1K tokens.
    assert cost.cost_per_million_tokens(6.0, 200_000 / 3600) == pytest.approx(30.0)


def test_cost_per_million_is_the_hour_over_its_tokens() -> None:
    assert cost.cost_per_million_tokens(0.50, 732.0) == pytest.approx(0.5 / (3600 * 732) * 1e6)
    assert cost.cost_per_million_tokens(0.50, 1464.0) == pytest.approx(
        cost.cost_per_million_tokens(0.50, 732.0) / 2)   # twice the tokens, half the price
    assert math.isnan(cost.cost_per_million_tokens(math.nan, 100.0))  # a machine with no price
    for bad in (0, -1.0, math.inf, "fast", None):
        with pytest.raises(ConfigError):
            cost.cost_per_million_tokens(1.0, bad)


def test_break_even_utilisation() -> None:
    per_million = cost.cost_per_million_tokens(0.50, 732.0)           # ~$0.19
    assert cost.break_even_utilisation(0.50, 732.0, 0.50) == pytest.approx(per_million / 0.50)
    # Busy that fraction of the hour, the tokens made cost exactly the API's price.
    u = cost.break_even_utilisation(0.50, 732.0, 0.50)
    assert 0.50 / (u * 3600 * 732) * 1e6 == pytest.approx(0.50)
    # A dearer GPU can lose even when busy around the clock: above 1.
    assert cost.break_even_utilisation(1.50, 732.0, 0.50) > 1
    with pytest.raises(ConfigError):
        cost.break_even_utilisation(0.50, 732.0, 0)


def test_replicas_round_up_to_whole_servers() -> None:
    assert cost.replicas_needed(500, 32) == 16    # 15.6 -> 16
    assert cost.replicas_needed(512, 32) == 16
    assert cost.replicas_needed(513, 32) == 17
    assert cost.replicas_needed(1, 64) == 1
    assert cost.replicas_needed(np.int64(500), np.int64(16)) == 32
    for users, per in ((0, 4), (10, 0), (10.5, 4), (True, 4), (10, 2.0)):
        with pytest.raises(ConfigError):
            cost.replicas_needed(users, per)


def test_monthly_cost_and_reading_speed() -> None:
    assert cost.monthly_cost(16, 0.50) == pytest.approx(16 * 0.5 * 730)
    assert cost.reading_speed_tok_s(5.0, 4 / 3) == pytest.approx(6.667, abs=1e-3)
    with pytest.raises(ConfigError):
        cost.reading_speed_tok_s(0, 1.3)


# --- the operating point ----------------------------------------------------------------------

def test_target_is_relative_to_one_user_alone() -> None:
    target = cost.Target.relative(0.045, 10, 6.7)
    assert target.ttft_p95_s == pytest.approx(0.45) and target.per_user_tok_s == 6.7
    with pytest.raises(ConfigError):
        cost.Target.relative(0.045, 0, 6.7)
    with pytest.raises(ConfigError):
        cost.Target(ttft_p95_s=-1, per_user_tok_s=6.7)


def test_operating_point_is_the_most_users_that_meet_both_halves() -> None:
    point = cost.operating_point(sweep(), cost.Target(ttft_p95_s=0.45, per_user_tok_s=6.7))
    assert point["concurrency"] == 16 and point["agg_tok_s"] == 425.0
    assert isinstance(point["concurrency"], int) and point["top_of_sweep"] is False
    # A lax TTFT limit: reading speed decides (128 users stream at 5.8 tok/s, too slow).
    lax = cost.operating_point(sweep(), cost.Target(ttft_p95_s=10.0, per_user_tok_s=6.7))
    assert lax["concurrency"] == 64
    # Nothing stops it inside the sweep: the top level, flagged as a lower bound.
    top = cost.operating_point(sweep(), cost.Target(ttft_p95_s=10.0, per_user_tok_s=1.0))
    assert top["concurrency"] == 128 and top["top_of_sweep"] is True


def test_no_level_meeting_the_target_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="relax"):
        cost.operating_point(sweep(), cost.Target(ttft_p95_s=0.01, per_user_tok_s=6.7))


def test_a_level_with_no_answers_meets_nothing() -> None:
    table = sweep().astype(object)
    table.loc[table.concurrency == 16, "ttft_s_p95"] = None
    judged = cost.judged(table, cost.Target(ttft_p95_s=0.45, per_user_tok_s=6.7))
    assert list(judged["concurrency"]) == [1, 4, 16, 64, 128]   # sorted
    assert list(judged["meets_target"]) == [True, True, False, False, False]
    with pytest.raises(ConfigError, match="column"):
        cost.judged(sweep().drop(columns="ttft_s_p95"), cost.Target(1, 1))


def test_priced_tokens_get_cheaper_as_users_are_added() -> None:
    table = cost.priced(sweep(), cost.Target(ttft_p95_s=0.45, per_user_tok_s=6.7), 0.10)
    prices = list(table["usd_per_million"])
    assert prices == sorted(prices, reverse=True)
    assert prices[0] == pytest.approx(cost.cost_per_million_tokens(0.10, 44.0))


def test_summary_row_is_one_line_of_a_plan() -> None:
    point = cost.operating_point(sweep(), cost.Target(ttft_p95_s=0.45, per_user_tok_s=6.7))
    row = cost.summary_row("here", point, users=500, usd_per_hour=0.10,
                           api_usd_per_million=0.50, source="measured", output_tokens=64,
                           think_s=30.0)
    assert row["users per replica"] == 16 and row["replicas, all in flight"] == 32
    # W = 64 / 26.7 = 2.397 s; in flight = 500 x 2.397 / 32.397 = 37.0 -> 3 replicas of 16
    assert row["time in system (s)"] == pytest.approx(64 / 26.7)
    assert row["in flight, by arrival rate"] == pytest.approx(500 * 2.397 / 32.397, abs=0.01)
    assert row["replicas, by arrival rate"] == 3
    assert row["USD a month, all in flight"] == pytest.approx(32 * 0.10 * 730)
    assert row["USD a month, by arrival rate"] == pytest.approx(3 * 0.10 * 730)
    assert row["break-even utilisation"] == pytest.approx(
        cost.cost_per_million_tokens(0.10, 425.0) / 0.50)
    # No key names the number of users: a results file reads the same whatever N was.
    assert row["users to serve"] == 500 and not any("500" in key for key in row)
    assert row.keys() == cost.summary_row(
        "here", point, users=2000, usd_per_hour=0.10, api_usd_per_million=0.50,
        source="measured", output_tokens=64, think_s=0.0).keys()


# --- replicas by arrival rate: Little's law ---------------------------------------------------

def test_arrival_rate_is_users_over_a_request_and_a_think() -> None:
    # 500 users, each request 16 s in the system, 30 s thinking: one request every 46 s each.
    assert cost.arrival_rate_rps(500, 16.0, 30.0) == pytest.approx(500 / 46)
    assert cost.arrival_rate_rps(10, 2.0, 0) == pytest.approx(5.0)   # no think: N / W
    for bad in (-1.0, math.inf, True):
        with pytest.raises(ConfigError):
            cost.arrival_rate_rps(10, 2.0, bad)
    with pytest.raises(ConfigError):
        cost.arrival_rate_rps(10, 0, 30.0)


def test_littles_law_in_flight_is_rate_times_time() -> None:
    assert cost.in_flight(5.0, 2.0) == pytest.approx(10.0)
    assert cost.in_flight(500 / 46, 16.0) == pytest.approx(173.9, abs=0.05)
    # With no think time every user is always in flight: L = (N / W) x W = N.
    assert cost.in_flight(cost.arrival_rate_rps(500, 16.0, 0), 16.0) == pytest.approx(500)
    assert cost.time_in_system_s(256, 16.0) == 16.0
    with pytest.raises(ConfigError):
        cost.time_in_system_s(256, 0)


def test_replicas_by_arrival_rate() -> None:
    # The article's card at its measured 32 users, 16 tok/s each, 256-token answers (W = 16 s):
    # 500 users thinking 30 s keep 500 x 16 / 46 = 173.9 in flight: 6 replicas of 32, not 16.
    assert cost.replicas_by_arrival(500, 32, time_in_system_s=16.0, think_s=30.0) == 6
    assert cost.replicas_by_arrival(500, 32, time_in_system_s=16.0, think_s=0) == 16
    assert cost.replicas_by_arrival(500, 32, time_in_system_s=16.0, think_s=0) == \
        cost.replicas_needed(500, 32)
    # 64 users, W = 2 s, think 2 s: exactly 32 in flight fills exactly 2 replicas of 16 ...
    assert cost.replicas_by_arrival(64, 16, time_in_system_s=2.0, think_s=2.0) == 2
    # ... and one more user needs a third; a handful of users still needs one replica.
    assert cost.replicas_by_arrival(65, 16, time_in_system_s=2.0, think_s=2.0) == 3
    assert cost.replicas_by_arrival(1, 16, time_in_system_s=2.0, think_s=600.0) == 1
    with pytest.raises(ConfigError):
        cost.replicas_by_arrival(500, 0, time_in_system_s=16.0, think_s=30.0)


def test_replicas_table_puts_both_sizings_side_by_side() -> None:
    table = cost.replicas_table(500, 32, time_in_system_s=16.0, think_s=30.0)
    assert list(table.index) == ["N always in flight", "by arrival rate"]
    always, arrival = table.loc["N always in flight"], table.loc["by arrival rate"]
    assert always["in flight = rate x W"] == pytest.approx(500) and always["replicas"] == 16
    assert arrival["arrival rate = N / (W + Z) (req/s)"] == pytest.approx(500 / 46)
    assert arrival["in flight = rate x W"] == pytest.approx(8000 / 46)
    assert arrival["replicas"] == 6 and arrival["think time Z (s)"] == 30.0


# --- inputs and prices --------------------------------------------------------------------------

def test_every_default_input_names_its_unit_and_source() -> None:
    defaults = [cost.TTFT_MULTIPLE, cost.READING_WORDS_PER_S, cost.TOKENS_PER_WORD, cost.USERS,
                cost.THINK_S, cost.ARTICLE_CARD_USD_PER_HOUR, cost.API_USD_PER_MILLION,
                cost.CPU_USD_PER_HOUR, cost.LINK_GBIT_S]
    for item in defaults:
        assert item.unit and len(item.source) > 30, item.name
    for item in (cost.ARTICLE_CARD_USD_PER_HOUR, cost.API_USD_PER_MILLION):
        assert "seed 004_" in item.source and "2025" in item.source
    assert "assumption" in cost.CPU_USD_PER_HOUR.source
    assert "assumption" in cost.THINK_S.source and cost.THINK_S.unit == "s"
    table = cost.inputs_table(defaults)
    assert list(table.columns) == ["value", "unit", "source"] and len(table) == len(defaults)


def test_a_changed_input_says_so_and_keeps_the_default_source() -> None:
    assert cost.USERS.set(500) is cost.USERS
    mine = cost.USERS.set(2000)
    assert mine.value == 2000 and isinstance(mine.value, int)
    assert mine.source.startswith("your value") and "seed 003_" in mine.source


@pytest.mark.parametrize(("name", "usd"), [
    ("NVIDIA H200", 15.0), ("NVIDIA H100 80GB HBM3", 10.0), ("NVIDIA A100-SXM4-80GB", 6.0),
    ("NVIDIA A100-SXM4-40GB", 4.0), ("NVIDIA L40S", 2.0), ("NVIDIA A10G", 1.5),
    ("NVIDIA A10", 1.5), ("NVIDIA GeForce RTX 4090", 0.5),
    ("NVIDIA RTX 4000 Ada Generation", cost.ARTICLE_CARD_USD_PER_HOUR.value),
])
def test_gpu_prices_come_from_seed_004s_table(name: str, usd: float) -> None:
    price = cost.gpu_price(name)
    assert price is not None and price.value == usd and "seed 004_" in price.source


def test_machine_price_never_invents_a_figure() -> None:
    assert cost.this_machine_price("cpu") is cost.CPU_USD_PER_HOUR
    assert cost.this_machine_price("cpu", ["NVIDIA H200"]) is cost.CPU_USD_PER_HOUR  # CPU forced
    assert cost.this_machine_price("gpu", ["NVIDIA H200"]).value == 15.0
    unknown = cost.this_machine_price("gpu", ["Tesla T4"])
    assert math.isnan(unknown.value) and "yourself" in unknown.source
    assert cost.gpu_price("Tesla T4") is None


# --- scaling on demand ------------------------------------------------------------------------

def test_cold_start_arithmetic() -> None:
    assert cost.arrivals_during(34.0, 6.5) == pytest.approx(221.0)
    assert cost.arrivals_during(0, 6.5) == 0
    assert cost.download_s(15.2e9, 1.0) == pytest.approx(121.6)
    assert cost.download_s(15.2e9, 10.0) == pytest.approx(12.16)
    with pytest.raises(ConfigError):
        cost.arrivals_during(-1, 1.0)
    with pytest.raises(ConfigError):
        cost.download_s(15.2e9, 0)


def test_the_plan_for_the_articles_card_from_its_datasheet() -> None:
    from labs.model import article, predict

    steps = predict.datasheet_steps("rtx-4000-ada", article.MODEL)
    limits = predict.datasheet_limits("rtx-4000-ada", article.MODEL,
                                      num_blocks=article.NUM_GPU_BLOCKS)
    table = predict.prediction_table(steps, limits, [1, 2, 4, 8, 16, 32, 64, 128],
                                     prompt_tokens=64, max_tokens=256)
    alone = float(table.loc[table.concurrency == 1, "ttft_s_p50"].iloc[0])
    target = cost.Target.relative(alone, 10, cost.reading_speed_tok_s(5, 4 / 3))
    point = cost.operating_point(table, target)
    judged = cost.judged(table, target)
    above = judged[judged.concurrency > point["concurrency"]]
    assert point["ttft_s_p95"] <= target.ttft_p95_s and not above["meets_target"].iloc[0]
    assert 1 < point["concurrency"] < 128
    assert cost.cost_per_million_tokens(0.50, point["agg_tok_s"]) < 1.0  # cents, not dollars
