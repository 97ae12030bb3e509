"""The HTML report as a browser shows it: a real headless Chromium loads the page of a real
study, every figure decodes, and the console stays free of errors.

Usage: ``python -m pytest tests/test_report_browser.py`` (needs Chromium and its driver:
``apt-get install chromium chromium-driver`` on Debian, as ``.ci/run`` does, and selenium from
``.[test]``; set ``CHROMIUM`` and ``CHROMEDRIVER`` to use others). Skipped without them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from results.report import write_report

webdriver = pytest.importorskip("selenium.webdriver",
                                reason="selenium is not installed (pip install '.[test]')")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which(
    "chromium-browser")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium and chromedriver found (Debian: apt-get install chromium "
           "chromium-driver; or set CHROMIUM and CHROMEDRIVER)")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through the system's chromedriver (nothing is downloaded)."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root in a container, where Chromium's sandbox cannot start.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_every_figure_of_the_report_loads_in_a_browser_without_console_errors(
        browser, tiny_study: Path, tmp_path: Path) -> None:
    page = write_report([str(tiny_study)], tmp_path / "report.html")
    browser.get(page.resolve().as_uri())  # returns once the load event has fired
    images = browser.execute_script(
        "return Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
        "width: i.naturalWidth, height: i.naturalHeight, shown: i.clientWidth}))")
    assert [i["alt"] for i in images] == ["learning_curves", "accuracy_vs_batch_size",
                                          "accuracy_vs_split_ratio", "confusion_matrices",
                                          "roc_curves", "parallel_coordinates"]
    for image in images:  # decoded (a broken image has naturalWidth 0) and laid out
        assert image["complete"] and image["width"] > 100 and image["height"] > 100, image
        assert image["shown"] > 0, image
    assert browser.title.startswith("study report: tiny")
    headings = browser.execute_script(
        "return Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
    assert "hyperparameter importance for best_val_accuracy" in headings
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors


def test_a_broken_figure_and_a_console_error_would_be_caught(browser, tmp_path: Path) -> None:
    """The checks above can fail: a page with a truncated image and a script error."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img alt="x" src="data:image/png;base64,'
                    'iVBORw0KGgo="><script>undefinedFunction()</script></body></html>')
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(page.as_uri())
    (width,) = browser.execute_script("return Array.from(document.images).map(i => "
                                      "i.naturalWidth)")
    assert width == 0
    assert any("undefinedFunction" in e["message"] for e in browser.get_log("browser")
               if e["level"] == "SEVERE")
