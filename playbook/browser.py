"""Headless Chromium for the tests and the docs' screenshots: the report and JupyterLab as people see them.

    with chromium(width=1400, height=1000) as driver:
        driver.get(Path("reports/<run>/report.html").resolve().as_uri())
        driver.save_screenshot("docs/report.png")

Debian's chromium and chromium-driver (`make test` installs them where it can: root with apt-get).
Selenium talks to /usr/bin/chromedriver directly: nothing is downloaded. The flags keep Chromium off
the network (no background fetches, no component updates), which this machine's closed network needs.
"""
import contextlib
import os
import shutil
import tempfile

from .errors import PlaybookError

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def binaries():
    """(chromium, chromedriver) paths, or a PlaybookError naming how to install them."""
    browser = os.environ.get("PLAYBOOK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("PLAYBOOK_CHROMEDRIVER") or shutil.which("chromedriver")
    if not browser or not driver:
        raise PlaybookError("headless Chromium not found: install Debian's chromium and chromium-driver "
                            "(apt-get install chromium chromium-driver; `make test` does it as root), or set "
                            "PLAYBOOK_CHROMIUM and PLAYBOOK_CHROMEDRIVER")
    return browser, driver


@contextlib.contextmanager
def chromium(width=1400, height=1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver_path = binaries()
    profile = tempfile.mkdtemp(prefix="playbook-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS + (f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
