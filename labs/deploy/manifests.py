"""The infra files made from the serving profiles, so compose, Kubernetes and the local
launcher cannot disagree about a flag.

labs/serving/profiles.py is the one source of engine and gateway flags. This module writes them into
  infra/docker/compose.yaml         the block between the GENERATED markers: one vLLM service
                                    per distinct GPU flag set (a compose profile picks one) and
                                    the gateway
  infra/k8s/overlays/<name>/        one kustomize overlay per profile, plus `data-parallel`:
                                    the containers' args as strategic-merge patches on the base
  infra/k8s/components/router/      the data-parallel engines and the router in front of them:
      engines.yaml                  a StatefulSet made from the base Deployment (one model and
                                    compile-cache volume per replica)
      epp-config.yaml               the endpoint picker's EndpointPickerConfig: per-endpoint max
                                    concurrency = the engine's --max-num-seqs, request TTL = the
                                    gateway's --max-queue-wait-s
      scaledobject.yaml             KEDA: min/max = the GPU node pool's autoscaler min/max
  infra/monitoring/grafana/dashboards/vllm-serving.json     from labs/deploy/grafana.py

A container's args are `labs.server.engine_command` (or `gateway_command`) for the
container's settings, without the local interpreter: the cluster runs the command that
`python -m labs serve --profile NAME` runs on a GPU machine, flag for flag and in order, plus
the drain flag a pod needs (K8S_ENGINE_FLAGS, K8S_GATEWAY_FLAGS).

    python -m labs infra           rewrite the generated files
    python -m labs infra --check   exit 1 when one is out of date (tests/test_infra.py runs it)
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from ..serving.commands import API_SERVER_MODULE, engine_command, gateway_command
from ..serving.profiles import PROFILES, Profile, flag_value
from ..settings import DEFAULT_GPU_MODEL, Settings
from . import grafana

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker" / "compose.yaml"
K8S = INFRA / "k8s"
OVERLAYS = K8S / "overlays"
DASHBOARD = INFRA / "monitoring" / "grafana" / "dashboards" / "vllm-serving.json"
BASE_ENGINE = K8S / "base" / "vllm.yaml"
BASE_MODEL_CACHE = K8S / "base" / "model-cache.yaml"

# The image's own entrypoint differs between vLLM releases; this is the module labs.server
# runs.
ENGINE_ENTRYPOINT = ("python3", "-m", API_SERVER_MODULE)
ENGINE_PORT, GATEWAY_PORT = 8000, 8001
NAMESPACE = "llm"
ENGINE_DEPLOYMENT, GATEWAY_DEPLOYMENT = "vllm", "gateway"

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

# Data parallelism: whole replicas of the `gateway` profile's bounded engine, one per GPU node,
# behind one router (components/router): the Gateway API Inference Extension's endpoint picker
# (EPP, now developed as llm-d-router) in standalone mode, with its Envoy proxy in the same pod.
# It is the course gateway's idea across a pool: one queue in front of every engine (flow
# control), at most max-num-seqs requests in flight per engine, a wait bounded by a TTL; and it
# picks the engine by queue depth, KV-cache usage and prefix-cache hits.
DATA_PARALLEL = "data-parallel"
DATA_PARALLEL_PROFILE = "gateway"
OVERLAY_NAMES = (*PROFILES, DATA_PARALLEL)
ROUTER = "router"  # the component, its Deployment, Service, ServiceAccount
ROUTER_DIR = K8S / "components" / ROUTER
ENGINES_MANIFEST = ROUTER_DIR / "engines.yaml"
EPP_CONFIG = ROUTER_DIR / "epp-config.yaml"
SCALED_OBJECT = ROUTER_DIR / "scaledobject.yaml"
ROUTER_PORT = 8081  # Envoy's listener in the published standalone chart
# The current llm-d-router release (2026-08-17) and the Envoy image its standalone chart pins:
# github.com/llm-d/llm-d-router, tag v0.10.0, config/charts/llm-d-router-standalone/values.yaml
# (the release tooling sets the EPP image tag to the release, hack/push-chart.sh).
EPP_RELEASE = "v0.10.0"
EPP_IMAGE = f"ghcr.io/llm-d/llm-d-router-endpoint-picker:{EPP_RELEASE}"
ENVOY_IMAGE = "docker.io/envoyproxy/envoy:distroless-v1.33.2"
EPP_CONFIG_API = "llm-d.ai/v1alpha1"
# Replicas: one engine per GPU node, so KEDA's bounds are the GPU node pool's autoscaler bounds
# (infra/terraform/lke variables gpu_autoscaler_min / gpu_autoscaler_max; tests check they agree).
GPU_POOL_MIN, GPU_POOL_MAX = 1, 3
PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"

_BEGIN = "  # BEGIN GENERATED"
_END = "  # END GENERATED"
_HEADER = ("# Generated by `python -m labs infra` from labs/serving/profiles.py; "
           "edit the profile, not this.\n")


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


def router_max_concurrency() -> int:
    """Requests the router lets one engine run at once: the engine's --max-num-seqs, so an
    engine never queues (the course gateway's N, per engine)."""
    return int(flag_value(PROFILES[DATA_PARALLEL_PROFILE].flags("gpu"), "max-num-seqs",
                          required=True))


def router_request_ttl() -> str:
    """How long a request may wait in the router's queue: the course gateway's
    --max-queue-wait-s, as a Go duration."""
    flags = PROFILES[DATA_PARALLEL_PROFILE].gateway("gpu") or ()
    return f"{float(flag_value(flags, 'max-queue-wait-s', required=True)):g}s"


def router_queue_limit() -> int:
    """Requests the router's queue holds before it sheds at once: one more full batch per
    engine at the pool's largest size. The TTL bounds how long each of them waits."""
    return router_max_concurrency() * GPU_POOL_MAX


# --------------------------------------------------------------------------------------------
# docker compose


def engine_services() -> list[tuple[str, list[str], list[str]]]:
    """(service, compose profiles, args) per distinct GPU engine command, in PROFILES order:
    `kv-pressure` only shrinks the pool on the CPU, so on a GPU it shares `naive`'s engine."""
    services: list[tuple[str, list[str], list[str]]] = []
    for profile in PROFILES.values():
        args = engine_args(profile)
        same = next((s for s in services if s[2] == args), None)
        if same:
            same[1].append(profile.name)
        else:
            services.append((f"vllm-{profile.name}", [profile.name], args))
    return services


def _yaml_list(items: list[str], indent: int) -> list[str]:
    return [" " * indent + "- " + json.dumps(item) for item in items]


def compose_block() -> str:
    """The generated services: the engines (anchor *vllm) and the gateway (anchor *gateway)."""
    services = engine_services()
    lines = [f"{_BEGIN} by `python -m labs infra` from labs/serving/profiles.py: "
             "edit the profiles,",
             "  # not this block. Each engine answers as `vllm` on the network; run one at a time."]
    for name, profiles, args in services:
        lines += [f"  {name}:", "    <<: *vllm", f"    profiles: [{', '.join(profiles)}]",
                  "    command:", *_yaml_list(args, 6)]
    gateways = [p for p in PROFILES.values() if p.gateway("gpu") is not None]
    if len(gateways) > 1:
        raise NotImplementedError("compose has one gateway service; give each its own name")
    for profile in gateways:
        engine = next(s[0] for s in services if profile.name in s[1])
        args = gateway_args(profile, f"http://vllm:{ENGINE_PORT}") or []
        lines += ["  gateway:", "    <<: *gateway", f"    profiles: [{profile.name}]",
                  "    command:", *_yaml_list(args, 6),
                  "    depends_on:", f"      {engine}:", "        condition: service_healthy"]
    return "\n".join(lines + [_END]) + "\n"


def compose_text(current: str) -> str:
    """`current` compose.yaml with its generated block replaced."""
    head, begin, rest = current.partition(_BEGIN)
    _, end, tail = rest.partition(_END + "\n")
    if not begin or not end:
        raise ValueError(f"{COMPOSE} lost its `{_BEGIN}` / `{_END}` marker lines")
    return head + compose_block() + tail


# --------------------------------------------------------------------------------------------
# Kubernetes overlays


def _yaml(data: object) -> str:
    import yaml  # a test dependency; `python -m labs` runs without it

    return yaml.safe_dump(data, sort_keys=False)


def _load(path: Path, kind: str) -> dict:
    import yaml  # optional: a test dependency, as in _yaml

    return next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == kind)


def _container_patch(kind: str, name: str, container: dict[str, object]) -> str:
    patch = {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
             "spec": {"template": {"spec": {"containers": [container]}}}}
    return _HEADER + _yaml(patch)


def engines_statefulset() -> dict:
    """The data-parallel engines: the base Deployment's pod (one definition of the image,
    probes, drain, resources and placement) in a StatefulSet whose every replica gets its own
    model volume, the base claim's size and class, from volumeClaimTemplates. The volume
    outlives the pod (retained on scale-down and delete), so a replica that comes back finds
    its weights and its torch.compile cache (VLLM_CACHE_ROOT) instead of downloading and
    compiling again."""
    base = _load(BASE_ENGINE, "Deployment")
    claim = _load(BASE_MODEL_CACHE, "PersistentVolumeClaim")
    pod = copy.deepcopy(base["spec"]["template"])
    pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != "model-cache"]
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": ENGINE_DEPLOYMENT, "labels": base["metadata"]["labels"]},
        "spec": {
            # no `replicas`: KEDA owns the count (scaledobject.yaml); an apply must not reset it
            "serviceName": ENGINE_DEPLOYMENT,
            "podManagementPolicy": "Parallel",  # a scale-up starts its replicas together
            "updateStrategy": {"type": "RollingUpdate"},  # a rollout replaces one at a time
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain",
                                                     "whenScaled": "Retain"},
            "selector": base["spec"]["selector"],
            "template": pod,
            "volumeClaimTemplates": [{"metadata": {"name": "model-cache"},
                                      "spec": claim["spec"]}],
        },
    }


def epp_config() -> dict:
    """The router's EndpointPickerConfig (llm-d-router v0.10.0, apix/config/v1alpha1): flow
    control on; the concurrency detector caps each engine at max-num-seqs in flight, both as
    the pool's saturation signal (requests beyond it wait in the router's queue) and as a
    scheduling filter (no engine is ever picked above it); the queue sheds a request that waits
    longer than the gateway's max wait, or that finds the queue full (429); among the engines
    with room, the published default scorers and weights pick: queue depth, KV-cache usage and
    prefix-cache hits."""
    return {
        "apiVersion": EPP_CONFIG_API, "kind": "EndpointPickerConfig",
        "featureGates": ["flowControl"],
        "plugins": [
            {"type": "concurrency-detector",
             "parameters": {"concurrencyMode": "requests",
                            "maxConcurrency": router_max_concurrency(), "headroom": 0}},
            {"type": "queue-scorer"},
            {"type": "kv-cache-utilization-scorer"},
            {"type": "prefix-cache-scorer"},
            {"type": "metrics-data-source", "parameters": {"scheme": "http", "path": "/metrics"}},
            {"type": "core-metrics-extractor"},
        ],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "concurrency-detector"},
            {"pluginRef": "queue-scorer", "weight": 2},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
            {"pluginRef": "prefix-cache-scorer", "weight": 3},
        ]}],
        "flowControl": {
            "maxBytes": "512Mi",  # queued bodies live in the EPP's memory (limit 2Gi)
            "defaultRequestTTL": router_request_ttl(),
            "priorityBands": [{"priority": 0, "maxRequests": str(router_queue_limit())}],
            "saturationDetector": {"pluginRef": "concurrency-detector"},
        },
    }


# Engines needed now = (requests running + requests waiting in the router) / max-num-seqs.
# The router's queue, not vLLM's waiting requests: with max concurrency = max-num-seqs the
# router never lets an engine queue, so vllm:num_requests_waiting stays at 0 while the backlog
# grows in the router; the queue alone would fall to 0 as soon as a new engine drains it and
# scale straight back down, so the running requests are counted too.
SCALING_QUERY = ('(sum(vllm:num_requests_running{namespace="llm"}) or vector(0))'
                 ' + (sum(llm_d_epp_flow_control_queue_size{namespace="llm"}) or vector(0))')


def scaled_object() -> dict:
    """KEDA's ScaledObject for the engines: one engine per max-num-seqs requests in flight or
    waiting, between the GPU pool's autoscaler bounds. A new engine takes minutes (a GPU node
    from the autoscaler, the driver, the weights), so it adds one at a time for a backlog that
    lasts, and removes one only after 15 quiet minutes."""
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": ENGINE_DEPLOYMENT},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet",
                               "name": ENGINE_DEPLOYMENT},
            "minReplicaCount": GPU_POOL_MIN,
            "maxReplicaCount": GPU_POOL_MAX,
            "pollingInterval": 15,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 60,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}]},
                "scaleDown": {"stabilizationWindowSeconds": 900,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]},
            }}},
            "triggers": [{"type": "prometheus", "metadata": {
                "serverAddress": PROMETHEUS_URL,
                "query": SCALING_QUERY,
                "threshold": str(router_max_concurrency()),
            }}],
        },
    }


def _router_files() -> dict[Path, str]:
    note = {
        ENGINES_MANIFEST: "# The data-parallel engines: base/vllm.yaml's pod in a StatefulSet, a "
                          "model volume per replica.\n",
        EPP_CONFIG: ("# The endpoint picker's configuration (llm-d-router "
                     f"{EPP_RELEASE}, {EPP_CONFIG_API} EndpointPickerConfig).\n"
                     f"# maxConcurrency {router_max_concurrency()} = --max-num-seqs of profile "
                     f"{DATA_PARALLEL_PROFILE!r}; defaultRequestTTL {router_request_ttl()} = its "
                     "gateway's --max-queue-wait-s;\n"
                     f"# maxRequests {router_queue_limit()} = max-num-seqs x {GPU_POOL_MAX} "
                     "engines, the pool's largest size.\n"),
        SCALED_OBJECT: ("# KEDA scales the engines on (running + queued in the router) / "
                        "max-num-seqs; min/max = the GPU pool's\n# autoscaler (infra/terraform/"
                        "lke gpu_autoscaler_min/max).\n"),
    }
    data = {ENGINES_MANIFEST: engines_statefulset(), EPP_CONFIG: epp_config(),
            SCALED_OBJECT: scaled_object()}
    return {path: _HEADER + note[path] + _yaml(data[path]) for path in data}


def overlay_files(name: str) -> dict[Path, str]:
    """kustomization.yaml and its patches for the overlay `name` (a profile or data-parallel)."""
    folder = OVERLAYS / name
    data_parallel = name == DATA_PARALLEL
    profile = PROFILES[DATA_PARALLEL_PROFILE if data_parallel else name]
    engine_kind = "StatefulSet" if data_parallel else "Deployment"
    files = {folder / "engine.yaml": _container_patch(
        engine_kind, ENGINE_DEPLOYMENT, {"name": "vllm", "args": k8s_engine_args(profile)})}
    components: list[str] = []
    if data_parallel:
        components = [f"../../components/{ROUTER}"]  # no course gateway: the router replaces it
    elif profile.gateway("gpu") is not None:
        # gateway-image last: it names the registry of every gateway container added before it
        components = ["../../components/gateway", "../../components/gateway-image"]
        args = k8s_gateway_args(profile, f"http://{ENGINE_DEPLOYMENT}:{ENGINE_PORT}") or []
        files[folder / "gateway.yaml"] = _container_patch(
            "Deployment", GATEWAY_DEPLOYMENT, {"name": "gateway", "args": args})
    kustomization: dict[str, object] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NAMESPACE, "resources": ["../../base"],
    }
    if components:
        kustomization["components"] = components
    kustomization["patches"] = [{"path": p.name} for p in files]
    summary = (f"# {name}: {GPU_POOL_MIN}-{GPU_POOL_MAX} replicas of the "
               f"{DATA_PARALLEL_PROFILE!r} profile's engine behind one router (endpoint picker "
               "with flow control), scaled by KEDA\n" if data_parallel
               else f"# {name}: {profile.summary}\n")
    files[folder / "kustomization.yaml"] = (_HEADER + summary
                                            + _yaml(kustomization))
    return files


# --------------------------------------------------------------------------------------------
# All of it


def expected_files() -> dict[Path, str]:
    """Every generated file and the text it should have now."""
    files = {COMPOSE: compose_text(COMPOSE.read_text()),
             DASHBOARD: json.dumps(grafana.build(), indent=2) + "\n"}
    for name in OVERLAY_NAMES:
        files.update(overlay_files(name))
    files.update(_router_files())
    return files


def stale() -> list[Path]:
    """Generated files that are missing or differ from what the profiles say now."""
    return [p for p, text in expected_files().items()
            if not p.exists() or p.read_text() != text]


def write() -> list[Path]:
    """Rewrite the stale files; return them."""
    changed = stale()
    expected = expected_files()
    for path in changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(expected[path])
    return changed


def _cmd_infra(args: argparse.Namespace) -> int:
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"out of date: {path.relative_to(ROOT)}")
        if out_of_date:
            print("run `python -m labs infra` to regenerate them from labs/serving/profiles.py")
        return 1 if out_of_date else 0
    changed = write()
    print("\n".join(f"wrote {p.relative_to(ROOT)}" for p in changed) or "all up to date")
    return 0


def add_cli(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("infra", help="write compose, k8s overlays and the dashboard from "
                         "the profiles (--check: only say what is out of date)")
    p.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    p.set_defaults(func=_cmd_infra)
