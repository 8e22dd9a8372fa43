"""Starting a server and waiting for it: free ports, the health poll, and a failed start's
log turned into the one cause a learner can fix."""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from ..errors import PortInUse, ServerDied, ServerStartTimeout

LOG_TAIL_LINES = 25


def default_start_timeout(backend: str) -> float:
    """CPU: ~35 s eager, up to ~2 min compiled. GPU: a first run downloads ~15 GB."""
    return 300.0 if backend == "cpu" else 1800.0


def log_tail(path: Path | str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# What a start-up log says when it dies of something a learner can fix: (pattern, advice).
# The log's last lines are shown anyway; this names the cause in words first.
_KNOWN_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), advice) for pattern, advice in (
        (r"CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks"
         r"|larger than the available KV cache memory",
         "out of GPU memory: pick a smaller model (LABS_MODEL=Qwen/Qwen2.5-3B-Instruct), or "
         "free the GPU (`nvidia-smi` shows who holds it)"),
        (r"Cannot allocate memory|MemoryError|std::bad_alloc",
         "out of RAM: the CPU server needs ~3 GiB free (model + a 2 GiB KV pool); close "
         "other programs"),
        (r"No CUDA GPUs are available|Found no NVIDIA driver|Failed to infer device type"
         r"|CUDA driver version is insufficient",
         "no usable GPU: check `nvidia-smi`, or run on the CPU with LABS_BACKEND=cpu"),
        (r"Address already in use",
         "the port is taken: stop what listens there, or set LABS_PORT to another port"),
        (r"Repository Not Found|couldn't connect to 'https://huggingface.co'"
         r"|LocalEntryNotFoundError|gated repo",
         "the model could not be downloaded: check LABS_MODEL, your network, and HF_TOKEN "
         "for gated models"),
    ))


def likely_cause(log_text: str) -> str | None:
    """The first known cause of a failed start in `log_text`, in words, or None."""
    for pattern, advice in _KNOWN_CAUSES:
        if pattern.search(log_text):
            return advice
    return None



def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it), for tests and benchmarks."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise PortInUse when another program listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PortInUse(
                f"port {port} on {host} is already in use by another program; stop it, or "
                f"pick another port, e.g. `LABS_PORT={port + 1} python -m labs serve`."
            ) from None


def wait_healthy(
    base_url: str,
    timeout_s: float,
    *,
    alive: Callable[[], bool] = lambda: True,
    log: Path | None = None,
    progress: bool = True,
    what: str = "vLLM",
) -> float:
    """Poll GET /health until 200; return the seconds it took.

    Raises ServerDied (with the log tail) if `alive()` turns false, ServerStartTimeout after
    `timeout_s`. A progress line is written to stderr so a learner sees it is working.
    """
    start = time.monotonic()
    last_note = 0.0
    interactive = sys.stderr.isatty()
    with httpx.Client(timeout=2.0) as client:
        while True:
            elapsed = time.monotonic() - start
            try:
                if client.get(base_url + "/health").status_code == 200:
                    if progress:
                        print(f"\r{what} is ready at {base_url} after {elapsed:.0f} s" + " " * 10,
                              file=sys.stderr)
                    return elapsed
            except httpx.HTTPError:
                pass
            if not alive():
                cause = likely_cause(log_tail(log, 400)) if log else None
                raise ServerDied(
                    f"{what} exited during start-up after {elapsed:.0f} s"
                    + (f"; likely cause: {cause}" if cause else "")
                    + f". See {log} for the whole log.",
                    log_tail(log) if log else "",
                )
            if elapsed > timeout_s:
                raise ServerStartTimeout(
                    f"{what} did not answer {base_url}/health within {timeout_s:.0f} s; it may "
                    f"still be loading (look at {log}), or raise the timeout."
                )
            if progress and (interactive or elapsed - last_note >= 10):
                end = "" if interactive else "\n"
                print(f"\rwaiting for {what} at {base_url} ... {elapsed:3.0f} s (log: {log})",
                      end=end, file=sys.stderr, flush=True)
                last_note = elapsed
            time.sleep(0.5)
