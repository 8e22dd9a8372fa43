"""The measurements the notebooks make, as functions: one call, one DataFrame.

Each function composes `labs.loadgen` runs into one experiment of the course, returns data
(never prints or plots), and keeps the raw runs so the notebook can save them. Sizes are
arguments; notebooks pick CI-sized or full-sized values with `labs.Settings.is_ci_scale`.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ...load.loadgen import run_sync, sweep
from ...model.simulate import predict_closed, replay
from ...model.simulate import static_vs_continuous as replayed

# Pure analysis lives in labs.results.analysis; notebooks 03 and 03b call these two from here.
from ...results.analysis import find_cliff as find_cliff
from ...results.analysis import rate_knee as rate_knee
from ...results.records import SLO, RunResult, load_sweep, save_sweep, sweep_frame
from ...serving.connect import Connection, connect
from ...serving.server import running_server
from ...settings import Settings
from ...workload import Burst, Closed, Poisson, Shape, Workload, in_batches


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


def predicted_rate_sweep(cal, rates: Sequence[float], *, requests: int | Sequence[int],
                         prompt_tokens: int, max_tokens: int) -> pd.DataFrame:
    """`rate_sweep`'s table, predicted by replaying the same arrivals (the same seeds)."""
    rows = []
    for i, (rate, n) in enumerate(zip(rates, _per_rate(requests, rates))):
        rep = replay(cal.steps, cal.limits, Poisson(rate, requests=n, seed=i),
                     prompt_tokens, max_tokens)
        s = rep.summary()
        rows.append({**_rate_row(rate, [r.arrival_s for r in rep.requests],
                                 [r.end_s for r in rep.requests if r.end_s is not None]),
                     "ttft_s_p50": s["ttft_s_p50"], "ttft_s_p95": s["ttft_s_p95"],
                     "e2e_s_p95": s["e2e_s_p95"], "duration_s": s["duration_s"]})
    return pd.DataFrame(rows)


def arrival_candidates(capacity_rps: float,
                       max_num_seqs: int) -> list[tuple[list[float], list[int]]]:
    """(rates, requests at each rate) for 03b's Poisson runs, smallest to largest.

    vLLM's batch is a buffer: it admits up to `max_num_seqs` requests at once, so an overload
    hides until the excess has filled it. At f x capacity the excess arrives at (f - 1) x
    capacity, and the batch is full after f / (f - 1) x max_num_seqs arrivals (2x at f = 2);
    a rate above capacity therefore sends 3 x max_num_seqs, so the last third waits in the
    queue and completions are capacity-bound for most of the run. A rate below capacity needs
    no such length: half of max_num_seqs shows that service keeps up. The smallest candidate
    is one rate of each kind."""
    if not capacity_rps > 0:
        raise ConfigError(f"capacity must be a positive rate, not {capacity_rps!r}.")

    def requests(f: float) -> int:
        return 3 * max_num_seqs if f > 1 else max(8, max_num_seqs // 2)

    few, some = (0.75, 2.0), (0.5, 1.0, 1.5, 2.0)
    many = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    return [([f * capacity_rps for f in fractions], [requests(f) for f in fractions])
            for fractions in (few, some, many)]


def predicted_rate_sweep_s(cal, rates: Sequence[float], requests: int | Sequence[int], *,
                           prompt_tokens: int,
                           max_tokens: int) -> float:
    """Seconds `rate_sweep` is predicted to take: its rates' replays, back to back, and the
    two warm-up requests it sends alone before the first."""
    warm = replay(cal.steps, cal.limits, Burst(1), prompt_tokens, max_tokens).duration_s
    return 2 * warm + float(predicted_rate_sweep(cal, rates, requests=requests,
                                                 prompt_tokens=prompt_tokens,
                                                 max_tokens=max_tokens)["duration_s"].sum())


def draw_lengths(output_lengths: Sequence[int], requests: int, seed: int = 7) -> tuple[int, ...]:
    """One list of output lengths, drawn once: both schedulers get exactly these requests."""
    rng = np.random.default_rng(seed)
    return tuple(int(x) for x in rng.choice(np.asarray(output_lengths), size=requests))


def expected_static_penalty(lengths: Sequence[int], batch_size: int) -> float:
    """What static batching should cost if a step cost the same whatever its batch: each
    batch lasts as long as its longest answer, while continuous batching keeps every slot
    busy, so the ratio is sum(max of each batch) / (sum of lengths / batch size)."""
    return sum(max(b) for b in in_batches(lengths, batch_size)) / (sum(lengths) / batch_size)


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


def save(name: str, findings: dict[str, object], runs: Sequence[RunResult] = (),
         results_dir: Path | None = None) -> Path:
    """Write a notebook's findings (numbers, small tables) to `<results>/<name>.json` and its
    raw runs beside it, so a learner can compare with a neighbour's machine or re-analyse.
    """
    out_dir = results_dir or Settings.from_env().results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = runs[0].metadata if runs else {}
    doc = {
        "schema_version": 1,
        "notebook": name,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": meta.get("model"), "vllm_version": meta.get("vllm_version"),
        "hardware": meta.get("hardware"), "profile": meta.get("profile"),
        "findings": {k: _jsonable(v) for k, v in findings.items()},
    }
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    if runs:
        save_sweep(list(runs), out_dir / f"{name}-runs.json")
    return path


def load_runs(name: str, results_dir: Path | None = None) -> Experiment:
    """The runs an earlier notebook saved with `save(name, ..., runs)`, and their table: 03b
    analyses 03's sweep request by request instead of running it again."""
    path = (results_dir or Settings.from_env().results_dir) / f"{name}-runs.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run notebook {name} first (it saves its runs "
                          "there), then this cell again.")
    runs = load_sweep(path)
    return Experiment(sweep_frame(runs), tuple(runs))


def _jsonable(value: object) -> object:
    if isinstance(value, pd.DataFrame):
        return value.astype(object).where(value.notna(), None).to_dict(orient="records")
    return value


# --------------------------------------------------------------------------------------------
# Notebook 05: admission control


def measure_capacity(conn: Connection, slots: int, workload: Workload) -> RunResult:
    """What the engine completes per second when it is never short of work: a closed loop
    of twice as many users as it runs at once, two rounds (half of them always waiting).
    `request_rate_rps` of the result's summary is the capacity."""
    users = 2 * max(1, slots)
    return run_sync(Closed(users, requests=2 * users), workload, conn=conn, warmup=1,
                    progress=False, label=f"capacity, {users} users")


def admission_table(results: dict[str, RunResult], slo: SLO) -> pd.DataFrame:
    """One row per setup: what its served requests saw, what it refused, and how."""
    rows = {}
    for label, run in results.items():
        s = run.summary(slo)
        shed = [r for r in run.records if r.error_kind == "shed"]
        rows[label] = {
            "offered": s["requests"], "served": s["ok"], "shed": s["shed"],
            "other_errors": sum(s["errors"].values()) - s["shed"],
            "ttft_p50_s": s["ttft_s_p50"], "ttft_p95_s": s["ttft_s_p95"],
            "e2e_p50_s": s["e2e_s_p50"], "e2e_p95_s": s["e2e_s_p95"],
            "time_to_503_p50_ms": _ms(s["time_to_shed_s_p50"]),
            "time_to_503_max_ms": _ms(s["time_to_shed_s_max"]),
            "retry_after_on_every_503": all(r.retry_after_s for r in shed) if shed else None,
            "goodput_rps": s["goodput_rps"], "throughput_tok_s": s["agg_tok_s"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def plot_admission(table: pd.DataFrame, baseline_ttft_s: float, meta: dict[str, object]):
    """p95 TTFT of served requests (against the baseline) and what was shed, per setup."""
    import matplotlib.pyplot as plt  # heavy: matplotlib only when plotting

    from ..plots import where  # heavy: matplotlib only when plotting

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    fig.suptitle("One overload, every setup", fontsize=12)
    labels = list(table.index)
    ax1.bar(labels, table["ttft_p95_s"], color="tab:red", alpha=0.8, label="p95")
    ax1.bar(labels, table["ttft_p50_s"], color="tab:orange", label="p50")
    ax1.axhline(baseline_ttft_s, color="black", ls="--", label="unloaded baseline")
    ax1.axhline(2 * baseline_ttft_s, color="gray", ls=":", label="2x baseline")
    ax1.set_ylabel("TTFT of served requests (s)")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.bar(labels, table["served"], label="served (200)")
    ax2.bar(labels, table["shed"], bottom=table["served"], label="shed (503)")
    ax2.set_ylabel("requests")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=15)
        ax.grid(alpha=0.3, axis="y")
    fig.text(0.5, 0.005, where(meta), ha="center", fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig


def run_through_gateway(max_in_flight: int, max_queue: int, shape: Shape, workload: Workload,
                        *, max_queue_wait_s: float = 30.0) -> RunResult:
    """Start a gateway with these limits in front of the running gateway profile's engine,
    on a free port, run `shape` through it, and stop it again."""
    from ... import gateway as gw  # heavy: starlette and uvicorn only for a gateway run

    record = running_server()
    if record is None or record.engine_url is None:
        raise ConfigError("start the `gateway` profile first: labs.ensure_server('gateway').")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = gw.GatewayConfig(upstream=record.engine_url, max_in_flight=max_in_flight,
                              max_queue=max_queue, max_queue_wait_s=max_queue_wait_s)
    log = Path(tempfile.gettempdir()) / f"labs-gateway-{port}.log"
    proc = gw.start_gateway_process(config, port, log)
    try:
        gw.wait_gateway_healthy(f"http://127.0.0.1:{port}", 30, proc=proc, log_path=log)
        conn = connect(Settings.from_env(base_url_override=f"http://127.0.0.1:{port}"))
        return run_sync(shape, workload, conn=conn, warmup=1, progress=False,
                        label=f"gateway N={max_in_flight} M={max_queue}")
    finally:
        gw.stop_gateway_process(proc)


# --------------------------------------------------------------------------------------------
# Predicted beside measured (every notebook predicts from the calibration, then measures)


def beside(predicted: pd.DataFrame, measured: pd.DataFrame, key: str,
           columns: Sequence[str]) -> pd.DataFrame:
    """One row per `key`: each column predicted, measured, and the prediction's error in %
    (positive: the model said more than the server did)."""
    both = predicted[[key, *columns]].merge(measured[[key, *columns]], on=key,
                                            suffixes=(" predicted", " measured"))
    for col in columns:
        both[f"{col} error %"] = 100 * (both[f"{col} predicted"] - both[f"{col} measured"]) \
            / both[f"{col} measured"]
    ordered = [key] + [f"{c} {s}" for c in columns for s in ("predicted", "measured", "error %")]
    return both[ordered]


def predicted_ttft_alone(cal, lengths: Sequence[float]) -> pd.DataFrame:
    """TTFT of one request on an idle server, from the calibration."""
    return pd.DataFrame([{"prompt_tokens": n, "ttft_s_p50": cal.predict_ttft_alone_s(n)}
                         for n in lengths])


def predicted_single_stream(cal, output_lengths: Sequence[int],
                            prompt_tokens: int = 32) -> pd.DataFrame:
    """One user alone: decode tok/s (1 / TPOT) at each output length, from the calibration."""
    rows = []
    for n in output_lengths:
        req = replay(cal.steps, cal.limits, Burst(1), prompt_tokens, n).requests[0]
        assert req.e2e_s is not None and req.ttft_s is not None  # one user alone always finishes
        tpot = (req.e2e_s - req.ttft_s) / (n - 1)
        rows.append({"output_tokens": n, "tpot_s_p50": tpot, "decode_tok_s": 1 / tpot})
    return pd.DataFrame(rows)


def sweep_candidates(levels: Sequence[int], knee: int | None) -> list[tuple[list[int], int]]:
    """(levels, rounds) for 03's sweep, smallest to largest, for `timebudget` to choose
    from. The smallest still shows the lesson: 1 user, a few low levels, and every doubling
    from half the predicted knee to the end of `levels` (two doublings past it), so the gain,
    the cliff and the flat top all have points."""
    knee = knee or levels[-1]
    sparse = [c for c in levels if c in (1, 4, 16) or c >= knee // 2]
    every = list(levels)
    return [(sparse, 1), (every, 1), (every, 2), (every, 3)]


def predicted_sweep_s(cal, levels: Sequence[int], rounds: int, *, max_tokens: int,
                      prompt_tokens: int) -> float:
    """Seconds `concurrency_sweep` is predicted to take: the sum of its levels' replays."""
    table = predicted_sweep(cal, levels, max_tokens=max_tokens, prompt_tokens=prompt_tokens,
                            rounds=rounds)
    return float(table["duration_s"].sum())


def scheduler_candidates(max_num_seqs: int) -> list[tuple[int, tuple[int, ...], int]]:
    """(slots, output lengths to mix, requests per slot) for 03's static-vs-continuous run,
    smallest to largest. Lengths spread 8x or more, so a static batch usually waits for a
    long answer while short ones have finished: the effect the run shows."""
    small = (8, 16, 32, 64)
    wide = (8, 16, 32, 64, 128)
    return [c for c in [(4, small, 6), (4, small, 12), (8, wide, 12), (8, wide, 24)]
            if c[0] <= max_num_seqs]


def predicted_schedulers_s(cal, slots: int, lengths: Sequence[int], prompt_tokens: int) -> float:
    """Seconds `static_vs_continuous` is predicted to take: both schedulers, back to back."""
    both = replayed(cal.steps, cal.limits, lengths, slots, prompt_tokens=prompt_tokens)
    return both["static_s"] + both["continuous_s"]


def two_doublings(levels: Sequence[int], max_num_seqs: int) -> tuple[int, int, int]:
    """(a, 2a, 4a) from `levels`, with 4a as large as it can be while every user still runs at
    once (4a <= max_num_seqs): 03's exercise predicts the third from the first two with a step
    that costs `shared + c x own`, which holds while the whole batch is in one step."""
    for target in sorted(levels, reverse=True):
        if (target <= max_num_seqs and target % 4 == 0 and target // 4 in levels
                and target // 2 in levels):
            return target // 4, target // 2, target
    raise ConfigError(f"levels {list(levels)} hold no three doublings a, 2a, 4a at or below "
                      f"max_num_seqs ({max_num_seqs}).")


def predicted_sweep(cal, levels: Sequence[int], *, max_tokens: int,
                    prompt_tokens: int, rounds: int) -> pd.DataFrame:
    """`concurrency_sweep`'s table, predicted (the same requests per level)."""
    rows = [predict_closed(cal.steps, cal.limits, [c], prompt_tokens=prompt_tokens,
                           max_tokens=max_tokens, requests_per_level=sweep_requests(c, rounds))[0]
            for c in levels]
    return pd.DataFrame(rows)
