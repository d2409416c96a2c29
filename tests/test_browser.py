"""One real browser run: `streamlit run app.py` driven by Chromium through Playwright.

Needs Debian's chromium (`apt-get install -y chromium`) and python playwright; skipped otherwise.
Writes test-artifacts/decision_cells.png (and, with JACVIZ_UPDATE_SCREENSHOT=1, the README screenshot
docs/screenshot_cells.png)
and prints the measured cold-start time (server start to the decision-cell figures drawn).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        # .ci/run installs chromium and sets JACVIZ_REQUIRE_BROWSER=1: there a missing browser fails
        (pytest.fail if os.environ.get("JACVIZ_REQUIRE_BROWSER") else pytest.skip)(
            f"{CHROMIUM} missing (apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        (pytest.fail if os.environ.get("JACVIZ_REQUIRE_BROWSER") else pytest.skip)(
            "the playwright package is missing (pip install -r requirements-test.txt)")
    port = _free_port()
    env = dict(os.environ)
    env.setdefault("JACVIZ_DATA", str(ROOT.parent / "shared" / "data"))
    user = tmp_path_factory.mktemp("user_checkpoints")  # what the Train page writes stays out of the repository
    env["JACVIZ_USER_CHECKPOINTS"] = str(user)
    t0 = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 120)
        yield {"url": f"http://127.0.0.1:{port}/", "t0": t0, "proc": proc, "user_dir": user}
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        if "Traceback" in (out or ""):
            print(out[-5000:])


def test_decision_cells_in_a_real_browser(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1250})
        t_nav = time.time()
        page.goto(server["url"] + "?sample=0&plane=random&seed=0", timeout=120_000)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=180_000)
        # wait for the script run to finish (no "running" indicator) so the page is complete
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)
        t_drawn = time.time()
        page.wait_for_timeout(1500)
        cold = t_drawn - server["t0"]
        print(f"\ncold start (server start -> figures drawn): {cold:.1f} s; "
              f"page load -> figures drawn: {t_drawn - t_nav:.1f} s")

        assert page.locator("[data-testid='stException']").count() == 0
        errors = page.locator("[data-testid='stAlertContentError']")
        assert errors.count() == 0, errors.all_inner_texts()
        n_svg = page.locator(".js-plotly-plot .main-svg").count()
        assert n_svg >= 1
        # heatmap images / contour paths actually drawn inside the plot area
        drawn = page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .contourlayer path, "
                             ".js-plotly-plot .imagelayer image")
        assert drawn.count() >= 1
        page.screenshot(path=str(ARTIFACTS / "decision_cells.png"), full_page=False)

        # changing the sample: type a new index, time until the figure is redrawn
        box = page.get_by_label("Test sample index (0-9999)")
        box.fill("7")
        t_change = time.time()
        box.press("Enter")
        page.wait_for_function("() => document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=10_000)
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000)
        print(f"sample change -> figures redrawn: {time.time() - t_change:.1f} s")
        took = page.get_by_text("Grids, radii and").first.inner_text()
        print("server-side compute for the new sample:", took[took.find("took"):took.find(" s on") + 2])
        assert "sample=7" in page.url
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()
    if os.environ.get("JACVIZ_UPDATE_SCREENSHOT") == "1":  # opt in: a test run leaves tracked files alone
        docs = ROOT / "docs"
        docs.mkdir(exist_ok=True)
        shutil.copyfile(ARTIFACTS / "decision_cells.png", docs / "screenshot_cells.png")


def test_leaving_the_train_page_mid_training_saves_the_iteration_it_reached(server):
    """A click elsewhere ends the Train page's script with Streamlit's StopException, raised in the
    progress callback: the run saves its resume file at the iteration it reached (a multiple of 20, the
    step events), written after the click, not only at the last periodic save (every 600-iteration epoch)."""
    import torch
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1250})
        page.goto(server["url"] + "train", timeout=120_000)
        page.get_by_text("iterations", exact=True).click()
        page.get_by_label("Iterations", exact=True).fill("20000")
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()
        # click at iteration 40 or later, well before the first evaluation and periodic save (600)
        page.wait_for_function("() => { const m = /iteration ([0-9,]+)\\//.exec(document.body.innerText);"
                               " return m && parseInt(m[1].replace(/,/g, '')) >= 40; }", timeout=120_000, polling=100)
        t_click = time.time()
        page.get_by_role("link", name="Robustness").first.click()
        files: list = []
        end = time.time() + 60
        while time.time() < end and not files:  # a file written after the click
            files = [f for f in Path(server["user_dir"]).glob("*.resume.pt") if f.stat().st_mtime >= t_click - 0.5]
            time.sleep(0.2)
        assert len(files) == 1, list(Path(server["user_dir"]).iterdir())
        saved = torch.load(files[0], weights_only=True)  # written by an atomic rename: complete once it is there
        print(f"\nleft the Train page at iteration {saved['iteration']}: resume file written "
              f"{files[0].stat().st_mtime - t_click:.2f} s after the click")
        assert saved["iteration"] >= 40 and saved["iteration"] % 20 == 0
        assert page.locator("[data-testid='stException']").count() == 0
        browser.close()
