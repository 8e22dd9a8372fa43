"""Where the last user's wait comes from in a KV-cache burst: the pool, or the compute.

A staircase of TTFTs does not prove that the KV pool caused it. Sixteen long prompts sent at
once queue for prefill whatever the pool: the last one waits for the other fifteen to be
computed. The article's staircase (32 x 4,000-token prompts, ~55 s) mixes both causes, and so
did this course's first version of notebook 04 on the CPU, where ~80 % of the wait was prefill.

This module separates them with a control run of the *identical* burst on a pool that holds it:

    last TTFT (small pool)  =  last TTFT (pool that holds it)  +  waiting for blocks
                               `-- compute: prefill, decode --'     `-- the pool's share --'

and it designs the burst so that the pool's share is most of the wait on the server in front of
you: prompts long enough that they cannot all be admitted (the prompts alone overflow the pool),
answers long enough that an admitted request holds its blocks for a while (vLLM frees blocks
only when a request finishes or is preempted). The replay (`labs.simulate`) predicts both runs
from the calibration, so the design is derived from what this machine measured, and a GPU gets
its own design from its datasheet: it keeps its whole pool for the control and shrinks the
*pressure* pool (`--num-gpu-blocks-override`), never the prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pandas as pd

from ..errors import ConfigError
from ..serving.profiles import get_profile
from ..workload import Burst
from . import article
from .predict import datasheet_limits, datasheet_steps
from .simulate import Replay, replay
from .steps import ServerLimits, StepCost, with_flags
from .timebudget import BUDGETS

TARGET_POOL_SHARE = 0.65  # predicted; the lesson asserts >= 0.5 measured (04)
SAFE_POOL_SHARE = 0.6  # below this the noise of two runs can cross the lesson's 0.5: never chosen
                       # while a longer burst can reach it
ARTICLE_RATIO = 128_000 / 38_816  # the article's prompts over its pool: 3.3x
PROMPT_BLOCKS = (1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 250)  # prompt lengths, in blocks
OUTPUTS = (64, 128, 192, 256, 384, 512)
CONTROL_HEADROOM = 0.8  # the control's burst fills at most this much of its pool


@dataclass(frozen=True)
class WaitSplit:
    """The last user's TTFT with the small pool, split into compute and waiting for blocks."""

    pressure_last_ttft_s: float
    control_last_ttft_s: float

    @property
    def pool_wait_s(self) -> float:
        return max(0.0, self.pressure_last_ttft_s - self.control_last_ttft_s)

    @property
    def pool_share(self) -> float:
        """The pool's share of the last user's wait: 1 - control / pressure."""
        if self.pressure_last_ttft_s <= 0:
            return 0.0
        return self.pool_wait_s / self.pressure_last_ttft_s

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "pool_wait_s": self.pool_wait_s, "pool_share": self.pool_share}


def last_ttft_s(run: Replay) -> float:
    return max(r.ttft_s for r in run.requests if r.ttft_s is not None)


def split(cost: StepCost, pressure: ServerLimits, control: ServerLimits, users: int,
          prompt_tokens: int, output_tokens: int) -> tuple[WaitSplit, Replay, Replay]:
    """Replay one burst on both pools: (the split, the pressure replay, the control replay)."""
    on_small = replay(cost, pressure, Burst(users), prompt_tokens, output_tokens)
    on_large = replay(cost, control, Burst(users), prompt_tokens, output_tokens)
    return WaitSplit(last_ttft_s(on_small), last_ttft_s(on_large)), on_small, on_large


def unbounded(limits: ServerLimits, users: int, tokens_per_request: int) -> ServerLimits:
    """`limits` with a pool that holds `users` requests of `tokens_per_request` at once."""
    blocks = users * limits.blocks_for(tokens_per_request)
    return replace(limits, num_blocks=max(limits.num_blocks, blocks),
                   source=limits.source + "; pool large enough for the whole burst")


@dataclass(frozen=True)
class PoolBurst:
    """A burst that the control pool holds at once and the pressure pool cannot."""

    users: int
    prompt_tokens: int
    output_tokens: int
    pressure: ServerLimits
    control: ServerLimits
    predicted: WaitSplit
    predicted_duration_s: float  # both runs, end to end
    why: str
    pinned: bool = False  # the pressure pool is a profile's (CPU), not sized here (GPU)
    # the design's own replays of the chosen burst (small pool, pool that holds it), kept so
    # that a notebook plots them instead of replaying the burst again
    replays: tuple[Replay, Replay] | None = field(default=None, repr=False, compare=False)

    @property
    def demand_tokens(self) -> int:
        """KV the burst holds when every answer is complete."""
        return self.users * (self.prompt_tokens + self.output_tokens)

    @property
    def demand_over_pool(self) -> float:
        return self.demand_tokens / self.pressure.pool_tokens

    @property
    def fit_at_once(self) -> int:
        """Requests whose whole KV (prompt and answer) the pressure pool holds at once."""
        return self.pressure.fit_at_once(self.prompt_tokens + self.output_tokens)

    @property
    def pressure_flags(self) -> tuple[str, ...]:
        """Engine flags that give a server the pressure pool (for `ensure_server`'s
        `extra_flags`): the block count, and a max-model-len the pool can hold; none when a
        profile already pins the pool."""
        if self.pinned:
            return ()
        return (f"--num-gpu-blocks-override={self.pressure.num_blocks}",
                f"--max-model-len={self.pressure.max_model_len}")

    def to_dict(self) -> dict[str, Any]:
        return {"users": self.users, "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens, "demand_tokens": self.demand_tokens,
                "demand_over_pool": self.demand_over_pool, "fit_at_once": self.fit_at_once,
                "pressure_pool_tokens": self.pressure.pool_tokens,
                "control_pool_tokens": self.control.pool_tokens,
                "predicted": self.predicted.to_dict(),
                "predicted_duration_s": self.predicted_duration_s, "why": self.why}


def pressure_pool(control: ServerLimits, users: int, prompt_tokens: int, output_tokens: int,
                  *, ratio: float = ARTICLE_RATIO) -> ServerLimits:
    """A pool the burst's prompts overflow `ratio` times (the article's 3.3x by default),
    never smaller than one whole request: what `--num-gpu-blocks-override` gives a GPU."""
    per_request = control.blocks_for(prompt_tokens + output_tokens)
    blocks = max(per_request, math.ceil(users * control.blocks_for(prompt_tokens) / ratio))
    length = min(control.max_model_len, blocks * control.block_size)
    return replace(control, num_blocks=blocks, max_model_len=length,
                   source=control.source + f"; pool pinned at {blocks} blocks")


def design(cost: StepCost, control: ServerLimits, users: int | Sequence[int], *,
           budget_s: float,
           pressure: ServerLimits | None = None, target_share: float = TARGET_POOL_SHARE,
           prompt_blocks: Sequence[float] = PROMPT_BLOCKS,
           outputs: Sequence[int] = OUTPUTS) -> PoolBurst:
    """The burst of `users` (a count, or counts to choose from) whose two runs (pressure and
    control) fit `budget_s` of predicted time and whose predicted pool share is at least
    `target_share`, the shortest such; if none reaches the target within the budget, the one
    with the largest share that fits, as long as
    that share is at least SAFE_POOL_SHARE; otherwise the shortest that reaches the target,
    over the budget (the lesson must hold: a slow machine pays in time, and `why` says "over
    the budget"); if no candidate is safe at all, the one with the largest share.

    `control` is the server's own pool (the `naive` profile); `pressure` a pool pinned by a
    profile (the CPU's 40 blocks), or None to size one per candidate (`pressure_pool`).
    Candidates: every prompt of `prompt_blocks` blocks and answer of `outputs` tokens whose
    prompts alone overflow the pressure pool (so some requests wait to be admitted), that the
    control pool holds at once, and that fit max_model_len on both."""
    counts = [users] if isinstance(users, int) else list(users)
    if min(counts) < 2 or budget_s <= 0:
        raise ConfigError("a burst needs at least 2 users and a positive time budget.")
    best: tuple[tuple[float, ...], PoolBurst] | None = None
    for n, blocks in ((n, b) for n in counts for b in prompt_blocks):
        prompt = int(blocks * control.block_size) - 8  # a little under the block edge
        for out in outputs:
            small = pressure or pressure_pool(control, n, prompt, out)
            if not _feasible(small, control, n, prompt, out):
                continue
            wait, on_small, on_large = split(cost, small, control, n, prompt, out)
            duration = on_small.duration_s + on_large.duration_s
            meets = wait.pool_share >= target_share
            within = duration <= budget_s
            # rank: clear of the lesson's floor first, then within budget, then reaching the
            # target, then shorter (if it reaches the target) or larger share (if not)
            safe = wait.pool_share >= SAFE_POOL_SHARE
            key = ((True, within, meets, -duration if meets else wait.pool_share) if safe
                   else (False, False, False, wait.pool_share))  # unsafe: the largest share
            if best is None or key > best[0]:
                why = (f"predicted pool share {wait.pool_share:.0%} "
                       f"({'meets' if meets else 'below'} the {target_share:.0%} target) in "
                       f"{duration:.0f} s of runs ({'within' if within else 'over'} the "
                       f"{budget_s:.0f} s budget)")
                best = (key, PoolBurst(n, prompt, out, small, control, wait, duration, why,
                                       pinned=pressure is not None,
                                       replays=(on_small, on_large)))
    if best is None:
        raise ConfigError(f"no burst of {counts} users overflows a pool the control holds; "
                          "the pools are too close in size (give the pressure pool fewer "
                          "blocks or the control more).")
    return best[1]


def _feasible(small: ServerLimits, control: ServerLimits, users: int, prompt: int,
              out: int) -> bool:
    total = prompt + out
    return (prompt > 0 and users <= control.max_num_seqs
            and total <= min(small.max_model_len, control.max_model_len)
            and small.blocks_for(total) <= small.num_blocks
            and users * small.blocks_for(prompt) > small.num_blocks  # prompts overflow it
            # the control holds everyone, with room to spare (its KV usage must stay clear of full)
            and users * control.blocks_for(total) <= CONTROL_HEADROOM * control.num_blocks)


# Both runs of 04, from the notebook's budget: under `make test` (the slowest CPU kind, 2-core
# AVX2, must fit: its calibration needs 78 s to reach the target share, 75 s gave 62 %), and at
# full size (for the pool's predicted share to reach the target).
CI_BUDGET_S = BUDGETS["04_kv_cache_exhaustion"].ci_s
FULL_BUDGET_S = BUDGETS["04_kv_cache_exhaustion"].full_s


def plan(cost: StepCost, control: ServerLimits, backend: str, *, ci: bool) -> PoolBurst:
    """04's burst for this server. On the CPU the `kv-pressure` profile pins the small pool
    (40 blocks of 128 tokens, so that 06 shares it) and 8-16 users are tried; on a GPU the
    article's 32 users or more, on a pressure pool sized per candidate and given to the
    server with `PoolBurst.pressure_flags`."""
    budget = CI_BUDGET_S if ci else FULL_BUDGET_S
    if backend not in ("cpu", "gpu"):
        raise ConfigError(f"backend must be 'cpu' or 'gpu', not {backend!r}.")
    if backend == "cpu":
        pinned = with_flags(control, get_profile("kv-pressure").flags("cpu"))
        return design(cost, control, (8, 12, 16), budget_s=budget, pressure=pinned)
    return design(cost, control, (32, 48, 64), budget_s=budget)


def article_split(output_tokens: int = 64) -> tuple[WaitSplit, Replay, Replay]:
    """The article's burst (32 users x 4,000-token prompts on 2,426 blocks of 16) replayed on
    its card's datasheet (RTX 4000 Ada, Qwen2.5-7B in bf16) with its pool and with a pool that
    holds it. The article gives no answer length; `output_tokens` is assumed (64 is the length
    whose replay lands on its ~55 s). The datasheet step runs at 100 % of peak, so compute's
    share is a lower bound."""
    steps = datasheet_steps("rtx-4000-ada", article.MODEL)
    limits = datasheet_limits("rtx-4000-ada", article.MODEL, num_blocks=article.NUM_GPU_BLOCKS)
    limits = replace(limits, max_model_len=max(limits.max_model_len, 8192))
    prompt = article.KV_DEMAND_TOKENS // article.KV_USERS
    return split(steps, limits, unbounded(limits, article.KV_USERS, prompt + output_tokens),
                 article.KV_USERS, prompt, output_tokens)


def engine_signals(runs: dict[str, tuple[Any, Any]]) -> Any:
    """One column per run from its engine series (`MetricsSampler.to_frame()`) and its TTFTs:
    what the engine reported, the way 04 reads memory apart from compute."""
    def column(frame: Any, ttft: Any) -> dict[str, float]:
        ttft = sorted(ttft)
        return {"max running": int(frame["running"].max()),
                "max waiting": int(frame["waiting"].max()),
                "peak KV usage": float(frame["kv_cache_usage"].max()),
                "preemptions": float(frame["preemptions_total"].iloc[-1]
                                     - frame["preemptions_total"].iloc[0]),
                "first TTFT (s)": float(ttft[0]), "last TTFT (s)": float(ttft[-1])}

    return pd.DataFrame({name: column(frame, ttft) for name, (frame, ttft) in runs.items()})


def split_table(predicted: WaitSplit, measured: WaitSplit) -> Any:
    """The last user's TTFT split into compute and the wait for blocks, predicted and measured."""
    rows = {"last TTFT, small pool (s)": "pressure_last_ttft_s",
            "compute: last TTFT on a pool that holds it (s)": "control_last_ttft_s",
            "waiting for KV blocks (s)": "pool_wait_s", "the pool's share": "pool_share"}
    return pd.DataFrame({"predicted": {row: getattr(predicted, key) for row, key in rows.items()},
                         "measured": {row: getattr(measured, key) for row, key in rows.items()}})


def findings(burst: PoolBurst, pool: Any, summary: dict, requests: Any, signals: Any,
             predicted: WaitSplit, measured: WaitSplit, article_wait: WaitSplit) -> dict:
    """What 04 saves to results/ (the results card reads the first block of keys)."""
    small = burst.pressure
    return {
        "pool_tokens": small.pool_tokens, "num_gpu_blocks": small.num_blocks,
        "block_size": small.block_size, "users": burst.users,
        "prompt_tokens": burst.prompt_tokens, "output_tokens": burst.output_tokens,
        "demand_tokens": burst.demand_tokens, "demand_over_pool": burst.demand_over_pool,
        "fit_at_once_predicted": burst.fit_at_once,
        "max_running": int(signals.loc["max running", "pressure"]),
        "http_errors": summary["requests"] - summary["ok"],
        "ttft_first_s": float(requests["ttft_s"].iloc[0]),
        "ttft_last_s": float(requests["ttft_s"].iloc[-1]),
        "ttft_by_request": requests[["index", "ttft_s", "e2e_s"]],
        "control_pool_tokens": int(pool.pool_tokens), "sizing": burst.to_dict(),
        "pressure": signals["pressure"].to_dict(), "control": signals["control"].to_dict(),
        "wait_split_predicted": predicted.to_dict(), "wait_split_measured": measured.to_dict(),
        "article_wait_split_predicted": article_wait.to_dict(),
    }


def article_table(outputs: Sequence[int] = (64, 128, 256)) -> Any:
    """`article_split` for several assumed answer lengths, one row each: the compute part does
    not depend on them (prefill of 128,000 prompt tokens), the pool's part does."""
    rows = []
    for out in outputs:
        wait, on_small, _ = article_split(out)
        rows.append({"answer tokens (assumed)": out,
                     "last TTFT, its pool (s)": wait.pressure_last_ttft_s,
                     "compute: pool that holds it (s)": wait.control_last_ttft_s,
                     "waiting for blocks (s)": wait.pool_wait_s,
                     "the pool's share": wait.pool_share, "preemptions": on_small.preemptions})
    return pd.DataFrame(rows).set_index("answer tokens (assumed)")
