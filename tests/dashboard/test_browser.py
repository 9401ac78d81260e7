"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

Skips locally when /usr/bin/chromium (or its driver, or selenium) is missing, and fails
when CI is set, like the PostgreSQL tests: CI must install ``chromium`` and
``chromium-driver``. Screenshots land in tests/artifacts/ (gitignored).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from hpo_service.api.app import create_app
from hpo_service.client import HPOClient
from hpo_service.config import Settings
from hpo_service.db.database import Database
from tests.conftest import Keys
from tests.dashboard.conftest import make_scaled_study, make_study
from tests.local_server import free_port

# A browser loads a page's scripts, styles and data at once: concurrent reads that one
# shared test connection cannot serve, so these tests commit for real.
pytestmark = pytest.mark.committed

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
]


def require_browser() -> None:
    """Skip (locally) or fail (in CI) without Chromium, its driver, or selenium."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("python package selenium")
    if not missing:
        return
    message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def live_server(db: Database) -> Iterator[str]:
    """The real app served by uvicorn on a free local port, in a thread."""
    require_browser()
    port = free_port()
    settings = Settings(database_url=db.url, reclaim_interval_seconds=3600)
    config = uvicorn.Config(
        create_app(settings, db=db), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(live_server: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="hpo-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*LAUNCH_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def wait_for(driver: Any, css: str, timeout: float = 30) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, css))
    )


def shot(driver: Any, name: str, backend: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}-{backend}.png"))


def test_login_open_a_study_and_see_the_plots(
    browser: Any,
    live_server: str,
    db: Database,
    keys: Keys,
    client: HPOClient,
    worker: HPOClient,
    outsider: HPOClient,
) -> None:
    from selenium.webdriver.common.by import By

    backend = "sqlite" if db.is_sqlite else "postgres"
    make_study(client, worker)
    scaled = make_scaled_study(client)
    theirs = outsider.create_study(
        {
            "name": "globex-secret",
            "objective": {"metric": "m"},
            "space": {"parameters": [{"name": "x", "type": "float", "low": 0, "high": 1}]},
        }
    )["id"]

    browser.get(f"{live_server}/ui/")
    wait_for(browser, "#login-form")
    browser.find_element(By.ID, "key").send_keys(keys.client)
    browser.find_element(By.ID, "login-submit").click()
    table = wait_for(browser, "#studies")
    assert "proxy-w256" in table.text
    assert "mup-proxy" in table.text
    assert "globex-secret" not in browser.page_source
    shot(browser, "studies", backend)

    browser.find_element(By.LINK_TEXT, "proxy-w256").click()
    for chart in ("#chart-history", "#chart-parallel"):
        wait_for(browser, f'{chart}[data-rendered="true"] svg')
    slices = browser.find_elements(By.CSS_SELECTOR, '#chart-slices .chart[data-rendered="true"]')
    assert len(slices) == 5  # one per parameter of the space
    for element in slices:
        assert element.find_elements(By.CSS_SELECTOR, "svg path")
    history_svg = browser.find_element(By.CSS_SELECTOR, "#chart-history svg")
    assert len(history_svg.find_elements(By.CSS_SELECTOR, "path")) > 5  # points and the line
    assert browser.find_elements(By.CSS_SELECTOR, "#trials tbody tr")
    shot(browser, "study", backend)

    browser.get(f"{live_server}/ui/studies/{scaled}")
    wait_for(browser, '#chart-history[data-rendered="true"] svg')
    assert "lr.hidden" in browser.find_element(By.ID, "extrapolation").text
    shot(browser, "study-scaled", backend)

    browser.get(f"{live_server}/ui/workers")
    assert "w9" in wait_for(browser, "#workers").text
    shot(browser, "workers", backend)
    assert console_errors(browser) == []

    # Another tenant's study does not exist for this session.
    browser.get(f"{live_server}/ui/studies/{theirs}")
    assert "globex-secret" not in browser.page_source
    assert "not found" in browser.page_source
