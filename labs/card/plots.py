"""Layer 2: figures, summaries -> PNG (matplotlib's object API, no pyplot state).

Only machines with data are drawn; the article where it published numbers. matplotlib and numpy
are imported inside the functions, so reading results (`labs.card.data`) never loads them.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..model import article
from .data import has_data

ARTICLE_COLOR = "0.35"


def _figure(ncols: int = 1):
    from matplotlib.figure import Figure  # heavy: matplotlib only when a card is drawn

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
    from matplotlib.ticker import FuncFormatter  # heavy: matplotlib only when a card is drawn

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


def _bars_by_setup(ax, drawn, setups: list[str], key: str, ylabel: str,
                   ticks: list[str] | None = None) -> None:
    """One group of bars per setup (a section's `series["setup"]`), one bar per machine."""
    width = 0.8 / max(len(drawn), 1)
    x = np.arange(len(setups))
    for n, (i, label, sec) in enumerate(drawn):
        s = sec["series"]
        by_setup = dict(zip(s.get("setup", []), s.get(key, []), strict=False))
        ax.bar(x - 0.4 + width * (n + 0.5), _nan([by_setup.get(k) for k in setups]), width,
               color=f"C{i}", label=label)
    ax.set_xticks(x, ticks or setups, fontsize=7 if ticks else None)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")


def _plot_admission(drawn) -> Any:
    fig, axes = _figure(ncols=3)
    setups = list(dict.fromkeys(x for _, _, sec in drawn for x in sec["series"].get("setup", [])))
    panels = (("ttft_p95_s", "p95 TTFT of served requests (s)"),
              ("shed", "shed with 503 (requests)"),
              ("goodput_rps", "goodput under the SLO (req/s)"))
    for ax, (key, ylabel) in zip(axes, panels, strict=True):
        _bars_by_setup(ax, drawn, setups, key, ylabel, ticks=[_short(s, 12) for s in setups])
    for i, _, sec in drawn:
        if sec["values"].get("baseline_ttft_s"):
            axes[0].axhline(sec["values"]["baseline_ttft_s"], color=f"C{i}", ls="--", alpha=0.6)
    from matplotlib.ticker import MaxNLocator  # heavy: matplotlib only when a card is drawn

    axes[0].set_yscale("log")
    baselines = [sec["values"]["baseline_ttft_s"] for _, _, sec in drawn
                 if sec["values"].get("baseline_ttft_s")]
    if baselines:
        axes[0].set_ylim(bottom=min(baselines) / 2)
    axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle("One overload, every setup (dashed: the unloaded baseline)", fontsize=11)
    return fig


def _plot_prefix(drawn) -> Any:
    fig, axes = _figure(ncols=2)
    for ax, (key, ylabel) in zip(axes, (("ttft_p95_s", "p95 TTFT (s)"),
                                        ("max_running", "most running at once")), strict=True):
        _bars_by_setup(ax, drawn, ["cache on", "cache off"], key, ylabel)
    axes[0].legend(fontsize=7)
    fig.suptitle("16 users sharing one system prompt, on the same server shared and salted",
                 fontsize=11)
    return fig


def _plot_capacity(drawn) -> Any:
    fig, axes = _figure(ncols=1)
    ax = axes[0]
    for i, label, sec in drawn:
        s = sec["series"]
        ax.plot(s.get("concurrency", []), _nan(s.get("usd_per_million", [])), "o-",
                color=f"C{i}", label=label)
        users = sec["values"].get("users_per_replica")
        if users:
            ax.axvline(users, color=f"C{i}", ls="--", alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("USD per million output tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("The cost of a token against users (dashed: the operating point)", fontsize=11)
    return fig


PLOTS: dict[str, Callable[[list], Any]] = {
    "provision": _plot_provision, "ceiling": _plot_ceiling, "batching": _plot_batching,
    "kv": _plot_kv, "admission": _plot_admission, "prefix": _plot_prefix,
    "capacity": _plot_capacity,
}

