"""Check cells: tell the learner, in words, whether an exercise answer is right.

A check never crashes the notebook for a learner: an answer still set to `...` reads
"not answered yet", a wrong one reads what was expected and why, and the notebook goes on.
Under `make test` (LABS_STRICT_CHECKS=1, set by conftest.py) a wrong answer in a *solution*
raises, so a broken solution fails CI instead of printing a polite cross.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    ok: bool | None  # None: not answered yet
    message: str

    def __str__(self) -> str:
        mark = {True: "✅", False: "❌", None: "⏳"}[self.ok]
        return f"{mark} {self.message}"


def _strict() -> bool:
    return os.environ.get("LABS_STRICT_CHECKS") == "1"


def report(verdict: Verdict) -> Verdict:
    print(verdict)
    if _strict() and verdict.ok is not True:
        raise AssertionError(verdict.message)
    return verdict


def missing(name: str, value: object) -> Verdict | None:
    if value is ... or value is None:
        return Verdict(None, f"`{name}` is not answered yet: replace the `...` with your answer.")
    return None


def _number(name: str, value: object) -> float | Verdict:
    """The answer as a finite float, or the Verdict that says why it is not one."""
    if (v := missing(name, value)) is not None:
        return v
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Verdict(False, f"`{name}` should be a number, got {value!r}.")
    if not math.isfinite(number):
        return Verdict(False, f"`{name}` is {number}; it should be a finite number.")
    return number


def close_to(name: str, value: object, expected: float, *, rel: float = 0.05,
             why: str = "") -> Verdict:
    """`value` within `rel` (relative) of `expected`."""
    number = _number(name, value)
    if isinstance(number, Verdict):
        return report(number)
    if math.isclose(number, expected, rel_tol=rel):
        return report(Verdict(True, f"`{name}` = {number:,.4g}: right (expected {expected:,.4g})."))
    hint = f" {why}" if why else ""
    return report(Verdict(False, f"`{name}` = {number:,.4g}, but it should be about "
                                 f"{expected:,.4g} (within {rel:.0%}).{hint}"))


def within_factor(name: str, value: object, measured: float, *, factor: float = 2.0,
                  what: str = "the measurement") -> Verdict:
    """A prediction is good when it lands within `factor` of what was measured."""
    number = _number(name, value)
    if isinstance(number, Verdict):
        return report(number)
    if number > 0 and measured / factor <= number <= measured * factor:
        return report(Verdict(True, f"your prediction {number:,.4g} is within {factor:g}x of "
                                    f"{what} ({measured:,.4g})."))
    return report(Verdict(False, f"your prediction {number:,.4g} is more than {factor:g}x away "
                                 f"from {what} ({measured:,.4g}); revisit the reasoning."))


def true_that(name: str, value: object, condition: bool, *, ok: str, wrong: str) -> Verdict:
    """A yes/no check with both explanations written by the notebook."""
    if (v := missing(name, value)) is not None:
        return report(v)
    return report(Verdict(condition, ok if condition else wrong))


def gateway_meets_slo(max_in_flight: object, max_queue: object, shape: object,
                      workload: object, *, ttft_p95_s: float) -> Verdict:
    """Run the overload through a gateway with the learner's limits and judge the p95 TTFT."""
    for name, value in (("my_max_in_flight", max_in_flight), ("my_max_queue", max_queue)):
        if (v := missing(name, value)) is not None:
            return report(v)
        if not isinstance(value, int) or value < (1 if name == "my_max_in_flight" else 0):
            return report(Verdict(False, f"`{name}` should be a whole number "
                                         f"({'1' if name == 'my_max_in_flight' else '0'} or more)."))
    from .experiments import run_through_gateway

    run = run_through_gateway(max_in_flight, max_queue, shape, workload)  # type: ignore[arg-type]
    s = run.summary()
    p95 = s["ttft_s_p95"]
    if p95 is None:
        return report(Verdict(False, "the gateway served no request at all: raise N."))
    served = f"served {s['ok']} of {s['requests']}, shed {s['shed']}"
    if p95 <= ttft_p95_s:
        return report(Verdict(True, f"N={max_in_flight}, M={max_queue}: p95 TTFT {p95:.2f} s "
                                    f"<= {ttft_p95_s:.2f} s ({served})."))
    return report(Verdict(False, f"N={max_in_flight}, M={max_queue}: p95 TTFT {p95:.2f} s is "
                                 f"over {ttft_p95_s:.2f} s ({served}). A shorter queue, or N "
                                 "no larger than the engine's max-num-seqs, keeps waits short."))


# --------------------------------------------------------------------------------------------
# The exercises' checks. Each holds (or measures) its own expected value, so an exercise cell
# never prints its answer; tests/test_checks.py shows a plausible wrong answer failing each.


def _whole_number(name: str, value: object) -> int | Verdict:
    if (v := missing(name, value)) is not None:
        return v
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return Verdict(False, f"`{name}` should be a whole number, got {value!r}.")
    return value


def h100_ceiling(value: object) -> Verdict:
    """02: Qwen2.5-7B in bf16 on an H100 SXM, one stream: bandwidth / bytes read per step."""
    from .article import MODEL
    from .ceiling import decode_ceiling_tok_s, get_gpu, model_size

    size = model_size(MODEL, dtype="bfloat16")
    expected = decode_ceiling_tok_s(get_gpu("h100-sxm").bandwidth_gbs, size.step_bytes)
    return close_to("h100_qwen_ceiling_tok_s", value, expected, rel=0.03,
                    why="Divide the card's bandwidth (bytes/s) by the bytes a step reads "
                        "(`step_bytes`: the weights less the untied input embedding).")


def bytes_read_at_context(value: object, *, model_root: str, context_tokens: int) -> Verdict:
    """02: what one decode step of this server's model reads at `context_tokens` of context:
    the weights a step reads plus the KV cache of the whole context."""
    from .ceiling import model_size

    size = model_size(model_root)
    expected = (size.step_bytes or size.weight_bytes) + context_tokens * (
        size.kv_bytes_per_token or 0)
    return close_to("step_bytes_at_context", value, expected, rel=0.01,
                    why="A step reads the weights once and every token of context's KV "
                        "(kv_bytes_per_token x context), all layers included.")


def cliff_prediction(value: object, table: object, predicted_knee: int | None = None) -> Verdict:
    """03: the concurrency after which throughput flattens. A cliff read off one noisy sweep
    moves by a level from run to run (a 15 % threshold on a 15 % step), so an answer within
    2x of `find_cliff`'s level or of the model's predicted knee is right."""
    from .experiments import find_cliff

    number = _number("predicted_cliff_users", value)
    if isinstance(number, Verdict):
        return report(number)
    levels = list(table["concurrency"])  # type: ignore[index]
    located = find_cliff(table) or max(levels)  # type: ignore[arg-type]
    references = [located] + ([predicted_knee] if predicted_knee else [])
    near = [r for r in references if number > 0 and r / 2 <= number <= 2 * r]
    where = f"find_cliff located {located}" + (
        f", the model predicted {predicted_knee}" if predicted_knee else "")
    if near:
        return report(Verdict(True, f"your prediction {number:,.4g} is within 2x of where the "
                                    f"throughput flattens ({where})."))
    return report(Verdict(False, f"your prediction {number:,.4g} is more than 2x away from "
                                 f"where the throughput flattens ({where}); look for the level "
                                 "after which doubling the users adds little."))


def request_rate(value: object, table: object, concurrency: int) -> Verdict:
    """03: requests per second the sweep completed at `concurrency` users, as measured."""
    rows = table[table["concurrency"] == concurrency]  # type: ignore[index]
    measured = float(rows["request_rate_rps"].iloc[0])
    return close_to(f"requests_per_s_at_{concurrency}", value, measured, rel=0.05,
                    why="Each request makes a fixed number of tokens: divide the aggregate "
                        "tokens per second by the tokens of one answer.")


def max_running(value: object, engine: object, fit_at_once: int) -> Verdict:
    """04: the most requests the engine ran at once, read from its series, against the pool's
    block arithmetic (one off is allowed: the series is sampled)."""
    number = _whole_number("max_running", value)
    if isinstance(number, Verdict):
        return report(number)
    seen = int(engine["running"].max())  # type: ignore[index]
    if number == seen and abs(number - fit_at_once) <= 1:
        return report(Verdict(True, f"right: at most {number} ran at once; the pool's blocks "
                                    f"hold {fit_at_once} such requests."))
    return report(Verdict(False, f"`max_running` = {number}: take the maximum of "
                                 "engine['running'], and compare it with how many requests "
                                 "the pool's blocks hold at once."))


def blocks_for_everyone(value: object, *, users: int, prompt_tokens: int, output_tokens: int,
                        block_size: int) -> Verdict:
    """04: KV blocks the pool would need for every user at once, in whole blocks each."""
    number = _whole_number("blocks_for_everyone", value)
    if isinstance(number, Verdict):
        return report(number)
    expected = users * math.ceil((prompt_tokens + output_tokens) / block_size)
    if number == expected:
        return report(Verdict(True, f"right: {expected} blocks, {expected * block_size:,} tokens."))
    return report(Verdict(False, f"`blocks_for_everyone` = {number}: each request holds whole "
                                 f"blocks of {block_size} tokens for its prompt and its answer; "
                                 "round up per request, then multiply by the users."))


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
    from .loadgen import run_sync
    from .metrics import MetricsSampler, scrape
    from .workload import Burst, Workload

    pool = scrape(conn.base_url).cache_config()  # type: ignore[attr-defined]
    with MetricsSampler(conn.base_url, interval_s=0.1) as sampler:  # type: ignore[attr-defined]
        run_sync(Burst(users), Workload(prompt_tokens=prompt_tokens, max_tokens=output_tokens),
                 conn=conn, progress=False)
    peak = float(sampler.to_frame()["kv_cache_usage"].max())
    return kv_blocks_judgement(value, round(peak * (pool.num_gpu_blocks - 1)))


def useful_queue(value: object, *, max_wait_s: float, slot_every_s: float,
                 max_in_flight: int) -> Verdict:
    """05: the longest gateway queue whose last waiter still gets a slot within the maximum
    wait, when a slot frees every `slot_every_s` seconds."""
    number = _whole_number("useful_max_queue", value)
    if isinstance(number, Verdict):
        return report(number)
    expected = math.floor(max_wait_s / slot_every_s)
    if number == expected:
        return report(Verdict(True, f"right: about {expected} (a slot every {slot_every_s:.2f} s, "
                                    f"{max_wait_s:.2f} s allowed)."))
    return report(Verdict(False, f"`useful_max_queue` = {number}: the k-th waiter gets a slot "
                                 f"after about k slot intervals ({slot_every_s:.2f} s each, across "
                                 f"all {max_in_flight} slots); how many fit in {max_wait_s:.2f} s?"))


def blocks_with_shared_prefix(value: object, *, users: int, prompt_tokens: int,
                              shared_tokens: int, output_tokens: int, block_size: int,
                              usable_blocks: int) -> Verdict:
    """06: KV blocks `users` requests hold with prefix caching, the shared full blocks once."""
    number = _whole_number("blocks_shared_burst", value)
    if isinstance(number, Verdict):
        return report(number)
    shared_blocks = shared_tokens // block_size
    own = math.ceil((prompt_tokens + output_tokens) / block_size)
    expected = shared_blocks + users * (own - shared_blocks)
    fits = "fits" if expected <= usable_blocks else "does not fit"
    if number == expected:
        return report(Verdict(True, f"right: {expected} blocks ({shared_blocks} shared once, "
                                    f"{own - shared_blocks} of its own per request), which "
                                    f"{fits} the {usable_blocks} usable blocks."))
    if number == users * own:
        hint = "that is every request holding all its blocks: with the cache, shared ones are held once."
    elif number == shared_blocks + users * math.ceil((prompt_tokens + output_tokens
                                                      - shared_tokens) / block_size):
        hint = ("only *full* blocks of the common tokens are shared; the partial block at the end "
                "of the shared part belongs to each request.")
    else:
        hint = ("count the full blocks of the shared tokens once, then each request's blocks "
                "beyond them (round up its prompt + answer to whole blocks first).")
    return report(Verdict(False, f"`blocks_shared_burst` = {number}: {hint}"))


def prefix_hit_rate(value: object, *, users: int, prompt_tokens: int, shared_tokens: int,
                    block_size: int, measured: float) -> Verdict:
    """06: the share of prompt tokens vLLM's counters find cached, for a burst on a cold cache."""
    number = _number("expected_hit_rate", value)
    if isinstance(number, Verdict):
        return report(number)
    hits = (users - 1) * (shared_tokens // block_size) * block_size
    expected = hits / (users * prompt_tokens)
    if abs(number - expected) <= 0.01:
        return report(Verdict(True, f"right: {expected:.3f}; the counters measured "
                                    f"{measured:.3f}."))
    if abs(number - shared_tokens / prompt_tokens) <= 0.01:
        hint = ("that is the shared share of one prompt: the first request finds nothing "
                "cached, and only full blocks are shared.")
    elif abs(number - (users - 1) * shared_tokens / (users * prompt_tokens)) <= 0.01:
        hint = "only *full* blocks of the common tokens can be hits; round down to blocks."
    else:
        hint = ("hits are the tokens of the shared full blocks, found by every request but "
                "the first; divide by all the prompt tokens of the burst.")
    return report(Verdict(False, f"`expected_hit_rate` = {number:.3f}: {hint} (measured "
                                 f"{measured:.3f})"))


def replicas_for_users(value: object, table: object, *, users: int, ttft_p95_limit_s: float,
                       min_per_user_tok_s: float) -> Verdict:
    """07: replicas for `users` concurrent users when each replica takes as many users as the
    highest level of the sweep whose p95 TTFT and per-user tok/s both meet the target."""
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)  # numpy integers too
    number = _whole_number("replicas_for_users", value)
    if isinstance(number, Verdict):
        return report(number)
    columns = [table[name] for name in  # type: ignore[index]
               ("concurrency", "ttft_s_p95", "per_user_tok_s")]
    levels = [(int(c), math.nan if t is None else float(t), math.nan if u is None else float(u))
              for c, t, u in zip(*columns, strict=True)]  # None: a level with no answer
    good = [c for c, ttft, tok_s in levels
            if ttft <= ttft_p95_limit_s and tok_s >= min_per_user_tok_s]
    if not good:
        return report(Verdict(False, "no level of the sweep meets the target, so no replica "
                                     "size follows from it: relax the target."))
    per_replica = max(good)
    expected = math.ceil(users / per_replica)
    if number == expected:
        return report(Verdict(True, f"right: {expected} replicas of {per_replica} users each "
                                    f"serve {users} users."))
    biggest = max(c for c, _, _ in levels)
    if number == math.ceil(users / biggest) and biggest != per_replica:
        hint = (f"{biggest} users is the sweep's largest level, but it misses the target; a "
                "replica takes only as many users as the highest level that meets it.")
    elif number == math.floor(users / per_replica):
        hint = "rounded down: the users left over need one more replica."
    else:
        hint = (f"each replica serves the operating point's users ({per_replica} here); "
                "divide the users by that and round up to whole replicas.")
    return report(Verdict(False, f"`replicas_for_users` = {number}: {hint}"))


def break_even_utilisation(value: object, *, usd_per_hour: float, tok_s: float,
                           api_usd_per_million: float) -> Verdict:
    """07: the fraction of the hour a server busy at `tok_s` (aggregate) must work for its
    tokens to cost what an API charges per million: the hour's price over a busy hour's
    tokens, per million, over the API's price."""
    expected = usd_per_hour / (3600 * tok_s) * 1e6 / api_usd_per_million
    number = _number("break_even_utilisation", value)
    if isinstance(number, Verdict):
        return report(number)
    if math.isclose(number, expected, rel_tol=0.02):
        never = "; above 100 %: the API is cheaper even around the clock" if expected > 1 else ""
        return report(Verdict(True, f"right: busy {expected:.1%} of the time, a self-hosted "
                                    f"token costs what the API charges{never}."))
    if math.isclose(number, 1 / expected, rel_tol=0.02):
        hint = "upside down: the server's cost per million goes on top, the API's price below."
    elif math.isclose(number, 100 * expected, rel_tol=0.02):
        hint = "a fraction is asked for (0.25, not 25 %)."
    elif any(math.isclose(number, expected * k, rel_tol=0.02) for k in (1e6, 1e-6, 1e3, 1e-3)):
        hint = "the units are off: per million tokens on both sides, and 3,600 seconds an hour."
    else:
        hint = ("price per hour / (3,600 x aggregate tok/s) x 1e6 is the cost of a million "
                "tokens when always busy; divide it by the API's price per million.")
    return report(Verdict(False, f"`break_even_utilisation` = {number:,.4g}: {hint}"))
