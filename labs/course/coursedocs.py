"""The numbers the README and the two guides quote, generated from one run, so they agree.

Hand-copied numbers drift: the README and the guides once quoted three different runs (04's
first TTFT 0.9 s in one place and 1.8 s in another, 07's cold start 22.6 and 20.7 s, the total
compute 11, 13 and 16 minutes). This module makes one run the only source:

    python -m labs.course.coursedocs run [--scale full|ci] [--only NB ...]
        execute the solution notebooks in order (nbclient), timing each one's wall time, into
        <results>/course_run.json; stop on the first failure, naming the notebook and cell.
    python -m labs.course.coursedocs write [--results DIR] [--root DIR] [--no-plots]
        read <results>/*.json and course_run.json; rewrite only the regions between
        `<!-- coursedocs:NAME -->` and `<!-- /coursedocs:NAME -->` in README.md and the two
        guides, and redraw each notebook's key plots into docs/reference/<notebook>/.

Writing is idempotent (a second run changes no byte), a key that a run did not save is
written "not measured" (never a crash, never a zero), and a missing marker is an error that
names the file and the marker. The reading and exercise time of each notebook is estimated by
a stated rule (`ReadingRule`), and the instructor's 3-hour plan is built from the measured
compute plus that estimate (`build_plan`), naming what is demoed or cut to fit.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ConfigError, LabsError
from ..hardware import cpu_model, cpu_signature
from ..model import article
from ..model.stepsplit import StepSplit
from ..model.timebudget import BUDGETS
from ..results.records import load_sweep
from ..settings import Settings

ROOT = Path(__file__).resolve().parents[2]
NOT_MEASURED = "not measured"
RUN_FILE = "course_run.json"

# Notebooks the course has, in order; solutions/ may add more (they get a row from their title).
NOTEBOOKS = ("00_smoke", "01_provision", "02_bandwidth_ceiling", "03_continuous_batching",
             "03b_arrivals_and_goodput", "04_kv_cache_exhaustion", "05_bounded_admission",
             "06_prefix_caching", "07_capacity_and_cost")

# Results saved before 03 was split: 03b's keys lived in 03's file. Read only when 03b's own
# file is absent, so an older results folder still fills 03b's row.
LEGACY_SOURCE = {"03b_arrivals_and_goodput": "03_continuous_batching"}


# --------------------------------------------------------------------------------------------
# Reading the results of one run


class Results:
    """What one results folder holds: each notebook's findings, its runs, and the course run."""

    def __init__(self, results_dir: Path) -> None:
        self.dir = Path(results_dir)
        self._docs: dict[str, dict[str, Any]] = {}
        path = self.dir / RUN_FILE
        self.course_run: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.exists() else {})

    def doc(self, notebook: str) -> dict[str, Any]:
        """The notebook's saved JSON ({} when it has not saved one)."""
        if notebook not in self._docs:
            self._docs[notebook] = {}
            for name in (notebook, LEGACY_SOURCE.get(notebook)):
                path = self.dir / f"{name}.json" if name else None
                if path is not None and path.exists():
                    self._docs[notebook] = json.loads(path.read_text())
                    break
        return self._docs[notebook]

    def findings(self, notebook: str) -> dict[str, Any]:
        return self.doc(notebook).get("findings") or {}

    def runs(self, notebook: str) -> list[Any]:
        """The notebook's raw runs (`labs.results.records.RunResult`), [] when none were saved."""
        path = self.dir / f"{notebook}-runs.json"
        return load_sweep(path) if path.exists() else []

    def wall_s(self, notebook: str) -> float | None:
        entry = self.course_run.get(notebook) or {}
        return entry.get("wall_s") if entry.get("ok") else None

    def run_scales(self) -> set[str]:
        return {e["scale"] for e in self.course_run.values() if e.get("scale")}

    def run_cpu(self) -> str | None:
        return next((e.get("cpu") for e in self.course_run.values() if e.get("cpu")), None)


def at(data: Any, *path: Any) -> Any:
    """data[path[0]][path[1]]..., or None where any step is missing (a key not measured)."""
    for key in path:
        if isinstance(data, Mapping):
            data = data.get(key)
        elif isinstance(data, Sequence) and not isinstance(data, str) and isinstance(key, int):
            data = data[key] if -len(data) <= key < len(data) else None
        else:
            return None
        if data is None:
            return None
    return data


def row(table: Any, column: str, value: Any) -> dict[str, Any] | None:
    """The first row of a saved table (list of dicts) whose `column` equals `value`."""
    if not isinstance(table, list):
        return None
    return next((r for r in table if isinstance(r, dict) and r.get(column) == value), None)


def num(value: Any, digits: int = 0, unit: str = "") -> str:
    """A number with thousands separators and its unit, or "not measured"."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return NOT_MEASURED
    text = f"{value:,.{digits}f}"
    return text + (unit if unit in ("x", "") else f" {unit}")


def secs(value: Any) -> str:
    """Seconds as people read them: 147 ms, 6.8 s, 1,277 s."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return NOT_MEASURED
    if abs(value) < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.1f} s" if abs(value) < 100 else f"{value:,.0f} s"


def pct(value: Any) -> str:
    """A fraction (0-1) as a percentage."""
    return num(value * 100 if isinstance(value, (int, float)) else None, 0, "%")


def minutes(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return NOT_MEASURED
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


# --------------------------------------------------------------------------------------------
# What each notebook is about (prose, no measured numbers) and its key numbers (from results)


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


# --------------------------------------------------------------------------------------------
# Reading and exercise time, by a stated rule


@dataclass(frozen=True)
class ReadingRule:
    """How long a person spends in a notebook besides its compute, counted from the notebook:

    - reading: its markdown words at `words_per_min` (technical prose, read with care);
    - code: `code_cell_min` per code cell (read a short cell, run it, look at the output);
    - predictions: `prediction_min` per prediction (an `exercise` cell whose next tagged
      cell is a `prediction` cell: write a number, compare it);
    - exercises: `exercise_min` per other `exercise` cell (reason, write code, run its check).

    Live in a class, the instructor tells the story in `live_talk_share` of the reading time
    while the compute runs (start the long cell, then talk), so a live notebook takes
    max(compute, talk) + predictions + exercises; a demo drops the exercises."""

    words_per_min: float = 150.0
    code_cell_min: float = 0.25
    prediction_min: float = 2.0
    exercise_min: float = 5.0
    live_talk_share: float = 0.5


RULE = ReadingRule()


@dataclass(frozen=True)
class Counts:
    """What a notebook holds that takes a person's time."""

    words: int = 0
    code_cells: int = 0
    predictions: int = 0
    exercises: int = 0
    found: bool = True

    def reading_min(self, rule: ReadingRule = RULE) -> float:
        return self.words / rule.words_per_min + self.code_cells * rule.code_cell_min

    def doing_min(self, rule: ReadingRule = RULE) -> float:
        return self.predictions * rule.prediction_min + self.exercises * rule.exercise_min


def count(path: Path) -> Counts:
    """Count markdown words, code cells, predictions and exercises of one notebook."""
    if not path.exists():
        return Counts(found=False)
    cells = json.loads(path.read_text())["cells"]
    tags = [set(c.get("metadata", {}).get("tags", [])) for c in cells]
    words = sum(len(re.findall(r"\S+", "".join(c["source"]))) for c in cells
                if c["cell_type"] == "markdown")
    sources = ["".join(c["source"]) for c in cells]
    # A prediction is the exercise cell that assigns the name a `prediction` cell scores as
    # `mine=` (06 asks for its prediction first and its exercises after, so order says nothing).
    scored = {m for src, t in zip(sources, tags) if "prediction" in t
              for m in re.findall(r"mine=(\w+)", src)}
    predictions = exercises = 0
    for src, cell_tags in zip(sources, tags):
        if "exercise" not in cell_tags:
            continue
        if any(re.search(rf"^\s*{re.escape(name)}\s*=", src, re.M) for name in scored):
            predictions += 1
        else:
            exercises += 1
    return Counts(words, sum(c["cell_type"] == "code" for c in cells), predictions, exercises)


def title(path: Path, notebook: str) -> str:
    """The notebook's first heading, for a notebook this module has no prose for."""
    if path.exists():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "markdown":
                first = "".join(cell["source"]).strip().splitlines()[0]
                return first.lstrip("# ").split("·", 1)[-1].strip()
    return notebook


# --------------------------------------------------------------------------------------------
# The per-notebook table and the instructor's plan


DEFAULT_UNMEASURED_COMPUTE_S = 60.0  # a notebook with no measurement and no budget (00)


@dataclass(frozen=True)
class NotebookTime:
    notebook: str
    counts: Counts
    measured_s: float | None
    budget_ci_s: float | None
    budget_full_s: float | None
    runs_predicted_s: float | None
    runs_actual_s: float | None

    @property
    def compute_s(self) -> float:
        """What the plan counts on: the measured wall time, else the full-size budget."""
        if self.measured_s is not None:
            return self.measured_s
        return self.budget_full_s if self.budget_full_s is not None else DEFAULT_UNMEASURED_COMPUTE_S

    @property
    def self_paced_min(self) -> float:
        return self.compute_s / 60 + self.counts.reading_min() + self.counts.doing_min()

    def talk_min(self, rule: ReadingRule = RULE) -> float:
        return self.counts.reading_min(rule) * rule.live_talk_share


def notebooks(solutions_dir: Path) -> list[str]:
    """Every notebook of the course: those in solutions/ and those the course plans for."""
    found = {p.stem for p in solutions_dir.glob("*.ipynb")}
    return sorted(found | set(NOTEBOOKS) | set(BUDGETS))


def notebook_times(r: Results, solutions_dir: Path) -> list[NotebookTime]:
    rows = []
    for nb in notebooks(solutions_dir):
        budget = BUDGETS.get(nb)
        timings = r.findings(nb).get("timings") or []
        predicted = [t.get("predicted_s") for t in timings if isinstance(t, dict)]
        actual = [t.get("actual_s") for t in timings if isinstance(t, dict)]
        rows.append(NotebookTime(
            nb, count(solutions_dir / f"{nb}.ipynb"), r.wall_s(nb),
            budget.ci_s if budget else None, budget.full_s if budget else None,
            sum(p for p in predicted if p is not None) if timings else None,
            sum(a for a in actual if a is not None) if timings else None))
    return rows


SESSION_MIN = 180
SLACK_MIN = 5  # a plan that ends on the minute has no room for one question: keep five
WELCOME_MIN, WRAP_UP_MIN = 10, 5
BREAKS = ((50, 10), (115, 5))  # (after the notebook that ends at or past this minute, length)
SHOWN_MIN = 5                  # walk through the reference plots instead of running it
MODES = ("live", "demo", "shown", "homework")
NEVER_BELOW_LIVE = ("00_smoke", "01_provision", "04_kv_cache_exhaustion")
# What gives way first when the notebooks do not fit, one step at a time. 04 never does: it
# is the centre of the story, and 06's payoff needs it.
CUT_LADDER: tuple[tuple[str, str], ...] = (
    ("06_prefix_caching", "demo"), ("03b_arrivals_and_goodput", "demo"),
    ("07_capacity_and_cost", "demo"), ("02_bandwidth_ceiling", "demo"),
    ("06_prefix_caching", "shown"), ("03b_arrivals_and_goodput", "shown"),
    ("07_capacity_and_cost", "shown"), ("03_continuous_batching", "demo"),
    ("05_bounded_admission", "demo"), ("06_prefix_caching", "homework"),
    ("03b_arrivals_and_goodput", "homework"), ("07_capacity_and_cost", "homework"),
    ("02_bandwidth_ceiling", "shown"),
)


def block_min(t: NotebookTime, mode: str, rule: ReadingRule = RULE) -> int:
    """Whole minutes a notebook takes in the session in `mode` (see `ReadingRule`)."""
    running = max(t.compute_s / 60, t.talk_min(rule))
    if mode == "live":
        minutes_ = running + t.counts.doing_min(rule)
    elif mode == "demo":
        minutes_ = running + t.counts.predictions * rule.prediction_min
    elif mode == "shown":
        minutes_ = min(SHOWN_MIN, running)
    else:
        minutes_ = 0
    return math.ceil(minutes_)


@dataclass
class Plan:
    modes: dict[str, str]
    minutes: dict[str, int]
    rows: list[tuple[int, int, str, str, str]] = field(default_factory=list)

    @property
    def total_min(self) -> int:
        return sum(m for _, m, _, _, _ in self.rows)

    @property
    def fits(self) -> bool:
        return self.total_min <= SESSION_MIN - SLACK_MIN


def build_plan(times: Sequence[NotebookTime], rule: ReadingRule = RULE) -> Plan:
    """Every notebook live, then the `CUT_LADDER`'s steps one by one until the session fits
    `SESSION_MIN` with the welcome, the breaks and the wrap-up."""
    by_name = {t.notebook: t for t in times}
    modes = {t.notebook: "live" for t in times}
    fixed = WELCOME_MIN + WRAP_UP_MIN + sum(m for _, m in BREAKS)
    ladder = [(nb, "demo") for nb in modes if nb not in NOTEBOOKS] + list(CUT_LADDER)

    def total() -> int:
        return fixed + sum(block_min(by_name[nb], mode, rule) for nb, mode in modes.items())

    for nb, mode in ladder:
        if total() <= SESSION_MIN - SLACK_MIN:
            break
        if nb in modes and nb not in NEVER_BELOW_LIVE and MODES.index(mode) > MODES.index(modes[nb]):
            modes[nb] = mode
    minutes_ = {nb: block_min(by_name[nb], mode, rule) for nb, mode in modes.items()}
    plan = Plan(modes, minutes_)
    clock, breaks = 0, list(BREAKS)
    plan.rows.append((clock, WELCOME_MIN, "Welcome and the story", "all",
                      "The article's claim in one slide: the deployment works, then fails quietly "
                      "under load. Everyone runs `.venv/bin/python -m labs status`."))
    clock += WELCOME_MIN
    for nb, mode in modes.items():
        if mode == "homework":
            continue
        t = by_name[nb]
        plan.rows.append((clock, minutes_[nb], f"`{nb}`", mode, _plan_note(t, mode)))
        clock += minutes_[nb]
        if breaks and clock >= breaks[0][0]:
            plan.rows.append((clock, breaks[0][1], "Break", "", ""))
            clock += breaks.pop(0)[1]
    for _, length in breaks:
        plan.rows.append((clock, length, "Break", "", ""))
        clock += length
    homework = [nb for nb, mode in modes.items() if mode == "homework"]
    plan.rows.append((clock, WRAP_UP_MIN, "The results card", "all",
                      "`.venv/bin/python -m labs card`, compare with a neighbour (`--compare`)."
                      + (f" Homework: {', '.join(f'`{nb}`' for nb in homework)}." if homework else "")))
    return plan


def _plan_note(t: NotebookTime, mode: str) -> str:
    focus = FOCUS.get(t.notebook, "")
    compute = f"compute ~{max(1, round(t.compute_s / 60))} min"
    if mode == "live":
        return (f"Attendees run it ({compute}; {t.counts.predictions} prediction(s), "
                f"{t.counts.exercises} exercise(s)). {focus}")
    if mode == "demo":
        ask = "ask for the prediction first; " if t.counts.predictions else ""
        return f"Run it on the projector ({compute}); {ask}exercises are homework. {focus}"
    return (f"Show its reference plots (docs/reference/{t.notebook}/) and its row in the table; "
            f"attendees run it after the session.")


# --------------------------------------------------------------------------------------------
# The regions


def _source_line(r: Results) -> str:
    scales = r.run_scales()
    scale = ("full size" if scales == {"full"} else "CI size" if scales == {"ci"}
             else "mixed sizes (" + ", ".join(sorted(scales)) + ")" if scales else None)
    docs = [r.doc(nb) for nb in NOTEBOOKS if r.doc(nb)]
    dates = sorted({d.get("saved_at", "")[:10] for d in docs if d.get("saved_at")})
    hardware = next((d.get("hardware") for d in docs if d.get("hardware")), None)
    model = next((d.get("model") for d in docs if d.get("model")), None)
    vllm = next((d.get("vllm_version") for d in docs if d.get("vllm_version")), None)
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else NOT_MEASURED
    return (f"Generated by `python -m labs.course.coursedocs write` from one run: compute timed by "
            f"`python -m labs.course.coursedocs run` at {scale or 'a size not recorded (no course_run.json)'}"
            f" on {r.run_cpu() or hardware or NOT_MEASURED}; results saved {when} by "
            f"{model or NOT_MEASURED} on vLLM {vllm or NOT_MEASURED}. Do not edit by hand.")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/").replace("\n", " ") for cell in r) + " |"
              for r in rows]
    return "\n".join(lines)


def _compute_cell(t: NotebookTime) -> str:
    return secs(t.measured_s) if t.measured_s is not None else NOT_MEASURED


def region_notebook_times(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    scales = r.run_scales()
    rows = []
    for t in times:
        budget = (f"{secs(t.budget_full_s)} / {secs(t.budget_ci_s)}"
                  if t.budget_full_s is not None else "none")
        runs = (f"{secs(t.runs_predicted_s)} → {secs(t.runs_actual_s)}"
                if t.runs_predicted_s is not None else NOT_MEASURED)
        people = (f"{t.counts.reading_min() + t.counts.doing_min():.0f} min "
                  f"({t.counts.words:,} words, {t.counts.code_cells} cells, "
                  f"{t.counts.predictions} pred., {t.counts.exercises} ex.)"
                  if t.counts.found else "notebook not found")
        rows.append([f"`{t.notebook}`", _compute_cell(t), budget, runs, people,
                     f"{t.self_paced_min:.0f} min"])
    measured = [t.measured_s for t in times if t.measured_s is not None]
    rows.append(["**total**", minutes(sum(measured)) if measured else NOT_MEASURED,
                 minutes(sum(t.budget_full_s or 0 for t in times)) + " / "
                 + minutes(sum(t.budget_ci_s or 0 for t in times)), "",
                 f"{sum(t.counts.reading_min() + t.counts.doing_min() for t in times):.0f} min",
                 f"{sum(t.self_paced_min for t in times):.0f} min"])
    size = "full size" if scales == {"full"} else "CI size" if scales == {"ci"} else "the run's size"
    header = ["notebook", f"compute, measured ({size})", "budget (full / CI)",
              "sized runs: predicted → actual", "reading + exercises (estimate)",
              "on your own (compute + estimate)"]
    rule = (f"The estimate is a rule (`labs.course.coursedocs.ReadingRule`): markdown at "
            f"{RULE.words_per_min:.0f} words a minute, {RULE.code_cell_min * 60:.0f} s a code "
            f"cell, {RULE.prediction_min:.0f} min a prediction, {RULE.exercise_min:.0f} min an "
            f"exercise. Where compute is {NOT_MEASURED}, the totals count the full-size budget.")
    return "\n".join([_source_line(r), "", _table(header, rows), "", rule])


def region_plan(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    plan = build_plan(times)
    rows = [[f"{start // 60}:{start % 60:02d}", str(length), block, mode, note]
            for start, length, block, mode, note in plan.rows]
    by_mode = {m: [nb for nb, mode in plan.modes.items() if mode == m] for m in MODES}
    listed = lambda names: ", ".join(f"`{nb}`" for nb in names) or "none"
    applied = {(nb, m) for nb, m in CUT_LADDER if MODES.index(plan.modes.get(nb, "live")) >= MODES.index(m)}
    next_cuts = [f"`{nb}` {m}" for nb, m in CUT_LADDER
                 if (nb, m) not in applied and nb in plan.modes][:3]
    summary = (f"Built from the table above: {plan.total_min} of {SESSION_MIN} minutes"
               f"{'' if plan.fits else ' (OVER: run the demoed notebooks as homework)'}. "
               f"Live: {listed(by_mode['live'])}. Demoed on the projector: {listed(by_mode['demo'])}. "
               f"Shown from the reference plots: {listed(by_mode['shown'])}. "
               f"Cut to homework: {listed(by_mode['homework'])}. "
               f"If you run late, cut next: {', '.join(next_cuts) or 'nothing left to cut'}. "
               f"Never cut `04_kv_cache_exhaustion`: it is the centre of the story.")
    return "\n".join([_table(["time", "minutes", "block", "how", "notes"], rows), "", summary])


def region_self_paced(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    rows = [[f"`{t.notebook}`",
             SHOULD_SEE.get(t.notebook, title(solutions_dir / f"{t.notebook}.ipynb", t.notebook)),
             f"{t.self_paced_min:.0f} min", facts(r, t.notebook)] for t in times]
    return "\n".join([_source_line(r), "",
                      _table(["notebook", "you should see", "time on your own", "one run's numbers"], rows)])


def region_course_map(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    rows = [[f"`{t.notebook}`",
             QUESTION.get(t.notebook, title(solutions_dir / f"{t.notebook}.ipynb", t.notebook)),
             _compute_cell(t), _article(r, t.notebook), facts(r, t.notebook)] for t in times]
    header = ["notebook", "the question it answers", "compute, measured",
              f"article ({article.GPU}, {article.MODEL.split('/')[-1]})", "embedded default, this run"]
    return "\n".join([_source_line(r), "", _table(header, rows)])


def region_predict(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    lines = []
    for t in times:
        if t.notebook in ASK:
            number, name = t.notebook.split("_", 1)
            lines.append(f"- **{number} · {name.replace('_', ' ')}.** {ASK[t.notebook]} "
                         f"[{facts(r, t.notebook)}.]")
    return "\n".join(lines)


def region_total_compute(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    measured = [t.measured_s for t in times if t.measured_s is not None]
    scales = r.run_scales()
    if not measured:
        return f"{NOT_MEASURED} yet (budgeted {minutes(sum(t.budget_full_s or 0 for t in times))} at full size)"
    size = "full size" if scales == {"full"} else "CI size" if scales == {"ci"} else "the run's size"
    return f"{minutes(sum(measured))} at {size} on {r.run_cpu() or 'the measured machine'}"


def region_self_paced_total(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    return f"about {sum(t.self_paced_min for t in times) / 60:.1f} hours"


def region_server_ready(r: Results, times: Sequence[NotebookTime], solutions_dir: Path) -> str:
    ready = at(r.findings("07_capacity_and_cost"), "cold_start", "start_to_ready_s")
    return f"~{secs(ready)}" if ready is not None else f"(start-up time {NOT_MEASURED})"


REGIONS: dict[str, Callable[..., str]] = {
    "course-map": region_course_map,
    "notebook-times": region_notebook_times,
    "plan": region_plan,
    "self-paced-rows": region_self_paced,
    "predict": region_predict,
    "total-compute": region_total_compute,
    "self-paced-total": region_self_paced_total,
    "server-ready": region_server_ready,
}
INLINE = {"total-compute", "self-paced-total", "server-ready"}
DOC_REGIONS: dict[str, tuple[str, ...]] = {
    "README.md": ("course-map", "server-ready"),
    "docs/instructor-guide.md": ("notebook-times", "total-compute", "plan", "predict"),
    "docs/self-paced-guide.md": ("self-paced-total", "total-compute", "self-paced-rows"),
}
_MARKER = re.compile(r"<!-- (/?)coursedocs:([\w-]+) -->")


def fill(text: str, values: Mapping[str, str], path: str, required: Sequence[str]) -> str:
    """`text` with every coursedocs region replaced by its value. A required region without
    both markers, an unknown region, or an unclosed one is an error naming `path` and the marker."""
    names = [m.group(2) for m in _MARKER.finditer(text) if not m.group(1)]
    closes = [m.group(2) for m in _MARKER.finditer(text) if m.group(1)]
    for name in required:
        if name not in names:
            raise ConfigError(f"{path}: marker <!-- coursedocs:{name} --> is missing; put it "
                              f"(and <!-- /coursedocs:{name} -->) where that region belongs.")
    for name in names + closes:
        if name not in values:
            raise ConfigError(f"{path}: <!-- coursedocs:{name} --> names no region "
                              f"(known: {', '.join(sorted(values))}).")
    for name in set(names):
        if names.count(name) != closes.count(name):
            raise ConfigError(f"{path}: marker <!-- /coursedocs:{name} --> is missing (or "
                              f"doubled): every region opens and closes once.")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        body = values[name] if name in INLINE else f"\n{values[name]}\n"
        return f"<!-- coursedocs:{name} -->{body}<!-- /coursedocs:{name} -->"

    return re.sub(r"<!-- coursedocs:([\w-]+) -->.*?<!-- /coursedocs:\1 -->", replace, text,
                  flags=re.S)


# --------------------------------------------------------------------------------------------
# Reference plots, redrawn from the saved tables with labs.course.plots


@dataclass(frozen=True)
class Reference:
    notebook: str
    filename: str
    caption: str
    draw: Callable[[Results], Any]


class _Missing(Exception):
    """A plot's data was not saved by this run."""


def _need(value: Any) -> Any:
    if value is None or (isinstance(value, (list, dict)) and not value):
        raise _Missing
    return value


def _frame(rows: Any) -> Any:
    return pd.DataFrame(_need(rows))


def _meta(r: Results, notebook: str) -> dict[str, Any]:
    return {k: r.doc(notebook).get(k) for k in ("model", "vllm_version", "hardware")}


def _splits(rows: Any) -> list[Any]:
    names = {f.name for f in fields(StepSplit)}
    return [StepSplit(**{k: v for k, v in row_.items() if k in names}) for row_ in _need(rows)]


def _ttfts(r: Results, notebook: str) -> dict[str, list[float]]:
    return {run.label: [rec.ttft_s for rec in run.records if rec.ttft_s is not None]
            for run in _need(r.runs(notebook))}


def _draw_01(r: Results) -> Any:
    from . import plots  # heavy: matplotlib only when drawing

    return plots.ttft_by_prompt(_frame(r.findings("01_provision").get("ttft_by_prompt_length")),
                                _meta(r, "01_provision"))


def _draw_02_ceiling(r: Results) -> Any:
    from . import plots  # heavy: matplotlib only when drawing

    f = r.findings("02_bandwidth_ceiling")
    return plots.decode_vs_ceiling(_frame(f.get("single_stream")), _need(f.get("ceiling_tok_s")),
                                   _meta(r, "02_bandwidth_ceiling"))


def _draw_split(notebook: str) -> Callable[[Results], Any]:
    def draw(r: Results) -> Any:
        from . import plots  # heavy: matplotlib only when drawing

        return plots.step_split(_splits(r.findings(notebook).get("step_split")), _meta(r, notebook))
    return draw


def _draw_03_sweep(r: Results) -> Any:
    from . import plots  # heavy: matplotlib only when drawing

    f = r.findings("03_continuous_batching")
    return plots.batching_sweep(_frame(f.get("sweep")), _meta(r, "03_continuous_batching"),
                                f.get("cliff_users"))


def _draw_03b(r: Results) -> Any:
    from . import plots  # heavy: matplotlib only when drawing

    f = r.findings("03b_arrivals_and_goodput")
    return plots.arrivals_vs_service(_frame(f.get("arrivals")), _frame(f.get("arrivals_predicted")),
                                     _meta(r, "03b_arrivals_and_goodput"), f.get("rate_knee_rps"))


def _draw_staircase(notebook: str, title_: str) -> Callable[[Results], Any]:
    def draw(r: Results) -> Any:
        from . import plots  # heavy: matplotlib only when drawing

        fig = plots.kv_staircase(_ttfts(r, notebook), {}, _meta(r, notebook))
        fig.axes[0].set_title(title_)
        return fig
    return draw


def _draw_05(r: Results) -> Any:
    from .experiments import plot_admission  # heavy: matplotlib and httpx only when drawing

    f = r.findings("05_bounded_admission")
    table = _frame(f.get("comparison")).set_index("index")
    return plot_admission(table, _need(f.get("baseline_ttft_s")), _meta(r, "05_bounded_admission"))


def _draw_07(r: Results) -> Any:
    from . import plots  # heavy: matplotlib only when drawing

    fig = plots.batching_sweep(_frame(r.findings("07_capacity_and_cost").get("sweep")),
                               _meta(r, "07_capacity_and_cost"))
    fig.suptitle("The closed-loop sweep around the operating point", fontsize=12)
    return fig


REFERENCES: tuple[Reference, ...] = (
    Reference("01_provision", "ttft_by_prompt.png", "TTFT of one request against prompt length", _draw_01),
    Reference("02_bandwidth_ceiling", "decode_vs_ceiling.png", "one stream against the bandwidth ceiling", _draw_02_ceiling),
    Reference("02_bandwidth_ceiling", "step_split.png", "one decode step split into its causes", _draw_split("02_bandwidth_ceiling")),
    Reference("03_continuous_batching", "batching_sweep.png", "throughput, per-user speed and TTFT against users, the cliff marked", _draw_03_sweep),
    Reference("03_continuous_batching", "step_split.png", "the step split at batch 1 and at the knee", _draw_split("03_continuous_batching")),
    Reference("03b_arrivals_and_goodput", "arrivals_vs_service.png", "served against arrived under Poisson arrivals; p95 TTFT and the knee", _draw_03b),
    Reference("04_kv_cache_exhaustion", "kv_staircase.png", "each request's TTFT on the small pool and on one that holds the burst",
              _draw_staircase("04_kv_cache_exhaustion", "The same burst on two pools: the gap is the wait for KV blocks")),
    Reference("05_bounded_admission", "admission.png", "p95 TTFT of what each setup served, and what it shed", _draw_05),
    Reference("06_prefix_caching", "ttft_cache_on_off.png", "each user's TTFT with prefix caching on and off",
              _draw_staircase("06_prefix_caching", "The same users, shared and salted: TTFT with the prefix cache used and defeated")),
    Reference("07_capacity_and_cost", "sweep.png", "the closed-loop sweep the operating point is chosen from", _draw_07),
)


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def write_references(r: Results, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Redraw every reference plot into out_dir/<notebook>/; remove the ones this run could
    not draw (so no plot from an older run stays beside newer ones). Returns (changed files,
    plots not measured)."""
    import matplotlib  # heavy: matplotlib only when drawing

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # heavy: matplotlib only when drawing

    changed, missing, drawn = [], [], []
    for ref in REFERENCES:
        path = out_dir / ref.notebook / ref.filename
        try:
            fig = ref.draw(r)
        except (_Missing, AttributeError, IndexError, KeyError, TypeError, ValueError):
            missing.append(f"{ref.notebook}/{ref.filename}")
            continue
        data = _png(fig)
        plt.close(fig)
        drawn.append(ref)
        if _write_if_changed(path, data):
            changed.append(path)
    keep = {out_dir / ref.notebook / ref.filename for ref in drawn}
    for stale in sorted(out_dir.glob("*/*.png")) if out_dir.exists() else []:
        if stale not in keep:
            stale.unlink()
            changed.append(stale)
    index = _reference_index(r, drawn, missing)
    if _write_if_changed(out_dir / "README.md", index.encode()):
        changed.append(out_dir / "README.md")
    return changed, missing


def _reference_index(r: Results, drawn: Sequence[Reference], missing: Sequence[str]) -> str:
    lines = ["# Reference results", "",
             "What one run of the solved notebooks drew, for a learner to compare with their own "
             "(the shapes should match; the absolute numbers follow the machine).", "",
             _source_line(r), ""]
    for nb in NOTEBOOKS:
        refs = [ref for ref in drawn if ref.notebook == nb]
        if not refs:
            continue
        lines += [f"## `{nb}`", ""]
        for ref in refs:
            lines += [f"![{ref.caption}]({nb}/{ref.filename})", "", f"*{ref.caption}.*", ""]
    if missing:
        lines += ["## Not measured in this run", "",
                  ", ".join(f"`{m}`" for m in missing) + ": the run did not save their data.", ""]
    return "\n".join(lines)


def _write_if_changed(path: Path, data: bytes) -> bool:
    if path.exists() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


# --------------------------------------------------------------------------------------------
# write


def write(results_dir: Path, root: Path = ROOT, solutions_dir: Path | None = None,
          plots: bool = True) -> list[Path]:
    """Fill every region of the README and the guides from `results_dir`, and (with `plots`)
    redraw docs/reference/. Returns the files that changed (none on a second run). Every
    document is checked before any is written, so a missing marker leaves all of them as
    they were."""
    solutions_dir = solutions_dir or root / "solutions"
    r = Results(results_dir)
    times = notebook_times(r, solutions_dir)
    values = {name: fn(r, times, solutions_dir) for name, fn in REGIONS.items()}
    pending = {}
    for rel, required in DOC_REGIONS.items():
        path = root / rel
        if not path.exists():
            raise ConfigError(f"{path}: no such file to write the {', '.join(required)} regions into.")
        pending[path] = fill(path.read_text(), values, rel, required)
    changed = [p for p, text in pending.items() if _write_if_changed(p, text.encode())]
    if plots:
        changed += write_references(r, root / "docs" / "reference")[0]
    return changed


# --------------------------------------------------------------------------------------------
# run


def cpu_description() -> str:
    """The CPU the run measured on: its model name, cores and the features that matter."""
    return f"{os.cpu_count()} x {cpu_model() or 'unknown CPU'} ({cpu_signature()})"


def _execute(path: Path, cell_timeout_s: float) -> str | None:
    """Run one notebook in a fresh kernel, cell by cell, in memory (nothing is written back).
    Returns None when every cell ran, else what failed and where."""
    import nbformat  # heavy: nbformat only when notebooks are run
    from nbclient import NotebookClient  # heavy: nbclient only when notebooks are run

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                client.execute_cell(cell, index)
            except Exception as error:  # noqa: BLE001 - any failure stops the run, named
                first = next((line for line in cell.source.splitlines() if line.strip()), "")
                what = (f"{getattr(error, 'ename', type(error).__name__)}: "
                        f"{getattr(error, 'evalue', str(error).splitlines()[-1] if str(error) else '')}")
                return f"cell {index} (`{first[:60]}`): {what}"
    return None


def run(scale: str, only: Sequence[str] = (), cell_timeout_s: float = 1800,
        root: Path = ROOT) -> int:
    """Execute the solution notebooks in order at `scale`, timing each; stop at the first
    failure. Writes <results>/course_run.json after every notebook."""
    from ..serving import server  # heavy: httpx only when notebooks are run

    os.environ["LABS_SCALE"] = scale
    os.environ["LABS_HEADLESS"] = "1"
    os.environ.setdefault("LABS_STRICT_CHECKS", "1")  # a solution's wrong answer is a failure
    owned = server.OWNER_ENV not in os.environ
    os.environ.setdefault(server.OWNER_ENV, str(os.getpid()))  # servers outlive each kernel
    settings = Settings.from_env()
    paths = sorted((root / "solutions").glob("*.ipynb"))
    if only:
        unknown = [nb for nb in only if not any(p.stem == nb or p.name == nb for p in paths)]
        if unknown:
            raise ConfigError(f"no solution notebook named {', '.join(unknown)} "
                              f"(there are: {', '.join(p.stem for p in paths)}).")
        paths = [p for p in paths if p.stem in only or p.name in only]
    out = settings.results_dir / RUN_FILE
    record = json.loads(out.read_text()) if out.exists() else {}
    cpu = cpu_description()
    if not settings.base_url_override and server.running_server(settings) is None:
        server.ensure_server("naive", settings)  # 00 connects; it does not start one
    try:
        for path in paths:
            print(f"running {path.stem} at {scale} size ...", flush=True)
            start = time.perf_counter()
            failure = _execute(path, cell_timeout_s)
            wall_s = time.perf_counter() - start
            record[path.stem] = {"wall_s": wall_s, "ok": failure is None, "scale": scale,
                                 "cpu": cpu, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            if failure:
                record[path.stem]["error"] = failure
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=2) + "\n")
            if failure:
                print(f"error: {path.stem} failed in {failure}; the run stops here "
                      f"(rerun it with --only {path.stem} ...).", file=sys.stderr)
                return 1
            print(f"{path.stem}: {wall_s:.0f} s", flush=True)
    finally:
        if owned and not settings.base_url_override:
            server.stop(settings)
    print(f"wrote {out}; now `python -m labs.course.coursedocs write`")
    return 0


# --------------------------------------------------------------------------------------------
# CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.course.coursedocs", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    p_run = verbs.add_parser("run", help="execute the solution notebooks, timing each")
    p_run.add_argument("--scale", choices=("full", "ci"), default="full")
    p_run.add_argument("--only", nargs="+", default=(), metavar="NB", help="notebook stems")
    p_run.add_argument("--cell-timeout", type=float, default=1800, help="seconds per cell")
    p_write = verbs.add_parser("write", help="fill the docs' regions and the reference plots")
    p_write.add_argument("--results", type=Path, default=None, help="default <results>")
    p_write.add_argument("--root", type=Path, default=ROOT, help="the repository to write into")
    p_write.add_argument("--no-plots", action="store_true", help="leave docs/reference/ alone")
    args = parser.parse_args(argv)
    try:
        if args.verb == "run":
            return run(args.scale, args.only, args.cell_timeout)

        results = args.results or Settings.from_env().results_dir
        changed = write(results, args.root, plots=not args.no_plots)
        for path in changed:
            print(f"wrote {path}")
        print("nothing changed" if not changed else f"{len(changed)} file(s) changed")
        return 0
    except LabsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
