"""The results card: what notebooks 01-05 measured on one machine, on one page, beside the article.

    python -m labs card [--results DIR] [--out PATH]     this machine (default results/card.html)
    python -m labs card --compare A B [--out PATH]       two machines in adjacent columns

A and B are results folders or the card.json of a card made elsewhere. Every card writes a JSON
summary beside its HTML (card.json), so a comparison never re-parses HTML. The card reads only
what the notebooks saved with `labs.experiments.save` (the article's figures come from
`labs.article`). A notebook not run yet, a half-written file or a file from another schema
version becomes a sentence on the page, never a crash.

Three layers, each calling only the one below:
    summarize(results_dir) -> summary (a JSON-ready dict: values and series per section)
    figures                 summaries -> PNG (matplotlib's object API, no pyplot state)
    render_html / write_card summaries -> one self-contained HTML page (+ its JSON)
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import article
from .errors import LabsError, ResultsError

CARD_SCHEMA_VERSION = 1
READS_SCHEMA_VERSION = 1  # the version `labs.experiments.save` writes
Summary = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Reading the saved findings: one extractor per section, each returning (values, series).


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _records(findings: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    rows = findings.get(key)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    return [_num(r.get(key)) for r in rows]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _provision(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = sorted(_records(f, "ttft_by_prompt_length"),
                  key=lambda r: _num(r.get("prompt_tokens")) or 0)
    first, last = (rows[0], rows[-1]) if rows else ({}, {})
    prefill = [v for v in _column(rows, "prefill_tok_s") if v is not None]
    values = {
        "first_request_ttft_s": _num(f.get("first_request_ttft_s")),
        "short_prompt_tokens": _num(first.get("prompt_tokens")),
        "short_prompt_ttft_s": _num(first.get("ttft_s_p50")),
        "long_prompt_tokens": _num(last.get("prompt_tokens")),
        "long_prompt_ttft_s": _num(last.get("ttft_s_p50")),
        "prefill_tok_s": max(prefill) if prefill else None,
        "kv_pool_tokens": _num(f.get("kv_pool_tokens")),
    }
    return values, {"prompt_tokens": _column(rows, "prompt_tokens"),
                    "ttft_s": _column(rows, "ttft_s_p50")}


def _ceiling(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = _records(f, "single_stream")
    speeds = [v for v in _column(rows, "decode_tok_s") if v is not None]
    ceiling = _num(f.get("ceiling_tok_s"))
    best = max(speeds) if speeds else None
    weight_bytes = _num(f.get("weight_bytes"))
    fraction = _num(f.get("fraction_of_ceiling"))
    values = {
        "bandwidth_read_gbs": _num(f.get("bandwidth_read_gbs")),
        "weight_gb": weight_bytes / 1e9 if weight_bytes else None,
        "ceiling_tok_s": ceiling,
        "single_stream_tok_s": best,
        "fraction_of_ceiling": fraction if fraction is not None else _ratio(best, ceiling),
    }
    return values, {"output_tokens": _column(rows, "output_tokens"),
                    "decode_tok_s": _column(rows, "decode_tok_s")}


def _batching(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = sorted((r for r in _records(f, "sweep") if _num(r.get("concurrency"))),
                  key=lambda r: _num(r.get("concurrency")) or 0)
    series = {k: _column(rows, k) for k in
              ("concurrency", "agg_tok_s", "per_user_tok_s", "ttft_s_p95", "errors")}
    agg = [(a, c) for a, c in zip(series["agg_tok_s"], series["concurrency"], strict=True)
           if a is not None]
    single = next((a for a, c in agg if c == 1), None)
    best, best_at = max(agg) if agg else (None, None)
    if "cliff_users" in f:
        cliff = _num(f["cliff_users"])
    else:
        cliff = _find_cliff(series)
    errors = [e for e in series["errors"] if e is not None]
    values = {
        "single_user_tok_s": single, "best_agg_tok_s": best, "best_at_users": best_at,
        "batching_gain": _ratio(best, single), "cliff_users": cliff,
        "continuous_over_static": _num(f.get("continuous_over_static")),
        "errors": sum(errors) if errors else None,
    }
    return values, series


def _find_cliff(series: Mapping[str, list]) -> float | None:
    """Locate the cliff with the notebook's own rule when an older file did not save it."""
    import pandas as pd

    from .experiments import find_cliff

    table = pd.DataFrame({k: series[k] for k in ("concurrency", "agg_tok_s", "ttft_s_p95")})
    table = table.dropna()
    if len(table) < 2:
        return None
    cliff = find_cliff(table)
    return float(cliff) if cliff is not None else None


def _kv(f: Mapping[str, Any], runs: Path) -> tuple[dict, dict]:
    ttfts = sorted(t for t in _column(_records(f, "ttft_by_request"), "ttft_s") if t is not None)
    if not ttfts and runs.exists():
        # An older or trimmed file without the per-request table: the raw records have it.
        from .results import load_sweep

        ttfts = sorted(r.ttft_s for run in load_sweep(runs) for r in run.records
                       if r.ttft_s is not None)
    blocks, block_size = _num(f.get("num_gpu_blocks")), _num(f.get("block_size"))
    pool = _num(f.get("pool_tokens")) or (blocks * block_size if blocks and block_size else None)
    users, prompt = _num(f.get("users")), _num(f.get("prompt_tokens"))
    demand = _num(f.get("demand_tokens")) or (users * prompt if users and prompt else None)
    values = {
        "num_gpu_blocks": blocks, "block_size": block_size, "pool_tokens": pool,
        "users": users, "prompt_tokens": prompt, "demand_tokens": demand,
        "demand_over_pool": _num(f.get("demand_over_pool")) or _ratio(demand, pool),
        "fit_at_once_predicted": _num(f.get("fit_at_once_predicted")),
        "max_running": _num(f.get("max_running")),
        "http_errors": _num(f.get("http_errors")),
        "ttft_first_s": _num(f.get("ttft_first_s")) or (ttfts[0] if ttfts else None),
        "ttft_last_s": _num(f.get("ttft_last_s")) or (ttfts[-1] if ttfts else None),
    }
    return values, {"ttft_s": ttfts}


def _setup_label(row: Mapping[str, Any]) -> str:
    return str(row.get("setup") or row.get("index") or row.get("label") or "?")


def _admission(f: Mapping[str, Any], _runs: Path) -> tuple[dict, dict]:
    rows = _records(f, "comparison")
    series: dict[str, list] = {"setup": [_setup_label(r) for r in rows]}
    for key in ("offered", "served", "shed", "ttft_p95_s", "goodput_rps", "time_to_503_max_ms"):
        series[key] = _column(rows, key)
    series["retry_after_on_every_503"] = [r.get("retry_after_on_every_503") for r in rows]
    by_setup = {_setup_label(r): r for r in rows}

    def pick(word: str, key: str) -> float | None:
        row = next((r for label, r in by_setup.items() if word in label.lower()), {})
        return _num(row.get(key))

    baseline = _num(f.get("baseline_ttft_s"))
    values = {
        "baseline_ttft_s": baseline, "slo_ttft_s": _num(f.get("slo_ttft_s")),
        "naive_ttft_p95_s": pick("naive", "ttft_p95_s"),
        "gateway_ttft_p95_s": pick("gateway", "ttft_p95_s"),
        "gateway_shed": pick("gateway", "shed"),
        "naive_goodput_rps": pick("naive", "goodput_rps"),
        "gateway_goodput_rps": pick("gateway", "goodput_rps"),
    }
    values["naive_p95_over_baseline"] = _ratio(values["naive_ttft_p95_s"], baseline)
    values["gateway_p95_over_baseline"] = _ratio(values["gateway_ttft_p95_s"], baseline)
    return values, series


# --------------------------------------------------------------------------------------------
# The sections: what each notebook saved, which rows the card shows, and the article beside them.

ArticleValue = float | tuple[float, float] | str | None


@dataclass(frozen=True)
class Row:
    label: str
    key: str
    fmt: str                   # format spec for the number, e.g. ",.1f", ".0%"
    article: ArticleValue = None


@dataclass(frozen=True)
class Section:
    key: str
    notebook: str
    title: str
    what: str
    needs: tuple[str, ...]     # findings keys without which the section is incomplete
    extract: Callable[[Mapping[str, Any], Path], tuple[dict, dict]]
    rows: tuple[Row, ...]

    @property
    def number(self) -> str:
        return self.notebook[:2]


_A = article
_A_BEST = max(_A.BATCHING.items(), key=lambda kv: kv[1][0])  # (users, (aggregate, per user))
SECTIONS: tuple[Section, ...] = (
    Section("provision", "01_provision", "01 · The first request",
            "One request's TTFT is small and grows with the prompt; it hides how the server "
            "behaves under load.",
            ("first_request_ttft_s", "ttft_by_prompt_length"), _provision, (
                Row("first request TTFT (s)", "first_request_ttft_s", ".2f",
                    _A.FIRST_REQUEST_TTFT_S),
                Row("short prompt (tokens)", "short_prompt_tokens", ",.0f"),
                Row("  its TTFT, median (s)", "short_prompt_ttft_s", ".2f"),
                Row("long prompt (tokens)", "long_prompt_tokens", ",.0f"),
                Row("  its TTFT, median (s)", "long_prompt_ttft_s", ".2f"),
                Row("prefill rate (prompt tok/s)", "prefill_tok_s", ",.0f"),
                Row("KV pool of the naive profile (tokens)", "kv_pool_tokens", ",.0f"),
            )),
    Section("ceiling", "02_bandwidth_ceiling", "02 · Bandwidth ceiling and one stream",
            "Decode reads every weight once per token, so one stream cannot beat "
            "bandwidth / weight bytes.",
            ("bandwidth_read_gbs", "weight_bytes", "ceiling_tok_s", "single_stream"), _ceiling, (
                Row("memory bandwidth, read (GB/s)", "bandwidth_read_gbs", ",.1f",
                    _A.BANDWIDTH_GBS),
                Row("weight bytes (GB)", "weight_gb", ",.2f", _A.WEIGHTS_GB),
                Row("ceiling = bandwidth / weights (tok/s)", "ceiling_tok_s", ",.1f",
                    _A.CEILING_TOK_S),
                Row("single stream, measured (tok/s)", "single_stream_tok_s", ",.1f",
                    _A.MEASURED_SINGLE_STREAM_TOK_S),
                Row("fraction of the ceiling", "fraction_of_ceiling", ".0%",
                    tuple(v / _A.CEILING_TOK_S for v in _A.MEASURED_SINGLE_STREAM_TOK_S)),
            )),
    Section("batching", "03_continuous_batching", "03 · Continuous batching and its cliff",
            "One weight read serves every request in flight: aggregate throughput multiplies, "
            "each user slows down, and past the cliff extra users only wait.",
            ("sweep",), _batching, (
                Row("1 user (tok/s)", "single_user_tok_s", ",.1f", _A.BATCHING[1][0]),
                Row("best aggregate (tok/s)", "best_agg_tok_s", ",.0f", _A_BEST[1][0]),
                Row("  at users", "best_at_users", ",.0f", float(_A_BEST[0])),
                Row("batching gain (best / 1 user)", "batching_gain", ",.1f",
                    _A_BEST[1][0] / _A.BATCHING[1][0]),
                Row("cliff: throughput flattens after (users)", "cliff_users", ",.0f",
                    f"not reached by {max(_A.BATCHING)} users"),
                Row("continuous / static batching", "continuous_over_static", ",.2f"),
                Row("HTTP errors in the sweep", "errors", ",.0f"),
            )),
    Section("kv", "04_kv_cache_exhaustion", "04 · The KV pool and the staircase",
            "Ask for more KV cache than the pool holds and nothing fails: requests wait their turn "
            "and TTFT climbs in steps, every response 200 OK.",
            ("pool_tokens", "users", "prompt_tokens", "ttft_by_request"), _kv, (
                Row("KV blocks", "num_gpu_blocks", ",.0f", float(_A.NUM_GPU_BLOCKS)),
                Row("block size (tokens)", "block_size", ",.0f", float(_A.BLOCK_SIZE)),
                Row("pool = blocks x block size (tokens)", "pool_tokens", ",.0f",
                    float(_A.POOL_TOKENS)),
                Row("users", "users", ",.0f", float(_A.KV_USERS)),
                Row("prompt per user (tokens)", "prompt_tokens", ",.0f",
                    float(_A.KV_PROMPT_TOKENS)),
                Row("demand = users x prompt (tokens)", "demand_tokens", ",.0f",
                    float(_A.KV_DEMAND_TOKENS)),
                Row("demand / pool", "demand_over_pool", ",.1f",
                    _A.KV_DEMAND_TOKENS / _A.POOL_TOKENS),
                Row("requests that fit at once, predicted", "fit_at_once_predicted", ",.0f",
                    f"~{_A.KV_FAST_REQUESTS} fast"),
                Row("most requests running at once", "max_running", ",.0f"),
                Row("TTFT, first request (s)", "ttft_first_s", ",.1f", "a few"),
                Row("TTFT, last request (s)", "ttft_last_s", ",.1f", _A.KV_TTFT_PLATEAU_S),
                Row("HTTP errors", "http_errors", ",.0f", 0.0),
            )),
    Section("admission", "05_bounded_admission", "05 · Naive, bounded, gateway",
            "One overload, four setups: where the backlog waits decides who gets a fast answer "
            "and who gets an honest 503.",
            ("baseline_ttft_s", "comparison"), _admission, (
                Row("unloaded p95 TTFT, baseline (s)", "baseline_ttft_s", ".2f"),
                Row("SLO: p95 TTFT within (s)", "slo_ttft_s", ".2f"),
                Row("naive: p95 TTFT (s)", "naive_ttft_p95_s", ".2f"),
                Row("  x baseline", "naive_p95_over_baseline", ",.1f"),
                Row("gateway: p95 TTFT of served requests (s)", "gateway_ttft_p95_s", ".2f",
                    _A.BOUNDED_ADMITTED_TTFT_S),
                Row("  x baseline", "gateway_p95_over_baseline", ",.1f", "near baseline"),
                Row("gateway: shed with 503", "gateway_shed", ",.0f"),
                Row("goodput, naive (req/s)", "naive_goodput_rps", ".2f"),
                Row("goodput, gateway (req/s)", "gateway_goodput_rps", ".2f"),
            )),
)
SECTION_BY_KEY = {s.key: s for s in SECTIONS}


# --------------------------------------------------------------------------------------------
# Layer 1: a results folder -> a summary


def _placeholder(section: Section) -> str:
    return (f"not measured yet — run notebook {section.number} "
            f"(notebooks/{section.notebook}.ipynb); it saves results/{section.notebook}.json")


def _read_section(section: Section, results_dir: Path) -> dict[str, Any]:
    path = results_dir / f"{section.notebook}.json"
    out: dict[str, Any] = {"notebook": section.notebook, "status": "missing",
                           "message": _placeholder(section), "saved_at": None, "profile": None,
                           "hardware": None, "model": None, "vllm_version": None,
                           "values": {row.key: None for row in section.rows}, "series": {}}
    if not path.exists():
        return out
    redo = f"re-run notebook {section.number} to write it again"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return {**out, "status": "unreadable",
                "message": f"{path.name} could not be read ({err}); {redo}."}
    if not isinstance(doc, dict) or not isinstance(doc.get("findings", {}), dict):
        return {**out, "status": "unreadable",
                "message": f"{path.name} is not a saved notebook result; {redo}."}
    version = doc.get("schema_version")
    if version != READS_SCHEMA_VERSION:
        return {**out, "status": "schema",
                "message": f"{path.name} has schema_version {version!r}; this card reads "
                           f"version {READS_SCHEMA_VERSION}. Update the course (git pull) if "
                           f"the file is newer, or {redo}."}
    findings = doc.get("findings") or {}
    for key in ("saved_at", "profile", "hardware", "model", "vllm_version"):
        out[key] = doc.get(key) if isinstance(doc.get(key), str) else None
    runs = results_dir / f"{section.notebook}-runs.json"
    try:
        values, series = section.extract(findings, runs)
    except (LabsError, OSError, KeyError, TypeError, ValueError) as err:
        return {**out, "status": "unreadable",
                "message": f"{path.name} could not be read ({err}); {redo}."}
    out["values"].update(values)
    out["series"] = series
    absent = [k for k in section.needs if not _usable(findings.get(k))]
    if section.key == "kv" and series.get("ttft_s") and "ttft_by_request" in absent:
        absent.remove("ttft_by_request")  # recovered from the raw records
    if absent:
        out["status"] = "partial"
        out["message"] = (f"{path.name} is incomplete (no {', '.join(absent)}); "
                          f"{redo} in full.")
    else:
        out["status"], out["message"] = "ok", None
    return out


def _usable(value: object) -> bool:
    """A number, or a table with at least one row: what every saved finding should be."""
    return _num(value) is not None or (isinstance(value, list)
                                       and any(isinstance(r, dict) for r in value))


def has_data(section_summary: Mapping[str, Any]) -> bool:
    return section_summary.get("status") in ("ok", "partial")


def _one_of(values: list[str | None]) -> str | None:
    seen = [v for v in values if v]
    if not seen:
        return None
    distinct = list(Counter(seen))
    return distinct[0] if len(distinct) == 1 else " / ".join(distinct)


def _shown(folder: Path) -> str:
    """The folder relative to here when it is below here: a card names no home directory."""
    try:
        return str(folder.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def summarize(results_dir: str | Path) -> Summary:
    """Read what the notebooks saved in `results_dir` into the card's summary (JSON-ready)."""
    results_dir = Path(results_dir).expanduser()
    if not results_dir.is_dir():
        raise ResultsError(f"no results folder at {results_dir}: run the notebooks first (each "
                           "saves to ./results), or pass --results DIR.")
    sections = {s.key: _read_section(s, results_dir) for s in SECTIONS}
    if all(v["status"] == "missing" for v in sections.values()):
        names = ", ".join(f"{s.notebook}.json" for s in SECTIONS)
        raise ResultsError(f"no saved results in {results_dir} (looked for {names}): run "
                           "notebooks 01-05 first, or pass --results DIR.")
    found = [v for v in sections.values() if has_data(v)]
    saved = sorted(v["saved_at"] for v in found if v["saved_at"])
    machine = {
        "hardware": _one_of([v["hardware"] for v in found]),
        "model": _one_of([v["model"] for v in found]),
        "vllm_version": _one_of([v["vllm_version"] for v in found]),
        "first_saved": saved[0] if saved else None,
        "last_saved": saved[-1] if saved else None,
        "results_dir": _shown(results_dir),
    }
    return {"schema_version": CARD_SCHEMA_VERSION, "kind": "card",
            "made_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine,
            "sections": sections}


def load_summary(path: str | Path) -> Summary:
    """A results folder, or the card.json of a card made on another machine."""
    path = Path(path).expanduser()
    if path.is_dir() or not path.exists():
        return summarize(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ResultsError(f"{path} is not a card.json ({err}); pass a results folder or the "
                           "card.json that `python -m labs card` wrote.") from err
    if not isinstance(doc, dict) or doc.get("kind") != "card":
        raise ResultsError(f"{path} is not a card.json; pass a results folder or the card.json "
                           "that `python -m labs card` wrote.")
    if doc.get("schema_version") != CARD_SCHEMA_VERSION:
        raise ResultsError(f"{path} is a card of schema_version {doc.get('schema_version')!r}; "
                           f"this course reads {CARD_SCHEMA_VERSION}. Make the card again with "
                           "this version of the course.")
    if not isinstance(doc.get("machine"), dict):
        doc["machine"] = {}
    if not isinstance(doc.get("sections"), dict):
        doc["sections"] = {}
    for section in SECTIONS:  # a card from an older course may lack a section, or parts of one
        sec = doc["sections"].get(section.key)
        sec = sec if isinstance(sec, dict) else {"status": "missing"}
        sec.setdefault("notebook", section.notebook)
        sec.setdefault("message", _placeholder(section) if sec.get("status") == "missing" else None)
        for key in ("values", "series"):
            if not isinstance(sec.get(key), dict):
                sec[key] = {}
        doc["sections"][section.key] = sec
    return doc


def machine_label(summary: Mapping[str, Any]) -> str:
    m = summary.get("machine", {})
    date = (m.get("last_saved") or "")[:10]
    return " · ".join(p for p in (m.get("hardware") or "unknown machine", date) if p)


def _labels(summaries: Sequence[Mapping[str, Any]]) -> list[str]:
    labels = [machine_label(s) for s in summaries]
    if len(set(labels)) < len(labels):
        labels = [f"{chr(65 + i)}: {label}" for i, label in enumerate(labels)]
    return labels


# --------------------------------------------------------------------------------------------
# Layer 2: figures. Only machines with data are drawn; the article where it published numbers.

ARTICLE_COLOR = "0.35"


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * ncols, 3.6))
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else v for v in values]


def _with_data(key: str, summaries, labels):
    return [(i, label, s["sections"][key]) for i, (label, s) in enumerate(zip(labels, summaries))
            if has_data(s["sections"][key])]


def _short(label: str, width: int = 24) -> str:
    return textwrap.fill(label, width)


def _finish(ax, **labels: str) -> None:
    ax.set(**labels)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _plot_provision(drawn) -> Any:
    fig, (ax,) = _figure()
    for i, label, sec in drawn:
        s = sec["series"]
        ax.plot(_nan(s.get("prompt_tokens", [])), _nan(s.get("ttft_s", [])), "o-",
                color=f"C{i}", label=label)
    _finish(ax, xlabel="prompt length (tokens)", ylabel="TTFT, median (s)",
            title="One request alone: TTFT grows with the prompt")
    return fig


def _plot_ceiling(drawn) -> Any:
    import numpy as np

    fig, (ax,) = _figure()
    names = [_short(label) for _, label, _ in drawn] + ["article (as stated)"]
    ceilings = [sec["values"].get("ceiling_tok_s") for _, _, sec in drawn] + [article.CEILING_TOK_S]
    lo, hi = article.MEASURED_SINGLE_STREAM_TOK_S
    measured = [sec["values"].get("single_stream_tok_s") for _, _, sec in drawn] + [(lo + hi) / 2]
    spread = [0.0] * len(drawn) + [(hi - lo) / 2]
    colors = [f"C{i}" for i, _, _ in drawn] + [ARTICLE_COLOR]
    x = np.arange(len(names))
    ax.bar(x - 0.2, _nan(ceilings), 0.4, color="white", edgecolor=colors, hatch="//",
           label="ceiling: bandwidth / weight bytes")
    ax.bar(x + 0.2, _nan(measured), 0.4, yerr=spread, color=colors, label="measured, one stream")
    ax.set_xticks(x, names, fontsize=7)
    ax.set(ylabel="decode, one stream (tok/s)", title="The ceiling and what one stream reached")
    ax.set_ylim(0, max(v for v in _nan(ceilings + measured) if not math.isnan(v)) * 1.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3, axis="y")
    return fig


def _log2_users(ax) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("concurrent users")


def _plot_batching(drawn) -> Any:
    fig, (ax1, ax2) = _figure(ncols=2)
    for i, label, sec in drawn:
        s, cliff = sec["series"], sec["values"].get("cliff_users")
        users = _nan(s.get("concurrency", []))
        ax1.plot(users, _nan(s.get("agg_tok_s", [])), "o-", color=f"C{i}", label=label)
        ax1.plot(users, _nan(s.get("per_user_tok_s", [])), "s:", color=f"C{i}", alpha=0.6)
        ax2.plot(users, _nan(s.get("ttft_s_p95", [])), "o-", color=f"C{i}", label=label)
        for ax in (ax1, ax2):
            if cliff:
                ax.axvline(cliff, color=f"C{i}", ls="--", alpha=0.5)
    table = article.batching_table()
    ax1.plot(table["concurrency"], table["agg_tok_s"], "D-", color=ARTICLE_COLOR, label="article")
    ax1.plot(table["concurrency"], table["per_user_tok_s"], "D:", color=ARTICLE_COLOR, alpha=0.6)
    ax1.set_yscale("log")
    _finish(ax1, ylabel="output tok/s (solid: aggregate, dotted: per user)",
            title="Throughput (dashed line: the cliff)")
    _finish(ax2, ylabel="p95 TTFT (s)", title="Tail TTFT (the article gives none)")
    for ax in (ax1, ax2):
        _log2_users(ax)
    return fig


def _plot_kv(drawn) -> Any:
    fig, (ax,) = _figure()
    for i, label, sec in drawn:
        ttft = _nan(sec["series"].get("ttft_s", []))
        ax.step(range(1, len(ttft) + 1), ttft, where="mid", marker="o", ms=3, color=f"C{i}",
                label=f"{label} ({sec['values'].get('http_errors') or 0:.0f} errors)")
    ax.axhline(article.KV_TTFT_PLATEAU_S, color=ARTICLE_COLOR, ls="--",
               label=f"article: plateau ~{article.KV_TTFT_PLATEAU_S:.0f} s after "
                     f"~{article.KV_FAST_REQUESTS} fast requests")
    _finish(ax, xlabel="request, in order of first token", ylabel="TTFT (s)",
            title="TTFT per request under 3x KV demand: the staircase")
    return fig


def _plot_admission(drawn) -> Any:
    import numpy as np

    fig, axes = _figure(ncols=3)
    setups = list(dict.fromkeys(x for _, _, sec in drawn for x in sec["series"].get("setup", [])))
    width = 0.8 / max(len(drawn), 1)
    x = np.arange(len(setups))
    panels = (("ttft_p95_s", "p95 TTFT of served requests (s)"),
              ("shed", "shed with 503 (requests)"),
              ("goodput_rps", "goodput under the SLO (req/s)"))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        for n, (i, label, sec) in enumerate(drawn):
            s = sec["series"]
            by_setup = dict(zip(s.get("setup", []), s.get(key, []), strict=False))
            ax.bar(x - 0.4 + width * (n + 0.5), _nan([by_setup.get(k) for k in setups]), width,
                   color=f"C{i}", label=label)
            if key == "ttft_p95_s" and sec["values"].get("baseline_ttft_s"):
                ax.axhline(sec["values"]["baseline_ttft_s"], color=f"C{i}", ls="--", alpha=0.6)
        ax.set_xticks(x, [_short(s, 12) for s in setups], fontsize=7)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
    from matplotlib.ticker import MaxNLocator

    axes[0].set_yscale("log")
    baselines = [sec["values"]["baseline_ttft_s"] for _, _, sec in drawn
                 if sec["values"].get("baseline_ttft_s")]
    if baselines:
        axes[0].set_ylim(bottom=min(baselines) / 2)
    axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("One overload, four setups (dashed: the unloaded baseline)", fontsize=11)
    return fig


PLOTS: dict[str, Callable[[list], Any]] = {
    "provision": _plot_provision, "ceiling": _plot_ceiling, "batching": _plot_batching,
    "kv": _plot_kv, "admission": _plot_admission,
}


# --------------------------------------------------------------------------------------------
# Layer 3: the page


def fmt(value: object, spec: str = ",.2f") -> str:
    """A number for a table cell; a range as lo–hi; None as an em dash, never 0."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):  # a range; whole numbers without decimals (28–30, 2–4)
        if not spec.endswith("%") and all(float(v).is_integer() for v in value):
            spec = ",.0f"
        return "–".join(format(v, spec) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _e(text: object) -> str:
    return html.escape(str(text))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]],
           groups: Sequence[tuple[str, int]] = ()) -> str:
    out = ["<table>"]
    if groups:
        out.append("<tr>" + "".join(f'<th colspan="{n}">{_e(g)}</th>' for g, n in groups) + "</tr>")
    out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _key_table(section: Section, secs: Sequence[Mapping], labels: Sequence[str]) -> str:
    rows = [[row.label] + [fmt(s.get("values", {}).get(row.key), row.fmt) for s in secs]
            + [fmt(row.article, row.fmt)] for row in section.rows]
    return _table(["", *labels, "article"], rows)


def _wide_table(key_label: str, key_fmt: str, keys: Sequence[object],
                parts: Sequence[tuple[str, dict, Sequence[tuple[str, str, str]]]]) -> str:
    """One row per key (users, setup); for each source a group of adjacent columns."""
    header, groups = [key_label], [("", 1)]
    for label, _, cols in parts:
        header += [c[0] for c in cols]
        groups.append((label, len(cols)))
    rows = []
    for k in keys:
        row = [fmt(k, key_fmt)]
        for _, by_key, cols in parts:
            rec = by_key.get(k, {})
            row += [fmt(rec.get(field), spec) for _, field, spec in cols]
        rows.append(row)
    return _table(header, rows, groups)


def _by_key(series: Mapping[str, list], key: str) -> dict[object, dict]:
    keys = series.get(key, [])
    return {k: {f: vals[n] for f, vals in series.items() if n < len(vals)}
            for n, k in enumerate(keys) if k is not None}


def _batching_detail(secs, labels) -> str:
    cols = (("aggregate tok/s", "agg_tok_s", ",.0f"), ("per user tok/s", "per_user_tok_s", ",.1f"),
            ("p95 TTFT (s)", "ttft_s_p95", ",.2f"))
    parts = [(label, _by_key(s["series"], "concurrency"), cols)
             for label, s in zip(labels, secs) if has_data(s)]
    theirs = {float(c): {"agg_tok_s": a, "per_user_tok_s": u}
              for c, (a, u) in article.BATCHING.items()}
    parts.append(("article", theirs, cols[:2]))
    keys = sorted({k for _, by_key, _ in parts for k in by_key})
    return _wide_table("users", ",.0f", keys, parts)


def _admission_detail(secs, labels) -> str:
    cols = (("served", "served", ",.0f"), ("shed", "shed", ",.0f"),
            ("p95 TTFT (s)", "ttft_p95_s", ".2f"), ("goodput (req/s)", "goodput_rps", ".2f"),
            ("Retry-After on every 503", "retry_after_on_every_503", ""))
    parts = [(label, _by_key(s["series"], "setup"), cols)
             for label, s in zip(labels, secs) if has_data(s)]
    keys = list(dict.fromkeys(k for _, by_key, _ in parts for k in by_key))
    return _wide_table("setup", "", keys, parts) if keys else ""


DETAILS: dict[str, Callable[[Sequence[Mapping], Sequence[str]], str]] = {
    "batching": _batching_detail, "admission": _admission_detail,
}
NOTES = {
    "ceiling": "The article's inputs as it states them; notebook 02 checks them against "
               "datasheets (the RTX 4000 Ada is usually listed at 360 GB/s, and Qwen2.5-7B in "
               "bf16 is ~15.2 GB).",
    "batching": "Cliff: the last level before doubling the users buys under 15 % more throughput "
                "while p95 TTFT still rises (labs.experiments.find_cliff).",
    "kv": f"The article's pool, demand and plateau are for {article.KV_USERS} users x "
          f"{article.KV_PROMPT_TOKENS:,}-token prompts on its GPU; the course keeps its "
          "demand/pool ratio on smaller hardware.",
    "admission": "The article gives no numbers for its bounded run (\"admitted requests stay near "
                 "baseline\"); the 2–4 s beside the gateway is stated in its repository's demo "
                 "notes for its own KV-pressure load, not notebook 05's Poisson overload.",
}


def _section_html(section: Section, summaries, labels, images: bool) -> str:
    secs = [s["sections"][section.key] for s in summaries]
    parts = [f'<section id="{section.key}">', f"<h2>{_e(section.title)}</h2>",
             f'<p class="what">{_e(section.what)}</p>']
    for label, sec in zip(labels, secs, strict=True):
        if sec.get("message"):
            who = f"{label}: " if len(secs) > 1 else ""
            css = "todo" if sec.get("status") == "missing" else "warn"
            parts.append(f'<p class="{css}">{_e(who + sec["message"])}</p>')
        else:
            meta = " · ".join(f"{name} {sec[k]}" for name, k in
                              (("profile", "profile"), ("saved", "saved_at")) if sec.get(k))
            who = f"{label}: " if len(secs) > 1 else ""
            parts.append(f'<p class="meta">{_e(who + meta)}</p>')
    parts.append(_key_table(section, secs, labels))
    if section.key in DETAILS and any(has_data(s) for s in secs):
        parts.append(DETAILS[section.key](secs, labels))
    drawn = _with_data(section.key, summaries, labels)
    if images and drawn:
        png = _png(PLOTS[section.key](drawn))
        parts.append(f'<img alt="{_e(section.title)}" src="data:image/png;base64,{png}">')
    if section.key in NOTES:
        parts.append(f'<p class="note">{_e(NOTES[section.key])}</p>')
    parts.append("</section>")
    return "\n".join(parts)


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
p.what { color: #444; } p.meta, p.note, footer { color: #777; font-size: 0.9em; }
p.todo { background: #fff7e0; border-left: 4px solid #e0a800; padding: 4px 8px; }
p.warn { background: #fdecea; border-left: 4px solid #c0392b; padding: 4px 8px; }
"""


def render_html(summaries: Sequence[Mapping[str, Any]], *, images: bool = True) -> str:
    """One self-contained page: a header per machine, then one section per notebook."""
    labels = _labels(summaries)
    title = ("Results card: " + " vs ".join(labels)) if len(labels) > 1 else "Results card"
    head_rows = [[name] + [fmt(s["machine"].get(key)) for s in summaries] for name, key in (
        ("hardware", "hardware"), ("model", "model"), ("vLLM", "vllm_version"),
        ("first result saved", "first_saved"), ("last result saved", "last_saved"),
        ("results folder", "results_dir"))]
    head_rows.append(["article"] + [f"{article.GPU}, {article.MODEL}"] * len(summaries))
    body = [f"<h1>{_e(title)}</h1>",
            "<p>What the course notebooks measured, beside the figures of the article the course "
            "follows (\"Stop treating your LLM like a web server\"). Every number comes from the "
            "files the notebooks saved; \"—\" means not measured.</p>",
            _table(["", *labels], head_rows)]
    body += [_section_html(s, summaries, labels, images) for s in SECTIONS]
    made = max(str(s.get("made_at", "")) for s in summaries)
    body.append(f"<footer>Made by <code>python -m labs card</code> at {_e(made)}. The article's "
                "figures are in labs/article.py; each machine's numbers are in its card.json."
                "</footer>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_card(summaries: Sequence[Mapping[str, Any]], out: str | Path) -> Path:
    """Write the page to `out` and the summary beside it (`out` with .json)."""
    out = Path(out).expanduser()
    doc: Mapping[str, Any] = (summaries[0] if len(summaries) == 1 else
                              {"schema_version": CARD_SCHEMA_VERSION, "kind": "card-compare",
                               "cards": list(summaries)})
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(summaries))
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    except OSError as err:
        raise ResultsError(f"could not write the card to {out} ({err.strerror or err}); "
                           "pass another --out PATH.") from err
    return out


# --------------------------------------------------------------------------------------------
# `python -m labs card`


def _cmd_card(args: argparse.Namespace) -> int:
    import sys

    from .settings import Settings

    if args.compare:
        summaries = [load_summary(p) for p in args.compare]
        out = args.out or Settings.from_env().results_dir / "card-compare.html"
    else:
        results = args.results or Settings.from_env().results_dir
        summaries = [summarize(results)]
        out = args.out or Path(results) / "card.html"
    path = write_card(summaries, out)
    for label, s in zip(_labels(summaries), summaries, strict=True):
        todo = [v["notebook"][:2] for v in s["sections"].values() if not has_data(v)]
        if todo:
            print(f"card: {label}: no results yet from notebook {', '.join(todo)}",
                  file=sys.stderr)
    print(path)
    return 0


def add_cli(verbs: Any) -> None:
    """Register `card` on the `python -m labs` subparsers."""
    p = verbs.add_parser("card", help="one HTML page of what notebooks 01-05 measured, beside "
                                      "the article (and a card.json)",
                         description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--results", type=Path, default=None, metavar="DIR",
                       help="results folder (default: LABS_RESULTS or ./results)")
    which.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                       help="two results folders or card.json files, side by side")
    p.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="where to write the page (default: card.html in the results folder, "
                        "card-compare.html with --compare); the summary goes beside it as .json")
    p.set_defaults(func=_cmd_card)


__all__ = ["SECTIONS", "summarize", "load_summary", "machine_label", "render_html", "write_card",
           "fmt", "add_cli"]
