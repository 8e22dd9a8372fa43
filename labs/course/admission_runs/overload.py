"""The overload: its setups (`Setup`, `SETUPS`, `RUN_ORDER`), each predicted (`predict_setups`,
the gateways by `forecast.predict_gateway`), sized to the notebook's time budget
(`plan_overload`) and run (`run_overload`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ...load.loadgen import run_sync
from ...model.simulate import replay
from ...model.steps import ServerLimits, with_flags
from ...serving import profiles
from ...serving.connect import connect
from ...serving.profiles import flag_value
from ...serving.server import ensure_server
from ...workload import Closed, Poisson
from .burst import engine_connection
from .forecast import predict_gateway


@dataclass(frozen=True)
class Setup:
    """One setup of the overload: `profile` is the one whose limits it has (and the model
    predicts it with); `server` the profile started to run it. (b) is the bounded engine
    behind the `gateway` profile, reached directly (`engine_connection`): that engine *is*
    the `bounded` profile, so (b) and (d) share one start."""

    profile: str
    server: str
    direct: bool = False


# label -> setup, in the order the tables show them
SETUPS: dict[str, Setup] = {
    "a) naive": Setup("kv-pressure", "kv-pressure"),
    "b) engine caps": Setup("bounded", "gateway", direct=True),
    "c) vLLM queue cap": Setup("engine-queue", "engine-queue"),
    # `bounded` plus --max-num-queued-tokens, which the notebook derives from the SLO
    "c') vLLM token cap": Setup("bounded", "bounded"),
    "d) gateway": Setup("gateway", "gateway"),
}
# The order they run in: a) on the server 04 left; c) measures the baseline (a lone request
# never meets its queue cap, so it is the bounded engine's); b) and d) on one server last,
# which the closing runs reuse. Four engine starts in all, not five.
RUN_ORDER = ("a) naive", "c) vLLM queue cap", "c') vLLM token cap", "b) engine caps",
             "d) gateway")
# Request counts the overload may have, smallest first; `plan_overload` adds 3 x slots, the
# least `labs.sizing.overload` allows (a backlog smaller than the engine's slots would run,
# not wait), and keeps those above it.
OVERLOAD_CANDIDATES = (60, 90, 120, 180, 240)
OVERLOAD_SHARE = 0.7  # of the notebook's compute budget: the rest is capacity, burst, retries


def gateway_slots(backend: str) -> int:
    """N of the `gateway` profile (`--max-in-flight`)."""
    gateway = profiles.get_profile("gateway").gateway(backend) or ()
    return int(flag_value(gateway, "max-in-flight") or 1)


def profile_limits(limits: ServerLimits, profile: str, backend: str) -> ServerLimits:
    """`limits` of the uncapped engine with `profile`'s engine flags applied."""
    return with_flags(limits, profiles.get_profile(profile).flags(backend))


def _alone_ttft_s(cost: Any, limits: ServerLimits, prompt_tokens: int, max_tokens: int) -> float:
    return float(replay(cost, limits, Closed(1, requests=4), prompt_tokens,
                        max_tokens).summary()["ttft_s_p95"])


def predict_setups(cost: Any, uncapped: ServerLimits, backend: str, shape: Any,
                   prompt_tokens: int, max_tokens: int) -> dict[str, dict[str, Any]]:
    """Each setup's summary under `shape`, predicted: (a) and (b) replayed as they are (every
    request served, the backlog inside the engine), (c) and (d) as gateways (vLLM's queue cap
    counts running and waiting requests, so it is a gateway of that many slots), (c') as a
    gateway of max-num-seqs slots and an unbounded-wait queue of the prompts the token cap
    holds (sized, as the notebook does, from three predicted lone TTFTs), and (d') the
    exercise's queue of 3. Keys as `RunResult.summary()`."""
    lengths = (prompt_tokens, max_tokens)
    naive = profile_limits(uncapped, SETUPS["a) naive"].profile, backend)
    bounded = profile_limits(uncapped, SETUPS["b) engine caps"].profile, backend)
    n = gateway_slots(backend)
    gateway = replace(bounded, max_num_seqs=n)
    queue_flags = profiles.get_profile(SETUPS["c) vLLM queue cap"].profile).flags(backend)
    cap = int(flag_value(queue_flags, "max-num-queued-reqs") or 1)
    slo_s = 3 * _alone_ttft_s(cost, bounded, *lengths)
    held = int(slo_s * cost.prefill_tok_s) // prompt_tokens
    wait_s = max(0.05, slo_s - 2 * slo_s / 3)  # the notebook's: SLO less two lone TTFTs
    out = {"a) naive": replay(cost, naive, shape, *lengths).summary(),
           "b) engine caps": replay(cost, bounded, shape, *lengths).summary()}
    for label, limits, slots, queue, wait in (
            ("c) vLLM queue cap", bounded, cap, 0, 0.0),
            ("c') vLLM token cap", bounded, bounded.max_num_seqs, held, math.inf),
            ("d) gateway", gateway, n, 0, 0.0),
            ("d') gateway, M=3", gateway, n, 3, wait_s)):
        out[label] = predict_gateway(cost, limits, shape, *lengths, slots, queue,
                                     max_queue_wait_s=wait).summary(slo_s)
    return out


def overload_seconds(predicted: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Seconds each overload run is predicted to take (`predict_setups`), plus the exercise's
    gateway run (taken as long as (d)'s: the same arrivals, refused or served)."""
    seconds = {label: float(s["duration_s"] or 0.0) for label, s in predicted.items()}
    seconds["exercise"] = seconds["d) gateway"]
    return seconds


def overload_candidates(slots: int) -> list[int]:
    """`OVERLOAD_CANDIDATES` above 3 x slots, with 3 x slots first: the smallest overload
    `labs.sizing.overload` allows still makes every lesson of the notebook hold."""
    least = 3 * max(1, slots)
    return [least] + [n for n in OVERLOAD_CANDIDATES if n > least]


def plan_overload(budget: Any, cost: Any, uncapped: ServerLimits, backend: str,
                  capacity_rps: float, slots: int, *, multiple: float = 2.0,
                  prompt_tokens: int = 128, max_tokens: int = 32) -> Any:
    """The largest overload (request count) whose runs, every setup and the exercise's
    gateway together, are predicted to fit `OVERLOAD_SHARE` of the notebook's budget
    (`labs.timebudget.NotebookBudget.plan`)."""
    def total_s(requests: int) -> float:
        shape = Poisson(rate_rps=multiple * capacity_rps, requests=requests, seed=1)
        return sum(overload_seconds(predict_setups(cost, uncapped, backend, shape,
                                                   prompt_tokens, max_tokens)).values())

    return budget.plan("overload, every setup", overload_candidates(slots), total_s,
                       OVERLOAD_SHARE)


def capacity_seconds(cost: Any, limits: ServerLimits, slots: int, prompt_tokens: int,
                     max_tokens: int) -> float:
    """How long `labs.experiments.measure_capacity` is predicted to take (its closed loop of
    2 x slots users, two rounds, and one warm-up request)."""
    users = 2 * max(1, slots)
    run = replay(cost, limits, Closed(users, requests=2 * users), prompt_tokens, max_tokens)
    return run.duration_s + _alone_ttft_s(cost, limits, prompt_tokens, max_tokens)


def run_overload(label: str, shape: Any, workload: Any, budget: Any, predicted_s: float, *,
                 extra_flags: tuple[str, ...] = ()) -> Any:
    """One setup of the overload (`SETUPS[label]`): its server started (or reused), `shape`
    sent, the run timed against its prediction (the restart is not counted: the notebook
    does not choose it)."""
    setup = SETUPS[label]
    ensure_server(setup.server, extra_flags=extra_flags)
    conn = engine_connection() if setup.direct else connect()
    with budget.timed(label, predicted_s):
        return run_sync(shape, workload, conn=conn, warmup=1, progress=False, label=label)


def in_table_order(results: dict[str, Any]) -> dict[str, Any]:
    """The runs, ordered as `SETUPS` (they ran in `RUN_ORDER`)."""
    return {label: results[label] for label in SETUPS if label in results}
