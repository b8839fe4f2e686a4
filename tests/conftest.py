"""Test configuration: hypothesis profiles, torch settings, the service tests' early servers."""

from __future__ import annotations

import os
from collections.abc import Iterator

# The Hub tests' server speaks the git-LFS upload protocol, not Xet; the Hub client reads
# these when it is imported, and subprocesses inherit them.
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")  # see torch.set_num_threads below

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis profiles and torch's threads, in every process that runs tests (not in
    pytest-xdist's controller, which only hands tests out: it starts faster without them)."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "dev",
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    # CI runs the same examples every time, so a landing is never decided by luck.
    settings.register_profile("ci", parent=settings.get_profile("dev"), derandomize=True)
    settings.register_profile("thorough", parent=settings.get_profile("dev"), max_examples=300)
    settings.load_profile(
        os.environ.get("CANON_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
    )
    # One torch thread per process unless OMP_NUM_THREADS says otherwise: the tests'
    # networks are small, so a second thread buys little, and on a busy two-core machine
    # OpenMP threads waiting on each other make torch several times slower. Set in the
    # environment before torch is imported, so subprocesses (`canon serve`, `python -m
    # canon`) get it too.
    torch.set_num_threads(min(2, torch.get_num_threads()))


def _may_run(item: pytest.Item) -> bool:
    """False for a test marked skip, or skipif with a condition already known to be true."""
    if item.get_closest_marker("skip") is not None:
        return False
    return not any(m.args and m.args[0] is True for m in item.iter_markers("skipif"))


@pytest.fixture(scope="session", autouse=True)
def early_servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Start the `canon serve` processes of the service test modules in this run right away:
    each spends seconds importing torch, FastAPI and canon, which then overlaps the tests
    before them (on the other core) instead of being waited for. The modules' fixtures take
    them over (servers.launch); any left untaken are killed at the end."""
    from servers import launch_early, stop_early

    # Under pytest-xdist every worker collects every test but runs only those it is handed,
    # which it cannot know in advance; the workers themselves provide the overlap then.
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        modules = {item.path.stem for item in request.session.items if _may_run(item)}
        launch_early(modules, tmp_path_factory)
    yield
    stop_early()
