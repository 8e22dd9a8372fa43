"""What each notebook is about (prose, no measured numbers) and its key numbers (from results):
the question it answers, what a learner should see, what the instructor asks and does, one line
of facts per notebook, and the article's own figures beside them."""

from __future__ import annotations

from collections.abc import Callable

from ...model import article
from .runresults import NOT_MEASURED, Results, at, num, pct, row, secs

QUESTION = {
    "00_smoke": "Is the server up, and does it count tokens the way we think?",
    "01_provision": "What does one request tell you, and what does it hide?",
    "02_bandwidth_ceiling": "How fast can one stream possibly decode, and what is a step made of?",
    "03_continuous_batching": "What does batching buy, and where does it stop?",
    "03b_arrivals_and_goodput": "What rate of arrivals can the server take within an SLO?",
    "04_kv_cache_exhaustion": "What happens when the KV cache is full, and how much of the wait is the pool?",
    "05_bounded_admission": "Where should the backlog wait, and who tells the client?",
    "06_prefix_caching": "What does a shared system prompt save?",
    "07_capacity_and_cost": "How many servers for N users, and what does a token cost?",
}

SHOULD_SEE = {
    "00_smoke": "an answer naming Paris; the server's token count matches `/tokenize`",
    "01_provision": "the calibration (the fit within a few % of its points); predicted beside "
                    "measured TTFT at three prompt lengths; KV blocks held growing with users",
    "02_bandwidth_ceiling": "measured decode speed below a dashed ceiling line, beside the "
                            "model's prediction; the step split into its fitted parts",
    "03_continuous_batching": "the predicted sweep, then the measured one; aggregate climbing "
                              "then flat, per-user falling; the cliff marked; static against "
                              "continuous on the same requests",
    "03b_arrivals_and_goodput": "served against arrived under Poisson arrivals, leaving the "
                                "diagonal at the knee; goodput under the SLO by users",
    "04_kv_cache_exhaustion": "the same burst on two pools: KV usage pinned, *running* stuck at "
                              "your prediction, a staircase; the last user's wait split into "
                              "compute and the pool",
    "05_bounded_admission": "the measured capacity and the overload sized from it; a table and "
                            "bars for every setup; goodput over a range of SLOs",
    "06_prefix_caching": "the same users with the cache on and off: blocks held, running at "
                         "once, hit rate and p95 TTFT",
    "07_capacity_and_cost": "the cold start timed; the operating point on a sweep; replicas "
                            "for 500 users; the price of a million tokens",
}

# What the instructor asks before the measurement (the numbers in brackets are generated).
ASK = {
    "01_provision": "A 64-token prompt takes *t* ms to its first token. How long does a long "
                    "prompt take? And how many KV blocks do a few users in flight hold?",
    "02_bandwidth_ceiling": "One user alone: how close to `bandwidth / bytes read per step` "
                            "will decode get? Can a measurement beat its own ceiling?",
    "03_continuous_batching": "Many users instead of one: how much more output per second in "
                              "total, and for each user? Where does throughput stop growing?",
    "03b_arrivals_and_goodput": "Requests arrive at random: at what rate does the server stop "
                                "keeping up, and how many users meet the SLO?",
    "04_kv_cache_exhaustion": "How many requests does the small pool admit at once? What do the "
                              "others get: an error, or something else? How much of the last "
                              "user's wait is the pool?",
    "05_bounded_admission": "Same overload, every setup: which keep the p95 TTFT of what they "
                            "serve near the baseline? What does each do with the excess?",
    "06_prefix_caching": "Users share a long system prompt: how many blocks do they hold with "
                         "the cache on, and how many prompt tokens will be hits?",
    "07_capacity_and_cost": "How long until a restarted server gives its first token? How many "
                            "users can one replica take within the target, and what does a "
                            "million tokens cost there?",
}

# What the instructor does with each notebook, live (no numbers: those are in the table).
FOCUS = {
    "00_smoke": "Everyone's server answers; fix any that does not now, not at 1:30.",
    "01_provision": "First request and its TTFT; TTFT against prompt length; the KV blocks "
                    "every request holds; the calibration.",
    "02_bandwidth_ceiling": "Bandwidth, weight bytes, the ceiling; one stream against it; the "
                            "article's inputs against the datasheet in two minutes.",
    "03_continuous_batching": "Start the sweep first, explain batching while it runs; the cliff; "
                              "static against continuous.",
    "03b_arrivals_and_goodput": "Start the arrivals, draw served against arrived on the board; "
                                "the SLO and goodput.",
    "04_kv_cache_exhaustion": "The control first, then the small pool: predict how many fit, "
                              "watch the dashboard, count the errors (zero), read the split.",
    "05_bounded_admission": "Every setup, one overload. The surprise: engine caps alone make "
                            "TTFT worse. The gateway sheds fast and says when to retry.",
    "06_prefix_caching": "Ask the block prediction first; then the control with the flag off.",
    "07_capacity_and_cost": "Start the cold start, walk the inputs while it runs; the "
                            "operating point, replicas, the break-even against an API.",
}


def _facts_00(r: Results) -> str:
    f = r.findings("00_smoke")
    return at(f, "answer") or "an answer naming Paris (the notebook asserts it)"


def _facts_01(r: Results) -> str:
    f = r.findings("01_provision")
    measured, predicted = f.get("ttft_by_prompt_length") or [], f.get("ttft_predicted") or []
    lengths = " / ".join(num(at(x, "target_tokens")) for x in measured) or NOT_MEASURED
    ms = lambda rows: " / ".join(
        num(at(x, "ttft_s_p50") * 1000 if at(x, "ttft_s_p50") is not None else None)
        for x in rows) or NOT_MEASURED
    kv = at(f, "kv_state", -1)
    return (f"first TTFT {secs(at(f, 'first_request_ttft_s'))}; TTFT at {lengths} prompt tokens "
            f"predicted {ms(predicted)} ms, measured {ms(measured)} ms; {num(at(kv, 'users'))} "
            f"users hold {num(at(kv, 'peak_kv_blocks'))} KV blocks (the block arithmetic says "
            f"{num(at(kv, 'blocks_expected'))}); calibration {secs(at(f, 'calibration', 'wall_s'))}")


def _facts_02(r: Results) -> str:
    f = r.findings("02_bandwidth_ceiling")
    decode = [at(x, "decode_tok_s") for x in f.get("single_stream") or []]
    predicted = [at(x, "decode_tok_s") for x in f.get("single_stream_predicted") or []]
    best = max((d for d in decode if d), default=None)
    here = next((x for x in f.get("step_split") or [] if at(x, "kind") == "measured"), None)
    kv = at(f, "kv_growth_4000", 0, "KV adds to the read (%)")
    return (f"{num(at(f, 'bandwidth_read_gbs'))} GB/s / "
            f"{num((at(f, 'step_bytes') or 0) / 1e9 or None, 2)} GB = "
            f"{num(at(f, 'ceiling_tok_s'))} tok/s ceiling; one stream {num(best, 1)} tok/s "
            f"({pct(at(f, 'fraction_of_ceiling'))} of it), predicted "
            f"{num(max((p for p in predicted if p), default=None), 1)}; a step at batch 1: "
            f"{secs(at(here, 'total_s'))}, {pct(at(here, 'shared_fraction'))} shared by a batch; "
            f"KV at 4,000 tokens adds {num(kv, 0, '%')} to a step's read")


def _facts_03(r: Results) -> str:
    f = r.findings("03_continuous_batching")
    sweep, predicted = f.get("sweep") or [], f.get("sweep_predicted") or []
    levels = [at(x, "concurrency") for x in sweep]
    agg = " → ".join(num(at(x, "agg_tok_s")) for x in sweep) or NOT_MEASURED
    pred = " → ".join(num(at(row(predicted, "concurrency", c), "agg_tok_s")) for c in levels)
    users = " → ".join(num(c) for c in levels) or NOT_MEASURED
    return (f"{users} users: predicted {pred or NOT_MEASURED}, measured {agg} tok/s "
            f"({num(at(f, 'batching_gain'), 1, 'x')}, predicted "
            f"{num(at(f, 'batching_gain_predicted'), 1, 'x')}); cliff after "
            f"{num(at(f, 'cliff_users'))} users (predicted {num(at(f, 'predicted_knee'))}); "
            f"continuous / static: {num(at(f, 'continuous_over_static_expected'), 2, 'x')} bound, "
            f"{num(at(f, 'continuous_over_static_modelled'), 2, 'x')} modelled, "
            f"{num(at(f, 'continuous_over_static'), 2, 'x')} measured")


def _facts_03b(r: Results) -> str:
    f = r.findings("03b_arrivals_and_goodput")
    return (f"SLO p95 TTFT {secs(at(f, 'slo', 'ttft_s'))}, TPOT {secs(at(f, 'slo', 'tpot_s'))}; "
            f"goodput best at {num(at(f, 'operating_point_users'))} users, "
            f"{num(at(f, 'operating_point_goodput_rps'), 1)} req/s; Poisson arrivals leave the "
            f"diagonal at {num(at(f, 'rate_knee_rps'), 1)} req/s (predicted "
            f"{num(at(f, 'rate_knee_predicted_rps'), 1)}); capacity {num(at(f, 'capacity_rps'), 1)} req/s")


def _facts_04(r: Results) -> str:
    f = r.findings("04_kv_cache_exhaustion")
    return (f"{num(at(f, 'users'))} users x {num(at(f, 'prompt_tokens'))} + "
            f"{num(at(f, 'output_tokens'))} tokens, {num(at(f, 'demand_over_pool'), 1, 'x')} the "
            f"{num(at(f, 'pool_tokens'))}-token pool: first / last TTFT "
            f"{secs(at(f, 'ttft_first_s'))} / {secs(at(f, 'ttft_last_s'))}, "
            f"{num(at(f, 'http_errors'))} HTTP errors, {num(at(f, 'max_running'))} at once "
            f"(predicted {num(at(f, 'fit_at_once_predicted'))}), KV "
            f"{pct(at(f, 'pressure', 'peak KV usage'))}; on a pool that holds it "
            f"({num(at(f, 'control_pool_tokens'))} tokens) last TTFT "
            f"{secs(at(f, 'wait_split_measured', 'control_last_ttft_s'))}, KV "
            f"{pct(at(f, 'control', 'peak KV usage'))}; the pool's share of the last user's wait "
            f"{pct(at(f, 'wait_split_measured', 'pool_share'))} (predicted "
            f"{pct(at(f, 'wait_split_predicted', 'pool_share'))})")


def _facts_05(r: Results) -> str:
    f = r.findings("05_bounded_admission")
    parts = [f"baseline p95 TTFT {secs(at(f, 'baseline_ttft_s'))}, SLO {secs(at(f, 'slo_ttft_s'))}; "
             f"capacity {num(at(f, 'overload', 'capacity_rps'), 1)} req/s, offered "
             f"{num(at(f, 'overload', 'rate_rps'), 1)}"]
    for setup in f.get("comparison") or []:
        retry = at(setup, "retry_after_on_every_503")
        parts.append(f"{at(setup, 'index')}: p95 {secs(at(setup, 'ttft_p95_s'))}, "
                     f"{num(at(setup, 'served'))} served, {num(at(setup, 'shed'))} refused"
                     + (" with `Retry-After`" if retry else "")
                     + f", goodput {num(at(setup, 'goodput_rps'), 2)} req/s")
    if len(parts) == 1:
        parts.append(f"setups {NOT_MEASURED}")
    return "; ".join(parts)


def _facts_06(r: Results) -> str:
    f = r.findings("06_prefix_caching")
    return (f"{num(at(f, 'users'))} users share {num(at(f, 'shared', 'shared_tokens'))} prompt "
            f"tokens ({num(at(f, 'shared', 'shared_blocks'))} blocks); hit rate "
            f"{pct(at(f, 'cache_on', 'hit rate'))}; running at once "
            f"{num(at(f, 'cache_on', 'max running'))} (cache on) / "
            f"{num(at(f, 'cache_off', 'max running'))} (off); p95 TTFT "
            f"{secs(at(f, 'lesson', 'p95 TTFT cached (s)'))} cached, "
            f"{secs(at(f, 'lesson', 'p95 TTFT uncached (s)'))} uncached "
            f"({num(at(f, 'lesson', 'uncached / cached'), 1, 'x')}, predicted "
            f"{num(at(f, 'lesson', 'predicted'), 1, 'x')})")


def _facts_07(r: Results) -> str:
    f = r.findings("07_capacity_and_cost")
    point, here = f.get("operating_point") or {}, at(f, "plan", 0)
    by_rate = row(f.get("replicas"), "sizing", "by arrival rate")
    all_in = row(f.get("replicas"), "sizing", "N always in flight")
    return (f"cold start {secs(at(f, 'cold_start', 'start_to_first_token_s'))} to the first "
            f"token; operating point {num(at(point, 'concurrency'))} users (p95 TTFT "
            f"{secs(at(point, 'ttft_s_p95'))}, {num(at(point, 'per_user_tok_s'), 1)} tok/s each) "
            f"at {num(at(point, 'agg_tok_s'))} tok/s; {num(at(all_in, 'users'))} users: "
            f"{num(at(all_in, 'replicas'))} replicas if all are always in flight, "
            f"{num(at(by_rate, 'replicas'))} by arrival rate; "
            f"${num(at(here, 'USD per million output tokens'), 2)} per million output tokens at "
            f"${num(at(here, 'USD/hour'), 2)}/h")


FACTS: dict[str, Callable[[Results], str]] = {
    "00_smoke": _facts_00, "01_provision": _facts_01, "02_bandwidth_ceiling": _facts_02,
    "03_continuous_batching": _facts_03, "03b_arrivals_and_goodput": _facts_03b,
    "04_kv_cache_exhaustion": _facts_04, "05_bounded_admission": _facts_05,
    "06_prefix_caching": _facts_06, "07_capacity_and_cost": _facts_07,
}


def facts(r: Results, notebook: str) -> str:
    """The notebook's key numbers in one line; every number absent from results reads
    "not measured", and a notebook with no results at all says so once."""
    fn = FACTS.get(notebook)
    if notebook != "00_smoke" and not r.findings(notebook):
        return f"{NOT_MEASURED} (no results/{notebook}.json)"
    return fn(r) if fn else NOT_MEASURED


def _article(r: Results, notebook: str) -> str:
    """The article's own figures (quoted) and the course's datasheet predictions for its card."""
    f = r.findings(notebook)
    if notebook == "01_provision":
        return f"first TTFT ~{article.FIRST_REQUEST_TTFT_S * 1000:.0f} ms"
    if notebook == "02_bandwidth_ceiling":
        lo, hi = article.MEASURED_SINGLE_STREAM_TOK_S
        card = next((x for x in f.get("step_split") or [] if at(x, "kind") == "predicted"), None)
        return (f"{article.BANDWIDTH_GBS:.0f} GB/s / {article.WEIGHTS_GB:.0f} GB = "
                f"{article.CEILING_TOK_S:.1f} tok/s ceiling, {lo:.0f}–{hi:.0f} measured; its "
                f"step from datasheets, predicted: {secs(at(card, 'total_s'))} at batch "
                f"{num(at(card, 'batch'))}, {pct(at(card, 'shared_fraction'))} shared by a batch")
    if notebook == "03_continuous_batching":
        quoted = " → ".join(f"{a:,.0f}" for a, _ in article.BATCHING.values())
        users = " / ".join(str(c) for c in article.BATCHING)
        roof = " → ".join(num(at(x, "agg_tok_s datasheet")) for x in f.get("article_vs_datasheet") or [])
        return f"{users} users: {quoted} tok/s; datasheet roofline, predicted: {roof or NOT_MEASURED}"
    if notebook == "04_kv_cache_exhaustion":
        split = f.get("article_wait_split_predicted") or {}
        return (f"pool {article.POOL_TOKENS:,} tokens, {article.KV_DEMAND_TOKENS / article.POOL_TOKENS:.1f}x "
                f"demand, TTFT climbs to ~{article.KV_TTFT_PLATEAU_S:.0f} s, no errors; replayed "
                f"on its datasheet, predicted: last TTFT {secs(at(split, 'pressure_last_ttft_s'))}, "
                f"the pool's share {pct(at(split, 'pool_share'))}")
    if notebook == "05_bounded_admission":
        lo, hi = article.BOUNDED_ADMITTED_TTFT_S
        return (f"`{' '.join(article.BOUNDED_FLAGS)}`: \"admitted requests stay near baseline\" "
                f"(prose); its repo's notes: {lo:.0f}–{hi:.0f} s TTFT for the 8 admitted")
    if notebook == "06_prefix_caching":
        card = f.get("card_predicted") or {}
        return (f"\"dropping time to first token to near zero\" (prose); on its datasheet, "
                f"predicted: p95 TTFT {secs(at(card, 'ttft_p95_off_s'))} uncached, "
                f"{secs(at(card, 'ttft_p95_on_s'))} cached")
    if notebook == "07_capacity_and_cost":
        measured = f.get("card_measured_by_article") or {}
        point = f.get("card_operating_point_predicted") or {}
        return (f"no cost figures; priced at its measured {num(at(measured, 'agg_tok_s'))} tok/s "
                f"({num(at(measured, 'users'))} users); datasheet roofline, predicted: "
                f"{num(at(point, 'agg_tok_s'))} tok/s at {num(at(point, 'concurrency'))} users")
    return "—"
