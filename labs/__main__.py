"""`python -m labs VERB`: the course's verbs for shells, the Makefile and infra.

Every expected failure is a LabsError; it is printed as one `error: ...` line and the
command exits 1 (2 for bad usage, as argparse does). Nothing else prints a traceback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence

from .card import add_cli as _add_card_cli
from .deploy.cluster import add_cli as _add_cluster_cli
from .deploy.manifests import add_cli as _add_infra_cli
from .errors import LabsError
from .load.loadgen import add_cli as _add_bench_cli
from .model.calibration import add_cli as _add_calibrate_cli
from .model.ceiling import add_cli as _add_ceiling_cli
from .model.predict import add_cli as _add_predict_cli
from .serving import cpu_model, server
from .serving.profiles import DEFAULT_PROFILE, PROFILES, get_profile
from .settings import Settings


def _cmd_serve(args: argparse.Namespace) -> int:
    get_profile(args.profile)  # fail on a bad name before anything else
    record = server.serve(args.profile, timeout_s=args.timeout)
    print(f"serving {record.served_model} (profile {record.profile}, pid {record.pid}), "
          f"log {record.log_path}", file=sys.stderr)
    print(record.api_url)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    record = server.stop()
    if record is None:
        print("no vLLM server is running on this port; nothing to stop")
    else:
        print(f"stopped vLLM server pid {record.pid} (profile {record.profile})")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    record = server.running_server()
    if record is None:
        print(f"not running (port {Settings.from_env().port}); start one with "
              "`python -m labs serve`")
        return 3
    print(f"running: profile {record.profile}, model {record.served_model}, "
          f"pid {record.pid}, {record.api_url}, log {record.log_path}")
    return 0


def _cmd_lab(args: argparse.Namespace) -> int:
    """Serve (or reuse) the server, run JupyterLab, and stop the server we started on exit."""
    started = None
    record = server.running_server()
    if record:
        print(f"lab: reusing the running server (profile {record.profile}, pid {record.pid})",
              file=sys.stderr)
    else:
        record = started = server.serve(args.profile, owner_pid=os.getpid())
    # Servers the notebooks start (ensure_server) belong to this command too: a watchdog
    # stops them when it ends, even killed (labs.serving.processes).
    os.environ[server.OWNER_ENV] = str(os.getpid())
    print(f"lab: vLLM at {record.api_url} (log {record.log_path}); opening JupyterLab. "
          "Ctrl-C here stops both.", file=sys.stderr)
    cmd = [sys.executable, "-m", "jupyter", "lab", "notebooks"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # workshop VMs and containers often run as root
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
    finally:
        if started is not None:
            server.stop()
            print(f"lab: stopped the vLLM server (pid {started.pid})", file=sys.stderr)


def _cmd_model(args: argparse.Namespace) -> int:
    folder = cpu_model.ensure_model(Settings.from_env().models_dir,
                                   log=lambda line: print(line, file=sys.stderr))
    print(folder)
    return 0


def _cmd_profiles(args: argparse.Namespace) -> int:
    backend = Settings.from_env().backend
    for p in PROFILES.values():
        print(f"{p.name:14} {p.summary}\n{'':14} {backend} flags: {' '.join(p.flags(backend))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m labs", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = verbs.add_parser("serve", help="start a vLLM server; returns when it is healthy")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"one of: {', '.join(PROFILES)} (default {DEFAULT_PROFILE})")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for /health")
    p.set_defaults(func=_cmd_serve)

    p = verbs.add_parser("lab", help="serve (or reuse) the server and open JupyterLab")
    p.add_argument("--profile", default=DEFAULT_PROFILE)
    p.set_defaults(func=_cmd_lab)

    verbs.add_parser("stop", help="stop the server started by `serve`").set_defaults(func=_cmd_stop)
    verbs.add_parser("status", help="is a server running? (exit 3 if not)").set_defaults(
        func=_cmd_status)
    verbs.add_parser("model", help="build (once) and print the embedded model folder"
                     ).set_defaults(func=_cmd_model)
    verbs.add_parser("profiles", help="list the serving profiles and their flags"
                     ).set_defaults(func=_cmd_profiles)
    _add_bench_cli(verbs)
    _add_calibrate_cli(verbs)
    _add_predict_cli(verbs)
    _add_ceiling_cli(verbs)
    _add_card_cli(verbs)
    _add_infra_cli(verbs)
    _add_cluster_cli(verbs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
