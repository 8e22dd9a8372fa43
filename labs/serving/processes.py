"""Start, watch and stop the course's server processes: one supervisor for vLLM and the gateway.

Each server runs in a session of its own, so its process group is exactly it and its children
(vLLM's API server spawns an engine-core and a worker). We signal the group, never one pid, and
only a pid whose start time still matches the one we recorded: a pid number is recycled, its
start time is not.

A server with an owner also gets a watchdog (`python -m labs.serving.processes watch`), a tiny
process of its own that stops the server's groups when the owner dies however it dies
(SIGKILL, an out-of-memory kill, a closed terminal), so that a killed notebook kernel or test
session never leaves vLLM holding the cores and the port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STOP_GRACE_S = 30.0
WATCH_INTERVAL_S = 1.0


def spawn_logged(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own session (so its whole process group can be stopped), with the
    command line and then all its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as log_file:
        log_file.write(("$ " + " ".join(cmd) + "\n").encode())
        log_file.flush()
        return subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def course_env(**extra: str) -> dict[str, str]:
    """This environment, plus `extra`, with the course's root on PYTHONPATH, so that
    `python -m labs.<module>` runs from a bare checkout too (not installed)."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (which may hold spaces), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (/proc/<pid>/stat field 22); None
    without /proc or when no such process runs. Together with the pid it names one process."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def is_running(pid: int, module: str, started: int | None = None) -> bool:
    """Is `pid` alive (not a zombie), running `module`, and (if given) the process that
    started at `started`? Guards every signal we send against a recycled pid."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc (macOS): trust the record, the process is alive
    if fields[0] in ("Z", "X"):
        return False
    if started is not None and len(fields) > 19 and int(fields[19]) != started:
        return False
    return module in _command_line(pid)


def _command_line(pid: int, settle_s: float = 0.5) -> str:
    """/proc/<pid>/cmdline, waiting up to `settle_s` while it reads empty: a process caught
    inside exec (the parent's Popen has returned, the new program's arguments are not mapped
    yet) shows an empty command line for a moment, and must not be taken for a stranger."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""
        if line or time.monotonic() >= deadline:
            return line
        time.sleep(0.01)


def reap(pid: int) -> None:
    """Collect `pid`'s exit status if it is our child: an unreaped child stays a zombie, and
    a zombie still answers signals, so its group would look alive for the whole grace period
    (30 s lost per restart before this)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_members(pgid: int) -> list[int] | None:
    """Live (not zombie) pids of process group `pgid`, read from /proc; None without /proc."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        # state ppid pgrp ...
        if fields and len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    """Does any process of group `pgid` still run? Zombies count as gone."""
    reap(pgid)
    members = group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, proc: subprocess.Popen[bytes] | None = None,
               grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the group, return as soon as it is gone; SIGKILL what is left after `grace_s`.
    Safe to call twice and on a group that is already gone."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()  # reap our own child so the group can empty
        if not group_alive(pgid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# The watchdog


# The watchdog's module, and the one a watchdog started before labs/ was split into packages
# runs (its server may still be up: `labs stop` stops that watchdog too).
WATCHDOG_MODULES = ("labs.serving.processes", "labs.processes")


def start_watchdog(owner_pid: int, record: Path, pgid: int,
                   log: Path) -> subprocess.Popen[bytes] | None:
    """Start a watchdog for the server whose record is `record` and whose engine group is
    `pgid`: when `owner_pid` dies it stops the groups the record names (the gateway too, once
    it is written there) and deletes the record. It exits by itself when the record is gone
    or names another server. None without /proc (the owner's start time cannot be pinned, so
    a recycled pid could fool it)."""
    owner_started = start_time(owner_pid)
    if owner_started is None:
        return None
    cmd = [sys.executable, "-m", WATCHDOG_MODULES[0], "watch", f"--owner={owner_pid}",
           f"--owner-started={owner_started}", f"--record={record}", f"--pgid={pgid}"]
    return spawn_logged(cmd, log, course_env())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def watch(owner_pid: int, owner_started: int, record: Path, pgid: int,
          interval_s: float = WATCH_INTERVAL_S) -> str:
    """Block until the owner dies (then stop the server) or the server is gone; say which."""
    while True:
        data = _read_json(record)
        if data is None or data.get("pgid") != pgid:
            return "the server's record is gone or names another server: nothing to do"
        if not is_running(owner_pid, "", owner_started):  # gone, a zombie, or a new pid
            break
        time.sleep(interval_s)
    # The gateway first, so no new request reaches a dying engine; each only if it is still
    # the process the record names (or its group outlived its leader).
    for pid, started in ((data.get("gateway_pid"), data.get("gateway_started")),
                         (pgid, data.get("pid_started"))):
        if isinstance(pid, int) and start_time(pid) in (started, None):
            stop_group(pid)
    if (_read_json(record) or {}).get("pgid") == pgid:
        record.unlink(missing_ok=True)
    return f"owner {owner_pid} died; stopped the server of {record}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.serving.processes")
    verbs = parser.add_subparsers(dest="verb", required=True)
    w = verbs.add_parser("watch", help="stop a recorded server when its owner dies")
    w.add_argument("--owner", type=int, required=True)
    w.add_argument("--owner-started", type=int, required=True)
    w.add_argument("--record", type=Path, required=True)
    w.add_argument("--pgid", type=int, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped with its server: quietly
    print(watch(args.owner, args.owner_started, args.record, args.pgid), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
