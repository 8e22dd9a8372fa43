"""The command lines and environments of the course's servers: vLLM from a profile, and the
gateway in front of it. Pure functions of a profile and the settings, so that the local
launcher, the docker compose file and the Kubernetes overlays (labs.deploy.manifests) build the same
flags from one place."""

from __future__ import annotations

import os
import sys

from ..errors import ConfigError
from ..settings import Settings
from . import cpu_model
from .profiles import Profile

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# How long the servers the course starts (vLLM, the gateway) keep an idle connection open;
# uvicorn's default is 5 s. Our clients never close one themselves, so only the server ever
# does, after this long (nginx's default); labs.load.pool says why that matters.
SERVER_KEEP_ALIVE_S = 75


def _cpu_thread_env() -> dict[str, str]:
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not cpus:
        cpus = list(range(os.cpu_count() or 1))
    bind = ",".join(str(c) for c in cpus)
    # Bind vLLM's OpenMP threads to every core we have and reserve none for the API server:
    # on a 2-core machine that is what reproduces the batching curve (DESIGN.md).
    return {"VLLM_CPU_OMP_THREADS_BIND": bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


def served_model_name(settings: Settings) -> str:
    return cpu_model.MODEL_NAME if settings.backend == "cpu" else settings.gpu_model


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


def gateway_env(settings: Settings) -> dict[str, str]:
    """The gateway checks the course's key itself, before a request takes a queue place; it
    gets the key in its environment, like vLLM, so it never shows in `ps`."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "LABS_GATEWAY_API_KEY": settings.api_key}
