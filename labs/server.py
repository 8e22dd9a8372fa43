"""Start, stop and watch one local vLLM server, described by a named profile.

A server is a process group: vLLM's API server spawns an engine-core and a worker process,
so we start it in its own session and always signal the whole group (a SIGKILL to the API
server alone would orphan the other two). Its pid, group id, profile and URL are written to
`<LABS_HOME>/run/port-<PORT>/server.json`, next to `server.log`, so that `python -m labs stop`
in another shell, or the next notebook, can find it. We only ever signal a pid that the file
names *and* whose command line is still a vLLM API server.

Two ways to own a server:
- `VLLMServer(profile)` used as a context manager (tests, notebooks): stopped on exit and,
  as a last resort, at interpreter exit.
- `serve(profile)` (the CLI, `make lab`): detached; it outlives the command that started it
  and is stopped by `python -m labs stop`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

import httpx

from . import embedded
from .errors import (
    ConfigError,
    PortInUse,
    ServerAlreadyRunning,
    ServerDied,
    ServerStartTimeout,
)
from .profiles import DEFAULT_PROFILE, Profile, get_profile
from .settings import Settings

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
STOP_GRACE_S = 30.0
LOG_TAIL_LINES = 25
# How long the servers the course starts (vLLM, the gateway) keep an idle connection open;
# uvicorn's default is 5 s. Our clients never close one themselves, so only the server ever
# does, after this long (nginx's default); labs.connections says why that matters.
SERVER_KEEP_ALIVE_S = 75


def default_start_timeout(backend: str) -> float:
    """CPU: ~35 s eager, up to ~2 min compiled. GPU: a first run downloads ~15 GB."""
    return 300.0 if backend == "cpu" else 1800.0


@dataclass(frozen=True)
class ServerRecord:
    """What the pid file says about a running server."""

    pid: int
    pgid: int
    profile: str
    backend: str
    base_url: str
    served_model: str
    model_path: str
    log_path: str
    started_at: float
    # With a gateway profile: the gateway answers on base_url, the engine on engine_url.
    engine_url: str | None = None
    gateway_pid: int | None = None
    gateway_log_path: str | None = None

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def metrics_url(self) -> str:
        """Where the *engine's* /metrics is (behind a gateway, not the public URL)."""
        return self.engine_url or self.base_url


# --------------------------------------------------------------------------------------------
# Building the command


def _cpu_thread_env() -> dict[str, str]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        cpus = list(range(os.cpu_count() or 1))
    bind = ",".join(str(c) for c in cpus)
    # Bind vLLM's OpenMP threads to every core we have and reserve none for the API server:
    # on a 2-core machine that is what reproduces the batching curve (DESIGN.md).
    return {"VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def served_model_name(settings: Settings) -> str:
    return embedded.MODEL_NAME if settings.backend == "cpu" else settings.gpu_model


def engine_command(profile: Profile, settings: Settings, model_path: str) -> list[str]:
    """The full vLLM command line: the article's base flags, then the profile's flags."""
    base = [
        sys.executable, "-m", API_SERVER_MODULE,
        f"--model={model_path}",
        f"--served-model-name={served_model_name(settings)}",
        f"--download-dir={settings.models_dir / 'hub'}",
        # --api-key is passed as VLLM_API_KEY in the environment, so it never shows in `ps`.
        f"--host={settings.host}",
        f"--port={settings.port}",
    ]
    return base + list(profile.flags(settings.backend))


def gateway_command(profile: Profile, settings: Settings, upstream: str) -> list[str]:
    """`python -m labs.gateway` on the public port, in front of the engine at `upstream`."""
    flags = profile.gateway(settings.backend)
    if flags is None:
        raise ConfigError(f"profile {profile.name!r} has no gateway.")
    return [sys.executable, "-m", "labs.gateway", f"--upstream={upstream}", *flags,
            f"--host={settings.host}", f"--port={settings.port}"]


def engine_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VLLM_API_KEY=settings.api_key,
        VLLM_NO_USAGE_STATS="1",
        VLLM_HTTP_TIMEOUT_KEEP_ALIVE=str(SERVER_KEEP_ALIVE_S),
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    if settings.backend == "cpu":
        env.update(_cpu_thread_env())
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


# --------------------------------------------------------------------------------------------
# The pid file


def _record_path(settings: Settings) -> Path:
    return settings.run_dir / "server.json"


def log_path(settings: Settings) -> Path:
    return settings.run_dir / "server.log"


def spawn_logged(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session (so its whole process group can be stopped), with the
    command line and then all its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as log_file:
        log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        log_file.flush()
        return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _is_vllm_process(pid: int, module: str = API_SERVER_MODULE) -> bool:
    """Is `pid` alive and running `module` (the vLLM API server, or the gateway)?
    Guards against signalling a recycled pid that now belongs to somebody else."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return module in cmdline.read_bytes().decode(errors="replace")
        except OSError:
            return False
    return True  # no /proc (macOS): trust the pid file, the process is alive


def running_server(settings: Settings | None = None) -> ServerRecord | None:
    """The server recorded for this port, if it is still alive; a stale file is removed."""
    settings = settings or Settings.from_env()
    path = _record_path(settings)
    try:
        record = ServerRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if _is_vllm_process(record.pid):
        if record.gateway_pid is not None and not _is_vllm_process(record.gateway_pid,
                                                                    "labs.gateway"):
            record = replace(record, gateway_pid=None)  # do not signal a recycled pid
        return record
    path.unlink(missing_ok=True)
    return None


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


# --------------------------------------------------------------------------------------------
# Checks and waits


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


def _reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is our child: an unreaped child stays a zombie, and
    a zombie still answers signals, so its group would look alive for the whole grace period
    (30 s lost per restart before this)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (another shell started it): its parent or init reaps it


def _group_members(pgid: int) -> list[int] | None:
    """Live (not zombie) pids of process group `pgid`, read from /proc; None without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ")"
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    """Does any process of group `pgid` still run? Zombies count as gone."""
    _reap(pgid)
    members = _group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


# --------------------------------------------------------------------------------------------
# The server object


class State(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class VLLMServer:
    """One vLLM process group started from a profile; a context manager.

    Starting twice is an error; stopping twice is fine. With `detach=True` the process
    outlives this Python process (used by `python -m labs serve`).
    """

    def __init__(self, profile: str = DEFAULT_PROFILE, settings: Settings | None = None,
                 *, detach: bool = False) -> None:
        self.state = State.NEW
        self.profile = get_profile(profile)
        self.settings = settings or Settings.from_env()
        if self.settings.base_url_override:
            raise ConfigError(
                "LABS_BASE_URL points at a remote server; unset it to start a local one."
            )
        self.detach = detach
        self.record: ServerRecord | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._gateway: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout_s: float | None = None, progress: bool = True) -> "VLLMServer":
        if self.state is not State.NEW:
            raise ConfigError(f"this server object is {self.state.value}; make a new one.")
        s = self.settings
        existing = running_server(s)
        if existing:
            raise ServerAlreadyRunning(
                f"a vLLM server (profile {existing.profile}, pid {existing.pid}) is already "
                f"running at {existing.base_url}; use it, or stop it with `python -m labs stop`."
            )
        gateway_flags = self.profile.gateway(s.backend)
        # Behind a gateway the engine takes the next port and the gateway the public one.
        engine_settings = replace(s, port=s.port + 1) if gateway_flags else s
        check_port_free(s.host, s.port)
        if gateway_flags:
            check_port_free(s.host, engine_settings.port)
        model_path = self._model_path()
        s.run_dir.mkdir(parents=True, exist_ok=True)
        log = log_path(s)
        cmd = engine_command(self.profile, engine_settings, model_path)
        self._proc = spawn_logged(cmd, log, engine_env(s))
        self.record = ServerRecord(
            pid=self._proc.pid, pgid=self._proc.pid, profile=self.profile.name,
            backend=s.backend, base_url=s.base_url, served_model=served_model_name(s),
            model_path=model_path, log_path=str(log), started_at=time.time(),
            engine_url=engine_settings.base_url if gateway_flags else None,
        )
        self._write_record()
        self.state = State.RUNNING
        if not self.detach:
            atexit.register(self.stop)
        try:
            wait_healthy(
                engine_settings.base_url, timeout_s or default_start_timeout(s.backend),
                alive=lambda: self._proc is not None and self._proc.poll() is None,
                log=log, progress=progress,
            )
            if gateway_flags:
                self._start_gateway(engine_settings.base_url, progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_record(self) -> None:
        assert self.record is not None
        _record_path(self.settings).write_text(json.dumps(asdict(self.record), indent=2))

    def _start_gateway(self, upstream: str, progress: bool) -> None:
        s = self.settings
        glog = s.run_dir / "gateway.log"
        cmd = gateway_command(self.profile, s, upstream)
        self._gateway = spawn_logged(cmd, glog, {**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.record is not None
        self.record = replace(self.record, gateway_pid=self._gateway.pid,
                              gateway_log_path=str(glog))
        self._write_record()
        wait_healthy(s.base_url, 60.0, alive=lambda: self._gateway.poll() is None,
                     log=glog, progress=progress, what="the gateway")

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after a grace period."""
        if self.state is not State.RUNNING or self.record is None:
            return
        stop_group(self.record, self._proc, self._gateway)
        _record_path(self.settings).unlink(missing_ok=True)
        self.state = State.STOPPED

    def __enter__(self) -> "VLLMServer":
        return self.start() if self.state is State.NEW else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------
    def _model_path(self) -> str:
        if self.settings.backend == "cpu":
            return str(embedded.ensure_model(self.settings.models_dir))
        return self.settings.gpu_model

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def log_path(self) -> Path:
        return log_path(self.settings)

    def __repr__(self) -> str:
        return (f"VLLMServer(profile={self.profile.name!r}, state={self.state.value}, "
                f"url={self.base_url!r})")


def stop_group(record: ServerRecord, proc: subprocess.Popen[bytes] | None = None,
               gateway: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the gateway (if any), then the engine: SIGTERM each process group, wait, SIGKILL
    whatever is left. The gateway goes first so no new request reaches a dying engine."""
    if record.gateway_pid is not None:
        _stop_pgid(record.gateway_pid, gateway)
    _stop_pgid(record.pgid, proc)


def _stop_pgid(pgid: int, proc: subprocess.Popen[bytes] | None) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()  # reap our own child so the group can empty
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc is not None:
        proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# The verbs the CLI and notebooks use


def serve(profile: str = DEFAULT_PROFILE, settings: Settings | None = None,
          timeout_s: float | None = None) -> ServerRecord:
    """Start a detached server and return its record once /health answers."""
    server = VLLMServer(profile, settings, detach=True).start(timeout_s)
    assert server.record is not None
    return server.record


def stop(settings: Settings | None = None) -> ServerRecord | None:
    """Stop the server recorded for this port; None when nothing was running."""
    settings = settings or Settings.from_env()
    record = running_server(settings)
    if record is None:
        return None
    stop_group(record)
    _record_path(settings).unlink(missing_ok=True)
    return record


def ensure_server(profile: str = DEFAULT_PROFILE, settings: Settings | None = None,
                  timeout_s: float | None = None) -> ServerRecord | None:
    """The server a notebook needs: reuse the running one if it has `profile`, else
    restart this port's server with `profile`.

    With LABS_BASE_URL set (a server somebody else runs, e.g. on a cluster) there is nothing
    to start or restart here: returns None, and the caller uses that server as it is.

    The new server is detached and recorded in the pid file, like `python -m labs serve`:
    whoever owns this port (`make lab`, the test session, `python -m labs stop`) stops it.
    """
    settings = settings or Settings.from_env()
    get_profile(profile)
    if settings.base_url_override:
        print(f"LABS_BASE_URL is set: using {settings.base_url} as it is (its profile and log "
              "are wherever it runs)", file=sys.stderr)
        return None
    record = running_server(settings)
    if record and record.profile == profile:
        return record
    if record:
        print(f"stopping the {record.profile!r} server (pid {record.pid}) to start "
              f"{profile!r}", file=sys.stderr)
        stop(settings)
    return serve(profile, settings, timeout_s)
