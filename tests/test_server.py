"""Server lifecycle and every bad input the foundation issue names.

Fast cases need no vLLM at all (they fail before launching); `test_server_dying_*` launches
the real vLLM module with a flag it rejects; the `server`-marked ones use the session's live
server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import labs
from labs.serving import cpu_model, processes, server


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    return subprocess.run([sys.executable, "-m", "labs", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def isolated(tmp_path: Path, free_port: int) -> dict[str, str]:
    """Environment for a CLI call with its own run dir and port, sharing the built model."""
    models = labs.Settings.from_env().models_dir
    home = tmp_path / "home"
    (home).mkdir()
    (home / "models").symlink_to(models, target_is_directory=True)
    return {"LABS_HOME": str(home), "LABS_PORT": str(free_port), "LABS_BASE_URL": ""}


def test_stop_with_nothing_running_exits_0(isolated: dict[str, str]) -> None:
    out = _cli("stop", env=isolated)
    assert out.returncode == 0
    assert "nothing to stop" in out.stdout


def test_status_with_nothing_running_exits_3(isolated: dict[str, str]) -> None:
    out = _cli("status", env=isolated)
    assert out.returncode == 3 and "not running" in out.stdout


def test_unknown_profile_is_one_line_listing_valid_ones(isolated: dict[str, str]) -> None:
    out = _cli("serve", "--profile", "turbo", env=isolated)
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0
    assert "valid profiles: naive" in out.stderr


def test_port_taken_by_another_program(isolated: dict[str, str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(isolated["LABS_PORT"])))
        blocker.listen()
        out = _cli("serve", env=isolated)
    assert out.returncode == 1
    assert "already in use by another program" in out.stderr
    assert "Traceback" not in out.stderr
    assert not list(Path(isolated["LABS_HOME"]).glob("run/*/server.json"))


def test_stale_pid_file_is_ignored_and_removed(isolated: dict[str, str]) -> None:
    settings = labs.Settings.from_env(home=Path(isolated["LABS_HOME"]),
                                      port=int(isolated["LABS_PORT"]))
    settings.run_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = (settings.run_dir / "server.json")
    record.write_text(
        f'{{"pid": {dead.pid}, "pgid": {dead.pid}, "profile": "naive", "backend": "cpu", '
        '"base_url": "x", "served_model": "m", "model_path": "p", "log_path": "l", '
        '"started_at": 0}'
    )
    assert labs.running_server(settings) is None
    assert not record.exists()


def test_no_disk_space_for_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_model.shutil, "disk_usage",
                        lambda p: type("U", (), {"free": 10_000_000})())
    with pytest.raises(labs.ModelError) as err:
        cpu_model.ensure_model(tmp_path / "models", log=lambda *_: None)
    assert "need 1.2 GB free" in str(err.value) and "LABS_HOME" in str(err.value)
    assert not (tmp_path / "models" / cpu_model.MODEL_NAME).exists()


def test_model_folder_is_verified_on_reuse(tmp_path: Path) -> None:
    built = cpu_model.model_dir(labs.Settings.from_env().models_dir)
    assert cpu_model.verify(built), "the session's model folder should verify"
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in built.iterdir():
        if f.suffix != ".safetensors":
            (copy / f.name).write_bytes(f.read_bytes())
    assert not cpu_model.verify(copy)  # a file the manifest lists is missing
    (copy / "config.json").write_text("{}")
    assert not cpu_model.verify(copy)


def test_server_dying_during_startup_shows_the_log(
        isolated: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The real vLLM entry point, given a flag it rejects: it exits within seconds.
    settings = labs.Settings.from_env(home=Path(isolated["LABS_HOME"]),
                                      port=int(isolated["LABS_PORT"]), backend="cpu",
                                      base_url_override=None)
    original = server.engine_command
    monkeypatch.setattr(server, "engine_command",
                        lambda *a: original(*a) + ["--no-such-flag-for-this-test"])
    srv = labs.VLLMServer("naive", settings)
    with pytest.raises(labs.ServerDied) as err:
        srv.start(timeout_s=120, progress=False)
    assert "exited during start-up" in str(err.value)
    assert "no-such-flag-for-this-test" in err.value.log_tail
    assert srv.state is server.State.STOPPED
    assert labs.running_server(settings) is None


@pytest.mark.parametrize("log_line, words", [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "out of GPU memory"),
    ("RuntimeError: No CUDA GPUs are available", "no usable GPU"),
    ("OSError: [Errno 12] Cannot allocate memory", "out of RAM"),
    ("OSError: [Errno 98] error while attempting to bind: Address already in use", "port"),
    ("huggingface_hub.errors.RepositoryNotFoundError: Repository Not Found for url", "LABS_MODEL"),
])
def test_a_dead_server_names_the_likely_cause(tmp_path: Path, log_line: str, words: str) -> None:
    log = tmp_path / "server.log"
    log.write_text("INFO starting\n" + log_line + "\n" + "INFO shutting down\n" * 5)
    with pytest.raises(labs.ServerDied) as err:
        server.wait_healthy("http://127.0.0.1:9", 30, alive=lambda: False, log=log,
                            progress=False)
    first_line = str(err.value).splitlines()[0]
    assert "likely cause" in first_line and words in first_line, first_line
    assert log_line in str(err.value) or "shutting down" in str(err.value)


def test_an_unknown_cause_is_not_guessed(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("ValueError: something nobody has seen before\n")
    with pytest.raises(labs.ServerDied) as err:
        server.wait_healthy("http://127.0.0.1:9", 30, alive=lambda: False, log=log,
                            progress=False)
    assert "likely cause" not in str(err.value) and "nobody has seen" in str(err.value)


@pytest.mark.server
def test_serve_when_one_is_running_refuses_a_second(live: labs.Connection) -> None:
    if labs.Settings.from_env().base_url_override:
        pytest.skip("LABS_BASE_URL points at a server this session did not start")
    out = _cli("serve")
    assert out.returncode == 1
    assert "already running" in out.stderr and "python -m labs stop" in out.stderr


@pytest.mark.server
def test_greedy_chat_answers_paris(live: labs.Connection) -> None:
    reply = live.openai().chat.completions.create(
        model=live.model, temperature=0, max_tokens=20,
        messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in reply.choices[0].message.content


@pytest.mark.server
def test_status_reports_the_live_server(live: labs.Connection) -> None:
    if labs.Settings.from_env().base_url_override:
        pytest.skip("LABS_BASE_URL points at a server this session did not start")
    out = _cli("status")
    assert out.returncode == 0 and "running: profile" in out.stdout


def test_connect_to_nothing_says_how_to_start(free_port: int) -> None:
    settings = labs.Settings.from_env(base_url_override=f"http://127.0.0.1:{free_port}")
    with pytest.raises(labs.ServerNotRunning) as err:
        labs.connect(settings, timeout_s=1)
    assert "python -m labs serve" in str(err.value)


def test_stop_returns_when_the_group_is_gone_even_if_nobody_waited_on_it(
        tmp_path: Path) -> None:
    # `serve` returns a record, not the Popen: the stopping code must reap the child itself,
    # or the zombie keeps the group "alive" for the whole grace period (it did: 30 s).
    proc = processes.spawn_logged(["sleep", "60"], tmp_path / "sleep.log", dict(os.environ))
    pid = proc.pid
    del proc  # as after serve(): nobody holds the Popen
    started = time.monotonic()
    processes.stop_group(pid)
    assert time.monotonic() - started < processes.STOP_GRACE_S / 3
    assert not processes.group_alive(pid)
