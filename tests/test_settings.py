"""labs.settings: what this machine has, read once."""

from __future__ import annotations

from labs.model.steps import scheduler_defaults


def test_gpus_are_read_once_for_the_hardware_line_and_the_limits(monkeypatch):
    import subprocess

    from labs import settings
    from labs.load import loadgen

    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "NVIDIA H100 80GB HBM3, 81559\n", "")

    monkeypatch.setattr(settings, "gpu_present", lambda: True)
    monkeypatch.setattr(settings.subprocess, "run", fake_run)
    settings.gpus.cache_clear()
    loadgen.describe_hardware.cache_clear()
    try:
        assert settings.gpus() == (("NVIDIA H100 80GB HBM3", 81559.0),)
        assert loadgen.describe_hardware().endswith("; GPU: NVIDIA H100 80GB HBM3, 81559 MiB")
        name, mib = settings.gpus()[0]
        assert scheduler_defaults("gpu", mib / 1024, name) == (1024, 8192)
        assert len([c for c in calls if c[0] == "nvidia-smi"]) == 1, calls
    finally:
        settings.gpus.cache_clear()
        loadgen.describe_hardware.cache_clear()
