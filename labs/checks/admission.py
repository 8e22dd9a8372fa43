"""Checks for 05: the gateway's limits against an SLO."""

from __future__ import annotations

import math

from . import Verdict, report, missing, _whole_number


def gateway_meets_slo(max_in_flight: object, max_queue: object, shape: object,
                      workload: object, *, ttft_p95_s: float) -> Verdict:
    """Run the overload through a gateway with the learner's limits and judge the p95 TTFT."""
    for name, value in (("my_max_in_flight", max_in_flight), ("my_max_queue", max_queue)):
        if (v := missing(name, value)) is not None:
            return report(v)
        if not isinstance(value, int) or value < (1 if name == "my_max_in_flight" else 0):
            return report(Verdict(False, f"`{name}` should be a whole number "
                                         f"({'1' if name == 'my_max_in_flight' else '0'} or more)."))
    from ..experiments import run_through_gateway

    run = run_through_gateway(max_in_flight, max_queue, shape, workload)  # type: ignore[arg-type]
    s = run.summary()
    p95 = s["ttft_s_p95"]
    if p95 is None:
        return report(Verdict(False, "the gateway served no request at all: raise N."))
    served = f"served {s['ok']} of {s['requests']}, shed {s['shed']}"
    if p95 <= ttft_p95_s:
        return report(Verdict(True, f"N={max_in_flight}, M={max_queue}: p95 TTFT {p95:.2f} s "
                                    f"<= {ttft_p95_s:.2f} s ({served})."))
    return report(Verdict(False, f"N={max_in_flight}, M={max_queue}: p95 TTFT {p95:.2f} s is "
                                 f"over {ttft_p95_s:.2f} s ({served}). A shorter queue, or N "
                                 "no larger than the engine's max-num-seqs, keeps waits short."))


def useful_queue(value: object, *, max_wait_s: float, slot_every_s: float,
                 max_in_flight: int) -> Verdict:
    """05: the longest gateway queue whose last waiter still gets a slot within the maximum
    wait, when a slot frees every `slot_every_s` seconds."""
    number = _whole_number("useful_max_queue", value)
    if isinstance(number, Verdict):
        return report(number)
    expected = math.floor(max_wait_s / slot_every_s)
    if number == expected:
        return report(Verdict(True, f"right: about {expected} (a slot every {slot_every_s:.2f} s, "
                                    f"{max_wait_s:.2f} s allowed)."))
    return report(Verdict(False, f"`useful_max_queue` = {number}: the k-th waiter gets a slot "
                                 f"after about k slot intervals ({slot_every_s:.2f} s each, across "
                                 f"all {max_in_flight} slots); how many fit in {max_wait_s:.2f} s?"))

