"""The course's plots. Each one is labelled with units and with where it was measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter


def where(meta: Mapping[str, Any]) -> str:
    """'SmolLM2-135M-Instruct · vLLM 0.32.0 · Linux x86_64, 2 x AMD EPYC' from run metadata."""
    parts = [meta.get("model"), f"vLLM {meta['vllm_version']}" if meta.get("vllm_version") else None,
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
    ax2.set_xlabel("offered requests/s")
    ax2.set_ylabel("TTFT (s)")
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
    from .stepsplit import CAUSES

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
