"""The live vLLM server that `make test` runs everything against.

One real server per test session, started lazily the first time a test (marker `server` or
fixture `live`) or a solution notebook needs it, and stopped when the session ends, whether
tests passed or failed. It listens on LABS_PORT=8100 unless told otherwise, so a learner's
`make lab` server on 8000 is never touched. Notebooks run by nbmake inherit the environment,
so `labs.connect()` inside them finds this server. With LABS_BASE_URL set, no server is
started and that one is used instead.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("LABS_PORT", "8100")
# Tests run the notebooks at CI size (the same code as the full-size run a learner gets).
os.environ.setdefault("LABS_SCALE", "ci")
# Solutions must pass their own check cells (labs.checks raises instead of printing a cross).
os.environ["LABS_STRICT_CHECKS"] = "1"
# Nobody watches a notebook under nbmake: no live widgets, static plots only.
os.environ["LABS_HEADLESS"] = "1"
# This session owns every server its tests and notebooks start: a watchdog stops them if the
# session is killed (labs.serving.processes), so a cancelled CI job leaves nothing running.
os.environ["LABS_OWNER_PID"] = str(os.getpid())

import labs  # noqa: E402  (after LABS_PORT is set)
from labs.serving import server as _server  # noqa: E402

_live: labs.VLLMServer | None = None


def _ensure_live() -> labs.Connection:
    global _live
    settings = labs.Settings.from_env()
    if settings.base_url_override or labs.running_server(settings):
        return labs.connect(settings)
    _live = labs.VLLMServer("naive", settings)
    _live.start()
    return labs.connect(settings)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives JupyterLab in headless Chromium")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # Right after solutions/04, on the small-pool server it leaves: the browser tests (their
    # dashboard sends the burst 04 saved), then 06 (its prefix-cache profile is that engine:
    # labs.serving.profiles.same_engine), then 05, which starts on it too. In notebook order
    # 06 would follow 05's gateway server and cost a restart; the browser tests anywhere
    # else, two. Without the notebooks collected, the browser tests run last.
    browser = [item for item in items if item.get_closest_marker("browser") is not None]
    prefix = [item for item in items if item.path.name == "06_prefix_caching.ipynb"]
    rest = [item for item in items if item not in browser and item not in prefix]
    at = next((n + 1 for n, item in enumerate(rest)
               if item.path.name == "04_kv_cache_exhaustion.ipynb"), len(rest))
    items[:] = rest[:at] + browser + prefix + rest[at:]


def _needs_server(item: pytest.Item) -> bool:
    return item.path.suffix == ".ipynb" or item.get_closest_marker("server") is not None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _needs_server(item):
        _ensure_live()


@pytest.fixture
def live() -> labs.Connection:
    """A Connection to the session's live server (starting it if needed)."""
    return _ensure_live()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Stop our server, and whatever a notebook may have switched this port to since.
    if _live is None:
        return
    _server.stop(labs.Settings.from_env())
    _live.stop()
