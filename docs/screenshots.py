"""The screenshots in docs/: a report in headless Chromium, and a phase notebook in JupyterLab with its panel.

    .venv/bin/python docs/screenshots.py        # writes docs/report.png and docs/jupyterlab.png

The report is the committed pi0 full run on the H200 (benchmarks/results/pi0-full, re-rendered), the
notebook is notebooks/01-cudagraph.ipynb run cell by cell in a real JupyterLab on localhost, so the
panel the screenshot shows is the one its parameters cell builds.
"""
import os
import secrets
import socket
import subprocess
import tempfile
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playbook import report  # noqa: E402
from playbook.browser import chromium  # noqa: E402


def report_shot(run_dir, png):
    report.write(run_dir)
    with chromium(1400, 1250) as driver:
        driver.get((Path(run_dir).resolve() / "report.html").as_uri())
        time.sleep(0.5)
        driver.save_screenshot(str(png))


def lab_shot(notebook, png):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}", "--LabApp.news_url=",
           f"--LabApp.workspaces_dir={tempfile.mkdtemp(prefix='playbook-lab-')}"]
    proc = subprocess.Popen(cmd + (["--allow-root"] if os.geteuid() == 0 else []), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys
        with chromium(1500, 1100) as driver:
            driver.get(f"http://127.0.0.1:{port}/lab/tree/{notebook}?token={token}")
            for _ in range(180):
                if driver.find_elements("css selector", ".jp-Notebook .jp-Cell") and \
                        "Idle" in driver.find_element("tag name", "body").text:
                    break
                time.sleep(0.5)
            time.sleep(1.0)
            for button in driver.find_elements("css selector", ".jp-toast-button"):
                if button.text.strip() == "No":    # "get notified about official Jupyter news?"
                    button.click()
            # select the parameters cell by its prompt, then run it and the panel's cell
            driver.find_elements("css selector", ".jp-Notebook .jp-CodeCell .jp-InputPrompt")[0].click()
            ActionChains(driver).send_keys(Keys.ESCAPE).perform()
            for _ in range(2):
                ActionChains(driver).key_down(Keys.SHIFT).send_keys(Keys.ENTER).key_up(Keys.SHIFT).perform()
                time.sleep(1.0)
            for _ in range(120):                               # the panel's widgets rendered
                if driver.find_elements("css selector", ".jupyter-widgets.widget-button, .jupyter-button"):
                    break
                time.sleep(0.5)
            time.sleep(1.5)
            driver.execute_script("const c = document.querySelectorAll('.jp-Notebook .jp-Cell');"
                                  "c[1].scrollIntoView({block: 'start'})")
            time.sleep(0.5)
            driver.save_screenshot(str(png))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    out = ROOT / "docs"
    report_shot(ROOT / "benchmarks" / "results" / "pi0-full", out / "report.png")
    lab_shot("01-cudagraph.ipynb", out / "jupyterlab.png")
    print(out / "report.png", out / "jupyterlab.png")
