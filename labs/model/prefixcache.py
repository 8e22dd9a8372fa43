"""Prefix caching in numbers: what a shared system prompt saves, predicted from token counts.

vLLM hashes each *full* KV block of a prompt (block_size tokens) together with everything
before it; a new request whose leading blocks hash the same reuses them instead of computing
and storing them again. So what a group of requests can share is the full blocks of the tokens
they have in common from the very first one: with a 1,010-token prompt of which 1,000 are a
shared system prompt and 128-token blocks, 7 blocks (896 tokens) are shared and the rest of
each prompt is its own. Everything here follows from three counts measured with the server's
own tokenizer (prompt length, shared length, block size): blocks held, how many requests fit
a pool at once, prefill tokens computed, and the hit rate vLLM's counters will show.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import httpx
import numpy as np
import pandas as pd

from ..load import loadgen
from ..load.loadgen import run_blocking, server_token_counter, tokenize_payload
from ..observe.metrics import MetricsSampler, scrape
from ..results.records import RunResult
from ..serving.connect import Connection
from ..workload import Burst, Closed, PromptFactory, Workload
from .simulate import replay
from .steps import ServerLimits, StepCost

HITS = "vllm:prefix_cache_hits_total"
QUERIES = "vllm:prefix_cache_queries_total"


@dataclass(frozen=True)
class SharedPrefix:
    """One group of prompts, as the server's tokenizer counts them."""

    prompt_tokens: int  # one whole prompt, chat template included
    shared_tokens: int  # the tokens every prompt has in common, from the first
    block_size: int

    @property
    def shared_blocks(self) -> int:
        """Full blocks of the common tokens: the only part a cache hit can reuse."""
        return self.shared_tokens // self.block_size

    def blocks_per_request(self, output_tokens: int) -> int:
        return math.ceil((self.prompt_tokens + output_tokens) / self.block_size)

    def blocks_held(self, users: int, output_tokens: int, *, cached: bool) -> int:
        """Blocks `users` requests hold once all their tokens are in: with the cache on, the
        shared blocks once, plus each request's own."""
        own = self.blocks_per_request(output_tokens)
        if not cached:
            return users * own
        return self.shared_blocks + users * (own - self.shared_blocks)

    def fit_at_once(self, usable_blocks: int, output_tokens: int, *, cached: bool) -> int:
        """How many such requests a pool of `usable_blocks` runs at once, to the end."""
        own = self.blocks_per_request(output_tokens)
        if not cached:
            return usable_blocks // own
        return max(0, (usable_blocks - self.shared_blocks) // (own - self.shared_blocks))

    def prefill_tokens(self, users: int, *, cached: bool) -> int:
        """Prompt tokens the engine computes: with the cache, the first request computes the
        shared blocks and every other reuses them."""
        total = users * self.prompt_tokens
        return total - (users - 1) * self.shared_blocks * self.block_size if cached else total

    def hit_rate(self, users: int) -> float:
        """vLLM's prefix_cache_hits / prefix_cache_queries (both in tokens) for `users`
        requests arriving together on a cold cache."""
        total = users * self.prompt_tokens
        return (total - self.prefill_tokens(users, cached=True)) / total

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "shared_blocks": self.shared_blocks}


def predicted_ttft_cached(cost: StepCost, limits: ServerLimits, shared: SharedPrefix,
                          users: int) -> list[float]:
    """TTFT of each of `users` requests sent together with prefix caching on: the first
    prefills its whole prompt, every other only what follows the shared blocks, but attends to
    them (their KV is read, not computed); the first is scheduled alone (as in
    labs.simulate, the others arrive during its step), then chunks go first come, first served
    within the step's token budget, and a request decodes from the step after its prefill.

    A few lines beside labs.simulate rather than in it: the replay holds each request's blocks
    as its own, and a shared block held once is exactly what it does not model."""
    cached = shared.shared_blocks * shared.block_size
    todo = [[0, shared.prompt_tokens]] + [[cached, shared.prompt_tokens - cached]
                                          for _ in range(users - 1)]  # [kv so far, left]
    overhead = getattr(cost, "request_overhead_s", 0.0)
    ttft: list[float] = [0.0] * users
    now, decoding, decode_context = 0.0, 0, 0
    arrived = 1  # the first request is scheduled alone; the rest arrive during its step
    while any(left for _, left in todo):
        budget, chunks, finished = limits.max_num_batched_tokens - decoding, [], []
        for i, (kv, left) in enumerate(todo[:arrived]):
            if left and budget > 0:
                n = min(left, budget)
                chunks.append((kv, n))
                budget -= n
                todo[i] = [kv + n, left - n]
                if left == n:
                    finished.append(i)
        now += cost.step_s(decoding, decode_context, sum(n for _, n in chunks),
                           sum(n * k + n * n / 2 for k, n in chunks))
        for i in finished:
            ttft[i] = now + overhead
        decoding += len(finished)
        decode_context += sum(todo[i][0] for i in finished)
        arrived = users
    return ttft


def prediction(cost: StepCost, limits: ServerLimits, shared: SharedPrefix, users: int,
               output_tokens: int) -> pd.DataFrame:
    """06's prediction for `users` requests sent together, cache off and on: KV blocks they
    hold at the end, how many run at once to the end, prompt tokens computed, the hit rate,
    and the p95 TTFT (off: the replay of labs.model.simulate; on: `predicted_ttft_cached`). The pool
    lends `limits.num_blocks - 1` blocks: vLLM keeps one aside (its usage gauge divides by it)."""
    usable = limits.num_blocks - 1
    off = replay(cost, limits, Burst(users), shared.prompt_tokens, output_tokens).summary()
    on = float(np.percentile(predicted_ttft_cached(cost, limits, shared, users), 95))

    def column(cached: bool, ttft_p95_s: float) -> dict[str, float]:
        return {"blocks for everyone": shared.blocks_held(users, output_tokens, cached=cached),
                "fit at once": shared.fit_at_once(usable, output_tokens, cached=cached),
                "prefill tokens computed": shared.prefill_tokens(users, cached=cached),
                "hit rate": shared.hit_rate(users) if cached else 0.0,
                "TTFT p95 (s)": ttft_p95_s}

    return pd.DataFrame({"cache off": column(False, off["ttft_s_p95"]),
                         "cache on": column(True, on)})


def predicted_vs_measured(prediction: pd.DataFrame, signals: pd.DataFrame,
                          users: int) -> pd.DataFrame:
    """What 06 predicted (`prediction`) beside what the engine reported (`signals`, one column
    per run from `BurstRun.signals`), with the prediction's error in %. No more than `users`
    can run at once, however many the pool would hold."""
    rows = []
    for run in ("cache on", "cache off"):
        rows.append((f"most running at once, {run}", min(users, prediction.loc["fit at once", run]),
                     signals.loc["max running", run]))
    for name in ("prefill tokens computed", "hit rate"):
        rows.append((f"{name}, cache on", prediction.loc[name, "cache on"],
                     signals.loc[name, "cache on"]))
    for run in ("cache on", "cache off"):
        rows.append((f"TTFT p95 (s), {run}", prediction.loc["TTFT p95 (s)", run],
                     signals.loc["TTFT p95 (s)", run]))
    table = pd.DataFrame(rows, columns=["", "predicted", "measured"]).set_index("")
    table["error %"] = 100 * (table["predicted"] - table["measured"]) / table["measured"]
    return table


def predicted_run_s(cost: StepCost, limits: ServerLimits, shared: SharedPrefix, users: int,
                    output_tokens: int, *, cached: bool) -> float:
    """Seconds `measure_burst` takes, its warm-up included, from the calibrated replay: what
    06 sizes its bursts by (`labs.timebudget`). Cache off: the burst as it is. Cache on: the
    first request computes the shared blocks, then the burst replays with only what follows
    them, on a pool without the blocks held once (each request's own blocks are then exactly
    what the replay holds for it); reading the shared KV is left out, so this is a little
    short."""
    warm = replay(cost, limits, Closed(1, requests=1), shared.prompt_tokens, 4).duration_s
    if not cached:
        return warm + replay(cost, limits, Burst(users), shared.prompt_tokens,
                             output_tokens).duration_s
    held_once = shared.shared_blocks * shared.block_size
    own = replace(limits, num_blocks=max(1, limits.num_blocks - shared.shared_blocks))
    return (warm + held_once / cost.prefill_tok_s
            + replay(cost, own, Burst(users), max(1, shared.prompt_tokens - held_once),
                     output_tokens).duration_s)


def compared(shared: SharedPrefix, users: int, ttft_off_s: float,
             ttft_on_s: float) -> dict[str, float]:
    """One column of 06's comparison between setups (this server, the article's card): p95
    TTFT off and on, their ratio, and what the block size lets the cache share."""
    return {"p95 TTFT, cache off (s)": ttft_off_s, "p95 TTFT, cache on (s)": ttft_on_s,
            "off / on": ttft_off_s / ttft_on_s, "block size (tokens)": shared.block_size,
            "full blocks shared": shared.shared_blocks,
            "hit rate (block arithmetic)": shared.hit_rate(users)}


def measure_shared_prefix(conn: Connection, workload: Workload, block_size: int,
                          samples: int = 3) -> SharedPrefix:
    """Build `samples` prompts the way the load generator will, tokenize them on the server,
    and return their length and the length of what they all share."""
    prompts = _sample_prompts(conn, workload, samples)
    ids = [_token_ids(conn, workload, p) for p in prompts]
    shared = 0
    while all(len(t) > shared for t in ids) and len({t[shared] for t in ids}) == 1:
        shared += 1
    return SharedPrefix(prompt_tokens=round(sum(map(len, ids)) / len(ids)),
                        shared_tokens=shared, block_size=block_size)


def cache_counters(base_url: str) -> dict[str, float]:
    """vLLM's prefix-cache counters now (tokens looked up, tokens found cached)."""
    snap = scrape(base_url)
    return {"queries": snap.value(QUERIES) or 0.0, "hits": snap.value(HITS) or 0.0}


@dataclass
class BurstRun:
    """One burst of requests, with the engine watched while it ran."""

    run: RunResult
    engine: pd.DataFrame  # labs.metrics samples: running, waiting, kv_cache_usage, ...
    prompt_tokens: float  # prompt tokens the engine received (vllm:prompt_tokens_total)
    hits: float           # of which found in the prefix cache
    queries: float        # tokens looked up in the cache (0 with caching off)

    def signals(self, usable_blocks: int) -> dict[str, float]:
        """What 06 compares between the cache on and off, from the engine's own numbers."""
        ttft = sorted(r.ttft_s for r in self.run.records if r.ok and r.ttft_s is not None)
        summary = self.run.summary()
        peak = float(self.engine["kv_cache_usage"].max())
        return {"max running": int(self.engine["running"].max()),
                "peak KV blocks": round(peak * usable_blocks),
                "peak KV usage": peak,
                "prefill tokens computed": self.prompt_tokens - self.hits,
                "hit rate": self.hits / self.queries if self.queries else 0.0,
                "TTFT p50 (s)": summary["ttft_s_p50"], "TTFT p95 (s)": summary["ttft_s_p95"],
                "first TTFT (s)": ttft[0], "last TTFT (s)": ttft[-1]}


def measure_burst(conn: Connection, users: int, workload: Workload, label: str) -> BurstRun:
    """Warm the engine up with one *unrelated* prompt of the same length (the first prompt
    of a new length is slow on a fresh CPU server, and a warm-up with the shared prefix
    would fill the cache the measurement is about), then send `users` requests at once."""
    warm = Workload(prompt_tokens=workload.target_tokens, max_tokens=4)
    loadgen.run_sync(Closed(1, requests=1), warm, conn=conn, progress=False, label="warm-up")
    before, prompt_before = cache_counters(conn.base_url), _prompt_tokens(conn.base_url)
    with MetricsSampler(conn.base_url, interval_s=0.1) as sampler:
        run = loadgen.run_sync(Burst(users), workload, conn=conn, progress=False, label=label)
    after, prompt_after = cache_counters(conn.base_url), _prompt_tokens(conn.base_url)
    return BurstRun(run, sampler.to_frame(t0=run.metadata["perf_counter_t0"]),
                    prompt_after - prompt_before, after["hits"] - before["hits"],
                    after["queries"] - before["queries"])


def _prompt_tokens(base_url: str) -> float:
    return scrape(base_url).value("vllm:prompt_tokens_total") or 0.0


def _sample_prompts(conn: Connection, workload: Workload, n: int) -> list[str]:
    async def build() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as client:
            counter = server_token_counter(client, conn.base_url, conn.model, conn.headers)
            factory = PromptFactory(workload, counter)
            await factory.prepare()
            stream = factory.prompts()
            return [stream.next() for _ in range(n)]

    return run_blocking(build)


def _token_ids(conn: Connection, workload: Workload, prompt: str) -> list[int]:
    with conn.http() as http:
        resp = http.post(conn.base_url + "/tokenize",
                         json=tokenize_payload(workload.api, conn.model, prompt))
        resp.raise_for_status()
        return list(resp.json()["tokens"])
