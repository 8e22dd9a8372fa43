"""The generated regions of the README and the two guides: each region's text from one run,
`fill`, which puts it between `<!-- coursedocs:NAME -->` and `<!-- /coursedocs:NAME -->`, and
`write`, which fills every document (and redraws the reference plots)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ...errors import ConfigError
from ...model import article
from .notebookfacts import ASK, QUESTION, SHOULD_SEE, _article, facts
from .plan import CUT_LADDER, MODES, SESSION_MIN, build_plan
from .references import _write_if_changed, write_references
from .runresults import NOT_MEASURED, ROOT, Results, _source_line, at, minutes, secs
from .timing import RULE, NotebookTime, notebook_times, title


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
