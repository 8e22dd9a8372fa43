"""Offline, strict validation of everything the overlays render to (used by tests/test_infra.py
and tests/test_router.py; not a test module itself).

- Kubernetes' own kinds: kubernetes-validate against Kubernetes K8S_VERSION, strict (an unknown
  field fails).
- Custom resources (KEDA ScaledObject, Prometheus Operator PodMonitor): against the
  openAPIV3Schema of their CRD, vendored as published in tests/fixtures/crds (README there says
  from where). The API server prunes or, with kubectl's default strict field validation,
  rejects a field the structural schema does not declare; here every object schema that lists
  its properties gets additionalProperties: false unless it says
  x-kubernetes-preserve-unknown-fields, so an unknown field fails the same way.
- The endpoint picker's EndpointPickerConfig (inside the router's ConfigMap): against the schema
  transcribed from llm-d-router's Go types (tests/fixtures/llm-d-router), which the EPP decodes
  strictly.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CRD_FILES = {
    "ScaledObject": FIXTURES / "crds" / "keda.sh_scaledobjects.yaml",
    "PodMonitor": FIXTURES / "crds" / "monitoring.coreos.com_podmonitors.yaml",
}
EPP_SCHEMA = FIXTURES / "llm-d-router" / "endpointpickerconfig.schema.json"
K8S_VERSION = "1.35.0"  # LKE's version in infra/terraform/lke (the article ran 1.35)
_METADATA = {"name", "namespace", "labels", "annotations"}


def _strict(node: object) -> object:
    """A CRD's OpenAPI v3 schema as a JSON Schema that rejects unknown fields."""
    if not isinstance(node, dict):
        return node
    out: dict = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: _strict(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _strict(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_strict(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd(kind: str) -> dict:
    """The vendored CustomResourceDefinition for `kind`."""
    docs = [d for d in yaml.safe_load_all(CRD_FILES[kind].read_text()) if d]
    (definition,) = [d for d in docs if d.get("kind") == "CustomResourceDefinition"]
    assert definition["spec"]["names"]["kind"] == kind
    return definition


@functools.cache
def _crd_validator(kind: str, api_version: str) -> jsonschema.Draft7Validator:
    definition = crd(kind)
    group = definition["spec"]["group"]
    versions = {f"{group}/{v['name']}": v for v in definition["spec"]["versions"] if v["served"]}
    if api_version not in versions:
        raise jsonschema.ValidationError(f"{kind}: apiVersion {api_version} is not served by "
                                         f"the CRD ({sorted(versions)})")
    schema = _strict(versions[api_version]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def validate_custom(obj: dict) -> None:
    """`obj` against its vendored CRD's schema; jsonschema.ValidationError when it fails."""
    meta = obj.get("metadata", {})
    unknown = set(meta) - _METADATA
    if unknown or not meta.get("name"):
        raise jsonschema.ValidationError(f"{obj['kind']}: metadata {sorted(unknown)} / no name")
    for field in ("labels", "annotations"):
        if not all(isinstance(v, str) for v in meta.get(field, {}).values()):
            raise jsonschema.ValidationError(f"{obj['kind']}: metadata.{field} must be strings")
    _crd_validator(obj["kind"], obj["apiVersion"]).validate(obj)


@functools.cache
def _epp_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(EPP_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_epp_config(config: dict) -> None:
    """An EndpointPickerConfig against the transcribed schema, plus the references the loader
    resolves: every pluginRef names a configured plugin."""
    _epp_validator().validate(config)
    names = {p.get("name") or p["type"] for p in config["plugins"]}
    refs = [p["pluginRef"] for profile in config["schedulingProfiles"]
            for p in profile["plugins"]]
    flow = config.get("flowControl", {})
    if "saturationDetector" in flow:
        refs.append(flow["saturationDetector"]["pluginRef"])
    missing = set(refs) - names
    if missing:
        raise jsonschema.ValidationError(f"pluginRef to no plugin: {sorted(missing)}")


def epp_configs(obj: dict) -> list[dict]:
    """The EndpointPickerConfigs a ConfigMap carries."""
    if obj.get("kind") != "ConfigMap":
        return []
    found = []
    for text in obj.get("data", {}).values():
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "EndpointPickerConfig":
            found.append(doc)
    return found


def validate(obj: dict) -> None:
    """Any object the overlays render to, strictly; raises on the first problem."""
    if obj["kind"] in CRD_FILES:
        validate_custom(obj)
        return
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    for config in epp_configs(obj):
        validate_epp_config(config)
