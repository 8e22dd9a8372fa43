"""Notebook 05's comparison of admission setups: one table and one plot of it."""

from __future__ import annotations

import pandas as pd

from ...results.records import SLO, RunResult


def admission_table(results: dict[str, RunResult], slo: SLO) -> pd.DataFrame:
    """One row per setup: what its served requests saw, what it refused, and how."""
    rows = {}
    for label, run in results.items():
        s = run.summary(slo)
        shed = [r for r in run.records if r.error_kind == "shed"]
        rows[label] = {
            "offered": s["requests"], "served": s["ok"], "shed": s["shed"],
            "other_errors": sum(s["errors"].values()) - s["shed"],
            "ttft_p50_s": s["ttft_s_p50"], "ttft_p95_s": s["ttft_s_p95"],
            "e2e_p50_s": s["e2e_s_p50"], "e2e_p95_s": s["e2e_s_p95"],
            "time_to_503_p50_ms": _ms(s["time_to_shed_s_p50"]),
            "time_to_503_max_ms": _ms(s["time_to_shed_s_max"]),
            "retry_after_on_every_503": all(r.retry_after_s for r in shed) if shed else None,
            "goodput_rps": s["goodput_rps"], "throughput_tok_s": s["agg_tok_s"],
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def plot_admission(table: pd.DataFrame, baseline_ttft_s: float, meta: dict[str, object]):
    """p95 TTFT of served requests (against the baseline) and what was shed, per setup."""
    import matplotlib.pyplot as plt  # heavy: matplotlib only when plotting

    from ..plots import where  # heavy: matplotlib only when plotting

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    fig.suptitle("One overload, every setup", fontsize=12)
    labels = list(table.index)
    ax1.bar(labels, table["ttft_p95_s"], color="tab:red", alpha=0.8, label="p95")
    ax1.bar(labels, table["ttft_p50_s"], color="tab:orange", label="p50")
    ax1.axhline(baseline_ttft_s, color="black", ls="--", label="unloaded baseline")
    ax1.axhline(2 * baseline_ttft_s, color="gray", ls=":", label="2x baseline")
    ax1.set_ylabel("TTFT of served requests (s)")
    ax1.set_yscale("log")
    ax1.legend()
    ax2.bar(labels, table["served"], label="served (200)")
    ax2.bar(labels, table["shed"], bottom=table["served"], label="shed (503)")
    ax2.set_ylabel("requests")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=15)
        ax.grid(alpha=0.3, axis="y")
    fig.text(0.5, 0.005, where(meta), ha="center", fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    return fig
