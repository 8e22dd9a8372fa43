"""The gateway as a supervised subprocess (tests, benchmarks): start, wait, stop, with the
process supervisor the engine uses (labs.serving.processes)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from ..errors import GatewayError, PortInUse
from ..serving import processes
from ..serving.startup import check_port_free, log_tail
from .cli import port_taken
from .config import API_KEY_ENV, GatewayConfig

STOP_GRACE_S = 10.0


def start_gateway_process(config: GatewayConfig, port: int, log_path: str | Path,
                          host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """Start `python -m labs.gateway` detached, in its own session (so that stopping its
    process group stops exactly it), with stdout and stderr in `log_path`.

    Raises PortInUse at once if the port is taken; then `wait_gateway_healthy`.
    """
    try:
        check_port_free(host, port)
    except PortInUse:
        raise PortInUse(port_taken(host, port)) from None
    cmd = [sys.executable, "-m", "labs.gateway", *config.to_args(), f"--host={host}",
           f"--port={port}"]
    env = processes.course_env(PYTHONUNBUFFERED="1")
    env.pop(API_KEY_ENV, None)
    if config.api_key:
        env[API_KEY_ENV] = config.api_key
    return processes.spawn_logged(cmd, Path(log_path), env)


def wait_gateway_healthy(url: str, timeout_s: float, *,
                         proc: subprocess.Popen[bytes] | None = None,
                         log_path: str | Path | None = None) -> float:
    """Poll the gateway's GET /livez until 200; return the seconds it took.

    Raises GatewayError if `proc` exits first (with its log tail) or after `timeout_s`.
    """
    url = url.rstrip("/")
    start = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while True:
            elapsed = time.monotonic() - start
            try:
                if client.get(url + "/livez").status_code == 200:
                    return elapsed
            except httpx.HTTPError:
                pass
            if proc is not None and proc.poll() is not None:
                tail = log_tail(log_path) if log_path else ""
                raise GatewayError(
                    f"the gateway exited with code {proc.returncode} during start-up"
                    + (f"; see {log_path}" if log_path else "")
                    + (f"\n--- last log lines ---\n{tail}" if tail else ""))
            if elapsed > timeout_s:
                raise GatewayError(f"the gateway did not answer {url}/livez within "
                                   f"{timeout_s:g} s" + (f"; see {log_path}." if log_path
                                                         else "."))
            time.sleep(0.1)


def stop_gateway_process(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the gateway's process group, SIGKILL it after `grace_s`; safe to call twice."""
    if proc.poll() is None:
        processes.stop_group(proc.pid, proc, grace_s)
