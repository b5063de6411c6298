"""The report and JupyterLab as people use them: report.html in headless Chromium, and JupyterLab
started on a free localhost port, serving a phase notebook through its API with a token."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from playbook.errors import PlaybookError

ROOT = Path(__file__).resolve().parent.parent


def _chromium():
    from playbook.browser import binaries
    try:
        binaries()
    except PlaybookError as e:
        if os.environ.get("PLAYBOOK_REQUIRE_BROWSER"):      # CI: a browser test never passes by skipping
            pytest.fail(str(e))
        pytest.skip(str(e))
    from playbook.browser import chromium
    return chromium


@pytest.fixture(scope="module")
def missed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "tiny"
    done = subprocess.run([sys.executable, "-m", "playbook", "run", "--workload", "tiny", "--device", "cpu",
                           "--iters", "10", "--warmup", "2", "--target-ms", "0.001", "--out", str(out),
                           "--phases", "baseline,cudagraph,verify"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


VISIBLE = """const r = arguments[0].getBoundingClientRect(), s = getComputedStyle(arguments[0]);
return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none';"""


def test_report_html_in_headless_chromium(missed_run):
    chromium = _chromium()
    with chromium(1400, 1000) as driver:
        driver.get((missed_run / "report.html").as_uri())
        find = driver.find_element
        verdict = find("id", "verdict")
        assert driver.execute_script(VISIBLE, verdict) and verdict.text.startswith("Target missed")
        table = find("id", "progress")
        assert driver.execute_script(VISIBLE, table)
        header = [th.text for th in table.find_elements("css selector", "tr:first-child th")]
        assert header == ["Phase", "p50 (ms)", "vs Baseline", "vs Target", "Next Action", "Time (s)"]
        body = [tr.text for tr in table.find_elements("css selector", "tr")[1:]]
        assert [r.split("\n")[0].split(" (")[0] for r in body] == ["0 baseline", "1 cudagraph", "7 verify"]
        images = driver.find_elements("tag name", "img")
        assert len(images) >= 5                 # waterfall, p50, categories, a timeline per measured phase
        for img in images:
            driver.execute_script("arguments[0].scrollIntoView()", img)
            assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", img), \
                img.get_attribute("alt")
            assert driver.execute_script(VISIBLE, img), img.get_attribute("alt")
        assert img.get_attribute("src").startswith("data:image/png;base64,")
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(u.startswith(("file:", "data:")) for u in loaded), loaded       # nothing from the network
        assert not driver.find_elements("tag name", "script")
        link = find("css selector", "#notebooks a[href='notebooks/01-cudagraph.html']")
        link.click()
        assert driver.current_url.endswith("notebooks/01-cudagraph.html")
        text = find("tag name", "body").text
        assert "Phase 1: cudagraph" in text and "Phase 1 cudagraph: kept" in text.replace("`", "")
        assert "run_and_show(" not in text                                     # code cells hidden
        assert driver.find_elements("css selector", "img[src^='data:image/png']")  # the phase's own plots


def test_report_md_carries_the_same_content(missed_run):
    md = (missed_run / "report.md").read_text()
    assert "Target missed" in md and "| Phase | p50 (ms) | vs Baseline | vs Target | Next Action | Time (s) |" in md
    for fig in ("waterfall.png", "p50.png", "categories.png", "timeline-01-cudagraph.png"):
        assert f"(figures/{fig})" in md and (missed_run / "figures" / fig).stat().st_size > 1000
    assert "[notebooks/01-cudagraph.html](notebooks/01-cudagraph.html)" in md
    assert "## Environment" in md


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    port, token = free_port(), secrets.token_hex(16)
    log_path = tmp_path_factory.mktemp("lab") / "jupyter.log"
    log = open(log_path, "w")
    jupyter = Path(sys.executable).with_name("jupyter")
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={ROOT / 'notebooks'}",
                             "--ServerApp.port_retries=0", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
                             "jupyterlab.NeverCheckForUpdate", f"--LabApp.workspaces_dir={log_path.parent}"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),
                            stdout=subprocess.DEVNULL, stderr=log, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    base = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                pytest.fail("jupyter lab exited: " + log_path.read_text()[-2000:])
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("jupyter lab did not answer within 60 s")
    yield base, token
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def get(url, token=None):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.read()


def test_jupyterlab_serves_a_phase_notebook_with_its_token(lab):
    base, token = lab
    status, body = get(f"{base}/api/contents/02-attention.ipynb?content=1", token)
    model = json.loads(body)
    assert status == 200 and model["type"] == "notebook"
    cells = model["content"]["cells"]
    params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    assert "interactive = True" in params["source"] and "knobs_to_try = []" in params["source"]
    assert any('phase_panel("attention"' in c["source"] for c in cells if c["cell_type"] == "code")
    with pytest.raises(urllib.error.HTTPError) as denied:          # no token, no notebook
        get(f"{base}/api/contents/02-attention.ipynb?content=1")
    assert denied.value.code == 403
    status, page = get(f"{base}/lab/tree/02-attention.ipynb", token)
    assert status == 200 and b"JupyterLab" in page


def test_a_notebook_opens_in_jupyterlab_in_chromium(lab):
    chromium = _chromium()
    base, token = lab
    with chromium(1400, 900) as driver:
        driver.get(f"{base}/lab/tree/00-baseline.ipynb?token={token}")
        deadline = time.time() + 90
        cells = []
        while time.time() < deadline and len(cells) < 4:
            cells = driver.find_elements("css selector", ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
            time.sleep(0.5)
        assert len(cells) == 4, "the notebook's four cells did not render in JupyterLab"
        shown = driver.find_element("css selector", ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").text
        assert "Phase 0: baseline" in shown and "interactive = True" in shown
