"""The web view of ``canon serve`` in a real headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Server, launch

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="the browser tests need Debian's chromium at /usr/bin/chromium"
)


@pytest.fixture(scope="module")
def spawned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server process on a copy of the embedded default zoo, started (at the beginning of the
    session: see tests/conftest.py) but maybe not answering yet."""
    running = launch("browser", tmp_path_factory)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(spawned: Server, browser: Any) -> Server:
    """The server, answering (Chromium launches while the server process starts up)."""
    spawned.wait_ready()
    return spawned


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (the system's, not one Playwright downloads)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page that fails the test on any script or console error."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()
    assert not errors, errors


@pytest.mark.slow  # starts a server on the default zoo and a browser
def test_entry_list_renders_the_default_zoo(server: Server, page: Any, tmp_path: Path) -> None:
    """The front page lists the nine default entries with their tags and errors; links work."""
    page.goto(server.url + "/")
    rows = page.locator("table.entries tbody tr")
    assert rows.count() == 9
    first = rows.first.inner_text()
    assert "adv-0" in first and "algo=adv" in first and "%" in first
    page.screenshot(path=str(tmp_path / "entries.png"), full_page=True)
    page.select_option("select[name=kind]", "solution")
    page.fill("input[name=tag]", "algo=rsgd")
    page.click("form[action='/'] button")
    assert page.locator("table.entries tbody tr").count() == 3
    page.click("text=rsgd-1")
    assert page.locator("h1").inner_text() == "rsgd-1"
    assert "download safetensors" in page.content()


@pytest.mark.slow  # computes a comparison in the server, then renders it
def test_comparison_page_shows_its_figure(server: Server, page: Any, tmp_path: Path) -> None:
    """The comparison page computes the pair as a job, reloads, then shows the figure."""
    page.goto(server.url + "/compare?a=sgd-0&b=sgd-2&points=9")
    figure = page.locator("img.figure")
    figure.wait_for(state="visible", timeout=90_000)  # the page reloads itself until done
    page.wait_for_load_state("load")
    width = figure.evaluate("img => img.complete ? img.naturalWidth : 0")
    assert width > 100
    assert "geodesic" in page.locator("table.facts").nth(1).inner_text()
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert (tmp_path / "compare.png").stat().st_size > 10_000


@pytest.mark.slow  # computes a comparison in the server, then renders it
def test_table_page_is_a_heatmap(server: Server, page: Any) -> None:
    """The barrier table of a selection renders as a coloured heatmap linking to comparisons."""
    page.goto(server.url + "/table?tag=algo=sgd&path=linear&points=9")
    cells = page.locator("table.heatmap td:not(.diag)")
    cells.first.wait_for(state="visible", timeout=90_000)
    assert cells.count() == 6
    assert "rgb(" in (cells.first.get_attribute("style") or "")
    cells.first.locator("a").click()
    page.locator("img.figure").wait_for(state="visible", timeout=90_000)
