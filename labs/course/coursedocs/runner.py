"""Run the solution notebooks in order (nbclient), timing each one's wall time, into
<results>/course_run.json; stop on the first failure, naming the notebook and cell."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ...errors import ConfigError
from ...hardware import cpu_model, cpu_signature
from ...settings import Settings
from .runresults import ROOT, RUN_FILE


def cpu_description() -> str:
    """The CPU the run measured on: its model name, cores and the features that matter."""
    return f"{os.cpu_count()} x {cpu_model() or 'unknown CPU'} ({cpu_signature()})"


def execute_notebook(path: Path, cell_timeout_s: float) -> str | None:
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
    from ...serving import server  # heavy: httpx only when notebooks are run

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
            failure = execute_notebook(path, cell_timeout_s)
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
