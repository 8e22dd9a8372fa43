"""Layer 3: the page, summaries -> one self-contained HTML page (+ its JSON beside it).

Tables per section (the machines in adjacent columns, the article last), the plots from
`labs.card.plots` inlined as base64 PNGs, so the page has nothing to fetch.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ResultsError
from ..model import article
from .data import CARD_SCHEMA_VERSION, _labels, has_data
from .plots import PLOTS, _png, _with_data
from .sections import SECTIONS, Section


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


def _by_key(series: Mapping[str, list], key: str) -> dict[Any, dict]:
    keys = series.get(key, [])
    return {k: {f: vals[n] for f, vals in series.items() if n < len(vals)}
            for n, k in enumerate(keys) if k is not None}


def _batching_detail(secs, labels) -> str:
    cols = (("aggregate tok/s", "agg_tok_s", ",.0f"), ("per user tok/s", "per_user_tok_s", ",.1f"),
            ("p95 TTFT (s)", "ttft_s_p95", ",.2f"))
    parts: list[tuple[str, dict[Any, dict[str, Any]], tuple[tuple[str, str, str], ...]]] = [
        (label, _by_key(s["series"], "concurrency"), cols)
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
                "figures are in labs/model/article.py; each machine's numbers are in its card.json."
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

