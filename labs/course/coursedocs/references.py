"""Reference plots, redrawn from the saved tables with labs.course.plots into
docs/reference/<notebook>/, beside the index that shows them; a plot this run could not draw
reads "not measured" there and no older one stays."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from ...model.stepsplit import StepSplit
from .runresults import NOTEBOOKS, Results, _source_line


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
    from .. import plots  # heavy: matplotlib only when drawing

    return plots.ttft_by_prompt(_frame(r.findings("01_provision").get("ttft_by_prompt_length")),
                                _meta(r, "01_provision"))


def _draw_02_ceiling(r: Results) -> Any:
    from .. import plots  # heavy: matplotlib only when drawing

    f = r.findings("02_bandwidth_ceiling")
    return plots.decode_vs_ceiling(_frame(f.get("single_stream")), _need(f.get("ceiling_tok_s")),
                                   _meta(r, "02_bandwidth_ceiling"))


def _draw_split(notebook: str) -> Callable[[Results], Any]:
    def draw(r: Results) -> Any:
        from .. import plots  # heavy: matplotlib only when drawing

        return plots.step_split(_splits(r.findings(notebook).get("step_split")), _meta(r, notebook))
    return draw


def _draw_03_sweep(r: Results) -> Any:
    from .. import plots  # heavy: matplotlib only when drawing

    f = r.findings("03_continuous_batching")
    return plots.batching_sweep(_frame(f.get("sweep")), _meta(r, "03_continuous_batching"),
                                f.get("cliff_users"))


def _draw_03b(r: Results) -> Any:
    from .. import plots  # heavy: matplotlib only when drawing

    f = r.findings("03b_arrivals_and_goodput")
    return plots.arrivals_vs_service(_frame(f.get("arrivals")), _frame(f.get("arrivals_predicted")),
                                     _meta(r, "03b_arrivals_and_goodput"), f.get("rate_knee_rps"))


def _draw_staircase(notebook: str, title_: str) -> Callable[[Results], Any]:
    def draw(r: Results) -> Any:
        from .. import plots  # heavy: matplotlib only when drawing

        fig = plots.kv_staircase(_ttfts(r, notebook), {}, _meta(r, notebook))
        fig.axes[0].set_title(title_)
        return fig
    return draw


def _draw_05(r: Results) -> Any:
    from ..experiments import plot_admission  # heavy: matplotlib and httpx only when drawing

    f = r.findings("05_bounded_admission")
    table = _frame(f.get("comparison")).set_index("index")
    return plot_admission(table, _need(f.get("baseline_ttft_s")), _meta(r, "05_bounded_admission"))


def _draw_07(r: Results) -> Any:
    from .. import plots  # heavy: matplotlib only when drawing

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
