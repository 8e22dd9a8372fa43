"""07's checks: a replica's price at the operating point, replicas for chat users by arrival
rate (Little's law), and the break-even utilisation against an API.

Three sweeps built here, as 07 measures or predicts them (64 output tokens on the CPU, 256 on a
GPU): the embedded default (SmolLM2-135M on 2 CPU cores, shaped like the course's measured
sweeps), the article's card and an H200 (Qwen2.5-7B, the datasheet roofline of labs.model.predict
replayed through labs.simulate at the levels 07 would choose; rows rounded). The expected
answers come from labs.cost, the module 07's plan uses, so the checks and the plan agree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from labs.course import checks
from labs.model import article, cost

READING_TOK_S = cost.reading_speed_tok_s(5.0, 4 / 3)   # 6.67 tok/s


def _sweep(rows: list[tuple[int, float, float, float]], output_tokens: int) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["concurrency", "agg_tok_s", "per_user_tok_s", "ttft_s_p95"])
    table["e2e_s_p50"] = output_tokens / table["per_user_tok_s"]
    return table


# (users, aggregate tok/s, per-user tok/s, p95 TTFT s)
CPU = _sweep([(1, 20.0, 20.0, 0.06), (8, 76.0, 9.5, 0.30), (16, 119.0, 7.4, 0.55),
              (32, 150.0, 4.7, 1.60)], 64)
CARD = _sweep([(1, 24.2, 24.2, 0.051), (8, 191.1, 23.9, 0.136), (16, 376.6, 23.5, 0.230),
               (32, 732.1, 22.9, 0.419), (64, 1388.6, 21.7, 0.790), (128, 2329.2, 19.3, 1.525),
               (256, 2542.2, 11.3, 8.364)], 256)
H200 = _sweep([(1, 200.5, 200.5, 0.015), (32, 6179.0, 193.5, 0.045), (64, 11944.9, 187.2, 0.071),
               (128, 22272.1, 175.0, 0.135), (256, 36755.5, 145.0, 0.260),
               (512, 43018.4, 85.0, 0.385), (1024, 47019.6, 46.6, 0.537)], 256)
SETUPS = {  # name: (sweep, output tokens, USD/hour, single-user TTFT s)
    "embedded default": (CPU, 64, cost.CPU_USD_PER_HOUR.value, 0.06),
    "article's card": (CARD, 256, cost.ARTICLE_CARD_USD_PER_HOUR.value, 0.051),
    "h200": (H200, 256, 15.00, 0.015),    # seed 004's H200 price
}


def _target(alone_s: float) -> cost.Target:
    return cost.Target.relative(alone_s, 10, READING_TOK_S)


def _target_kw(alone_s: float) -> dict[str, float]:
    t = _target(alone_s)
    return {"ttft_p95_limit_s": t.ttft_p95_s, "min_per_user_tok_s": t.per_user_tok_s}


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LABS_STRICT_CHECKS", raising=False)


def test_the_operating_points_of_the_three_setups() -> None:
    points = {name: cost.operating_point(sweep, _target(alone))["concurrency"]
              for name, (sweep, _, _, alone) in SETUPS.items()}
    assert points == {"embedded default": 16, "article's card": 32, "h200": 128}


# price_at_operating_point ----------------------------------------------------------------------

def _price(value: object, setup: str):
    sweep, _, usd, alone = SETUPS[setup]
    return checks.capacity.price_at_operating_point(value, sweep, usd_per_hour=usd,
                                                    **_target_kw(alone))


def _right_price(setup: str) -> float:
    sweep, _, usd, alone = SETUPS[setup]
    point = cost.operating_point(sweep, _target(alone))
    return cost.cost_per_million_tokens(usd, point["agg_tok_s"])


@pytest.mark.parametrize("setup", list(SETUPS))
def test_price_accepts_the_operating_points_price(setup: str) -> None:
    verdict = _price(_right_price(setup), setup)
    assert verdict.ok is True, verdict.message
    assert _price(round(_right_price(setup), 4), setup).ok is True


def test_price_rejects_the_sweeps_best_tok_s() -> None:
    best = cost.cost_per_million_tokens(cost.CPU_USD_PER_HOUR.value, 150.0)   # 32 users, misses
    verdict = _price(best, "embedded default")
    assert verdict.ok is False and "misses the target" in verdict.message


def test_price_rejects_the_sweeps_best_on_an_h200() -> None:
    best = cost.cost_per_million_tokens(15.0, 47019.6)                       # 1,024 users
    assert _price(best, "h200").ok is False


def test_price_rejects_one_users_tok_s() -> None:
    per_user = cost.cost_per_million_tokens(cost.ARTICLE_CARD_USD_PER_HOUR.value, 22.9)
    verdict = _price(per_user, "article's card")
    assert verdict.ok is False and "one user's tok/s" in verdict.message


@pytest.mark.parametrize("factor", [1e-6, 3600])
def test_price_rejects_units_off(factor: float) -> None:
    verdict = _price(_right_price("embedded default") * factor, "embedded default")
    assert verdict.ok is False and "units" in verdict.message


def test_price_with_no_level_meeting_the_target_says_so() -> None:
    verdict = checks.capacity.price_at_operating_point(1.0, CPU, usd_per_hour=0.1,
                                                       ttft_p95_limit_s=0.01,
                                                       min_per_user_tok_s=1.0)
    assert verdict.ok is False and "relax the target" in verdict.message


def test_price_unanswered_is_no_crash() -> None:
    assert _price(..., "embedded default").ok is None


# replicas_by_arrival ---------------------------------------------------------------------------

def _replicas(value: object, setup: str, *, users: int = 500, think_s: float = 30.0):
    sweep, output, _, alone = SETUPS[setup]
    return checks.capacity.replicas_by_arrival(value, sweep, users=users, think_s=think_s,
                                               output_tokens=output, **_target_kw(alone))


def _right_replicas(setup: str, *, users: int = 500, think_s: float = 30.0) -> int:
    sweep, output, _, alone = SETUPS[setup]
    point = cost.operating_point(sweep, _target(alone))
    w = cost.time_in_system_s(output, point["per_user_tok_s"])
    return cost.replicas_by_arrival(users, point["concurrency"], time_in_system_s=w,
                                    think_s=think_s)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_replicas_accepts_littles_law_at_the_operating_point(setup: str) -> None:
    verdict = _replicas(_right_replicas(setup), setup)
    assert verdict.ok is True, verdict.message


def test_replicas_on_the_embedded_default_in_numbers() -> None:
    # W = 64 / 7.4 = 8.6 s; L = 500 x 8.6 / 38.6 = 112 in flight; 16 a replica: 7
    assert _right_replicas("embedded default") == 7
    assert _replicas(np.int64(7), "embedded default").ok is True


def test_replicas_for_10000_h200_users() -> None:
    n = _right_replicas("h200", users=10_000)
    assert n == math.ceil(10_000 * (256 / 175.0) / (256 / 175.0 + 30) / 128)
    assert _replicas(n, "h200", users=10_000).ok is True


def test_replicas_rejects_every_user_always_in_flight() -> None:
    verdict = _replicas(math.ceil(500 / 16), "embedded default")
    assert verdict.ok is False and "Z = 0" in verdict.message


def test_replicas_all_in_flight_is_right_for_an_agent_that_never_thinks() -> None:
    assert _replicas(math.ceil(500 / 16), "embedded default", think_s=0.0).ok is True


def test_replicas_rejects_rounding_down() -> None:
    verdict = _replicas(6, "embedded default")
    assert verdict.ok is False and "rounded down" in verdict.message


def test_replicas_rejects_counting_the_users_who_think() -> None:
    w = 64 / 7.4
    verdict = _replicas(math.ceil(500 * 30 / (w + 30) / 16), "embedded default")
    assert verdict.ok is False and "reading and typing" in verdict.message


def test_replicas_rejects_the_arrival_rate_for_requests_in_flight() -> None:
    w = 256 / 22.9
    verdict = _replicas(math.ceil(500 / (w + 30) / 32), "article's card")
    assert verdict.ok is False and "arrival rate" in verdict.message


def test_replicas_rejects_the_sweeps_largest_level() -> None:
    w = 64 / 7.4
    verdict = _replicas(math.ceil(500 * w / (w + 30) / 32), "embedded default")
    assert verdict.ok is False and "largest level" in verdict.message


def test_replicas_rejects_a_fraction() -> None:
    assert _replicas(6.99, "embedded default").ok is False


def test_replicas_a_level_with_no_answer_meets_nothing() -> None:
    table = CPU.astype(object)
    table.loc[table.concurrency == 16, "ttft_s_p95"] = None      # so 8 users a replica
    w = 64 / 9.5
    expected = math.ceil(500 * w / (w + 30) / 8)
    assert checks.capacity.replicas_by_arrival(
        expected, table, users=500, think_s=30.0, output_tokens=64,
        **_target_kw(0.06)).ok is True


def test_replicas_unanswered_is_no_crash() -> None:
    assert _replicas(..., "embedded default").ok is None


# break_even_utilisation ------------------------------------------------------------------------

BREAK_EVEN = {  # name: (USD/hour, aggregate tok/s at the point)
    "embedded default": (cost.CPU_USD_PER_HOUR.value, 119.0),
    "article's card, measured by the article": (0.50, article.BATCHING[32][0]),
    "h200": (15.00, 22272.1),
}


@pytest.mark.parametrize("setup", list(BREAK_EVEN))
def test_break_even_accepts_the_solution(setup: str) -> None:
    usd, tok_s = BREAK_EVEN[setup]
    right = cost.break_even_utilisation(usd, tok_s, 0.50)
    kw = {"usd_per_hour": usd, "tok_s": tok_s, "api_usd_per_million": 0.50}
    assert checks.capacity.break_even_utilisation(right, **kw).ok is True
    assert checks.capacity.break_even_utilisation(round(right, 3), **kw).ok is True


def test_break_even_above_one_says_the_api_is_cheaper_around_the_clock() -> None:
    kw = {"usd_per_hour": cost.CPU_USD_PER_HOUR.value, "tok_s": 20.0,   # the CPU, one user alone
          "api_usd_per_million": 0.50}
    right = cost.break_even_utilisation(**kw)
    assert right > 1
    assert "API is cheaper" in checks.capacity.break_even_utilisation(right, **kw).message


KW = {"usd_per_hour": 0.50, "tok_s": 732.0, "api_usd_per_million": 0.50}
RIGHT = 0.50 / (3600 * 732) * 1e6 / 0.50                                  # ~0.38


def test_break_even_rejects_upside_down() -> None:
    verdict = checks.capacity.break_even_utilisation(1 / RIGHT, **KW)
    assert verdict.ok is False and "upside down" in verdict.message


def test_break_even_rejects_a_percentage() -> None:
    verdict = checks.capacity.break_even_utilisation(100 * RIGHT, **KW)
    assert verdict.ok is False and "fraction" in verdict.message


def test_break_even_rejects_per_token_for_per_million() -> None:
    per_token = 0.50 / (3600 * 732) / 0.50
    assert "units" in checks.capacity.break_even_utilisation(per_token, **KW).message


def test_break_even_rejects_per_user_tok_s() -> None:
    per_user = 0.50 / (3600 * 732 / 32) * 1e6 / 0.50
    assert checks.capacity.break_even_utilisation(per_user, **KW).ok is False


def test_break_even_unanswered_is_no_crash() -> None:
    assert checks.capacity.break_even_utilisation(..., **KW).ok is None
