"""Checks for 01: how many KV blocks users hold."""

from __future__ import annotations

from . import Verdict, report, missing, _whole_number


def kv_blocks_judgement(value: object, measured_blocks: int) -> Verdict:
    """01: the learner's number of KV blocks against the blocks the engine reported."""
    number = _whole_number("blocks_held", value)
    if isinstance(number, Verdict):
        return report(number)
    if abs(number - measured_blocks) <= 1:
        return report(Verdict(True, f"right: the engine held {measured_blocks} blocks "
                                    f"(you said {number})."))
    return report(Verdict(False, f"`blocks_held` = {number}, the engine held {measured_blocks}: "
                                 "every request holds whole blocks for prompt + answer."))


def kv_blocks_held(value: object, conn: object, *, users: int, prompt_tokens: int,
                   output_tokens: int) -> Verdict:
    """01: send the burst, read the peak blocks in use from /metrics, and judge the answer."""
    if (v := missing("blocks_held", value)) is not None:
        return report(v)
    from ..loadgen import run_sync
    from ..metrics import MetricsSampler, scrape
    from ..workload import Burst, Workload

    pool = scrape(conn.base_url).cache_config()  # type: ignore[attr-defined]
    with MetricsSampler(conn.base_url, interval_s=0.1) as sampler:  # type: ignore[attr-defined]
        run_sync(Burst(users), Workload(prompt_tokens=prompt_tokens, max_tokens=output_tokens),
                 conn=conn, progress=False)
    peak = float(sampler.to_frame()["kv_cache_usage"].max())
    return kv_blocks_judgement(value, round(peak * (pool.num_gpu_blocks - 1)))

