"""Does the gateway keep its promise at 20x overload? Every request answered or refused fast.

The promise: whatever is offered, every request ends in a complete answer or a `503` with
`Retry-After`, the refusals come back in milliseconds, and nothing is lost (no timeout, no
cut stream, no connection error). This benchmark starts `python -m labs.gateway` in front of
the server, measures what it can serve (p50 end-to-end at `max_in_flight` users, so capacity
= max_in_flight / that), then offers `--overload` times that as open-loop Poisson arrivals for
`--duration-s` seconds and prints:

    admitted / shed / lost          from the client's records
    time to 503, p50 and max        how fast a refusal comes back
    Retry-After on every 503?       yes/no, and the gateway's own counters as a cross-check

    python benchmarks/gateway_overload.py                 # the live server, 60 s
    python benchmarks/gateway_overload.py --stub --duration-s 10

Send lag (how late the client sent, `labs.results.records`) is printed too: if it is large, the
client could not keep up and offered less than asked; the gateway's figures still hold.
A benchmark, not a test: it prints numbers and passes or fails nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

from gateway_overhead import (  # noqa: E402  (the stub and the upstream options live there)
    Upstream,
    add_upstream_args,
    behind_gateway,
    serve_stub,
)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


def capacity_rps(upstream: Upstream, gateway_url: str, max_in_flight: int,
                 max_tokens: int) -> float:
    """What the gateway lets through at saturation: max_in_flight / p50 end-to-end."""
    from labs.load import loadgen
    from labs.workload import Closed, Workload

    result = loadgen.run_sync(Closed(max_in_flight, requests=4 * max_in_flight),
                              Workload(max_tokens=max_tokens), base_url=gateway_url,
                              api_key=upstream.api_key, model=upstream.model, progress=False,
                              warmup=max_in_flight, timeout_s=120)
    e2e = result.summary()["e2e_s_p50"]
    if e2e is None:
        first = next((r.error for r in result.records if r.error), "no records")
        raise SystemExit(f"error: no request completed through the gateway ({first})")
    return max_in_flight / e2e


def offer(base_url: str, api_key: str | None, model: str | None, rate_rps: float,
          duration_s: float, max_clients: int, max_tokens: int, seed: int,
          timeout_s: float) -> list[dict[str, Any]]:
    """One client process's share of the load: its records, as dicts (they cross processes).

    loadgen's own connections: one per request in flight (labs.load.pool), so a client
    with hundreds of open connections never scans them all for each request.
    """
    from labs.load import loadgen
    from labs.workload import Poisson, Workload

    async def go() -> list[dict[str, Any]]:
        result = await loadgen.run(
            Poisson(rate_rps, duration_s=duration_s, max_concurrency=max_clients, seed=seed),
            Workload(max_tokens=max_tokens), base_url=base_url, api_key=api_key,
            model=model, progress=False, timeout_s=timeout_s)
        return [r.to_dict() for r in result.records]

    return asyncio.run(go())


def offer_from(processes: int, **kwargs: Any) -> list[Any]:
    """The load from `processes` client processes at once, each a share of the rate (one
    Python client tops out at a few hundred requests/s; past that it measures itself)."""
    from labs.results.records import RequestRecord

    if processes == 1:
        return [RequestRecord.from_dict(r) for r in offer(**kwargs)]
    share = {**kwargs, "rate_rps": kwargs["rate_rps"] / processes}
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=spawn) as pool:
        parts = [pool.submit(offer, **{**share, "seed": share["seed"] + i})
                 for i in range(processes)]
        return [RequestRecord.from_dict(r) for part in parts for r in part.result()]


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gateway_counters(gateway_url: str) -> dict[str, float]:
    from labs.observe.metrics import Snapshot

    snap = Snapshot.parse(httpx.get(gateway_url + "/metrics", timeout=10).text)
    out = {"admitted": snap.value("gateway_admitted_total") or 0.0,
           "completed": snap.value("gateway_completed_total") or 0.0}
    for reason in ("queue_full", "queue_timeout"):  # load
        out[reason] = snap.value("gateway_shed_total", reason=reason) or 0.0
    for reason in ("invalid", "prompt_too_long"):  # input
        out[reason] = snap.value("gateway_rejected_total", reason=reason) or 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_upstream_args(p)
    p.add_argument("--duration-s", type=float, default=60.0,
                   help="how long to offer the overload (default 60)")
    p.add_argument("--overload", type=float, default=20.0,
                   help="offered rate as a multiple of capacity (default 20)")
    p.add_argument("--max-in-flight", type=int, default=2, help="gateway N (default 2)")
    p.add_argument("--max-queue", type=int, default=4, help="gateway M (default 4)")
    p.add_argument("--max-queue-wait-s", type=float, default=5.0,
                   help="gateway queue wait limit (default 5)")
    p.add_argument("--max-clients", type=int, default=200,
                   help="most requests the client keeps open at once (default 200)")
    p.add_argument("--max-tokens", type=int, default=8, help="output tokens (default 8)")
    p.add_argument("--client-procs", type=int, default=1 if (os.cpu_count() or 1) <= 4 else 4,
                   help="client processes sharing the load (default 1 on <= 4 cores, else 4)")
    # The stub serves slower than in gateway_overhead.py (~400 ms a request), so that 20x its
    # capacity (~100 req/s) is a rate one client process can offer on a 2-core machine.
    p.set_defaults(stub_ttft_s=0.1, stub_itl_s=0.04)
    args = p.parse_args(argv)
    if args.serve_stub is not None:
        serve_stub(args.serve_stub, args.stub_ttft_s, args.stub_itl_s)
        return 0

    from labs.gateway import GatewayConfig
    from labs.results.records import summarize

    def config(upstream: str) -> GatewayConfig:
        return GatewayConfig(upstream, max_in_flight=args.max_in_flight,
                             max_queue=args.max_queue, max_queue_wait_s=args.max_queue_wait_s)

    with behind_gateway(args, config, "overload") as run:
        upstream, gateway_url = run.upstream, run.gateway_url
        capacity = capacity_rps(upstream, gateway_url, args.max_in_flight, args.max_tokens)
        rate = args.overload * capacity
        print(f"upstream {upstream.base_url}{' (stub)' if args.stub else ''}; gateway N="
              f"{args.max_in_flight} M={args.max_queue} wait<={args.max_queue_wait_s:g} s; "
              f"capacity ~{capacity:.1f} req/s, offering {rate:.0f} req/s "
              f"({args.overload:g}x) for {args.duration_s:g} s", flush=True)
        before, cpu_before = gateway_counters(gateway_url), cpu_s(run.gateway.pid)
        started = time.perf_counter()
        records = offer_from(
            args.client_procs, base_url=gateway_url, api_key=upstream.api_key,
            model=upstream.model, rate_rps=rate, duration_s=args.duration_s,
            max_clients=args.max_clients, max_tokens=args.max_tokens, seed=0,
            timeout_s=args.max_queue_wait_s + 120)
        wall_s = time.perf_counter() - started
        after, cpu_after = gateway_counters(gateway_url), cpu_s(run.gateway.pid)

    ok = [r for r in records if r.ok]
    shed = [r for r in records if r.error_kind == "shed"]
    lost = [r for r in records if not r.ok and r.error_kind != "shed"]
    s = summarize(records)
    with_header = sum(r.retry_after_s is not None for r in shed)
    gw = {k: after[k] - before[k] for k in after}
    refused = gw["queue_full"] + gw["queue_timeout"]
    print(f"offered {len(records)} requests ({len(records) / args.duration_s:.0f} req/s "
          f"scheduled) from {args.client_procs} client process(es); done in {wall_s:.1f} s")
    print(f"admitted (complete answers) {len(ok)}, shed (503) {len(shed)}, lost {len(lost)}"
          + (f": {sorted({r.error_kind for r in lost})}, first: {lost[0].error}" if lost
             else ""))
    print(f"time to 503: p50 {_ms(s['time_to_shed_s_p50'])}, max {_ms(s['time_to_shed_s_max'])}")
    print(f"Retry-After on every 503: {'yes' if with_header == len(shed) else 'NO'} "
          f"({with_header}/{len(shed)})")
    print(f"answered p50 e2e {_ms(s['e2e_s_p50'])}, p95 {_ms(s['e2e_s_p95'])}; client send lag "
          f"p50 {_ms(s['send_lag_s_p50'])}, max {_ms(s['send_lag_s_max'])}")
    print(f"gateway counters: admitted {gw['admitted']:.0f}, completed {gw['completed']:.0f}, "
          f"shed queue_full {gw['queue_full']:.0f} + queue_timeout {gw['queue_timeout']:.0f}; "
          f"admitted + shed = {gw['admitted'] + refused:.0f} of {len(records)} offered")
    if cpu_before is not None and cpu_after is not None and records:
        used = cpu_after - cpu_before
        print(f"gateway CPU: {used:.1f} s over {wall_s:.1f} s ({used / wall_s:.0%} of a core), "
              f"{used / len(records) * 1000:.2f} ms per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
