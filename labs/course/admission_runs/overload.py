"""Notebook 05's closing runs: 04's KV-exhausting burst under the article's two engine flags
(the bounded engine behind the running `gateway` profile, reached directly) and under the
gateway, plus one prompt longer than max_model_len. No server is started: the `gateway`
profile's engine *is* the `bounded` profile, so both setups are one server.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from ...errors import ConfigError
from ...load.loadgen import run_sync
from ...model import article
from ...model.kvwait import plan
from ...model.simulate import Engine, SimRequest, check_request, replay, take_step
from ...model.steps import ServerLimits, with_flags
from ...observe.metrics import MetricsSampler
from ...results.records import SLO, percentile
from ...serving import profiles
from ...serving.connect import connect
from ...serving.profiles import flag_value
from ...serving.server import ensure_server, running_server
from ...settings import Settings
from ...workload import Burst, Closed, Poisson, Workload
from ..tables import show

TOO_LONG = 1.25  # the too-long prompt, as a multiple of max_model_len


def closing_burst(cost: Any, limits: ServerLimits, backend: str, *, ci: bool) -> Any:
    """04's burst (`labs.kvwait.plan`, from the same calibration, so the same users, prompts
    and answers as 04 ran). 04 designs it against the `naive` pool, which 05 does not start;
    any pool that holds the whole burst gives the same design (the control's replay does not
    depend on its size once everyone fits), so on the CPU a pool ten times `limits`' stands in.
    Refused with a ConfigError if a prompt is over the gateway's `--max-prompt-tokens`: the
    gateway would then judge length, not load."""
    control = limits
    if backend == "cpu":
        control = replace(limits, num_blocks=10 * limits.num_blocks,
                          max_model_len=max(limits.max_model_len, 8192))
    burst = plan(cost, control, backend, ci=ci)
    budget = flag_value(profiles.get_profile("gateway").gateway(backend) or (), "max-prompt-tokens")
    if budget and burst.prompt_tokens > int(budget):
        raise ConfigError(f"04's prompts ({burst.prompt_tokens:,} tokens) are over the gateway's "
                          f"--max-prompt-tokens={budget}; raise it in labs/serving/profiles.py.")
    return burst


def caps_against_pool(limits: ServerLimits, backend: str) -> Any:
    """`max_num_seqs x max_model_len` against the KV pool, for the `bounded` profile on this
    server and for the article's flags on the article's card, with how many full-length
    requests the pool holds at once (whole blocks)."""
    here = with_flags(limits, profiles.get_profile("bounded").flags(backend))
    card = ServerLimits(article.NUM_GPU_BLOCKS, article.BLOCK_SIZE,
                        int(flag_value(article.BOUNDED_FLAGS, "max-model-len", required=True)),
                        int(flag_value(article.BOUNDED_FLAGS, "max-num-seqs", required=True)), 2048)
    rows = {}
    for where, lim in (("this server (bounded)", here), (f"article: {article.GPU}", card)):
        rows[where] = {"max_num_seqs": lim.max_num_seqs, "max_model_len": lim.max_model_len,
                       "seqs x len": lim.max_num_seqs * lim.max_model_len,
                       "pool_tokens": lim.pool_tokens,
                       "over the pool": lim.max_num_seqs * lim.max_model_len / lim.pool_tokens,
                       "full-length requests the pool holds": lim.num_blocks
                       // lim.blocks_for(lim.max_model_len)}
    return pd.DataFrame.from_dict(rows, orient="index")


def engine_connection() -> Any:
    """The engine behind the running `gateway` profile, reached directly: the article's two
    flags with nothing in front of them."""
    record = running_server()
    if record is None or record.engine_url is None:
        raise ConfigError("start the `gateway` profile first: labs.ensure_server('gateway').")
    return connect(Settings.from_env(base_url_override=record.engine_url))


def run_burst(conn: Any, users: int, prompt_tokens: int, output_tokens: int,
              label: str) -> tuple[Any, Any]:
    """`users` unique prompts at once through `conn`, with the engine's /metrics sampled:
    (the run, the engine series of running / waiting / KV usage / preemptions)."""
    record = running_server()
    with MetricsSampler(record.metrics_url if record else conn.base_url,
                        interval_s=0.25) as sampler:
        run = run_sync(Burst(users), Workload(prompt_tokens=prompt_tokens,
                                              max_tokens=output_tokens),
                       conn=conn, progress=False, label=label)
    return run, sampler.to_frame(t0=run.metadata["perf_counter_t0"])


def too_long(conn: Any, limits: ServerLimits, label: str) -> Any:
    """One request whose prompt alone is `TOO_LONG` x max_model_len: the record says how it
    was refused (status) and how fast (e2e_s)."""
    run = run_sync(Burst(1), Workload(prompt_tokens=int(TOO_LONG * limits.max_model_len),
                                      max_tokens=16), conn=conn, progress=False, label=label)
    return run.records[0]


def burst_table(runs: dict[str, tuple[Any, Any]]) -> Any:
    """One row per setup of the burst: what was served and how fast, what was refused and
    how fast, and what the engine held (from the sampled /metrics)."""
    rows = {}
    for label, (run, engine) in runs.items():
        s = run.summary()
        rows[label] = {
            "users": s["requests"], "served": s["ok"], "refused": s["requests"] - s["ok"],
            "ttft_p50_s": s["ttft_s_p50"], "ttft_p95_s": s["ttft_s_p95"],
            "ttft_max_s": max((r.ttft_s for r in run.records if r.ok and r.ttft_s), default=None),
            "slowest_refusal_ms": (max(r.e2e_s for r in run.records if not r.ok) * 1000
                                   if s["requests"] > s["ok"] else None),
            "max_running": int(engine["running"].max()),
            "peak_kv_usage": float(engine["kv_cache_usage"].max()),
            "preemptions": float(engine["preemptions_total"].iloc[-1]
                                 - engine["preemptions_total"].iloc[0]),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------
# The overload: setups, a gateway predicted, runs sized to the notebook's time budget

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


@dataclass(frozen=True)
class GatewayForecast:
    """A gateway run, predicted: the TTFT and end-to-end time of each request it served, how
    many it refused, and the run's length (first arrival to last answer or refusal), so its
    summary has the same keys and meaning as `RunResult.summary()`."""

    offered: int
    ttft_s: tuple[float, ...]
    e2e_s: tuple[float, ...]
    duration_s: float

    def summary(self, slo_ttft_s: float | None = None) -> dict[str, Any]:
        good = sum(t <= slo_ttft_s for t in self.ttft_s) if slo_ttft_s else None
        rate = (lambda n: n / self.duration_s if self.duration_s else None)
        return {"requests": self.offered, "ok": len(self.ttft_s),
                "shed": self.offered - len(self.ttft_s), "duration_s": self.duration_s,
                "ttft_s_p50": percentile(list(self.ttft_s), 50),
                "ttft_s_p95": percentile(list(self.ttft_s), 95),
                "e2e_s_p50": percentile(list(self.e2e_s), 50),
                "request_rate_rps": rate(len(self.ttft_s)),
                "within_slo": good, "goodput_rps": rate(good) if good is not None else None}


def predict_gateway(cost: Any, limits: ServerLimits, shape: Any, prompt_tokens: int,
                    max_tokens: int, max_in_flight: int, max_queue: int, *,
                    max_queue_wait_s: float = 30.0) -> GatewayForecast:
    """`shape`'s arrivals (a Poisson list) through a gateway with N = `max_in_flight` slots and
    a FIFO of `max_queue` waiters, each refused once it has waited `max_queue_wait_s`, in front
    of an engine with `limits`: `labs.simulate.replay`'s engine, step by step, with the
    gateway deciding who reaches it (admitted while fewer than N are in the engine, else queued
    while fewer than M wait, else refused at once; a slot that frees goes to the head of the queue).
    N over max_num_seqs puts the rest in the engine's own queue, as on a real server."""
    if max_in_flight < 1 or max_queue < 0:
        raise ConfigError("a gateway needs N >= 1 slots and a queue of M >= 0.")
    check_request(limits, prompt_tokens, max_tokens)
    half = getattr(cost, "request_overhead_s", 0.0) / 2
    arrivals = deque(float(t) for t in shape.arrival_times_s())
    offered, first = len(arrivals), (arrivals[0] if arrivals else 0.0)
    engine, waiting = Engine(limits), deque[SimRequest]()
    served: list[SimRequest] = []
    refused: list[float] = []  # when each refusal was sent
    in_flight, now = 0, 0.0

    def admit(req: SimRequest) -> None:
        nonlocal in_flight
        in_flight += 1
        engine.waiting.append(req)
        served.append(req)

    while True:
        while arrivals and arrivals[0] + half <= now + 1e-12:
            req = SimRequest(offered - len(arrivals), arrivals.popleft(), prompt_tokens, max_tokens)
            if in_flight < max_in_flight and not waiting:
                admit(req)
            elif len(waiting) < max_queue:
                waiting.append(req)
            else:
                refused.append(req.arrival_s)
        while waiting and waiting[0].arrival_s + max_queue_wait_s <= now:
            refused.append(waiting.popleft().arrival_s + max_queue_wait_s)
        taken = take_step(engine, cost, now, half)  # the same step as every replay's
        if taken is None:
            pending = ([arrivals[0] + half] if arrivals else []) + \
                ([waiting[0].arrival_s + max_queue_wait_s] if waiting else [])
            if not pending:
                break
            now = max(now, min(pending))
            continue
        trace, finished = taken
        now = trace.start_s + trace.duration_s
        for _ in finished:  # each slot that frees goes to the head of the gateway's queue
            in_flight -= 1
            if waiting:
                admit(waiting.popleft())
    ends = [r.end_s for r in served if r.end_s is not None] + refused
    return GatewayForecast(offered, tuple(r.ttft_s for r in served if r.ttft_s is not None),
                           tuple(r.e2e_s for r in served if r.e2e_s is not None),
                           max(ends) - first if ends else 0.0)


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
    naive = profile_limits(uncapped, "kv-pressure", backend)
    bounded = profile_limits(uncapped, "bounded", backend)
    n = gateway_slots(backend)
    gateway = replace(bounded, max_num_seqs=n)
    queue_flags = profiles.get_profile("engine-queue").flags(backend)
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


# --------------------------------------------------------------------------------------------
# Tables the notebook shows (formatting lives here, so its cells stay short)


def profiles_table(names: tuple[str, ...], backend: str) -> Any:
    """Each profile's engine flags and, where it has one, its gateway's flags."""
    rows = {name: {"engine flags": " ".join(profiles.get_profile(name).flags(backend)),
                   "gateway flags": " ".join(profiles.get_profile(name).gateway(backend) or ())}
            for name in names}
    return pd.DataFrame.from_dict(rows, orient="index")


def overload_table(capacity_rps: float, predicted_capacity_rps: float, slots: int,
                   sized: Any) -> Any:
    """The overload as sized: the capacity it is a multiple of, measured and predicted."""
    return show({"uncapped engine, measured (req/s)": capacity_rps,
                 "uncapped engine, predicted (req/s)": predicted_capacity_rps,
                 "prediction error (%)": 100 * (predicted_capacity_rps / capacity_rps - 1),
                 "requests it runs at once": slots,
                 "offered (req/s)": sized.rate_rps, "x capacity": sized.multiple,
                 "requests": sized.requests})


def predicted_table(predicted: dict[str, dict[str, Any]]) -> Any:
    """`predict_setups`' summaries, one row per setup: served, shed, p95 TTFT, duration."""
    rows = {label: {"served": s.get("ok", s["requests"]), "shed": s.get("shed", 0),
                    "ttft_p95_s": s["ttft_s_p95"], "duration_s": s["duration_s"]}
            for label, s in predicted.items()}
    return pd.DataFrame.from_dict(rows, orient="index").round(2)


def model_check(predicted: dict[str, dict[str, Any]], comparison: Any) -> Any:
    """The prediction against the measurement, for the numbers the decision rests on."""
    rows = [("a) naive: p95 TTFT (s)", predicted["a) naive"]["ttft_s_p95"],
             comparison.loc["a) naive", "ttft_p95_s"]),
            ("b) engine caps: p95 TTFT (s)", predicted["b) engine caps"]["ttft_s_p95"],
             comparison.loc["b) engine caps", "ttft_p95_s"]),
            ("d) gateway: served", predicted["d) gateway"]["ok"],
             comparison.loc["d) gateway", "served"])]
    table = pd.DataFrame(rows, columns=["", "predicted", "measured"]).set_index("")
    table["error %"] = 100 * (table["predicted"] - table["measured"]) / table["measured"]
    return table


def goodput_by_slo(results: dict[str, Any], baseline_ttft_s: float,
                   factors: Sequence[float]) -> Any:
    """Goodput (req/s within the SLO) of each setup, for SLOs of `factors` x the baseline."""
    return pd.DataFrame({
        f"{f:g}x baseline": {label: run.summary(SLO(ttft_s=f * baseline_ttft_s))["goodput_rps"]
                             for label, run in results.items()}
        for f in factors})


def overload_findings(comparison: Any, shed: Sequence[Any], baseline_ttft_s: float) -> Any:
    """What the overload showed, against the baseline: the two p95s and the gateway's 503s."""
    naive = comparison.loc["a) naive", "ttft_p95_s"]
    gateway = comparison.loc["d) gateway", "ttft_p95_s"]
    return show({"baseline TTFT (s)": baseline_ttft_s,
                 "naive p95 TTFT (s)": naive, "naive p95 / baseline": naive / baseline_ttft_s,
                 "gateway p95 TTFT (s)": gateway,
                 "gateway p95 / baseline": gateway / baseline_ttft_s,
                 "gateway shed": len(shed),
                 "slowest 503 (ms)": max((r.e2e_s for r in shed), default=0.0) * 1000,
                 "every 503 has Retry-After": all(r.retry_after_s for r in shed)})


def queue_findings(queued: Any, at_once_s: float, max_wait_s: float) -> Any:
    """The run with a queue: how many served requests waited (TTFT over `at_once_s`, the
    p95 of the same gateway without a queue), and the longest TTFT against the wait allowed."""
    served = [r.ttft_s for r in queued.records if r.ok and r.ttft_s is not None]
    refused = [r for r in queued.records if not r.ok]
    return show({"served": len(served),
                 "served after a wait (TTFT over M=0's p95)": sum(t > at_once_s for t in served),
                 "longest TTFT (s)": max(served, default=0.0),
                 "refused": len(refused),
                 "refused after waiting": sum(r.e2e_s >= 0.5 * max_wait_s for r in refused),
                 "max wait in the queue (s)": max_wait_s})


def burst_forecast(burst: Any, bounded_limits: ServerLimits, flags: dict[str, Any],
                   admitted: dict[str, Any], lone_s: float, gateway_n: int) -> Any:
    """04's burst against this pool, and what the replay predicts under each setup."""
    return show({"users": burst.users, "prompt + answer (tokens)":
                 f"{burst.prompt_tokens:,} + {burst.output_tokens}",
                 "demand / pool": burst.demand_tokens / bounded_limits.pool_tokens,
                 "why this burst": burst.why, "one alone, TTFT (s)": lone_s,
                 "two flags: at once": flags["max_running"],
                 "two flags: last TTFT (s)": flags["ttft_s_max"],
                 "two flags: preemptions": flags["preemptions"],
                 "gateway: admitted": gateway_n,
                 "gateway: p95 TTFT (s)": admitted["ttft_s_p95"]})


def caps_findings(caps: Any) -> Any:
    """`caps_against_pool` with its verdict: do max_num_seqs full-length requests fit?"""
    table = caps.copy()
    table["fits the pool"] = table["seqs x len"] <= table["pool_tokens"]
    return table.round(2)


def too_long_table(records: dict[str, Any], limits: ServerLimits,
                   uncapped: ServerLimits) -> Any:
    """How each setup answered the too-long prompt, and what it would hold uncapped."""
    held = uncapped.blocks_for(int(TOO_LONG * limits.max_model_len) + 16)
    rows = {label: {"status": r.status, "answered in (ms)": r.e2e_s * 1000,
                    "error": (r.error or "")[:100]} for label, r in records.items()}
    rows[f"04's engine (max_model_len {uncapped.max_model_len:,})"] = {
        "status": "admitted", "answered in (ms)": None,
        "error": f"would hold {held} of {uncapped.num_blocks} blocks for its whole answer"}
    return pd.DataFrame.from_dict(rows, orient="index")


__all__ = ["closing_burst", "caps_against_pool", "engine_connection", "run_burst", "too_long",
           "burst_table", "TOO_LONG", "Setup", "SETUPS", "RUN_ORDER", "in_table_order",
           "GatewayForecast", "predict_gateway",
           "predict_setups", "overload_seconds", "overload_candidates", "plan_overload",
           "capacity_seconds", "run_overload", "gateway_slots", "profile_limits",
           "profiles_table", "overload_table", "predicted_table", "model_check",
           "goodput_by_slo", "overload_findings", "queue_findings", "burst_forecast",
           "caps_findings", "too_long_table"]
