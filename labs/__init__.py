"""labs: the toolkit behind the vLLM serving workshop.

Notebooks import only what is listed in `__all__`; tests/test_public_api.py keeps it honest.
"""

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
from .profiles import PROFILES, Profile, get_profile
from .server import ServerRecord, VLLMServer, ensure_server, running_server, serve, stop
from .settings import Settings
from .client import connect, Connection
from .workload import Burst, Closed, Poisson, Workload
from .results import SLO, RunResult
from . import (article, calibration, ceiling, checks, experiments, loadgen, metrics, server,
               servermodel, simulate, sizing)

__all__ = [
    "ConfigError", "LabsError", "ModelError", "PortInUse", "ServerAlreadyRunning",
    "ServerDied", "ServerError", "ServerNotRunning",
    "PROFILES", "Profile", "get_profile",
    "ServerRecord", "VLLMServer", "ensure_server", "running_server", "serve", "stop",
    "Settings", "connect", "Connection",
    "Burst", "Closed", "Poisson", "Workload", "SLO", "RunResult",
    "article", "calibration", "ceiling", "checks", "experiments", "loadgen", "metrics", "server",
    "servermodel", "simulate", "sizing",
]

from .notebook import install as _install_notebook_errors

_install_notebook_errors()
