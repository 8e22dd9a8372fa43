"""CLI: `python -m labs bench`, a closed-loop concurrency sweep against the live server
(`add_cli` registers the verb; labs.__main__ calls it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...results.records import SLO, save_sweep, sweep_frame
from ...serving.connect import connect
from ...workload import API_KINDS, BENCH_REQUESTS_RULE, Closed, Workload, bench_requests
from .request import DEFAULT_TIMEOUT_S
from .runner import sweep


def parse_levels(text: str) -> list[int]:
    """"1,8,32" -> [1, 8, 32]; anything but whole numbers >= 1 is a ConfigError."""
    levels = []
    for part in text.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit() or int(part) < 1:
            raise ConfigError(f"--concurrency {text!r}: each level must be a whole number "
                              "of at least 1, e.g. --concurrency 1,8,32.")
        levels.append(int(part))
    return levels


def _cmd_bench(args: argparse.Namespace) -> int:
    levels = parse_levels(args.concurrency)
    if args.requests_per_level is not None and args.requests_per_level < 1:
        raise ConfigError("--requests-per-level must be at least 1, "
                          f"not {args.requests_per_level}.")
    if args.max_tokens < 1:
        raise ConfigError(f"--max-tokens must be at least 1, not {args.max_tokens}.")
    if args.prompt_tokens < 0:
        raise ConfigError(f"--prompt-tokens must be 0 (a short prompt) or more, "
                          f"not {args.prompt_tokens}.")
    slo = SLO(ttft_s=args.slo_ttft_s, tpot_s=args.slo_tpot_s, e2e_s=args.slo_e2e_s)
    workload = Workload(api=args.api, prompt_tokens=args.prompt_tokens or None,
                        max_tokens=args.max_tokens)
    shapes = [Closed(c, requests=args.requests_per_level or bench_requests(c)) for c in levels]
    runs = sweep(shapes, workload, conn=connect(), warmup=args.warmup,
                 progress=not args.no_progress, timeout_s=args.timeout)
    table = sweep_frame(runs, slo if slo.given else None)
    if not slo.given:
        table = table.drop(columns=["goodput_rps"])
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
    if args.out:
        path = save_sweep(runs, args.out, slo if slo.given else None)
        print(f"saved {path} and {path.with_suffix('.csv')}", file=sys.stderr)
    failed = [r.label for r in runs if not any(rec.ok for rec in r.records)]
    if failed:
        first = next(rec.error for r in runs for rec in r.records if rec.error)
        print(f"error: every request failed at {', '.join(failed)} (first: {first})",
              file=sys.stderr)
        return 1
    return 0


def add_cli(verbs: Any) -> None:
    """Register `bench` on the `python -m labs` subparsers."""
    p = verbs.add_parser("bench", help="closed-loop concurrency sweep against the live server")
    p.add_argument("--concurrency", default="1,2,4,8",
                   help="comma-separated concurrency levels (default 1,2,4,8)")
    p.add_argument("--requests-per-level", type=int, default=None, metavar="N",
                   help=f"requests at each level (default {BENCH_REQUESTS_RULE})")
    p.add_argument("--max-tokens", type=int, default=64, help="output tokens per request "
                   "(ignore_eos, so exactly this many; default 64)")
    p.add_argument("--prompt-tokens", type=int, default=128,
                   help="prompt length in the server's tokens (default 128; 0: a short prompt)")
    p.add_argument("--api", choices=API_KINDS, default="chat", help="endpoint (default chat)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests, not measured "
                   "(default 2)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds per request before it counts as a timeout "
                   f"(default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--slo-ttft-s", type=float, default=None, help="TTFT SLO for goodput")
    p.add_argument("--slo-tpot-s", type=float, default=None, help="TPOT SLO for goodput")
    p.add_argument("--slo-e2e-s", type=float, default=None, help="end-to-end SLO for goodput")
    p.add_argument("--out", type=Path, default=None,
                   help="save results here (JSON, and a CSV beside it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
