"""Start, stop and watch one local vLLM server, described by a named profile.

A server is one or two process groups (vLLM's, and the gateway's with a gateway profile),
started and stopped by `labs.serving.processes`. Its pids, their start times, its profile and URL
are written to `<LABS_HOME>/run/port-<PORT>/server.json` (`labs.serving.record`), next to
`server.log`, so that `python -m labs stop` in another shell, or the next notebook, can find
it. We only ever signal a pid that the file names, whose start time still matches, and whose
command line is still what we started.

The record is owned: it is deleted by the server object that wrote it, by `python -m labs
stop`, or when every process it names (the gateway included) is gone, never because the
engine alone has died while the gateway still holds the public port. Starts on one port are
serialised by a lock, so two notebooks starting at once get one server.

Three ways to own a server:
- `VLLMServer(profile)` used as a context manager (tests): stopped on exit, at interpreter
  exit, and by a watchdog if this process is killed.
- `ensure_server(profile)` (notebooks): detached so the next notebook can reuse it, owned by
  LABS_OWNER_PID (`make lab`, the test session) or else by the calling kernel; a watchdog
  stops it when its owner dies.
- `serve(profile)` (the CLI `python -m labs serve`): detached with no owner; it outlives the
  command that started it and is stopped by `python -m labs stop`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from enum import Enum
from pathlib import Path

from ..errors import ConfigError, ServerAlreadyRunning
from ..settings import Settings
from . import cpu_model, processes
from .commands import (
    API_SERVER_MODULE,
    SERVER_KEEP_ALIVE_S,
    engine_command,
    engine_env,
    gateway_command,
    gateway_env,
    served_model_name,
)
from .processes import spawn_logged
from .profiles import DEFAULT_PROFILE, get_profile, same_engine
from .record import (
    GATEWAY_MODULE,
    ServerRecord,
    log_path,
    read_record,
    record_path,
    running_server,
    setup_name,
    write_record,
)
from .startup import (
    check_port_free,
    default_start_timeout,
    free_port,
    likely_cause,
    log_tail,
    wait_healthy,
)

# The names other modules, tests and notebooks reach through labs.server (some now live in
# labs.serving.commands, labs.serving.record and labs.serving.startup, which it re-exports).
__all__ = [
    "API_SERVER_MODULE", "GATEWAY_MODULE", "OWNER_ENV", "SERVER_KEEP_ALIVE_S", "ServerRecord",
    "already_running_message",
    "State", "VLLMServer", "check_port_free", "default_owner", "default_start_timeout",
    "engine_command", "engine_env", "ensure_server", "free_port", "gateway_command",
    "gateway_env", "likely_cause", "log_path", "log_tail", "running_server", "serve",
    "served_model_name", "spawn_logged", "start_lock", "stop", "stop_group", "wait_healthy",
]

OWNER_ENV = "LABS_OWNER_PID"  # the process that owns the servers ensure_server starts


# --------------------------------------------------------------------------------------------
# The server object


class State(Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class VLLMServer:
    """One vLLM server (and its gateway, with a gateway profile) started from a profile; a
    context manager.

    Starting twice is an error; stopping twice is fine. With `detach=True` the process
    outlives this Python process (used by `serve` and `ensure_server`); `owner_pid` names the
    process whose death stops it (default: this one unless detached).
    """

    def __init__(self, profile: str = DEFAULT_PROFILE, settings: Settings | None = None,
                 *, detach: bool = False, owner_pid: int | None = None,
                 extra_flags: tuple[str, ...] = ()) -> None:
        self.state = State.NEW
        self.profile = get_profile(profile)
        self.extra_flags = tuple(extra_flags)
        self.settings = settings or Settings.from_env()
        if self.settings.base_url_override:
            raise ConfigError(
                "LABS_BASE_URL points at a remote server; unset it to start a local one."
            )
        self.detach = detach
        self.owner_pid = owner_pid if owner_pid is not None or detach else os.getpid()
        self.record: ServerRecord | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._gateway: subprocess.Popen[bytes] | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, timeout_s: float | None = None, progress: bool = True) -> VLLMServer:
        if self.state is not State.NEW:
            raise ConfigError(f"this server object is {self.state.value}; make a new one.")
        s = self.settings
        with start_lock(s):
            existing = running_server(s)
            if existing:
                raise ServerAlreadyRunning(already_running_message(existing))
            gateway_flags = self.profile.gateway(s.backend)
            # Behind a gateway the engine takes the next port and the gateway the public one.
            engine_settings = replace(s, port=s.port + 1) if gateway_flags else s
            check_port_free(s.host, s.port)
            if gateway_flags:
                check_port_free(s.host, engine_settings.port)
            model_path = self._model_path()
            s.run_dir.mkdir(parents=True, exist_ok=True)
            log = log_path(s)
            cmd = engine_command(self.profile, engine_settings, model_path) + list(
                self.extra_flags)
            self._proc = spawn_logged(cmd, log, engine_env(s))
            self.record = ServerRecord(
                pid=self._proc.pid, pgid=self._proc.pid, profile=self.profile.name,
                backend=s.backend, base_url=s.base_url, served_model=served_model_name(s),
                model_path=model_path, log_path=str(log), started_at=time.time(),
                engine_url=engine_settings.base_url if gateway_flags else None,
                pid_started=processes.start_time(self._proc.pid), owner_pid=self.owner_pid,
                extra_flags=self.extra_flags,
            )
            self._write_record()
            self.state = State.RUNNING
            if not self.detach:
                atexit.register(self.stop)
            try:
                self._start_watchdog()
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
        write_record(self.settings, self.record)

    def _start_watchdog(self) -> None:
        """Stop this server when its owner dies, however it dies (labs.serving.processes)."""
        if self.owner_pid is None:
            return
        assert self.record is not None
        dog = processes.start_watchdog(self.owner_pid, record_path(self.settings),
                                       self.record.pgid,
                                       self.settings.run_dir / "watchdog.log")
        if dog is not None:
            self.record = replace(self.record, watchdog_pid=dog.pid)
            self._write_record()

    def _start_gateway(self, upstream: str, progress: bool) -> None:
        s = self.settings
        glog = s.run_dir / "gateway.log"
        cmd = gateway_command(self.profile, s, upstream)
        gateway = self._gateway = spawn_logged(cmd, glog, gateway_env(s))
        assert self.record is not None
        self.record = replace(self.record, gateway_pid=gateway.pid,
                              gateway_started=processes.start_time(gateway.pid),
                              gateway_log_path=str(glog))
        self._write_record()
        wait_healthy(s.base_url, 60.0, alive=lambda: gateway.poll() is None,
                     log=glog, progress=progress, what="the gateway")

    def stop(self) -> None:
        """Stop the gateway, then the engine: each group is SIGTERMed, and stop returns as
        soon as it is gone (SIGKILL after a grace period). The record is deleted only if it
        is still this server's own."""
        if self.state is not State.RUNNING or self.record is None:
            return
        stop_group(self.record, self._proc, self._gateway)
        on_disk = read_record(self.settings)
        if on_disk is not None and (on_disk.pid, on_disk.pid_started) == (
                self.record.pid, self.record.pid_started):
            record_path(self.settings).unlink(missing_ok=True)
        self.state = State.STOPPED

    def __enter__(self) -> VLLMServer:
        return self.start() if self.state is State.NEW else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------
    def _model_path(self) -> str:
        if self.settings.backend == "cpu":
            return str(cpu_model.ensure_model(self.settings.models_dir))
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


def already_running_message(record: ServerRecord) -> str:
    """What `start` says when this port is taken by a course server: which one, and what to do
    (a gateway whose engine has died says so, since `/health` still answers)."""
    if not record.engine_running():
        return (f"the gateway of a {record.profile!r} server (pid {record.gateway_pid}) still "
                f"holds {record.base_url}, but its vLLM engine (pid {record.pid}) has exited "
                f"(see {record.log_path}); stop it with `python -m labs stop`.")
    return (f"a vLLM server (profile {record.profile}, pid {record.pid}) is already running at "
            f"{record.base_url}; use it, or stop it with `python -m labs stop`.")


def stop_group(record: ServerRecord, proc: subprocess.Popen[bytes] | None = None,
               gateway: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the gateway (if any), then the engine, then the watchdog. The gateway goes first
    so that no new request reaches a dying engine. Only processes that are still the ones
    recorded are signalled."""
    if record.gateway_running():
        processes.stop_group(record.gateway_pid, gateway)  # type: ignore[arg-type]  # gateway_running() means the pid is set
    if record.engine_running() or proc is not None:
        processes.stop_group(record.pgid, proc)
    if record.watchdog_pid is not None and any(
            processes.is_running(record.watchdog_pid, module)
            for module in processes.WATCHDOG_MODULES):
        processes.stop_group(record.watchdog_pid, grace_s=5.0)


_held_locks: dict[Path, int] = {}


@contextlib.contextmanager
def start_lock(settings: Settings) -> Iterator[None]:
    """Hold this port's start lock: one start (or restart) at a time, across processes.
    Re-entrant within a process, so ensure_server can hold it around its own start."""
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    path = settings.run_dir / "start.lock"
    if path in _held_locks:
        _held_locks[path] += 1
        try:
            yield
        finally:
            _held_locks[path] -= 1
        return
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or we die
        _held_locks[path] = 1
        try:
            yield
        finally:
            del _held_locks[path]


# --------------------------------------------------------------------------------------------
# The verbs the CLI and notebooks use


def serve(profile: str = DEFAULT_PROFILE, settings: Settings | None = None,
          timeout_s: float | None = None, owner_pid: int | None = None,
          extra_flags: tuple[str, ...] = ()) -> ServerRecord:
    """Start a detached server and return its record once /health answers. With
    `owner_pid`, it is stopped when that process dies; without, only by `stop`."""
    server = VLLMServer(profile, settings, detach=True, owner_pid=owner_pid,
                        extra_flags=extra_flags).start(timeout_s)
    assert server.record is not None
    return server.record


def stop(settings: Settings | None = None) -> ServerRecord | None:
    """Stop the server recorded for this port; None when nothing was running."""
    settings = settings or Settings.from_env()
    record = running_server(settings)
    if record is None:
        return None
    stop_group(record)
    record_path(settings).unlink(missing_ok=True)
    return record


def default_owner() -> int:
    """Who owns the servers ensure_server starts: LABS_OWNER_PID (`make lab`, the test
    session), else this process (a notebook kernel started by hand)."""
    value = os.environ.get(OWNER_ENV, "")
    return int(value) if value.isdigit() else os.getpid()


def ensure_server(profile: str = DEFAULT_PROFILE, settings: Settings | None = None,
                  timeout_s: float | None = None, *,
                  extra_flags: tuple[str, ...] = ()) -> ServerRecord | None:
    """The server a notebook needs: reuse the running one if it has `profile` (and exactly
    these `extra_flags`, engine flags beyond the profile's), else restart this port's server
    with them.

    With LABS_BASE_URL set (a server somebody else runs, e.g. on a cluster) there is nothing
    to start or restart here: returns None, and the caller uses that server as it is.

    The new server is detached and recorded in the pid file, so the next notebook reuses it;
    it is owned by `default_owner()` and stopped when that process dies, or by
    `python -m labs stop`.
    """
    settings = settings or Settings.from_env()
    get_profile(profile)
    if settings.base_url_override:
        print(f"LABS_BASE_URL is set: using {settings.base_url} as it is (its profile and log "
              "are wherever it runs)", file=sys.stderr)
        return None
    with start_lock(settings):  # a second notebook starting now waits, then reuses
        wanted = setup_name(profile, extra_flags)
        record = running_server(settings)
        if record and record.engine_running() and same_engine(
                record.profile, record.extra_flags, profile, extra_flags, record.backend):
            if record.setup != wanted:
                print(f"reusing the {record.setup!r} server (pid {record.pid}) for {wanted!r}: "
                      "the same engine flags", file=sys.stderr)
            return record
        if record:
            print(f"stopping the {record.setup!r} server (pid {record.pid}) to start "
                  f"{wanted!r}", file=sys.stderr)
            stop(settings)
        return serve(profile, settings, timeout_s, owner_pid=default_owner(),
                     extra_flags=tuple(extra_flags))
