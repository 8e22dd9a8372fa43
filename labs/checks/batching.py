"""Checks for 03: where batching stops paying, in tokens and in requests."""

from __future__ import annotations

from . import Verdict, report, _number, close_to


def cliff_prediction(value: object, table: object, predicted_knee: int | None = None) -> Verdict:
    """03: the concurrency after which throughput flattens. A cliff read off one noisy sweep
    moves by a level from run to run (a 15 % threshold on a 15 % step), so an answer within
    2x of `find_cliff`'s level or of the model's predicted knee is right."""
    from ..experiments import find_cliff

    number = _number("predicted_cliff_users", value)
    if isinstance(number, Verdict):
        return report(number)
    levels = list(table["concurrency"])  # type: ignore[index]
    located = find_cliff(table) or max(levels)  # type: ignore[arg-type]
    references = [located] + ([predicted_knee] if predicted_knee else [])
    near = [r for r in references if number > 0 and r / 2 <= number <= 2 * r]
    where = f"find_cliff located {located}" + (
        f", the model predicted {predicted_knee}" if predicted_knee else "")
    if near:
        return report(Verdict(True, f"your prediction {number:,.4g} is within 2x of where the "
                                    f"throughput flattens ({where})."))
    return report(Verdict(False, f"your prediction {number:,.4g} is more than 2x away from "
                                 f"where the throughput flattens ({where}); look for the level "
                                 "after which doubling the users adds little."))


def request_rate(value: object, table: object, concurrency: int) -> Verdict:
    """03: requests per second the sweep completed at `concurrency` users, as measured."""
    rows = table[table["concurrency"] == concurrency]  # type: ignore[index]
    measured = float(rows["request_rate_rps"].iloc[0])
    return close_to(f"requests_per_s_at_{concurrency}", value, measured, rel=0.05,
                    why="Each request makes a fixed number of tokens: divide the aggregate "
                        "tokens per second by the tokens of one answer.")

