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
    "PROFILES": "serving.profiles", "Profile": "serving.profiles",
    "get_profile": "serving.profiles", "ServerRecord": "serving.server",
    "VLLMServer": "serving.server", "ensure_server": "serving.server",
    "running_server": "serving.server", "serve": "serving.server", "stop": "serving.server",
    "Settings": "settings", "connect": "serving.connect", "Connection": "serving.connect",
    "Burst": "workload", "Closed": "workload", "Poisson": "workload",
    "Workload": "workload", "SLO": "results.records", "RunResult": "results.records",
    "show": "course.tables",
}
# The modules notebooks reach as `labs.<name>`: the short name -> where it lives
_SUBMODULES = {
    "article": "model.article", "admission_runs": "course.admission_runs",
    "checks": "course.checks", "diagrams": "course.diagrams",
    "experiments": "course.experiments", "lessons": "course.lessons",
    "predictions": "course.predictions", "calibration": "model.calibration",
    "ceiling": "model.ceiling", "cost": "model.cost", "kvwait": "model.kvwait",
    "prefixcache": "model.prefixcache", "simulate": "model.simulate", "sizing": "model.sizing",
    "stepsplit": "model.stepsplit", "timebudget": "model.timebudget", "steps": "model.steps",
    "loadgen": "load.loadgen", "clientretries": "load.clientretries",
    "metrics": "observe.metrics", "widgets": "observe.widgets", "server": "serving.server",
    "plots": "course.plots", "predict": "model.predict",
}

__all__ = [
    "ConfigError", "LabsError", "ModelError", "PortInUse", "ServerAlreadyRunning",
    "ServerDied", "ServerError", "ServerNotRunning",
    *_LAZY_NAMES, *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    else:
        raise AttributeError(f"module 'labs' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


from .course.notebook import install as _install_notebook_errors  # noqa: E402

_install_notebook_errors()
