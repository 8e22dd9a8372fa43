"""Checks for 03 and 03b: what a step model predicts from two levels, what a static barrier
costs, where a stricter SLO puts the operating point, and tokens in requests."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from . import Verdict, _number, _whole_number, close_to, report


def _near(a: float, b: float, rel: float = 0.05) -> bool:
    return math.isfinite(a) and math.isfinite(b) and math.isclose(a, b, rel_tol=rel)


def next_level_expected(table: pd.DataFrame, a: int) -> dict[str, float]:
    """The two-point step model's aggregate at 4a from the levels a and 2a, and the answers a
    learner gets with the usual wrong models (for the messages and the tests)."""
    at = table.drop_duplicates("concurrency").set_index("concurrency")["agg_tok_s"]
    agg_a, agg_2a = float(at[a]), float(at[2 * a])
    step_a, step_2a = a / agg_a, 2 * a / agg_2a
    own = (step_2a - step_a) / a
    shared = step_a - a * own
    denominator = shared + 4 * a * own
    return {"expected": 4 * a / denominator if denominator > 0 else math.nan,
            "straight_line": agg_2a + 2 * (agg_2a - agg_a), "doubling": 2 * agg_2a,
            "flat": agg_2a, "shared_s": shared, "own_s": own,
            "measured": float(at[4 * a]) if 4 * a in at.index else math.nan}


def next_level(value: object, table: object, a: int) -> Verdict:
    """03: the aggregate tok/s at 4a users predicted from the measured a and 2a, with a step of
    `shared + c x own`. Within 5 % of that arithmetic is right; the verdict then says how far
    the sweep's own 4a level was from it (the model's error, not the learner's)."""
    number = _number("predicted_agg_at_4a", value)
    if isinstance(number, Verdict):
        return report(number)
    e = next_level_expected(table, a)
    if not e["expected"] > 0:
        return report(Verdict(False, f"the levels {a} and {2 * a} give a step that shrinks with "
                                     "more users (noise in a short run): re-run the sweep."))
    measured = (f"; the sweep measured {e['measured']:,.0f} at {4 * a} users "
                f"({100 * (e['expected'] - e['measured']) / e['measured']:+.0f} %)"
                if math.isfinite(e["measured"]) else "")
    if _near(number, e["expected"]):
        return report(Verdict(True, f"{number:,.0f} tok/s: right, from a shared "
                                    f"{e['shared_s'] * 1e3:.1f} ms and {e['own_s'] * 1e3:.2f} ms "
                                    f"per user a step{measured}."))
    if _near(number, e["straight_line"]) or _near(number, e["doubling"]):
        why = ("that extends the gain as if a step did not grow with its batch (a web server's "
               "requests are independent; a step's users are not): each user adds `own` seconds "
               "to every step, so the gain per doubling shrinks.")
    elif _near(number, e["flat"]):
        why = "that assumes the throughput has already stopped growing; solve the two equations."
    else:
        why = ("write step(c) = c / aggregate(c) for both levels, subtract to get `own`, then "
               "`shared`, and evaluate 4a / step(4a).")
    return report(Verdict(False, f"{number:,.0f} tok/s, but the two-level step model gives "
                                 f"{e['expected']:,.0f}: {why}"))


def static_penalty(value: object, lengths: Sequence[int], slots: int) -> Verdict:
    """03: with a constant step, static batching over continuous, on `lengths` in order."""
    number = _number("my_static_penalty", value)
    if isinstance(number, Verdict):
        return report(number)
    batches = [lengths[i:i + slots] for i in range(0, len(lengths), slots)]
    expected = sum(max(b) for b in batches) / (sum(lengths) / slots)
    if _near(number, expected, 0.02):
        return report(Verdict(True, f"{number:.2f}x: right. Each batch lasts as long as its "
                                    "longest answer, while continuous batching refills a slot "
                                    "at once."))
    if _near(number, 1.0, 0.02):
        why = ("1x says a batch lasts as long as its average answer; it lasts as long as its "
               "longest: the others' slots sit empty until it ends.")
    elif _near(number, expected / slots, 0.02):
        why = ("continuous batching runs `slots` answers at once: divide the sum of lengths by "
               "slots.")
    elif _near(number, 1 / expected, 0.02):
        why = ("that is continuous over static; the question asks how many times longer static "
               "takes.")
    else:
        why = "static steps: sum of each batch's longest answer; continuous: sum(lengths) / slots."
    return report(Verdict(False, f"{number:.2f}x, but it should be {expected:.2f}x: {why}"))


def strict_operating_point(value: object, table: object, *, ttft_p95_s: float,
                           tpot_p95_s: float) -> Verdict:
    """03b: the most users in the sweep whose p95 TTFT and p95 TPOT both meet a stricter SLO
    (0 if none does)."""
    number = _whole_number("users_within_strict_slo", value)
    if isinstance(number, Verdict):
        return report(number)
    t: pd.DataFrame = table
    meets = t[(t.ttft_s_p95 <= ttft_p95_s) & (t.tpot_s_p95 <= tpot_p95_s)]
    expected = int(meets.concurrency.max()) if len(meets) else 0
    if number == expected:
        return report(Verdict(True, f"{number} users: right, the most users whose p95 TTFT is "
                                    f"within {ttft_p95_s:.2f} s and p95 TPOT within "
                                    f"{tpot_p95_s:.2f} s."))
    ttft_only = t[t.ttft_s_p95 <= ttft_p95_s].concurrency.max()
    tpot_only = t[t.tpot_s_p95 <= tpot_p95_s].concurrency.max()
    if number == int(t.loc[t.agg_tok_s.idxmax(), "concurrency"]):
        why = "that is where throughput peaks; an SLO is about what each request gets."
    elif number == ttft_only:
        why = "that level meets the TTFT half only: check the p95 TPOT too."
    elif number == tpot_only:
        why = "that level meets the TPOT half only: check the stricter p95 TTFT too."
    elif number not in set(t.concurrency) and number != 0:
        why = "the answer is one of the sweep's levels (or 0)."
    else:
        why = "the most users with both p95 columns within the limits is the answer."
    return report(Verdict(False, f"{number} users, but {expected} is the most that meet both: "
                                 f"{why}"))


def request_rate(value: object, table: object, concurrency: int) -> Verdict:
    """03b: requests per second the sweep completed at `concurrency` users, as measured."""
    rows = table[table["concurrency"] == concurrency]  # type: ignore[index]  # the notebook's sweep table (a DataFrame)
    measured = float(rows["request_rate_rps"].iloc[0])
    return close_to(f"requests_per_s_at_{concurrency}", value, measured, rel=0.05,
                    why="Each request makes a fixed number of tokens: divide the aggregate "
                        "tokens per second by the tokens of one answer.")
