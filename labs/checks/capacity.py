"""Checks for 07: replicas and the price of idle time."""

from __future__ import annotations

import math

from . import Verdict, report, _number, _whole_number


def replicas_for_users(value: object, table: object, *, users: int, ttft_p95_limit_s: float,
                       min_per_user_tok_s: float) -> Verdict:
    """07: replicas for `users` concurrent users when each replica takes as many users as the
    highest level of the sweep whose p95 TTFT and per-user tok/s both meet the target."""
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy integers too
    number = _whole_number("replicas_for_users", value)
    if isinstance(number, Verdict):
        return report(number)
    columns = [table[name] for name in  # type: ignore[index]
               ("concurrency", "ttft_s_p95", "per_user_tok_s")]
    levels = [(int(c), math.nan if t is None else float(t), math.nan if u is None else float(u))
              for c, t, u in zip(*columns, strict=True)]  # None: a level with no answer
    good = [c for c, ttft, tok_s in levels
            if ttft <= ttft_p95_limit_s and tok_s >= min_per_user_tok_s]
    if not good:
        return report(Verdict(False, "no level of the sweep meets the target, so no replica "
                                     "size follows from it: relax the target."))
    per_replica = max(good)
    expected = math.ceil(users / per_replica)
    if number == expected:
        return report(Verdict(True, f"right: {expected} replicas of {per_replica} users each "
                                    f"serve {users} users."))
    biggest = max(c for c, _, _ in levels)
    if number == math.ceil(users / biggest) and biggest != per_replica:
        hint = (f"{biggest} users is the sweep's largest level, but it misses the target; a "
                "replica takes only as many users as the highest level that meets it.")
    elif number == math.floor(users / per_replica):
        hint = "rounded down: the users left over need one more replica."
    else:
        hint = (f"each replica serves the operating point's users ({per_replica} here); "
                "divide the users by that and round up to whole replicas.")
    return report(Verdict(False, f"`replicas_for_users` = {number}: {hint}"))


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

