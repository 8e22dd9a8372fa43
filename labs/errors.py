"""One exception tree for the whole toolkit.

Every failure a learner can meet is raised as a subclass of `LabsError` whose message is one
sentence saying what happened and what to do. The CLI prints that sentence and exits 1; a
notebook shows it without a wall of traceback (see `labs.course.notebook`).

    LabsError
    ├── ConfigError            bad setting: unknown profile, bad number, unknown GPU
    ├── ServerError
    │   ├── ServerAlreadyRunning
    │   ├── PortInUse
    │   ├── ServerDied         the process exited during start-up (carries the log tail)
    │   ├── ServerStartTimeout
    │   └── ServerNotRunning   a client found nothing at the URL
    ├── ModelError
    │   └── DiskSpaceError
    ├── GatewayError
    ├── ResultsError           no saved results where the results card looks for them
    └── ClusterError           kubectl missing or failing while a cluster switches profile
"""

from __future__ import annotations


class LabsError(Exception):
    """Base of every error the course raises on purpose."""


class ConfigError(LabsError, ValueError):
    """A setting or argument that cannot work; the message lists the valid choices."""


class ServerError(LabsError):
    """Something about the vLLM server process."""


class ServerAlreadyRunning(ServerError):
    pass


class PortInUse(ServerError):
    pass


class ServerDied(ServerError):
    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message + (f"\n--- last log lines ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


class ServerStartTimeout(ServerError):
    pass


class ServerNotRunning(ServerError):
    pass


class ModelError(LabsError):
    """The model could not be found, built or verified."""


class DiskSpaceError(ModelError):
    pass


class GatewayError(LabsError):
    pass


class ResultsError(LabsError):
    """Saved results that cannot be found or read (the results card, `python -m labs card`)."""


class ClusterError(LabsError):
    """A kubectl step of `python -m labs cluster` could not run or failed."""
