"""`python -m labs cluster`: the kubectl commands it prints and runs, without a cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labs.__main__ import main
from labs.deploy import cluster
from labs.errors import ClusterError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # printed paths are relative to where the command runs


def _shown(overlay: str, **kwargs: object) -> list[str]:
    return [step.shown for step in cluster.steps(overlay, **kwargs)]


def test_bounded_is_the_articles_apply_script() -> None:
    assert _shown("bounded") == [
        "kubectl -n llm delete scaledobject/vllm podmonitor/router --ignore-not-found",
        "kubectl -n llm delete deployment/gateway service/gateway "
        "networkpolicy/allow-engine-from-gateway statefulset/vllm deployment/router "
        "service/router serviceaccount/router role/router rolebinding/router "
        "configmap/router-epp configmap/router-envoy networkpolicy/allow-engine-from-router "
        "networkpolicy/allow-router-metrics --ignore-not-found",
        "kubectl apply -k infra/k8s/overlays/bounded",
        "kubectl -n llm rollout status deployment/vllm --timeout=25m",
    ]
    plan = cluster.steps("bounded")
    assert plan[0].may_fail and not any(s.may_fail for s in plan[1:])  # KEDA may be absent


def test_data_parallel_replaces_the_single_engine_and_waits_for_the_router() -> None:
    shown = _shown("data-parallel")
    assert shown[0] == ("kubectl -n llm delete deployment/gateway service/gateway "
                        "networkpolicy/allow-engine-from-gateway deployment/vllm "
                        "--ignore-not-found")
    assert shown[-2:] == ["kubectl -n llm rollout status statefulset/vllm --timeout=25m",
                          "kubectl -n llm rollout status deployment/router --timeout=5m"]
    assert not any("model-cache" in line for line in shown)  # the weights stay


def test_naive_is_the_revert_and_gateway_waits_for_its_gateway() -> None:
    assert "kubectl apply -k infra/k8s/overlays/naive" in _shown("naive")
    gateway = _shown("gateway")
    assert "deployment/gateway" not in gateway[0]  # it keeps its own objects
    assert gateway[-1] == "kubectl -n llm rollout status deployment/gateway --timeout=5m"


def test_every_printed_overlay_exists() -> None:
    for overlay in cluster.OVERLAY_NAMES:
        applied = [s.argv for s in cluster.steps(overlay) if s.argv[1:3] == ["apply", "-k"]]
        assert (ROOT / applied[0][3] / "kustomization.yaml").is_file()


def test_context_goes_on_every_command() -> None:
    for step in cluster.steps("gateway", context="lke-123", with_secret=True, api_key="k"):
        assert step.argv[:3] == ["kubectl", "--context", "lke-123"]


def test_the_key_travels_on_stdin_only() -> None:
    plan = cluster.steps("naive", with_secret=True, api_key="s3cret-key")
    secret = plan[1]
    assert secret.argv == ["kubectl", "apply", "-f", "-"]
    assert json.loads(secret.stdin)["stringData"] == {"api-key": "s3cret-key"}
    assert '--from-literal=api-key="$LABS_API_KEY"' in secret.shown
    for step in plan:
        assert "s3cret-key" not in step.shown and "s3cret-key" not in " ".join(step.argv)


def test_unknown_overlay_lists_the_valid_ones() -> None:
    with pytest.raises(ClusterError, match="data-parallel"):
        cluster.steps("fast")


def test_missing_kubectl_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cluster.shutil, "which", lambda *a, **k: None)
    assert main(["cluster", "bounded", "--apply"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: kubectl is not installed") and "\n" not in err


def test_apply_runs_each_step_and_stops_at_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cluster, "find_kubectl", lambda: "/opt/bin/kubectl")
    calls: list[tuple[list[str], str | None]] = []

    def run(argv: list[str], input: str | None = None, text: bool = True):
        calls.append((argv, input))
        return subprocess.CompletedProcess(argv, 1 if argv[1:3] == ["apply", "-k"] else 0)

    monkeypatch.setattr(cluster.subprocess, "run", run)
    with pytest.raises(ClusterError, match="exit code 1"):
        cluster.apply(cluster.steps("bounded"), echo=lambda line: None)
    assert [argv[0] for argv, _ in calls] == ["/opt/bin/kubectl"] * 3  # no rollout after it
    assert calls[-1][0][1:] == ["apply", "-k", "infra/k8s/overlays/bounded"]


def test_with_secret_needs_the_key_in_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("LABS_API_KEY", raising=False)
    assert main(["cluster", "naive", "--apply", "--with-secret"]) == 1
    assert "LABS_API_KEY is not set" in capsys.readouterr().err


def test_printing_needs_no_kubectl(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cluster.shutil, "which", lambda *a, **k: None)
    assert main(["cluster", "data-parallel"]) == 0
    out = capsys.readouterr().out
    assert "kubectl apply -k infra/k8s/overlays/data-parallel" in out
    assert "deployment/gateway" in out  # the single gateway goes; the router replaces it


def test_a_step_that_may_fail_does_not_stop_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cluster without KEDA has no ScaledObject kind: deleting one fails, harmlessly."""
    monkeypatch.setattr(cluster, "find_kubectl", lambda: "/opt/bin/kubectl")
    calls: list[list[str]] = []

    def run(argv: list[str], input: str | None = None, text: bool = True):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1 if "scaledobject/vllm" in argv else 0)

    monkeypatch.setattr(cluster.subprocess, "run", run)
    echoed: list[str] = []
    cluster.apply(cluster.steps("naive"), echo=echoed.append)
    assert len(calls) == len(cluster.steps("naive"))
    assert any("going on" in line for line in echoed)


# --------------------------------------------------------------------------------------------
# Placeholders: refused before anything runs, in one sentence that says what to do


@pytest.fixture
def real_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copies of the two files with placeholders, filled in as a user would."""
    image = tmp_path / "gateway-image.yaml"
    image.write_text(cluster.GATEWAY_IMAGE_FILE.read_text().replace(
        cluster.GATEWAY_IMAGE_PLACEHOLDER, "registry.example.com/course/"))
    firewall = tmp_path / "services.yaml"
    firewall.write_text(cluster.FIREWALL_FILE.read_text().replace('"FIREWALL_ID"', '"4242"'))
    monkeypatch.setattr(cluster, "GATEWAY_IMAGE_FILE", image)
    monkeypatch.setattr(cluster, "FIREWALL_FILE", firewall)
    return tmp_path


def _no_kubectl_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    monkeypatch.setattr(cluster, "find_kubectl", lambda: "/opt/bin/kubectl")
    calls: list[list[str]] = []

    def run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(cluster.subprocess, "run", run)
    return calls


def test_the_committed_files_hold_the_placeholders() -> None:
    assert cluster.GATEWAY_IMAGE_PLACEHOLDER in cluster.GATEWAY_IMAGE_FILE.read_text()
    assert f'{cluster.FIREWALL_ANNOTATION}: "FIREWALL_ID"' in cluster.FIREWALL_FILE.read_text()


def test_apply_refuses_the_placeholder_gateway_image(real_values: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cluster, "GATEWAY_IMAGE_FILE", ROOT / "infra" / "k8s" / "components"
                        / "gateway-image" / "kustomization.yaml")
    calls = _no_kubectl_runs(monkeypatch)
    assert main(["cluster", "gateway", "--apply"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: not applying 'gateway': the gateway image is still the "
                          "placeholder ghcr.io/your-org/vllm-serving-labs-gateway")
    assert "ImagePullBackOff" in err and "newName" in err and "\n" not in err
    assert "firewall" not in err.lower()  # only what is wrong
    assert calls == []  # nothing ran


def test_apply_refuses_the_placeholder_firewall_id(real_values: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cluster, "FIREWALL_FILE", ROOT / "infra" / "k8s" / "base"
                        / "services.yaml")
    calls = _no_kubectl_runs(monkeypatch)
    for overlay in ("naive", "data-parallel"):
        assert main(["cluster", overlay, "--apply"]) == 1
        err = capsys.readouterr().err
        assert "no Cloud Firewall id" in err and "nodebalancer_firewall_id" in err
    assert calls == []


def test_apply_runs_once_both_are_filled_in(real_values: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    calls = _no_kubectl_runs(monkeypatch)
    assert cluster.placeholders("gateway") == []
    assert main(["cluster", "gateway", "--apply"]) == 0
    assert [argv[1:3] for argv in calls].count(["apply", "-k"]) == 1


def test_only_the_gateway_profile_needs_the_gateway_image() -> None:
    assert [o for o in cluster.OVERLAY_NAMES if cluster.uses_gateway_image(o)] == ["gateway"]


def test_printing_needs_no_filled_in_placeholders(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cluster", "gateway"]) == 0  # the commands can be read before the values exist
