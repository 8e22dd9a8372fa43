"""Predict a load run before making it: vLLM's scheduler, replayed step by step on a model.

The replay follows what vLLM 0.32's V1 scheduler does, simplified where it does not change
the latencies the course measures:
- each step first gives every running sequence that is decoding one token, then spends what
  is left of the token budget (`max_num_batched_tokens`) on prompts, running ones first, then
  waiting ones in arrival order (chunked prefill);
- a waiting request is admitted only while fewer than `max_num_seqs` run and the KV pool has
  the blocks for the tokens it computes now; the head of the queue blocks the rest (FCFS);
- a running sequence that needs a new block when none is free (for its next prompt chunk or
  its next token) preempts the most recently admitted one, itself if it is that one, which
  frees its blocks and starts over later (vLLM preempts by recompute); a step that preempted
  admits nobody from the waiting queue;
- the step that finishes a prompt makes its first token; every later step one more.
Each step's duration comes from a `StepCost` (`labs.model.steps`), fitted from this server by
`labs.calibration` or read off a datasheet. Prefix caching is left out (the course's prompts
start with random words so that it cannot help).

Arrival shapes are the load generator's own (`labs.workload`): Burst, Closed, Poisson, so a
prediction and a measurement are made of the same request list.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..results.records import percentile
from ..workload import Burst, Closed, Poisson, Shape, bench_requests, in_batches
from .steps import ServerLimits, StepCost

MAX_STEPS = 2_000_000  # a guard, far beyond any course run
# Requests sent "at once" reach the engine one after another, this far apart (the load
# generator and the API server handle them in turn). It matters: the engine starts a step as
# soon as the first one arrives, so in a burst the first request is prefilled alone.
DISPATCH_S = 0.0005


@dataclass
class SimRequest:
    """One request in the replay; times in seconds from the run start."""

    index: int
    arrival_s: float
    prompt_tokens: int
    max_tokens: int
    user: int = 0
    kv_tokens: int = 0         # tokens whose KV exists (prompt so far, then each output)
    prefill_target: int = 0    # what must be in KV before it decodes (prompt; after a
    generated: int = 0         # preemption, prompt + the output it had made)
    blocks: int = 0
    admitted_at: int = -1      # admission order, for choosing whom to preempt
    running: bool = False
    first_token_s: float | None = None
    end_s: float | None = None

    def __post_init__(self) -> None:
        self.prefill_target = self.prefill_target or self.prompt_tokens

    @property
    def prefilling(self) -> bool:
        return self.kv_tokens < self.prefill_target

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.end_s is None else self.end_s - self.arrival_s


@dataclass
class StepTrace:
    """What one step held: the series a metrics dashboard would show."""

    start_s: float
    duration_s: float
    running: int
    waiting: int
    decode_seqs: int
    prefill_tokens: int
    blocks_used: int


@dataclass
class Replay:
    requests: list[SimRequest]
    steps: list[StepTrace] = field(default_factory=list)
    preemptions: int = 0

    @property
    def duration_s(self) -> float:
        ends = [r.end_s for r in self.requests if r.end_s is not None]
        return max(ends) - min(r.arrival_s for r in self.requests) if ends else 0.0

    def summary(self) -> dict[str, Any]:
        """The columns `labs bench` and `RunResult.summary()` use, predicted."""
        done = [r for r in self.requests if r.end_s is not None]
        ttft = [r.ttft_s for r in done if r.ttft_s is not None]
        e2e = [r.e2e_s for r in done if r.e2e_s is not None]
        out = sum(r.max_tokens for r in done)
        duration = self.duration_s
        return {
            "requests": len(self.requests),
            "duration_s": duration,
            "agg_tok_s": out / duration if duration else None,
            "per_user_tok_s": (float(np.mean([r.max_tokens / e for r in done
                                                  if (e := r.e2e_s) is not None]))
                               if done else None),
            "request_rate_rps": len(done) / duration if duration else None,
            "ttft_s_p50": percentile(ttft, 50), "ttft_s_p95": percentile(ttft, 95),
            "ttft_s_max": max(ttft) if ttft else None,
            "e2e_s_p50": percentile(e2e, 50), "e2e_s_p95": percentile(e2e, 95),
            "max_running": max((s.running for s in self.steps), default=0),
            "max_waiting": max((s.waiting for s in self.steps), default=0),
            "peak_blocks": max((s.blocks_used for s in self.steps), default=0),
            "preemptions": self.preemptions,
        }


def check_request(limits: ServerLimits, prompt_tokens: int, max_tokens: int) -> None:
    """Refuse a request vLLM would refuse, or one the pool cannot hold at all."""
    if prompt_tokens < 1 or max_tokens < 1:
        raise ConfigError("prompt_tokens and max_tokens must be at least 1.")
    if prompt_tokens + max_tokens > limits.max_model_len:
        raise ConfigError(
            f"a request of {prompt_tokens} prompt + {max_tokens} output tokens exceeds "
            f"max_model_len {limits.max_model_len}: vLLM would refuse (400) or clamp it.")
    if limits.blocks_for(prompt_tokens + max_tokens) > limits.num_blocks:
        raise ConfigError(f"one request of {prompt_tokens + max_tokens} tokens needs more "
                          f"than the whole KV pool ({limits.pool_tokens} tokens).")


class Engine:
    """vLLM V1's scheduler over one KV pool: who runs, who waits, who is preempted. `step`
    plans a step; `take_step` times it and moves its requests on. Every replay drives one."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.free_blocks = limits.num_blocks
        self.admissions = 0
        self.preemptions = 0

    def _grow(self, req: SimRequest, tokens: int) -> bool:
        need = self.limits.blocks_for(tokens) - req.blocks
        if need <= 0:
            return True
        if need > self.free_blocks:
            return False
        self.free_blocks -= need
        req.blocks += need
        return True

    def _release(self, req: SimRequest) -> None:
        self.free_blocks += req.blocks
        req.blocks = 0

    def _preempt_for(self, req: SimRequest) -> bool:
        """Free blocks for `req` by preempting the latest admitted running sequence (the
        running list is in admission order, so that is its last live entry), as vLLM V1 does.
        When that is `req` itself, vLLM preempts it and schedules nothing for it: returns
        False, with `req` back in the waiting queue."""
        victim = next((r for r in reversed(self.running) if r.running), None)
        if victim is None:
            return False
        victim.running = False
        self._release(victim)
        victim.kv_tokens = 0  # recompute: its prompt and the output so far, later
        victim.prefill_target = victim.prompt_tokens + victim.generated
        self.preemptions += 1
        self.waiting.appendleft(victim)
        return victim is not req

    def step(self) -> list[tuple[SimRequest, int]]:
        """Schedule one step: [(request, tokens it computes)], before any of them runs."""
        budget = self.limits.max_num_batched_tokens
        plan: list[tuple[SimRequest, int]] = []
        preempted_before = self.preemptions
        for req in self.running:
            if not req.running or budget <= 0:
                continue  # preempted earlier in this step, or no budget left
            # a prompt still being prefilled takes its next chunk; a decoding sequence one token
            n = min(req.prefill_target - req.kv_tokens, budget) if req.prefilling else 1
            while not self._grow(req, req.kv_tokens + n):
                if not self._preempt_for(req):
                    break
            if req.running and req.blocks >= self.limits.blocks_for(req.kv_tokens + n):
                plan.append((req, n))
                budget -= n
        # A sequence preempted after it was planned gives its place back.
        kept = [(req, n) for req, n in plan if req.running]
        budget += sum(n for _, n in plan) - sum(n for _, n in kept)
        plan = kept
        self.running = [r for r in self.running if r.running]
        # vLLM admits nobody in a step that had to preempt (the pool is short as it is)
        while (self.waiting and budget > 0 and len(self.running) < self.limits.max_num_seqs
               and self.preemptions == preempted_before):
            req = self.waiting[0]
            n = min(req.prefill_target - req.kv_tokens, budget)
            if not self._grow(req, req.kv_tokens + n):
                break  # the head of the queue waits for blocks, and so does everyone behind
            self.waiting.popleft()
            req.admitted_at = self.admissions
            req.running = True
            self.admissions += 1
            self.running.append(req)
            plan.append((req, n))
            budget -= n
        return plan

    def finish(self, req: SimRequest) -> None:
        req.running = False
        self._release(req)


def take_step(engine: Engine, cost: StepCost, now: float,
              half_overhead: float) -> tuple[StepTrace, list[SimRequest]] | None:
    """One step of `engine` at `now`: planned, timed on `cost`, and every planned request moved
    on (first tokens and ends stamped `half_overhead` after the step: the client's half of a
    request's overhead). The step's trace and the requests it finished; None when nothing
    could be scheduled. The one step loop of every replay (`replay`, the gateway's)."""
    plan = engine.step()
    if not plan:
        return None
    decoding = [req for req, _ in plan if not req.prefilling]
    chunks = [(req.kv_tokens, n) for req, n in plan if req.prefilling]
    prefill = sum(n for _, n in chunks)
    duration = cost.step_s(len(decoding), sum(req.kv_tokens for req in decoding), prefill,
                           sum(n * k + n * n / 2 for k, n in chunks))
    trace = StepTrace(now, duration, len(engine.running), len(engine.waiting), len(decoding),
                      prefill, engine.limits.num_blocks - engine.free_blocks)
    end, finished = now + duration, []
    for req, n in plan:
        req.kv_tokens += n
        if req.prefilling:
            continue  # more chunks of this prompt to go
        req.generated += 1
        if req.first_token_s is None:
            req.first_token_s = end + half_overhead
        if req.generated >= req.max_tokens:
            req.end_s = end + half_overhead
            engine.finish(req)
            finished.append(req)
    return trace, finished


def replay(cost: StepCost, limits: ServerLimits, shape: Shape, prompt_tokens: int,
           max_tokens: int | Sequence[int], *, seed: int = 0,
           in_order: bool = False) -> Replay:
    """Replay `shape` (Burst, Closed or Poisson) of requests with these lengths: one output
    length, or several drawn at random (`seed`) or handed out in order (`in_order`)."""
    outs = [max_tokens] if isinstance(max_tokens, int) else list(max_tokens)
    for out in outs:
        check_request(limits, prompt_tokens, out)
    rng = np.random.default_rng(seed)
    handed = itertools.cycle(outs)

    def out_len() -> int:
        if len(outs) == 1 or in_order:
            return next(handed)
        return int(rng.choice(outs))

    overhead = getattr(cost, "request_overhead_s", 0.0)
    arrivals: list[tuple[float, int, int]] = []  # (time, index, user)
    closed = isinstance(shape, Closed)
    if isinstance(shape, Burst):
        arrivals = [(i * DISPATCH_S, i, i) for i in range(shape.n)]
        total = shape.n
    elif isinstance(shape, Closed):
        total = shape.requests or 10 * shape.concurrency
        arrivals = [(i * DISPATCH_S, i, i) for i in range(min(shape.concurrency, total))]
    elif isinstance(shape, Poisson):
        times = shape.arrival_times_s()
        arrivals = [(float(t), i, i) for i, t in enumerate(times)]
        total = len(arrivals)
        if shape.max_concurrency:
            raise ConfigError("the replay does not model a client-side max_concurrency.")
    else:
        raise ConfigError(f"cannot replay {shape!r}")
    heapq.heapify(arrivals)
    issued = len(arrivals)
    engine = Engine(limits)
    requests: list[SimRequest] = []
    steps: list[StepTrace] = []
    now = 0.0
    for _ in range(MAX_STEPS):
        while arrivals and arrivals[0][0] + overhead / 2 <= now + 1e-12:
            t, i, user = heapq.heappop(arrivals)
            req = SimRequest(i, t, prompt_tokens, out_len(), user=user)
            requests.append(req)
            engine.waiting.append(req)
        taken = take_step(engine, cost, now, overhead / 2)
        if taken is None:
            if not arrivals:
                break
            now = max(now, arrivals[0][0] + overhead / 2)
            continue
        trace, finished = taken
        steps.append(trace)
        now = trace.start_s + trace.duration_s
        for req in finished:
            if closed and issued < total:
                assert req.end_s is not None
                heapq.heappush(arrivals, (req.end_s, issued, req.user))
                issued += 1
    else:
        raise ConfigError("the replay did not finish; is the workload far too large?")
    return Replay(requests, steps, engine.preemptions)


def predict_closed(cost: StepCost, limits: ServerLimits, levels: Sequence[int], *,
                   prompt_tokens: int, max_tokens: int,
                   requests_per_level: int | None = None) -> list[dict[str, Any]]:
    """One row per concurrency level, as `labs bench` would measure it (same columns)."""
    rows = []
    for c in levels:
        n = requests_per_level or bench_requests(c)
        s = replay(cost, limits, Closed(c, requests=n), prompt_tokens, max_tokens).summary()
        rows.append({"concurrency": c, "requests": n, "agg_tok_s": s["agg_tok_s"],
                     "per_user_tok_s": s["per_user_tok_s"], "ttft_s_p50": s["ttft_s_p50"],
                     "ttft_s_p95": s["ttft_s_p95"], "max_running": s["max_running"],
                     "duration_s": s["duration_s"]})
    return rows


def capacity_rps(cost: StepCost, limits: ServerLimits, prompt_tokens: int,
                 max_tokens: int) -> float:
    """Requests per second the engine completes when it is never short of work: a closed
    loop with twice the users it can run at once (so a queue is always waiting)."""
    slots = max(1, limits.fit_at_once(prompt_tokens + max_tokens))
    users = 2 * slots
    s = replay(cost, limits, Closed(users, requests=max(4 * users, 16)), prompt_tokens,
               max_tokens).summary()
    return float(s["request_rate_rps"] or math.nan)


def static_vs_continuous(cost: StepCost, limits: ServerLimits, lengths: Sequence[int],
                         batch_size: int, prompt_tokens: int) -> dict[str, float]:
    """Seconds each scheduler takes for the same list of requests: static batches of
    `batch_size` (each waits for its longest answer), and `batch_size` users in a closed
    loop taking the list in order."""
    static = sum(replay(cost, limits, Burst(len(b)), prompt_tokens, list(b),
                        in_order=True).duration_s for b in in_batches(lengths, batch_size))
    continuous = replay(cost, limits, Closed(batch_size, requests=len(lengths)),
                        prompt_tokens, list(lengths), in_order=True).duration_s
    return {"static_s": static, "continuous_s": continuous,
            "continuous_over_static": static / continuous}
