"""What each container runs: the engine's and the gateway's args, their ports, the drain flags
a pod adds. labs/deploy/manifests.py writes them into compose and the kustomize overlays.

A container's args are `labs.server.engine_command` (or `gateway_command`) for the
container's settings, without the local interpreter: the cluster runs the command that
`python -m labs serve --profile NAME` runs on a GPU machine, flag for flag and in order, plus
the drain flag a pod needs (K8S_ENGINE_FLAGS, K8S_GATEWAY_FLAGS).
"""

from __future__ import annotations

from pathlib import Path

from ..serving.commands import API_SERVER_MODULE, engine_command, gateway_command
from ..serving.profiles import Profile
from ..settings import DEFAULT_GPU_MODEL, Settings

# The image's own entrypoint differs between vLLM releases; this is the module labs.server
# runs.
ENGINE_ENTRYPOINT = ("python3", "-m", API_SERVER_MODULE)
ENGINE_PORT, GATEWAY_PORT = 8000, 8001

# Graceful drain, the same budget for every server a stream passes through. On SIGTERM the
# course gateway lets open streams finish for --shutdown-timeout-s; vLLM 0.32 defaults to
# --shutdown-timeout=0, which aborts every running request, so in a pod it gets the same 50 s.
# The engine's preStop waits ENGINE_PRESTOP_S first, so the router and the Services stop sending
# it new requests before it starts draining; its grace period covers both and a margin (the
# gateway's 60 s grace covers its 50 s, it has no preStop). base/vllm.yaml and
# components/gateway/gateway.yaml hold these numbers; tests/test_infra.py checks them.
SHUTDOWN_TIMEOUT_S = 50
ENGINE_PRESTOP_S = 10
ENGINE_GRACE_S = 75
K8S_ENGINE_FLAGS = (f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}",)
K8S_GATEWAY_FLAGS = (f"--shutdown-timeout-s={SHUTDOWN_TIMEOUT_S}",)


def container_settings(port: int = ENGINE_PORT) -> Settings:
    """Where things are inside a container: the model cache volume at /models (so vLLM's
    --download-dir is /models/hub), listening on every interface, the default GPU model."""
    return Settings(backend="gpu", gpu_model=DEFAULT_GPU_MODEL, host="0.0.0.0", port=port,
                    api_key="", home=Path("/"), base_url_override=None, scale="full")


def engine_args(profile: Profile) -> list[str]:
    """The vLLM args (after ENGINE_ENTRYPOINT) `python -m labs serve` runs for `profile`:
    the five base flags, then the profile's."""
    settings = container_settings()
    return engine_command(profile, settings, settings.gpu_model)[3:]


def k8s_engine_args(profile: Profile) -> list[str]:
    """The vLLM container's args in a pod: engine_args with K8S_ENGINE_FLAGS after the base
    five, so the profile's own flags still come last."""
    args = engine_args(profile)
    return [*args[:5], *K8S_ENGINE_FLAGS, *args[5:]]


def gateway_args(profile: Profile, upstream: str) -> list[str] | None:
    """The gateway's args (after `python -m labs.gateway`), or None without one."""
    if profile.gateway("gpu") is None:
        return None
    return gateway_command(profile, container_settings(GATEWAY_PORT), upstream)[3:]


def k8s_gateway_args(profile: Profile, upstream: str) -> list[str] | None:
    """The gateway container's args in a pod: gateway_args, then K8S_GATEWAY_FLAGS."""
    args = gateway_args(profile, upstream)
    return None if args is None else [*args, *K8S_GATEWAY_FLAGS]
