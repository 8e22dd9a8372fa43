"""Each measurement's table and duration predicted from the calibration, before the run.

Every notebook predicts from the calibration (`cal`: its step costs and limits), then
measures: `beside` puts the two side by side. The replays send the same requests as the
recipes in `recipes` (the same counts, seeds and lengths), so each prediction is of the run
the notebook makes. The candidates are the sizes a run may take, smallest to largest, for
`labs.timebudget` to choose from with the predicted durations.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ...errors import ConfigError
from ...model.simulate import predict_closed, replay
from ...model.simulate import static_vs_continuous as replayed
from ...workload import Burst, Poisson, in_batches
from .recipes import _per_rate, _rate_row, sweep_requests


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


def expected_static_penalty(lengths: Sequence[int], batch_size: int) -> float:
    """What static batching should cost if a step cost the same whatever its batch: each
    batch lasts as long as its longest answer, while continuous batching keeps every slot
    busy, so the ratio is sum(max of each batch) / (sum of lengths / batch size)."""
    return sum(max(b) for b in in_batches(lengths, batch_size)) / (sum(lengths) / batch_size)


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
