"""The measurements the notebooks make, as functions: one call, one DataFrame.

Each function composes `labs.loadgen` runs into one experiment of the course, returns data
(never prints or plots), and keeps the raw runs so the notebook can save them. Sizes are
arguments; notebooks pick CI-sized or full-sized values with `labs.Settings.is_ci_scale`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ...load.loadgen import run_sync, sweep
from ...results.records import SLO, RunResult, sweep_frame
from ...serving.connect import Connection
from ...workload import Burst, Closed, Poisson, Workload, in_batches


@dataclass(frozen=True)
class Experiment:
    """A table to show and the runs it was computed from (to save and re-analyse)."""

    table: pd.DataFrame
    runs: tuple[RunResult, ...]


def ttft_by_prompt_length(conn: Connection, lengths: Sequence[int], repeats: int = 3,
                          progress: bool = False) -> Experiment:
    """TTFT of one request alone, for prompts of several lengths (prefill cost grows)."""
    runs, rows = [], []
    for n in lengths:
        run = run_sync(Closed(1, requests=repeats), Workload(prompt_tokens=n, max_tokens=1),
                       conn=conn, warmup=1, progress=progress, label=f"prompt {n}")
        s = run.summary()
        rows.append({"prompt_tokens": s["prompt_tokens_mean"], "ttft_s_p50": s["ttft_s_p50"],
                     "prefill_tok_s": (s["prompt_tokens_mean"] / s["ttft_s_p50"]
                                       if s["ttft_s_p50"] else None)})
        runs.append(run)
    return Experiment(pd.DataFrame(rows), tuple(runs))


def single_stream_decode(conn: Connection, output_lengths: Sequence[int],
                         prompt_tokens: int = 32, repeats: int = 2,
                         progress: bool = False) -> Experiment:
    """One user alone: decode tok/s (1 / TPOT) at several output lengths."""
    runs, rows = [], []
    for i, n in enumerate(output_lengths):
        run = run_sync(Closed(1, requests=repeats),
                       Workload(prompt_tokens=prompt_tokens, max_tokens=n),
                       conn=conn, warmup=1 if i == 0 else 0, progress=progress,
                       label=f"out {n}")
        s = run.summary()
        tpot = s["tpot_s_p50"]
        rows.append({"output_tokens": n, "tpot_s_p50": tpot,
                     "decode_tok_s": 1.0 / tpot if tpot else None,
                     "ttft_s_p50": s["ttft_s_p50"]})
        runs.append(run)
    return Experiment(pd.DataFrame(rows), tuple(runs))


def sweep_requests(concurrency: int, rounds: int) -> int:
    """Requests `concurrency_sweep` sends at one level (and `predicted_sweep` replays):
    `rounds` per user, at least 4."""
    return max(concurrency * rounds, 4)


def concurrency_sweep(conn: Connection, levels: Sequence[int], *, max_tokens: int = 64,
                      prompt_tokens: int | None = None, rounds: int = 2,
                      progress: bool = True) -> Experiment:
    """Closed-loop concurrency sweep: at level c, c users each send `rounds` requests (at
    least 4 requests per level). Short prompts by default, so the work measured is decode:
    with long prompts on a CPU, prefill dominates and hides the batching gain."""
    shapes = [Closed(c, requests=sweep_requests(c, rounds)) for c in levels]
    runs = sweep(shapes, Workload(prompt_tokens=prompt_tokens, max_tokens=max_tokens),
                 conn=conn, progress=progress)
    table = sweep_frame(runs)
    return Experiment(table, tuple(runs))


def events_per_s(times_s: Sequence[float]) -> float | None:
    """Events per second between the first and the last. Of send times: the rate that
    arrived (a short Poisson run draws a little off its nominal rate). Of end times: the
    rate the server served, without counting the time to the first answer (a run starts
    empty) as time it could not keep up."""
    ts = sorted(times_s)
    return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else None


def _rate_row(rate: float, sends: Sequence[float], ends: Sequence[float]) -> dict[str, object]:
    arrived, served = events_per_s(sends), events_per_s(ends)
    return {"offered_rps": rate, "arrived_rps": arrived, "served_rps": served,
            "served_over_arrived": served / arrived if served and arrived else None}


def _per_rate(requests: int | Sequence[int], rates: Sequence[float]) -> list[int]:
    counts = [requests] * len(rates) if isinstance(requests, int) else list(requests)
    if len(counts) != len(rates) or min(counts, default=0) < 2:
        raise ConfigError(f"give one request count (2 or more) per rate: {counts} for "
                          f"{len(rates)} rates.")
    return counts


def rate_sweep(conn: Connection, rates: Sequence[float], workload: Workload, *,
               requests: int | Sequence[int], slo: SLO, progress: bool = True) -> Experiment:
    """Open-loop arrivals (Poisson) at each rate: users who do not wait for each other, as
    in production. Per rate: the rate that arrived and the rate served, TTFT, TPOT and goodput
    under `slo`. Where service falls behind arrivals, the backlog grows for as long as the
    load lasts: that is the knee (`rate_knee`). `requests` is one count, or one per rate."""
    runs, rows = [], []
    for i, (rate, n) in enumerate(zip(rates, _per_rate(requests, rates))):
        run = run_sync(Poisson(rate, requests=n, seed=i), workload, conn=conn,
                       warmup=2 if i == 0 else 0, progress=progress, label=f"{rate:.2f} req/s")
        s = run.summary(slo)
        rows.append({**_rate_row(rate, [r.sent_s for r in run.records],
                                 [r.end_s for r in run.records if r.ok]),
                     "ttft_s_p50": s["ttft_s_p50"], "ttft_s_p95": s["ttft_s_p95"],
                     "e2e_s_p95": s["e2e_s_p95"],
                     "tpot_s_p95": s["tpot_s_p95"], "goodput_rps": s["goodput_rps"],
                     "errors": s["requests"] - s["ok"]})
        runs.append(run)
    return Experiment(pd.DataFrame(rows), tuple(runs))


def draw_lengths(output_lengths: Sequence[int], requests: int, seed: int = 7) -> tuple[int, ...]:
    """One list of output lengths, drawn once: both schedulers get exactly these requests."""
    rng = np.random.default_rng(seed)
    return tuple(int(x) for x in rng.choice(np.asarray(output_lengths), size=requests))


def static_vs_continuous(conn: Connection, batch_size: int, lengths: Sequence[int],
                         prompt_tokens: int = 64, progress: bool = False) -> Experiment:
    """The same requests (`lengths`, in order), two schedulers. Static: the client sends
    `batch_size` requests and waits for the slowest before sending the next batch (a
    barrier, as a static batcher does). Continuous: `batch_size` users, each sending the
    next request of the list the moment its last one ends, so the engine refills a slot as
    soon as it frees up.
    """
    batches = in_batches(lengths, batch_size)
    static_runs = [run_sync(Burst(len(b)), Workload(prompt_tokens=prompt_tokens, max_tokens=b,
                                                    in_order=True),
                            conn=conn, progress=progress, label=f"static batch {i + 1}")
                   for i, b in enumerate(batches)]
    continuous = run_sync(Closed(batch_size, requests=len(lengths)),
                          Workload(prompt_tokens=prompt_tokens, max_tokens=tuple(lengths),
                                   in_order=True),
                          conn=conn, progress=progress, label="continuous")
    static_tokens = sum(r.summary()["output_tokens"] or 0 for r in static_runs)
    static_time = sum(r.summary()["duration_s"] or 0 for r in static_runs)
    c = continuous.summary()
    table = pd.DataFrame([
        {"scheduler": "static (client barrier)", "requests": len(lengths),
         "output_tokens": static_tokens, "duration_s": static_time,
         "agg_tok_s": static_tokens / static_time if static_time else None},
        {"scheduler": "continuous", "requests": c["requests"], "output_tokens": c["output_tokens"],
         "duration_s": c["duration_s"], "agg_tok_s": c["agg_tok_s"]},
    ])
    return Experiment(table, tuple(static_runs) + (continuous,))


# --------------------------------------------------------------------------------------------
# Notebook 05: admission control


def measure_capacity(conn: Connection, slots: int, workload: Workload) -> RunResult:
    """What the engine completes per second when it is never short of work: a closed loop
    of twice as many users as it runs at once, two rounds (half of them always waiting).
    `request_rate_rps` of the result's summary is the capacity."""
    users = 2 * max(1, slots)
    return run_sync(Closed(users, requests=2 * users), workload, conn=conn, warmup=1,
                    progress=False, label=f"capacity, {users} users")
