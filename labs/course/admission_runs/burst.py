"""Notebook 05's closing runs: 04's KV-exhausting burst under the article's two engine flags
(the bounded engine behind the running `gateway` profile, reached directly) and under the
gateway, plus one prompt longer than max_model_len. No server is started: the `gateway`
profile's engine *is* the `bounded` profile, so both setups are one server.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd

from ...errors import ConfigError
from ...load.loadgen import run_sync
from ...model import article
from ...model.kvwait import plan
from ...model.steps import ServerLimits, with_flags
from ...observe.metrics import MetricsSampler
from ...serving import profiles
from ...serving.connect import connect
from ...serving.profiles import flag_value
from ...serving.server import running_server
from ...settings import Settings
from ...workload import Burst, Workload

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
