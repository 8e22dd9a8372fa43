"""How good is the calibrated model? `labs predict` beside a measured `labs bench`.

Against the running server (`python -m labs serve` first): calibrate (timed), predict a
closed-loop sweep, measure the same sweep with labs.loadgen, and print both with the error per
level, the median absolute error and the worst. Defaults are the calibration issue's: 128-token
prompts, 64 output tokens, concurrency 1, 4, 16, 64, labs bench's requests per level.

    .venv/bin/python benchmarks/predict_vs_bench.py [--levels 1,4,16,64] [--reuse]

A benchmark, not a test: it prints what it measured and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import labs
from labs.model import calibration
from labs.course import experiments
from labs.load.loadgen import parse_levels, sweep
from labs.model.predict import prediction_table
from labs.results.records import sweep_frame

COLUMNS = ["agg_tok_s", "per_user_tok_s", "ttft_s_p50"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,4,16,64")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reuse", action="store_true",
                        help="use the saved calibration instead of measuring a new one")
    parser.add_argument("--out", type=Path, default=None, help="save the table as JSON here")
    args = parser.parse_args()
    levels = parse_levels(args.levels)
    conn = labs.connect()

    started = time.perf_counter()
    cal = (calibration.ensure(conn, progress=True) if args.reuse
           else calibration.measure(conn, progress=True))
    if not args.reuse:
        cal.save()
    calibrate_s = time.perf_counter() - started
    print(cal.describe())
    print(f"calibration wall time: {calibrate_s:.1f} s (measure {cal.wall_s:.1f} s)\n")

    predicted = prediction_table(cal.steps, cal.limits, levels,
                                 prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens)
    started = time.perf_counter()
    runs = sweep([labs.Closed(c, requests=max(8, 4 * c)) for c in levels],
                 labs.Workload(prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens),
                 conn=conn, warmup=2, progress=False)
    bench_s = time.perf_counter() - started
    measured = sweep_frame(runs)
    table = experiments.beside(predicted, measured, "concurrency", COLUMNS)
    print(f"{args.prompt_tokens} prompt tokens, {args.max_tokens} output tokens, closed loop; "
          f"bench took {bench_s:.0f} s")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    errors = np.abs(table["agg_tok_s error %"].to_numpy())
    print(f"\naggregate tok/s: median |error| {np.median(errors):.1f} %, worst "
          f"{errors.max():.1f} % (goal: median <= 15 %, worst <= 25 %)")
    if args.out:
        args.out.write_text(json.dumps({
            "hardware": cal.hardware, "cpu_signature": cal.cpu_signature,
            "calibrate_wall_s": calibrate_s, "steps": cal.steps.to_dict(),
            "rows": table.to_dict(orient="records")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
