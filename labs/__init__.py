"""labs: the toolkit behind the vLLM serving workshop.

Notebooks import only what is listed in `__all__`; tests/test_public_api.py keeps it honest.

Names are loaded on first use (PEP 562), not at `import labs`: the gateway runs in a small
image as `python -m labs.gateway`, and importing the package for it must not pull in pandas,
numpy and matplotlib, which only the notebooks' side needs.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    ConfigError,
    LabsError,
    ModelError,
    PortInUse,
    ServerAlreadyRunning,
    ServerDied,
    ServerError,
    ServerNotRunning,
)

# name -> the module (relative to labs) that defines it
_LAZY_NAMES = {
    "PROFILES": "profiles", "Profile": "profiles", "get_profile": "profiles",
    "ServerRecord": "server", "VLLMServer": "server", "ensure_server": "server",
    "running_server": "server", "serve": "server", "stop": "server",
    "Settings": "settings", "connect": "client", "Connection": "client",
    "Burst": "workload", "Closed": "workload", "Poisson": "workload", "Workload": "workload",
    "SLO": "results", "RunResult": "results", "show": "tables",
}
_SUBMODULES = ("article", "calibration", "ceiling", "checks", "cost", "experiments",
               "kvwait", "lessons", "loadgen", "metrics", "prefixcache", "server", "servermodel",
               "simulate", "sizing", "stepsplit", "admission_runs", "predictions", "timebudget",
               "diagrams")

__all__ = [
    "ConfigError", "LabsError", "ModelError", "PortInUse", "ServerAlreadyRunning",
    "ServerDied", "ServerError", "ServerNotRunning",
    *_LAZY_NAMES, *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'labs' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


from .notebook import install as _install_notebook_errors  # noqa: E402

_install_notebook_errors()
