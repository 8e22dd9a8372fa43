"""Checks for 07: the price of a token at the operating point, replicas by arrival rate, and
the price of idle time.

The first two start from the measured sweep and the target: the check finds the operating
point itself (the highest level whose p95 TTFT and per-user tok/s both meet the target, as
`labs.cost.operating_point` does), so the learner's answer is judged against the sweep they
measured, not against a number printed earlier.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from . import Verdict, _number, _whole_number, report


def _levels(table: object) -> list[dict[str, float]]:
    """The sweep's rows as floats; a level with no answer (None) has NaN, which meets nothing."""
    names = [n for n in ("concurrency", "ttft_s_p95", "per_user_tok_s", "agg_tok_s", "e2e_s_p50")
             if n in getattr(table, "columns", ())]
    rows = []
    for values in zip(*(table[n] for n in names), strict=True):  # type: ignore[index]  # a table: whatever the notebook passed, indexed like a DataFrame
        rows.append({n: math.nan if v is None else float(v) for n, v in zip(names, values)})
    return rows


def _operating_row(table: object, ttft_p95_limit_s: float,
                   min_per_user_tok_s: float) -> dict[str, float] | None:
    good = [r for r in _levels(table)
            if r["ttft_s_p95"] <= ttft_p95_limit_s and r["per_user_tok_s"] >= min_per_user_tok_s]
    return max(good, key=lambda r: r["concurrency"]) if good else None


_NO_POINT = Verdict(False, "no level of the sweep meets the target, so no replica size "
                           "follows from it: relax the target.")


def _per_million(usd_per_hour: float, tok_s: float) -> float:
    return usd_per_hour / (3600 * tok_s) * 1e6


def price_at_operating_point(value: object, table: object, *, usd_per_hour: float,
                             ttft_p95_limit_s: float, min_per_user_tok_s: float) -> Verdict:
    """07: USD per million output tokens of one replica kept busy at its operating point: the
    hour's price over the tokens all its users get in that hour, at the point's aggregate
    tok/s (not the sweep's best, which misses the target)."""
    number = _number("usd_per_million_here", value)
    if isinstance(number, Verdict):
        return report(number)
    point = _operating_row(table, ttft_p95_limit_s, min_per_user_tok_s)
    if point is None:
        return report(_NO_POINT)
    expected = _per_million(usd_per_hour, point["agg_tok_s"])
    users = int(point["concurrency"])
    if math.isclose(number, expected, rel_tol=0.02):
        return report(Verdict(True, f"right: ${usd_per_hour:g}/h over 3,600 x "
                                    f"{point['agg_tok_s']:,.0f} tok/s (the {users} users of "
                                    f"the operating point together) is ${expected:,.4g} per "
                                    "million output tokens."))
    near = lambda x: math.isclose(number, x, rel_tol=0.02)
    best = max((r for r in _levels(table) if r["agg_tok_s"] > 0), key=lambda r: r["agg_tok_s"])
    if best["concurrency"] != users and near(_per_million(usd_per_hour, best["agg_tok_s"])):
        hint = (f"that is the price at the sweep's highest tok/s ({int(best['concurrency'])} "
                "users), a level that misses the target: its tokens are cheaper because "
                "users wait for them. Price the operating point's.")
    elif near(_per_million(usd_per_hour, point["per_user_tok_s"])):
        hint = ("that divides by one user's tok/s; the hour pays for every user's tokens, so "
                "divide by the aggregate tok/s of the operating point.")
    elif any(near(expected * k) for k in (1e6, 1e-6, 3600, 1 / 3600, 1e3, 1e-3)):
        hint = ("the units are off: per hour over tokens per hour (3,600 x tok/s), times a "
                "million.")
    else:
        hint = ("USD per hour / (3,600 x the operating point's aggregate tok/s) x 1e6: find "
                "the point first, the highest level that meets both halves of the target.")
    return report(Verdict(False, f"`usd_per_million_here` = {number:,.4g}: {hint}"))


def replicas_by_arrival(value: object, table: object, *, users: int, think_s: float,
                        output_tokens: float, ttft_p95_limit_s: float,
                        min_per_user_tok_s: float) -> Verdict:
    """07: replicas for `users` chat users who think `think_s` between requests: by Little's
    law they keep L = N x W / (W + Z) requests in flight (W a request's time in the system at
    the operating point: its output tokens over the point's per-user tok/s), and a replica
    holds the operating point's users; replicas = L / that, rounded up."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy integers too
    number = _whole_number("replicas_by_arrival", value)
    if isinstance(number, Verdict):
        return report(number)
    point = _operating_row(table, ttft_p95_limit_s, min_per_user_tok_s)
    if point is None:
        return report(_NO_POINT)
    per_replica = int(point["concurrency"])
    ws = [output_tokens / point["per_user_tok_s"]]
    if not math.isnan(point.get("e2e_s_p50", math.nan)):
        ws.append(point["e2e_s_p50"])  # W read from the measured e2e: as right

    def replicas(w: float, rounding: Any = math.ceil) -> int:
        return max(1, rounding(round(users * w / (w + think_s) / per_replica, 9)))

    expected = replicas(ws[0])
    if number in {replicas(w) for w in ws}:
        load = users * ws[0] / (ws[0] + think_s)
        return report(Verdict(True, f"right: W = {ws[0]:.1f} s, so {users} users thinking "
                                    f"{think_s:g} s keep {load:,.1f} requests in flight; at "
                                    f"{per_replica} a replica, {expected} replicas "
                                    f"(against {math.ceil(users / per_replica)} if every user "
                                    "always had one in flight)."))
    w = ws[0]
    levels = _levels(table)
    top = max(levels, key=lambda r: r["concurrency"])
    if number == math.ceil(users / per_replica) and think_s > 0:
        hint = ("that counts every user always in flight (Z = 0); chat users think between "
                "requests, so only N x W / (W + Z) of them are in flight at once.")
    elif number == replicas(w, math.floor) and number != expected:
        hint = "rounded down: the requests left over need one more replica."
    elif number == max(1, math.ceil(users * think_s / (w + think_s) / per_replica)):
        hint = ("that counts the users who are reading and typing (N x Z / (W + Z)); the "
                "replicas hold the ones waiting for an answer: N x W / (W + Z).")
    elif number == max(1, math.ceil(users / (w + think_s) / per_replica)):
        hint = ("that is the arrival rate (requests per second) over the replica's users; "
                "multiply the rate by W, the seconds each request stays, for the requests in "
                "flight (Little's law).")
    elif top["concurrency"] != per_replica and number == max(1, math.ceil(
            users * w / (w + think_s) / top["concurrency"])):
        hint = (f"{int(top['concurrency'])} users is the sweep's largest level, but it misses "
                f"the target; a replica holds the operating point's {per_replica}.")
    else:
        hint = ("W = output tokens / the operating point's per-user tok/s; in flight L = N x W "
                "/ (W + Z); replicas = L / the operating point's users, rounded up.")
    return report(Verdict(False, f"`replicas_by_arrival` = {number}: {hint}"))


def break_even_utilisation(value: object, *, usd_per_hour: float, tok_s: float,
                           api_usd_per_million: float) -> Verdict:
    """07: the fraction of the hour a server busy at `tok_s` (aggregate) must work for its
    tokens to cost what an API charges per million: the hour's price over a busy hour's
    tokens, per million, over the API's price."""
    expected = usd_per_hour / (3600 * tok_s) * 1e6 / api_usd_per_million
    number = _number("break_even_utilisation", value)
    if isinstance(number, Verdict):
        return report(number)
    if math.isclose(number, expected, rel_tol=0.02):
        never = "; above 100 %: the API is cheaper even around the clock" if expected > 1 else ""
        return report(Verdict(True, f"right: busy {expected:.1%} of the time, a self-hosted "
                                    f"token costs what the API charges{never}."))
    if math.isclose(number, 1 / expected, rel_tol=0.02):
        hint = "upside down: the server's cost per million goes on top, the API's price below."
    elif math.isclose(number, 100 * expected, rel_tol=0.02):
        hint = "a fraction is asked for (0.25, not 25 %)."
    elif any(math.isclose(number, expected * k, rel_tol=0.02) for k in (1e6, 1e-6, 1e3, 1e-3)):
        hint = "the units are off: per million tokens on both sides, and 3,600 seconds an hour."
    else:
        hint = ("price per hour / (3,600 x aggregate tok/s) x 1e6 is the cost of a million "
                "tokens when always busy; divide it by the API's price per million.")
    return report(Verdict(False, f"`break_even_utilisation` = {number:,.4g}: {hint}"))
