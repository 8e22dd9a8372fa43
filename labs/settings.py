"""Course settings, read once from the environment.

Everything a learner or an instructor may want to change is an environment variable with a
sane default, so the same notebooks run on a laptop CPU, a GPU VM or in CI unchanged:

    LABS_BACKEND   cpu | gpu | auto (default: gpu when `nvidia-smi` answers)
    LABS_MODEL     GPU model id (default Qwen/Qwen2.5-7B-Instruct); ignored on the CPU
    LABS_HOST      interface the server binds (default 127.0.0.1)
    LABS_PORT      server port (default 8000)
    LABS_API_KEY   key vLLM requires on /v1/* (default: a local workshop key; never printed)
    LABS_HOME      models and run files (default ~/.cache/vllm-workshop)
    LABS_BASE_URL  talk to an already running server instead (e.g. a cluster endpoint)
    LABS_SCALE     ci | full: how big the notebooks' sweeps are (default: ci when CI is set)
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .errors import ConfigError

DEFAULT_GPU_MODEL = "Qwen/Qwen2.5-7B-Instruct"
DEFAULT_API_KEY = "workshop-local-key"


@cache
def gpu_present() -> bool:
    """True when an NVIDIA GPU answers `nvidia-smi -L`."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@cache
def gpus() -> tuple[tuple[str, float], ...]:
    """(name, memory in MiB) of every NVIDIA GPU `nvidia-smi` lists; () without one."""
    if not gpu_present():
        return ()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total",
                              "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    found = []
    for line in out.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            found.append((name.strip(), float(mib)))
        except ValueError:
            continue
    return tuple(found)


@dataclass(frozen=True)
class Settings:
    backend: str
    gpu_model: str
    host: str
    port: int
    api_key: str = field(repr=False)
    home: Path
    base_url_override: str | None
    scale: str

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        backend = env.get("LABS_BACKEND", "auto").lower()
        if backend == "auto":
            backend = "gpu" if gpu_present() else "cpu"
        if backend not in ("cpu", "gpu"):
            raise ConfigError(f"LABS_BACKEND={backend!r} is not valid; use cpu, gpu or auto.")
        port_text = env.get("LABS_PORT", "8000")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ConfigError(f"LABS_PORT={port_text!r} is not a port number (1-65535).")
        scale = env.get("LABS_SCALE") or ("ci" if env.get("CI") else "full")
        if scale not in ("ci", "full"):
            raise ConfigError(f"LABS_SCALE={scale!r} is not valid; use ci or full.")
        values: dict[str, object] = dict(
            backend=backend,
            gpu_model=env.get("LABS_MODEL", DEFAULT_GPU_MODEL),
            host=env.get("LABS_HOST", "127.0.0.1"),
            port=int(port_text),
            api_key=env.get("LABS_API_KEY", DEFAULT_API_KEY),
            home=Path(env.get("LABS_HOME", Path.home() / ".cache" / "vllm-workshop")).expanduser(),
            base_url_override=env.get("LABS_BASE_URL") or None,
            scale=scale,
        )
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]  # overrides are the caller's field values, checked by the dataclass

    @property
    def run_dir(self) -> Path:
        """Pid, log and state files of the server on this port."""
        return self.home / "run" / f"port-{self.port}"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def results_dir(self) -> Path:
        """Where notebooks save what they measured (LABS_RESULTS, default ./results in the
        repository), one file per notebook, to compare with a neighbour's or the article."""
        default = Path(__file__).resolve().parent.parent / "results"
        return Path(os.environ.get("LABS_RESULTS", default)).expanduser()

    @property
    def base_url(self) -> str:
        """Root URL of the server (no /v1)."""
        if self.base_url_override:
            return self.base_url_override.rstrip("/").removesuffix("/v1")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_ci_scale(self) -> bool:
        return self.scale == "ci"
