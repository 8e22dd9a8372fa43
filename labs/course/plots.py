"""The course's plots. Each one is labelled with units and with where it was measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from ..model.stepsplit import CAUSES


def where(meta: Mapping[str, Any]) -> str:
    """'SmolLM2-135M-Instruct · vLLM 0.32.0 · Linux x86_64, 2 x AMD EPYC' from run metadata."""
    parts = [meta.get("model"),
             f"vLLM {meta['vllm_version']}" if meta.get("vllm_version") else None,
             meta.get("hardware")]
    return " · ".join(str(p) for p in parts if p)


def _figure(title: str, meta: Mapping[str, Any], ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(1, ncols, figsize=(6.5 * ncols, 4), squeeze=False)
    fig.suptitle(title, fontsize=12)
    fig.text(0.5, 0.005, where(meta), ha="center", fontsize=8, color="gray")
    return fig, list(axes[0])


def ttft_by_prompt(table: pd.DataFrame, meta: Mapping[str, Any]) -> Figure:
    fig, (ax,) = _figure("One request alone: TTFT grows with the prompt", meta)
    ax.plot(table["prompt_tokens"], table["ttft_s_p50"] * 1000, "o-")
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("TTFT, median (ms)")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def decode_vs_ceiling(table: pd.DataFrame, ceiling_tok_s: float,
                      meta: Mapping[str, Any],
                      ceiling_with_kv: Sequence[float] | None = None) -> Figure:
    """Measured single-stream decode against the ceiling: with `ceiling_with_kv` (one value
    per row of `table`), also the ceiling that counts the KV cache read at each answer's mean
    context, the bound that actually applies to that measurement."""
    fig, (ax,) = _figure("Single-stream decode against the bandwidth ceiling", meta)
    ax.axhline(ceiling_tok_s, color="tab:red", ls="--",
               label=f"ceiling, weights only: {ceiling_tok_s:.0f} tok/s")
    if ceiling_with_kv is not None:
        ax.plot(table["output_tokens"], list(ceiling_with_kv), "--", color="tab:purple",
                label="ceiling with the KV cache read at each answer's mean context")
    ax.plot(table["output_tokens"], table["decode_tok_s"], "o-", label="measured (1 / TPOT)")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("output length (tokens)")
    ax.set_ylabel("decode speed, one stream (tok/s)")
    ax.set_ylim(0, ceiling_tok_s * 1.15)
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def batching_sweep(table: pd.DataFrame, meta: Mapping[str, Any],
                   cliff: int | None = None) -> Figure:
    fig, (ax1, ax2) = _figure("Continuous batching: throughput, per-user speed and tail TTFT",
                              meta, ncols=2)
    c = table["concurrency"]
    ax1.plot(c, table["agg_tok_s"], "o-", label="aggregate")
    ax1.plot(c, table["per_user_tok_s"], "s--", label="per user")
    ax1.set_ylabel("output tok/s")
    ax2.plot(c, table["ttft_s_p95"], "o-", color="tab:red", label="p95 TTFT")
    ax2.plot(c, table["ttft_s_p50"], ".--", color="tab:orange", label="p50 TTFT")
    ax2.set_ylabel("TTFT (s)")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("concurrent users")
        if cliff:
            ax.axvline(cliff, color="gray", ls=":", label=f"cliff at {cliff} users")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def goodput_vs_throughput(table: pd.DataFrame, meta: Mapping[str, Any],
                          operating_users: int | None = None) -> Figure:
    """03b: requests per second made against requests per second within the SLO, by users.
    Where the two lines part, the extra throughput goes to requests that miss the SLO."""
    fig, (ax,) = _figure("Throughput against goodput: where to operate", meta)
    c = table["concurrency"]
    ax.plot(c, table["agg_tok_s"] / 64, "o-", label="completed (req/s, from tok/s / 64)")
    ax.plot(c, table["goodput_rps"], "s-", color="tab:green",
            label="goodput (req/s within the SLO)")
    if operating_users:
        ax.axvline(operating_users, color="gray", ls=":",
                   label=f"operating point: {operating_users} users")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("concurrent users")
    ax.set_ylabel("requests/s")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def arrivals_vs_service(measured: pd.DataFrame, predicted: pd.DataFrame,
                        meta: Mapping[str, Any], knee_rps: float | None = None) -> Figure:
    """Open-loop arrivals: the rate served against the rate that arrived, and the p95 TTFT,
    measured and predicted. The knee is where the first line leaves the diagonal."""
    fig, (ax1, ax2) = _figure("Arrivals against service (Poisson)", meta, ncols=2)
    top = max(measured["arrived_rps"].max(), measured["served_rps"].max())
    ax1.plot([0, top], [0, top], ":", color="gray", label="served = arrived")
    ax1.plot(measured["arrived_rps"], measured["served_rps"], "o-", label="measured")
    ax1.plot(predicted["arrived_rps"], predicted["served_rps"], "s--", alpha=0.7,
             label="predicted")
    ax1.set_xlabel("requests/s that arrived")
    ax1.set_ylabel("requests/s served")
    ax2.plot(measured["offered_rps"], measured["ttft_s_p95"], "o-", color="tab:red",
             label="p95 TTFT, measured")
    ax2.plot(predicted["offered_rps"], predicted["ttft_s_p95"], "s--", color="tab:red",
             alpha=0.5, label="p95 TTFT, predicted")
    if "e2e_s_p95" in measured:  # the backlog waits in the batch first: whole answers slow down
        ax2.plot(measured["offered_rps"], measured["e2e_s_p95"], "o-", color="tab:purple",
                 label="p95 end to end, measured")
    ax2.set_xlabel("offered requests/s")
    ax2.set_ylabel("seconds")
    ax2.set_yscale("log")
    if knee_rps is not None:
        ax2.axvline(knee_rps, color="black", ls="--", label=f"knee: {knee_rps:.1f} req/s")
    for ax in (ax1, ax2):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def step_split(splits: Sequence[Any], meta: Mapping[str, Any]) -> Figure:
    """One decode step split into its causes (`labs.stepsplit.StepSplit`s), stacked: left,
    the whole step; right, the same divided by the batch (the cost of one token). Parts the
    batch shares are blue, parts that grow with it warm; datasheet bars are hatched and
    labelled "predicted"."""
    colors = {"weight_read_s": "tab:blue", "other_fixed_s": "lightsteelblue",
              "per_seq_s": "tab:orange", "kv_read_s": "tab:red", "compute_s": "tab:purple"}
    fig, (ax1, ax2) = _figure("One decode step, split into its causes", meta, ncols=2)
    names = [s.label.replace(", ", "\n").replace(" (", "\n(")
             + f"\n[{'predicted' if s.kind == 'predicted' else 'calibrated'}]" for s in splits]
    x = range(len(splits))
    for ax, per_token in ((ax1, False), (ax2, True)):
        bottom = [0.0] * len(splits)
        for field, name, shared in CAUSES:
            values = [getattr(s, field) * 1e3 / (s.batch if per_token else 1) for s in splits]
            if not any(values):
                continue
            bars = ax.bar(x, values, bottom=bottom, color=colors[field],
                          label=f"{name} ({'shared by the batch' if shared else 'grows with it'})")
            for bar, s in zip(bars, splits):
                if s.kind == "predicted":
                    bar.set_hatch("//")
            bottom = [b + v for b, v in zip(bottom, values)]
        for i, top in enumerate(bottom):
            ax.annotate(f"{top:.1f}" if top < 10 else f"{top:.0f}", (i, top), ha="center",
                        va="bottom", fontsize=8)
        ax.set_xticks(list(x), names, fontsize=8)
        ax.set_ylabel("ms per token (step / batch)" if per_token else "ms per step")
        ax.set_ylim(0, max(bottom) * 1.1)
        ax.grid(alpha=0.3, axis="y")
    fig.set_size_inches(13, 5.5)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8,
               bbox_to_anchor=(0.5, 0.035))
    fig.tight_layout(rect=(0, 0.12, 1, 0.95))
    return fig


def kv_staircase(measured: Mapping[str, Sequence[float]], predicted: Mapping[str, Sequence[float]],
                 meta: Mapping[str, Any]) -> Figure:
    """04: each request's TTFT, in order of first token, for the same burst on two pools
    (bars measured, steps the calibrated replay): the gap between the two is the pool's."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    colors = ("tab:red", "tab:blue")
    width = 0.4
    for i, (name, ttfts) in enumerate(measured.items()):
        order = [k + 1 + (i - 0.5) * width for k in range(len(ttfts))]
        ax.bar(order, sorted(ttfts), width=width, color=colors[i % 2], alpha=0.8,
               label=f"{name}, measured")
    for i, (name, ttfts) in enumerate(predicted.items()):
        ax.step(range(1, len(ttfts) + 1), sorted(ttfts), where="mid", color=colors[i % 2],
                linestyle="--", label=f"{name}, predicted")
    ax.set_xlabel("request, in order of first token")
    ax.set_ylabel("TTFT (s)")
    ax.set_title("The same burst on two pools: the gap is the wait for KV blocks")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.text(0.5, 0.005, where(meta), ha="center", fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def retry_timeline(tables: Mapping[str, pd.DataFrame]) -> Figure:
    """05: every answer each client setting got back, in time (green 200, red refused): a
    constant Retry-After would show as red columns, waves of retries arriving together."""
    fig, ax = plt.subplots(figsize=(7, 2.5))
    for y, table in enumerate(tables.values()):
        got = [(t, s) for ts, ss in zip(table["came_back_s"], table["statuses"])
               for t, s in zip(ts, ss)]
        ax.scatter([t for t, _ in got], [y] * len(got), marker="|", s=400,
                   c=["tab:green" if s == 200 else "tab:red" for _, s in got])
    ax.set_yticks(range(len(tables)), list(tables))
    ax.set_xlabel("s after the burst: each answer the client got back (green 200, red 503)")
    fig.tight_layout()
    return fig


def kv_blocks_by_users(table: pd.DataFrame, *, block_size: int, tokens_per_request: int,
                       meta: Mapping[str, Any], num_blocks: int | None = None) -> Figure:
    """01: the KV blocks measured at a burst's peak against the arithmetic (users x whole
    blocks per request). A point under the line is a sample that caught a request before
    its last block or after the first ones ended; `num_blocks` draws the pool's size when the
    line reaches it."""
    each = -(-tokens_per_request // block_size)
    fig, (ax,) = _figure("KV blocks held grow with the users in flight", meta)
    users = list(table["users"])
    ax.plot(users, [u * each for u in users], "--", color="tab:gray",
            label=f"users x {each} blocks ({tokens_per_request} tokens in blocks of {block_size})")
    ax.plot(users, table["peak_kv_blocks"], "o", label="measured at the peak (/metrics)")
    if num_blocks is not None and max(users) * each >= 0.5 * num_blocks:
        ax.axhline(num_blocks, color="tab:red", ls=":", label=f"the pool: {num_blocks} blocks")
    ax.set_xlabel("users in flight at once")
    ax.set_ylabel("KV blocks in use")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def operating_point(table: pd.DataFrame, target: Any, point: Mapping[str, Any],
                    meta: Mapping[str, Any], *, predicted: pd.DataFrame | None = None,
                    label: str = "measured") -> Figure:
    """07: the two halves of the target on the sweep, by users: p95 TTFT against its limit,
    per-user tok/s against reading speed, and what they leave of the aggregate tok/s. The
    operating point (`point`, from `labs.cost.operating_point`) is the last level under the
    limit and above reading speed; `predicted` (the replay's sweep) is drawn beside."""
    fig, axes = _figure("Where the target stops adding users: the operating point", meta, ncols=3)
    panels = (("ttft_s_p95", "p95 TTFT (s)", target.ttft_p95_s, "limit"),
              ("per_user_tok_s", "per-user tok/s", target.per_user_tok_s, "reading speed"),
              ("agg_tok_s", "aggregate tok/s", None, ""))
    for ax, (column, ylabel, line, line_label) in zip(axes, panels):
        ax.plot(table["concurrency"], table[column], "o-", label=label)
        if predicted is not None:
            ax.plot(predicted["concurrency"], predicted[column], "s--", alpha=0.6,
                    label="predicted (calibrated replay)")
        if line is not None:
            ax.axhline(line, color="tab:red", ls="--", label=f"{line_label}: {line:.3g}")
        ax.axvline(point["concurrency"], color="tab:green", ls=":",
                   label=f"operating point: {point['concurrency']} users")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set(xlabel="concurrent users", ylabel=ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.set_size_inches(15, 4)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig


def cost_by_concurrency(panels: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], *,
                        api_usd_per_million: float, meta: Mapping[str, Any],
                        marked: tuple[str, int, float, str] | None = None) -> Figure:
    """07: USD per million output tokens by users, one panel per setup (title -> (a
    `labs.cost.priced` table, its operating point)): filled where a level meets the target,
    hollow where it misses, a star at the operating point, the API's price as a line.
    `marked` = (panel title, users, USD per million, label) adds one measured point (the
    article's)."""
    fig, axes = _figure("What a token costs, by concurrency; the target decides where you stand",
                        meta, ncols=len(panels))
    for ax, (title, (table, at)) in zip(axes, panels.items()):
        ok, missed = table[table.meets_target], table[~table.meets_target]
        ax.plot(table.concurrency, table.usd_per_million, "-", color="tab:blue", alpha=0.4)
        ax.plot(ok.concurrency, ok.usd_per_million, "o", color="tab:blue", label="meets the target")
        ax.plot(missed.concurrency, missed.usd_per_million, "o", mfc="none", color="tab:blue",
                label="misses it")
        star = table.loc[table.concurrency == at["concurrency"], "usd_per_million"]
        ax.plot(at["concurrency"], star.iloc[0], "*", ms=16, color="tab:green",
                label=f"operating point: {at['concurrency']} users")
        ax.axhline(api_usd_per_million, color="tab:red", ls="--",
                   label=f"API: ${api_usd_per_million:g} per million")
        if marked is not None and marked[0] == title:
            ax.plot(marked[1], marked[2], "D", ms=9, color="tab:orange", label=marked[3])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set(xlabel="concurrent users", ylabel="USD per million output tokens (always busy)",
               title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.set_size_inches(6 * len(panels), 4.2)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig


def goodput_by_slo(table: pd.DataFrame, factors: Sequence[float],
                   meta: Mapping[str, Any]) -> Figure:
    """05: goodput of each setup (rows) for SLOs of `factors` x the baseline (columns, in the
    same order): which setup wins depends on the SLO."""
    fig, (ax,) = _figure("Which setup wins depends on the SLO", meta)
    for label, row in table.iterrows():
        ax.plot(list(factors), list(row.values), "o-", label=label)
    ax.set_xscale("log")
    ax.set_xticks(list(factors), [f"{f:g}x" for f in factors])
    ax.set_xlabel("SLO: p95 TTFT within this multiple of the unloaded baseline")
    ax.set_ylabel("goodput (requests/s within the SLO)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def gateway_queue(run: Any, at_once_s: float, max_wait_s: float) -> Figure:
    """05: a gateway run with a queue, request by request: when each was sent (x) and how
    long until its first token or its 503 (y), by outcome: served at once, served after a
    wait in the queue (TTFT over `at_once_s`, the p95 TTFT of the same gateway without a
    queue), refused at once (queue full), refused after waiting `max_wait_s`. Below, how many
    waited in the queue over time (a served waiter leaves it `at_once_s` before its token)."""
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    fig.suptitle(f"The gateway's queue: {run.label}", fontsize=12)
    fig.text(0.5, 0.005, where(run.metadata), ha="center", fontsize=8, color="gray")
    kinds = {"served at once": ("tab:green", "o"), "served after waiting": ("tab:blue", "o"),
             "refused at once": ("tab:red", "x"), "refused after waiting": ("tab:orange", "x")}
    points: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    spans: list[tuple[float, float]] = []  # (sent, left the queue) of each request that waited
    for r in run.records:
        if r.ok and r.ttft_s is not None:
            waited = r.ttft_s > at_once_s
            kind = "served after waiting" if waited else "served at once"
            points[kind].append((r.sent_s, r.ttft_s))
            if waited:
                spans.append((r.sent_s, r.sent_s + r.ttft_s - at_once_s))
        elif not r.ok:
            waited = r.e2e_s >= 0.5 * max_wait_s
            kind = "refused after waiting" if waited else "refused at once"
            points[kind].append((r.sent_s, r.e2e_s))
            if waited:
                spans.append((r.sent_s, r.end_s))
    ax = axes[0]
    for kind, (color, marker) in kinds.items():
        if points[kind]:
            xs, ys = zip(*points[kind])
            ax.scatter(xs, ys, color=color, marker=marker, s=24, label=f"{kind} ({len(xs)})")
    ax.axhline(max_wait_s, color="gray", ls=":", label="max wait in the queue")
    ax.set_ylabel("to first token or 503 (s)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    times = sorted({t for span in spans for t in span} | {0.0})
    depth = [sum(a <= t < b for a, b in spans) for t in times]
    axes[1].step(times, depth, where="post", color="tab:blue")
    axes[1].set_ylabel("waiting")
    axes[1].set_xlabel("sent at (s from the run start)")
    axes[1].grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return fig


def slot_timeline(runs: Sequence[Any], slots: int) -> Figure:
    """03: each slot's requests over time, static batches above, continuous batching below
    (`experiments.static_vs_continuous(...).runs`: the static batches in order, then the
    continuous run). White after a bar is a slot that waits for its batch's longest answer."""
    *static, continuous = runs
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 4.8), sharex=True)
    offset = 0.0
    for run in static:  # the batches ran one after the other: lay them end to end
        ends = [r.end_s for r in run.records]
        for row, r in enumerate(sorted(run.records, key=lambda r: r.index)):
            ax1.barh(row % slots, r.end_s - r.sent_s, left=offset + r.sent_s, height=0.8,
                     color="tab:blue", edgecolor="white")
        offset += max(ends, default=0.0)
        ax1.axvline(offset, color="gray", lw=0.6, ls=":")
    free_at = [0.0] * slots  # continuous: each request takes the slot that freed first
    for r in sorted(continuous.records, key=lambda r: r.sent_s):
        row = min(range(slots), key=lambda i: free_at[i])
        ax2.barh(row, r.end_s - r.sent_s, left=r.sent_s, height=0.8, color="tab:green",
                 edgecolor="white")
        free_at[row] = r.end_s
    ax1.set_title(f"static batches of {slots}: {offset:.0f} s (dotted: a batch ends)")
    ax2.set_title(f"continuous batching, {slots} slots: {max(free_at):.0f} s")
    for ax in (ax1, ax2):
        ax.set_ylabel("slot")
        ax.set_yticks(range(slots))
        ax.grid(axis="x", alpha=0.3)
    ax2.set_xlabel("seconds")
    fig.text(0.5, 0.005, where(continuous.metadata), ha="center", fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig
