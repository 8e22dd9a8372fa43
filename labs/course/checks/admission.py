"""Checks for 05: the gateway's limits for an SLO and a goodput target, and how long a
queue is worth having.

Each check is split in two: a pure judgement of numbers (`judge_limits`, `useful_queue`),
which the unit tests feed with the replayed numbers of three machines, and, for the limits,
the live run that produces those numbers (`gateway_meets_slo`).
"""

from __future__ import annotations

import math

from ...results.records import SLO
from ..lessons.admission import misses_allowed
from . import Verdict, _whole_number, report

# Goodput must reach this share of what the engine completes per second when it is never
# short of work (the notebook's setup (b), every request served from the engine's own queue).
# N slots complete about N / e2e requests a second, so half the engine's rate needs about half
# its max-num-seqs: N = 1 reaches 1 / max-num-seqs of it (a quarter on the CPU, an eighth on
# the article's card), N = max-num-seqs about all of it (0.7-0.9 replayed, 0.67 measured with
# N = 3 of 4 on a 2-core Xeon, 2026-12-01: enough margin for a noisy run).
GOODPUT_SHARE = 0.5


def _limit(name: str, value: object, least: int) -> int | Verdict:
    number = _whole_number(name, value)
    if isinstance(number, Verdict):
        return number
    if number < least:
        return Verdict(False, f"`{name}` should be a whole number, {least} or more.")
    return number


def judge_limits(max_in_flight: int, max_queue: int, *, offered: int, served: int,
                 within_slo: int, duration_s: float, ttft_p95_s: float | None,
                 slo_ttft_s: float, engine_rps: float, max_num_seqs: int) -> Verdict:
    """The gateway run with N = `max_in_flight`, M = `max_queue`, judged from its summary:
    `offered` requests, `served`, `within_slo` of the served had their first token within
    `slo_ttft_s`, over `duration_s` (first send to last answer); `engine_rps` is what the
    engine completes per second when never short of work, `max_num_seqs` how many it runs.

    Right when both hold: the served meet the SLO at the 95th percentile (their misses no
    more than a true 95 % explains, the rule of `labs.lessons.admission.served_within_slo`,
    so a run of 17 is not failed by one slow request), and goodput (within_slo / duration_s)
    is at least `GOODPUT_SHARE` of `engine_rps`. A wrong answer is told which one failed and
    the reason its N or M points to."""
    target = GOODPUT_SHARE * engine_rps
    goodput = within_slo / duration_s if duration_s > 0 else 0.0
    late, allowed = served - within_slo, misses_allowed(served)
    p95 = "none" if ttft_p95_s is None else f"{ttft_p95_s:.2f} s"
    head = (f"N={max_in_flight}, M={max_queue}: served {served} of {offered}, p95 TTFT {p95} "
            f"(SLO {slo_ttft_s:.2f} s), goodput {goodput:.2f} req/s (target {target:.2f}: "
            f"{GOODPUT_SHARE:.0%} of the {engine_rps:.2f} req/s the engine completes).")
    if served == 0:
        return Verdict(False, head + " Nothing was served: is the gateway profile's engine up?")
    slo_ok, goodput_ok = late <= allowed, goodput >= target
    if slo_ok and goodput_ok:
        return Verdict(True, head + " Both hold: the requests it takes stay fast, and it takes "
                                    "enough of them.")
    why = []
    if not slo_ok:
        why.append(f"The SLO failed: {late} of {served} served were late (a true p95 explains "
                   f"{allowed}).")
        if max_in_flight > max_num_seqs:
            why.append(f"N={max_in_flight} is more than the engine's max-num-seqs "
                       f"({max_num_seqs}): the other {max_in_flight - max_num_seqs} in flight wait "
                       "in vLLM's own queue for whole answers to end. Keep N at most "
                       f"{max_num_seqs}.")
        elif max_queue > 0:
            why.append(f"Each of the M={max_queue} waiters waits for a slot to free, that is for "
                       "an answer to end (about e2e / N seconds per place ahead of it), longer "
                       "than the SLO leaves after its own TTFT: the queue exercise says how "
                       "many waiters are worth having.")
        else:
            why.append(f"With N={max_in_flight}, a newcomer's prefill shares its step with up to "
                       f"{max_in_flight - 1} others decoding, and waits for the step in progress: "
                       "try one slot fewer.")
    if not goodput_ok:
        if not slo_ok:
            why.append("Goodput is short too: late answers do not count.")
        elif max_in_flight < max_num_seqs:
            why.append(f"Goodput is short: it shed {offered - served} of {offered}. N slots "
                       f"complete about N / e2e requests a second, so N={max_in_flight} uses "
                       f"{max_in_flight} of the {max_num_seqs} sequences the engine runs at "
                       "once and refuses the rest of its capacity. Size N from max-num-seqs.")
        else:
            why.append("Goodput is short although the served were fast: was the machine busy "
                       "with something else? Run the check again.")
    return Verdict(False, head + " " + " ".join(why))


def gateway_meets_slo(max_in_flight: object, max_queue: object, shape: object,
                      workload: object, *, slo_ttft_s: float, engine_rps: float,
                      max_num_seqs: int, max_queue_wait_s: float = 30.0) -> Verdict:
    """Run the overload through a gateway with the learner's limits, in front of the running
    `gateway` profile's engine, and judge the run (`judge_limits`)."""
    n = _limit("my_max_in_flight", max_in_flight, 1)
    if isinstance(n, Verdict):
        return report(n)
    m = _limit("my_max_queue", max_queue, 0)
    if isinstance(m, Verdict):
        return report(m)
    from ..experiments import run_through_gateway  # heavy: httpx, not for the checks

    slo = SLO(ttft_s=slo_ttft_s)
    run = run_through_gateway(n, m, shape, workload,  # type: ignore[arg-type]  # the notebook's Shape and Workload, typed object here
                              max_queue_wait_s=max_queue_wait_s)
    s = run.summary(slo)
    return report(judge_limits(
        n, m, offered=s["requests"], served=s["ok"],
        within_slo=sum(slo.met_by(r) for r in run.records), duration_s=s["duration_s"] or 0.0,
        ttft_p95_s=s["ttft_s_p95"], slo_ttft_s=slo_ttft_s, engine_rps=engine_rps,
        max_num_seqs=max_num_seqs))


def useful_queue(value: object, *, max_wait_s: float, slot_every_s: float,
                 max_in_flight: int) -> Verdict:
    """05: the longest gateway queue whose last waiter still gets a slot within the maximum
    wait, when a slot frees every `slot_every_s` seconds (across all N slots)."""
    number = _whole_number("useful_max_queue", value)
    if isinstance(number, Verdict):
        return report(number)
    expected = math.floor(max_wait_s / slot_every_s)
    # `a // b` and `floor(a / b)` differ by one where a / b rounds up to a whole number
    # (1.0 // 0.1 is 9.0, floor(1.0 / 0.1) is 10): either way of writing it is right.
    if number in (expected, int(max_wait_s // slot_every_s)):
        return report(Verdict(True, f"right: {expected} (a slot every {slot_every_s:.2f} s, "
                                    f"{max_wait_s:.2f} s allowed)."))
    if number == math.floor(max_wait_s / (slot_every_s * max_in_flight)):
        hint = (f"that divides by a whole answer's time; but {max_in_flight} slots free in turn, "
                f"so one frees every {slot_every_s:.2f} s.")
    elif number == expected * max_in_flight and expected:
        hint = "slot_every_s already counts all N slots: do not multiply by N again."
    elif number > expected:
        hint = (f"the waiter in place {number} gets a slot after about {number} x "
                f"{slot_every_s:.2f} s = {number * slot_every_s:.2f} s, over the "
                f"{max_wait_s:.2f} s allowed: round down.")
    else:
        hint = (f"the k-th waiter gets a slot after about k slot intervals ({slot_every_s:.2f} s "
                f"each); how many fit in {max_wait_s:.2f} s?")
    return report(Verdict(False, f"`useful_max_queue` = {number}: {hint}"))
