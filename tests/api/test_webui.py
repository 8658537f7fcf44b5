"""The web page in headless Chromium (Debian's, never a downloaded one), driven by playwright.

Skips unless FACEGATE_TEST_CHROMIUM (CI) or /usr/bin/chromium exists and playwright is
installed. Runs one verify and one identify through the page against a real server and
writes screenshots under the test's tmp dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from devkit.server import Server
from tests.api.conftest import ADMIN, ADMIN_KEY

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def _chromium() -> str:
    path = os.environ.get("FACEGATE_TEST_CHROMIUM") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip(f"no Chromium at {path} (set FACEGATE_TEST_CHROMIUM; apt-get install chromium)")
    return path


@pytest.mark.browser
def test_verify_and_identify_through_the_page(tmp_path, faces_dir):
    chromium = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    env = {"FACEGATE_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY, "FACEGATE_INDEX_USE_GPU": "false"}
    with Server(tmp_path / "data", env) as server:
        with httpx.Client(base_url=server.url, headers=ADMIN, timeout=30) as c:
            assert c.post("/v1/collections", json={"id": "lobby", "name": "Lobby"}).status_code == 201
            iid = c.post("/v1/collections/lobby/identities",
                         json={"external_id": "obama", "name": "Barack Obama"}).json()["id"]
            r = c.post(f"/v1/collections/lobby/identities/{iid}/faces",
                       files=[("image", ("1.jpg", (faces_dir / "obama/1.jpg").read_bytes(), "image/jpeg"))])
            assert r.status_code == 201, r.text

        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 1400})
                console_errors: list[str] = []
                page.on("pageerror", lambda e: console_errors.append(str(e)))
                page.goto(server.url + "/", wait_until="networkidle")
                page.wait_for_selector("body[data-ready=true]")
                assert page.is_visible("#key-box")  # auth is on: the page asks for a key

                # without a key: the typed error is shown
                page.set_input_files("#file1", str(faces_dir / "obama/1.jpg"))
                page.set_input_files("#file2", str(faces_dir / "obama/2.jpg"))
                page.click("#verify-btn")
                page.wait_for_selector("#verify-result[data-code]")
                assert page.get_attribute("#verify-result", "data-code") == "unauthorized"

                page.fill("#api-key", ADMIN_KEY)
                page.click("#save-key")
                assert page.evaluate("sessionStorage.getItem('facegate.apiKey')") == ADMIN_KEY
                page.click("#verify-btn")
                page.wait_for_selector("#verify-result[data-same]", timeout=30_000)
                assert page.get_attribute("#verify-result", "data-same") == "true"
                assert "Same person" in page.inner_text("#verify-result")
                # the face box was drawn: the canvas has green pixels
                green = page.evaluate("""() => {
                    const c = document.getElementById('canvas1'); const d = c.getContext('2d')
                      .getImageData(0, 0, c.width, c.height).data;
                    let n = 0; for (let i = 0; i < d.length; i += 4)
                      if (d[i] < 60 && d[i+1] > 180 && d[i+2] < 120) n++;
                    return n; }""")
                assert green > 50
                page.screenshot(path=str(tmp_path / "verify.png"), full_page=True)

                page.click("#reload-collections")
                page.wait_for_selector("#collection option[value=lobby]", state="attached")
                page.select_option("#collection", "lobby")
                page.set_input_files("#identify-file", str(faces_dir / "obama/5.jpg"))
                page.click("#identify-btn")
                page.wait_for_selector("#identify-result table", timeout=30_000)
                assert "Barack Obama" in page.inner_text("#identify-result")
                page.screenshot(path=str(tmp_path / "identify.png"), full_page=True)
                assert not console_errors, console_errors
            finally:
                browser.close()
    assert (tmp_path / "verify.png").stat().st_size > 10_000
    print("screenshots:", tmp_path / "verify.png", tmp_path / "identify.png")
