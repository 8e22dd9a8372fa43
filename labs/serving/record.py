"""The pid file of one local server: `<LABS_HOME>/run/port-<PORT>/server.json`.

`ServerRecord` is what the file says (pids, their start times, profile, URLs, owner), read,
written and checked here; `labs.serving.server` starts and stops the processes it names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..settings import Settings
from . import processes
from .commands import API_SERVER_MODULE

GATEWAY_MODULE = "labs.gateway"


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
    # Start times (labs.serving.processes.start_time) pin each pid to the process we started.
    pid_started: int | None = None
    gateway_started: int | None = None
    owner_pid: int | None = None  # whose death stops it (None: stopped only by `labs stop`)
    watchdog_pid: int | None = None
    # Engine flags beyond the profile's (notebook 05 derives one from a measurement).
    extra_flags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_flags", tuple(self.extra_flags))  # a list in JSON

    @property
    def setup(self) -> str:
        """The profile, and any extra flags: what `ensure_server` compares to reuse it."""
        return setup_name(self.profile, self.extra_flags)

    def engine_running(self) -> bool:
        return processes.is_running(self.pid, API_SERVER_MODULE, self.pid_started)

    def gateway_running(self) -> bool:
        return self.gateway_pid is not None and processes.is_running(
            self.gateway_pid, GATEWAY_MODULE, self.gateway_started)

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def metrics_url(self) -> str:
        """Where the *engine's* /metrics is (behind a gateway, not the public URL)."""
        return self.engine_url or self.base_url


def setup_name(profile: str, extra_flags: tuple[str, ...] = ()) -> str:
    """A server's profile and any engine flags beyond it, as one name (`ServerRecord.setup`)."""
    return " ".join((profile, *extra_flags))


def record_path(settings: Settings) -> Path:
    return settings.run_dir / "server.json"


def log_path(settings: Settings) -> Path:
    return settings.run_dir / "server.log"


def read_record(settings: Settings) -> ServerRecord | None:
    path = record_path(settings)
    try:
        return ServerRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: nobody can act on it
        return None


def write_record(settings: Settings, record: ServerRecord) -> None:
    path = record_path(settings)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(record), indent=2))
    temporary.replace(path)  # whole or absent, never half-written, for its readers


def running_server(settings: Settings | None = None) -> ServerRecord | None:
    """The server recorded for this port while any process it names still runs.

    The file is removed only when every one is gone: an engine that died while its gateway
    still holds the public port is still a server to report and to stop (with its dead
    engine's pid kept so `stop` can be told apart). A gateway pid that no longer runs our
    gateway is dropped from the answer, so nobody signals a recycled pid.
    """
    settings = settings or Settings.from_env()
    record = read_record(settings)
    if record is None:
        return None
    engine, gateway = record.engine_running(), record.gateway_running()
    if not engine and not gateway:
        record_path(settings).unlink(missing_ok=True)
        return None
    return record if gateway or record.gateway_pid is None else replace(record, gateway_pid=None)
