"""`python -m labs cluster`: the kubectl commands it prints and runs, without a cluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from labs import cluster
from labs.__main__ import main
from labs.errors import ClusterError

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # printed paths are relative to where the command runs


def _shown(overlay: str, **kwargs: object) -> list[str]:
    return [step.shown for step in cluster.steps(overlay, **kwargs)]


def test_bounded_is_the_articles_apply_script() -> None:
    assert _shown("bounded") == [
        "kubectl -n llm delete deployment/gateway service/gateway "
        "networkpolicy/allow-engine-from-gateway horizontalpodautoscaler/vllm "
        "networkpolicy/allow-engine-metrics --ignore-not-found",
        "kubectl apply -k infra/k8s/overlays/bounded",
        "kubectl -n llm rollout status deployment/vllm --timeout=25m",
    ]


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
    assert [argv[0] for argv, _ in calls] == ["/opt/bin/kubectl"] * 2  # no rollout after it
    assert calls[1][0][1:] == ["apply", "-k", "infra/k8s/overlays/bounded"]


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
    assert "deployment/gateway" in out  # the single gateway goes; each replica has its own
