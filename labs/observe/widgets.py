"""A live view of the engine while a run goes on, for people; a static plot for CI.

`LiveDashboard` wraps a `MetricsSampler`: in JupyterLab it shows KV-cache usage, running,
waiting and preemptions as ipywidgets updated twice a second from a background thread.
Where no person is watching (nbmake, nbconvert: LABS_HEADLESS=1, set by conftest.py) it shows
nothing live; either way `plot_engine_runs` draws the same series afterwards.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from matplotlib.figure import Figure

from .metrics import MetricsSampler


def headless() -> bool:
    return os.environ.get("LABS_HEADLESS") == "1"


class LiveDashboard:
    """`with LiveDashboard(base_url) as dash: run...`; then `dash.frame()` has the series."""

    def __init__(self, base_url: str, interval_s: float = 0.5, t0: float | None = None,
                 live: bool | None = None) -> None:
        self.sampler = MetricsSampler(base_url, interval_s=interval_s, t0=t0)
        self.live = (not headless()) if live is None else live
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._widgets: dict[str, Any] = {}

    def __enter__(self) -> LiveDashboard:
        self.sampler.start()
        if self.live:
            self._show()
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="labs-dashboard")
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sampler.stop()
        if self.live:
            self._update()

    def _show(self) -> None:
        import ipywidgets as w  # heavy: ipywidgets only when a widget is shown

        self._widgets = {
            "kv": w.FloatProgress(min=0, max=1, description="KV cache", bar_style="info"),
            "kv_text": w.Label(),
            "running": w.Label(), "waiting": w.Label(), "preempted": w.Label(),
            "time": w.Label(),
        }
        ws = self._widgets
        display(w.VBox([w.HBox([ws["kv"], ws["kv_text"]]),
                        w.HBox([ws["running"], ws["waiting"], ws["preempted"], ws["time"]])]))

    def _loop(self) -> None:
        while not self._stop.wait(self.sampler.interval_s):
            self._update()

    def _update(self) -> None:
        rows = self.sampler.rows
        if not rows or not self._widgets:
            return
        last = rows[-1]
        if last.get("error"):
            self._widgets["time"].value = f"scrape failed: {last['error']}"
            return
        ws = self._widgets
        ws["kv"].value = last["kv_cache_usage"] or 0.0
        ws["kv_text"].value = f"{(last['kv_cache_usage'] or 0):.0%}"
        ws["running"].value = f"running {last['running']:.0f}"
        ws["waiting"].value = f"· waiting {last['waiting']:.0f}"
        ws["preempted"].value = f"· preemptions {last['preemptions_total']:.0f}"
        ws["time"].value = f"· t = {last['t_s']:.1f} s"

    def frame(self) -> pd.DataFrame:
        return self.sampler.to_frame()


def _draw_engine(axes: Any, frame: pd.DataFrame, preemptions: pd.Series) -> None:
    """One run's three panels (KV usage, running/waiting, preemptions) on a column of axes."""
    ax1, ax2, ax3 = axes
    ax1.plot(frame["t_s"], frame["kv_cache_usage"] * 100, color="tab:purple")
    ax1.set_ylim(0, 105)
    ax2.step(frame["t_s"], frame["running"], where="post", label="running")
    ax2.step(frame["t_s"], frame["waiting"], where="post", label="waiting")
    ax3.step(frame["t_s"], preemptions, where="post", color="tab:red")
    ax3.set_xlabel("time since the run started (s)")
    for ax in axes:
        ax.grid(alpha=0.3)


def _finish(fig: Figure, caption: str) -> Figure:
    if caption:
        fig.text(0.5, 0.005, caption, ha="center", fontsize=8, color="gray")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def plot_engine_runs(frames: dict[str, pd.DataFrame], title: str, caption: str = "") -> Figure:
    """The engine series of several runs side by side, on the same scales: KV usage, running
    and waiting, preemptions. Telling memory from compute is reading these columns."""
    fig, axes = plt.subplots(3, len(frames), figsize=(5 * len(frames), 6.5), sharex="col",
                             sharey="row", squeeze=False)
    fig.suptitle(title, fontsize=12)
    for col, (name, frame) in enumerate(frames.items()):
        axes[0, col].set_title(name, fontsize=10)
        _draw_engine(axes[:, col], frame,
                     frame["preemptions_total"] - frame["preemptions_total"].iloc[0])
    axes[0, 0].set_ylabel("KV cache used (%)")
    axes[1, 0].set_ylabel("requests")
    axes[1, 0].legend(loc="upper right")
    axes[2, 0].set_ylabel("preemptions in the run")
    return _finish(fig, caption)
