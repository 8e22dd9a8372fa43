"""The server record is owned, starts are serialised, and a dead owner takes its server along.

These run stand-in processes (a Python that sleeps, with the module name the record checks in
its command line) instead of vLLM: what is under test is the bookkeeping around any process
group, and a real engine would cost a minute per case. The live stop time is measured in
tests/test_server.py against the real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from labs.serving import processes, server
from labs.settings import Settings


def _stand_in(module: str, log: Path) -> subprocess.Popen[bytes]:
    """A process group whose command line names `module`, as vLLM's or the gateway's does."""
    return processes.spawn_logged(
        [sys.executable, "-c", "import time; time.sleep(120)", module], log, dict(os.environ))


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LABS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LABS_PORT", "18555")
    monkeypatch.delenv("LABS_BASE_URL", raising=False)
    s = Settings.from_env()
    s.run_dir.mkdir(parents=True)
    return s


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every stand-in a test starts; all stopped at the end whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        processes.stop_group(proc.pid, proc, grace_s=2)


def _record(settings: Settings, engine: subprocess.Popen[bytes],
            gateway: subprocess.Popen[bytes] | None = None, **extra: object) -> server.ServerRecord:
    record = server.ServerRecord(
        pid=engine.pid, pgid=engine.pid, profile="gateway", backend="cpu",
        base_url=settings.base_url, served_model="m", model_path="/m",
        log_path=str(settings.run_dir / "server.log"), started_at=time.time(),
        pid_started=processes.start_time(engine.pid),
        gateway_pid=gateway.pid if gateway else None,
        gateway_started=processes.start_time(gateway.pid) if gateway else None, **extra)
    owner = server.VLLMServer("naive", settings)
    owner.record = record
    owner._write_record()
    return record


def test_a_record_is_kept_while_its_gateway_holds_the_port(settings: Settings, started,
                                                           tmp_path: Path) -> None:
    engine = _stand_in(server.API_SERVER_MODULE, tmp_path / "e.log")
    gateway = _stand_in(server.GATEWAY_MODULE, tmp_path / "g.log")
    started += [engine, gateway]
    _record(settings, engine, gateway)
    processes.stop_group(engine.pid, engine)  # the engine dies; the gateway lives on
    record = server.running_server(settings)
    assert record is not None and record.gateway_pid == gateway.pid
    assert not record.engine_running() and record.gateway_running()
    assert "has exited" in server.already_running_message(record)
    assert server.stop(settings) is not None  # `labs stop` still finds and stops the gateway
    assert not processes.group_alive(gateway.pid)
    assert server.running_server(settings) is None


def test_a_recycled_pid_is_not_taken_for_the_server(settings: Settings, started,
                                                    tmp_path: Path) -> None:
    engine = _stand_in(server.API_SERVER_MODULE, tmp_path / "e.log")
    started.append(engine)
    record = _record(settings, engine)
    assert server.running_server(settings) == record
    # Same pid and command line, another start time: somebody else's process now.
    stranger = replace(record, pid_started=(record.pid_started or 0) + 1)
    assert not stranger.engine_running()


def test_a_server_object_deletes_only_its_own_record(settings: Settings, started,
                                                     tmp_path: Path) -> None:
    mine = _stand_in(server.API_SERVER_MODULE, tmp_path / "mine.log")
    theirs = _stand_in(server.API_SERVER_MODULE, tmp_path / "theirs.log")
    started += [mine, theirs]
    obj = server.VLLMServer("naive", settings)
    obj.record = replace(_record(settings, mine), owner_pid=None)
    obj._proc, obj.state = mine, server.State.RUNNING
    _record(settings, theirs)  # another server has since taken the port's record
    obj.stop()
    assert not processes.group_alive(mine.pid)
    on_disk = server.running_server(settings)
    assert on_disk is not None and on_disk.pid == theirs.pid


def test_the_watchdog_stops_the_server_when_its_owner_is_killed(settings: Settings, started,
                                                               tmp_path: Path) -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    engine = _stand_in(server.API_SERVER_MODULE, tmp_path / "e.log")
    gateway = _stand_in(server.GATEWAY_MODULE, tmp_path / "g.log")
    started += [engine, gateway]
    record_path = settings.run_dir / "server.json"
    _record(settings, engine, gateway, owner_pid=owner.pid)
    dog = processes.start_watchdog(owner.pid, record_path, engine.pid, tmp_path / "dog.log")
    assert dog is not None
    started.append(dog)
    time.sleep(2 * processes.WATCH_INTERVAL_S)
    assert processes.group_alive(engine.pid), "the watchdog must not act while the owner lives"
    owner.kill()
    owner.wait()
    dog.wait(timeout=30)
    assert not processes.group_alive(engine.pid) and not processes.group_alive(gateway.pid)
    assert not record_path.exists()
    assert "owner" in (tmp_path / "dog.log").read_text()


def test_the_watchdog_leaves_when_the_server_is_stopped_normally(settings: Settings, started,
                                                                tmp_path: Path) -> None:
    engine = _stand_in(server.API_SERVER_MODULE, tmp_path / "e.log")
    started.append(engine)
    record_path = settings.run_dir / "server.json"
    _record(settings, engine, owner_pid=os.getpid())
    dog = processes.start_watchdog(os.getpid(), record_path, engine.pid, tmp_path / "dog.log")
    assert dog is not None
    started.append(dog)
    server.stop(settings)
    dog.wait(timeout=10)  # it exits on its own once the record is gone
    assert "nothing to do" in (tmp_path / "dog.log").read_text()


def test_one_start_at_a_time_on_a_port(settings: Settings) -> None:
    probe = ("import fcntl, sys; f = open(sys.argv[1], 'w')\n"
             "try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('free')\n"
             "except BlockingIOError:\n    print('held')")
    lock = settings.run_dir / "start.lock"

    def other_process_sees() -> str:
        return subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True,
                              text=True, check=True).stdout.strip()

    with server.start_lock(settings):
        with server.start_lock(settings):  # re-entrant: ensure_server holds it around start
            assert other_process_sees() == "held"
        assert other_process_sees() == "held"
    assert other_process_sees() == "free"


def test_a_process_caught_inside_exec_is_not_taken_for_a_stranger(
        tmp_path: Path, started, monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after Popen returns, the kernel may not have mapped the new program's arguments
    yet: /proc/<pid>/cmdline reads empty for a moment (seen once in CI). That is our process."""
    engine = _stand_in(server.API_SERVER_MODULE, tmp_path / "e.log")
    started.append(engine)
    real_read = Path.read_bytes
    reads: list[str] = []

    def empty_at_first(path: Path) -> bytes:
        if path.name == "cmdline":
            reads.append(str(path))
            if len(reads) <= 2:
                return b""
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", empty_at_first)
    assert processes.is_running(engine.pid, server.API_SERVER_MODULE)
    assert len(reads) == 3
    monkeypatch.setattr(Path, "read_bytes", lambda path: b"")
    assert not processes.is_running(engine.pid, server.API_SERVER_MODULE)
