"""The dashboard in a real headless browser (Debian's chromium and chromedriver, through Selenium):
open the overview, start a training from the form, see the chart gain points, stop it, resume
it, open the report, evaluate, export and download the bundle, upload a chest X-ray and see
the answer. A screenshot of each page is saved (MEDANOMALY_SCREENSHOTS=DIR keeps them there;
scripts/setup_browser.sh installs the browser; without it the test skips with the reason)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED_DATA, copy_of_demo

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="needs chromium and chromedriver (bash scripts/setup_browser.sh installs them)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(demo_ws, tmp_path_factory):
    """``main.py serve`` on a copy of the demo workspace, on a free loopback port."""
    root = tmp_path_factory.mktemp("dashboard") / "ws"
    copy_of_demo(demo_ws, root)
    port = _free_port()
    log = open(root.parent / "server.log", "w")
    process = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "serve", "--port", str(port),
                                "--workspace", str(root)], stdout=log, stderr=subprocess.STDOUT, cwd=root.parent)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, (root.parent / "server.log").read_text()
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", root
    process.terminate()
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    profile = tmp_path_factory.mktemp("chromium")  # its profile and temp files stay in the test's folder
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                 "--disable-gpu", "--no-first-run", "--disable-extensions", f"--user-data-dir={profile / 'profile'}",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": str(profile)}), options=options)
    driver.set_page_load_timeout(120)
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    chosen = os.environ.get("MEDANOMALY_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wait(driver, condition, seconds: float = 120, what: str = "") -> object:
    """``condition(driver)`` once true; a panel swapped by htmx between finding an element and
    reading it (a stale element) is read again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.25,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: condition(d))
    except TimeoutException:
        pytest.fail(f"waited {seconds:.0f} s for {what}; the page says: {driver.find_element('tag name', 'body').text[:800]}")


def _chart_points(driver) -> int:
    """Points on the live chart (read in the page's own script: one step, never a stale element)."""
    return int(driver.execute_script(
        "const c = document.querySelector('svg#metric-chart'); return c ? c.dataset.points : 0;") or 0)


def _state(driver) -> str:
    return driver.execute_script("const s = document.querySelector('#job-state strong'); "
                                 "return s ? s.textContent.trim() : '';") or ""


def _job_done(driver, what: str, seconds: float = 300) -> None:
    _wait(driver, lambda d: _state(d) in ("finished", "failed", "cancelled"), seconds, what)
    assert _state(driver) == "finished", driver.execute_script("return document.body.innerText")


def _click(driver, element_id: str) -> None:
    """Click in one step: the live panel is replaced as events come, so an element found in one
    command may be gone by the next."""
    _wait(driver, lambda d: d.execute_script(
        "const e = document.getElementById(arguments[0]); if (!e) return false; e.click(); return true;",
        element_id), 60, f"#{element_id} to click")


def test_a_training_started_watched_stopped_resumed_reported_exported_and_a_prediction(server, browser, shots) -> None:
    from selenium.webdriver.support.ui import Select

    base, root = server
    browser.get(base + "/")
    assert "demo" in browser.find_element("id", "datasets").text
    browser.save_screenshot(str(shots / "dashboard_overview.png"))

    browser.get(base + "/datasets/demo")
    assert "What was detected" in browser.page_source
    browser.save_screenshot(str(shots / "dashboard_dataset.png"))

    # start a training from the form, with small settings
    browser.get(base + "/train?dataset=demo")
    Select(browser.find_element("id", "phase")).select_by_value("supervised")
    Select(browser.find_element("id", "recipe")).select_by_value("fixed")
    for field, value in (("backbone", "resnet10t"), ("image_size", "32"), ("epochs", "8")):
        box = browser.find_element("id", field)
        box.clear()
        box.send_keys(value)
    browser.save_screenshot(str(shots / "dashboard_train_form.png"))
    _click(browser, "start-training")
    _wait(browser, lambda d: "/jobs/" in d.current_url, 30, "the job page")
    # the chart gains points live (server-sent events), without reloading the page
    _wait(browser, lambda d: _chart_points(d) >= 2, 240, "two epochs on the live chart")
    browser.save_screenshot(str(shots / "dashboard_training_live.png"))
    _click(browser, "stop")
    _wait(browser, lambda d: d.find_elements("id", "resume"), 240, "the stop, and the resume button")
    stopped_at = _chart_points(browser)
    assert 2 <= stopped_at < 8 and _state(browser) == "cancelled"  # stopped cleanly, after its epoch
    browser.save_screenshot(str(shots / "dashboard_training_stopped.png"))

    _click(browser, "resume")
    _wait(browser, lambda d: d.find_elements("id", "open-run"), 300, "the resumed run to finish")
    assert _chart_points(browser) == 8  # the resumed epochs follow the stopped ones
    _click(browser, "open-run")
    _wait(browser, lambda d: d.find_elements("id", "verdict"), 30, "the run's page")
    run_url = browser.current_url

    _click(browser, "evaluate")
    _job_done(browser, "the evaluation")
    browser.get(run_url)
    metrics = browser.find_element("id", "metrics").text
    assert "ROC AUC" in metrics and " to " in metrics  # with its 95% interval
    assert browser.find_elements("css selector", ".plots img")
    browser.save_screenshot(str(shots / "dashboard_run_report.png"))

    _click(browser, "export")
    _job_done(browser, "the export", 300)
    browser.get(run_url)
    _click(browser, "download")
    zipped = _wait(browser, lambda d: next((p for p in d.downloads.glob("*.zip")), None), 60, "the bundle's download")
    with zipfile.ZipFile(zipped) as bundle:
        names = bundle.namelist()
    assert any(n.endswith(".onnx") for n in names) and any(n.endswith("signature.json") for n in names)

    browser.get(base + "/checkpoints")
    assert "complete" in browser.find_element("id", "checkpoints").text
    browser.save_screenshot(str(shots / "dashboard_checkpoints.png"))

    # upload a chest X-ray: a real one where ../shared is beside the clone, else one of the demo's
    real = SHARED_DATA / "xray" / "chest_samples"
    xray = next(iter(sorted(real.glob("*.jpg"))), None) if real.is_dir() else None
    xray = xray or next(p for p in sorted((root / "data" / "raw").rglob("*.png")) if "chest" in str(p))
    browser.get(base + "/predict")
    browser.find_element("id", "file").send_keys(str(xray))
    browser.find_element("css selector", "input[name=allow_ood]").click()
    _click(browser, "predict")
    _wait(browser, lambda d: d.find_elements("id", "answers"), 180, "the prediction")
    answer = browser.find_element("id", "answers").text
    assert "outside" in answer or "anomaly" in answer or "normal" in answer
    assert xray.stem not in browser.page_source  # the file's own name is never shown or kept
    browser.save_screenshot(str(shots / "dashboard_predict.png"))
    assert not list((root / "data" / "uploads").iterdir())

    for page in ("backups", "system"):
        browser.get(f"{base}/{page}")
        browser.save_screenshot(str(shots / f"dashboard_{page}.png"))
    assert len(list(shots.glob("dashboard_*.png"))) >= 10
