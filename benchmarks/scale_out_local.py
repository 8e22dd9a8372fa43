"""Scale out, in miniature: two CPU engines of one core each behind an existing router, against
one engine on both cores. The same closed-loop load goes to both setups.

The router is the vLLM project's own `vllm-router` (PyPI `vllm-router`, a Rust binary: install
it in a venv of its own, `python -m venv /tmp/vr && /tmp/vr/bin/pip install vllm-router`, and
pass `--router /tmp/vr/bin/vllm-router`). Nothing here is a home-made router.

What it shows on 2 cores: whether splitting the cores into two replicas buys throughput
(replicas do not share a batch, so each one's step reads the weights for fewer users), and
what the router adds to TTFT. A GPU node with several GPUs has the same trade without the core
contention: there, one replica per GPU is the usual answer.

    python benchmarks/scale_out_local.py --router /tmp/vr/bin/vllm-router
    python benchmarks/scale_out_local.py --router ... --users 1 8 32 --json

Every process it starts (two or three engines, the router) is stopped in `finally`, by its own
process group, whatever happens. A benchmark, not a test: it prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from labs.serving import cpu_model, processes, server  # noqa: E402
from labs.load import loadgen
from labs.serving.profiles import get_profile  # noqa: E402
from labs.settings import Settings  # noqa: E402
from labs.workload import Closed, Workload  # noqa: E402


@contextmanager
def engine(settings: Settings, port: int, cpus: str, log_dir: Path) -> Iterator[str]:
    """A naive-profile vLLM engine on `port`, its OpenMP threads bound to `cpus`."""
    s = replace(settings, port=port)
    model = str(cpu_model.ensure_model(s.models_dir))
    env = server.engine_env(s)
    env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    log = log_dir / f"engine-{port}.log"
    proc = processes.spawn_logged(server.engine_command(get_profile("naive"), s, model), log, env)
    try:
        server.wait_healthy(s.base_url, 300, alive=lambda: proc.poll() is None, log=log,
                            what=f"vLLM on cores {cpus}")
        yield s.base_url
    finally:
        processes.stop_group(proc.pid, proc)


@contextmanager
def router(binary: str, port: int, workers: list[str], policy: str,
           log_dir: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    cmd = [binary, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
           "--worker-urls", *workers, "--log-level", "warning"]
    proc = processes.spawn_logged(cmd, log_dir / "router.log", dict(os.environ))
    try:
        server.wait_healthy(url, 60, alive=lambda: proc.poll() is None,
                            log=log_dir / "router.log", what="vllm-router")
        yield url
    finally:
        processes.stop_group(proc.pid, proc, grace_s=5)


def sweep(url: str, settings: Settings, model: str, users: list[int],
          label: str) -> list[dict[str, Any]]:
    rows = []
    workload = Workload(prompt_tokens=32, max_tokens=64)
    for i, c in enumerate(users):
        run = loadgen.run_sync(Closed(c, requests=max(2 * c, 8)), workload, base_url=url,
                               api_key=settings.api_key, model=model, warmup=2 if i == 0 else 0,
                               progress=False, label=f"{label} {c}")
        s = run.summary()
        rows.append({"setup": label, "users": c, "agg_tok_s": s["agg_tok_s"],
                     "per_user_tok_s": s["per_user_tok_s"], "ttft_s_p50": s["ttft_s_p50"],
                     "ttft_s_p95": s["ttft_s_p95"], "errors": s["requests"] - s["ok"]})
        print(f"{label:28} {c:4} users: {s['agg_tok_s'] or 0:7.1f} tok/s, p95 TTFT "
              f"{s['ttft_s_p95'] or float('nan'):.3f} s, errors {rows[-1]['errors']}",
              file=sys.stderr)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--router", default=shutil.which("vllm-router"),
                   help="the vllm-router binary (default: on PATH)")
    p.add_argument("--policy", default="power_of_two",
                   help="vllm-router's --policy (default power_of_two: the less loaded of two)")
    p.add_argument("--users", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--port", type=int, default=8300, help="first of four ports to use")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not args.router or not Path(args.router).exists():
        print("error: no vllm-router binary; install it in a venv of its own (see --help) and "
              "pass --router PATH", file=sys.stderr)
        return 2
    if server.running_server():
        print("error: the course's server is running and would share the cores; stop it "
              "first (`python -m labs stop`)", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    model = cpu_model.MODEL_NAME
    cores = sorted(os.sched_getaffinity(0))
    log_dir = settings.run_dir.parent / "scale-out"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with engine(settings, args.port, ",".join(map(str, cores)), log_dir) as one:
        rows += sweep(one, settings, model, args.users, f"1 engine x {len(cores)} cores")
    with ExitStack() as stack:
        workers = [stack.enter_context(engine(settings, args.port + 1 + i, str(core), log_dir))
                   for i, core in enumerate(cores[:2])]
        url = stack.enter_context(router(args.router, args.port + 3, workers, args.policy,
                                         log_dir))
        rows += sweep(url, settings, model, args.users,
                      f"2 engines x 1 core, vllm-router {args.policy}")
    report = {"rows": rows, "cores": cores, "seconds": round(time.monotonic() - started, 1),
              "router": subprocess.run([args.router, "--version"], capture_output=True,
                                       text=True).stdout.strip() or "vllm-router"}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{'setup':45} {'users':>5} {'tok/s':>8} {'per user':>8} {'p95 TTFT':>9}")
        for r in rows:
            print(f"{r['setup']:45} {r['users']:5} {r['agg_tok_s'] or 0:8.1f} "
                  f"{r['per_user_tok_s'] or 0:8.1f} {r['ttft_s_p95'] or 0:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
